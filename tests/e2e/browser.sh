#!/bin/bash
# A real browser phone through sipwarden's wss: listener. Debian's Chromium,
# headless, driven by playwright-core (tests/browser/run.mjs), loads a page
# served here (tests/browser/www, JsSIP bundled by scripts/setup.sh) from
# http://127.0.0.1:BASE+6 (ws.origins) and, with a certificate for
# *.secret.example made here with openssl (--ignore-certificate-errors; the
# name mapped to 127.0.0.1 inside Chromium only):
#   (1) registers user 1000 over wss://pbx.secret.example:BASE+1/ws to
#       Kamailio -A WITH_AUTH (401, then 200; Kamailio stores sipwarden's Path);
#   (2) calls 1001, a SIPp UAS registered over UDP (WebRTC answer): INVITE,
#       200, ACK, then the browser's BYE and its 200;
#   (3) is called by a SIPp caller (WebRTC offer) on UDP: Kamailio routes the
#       INVITE by the Path through sipwarden down the browser's WebSocket; the
#       browser answers 200, SIPp ACKs and hangs up (BYE, 200).
# Media never flows (no ICE candidate): signaling only. The script runs
# itself in a network namespace of its own (`unshare -n`, only `lo`, as
# root) so that nothing Chromium sends (WebRTC candidates, mDNS, a lookup)
# can leave the machine; where that is not possible it runs as is, with the
# name mapped inside Chromium and mDNS candidates off. About 10 s.
if [ -z "${E2E_IN_NETNS:-}" ] && [ "$(id -u)" = 0 ] && unshare -n true 2> /dev/null; then
    exec unshare -n env E2E_IN_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"
setup browser
WSS_PORT=$((BASE + 1))
PAGE_PORT=$((BASE + 6))
ORIGIN="http://127.0.0.1:$PAGE_PORT"
BROWSER_DIR=$REPO/tests/browser
[ -x /usr/bin/chromium ] || die "Debian's chromium is missing (scripts/setup.sh installs it)"
command -v node > /dev/null || die "node is missing (scripts/setup.sh installs nodejs)"
[ -d "$BROWSER_DIR/node_modules/playwright-core" ] && [ -s "$BROWSER_DIR/www/jssip.min.js" ] \
    || die "tests/browser is not set up: npm ci and the JsSIP bundle (scripts/setup.sh)"
need_free_tcp "$WSS_PORT" "$PAGE_PORT"
start_kamailio WITH_AUTH

wildcard_cert secret.example tls
write_config "$RUN/sipwarden.toml" "$DOMAIN"
add_public "$RUN/sipwarden.toml" "wss:127.0.0.1:$WSS_PORT"
sed -i 's|^level = "info"|level = "info,sipwarden::transport::ws=debug"|' "$RUN/sipwarden.toml"
cat >> "$RUN/sipwarden.toml" <<CFG

[tls]
cert_file = "$RUN/tls.pem"
key_file = "$RUN/tls.key"

[ws]
origins = ["$ORIGIN"]
CFG
start_sipwarden
wait_bound tcp 127.0.0.1 "$WSS_PORT" "$SW_PID" || die "sipwarden did not bind wss:127.0.0.1:$WSS_PORT"

# The page's web server.
/usr/bin/python3 -m http.server "$PAGE_PORT" --bind 127.0.0.1 --directory "$BROWSER_DIR/www" \
    > "$RUN/http.log" 2>&1 &
PIDS+=("$!")
wait_bound tcp 127.0.0.1 "$PAGE_PORT" || die "the page's web server did not start"

echo "-- the SIPp UAS 1001 registers over UDP and waits for the browser's call"
expect_sipp register "phone 1001 registers through sipwarden (UDP, digest auth)" \
    "127.0.0.1:$PUB" -sf "$SIPP_DIR/phone_register.xml" -s 1001 -key domain "$DOMAIN" \
    -key contact_port "$PHONE_PORT" -i "$PHONE_IP" -p "$PHONE_PORT" -au 1001 -ap secret -m 1
sipp_bg uas 40 -sf "$SIPP_DIR/uas_webrtc.xml" -i "$PHONE_IP" -p "$PHONE_PORT" -m 1
UAS_PID=$BG_PID
wait_bound udp "$PHONE_IP" "$PHONE_PORT" || die "the SIPp UAS did not bind $PHONE_IP:$PHONE_PORT"

echo "-- Chromium: register, call 1001, be called by 1002"
K=$((SIPP_N % 10)); SIPP_N=$((SIPP_N + 1))
CALLER="cd '$RUN' && timeout -k 2 20 sipp 127.0.0.1:$PUB -sf '$SIPP_DIR/invite_webrtc.xml' -s 1000 \
    -key domain $DOMAIN -key caller 1002 -i $CALLER_IP -p $PHONE_PORT -m 1 -nostdin \
    -cp $((CP_BASE + K)) -mp $((MP_BASE + 4 * K)) -trace_msg -message_file '$RUN/caller.msg' \
    -trace_err -error_file '$RUN/caller.err' > '$RUN/caller.out' 2>&1; echo \$? > '$RUN/caller.rc'"
URL="$ORIGIN/index.html?ws=wss://$DOMAIN:$WSS_PORT/ws&user=1000&password=secret&domain=$DOMAIN&callee=1001"
(cd "$BROWSER_DIR" && timeout -k 5 90 node run.mjs "$URL" "$DOMAIN" "$CALLER") \
    > "$RUN/result.json" 2> "$RUN/browser.log"
rc=$?
check "the browser run ended (node exit $rc)" [ "$rc" -eq 0 ]
EVENTS=$(node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (r.error) console.log("driver-error " + r.error);
  for (const e of r.events || []) console.log(e.what + (e.status ? " " + e.status : "") + (e.cause ? " " + e.cause : "") + (e.originator ? " by " + e.originator : ""));
' "$RUN/result.json" 2>&1)
while read -r l; do log "browser: $l"; done <<< "$EVENTS"
has() { grep -qx "$1" <<< "$EVENTS"; }

echo "-- (1) REGISTER over wss"
check "browser: WebSocket connected (wss, subprotocol sip, origin allowed)" has "ws-connected"
check "browser: registered (200 after the 401 challenge)" has "registered 200"
check "kamailio: the browser's REGISTER came through sipwarden with a Path" \
    grep -q "REGISTER sip:1000@$DOMAIN path=<sip:f" "$RUN/kamailio.log"
echo "-- (2) the browser calls the SIPp UAS"
check "browser: outgoing call accepted (200)" has "outgoing:accepted 200 by remote"
check "browser: outgoing call confirmed (ACK sent)" has "outgoing:confirmed by local"
check "browser: outgoing call ended by its BYE" has "outgoing:ended Terminated by local"
reap "$UAS_PID"; urc=$?
if [ $urc -eq 0 ] && sipp_calls_ok uas 1; then
    pass "SIPp UAS 1001: INVITE, 200, ACK and the browser's BYE (200), exit 0"
else
    fail "SIPp UAS 1001: exit $urc"; show_sipp uas
fi
check "kamailio: the browser's INVITE to 1001 was relayed to the UAS via sipwarden" \
    grep -q "INVITE 1001 -> registered contact sip:1001@$PHONE_IP:$PHONE_PORT" "$RUN/kamailio.log"
echo "-- (3) SIPp calls the browser"
check "browser: the call from 1002 came in" grep -q "^incoming" <<< "$EVENTS"
check "browser: incoming call confirmed (the caller's ACK)" has "incoming:confirmed by remote"
check "browser: incoming call ended by the caller's BYE" has "incoming:ended Terminated by remote"
check "SIPp caller: INVITE, 200, ACK, BYE, 200 (exit $(cat "$RUN/caller.rc" 2>/dev/null))" \
    [ "$(cat "$RUN/caller.rc" 2>/dev/null)" = 0 ]
check "kamailio: the INVITE to 1000 went to the browser's contact (.invalid) via sipwarden" \
    grep -q "{1 1 INVITE [^ ]*@$CALLER_IP} <script>: INVITE [^ ]* -> registered contact sip:[^ ]*\.invalid;transport=ws (dst sip:127.0.0.1:$INT)" "$RUN/kamailio.log"

metrics_dump "$RUN/m.txt" || fail "the metrics endpoint answers"
DOM=$(metric_or_zero "$RUN/m.txt" public wss domain forwarded)
RSP=$(metric_or_zero "$RUN/m.txt" public wss response forwarded)
OUT=$(metric_or_zero "$RUN/m.txt" internal udp outbound forwarded)
DRT=$(metric_or_zero "$RUN/m.txt" public wss dialog-route forwarded)
log "public wss: domain=$DOM response=$RSP dialog-route=$DRT"
check "metrics: the browser's REGISTERs and INVITE admitted by domain over wss ($DOM >= 3)" [ "$DOM" -ge 3 ]
check "metrics: the browser's ACK and BYE admitted by dialog-route over wss ($DRT >= 2)" [ "$DRT" -ge 2 ]
check "metrics: the browser's answers relayed (response over wss: $RSP >= 2)" [ "$RSP" -ge 2 ]
grep -E "WebSocket upgraded" "$RUN/sipwarden.log" | head -2 | while read -r l; do log "sipwarden: ${l:0:160}"; done
stop_sipwarden
finish
