# Shared helpers of the sipwarden end-to-end scripts (sourced, not run).
#
# Every script: checks the tools and that its ports are free, makes a mktemp
# runtime dir, starts Kamailio (-A WITH_EDGE, the Asterisk stand-in) and
# sipwarden, runs real SIP programs against them, prints PASS/FAIL lines and
# exits non-zero when anything failed. Everything it starts is stopped by the
# EXIT trap; every wait is bounded (timeout(1) or a counted loop).
#
# Environment (all optional):
#   SIPWARDEN_BIN      the binary (default: <repo>/target/debug/sipwarden)
#   E2E_PORT_BASE      default 15060: public = BASE, internal = BASE+10,
#                      backend = BASE+20, phones = BASE+2, sipvicious source
#                      port = BASE+5, sipp control/media ports BASE+30..BASE+79,
#                      metrics = BASE+4039 (19099)
#   E2E_PUBLIC_PORT, E2E_INTERNAL_PORT, E2E_BACKEND_PORT, E2E_METRICS_PORT
#                      override one port each
#   E2E_KEEP=1         keep the runtime dir (logs, captures) even on success
#
# Traffic goes to 127.0.0.0/8 only. Never uses 5060/5070/5080 (benchmarks).

set -u

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/../.." && pwd)
SIPWARDEN=${SIPWARDEN_BIN:-$REPO/target/debug/sipwarden}
SIPP_DIR=$E2E_DIR/sipp
DOMAIN=pbx.secret.example

BASE=${E2E_PORT_BASE:-15060}
PUB=${E2E_PUBLIC_PORT:-$BASE}
INT=${E2E_INTERNAL_PORT:-$((BASE + 10))}
BE=${E2E_BACKEND_PORT:-$((BASE + 20))}
MET=${E2E_METRICS_PORT:-$((BASE + 4039))}
PHONE_PORT=$((BASE + 2))
SV_PORT=$((BASE + 5))
CP_BASE=$((BASE + 30))      # sipp -cp: CP_BASE .. CP_BASE+9 (one per sipp run, round robin)
MP_BASE=$((BASE + 40))      # sipp -mp: MP_BASE .. MP_BASE+39 (4 per sipp run)

# The phones and scanners: distinct loopback source addresses.
PHONE_IP=127.0.0.2          # registers, answers (SIPp UAS)
CALLER_IP=127.0.0.3         # calls through sipwarden
SCANNER_IP=127.0.0.4        # addresses the server by IP
PROBE_IP=127.0.0.5          # legit probes (positive controls)
UA_SCANNER_IP=127.0.0.6     # knows the domain, but has a scanner User-Agent

PASS_N=0
FAIL_N=0
PIDS=()
RUN=""
SW_PID=""
KAM_PID=""
SIPP_N=0
T0=$(date +%s.%N)

log() { printf '   %s\n' "$*"; }
pass() { echo "PASS $*"; PASS_N=$((PASS_N + 1)); }
fail() { echo "FAIL $*"; FAIL_N=$((FAIL_N + 1)); }
# check NAME CMD...: PASS when CMD exits 0.
check() {
    local name=$1; shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
die() {
    echo "ABORT: $*" >&2
    FAIL_N=$((FAIL_N + 1))
    exit 2
}

# ---------------------------------------------------------------- preflight

need_tools() {
    local missing=() t
    for t in sipp kamailio kamcmd svmap svwar svcrack sipsak tshark curl ss timeout flock; do
        command -v "$t" > /dev/null 2>&1 || missing+=("$t")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "ABORT: missing SIP lab tools: ${missing[*]}" >&2
        echo "       install them with scripts/setup.sh or .ci/run (Debian: sip-tester kamailio sipvicious sipsak tshark)" >&2
        exit 3
    fi
    [ -x "$SIPWARDEN" ] || { echo "ABORT: sipwarden binary not found at $SIPWARDEN (cargo build, or set SIPWARDEN_BIN)" >&2; exit 3; }
}

# port_users PROTO PORT: the sockets bound/listening on that port, any address.
port_users() {
    local flag=-Hlnu
    [ "$1" = tcp ] && flag=-Hlnt
    ss $flag -p 2>/dev/null | awk -v p="$2" '{ n = split($4, a, ":"); if (a[n] == p) print }'
}

need_free_ports() {
    local p busy=0 udp tcp
    for p in "$PUB" "$INT" "$BE" "$MET" "$PHONE_PORT" $((PHONE_PORT + 1)) "$SV_PORT" \
             $(seq "$CP_BASE" $((CP_BASE + 9))) $(seq "$MP_BASE" $((MP_BASE + 39))); do
        case $p in 5060|5070|5080)
            echo "ABORT: port $p is reserved for the benchmarks; choose another E2E_PORT_BASE" >&2; exit 4;;
        esac
    done
    # local ports of every bound UDP socket and listening TCP socket, once
    udp=" $(ss -Hlnu 2>/dev/null | awk '{ n = split($4, a, ":"); printf "%s ", a[n] }')"
    tcp=" $(ss -Hlnt 2>/dev/null | awk '{ n = split($4, a, ":"); printf "%s ", a[n] }')"
    for p in "$PUB" "$INT" "$BE" "$PHONE_PORT" $((PHONE_PORT + 1)) "$SV_PORT" \
             $(seq "$CP_BASE" $((CP_BASE + 9))) $(seq "$MP_BASE" $((MP_BASE + 39))); do
        case $udp in *" $p "*)
            echo "ABORT: UDP port $p is already in use: $(port_users udp "$p" | head -1)" >&2; busy=1;;
        esac
    done
    for p in "$PUB" "$BE" "$MET" "$PHONE_PORT"; do
        case $tcp in *" $p "*)
            echo "ABORT: TCP port $p is already in use: $(port_users tcp "$p" | head -1)" >&2; busy=1;;
        esac
    done
    if [ $busy = 1 ]; then
        echo "       another e2e run (or something else) holds the ports; stop it or set E2E_PORT_BASE (now $BASE)" >&2
        exit 4
    fi
}

# ---------------------------------------------------------------- lifecycle

cleanup() {
    local rc=$? p i kids=()
    trap - EXIT INT TERM
    # kamailio's worker processes, by pid, noted now: if its main process has
    # to be killed below they would survive it (reparented to init) and keep
    # the backend port bound
    if [ -n "$KAM_PID" ] && kill -0 "$KAM_PID" 2>/dev/null; then
        mapfile -t kids < <(pgrep -P "$KAM_PID" 2>/dev/null)
    fi
    # stop in reverse order: TERM, up to 3 s, then KILL
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        p=${PIDS[$i]}
        kill -TERM "$p" 2>/dev/null
    done
    for i in $(seq 30); do
        local alive=0
        for p in "${PIDS[@]}" "${kids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}" "${kids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$FAIL_N" -gt 0 ] || [ "$rc" -ne 0 ]; then
        if [ -n "$RUN" ] && [ -d "$RUN" ]; then
            echo "---- last lines of sipwarden.log ($RUN) ----"
            tail -n 25 "$RUN/sipwarden.log" 2>/dev/null
            echo "---- last lines of kamailio.log ----"
            tail -n 15 "$RUN/kamailio.log" 2>/dev/null
            echo "---- runtime dir kept: $RUN"
        fi
    elif [ -n "$RUN" ] && [ -d "$RUN" ] && [ "${E2E_KEEP:-0}" != 1 ]; then
        rm -rf "$RUN"
    fi
    [ "$rc" -eq 0 ] && [ "$FAIL_N" -gt 0 ] && rc=1
    exit "$rc"
}

# reap PID: waits for a process this script started and forgets it, so that
# the EXIT trap never signals a pid that may have been reused. Returns its status.
reap() {
    local pid=$1 rc p keep=()
    wait "$pid"; rc=$?
    for p in "${PIDS[@]}"; do [ "$p" != "$pid" ] && keep+=("$p"); done
    PIDS=("${keep[@]}")
    return $rc
}

# e2e_lock: one e2e script per port base on this machine, whoever started it
# (two `cargo test` runs at once would otherwise fight over the ports). The
# lock is an flock on /tmp/sipwarden-e2e-BASE.lock, held by this shell and
# the processes it starts, released when they are gone; waits up to 240 s.
e2e_lock() {
    exec {E2E_LOCK_FD}> "/tmp/sipwarden-e2e-$BASE.lock" || die "cannot open the lock file"
    if ! flock -n "$E2E_LOCK_FD"; then
        echo "   (another e2e run holds /tmp/sipwarden-e2e-$BASE.lock: waiting for it, at most 240 s)"
        flock -w 240 "$E2E_LOCK_FD" || die "another e2e run on port base $BASE did not finish within 240 s"
    fi
}

# setup NAME: preflight, lock, runtime dir, traps.
setup() {
    need_tools
    e2e_lock
    need_free_ports
    RUN=$(mktemp -d "/tmp/sipwarden-e2e-$1.XXXXXX") || die "mktemp failed"
    trap cleanup EXIT
    trap 'echo "interrupted"; exit 130' INT TERM
    echo "== $1 (public $PUB, internal $INT, backend $BE, metrics $MET, run dir $RUN)"
}

# finish: summary line and exit status (the EXIT trap cleans up).
finish() {
    local t
    metric_lookup_errors
    t=$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { print a - b }')
    printf '%d passed, %d failed (%.1f s)\n' "$PASS_N" "$FAIL_N" "$t"
    [ "$FAIL_N" -eq 0 ]
    exit $?
}

# wait_bound PROTO IP PORT [PID]: until something (process PID, if given)
# is bound/listening there; at most 5 s (0.1 s steps).
wait_bound() {
    local flag=-Hlnu i
    [ "$1" = tcp ] && flag=-Hlnt
    for i in $(seq 50); do
        if [ -n "${4:-}" ]; then
            ss $flag -p "sport = :$3" 2>/dev/null | grep -F "$2:$3" | grep -q "pid=$4," && return 0
            kill -0 "$4" 2>/dev/null || return 1
        else
            ss $flag "sport = :$3" 2>/dev/null | grep -qF "$2:$3" && return 0
        fi
        sleep 0.1
    done
    return 1
}

# need_free_tcp PORT...: the TCP ports a script adds to the common ones
# (need_free_ports knows those only) are free, or the script stops.
need_free_tcp() {
    local p
    for p in "$@"; do
        if ss -Hlnt "sport = :$p" 2>/dev/null | grep -q .; then
            die "TCP port $p is already in use: $(port_users tcp "$p" | head -1)"
        fi
    done
}

# add_public FILE SPEC...: appends sockets (tls:..., ws:..., wss:...) to the
# listen.public list write_config wrote.
add_public() {
    local f=$1 list="" spec; shift
    for spec in "$@"; do list="$list, \"$spec\""; done
    sed -i "s|^public = \[\(.*\)\]|public = [\1$list]|" "$f"
}

# wildcard_cert CN NAME: a self-signed ECDSA P-256 certificate for
# *.secret.example (the parent of the secret domain, as docs/tls.md
# advises) with that CN, made here: $RUN/NAME.pem and $RUN/NAME.key.
wildcard_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/CN=$1" -addext "subjectAltName=DNS:*.secret.example" \
        -keyout "$RUN/$2.key" -out "$RUN/$2.pem" >> "$RUN/openssl-req.log" 2>&1 \
        || die "openssl could not make the test certificate: $(tail -3 "$RUN/openssl-req.log")"
}

# ---------------------------------------------------------------- kamailio

# The Asterisk stand-in, generated from tests/e2e/kamailio.cfg with this
# run's ports and runtime dir (only the substdef lines change).
# start_kamailio [DEFINE...]: extra -A defines besides WITH_EDGE (e.g. WITH_AUTH).
start_kamailio() {
    local defs=(-A WITH_EDGE) d
    for d in "$@"; do defs+=(-A "$d"); done
    sed -e "s|^#!substdef \"!PBX_PORT!.*|#!substdef \"!PBX_PORT!$BE!g\"|" \
        -e "s|^#!substdef \"!EDGE_OUTBOUND!.*|#!substdef \"!EDGE_OUTBOUND!127.0.0.1:$INT!g\"|" \
        -e "s|^#!substdef \"!RUN_DIR!.*|#!substdef \"!RUN_DIR!$RUN!g\"|" \
        "$E2E_DIR/kamailio.cfg" > "$RUN/kamailio.cfg"
    timeout 10 kamailio -c -f "$RUN/kamailio.cfg" "${defs[@]}" > "$RUN/kamailio-check.log" 2>&1 \
        || { cat "$RUN/kamailio-check.log"; die "kamailio -c rejected the generated config"; }
    kamailio -f "$RUN/kamailio.cfg" "${defs[@]}" -DD -E -m 256 -M 16 > "$RUN/kamailio.log" 2>&1 &
    KAM_PID=$!
    PIDS+=("$KAM_PID")
    # (the UDP sockets are shared by every kamailio process, the TCP listener by its tcp main only)
    wait_bound udp 127.0.0.1 "$BE" "$KAM_PID" && wait_bound tcp 127.0.0.1 "$BE" \
        || die "kamailio did not bind 127.0.0.1:$BE (see $RUN/kamailio.log)"
}

# ---------------------------------------------------------------- sipwarden

# write_config FILE DOMAIN...: the test config (listen on loopback only).
write_config() {
    local f=$1 d list=""; shift
    for d in "$@"; do list="$list${list:+, }\"$d\""; done
    cat > "$f" <<EOF
# sipwarden e2e config (generated by tests/e2e/lib.sh)
[listen]
public = ["udp:127.0.0.1:$PUB", "tcp:127.0.0.1:$PUB"]
internal = "udp:127.0.0.1:$INT"
advertise = "127.0.0.1:$PUB"

[backend]
address = "udp:127.0.0.1:$BE"

[filter]
domains = [$list]

[limits]
# the load of the reload test (20 calls/s from one phone) stays far below these
rate = 2000
burst = 4000
register_rate = 200
register_burst = 400

[secret]
key_file = "$RUN/secret"

[control]
socket = "$RUN/control.sock"

[metrics]
listen = "127.0.0.1:$MET"

[log]
level = "info"
drop_rate = 1000
EOF
}

start_sipwarden() {
    [ -f "$RUN/sipwarden.toml" ] || write_config "$RUN/sipwarden.toml" "$DOMAIN"
    NO_COLOR=1 "$SIPWARDEN" --config "$RUN/sipwarden.toml" >> "$RUN/sipwarden.log" 2>&1 &
    SW_PID=$!
    PIDS+=("$SW_PID")
    if ! { wait_bound udp 127.0.0.1 "$PUB" "$SW_PID" && wait_bound tcp 127.0.0.1 "$PUB" "$SW_PID" \
           && wait_bound udp 127.0.0.1 "$INT" "$SW_PID" && wait_bound tcp 127.0.0.1 "$MET" "$SW_PID"; }; then
        kill -0 "$SW_PID" 2>/dev/null || log "sipwarden exited: $(tail -n 5 "$RUN/sipwarden.log")"
        die "sipwarden did not bind its sockets (public $PUB udp+tcp, internal $INT, metrics $MET)"
    fi
}

# stop_sipwarden: SIGTERM must end it with exit status 0 within 5 s.
stop_sipwarden() {
    local rc i
    kill -TERM "$SW_PID" 2>/dev/null
    for i in $(seq 50); do kill -0 "$SW_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SW_PID" 2>/dev/null; then
        fail "sipwarden exits on SIGTERM (still running after 5 s)"
        return
    fi
    reap "$SW_PID"; rc=$?
    check "sipwarden exits 0 on SIGTERM (status $rc)" [ "$rc" -eq 0 ]
}

sipwarden_alive() { kill -0 "$SW_PID" 2>/dev/null; }

# metrics_dump FILE: the Prometheus text.
metrics_dump() {
    timeout 5 curl -sf "http://127.0.0.1:$MET/metrics" > "$1"
}

# What /metrics holds (src/metrics.rs, render): every event counter
# (sipwarden_bans_total, sipwarden_reloads_total{result="ok"}, ...) and every
# gauge from the start, but a sample of
# sipwarden_messages_total{side,transport,reason,disposition} only once it is
# above 0. Hence two kinds of lookup, both loud when misused:
#
#   sample, gauge, metric: the sample must be in the dump. When it is not (a
#     misspelt name or label, a failed scrape) the lookup writes a "FAIL
#     metric lookup" line to stderr, prints no value, returns 1 and records
#     the failure in $RUN/metric-errors, which `finish` counts as failed
#     checks (a lookup inside $(...) cannot count a failure itself).
#   metric_or_zero, metric_sum, metric_delta, metric_total: a messages_total
#     sample that is absent because it was never incremented counts as 0, but
#     only in a real dump and only for label values sipwarden has (read from
#     the core's source, sipwarden-core/src), so a misspelt reason
#     fails the same way.

# metric_error MESSAGE: a failed lookup (see above); returns 1.
metric_error() {
    echo "FAIL metric lookup: $*" >&2
    if [ -n "$RUN" ] && [ -d "$RUN" ]; then echo "$*" >> "$RUN/metric-errors"; fi
    return 1
}

# metrics_valid FILE: FILE is a scrape of sipwarden's endpoint (not empty, not
# an error page): it has the messages_total family and the event counters.
metrics_valid() {
    grep -q '^# TYPE sipwarden_messages_total counter$' "$1" 2>/dev/null \
        && grep -q '^sipwarden_send_errors_total ' "$1" \
        || metric_error "$1 is not a sipwarden metrics dump (did the scrape fail?)"
}

# sample FILE SERIES: the value of SERIES, a name with its labels exactly as
# sipwarden writes them (sipwarden_reloads_total{result="ok"}); strict.
sample() {
    local v n
    metrics_valid "$1" || return 1
    v=$(awk -v s="$2" '$1 == s {print $2}' "$1")
    n=$(printf '%s' "$v" | grep -c .)
    [ "$n" -eq 1 ] || { metric_error "no sample $2 in $1 ($n found)"; return 1; }
    echo "$v"
}

# gauge FILE NAME: an unlabelled metric (a gauge, or an event counter such
# as sipwarden_bans_total); strict: sipwarden always writes them.
gauge() { sample "$1" "$2"; }

# known_label KIND VALUE: VALUE is a label value sipwarden writes for KIND
# (Side, Transport, Reason, Disposition: the enum's as_str arms).
known_label() {
    local vals
    vals=$(grep -rohE --include='*.rs' "$1::[A-Za-z]+ => \"[a-z-]+\"" "$REPO/sipwarden-core/src" 2>/dev/null \
        | sed -E 's/.*"([a-z-]+)"$/\1/' | sort -u)
    [ -n "$vals" ] || { metric_error "cannot read the $1 label values from sipwarden-core/src"; return 1; }
    grep -qxF -- "$2" <<< "$vals" \
        || { metric_error "$1 \"$2\" is not a label value of sipwarden_messages_total (it has: $(echo $vals))"; return 1; }
}

# messages_labels SIDE TRANSPORT REASON DISPOSITION: each one a known label value.
messages_labels() {
    known_label Side "$1" && known_label Transport "$2" && known_label Reason "$3" && known_label Disposition "$4"
}

# metric FILE SIDE TRANSPORT REASON DISPOSITION: one sipwarden_messages_total
# sample; strict (use metric_or_zero where it may not have been counted yet).
metric() {
    messages_labels "$2" "$3" "$4" "$5" || return 1
    sample "$1" "sipwarden_messages_total{side=\"$2\",transport=\"$3\",reason=\"$4\",disposition=\"$5\"}"
}

# metric_or_zero FILE SIDE TRANSPORT REASON DISPOSITION: the same, 0 when
# absent (never incremented); unknown labels and a bad dump still fail.
metric_or_zero() {
    messages_labels "$2" "$3" "$4" "$5" && metrics_valid "$1" || return 1
    awk -v s="sipwarden_messages_total{side=\"$2\",transport=\"$3\",reason=\"$4\",disposition=\"$5\"}" \
        '$1 == s {v += $2} END {print v + 0}' "$1"
}

# metric_sum FILE REASON DISPOSITION: summed over sides and transports
# (absent samples count 0; unknown labels and a bad dump fail).
metric_sum() {
    known_label Reason "$2" && known_label Disposition "$3" && metrics_valid "$1" || return 1
    grep -F "reason=\"$2\",disposition=\"$3\"} " "$1" | grep '^sipwarden_messages_total{' \
        | awk '{s += $2} END {print s + 0}'
}

# metric_total FILE DISPOSITION [SIDE]: every messages_total sample with that
# disposition (and side), whatever the reason: sums that no list of reasons
# can miss a new one in.
metric_total() {
    known_label Disposition "$2" && { [ -z "${3:-}" ] || known_label Side "$3"; } && metrics_valid "$1" || return 1
    grep '^sipwarden_messages_total{' "$1" | grep -F "disposition=\"$2\"} " | grep -F "side=\"${3:-}" \
        | awk '{s += $2} END {print s + 0}'
}

# metric_lookup_errors: the failed lookups recorded so far become failed
# checks (called by finish).
metric_lookup_errors() {
    local l
    [ -n "$RUN" ] && [ -s "$RUN/metric-errors" ] || return 0
    while IFS= read -r l; do fail "metric lookup: $l"; done < "$RUN/metric-errors"
    : > "$RUN/metric-errors"
}

# ---------------------------------------------------------------- kamailio's counters
# Kamailio's own statistics (kex/corex: core:rcv_requests counts every
# request it received, retransmissions too), read with kamcmd: proof that a
# request did or did not reach the backend that does not depend on what
# kamailio happens to log.

# kam_stats FILE: all of kamailio's statistics ("group:name = value" lines).
kam_stats() {
    timeout 5 kamcmd -s "unix:$RUN/kamailio_ctl" stats.get_statistics all > "$1" 2>&1 \
        || metric_error "kamcmd stats.get_statistics failed: $(head -c 200 "$1")"
}

# kam_stat FILE NAME: one statistic (core:rcv_requests); strict.
kam_stat() {
    local v n
    v=$(awk -v s="$2" '$1 == s && $2 == "=" {print $3}' "$1" 2>/dev/null)
    n=$(printf '%s' "$v" | grep -c .)
    [ "$n" -eq 1 ] || { metric_error "no kamailio statistic $2 in $1 ($n found)"; return 1; }
    echo "$v"
}

# kam_delta NEW OLD NAME: kam_stat NEW - kam_stat OLD (no value when either fails).
kam_delta() {
    local a b
    a=$(kam_stat "$1" "$3") && b=$(kam_stat "$2" "$3") || return 1
    echo $((a - b))
}

# ---------------------------------------------------------------- sipp

# sipp_run NAME SECONDS ARGS...: one SIPp run in the foreground, bounded,
# with its own control and media ports; output in $RUN/NAME.out, the
# message trace in $RUN/NAME.msg. Returns sipp's exit status.
sipp_run() {
    local name=$1 secs=$2; shift 2
    local k=$((SIPP_N % 10)); SIPP_N=$((SIPP_N + 1))
    (cd "$RUN" && timeout -k 2 "$secs" sipp "$@" -nostdin -cp $((CP_BASE + k)) -mp $((MP_BASE + 4 * k)) \
        -trace_msg -message_file "$RUN/$name.msg" -trace_err -error_file "$RUN/$name.err" \
        > "$RUN/$name.out" 2>&1)
}

# sipp_bg NAME SECONDS ARGS...: the same in the background; the pid is in
# $BG_PID (to wait for).
sipp_bg() {
    local name=$1 secs=$2; shift 2
    local k=$((SIPP_N % 10)); SIPP_N=$((SIPP_N + 1))
    (cd "$RUN" && exec timeout -k 2 "$secs" sipp "$@" -nostdin -cp $((CP_BASE + k)) -mp $((MP_BASE + 4 * k)) \
        -trace_msg -message_file "$RUN/$name.msg" -trace_err -error_file "$RUN/$name.err" \
        > "$RUN/$name.out" 2>&1) &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

# sipp_stat NAME "Successful call"|"Failed call"|"Retransmissions": the
# cumulative count from the final statistics screen.
sipp_stat() {
    grep -a "$2" "$RUN/$1.out" | tail -1 | awk -F'|' '{gsub(/ /, "", $3); print $3}'
}

# sipp_calls_ok NAME N: sipp said N successful and 0 failed calls.
sipp_calls_ok() {
    local ok failed
    ok=$(sipp_stat "$1" "Successful call")
    failed=$(sipp_stat "$1" "Failed call")
    log "$1: successful=${ok:-?} failed=${failed:-?}"
    [ "${ok:-x}" = "$2" ] && [ "${failed:-x}" = 0 ]
}

# show_sipp NAME: the tail of a failed run, for the report.
show_sipp() {
    log "---- $1.out (tail) ----"
    grep -a -v '^\s*$' "$RUN/$1.out" 2>/dev/null | tail -n 12 | sed 's/^/   | /'
    if [ -s "$RUN/$1.err" ]; then
        log "---- $1.err (tail) ----"
        # (SIPp's error file has no final newline: awk adds it)
        tail -n 15 "$RUN/$1.err" | awk '{print "   | " $0}'
    fi
}

# expect_sipp NAME DESCRIPTION ARGS...: run sipp, PASS on exit status 0.
expect_sipp() {
    local name=$1 desc=$2 rc; shift 2
    sipp_run "$name" 30 "$@"; rc=$?
    if [ $rc -eq 0 ]; then pass "$desc"; else fail "$desc (sipp exit $rc)"; show_sipp "$name"; fi
    return $rc
}

# silent_scenario METHOD: path of a copy of sipp/silent.xml for that method.
silent_scenario() {
    sed "s/METHOD/$1/g" "$SIPP_DIR/silent.xml" > "$RUN/silent-$1.xml"
    echo "$RUN/silent-$1.xml"
}

# ---------------------------------------------------------------- tshark

# capture_start NAME FILTER: dumpcap (tshark's capture engine; it is ready in
# well under 0.1 s where tshark takes 1-2 s to load its dissectors) or else
# wait_match PATTERN FILE [PID]: until FILE has a line matching the basic
# regexp PATTERN (at most 10 s); gives up early once PID has exited.
wait_match() {
    local i
    for i in $(seq 100); do
        grep -qa "$1" "$2" 2>/dev/null && return 0
        [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && return 1
        sleep 0.1
    done
    return 1
}

# tshark on lo, into $RUN/NAME.pcap; waits until it really captures (bounded).
capture_start() {
    local name=$1 filter=$2 cap=tshark
    command -v dumpcap > /dev/null 2>&1 && cap=dumpcap
    timeout -s INT 120 "$cap" -i lo -f "$filter" -w "$RUN/$name.pcap" -q > "$RUN/$name.tshark.log" 2>&1 &
    CAP_PID=$!
    PIDS+=("$CAP_PID")
    wait_match "Capturing on" "$RUN/$name.tshark.log" "$CAP_PID" && { sleep 0.3; return 0; }
    cat "$RUN/$name.tshark.log" >&2
    die "tshark did not start capturing"
}

# capture_stop: ends the last capture (SIGINT, bounded) and waits for it.
capture_stop() {
    local i
    sleep 0.5
    kill -INT "$CAP_PID" 2>/dev/null
    for i in $(seq 50); do kill -0 "$CAP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CAP_PID" 2>/dev/null
    reap "$CAP_PID" 2>/dev/null
    return 0
}

# capture_sip NAME: one line per SIP message: src, dst, dstport, first line, Call-ID, User-Agent.
capture_sip() {
    timeout 30 tshark -r "$RUN/$1.pcap" -Y sip -T fields -E separator='|' \
        -e ip.src -e ip.dst -e udp.dstport -e tcp.dstport -e sip.Request-Line -e sip.Status-Line \
        -e sip.Call-ID -e sip.User-Agent 2>/dev/null
}

# ---------------------------------------------------------------- more helpers
# (added for trunk.sh, restart.sh, nat.sh, dialog.sh, defence.sh)

# Source addresses of the roles those scripts add.
PROVIDER_IP=127.0.0.3       # trunk provider: registrar and its INVITEs (trunk.sh, restart.sh)
FLOOD_IP=127.0.0.5          # one source flooding OPTIONS (defence.sh)
NAT_PRIVATE_IP=127.0.0.99   # the private address a NATed phone puts in its Contact (nothing listens)

# metric_delta NEW OLD REASON DISPOSITION: metric_sum NEW - metric_sum OLD.
# (no value when either lookup fails).
metric_delta() {
    local a b
    a=$(metric_sum "$1" "$3" "$4") && b=$(metric_sum "$2" "$3" "$4") || return 1
    echo $((a - b))
}

# wait_log_n PATTERN COUNT [SECONDS]: until sipwarden.log has COUNT lines
# matching the ERE PATTERN (default at most 5 s).
wait_log_n() {
    local i n=$(( ${3:-5} * 10 ))
    for i in $(seq "$n"); do
        [ "$(grep -cE "$1" "$RUN/sipwarden.log" 2>/dev/null)" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}

# kill_sipwarden: SIGKILL (a crash, no state flush) and reap it. Returns the
# status it ended with: 137 (128 + 9) when the SIGKILL ended it.
kill_sipwarden() {
    local rc
    kill -KILL "$SW_PID" 2>/dev/null
    reap "$SW_PID" 2>/dev/null; rc=$?
    SW_PID=""
    return $rc
}

# expect_bg NAME DESCRIPTION PID: reaps a background sipp (sipp_bg), PASS on exit 0.
expect_bg() {
    local rc
    reap "$3"; rc=$?
    if [ $rc -eq 0 ]; then pass "$2"; else fail "$2 (sipp exit $rc)"; show_sipp "$1"; fi
    return $rc
}

# sipp_requests NAME METHOD: the requests of METHOD a sipp run received
# (from its message trace), one block per message, headers only.
sipp_requests() {
    awk -v m="$2" '/^(UDP|TCP) message received/ {rx = 1; next}
                   /^(UDP|TCP) message sent/ {rx = 0; next}
                   rx && $0 ~ "^" m " " {p = 1; print "----"}
                   p && /^\r?$/ {p = 0}
                   p' "$RUN/$1.msg" | tr -d '\r'
}

# ---------------------------------------------------------------- trunks
# The provider's registrar and INVITEs on 127.0.0.3, "Asterisk" sending its
# trunk REGISTER from 127.0.0.1:BACKEND to the internal socket, as Asterisk
# 22 sends it (docs/asterisk.md). Call trunk_transport udp|tcp first (sets T, TP, REG_URI).
TRUNK_ACCOUNT=acct
TRUNK_LINE=xyz
TRUNK_DID=+4930123
TRUNK_CONTACT="sip:$TRUNK_ACCOUNT@127.0.0.1:$BE;line=$TRUNK_LINE"   # Asterisk's own Contact
REG_PORT=$PHONE_PORT            # the registrar on 127.0.0.3
PROV_PORT=$((PHONE_PORT + 1))   # the provider's INVITEs from 127.0.0.3

trunk_transport() {
    case $1 in
        udp) T="-t u1"; TP=UDP; REG_URI="$PROVIDER_IP:$REG_PORT"; CT_TRANSPORT="" ;;
        # Registered over TCP, the Contact says so (RFC 3263: the provider
        # calls back over TCP).
        tcp) T="-t t1"; TP=TCP; REG_URI="$PROVIDER_IP:$REG_PORT;transport=tcp"; CT_TRANSPORT=";transport=tcp" ;;
    esac
}

# trunk_config FILE: appends the provider's [[trunk]] table (no allow CIDRs:
# it is admitted only while registered).
trunk_config() {
    cat >> "$1" <<EOT

[[trunk]]
name = "provider1"
registrar = "$PROVIDER_IP"
EOT
}

# trunk_register NAME GRANT EXPIRES DESCRIPTION: the registrar (for one
# REGISTER exchange, granting GRANT s) and Asterisk's REGISTER asking EXPIRES
# (0 = unregister, with -au/-ap for the 401); both must succeed. The Contact
# the registrar stored is then in $TRUNK_REGISTERED. "Asterisk" sends from
# 127.0.0.1:$ASTERISK_PORT when set (a script whose Kamailio holds the
# backend port), else from the backend port.
trunk_register() {
    local name=$1 grant=$2 expires=$3 desc=$4 pid
    sipp_bg "registrar-$name" 20 -sf "$SIPP_DIR/registrar.xml" -m 1 -i "$PROVIDER_IP" -p "$REG_PORT" $T \
        -key grant "$grant" -key header_expires 3600 -trace_logs -log_file "$RUN/registrar-$name.log"
    pid=$BG_PID
    if [ "$TP" = TCP ]; then wait_bound tcp "$PROVIDER_IP" "$REG_PORT"; else wait_bound udp "$PROVIDER_IP" "$REG_PORT"; fi \
        || fail "the registrar did not bind $PROVIDER_IP:$REG_PORT"
    expect_sipp "asterisk-$name" "$TP: $desc" "127.0.0.1:$INT" -sf "$SIPP_DIR/asterisk_register.xml" -m 1 \
        -i 127.0.0.1 -p "${ASTERISK_PORT:-$BE}" -key registrar_uri "$REG_URI" -key registrar_host "$PROVIDER_IP" \
        -key account "$TRUNK_ACCOUNT" -key line "$TRUNK_LINE" -key contact_port "$BE" \
        -key internal "127.0.0.1:$INT" -key expires "$expires" -au "$TRUNK_ACCOUNT" -ap provider-pw \
        -cid_str "e2e-asterisk-$name-%u-%p"
    expect_bg "registrar-$name" "$TP: the registrar got the REGISTER, challenged it (401), and the retry's Contact carried ;sw= and ;line= (ereg check)" "$pid"
    TRUNK_REGISTERED=$(sed -n 's/^.*contact=\([^ ]*\) end.*$/\1/p' "$RUN/registrar-$name.log" 2>/dev/null | tail -1)
}

# trunk_invite NAME RURI FROM-IP DESCRIPTION: a provider INVITE (trunk_invite.xml)
# that must be answered 200 and ended with BYE.
trunk_invite() {
    expect_sipp "$1" "$4" "127.0.0.1:$PUB" -sf "$SIPP_DIR/trunk_invite.xml" -m 1 $T \
        -i "$3" -p "$PROV_PORT" -key ruri "$2" -key did "$TRUNK_DID" -cid_str "e2e-$1-%u-%p"
}

# trunk_silent_bg NAME RURI FROM-IP PORT: the same INVITE in the background;
# it must get no answer at all (trunk_invite_silent.xml). Reap with silent_wait.
SILENT=()
trunk_silent_bg() {
    sipp_bg "$1" 20 "127.0.0.1:$PUB" -sf "$SIPP_DIR/trunk_invite_silent.xml" -m 1 $T \
        -i "$3" -p "$4" -key ruri "$2" -key did "$TRUNK_DID" -cid_str "e2e-$1-%u-%p"
    SILENT+=("$1:$BG_PID")
}
# silent_wait DESCRIPTION...: reaps the *_silent_bg runs in start order, one
# description each (PASS when the run exited 0, i.e. got no answer).
silent_wait() {
    local e name pid
    for e in "${SILENT[@]}"; do
        name=${e%%:*}; pid=${e##*:}
        expect_bg "$name" "$1" "$pid"
        shift
    done
    SILENT=()
}
