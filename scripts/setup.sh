#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12 (run as root): the real
# SIP programs the end-to-end tests drive, systemd for `systemd-analyze`,
# which checks the shipped unit, and promtool, which checks the shipped
# alert rules and the metrics (tests/monitoring.rs), and Chromium, Node.js
# and the npm packages of the real-browser test (tests/browser).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends \
  sip-tester kamailio kamailio-tls-modules sipvicious sipsak tshark iproute2 procps curl ca-certificates tmux \
  systemd redis-server python3-websockets chromium
# The browser test (tests/e2e/browser.sh): Node.js for playwright-core and
# the JsSIP bundle (Debian's nodejs and npm where no Node.js is installed).
command -v node > /dev/null || apt-get install -y -q --no-install-recommends nodejs
command -v npm > /dev/null || apt-get install -y -q --no-install-recommends npm
# jssip, playwright-core (it drives /usr/bin/chromium: it never downloads a
# browser) and esbuild, at the versions of package-lock.json; the jssip
# package ships no browser file: esbuild bundles it for the page.
browser_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
(cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error && npm run -s bundle)
# promtool, from Debian's prometheus package: only its promtool binary
# (19 MB download, 48 MB on disk, ~5 s). Installing the package would pull
# in the Prometheus server's web UI libraries (332 MB in all, 218 MB of it
# moment.js time zones; 21 s) and install a server nothing here runs.
if ! command -v promtool > /dev/null; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root prometheus)
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
  install -m 0755 "$tmp/usr/bin/promtool" /usr/local/bin/promtool
  rm -r "$tmp"
fi
promtool --version 2>&1 | sed -n 1p
