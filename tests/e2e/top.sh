#!/bin/bash
# `sipwarden top` (docs/control.md), driven in tmux at 80x24 with Kamailio
# as the backend:
#
#   - "Asterisk" (SIPp UAC from 127.0.0.1) registers the trunk provider1
#     through the internal socket with the SIPp registrar on 127.0.0.3, as
#     control.sh does; a scanner (SIPp, 127.0.0.4) sends OPTIONS by IP at
#     10/s while top runs (rejected, no-domain; ban.after_rejects is out of
#     its reach);
#   - top without a terminal refuses, exit 2;
#   - top in a detached tmux session of 80x24: after a refresh the screen
#     has every heading, the trunk registered with its expiry, and the
#     scanner's row in the top sources with its rejects and reason;
#   - Down until the scanner's row is selected, b: the confirmation line,
#     y: `sipwarden bans --json` has 127.0.0.4 (manual) and so does the
#     screen; Tab to the bans list, the ban selected, u: no bans left;
#   - sipwarden stopped: top stays up, says the socket cannot be reached
#     and keeps the last screen (stale);
#   - q: the pane's process exited 0, the alternate screen is left and the
#     tty settings are those from before top.
#
# Every screen is kept in the run dir (screen-*.txt); the first full one
# is printed.
source "$(dirname "$0")/lib.sh"
command -v tmux > /dev/null 2>&1 || { echo "ABORT: tmux is missing (scripts/setup.sh, Debian: tmux)" >&2; exit 3; }
setup top
start_kamailio
write_config "$RUN/sipwarden.toml" "$DOMAIN"
trunk_config "$RUN/sipwarden.toml"
cat >> "$RUN/sipwarden.toml" <<EOF

[ban]
after_rejects = 1000
EOF
start_sipwarden
CONFIG=$RUN/sipwarden.toml
ASTERISK_PORT=$((PHONE_PORT + 1))   # kamailio holds the backend port

# 1. The trunk, and a scanner.
trunk_transport udp
trunk_register top 600 600 "Asterisk's REGISTER to $REG_URI via the internal socket: 401, retry, 200 (600 s)"
# The scanner keeps sending while top starts: 150 OPTIONS at 10/s.
sipp_bg scan 60 "127.0.0.1:$PUB" -m 150 -r 10 -sf "$(silent_scenario OPTIONS)" -s 100 -key host 127.0.0.1 \
    -key to_host 127.0.0.1 -key from_host 127.0.0.1 -key ua sipp-e2e-scan -i "$SCANNER_IP" \
    -p "$PHONE_PORT" -cid_str "e2e-top-scan-%u-%p"
SCAN_PID=$BG_PID
wait_log_n "dropped source=$SCANNER_IP" 1 || fail "the scanner's OPTIONS did not arrive"

# 2. Not a terminal: refused.
timeout 10 "$SIPWARDEN" top --config "$CONFIG" < /dev/null > "$RUN/notty.out" 2> "$RUN/notty.err"; rc=$?
check "top without a terminal exits 2 and says it needs one ($(head -c 80 "$RUN/notty.err"))" \
    [ $rc -eq 2 ] && grep -q "needs a terminal" "$RUN/notty.err" && [ ! -s "$RUN/notty.out" ]

# 3. top in tmux, 80x24. Its own tmux server (socket in the run dir), UTF-8.
export LANG=C.UTF-8 LC_ALL=C.UTF-8
TM=(tmux -u -S "$RUN/tmux.sock")
cat > "$RUN/pane.sh" <<EOF
stty -a > "$RUN/stty-before.txt"
"$SIPWARDEN" top --config "$CONFIG" 2> "$RUN/top.err"
rc=\$?
stty -a > "$RUN/stty-after.txt"
echo \$rc > "$RUN/top.rc"
exit \$rc
EOF
TERM=xterm-256color "${TM[@]}" new-session -d -s top -x 80 -y 24 "bash $RUN/pane.sh" \
    || die "tmux new-session failed"
"${TM[@]}" set-option -t top remain-on-exit on > /dev/null
TMUX_PID=$("${TM[@]}" display-message -p -t top '#{pid}')
[ -n "$TMUX_PID" ] && PIDS+=("$TMUX_PID")

# screen NAME: the pane's text now, into $RUN/screen-NAME.txt.
screen() { "${TM[@]}" capture-pane -p -t top > "$RUN/screen-$1.txt"; }
# wait_screen NAME PATTERN...: until the pane shows every extended regexp
# (at most 10 s); the last capture is screen-NAME.txt.
wait_screen() {
    local name=$1 i p ok; shift
    for i in $(seq 100); do
        screen "$name"
        ok=1
        for p in "$@"; do grep -Eq -- "$p" "$RUN/screen-$name.txt" || { ok=0; break; }; done
        [ $ok = 1 ] && return 0
        sleep 0.1
    done
    echo "   screen $name lacks: $p"; sed 's/^/   | /' "$RUN/screen-$name.txt"
    return 1
}
key() { "${TM[@]}" send-keys -t top "$@"; }
# bans_json EXPR: a python expression over the `bans --json` answer d.
bans_json() {
    timeout 10 "$SIPWARDEN" bans --json --config "$CONFIG" > "$RUN/bans.json" 2>> "$RUN/bans.err" || return 1
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$RUN/bans.json" "$1"
}
# wait_bans EXPR VALUE: until bans_json EXPR prints VALUE (at most 10 s).
wait_bans() {
    local i
    for i in $(seq 50); do
        [ "$(bans_json "$1")" = "$2" ] && return 0
        sleep 0.2
    done
    echo "   bans --json: $(cat "$RUN/bans.json")"
    return 1
}

check "top draws every heading at 80x24 after a refresh" wait_screen first \
    "^sipwarden [0-9.]+  enforce  up [0-9]+s  in [0-9.]+/s  fwd [0-9.]+/s  drop [0-9.]+/s" \
    "Messages/s, last [0-9]+ s \(peak" "Rates by reason, last 10 s" "Trunks · [0-9]+ dialogs" \
    "Top sources, last [0-9]+ s" "Bans \(0\)" "Source +Msgs +Rej Top reason Ban" "q quit"
check "the sources table has the scanner $SCANNER_IP: as many rejects as messages, no-domain" \
    wait_screen first "│[ >]$SCANNER_IP +([0-9]+) +\\1 no-domain +│"
check "the trunk provider1 is registered, expiring in about 10 minutes" \
    wait_screen first "│provider1 +registered +exp (9m[0-9]{2}s|10m00s) *│"
check "the rates by reason show no-domain dropped" wait_screen first "│no-domain +dropped +[0-9.]+/s"
check "the sparkline has bars" wait_screen first "[▁▂▃▄▅▆▇█]"
check "the screen is 24 rows of at most 80 columns" \
    [ "$(wc -l < "$RUN/screen-first.txt")" -eq 24 ] && [ "$(awk '{ if (length($0) > m) m = length($0) } END { print m }' "$RUN/screen-first.txt")" -le 80 ]

# A screen with some seconds of history, for the docs (not a check).
wait_screen live "Messages/s, last ([89]|[1-9][0-9]) s" > /dev/null || true

# 4. Select the scanner, b, y: banned.
# (Up or Down towards its row: the list reorders as the counts change,
# and the selection stays on its source.)
for i in $(seq 10); do
    screen select
    grep -q "^│>$SCANNER_IP " "$RUN/screen-select.txt" && break
    sel=$(grep -n "^│>" "$RUN/screen-select.txt" | head -1 | cut -d: -f1)
    row=$(grep -n "^│ $SCANNER_IP " "$RUN/screen-select.txt" | head -1 | cut -d: -f1)
    if [ -n "$sel" ] && [ -n "$row" ] && [ "$row" -lt "$sel" ]; then key Up; else key Down; fi
    sleep 0.3
done
check "the arrows select the scanner's row" grep -q "^│>$SCANNER_IP " "$RUN/screen-select.txt"
key b
check "b asks for confirmation on the status line" \
    wait_screen prompt "^Ban $SCANNER_IP for the default duration \(ban.duration\)\? y/n"
check "nothing is banned before the answer" [ "$(bans_json "len(d['result']['bans'])")" = 0 ]
key y
check "y bans it: sipwarden bans --json has $SCANNER_IP, trigger manual" \
    wait_bans "[(b['target'], b['trigger']) for b in d['result']['bans']]" "[('$SCANNER_IP', 'manual')]"
check "the screen shows the ban: the notice, Bans (1), the row banned" \
    wait_screen banned "banned $SCANNER_IP for [0-9]+[smhd][0-9]*" "Bans \(1\)" "│>?$SCANNER_IP +[0-9]+ +[0-9]+ no-domain +yes│" \
    "│>$SCANNER_IP +man +1[45]m[0-9]{2}s│"
check "the log names the ban" wait_log_n "banned by the control socket ban=$SCANNER_IP" 1

# 5. Tab to the bans list, u: unbanned.
key Tab
check "Tab focuses the bans list, its row selected" wait_screen bans-focus "││>$SCANNER_IP +man "
key u
check "u unbans it: sipwarden bans --json is empty" wait_bans "len(d['result']['bans'])" 0
check "the screen shows it: the notice, Bans (0)" wait_screen unbanned "unbanned $SCANNER_IP" "Bans \(0\)"

# 6. The socket gone: top stays, says so, keeps retrying.
stop_sipwarden
check "with sipwarden stopped top says it cannot reach the socket and keeps the last screen" \
    wait_screen gone "^error, retrying every 1 s: cannot reach $RUN/" "\[stale\]" "│ ?.?$SCANNER_IP "
check "top is still running" [ "$("${TM[@]}" display-message -p -t top '#{pane_dead}')" = 0 ]

# 7. q: exit 0, the terminal restored.
key q
# top's exit status from the pane's shell (tmux's #{pane_dead_status} is
# not always recorded when the server runs under cargo test).
for i in $(seq 50); do [ -s "$RUN/top.rc" ] && break; sleep 0.1; done
st="$(cat "$RUN/top.rc" 2>/dev/null) $("${TM[@]}" display-message -p -t top '#{alternate_on}')"
check "q quits: top exited 0, the alternate screen is off ($st)" [ "$st" = "0 0" ]
screen after
lacks() { ! grep -q "$1" "$2"; }
check "the main screen is back: none of top's screen on it" lacks "Top sources" "$RUN/screen-after.txt"
check "the tty settings after top are those before it (cooked mode, echo)" \
    cmp -s "$RUN/stty-before.txt" "$RUN/stty-after.txt" && grep -Eq "(^| )icanon" "$RUN/stty-after.txt" \
    && grep -Eq "(^| )echo( |$)" "$RUN/stty-after.txt"
check "top wrote nothing on stderr" [ ! -s "$RUN/top.err" ]

expect_bg scan "the scanner's OPTIONS got no answer, before, during and after its ban" "$SCAN_PID"

echo "-- sipwarden top at 80x24 (screen-*.txt in the run dir)"
cat "$RUN/screen-live.txt"
echo "-- with $SCANNER_IP banned"
cat "$RUN/screen-banned.txt"
"${TM[@]}" kill-server 2> /dev/null
finish
