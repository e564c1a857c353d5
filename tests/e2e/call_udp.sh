#!/bin/bash
# Register + call through sipwarden, phones <-> sipwarden over UDP (see call.sh).
exec bash "$(dirname "$0")/call.sh" udp
