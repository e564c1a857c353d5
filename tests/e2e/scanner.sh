#!/bin/bash
# Scanners that address the server by IP get no answer at all, and nothing
# of theirs reaches the backend (admission step 10, docs/admission.md):
#
#   - SIPp from 127.0.0.4: OPTIONS and INVITE to sip:100@127.0.0.1 (UDP), OPTIONS
#     over TCP, and a request that names the secret domain only in From (which
#     is not a configured match field): no response within 3 s, each.
#   - sipsak OPTIONS sip:100@127.0.0.1 (from 127.0.0.1): no reply.
#   - SIPp from 127.0.0.6 with the secret domain but User-Agent friendly-scanner:
#     no response (the User-Agent blocklist wins over a valid domain).
#   - positive controls from 127.0.0.5: an OPTIONS with the secret domain is
#     answered 200 by kamailio and shows up in the capture; the no-answer
#     scenario itself fails when its request is answered.
#
# Proof that nothing reached the backend, each with a positive control:
#   - a tshark capture of the public and backend ports: every scanner's
#     Call-ID (sipsak's too) and the friendly-scanner User-Agent are seen
#     arriving at the public port, none at the backend port, whose requests
#     are all controls (Call-ID e2e-control-*, User-Agent sipp-e2e-probe);
#   - Kamailio's own counter core:rcv_requests (kamcmd) goes up with the
#     control OPTIONS and does not move while the scanners run;
#   - the metrics count the drops (no-domain, user-agent), admit exactly the
#     control requests, and sipwarden answered nothing itself.
source "$(dirname "$0")/lib.sh"
setup scanner
start_kamailio
start_sipwarden

metrics_dump "$RUN/m0.txt" || fail "metrics endpoint 127.0.0.1:$MET answers"
kam_stats "$RUN/k0.txt"
capture_start backend "host 127.0.0.1 and (port $BE or port $PUB)"

SO=(-m 1 -sf "$(silent_scenario OPTIONS)")
SI=(-m 1 -sf "$(silent_scenario INVITE)")

# positive control first: the capture works and the path is open
expect_sipp control "control: OPTIONS sip:100@$DOMAIN from $PROBE_IP is forwarded and answered 200" \
    "127.0.0.1:$PUB" -sf "$SIPP_DIR/options_uac.xml" -m 1 -s 100 -key domain "$DOMAIN" -key ua sipp-e2e-probe \
    -i "$PROBE_IP" -p "$PHONE_PORT" -cid_str "e2e-control-%u-%p"
kam_stats "$RUN/k1.txt"
K_CTL=$(kam_delta "$RUN/k1.txt" "$RUN/k0.txt" core:rcv_requests)
check "control: kamailio's own counter core:rcv_requests counted the forwarded control OPTIONS (+$K_CTL)" [ "$K_CTL" -ge 1 ]

# negative control of the detector: the silent scenario does fail on an answer
sipp_run detector 30 "127.0.0.1:$PUB" "${SO[@]}" -s 100 -key host "$DOMAIN" -key to_host "$DOMAIN" \
    -key from_host "$DOMAIN" -key ua sipp-e2e-probe -i "$PROBE_IP" -p "$PHONE_PORT" -cid_str "e2e-control-detector-%u-%p"
rc=$?
check "control: the no-answer scenario fails (sipp exit $rc) when a legit OPTIONS is answered" [ "$rc" -ne 0 ]
kam_stats "$RUN/k2.txt"

expect_sipp scan_options "scanner: OPTIONS sip:100@127.0.0.1 over UDP from $SCANNER_IP gets no answer" \
    "127.0.0.1:$PUB" "${SO[@]}" -s 100 -key host 127.0.0.1 -key to_host 127.0.0.1 \
    -key from_host 127.0.0.1 -key ua sipp-e2e-scan -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-scan-options-%u-%p"

expect_sipp scan_invite "scanner: INVITE sip:100@127.0.0.1 over UDP from $SCANNER_IP gets no answer (retransmitted, still nothing)" \
    "127.0.0.1:$PUB" "${SI[@]}" -s 100 -key host 127.0.0.1 -key to_host 127.0.0.1 \
    -key from_host 127.0.0.1 -key ua sipp-e2e-scan -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-scan-invite-%u-%p"

expect_sipp scan_tcp "scanner: OPTIONS sip:100@127.0.0.1 over TCP from $SCANNER_IP gets no answer" \
    "127.0.0.1:$PUB" "${SO[@]}" -t t1 -s 100 -key host 127.0.0.1 -key to_host 127.0.0.1 \
    -key from_host 127.0.0.1 -key ua sipp-e2e-scan -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-scan-tcp-%u-%p"

expect_sipp scan_from "scanner: INVITE by IP with the secret domain only in From (not a match field) gets no answer" \
    "127.0.0.1:$PUB" "${SI[@]}" -s 100 -key host 127.0.0.1 -key to_host 127.0.0.1 \
    -key from_host "$DOMAIN" -key ua sipp-e2e-scan -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-scan-from-%u-%p"

expect_sipp scan_ua "scanner: OPTIONS with the secret domain but User-Agent friendly-scanner from $UA_SCANNER_IP gets no answer" \
    "127.0.0.1:$PUB" "${SO[@]}" -s 100 -key host "$DOMAIN" -key to_host "$DOMAIN" \
    -key from_host "$DOMAIN" -key ua friendly-scanner -i "$UA_SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-scan-ua-%u-%p"

# sipsak: exit 0 = 200, 1 = another answer, 2 = local error, 3 = remote error or no answer.
# It cannot bind a source address, so it comes from 127.0.0.1 (still public).
# (sipsak 0.9.8.1 cuts a 5-digit port in the Request-URI: "sip:100@127.0.0.1:1506";
# the datagram still goes to $PUB.)
timeout 20 sipsak -s "sip:100@127.0.0.1:$PUB" -l "$SV_PORT" -D 2 -vvv > "$RUN/sipsak.out" 2>&1
rc=$?
if [ $rc -eq 3 ] && grep -q 'giving up, no final response' "$RUN/sipsak.out" \
    && ! grep -qa '^SIP/2.0 ' "$RUN/sipsak.out"; then
    pass "scanner: sipsak OPTIONS sip:100@127.0.0.1:$PUB gets no reply (sipsak exit $rc)"
else
    fail "scanner: sipsak OPTIONS sip:100@127.0.0.1:$PUB: exit $rc (expected 3 and "giving up, no final response")"
    sed 's/^/   | /' "$RUN/sipsak.out" | tail -n 15
fi
SIPSAK_CID=$(grep -aim1 '^Call-ID:' "$RUN/sipsak.out" | awk '{print $2}' | tr -d '\r')
kam_stats "$RUN/k3.txt"
K_SCAN=$(kam_delta "$RUN/k3.txt" "$RUN/k2.txt" core:rcv_requests)
check "kamailio's own counter core:rcv_requests did not move while the scanners ran (+$K_SCAN; the control moved it +$K_CTL)" [ "$K_SCAN" -eq 0 ]

capture_stop
capture_sip backend > "$RUN/capture.txt"
# (fields: 1 src, 2 dst, 3 udp dst port, 4 tcp dst port, 5 Request-Line, 6 Status-Line, 7 Call-ID, 8 User-Agent)
awk -F'|' -v p="$BE" '$3 == p || $4 == p' "$RUN/capture.txt" > "$RUN/backend.txt"
awk -F'|' -v p="$PUB" '($3 == p || $4 == p) && $5 != ""' "$RUN/capture.txt" > "$RUN/public.txt"
log "capture: $(wc -l < "$RUN/public.txt") requests to the public port, $(wc -l < "$RUN/backend.txt") SIP messages on the backend port"

if grep -q 'e2e-control-' "$RUN/backend.txt"; then
    pass "capture: the control OPTIONS (Call-ID e2e-control-*) reached the backend port $BE"
else
    fail "capture: the control OPTIONS is not in the backend capture (the capture proves nothing)"
fi
# requests toward the backend (field 5 = Request-Line): all of them controls?
REQ_ALL=$(awk -F'|' '$5 != ""' "$RUN/backend.txt" | wc -l)
REQ_CTL=$(awk -F'|' '$5 != "" && $7 ~ /^e2e-control-/' "$RUN/backend.txt" | wc -l)
check "capture: every request on the backend port is a control request ($REQ_CTL of $REQ_ALL)" [ "$REQ_ALL" -eq "$REQ_CTL" ]
# every scanner's Call-ID: seen arriving at the public port (the positive
# control of the same field), never on the backend port
for name in options invite tcp from ua; do
    AT_PUB=$(awk -F'|' -v c="e2e-scan-$name-" 'index($7, c) == 1' "$RUN/public.txt" | wc -l)
    AT_BE=$(awk -F'|' -v c="e2e-scan-$name-" 'index($7, c) == 1' "$RUN/backend.txt" | wc -l)
    check "capture: scanner Call-ID e2e-scan-$name-*: $AT_PUB request(s) at the public port, $AT_BE on the backend port" \
        [ "$AT_PUB" -ge 1 -a "$AT_BE" -eq 0 ]
done
UA_PUB=$(awk -F'|' '$8 == "friendly-scanner"' "$RUN/public.txt" | wc -l)
UA_BE=$(awk -F'|' '$8 == "friendly-scanner"' "$RUN/backend.txt" | wc -l)
UA_CTL=$(awk -F'|' '$5 != "" && $8 == "sipp-e2e-probe"' "$RUN/backend.txt" | wc -l)
check "capture: User-Agent friendly-scanner at the public port ($UA_PUB), not on the backend port ($UA_BE), where the control's sipp-e2e-probe is ($UA_CTL)" \
    [ "$UA_PUB" -ge 1 -a "$UA_BE" -eq 0 -a "$UA_CTL" -ge 1 ]
if [ -n "$SIPSAK_CID" ]; then
    AT_PUB=$(awk -F'|' -v c="$SIPSAK_CID" '$7 == c' "$RUN/public.txt" | wc -l)
    AT_BE=$(awk -F'|' -v c="$SIPSAK_CID" '$7 == c' "$RUN/backend.txt" | wc -l)
    check "capture: sipsak's Call-ID $SIPSAK_CID: $AT_PUB request(s) at the public port, $AT_BE on the backend port" \
        [ "$AT_PUB" -ge 1 -a "$AT_BE" -eq 0 ]
else
    fail "sipsak's Call-ID is not in its output ($RUN/sipsak.out): its request cannot be traced"
fi

# The counters: every scanner request dropped, one admission (the control).
metrics_dump "$RUN/m1.txt" || fail "metrics endpoint 127.0.0.1:$MET answers"
delta() { echo $(($(metric_sum "$RUN/m1.txt" "$1" "$2") - $(metric_sum "$RUN/m0.txt" "$1" "$2"))); }
NODOM=$(( $(delta no-domain dropped) + $(delta banned dropped) ))
NODOM_TCP=$(( $(metric "$RUN/m1.txt" public tcp no-domain dropped) - $(metric_or_zero "$RUN/m0.txt" public tcp no-domain dropped) ))
UA=$(delta user-agent dropped)
DOMF=$(delta domain forwarded)
REPLIED=$(( $(metric_total "$RUN/m1.txt" replied public) - $(metric_total "$RUN/m0.txt" replied public) ))
log "metrics delta: no-domain(+banned) dropped=$NODOM (tcp $NODOM_TCP), user-agent dropped=$UA, domain forwarded=$DOMF, replied (any reason)=$REPLIED"
# OPTIONS + INVITE (+ its retransmissions) + TCP OPTIONS + From-only INVITE + sipsak
check "metrics: no-domain dropped went up by >= 5 (+$NODOM)" [ "$NODOM" -ge 5 ]
check "metrics: the TCP probe is counted as public/tcp no-domain dropped (+$NODOM_TCP)" [ "$NODOM_TCP" -ge 1 ]
check "metrics: user-agent dropped went up (+$UA)" [ "$UA" -ge 1 ]
# (the detector control also sends sipp's BYE after the unexpected 200: admitted too)
check "metrics: the requests admitted by domain are exactly the control requests in the capture (+$DOMF = $REQ_CTL)" [ "$DOMF" -eq "$REQ_CTL" ]
check "metrics: nothing answered by sipwarden itself (on_reject = drop) (+$REPLIED)" [ "$REPLIED" -eq 0 ]

# The drops are logged with reason and source.
if grep -E 'dropped' "$RUN/sipwarden.log" | grep -E "source=$SCANNER_IP:[0-9]+" | grep -qE 'reason="?no-domain"?( |$)'; then
    pass "log: 'dropped ... reason=no-domain source=$SCANNER_IP:...'"
else
    fail "log: no 'dropped' line with reason=no-domain and source=$SCANNER_IP"
fi
if grep -E 'dropped' "$RUN/sipwarden.log" | grep -E "source=$UA_SCANNER_IP:[0-9]+" | grep -qE 'reason="?user-agent"?( |$)'; then
    pass "log: 'dropped ... reason=user-agent source=$UA_SCANNER_IP:...'"
else
    fail "log: no 'dropped' line with reason=user-agent and source=$UA_SCANNER_IP"
fi

check "sipwarden is still running" sipwarden_alive
stop_sipwarden
finish
