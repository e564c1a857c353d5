#!/bin/bash
# The control socket and the CLI on it (docs/control.md), with Kamailio as
# the backend:
#
#   - the socket (control.socket in the run dir) has mode 0600;
#   - "Asterisk" (SIPp UAC from 127.0.0.1) registers the trunk provider1
#     through the internal socket with the SIPp registrar on 127.0.0.3 (401,
#     retry, 200, 600 s), as trunk.sh does; the provider then sends an
#     INVITE to a DID (admitted: reason trunk);
#   - a scanner (SIPp, 127.0.0.4) sends OPTIONS by IP until it is banned
#     (ban.after_rejects = 5); its OPTIONS with the secret domain then gets no
#     answer (banned);
#   - sipwarden status, bans, trunks and sources, human and --json: the
#     scanner is banned (trigger rejects) and in the top sources by rejects
#     with its reason no-domain; the trunk is registered with an expiry about
#     600 s away, its registrar address learned, a last REGISTER and a last
#     INVITE; status shows mode, sockets, rates and the table sizes;
#   - sipwarden unban 127.0.0.4: its next OPTIONS with the domain is
#     answered 200 by Kamailio; a manual ban (--for 1h) shows trigger manual
#     and drops it again; unban frees it; an unban of what is not banned
#     exits 1; the control requests are counted in the metrics, the trunk
#     gauges say registered;
#   - at SIGTERM the socket file is removed.
#
# Every CLI output is saved in the run dir (cli-*.txt) and printed.
source "$(dirname "$0")/lib.sh"
setup control
start_kamailio
write_config "$RUN/sipwarden.toml" "$DOMAIN"
trunk_config "$RUN/sipwarden.toml"
cat >> "$RUN/sipwarden.toml" <<EOF

[ban]
after_rejects = 5
EOF
start_sipwarden
SOCK=$RUN/control.sock
ASTERISK_PORT=$((PHONE_PORT + 1))   # kamailio holds the backend port

# sw NAME ARGS...: the CLI with this config; output in $RUN/cli-NAME.txt,
# printed; returns the CLI's exit status.
sw() {
    local name=$1 rc; shift
    timeout 20 "$SIPWARDEN" "$@" --config "$RUN/sipwarden.toml" > "$RUN/cli-$name.txt" 2> "$RUN/cli-$name.err"
    rc=$?
    echo "   \$ sipwarden $* (exit $rc)"
    sed 's/^/   | /' "$RUN/cli-$name.txt" "$RUN/cli-$name.err"
    return $rc
}
# jq-less JSON lookups: python3 on the saved --json output.
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$RUN/cli-$1.txt" "$2"; }

mode=$(stat -c '%a %F' "$SOCK" 2>/dev/null)
check "the control socket $SOCK has mode 600 ($mode)" [ "$mode" = "600 socket" ]

# 1. The trunk: Asterisk registers it through the internal socket.
trunk_transport udp
trunk_register ctl 600 600 "Asterisk's REGISTER to $REG_URI via the internal socket: 401, retry, 200 (600 s)"
wait_log_n "trunk registered" 1 || fail "no 'trunk registered' log line"
# The provider's INVITE to a DID: admitted as trunk (whatever Kamailio
# answers; the INVITE's admission is what `trunks` shows).
metrics_dump "$RUN/m0.txt"
sipp_run provider-invite 20 "127.0.0.1:$PUB" -sf "$SIPP_DIR/trunk_invite_silent.xml" -m 1 $T \
    -i "$PROVIDER_IP" -p "$PROV_PORT" -key ruri "sip:$TRUNK_DID@127.0.0.1:$PUB" -key did "$TRUNK_DID" \
    -cid_str "e2e-ctl-did-%u-%p"
metrics_dump "$RUN/m1.txt"
n=$(metric_delta "$RUN/m1.txt" "$RUN/m0.txt" trunk forwarded)
check "the provider's INVITE from $PROVIDER_IP was admitted as trunk (+$n)" [ "${n:-0}" -ge 1 ]

# 2. A scanner by IP, banned after 5 rejects.
expect_sipp scan "scanner: 6 OPTIONS sip:100@127.0.0.1 from $SCANNER_IP get no answer" \
    "127.0.0.1:$PUB" -m 6 -r 20 -sf "$(silent_scenario OPTIONS)" -s 100 -key host 127.0.0.1 \
    -key to_host 127.0.0.1 -key from_host 127.0.0.1 -key ua sipp-e2e-scan -i "$SCANNER_IP" \
    -p "$PHONE_PORT" -cid_str "e2e-ctl-scan-%u-%p"
wait_log_n "banned.*source=$SCANNER_IP|source=$SCANNER_IP.*banned" 1 || fail "no ban of $SCANNER_IP in the log"
SO=(-m 1 -sf "$(silent_scenario OPTIONS)")
expect_sipp banned "banned: $SCANNER_IP's OPTIONS with the secret domain gets no answer" \
    "127.0.0.1:$PUB" "${SO[@]}" -s 100 -key host "$DOMAIN" -key to_host "$DOMAIN" -key from_host "$DOMAIN" \
    -key ua sipp-e2e-probe -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-ctl-banned-%u-%p"

# 3. What the CLI says.
echo "-- the CLI"
sw status status; check "sipwarden status exits 0" [ $? -eq 0 ]
check "status: mode enforce, the control socket among the sockets, a table line" \
    grep -q "mode enforce" "$RUN/cli-status.txt"
check "status lists the control socket" grep -q "^control .*$SOCK" "$RUN/cli-status.txt"
check "status: 1 bans, 1 registrations" grep -q "tables: 1 bans, 0 network bans, .* 1 registrations" "$RUN/cli-status.txt"
sw status-json status --json
check "status --json: mode enforce, registrations 1, dropped > 0 since start" \
    [ "$(json status-json "d['result']['mode'], d['result']['tables']['registrations'], d['result']['totals']['dropped'] > 0")" = "('enforce', 1, True)" ]

sw bans bans
check "bans: $SCANNER_IP, trigger rejects, minutes left" \
    grep -Eq "^$SCANNER_IP +rejects +[0-9T:-]+Z +[0-9T:-]+Z +1[45]m[0-9]+s left" "$RUN/cli-bans.txt"
sw bans-json bans --json
check "bans --json: one ban, $SCANNER_IP, rejects" \
    [ "$(json bans-json "[(b['target'], b['trigger']) for b in d['result']['bans']]")" = "[('$SCANNER_IP', 'rejects')]" ]

sw trunks trunks
check "trunks: provider1 registered, an expiry, $PROVIDER_IP learned, a last REGISTER and INVITE" \
    grep -Eq "^provider1 +yes +[0-9T:-]+Z +(9|10)m[0-9]+s left +$PROVIDER_IP +[0-9T:-]+Z +[0-9T:-]+Z" "$RUN/cli-trunks.txt"
sw trunks-json trunks --json
left=$(json trunks-json "d['result']['trunks'][0]['expires_in_s']")
check "trunks --json: provider1 registered, expires in about 600 s ($left)" \
    [ "$(json trunks-json "d['result']['trunks'][0]['registered']")" = True ] && [ "${left:-0}" -gt 500 ] && [ "$left" -le 600 ]

sw sources sources
check "sources: $SCANNER_IP among the top by rejects, with no-domain" \
    awk -v ip="$SCANNER_IP" '/^by rejects:/ {r = 1} r && $1 == ip && /no-domain=/ {ok = 1} END {exit !ok}' "$RUN/cli-sources.txt"
sw sources-json sources --json
# (its retransmissions after the ban count as banned: no-domain is the 5
# that banned it)
check "sources --json: $SCANNER_IP first by rejects, 5 of them no-domain, banned" \
    [ "$(json sources-json "(d['result']['by_rejects'][0]['source'], d['result']['by_rejects'][0]['reasons'].get('no-domain'), d['result']['by_rejects'][0]['banned'])")" = "('$SCANNER_IP', 5, True)" ]

# 4. Unban: the scanner's next OPTIONS with the domain is answered.
sw unban unban "$SCANNER_IP"; check "unban $SCANNER_IP exits 0" [ $? -eq 0 ]
check "unban says what it lifted" grep -qx "unbanned $SCANNER_IP" "$RUN/cli-unban.txt"
expect_sipp unbanned "unbanned: $SCANNER_IP's OPTIONS with the secret domain is answered 200 by Kamailio" \
    "127.0.0.1:$PUB" -sf "$SIPP_DIR/options_uac.xml" -m 1 -s 100 -key domain "$DOMAIN" -key ua sipp-e2e-probe \
    -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-ctl-unbanned-%u-%p"
sw unban-again unban "$SCANNER_IP"; rc=$?
check "a second unban exits 1, 'not banned' on stderr" [ $rc -eq 1 ] && grep -q "is not banned" "$RUN/cli-unban-again.err"

# A manual ban drops it at once; an unban frees it.
sw ban ban "$SCANNER_IP" --for 1h; check "ban $SCANNER_IP --for 1h exits 0" [ $? -eq 0 ]
sw bans-manual bans
check "bans: $SCANNER_IP, trigger manual, about an hour left" \
    grep -Eq "^$SCANNER_IP +manual .* (1h0m|59m[0-9]+s) left" "$RUN/cli-bans-manual.txt"
expect_sipp manual "manual ban: $SCANNER_IP's OPTIONS with the secret domain gets no answer" \
    "127.0.0.1:$PUB" "${SO[@]}" -s 100 -key host "$DOMAIN" -key to_host "$DOMAIN" -key from_host "$DOMAIN" \
    -key ua sipp-e2e-probe -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-ctl-manual-%u-%p"
sw unban-manual unban "$SCANNER_IP"
expect_sipp freed "unbanned again: answered 200" \
    "127.0.0.1:$PUB" -sf "$SIPP_DIR/options_uac.xml" -m 1 -s 100 -key domain "$DOMAIN" -key ua sipp-e2e-probe \
    -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-ctl-freed-%u-%p"
check "the log names the manual ban and the unbans" \
    wait_log_n "banned by the control socket ban=$SCANNER_IP" 1
check "the log has both unbans" wait_log_n "unbanned by the control socket ban=$SCANNER_IP" 2

metrics_dump "$RUN/m2.txt"
check "metrics: ban ok 1, unban ok 2, unban error 1" [ "$(sample "$RUN/m2.txt" 'sipwarden_control_requests_total{request="ban",result="ok"}') \
$(sample "$RUN/m2.txt" 'sipwarden_control_requests_total{request="unban",result="ok"}') \
$(sample "$RUN/m2.txt" 'sipwarden_control_requests_total{request="unban",result="error"}')" = "1 2 1" ]
check "metrics: sipwarden_trunk_registered{trunk=\"provider1\"} 1" \
    [ "$(sample "$RUN/m2.txt" 'sipwarden_trunk_registered{trunk="provider1"}')" = 1 ]
exp=$(sample "$RUN/m2.txt" 'sipwarden_trunk_registration_expiry_timestamp_seconds{trunk="provider1"}')
now=$(date +%s)
check "metrics: the trunk's expiry timestamp is about 600 s ahead ($((exp - now)) s)" \
    [ "$((exp - now))" -gt 500 ] && [ "$((exp - now))" -le 600 ]

stop_sipwarden
check "the control socket is removed at exit" [ ! -e "$SOCK" ]
o=$(timeout 10 "$SIPWARDEN" status --config "$RUN/sipwarden.toml" 2>&1); rc=$?
check "status with sipwarden stopped exits 2 naming the socket ($o)" [ $rc -eq 2 ] && [[ "$o" == *"$SOCK"* ]]
finish
