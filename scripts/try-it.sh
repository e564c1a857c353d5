#!/usr/bin/env bash
# See sipwarden work in under a minute, on loopback only:
#
#   - Kamailio (tests/e2e/kamailio.cfg -A WITH_EDGE) stands in for Asterisk
#     behind sipwarden;
#   - a SIPp phone registers with the secret domain: forwarded, 200 OK;
#   - svmap, the classic SIP scanner, and a SIPp request by IP probe
#     sipwarden: nothing answers; the same svmap aimed straight at the PBX
#     finds it;
#   - prints what sipwarden logged and its counters from /metrics, then
#     stops everything it started.
#
# Needs the programs of scripts/setup.sh (sipp, kamailio, svmap, curl, ss)
# and a built sipwarden: target/release/sipwarden, built with
# `cargo build --release` when missing (or SIPWARDEN_BIN=path).
#
# Ports: eleven consecutive ones from TRY_PORT_BASE, or else from a free
# base it finds between 20000 and 30000 (never 5060/5070/5080).
# TRY_KEEP=1 keeps the runtime directory (configs, logs); it is kept
# anyway when something failed, and its path printed.

set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOMAIN=pbx.try-it.example
PHONE_IP=127.0.0.2
SCANNER_IP=127.0.0.7
PROBE_IP=127.0.0.4
RUN=""
PIDS=()
KAM_PID=""

say() { printf '%s\n' "$*"; }
die() {
    printf 'try-it: %s\n' "$*" >&2
    exit 1
}

cleanup() {
    local rc=$? p i alive kids=()
    trap - EXIT INT TERM
    # Kamailio's children, noted before its main process goes.
    [ -n "$KAM_PID" ] && mapfile -t kids < <(pgrep -P "$KAM_PID" 2>/dev/null)
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for i in $(seq 30); do
        alive=0
        for p in "${PIDS[@]}" "${kids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}" "${kids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ -n "$RUN" ] && [ -d "$RUN" ]; then
        # kept when something failed (not when interrupted), to look into
        if { [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ]; } || [ "${TRY_KEEP:-0}" = 1 ]; then
            say "(runtime directory kept: $RUN)"
        else
            rm -rf "$RUN"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ preflight
missing=()
for t in sipp kamailio svmap curl ss timeout; do
    command -v "$t" > /dev/null 2>&1 || missing+=("$t")
done
[ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run scripts/setup.sh first (as root, Debian 12)"

SIPWARDEN=${SIPWARDEN_BIN:-$REPO/target/release/sipwarden}
if [ ! -x "$SIPWARDEN" ]; then
    [ -n "${SIPWARDEN_BIN:-}" ] && die "SIPWARDEN_BIN=$SIPWARDEN is not an executable"
    command -v cargo > /dev/null 2>&1 || die "no $SIPWARDEN and no cargo to build it"
    say "No $SIPWARDEN yet: building it (cargo build --release, a few minutes once)..."
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
fi

# ------------------------------------------------------------ ports
# busy PORT...: true when any is bound (UDP) or listening (TCP) anywhere.
busy() {
    local used p
    used=" $(ss -Hlnu 2>/dev/null | awk '{ n = split($4, a, ":"); printf "%s ", a[n] }')"
    used+=" $(ss -Hlnt 2>/dev/null | awk '{ n = split($4, a, ":"); printf "%s ", a[n] }')"
    for p in "$@"; do
        case $p in 5060|5070|5080) return 0;; esac
        case $used in *" $p "*) return 0;; esac
    done
    return 1
}
if [ -n "${TRY_PORT_BASE:-}" ]; then
    BASE=$TRY_PORT_BASE
    busy $(seq "$BASE" $((BASE + 10))) && die "a port in $BASE-$((BASE + 10)) is in use (TRY_PORT_BASE)"
else
    BASE=""
    for i in $(seq 20); do
        b=$((20000 + (RANDOM % 500) * 20))
        if ! busy $(seq "$b" $((b + 10))); then BASE=$b; break; fi
    done
    [ -n "$BASE" ] || die "found no eleven free ports between 20000 and 30000"
fi
PUB=$BASE INT=$((BASE + 1)) BE=$((BASE + 2)) MET=$((BASE + 3))
PHONE_PORT=$((BASE + 4)) SV_PORT=$((BASE + 5)) SIPP_CP=$((BASE + 6)) SIPP_MP=$((BASE + 7))

RUN=$(mktemp -d /tmp/sipwarden-try-it.XXXXXX) || die "mktemp failed"

# wait_udp PORT PID / wait_tcp PORT PID: until PID has bound it (5 s at most).
wait_bound() {
    local flag=$1 port=$2 pid=$3 i
    for i in $(seq 50); do
        ss "$flag" -p "sport = :$port" 2>/dev/null | grep -q "pid=$pid," && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ------------------------------------------------------------ the PBX
sed -e "s|^#!substdef \"!PBX_PORT!.*|#!substdef \"!PBX_PORT!$BE!g\"|" \
    -e "s|^#!substdef \"!EDGE_OUTBOUND!.*|#!substdef \"!EDGE_OUTBOUND!127.0.0.1:$INT!g\"|" \
    -e "s|^#!substdef \"!RUN_DIR!.*|#!substdef \"!RUN_DIR!$RUN!g\"|" \
    "$REPO/tests/e2e/kamailio.cfg" > "$RUN/kamailio.cfg"
kamailio -f "$RUN/kamailio.cfg" -A WITH_EDGE -DD -E -m 64 -M 8 > "$RUN/kamailio.log" 2>&1 &
KAM_PID=$!
PIDS+=("$KAM_PID")
wait_bound -Hlnu "$BE" "$KAM_PID" || die "Kamailio did not start (see $RUN/kamailio.log)"

# ------------------------------------------------------------ sipwarden
cat > "$RUN/sipwarden.toml" <<EOF
# written by scripts/try-it.sh
[listen]
public = ["udp:127.0.0.1:$PUB", "tcp:127.0.0.1:$PUB"]
internal = "udp:127.0.0.1:$INT"
advertise = "127.0.0.1:$PUB"
workers = 1

[backend]
address = "udp:127.0.0.1:$BE"

[filter]
domains = ["$DOMAIN"]

[secret]
key_file = "$RUN/secret"

[control]
socket = "$RUN/control.sock"

[metrics]
listen = "127.0.0.1:$MET"
summary_interval = "0s"
EOF
NO_COLOR=1 "$SIPWARDEN" --config "$RUN/sipwarden.toml" > "$RUN/sipwarden.log" 2>&1 &
SW_PID=$!
PIDS+=("$SW_PID")
wait_bound -Hlnu "$PUB" "$SW_PID" && wait_bound -Hlnt "$MET" "$SW_PID" \
    || die "sipwarden did not start: $(tail -n 3 "$RUN/sipwarden.log")"

say "sipwarden $("$SIPWARDEN" --version | awk '{print $2}') on 127.0.0.1:$PUB (UDP+TCP) in front of Kamailio as the PBX"
say "on 127.0.0.1:$BE; secret domain $DOMAIN."
say ""

# ------------------------------------------------------------ 1. a phone
say "1. A phone (SIPp, from $PHONE_IP) registers as 1001@$DOMAIN:"
(cd "$RUN" && timeout -k 2 15 sipp "127.0.0.1:$PUB" -sf "$REPO/tests/e2e/sipp/register_uac.xml" \
    -s 1001 -key domain "$DOMAIN" -key contact_port "$PHONE_PORT" -i "$PHONE_IP" -p "$PHONE_PORT" \
    -m 1 -nostdin -cp "$SIPP_CP" -mp "$SIPP_MP" -trace_msg -message_file "$RUN/phone.msg" \
    > "$RUN/phone.out" 2>&1)
rc=$?
if [ $rc -eq 0 ] && grep -q '^SIP/2.0 200' "$RUN/phone.msg"; then
    say "   -> 200 OK from the PBX: sipwarden forwarded the REGISTER (it names the secret domain)."
else
    die "the phone's REGISTER failed (sipp exit $rc, see $RUN/phone.out)"
fi

# ------------------------------------------------------------ 2. a scanner
say "2. A scanner (svmap, from $SCANNER_IP) probes sipwarden by IP: svmap 127.0.0.1 -p $PUB"
timeout 30 svmap 127.0.0.1 -p "$PUB" -P "$SV_PORT" -b "$SCANNER_IP" > "$RUN/svmap.out" 2>&1
if grep -q 'found nothing' "$RUN/svmap.out"; then
    say "   -> svmap: \"found nothing\": not one answer, the probe was dropped."
else
    die "svmap found something behind sipwarden (see $RUN/svmap.out)"
fi
say "   A request by IP with an ordinary User-Agent (SIPp, from $PROBE_IP): OPTIONS sip:100@127.0.0.1"
sed 's/METHOD/OPTIONS/g' "$REPO/tests/e2e/sipp/silent.xml" > "$RUN/silent.xml"
(cd "$RUN" && timeout -k 2 15 sipp "127.0.0.1:$PUB" -sf "$RUN/silent.xml" -s 100 -key host 127.0.0.1 \
    -key to_host 127.0.0.1 -key from_host 127.0.0.1 -key ua "Zoiper rv2.10" -i "$PROBE_IP" -p "$PHONE_PORT" \
    -m 1 -nostdin -cp "$SIPP_CP" -mp "$SIPP_MP" > "$RUN/probe.out" 2>&1)
rc=$?
if [ $rc -eq 0 ]; then
    say "   -> no answer within 3 s (its retransmissions neither): dropped, silently."
else
    die "the request by IP got an answer or failed (sipp exit $rc, see $RUN/probe.out)"
fi
say "   The same svmap straight at the PBX (127.0.0.1:$BE), which sipwarden keeps off the internet:"
timeout 30 svmap 127.0.0.1 -p "$BE" -P "$SV_PORT" -b "$SCANNER_IP" > "$RUN/svmap-pbx.out" 2>&1
found=$(grep -E "127\.0\.0\.1:$BE" "$RUN/svmap-pbx.out" | tr -s ' |' ' ' | sed -e 's/^ *//' -e 's/ *$//' | head -1)
say "   -> svmap: ${found:-found nothing}"
say ""

# ------------------------------------------------------------ what sipwarden saw
say "sipwarden's log (drops are logged with source, reason and first line):"
grep -E 'dropped' "$RUN/sipwarden.log" | sed -e 's/^[^ ]*Z  *//' -e 's/^INFO [a-z_:]*: /   /' | head -n 3
say ""
say "Its counters (curl http://127.0.0.1:$MET/metrics):"
timeout 5 curl -sf "http://127.0.0.1:$MET/metrics" > "$RUN/metrics.txt" || die "no answer from the metrics endpoint"
grep -E '^sipwarden_messages_total\{' "$RUN/metrics.txt" | awk '$2 != 0 { print "   " $0 }'
say ""
T0=$(date +%s%N)
kill -TERM "$SW_PID"
wait "$SW_PID"
rc=$?
PIDS=("$KAM_PID")
say "sipwarden stopped on SIGTERM in $(( ($(date +%s%N) - T0) / 1000000 )) ms (exit $rc); stopping Kamailio. Done."
