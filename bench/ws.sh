#!/usr/bin/env bash
# bench/ws.sh — SIP over WebSocket: sipwarden's ws: and wss: listeners beside
# Kamailio's websocket module, in one run.
#
#   bench/ws.sh              # ~2 minutes on 2 cores
#
# Builds sipwarden and the bench tools (release), makes a CA and a
# certificate for pbx.secret.example with openssl, and measures:
#   load   swws keeps WINDOW OPTIONS in flight on each of LOAD_CONNS
#          established connections for DURATION s; the backend (swsink
#          --answer, UDP) answers 200, which comes back down the WebSocket:
#          round trips/s, SIP messages/s through the proxy (2 per round
#          trip) and the proxy's CPU per message (utime+stime).
#   idle   IDLE_CONNS connections opened and upgraded (subprotocol sip), held:
#          the proxy's memory (PSS of its processes) with them minus before
#          them, per connection (kernel socket buffers are not in it).
# for sipwarden ws:, sipwarden wss: and Kamailio 5.6 ws (websocket + xhttp
# modules, bench/kamailio-ws.cfg; stateless forward; no TLS); RUNS runs each,
# medians with min-max. Ports 17160-17199 (PORT_BASE), loopback only; every
# run is bounded by DURATION/HOLD and timeouts.
#
# Knobs: DURATION=5 RUNS=3 LOAD_CONNS=50 WINDOW=4 IDLE_CONNS=10000 HOLD=6
#        PORT_BASE=17160 OUT=/tmp/swws.XXXX NO_BUILD=1 BIN_DIR=target/release
#        SYSTEMS="sw-ws sw-wss kamailio-ws"

set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REL=${BIN_DIR:-$CARGO_TARGET_DIR/release}
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
LOAD_CONNS=${LOAD_CONNS:-50}
WINDOW=${WINDOW:-4}
IDLE_CONNS=${IDLE_CONNS:-10000}
HOLD=${HOLD:-6}
SYSTEMS=${SYSTEMS:-"sw-ws sw-wss kamailio-ws"}
B=${PORT_BASE:-17160}
WS_PORT=$B WSS_PORT=$((B + 1)) KAM_WS_PORT=$((B + 6)) KAM_UDP_PORT=$((B + 7))
INT_PORT=$((B + 10)) BE_PORT=$((B + 20)) MET_PORT=$((B + 39))
DOMAIN=pbx.secret.example
OUT=${OUT:-$(mktemp -d /tmp/swws.XXXX)}
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" >&2; }
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup EXIT
# 10,000 connections need as many descriptors in the proxy and in swws.
ulimit -n "$(ulimit -Hn)" 2> /dev/null
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((IDLE_CONNS + 200)) ] \
    || { log "descriptor limit $(ulimit -n) too low for IDLE_CONNS=$IDLE_CONNS"; exit 1; }

if [ -z "${NO_BUILD:-}" ]; then
    log "building (release)"
    (cd "$ROOT" && timeout 1200 cargo build --release -q -p sipwarden -p swbench) || exit 1
fi

# A CA and a leaf for the secret name: rustls (swws) wants a leaf that is no CA.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
    -keyout "$OUT/ca.key" -out "$OUT/ca.pem" > "$OUT/openssl.log" 2>&1 &&
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$DOMAIN" \
    -keyout "$OUT/leaf.key" -out "$OUT/leaf.csr" >> "$OUT/openssl.log" 2>&1 &&
printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\n' "$DOMAIN" > "$OUT/leaf.ext" &&
openssl x509 -req -in "$OUT/leaf.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" -CAcreateserial -days 1 \
    -extfile "$OUT/leaf.ext" -out "$OUT/leaf.pem" >> "$OUT/openssl.log" 2>&1 \
    || { log "openssl failed: $(tail -3 "$OUT/openssl.log")"; exit 1; }

cat > "$OUT/sipwarden.toml" <<EOF
[listen]
public = ["ws:127.0.0.1:$WS_PORT", "wss:127.0.0.1:$WSS_PORT"]
internal = "udp:127.0.0.1:$INT_PORT"
advertise = "127.0.0.1:$WS_PORT"
[backend]
address = "udp:127.0.0.1:$BE_PORT"
[filter]
domains = ["$DOMAIN"]
# the load comes from 127.0.0.x: no rate limit, no ban
[allow]
cidrs = ["127.0.0.0/8"]
[tcp]
max_connections = 30000
[tls]
cert_file = "$OUT/leaf.pem"
key_file = "$OUT/leaf.key"
[ws]
origins = ["http://127.0.0.1"]
[secret]
key_file = "$OUT/secret"
[control]
socket = ""
[metrics]
listen = "127.0.0.1:$MET_PORT"
[log]
level = "warn"
EOF

# Proportional set size: shared pages split among the processes that map
# them, so Kamailio's shared memory pool counts once over its processes.
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null; }
# cpu_ticks PID...: utime+stime of the processes and their threads.
cpu_ticks() { local p s=0; for p in "$@"; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $s; }
wait_tcp() { local i; for i in $(seq 100); do ss -Hlnt "sport = :$1" | grep -q . && return 0; sleep 0.1; done; return 1; }

start_sink() {
    "$REL/swsink" --listen "127.0.0.1:$BE_PORT" --answer --no-tcp --duration 300 > "$OUT/sink.json" 2> "$OUT/sink.log" &
    SINK=$!; PIDS+=("$SINK")
}
start_sut() {  # start_sut SYSTEM: sets SUT (pid), SUT_PIDS (all its processes), PORT, TLS_ARGS
    case $1 in
        sw-ws|sw-wss)
            "$REL/sipwarden" --config "$OUT/sipwarden.toml" > "$OUT/sipwarden.log" 2>&1 &
            SUT=$!; PIDS+=("$SUT")
            wait_tcp "$WSS_PORT" || { log "sipwarden did not start: $(tail -3 "$OUT/sipwarden.log")"; exit 1; }
            SUT_PIDS=("$SUT")
            if [ "$1" = sw-wss ]; then PORT=$WSS_PORT; TLS_ARGS=(--tls-name "$DOMAIN" --ca "$OUT/ca.pem")
            else PORT=$WS_PORT; TLS_ARGS=(); fi
            ;;
        kamailio-ws)
            mkdir -p "$OUT/kam"
            # 2 GiB of shared memory: it holds every connection (~65 KiB
            # each over WebSocket): 256 MB ran out at ~3,300.
            kamailio -f "$ROOT/bench/kamailio-ws.cfg" -DD -E -A NCHILD=2 -A "WS_PORT=$KAM_WS_PORT" \
                -A "UDP_PORT=$KAM_UDP_PORT" -A "BACKEND_PORT=$BE_PORT" -Y "$OUT/kam" -m 2048 \
                > "$OUT/kamailio.log" 2>&1 &
            SUT=$!; PIDS+=("$SUT")
            wait_tcp "$KAM_WS_PORT" || { log "kamailio did not start: $(tail -3 "$OUT/kamailio.log")"; exit 1; }
            sleep 0.5
            mapfile -t SUT_PIDS < <(echo "$SUT"; pgrep -P "$SUT")
            PORT=$KAM_WS_PORT; TLS_ARGS=()
            ;;
    esac
}
stop_sut() { kill -TERM "${SUT_PIDS[@]}" 2>/dev/null; wait "$SUT" 2>/dev/null; sleep 0.3; }
# The memory of the system: the PSS of its processes together (sipwarden is
# one process, Kamailio a dozen sharing its pools).
sut_rss() { local p s=0; for p in "${SUT_PIDS[@]}"; do s=$((s + $(pss_kb "$p" || echo 0))); done; echo $s; }

RESULTS=$OUT/results.jsonl
: > "$RESULTS"
start_sink
for sys in $SYSTEMS; do
    for r in $(seq "$RUNS"); do
        start_sut "$sys"
        c0=$(cpu_ticks "${SUT_PIDS[@]}")
        out=$(timeout $((DURATION + 60)) "$REL/swws" --target "127.0.0.1:$PORT" --mode load \
            --conns "$LOAD_CONNS" --window "$WINDOW" --duration "$DURATION" --domain "$DOMAIN" \
            --origin http://127.0.0.1 "${TLS_ARGS[@]}" 2> "$OUT/swws-$sys-$r.err" | tail -1)
        c1=$(cpu_ticks "${SUT_PIDS[@]}")
        echo "{\"system\":\"$sys\",\"run\":$r,\"cpu_ticks\":$((c1 - c0)),\"hz\":$(getconf CLK_TCK),\"load\":${out:-null}}" >> "$RESULTS"
        log "$sys load $r: ${out:-failed: $(tail -1 "$OUT/swws-$sys-$r.err")}"
        before=$(sut_rss)
        timeout $((HOLD + 120)) "$REL/swws" --target "127.0.0.1:$PORT" --mode idle --conns "$IDLE_CONNS" \
            --hold "$HOLD" --sources 4 --origin http://127.0.0.1 "${TLS_ARGS[@]}" \
            > "$OUT/idle-$sys-$r.json" 2> "$OUT/idle-$sys-$r.err" &
        IDLE=$!
        for i in $(seq 1200); do grep -q ws-idle-up "$OUT/idle-$sys-$r.json" 2>/dev/null && break; sleep 0.1; done
        sleep 1
        held=$(sut_rss)
        wait "$IDLE"
        idle=$(tail -1 "$OUT/idle-$sys-$r.json")
        echo "{\"system\":\"$sys\",\"run\":$r,\"rss_before_kb\":$before,\"rss_held_kb\":$held,\"idle\":${idle:-null}}" >> "$RESULTS"
        log "$sys idle $r: rss ${before} -> ${held} kB, ${idle:-failed}"
        stop_sut
    done
done

python3 - "$RESULTS" "$DURATION" "$LOAD_CONNS" "$WINDOW" "$IDLE_CONNS" > "$OUT/table.md" <<'PY'
import json, statistics, sys
path, dur, conns, window, idle_n = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
names = {"sw-ws": "sipwarden ws:", "sw-wss": "sipwarden wss:", "kamailio-ws": "Kamailio 5.6 websocket (ws)"}
def med(v):
    v = [x for x in v if x is not None]
    if not v:
        return "-"
    m = statistics.median(v)
    f = (lambda x: f"{x/1000:.1f}k") if m >= 10000 else (lambda x: f"{x:.2f}" if x < 100 else f"{x:.0f}")
    return f"{f(m)} ({f(min(v))}–{f(max(v))})" if len(v) > 1 else f(m)
print(f"| system | SIP msgs/s ({conns} conns x {window} in flight) | CPU µs per message | memory per idle connection, KiB ({idle_n} conns) | connections up |")
print("|---|---|---|---|---|")
for sys_ in ["sw-ws", "sw-wss", "kamailio-ws"]:
    load = [r for r in rows if r["system"] == sys_ and "load" in r and r["load"]]
    idle = [r for r in rows if r["system"] == sys_ and "idle" in r and r["idle"]]
    if not load and not idle:
        continue
    mps = [r["load"]["sip_messages_per_s"] for r in load]
    cpu = [r["cpu_ticks"] / r["hz"] * 1e6 / (2 * r["load"]["answered"]) if r["load"]["answered"] else None for r in load]
    per = [(r["rss_held_kb"] - r["rss_before_kb"]) / r["idle"]["up"] if r["idle"].get("up") else None for r in idle]
    up = [r["idle"].get("up") for r in idle]
    print(f"| {names[sys_]} | {med(mps)} | {med(cpu)} | {med(per)} | {min(up) if up else '-'} |")
PY
cat "$OUT/table.md"
log "results in $OUT"
