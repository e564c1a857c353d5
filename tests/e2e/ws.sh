#!/bin/bash
# SIP over WebSocket, the doors that stay shut: sipwarden with a ws: listener
# on BASE+3 and a wss: one on BASE+1 (a certificate for *.secret.example made
# here with openssl), ws.origins = the test page's origin, in front of
# Kamailio -A WITH_AUTH. A Python websockets client (tests/e2e/ws_client.py,
# Debian's python3-websockets) tries:
#   wrong Origin -> 403 (ws-origin); subprotocol "chat" or none -> 400, path /
#   -> 404, a plain GET -> 426 (ws-upgrade); wss: without a server name ->
#   closed before the handshake (tls-sni). None of them gets to send SIP:
#   Kamailio sees no request, nothing is forwarded.
#   A scanner that copies a browser's upgrade (accepted) and sends a REGISTER
#   to the IP: dropped no-domain with no answer, exactly as the same REGISTER
#   over TCP; the refusals and the scanner count toward a ban.
source "$(dirname "$0")/lib.sh"
setup ws
WSS_PORT=$((BASE + 1))
WS_PORT=$((BASE + 3))
ORIGIN="http://127.0.0.1:$((BASE + 6))"
PY=/usr/bin/python3
$PY -c "import websockets" 2> /dev/null || die "python3-websockets is missing (scripts/setup.sh installs it)"
need_free_tcp "$WSS_PORT" "$WS_PORT"
start_kamailio WITH_AUTH

wildcard_cert secret.example tls
write_config "$RUN/sipwarden.toml" "$DOMAIN"
add_public "$RUN/sipwarden.toml" "wss:127.0.0.1:$WSS_PORT" "ws:127.0.0.1:$WS_PORT"
cat >> "$RUN/sipwarden.toml" <<CFG

[tls]
cert_file = "$RUN/tls.pem"
key_file = "$RUN/tls.key"

[ws]
origins = ["$ORIGIN"]

[ban]
# the eight refusals and drops below: the eighth bans 127.0.0.1
after_rejects = 8
CFG
"$SIPWARDEN" check --config "$RUN/sipwarden.toml" > "$RUN/check.log" 2>&1
check "sipwarden check accepts ws: and wss: listeners ($(tail -n 1 "$RUN/check.log"))" [ $? -eq 0 ]
start_sipwarden
wait_bound tcp 127.0.0.1 "$WSS_PORT" "$SW_PID" || die "sipwarden did not bind wss:127.0.0.1:$WSS_PORT"
wait_bound tcp 127.0.0.1 "$WS_PORT" "$SW_PID" || die "sipwarden did not bind ws:127.0.0.1:$WS_PORT"

timeout 60 $PY "$E2E_DIR/ws_client.py" 127.0.0.1 "$WS_PORT" "$WSS_PORT" "$PUB" "$ORIGIN" > "$RUN/client.out" 2>&1
rc=$?
while read -r l; do log "client: $l"; done < "$RUN/client.out"
check "the client ran (exit $rc)" [ "$rc" -eq 0 ]
echo "-- refused upgrades: the HTTP answer each client got"
check "wrong Origin: 403" grep -qx "CASE wrong-origin STATUS 403" "$RUN/client.out"
check "subprotocol chat: 400" grep -qx "CASE wrong-subprotocol STATUS 400" "$RUN/client.out"
check "no subprotocol: 400" grep -qx "CASE no-subprotocol STATUS 400" "$RUN/client.out"
check "wrong path: 404" grep -qx "CASE wrong-path STATUS 404" "$RUN/client.out"
check "plain GET: 426 with the reason in the body" \
    grep -qx "CASE plain-get STATUS 426 | 426 Upgrade Required: not a WebSocket upgrade" "$RUN/client.out"
check "wss: without a server name: closed before the handshake" \
    grep -q "^CASE wss-no-sni CLOSED" "$RUN/client.out"
echo "-- the scanner over WebSocket and over TCP"
check "scanner: the browser-like upgrade is accepted (subprotocol sip)" \
    grep -qx "CASE scanner-upgrade UPGRADED sip" "$RUN/client.out"
check "scanner over WebSocket: no answer to its REGISTER" grep -qx "CASE scanner-register NO-ANSWER" "$RUN/client.out"
check "scanner over TCP: no answer either" grep -qx "CASE scanner-tcp NO-ANSWER" "$RUN/client.out"

metrics_dump "$RUN/m.txt" || fail "the metrics endpoint answers"
ORIG=$(metric_or_zero "$RUN/m.txt" public ws ws-origin dropped)
UPG=$(metric_or_zero "$RUN/m.txt" public ws ws-upgrade dropped)
SNI=$(metric_or_zero "$RUN/m.txt" public wss tls-sni dropped)
NOD_WS=$(metric_or_zero "$RUN/m.txt" public ws no-domain dropped)
NOD_TCP=$(metric_or_zero "$RUN/m.txt" public tcp no-domain dropped)
FWD=$(metric_total "$RUN/m.txt" forwarded public)
log "ws-origin=$ORIG ws-upgrade=$UPG tls-sni(wss)=$SNI no-domain ws=$NOD_WS tcp=$NOD_TCP forwarded=$FWD"
check "metrics: ws-origin dropped = 1" [ "$ORIG" -eq 1 ]
check "metrics: ws-upgrade dropped = 4 (chat, none, path, plain GET)" [ "$UPG" -eq 4 ]
check "metrics: wss tls-sni dropped = 1" [ "$SNI" -eq 1 ]
check "metrics: the scanner's REGISTER dropped no-domain over ws (1) as over tcp (1)" \
    [ "$NOD_WS" -eq 1 ] && [ "$NOD_TCP" -eq 1 ]
check "metrics: nothing from the public side was forwarded" [ "$FWD" -eq 0 ]
check "kamailio: no request reached the backend" bash -c "! grep -q 'REGISTER sip' '$RUN/kamailio.log'"
BANS=$(gauge "$RUN/m.txt" sipwarden_bans_total)
check "the refusals count toward a ban: 8 rejects banned 127.0.0.1 (bans_total = $BANS)" [ "$BANS" = 1 ]
stop_sipwarden
finish
