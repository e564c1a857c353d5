#!/bin/bash
# sipvicious against sipwarden's public port finds nothing (the scanners
# sipwarden is built to keep out, README.md):
#
#   control: svmap straight at kamailio's port finds "lab-pbx (kamailio)",
#            so the tool works and "found nothing" below means something.
#   svmap (OPTIONS and INVITE, from 127.0.0.7), svwar (REGISTER, by IP and
#   with --domain of the secret domain, --force): all report "found nothing".
#
# A tshark capture of the public and backend ports proves it: sipvicious's
# requests reach the public port, not one packet goes back to them, and no
# message reaches the backend. The counters account for every request.
# Source port $SV_PORT (-P), never 5060; never -R (it reports to the internet).
source "$(dirname "$0")/lib.sh"
setup sipvicious
start_kamailio
start_sipwarden
SV_IP=127.0.0.7

# control, before the capture: svmap does find an unprotected PBX
timeout 30 svmap 127.0.0.1 -p "$BE" -P "$SV_PORT" -b "$SV_IP" > "$RUN/svmap-control.out" 2>&1
if grep -q "127.0.0.1:$BE.*lab-pbx" "$RUN/svmap-control.out"; then
    pass "control: svmap straight at kamailio (127.0.0.1:$BE) finds 'lab-pbx (kamailio)'"
else
    fail "control: svmap straight at kamailio found nothing (the tool does not work here)"
    sed 's/^/   | /' "$RUN/svmap-control.out"
fi

metrics_dump "$RUN/m0.txt" || fail "metrics endpoint 127.0.0.1:$MET answers"
capture_start sv "udp port $PUB or port $BE"

# sv_run NAME DESCRIPTION CMD...: PASS when the tool exits 0, says "found
# nothing" and lists no device/extension at sipwarden's port.
sv_run() {
    local name=$1 desc=$2 rc; shift 2
    timeout 60 "$@" > "$RUN/$name.out" 2>&1; rc=$?
    if [ $rc -eq 0 ] && grep -q 'found nothing' "$RUN/$name.out" && ! grep -q "127.0.0.1:$PUB" "$RUN/$name.out" \
        && ! grep -qE 'reqauth|noauth|weird' "$RUN/$name.out"; then
        pass "$desc"
    else
        fail "$desc (exit $rc)"; sed 's/^/   | /' "$RUN/$name.out"
    fi
}

sv_run svmap "svmap 127.0.0.1 -p$PUB (OPTIONS) finds nothing" \
    svmap 127.0.0.1 -p "$PUB" -P "$SV_PORT" -b "$SV_IP"
sv_run svmap-invite "svmap -m INVITE 127.0.0.1 -p$PUB finds nothing" \
    svmap -m INVITE 127.0.0.1 -p "$PUB" -P "$SV_PORT" -b "$SV_IP"
sv_run svwar "svwar -e100-110 127.0.0.1 -p$PUB (REGISTER by IP) finds nothing" \
    svwar -e100-110 127.0.0.1 -p "$PUB" -P "$SV_PORT"
sv_run svwar-domain "svwar --force --domain $DOMAIN -e100-110 (knows the secret domain) finds nothing" \
    svwar --force -e100-110 --domain "$DOMAIN" 127.0.0.1 -p "$PUB" -P "$SV_PORT"

capture_stop
timeout 30 tshark -r "$RUN/sv.pcap" -T fields -E separator='|' -e ip.src -e udp.srcport -e ip.dst -e udp.dstport \
    -e tcp.srcport -e tcp.dstport -e sip.Request-Line -e sip.Status-Line -e sip.User-Agent > "$RUN/sv.txt" 2>/dev/null
# sipvicious binds $SV_PORT; svwar ignores -b and sends from 127.0.0.1
TO_PUB=$(awk -F'|' -v p="$PUB" -v s="$SV_PORT" '$2 == s && $4 == p' "$RUN/sv.txt" | wc -l)
FROM_PUB=$(awk -F'|' -v p="$PUB" -v s="$SV_PORT" '$2 == p && $4 == s' "$RUN/sv.txt" | wc -l)
AT_BE=$(awk -F'|' -v b="$BE" '$2 == b || $4 == b || $5 == b || $6 == b' "$RUN/sv.txt" | wc -l)
log "capture: $TO_PUB datagrams sipvicious -> public $PUB, $FROM_PUB back, $AT_BE on the backend port"
check "capture: sipvicious's requests did reach the public port ($TO_PUB datagrams)" [ "$TO_PUB" -ge 4 ]
check "capture: not one datagram from the public port back to sipvicious ($FROM_PUB)" [ "$FROM_PUB" -eq 0 ]
check "capture: nothing at all on the backend port $BE ($AT_BE packets)" [ "$AT_BE" -eq 0 ]
check "kamailio.log has no friendly-scanner request" bash -c "! grep -qi 'friendly-scanner' '$RUN/kamailio.log'"

metrics_dump "$RUN/m1.txt" || fail "metrics endpoint 127.0.0.1:$MET answers"
DROPS=0
for r in user-agent no-domain banned rate-limited; do
    DROPS=$((DROPS + $(metric_sum "$RUN/m1.txt" "$r" dropped) - $(metric_sum "$RUN/m0.txt" "$r" dropped)))
done
UA=$(( $(metric_sum "$RUN/m1.txt" user-agent dropped) - $(metric_sum "$RUN/m0.txt" user-agent dropped) ))
FWD=0
for r in domain dialog-route dialog trunk trunk-contact; do
    FWD=$((FWD + $(metric_sum "$RUN/m1.txt" "$r" forwarded) - $(metric_sum "$RUN/m0.txt" "$r" forwarded)))
done
log "metrics delta: dropped=$DROPS (user-agent $UA), admitted=$FWD"
check "metrics: every sipvicious datagram counted as dropped ($DROPS = $TO_PUB)" [ "$DROPS" -eq "$TO_PUB" ]
check "metrics: sipvicious's User-Agent friendly-scanner is the drop reason (user-agent +$UA)" [ "$UA" -ge 1 ]
check "metrics: nothing admitted ($FWD)" [ "$FWD" -eq 0 ]

check "sipwarden is still running" sipwarden_alive
stop_sipwarden
finish
