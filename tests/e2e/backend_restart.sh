#!/bin/bash
# Asterisk restarts behind a running sipwarden. Forwards to a UDP backend
# leave from a socket connected to it (docs/design.md), and a
# connected socket hears the ICMP "port unreachable" of a stopped backend;
# the proxy must read that error and go on, not lose the first message
# after the backend is back nor complain in a loop.
#
#   1. sipwarden has a UDP socket on 127.0.0.1:INT connected to the backend
#      (ss); phone 1001 registers through it (200).
#   2. Kamailio (the Asterisk stand-in) stops. The phone's REGISTER is
#      forwarded into the void (counted `domain`), unanswered.
#   3. Kamailio starts again, and the phone registers at once with SIPp's
#      retransmissions off (-nr): the first REGISTER after the restart gets
#      its 200. A caller then calls the phone: Kamailio's INVITE to the
#      internal socket arrives on the connected socket and reaches the
#      phone; ACK and BYE follow.
#   4. No send error counted, no "UDP receive failed" in the log.
source "$(dirname "$0")/lib.sh"
setup backend-restart
start_kamailio
start_sipwarden

if ss -Hunp state established "sport = :$INT" 2>/dev/null | grep -F "127.0.0.1:$BE" | grep -q "pid=$SW_PID,"; then
    pass "sipwarden holds a UDP socket 127.0.0.1:$INT connected to the backend 127.0.0.1:$BE"
else
    fail "no UDP socket of sipwarden on 127.0.0.1:$INT connected to 127.0.0.1:$BE"
    ss -Hunp "sport = :$INT" | sed 's/^/   | /'
fi

REG=(-sf "$SIPP_DIR/register_uac.xml" -s 1001 -key domain "$DOMAIN" -key contact_port "$PHONE_PORT"
     -i "$PHONE_IP" -p "$PHONE_PORT" -m 1 -t u1)
expect_sipp register1 "phone 1001 registers through sipwarden: 200" "127.0.0.1:$PUB" "${REG[@]}"

# 2. The backend stops (its worker processes go with it).
kill -TERM "$KAM_PID"
for i in $(seq 50); do
    [ -z "$(ss -Hlnu "sport = :$BE" 2>/dev/null)" ] && break
    sleep 0.1
done
reap "$KAM_PID"
check "kamailio stopped: nothing bound to udp 127.0.0.1:$BE" [ -z "$(ss -Hlnu "sport = :$BE" 2>/dev/null)" ]

metrics_dump "$RUN/m0.txt"
before=$(metric "$RUN/m0.txt" public udp domain forwarded)
sipp_run register_down 10 "127.0.0.1:$PUB" "${REG[@]}" -nr -timeout 2s -timeout_error; rc=$?
check "while the backend is down the REGISTER gets no answer (sipp exit $rc)" [ "$rc" -ne 0 ]
metrics_dump "$RUN/m1.txt"
after=$(metric "$RUN/m1.txt" public udp domain forwarded)
check "... and was forwarded (domain forwarded $before -> $after)" [ "$after" -gt "$before" ]
sleep 0.3 # the ICMP error is pending on the connected socket or already read

# 3. The backend is back: the first REGISTER, not retransmitted, is answered.
start_kamailio
expect_sipp register2 "after the restart the first REGISTER (no retransmissions) gets 200" \
    "127.0.0.1:$PUB" "${REG[@]}" -nr -timeout 5s -timeout_error

sipp_bg uas 30 -sf "$SIPP_DIR/uas_answer.xml" -i "$PHONE_IP" -p "$PHONE_PORT" -m 1 -t u1
UAS_PID=$BG_PID
wait_bound udp "$PHONE_IP" "$PHONE_PORT"
sleep 0.5
expect_sipp caller "a call to 1001 through the restarted backend is answered, ACK, BYE 200" \
    "127.0.0.1:$PUB" -sf "$SIPP_DIR/invite_uac.xml" -s 1001 -key domain "$DOMAIN" -key caller 1002 \
    -i "$CALLER_IP" -p "$PHONE_PORT" -m 1 -t u1
reap "$UAS_PID"; rc=$?
if [ $rc -eq 0 ] && sipp_calls_ok uas 1; then
    pass "phone 1001 got the INVITE from the restarted backend, then ACK and BYE"
else
    fail "phone 1001 (SIPp UAS) exit $rc"; show_sipp uas
fi

# 4. Quiet about it.
metrics_dump "$RUN/m2.txt"
errs=$(gauge "$RUN/m2.txt" sipwarden_send_errors_total)
check "no send errors counted (sipwarden_send_errors_total $errs)" [ "$errs" = 0 ]
check "no 'UDP receive failed' in the log" bash -c "! grep -q 'UDP receive failed' '$RUN/sipwarden.log'"

stop_sipwarden
finish
