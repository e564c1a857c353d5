#!/bin/bash
# Two (then three) sipwarden nodes sharing bans and trunk registrations
# through a real Redis (docs/cluster.md): redis-server started here on its
# own loopback port (BASE+80, no persistence), node A on 127.0.0.1, node B
# on 127.0.0.11, node C on 127.0.0.12, one secret key file, each its own
# state file and control socket. A SIPp UAS on 127.0.0.1:BACKEND is the PBX.
#
#   1. Both nodes connect (log, sipwarden_cluster_up 1, `status` names the
#      cluster). "Asterisk" registers the trunk through node A's internal
#      socket (401, retry, 200); node B learns the registration (its
#      sipwarden_registrations gauge becomes 1; Redis holds one field).
#   2. Failover: node A is killed (SIGKILL); the provider's DID INVITE to
#      node B is admitted as `trunk`, reaches the backend with
#      X-Sipwarden-Trunk and is answered (ACK, BYE).
#   3. A node started while Redis holds the state (node C, no state file)
#      loads it before its sockets open and admits the DID INVITE at once,
#      with no new REGISTER. Garbage written into the keys with redis-cli
#      (not JSON, another version, a registration whose token the key did
#      not make, a record with CR LF in its Contact) is rejected and counted
#      (log, sipwarden_cluster_records_rejected_total), the forged
#      registration admits nothing; garbage PUBLISHed on the channel too.
#   4. A restarted, a scanner (127.0.0.4) banned on A (ban.after_rejects =
#      3) is banned on B: polled, the time printed, bounded generously;
#      its OPTIONS with the secret domain to B gets no answer (`banned`).
#      `sipwarden unban` on B frees it on A.
#   5. Redis killed: both nodes say so once, sipwarden_cluster_up 0, and go
#      on: the DID INVITE to B and a phone's OPTIONS to A are answered.
#      A manual ban on A made meanwhile (127.0.0.6) reaches B once Redis is
#      back (empty: restarted without persistence), and Redis holds it again.
#   6. rediss://: a redis-server with a TLS port (certificates made here with
#      openssl) and node D (127.0.0.13) with the CA in SSL_CERT_FILE: it
#      connects and its ban reaches Redis; without the CA the certificate is
#      refused (logged), sipwarden_cluster_up 0, and the node runs on.
source "$(dirname "$0")/lib.sh"
setup cluster
trunk_transport udp
command -v redis-server > /dev/null && command -v redis-cli > /dev/null \
    || die "redis-server and redis-cli are needed (Debian: redis-server; scripts/setup.sh installs it)"

RPORT=$((BASE + 80))
ss -Hlnt "sport = :$RPORT" 2>/dev/null | grep -q . \
    && { echo "ABORT: TCP port $RPORT (this script's redis-server) is already in use: $(port_users tcp "$RPORT" | head -1)" >&2; exit 4; }
A_IP=127.0.0.1
B_IP=127.0.0.11
C_IP=127.0.0.12
D_IP=127.0.0.13
NAME=e2e
REDIS_PID=""
declare -A PID_OF

rcli() { timeout 5 redis-cli -h 127.0.0.1 -p "$RPORT" "$@"; }

start_redis() {
    mkdir -p "$RUN/redis"
    redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$RUN/redis" --logfile "$RUN/redis.log" --daemonize no &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_bound tcp 127.0.0.1 "$RPORT" "$REDIS_PID" || die "redis-server did not listen on 127.0.0.1:$RPORT"
}

# node_config NODE IP [STATE]: the e2e config moved to IP, with the trunk,
# the cluster and short ban settings.
node_config() {
    local node=$1 ip=$2 state=${3-$RUN/$1.state} f=$RUN/$1.toml
    write_config "$f" "$DOMAIN"
    sed -i -e "s|udp:127.0.0.1:$PUB|udp:$ip:$PUB|; s|tcp:127.0.0.1:$PUB|tcp:$ip:$PUB|" \
        -e "s|^internal = .*|internal = \"udp:$ip:$INT\"|" \
        -e "s|^advertise = .*|advertise = \"$ip:$PUB\"|" \
        -e "s|^listen = \"127.0.0.1:$MET\"|listen = \"$ip:$MET\"|" \
        -e "s|control.sock|$node.sock|" "$f"
    trunk_config "$f"
    cat >> "$f" <<EOF

[ban]
after_rejects = 3
duration = "10m"

[cluster]
redis = "redis://127.0.0.1:$RPORT"
name = "$NAME"
node = "$node"
load_timeout = "2s"
retry_max = "500ms"
EOF
    if [ -n "$state" ]; then
        printf '\n[state]\npath = "%s"\nsave_interval = "200ms"\n' "$state" >> "$f"
    fi
}

ip_of() { case $1 in a) echo $A_IP;; b) echo $B_IP;; c) echo $C_IP;; d) echo $D_IP;; esac; }

start_node() {
    local node=$1 ip
    ip=$(ip_of "$node")
    NO_COLOR=1 "$SIPWARDEN" --config "$RUN/$node.toml" >> "$RUN/$node.log" 2>&1 &
    PID_OF[$node]=$!
    PIDS+=("$!")
    wait_bound udp "$ip" "$PUB" "${PID_OF[$node]}" && wait_bound tcp "$ip" "$MET" "${PID_OF[$node]}" \
        || { log "$(tail -n 5 "$RUN/$node.log")"; die "node $node did not bind $ip:$PUB"; }
}

stop_node() {
    local node=$1 rc i
    kill -TERM "${PID_OF[$node]}" 2>/dev/null
    for i in $(seq 50); do kill -0 "${PID_OF[$node]}" 2>/dev/null || break; sleep 0.1; done
    reap "${PID_OF[$node]}"; rc=$?
    check "node $node exits 0 on SIGTERM (status $rc)" [ "$rc" -eq 0 ]
}

# node_log_n NODE PATTERN COUNT [SECONDS]
node_log_n() {
    local i n=$(( ${4:-5} * 10 ))
    for i in $(seq "$n"); do
        [ "$(grep -cE "$2" "$RUN/$1.log" 2>/dev/null)" -ge "$3" ] && return 0
        sleep 0.1
    done
    return 1
}

node_metrics() { timeout 5 curl -sf "http://$(ip_of "$1"):$MET/metrics" > "$2"; }
node_gauge() { local f=$RUN/m-$1-$$.txt; node_metrics "$1" "$f" && gauge "$f" "$2"; }
node_cli() { timeout 10 "$SIPWARDEN" --config "$RUN/$1.toml" "${@:2}"; }

# wait_gauge NODE NAME VALUE SECONDS: until the node's gauge has the value.
wait_gauge() {
    local i v
    for i in $(seq $(( $4 * 10 ))); do
        v=$(node_gauge "$1" "$2" 2>/dev/null)
        [ "$v" = "$3" ] && return 0
        sleep 0.1
    done
    return 1
}

# banned_on NODE IP: the node's bans list it.
banned_on() { node_cli "$1" bans --json 2>/dev/null | grep -q "\"target\":\"$2\""; }

# wait_banned NODE IP yes|no SECONDS: polls every 20 ms; prints the seconds it took.
wait_banned() {
    local t0 i want=$3
    t0=$(date +%s.%N)
    for i in $(seq $(( $4 * 50 ))); do
        if banned_on "$1" "$2"; then [ "$want" = yes ] && break; else [ "$want" = no ] && break; fi
        sleep 0.02
    done
    awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.3f", a - b }'
    if banned_on "$1" "$2"; then [ "$want" = yes ]; else [ "$want" = no ]; fi
}

# node_invite NAME NODE DESCRIPTION: the provider's DID INVITE to the node,
# answered and ended (trunk_invite.xml).
node_invite() {
    local ip
    ip=$(ip_of "$2")
    expect_sipp "$1" "$3" "$ip:$PUB" -sf "$SIPP_DIR/trunk_invite.xml" -m 1 $T \
        -i "$PROVIDER_IP" -p "$PROV_PORT" -key ruri "sip:$TRUNK_DID@$ip:$PUB" -key did "$TRUNK_DID" \
        -cid_str "e2e-$1-%u-%p"
}

backend_bg() {
    sipp_bg "$1" 40 -sf "$SIPP_DIR/$2" -m "$3" -i 127.0.0.1 -p "$BE"
    BACKEND=$BG_PID
    wait_bound udp 127.0.0.1 "$BE" || fail "the backend UAS did not bind 127.0.0.1:$BE"
}

SO=(-sf "$(silent_scenario OPTIONS)" -s 100 -key ua sipp-e2e-scan)

start_redis
for n in a b; do node_config "$n" "$(ip_of $n)"; done
"$SIPWARDEN" check --config "$RUN/a.toml" > "$RUN/check-a.txt" 2>&1
check "\`sipwarden check\` of node A's config exits 0 and says that every node must share secret.key_file" \
    grep -q "Every node must use the same secret.key_file" "$RUN/check-a.txt"
start_node a
start_node b

# 1. connected; the registration through A reaches B
for n in a b; do
    if node_log_n "$n" "cluster: connected to Redis" 1; then pass "node $n: log 'cluster: connected to Redis'"; else fail "node $n: no 'cluster: connected to Redis'"; fi
    check "node $n: sipwarden_cluster_up 1" wait_gauge "$n" sipwarden_cluster_up 1 5
done
node_cli b status > "$RUN/cli-status-b.txt" 2>&1
check "node b: \`sipwarden status\` names the cluster ($(grep '^cluster:' "$RUN/cli-status-b.txt" | cut -c1-80))" \
    grep -q "^cluster: $NAME node b via redis://127.0.0.1:$RPORT: Redis up" "$RUN/cli-status-b.txt"
trunk_register reg 600 3600 "Asterisk registers the trunk through node A's internal socket: 401, retry, 200"
node_log_n a "trunk registered" 1 || fail "node a: no 'trunk registered'"
T_REG=$(date +%s.%N)
if wait_gauge b sipwarden_registrations 1 10; then
    pass "node b learned the registration made through node A ($(awk -v a="$(date +%s.%N)" -v b="$T_REG" 'BEGIN { printf "%.3f", a - b }') s after A logged it)"
else
    fail "node b: sipwarden_registrations did not become 1"
fi
check "Redis holds the registration: HLEN $NAME:regs = 1 ($(rcli HLEN "$NAME:regs"))" [ "$(rcli HLEN "$NAME:regs")" = 1 ]
node_log_n b "trunk registered through another node" 1 || fail "node b: no 'trunk registered through another node'"

# 2. failover: A dies, the provider calls B
kill -KILL "${PID_OF[a]}"; reap "${PID_OF[a]}"; rc=$?
T_KILL=$(date +%s.%N)
check "node a was running and SIGKILL ended it (status $rc)" [ "$rc" -eq 137 ]
backend_bg backend-failover uas_answer.xml 1
node_metrics b "$RUN/m-b-0.txt"
node_invite did-b b "failover: with node A dead, the provider's DID INVITE to node B is admitted and answered"
log "the call through node B was answered $(awk -v a="$(date +%s.%N)" -v b="$T_KILL" 'BEGIN { printf "%.2f", a - b }') s after node A's SIGKILL"
expect_bg backend-failover "the backend answered the DID INVITE that came through node B" "$BACKEND"
node_metrics b "$RUN/m-b-1.txt"
check "node b: admitted as trunk (+$(metric_delta "$RUN/m-b-1.txt" "$RUN/m-b-0.txt" trunk forwarded))" \
    [ "$(metric_delta "$RUN/m-b-1.txt" "$RUN/m-b-0.txt" trunk forwarded)" -ge 1 ]
sipp_requests backend-failover INVITE > "$RUN/failover-invites.txt"
check "the INVITE reached the backend with X-Sipwarden-Trunk: provider1, via node B" \
    grep -qix 'X-Sipwarden-Trunk: provider1' "$RUN/failover-invites.txt"
check "... and node B's Via" grep -q "^Via: SIP/2.0/UDP $B_IP:$INT" "$RUN/failover-invites.txt"

# 3. a node that starts while Redis holds the state; garbage in the keys
rcli HSET "$NAME:bans" 198.51.100.1 'garbage{' > /dev/null
rcli HSET "$NAME:bans" 198.51.100.2 '{"v":9,"node":"x"}' > /dev/null
rcli HSET "$NAME:regs" forged '{"v":1,"node":"evil","at":1,"kind":"reg","token":"00112233445566778899","trunk":"provider1","registrar":"127.0.0.7","contact":"sip:x@127.0.0.1:1","expires":9999999999999,"registrar_addr":"127.0.0.7:5060","transport":"udp"}' > /dev/null
rcli HSET "$NAME:regs" crlf '{"v":1,"node":"evil","at":1,"kind":"reg","token":"t","trunk":"p","registrar":"r","contact":"sip:x@h\r\nX: y","expires":9999999999999,"registrar_addr":"127.0.0.7:5060","transport":"udp"}' > /dev/null
node_config c "$C_IP" ""
start_node c
if node_log_n c "cluster: shared state loaded from Redis" 1; then
    LINE=$(grep 'shared state loaded' "$RUN/c.log" | tail -1)
    log "${LINE#*INFO }"
    check "node c loaded the registration from Redis before its sockets opened (registrations=1)" grep -q 'registrations=1' <<< "$LINE"
    check "node c rejected the 4 garbage values (rejected=4)" grep -q 'rejected=4' <<< "$LINE"
else
    fail "node c: no 'shared state loaded' log line"
fi
check "node c logged why each value was refused ($(grep -c 'is no record\|does not hold' "$RUN/c.log") lines)" \
    [ "$(grep -c 'is no record\|does not hold' "$RUN/c.log")" -ge 4 ]
check "node c: sipwarden_cluster_records_rejected_total >= 4 ($(node_gauge c sipwarden_cluster_records_rejected_total))" \
    [ "$(node_gauge c sipwarden_cluster_records_rejected_total)" -ge 4 ]
check "node c: sipwarden_registrations 1 (the forged one is not)" [ "$(node_gauge c sipwarden_registrations)" = 1 ]
check "node c is alive after the garbage" kill -0 "${PID_OF[c]}"
backend_bg backend-c uas_answer.xml 1
node_invite did-c c "node c, started after the REGISTER, admits the provider's DID INVITE (no new REGISTER)"
expect_bg backend-c "the backend answered the DID INVITE that came through node C" "$BACKEND"
check "no REGISTER was sent since the first one (one Asterisk SIPp run)" [ "$(ls "$RUN"/asterisk-*.msg | wc -l)" -eq 1 ]
R0=$(node_gauge b sipwarden_cluster_records_rejected_total)
rcli PUBLISH "$NAME:changes" $'\xff\xfe not a record' > /dev/null
rcli PUBLISH "$NAME:changes" '{"v":1,"node":"evil","at":1,"kind":"ban","target":"0.0.0.0/0","trigger":"manual","since":1,"until":9999999999999}' > /dev/null
ok=0
for i in $(seq 50); do [ "$(node_gauge b sipwarden_cluster_records_rejected_total)" -ge $((R0 + 2)) ] && { ok=1; break; }; sleep 0.1; done
check "garbage and a ban of 0.0.0.0/0 PUBLISHed on the channel: rejected and counted by node b ($R0 -> $(node_gauge b sipwarden_cluster_records_rejected_total))" [ $ok = 1 ]
check "node b is alive and bans nothing" [ "$(node_gauge b sipwarden_bans)" = 0 ]
stop_node c

# 4. bans: made on A, seen on B; lifted on B, freed on A
start_node a
node_log_n a "cluster: shared state loaded from Redis" 1 || fail "node a: no 'shared state loaded' after its restart"
expect_sipp scan-a "scanner $SCANNER_IP: 3 OPTIONS by IP to node A get no answer (and ban it there)" \
    "$A_IP:$PUB" "${SO[@]}" -key host "$A_IP" -key to_host "$A_IP" -key from_host "$A_IP" \
    -m 3 -r 10 -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-cluster-scan-%u-%p"
node_log_n a "banned.*source=$SCANNER_IP|source=$SCANNER_IP.*banned" 1 || fail "node a: no 'banned' line for $SCANNER_IP"
if took=$(wait_banned b "$SCANNER_IP" yes 10); then
    pass "node b lists $SCANNER_IP as banned, $took s after node A banned it (polled every 20 ms with \`sipwarden bans\`)"
else
    fail "node b does not list $SCANNER_IP as banned after $took s"
fi
node_log_n b "banned by another node" 1 || fail "node b: no 'banned by another node'"
node_metrics b "$RUN/m-b-2.txt"
expect_sipp scan-b-domain "the banned scanner's OPTIONS with the secret domain to node B gets no answer" \
    "$B_IP:$PUB" -sf "$(silent_scenario OPTIONS)" -s 100 -key ua sipp-e2e-probe -key host "$DOMAIN" \
    -key to_host "$DOMAIN" -key from_host "$DOMAIN" -m 1 -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-cluster-banned-%u-%p"
node_metrics b "$RUN/m-b-3.txt"
check "node b dropped it as banned (+$(metric_delta "$RUN/m-b-3.txt" "$RUN/m-b-2.txt" banned dropped))" \
    [ "$(metric_delta "$RUN/m-b-3.txt" "$RUN/m-b-2.txt" banned dropped)" -ge 1 ]
node_cli b unban "$SCANNER_IP" > "$RUN/cli-unban-b.txt" 2>&1
check "\`sipwarden unban $SCANNER_IP\` on node B: exit 0" [ $? -eq 0 ]
if took=$(wait_banned a "$SCANNER_IP" no 10); then
    pass "node a no longer lists $SCANNER_IP, $took s after the unban on node B"
else
    fail "node a still bans $SCANNER_IP $took s after the unban on node B"
fi
backend_bg backend-unbanned uas_options.xml 1
expect_sipp unbanned-a "the unbanned source's OPTIONS with the domain to node A is answered 200 by the backend" \
    "$A_IP:$PUB" -sf "$SIPP_DIR/options_uac.xml" -m 1 -s 100 -key domain "$DOMAIN" -key ua sipp-e2e-probe \
    -i "$SCANNER_IP" -p "$PHONE_PORT" -cid_str "e2e-cluster-unbanned-%u-%p"
expect_bg backend-unbanned "the backend answered it" "$BACKEND"

# 5. Redis dies and comes back empty
kill -KILL "$REDIS_PID"; reap "$REDIS_PID"
T_DOWN=$(date +%s.%N)
for n in a b; do
    check "node $n: sipwarden_cluster_up 0 with Redis dead" wait_gauge "$n" sipwarden_cluster_up 0 10
    node_log_n "$n" "cluster: Redis unreachable" 1 || fail "node $n: no 'cluster: Redis unreachable'"
done
backend_bg backend-down uas_answer.xml 1
node_invite did-b-down b "Redis dead: the provider's DID INVITE to node B is still admitted (local table) and answered"
expect_bg backend-down "the backend answered it" "$BACKEND"
backend_bg backend-down-opt uas_options.xml 1
expect_sipp phone-a-down "Redis dead: a phone's OPTIONS with the domain to node A is forwarded and answered" \
    "$A_IP:$PUB" -sf "$SIPP_DIR/options_uac.xml" -m 1 -s 100 -key domain "$DOMAIN" -key ua sipp-e2e-probe \
    -i "$PHONE_IP" -p "$PHONE_PORT" -cid_str "e2e-cluster-down-%u-%p"
expect_bg backend-down-opt "the backend answered it" "$BACKEND"
node_cli a ban "$UA_SCANNER_IP" --for 1h > "$RUN/cli-ban-a.txt" 2>&1
check "Redis dead: \`sipwarden ban $UA_SCANNER_IP\` on node A: exit 0" [ $? -eq 0 ]
sleep 1.5
if banned_on b "$UA_SCANNER_IP"; then fail "while Redis is dead, node b cannot know of the ban"; else pass "while Redis is dead, node b does not know of the ban yet"; fi
for n in a b; do
    check "node $n logged the loss once, however many retries ($(grep -c 'cluster: Redis unreachable' "$RUN/$n.log"))" \
        [ "$(grep -c 'cluster: Redis unreachable' "$RUN/$n.log")" -eq 1 ]
done
start_redis
T_UP=$(date +%s.%N)
log "Redis was down $(awk -v a="$T_UP" -v b="$T_DOWN" 'BEGIN { printf "%.1f", a - b }') s"
if took=$(wait_banned b "$UA_SCANNER_IP" yes 15); then
    pass "the ban made on node A while Redis was dead reached node B $took s after Redis came back"
else
    fail "node B does not list $UA_SCANNER_IP $took s after Redis came back"
fi
for n in a b; do
    check "node $n: sipwarden_cluster_up 1 again" wait_gauge "$n" sipwarden_cluster_up 1 10
    check "node $n logged the recovery ($(grep -c 'cluster: connected to Redis' "$RUN/$n.log") connections)" \
        [ "$(grep -c 'cluster: connected to Redis' "$RUN/$n.log")" -ge 2 ]
done
check "Redis (restarted empty) holds the ban again: HEXISTS $NAME:bans $UA_SCANNER_IP" \
    [ "$(rcli HEXISTS "$NAME:bans" "$UA_SCANNER_IP")" = 1 ]
check "... and the registration: HLEN $NAME:regs = 1" [ "$(rcli HLEN "$NAME:regs")" = 1 ]
node_metrics a "$RUN/m-a-end.txt"
log "node a: errors $(gauge "$RUN/m-a-end.txt" sipwarden_cluster_errors_total), sent $(sample "$RUN/m-a-end.txt" 'sipwarden_cluster_records_total{direction="sent"}')"
check "node a counted the outage (sipwarden_cluster_errors_total >= 1)" [ "$(gauge "$RUN/m-a-end.txt" sipwarden_cluster_errors_total)" -ge 1 ]
stop_node a
stop_node b

# 6. rediss://: the link over TLS, the server's certificate checked
TPORT=$((BASE + 81))
mkdir -p "$RUN/tls"
( cd "$RUN/tls" \
  && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=e2e redis CA" \
  && openssl req -newkey rsa:2048 -nodes -keyout redis.key -out redis.csr -subj "/CN=127.0.0.1" \
  && printf 'subjectAltName=IP:127.0.0.1\n' > ext \
  && openssl x509 -req -in redis.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out redis.pem -days 2 -extfile ext ) \
    > "$RUN/tls/openssl.log" 2>&1 || die "openssl could not make the test certificates"
redis-server --port 0 --tls-port "$TPORT" --bind 127.0.0.1 --tls-cert-file "$RUN/tls/redis.pem" \
    --tls-key-file "$RUN/tls/redis.key" --tls-ca-cert-file "$RUN/tls/ca.pem" --tls-auth-clients no \
    --save "" --appendonly no --dir "$RUN/tls" --logfile "$RUN/redis-tls.log" --daemonize no &
PIDS+=("$!")
wait_bound tcp 127.0.0.1 "$TPORT" "$!" || die "redis-server (TLS) did not listen on 127.0.0.1:$TPORT"
node_config d "$D_IP" ""
sed -i "s|^redis = .*|redis = \"rediss://127.0.0.1:$TPORT\"|" "$RUN/d.toml"
SSL_CERT_FILE=$RUN/tls/ca.pem start_node d
if node_log_n d "cluster: connected to Redis" 1; then pass "rediss:// with the CA in SSL_CERT_FILE: node d connected over TLS"; else fail "rediss://: node d did not connect"; fi
node_cli d ban 192.0.2.200 > /dev/null 2>&1
ok=0
for i in $(seq 50); do
    [ "$(timeout 5 redis-cli --tls --cacert "$RUN/tls/ca.pem" -h 127.0.0.1 -p "$TPORT" HEXISTS "$NAME:bans" 192.0.2.200)" = 1 ] && { ok=1; break; }
    sleep 0.1
done
check "a ban made on node d is in the TLS Redis" [ $ok = 1 ]
stop_node d
start_node d
if node_log_n d "invalid peer certificate" 1 10; then
    pass "without the CA the certificate is refused ($(grep -o 'invalid peer certificate[^ ]*' "$RUN/d.log" | head -1)) and the node runs on"
else
    fail "node d without the CA: no 'invalid peer certificate'"
fi
check "node d without the CA: sipwarden_cluster_up 0" wait_gauge d sipwarden_cluster_up 0 5
stop_node d
finish
