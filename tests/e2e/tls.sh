#!/bin/bash
# SIP over TLS with real peers: sipwarden's tls: listener in front of
# Kamailio -A WITH_AUTH (the Asterisk stand-in, users 1000-1999, password
# "secret"), a certificate for *.secret.example made here with openssl.
#
#   (1) openssl s_client with the secret name sees the certificate; by IP
#       (no SNI) and with another name it gets nothing: "no peer certificate
#       available", 0 bytes read; both counted tls-sni.
#   (2) a Python ssl phone (tests/e2e/tls_phone.py) registers over TLS with
#       digest auth (401, then 200); it calls 200 (answered by Kamailio),
#       ACK and BYE over TLS; then a caller on UDP calls it through
#       sipwarden: Kamailio routes the INVITE by the Path back through
#       sipwarden, down the phone's TLS connection (Via SIP/2.0/TLS and
#       Record-Route naming the tls: listener); the phone answers 200, and
#       the caller's BYE comes down the TLS connection too.
#   (3) renewal: a key that does not match refuses the SIGHUP reload (the
#       certificate in force stays); a new pair written in place and SIGHUP:
#       the next handshake sees the new certificate.
source "$(dirname "$0")/lib.sh"
setup tls
TLS_PORT=$((BASE + 1))
PHONE_TLS_IP=127.0.0.9
need_free_tcp "$TLS_PORT"
start_kamailio WITH_AUTH

wildcard_cert secret.example tls
write_config "$RUN/sipwarden.toml" "$DOMAIN"
add_public "$RUN/sipwarden.toml" "tls:127.0.0.1:$TLS_PORT"
cat >> "$RUN/sipwarden.toml" <<CFG

[tls]
cert_file = "$RUN/tls.pem"
key_file = "$RUN/tls.key"
CFG
"$SIPWARDEN" check --config "$RUN/sipwarden.toml" > "$RUN/check.log" 2>&1
check "sipwarden check loads the TLS pair ($(tail -n 1 "$RUN/check.log"))" [ $? -eq 0 ]
start_sipwarden
wait_bound tcp 127.0.0.1 "$TLS_PORT" "$SW_PID" || die "sipwarden did not bind tls:127.0.0.1:$TLS_PORT"

echo "-- (1) the server-name gate, seen by openssl s_client"
s_client() { timeout 10 openssl s_client -connect "127.0.0.1:$TLS_PORT" "$@" < /dev/null 2>&1; }
s_client -servername "$DOMAIN" > "$RUN/sc-secret.txt"
check "secret name: the certificate is sent" grep -q "BEGIN CERTIFICATE" "$RUN/sc-secret.txt"
for what in noservername other; do
    case $what in
        noservername) s_client -noservername > "$RUN/sc-$what.txt" ;;
        other) s_client -servername other.example > "$RUN/sc-$what.txt" ;;
    esac
    log "$what: $(grep -E 'handshake has read|no peer certificate' "$RUN/sc-$what.txt" | tr '\n' ' ')"
    check "$what: no certificate" grep -q "no peer certificate available" "$RUN/sc-$what.txt"
    check "$what: sipwarden sent 0 bytes" grep -q "SSL handshake has read 0 bytes" "$RUN/sc-$what.txt"
done
metrics_dump "$RUN/m1.txt" || fail "the metrics endpoint answers"
SNI=$(metric_or_zero "$RUN/m1.txt" public tls tls-sni dropped)
check "metrics: tls-sni dropped = $SNI (the two refused hellos)" [ "$SNI" -eq 2 ]

echo "-- (2) a TLS phone registers with auth and is called over its connection"
timeout 30 python3 "$E2E_DIR/tls_phone.py" 127.0.0.1 "$TLS_PORT" "$PUB" "$DOMAIN" "$RUN/tls.pem" \
    1000 secret "$DOMAIN" "$PHONE_TLS_IP" "$CALLER_IP" > "$RUN/phone.out" 2>&1
rc=$?
while read -r l; do log "phone: $l"; done < "$RUN/phone.out"
check "phone: REGISTER challenged (401)" grep -qx "REGISTER 401" "$RUN/phone.out"
check "phone: REGISTER with credentials accepted (200)" grep -qx "REGISTER 200" "$RUN/phone.out"
check "phone: the INVITE came down its TLS connection with sipwarden's TLS Via" \
    grep -q "^INVITE via=SIP/2.0/TLS 127.0.0.1:$TLS_PORT;branch=z9hG4bKswo" "$RUN/phone.out"
check "phone: the Record-Route facing it names the TLS listener, transport=tls" grep -q "rr=.*@127.0.0.1:$TLS_PORT;transport=tls;lr" "$RUN/phone.out"
check "phone: its own call to 200 answered (200) and hung up (BYE 200) over TLS" \
    grep -qx "OUT-BYE 200" "$RUN/phone.out"
check "caller: the phone's 200 came back" grep -qx "CALLER 200" "$RUN/phone.out"
check "phone: the caller's BYE came down its TLS connection" \
    grep -q "^BYE via=SIP/2.0/TLS 127.0.0.1:$TLS_PORT;branch=z9hG4bKswo" "$RUN/phone.out"
check "caller: the phone's 200 to the BYE came back (phone exit $rc)" grep -qx "CALLER-BYE 200" "$RUN/phone.out"
check "kamailio: the registration went through sipwarden with a Path" \
    grep -q "REGISTER sip:1000@$DOMAIN path=<sip:f" "$RUN/kamailio.log"
metrics_dump "$RUN/m2.txt" || fail "the metrics endpoint answers"
DOM=$(metric_or_zero "$RUN/m2.txt" public tls domain forwarded)
check "metrics: TLS requests admitted by domain = $DOM (the two REGISTERs and the phone's INVITE)" [ "$DOM" -eq 3 ]
DR=$(metric_or_zero "$RUN/m2.txt" public tls dialog-route forwarded)
check "metrics: TLS requests admitted by the dialog's route = $DR (the phone's ACK and BYE)" [ "$DR" -eq 2 ]

echo "-- (3) renewal by SIGHUP"
cert_cn() { s_client -servername "$DOMAIN" | grep -m1 -E '^subject=' ; }
wildcard_cert renewed.secret.example renew
# The new certificate with the old key: refused, the old pair stays.
cp "$RUN/tls.key" "$RUN/tls.key.orig"
cp "$RUN/renew.pem" "$RUN/tls.pem.tmp" && mv "$RUN/tls.pem.tmp" "$RUN/tls.pem"
kill -HUP "$SW_PID"
wait_match "reload refused" "$RUN/sipwarden.log" "$SW_PID"
check "mismatched pair: reload refused ($(grep -m1 -o 'does not belong[^"]*' "$RUN/sipwarden.log" | head -c 80))" \
    grep -q "reload refused.*does not belong to the certificate" "$RUN/sipwarden.log"
CN=$(cert_cn); log "after the refused reload: $CN"
check "the certificate in force stays" grep -q "CN *= *secret.example" <<< "$CN"
cp "$RUN/renew.key" "$RUN/tls.key.tmp" && mv "$RUN/tls.key.tmp" "$RUN/tls.key"
kill -HUP "$SW_PID"
wait_match "config reloaded" "$RUN/sipwarden.log" "$SW_PID"
check "matching pair: config reloaded" grep -q "config reloaded" "$RUN/sipwarden.log"
CN=$(cert_cn); log "after the reload: $CN"
check "a new connection sees the new certificate" grep -q "CN *= *renewed.secret.example" <<< "$CN"
stop_sipwarden
finish
