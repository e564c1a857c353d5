#!/bin/bash
# SIGHUP reload under load (docs/operations.md: a valid file is swapped in
# atomically, no message lost, tables kept; an invalid one is refused, logged,
# and the old config stays):
#
#   phone 1001 (127.0.0.2) registers; SIPp load from 127.0.0.3: 200 calls at
#   20/s to 1001@secret-domain, through sipwarden -> kamailio -> sipwarden ->
#   phone. While it runs:
#     1. SIGHUP with the same valid file                -> "config reloaded"
#     2. SIGHUP with a file that adds a second domain  -> "config reloaded";
#        an OPTIONS to the new domain, unanswered before, is now answered
#     3. SIGHUP with a broken file                     -> refused and logged,
#        `check` names the line; both domains are still admitted
#   Then: 200 successful calls on both sides, 0 failed, and
#   every message the programs sent through sipwarden was forwarded (their
#   message traces against sipwarden's counters, per direction). The reload
#   lines name the changed keys (none, then filter.domains), and the metrics
#   show the refused reload and when the config in force was loaded.
source "$(dirname "$0")/lib.sh"
setup reload
DOMAIN2=pbx2.secret.example
CALLS=${E2E_RELOAD_CALLS:-200}
RATE=${E2E_RELOAD_RATE:-20}
CFG=$RUN/sipwarden.toml

write_config "$CFG" "$DOMAIN"
start_kamailio
start_sipwarden

# replace_config SOURCE: atomic swap of the live file (rename), as an operator's editor would.
replace_config() { cp "$1" "$CFG.tmp" && mv -f "$CFG.tmp" "$CFG"; }
# probe NAME DOMAIN: OPTIONS sip:100@DOMAIN from 127.0.0.5, expecting 200.
PROBE_N=0
probe() {
    PROBE_N=$((PROBE_N + 1))
    sipp_run "$1" 20 "127.0.0.1:$PUB" -sf "$SIPP_DIR/options_uac.xml" -m 1 -s 100 -key domain "$2" \
        -key ua sipp-e2e-probe -i "$PROBE_IP" -p $((PHONE_PORT + PROBE_N % 2)) -cid_str "e2e-$1-%u-%p"
}
# probe_silent NAME DOMAIN: the same request; expecting no answer.
probe_silent() {
    PROBE_N=$((PROBE_N + 1))
    sipp_run "$1" 20 "127.0.0.1:$PUB" -sf "$(silent_scenario OPTIONS)" -m 1 -s 100 -key host "$2" \
        -key to_host "$2" -key from_host "$2" -key ua sipp-e2e-probe -i "$PROBE_IP" \
        -p $((PHONE_PORT + PROBE_N % 2)) -cid_str "e2e-$1-%u-%p"
}

expect_sipp register "phone 1001 registers through sipwarden (200)" \
    "127.0.0.1:$PUB" -sf "$SIPP_DIR/register_uac.xml" -m 1 -s 1001 -key domain "$DOMAIN" \
    -key contact_port "$PHONE_PORT" -i "$PHONE_IP" -p "$PHONE_PORT"

probe_silent before "$DOMAIN2"
check "before the reload: OPTIONS to $DOMAIN2 (not configured yet) gets no answer" [ $? -eq 0 ]

metrics_dump "$RUN/m0.txt" || fail "metrics endpoint answers"

# the load: the phone answers CALLS calls, the caller makes them at RATE/s
sipp_bg uas 90 -sf "$SIPP_DIR/uas_answer.xml" -i "$PHONE_IP" -p "$PHONE_PORT" -m "$CALLS"
UAS_PID=$BG_PID
wait_bound udp "$PHONE_IP" "$PHONE_PORT" || fail "the phone (SIPp UAS) did not bind $PHONE_IP:$PHONE_PORT"
sleep 0.3
# -pause_msg_ign: kamailio's two UDP workers may reorder 180/200 (README.md here,
# "Known behaviour of the tools")
sipp_bg uac 90 "127.0.0.1:$PUB" -sf "$SIPP_DIR/invite_uac.xml" -s 1001 -key domain "$DOMAIN" -key caller 1002 \
    -i "$CALLER_IP" -p "$PHONE_PORT" -r "$RATE" -m "$CALLS" -pause_msg_ign
UAC_PID=$BG_PID
T_LOAD=$(date +%s.%N)
sleep 2

# 1. same file
kill -HUP "$SW_PID"
if wait_log_n 'config reloaded' 1; then pass "SIGHUP 1 (unchanged valid file) under load: 'config reloaded'"
else fail "SIGHUP 1 (unchanged valid file): no 'config reloaded' in the log within 5 s"; fi
sleep 1.5

# 2. a second domain
write_config "$RUN/two-domains.toml" "$DOMAIN" "$DOMAIN2"
replace_config "$RUN/two-domains.toml"
kill -HUP "$SW_PID"
if wait_log_n 'config reloaded' 2; then pass "SIGHUP 2 (adds $DOMAIN2) under load: 'config reloaded'"
else fail "SIGHUP 2 (adds $DOMAIN2): no second 'config reloaded' in the log within 5 s"; fi
probe after_add "$DOMAIN2"
check "after SIGHUP 2: OPTIONS sip:100@$DOMAIN2 is admitted and answered 200" [ $? -eq 0 ]

# 3. a broken file: refused, the two-domain config stays
sed 's/^domains = .*/&\nmode = "sometimes"/' "$RUN/two-domains.toml" > "$RUN/broken.toml"
BAD_LINE=$(grep -nF 'mode = "sometimes"' "$RUN/broken.toml" | cut -d: -f1)
replace_config "$RUN/broken.toml"
kill -HUP "$SW_PID"
if wait_log_n 'reload refused' 1; then
    pass "SIGHUP 3 (broken file) under load: the log says the reload was refused"
    log "$(grep -m1 'reload refused' "$RUN/sipwarden.log" | cut -c1-220)"
else
    fail "SIGHUP 3 (broken file): no 'reload refused' in the log within 5 s"
fi
if grep 'reload refused' "$RUN/sipwarden.log" | grep -q "line $BAD_LINE"; then
    pass "the refusal in the log names the line ($BAD_LINE)"
else
    fail "the refusal in the log does not name line $BAD_LINE"
fi
OUT=$(timeout 10 "$SIPWARDEN" check --config "$CFG" 2>&1); rc=$?
if [ $rc -eq 1 ] && echo "$OUT" | grep -q "line $BAD_LINE: key \`filter.mode\`"; then
    pass "sipwarden check on the broken file: exit 1, '$(echo "$OUT" | grep -o "line $BAD_LINE: key \`filter.mode\`.*" | cut -c1-80)'"
else
    fail "sipwarden check on the broken file: exit $rc, expected 1 and 'line $BAD_LINE: key \`filter.mode\`': $OUT"
fi
check "sipwarden still runs after the refused reload" sipwarden_alive
probe after_broken_new "$DOMAIN2"
check "after the refused reload: $DOMAIN2 still admitted (the previous config stays)" [ $? -eq 0 ]
probe after_broken_old "$DOMAIN"
check "after the refused reload: $DOMAIN still admitted" [ $? -eq 0 ]
if kill -0 "$UAC_PID" 2>/dev/null; then
    pass "all three reloads happened while the call load was still running ($(awk -v a="$(date +%s.%N)" -v b="$T_LOAD" 'BEGIN { printf "%.1f", a - b }') s into it)"
else
    fail "the call load ended before the third reload (reloads not under load)"
fi

# the load ends: every call completed, nothing retransmitted
reap "$UAC_PID"; UAC_RC=$?
reap "$UAS_PID"; UAS_RC=$?
if [ $UAC_RC -eq 0 ] && sipp_calls_ok uac "$CALLS"; then
    pass "caller: $CALLS calls through the three reloads, 0 failed (sipp exit 0)"
else
    fail "caller: sipp exit $UAC_RC, expected $CALLS successful calls"; show_sipp uac
fi
if [ $UAS_RC -eq 0 ] && sipp_calls_ok uas "$CALLS"; then
    pass "phone: answered $CALLS calls, 0 failed (sipp exit 0)"
else
    fail "phone: sipp exit $UAS_RC, expected $CALLS successful calls"; show_sipp uas
fi
# No message lost: sipwarden forwarded every message the SIP programs sent
# through it, in both directions, across the three reloads. Counted from the
# programs' message traces and sipwarden's counters since before the load.
# (Kamailio's tm discards a 180 that its two UDP workers let overtake the
# 200; the caller-side balance is therefore taken after kamailio.)
# msgs NAME sent|received req|resp: messages in a sipp message trace.
msgs() {
    local pat='^SIP/2\.0 '
    [ "$3" = req ] && pat='^[A-Z]+ sips?:'
    grep -a -A2 -E "^(UDP|TCP) message $2" "$RUN/$1.msg" 2>/dev/null | grep -a -cE "$pat"
}
metrics_dump "$RUN/m1.txt" || fail "metrics endpoint answers"
# (before the load some were never counted: absent, 0)
d() { echo $(( $(metric "$RUN/m1.txt" "$1" udp "$2" "$3") - $(metric_or_zero "$RUN/m0.txt" "$1" udp "$2" "$3") )); }
# every dropped sample, whatever its reason or side (no list to miss a reason in)
DROPPED=$(( $(metric_total "$RUN/m1.txt" dropped) - $(metric_total "$RUN/m0.txt" dropped) ))
PROBE_REQ=0; PROBE_RESP=0
for p in after_add after_broken_new after_broken_old; do
    PROBE_REQ=$((PROBE_REQ + $(msgs "$p" sent req))); PROBE_RESP=$((PROBE_RESP + $(msgs "$p" received resp)))
done
A_SENT=$(( $(msgs uac sent req) + PROBE_REQ ));  A_FWD=$(( $(d public domain forwarded) + $(d public dialog-route forwarded) ))
B_SENT=$(msgs uas sent resp);                    B_FWD=$(d public response forwarded)
C_RCVD=$(msgs uas received req);                 C_FWD=$(d internal outbound forwarded)
D_RCVD=$(( $(msgs uac received resp) + PROBE_RESP )); D_FWD=$(d internal response forwarded)
check "no message dropped by sipwarden during the load and the reloads (+$DROPPED)" [ "$DROPPED" -eq 0 ]
check "no message lost: requests caller+probes -> sipwarden -> kamailio: sent $A_SENT, forwarded $A_FWD" [ "$A_SENT" -gt 0 -a "$A_SENT" -eq "$A_FWD" ]
check "no message lost: responses phone -> sipwarden -> kamailio: sent $B_SENT, forwarded $B_FWD" [ "$B_SENT" -gt 0 -a "$B_SENT" -eq "$B_FWD" ]
check "no message lost: requests kamailio -> sipwarden -> phone: forwarded $C_FWD, received $C_RCVD" [ "$C_RCVD" -gt 0 -a "$C_RCVD" -eq "$C_FWD" ]
check "no message lost: responses kamailio -> sipwarden -> caller+probes: forwarded $D_FWD, received $D_RCVD" [ "$D_RCVD" -gt 0 -a "$D_RCVD" -eq "$D_FWD" ]
# Retransmissions (informational: a lost message would already fail the
# balance above; a message delayed past 500 ms on a busy machine is no loss):
# the sum of the "Retrans" column of sipp's final screen (values stand under
# the column titles, so cut at the title's position).
retrans() {
    awk '/Messages +Retrans +Timeout/ {on = 1; sum = 0; col = index($0, "Retrans"); next}
         /Test Terminated|Statistics Screen/ {on = 0}
         on { sum += substr($0, col, 9) + 0 }
         END { print sum + 0 }' "$RUN/$1.out"
}
R_UAC=$(retrans uac); R_UAS=$(retrans uas)
log "retransmissions: caller $R_UAC, phone $R_UAS$( [ $((R_UAC + R_UAS)) -gt 0 ] && echo '  (WARNING: something was slow)')"
SEND_ERR=$(gauge "$RUN/m1.txt" sipwarden_send_errors_total)
check "metrics: sipwarden_send_errors_total = $SEND_ERR" [ "$SEND_ERR" = 0 ]

OK_N=$(sample "$RUN/m1.txt" 'sipwarden_reloads_total{result="ok"}')
REF_N=$(sample "$RUN/m1.txt" 'sipwarden_reloads_total{result="refused"}')
check "metrics: sipwarden_reloads_total ok=$OK_N refused=$REF_N (expected 2 and 1)" [ "$OK_N" = 2 -a "$REF_N" = 1 ]
LAST_OK=$(gauge "$RUN/m1.txt" sipwarden_config_last_reload_success)
check "metrics: sipwarden_config_last_reload_success = $LAST_OK after the refused reload (expected 0)" [ "$LAST_OK" = 0 ]
LAST_T=$(gauge "$RUN/m1.txt" sipwarden_config_last_reload_success_timestamp_seconds)
START_T=$(gauge "$RUN/m0.txt" sipwarden_config_last_reload_success_timestamp_seconds)
check "metrics: the config in force was loaded by reload 2 ($LAST_T), after the start ($START_T)" \
    awk -v a="$LAST_T" -v b="$START_T" 'BEGIN { exit !(a > b && b > 0) }'
# The reload lines name the keys that changed, never their values.
RELOADED=$(grep 'config reloaded' "$RUN/sipwarden.log")
check "log: reload 1 (same file) changed nothing: $(echo "$RELOADED" | sed -n 1p | grep -o 'changed=[^ ]*')" \
    grep -q 'changed=""' <<< "$(echo "$RELOADED" | sed -n 1p)"
check "log: reload 2 names the changed key: $(echo "$RELOADED" | sed -n 2p | grep -o 'changed=[^ ]*')" \
    grep -q 'changed="filter.domains"' <<< "$(echo "$RELOADED" | sed -n 2p)"
check "log: no reload line shows a domain" [ -z "$(echo "$RELOADED" | grep -F -e "$DOMAIN2" -e "$DOMAIN")" ]

stop_sipwarden
finish
