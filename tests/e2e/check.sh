#!/bin/bash
# `sipwarden check --config F` (docs/operations.md): exit 0 for a valid file
# (the repo's commented example, and the e2e config), exit 1 with
# "line N: key `x.y`: message" for broken ones. Also `kamailio -c` on the
# stand-in's config. Starts no server, sends nothing.
source "$(dirname "$0")/lib.sh"
need_tools
RUN=$(mktemp -d /tmp/sipwarden-e2e-check.XXXXXX) || die "mktemp failed"
trap cleanup EXIT
echo "== check (run dir $RUN)"

# expect_ok NAME FILE
expect_ok() {
    local out rc
    out=$(timeout 10 "$SIPWARDEN" check --config "$2" 2>&1); rc=$?
    if [ $rc -eq 0 ]; then
        pass "check $1: exit 0 ($out)"
    else
        fail "check $1: exit $rc, expected 0"; echo "$out" | sed 's/^/   | /'
    fi
}

# expect_err NAME FILE PATTERN: exit 1 and the output matches PATTERN (ERE).
expect_err() {
    local out rc
    out=$(timeout 10 "$SIPWARDEN" check --config "$2" 2>&1); rc=$?
    if [ $rc -eq 1 ] && echo "$out" | grep -qE -- "$3"; then
        pass "check $1: exit 1: $out"
    else
        fail "check $1: exit $rc (expected 1), output should match /$3/"; echo "$out" | sed 's/^/   | /'
    fi
}

# The repo's example must stay valid (and check must not create its secret).
REPO_CFG=$REPO/config/sipwarden.toml
[ -f "$REPO_CFG" ] || die "missing $REPO_CFG"
SECRET_BEFORE=$(ls -la "$REPO/config/state" 2>/dev/null | md5sum)
expect_ok "config/sipwarden.toml" "$REPO_CFG"
check "check config/sipwarden.toml wrote nothing next to it (config/state unchanged)" \
    [ "$SECRET_BEFORE" = "$(ls -la "$REPO/config/state" 2>/dev/null | md5sum)" ]

write_config "$RUN/good.toml" "$DOMAIN" "*.example.net"
expect_ok "the e2e config" "$RUN/good.toml"

# line_of FILE TEXT: the line number of the first line containing TEXT.
line_of() { grep -nF -- "$2" "$1" | head -1 | cut -d: -f1; }

# 1. a value of the wrong enum
sed 's/^domains = .*/&\nmode = "sometimes"/' "$RUN/good.toml" > "$RUN/bad-mode.toml"
N=$(line_of "$RUN/bad-mode.toml" 'mode = "sometimes"')
expect_err "filter.mode = \"sometimes\"" "$RUN/bad-mode.toml" "line $N: key \`filter\.mode\`: "

# 2. a misspelt key (keys are an interface: unknown ones are errors)
sed 's/^domains = /domain = /' "$RUN/good.toml" > "$RUN/bad-key.toml"
N=$(line_of "$RUN/bad-key.toml" 'domain = ')
expect_err "misspelt key filter.domain" "$RUN/bad-key.toml" "line $N: key \`filter\.domain\`: "

# 3. TOML syntax error: an unterminated string
sed 's/^advertise = \(.*\)"$/advertise = \1/' "$RUN/good.toml" > "$RUN/bad-syntax.toml"
N=$(line_of "$RUN/bad-syntax.toml" 'advertise = ')
expect_err "unterminated string in listen.advertise" "$RUN/bad-syntax.toml" "line $N: "

# 4. a socket that is not one
sed "s/^internal = .*/internal = \"udp:127.0.0.1:99999\"/" "$RUN/good.toml" > "$RUN/bad-socket.toml"
N=$(line_of "$RUN/bad-socket.toml" 'internal = ')
expect_err "listen.internal port 99999" "$RUN/bad-socket.toml" "line $N: key \`listen\.internal\`: "

# 5. a negative number
sed 's/^rate = .*/rate = -3/' "$RUN/good.toml" > "$RUN/bad-rate.toml"
N=$(line_of "$RUN/bad-rate.toml" 'rate = -3')
expect_err "limits.rate = -3" "$RUN/bad-rate.toml" "line $N: key \`limits\.rate\`: "

# 6. a missing file
expect_err "a file that does not exist" "$RUN/nonexistent.toml" "nonexistent\.toml"

# The Kamailio stand-in's config, as checked in (the scripts run a copy with
# their ports), passes Kamailio's own check with and without WITH_EDGE.
for defs in "" "-A WITH_EDGE"; do
    if timeout 10 kamailio -c -f "$E2E_DIR/kamailio.cfg" $defs > "$RUN/kamailio-c.log" 2>&1; then
        pass "kamailio -c -f tests/e2e/kamailio.cfg ${defs:-(no defines)}"
    else
        fail "kamailio -c -f tests/e2e/kamailio.cfg ${defs:-(no defines)}"; tail -n 5 "$RUN/kamailio-c.log" | sed 's/^/   | /'
    fi
done

finish
