#!/bin/bash
# Runs every end-to-end script in turn (they share ports: never in parallel)
# and prints one summary line per script. Exit status 0 only if all passed.
# Usage: tests/e2e/run_all.sh [SCRIPT...]   (default: all, in the order below)
# Environment: see lib.sh (SIPWARDEN_BIN, E2E_PORT_BASE, E2E_KEEP).
set -u
DIR=$(cd "$(dirname "$0")" && pwd)
SCRIPTS=("$@")
[ ${#SCRIPTS[@]} -eq 0 ] && SCRIPTS=(selftest.sh check.sh call_udp.sh backend_restart.sh call_tcp.sh scanner.sh sipvicious.sh reload.sh trunk.sh control.sh top.sh restart.sh nat.sh dialog.sh defence.sh office.sh tls.sh tls_trunk.sh ws.sh browser.sh cluster.sh)
if [ -z "${SIPWARDEN_BIN:-}" ]; then
    (cd "$DIR/../.." && timeout 600 cargo build -q) || { echo "cargo build failed" >&2; exit 1; }
fi
T0=$(date +%s)
FAILED=()
SUMMARY=()
for s in "${SCRIPTS[@]}"; do
    t=$(date +%s)
    timeout -k 10 300 bash "$DIR/$s"
    rc=$?
    SUMMARY+=("$(printf '%-16s exit %-3s %4s s' "$s" "$rc" $(( $(date +%s) - t )))")
    [ $rc -ne 0 ] && FAILED+=("$s")
    echo
done
echo "== e2e summary ($(( $(date +%s) - T0 )) s)"
printf '   %s\n' "${SUMMARY[@]}"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "FAILED: ${FAILED[*]}"
    exit 1
fi
echo "all ${#SCRIPTS[@]} scripts passed"
