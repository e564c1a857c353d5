#!/bin/bash
# Trunk registrations replace the conntrack entry (admission steps 6 and 7,
# docs/admission.md): calls from a SIP trunk provider reach Asterisk for exactly as long
# as Asterisk's registration with it is valid.
#
#   "Asterisk" (SIPp UAC from 127.0.0.1:BACKEND, the way Asterisk 22 sends it,
#   docs/asterisk.md): REGISTER sip:127.0.0.3:PORT to sipwarden's internal
#   socket, Route <sip:INTERNAL;lr>, Contact <sip:acct@127.0.0.1:BACKEND;line=xyz>.
#   The provider's registrar (SIPp UAS on 127.0.0.3) challenges it (401),
#   then answers 200 with an expiry; it checks that the Contact it got carries
#   sipwarden's ;sw= token and Asterisk's ;line= and logs it (<ereg>).
#   The provider (SIPp UAC on 127.0.0.3) then calls twice: to that registered
#   Contact (admitted as trunk-contact, Request-URI rewritten back to Asterisk's
#   own Contact) and to a DID (sip:+4930123@127.0.0.1:PUBLIC, admitted by the
#   registrar's source address, reason trunk). The backend (SIPp UAS playing
#   Asterisk on 127.0.0.1:BACKEND) answers both: its message trace shows the
#   Request-URIs and exactly one "X-Sipwarden-Trunk: provider1" (the provider's
#   forged X-Sipwarden-Trunk is gone).
#   A scanner (127.0.0.4) sending the very same DID INVITE, the Contact INVITE
#   with Asterisk's line= but no token, and one with a forged token: no answer,
#   counted no-domain / forged-token, and nothing on the backend port: a
#   tshark capture of the public and backend ports shows every INVITE the
#   test sent arrive at the public port, and by Call-ID exactly the admitted
#   ones (the positive control of the same filter) on the backend port.
#   Asterisk unregisters (Expires: 0): the provider's DID and Contact INVITEs
#   get no answer any more.
#   UDP mode only: a registrar that grants 4 s in the Contact's expires while
#   its Expires header says 3600: admitted at once, no longer after 4 s plus
#   registration.grace (1 s). Keepalives (trunk.keepalive = 1s) reach the
#   registrar while registered.
#
# Usage: trunk.sh [udp|tcp|both] (default both: the provider over UDP, then
# over TCP; Asterisk <-> sipwarden is UDP, as Asterisk 22 was seen to use it).
source "$(dirname "$0")/lib.sh"

MODES=${1:-both}
[ "$MODES" = both ] && MODES="udp tcp"
setup trunk

ACCOUNT=$TRUNK_ACCOUNT
LINE=$TRUNK_LINE
DID=$TRUNK_DID
ORIG_CONTACT=$TRUNK_CONTACT    # Asterisk's own Contact, as it registered it

write_config "$RUN/sipwarden.toml" "$DOMAIN"
trunk_config "$RUN/sipwarden.toml"
cat >> "$RUN/sipwarden.toml" <<EOF
keepalive = "1s"

[registration]
grace = "1s"

[ban]
# the scanner's drops must not turn into a ban here (bans: defence.sh)
after_rejects = 0
EOF
start_sipwarden
metrics_dump "$RUN/m0.txt" || fail "metrics endpoint answers"
# (narrow filters: other programs on this machine may use 127.0.0.3 too)
capture_start trunk "(host 127.0.0.1 and (port $BE or port $PUB)) or (host $PROVIDER_IP and port $REG_PORT)"

# backend_invites NAME: the INVITEs the backend (SIPp UAS) received, headers only.
backend_invites() { sipp_requests "$1" INVITE > "$RUN/$1-invites.txt"; }

run_mode() {
    local m=$1 contact token n first second third
    trunk_transport "$m"
    echo "-- provider over $TP"

    # 1. Asterisk registers the trunk through sipwarden.
    trunk_register "$m" 600 3600 "Asterisk's REGISTER to $REG_URI via the internal socket: 401, retry, 200"
    contact=$TRUNK_REGISTERED
    log "the registrar stored Contact $contact"
    token=$(echo "$contact" | sed -n 's/.*;sw=\([^;>]*\).*/\1/p')
    if [[ "$contact" == "sip:$ACCOUNT@127.0.0.1:$PUB;line=$LINE$CT_TRANSPORT;sw="* ]] && [ -n "$token" ]; then
        pass "$TP: the registrar saw Contact sip:$ACCOUNT@127.0.0.1:$PUB;line=$LINE$CT_TRANSPORT;sw=<token> (advertised address, user and line= kept)"
    else
        fail "$TP: the Contact the registrar saw is '$contact', expected sip:$ACCOUNT@127.0.0.1:$PUB;line=$LINE$CT_TRANSPORT;sw=<token>"
    fi
    if wait_log_n "trunk registered" "$((++REG_LOGS))"; then
        pass "$TP: log: $(grep 'trunk registered' "$RUN/sipwarden.log" | tail -1 | sed 's/^.*INFO //' | cut -c1-150)"
    else
        fail "$TP: no 'trunk registered' log line"
    fi
    metrics_dump "$RUN/m-$m-reg.txt"
    check "$TP: sipwarden_registrations = 1 after the 200 ($(gauge "$RUN/m-$m-reg.txt" sipwarden_registrations))" \
        [ "$(gauge "$RUN/m-$m-reg.txt" sipwarden_registrations)" -eq 1 ]

    # 2. The provider calls: to the registered Contact, and to a DID.
    sipp_bg "backend-$m" 30 -sf "$SIPP_DIR/uas_answer.xml" -m 3 -i 127.0.0.1 -p "$BE"
    local uas=$BG_PID
    wait_bound udp 127.0.0.1 "$BE" "" || fail "the backend UAS did not bind 127.0.0.1:$BE"
    trunk_invite "prov-contact-$m" "$contact" "$PROVIDER_IP" \
        "$TP: provider INVITE to the registered Contact (;sw= token) from $PROVIDER_IP: answered by the backend, ACK, BYE 200"
    trunk_invite "prov-did-$m" "sip:$DID@127.0.0.1:$PUB" "$PROVIDER_IP" \
        "$TP: provider INVITE to DID sip:$DID@127.0.0.1:$PUB from $PROVIDER_IP: answered by the backend, ACK, BYE 200"
    # Admission step 6: the signed token in the Request-URI is the
    # credential, whatever the source (providers call from SBCs and media
    # gateways other than the registrar). Replayed from the scanner's address
    # it is admitted too; only a guessed or forged token is not (below).
    trunk_invite "tokenreplay-$m" "$contact" "$SCANNER_IP" \
        "$TP: the same INVITE to the registered Contact with the valid token from $SCANNER_IP is admitted too (step 6: the token is the credential, not the source)"
    expect_bg "backend-$m" "$TP: the backend (SIPp UAS as Asterisk) answered the three calls" "$uas"
    backend_invites "backend-$m"
    n=$(grep -c '^INVITE ' "$RUN/backend-$m-invites.txt")
    check "$TP: the backend received exactly 3 INVITEs ($n)" [ "$n" -eq 3 ]
    first=$(grep '^INVITE ' "$RUN/backend-$m-invites.txt" | sed -n 1p)
    second=$(grep '^INVITE ' "$RUN/backend-$m-invites.txt" | sed -n 2p)
    check "$TP: the Contact INVITE reached the backend with the Request-URI rewritten back to Asterisk's Contact ($first)" \
        [ "$first" = "INVITE $ORIG_CONTACT SIP/2.0" ]
    check "$TP: the DID INVITE reached the backend with its Request-URI unchanged ($second)" \
        [ "$second" = "INVITE sip:$DID@127.0.0.1:$PUB SIP/2.0" ]
    third=$(grep '^INVITE ' "$RUN/backend-$m-invites.txt" | sed -n 3p)
    check "$TP: the replayed Contact INVITE reached the backend rewritten back to Asterisk's Contact too ($third)" \
        [ "$third" = "INVITE $ORIG_CONTACT SIP/2.0" ]
    n=$(grep -ic '^X-Sipwarden-Trunk: provider1$' "$RUN/backend-$m-invites.txt")
    check "$TP: all three INVITEs carry X-Sipwarden-Trunk: provider1 ($n of 3)" [ "$n" -eq 3 ]
    n=$(grep -ic '^X-Sipwarden-Trunk:' "$RUN/backend-$m-invites.txt")
    if [ "$n" -eq 3 ] && ! grep -qi 'forged-by-caller' "$RUN/backend-$m-invites.txt"; then
        pass "$TP: the provider's own X-Sipwarden-Trunk: forged-by-caller was stripped (one such header per INVITE)"
    else
        fail "$TP: X-Sipwarden-Trunk headers at the backend: $n, forged value present: $(grep -ci forged-by-caller "$RUN/backend-$m-invites.txt")"
    fi

    # 3. A scanner sends the very same DID INVITE, the Contact INVITE with
    # Asterisk's line= but without the token, and one with a forged token.
    trunk_silent_bg "scan-did-$m" "sip:$DID@127.0.0.1:$PUB" "$SCANNER_IP" "$PHONE_PORT"
    trunk_silent_bg "scan-line-$m" "sip:$ACCOUNT@127.0.0.1:$PUB;line=$LINE" "$SCANNER_IP" "$((PHONE_PORT + 1))"
    trunk_silent_bg "scan-forged-$m" "sip:$ACCOUNT@127.0.0.1:$PUB;line=$LINE;sw=${token:0:8}00000000" "$SCANNER_IP" "$SV_PORT"
    silent_wait "$TP: scanner $SCANNER_IP: the very same DID INVITE gets no answer" \
        "$TP: scanner $SCANNER_IP: INVITE to Asterisk's Contact with line= but no sw= token gets no answer" \
        "$TP: scanner $SCANNER_IP: INVITE with a forged sw= token gets no answer"

    # 4. Asterisk unregisters: the provider's INVITEs are no longer admitted.
    trunk_register "$m-unreg" 0 0 "Asterisk unregisters (Expires: 0): 401, retry, 200"
    if wait_log_n "trunk unregistered" "$((++UNREG_LOGS))"; then pass "$TP: log: trunk unregistered"
    else fail "$TP: no 'trunk unregistered' log line"; fi
    metrics_dump "$RUN/m-$m-unreg.txt"
    check "$TP: sipwarden_registrations = 0 after the unregister ($(gauge "$RUN/m-$m-unreg.txt" sipwarden_registrations))" \
        [ "$(gauge "$RUN/m-$m-unreg.txt" sipwarden_registrations)" -eq 0 ]
    trunk_silent_bg "prov-did-unreg-$m" "sip:$DID@127.0.0.1:$PUB" "$PROVIDER_IP" "$PROV_PORT"
    trunk_silent_bg "prov-contact-unreg-$m" "$contact" "$PROVIDER_IP" "$((PROV_PORT + 2))"
    silent_wait "$TP: after the unregister the provider's DID INVITE from $PROVIDER_IP gets no answer" \
        "$TP: after the unregister the provider's INVITE to the old Contact token gets no answer"
}

REG_LOGS=0
UNREG_LOGS=0
for mode in $MODES; do run_mode "$mode"; done

# 5. (UDP) The granted expiry, not the asked one, bounds the admission: the
# Contact's expires=4 wins over "Expires: 3600"; grace is 1 s. (4 s, not
# less: on a loaded machine starting two SIPp processes can take seconds.)
if [[ " $MODES " == *" udp "* ]]; then
    trunk_transport udp
    echo "-- short registration (UDP)"
    trunk_register short 4 3600 "Asterisk registers again; the registrar grants expires=4 on the Contact (Expires header 3600)"
    T_REG=$(date +%s.%N)
    sipp_bg backend-short 20 -sf "$SIPP_DIR/uas_answer.xml" -m 1 -i 127.0.0.1 -p "$BE"
    UAS=$BG_PID
    wait_bound udp 127.0.0.1 "$BE" "" || fail "the backend UAS did not bind 127.0.0.1:$BE"
    trunk_invite prov-did-short "sip:$DID@127.0.0.1:$PUB" "$PROVIDER_IP" \
        "UDP: within the 4 s registration the DID INVITE is admitted and answered"
    expect_bg backend-short "UDP: the backend answered it" "$UAS"
    if grep 'trunk registered' "$RUN/sipwarden.log" | tail -1 | grep -qE 'expires_in_s=[34]( |$)'; then
        pass "UDP: log: the registration lives $(grep 'trunk registered' "$RUN/sipwarden.log" | tail -1 | grep -o 'expires_in_s=[0-9]*') s (the Contact's expires=4, not the header's 3600)"
    else
        fail "UDP: no 'trunk registered ... expires_in_s=3|4' line: $(grep 'trunk registered' "$RUN/sipwarden.log" | tail -1)"
    fi
    # keepalives went to the registrar while registered (trunk.keepalive = 1s)
    metrics_dump "$RUN/m-ka.txt"
    KA=$(gauge "$RUN/m-ka.txt" sipwarden_keepalives_sent_total)
    check "metrics: sipwarden_keepalives_sent_total = $KA (>= 1) while the trunk was registered" [ "$KA" -ge 1 ]
    # wait until expiry (4 s) + grace (1 s) + 0.3 s have passed since the 200
    sleep "$(awk -v t="$T_REG" -v n="$(date +%s.%N)" 'BEGIN { d = t + 5.3 - n; print (d > 0 ? d : 0) }')"
    trunk_silent_bg prov-did-expired "sip:$DID@127.0.0.1:$PUB" "$PROVIDER_IP" "$PROV_PORT"
    silent_wait "UDP: 5.3 s after the 200 (expiry 4 s + grace 1 s) the same DID INVITE gets no answer"
    metrics_dump "$RUN/m-exp.txt"
    check "UDP: sipwarden_registrations = 0 after the expiry ($(gauge "$RUN/m-exp.txt" sipwarden_registrations))" \
        [ "$(gauge "$RUN/m-exp.txt" sipwarden_registrations)" -eq 0 ]
fi

capture_stop
capture_sip trunk > "$RUN/trunk.txt"
timeout 30 tshark -r "$RUN/trunk.pcap" -T fields -E separator='|' -e ip.src -e ip.dst -e udp.dstport -e tcp.dstport \
    -e udp.length -e tcp.len -e data.data 2>/dev/null > "$RUN/trunk-raw.txt"
# (field 3/4 = dst port, 5 = Request-Line, 7 = Call-ID)
# invites_to PORT: the Call-IDs of the INVITEs sent to that port (127.0.0.1), one line each
invites_to() { awk -F'|' -v p="$1" '$2 == "127.0.0.1" && ($3 == p || $4 == p) && $5 ~ /^INVITE / {print $7}' "$RUN/trunk.txt"; }
invites_to "$PUB" > "$RUN/invites-public.txt"
invites_to "$BE" > "$RUN/invites-backend.txt"
log "capture: INVITEs to the public port: $(wc -l < "$RUN/invites-public.txt"), on the backend port: $(wc -l < "$RUN/invites-backend.txt")"
# Every INVITE the test sent, by its Call-ID (e2e-NAME-...): it reached the
# public port, and the backend port exactly when it was admitted. The
# admitted ones are the positive control of the filter that must not find
# the others.
ADMITTED=(); SILENCED=()
for m in $MODES; do
    ADMITTED+=("prov-contact-$m" "prov-did-$m" "tokenreplay-$m")
    SILENCED+=("scan-did-$m" "scan-line-$m" "scan-forged-$m" "prov-did-unreg-$m" "prov-contact-unreg-$m")
done
if [[ " $MODES " == *" udp "* ]]; then ADMITTED+=(prov-did-short); SILENCED+=(prov-did-expired); fi
# seen NAME FILE: how many INVITEs of that run's Call-IDs the list holds
seen() { grep -c "^e2e-$1-[0-9]" "$2"; }
for n in "${ADMITTED[@]}"; do
    check "capture: admitted INVITE e2e-$n: at the public port ($(seen "$n" "$RUN/invites-public.txt")) and on the backend port ($(seen "$n" "$RUN/invites-backend.txt"))" \
        [ "$(seen "$n" "$RUN/invites-public.txt")" -ge 1 -a "$(seen "$n" "$RUN/invites-backend.txt")" -ge 1 ]
done
for n in "${SILENCED[@]}"; do
    check "capture: silenced INVITE e2e-$n: at the public port ($(seen "$n" "$RUN/invites-public.txt")), not on the backend port ($(seen "$n" "$RUN/invites-backend.txt"))" \
        [ "$(seen "$n" "$RUN/invites-public.txt")" -ge 1 -a "$(seen "$n" "$RUN/invites-backend.txt")" -eq 0 ]
done
N_OTHER=$(grep -vcE "^e2e-($(IFS='|'; echo "${ADMITTED[*]}"))-[0-9]" "$RUN/invites-backend.txt")
check "capture: no other INVITE on the backend port ($N_OTHER)" [ "$N_OTHER" -eq 0 ]
# keepalives: CRLF datagrams (or CRLFCRLF on TCP) from sipwarden to the registrar
if [[ " $MODES " == *" udp "* ]]; then
    KA_PKTS=$(awk -F'|' -v ip="$PROVIDER_IP" -v p="$REG_PORT" '$2 == ip && $3 == p && ($7 == "0d0a0d0a" || $7 == "0d0a")' "$RUN/trunk-raw.txt" | wc -l)
    check "capture: $KA_PKTS CRLF keepalive datagrams from sipwarden to the registrar $PROVIDER_IP:$REG_PORT (UDP)" [ "$KA_PKTS" -ge 1 ]
fi

metrics_dump "$RUN/m1.txt" || fail "metrics endpoint answers"
d() { metric_delta "$RUN/m1.txt" "$RUN/m0.txt" "$1" "$2"; }
NM=$(echo $MODES | wc -w)
TC=$(d trunk-contact forwarded); TR=$(d trunk forwarded); FT=$(d forged-token dropped); ND=$(d no-domain dropped)
OUTB=$(d outbound forwarded)
log "metrics delta: trunk-contact forwarded=$TC, trunk forwarded=$TR, forged-token dropped=$FT, no-domain dropped=$ND, outbound forwarded=$OUTB"
check "metrics: trunk-contact forwarded = $TC (two Contact INVITEs per mode: $((2 * NM)))" [ "$TC" -eq $((2 * NM)) ]
# the DID INVITEs come from the registrar's address (their ACK and BYE carry
# our Route: dialog-route)
NDID=$NM; [[ " $MODES " == *" udp "* ]] && NDID=$((NM + 1))
check "metrics: trunk forwarded = $TR (>= the DID INVITEs: $NDID)" [ "$TR" -ge "$NDID" ]
check "metrics: forged-token dropped = $FT (>= the forged token and the stale Contact token, per mode)" [ "$FT" -ge $((2 * NM)) ]
check "metrics: no-domain dropped = $ND (>= the scanner's DID and line= INVITEs and the provider's after unregister/expiry)" [ "$ND" -ge $((3 * NM)) ]
check "metrics: Asterisk's REGISTERs went out (outbound forwarded = $OUTB >= $((4 * NM)))" [ "$OUTB" -ge $((4 * NM)) ]

check "sipwarden is still running" sipwarden_alive
stop_sipwarden
finish
