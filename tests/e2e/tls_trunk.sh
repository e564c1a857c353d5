#!/bin/bash
# A SIP trunk provider reached over TLS (issue: outgoing TLS). Kamailio with
# its tls module plays the provider (tests/e2e/provider_tls.cfg) on
# 127.0.0.3: registrar on tls:127.0.0.3:PROV_TLS, its switch taking the
# caller's INVITEs on udp:127.0.0.3:REG_PORT. Certificates are made here:
# a test CA, the provider's leaf for IP 127.0.0.3, sipwarden's for
# *.secret.example.
#
#   (1) tls.ca_file names another CA: Asterisk's REGISTER to
#       sip:127.0.0.3:PROV_TLS;transport=tls never reaches the provider: the
#       handshake fails on the untrusted certificate
#       (sipwarden_tls_connect_failures_total, a "connect failed" log line).
#   (2) SIGHUP with tls.ca_file = the test CA: the REGISTER goes over TLS,
#       with no SNI (the registrar is an IP address, RFC 6066), Contact
#       sip:acct@127.0.0.1:TLS_PORT;line=xyz;transport=tls;sw=<token>.
#   (3) the provider calls the registered account and a DID: Kamailio sends
#       both INVITEs down the connection sipwarden opened (its `received`
#       address is that connection's local port); sipwarden admits them as
#       trunk-contact and trunk, the backend (SIPp UAS as Asterisk)
#       answers, ACK and BYE complete through Kamailio's Record-Route and
#       sipwarden's TLS listener (the provider's new connection carries no
#       SNI: admitted because it comes from the trunk's address).
source "$(dirname "$0")/lib.sh"
setup tls_trunk
TLS_PORT=$((BASE + 1))
PROV_TLS=$((BASE + 6))
need_free_tcp "$TLS_PORT" "$PROV_TLS"

# ---- certificates: a CA, the provider's leaf (IP SAN), sipwarden's leaf
ossl() { openssl "$@" >> "$RUN/openssl.log" 2>&1 || die "openssl $1 failed: $(tail -3 "$RUN/openssl.log")"; }
ca() {  # ca NAME: a self-signed CA
    ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=$1" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
        -keyout "$RUN/$1.key" -out "$RUN/$1.pem"
}
leaf() {  # leaf NAME SAN: a leaf signed by test-ca
    ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
        -keyout "$RUN/$1.key" -out "$RUN/$1.csr"
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' "$2" > "$RUN/$1.ext"
    ossl x509 -req -in "$RUN/$1.csr" -CA "$RUN/test-ca.pem" -CAkey "$RUN/test-ca.key" -CAcreateserial \
        -days 1 -extfile "$RUN/$1.ext" -out "$RUN/$1.pem"
}
ca test-ca
ca other-ca
leaf provider "IP:$PROVIDER_IP"
leaf edge "DNS:*.secret.example"

# ---- the provider
cat > "$RUN/provider-tls.cfg" <<CFG
[server:default]
method = TLSv1.2+
certificate = $RUN/provider.pem
private_key = $RUN/provider.key
verify_certificate = no
require_certificate = no

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
CFG
sed -e "s|^#!substdef \"!PROV_IP!.*|#!substdef \"!PROV_IP!$PROVIDER_IP!g\"|" \
    -e "s|^#!substdef \"!PROV_UDP!.*|#!substdef \"!PROV_UDP!$REG_PORT!g\"|" \
    -e "s|^#!substdef \"!PROV_TLS!.*|#!substdef \"!PROV_TLS!$PROV_TLS!g\"|" \
    -e "s|^#!substdef \"!RUN_DIR!.*|#!substdef \"!RUN_DIR!$RUN!g\"|" \
    "$E2E_DIR/provider_tls.cfg" > "$RUN/provider.cfg"
timeout 10 kamailio -c -f "$RUN/provider.cfg" > "$RUN/provider-check.log" 2>&1 \
    || { cat "$RUN/provider-check.log"; die "kamailio -c rejected the provider config"; }
kamailio -f "$RUN/provider.cfg" -DD -E -m 64 -M 8 > "$RUN/provider.log" 2>&1 &
PROV_PID=$!
PIDS+=("$PROV_PID")
wait_bound tcp "$PROVIDER_IP" "$PROV_TLS" && wait_bound udp "$PROVIDER_IP" "$REG_PORT" \
    || die "the provider (kamailio) did not bind $PROVIDER_IP:$PROV_TLS/$REG_PORT (see $RUN/provider.log)"

# ---- sipwarden: a tls: listener (the provider's in-dialog requests), the
# provider as a trunk, the wrong CA first
write_config "$RUN/sipwarden.toml" "$DOMAIN"
add_public "$RUN/sipwarden.toml" "tls:127.0.0.1:$TLS_PORT"
trunk_config "$RUN/sipwarden.toml"
cat >> "$RUN/sipwarden.toml" <<CFG

[tls]
cert_file = "$RUN/edge.pem"
key_file = "$RUN/edge.key"
ca_file = "$RUN/other-ca.pem"
CFG
start_sipwarden
wait_bound tcp 127.0.0.1 "$TLS_PORT" "$SW_PID" || die "sipwarden did not bind tls:127.0.0.1:$TLS_PORT"
REG_URI="$PROVIDER_IP:$PROV_TLS;transport=tls"
register() {  # register NAME SECONDS: Asterisk's REGISTER (no challenge here)
    sipp_run "$1" "$2" 127.0.0.1:"$INT" -sf "$SIPP_DIR/asterisk_register.xml" -m 1 \
        -i 127.0.0.1 -p "$BE" -key registrar_uri "$REG_URI" -key registrar_host "$PROVIDER_IP" \
        -key account "$TRUNK_ACCOUNT" -key line "$TRUNK_LINE" -key contact_port "$BE" \
        -key internal "127.0.0.1:$INT" -key expires 600 -au "$TRUNK_ACCOUNT" -ap provider-pw \
        -cid_str "e2e-tls-$1-%u-%p"
}

echo "-- (1) a provider whose certificate is not trusted is never talked to"
register untrusted 4
check "the REGISTER got no answer (sipp exit $?)" [ "$(grep -c 'PROVIDER REGISTER' "$RUN/provider.log")" -eq 0 ]
metrics_dump "$RUN/m1.txt" || fail "the metrics endpoint answers"
F=$(gauge "$RUN/m1.txt" sipwarden_tls_connect_failures_total)
check "sipwarden_tls_connect_failures_total = $F (at least 1)" [ "${F:-0}" -ge 1 ]
L=$(grep -m1 "connect failed" "$RUN/sipwarden.log" | sed 's/^.*WARN //' | cut -c1-200)
log "log: $L"
check "the log names the untrusted certificate" grep -q "connect failed.*$PROVIDER_IP:$PROV_TLS.*UnknownIssuer" "$RUN/sipwarden.log"

echo "-- (2) the provider's CA in tls.ca_file, SIGHUP: Asterisk registers over TLS"
sed -i "s|other-ca.pem|test-ca.pem|" "$RUN/sipwarden.toml"
kill -HUP "$SW_PID"
wait_match "config reloaded" "$RUN/sipwarden.log" "$SW_PID" || fail "the reload was not logged"
register trusted 15
rc=$?
check "Asterisk's REGISTER over TLS: 200 (sipp exit $rc)" [ "$rc" -eq 0 ]
R=$(grep -m1 "PROVIDER REGISTER" "$RUN/provider.log" | sed 's/^.*PROVIDER //')
log "provider: $R"
check "the provider got it over TLS" grep -q "PROVIDER REGISTER proto=tls src=127.0.0.1:" "$RUN/provider.log"
check "no SNI was sent to an IP address (RFC 6066)" grep -q "PROVIDER REGISTER .*sni=<null>" "$RUN/provider.log"
check "Contact: sipwarden's TLS address, transport=tls, the token" \
    grep -qE "PROVIDER REGISTER .*contact=<sip:$TRUNK_ACCOUNT@127.0.0.1:$TLS_PORT;line=$TRUNK_LINE;transport=tls;sw=[0-9a-f]+>" "$RUN/provider.log"
CONN=$(ss -Htn "dst $PROVIDER_IP:$PROV_TLS" 2>/dev/null | awk '{print $4}')
log "sipwarden's connection to the provider: $CONN"
check "one connection from sipwarden to the provider's TLS port" [ "$(echo "$CONN" | grep -c .)" -eq 1 ]

echo "-- (3) the provider calls back over that connection"
sipp_bg backend 30 -sf "$SIPP_DIR/uas_answer.xml" -m 2 -i 127.0.0.1 -p "$BE"
uas=$BG_PID
wait_bound udp 127.0.0.1 "$BE" "" || fail "the backend UAS did not bind 127.0.0.1:$BE"
expect_sipp call-account "a call to the registered account through the provider: 200, ACK, BYE 200" \
    "$PROVIDER_IP:$REG_PORT" -sf "$SIPP_DIR/trunk_invite.xml" -m 1 -t u1 -i "$PROVIDER_IP" -p "$PROV_PORT" \
    -key ruri "sip:$TRUNK_ACCOUNT@$PROVIDER_IP:$REG_PORT" -key did "$TRUNK_DID" -cid_str "e2e-tls-acct-%u-%p"
expect_sipp call-did "a call to the DID through the provider: 200, ACK, BYE 200" \
    "$PROVIDER_IP:$REG_PORT" -sf "$SIPP_DIR/trunk_invite.xml" -m 1 -t u1 -i "$PROVIDER_IP" -p "$PROV_PORT" \
    -key ruri "sip:$TRUNK_DID@$PROVIDER_IP:$REG_PORT" -key did "$TRUNK_DID" -cid_str "e2e-tls-did-%u-%p"
expect_bg backend "the backend (SIPp UAS as Asterisk) answered both calls" "$uas"
grep "PROVIDER INVITE" "$RUN/provider.log" | sed 's/^.*PROVIDER /provider: /' | while read -r l; do log "$l"; done
PORT=${CONN##*:}
check "both INVITEs went down the connection sipwarden opened (127.0.0.1:$PORT)" \
    [ "$(grep -c "PROVIDER INVITE .* via sip:127.0.0.1:$PORT;transport=tls" "$RUN/provider.log")" -eq 2 ]
metrics_dump "$RUN/m3.txt" || fail "the metrics endpoint answers"
TC=$(metric_or_zero "$RUN/m3.txt" public tls trunk-contact forwarded)
TR=$(metric_or_zero "$RUN/m3.txt" public tls trunk forwarded)
check "metrics: over TLS, one INVITE admitted as trunk-contact ($TC) and one as trunk ($TR)" \
    [ "$TC" -eq 1 ] && [ "$TR" -eq 1 ]
BYES=$(sipp_requests backend BYE | grep -c '^BYE ')
check "the backend got both BYEs ($BYES)" [ "$BYES" -eq 2 ]
DR=$(metric_or_zero "$RUN/m3.txt" public tls dialog-route forwarded)
SNI=$(metric_or_zero "$RUN/m3.txt" public tls tls-sni dropped)
check "the ACKs and BYEs came over the provider's own connection to the tls: listener ($DR dialog-route), its missing SNI admitted from the trunk's address ($SNI tls-sni drops)" \
    [ "$DR" -eq 4 ] && [ "$SNI" -eq 0 ]
stop_sipwarden
finish
