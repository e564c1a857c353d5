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
# message of theirs reaches the backend port; Kamailio's own counter
# core:rcv_requests (kamcmd) does not move while they run. The counters
# account for every request. Positive control of the capture and of
# Kamailio's counter: afterwards an OPTIONS with the secret domain (SIPp,
# 127.0.0.5) is forwarded: the same filters see it reach the backend port
# and its answer go back, and core:rcv_requests goes up.
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
kam_stats "$RUN/k0.txt"
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

kam_stats "$RUN/k1.txt"
metrics_dump "$RUN/m1.txt" || fail "metrics endpoint 127.0.0.1:$MET answers"

# positive control: a request sipwarden forwards, through the same capture
expect_sipp control "control: OPTIONS sip:100@$DOMAIN from $PROBE_IP is forwarded and answered 200" \
    "127.0.0.1:$PUB" -sf "$SIPP_DIR/options_uac.xml" -m 1 -s 100 -key domain "$DOMAIN" -key ua sipp-e2e-probe \
    -i "$PROBE_IP" -p "$PHONE_PORT" -cid_str "e2e-control-%u-%p"
kam_stats "$RUN/k2.txt"
K_SV=$(kam_delta "$RUN/k1.txt" "$RUN/k0.txt" core:rcv_requests)
K_CTL=$(kam_delta "$RUN/k2.txt" "$RUN/k1.txt" core:rcv_requests)
check "kamailio's own counter core:rcv_requests did not move while sipvicious ran (+$K_SV)" [ "$K_SV" -eq 0 ]
check "control: the same counter went up with the forwarded OPTIONS (+$K_CTL)" [ "$K_CTL" -ge 1 ]

capture_stop
timeout 30 tshark -r "$RUN/sv.pcap" -T fields -E separator='|' -e ip.src -e udp.srcport -e ip.dst -e udp.dstport \
    -e tcp.srcport -e tcp.dstport -e sip.Request-Line -e sip.Status-Line -e sip.User-Agent -e sip.Call-ID > "$RUN/sv.txt" 2>/dev/null
# sipvicious binds $SV_PORT; svwar ignores -b and sends from 127.0.0.1
# to_pub PORT, from_pub PORT: datagrams from that source port to the public
# port, and back to it; at_be: the packets on the backend port
to_pub() { awk -F'|' -v p="$PUB" -v s="$1" '$2 == s && $4 == p' "$RUN/sv.txt" | wc -l; }
from_pub() { awk -F'|' -v p="$PUB" -v s="$1" '$2 == p && $4 == s' "$RUN/sv.txt" | wc -l; }
at_be() { awk -F'|' -v b="$BE" '$2 == b || $4 == b || $5 == b || $6 == b' "$RUN/sv.txt"; }
TO_PUB=$(to_pub "$SV_PORT")
FROM_PUB=$(from_pub "$SV_PORT")
AT_BE=$(at_be | awk -F'|' 'index($10, "e2e-control-") != 1' | wc -l)
CTL_BE=$(at_be | awk -F'|' 'index($10, "e2e-control-") == 1' | wc -l)
CTL_BACK=$(from_pub "$PHONE_PORT")
log "capture: $TO_PUB datagrams sipvicious -> public $PUB, $FROM_PUB back, $AT_BE on the backend port; the control: $CTL_BE on the backend port, $CTL_BACK back"
check "capture: sipvicious's requests did reach the public port ($TO_PUB datagrams)" [ "$TO_PUB" -ge 4 ]
check "capture: not one datagram from the public port back to sipvicious ($FROM_PUB)" [ "$FROM_PUB" -eq 0 ]
check "capture: nothing of sipvicious on the backend port $BE ($AT_BE packets)" [ "$AT_BE" -eq 0 ]
check "control: the same capture has the control's OPTIONS and 200 on the backend port ($CTL_BE >= 2) and its 200 going back ($CTL_BACK)" \
    [ "$CTL_BE" -ge 2 -a "$CTL_BACK" -ge 1 ]

DROPS=$(( $(metric_total "$RUN/m1.txt" dropped) - $(metric_total "$RUN/m0.txt" dropped) ))
UA=$(( $(metric_sum "$RUN/m1.txt" user-agent dropped) - $(metric_sum "$RUN/m0.txt" user-agent dropped) ))
FWD=$(( $(metric_total "$RUN/m1.txt" forwarded public) - $(metric_total "$RUN/m0.txt" forwarded public) ))
log "metrics delta: dropped=$DROPS (user-agent $UA), admitted=$FWD"
check "metrics: every sipvicious datagram counted as dropped ($DROPS = $TO_PUB)" [ "$DROPS" -eq "$TO_PUB" ]
check "metrics: sipvicious's User-Agent friendly-scanner is the drop reason (user-agent +$UA)" [ "$UA" -ge 1 ]
check "metrics: nothing admitted ($FWD)" [ "$FWD" -eq 0 ]

check "sipwarden is still running" sipwarden_alive
stop_sipwarden
finish
