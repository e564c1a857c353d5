#!/bin/bash
# scripts/try-it.sh, the README's one-minute demo, so that it cannot rot:
# run with this build and the ports of this port base, it exits 0 within
# 60 s and says that the phone's REGISTER got 200, that svmap and the SIPp
# request by IP got no answer while svmap straight at the PBX found it, and
# prints the counters (domain forwarded, user-agent and no-domain dropped);
# afterwards nothing it started is left (ports free, runtime dir removed).
source "$(dirname "$0")/lib.sh"
setup try-it

before=$(ls -d /tmp/sipwarden-try-it.* 2>/dev/null | wc -l)
T_START=$(date +%s.%N)
TRY_PORT_BASE=$BASE SIPWARDEN_BIN=$SIPWARDEN timeout -k 5 60 bash "$REPO/scripts/try-it.sh" > "$RUN/try-it.out" 2>&1
rc=$?
took=$(awk -v a="$(date +%s.%N)" -v b="$T_START" 'BEGIN { printf "%.1f", a - b }')
sed 's/^/   | /' "$RUN/try-it.out"
check "scripts/try-it.sh exits 0 (exit $rc, $took s; bounded by 60 s)" [ $rc -eq 0 ]
out=$RUN/try-it.out
check "the phone's REGISTER got 200 from the PBX through sipwarden" grep -q '200 OK from the PBX' "$out"
check "svmap against sipwarden found nothing" grep -q 'svmap: "found nothing"' "$out"
check "the SIPp request by IP got no answer" grep -q 'no answer within 3 s' "$out"
check "svmap straight at the PBX found it (the control)" grep -q "svmap: 127.0.0.1:$((BASE + 2)) lab-pbx" "$out"
check "the counters show the REGISTER forwarded as domain" \
    grep -q 'reason="domain",disposition="forwarded"} 1$' "$out"
check "the counters show svmap dropped as user-agent" grep -q 'reason="user-agent",disposition="dropped"}' "$out"
check "the counters show the request by IP dropped as no-domain" grep -q 'reason="no-domain",disposition="dropped"}' "$out"
check "the log lines name the drops with their source" grep -q 'dropped source=127.0.0.7:' "$out"
check "sipwarden stopped with exit 0" grep -q 'sipwarden stopped on SIGTERM in [0-9]* ms (exit 0)' "$out"
left=""
for p in $(seq "$BASE" $((BASE + 10))); do
    [ -n "$(port_users udp "$p")$(port_users tcp "$p")" ] && left="$left $p"
done
check "nothing it started holds a port afterwards (${left:-none})" [ -z "$left" ]
after=$(ls -d /tmp/sipwarden-try-it.* 2>/dev/null | wc -l)
check "its runtime directory was removed ($before before, $after after)" [ "$after" -le "$before" ]
finish
