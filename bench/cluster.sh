#!/usr/bin/env bash
# bench/cluster.sh — propagation between two cluster nodes through Redis
# (docs/cluster.md), on one machine:
#
#   1. ban delay: N_BANS manual bans on node A (control socket, one every
#      20 ms); the delay from node A's log line to node B's ("banned by
#      another node"), p50/p99/max;
#   2. registration delay: N_REGS trunk REGISTERs through node A's internal
#      socket, each answered 200 by a registrar played on 127.0.0.3; the
#      delay from A's "trunk registered" to B's "... through another node";
#   3. burst: BURST bans on node A within one second; when the last reached
#      node B (B's last log line, from A's first ban).
#
# Timestamps come from the nodes' own logs (the same clock, microseconds).
# Release build; redis-server on 127.0.0.1:$((BASE + 80)), nodes on
# 127.0.0.1 and 127.0.0.11, ports from BASE (default 28060: never 5060 or
# 6379, so it runs beside the main benchmark). Bounded: about 30 s.
#
#   bench/cluster.sh            # BASE=28060 N_BANS=500 N_REGS=200 BURST=10000

set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SIPWARDEN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sipwarden}
BASE=${BASE:-28060}
N_BANS=${N_BANS:-500}
N_REGS=${N_REGS:-200}
BURST=${BURST:-10000}
PUB=$BASE; INT=$((BASE + 10)); BE=$((BASE + 20)); REG=$((BASE + 30)); RPORT=$((BASE + 80))
LOAD="python3 $ROOT/bench/cluster_load.py"

die() { echo "bench/cluster.sh: $*" >&2; exit 1; }
command -v redis-server > /dev/null || die "redis-server not found (apt-get install redis-server)"
[ -x "$BIN" ] || die "$BIN not built (cargo build --release)"
for p in "$PUB" "$INT" "$BE" "$REG" "$RPORT"; do
    [ -z "$(ss -Hlnu "sport = :$p" 2>/dev/null; ss -Hlnt "sport = :$p" 2>/dev/null)" ] || die "port $p is in use"
done
OUT=$(mktemp -d /tmp/swcluster.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 0.5; for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

wait_port() { # PROTO IP PORT
    local f=-Hlnu i; [ "$1" = tcp ] && f=-Hlnt
    for i in $(seq 100); do ss $f "sport = :$3" 2>/dev/null | grep -qF "$2:$3" && return 0; sleep 0.05; done
    return 1
}

redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$OUT" \
    --logfile "$OUT/redis.log" --daemonize no &
PIDS+=($!)
wait_port tcp 127.0.0.1 "$RPORT" || die "redis-server did not start"

node() { # NAME IP
    cat > "$OUT/$1.toml" <<EOF
[listen]
public = ["udp:$2:$PUB"]
internal = "udp:$2:$INT"
advertise = "$2:$PUB"
[backend]
address = "udp:127.0.0.1:$BE"
[filter]
domains = ["pbx.secret.example"]
[secret]
key_file = "$OUT/secret"
[control]
socket = "$OUT/$1.sock"
[log]
level = "info"
[state]
path = "$OUT/$1.state"
[ban]
max_entries = 100000
[cluster]
redis = "redis://127.0.0.1:$RPORT"
name = "bench"
node = "$1"
EOF
    NO_COLOR=1 "$BIN" --config "$OUT/$1.toml" > "$OUT/$1.log" 2>&1 &
    PIDS+=($!)
    wait_port udp "$2" "$PUB" || die "node $1 did not start: $(tail -n 3 "$OUT/$1.log")"
}
node a 127.0.0.1
node b 127.0.0.11
for i in $(seq 100); do grep -q 'connected to Redis' "$OUT/b.log" && break; sleep 0.05; done

echo "== cluster propagation (two nodes on one machine, redis-server $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-), $(nproc) cores; $OUT)"
$LOAD bans "$OUT/a.sock" "$N_BANS" 20 198.18 || die "ban load failed"
sleep 1
read -r n p50 p99 max < <($LOAD delays "$OUT/a.log" "banned by the control socket" "$OUT/b.log" "banned by another node" "ban|source")
printf '| ban, one every 20 ms | %s | %s ms | %s ms | %s ms |\n' "$n" "$p50" "$p99" "$max" > "$OUT/rows"

$LOAD regs "$N_REGS" "127.0.0.1:$INT" "$BE" "$REG" 20 || die "registration load failed"
sleep 1
read -r n p50 p99 max < <($LOAD delays "$OUT/a.log" "trunk registered trunk=" "$OUT/b.log" "through another node" -)
printf '| trunk registration, one every 20 ms | %s | %s ms | %s ms | %s ms |\n' "$n" "$p50" "$p99" "$max" >> "$OUT/rows"

$LOAD burst "$OUT/a.sock" "$BURST" 1 198.19 || die "burst failed"
for i in $(seq 200); do
    [ "$(grep -c 'source=198\.19\.' "$OUT/b.log")" -ge "$BURST" ] && break
    sleep 0.05
done
read -r na a0 a1 aspan < <($LOAD spread "$OUT/a.log" "banned by the control socket ban=198\.19\.")
read -r nb b0 b1 bspan < <($LOAD spread "$OUT/b.log" "banned by another node source=198\.19\.")
echo
echo "| what | records | p50 | p99 | max |"
echo "|---|---|---|---|---|"
cat "$OUT/rows"
echo
awk -v na="$na" -v nb="$nb" -v a0="$a0" -v a1="$a1" -v b1="$b1" 'BEGIN {
    printf "burst: %d bans made on node A in %.0f ms; node B had all %d %.0f ms after the first (%.0f ms after the last was made)\n",
        na, a1 - a0, nb, b1 - a0, b1 - a1 }'
