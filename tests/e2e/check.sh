#!/bin/bash
# `sipwarden check --config F` (docs/operations.md): exit 0 for a valid file
# (the repo's commented example, and the e2e config), exit 1 with
# "line N: key `x.y`: message" for broken ones, including what only start
# used to find (log level, key and state files, colliding sockets, advertise),
# and exit 0 with "warning: ... line N: key `x.y`: ..." for likely mistakes.
# Also `kamailio -c` on the stand-in's config. Starts no server, sends nothing.
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

# expect_warn NAME FILE PATTERN: exit 0 and a `warning:` line matching PATTERN.
expect_warn() {
    local out rc
    out=$(timeout 10 "$SIPWARDEN" check --config "$2" 2>&1); rc=$?
    if [ $rc -eq 0 ] && echo "$out" | grep -E -- "^warning: " | grep -qE -- "$3"; then
        pass "check $1: exit 0, $(echo "$out" | grep -E -- "^warning: " | grep -E -- "$3" | head -1)"
    else
        fail "check $1: exit $rc (expected 0), a warning: line should match /$3/"; echo "$out" | sed 's/^/   | /'
    fi
}

# What start would refuse, check refuses, on the line of the key at fault.
# 7. a log level that is not one (EnvFilter would take "verbose" for a
#    target and silence every line, errors included)
sed 's/^level = .*/level = "verbose"/' "$RUN/good.toml" > "$RUN/bad-level.toml"
N=$(line_of "$RUN/bad-level.toml" 'level = "verbose"')
expect_err "log.level = \"verbose\"" "$RUN/bad-level.toml" "line $N: key \`log\.level\`: .*verbose"
sed 's/^level = .*/level = "sipwarden=debug,warn"/' "$RUN/good.toml" > "$RUN/good-level.toml"
expect_ok "log.level = \"sipwarden=debug,warn\"" "$RUN/good-level.toml"

# 8. a key file whose directory cannot be created (a regular file is in the way)
echo x > "$RUN/blocker"
sed "s|^key_file = .*|key_file = \"$RUN/blocker/sub/secret\"|" "$RUN/good.toml" > "$RUN/bad-keyfile.toml"
N=$(line_of "$RUN/bad-keyfile.toml" 'key_file = ')
expect_err "secret.key_file under a regular file" "$RUN/bad-keyfile.toml" "line $N: key \`secret\.key_file\`: .*blocker/sub"
check "check created no key file" [ ! -e "$RUN/secret" ]

# 9. a state file whose directory cannot be created
sed "s|^\[secret\]|[state]\npath = \"$RUN/blocker/state\"\n\n&|" "$RUN/good.toml" > "$RUN/bad-state.toml"
N=$(line_of "$RUN/bad-state.toml" 'path = ')
expect_err "state.path under a regular file" "$RUN/bad-state.toml" "line $N: key \`state\.path\`: "

# 10. metrics.listen on the public TCP socket (start used to blame the public socket)
sed "s|^listen = .*|listen = \"127.0.0.1:$PUB\"|" "$RUN/good.toml" > "$RUN/bad-metrics.toml"
N=$(line_of "$RUN/bad-metrics.toml" "listen = \"127.0.0.1:$PUB\"")
expect_err "metrics.listen = the public TCP socket" "$RUN/bad-metrics.toml" "line $N: key \`metrics\.listen\`: "

# 11. listen.internal on a public socket: reported on the internal key's line
sed "s|^internal = .*|internal = \"udp:0.0.0.0:$PUB\"|" "$RUN/good.toml" > "$RUN/bad-internal.toml"
N=$(line_of "$RUN/bad-internal.toml" 'internal = ')
expect_err "listen.internal = a public socket (wildcard)" "$RUN/bad-internal.toml" "line $N: key \`listen\.internal\`: "

# 12. advertise on the wildcard address
sed "s|^advertise = .*|advertise = \"0.0.0.0:$PUB\"|" "$RUN/good.toml" > "$RUN/bad-advertise.toml"
N=$(line_of "$RUN/bad-advertise.toml" 'advertise = ')
expect_err "listen.advertise = 0.0.0.0" "$RUN/bad-advertise.toml" "line $N: key \`listen\.advertise\`: "

# 13. an unclosed `[`: reported on its own line, not where the parser gave up
sed 's/^public = \[\(.*\)\]$/public = [\1,/' "$RUN/good.toml" > "$RUN/bad-bracket.toml"
N=$(line_of "$RUN/bad-bracket.toml" 'public = ')
expect_err "an unclosed [ in listen.public" "$RUN/bad-bracket.toml" "line $N: .*unclosed"

# 14. a key of the second [[trunk]]: reported on that trunk's line
{ cat "$RUN/good.toml"; printf '\n[[trunk]]\nname = "one"\nregistrar = "127.0.0.3"\nkeepalive = "25s"\n\n[[trunk]]\nname = "two"\nregistrar = "127.0.0.3"\nkeepalive = "10ms"\n'; } > "$RUN/bad-trunk.toml"
N=$(line_of "$RUN/bad-trunk.toml" 'keepalive = "10ms"')
expect_err "keepalive of the second [[trunk]]" "$RUN/bad-trunk.toml" "line $N: key \`trunk\.keepalive\`: "

# What is legal but likely wrong: exit 0 and a warning with the line.
# 15. no secret domain in enforce mode
sed 's/^domains = .*/domains = []/' "$RUN/good.toml" > "$RUN/warn-domains.toml"
N=$(line_of "$RUN/warn-domains.toml" 'domains = []')
expect_warn "filter.domains = [] (enforce)" "$RUN/warn-domains.toml" "line $N: key \`filter\.domains\`: "
# 16. a wildcard internal socket
sed "s|^internal = .*|internal = \"udp:0.0.0.0:$INT\"|" "$RUN/good.toml" > "$RUN/warn-internal.toml"
N=$(line_of "$RUN/warn-internal.toml" 'internal = ')
expect_warn "listen.internal on 0.0.0.0" "$RUN/warn-internal.toml" "line $N: key \`listen\.internal\`: "
# 17. a backend that is not on loopback
sed "s|^address = .*|address = \"udp:192.0.2.1:$BE\"|" "$RUN/good.toml" > "$RUN/warn-backend.toml"
N=$(line_of "$RUN/warn-backend.toml" 'address = ')
expect_warn "backend.address not on loopback" "$RUN/warn-backend.toml" "line $N: key \`backend\.address\`: "

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
