#!/usr/bin/env bash
# bench/callgrind.sh — instructions per message in sipwarden's UDP workers,
# counted by valgrind's callgrind on the running proxy: stable on a noisy
# machine, where times are not (BENCHMARKS.md quotes these counts).
#
#   bench/callgrind.sh [SCENARIO...]     # default: flood forward
#
# For each scenario: sipwarden (release build, the benchmark's config) runs
# under callgrind, swload sends N=15000 messages at 3,000 msgs/s (a receive
# then holds one or two datagrams, so per-receive work is in every
# message), swsink counts what is forwarded. Prints two figures per
# scenario: all instructions of the public UDP worker threads per message,
# and those inside Core::handle (the sans-IO core: the same for a given
# message whatever the batching, so the steadier of the two).
#
# Needs valgrind (apt-get install valgrind) and the binaries of
# `cargo build --release` and `cargo build --release --manifest-path
# tools/swbench/Cargo.toml` (bench/run.sh builds both). Uses the benchmark's
# ports (UDP 5060, 5070, 5080) on 127.0.0.1 and checks first that they are
# free. Bounded: each scenario takes ~15 s.
#
# PORT=N moves the three ports to N, N+10, N+20 (to run beside other
# benchmarks). CLUSTER_REDIS=redis://127.0.0.1:PORT adds a [cluster] with
# that Redis (started by the caller), to count what the cluster costs the
# message path (BENCHMARKS.md, "Cluster").

set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REL=${CARGO_TARGET_DIR:-$ROOT/target}/release
BIN=${SIPWARDEN_BIN:-$REL/sipwarden}
N=${N:-15000}
RATE=3000
SCENARIOS=("$@")
P_PUB=${PORT:-5060}; P_INT=$((P_PUB + 10)); P_BE=$((P_PUB + 20))
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(flood forward)

die() { echo "bench/callgrind.sh: $*" >&2; exit 1; }
command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"
command -v callgrind_annotate >/dev/null || die "callgrind_annotate not found (package valgrind)"
for b in "$BIN" "$REL/swload" "$REL/swsink"; do
    [ -x "$b" ] || die "$b not built (cargo build --release; and --manifest-path tools/swbench/Cargo.toml)"
done
for p in $P_PUB $P_INT $P_BE; do
    [ -z "$(ss -Hlnu "sport = :$p" 2>/dev/null)" ] || die "udp port $p is in use"
done

OUT=$(mktemp -d /tmp/swcallgrind.XXXXXX)
cat > "$OUT/sipwarden.toml" <<EOF
[listen]
public = ["udp:127.0.0.1:$P_PUB"]
internal = "udp:127.0.0.1:$P_INT"
advertise = "127.0.0.1:$P_PUB"
[backend]
address = "udp:127.0.0.1:$P_BE"
[filter]
domains = ["pbx.secret.example"]
[secret]
key_file = "$OUT/key"   # generated at the first start
[control]
socket = "$OUT/control.sock"
[log]
level = "warn"
[allow]
cidrs = ["127.0.0.0/8"]
EOF
if [ -n "${CLUSTER_REDIS:-}" ]; then
    printf '[cluster]\nredis = "%s"\nname = "callgrind"\n' "$CLUSTER_REDIS" >> "$OUT/sipwarden.toml"
fi

# sum_of FILES...: total instructions of the threads that ran the core, and
# those inside Core::handle(_with).
sum_of() {
    local all=0 core=0 f v
    for f in "$@"; do
        grep -q 'Core::handle' "$f" || continue
        v=$(grep -m1 '^summary' "$f" | awk '{print $2}')
        all=$((all + v))
        v=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null \
            | grep -E 'Core::handle(_with)? \[' | head -1 | awk '{gsub(",", "", $1); print $1}')
        core=$((core + ${v:-0}))
    done
    echo "$all $core"
}

for scen in "${SCENARIOS[@]}"; do
    d="$OUT/$scen"; mkdir -p "$d"
    timeout 120 valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$d/cg.out" \
        "$BIN" --config "$OUT/sipwarden.toml" > "$d/valgrind.log" 2>&1 &
    vg=$!
    for i in $(seq 100); do
        ss -Hlnu "sport = :$P_PUB" 2>/dev/null | grep -q . && break
        kill -0 "$vg" 2>/dev/null || die "sipwarden exited: $(tail -n 3 "$d/valgrind.log")"
        sleep 0.1
    done
    timeout 60 "$REL/swsink" --listen 127.0.0.1:$P_BE --duration 40 > "$d/sink.json" 2>/dev/null &
    sink=$!
    sleep 0.3
    timeout 60 "$REL/swload" --scenario "$scen" --target 127.0.0.1:$P_PUB --rate "$RATE" \
        --duration $((N / RATE)) --max-count "$N" --domain pbx.secret.example \
        --src-addrs 4 --src-ports 2 > "$d/load.json" 2>/dev/null
    sleep 1
    kill -TERM "$sink" 2>/dev/null; wait "$sink" 2>/dev/null
    kill -INT "$vg" 2>/dev/null
    for i in $(seq 100); do kill -0 "$vg" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$vg" 2>/dev/null; wait "$vg" 2>/dev/null
    read -r all core < <(sum_of "$d"/cg.out-*)
    echo "$scen: $((all / N)) instructions per message in the UDP workers, $((core / N)) in Core::handle ($d)"
done
