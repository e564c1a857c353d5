#!/usr/bin/env bash
# bench/run.sh — sipwarden beside Kamailio and the raw-UDP limit, in one run.
#
#   bench/run.sh                 # everything, ~6-8 minutes on 2 cores (bounded < 10)
#
# Builds sipwarden (release) and the bench tools (tools/swbench), then for
# each system under test in turn, on the same ports:
#   sipwarden           target/release/sipwarden with a config written here
#   kamailio-default    Kamailio 5.6, bench/kamailio-bench.cfg, default allocator
#   kamailio-tlsf       the same with -x tlsf
#   raw-sendto          tools/swbench rawrelay, recvfrom/sendto (no parsing)
#   raw-mmsg            rawrelay, recvmmsg/sendmmsg, relayed from a socket
#                       connected to the backend (the physical limit)
#   raw-mmsg-addr       the same relayed from the listening socket, an address
#                       per datagram (not in the default list; SYSTEMS=)
# runs the scenarios (flood, forward, latency at half ceiling, mix, tcp;
# RUNS times each), the system under test pinned to core 0, the load
# generator and the sink to core 1, and prints a markdown table (medians,
# min-max) plus the ratios sipwarden/kamailio-tlsf and sipwarden/raw-mmsg.
# See bench/README.md for what every column means.
#
# Knobs (environment):
#   DURATION=4   seconds per measurement         RUNS=3   runs per scenario
#   SYSTEMS="sipwarden kamailio-tlsf raw-mmsg kamailio-default raw-sendto"
#            (in order of importance: the time budget drops the last first)
#   SCENARIOS="flood forward latency mix tcp"
#   RCVBUF=4194304  socket receive buffer given to every system under test
#   PUBLIC_PORT=5060 INTERNAL_PORT=5070 BACKEND_PORT=5080
#   SRC_ADDRS=4 SRC_PORTS=2 TCP_CONNS=8
#   FLOOD_RATE=0 offered flood load in msgs/s (0 = as fast as one core can send)
#   FORWARD_RATE=0 offered forward load in msgs/s (0 = as fast as possible):
#                CPU per forwarded message at the same load pinned and
#                unpinned (latency and mix then run at half this rate)
#   FLOOD_GENERATORS=1  load generators sending the flood side by side, each
#                as fast as it can (2 with SUT_CPU=0-1 LOAD_CPU=0-1: "with both
#                cores, drop everything two load generators can send")
#   BUDGET=540   seconds from start (build included); a system that would
#                end after this is skipped, so the whole run stays < 10 min
#   SIPWARDEN_BIN=path   another sipwarden binary (default: the release build)
#   SIPWARDEN_EXTRA_CONFIG="..."   TOML appended to the generated config
#   SIPWARDEN_LISTEN_EXTRA="..."   keys added to its [listen] table, e.g.
#                'udp_coalesce = "0us"' (no pauses under a flood)
#   SIPWARDEN_POLICY=defaults      no `[allow] cidrs = ["127.0.0.0/8"]` (see write_sipwarden_config)
#   OUT=/tmp/swbench.XXXX   results.jsonl, table.md and logs
#   NO_BUILD=1   use the binaries already in $CARGO_TARGET_DIR/release
#   NICE=-20     priority of the system under test, load generator and sink
#   HARD_LIMIT=595  seconds from start after which no run may end
#
# Traffic goes to 127.0.0.0/8 only; every load run is bounded by DURATION
# and a message count, and every wait below has a timeout.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REL=$CARGO_TARGET_DIR/release
START_TS=$SECONDS
# The command as run, with the knobs that were set, for the table's header.
CMDLINE=""
for v in DURATION RUNS SYSTEMS SCENARIOS RCVBUF PUBLIC_PORT INTERNAL_PORT BACKEND_PORT SRC_ADDRS SRC_PORTS TCP_CONNS FLOOD_RATE FORWARD_RATE FLOOD_GENERATORS SUT_CPU LOAD_CPU BUDGET NICE SIPWARDEN_BIN SIPWARDEN_POLICY SIPWARDEN_LISTEN_EXTRA; do
    val=${!v:-}
    [ -n "$val" ] || continue
    case $val in *" "*) val="'$val'";; esac
    CMDLINE="$CMDLINE$v=$val "
done
CMDLINE="${CMDLINE}bench/run.sh"

DURATION=${DURATION:-4}
RUNS=${RUNS:-3}
SYSTEMS=${SYSTEMS:-"sipwarden kamailio-tlsf raw-mmsg kamailio-default raw-sendto"}
SCENARIOS=${SCENARIOS:-"flood forward latency mix tcp"}
RCVBUF=${RCVBUF:-4194304}
PUBLIC_PORT=${PUBLIC_PORT:-5060}
INTERNAL_PORT=${INTERNAL_PORT:-5070}
BACKEND_PORT=${BACKEND_PORT:-5080}
SRC_ADDRS=${SRC_ADDRS:-4}
SRC_PORTS=${SRC_PORTS:-2}
TCP_CONNS=${TCP_CONNS:-8}
# Flood load: as fast as possible by default (the issue's method). CPU per
# dropped message depends on the load: below saturation a process sleeps and
# pays a wake-up every few datagrams. FLOOD_RATE=N offers every system the
# same N msgs/s instead (see bench/README.md).
FLOOD_RATE=${FLOOD_RATE:-0}
# Forward load: as fast as possible by default (the ceiling). Unpinned
# (SUT_CPU=0-1 LOAD_CPU=0-1) the load generator and the sink share the
# system's cores and cap its rate below its ceiling, so it sleeps and pays
# wake-ups a saturated run does not: FORWARD_RATE=N compares CPU per
# message pinned and unpinned at one offered load.
FORWARD_RATE=${FORWARD_RATE:-0}
FLOOD_GENERATORS=${FLOOD_GENERATORS:-1}
case $FLOOD_GENERATORS in [1-8]) ;; *) echo "FLOOD_GENERATORS must be 1..8" >&2; exit 2;; esac
BUDGET=${BUDGET:-540}
DOMAIN=pbx.secret.example
OUT=${OUT:-$(mktemp -d /tmp/swbench.XXXXXX)}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

SUT_PID=""
SUT_MODE=""
SINK_PID=""

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup
kill_tree() { # PID: TERM the process and its descendants, KILL after 5 s
    local pid=$1 kids
    [ -n "$pid" ] || return 0
    kids=$(pgrep -P "$pid" 2>/dev/null | tr '\n' ' ')
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" $kids 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}
RMEM_RESTORE=""
cleanup() {
    [ -n "$SINK_PID" ] && kill_tree "$SINK_PID"
    [ -n "$SUT_PID" ] && kill_tree "$SUT_PID"
    SINK_PID=""; SUT_PID=""
    [ -n "$RMEM_RESTORE" ] && sysctl -q -w net.core.rmem_max="$RMEM_RESTORE" 2>/dev/null
    RMEM_RESTORE=""
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- preflight
NPROC=$(nproc)
# Placement, overridable for the unpinned run:
#   SUT_CPU=0-1 LOAD_CPU=0-1 bench/run.sh   (everything may use every core)
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
if [ "$NPROC" -lt 2 ]; then
    log "WARNING: only $NPROC core: system under test and load generator share core 0"
    LOAD_CPU=0
fi
command -v taskset >/dev/null || die "taskset not found (package util-linux)"
command -v ss >/dev/null || die "ss not found (package iproute2)"
# Nice -20 for the system under test, the load generator and the sink: on a
# shared machine other processes then get ~1% of the pinned cores instead of
# half, without SCHED_FIFO's risk of starving a multi-threaded system's own
# threads at full load. Every system gets the same treatment. With
# CONFIG_SCHED_AUTOGROUP (Debian's default) nice only counts inside a
# session, so each of them gets its own session (setsid) whose autogroup
# gets the same nice value.
NICE=${NICE:--20}
NICE_PRE=()
if nice -n "$NICE" true 2>/dev/null && [ "$(nice -n "$NICE" nice)" = "$NICE" ]; then
    NICE_PRE=(setsid sh -c 'echo "$0" > /proc/self/autogroup 2>/dev/null; exec "$@"' "$NICE" nice -n "$NICE")
else
    log "note: nice $NICE not permitted here: every process runs at the default priority"
    NICE=""
fi
FIFO=0
if command -v chrt >/dev/null && chrt -f 1 true 2>/dev/null; then FIFO=1; fi
[ "$FIFO" = 1 ] || log "note: chrt -f not permitted here: latency runs use the normal scheduler"

port_users() { # PROTO(u|t) PORT
    ss -H -ln"$1"p "sport = :$2" 2>/dev/null
}
busy=""
for spec in "u $PUBLIC_PORT" "t $PUBLIC_PORT" "u $INTERNAL_PORT" "u $BACKEND_PORT" "t $BACKEND_PORT"; do
    set -- $spec
    users=$(port_users "$1" "$2")
    if [ -n "$users" ]; then
        busy="$busy\n  $( [ "$1" = u ] && echo udp || echo tcp ) port $2: $(echo "$users" | head -1 | sed 's/  */ /g' | cut -c1-200)"
    fi
done
if [ -n "$busy" ]; then
    printf 'bench/run.sh: the benchmark needs these ports free, but they are in use:%b\n' "$busy" >&2
    printf 'Stop those processes, or choose other ports (PUBLIC_PORT=, INTERNAL_PORT=, BACKEND_PORT=).\n' >&2
    exit 1
fi

RMEM_MAX=$(cat /proc/sys/net/core/rmem_max)
RMEM_RESTORE=""
if [ "$RMEM_MAX" -lt "$RCVBUF" ]; then
    if sysctl -q -w net.core.rmem_max="$RCVBUF" 2>/dev/null; then
        RMEM_RESTORE=$RMEM_MAX
        log "raised net.core.rmem_max $RMEM_MAX -> $RCVBUF for this run (so every system gets the buffer it asks for)"
    else
        log "WARNING: net.core.rmem_max=$RMEM_MAX < RCVBUF=$RCVBUF and cannot be raised: buffers are capped"
    fi
fi

# ---------------------------------------------------------------- build
SW_STATUS=ok
if [ -z "${NO_BUILD:-}" ]; then
    log "building tools/swbench (release)"
    cargo build --release --quiet --manifest-path "$ROOT/tools/swbench/Cargo.toml" \
        >"$OUT/build-swbench.log" 2>&1 || { cat "$OUT/build-swbench.log" >&2; die "tools/swbench does not build"; }
    if [ -n "${SIPWARDEN_BIN:-}" ]; then
        log "using SIPWARDEN_BIN=$SIPWARDEN_BIN (no sipwarden build)"
    else
        log "building sipwarden (release)"
    fi
    if [ -z "${SIPWARDEN_BIN:-}" ] && ! cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin sipwarden \
        >"$OUT/build-sipwarden.log" 2>&1; then
        SW_STATUS="skipped: sipwarden not available (release build failed, see $OUT/build-sipwarden.log)"
    fi
fi
for b in swload swsink rawrelay swstat; do
    [ -x "$REL/$b" ] || die "$REL/$b missing (build tools/swbench)"
done
SWSTAT=$REL/swstat
SIPWARDEN_BIN=${SIPWARDEN_BIN:-$REL/sipwarden}
printf '{"kind":"env","date":"%s","nproc":%s,"kernel":"%s","runs":%s,"duration":%s,"rcvbuf":%s,"fifo":%s,"nice":"%s","flood_rate":%s,"forward_rate":%s,"command":"%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$NPROC" "$(uname -r)" "$RUNS" "$DURATION" "$RCVBUF" "$FIFO" "${NICE:-0}" "$FLOOD_RATE" "$FORWARD_RATE" \
    "$CMDLINE" >> "$RESULTS"

# ---------------------------------------------------------------- helpers
wait_port() { # PROTO PORT TIMEOUT_TENTHS PID: until bound, or the pid died
    local i
    for i in $(seq "$3"); do
        [ -n "$(port_users "$1" "$2")" ] && return 0
        kill -0 "$4" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

label_of() {
    case $1 in
        sipwarden) echo "sipwarden";;
        kamailio-default) echo "Kamailio $(kamailio -v 2>/dev/null | sed -n 's/^version: kamailio \([0-9.]*\).*/\1/p'), default allocator";;
        kamailio-tlsf) echo "Kamailio $(kamailio -v 2>/dev/null | sed -n 's/^version: kamailio \([0-9.]*\).*/\1/p'), -x tlsf";;
        raw-sendto) echo "raw relay, recvfrom/sendto";;
        raw-mmsg) echo "raw relay, recvmmsg/sendmmsg, connected";;
        raw-mmsg-addr) echo "raw relay, recvmmsg/sendmmsg, an address per datagram";;
        *) echo "$1";;
    esac
}

supports() { # SYSTEM SCENARIO
    case $1 in
        raw-*) case $2 in flood|forward|latency) return 0;; *) return 1;; esac;;
        *) return 0;;
    esac
}

mode_for() { # SYSTEM SCENARIO -> the process variant needed
    case $1 in
        raw-*) [ "$2" = flood ] && echo drop || echo relay;;
        *) echo default;;
    esac
}

write_sipwarden_config() {
    cat > "$OUT/sipwarden.toml" <<EOF
# written by bench/run.sh
[listen]
public = ["udp:127.0.0.1:$PUBLIC_PORT", "tcp:127.0.0.1:$PUBLIC_PORT"]
internal = "udp:127.0.0.1:$INTERNAL_PORT"
advertise = "127.0.0.1:$PUBLIC_PORT"
udp_rcvbuf = $RCVBUF
${SIPWARDEN_LISTEN_EXTRA:-}

[backend]
address = "udp:127.0.0.1:$BACKEND_PORT"

[filter]
domains = ["$DOMAIN"]

[secret]
key_file = "$OUT/sipwarden.key"

[control]
socket = "$OUT/control.sock"

[log]
level = "warn"
EOF
    # The load comes from a handful of loopback addresses at up to 400k msgs/s:
    # with the default [limits] (50 msgs/s per source) and [ban] (20 rejects ->
    # 15 min ban) sipwarden would ban 127.0.0.2-5 in the first flood run and
    # forward nothing afterwards. `allow` exempts a source from rate limits and
    # bans only (admission by domain still applies), which makes it the
    # equivalent of the stateless Kamailio config. SIPWARDEN_POLICY=defaults
    # leaves it out (then the flood measures the ban path).
    if [ "${SIPWARDEN_POLICY:-allow-loopback}" != defaults ]; then
        printf '\n[allow]\ncidrs = ["127.0.0.0/8"]\n' >> "$OUT/sipwarden.toml"
    fi
    if [ -n "${SIPWARDEN_EXTRA_CONFIG:-}" ]; then
        printf '\n%s\n' "$SIPWARDEN_EXTRA_CONFIG" >> "$OUT/sipwarden.toml"
    fi
}

START_ERR=""
start_sut() { # SYSTEM MODE -> sets SUT_PID, or returns 1 with the reason in START_ERR
    local sys=$1 mode=$2 logf="$OUT/$1-$2.log"
    START_ERR=""
    case $sys in
        sipwarden)
            [ -x "$SIPWARDEN_BIN" ] || { START_ERR="sipwarden not available (no $SIPWARDEN_BIN)"; return 1; }
            write_sipwarden_config
            "${NICE_PRE[@]}" taskset -c $SUT_CPU "$SIPWARDEN_BIN" --config "$OUT/sipwarden.toml" >"$logf" 2>&1 &
            ;;
        kamailio-*)
            command -v kamailio >/dev/null || { START_ERR="kamailio not installed (apt-get install kamailio)"; return 1; }
            mkdir -p "$OUT/kamailio-run"
            local alloc=()
            [ "$sys" = kamailio-tlsf ] && alloc=(-x tlsf)
            "${NICE_PRE[@]}" taskset -c $SUT_CPU kamailio -f "$BENCH/kamailio-bench.cfg" -DD -E -Y "$OUT/kamailio-run" \
                "${alloc[@]}" -A NCHILD="$NPROC" -A RCVBUF="$RCVBUF" \
                -A PUBLIC_PORT="$PUBLIC_PORT" -A BACKEND_PORT="$BACKEND_PORT" >"$logf" 2>&1 &
            ;;
        raw-*)
            local io=(--io mmsg --connected)
            [ "$sys" = raw-sendto ] && io=(--io simple)
            [ "$sys" = raw-mmsg-addr ] && io=(--io mmsg)
            "${NICE_PRE[@]}" taskset -c $SUT_CPU "$REL/rawrelay" --listen "127.0.0.1:$PUBLIC_PORT" --mode "$mode" "${io[@]}" \
                --backend "127.0.0.1:$BACKEND_PORT" --rcvbuf "$RCVBUF" --duration 900 >"$logf" 2>&1 &
            ;;
        *) START_ERR="unknown system $sys"; return 1;;
    esac
    SUT_PID=$!
    SUT_MODE=$mode
    if ! wait_port u "$PUBLIC_PORT" 50 "$SUT_PID"; then
        local why="did not bind udp 127.0.0.1:$PUBLIC_PORT within 5 s"
        kill -0 "$SUT_PID" 2>/dev/null || why="exited at start"
        kill_tree "$SUT_PID"; SUT_PID=""
        START_ERR="$sys not available ($why; log $logf: $(tail -c 300 "$logf" | tr '\n' ' '))"
        return 1
    fi
    sleep 0.3 # let every worker process/thread reach its receive loop
    return 0
}

stop_sut() {
    [ -n "$SUT_PID" ] && kill_tree "$SUT_PID"
    SUT_PID=""; SUT_MODE=""
}

sample() { "$SWSTAT" proc --pid "$SUT_PID" --port "$PUBLIC_PORT" --core "${SUT_CPU%%[,-]*}"; }
sut_pids() { "$SWSTAT" get - pids <<<"$(sample)" | tr -d '[]' | tr ',' ' '; }

# After a load run: wait (at most 10 s) until the system under test stops
# using CPU, i.e. has worked off what sits in its socket buffers, so that
# the CPU sample covers every message the sink counted and nothing leaks
# into the next run (TCP buffers can hold seconds of work).
wait_quiet() {
    local prev cur i
    prev=$("$SWSTAT" get - cpu_us <<<"$(sample)")
    for i in $(seq 50); do
        sleep 0.2
        cur=$("$SWSTAT" get - cpu_us <<<"$(sample)")
        [ $(( ${cur:-0} - ${prev:-0} )) -lt 10000 ] && return 0
        prev=$cur
    done
    log "note: system under test still busy 10 s after the load stopped"
}

set_fifo() { # on|off for every thread of the system under test
    [ "$FIFO" = 1 ] || return 0
    local p
    for p in $(sut_pids); do
        if [ "$1" = on ]; then chrt -f -a -p 1 "$p" >/dev/null 2>&1; else chrt -o -a -p 0 "$p" >/dev/null 2>&1; fi
    done
}

start_sink() { # ANSWER(0|1) FIFO(0|1)
    local args=(--listen "127.0.0.1:$BACKEND_PORT" --rcvbuf "$RCVBUF" --duration $((DURATION + 60)))
    [ "$1" = 1 ] && args+=(--answer)
    local pre=("${NICE_PRE[@]}" taskset -c $LOAD_CPU)
    [ "$2" = 1 ] && [ "$FIFO" = 1 ] && pre+=(chrt -f 1)
    "${pre[@]}" "$REL/swsink" "${args[@]}" >"$OUT/sink.json" 2>"$OUT/sink.err" &
    SINK_PID=$!
    wait_port u "$BACKEND_PORT" 30 "$SINK_PID" || { log "sink did not start: $(cat "$OUT/sink.err")"; return 1; }
}

stop_sink() { # prints the sink's JSON
    [ -n "$SINK_PID" ] || { echo null; return; }
    kill -TERM "$SINK_PID" 2>/dev/null
    local i
    for i in $(seq 50); do kill -0 "$SINK_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SINK_PID" 2>/dev/null
    wait "$SINK_PID" 2>/dev/null
    SINK_PID=""
    local s; s=$(cat "$OUT/sink.json" 2>/dev/null)
    [ -n "$s" ] && echo "$s" || echo null
}

# One swload invocation against the system under test; prints its JSON.
# A flood with FLOOD_GENERATORS > 1 runs that many side by side (each bounded
# like one) and prints their reports added up.
load() { # SCENARIO RATE DURATION
    if [ "$1" = flood ] && [ "$FLOOD_GENERATORS" -gt 1 ]; then
        local g files=() pids=()
        for g in $(seq "$FLOOD_GENERATORS"); do
            files+=("$OUT/flood-gen$g.json")
            load_one "$@" > "$OUT/flood-gen$g.json" &
            pids+=($!)
        done
        wait "${pids[@]}"
        "$SWSTAT" merge-loads "${files[@]}" 2>>"$OUT/swload.err" || echo null
        return
    fi
    load_one "$@"
}

load_one() { # SCENARIO RATE DURATION
    local maxc=$(( 1000000 * ${3%.*} + 1000000 ))
    timeout $(( ${3%.*} + 20 )) "${NICE_PRE[@]}" taskset -c $LOAD_CPU "$REL/swload" --scenario "$1" \
        --target "127.0.0.1:$PUBLIC_PORT" --rate "$2" --duration "$3" --max-count "$maxc" \
        --domain "$DOMAIN" --src-addrs "$SRC_ADDRS" --src-ports "$SRC_PORTS" \
        --connections "$TCP_CONNS" 2>>"$OUT/swload.err" || echo null
}

# Sends a little legitimate traffic and checks that it reaches the sink.
probe() {
    start_sink 0 0 || return 1
    load forward 2000 0.5 >/dev/null
    sleep 0.2
    local got; got=$("$SWSTAT" get - received <<<"$(stop_sink)")
    [ "${got:-0}" -gt 0 ] 2>/dev/null
}

# Hard limit for the whole script: a run that might end after it is not started
# (each run is bounded: sink start 3 s + DURATION + drain wait 10 s + stop 5 s).
HARD_LIMIT=${HARD_LIMIT:-595}

run_one() { # SYSTEM SCENARIO RUN
    local sys=$1 scen=$2 r=$3 rate=0 answer=0 fifo=0 lscen=$2
    if [ $(( SECONDS - START_TS + ${DURATION%.*} + 20 )) -gt "$HARD_LIMIT" ]; then
        log "$sys $scen $r: not run, the ${HARD_LIMIT}s limit would be exceeded"
        return 0
    fi
    case $scen in
        flood) rate=$FLOOD_RATE;;
        forward) rate=$FORWARD_RATE;;
        latency|mix)
            local ceil; ceil=$("$SWSTAT" ceiling "$RESULTS" "$sys")
            rate=$(( ${ceil:-0} / 2 )); fifo=1
            [ "$rate" -ge 1 ] || { log "$sys $scen: no forward ceiling measured (${ceil:-none}), skipped"; return 0; }
            [ "$scen" = latency ] && lscen=forward
            [ "$scen" = mix ] && answer=1
            ;;
    esac
    start_sink "$answer" "$fifo" || return 0
    [ "$fifo" = 1 ] && set_fifo on
    local before after loadj sinkj
    before=$(sample)
    loadj=$(load "$lscen" "$rate" "$DURATION")
    wait_quiet
    after=$(sample)
    [ "$fifo" = 1 ] && set_fifo off
    sinkj=$(stop_sink)
    printf '{"kind":"run","system":"%s","scenario":"%s","run":%s,"rate":%s,"fifo":%s,"load":%s,"sink":%s,"before":%s,"after":%s}\n' \
        "$sys" "$scen" "$r" "$rate" "$(( fifo && FIFO ))" "${loadj:-null}" "${sinkj:-null}" "$before" "$after" >> "$RESULTS"
    local sent fwd
    sent=$("$SWSTAT" get - sent <<<"${loadj:-null}" 2>/dev/null)
    fwd=$("$SWSTAT" get - received <<<"${sinkj:-null}" 2>/dev/null)
    log "$sys $scen $r/$RUNS: rate ${rate/#0/max}, sent ${sent:-?}, at sink ${fwd:-?}"
}

run_system() { # SYSTEM
    local sys=$1 label status=ok scen r mode
    label=$(label_of "$sys")
    printf '{"kind":"system","system":"%s","label":"%s","status":"ok"}\n' "$sys" "$label" >> "$RESULTS"
    local nruns=0
    for scen in $SCENARIOS; do supports "$sys" "$scen" && nruns=$((nruns + RUNS)); done
    local need=$(( nruns * (${DURATION%.*} + 2) + 5 ))
    if [ $(( SECONDS - START_TS + need )) -gt "$BUDGET" ]; then
        status="skipped: time budget (${BUDGET}s) would be exceeded"
    elif [ "$sys" = sipwarden ] && [ "$SW_STATUS" != ok ]; then
        status=$SW_STATUS
    fi
    if [ "$status" = ok ]; then
        log "=== $label"
        for scen in $SCENARIOS; do
            supports "$sys" "$scen" || continue
            mode=$(mode_for "$sys" "$scen")
            if [ "$mode" != "$SUT_MODE" ]; then
                stop_sut
                if ! start_sut "$sys" "$mode"; then
                    status="skipped: $START_ERR"; break
                fi
                if [ "$mode" != drop ] && ! probe; then
                    status="skipped: $sys not available (started, but forwarded nothing to the backend in a probe)"
                    stop_sut; break
                fi
            fi
            for r in $(seq "$RUNS"); do run_one "$sys" "$scen" "$r"; done
        done
        stop_sut
    fi
    [ "$status" = ok ] || log "$label: $status"
    [ "$sys" = sipwarden ] && [ "$status" != ok ] && echo "sipwarden not available" >&2
    printf '{"kind":"system","system":"%s","label":"%s","status":"%s"}\n' \
        "$sys" "$label" "$(printf '%s' "$status" | tr '\n\t' '  ' | tr -cd '[:print:]' | tr -d '"\\')" >> "$RESULTS"
}

# ---------------------------------------------------------------- main
for sys in $SYSTEMS; do run_system "$sys"; done

"$SWSTAT" table "$RESULTS" | tee "$OUT/table.md"
log "done in $(( SECONDS - START_TS )) s (build included); results: $RESULTS, table: $OUT/table.md"
