#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12 (run as root): the real
# SIP programs the end-to-end tests drive, and systemd for
# `systemd-analyze`, which checks the shipped unit. ~15 s, ~205 MB.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends \
  sip-tester kamailio sipvicious sipsak tshark iproute2 procps curl ca-certificates tmux \
  systemd
