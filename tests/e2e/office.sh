#!/bin/bash
# An office behind one NAT address, with the DEFAULT limits and
# ban settings: 100 SIPp phones on ONE loopback address (127.0.0.8, one
# socket per phone: 100 source ports, as behind NAT) boot at once through
# sipwarden in front of Kamailio -A WITH_AUTH (users 1000-1999, password
# "secret"): REGISTER, 401, REGISTER with credentials, 200, SIPp's UDP
# retransmissions on (timer E 0.5/1/2/4 s while unanswered).
#
#   (1) boot: every phone registers (100 200s), sipwarden logs no ban and
#       sipwarden_bans_total stays 0.
#   (2) storm: all 100 register again at once, right after the boot (the PBX
#       restarted, or the phones rebooted twice): absorbed the same way.
#       Meanwhile (positive control, the ban machinery is live) a scanner on
#       127.0.0.4 sends OPTIONS by IP: banned after ban.after_rejects (20),
#       nothing of it reaches Kamailio, and only it is banned.
#   (3) figures: phones, REGISTERs the phones sent (tshark at the public
#       port, retransmissions included), forwarded to Kamailio, distinct
#       phones answered 200, rate-limited drops (metrics), bans.
source "$(dirname "$0")/lib.sh"
setup office
start_kamailio WITH_AUTH
OFFICE_IP=127.0.0.8
PHONES=100

# The e2e config without its [limits] table: the defaults of limits and ban.
write_config "$RUN/sipwarden.toml" "$DOMAIN"
sed -i -e '/^\[limits\]/,/^register_burst/d' "$RUN/sipwarden.toml"
if grep -qE '^\[(limits|ban)\]|burst|after_' "$RUN/sipwarden.toml"; then
    die "the office config must leave [limits] and [ban] at their defaults"
fi
# One line per phone: its user, and its credentials as SIPp's keyword (SIPp
# does not expand a field inside [authentication ...], it does one from the file).
{ echo SEQUENTIAL; for i in $(seq 0 $((PHONES - 1))); do
    echo "$((1000 + i));[authentication username=$((1000 + i)) password=secret]"; done; } > "$RUN/users.csv"
start_sipwarden
capture_start office "udp port $PUB or udp port $BE"

# phones NAME: the whole office boots at once (all calls started within
# 0.1 s, one socket each), bounded to 60 s.
phones() {
    sipp_run "$1" 60 "127.0.0.1:$PUB" -sf "$SIPP_DIR/office_phone.xml" -inf "$RUN/users.csv" \
        -m "$PHONES" -l "$PHONES" -r 1000 -t un -max_socket 512 -i "$OFFICE_IP" -p "$PHONE_PORT" -key domain "$DOMAIN" \
        -cid_str "e2e-$1-%u-%p"
}

# banned_logged IP: did sipwarden ban (or log banning) that address?
banned_logged() { grep -E 'banned' "$RUN/sipwarden.log" | grep -q "source=$1 "; }
office_banned() { banned_logged "$OFFICE_IP"; }

# sipp_retrans NAME: retransmissions SIPp sent (its final screen, summed over
# the messages it sends).
sipp_retrans() {
    awk '/Messages +Retrans/ {n = 0} /---------->/ {n += $4} END {print n + 0}' "$RUN/$1.out"
}

# phase_checks RC NAME: sipp's verdict, and no ban of the office so far.
phase_checks() {
    local rc=$1 name=$2 ok failed rtx
    ok=$(sipp_stat "$name" "Successful call"); failed=$(sipp_stat "$name" "Failed call")
    rtx=$(sipp_retrans "$name"); eval "RTX_$name=$rtx"
    log "$name: sipp exit $rc, successful=${ok:-?} failed=${failed:-?} retransmissions=${rtx:-?}"
    if [ "$rc" -eq 0 ] && [ "${ok:-x}" = "$PHONES" ] && [ "${failed:-x}" = 0 ]; then
        pass "($name) all $PHONES phones on $OFFICE_IP registered (REGISTER, 401, credentials, 200)"
    else
        # (SIPp's error file has no final newline)
        fail "($name) the phones' registrations"; show_sipp "$name"; echo
    fi
    if office_banned; then fail "($name) log: the office was banned: $(grep 'banned' "$RUN/sipwarden.log" | grep "source=$OFFICE_IP " | head -1 | sed 's/^.*WARN //')"
    else pass "($name) log: no ban of $OFFICE_IP"; fi
}

echo "-- (1) boot: $PHONES phones at once"
phones boot; rc=$?
phase_checks $rc boot
metrics_dump "$RUN/m-boot.txt" || fail "(boot) the metrics endpoint answers"
BANS_BOOT=$(gauge "$RUN/m-boot.txt" sipwarden_bans_total)
check "(boot) metrics: sipwarden_bans_total = $BANS_BOOT" [ "$BANS_BOOT" -eq 0 ]

echo "-- (2) re-registration storm: all $PHONES again at once, a scanner on $SCANNER_IP meanwhile"
sipp_bg scanner 30 "127.0.0.1:$PUB" -sf "$(silent_scenario OPTIONS)" -m 30 -r 100 -s 100 \
    -key host 127.0.0.1 -key to_host 127.0.0.1 -key from_host 127.0.0.1 -key ua sipp-e2e-scanner \
    -i "$SCANNER_IP" -p "$SV_PORT" -cid_str "e2e-scanner-%u-%p"
SCAN=$BG_PID
phones storm; rc=$?
phase_checks $rc storm
expect_bg scanner "(storm) the scanner's 30 OPTIONS by IP (with retransmissions) got no answer" "$SCAN"
if wait_log_n "banned source=$SCANNER_IP trigger=\"rejected messages\"" 1; then
    pass "(storm) log: $(grep "banned source=$SCANNER_IP" "$RUN/sipwarden.log" | head -1 | sed 's/^.*WARN //')"
else
    fail "(storm) log: no 'banned source=$SCANNER_IP trigger=\"rejected messages\"' line (the positive control)"
fi
check "(storm) the log test that finds no ban of $OFFICE_IP finds the scanner's (banned_logged $SCANNER_IP)" banned_logged "$SCANNER_IP"
metrics_dump "$RUN/m-storm.txt" || fail "(storm) the metrics endpoint answers"
check "sipwarden is still running" sipwarden_alive
capture_stop
stop_sipwarden

# ------------------------------------------------------------------ (3)
M=$RUN/m-storm.txt
BANS=$(gauge "$M" sipwarden_bans_total)
check "metrics: sipwarden_bans_total = $BANS (the scanner only)" [ "$BANS" -eq 1 ]
check "metrics: sipwarden_bans = $(gauge "$M" sipwarden_bans) banned now (the scanner)" [ "$(gauge "$M" sipwarden_bans)" -eq 1 ]
# (decoded as SIP by port: the phones' ephemeral ports may be another
# protocol's, 54328 is Elasticsearch's, and tshark would not see SIP there)
timeout 60 tshark -r "$RUN/office.pcap" -d "udp.port==$PUB,sip" -d "udp.port==$BE,sip" -Y sip -T fields -E separator='|' -e ip.src -e udp.srcport -e ip.dst \
    -e udp.dstport -e sip.Method -e sip.Status-Code -e sip.Call-ID 2>/dev/null > "$RUN/office.txt"
# figures PHASE: SENT (REGISTERs from the office to the public port), FWD (with
# the phase's Call-IDs to the backend port), OK (distinct Call-IDs answered
# 200 to the office)
figures() {
    local f=$RUN/office.txt p="e2e-$1-"
    SENT=$(awk -F'|' -v ip="$OFFICE_IP" -v pub="$PUB" -v p="$p" '$1 == ip && $4 == pub && $5 == "REGISTER" && index($7, p) == 1' "$f" | wc -l)
    FWD=$(awk -F'|' -v be="$BE" -v p="$p" '$4 == be && $5 == "REGISTER" && index($7, p) == 1' "$f" | wc -l)
    OK=$(awk -F'|' -v ip="$OFFICE_IP" -v pub="$PUB" -v p="$p" '$2 == pub && $3 == ip && $6 == 200 && index($7, p) == 1 {print $7}' "$f" | sort -u | wc -l)
}
RL_BOOT=$(metric_sum "$RUN/m-boot.txt" rate-limited dropped)
RL=$(metric_sum "$M" rate-limited dropped)
ROWS=()
FMT='%-6s|%7s|%15s|%8s|%10s|%9s|%13s|%12s|%11s'
OFFICE_BANS=$(grep -E 'banned' "$RUN/sipwarden.log" | grep -c "source=$OFFICE_IP ")
for ph in boot storm; do
    figures "$ph"
    if [ "$ph" = boot ]; then rl=$RL_BOOT; b=$BANS_BOOT; else rl=$((RL - RL_BOOT)); b=$((BANS - BANS_BOOT)); fi
    check "($ph) capture: $OK of $PHONES phones answered 200 through sipwarden" [ "$OK" -eq "$PHONES" ]
    rtx=RTX_$ph
    # A machine stall can make SIPp retransmit and the copies spend the
    # REGISTER burst: then some may be rate-limited (they pass on a later
    # retransmission: the phones all registered above). Without
    # retransmissions the 200 REGISTERs must fit the default burst.
    check "($ph) every REGISTER the phones sent (tshark) was forwarded or rate-limited: $SENT = $FWD + $rl" \
        [ "$SENT" -ge $((2 * PHONES)) -a "$SENT" -eq $((FWD + rl)) ]
    if [ "${!rtx:-x}" = 0 ]; then
        check "($ph) no retransmissions, so nothing was rate-limited ($rl)" [ "$rl" -eq 0 ]
    else
        log "($ph) SIPp retransmitted ${!rtx:-?} times (the machine stalled): $rl rate-limited, not checked"
    fi
    ROWS+=("$(printf "$FMT" "$ph" "$PHONES" "$SENT" "${!rtx:-?}" "$FWD" "$OK" "$rl" "$b" "$([ "$OFFICE_BANS" -gt 0 ] && echo yes || echo no)")")
done
SC=$(awk -F'|' -v ip="$SCANNER_IP" -v pub="$PUB" '$1 == ip && $4 == pub && $5 != ""' "$RUN/office.txt" | wc -l)
SCF=$(awk -F'|' -v be="$BE" '$4 == be && index($7, "e2e-scanner-") == 1' "$RUN/office.txt" | wc -l)
check "capture: the scanner sent $SC requests, $SCF reached kamailio" [ "$SC" -ge 20 -a "$SCF" -eq 0 ]
echo
echo "== figures (REGISTERs sent: tshark at the public port, from $OFFICE_IP, retransmissions included; retrans: SIPp's; forwarded: to the backend port; 200: distinct phones; rate-limited, bans_total: sipwarden's metrics, per phase; office banned: its log)"
printf "$FMT\n" phase phones "REGISTERs sent" retrans forwarded "200 (ok)" "rate-limited" "bans_total" "office ban"
printf '%s\n' "${ROWS[@]}"
printf "$FMT\n" scan - "$SC OPTIONS" - "$SCF" - - "$BANS (all)" "scanner: $(grep -q "banned source=$SCANNER_IP " "$RUN/sipwarden.log" && echo yes || echo no)"
echo

check "kamailio is still running" kill -0 "$KAM_PID"
finish
