//! What a parsed config must satisfy (errors) and what is legal but likely
//! wrong (warnings), as values in a [`Report`], and the values the checks
//! parse out of it (the domain set, the User-Agent automaton, the backend's
//! socket), made here once and handed on in [`Parsed`]. They need only the
//! config: what start needs of the host (files, addresses) is asked by the
//! program, which writes its findings to the same report.

use std::net::SocketAddr;

use super::spans::Seg::{self, Index as I, Key as K};
use super::{Config, Mode, Parsed, Report, Reported, SocketSpec};
use crate::flow::{Transport, MAX_LISTENERS};
use aho_corasick::AhoCorasick;

use crate::sip::DomainSet;

/// A socket sipwarden binds, and the key that asks for it.
pub struct Listener {
    /// The key that asks for it, to locate a finding.
    pub path: Vec<Seg>,
    pub transport: Transport,
    pub addr: SocketAddr,
    /// `[::]` also takes IPv4 (the metrics listener is dual-stack; the
    /// SIP sockets are v6-only).
    dual_stack: bool,
}

impl Listener {
    fn key(&self) -> String {
        super::spans::dotted(&self.path)
    }

    /// `udp:127.0.0.1:5060`, as the config writes it.
    pub fn spec(&self) -> String {
        format!("{}:{}", self.transport, self.addr)
    }

    /// Whether the wildcard `self` takes the port of `other` too.
    fn covers(&self, other: &Listener) -> bool {
        self.addr.ip().is_unspecified()
            && (self.addr.is_ipv4() == other.addr.is_ipv4() || self.dual_stack)
    }

    /// Same transport and port, and the same address or a wildcard of its
    /// family: the two cannot both be bound as separate sockets (or, with
    /// SO_REUSEPORT, would take each other's messages). Port 0 is a fresh
    /// port each time, never a collision.
    fn collides(&self, other: &Listener) -> bool {
        self.transport.is_stream() == other.transport.is_stream()
            && self.addr.port() == other.addr.port()
            && self.addr.port() != 0
            && (self.addr.ip() == other.addr.ip() || self.covers(other) || other.covers(self))
    }
}

/// Every socket sipwarden binds, in start order: public, internal, metrics.
pub fn listeners(cfg: &Config) -> Vec<Listener> {
    let sip = |path: Vec<Seg>, s: &SocketSpec| Listener {
        path,
        transport: s.transport,
        addr: s.addr,
        dual_stack: false,
    };
    let mut v: Vec<Listener> = cfg
        .listen
        .public
        .iter()
        .enumerate()
        .map(|(i, s)| sip(vec![K("listen"), K("public"), I(i)], s))
        .collect();
    v.extend(
        cfg.internal()
            .iter()
            .enumerate()
            .map(|(i, s)| sip(vec![K("listen"), K("internal"), I(i)], s)),
    );
    if let Some(m) = cfg.metrics.listen {
        v.push(Listener {
            path: vec![K("metrics"), K("listen")],
            transport: Transport::Tcp,
            addr: m,
            dual_stack: m.is_ipv6(),
        });
    }
    v
}

/// The checks on the config alone, and what they parse out of it; every
/// check runs, so that all errors are reported at once.
pub(super) fn rules(cfg: &Config, r: &mut Report) -> Result<Parsed, Reported> {
    listen_rules(cfg, r);
    socket_collisions(cfg, r);
    let backend_listener = backend_rules(cfg, r);
    let domains = domain_rules(cfg, r);
    let tls_names = tls_rules(cfg, r);
    ws_rules(cfg, r);
    let user_agents = user_agent_rules(cfg, r);
    filter_rules(cfg, r);
    trunk_rules(cfg, r);
    limit_rules(cfg, r);
    cluster_rules(cfg, r);
    if let Err(e) = log_level_words(&cfg.log.level) {
        r.error(&[K("log"), K("level")], e);
    }
    Ok(Parsed {
        domains: domains?,
        user_agents: user_agents?,
        backend_listener: backend_listener?,
        tls_names: tls_names?,
    })
}

/// The words of a `log.level` value: each comma-separated directive is a
/// level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or
/// `TARGET=LEVEL`. The log filter alone takes a bare word for a target, so
/// a typo such as "verbose" would silence every line, errors included.
/// (The program parses the whole filter too, for its finer syntax.)
pub fn log_level_words(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let is_level = |w: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(w.trim()));
    for d in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        // Span and field filters (`target[span{f=v}]=level`) are left to
        // the filter's own parser.
        if d.contains('[') {
            continue;
        }
        let ok = match d.rsplit_once('=') {
            Some((target, lvl)) => !target.trim().is_empty() && is_level(lvl),
            None => is_level(d),
        };
        if !ok {
            return Err(format!(
                "{d:?} is not a log level: write error, warn, info, debug, trace or off, \
                 or TARGET=LEVEL such as \"sipwarden=debug,info\""
            ));
        }
    }
    Ok(())
}

fn listen_rules(cfg: &Config, r: &mut Report) {
    let l = &cfg.listen;
    if l.public.is_empty() {
        r.error(
            &[K("listen"), K("public")],
            "at least one public socket is needed",
        );
    }
    if l.public.len() > MAX_LISTENERS {
        r.error(
            &[K("listen"), K("public")],
            format!("at most {MAX_LISTENERS} public sockets"),
        );
    }
    if !(1..=1024).contains(&l.udp_batch) {
        r.error(
            &[K("listen"), K("udp_batch")],
            "between 1 and 1024 datagrams",
        );
    }
    if !((64 << 10)..=(1 << 30)).contains(&l.udp_rcvbuf) {
        r.error(
            &[K("listen"), K("udp_rcvbuf")],
            "between 65536 and 1073741824 bytes",
        );
    }
    if l.udp_coalesce.0 > std::time::Duration::from_millis(10) {
        r.error(
            &[K("listen"), K("udp_coalesce")],
            "at most 10ms: it is added to messages' latency under load",
        );
    }
    let internal = cfg.internal();
    if internal.is_empty() || internal.len() > MAX_LISTENERS {
        r.error(
            &[K("listen"), K("internal")],
            format!("between 1 and {MAX_LISTENERS} internal sockets"),
        );
    }
    for (i, s) in internal.iter().enumerate() {
        let at = [K("listen"), K("internal"), I(i)];
        let ip = s.addr.ip();
        if ip.is_unspecified() {
            r.warn(
                &at,
                format!(
                    "{s} listens on every address of this host: whoever reaches it is trusted \
                     like Asterisk (its requests skip the domain check); bind it to 127.0.0.1"
                ),
            );
        } else if !ip.is_loopback() {
            r.warn(
                &at,
                format!(
                    "{s} is not on loopback: whoever reaches it is trusted like Asterisk \
                     (its requests skip the domain check)"
                ),
            );
        }
    }
}

/// Two sockets of one transport on one port, where one address is the
/// other or a wildcard of its family: reported on the later key (the one
/// the operator most likely just added), or on the earlier one when the
/// later is a default that is not in the file.
fn socket_collisions(cfg: &Config, r: &mut Report) {
    let all = listeners(cfg);
    for (j, b) in all.iter().enumerate() {
        let Some(a) = all[..j].iter().find(|a| a.collides(b)) else {
            continue;
        };
        let (at, other) = if r.has_line(&b.path) || !r.has_line(&a.path) {
            (b, a)
        } else {
            (a, b)
        };
        let message = if a.addr == b.addr && a.key() == b.key() {
            format!("{} is listed twice", at.spec())
        } else if a.addr == b.addr {
            format!(
                "{} is also a socket of {}: one socket cannot be both",
                at.spec(),
                other.key()
            )
        } else {
            let (wild, one) = if a.covers(b) { (a, b) } else { (b, a) };
            format!(
                "{} collides with {} of {}: {} takes port {} on every address, {} included",
                at.spec(),
                other.spec(),
                other.key(),
                wild.addr.ip(),
                wild.addr.port(),
                one.addr.ip()
            )
        };
        r.error(&at.path, message);
    }
}

/// The checks of `backend.address`, and the index in `listen.internal`
/// of the socket that sends to it: the first of its transport.
fn backend_rules(cfg: &Config, r: &mut Report) -> Result<u8, Reported> {
    let at = [K("backend"), K("address")];
    let b = cfg.backend.address;
    if b.addr.port() == 0 {
        r.error(&at, "port 0: write the port Asterisk listens on");
    }
    let listener = match cfg
        .internal()
        .iter()
        .position(|s| s.transport == b.transport)
    {
        // At most MAX_LISTENERS internal sockets (listen_rules): it fits.
        Some(i) => u8::try_from(i).map_err(|_| {
            r.refuse(
                &at,
                format!(
                    "the first {} socket of listen.internal is past the {MAX_LISTENERS} allowed",
                    b.transport
                ),
            )
        }),
        None => Err(r.refuse(
            &at,
            format!(
                "backend is reached over {}, but listen.internal has no {} socket to send from",
                b.transport, b.transport
            ),
        )),
    };
    let me = Listener {
        path: at.to_vec(),
        transport: b.transport,
        addr: b.addr,
        dual_stack: false,
    };
    if let Some(l) = listeners(cfg).iter().find(|l| l.collides(&me)) {
        r.error(
            &at,
            format!(
                "{b} is sipwarden's own socket {} of {}: what it sends to Asterisk would come back to itself",
                l.spec(),
                l.key()
            ),
        );
    }
    if !b.addr.ip().is_loopback() {
        r.warn(
            &at,
            format!(
                "{b} is not on loopback: Asterisk then listens where others may reach it \
                 past sipwarden; keep it on 127.0.0.1 unless a firewall closes it"
            ),
        );
    }
    listener
}

/// `filter.domains` as the matcher admission uses.
fn domain_rules(cfg: &Config, r: &mut Report) -> Result<DomainSet, Reported> {
    DomainSet::new(&cfg.filter.domains).map_err(|bad| {
        r.refuse(
            &[K("filter"), K("domains")],
            format!("{bad:?} is not a domain name (a `*.` prefix is allowed)"),
        )
    })
}

/// `[tls]`: a `tls:` listener needs the certificate files (whether they
/// load and match is the program's check: reading files is I/O), TLS is a
/// public transport only, and `tls.server_names` as a matcher.
fn tls_rules(cfg: &Config, r: &mut Report) -> Result<DomainSet, Reported> {
    let t = &cfg.tls;
    let has_tls = cfg
        .listen
        .public
        .iter()
        .any(|s| matches!(s.transport, Transport::Tls | Transport::Wss));
    if has_tls {
        for (key, v) in [("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
            if v.is_none() {
                r.error(
                    &[K("tls"), K(key)],
                    "listen.public has a tls: or wss: socket: name the PEM file of the certificate \
                     (cert_file: the chain, leaf first) and of its private key (key_file)",
                );
            }
        }
    }
    for (i, s) in cfg.internal().iter().enumerate() {
        if matches!(s.transport, Transport::Tls | Transport::Ws | Transport::Wss) {
            r.error(
                &[K("listen"), K("internal"), I(i)],
                "TLS and WebSocket are for the public side: Asterisk is reached over udp: or \
                 tcp: on loopback",
            );
        }
    }
    if matches!(
        cfg.backend.address.transport,
        Transport::Tls | Transport::Ws | Transport::Wss
    ) {
        r.error(
            &[K("backend"), K("address")],
            "TLS and WebSocket are for the public side: reach Asterisk over udp: or tcp: on \
             loopback",
        );
    }
    for (key, d) in [
        ("hello_timeout", t.hello_timeout),
        ("handshake_timeout", t.handshake_timeout),
    ] {
        if d.0.is_zero() || d.0 > std::time::Duration::from_secs(300) {
            r.error(&[K("tls"), K(key)], "longer than 0s, at most 300s");
        }
    }
    if !t.verify {
        r.warn(
            &[K("tls"), K("verify")],
            "false: the certificate of a provider reached over TLS is not verified, so \
             anyone on the path can pose as it, read and change the calls",
        );
    }
    DomainSet::new(&t.server_names).map_err(|bad| {
        r.refuse(
            &[K("tls"), K("server_names")],
            format!("{bad:?} is not a host name (a `*.` prefix is allowed)"),
        )
    })
}

/// `[ws]`: an absolute path, origins written as browsers send them
/// (`scheme://host[:port]`, no path), and bounds that a browser's upgrade
/// fits in.
fn ws_rules(cfg: &Config, r: &mut Report) {
    let w = &cfg.ws;
    if !w.path.starts_with('/') || w.path.contains(['?', '#', ' ']) {
        r.error(
            &[K("ws"), K("path")],
            "an absolute request path such as \"/ws\" (no query, no spaces)",
        );
    }
    for (i, o) in w.origins.iter().flatten().enumerate() {
        if crate::web::origin_parts(o).is_none() {
            r.error(
                &[K("ws"), K("origins"), I(i)],
                format!("{o:?} is not a web origin: write scheme://host[:port], as a browser sends it in Origin (\"https://phone.example.com\")"),
            );
        }
    }
    if !(512..=65536).contains(&w.max_header) {
        r.error(&[K("ws"), K("max_header")], "from 512 to 65536 bytes");
    }
    if w.upgrade_timeout.0.is_zero() || w.upgrade_timeout.0 > std::time::Duration::from_secs(300) {
        r.error(
            &[K("ws"), K("upgrade_timeout")],
            "longer than 0s, at most 300s",
        );
    }
    if w.ping_interval.0 > std::time::Duration::from_secs(3600) {
        r.error(
            &[K("ws"), K("ping_interval")],
            "at most 3600s (0s: no pings)",
        );
    }
}

/// `filter.user_agents` as one automaton, case-insensitive, that finds
/// any of them in one pass over a User-Agent; `None` for an empty list.
/// Building it fails only past limits of the automaton (billions of
/// states) that no real list reaches, but is then an error, not an empty
/// blocklist.
fn user_agent_rules(cfg: &Config, r: &mut Report) -> Result<Option<AhoCorasick>, Reported> {
    let list = &cfg.filter.user_agents;
    if list.is_empty() {
        return Ok(None);
    }
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(list)
        .map(Some)
        .map_err(|e| {
            r.refuse(
                &[K("filter"), K("user_agents")],
                format!("the User-Agent blocklist cannot be built: {e}"),
            )
        })
}

fn filter_rules(cfg: &Config, r: &mut Report) {
    let f = &cfg.filter;
    if f.domains.is_empty() && f.mode == Mode::Enforce {
        r.warn(
            &[K("filter"), K("domains")],
            "no secret domain in enforce mode: every phone's request is dropped (only trunks, \
             dialogs and Asterisk's own traffic pass); name the domain phones use, or set \
             mode = \"monitor\"",
        );
    }
    if f.match_.is_empty() {
        r.error(
            &[K("filter"), K("match")],
            "name at least one of \"request-uri\", \"to\", \"from\"",
        );
    }
    if let Some(i) = f.user_agents.iter().position(|u| u.trim().is_empty()) {
        r.error(
            &[K("filter"), K("user_agents"), I(i)],
            "an empty entry would match every User-Agent",
        );
    }
}

fn trunk_rules(cfg: &Config, r: &mut Report) {
    for (i, t) in cfg.trunks.iter().enumerate() {
        let at = |k| [K("trunk"), I(i), K(k)];
        if t.name.trim().is_empty() || !t.name.bytes().all(|c| c.is_ascii_graphic()) {
            r.error(
                &at("name"),
                format!(
                    "{:?}: a trunk name is printable ASCII without spaces",
                    t.name
                ),
            );
        }
        if cfg.trunks[..i].iter().any(|o| o.name == t.name) {
            r.error(&at("name"), format!("trunk {:?} is defined twice", t.name));
        }
        if t.registrar.trim().is_empty() || t.registrar.contains(char::is_whitespace) {
            r.error(&at("registrar"), format!("{:?} is not a host", t.registrar));
        }
        if t.keepalive.is_some_and(|k| k.ms() < 1000) {
            r.error(&at("keepalive"), "keepalive interval below 1s");
        }
    }
}

fn limit_rules(cfg: &Config, r: &mut Report) {
    let l = &cfg.limits;
    if !(1024..=1 << 20).contains(&l.max_message) {
        r.error(
            &[K("limits"), K("max_message")],
            "between 1024 and 1048576 bytes",
        );
    }
    if !(16..=1024).contains(&l.max_headers) {
        r.error(&[K("limits"), K("max_headers")], "between 16 and 1024");
    }
    if !(256..=65535).contains(&l.max_line) {
        r.error(&[K("limits"), K("max_line")], "between 256 and 65535 bytes");
    }
    for (k, v) in [
        ("rate", l.rate),
        ("burst", l.burst),
        ("register_rate", l.register_rate),
        ("register_burst", l.register_burst),
    ] {
        if v == 0 {
            r.error(&[K("limits"), K(k)], "rates and bursts must be at least 1");
        }
    }
    let at_least_one = [
        ("limits", "max_sources", l.max_sources),
        ("ban", "max_entries", cfg.ban.max_entries),
        ("dialog", "max_entries", cfg.dialog.max_entries),
        ("registration", "max_entries", cfg.registration.max_entries),
        ("tcp", "max_connections", cfg.tcp.max_connections),
        ("ban", "max_cidrs", cfg.ban.max_cidrs),
        ("control", "max_connections", cfg.control.max_connections),
    ];
    for (t, k, v) in at_least_one {
        if v == 0 {
            r.error(&[K(t), K(k)], "must be at least 1");
        }
    }
    if cfg.ban.window.ms() == 0 {
        r.error(&[K("ban"), K("window")], "must be longer than 0s");
    }
    control_rules(cfg, r);
    if cfg.tcp.idle_timeout.ms() < 1000 {
        r.error(&[K("tcp"), K("idle_timeout")], "must be at least 1s");
    }
    // A stop must stay within what service managers wait before SIGKILL
    // (docker stop: 10 s).
    if cfg.tcp.drain_timeout.ms() > 5000 {
        r.error(&[K("tcp"), K("drain_timeout")], "must be at most 5s");
    }
}

/// The control socket's path and limits. A Unix socket's path is at most
/// 107 bytes (`sun_path`); it must not be another file sipwarden writes.
fn control_rules(cfg: &Config, r: &mut Report) {
    let c = &cfg.control;
    let key = [K("control"), K("socket")];
    if !c.socket.as_os_str().is_empty() {
        if c.socket.as_os_str().len() > 107 {
            r.error(
                &key,
                format!(
                    "{}: a Unix socket path is at most 107 bytes",
                    c.socket.display()
                ),
            );
        }
        let same = |p: &std::path::Path| p == c.socket;
        if same(&cfg.secret.key_file) || cfg.state.path.as_deref().is_some_and(same) {
            r.error(
                &key,
                "must not be the path of secret.key_file or state.path",
            );
        }
    }
    if c.max_connections > 1024 {
        r.error(&[K("control"), K("max_connections")], "at most 1024");
    }
    if !(1000..=3_600_000).contains(&c.timeout.ms()) {
        r.error(&[K("control"), K("timeout")], "between 1s and 1h");
    }
    if !(16..=65536).contains(&c.top_sources) {
        r.error(&[K("control"), K("top_sources")], "between 16 and 65536");
    }
    if cfg.ban.max_cidrs > 65536 {
        r.error(&[K("ban"), K("max_cidrs")], "at most 65536");
    }
}

/// `[cluster]`: Redis URLs sipwarden can use, a key prefix and a node name
/// that fit in a key and a log line, limits that bound memory.
fn cluster_rules(cfg: &Config, r: &mut Report) {
    let c = &cfg.cluster;
    for (i, u) in c.redis.to_vec().iter().enumerate() {
        let path: Vec<Seg> = match &c.redis {
            super::OneOrMany::One(_) => vec![K("cluster"), K("redis")],
            super::OneOrMany::Many(_) => vec![K("cluster"), K("redis"), I(i)],
        };
        if !(u.starts_with("redis://") || u.starts_with("rediss://")) || u.len() > 1024 {
            r.error(
                &path,
                "a redis://HOST:PORT or rediss://HOST:PORT URL (rediss: TLS)",
            );
        }
    }
    let word = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !word(&c.name) {
        r.error(
            &[K("cluster"), K("name")],
            "1 to 64 letters, digits, '-', '_' or '.'",
        );
    }
    if !c.node.is_empty() && !word(&c.node) {
        r.error(
            &[K("cluster"), K("node")],
            "1 to 64 letters, digits, '-', '_' or '.' (or \"\" for the host name)",
        );
    }
    if !(1..=10_000_000).contains(&c.max_outbox) {
        r.error(&[K("cluster"), K("max_outbox")], "between 1 and 10000000");
    }
    if !(1024..=65536).contains(&c.max_value) {
        r.error(
            &[K("cluster"), K("max_value")],
            "between 1024 and 65536 bytes",
        );
    }
    if !(100..=60_000).contains(&c.load_timeout.ms()) {
        r.error(&[K("cluster"), K("load_timeout")], "between 100ms and 60s");
    }
    if !(1000..=86_400_000).contains(&c.republish_interval.ms()) {
        r.error(
            &[K("cluster"), K("republish_interval")],
            "between 1s and 24h",
        );
    }
    if !(100..=300_000).contains(&c.retry_max.ms()) {
        r.error(&[K("cluster"), K("retry_max")], "between 100ms and 5m");
    }
}
