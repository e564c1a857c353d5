#!/bin/bash
# Register + call through sipwarden, phones <-> sipwarden over TCP, the
# sipwarden <-> kamailio leg over UDP (see call.sh).
exec bash "$(dirname "$0")/call.sh" tcp
