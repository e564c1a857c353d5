#!/usr/bin/env bash
# bench/tls.sh: SIP over TLS, sipwarden beside Kamailio's tls module, in one
# run on the same ports (loopback). See bench/README.md ("bench/tls.sh") and
# BENCHMARKS.md ("TLS") for the method and the figures.
#
# For each system (sipwarden's tls: listener, Kamailio 5.6 + tls module with
# bench/kamailio-tls.cfg) and each certificate (ECDSA P-256, RSA 2048, made
# here with openssl for this run):
#   handshake  full handshakes (no resumption) with the secret domain as SNI,
#              per CPU-second of the system (utime+stime of all its
#              processes, /proc/PID/stat)
#   reject     ClientHellos with a wrong server name and with none: CPU per
#              hello (sipwarden closes before a ServerHello; Kamailio has no
#              such gate and completes the handshake)
#   connect    TCP connections to the TLS port that send nothing and close:
#              what a connection costs by itself, the floor under reject
# and with the ECDSA certificate:
#   idle       memory (PSS, and RSS, summed over the system's processes) per
#              idle TLS connection, with IDLE_CONNS (10,000) of them (and for
#              sipwarden the same over plain TCP, the reference)
#   forward    INVITEs over TLS_CONNS established connections as fast as
#              possible (msgs/s at the sink, CPU µs per message)
#   latency    one-way latency p50/p99 at LAT_RATE msgs/s (swsink, from the
#              X-Bench-Ts stamp); and the same two over plain TCP to
#              sipwarden, the reference that shows what TLS adds
# Results: $OUT/results.jsonl (every measurement), $OUT/table.md, $OUT/summary.json.
#
# Knobs (environment): DURATION (5 s per measurement), SYSTEMS ("sipwarden
# kamailio"), CERTS ("ecdsa rsa"), IDLE_CONNS (10000), TLS_CONNS (8),
# LAT_RATE (5000), HS_CONCURRENCY (4), SRC_ADDRS (16), SUT_CPU (0), LOAD_CPU (1),
# TLS_PORT (25061), TCP_PORT (25060), INTERNAL_PORT (25070),
# BACKEND_PORT (25080), OUT, NO_BUILD=1, SIPWARDEN_BIN, HARD_LIMIT (570 s).

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REL=$CARGO_TARGET_DIR/release
START_TS=$SECONDS

DURATION=${DURATION:-5}
SYSTEMS=${SYSTEMS:-"sipwarden kamailio"}
CERTS=${CERTS:-"ecdsa rsa"}
IDLE_CONNS=${IDLE_CONNS:-10000}
TLS_CONNS=${TLS_CONNS:-8}
LAT_RATE=${LAT_RATE:-5000}
HS_CONCURRENCY=${HS_CONCURRENCY:-4}
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
TLS_PORT=${TLS_PORT:-25061}
TCP_PORT=${TCP_PORT:-25060}
INTERNAL_PORT=${INTERNAL_PORT:-25070}
BACKEND_PORT=${BACKEND_PORT:-25080}
HARD_LIMIT=${HARD_LIMIT:-570}
DOMAIN=pbx.secret.example
# Sources: the forwarded INVITEs come from 127.0.0.2 (in sipwarden's
# allow.cidrs: no rate limit on them). Every connection measurement gets
# SRC_ADDRS fresh source addresses of its own, 127.0.N.2 and up with N
# counting from 10, outside allow.cidrs (so a hello without SNI is refused):
# thousands of short connections per second leave TIME_WAIT entries, and a
# later measurement reusing those addresses and ports would meet them (SYN
# retransmits, slow rates, inflated CPU per connection).
LOAD_SRC=127.0.0.2
SRC_ADDRS=${SRC_ADDRS:-16}
SRC_NET=10
next_src() { SRC_NET=$((SRC_NET + 1)); [ "$SRC_NET" -le 254 ] || SRC_NET=11; SRC="127.0.$SRC_NET.2"; }
OUT=${OUT:-$(mktemp -d /tmp/swbench-tls.XXXXXX)}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SUT_PID=""
SINK_PID=""
LOAD_PID=""
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
cleanup() {
    [ -n "$LOAD_PID" ] && kill_tree "$LOAD_PID"
    [ -n "$SINK_PID" ] && kill_tree "$SINK_PID"
    [ -n "$SUT_PID" ] && kill_tree "$SUT_PID"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

command -v openssl >/dev/null || die "openssl not installed"
for p in "$TLS_PORT" "$TCP_PORT" "$BACKEND_PORT"; do
    [ -z "$(ss -H -ltn "sport = :$p" 2>/dev/null)" ] || die "TCP port $p is in use (set TLS_PORT/TCP_PORT/BACKEND_PORT)"
done
for p in "$INTERNAL_PORT" "$BACKEND_PORT"; do
    [ -z "$(ss -H -lun "sport = :$p" 2>/dev/null)" ] || die "UDP port $p is in use (set INTERNAL_PORT/BACKEND_PORT)"
done

# 10,000 connections: the system and the load tool each need >10,000 fds.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
FDS=$(ulimit -n)
[ "$FDS" -gt $((IDLE_CONNS + 500)) ] || log "WARNING: ulimit -n is $FDS: not enough for $IDLE_CONNS idle connections"

# ---------------------------------------------------------------- build
if [ -z "${NO_BUILD:-}" ]; then
    log "building tools/swbench and sipwarden (release)"
    cargo build --release --quiet -p swbench >"$OUT/build-swbench.log" 2>&1 \
        || { cat "$OUT/build-swbench.log" >&2; die "tools/swbench does not build"; }
    if [ -z "${SIPWARDEN_BIN:-}" ]; then
        cargo build --release --quiet --bin sipwarden >"$OUT/build-sipwarden.log" 2>&1 \
            || { cat "$OUT/build-sipwarden.log" >&2; die "sipwarden does not build"; }
    fi
fi
SIPWARDEN_BIN=${SIPWARDEN_BIN:-$REL/sipwarden}
for b in swtls swsink swstat; do [ -x "$REL/$b" ] || die "$REL/$b missing (cargo build --release -p swbench)"; done
SWSTAT=$REL/swstat
BUILD_S=$((SECONDS - START_TS))

KVER=$(kamailio -v 2>/dev/null | sed -n 's/^version: kamailio \([0-9.]*\).*/\1/p')
printf '{"kind":"env","date":"%s","nproc":%s,"kernel":"%s","duration":%s,"idle_conns":%s,"tls_conns":%s,"lat_rate":%s,"sut_cpu":"%s","load_cpu":"%s","fd_limit":%s,"kamailio":"%s","openssl":"%s","commit":"%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" "$(uname -r)" "$DURATION" "$IDLE_CONNS" "$TLS_CONNS" "$LAT_RATE" \
    "$SUT_CPU" "$LOAD_CPU" "$FDS" "$KVER" "$(openssl version | cut -d' ' -f2)" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)" >> "$RESULTS"

# ---------------------------------------------------------------- certificates
make_cert() { # ecdsa|rsa -> $OUT/$1.crt, $OUT/$1.key (a wildcard for the parent domain, as docs/tls.md advises)
    local alg
    case $1 in
        ecdsa) alg=(-newkey ec -pkeyopt ec_paramgen_curve:P-256);;
        rsa) alg=(-newkey rsa:2048);;
    esac
    openssl req -x509 "${alg[@]}" -nodes -keyout "$OUT/$1.key" -out "$OUT/$1.crt" -days 2 \
        -subj "/CN=*.secret.example" -addext "subjectAltName=DNS:*.secret.example" \
        >"$OUT/openssl-$1.log" 2>&1 || die "openssl could not make the $1 certificate: $(cat "$OUT/openssl-$1.log")"
}
for c in $CERTS; do make_cert "$c"; done

# ---------------------------------------------------------------- systems
label_of() {
    case $1 in
        sipwarden) echo "sipwarden";;
        kamailio) echo "Kamailio $KVER + tls, -x tlsf, 1 TLS worker";;
    esac
}

wait_port() { # PORT TENTHS PID: until TCP PORT listens, or the pid died
    local i
    for i in $(seq "$2"); do
        [ -n "$(ss -H -ltn "sport = :$1" 2>/dev/null)" ] && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

write_sipwarden_config() { # CERT
    cat > "$OUT/sipwarden.toml" <<EOF
# written by bench/tls.sh
[listen]
public = ["tls:127.0.0.1:$TLS_PORT", "tcp:127.0.0.1:$TCP_PORT"]
internal = "udp:127.0.0.1:$INTERNAL_PORT"
advertise = "127.0.0.1:$TCP_PORT"

[backend]
address = "udp:127.0.0.1:$BACKEND_PORT"

[filter]
domains = ["$DOMAIN"]

[secret]
key_file = "$OUT/sipwarden.key"

[tls]
cert_file = "$OUT/$1.crt"
key_file = "$OUT/$1.key"

[tcp]
max_connections = $((IDLE_CONNS + 2000))
idle_timeout = "30m"

# The admitted load's source: no rate limit on forwarded INVITEs.
[allow]
cidrs = ["$LOAD_SRC/32"]

# Rejected hellos would ban their source after 20 and then be refused at
# the accept (cheaper still): the run measures the SNI gate, not bans.
[ban]
after_rejects = 0

[control]
socket = "$OUT/control.sock"

[log]
level = "warn"
EOF
}

start_sut() { # SYSTEM CERT -> SUT_PID
    local logf="$OUT/$1-$2.log"
    case $1 in
        sipwarden)
            [ -x "$SIPWARDEN_BIN" ] || { log "no $SIPWARDEN_BIN"; return 1; }
            write_sipwarden_config "$2"
            taskset -c "$SUT_CPU" "$SIPWARDEN_BIN" --config "$OUT/sipwarden.toml" >"$logf" 2>&1 &
            ;;
        kamailio)
            # One worker of each kind (NCHILD=1): the system is pinned to one
            # core (SUT_CPU) anyway, and Debian's Kamailio 5.6.3 with OpenSSL 3
            # crashed with two TLS workers under this load (double free in
            # the tls module's ser_free, then SIGSEGV: kamailio issue #3791;
            # its fix, tls_threads_mode, exists only from 5.7 on).
            command -v kamailio >/dev/null || { log "kamailio not installed"; return 1; }
            mkdir -p "$OUT/kamailio-run"
            taskset -c "$SUT_CPU" kamailio -f "$BENCH/kamailio-tls.cfg" -DD -E -x tlsf -m 2048 -M 32 \
                -Y "$OUT/kamailio-run" -A NCHILD=1 -A TLS_PORT="$TLS_PORT" \
                -A INTERNAL_PORT="$INTERNAL_PORT" -A BACKEND_PORT="$BACKEND_PORT" \
                -A "TLS_CERT=\"$OUT/$2.crt\"" -A "TLS_KEY=\"$OUT/$2.key\"" >"$logf" 2>&1 &
            ;;
    esac
    SUT_PID=$!
    if ! wait_port "$TLS_PORT" 100 "$SUT_PID"; then
        log "$1 did not listen on TLS $TLS_PORT within 10 s: $(tail -c 400 "$logf" | tr '\n' ' ')"
        kill_tree "$SUT_PID"; SUT_PID=""
        return 1
    fi
    sleep 0.5
}

stop_sut() { kill_tree "$SUT_PID"; SUT_PID=""; }

sample() { "$SWSTAT" proc --pid "$SUT_PID" --port "$INTERNAL_PORT" --core "${SUT_CPU%%[,-]*}"; }

# After a load: wait (at most 10 s) until the system stops using CPU.
wait_quiet() {
    local prev cur
    prev=$("$SWSTAT" get - cpu_us <<<"$(sample)")
    for _ in $(seq 50); do
        sleep 0.2
        cur=$("$SWSTAT" get - cpu_us <<<"$(sample)")
        [ $(( ${cur:-0} - ${prev:-0} )) -lt 10000 ] && return 0
        prev=$cur
    done
    log "note: system under test still busy 10 s after the load stopped"
}

start_sink() {
    taskset -c "$LOAD_CPU" "$REL/swsink" --listen "127.0.0.1:$BACKEND_PORT" --no-tcp \
        --duration $((DURATION + 60)) >"$OUT/sink.json" 2>"$OUT/sink.err" &
    SINK_PID=$!
    local i
    for i in $(seq 30); do
        [ -n "$(ss -H -lun "sport = :$BACKEND_PORT" 2>/dev/null)" ] && return 0
        sleep 0.1
    done
    log "sink did not start: $(cat "$OUT/sink.err")"; return 1
}

stop_sink() { # prints the sink's JSON
    [ -n "$SINK_PID" ] || { echo null; return; }
    kill -TERM "$SINK_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SINK_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SINK_PID" 2>/dev/null
    wait "$SINK_PID" 2>/dev/null
    SINK_PID=""
    local s; s=$(cat "$OUT/sink.json" 2>/dev/null)
    [ -n "$s" ] && echo "$s" || echo null
}

swtls() { # ARGS... : one bounded swtls run on the load core (to TARGET_PORT, default TLS_PORT); prints its JSON (or null)
    timeout $(( ${DURATION%.*} + 40 )) taskset -c "$LOAD_CPU" "$REL/swtls" --target "127.0.0.1:${TARGET_PORT:-$TLS_PORT}" \
        --domain "$DOMAIN" "$@" 2>>"$OUT/swtls.err" || echo null
}

record() { # SYSTEM CERT TRANSPORT SCENARIO RATE LOAD SINK BEFORE AFTER [READY]
    printf '{"kind":"tls","system":"%s","label":"%s","cert":"%s","transport":"%s","scenario":"%s","rate":%s,"load":%s,"sink":%s,"before":%s,"after":%s,"ready":%s}\n' \
        "$1" "$(label_of "$1")" "$2" "$3" "$4" "$5" "${6:-null}" "${7:-null}" "${8:-null}" "${9:-null}" "${10:-null}" >> "$RESULTS"
}

over_budget() { # SECONDS_NEEDED
    if [ $(( SECONDS - START_TS - BUILD_S + $1 )) -gt "$HARD_LIMIT" ]; then
        log "not run: the ${HARD_LIMIT}s limit would be exceeded"; return 0
    fi
    return 1
}

# One connection scenario (handshake or reject) measured on the running system.
measure_connections() { # SYSTEM CERT MODE
    over_budget $(( ${DURATION%.*} + 5 )) && return
    local before after loadj
    next_src
    before=$(sample)
    loadj=$(swtls --mode "$3" --concurrency "$HS_CONCURRENCY" --duration "$DURATION" --src-base "$SRC" \
        --src-addrs "$SRC_ADDRS" --timeout 5)
    wait_quiet
    after=$(sample)
    record "$1" "$2" tls "$3" 0 "$loadj" null "$before" "$after"
    log "$1 $2 $3: $("$SWSTAT" get - outcomes <<<"$loadj")"
}

measure_idle() { # SYSTEM CERT TRANSPORT(tls|tcp)
    over_budget 60 && return
    local before after loadj ready="$OUT/idle-ready.json" i port=$TLS_PORT plain=()
    [ "$3" = tcp ] && { port=$TCP_PORT; plain=(--plain); }
    rm -f "$ready"
    # Warm-up: lazily built state (session state, worker buffers) counts in "before".
    next_src
    swtls --mode handshake --concurrency 2 --duration 1 --src-base "$SRC" --src-addrs "$SRC_ADDRS" >/dev/null
    wait_quiet
    next_src
    before=$(sample)
    taskset -c "$LOAD_CPU" "$REL/swtls" --target "127.0.0.1:$port" --domain "$DOMAIN" --mode idle "${plain[@]}" \
        --connections "$IDLE_CONNS" --concurrency "$HS_CONCURRENCY" --duration 120 --src-base "$SRC" --src-addrs "$SRC_ADDRS" \
        --ready-file "$ready" >"$OUT/idle-load.json" 2>>"$OUT/swtls.err" &
    LOAD_PID=$!
    for i in $(seq 900); do # 90 s at most to open them
        [ -s "$ready" ] && break
        kill -0 "$LOAD_PID" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1
    wait_quiet
    after=$(sample)
    kill -TERM "$LOAD_PID" 2>/dev/null
    for i in $(seq 200); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.1; done
    kill_tree "$LOAD_PID"; LOAD_PID=""
    loadj=$(cat "$OUT/idle-load.json" 2>/dev/null); [ -n "$loadj" ] || loadj=null
    local readyj; readyj=$(cat "$ready" 2>/dev/null); [ -n "$readyj" ] || readyj=null
    record "$1" "$2" "$3" idle 0 "$loadj" null "$before" "$after" "$readyj"
    log "$1 $2 $3 idle: opened $("$SWSTAT" get - opened <<<"$readyj"), PSS $("$SWSTAT" get - pss_kb_sum <<<"$before") -> $("$SWSTAT" get - pss_kb_sum <<<"$after") kB"
    wait_quiet
}

measure_forward() { # SYSTEM CERT TRANSPORT(tls|tcp) SCENARIO(forward|latency)
    over_budget $(( ${DURATION%.*} + 20 )) && return
    local rate=0 extra=() before after loadj sinkj
    [ "$4" = latency ] && rate=$LAT_RATE
    local port=$TLS_PORT
    [ "$3" = tcp ] && { extra=(--plain); port=$TCP_PORT; }
    start_sink || return
    before=$(sample)
    loadj=$(TARGET_PORT=$port swtls --mode forward --connections "$TLS_CONNS" --rate "$rate" --duration "$DURATION" \
        --src-base "$LOAD_SRC" --timeout 10 "${extra[@]}")
    wait_quiet
    after=$(sample)
    sinkj=$(stop_sink)
    record "$1" "$2" "$3" "$4" "$rate" "$loadj" "$sinkj" "$before" "$after"
    log "$1 $2 $3 $4: sent $("$SWSTAT" get - sent <<<"$loadj"), at sink $("$SWSTAT" get - received <<<"$sinkj"), p50 $("$SWSTAT" get - latency_us.p50 <<<"$sinkj") µs"
}

run_system() { # SYSTEM
    local sys=$1 cert first=1
    if [ "$sys" = sipwarden ]; then
        # The reference for memory: idle plain TCP connections (sending
        # nothing), on a fresh process of their own.
        log "=== sipwarden, idle plain TCP"
        if start_sut sipwarden "${CERTS%% *}"; then
            measure_idle sipwarden none tcp
            stop_sut
        fi
    fi
    for cert in $CERTS; do
        log "=== $(label_of "$sys"), $cert"
        start_sut "$sys" "$cert" || { printf '{"kind":"tls-skip","system":"%s","cert":"%s"}\n' "$sys" "$cert" >> "$RESULTS"; continue; }
        if [ "$first" = 1 ]; then
            # On a fresh process: memory first, before anything else grew it.
            measure_idle "$sys" "$cert" tls
        fi
        measure_connections "$sys" "$cert" handshake
        measure_connections "$sys" "$cert" reject
        measure_connections "$sys" "$cert" connect
        if [ "$first" = 1 ]; then
            measure_forward "$sys" "$cert" tls forward
            measure_forward "$sys" "$cert" tls latency
            if [ "$sys" = sipwarden ]; then
                measure_forward "$sys" none tcp forward
                measure_forward "$sys" none tcp latency
            fi
        fi
        stop_sut
        first=0
    done
}

for sys in $SYSTEMS; do run_system "$sys"; done

"$SWSTAT" tls-table "$RESULTS" --json "$OUT/summary.json" | tee "$OUT/table.md"
log "done in $(( SECONDS - START_TS )) s ($BUILD_S s of build); results: $RESULTS, table: $OUT/table.md, JSON: $OUT/summary.json"
