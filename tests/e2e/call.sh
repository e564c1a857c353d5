#!/bin/bash
# A phone registers and receives a call from a second phone, everything
# through sipwarden, with Kamailio -A WITH_EDGE as the Asterisk stand-in
# (kamailio.cfg) and the e2e ports:
#
#   phone 1001 (SIPp, 127.0.0.2) --REGISTER--> sipwarden public --> kamailio backend: 200
#   caller (SIPp, 127.0.0.3) --INVITE sip:1001@pbx.secret.example--> sipwarden public
#       --> kamailio (WITH_EDGE: looks up 1001, sends to sipwarden's internal socket)
#       --> sipwarden internal --> out of the public socket --> phone 1001 answers
#   ACK and BYE follow the Record-Route set through sipwarden both ways.
#
# Usage: call.sh udp|tcp   (tcp: SIPp phones <-> sipwarden over TCP, `-t t1`;
#                           the sipwarden <-> kamailio leg stays UDP)
source "$(dirname "$0")/lib.sh"

MODE=${1:-udp}
case $MODE in
    udp) T="-t u1"; TP=UDP ;;
    tcp) T="-t t1"; TP=TCP ;;
    *) echo "usage: $0 udp|tcp" >&2; exit 2 ;;
esac
setup "call-$MODE"
start_kamailio
start_sipwarden

SIPP_COMMON=(-m 1 $T)

# 1. REGISTER from the port the phone answers on: a Path flow token names the
#    REGISTER's source flow, so the call comes back to that port.
expect_sipp register "$TP: phone 1001 registers through sipwarden with the secret domain and gets 200" \
    "127.0.0.1:$PUB" -sf "$SIPP_DIR/register_uac.xml" -s 1001 -key domain "$DOMAIN" \
    -key contact_port "$PHONE_PORT" -i "$PHONE_IP" -p "$PHONE_PORT" "${SIPP_COMMON[@]}"

# kamailio stored the Contact the phone sent (the binding it will call).
if timeout 5 kamcmd -s "unix:$RUN/kamailio_ctl" ul.dump > "$RUN/ul.dump" 2>&1 \
    && grep -q "sip:1001@$PHONE_IP:$PHONE_PORT;transport=$TP" "$RUN/ul.dump"; then
    pass "$TP: kamailio's location table has 1001 -> sip:1001@$PHONE_IP:$PHONE_PORT;transport=$TP"
else
    fail "$TP: kamailio's location table lacks 1001's binding (see $RUN/ul.dump)"
fi
# ... and received the REGISTER over UDP from sipwarden (the backend leg is UDP).
check "$TP: the REGISTER reached kamailio over UDP (ul.dump Socket: udp:127.0.0.1:$BE)" \
    grep -q "Socket: udp:127.0.0.1:$BE" "$RUN/ul.dump"

# 2. The phone answers one call.
sipp_bg uas 30 -sf "$SIPP_DIR/uas_answer.xml" -i "$PHONE_IP" -p "$PHONE_PORT" "${SIPP_COMMON[@]}"
UAS_PID=$BG_PID
if [ "$MODE" = tcp ]; then wait_bound tcp "$PHONE_IP" "$PHONE_PORT"; else wait_bound udp "$PHONE_IP" "$PHONE_PORT"; fi
sleep 0.5

# 3. The caller calls 1001 at the secret domain.
expect_sipp caller "$TP: caller 127.0.0.3 -> sipwarden -> kamailio -> sipwarden -> phone: call answered, ACK, BYE 200" \
    "127.0.0.1:$PUB" -sf "$SIPP_DIR/invite_uac.xml" -s 1001 -key domain "$DOMAIN" -key caller 1002 \
    -i "$CALLER_IP" -p "$PHONE_PORT" "${SIPP_COMMON[@]}"

reap "$UAS_PID"; rc=$?
if [ $rc -eq 0 ] && sipp_calls_ok uas 1; then
    pass "$TP: phone 1001 (SIPp UAS) got the INVITE, ACK and BYE and exited 0"
else
    fail "$TP: phone 1001 (SIPp UAS) exit $rc"; show_sipp uas
fi

# 4. The call really took the edge path.
if grep -q "INVITE 1001 -> registered contact sip:1001@$PHONE_IP:$PHONE_PORT;transport=$TP (dst sip:127.0.0.1:$INT)" "$RUN/kamailio.log"; then
    pass "$TP: kamailio relayed the INVITE to the registered contact via sipwarden's internal socket 127.0.0.1:$INT"
else
    fail "$TP: kamailio.log has no 'INVITE 1001 -> registered contact ... (dst sip:127.0.0.1:$INT)'"
fi

# The INVITE the phone received carries sipwarden's Record-Route on both
# sides of kamailio: 2 entries (RFC 5658 double record-routing) for each of
# the two passes, plus kamailio's own: at least 4 URIs that name sipwarden
# (the advertised 127.0.0.1:$PUB or the internal 127.0.0.1:$INT).
awk '/^(INVITE) /{p=1} p && /^\r?$/{exit} p' "$RUN/uas.msg" | tr -d '\r' > "$RUN/uas-invite.txt"
RR=$(grep -i '^Record-Route:' "$RUN/uas-invite.txt" | tr ',' '\n' | grep -cE "127\.0\.0\.1:($PUB|$INT)")
if [ "${RR:-0}" -ge 4 ]; then
    pass "$TP: the phone's INVITE carries $RR Record-Route entries of sipwarden (double record-routing on both passes)"
else
    fail "$TP: the phone's INVITE carries ${RR:-0} Record-Route entries of sipwarden, expected >= 4"
    sed 's/^/   | /' "$RUN/uas-invite.txt"
fi
# The phone sees the INVITE with sipwarden's Via on top and sent-by = public side.
TOPVIA=$(grep -im1 '^Via:' "$RUN/uas-invite.txt")
if echo "$TOPVIA" | grep -q "127.0.0.1:$PUB"; then
    pass "$TP: the INVITE reached the phone from sipwarden's public side (top Via $TOPVIA)"
else
    fail "$TP: top Via of the phone's INVITE is not sipwarden's public side: $TOPVIA"
fi

# 5. The counters agree: admitted by domain on the public side, sent out for
# the PBX from the internal side, in-dialog requests admitted by our Route.
T_LOWER=$(echo "$MODE" | tr 'A-Z' 'a-z')
metrics_dump "$RUN/metrics.txt" || fail "metrics endpoint 127.0.0.1:$MET answers"
DOM=$(metric "$RUN/metrics.txt" public "$T_LOWER" domain forwarded)
OUTB=$(metric "$RUN/metrics.txt" internal udp outbound forwarded)
DLG=$(metric "$RUN/metrics.txt" public "$T_LOWER" dialog-route forwarded)
log "metrics: public/$T_LOWER domain forwarded=$DOM, internal/udp outbound forwarded=$OUTB, public/$T_LOWER dialog-route forwarded=$DLG"
check "$TP: metrics count REGISTER+INVITE admitted by domain (public/$T_LOWER domain forwarded=$DOM >= 2)" [ "$DOM" -ge 2 ]
check "$TP: metrics count kamailio's INVITE/ACK/BYE sent out (internal/udp outbound forwarded=$OUTB >= 3)" [ "$OUTB" -ge 3 ]
check "$TP: metrics count the caller's ACK+BYE admitted by our Route (public/$T_LOWER dialog-route forwarded=$DLG >= 2)" [ "$DLG" -ge 2 ]

stop_sipwarden
finish
