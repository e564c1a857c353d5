#!/bin/bash
# The dialog table (admission step 9, docs/admission.md): in-dialog
# requests of a live dialog pass without a secret domain and without our
# Route, and stop passing once the dialog ended and its linger passed.
#
#   A caller (127.0.0.3) calls sip:5551234@SECRET-DOMAIN with To naming
#   127.0.0.1; Kamailio answers locally (200, Contact sip:5551234@127.0.0.1:
#   BACKEND). Its ACK, a re-INVITE (488 from Kamailio) with the ACK for it and
#   the BYE then go to that Contact without any Route, as a UA that ignores
#   Record-Route sends them: no secret domain, no token, only the dialog table
#   can admit them (metrics: reason dialog). [dialog] linger = "3s":
#     - the failed re-INVITE leaves the dialog confirmed (a BYE 3.8 s later passes);
#     - the BYE's retransmission 0.5 s after it passes (linger);
#     - the same BYE 3.8 s after the first gets no answer (dropped, no-domain).
#   Meanwhile the scanner (127.0.0.4) sends BYEs to the same Contact: one with
#   an unknown Call-ID, one with the live call's Call-ID but made-up tags:
#   no answer, and none of them reaches Kamailio (tshark on the backend port).
source "$(dirname "$0")/lib.sh"
setup dialog
write_config "$RUN/sipwarden.toml" "$DOMAIN"
cat >> "$RUN/sipwarden.toml" <<EOF

[dialog]
linger = "3s"

[ban]
after_rejects = 0
EOF
start_kamailio
start_sipwarden
metrics_dump "$RUN/m0.txt" || fail "metrics endpoint answers"
capture_start backend "host 127.0.0.1 and port $BE"

CID=e2e-dialog-call-1
CONTACT="sip:5551234@127.0.0.1:$BE;transport=udp"

sipp_bg call 40 "127.0.0.1:$PUB" -sf "$SIPP_DIR/dialog_linger.xml" -m 1 -s 5551234 -key domain "$DOMAIN" \
    -key to_host 127.0.0.1 -key caller 2000 -i "$CALLER_IP" -p "$PHONE_PORT" -cid_str "$CID"
CALL=$BG_PID

# while the call is up (it is answered within a second): the scanner's BYEs
answered=0
wait_match '^SIP/2.0 200' "$RUN/call.msg" && answered=1
check "the caller's INVITE (secret domain in the Request-URI) was answered by kamailio" [ $answered = 1 ]
CONTACT=$(awk '/message received/ {rx = 1} /message sent/ {rx = 0} rx && /^SIP\/2.0 200/ {p = 1} p && /^Contact:/ {print; exit}' \
    "$RUN/call.msg" | tr -d '\r' | sed 's/^Contact: *<\([^>]*\)>.*/\1/')
log "kamailio's Contact: $CONTACT"
SILENT=()
sipp_bg scan-bye-unknown 20 "127.0.0.1:$PUB" -sf "$SIPP_DIR/bye_silent.xml" -m 1 -key ruri "$CONTACT" \
    -key from_tag 1234 -key to_tag 5678 -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-scan-bye-unknown-%u"
SILENT+=("scan-bye-unknown:$BG_PID")
sipp_bg scan-bye-tags 20 "127.0.0.1:$PUB" -sf "$SIPP_DIR/bye_silent.xml" -m 1 -key ruri "$CONTACT" \
    -key from_tag 1234 -key to_tag 5678 -i "$SCANNER_IP" -p "$((PHONE_PORT + 1))" -cid_str "$CID"
SILENT+=("scan-bye-tags:$BG_PID")
silent_wait "scanner $SCANNER_IP: a BYE with an unknown Call-ID to kamailio's Contact gets no answer" \
    "scanner $SCANNER_IP: a BYE with the live call's Call-ID but made-up tags gets no answer"

reap "$CALL"; rc=$?
if [ $rc -eq 0 ]; then
    pass "the call's Route-less ACK, re-INVITE (488) + ACK, BYE (200), BYE retransmission within the linger (200) passed, and the BYE after the linger got no answer (sipp exit 0)"
else
    fail "the Route-less dialog scenario (sipp exit $rc)"; show_sipp call
fi
# what the caller saw, step by step
R=$(grep -a -A2 -E '^(UDP|TCP) message received' "$RUN/call.msg" | grep -aE '^SIP/2.0 ' | tr -d '\r' | awk '{print $2}' | tr '\n' ' ')
log "responses the caller received: $R"
check "responses in order: 200 (INVITE), 488 (re-INVITE), 200 (BYE), 200 (BYE retransmission), nothing more" \
    bash -c "[[ '$R' =~ ^(100\ |180\ )*200\ (100\ )?488\ 200\ 200\ $ ]]"

capture_stop
capture_sip backend > "$RUN/backend.txt"
# (field 5 = Request-Line, 7 = Call-ID); kamailio answers to 127.0.0.1:INT
REQS=$(awk -F'|' -v c="$CID" '$5 != "" && $7 == c {split($5, a, " "); printf "%s ", a[1]}' "$RUN/backend.txt")
log "the call's requests on the backend port: $REQS"
check "kamailio got INVITE, ACK, INVITE, ACK, BYE, BYE of the call: the BYE after the linger never reached it ($REQS)" \
    [ "$REQS" = "INVITE ACK INVITE ACK BYE BYE " ]
if grep -q 'e2e-scan-bye' "$RUN/backend.txt"; then
    fail "capture: the scanner's BYE with an unknown Call-ID reached the backend"
else
    pass "capture: the scanner's BYE with an unknown Call-ID is not on the backend port"
fi
BYE_IN=$(awk -F'|' -v c="$CID" '$5 ~ /^BYE/ && $7 == c' "$RUN/backend.txt" | wc -l)
check "capture: the scanner's BYE with the live Call-ID and wrong tags did not reach it either (BYEs of that Call-ID: $BYE_IN = the caller's 2)" [ "$BYE_IN" -eq 2 ]

metrics_dump "$RUN/m1.txt" || fail "metrics endpoint answers"
d() { metric_delta "$RUN/m1.txt" "$RUN/m0.txt" "$1" "$2"; }
DLG=$(d dialog forwarded); DOMF=$(d domain forwarded); DR=$(d dialog-route forwarded); ND=$(d no-domain dropped)
log "metrics delta: dialog forwarded=$DLG, domain forwarded=$DOMF, dialog-route forwarded=$DR, no-domain dropped=$ND"
check "metrics: the 5 Route-less in-dialog requests were admitted by the dialog table (dialog forwarded +$DLG)" [ "$DLG" -eq 5 ]
check "metrics: only the INVITE was admitted by domain (+$DOMF)" [ "$DOMF" -eq 1 ]
check "metrics: the scanner's BYEs and the late BYE were dropped as no-domain (+$ND >= 3)" [ "$ND" -ge 3 ]
if grep 'dropped' "$RUN/sipwarden.log" | grep "source=$CALLER_IP:" | grep -q 'reason="\?no-domain"\? .*line="\?BYE'; then
    pass "log: the caller's BYE after the linger: 'dropped ... source=$CALLER_IP:... reason=no-domain line=BYE ...'"
else
    fail "log: no 'dropped' line for the caller's late BYE"
fi

check "sipwarden is still running" sipwarden_alive
stop_sipwarden
finish
