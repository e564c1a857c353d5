#!/bin/bash
# The tables survive a crash (the state file, docs/operations.md): a
# restarted sidecar must not lose a provider's calls until Asterisk
# re-registers.
#
#   1. Asterisk registers the trunk through sipwarden (as in trunk.sh, UDP),
#      and a caller (127.0.0.5) is in a call with the backend whose ACK and
#      BYE ignore Record-Route (sent to the backend's Contact, no Route, no
#      secret domain in Request-URI or To: only the dialog table admits them). The state file ([state] save_interval = 200ms) is written.
#   2. SIGKILL (no flush), start again with the same config, state file and
#      secret key file: the log says "state restored" with the registration
#      and the dialog; the caller's Route-less BYE, sent after the restart,
#      passes (dialog); the provider's DID INVITE and its INVITE to the
#      registered Contact token are admitted and reach the backend with
#      X-Sipwarden-Trunk.
#   3. Restart with another secret key file: the state file (written under the
#      first key) is reported and ignored; the DID INVITE gets no answer.
#   4. A corrupt state file (garbage): reported ("state file ignored"), the
#      proxy starts anyway and serves (an OPTIONS with the domain is answered),
#      and the DID INVITE gets no answer (nothing restored).
#   5. Bans survive a crash: with ban.after_rejects = 3, a scanner
#      (127.0.0.4) is banned for 10 min, then (after a SIGHUP to
#      ban.duration = 4s) another one (127.0.0.6) for 4 s; both are in the
#      state file. SIGKILL, wait until the short ban has ended, restart: log
#      "state restored ... bans=1 expired=1", the first source's OPTIONS with
#      the secret domain is dropped as `banned`, the second's is forwarded
#      and answered.
source "$(dirname "$0")/lib.sh"
setup restart
trunk_transport udp
STATE=$RUN/state/sipwarden.state
CFG=$RUN/sipwarden.toml
PEER_IP=$PROBE_IP

write_config "$CFG" "$DOMAIN"
trunk_config "$CFG"
cat >> "$CFG" <<EOF

[state]
path = "$STATE"
save_interval = "200ms"

[ban]
after_rejects = 0
EOF
start_sipwarden
capture_start backend "host 127.0.0.1 and port $BE"

# 1. registration + a live dialog
trunk_register reg 600 3600 "Asterisk registers the trunk via the internal socket: 401, retry, 200"
wait_log_n "trunk registered" 1 || fail "no 'trunk registered' log line"
CONTACT=$TRUNK_REGISTERED
log "registered Contact: $CONTACT"

# The backend (SIPp UAS as Asterisk) answers the caller's call and, after the
# restart, the provider's two calls.
sipp_bg backend 60 -sf "$SIPP_DIR/uas_answer.xml" -m 3 -i 127.0.0.1 -p "$BE"
UAS=$BG_PID
wait_bound udp 127.0.0.1 "$BE" || fail "the backend UAS did not bind 127.0.0.1:$BE"
# the call: ACK right after the 200, BYE 6 s later (after the restart)
sipp_bg caller 40 "127.0.0.1:$PUB" -sf "$SIPP_DIR/dialog_uac.xml" -m 1 -s 500 -key domain "$DOMAIN" \
    -key to_host 127.0.0.1 -key caller 1005 -i "$PEER_IP" -p "$PHONE_PORT" -d 6000 -cid_str "e2e-restart-call-%u-%p"
CALLER=$BG_PID
acked=0
wait_match '^ACK ' "$RUN/caller.msg" && acked=1
check "the caller's call was answered and ACKed before the crash" [ $acked = 1 ]
# the state file holds the registration and the confirmed dialog (<= 200 ms debounce)
written=0
for i in $(seq 30); do
    if [ -s "$STATE" ] && grep -q "$TRUNK_ACCOUNT@127.0.0.1:$BE;line=$TRUNK_LINE" "$STATE" \
        && [ "$(grep -o '"dialogs":\[[^]]' "$STATE" | wc -l)" -ge 1 ]; then written=1; break; fi
    sleep 0.1
done
check "the state file was written with the registration and a dialog ($(stat -c %s "$STATE" 2>/dev/null) bytes)" [ $written = 1 ]
metrics_dump "$RUN/m-before.txt"
check "metrics: sipwarden_state_writes_total = $(gauge "$RUN/m-before.txt" sipwarden_state_writes_total) (>= 1)" \
    [ "$(gauge "$RUN/m-before.txt" sipwarden_state_writes_total)" -ge 1 ]

# 2. crash and restart
kill_sipwarden; rc=$?
T_KILL=$(date +%s.%N)
check "sipwarden was running and SIGKILL ended it (status $rc = 128 + 9)" [ "$rc" -eq 137 ]
start_sipwarden
log "restarted in $(awk -v a="$(date +%s.%N)" -v b="$T_KILL" 'BEGIN { printf "%.2f", a - b }') s"
if wait_log_n "state restored" 1; then
    LINE=$(grep 'state restored' "$RUN/sipwarden.log" | tail -1)
    log "${LINE#*INFO }"
    if echo "$LINE" | grep -q 'registrations=1' && echo "$LINE" | grep -qE 'dialogs=[1-9]'; then
        pass "log: state restored with registrations=1 and the dialog ($(echo "$LINE" | grep -o 'dialogs=[0-9]*'))"
    else
        fail "log: 'state restored' does not name registrations=1 and dialogs>=1: $LINE"
    fi
else
    fail "no 'state restored' log line after the restart"
fi
metrics_dump "$RUN/m-after.txt"
check "metrics after the restart: sipwarden_registrations = 1 ($(gauge "$RUN/m-after.txt" sipwarden_registrations))" \
    [ "$(gauge "$RUN/m-after.txt" sipwarden_registrations)" -eq 1 ]

trunk_invite did "sip:$TRUNK_DID@127.0.0.1:$PUB" "$PROVIDER_IP" \
    "after SIGKILL + restart: the provider's DID INVITE from $PROVIDER_IP is admitted and answered (ACK, BYE 200)"
trunk_invite contact "$CONTACT" "$PROVIDER_IP" \
    "after SIGKILL + restart: the provider's INVITE to the registered Contact token is admitted and answered"
expect_bg caller "the caller's Route-less BYE, sent 6 s after the ACK (after the restart), passed (restored dialog) and got 200" "$CALLER"
expect_bg backend "the backend answered the three calls" "$UAS"
sipp_requests backend INVITE > "$RUN/backend-invites.txt"
sipp_requests backend BYE > "$RUN/backend-byes.txt"
N=$(grep -ic '^X-Sipwarden-Trunk: provider1$' "$RUN/backend-invites.txt")
check "the two provider INVITEs reached the backend with X-Sipwarden-Trunk: provider1 ($N)" [ "$N" -eq 2 ]
check "the Contact INVITE's Request-URI was rewritten back to Asterisk's Contact ($TRUNK_CONTACT)" \
    grep -qx "INVITE $TRUNK_CONTACT SIP/2.0" "$RUN/backend-invites.txt"
check "the caller's BYE reached the backend without Route ($(grep -c '^BYE sip:uas@' "$RUN/backend-byes.txt") BYE to the Contact)" \
    grep -q '^BYE sip:uas@127.0.0.1' "$RUN/backend-byes.txt"
metrics_dump "$RUN/m-after2.txt"
d() { metric_delta "$RUN/m-after2.txt" "$RUN/m-after.txt" "$1" "$2"; }
log "metrics since the restart: dialog forwarded=$(d dialog forwarded), trunk forwarded=$(d trunk forwarded), trunk-contact forwarded=$(d trunk-contact forwarded)"
check "metrics: the BYE was admitted by the restored dialog (dialog forwarded +$(d dialog forwarded))" [ "$(d dialog forwarded)" -ge 1 ]
check "metrics: the DID INVITE was admitted as trunk (+$(d trunk forwarded))" [ "$(d trunk forwarded)" -ge 1 ]
check "metrics: the Contact INVITE was admitted as trunk-contact (+$(d trunk-contact forwarded))" [ "$(d trunk-contact forwarded)" -eq 1 ]
stop_sipwarden

# 3. another secret key: the state file is foreign
sed "s|^key_file = .*|key_file = \"$RUN/other-secret\"|" "$CFG" > "$RUN/other-key.toml"
cp "$STATE" "$RUN/state-saved"
mv "$CFG" "$RUN/sipwarden-main.toml"; cp "$RUN/other-key.toml" "$CFG"
N0=$(grep -c 'state file ignored' "$RUN/sipwarden.log")
start_sipwarden
if wait_log_n "state file ignored" $((N0 + 1)); then
    pass "another secret key file: the state file is reported and ignored ($(grep 'state file ignored' "$RUN/sipwarden.log" | tail -1 | grep -o 'error=.*' | cut -c1-80))"
else
    fail "another secret key file: no 'state file ignored' log line"
fi
trunk_silent_bg foreign-did "sip:$TRUNK_DID@127.0.0.1:$PUB" "$PROVIDER_IP" "$PROV_PORT"
silent_wait "with the foreign state ignored, the provider's DID INVITE gets no answer"
stop_sipwarden
cp "$RUN/sipwarden-main.toml" "$CFG"

# 4. a corrupt state file
printf '{"format":"sipwarden-state","version":1,"registrations":[{"tok\x00\xff garbage' > "$STATE"
N0=$(grep -c 'state file ignored' "$RUN/sipwarden.log")
start_sipwarden
if wait_log_n "state file ignored" $((N0 + 1)); then
    pass "corrupt state file: reported and ignored ($(grep 'state file ignored' "$RUN/sipwarden.log" | tail -1 | grep -o 'error=.*' | cut -c1-80))"
else
    fail "corrupt state file: no 'state file ignored' log line"
fi
check "corrupt state file: sipwarden started and runs" sipwarden_alive
metrics_dump "$RUN/m-corrupt.txt"
check "metrics: sipwarden_state_errors_total = $(gauge "$RUN/m-corrupt.txt" sipwarden_state_errors_total) (>= 1)" \
    [ "$(gauge "$RUN/m-corrupt.txt" sipwarden_state_errors_total)" -ge 1 ]
check "metrics: sipwarden_registrations = 0 (nothing restored)" [ "$(gauge "$RUN/m-corrupt.txt" sipwarden_registrations)" -eq 0 ]
sipp_bg backend-options 20 -sf "$SIPP_DIR/uas_options.xml" -m 1 -i 127.0.0.1 -p "$BE"
BOPT=$BG_PID
wait_bound udp 127.0.0.1 "$BE" || fail "the backend UAS did not bind 127.0.0.1:$BE"
expect_sipp probe "corrupt state file: sipwarden serves (OPTIONS sip:100@$DOMAIN from $PEER_IP answered 200 by the backend)" \
    "127.0.0.1:$PUB" -sf "$SIPP_DIR/options_uac.xml" -m 1 -s 100 -key domain "$DOMAIN" -key ua sipp-e2e-probe \
    -i "$PEER_IP" -p "$PHONE_PORT" -cid_str "e2e-restart-probe-%u-%p"
expect_bg backend-options "the backend answered the OPTIONS" "$BOPT"
trunk_silent_bg corrupt-did "sip:$TRUNK_DID@127.0.0.1:$PUB" "$PROVIDER_IP" "$PROV_PORT"
silent_wait "corrupt state file: the provider's DID INVITE gets no answer (nothing was restored)"

# 5. bans survive a crash; a ban that ended meanwhile does not come back
stop_sipwarden
BAN_STATE=$RUN/state-bans/sipwarden.state
BAN_LONG_IP=$SCANNER_IP
BAN_SHORT_IP=$UA_SCANNER_IP
write_config "$CFG" "$DOMAIN"
cat >> "$CFG" <<EOF

[state]
path = "$BAN_STATE"
save_interval = "200ms"

[ban]
after_rejects = 3
duration = "10m"
EOF
start_sipwarden
SO=(-sf "$(silent_scenario OPTIONS)" -s 100 -key host 127.0.0.1 -key to_host 127.0.0.1 -key from_host 127.0.0.1 -key ua sipp-e2e-scan)
expect_sipp ban-long "scanner $BAN_LONG_IP: 3 OPTIONS by IP get no answer (and ban it for 10 min)" \
    "127.0.0.1:$PUB" "${SO[@]}" -m 3 -r 10 -i "$BAN_LONG_IP" -p "$PHONE_PORT" -cid_str "e2e-ban-long-%u-%p"
wait_log_n "source=$BAN_LONG_IP.*banned|banned.*source=$BAN_LONG_IP" 1 \
    || fail "no 'banned' log line for $BAN_LONG_IP"
sed -i 's/^duration = "10m"$/duration = "4s"/' "$CFG"
N0=$(grep -c 'config reloaded' "$RUN/sipwarden.log")
kill -HUP "$SW_PID"
wait_log_n 'config reloaded' $((N0 + 1)) || fail "SIGHUP to ban.duration = 4s: no 'config reloaded'"
sipp_bg ban-short 20 "127.0.0.1:$PUB" "${SO[@]}" -m 3 -r 10 -i "$BAN_SHORT_IP" -p "$PHONE_PORT" -cid_str "e2e-ban-short-%u-%p"
SHORT_PID=$BG_PID
# both bans in the state file (200 ms debounce), then the crash, while the
# short one is still in force
seen=0
for i in $(seq 30); do
    if grep -q "\"ip\":\"$BAN_LONG_IP\"" "$BAN_STATE" 2>/dev/null && grep -q "\"ip\":\"$BAN_SHORT_IP\"" "$BAN_STATE" 2>/dev/null; then
        seen=1; break
    fi
    sleep 0.1
done
T_SEEN=$(date +%s.%N)
kill_sipwarden
check "the state file held both bans ($BAN_LONG_IP for 10 min, $BAN_SHORT_IP for 4 s) at the SIGKILL" [ $seen = 1 ]
log "state file: $(grep -o '"bans":\[[^]]*\]' "$BAN_STATE" 2>/dev/null)"
expect_bg ban-short "scanner $BAN_SHORT_IP: its OPTIONS by IP got no answer" "$SHORT_PID"
# the short ban ends at most 4 s after it was seen in the file
REST=$(awk -v a="$T_SEEN" -v b="$(date +%s.%N)" 'BEGIN { r = a + 4.3 - b; print (r > 0 ? r : 0) }')
sleep "$REST"
# (a restored ban lasts at most ban.duration from the restart: back to 10m)
sed -i 's/^duration = "4s"$/duration = "10m"/' "$CFG"
N0=$(grep -c 'state restored' "$RUN/sipwarden.log")
start_sipwarden
if wait_log_n "state restored" $((N0 + 1)); then
    LINE=$(grep 'state restored' "$RUN/sipwarden.log" | tail -1)
    log "${LINE#*INFO }"
    if echo "$LINE" | grep -q ' bans=1' && echo "$LINE" | grep -q ' expired=1'; then
        pass "log: state restored with bans=1 expired=1 (the 10 min ban kept, the 4 s one ended)"
    else
        fail "log: 'state restored' does not say bans=1 expired=1: $LINE"
    fi
else
    fail "no 'state restored' log line after the restart with bans"
fi
metrics_dump "$RUN/m-bans0.txt"
check "metrics after the restart: sipwarden_bans = 1 ($(gauge "$RUN/m-bans0.txt" sipwarden_bans))" \
    [ "$(gauge "$RUN/m-bans0.txt" sipwarden_bans)" -eq 1 ]
# a backend that answers one OPTIONS: the banned source's, were it forwarded
sipp_bg backend-unbanned 20 -sf "$SIPP_DIR/uas_options.xml" -m 1 -i 127.0.0.1 -p "$BE"
BOPT=$BG_PID
wait_bound udp 127.0.0.1 "$BE" || fail "the backend UAS did not bind 127.0.0.1:$BE"
expect_sipp banned-domain "after SIGKILL + restart: $BAN_LONG_IP (still banned) gets no answer, even with the secret domain" \
    "127.0.0.1:$PUB" -sf "$(silent_scenario OPTIONS)" -m 1 -s 100 -key host "$DOMAIN" -key to_host "$DOMAIN" \
    -key from_host "$DOMAIN" -key ua sipp-e2e-probe -i "$BAN_LONG_IP" -p "$PHONE_PORT" -cid_str "e2e-banned-domain-%u-%p"
expect_sipp unbanned "after SIGKILL + restart: $BAN_SHORT_IP (its ban ended) is forwarded and answered 200" \
    "127.0.0.1:$PUB" -sf "$SIPP_DIR/options_uac.xml" -m 1 -s 100 -key domain "$DOMAIN" -key ua sipp-e2e-probe \
    -i "$BAN_SHORT_IP" -p "$PHONE_PORT" -cid_str "e2e-unbanned-%u-%p"
expect_bg backend-unbanned "the backend answered the OPTIONS of $BAN_SHORT_IP" "$BOPT"
metrics_dump "$RUN/m-bans1.txt"
DB=$(metric_delta "$RUN/m-bans1.txt" "$RUN/m-bans0.txt" banned dropped)
DF=$(metric_delta "$RUN/m-bans1.txt" "$RUN/m-bans0.txt" domain forwarded)
check "metrics: the banned source's OPTIONS (and its retransmissions) dropped as banned (+$DB)" [ "$DB" -ge 1 ]
check "metrics: the other source's OPTIONS forwarded as domain (+$DF)" [ "$DF" -eq 1 ]
check "log: dropped with reason=banned from $BAN_LONG_IP after the restart" \
    grep -qE "dropped source=$BAN_LONG_IP:[0-9]+ .*reason=\"?banned\"? .*line=\"?OPTIONS sip:100@$DOMAIN" "$RUN/sipwarden.log"

capture_stop
capture_sip backend > "$RUN/backend.txt"
if grep -qE 'e2e-(foreign|corrupt)-did' "$RUN/backend.txt"; then
    fail "capture: a DID INVITE sent after the foreign/corrupt restart reached the backend"
else
    pass "capture: no DID INVITE sent after the foreign/corrupt restarts on the backend port"
fi
check "capture: the DID INVITE after the crash-restart is on the backend port" grep -q 'e2e-did-' "$RUN/backend.txt"

stop_sipwarden
finish
