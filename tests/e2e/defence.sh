#!/bin/bash
# Defence in depth (the layers on top of admission in docs/admission.md),
# against Kamailio run with -A WITH_AUTH (REGISTER needs digest
# auth, password "secret"; see kamailio.cfg) behind sipwarden. One sipwarden per part,
# each with the config of that part; after each part its metrics endpoint is
# scraped over HTTP (curl) and the counters that part must move are checked.
#
#   (a) bans: svcrack --domain (the right domain) guesses 101's password from
#       a 31-word list whose last word is the real one. filter.user_agents = []
#       (svcrack has no option to change its User-Agent "friendly-scanner"),
#       ban.after_auth_failures = 5: after 5 REGISTERs with credentials
#       answered 401 the source is banned; svcrack gets no answer after that,
#       never reaches the password, and a valid OPTIONS from that source is
#       not answered either. Meanwhile a SIPp phone 1001 (127.0.0.2, -au/-ap)
#       keeps registering (401 + digest + 200) and calling: all succeed.
#   (b) blocklist: svmap (it has no domain option) and svwar --force --domain
#       with their default User-Agent get nothing; nothing reaches Kamailio.
#   (c) rate limit: 2000 OPTIONS with the domain in 2 s from 127.0.0.5
#       (limits.rate 50/s, burst 100): most are dropped as rate-limited, while
#       20 calls from 127.0.0.3 at 10/s all succeed.
#   (e) monitor mode: the same svmap gets "would-drop" counted, nothing is
#       dropped, and since everything is forwarded svmap now finds Kamailio.
#   (d) a figures table: per tool the requests it sent (tshark on the public
#       port), forwarded (the same Call-IDs on the backend port), the responses
#       it got back, dropped by reason and bans (metrics); sent = forwarded +
#       dropped.
# svcrack and svwar cannot bind a source address: they send from 127.0.0.1.
source "$(dirname "$0")/lib.sh"
setup defence
start_kamailio WITH_AUTH
SVMAP_IP=127.0.0.7
for i in $(seq 30); do echo "guess$i"; done > "$RUN/dict.txt"
echo secret >> "$RUN/dict.txt"
FIGURES=()

# part_config [SED-EXPR...]: the e2e config with the per-phone limits that
# suit one phone (rate 50, burst 100, REGISTER 5/20; the defaults are
# sized for an office, see office.sh) and the ban defaults,
# edited by the sed expressions; more TOML may be appended afterwards. The
# flood's numbers in (c) and the guesses in flight in (a) are asserted
# against these bursts.
part_config() {
    local f=$RUN/sipwarden.toml e args=()
    write_config "$f" "$DOMAIN"
    sed -i -e 's/^rate = .*/rate = 50/' -e 's/^burst = .*/burst = 100/' \
        -e 's/^register_rate = .*/register_rate = 5/' -e 's/^register_burst = .*/register_burst = 20/' "$f"
    for e in "$@"; do args+=(-e "$e"); done
    [ ${#args[@]} -gt 0 ] && sed -i "${args[@]}" "$f"
    return 0
}

# part_start NAME: sipwarden with $RUN/sipwarden.toml, a capture of the
# public and backend ports.
part_start() {
    echo "-- $1"
    start_sipwarden
    capture_start "$1" "udp port $PUB or udp port $BE"
}

# part_end NAME: capture and metrics of the part, sipwarden stopped.
part_end() {
    capture_stop
    timeout 60 tshark -r "$RUN/$1.pcap" -T fields -E separator='|' -e ip.src -e udp.srcport -e ip.dst -e udp.dstport \
        -e sip.Request-Line -e sip.Status-Line -e sip.Call-ID 2>/dev/null > "$RUN/$1.txt"
    metrics_dump "$RUN/m-$1.txt" || fail "$1: the metrics endpoint answers over HTTP"
    stop_sipwarden
}

# tool NAME PART IP PORT: SENT requests from IP:PORT to the public port,
# ANSWERED responses back to it, FWD requests with its Call-IDs on the backend port.
tool() {
    local f=$RUN/$2.txt
    SENT=$(awk -F'|' -v ip="$3" -v p="$4" -v pub="$PUB" '$1 == ip && $2 == p && $4 == pub && $5 != ""' "$f" | wc -l)
    ANSWERED=$(awk -F'|' -v ip="$3" -v p="$4" -v pub="$PUB" '$2 == pub && $3 == ip && $4 == p' "$f" | wc -l)
    FWD=$(awk -F'|' -v ip="$3" -v p="$4" -v pub="$PUB" -v be="$BE" '
        $1 == ip && $2 == p && $4 == pub && $5 != "" {cid[$7] = 1}
        $4 == be && $5 != "" && ($7 in cid) {n++}
        END {print n + 0}' "$f")
}

# drops FILE: "reason=n ..." of every dropped counter (public side), and
# DROPPED = their sum (no value, and a failed lookup, when FILE is no scrape).
drops() {
    DROPS=$(grep -E '^sipwarden_messages_total\{side="public".*disposition="dropped"\}' "$1" \
        | sed -E 's/.*reason="([^"]*)".* ([0-9]+)$/\1 \2/' \
        | awk '{s[$1] += $2} END {for (r in s) if (s[r] > 0) printf "%s=%d ", r, s[r]}')
    DROPPED=$(metric_total "$1" dropped public)
}

# figure PART TOOL SOURCE [REASONS] (after tool/drops): one row of the table;
# dropped = sent - forwarded (capture), reasons = the part's drop counters.
FMT='%-4s|%-37s|%-16s|%6s|%10s|%8s|%10s|%-36s|%5s'
figure() {
    FIGURES+=("$(printf "$FMT" "$1" "$2" "$3" "$SENT" "$FWD" "$((SENT - FWD))" "$ANSWERED" "${4:-${DROPS:--}}" "$BANS")")
}

# ------------------------------------------------------------------ (a)
part_config 's/^\[filter\]/[filter]\nuser_agents = []/'
cat >> "$RUN/sipwarden.toml" <<EOF

[ban]
after_auth_failures = 5
after_rejects = 0
window = "60s"
duration = "10m"
EOF
part_start a-bans
# svcrack first, the phone's registrations and calls right after (they overlap it)
# (-x: no self-IP lookup; --maximumtime=2: give up 2 s after the last answer)
timeout 40 svcrack -u101 -d "$RUN/dict.txt" --domain "$DOMAIN" --maximumtime=2 -x 127.0.0.1 127.0.0.1 -p "$PUB" \
    -P "$SV_PORT" > "$RUN/svcrack.out" 2>&1 &
SVC=$!
PIDS+=("$SVC")
sleep 0.3
sipp_bg phone-reg 30 "127.0.0.1:$PUB" -sf "$SIPP_DIR/phone_register.xml" -m 6 -r 3 -s 1001 -key domain "$DOMAIN" \
    -key contact_port "$PHONE_PORT" -au 1001 -ap secret -i "$PHONE_IP" -p "$PHONE_PORT" -cid_str "e2e-phone-reg-%u-%p"
REG=$BG_PID
sipp_bg phone-call 30 "127.0.0.1:$PUB" -sf "$SIPP_DIR/invite_uac.xml" -m 10 -r 5 -s 5551234 -key domain "$DOMAIN" \
    -key caller 1001 -i "$PHONE_IP" -p "$((PHONE_PORT + 1))" -cid_str "e2e-phone-call-%u-%p"
CALLS=$BG_PID
# svcrack gives up 2 s after the last answer, then idles 10 s on a socket
# timeout before it exits: once it said so, it is stopped (it sends nothing more).
for i in $(seq 200); do
    grep -q 'since we last received a response - stopping' "$RUN/svcrack.out" && break
    kill -0 "$SVC" 2>/dev/null || break
    sleep 0.1
done
sleep 0.3
kill -TERM "$SVC" 2>/dev/null
reap "$SVC"
if grep -q 'since we last received a response - stopping' "$RUN/svcrack.out" && ! grep -qiE 'secret|cracked|password' "$RUN/svcrack.out"; then
    pass "(a) svcrack -u101 --domain $DOMAIN with 31 passwords (the real one last) gave up without the password: $(grep -o 'It has been.*' "$RUN/svcrack.out" | head -1)"
else
    fail "(a) svcrack did not give up as expected, output:"; sed 's/^/   | /' "$RUN/svcrack.out" | tail -n 8
fi
reap "$REG"; rc=$?
if [ $rc -eq 0 ] && sipp_calls_ok phone-reg 6; then pass "(a) phone 1001 ($PHONE_IP) registered 6 times with digest auth (401, 200) during and after the attack"
else fail "(a) phone 1001's registrations (sipp exit $rc)"; show_sipp phone-reg; fi
reap "$CALLS"; rc=$?
if [ $rc -eq 0 ] && sipp_calls_ok phone-call 10; then pass "(a) phone 1001 made 10 calls, all answered, ACKed and ended (BYE 200)"
else fail "(a) phone 1001's calls (sipp exit $rc)"; show_sipp phone-call; fi
# the banned source: even a valid request is not answered
expect_sipp banned-probe "(a) the banned source 127.0.0.1 gets no answer even to a valid OPTIONS with the secret domain" \
    "127.0.0.1:$PUB" -sf "$(silent_scenario OPTIONS)" -m 1 -s 100 -key host "$DOMAIN" -key to_host "$DOMAIN" \
    -key from_host "$DOMAIN" -key ua sipp-e2e-probe -i 127.0.0.1 -p "$((PHONE_PORT + 1))" -cid_str "e2e-banned-probe-%u-%p"
if grep -E 'banned' "$RUN/sipwarden.log" | grep -q 'source=127.0.0.1 trigger="authentication failures"'; then
    pass "(a) log: $(grep 'banned source=127.0.0.1' "$RUN/sipwarden.log" | tail -1 | sed 's/^.*WARN //')"
else
    fail "(a) log: no 'banned source=127.0.0.1 trigger=\"authentication failures\"' line"
fi
part_end a-bans
M=$RUN/m-a-bans.txt
BANS=$(gauge "$M" sipwarden_bans_total)
check "(a) metrics: sipwarden_bans_total = $BANS (svcrack's source, and only it)" [ "$BANS" -eq 1 ]
check "(a) metrics: sipwarden_bans = $(gauge "$M" sipwarden_bans) (banned now)" [ "$(gauge "$M" sipwarden_bans)" -eq 1 ]
BANNED=$(metric_sum "$M" banned dropped)
check "(a) metrics: banned dropped = $BANNED (svcrack's later guesses and the probe)" [ "$BANNED" -ge 2 ]
tool svcrack a-bans 127.0.0.1 "$SV_PORT"
AUTHD=$(timeout 30 tshark -r "$RUN/a-bans.pcap" -Y "udp.dstport == $BE && sip.Method == \"REGISTER\" && sip.Authorization && sip.User-Agent contains \"friendly-scanner\"" 2>/dev/null | wc -l)
log "(a) svcrack: sent $SENT, answered $ANSWERED, forwarded $FWD, of them with credentials $AUTHD"
# svcrack sends a guess per challenge it holds; with two challenges queued a
# 6th guess can already be on its way when the 5th 401 bans the source
check "(a) capture: $AUTHD of svcrack's REGISTERs with credentials reached kamailio (ban.after_auth_failures = 5; 5, or one or two more already in flight)" \
    [ "$AUTHD" -ge 5 -a "$AUTHD" -le 7 ]
# (besides the 5 guesses, svcrack's REGISTERs without credentials that ask for
# a fresh challenge pass too, how many depends on timing: their 401s are no
# authentication failures)
check "(a) capture: svcrack got answers only to what passed before the ban: $ANSWERED responses = $FWD forwarded (>= 1 + 5)" \
    [ "$ANSWERED" -eq "$FWD" -a "$FWD" -ge 6 ]
drops "$M"
S_SVC=$SENT; F_SVC=$FWD; A_SVC=$ANSWERED
tool banned-probe a-bans 127.0.0.1 "$((PHONE_PORT + 1))"
check "(a) every request from the banned source is accounted for: svcrack $S_SVC + probe $SENT sent = forwarded $F_SVC + dropped $DROPPED ($DROPS)" \
    [ $((S_SVC + SENT)) -eq $((F_SVC + DROPPED)) ]
SENT=$S_SVC; FWD=$F_SVC; ANSWERED=$A_SVC
figure a "svcrack --domain (guesses 101)" "127.0.0.1:$SV_PORT" "${DROPS}(with the probe's)"
for t in phone-reg:$PHONE_PORT phone-call:$((PHONE_PORT + 1)); do
    tool "${t%%:*}" a-bans "$PHONE_IP" "${t##*:}"
    check "(a) ${t%%:*}: every request forwarded ($FWD of $SENT) and the phone never banned" [ "$SENT" -gt 0 -a "$SENT" -eq "$FWD" ]
    BANS_SAVE=$BANS; BANS=0
    figure a "SIPp phone 1001: ${t%%:*}" "$PHONE_IP:${t##*:}" "-"
    BANS=$BANS_SAVE
done

# ------------------------------------------------------------------ (b)
part_config
part_start b-blocklist
timeout 30 svmap 127.0.0.1 -p "$PUB" -P "$SV_PORT" -b "$SVMAP_IP" -x "$SVMAP_IP" > "$RUN/svmap.out" 2>&1; rc=$?
if [ $rc -eq 0 ] && grep -q 'found nothing' "$RUN/svmap.out"; then pass "(b) svmap 127.0.0.1 -p$PUB (from $SVMAP_IP): found nothing"
else fail "(b) svmap: exit $rc"; sed 's/^/   | /' "$RUN/svmap.out"; fi
timeout 40 svwar --force -e100-130 --domain "$DOMAIN" --maximumtime=2 -x 127.0.0.1 127.0.0.1 -p "$PUB" -P "$SV_PORT" > "$RUN/svwar.out" 2>&1; rc=$?
if [ $rc -eq 0 ] && grep -q 'found nothing' "$RUN/svwar.out" && ! grep -qE 'reqauth|noauth' "$RUN/svwar.out"; then
    pass "(b) svwar --force --domain $DOMAIN -e100-130 (101..130 exist on the PBX): found nothing"
else fail "(b) svwar: exit $rc"; sed 's/^/   | /' "$RUN/svwar.out"; fi
part_end b-blocklist
M=$RUN/m-b-blocklist.txt
UA=$(metric_sum "$M" user-agent dropped)
check "(b) metrics: user-agent dropped = $UA" [ "$UA" -ge 2 ]
check "(b) metrics: nothing admitted by domain ($(metric_sum "$M" domain forwarded))" [ "$(metric_sum "$M" domain forwarded)" -eq 0 ]
BANS=$(gauge "$M" sipwarden_bans_total)
drops "$M"
TOTAL_SENT=0
for t in svmap:$SVMAP_IP svwar:127.0.0.1; do
    tool "${t%%:*}" b-blocklist "${t##*:}" "$SV_PORT"
    TOTAL_SENT=$((TOTAL_SENT + SENT))
    check "(b) capture: ${t%%:*} sent $SENT, got $ANSWERED answers, $FWD reached kamailio" [ "$SENT" -gt 0 -a "$ANSWERED" -eq 0 -a "$FWD" -eq 0 ]
    figure b "${t%%:*} (User-Agent friendly-scanner)" "${t##*:}:$SV_PORT"
done
check "(b) every datagram of theirs was dropped: sent $TOTAL_SENT = dropped $DROPPED ($DROPS)" [ "$TOTAL_SENT" -eq "$DROPPED" ]
log "(b) bans after 20 rejected messages (ban.after_rejects default): $BANS"

# ------------------------------------------------------------------ (c)
part_config
printf '\n[ban]\nafter_rejects = 0\n' >> "$RUN/sipwarden.toml"
part_start c-flood
sipp_bg calls 30 "127.0.0.1:$PUB" -sf "$SIPP_DIR/invite_uac.xml" -m 20 -r 10 -s 5551234 -key domain "$DOMAIN" \
    -key caller 1002 -i "$CALLER_IP" -p "$PHONE_PORT" -cid_str "e2e-flood-calls-%u-%p"
CALLS=$BG_PID
sipp_run flood 30 "127.0.0.1:$PUB" -sf "$SIPP_DIR/flood.xml" -m 2000 -r 1000 -s 100 -key domain "$DOMAIN" \
    -key ua sipp-e2e-flood -i "$FLOOD_IP" -p "$((PHONE_PORT + 1))" -cid_str "e2e-flood-%u-%p"; rc=$?
check "(c) the flood: sipp sent its 2000 OPTIONS (exit $rc)" [ $rc -eq 0 ]
reap "$CALLS"; rc=$?
if [ $rc -eq 0 ] && sipp_calls_ok calls 20; then pass "(c) during the flood, 20 calls from $CALLER_IP at 10/s: all answered and ended"
else fail "(c) the calls during the flood (sipp exit $rc)"; show_sipp calls; fi
part_end c-flood
M=$RUN/m-c-flood.txt
RL=$(metric_sum "$M" rate-limited dropped)
BANS=$(gauge "$M" sipwarden_bans_total)
tool flood c-flood "$FLOOD_IP" "$((PHONE_PORT + 1))"
drops "$M"
log "(c) flood: sent $SENT, forwarded $FWD, answered $ANSWERED, rate-limited $RL"
check "(c) capture: all 2000 OPTIONS reached the public port ($SENT)" [ "$SENT" -eq 2000 ]
check "(c) metrics: rate-limited dropped = $RL (>= 1500 of 2000)" [ "$RL" -ge 1500 ]
check "(c) about burst + rate x time passed: forwarded $FWD in [100, 400]" [ "$FWD" -ge 100 -a "$FWD" -le 400 ]
check "(c) every flood message accounted for: sent $SENT = forwarded $FWD + rate-limited $RL" [ "$SENT" -eq $((FWD + RL)) ]
figure c "SIPp OPTIONS flood (1000/s)" "$FLOOD_IP:$((PHONE_PORT + 1))"
tool calls c-flood "$CALLER_IP" "$PHONE_PORT"
check "(c) the caller was never limited: forwarded $FWD of $SENT" [ "$SENT" -gt 0 -a "$SENT" -eq "$FWD" ]
figure c "SIPp calls (20 at 10/s)" "$CALLER_IP:$PHONE_PORT" "-"

# ------------------------------------------------------------------ (e)
part_config 's/^\[filter\]/[filter]\nmode = "monitor"/'
part_start e-monitor
timeout 30 svmap 127.0.0.1 -p "$PUB" -P "$SV_PORT" -b "$SVMAP_IP" -x "$SVMAP_IP" > "$RUN/svmap-monitor.out" 2>&1; rc=$?
if [ $rc -eq 0 ] && grep -q "127.0.0.1:$PUB.*lab-pbx" "$RUN/svmap-monitor.out"; then
    pass "(e) monitor mode: the same svmap is forwarded and finds 'lab-pbx (kamailio)' behind sipwarden"
else fail "(e) monitor mode: svmap exit $rc, did not find the PBX"; sed 's/^/   | /' "$RUN/svmap-monitor.out"; fi
if grep -q 'would drop (monitor mode)' "$RUN/sipwarden.log" && grep 'would drop' "$RUN/sipwarden.log" | grep -q 'reason="\?user-agent'; then
    pass "(e) log: 'would drop (monitor mode) ... reason=user-agent'"
else fail "(e) log: no 'would drop (monitor mode)' line with reason user-agent"; fi
part_end e-monitor
M=$RUN/m-e-monitor.txt
WD=$(metric_sum "$M" user-agent would-drop)
drops "$M"
BANS=$(gauge "$M" sipwarden_bans_total)
check "(e) metrics: user-agent would-drop = $WD (>= 1)" [ "$WD" -ge 1 ]
check "(e) metrics: nothing dropped ($DROPPED), nobody banned ($BANS)" [ "$DROPPED" -eq 0 -a "$BANS" -eq 0 ]
tool svmap e-monitor "$SVMAP_IP" "$SV_PORT"
check "(e) capture: svmap's $SENT requests all reached kamailio ($FWD) and were answered ($ANSWERED)" [ "$SENT" -gt 0 -a "$FWD" -eq "$SENT" -a "$ANSWERED" -ge 1 ]
figure e "svmap, mode = monitor" "$SVMAP_IP:$SV_PORT" "none (would-drop user-agent=$WD)"

# ------------------------------------------------------------------ (d) figures
echo
echo "== figures (sent: tshark at the public port; forwarded: its Call-IDs at the backend port; dropped and bans: sipwarden's metrics of the part)"
printf "$FMT\n" part tool source sent forwarded dropped responses "drop reasons (metrics of the part)" bans
printf '%s\n' "${FIGURES[@]}"
echo

check "kamailio is still running" kill -0 "$KAM_PID"
finish
