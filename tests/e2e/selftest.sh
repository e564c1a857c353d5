#!/bin/bash
# The lookups of lib.sh fail loudly instead of reading 0 (no SIP, no
# sipwarden: a canned scrape served over HTTP on the metrics port).
#
#   A canned /metrics text as sipwarden writes it (python3 -m http.server on
#   127.0.0.1:METRICS), fetched with metrics_dump: a known sample gives its
#   value (metric, metric_or_zero, metric_sum, metric_total, sample, gauge);
#   a misspelt name or label value, a sample that is not there, or a failed
#   scrape (an empty file, an HTML page) makes the lookup return non-zero,
#   print no value, write "FAIL metric lookup" on stderr and record the
#   failure, and a script that made such a lookup fails in `finish` although
#   none of its checks failed. metric_or_zero gives 0 for a valid label set
#   that was never counted. kam_stat on a canned kamcmd dump likewise.
source "$(dirname "$0")/lib.sh"
command -v python3 > /dev/null 2>&1 || { echo "ABORT: python3 is needed (python3 -m http.server)" >&2; exit 3; }
setup selftest

# The canned scrape: lines as src/metrics.rs writes them (a few samples).
mkdir -p "$RUN/www"
cat > "$RUN/www/metrics" <<'EOF'
# HELP sipwarden_messages_total SIP messages by side, transport, reason and what was done with them
# TYPE sipwarden_messages_total counter
sipwarden_messages_total{side="public",transport="udp",reason="domain",disposition="forwarded"} 3
sipwarden_messages_total{side="public",transport="udp",reason="no-domain",disposition="dropped"} 7
sipwarden_messages_total{side="public",transport="tcp",reason="no-domain",disposition="dropped"} 2
sipwarden_messages_total{side="public",transport="udp",reason="user-agent",disposition="dropped"} 5
sipwarden_messages_total{side="internal",transport="udp",reason="loop",disposition="dropped"} 1
sipwarden_messages_total{side="internal",transport="udp",reason="response",disposition="forwarded"} 3
# HELP sipwarden_send_errors_total Messages that could not be sent (socket error, connection gone)
# TYPE sipwarden_send_errors_total counter
sipwarden_send_errors_total 0
# HELP sipwarden_reloads_total Config reloads
# TYPE sipwarden_reloads_total counter
sipwarden_reloads_total{result="ok"} 2
sipwarden_reloads_total{result="refused"} 1
# HELP sipwarden_bans_total Sources banned
# TYPE sipwarden_bans_total counter
sipwarden_bans_total 4
# HELP sipwarden_registrations Trunk registrations in force
# TYPE sipwarden_registrations gauge
sipwarden_registrations 0
EOF
(cd "$RUN/www" && exec timeout 60 python3 -m http.server "$MET" --bind 127.0.0.1 > "$RUN/http.log" 2>&1) &
HTTP_PID=$!
PIDS+=("$HTTP_PID")
wait_bound tcp 127.0.0.1 "$MET" || die "python3 -m http.server did not listen on 127.0.0.1:$MET"

metrics_dump "$RUN/m.txt"; rc=$?
check "metrics_dump fetched the canned scrape from 127.0.0.1:$MET (curl exit $rc)" cmp -s "$RUN/m.txt" "$RUN/www/metrics"
M=$RUN/m.txt

# expect_value DESCRIPTION VALUE LOOKUP...: the lookup exits 0, prints VALUE
# and records no failure.
expect_value() {
    local desc=$1 want=$2 got rc; shift 2
    got=$("$@" 2> "$RUN/lookup.err"); rc=$?
    if [ $rc -eq 0 ] && [ "$got" = "$want" ] && [ ! -s "$RUN/metric-errors" ] && [ ! -s "$RUN/lookup.err" ]; then
        pass "$desc: ${*//$RUN\//} = $got"
    else
        fail "$desc: ${*//$RUN\//} exit $rc, printed '$got' (expected $want), stderr: $(cat "$RUN/lookup.err")"
    fi
}

# expect_loud DESCRIPTION LOOKUP...: the lookup exits non-zero, prints no
# value, says "FAIL metric lookup" on stderr and records one failure (which
# is then cleared, so that this script does not fail for it).
expect_loud() {
    local desc=$1 got rc n; shift
    got=$("$@" 2> "$RUN/lookup.err"); rc=$?
    n=$(grep -c . "$RUN/metric-errors" 2>/dev/null); n=${n:-0}
    if [ $rc -ne 0 ] && [ -z "$got" ] && grep -q '^FAIL metric lookup: ' "$RUN/lookup.err" && [ "$n" -ge 1 ]; then
        pass "$desc: ${*//$RUN\//} fails (exit $rc): $(head -1 "$RUN/lookup.err" | sed "s|$RUN/||g" | cut -c1-110)"
    else
        fail "$desc: ${*//$RUN\//} exit $rc, printed '$got', recorded $n failures, stderr: $(cat "$RUN/lookup.err")"
    fi
    rm -f "$RUN/metric-errors"
}

# known samples
expect_value "metric of a known sample" 7 metric "$M" public udp no-domain dropped
expect_value "metric_or_zero of a known sample" 2 metric_or_zero "$M" public tcp no-domain dropped
expect_value "metric_or_zero of a valid label set never counted (absent)" 0 metric_or_zero "$M" public tcp user-agent dropped
expect_value "metric_sum over sides and transports" 9 metric_sum "$M" no-domain dropped
expect_value "metric_sum of a valid, never counted reason" 0 metric_sum "$M" banned replied
expect_value "metric_total of every dropped sample" 15 metric_total "$M" dropped
expect_value "metric_total of the public side's drops" 14 metric_total "$M" dropped public
expect_value "metric_delta" 0 metric_delta "$M" "$M" no-domain dropped
expect_value "sample with labels" 2 sample "$M" 'sipwarden_reloads_total{result="ok"}'
expect_value "gauge of an event counter" 4 gauge "$M" sipwarden_bans_total
expect_value "gauge of a gauge that is 0" 0 gauge "$M" sipwarden_registrations

# misspelt names and labels, absent samples
expect_loud "metric with a misspelt reason" metric "$M" public udp no-domian dropped
expect_loud "metric with a misspelt disposition" metric "$M" public udp no-domain drop
expect_loud "metric with a misspelt side" metric "$M" pubic udp no-domain dropped
expect_loud "metric with a misspelt transport" metric "$M" public UDP no-domain dropped
expect_loud "metric of a valid label set that is absent (strict)" metric "$M" public tcp user-agent dropped
expect_loud "metric_or_zero with a misspelt reason" metric_or_zero "$M" public udp no_domain dropped
expect_loud "metric_sum with a misspelt reason" metric_sum "$M" useragent dropped
expect_loud "metric_sum with a misspelt disposition" metric_sum "$M" no-domain droped
expect_loud "metric_delta with a misspelt reason" metric_delta "$M" "$M" no-domian dropped
expect_loud "metric_total with a misspelt disposition" metric_total "$M" drop
expect_loud "metric_total with a misspelt side" metric_total "$M" dropped outside
expect_loud "gauge of an unknown name" gauge "$M" sipwarden_registration
expect_loud "gauge of a name that only has labelled samples" gauge "$M" sipwarden_reloads_total
expect_loud "sample with an unknown label value" sample "$M" 'sipwarden_reloads_total{result="okay"}'

# failed scrapes: nothing is 0 in a file that is not a scrape
: > "$RUN/empty.txt"
echo '<html><body>502 Bad Gateway</body></html>' > "$RUN/html.txt"
expect_loud "metric_sum on an empty file (a failed scrape)" metric_sum "$RUN/empty.txt" no-domain replied
expect_loud "metric_total on an error page" metric_total "$RUN/html.txt" dropped
expect_loud "metric_or_zero on a missing file" metric_or_zero "$RUN/none.txt" public udp domain forwarded
expect_loud "gauge on an empty file" gauge "$RUN/empty.txt" sipwarden_bans_total
kill -TERM "$HTTP_PID" 2>/dev/null; reap "$HTTP_PID"
metrics_dump "$RUN/gone.txt"; rc=$?
check "metrics_dump fails when nothing serves the port (curl exit $rc)" [ $rc -ne 0 ]
expect_loud "metric_sum on that failed scrape" metric_sum "$RUN/gone.txt" no-domain replied

# kamailio's statistics (kamcmd stats.get_statistics all)
printf 'core:rcv_requests = 12\ncore:rcv_requests_options = 3\nsl:200_replies = 3\n' > "$RUN/k.txt"
expect_value "kam_stat of a known statistic" 12 kam_stat "$RUN/k.txt" core:rcv_requests
expect_value "kam_delta" 0 kam_delta "$RUN/k.txt" "$RUN/k.txt" core:rcv_requests
expect_loud "kam_stat of an unknown statistic" kam_stat "$RUN/k.txt" core:rcv_request
expect_loud "kam_stat on an empty dump" kam_stat "$RUN/empty.txt" core:rcv_requests
expect_loud "kam_delta of an unknown statistic" kam_delta "$RUN/k.txt" "$RUN/k.txt" core:rcv_reqs

# A script whose checks all pass but that looked up a misspelt metric fails.
INNER=$RUN/inner
mkdir -p "$INNER"
cat > "$INNER/script.sh" <<EOF
source "$E2E_DIR/lib.sh"
RUN=$INNER
n=\$(metric_sum "$M" no-domian dropped)
check "a check that passes on the missing value" [ "\${n:-0}" -eq 0 ]
finish
EOF
bash "$INNER/script.sh" > "$INNER/out.txt" 2>&1; rc=$?
if [ $rc -ne 0 ] && grep -q '^FAIL metric lookup: Reason "no-domian"' "$INNER/out.txt" \
    && grep -q '^1 passed, 1 failed' "$INNER/out.txt"; then
    pass "a script that looked up a misspelt reason fails in finish although its check passed (exit $rc)"
else
    fail "a script with a misspelt lookup: exit $rc, output:"; sed 's/^/   | /' "$INNER/out.txt"
fi

finish
