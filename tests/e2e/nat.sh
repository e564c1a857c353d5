#!/bin/bash
# Phones behind NAT (Path flow tokens, docs/admission.md "Phones behind
# NAT"): the phone's Contact names its private address 127.0.0.99, where
# nothing listens, while it really sends from 127.0.0.2. One SIPp instance is
# the phone: it registers through sipwarden to Kamailio (-A WITH_EDGE, the
# Asterisk stand-in with support_path) and then answers, on the very socket
# (UDP) or TCP connection it registered from, the call a caller (127.0.0.3)
# makes through sipwarden -> Kamailio -> sipwarden's internal socket.
#
#   udp, tcp: sipwarden adds Path <sip:FLOW@INTERNAL;lr> and Supported: path;
#     Kamailio stores it (kamcmd ul.dump: the private Contact and the Path),
#     routes its INVITE to the private Contact with the Path as Route, and
#     sipwarden sends it down the REGISTER's flow: the phone answers; ACK and
#     BYE find it too (Record-Route). Nothing is ever sent to 127.0.0.99
#     (tshark); over TCP the INVITE travels on the REGISTER's connection.
#   fixcontact (UDP, nat.fix_contact = true): no Path; the Contact of the
#     REGISTER and of the phone's 200 are rewritten to 127.0.0.2:PORT
#     (ul.dump, the caller's 200), and the call reaches the phone.
#
# Usage: nat.sh [udp|tcp|fixcontact ...] (default: all three)
source "$(dirname "$0")/lib.sh"

MODES=${*:-udp tcp fixcontact}
setup nat
start_kamailio
capture_start nat "host $NAT_PRIVATE_IP or (host $PHONE_IP and port $PHONE_PORT)"
PRIV=$NAT_PRIVATE_IP

# ul_dump NAME: kamailio's location table.
ul_dump() { timeout 5 kamcmd -s "unix:$RUN/kamailio_ctl" ul.dump > "$RUN/$1" 2>&1; }
# ul_block FILE USER: the lines of that user's AoR in an ul.dump.
ul_block() { awk -v u="$2" '/AoR:/ {p = ($2 == u)} p' "$1"; }

run_mode() {
    local mode=$1 user T TP t_lower rc i
    case $mode in
        udp) user=1001; T="-t u1"; TP=UDP ;;
        tcp) user=1002; T="-t t1"; TP=TCP ;;
        fixcontact) user=1003; T="-t u1"; TP=UDP ;;
    esac
    t_lower=$(echo "$TP" | tr 'A-Z' 'a-z')
    echo "-- $mode (phone $user over $TP)"
    write_config "$RUN/sipwarden.toml" "$DOMAIN"
    if [ "$mode" = fixcontact ]; then
        printf '\n[nat]\nfix_contact = true\n' >> "$RUN/sipwarden.toml"
    fi
    start_sipwarden
    metrics_dump "$RUN/m0-$mode.txt"

    # the phone: REGISTER with the private Contact, then answer on the same flow
    sipp_bg "phone-$mode" 40 "127.0.0.1:$PUB" -sf "$SIPP_DIR/phone_nat.xml" -oocsf "$SIPP_DIR/phone_nat_answer.xml" \
        -m 1 $T -s "$user" -key domain "$DOMAIN" -key contact_host "$PRIV" -key contact_port "$PHONE_PORT" \
        -i "$PHONE_IP" -p "$PHONE_PORT" -cid_str "e2e-nat-register-$mode-%u-%p"
    local phone=$BG_PID registered=0
    wait_match '^SIP/2.0 200' "$RUN/phone-$mode.msg" "$phone" && registered=1
    check "$mode: phone $user ($PHONE_IP, Contact $PRIV:$PHONE_PORT) registered through sipwarden over $TP: 200" [ $registered = 1 ]

    ul_dump "ul-$mode.txt"
    ul_block "$RUN/ul-$mode.txt" "$user" > "$RUN/ul-$mode-$user.txt"
    local path contact
    contact=$(grep -m1 'Address:' "$RUN/ul-$mode-$user.txt" | awk '{print $2}')
    path=$(grep -m1 'Path:' "$RUN/ul-$mode-$user.txt" | sed 's/^[[:space:]]*Path: *//')
    if [ "$mode" = fixcontact ]; then
        check "$mode: kamailio stored the observed source as Contact ($contact)" \
            [ "$contact" = "sip:$user@$PHONE_IP:$PHONE_PORT;transport=$TP" ]
        # (only in a dump that has the binding: an empty one has no Path either)
        if [ -n "$contact" ] && { [ -z "$path" ] || [ "$path" = "[not set]" ]; }; then
            pass "$mode: no Path stored with the binding (fix_contact instead of Path)"
        else fail "$mode: a Path was stored with fix_contact = true, or no binding at all: '$path'"; fi
    else
        check "$mode: kamailio stored the phone's private Contact ($contact)" \
            [ "$contact" = "sip:$user@$PRIV:$PHONE_PORT;transport=$TP" ]
        if [[ "$path" =~ ^\<sip:[^@\>]+@127\.0\.0\.1:$INT\;lr\>$ ]]; then
            pass "$mode: kamailio stored sipwarden's Path with a flow token: $path"
        else
            fail "$mode: the Path kamailio stored is '$path', expected <sip:FLOWTOKEN@127.0.0.1:$INT;lr>"
            sed 's/^/   | /' "$RUN/ul-$mode-$user.txt"
        fi
    fi
    # the REGISTER as kamailio got it
    if [ "$mode" != fixcontact ]; then
        check "$mode: the REGISTER reached kamailio with Supported: path (kamailio.log)" \
            grep -qE "REGISTER sip:$user@$DOMAIN path=<sip:[^>]*@127.0.0.1:$INT;lr> supported=.*path" "$RUN/kamailio.log"
    fi

    # the caller calls the phone through sipwarden -> kamailio -> sipwarden
    expect_sipp "caller-$mode" "$mode: caller $CALLER_IP -> sipwarden -> kamailio -> sipwarden -> phone $user: answered, ACK, BYE 200" \
        "127.0.0.1:$PUB" -sf "$SIPP_DIR/invite_uac.xml" -m 1 -s "$user" -key domain "$DOMAIN" -key caller 2000 \
        -i "$CALLER_IP" -p "$PHONE_PORT" -cid_str "e2e-nat-call-$mode-%u-%p"
    reap "$phone"; rc=$?
    if [ $rc -eq 0 ]; then
        pass "$mode: the phone (one SIPp instance) answered the call on the flow it registered from and got ACK and BYE (exit 0)"
    else
        fail "$mode: the phone did not answer a call on its registration flow (sipp exit $rc)"; show_sipp "phone-$mode"
    fi
    if [ "$mode" = fixcontact ]; then
        check "$mode: kamailio sent the INVITE to the fixed Contact via sipwarden's internal socket (kamailio.log)" \
            grep -q "INVITE $user -> registered contact sip:$user@$PHONE_IP:$PHONE_PORT;transport=$TP (dst sip:127.0.0.1:$INT)" "$RUN/kamailio.log"
        # the phone's 200 (Contact 127.0.0.99) reached the caller with its Contact rewritten
        local c200
        c200=$(awk '/message received/ {rx = 1} /message sent/ {rx = 0} rx && /^SIP\/2.0 200/ {p = 1} p && /^Contact:/ {print; exit}' \
            "$RUN/caller-$mode.msg" | tr -d '\r')
        check "$mode: the phone's 200 reached the caller with Contact rewritten to the observed source ($c200)" \
            bash -c "[[ '$c200' == *'sip:$user@$PHONE_IP:$PHONE_PORT'* ]]"
    else
        check "$mode: kamailio sent the INVITE to the private Contact via sipwarden's internal socket (kamailio.log)" \
            grep -q "INVITE $user -> registered contact sip:$user@$PRIV:$PHONE_PORT;transport=$TP (dst sip:127.0.0.1:$INT)" "$RUN/kamailio.log"
    fi
    # the INVITE the phone got: from sipwarden's public side, Request-URI the private Contact
    local inv
    inv=$(sipp_requests "phone-$mode" INVITE | grep -m1 '^INVITE ')
    if [ "$mode" = fixcontact ]; then
        check "$mode: the phone got 'INVITE sip:$user@$PHONE_IP:$PHONE_PORT;...' ($inv)" bash -c "[[ '$inv' == 'INVITE sip:$user@$PHONE_IP:$PHONE_PORT'* ]]"
    else
        check "$mode: the phone got 'INVITE sip:$user@$PRIV:$PHONE_PORT;...' on its real flow ($inv)" bash -c "[[ '$inv' == 'INVITE sip:$user@$PRIV:$PHONE_PORT'* ]]"
    fi

    metrics_dump "$RUN/m1-$mode.txt"
    d() { metric_delta "$RUN/m1-$mode.txt" "$RUN/m0-$mode.txt" "$1" "$2"; }
    local outb dlg
    outb=$(( $(metric "$RUN/m1-$mode.txt" internal udp outbound forwarded) - $(metric_or_zero "$RUN/m0-$mode.txt" internal udp outbound forwarded) ))
    dlg=$(d dialog-route forwarded)
    log "metrics: internal outbound forwarded +$outb, dialog-route forwarded +$dlg, unroutable $(d unroutable dropped)"
    check "$mode: metrics: kamailio's INVITE, ACK, BYE to the phone sent out (internal/udp outbound +$outb >= 3)" [ "$outb" -ge 3 ]
    stop_sipwarden
}

for m in $MODES; do run_mode "$m"; done

# positive control of the check below: one datagram of the script's own to the
# private address (port SV_PORT, not the phone's), which the capture must show
printf 'e2e-nat-control' > "/dev/udp/$PRIV/$SV_PORT"
capture_stop
timeout 30 tshark -r "$RUN/nat.pcap" -T fields -E separator='|' -e ip.src -e ip.dst -e udp.dstport -e tcp.dstport \
    -e tcp.stream -e tcp.srcport -e sip.Request-Line -e sip.Status-Line -e sip.Call-ID 2>/dev/null > "$RUN/nat.txt"
CTL_PRIV=$(awk -F'|' -v ip="$PRIV" -v c="$SV_PORT" '$2 == ip && $3 == c' "$RUN/nat.txt" | wc -l)
TO_PRIV=$(awk -F'|' -v ip="$PRIV" -v c="$SV_PORT" '$2 == ip && $3 != c' "$RUN/nat.txt" | wc -l)
check "capture: the control datagram to $PRIV:$SV_PORT is in it ($CTL_PRIV): the capture sees packets to $PRIV" [ "$CTL_PRIV" -eq 1 ]
check "capture: not one packet was sent to the private address $PRIV ($TO_PRIV besides the control)" [ "$TO_PRIV" -eq 0 ]
for m in $MODES; do
    case $m in udp|fixcontact) u=$([ $m = udp ] && echo 1001 || echo 1003)
        N=$(awk -F'|' -v ip="$PHONE_IP" -v p="$PHONE_PORT" -v u="$u" '$2 == ip && $3 == p && $7 ~ "^INVITE sip:" u "@"' "$RUN/nat.txt" | wc -l)
        check "capture ($m): the INVITE for $u went to the phone's real address $PHONE_IP:$PHONE_PORT over UDP ($N)" [ "$N" -ge 1 ] ;;
    tcp)
        # the stream that carried the REGISTER (from the phone) also carried the INVITE (to it)
        RS=$(awk -F'|' -v ip="$PHONE_IP" '$1 == ip && $4 != "" && $7 ~ /^REGISTER / {print $5; exit}' "$RUN/nat.txt")
        IS=$(awk -F'|' -v ip="$PHONE_IP" '$2 == ip && $4 != "" && $7 ~ /^INVITE sip:1002@/ {print $5; exit}' "$RUN/nat.txt")
        NS=$(awk -F'|' -v ip="$PHONE_IP" '($1 == ip || $2 == ip) && $5 != "" {print $5}' "$RUN/nat.txt" | sort -u | wc -l)
        log "capture (tcp): REGISTER on TCP stream ${RS:-?}, INVITE on stream ${IS:-?}, $NS stream(s) with the phone"
        check "capture (tcp): the INVITE reached the phone on the TCP connection its REGISTER came on (stream ${IS:-none} = ${RS:-none})" \
            [ -n "$RS" -a "$RS" = "$IS" ]
        check "capture (tcp): the phone had exactly one TCP connection ($NS)" [ "$NS" -eq 1 ] ;;
    esac
done

finish
