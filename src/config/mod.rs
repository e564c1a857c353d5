//! Reading and checking the TOML config. Every error names the file, the
//! line and the key, so `sipwarden check` tells an operator what to fix.

pub mod schema;
pub mod types;

use std::fmt;
use std::path::{Path, PathBuf};

pub use schema::*;
pub use types::{cidrs_contain, Cidr, Dur, HostPort, SocketSpec};

use crate::flow::Transport;
use crate::policy::domain::DomainSet;

/// A config file that cannot be used, and where it goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ": line {l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and validates a config file. Relative paths inside it
/// (`state.path`, `secret.key_file`) are taken relative to the file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?;
    let mut cfg = parse(&text, &file)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    rel(&mut cfg.secret.key_file);
    if let Some(p) = cfg.state.path.as_mut() {
        rel(p);
    }
    Ok(cfg)
}

/// Parses and validates config text; `file` only labels errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let cfg: Config = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        let key = e.span().and_then(|s| key_at(text, s.start));
        ConfigError {
            file: file.to_string(),
            line,
            key,
            message: e.message().trim().to_string(),
        }
    })?;
    validate(&cfg, text, file)?;
    Ok(cfg)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key whose value holds `offset`: the nearest `key =` line at
/// or above it, inside the nearest `[table]` header above that.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let upto = &text[..offset.min(text.len())];
    let line_end = text[upto.len()..]
        .find('\n')
        .map_or(text.len(), |i| upto.len() + i);
    let mut key = None;
    let mut table = None;
    for line in text[..line_end].lines().rev() {
        let l = line.trim();
        if l.starts_with('[') {
            table = Some(l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
            break;
        }
        if key.is_none() {
            if let Some((k, _)) = l.split_once('=') {
                let k = k.trim();
                if !k.is_empty()
                    && k.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"_-.\"".contains(&c))
                {
                    key = Some(k.trim_matches('"').to_string());
                }
            } else if !l.is_empty()
                && !l.starts_with('#')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                // An unknown bare key without `=` is still a key.
                key = Some(l.to_string());
            }
        }
    }
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

/// The line where `table.key` is set, for errors found after parsing.
fn find_key(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut in_table = table.is_empty();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            in_table = l.trim_matches(|c| c == '[' || c == ']').trim() == table;
            continue;
        }
        if in_table {
            if let Some((k, _)) = l.split_once('=') {
                if k.trim().trim_matches('"') == key {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

fn validate(cfg: &Config, text: &str, file: &str) -> Result<(), ConfigError> {
    let fail = |table: &str, key: &str, message: String| ConfigError {
        file: file.to_string(),
        line: find_key(text, table, key),
        key: Some(if table.is_empty() {
            key.to_string()
        } else {
            format!("{table}.{key}")
        }),
        message,
    };
    if cfg.listen.public.is_empty() {
        return Err(fail(
            "listen",
            "public",
            "at least one public socket is needed".into(),
        ));
    }
    if !(1..=1024).contains(&cfg.listen.udp_batch) {
        return Err(fail(
            "listen",
            "udp_batch",
            "between 1 and 1024 datagrams".into(),
        ));
    }
    if !((64 << 10)..=(1 << 30)).contains(&cfg.listen.udp_rcvbuf) {
        return Err(fail(
            "listen",
            "udp_rcvbuf",
            "between 65536 and 1073741824 bytes".into(),
        ));
    }
    if cfg.listen.udp_coalesce.0 > std::time::Duration::from_millis(10) {
        return Err(fail(
            "listen",
            "udp_coalesce",
            "at most 10ms: it is added to messages' latency under load".into(),
        ));
    }
    if cfg.listen.public.len() > 36 {
        return Err(fail("listen", "public", "at most 36 public sockets".into()));
    }
    let internal = cfg.listen.internal.to_vec();
    if internal.is_empty() || internal.len() > 36 {
        return Err(fail(
            "listen",
            "internal",
            "between 1 and 36 internal sockets".into(),
        ));
    }
    for s in internal.iter() {
        if !s.addr.ip().is_loopback() {
            tracing::warn!(socket = %s, "listen.internal is not on loopback: whoever reaches it is trusted like Asterisk");
        }
    }
    let mut all = cfg.listen.public.clone();
    all.extend(internal.iter().copied());
    for (i, a) in all.iter().enumerate() {
        if all[..i].contains(a) {
            return Err(fail(
                "listen",
                "public",
                format!("socket {a} is listed twice"),
            ));
        }
    }
    let backend = cfg.backend.address;
    if !internal.iter().any(|s| s.transport == backend.transport) {
        return Err(fail(
            "backend",
            "address",
            format!(
                "backend is reached over {}, but listen.internal has no {} socket to send from",
                backend.transport, backend.transport
            ),
        ));
    }
    if backend.transport == Transport::Udp && internal.iter().any(|s| s.addr == backend.addr) {
        return Err(fail(
            "backend",
            "address",
            "backend address equals an internal socket".into(),
        ));
    }
    if let Err(bad) = DomainSet::new(&cfg.filter.domains) {
        return Err(fail(
            "filter",
            "domains",
            format!("{bad:?} is not a domain name (a `*.` prefix is allowed)"),
        ));
    }
    if cfg.filter.match_.is_empty() {
        return Err(fail(
            "filter",
            "match",
            "name at least one of \"request-uri\", \"to\", \"from\"".into(),
        ));
    }
    if cfg.filter.user_agents.iter().any(|u| u.trim().is_empty()) {
        return Err(fail(
            "filter",
            "user_agents",
            "an empty entry would match every User-Agent".into(),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for t in &cfg.trunks {
        if t.name.trim().is_empty() || !t.name.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(fail(
                "trunk",
                "name",
                format!(
                    "{:?}: a trunk name is printable ASCII without spaces",
                    t.name
                ),
            ));
        }
        if !names.insert(t.name.as_str()) {
            return Err(fail(
                "trunk",
                "name",
                format!("trunk {:?} is defined twice", t.name),
            ));
        }
        if t.registrar.trim().is_empty() || t.registrar.contains(char::is_whitespace) {
            return Err(fail(
                "trunk",
                "registrar",
                format!("{:?} is not a host", t.registrar),
            ));
        }
        if let Some(k) = t.keepalive {
            if k.ms() < 1000 {
                return Err(fail(
                    "trunk",
                    "keepalive",
                    "keepalive interval below 1s".into(),
                ));
            }
        }
    }
    let l = &cfg.limits;
    if !(1024..=1 << 20).contains(&l.max_message) {
        return Err(fail(
            "limits",
            "max_message",
            "between 1024 and 1048576 bytes".into(),
        ));
    }
    if !(16..=1024).contains(&l.max_headers) {
        return Err(fail("limits", "max_headers", "between 16 and 1024".into()));
    }
    if !(256..=65535).contains(&l.max_line) {
        return Err(fail(
            "limits",
            "max_line",
            "between 256 and 65535 bytes".into(),
        ));
    }
    if l.rate == 0 || l.burst == 0 || l.register_rate == 0 || l.register_burst == 0 {
        return Err(fail(
            "limits",
            "rate",
            "rates and bursts must be at least 1".into(),
        ));
    }
    if l.max_sources == 0 {
        return Err(fail("limits", "max_sources", "must be at least 1".into()));
    }
    if cfg.ban.window.ms() == 0 {
        return Err(fail("ban", "window", "must be longer than 0s".into()));
    }
    if cfg.ban.max_entries == 0 {
        return Err(fail("ban", "max_entries", "must be at least 1".into()));
    }
    if cfg.dialog.max_entries == 0 {
        return Err(fail("dialog", "max_entries", "must be at least 1".into()));
    }
    if cfg.registration.max_entries == 0 {
        return Err(fail(
            "registration",
            "max_entries",
            "must be at least 1".into(),
        ));
    }
    if cfg.tcp.max_connections == 0 {
        return Err(fail("tcp", "max_connections", "must be at least 1".into()));
    }
    if cfg.tcp.idle_timeout.ms() < 1000 {
        return Err(fail("tcp", "idle_timeout", "must be at least 1s".into()));
    }
    // A stop must stay within what service managers wait before SIGKILL
    // (docker stop: 10 s).
    if cfg.tcp.drain_timeout.ms() > 5000 {
        return Err(fail("tcp", "drain_timeout", "must be at most 5s".into()));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&cfg.log.level) {
        return Err(fail("log", "level", format!("{:?}: {e}", cfg.log.level)));
    }
    Ok(())
}

impl Config {
    /// Internal sockets as a list.
    pub fn internal(&self) -> Vec<SocketSpec> {
        self.listen.internal.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[listen]\nadvertise = \"pbx.example.com:5060\"\n";

    fn err(text: &str) -> ConfigError {
        parse(text, "t.toml").unwrap_err()
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = parse(MIN, "t").unwrap();
        assert_eq!(c.listen.public.len(), 2);
        assert_eq!(c.backend.address.to_string(), "udp:127.0.0.1:5080");
        assert_eq!(c.filter.mode, Mode::Enforce);
        assert_eq!(c.filter.on_reject, OnReject::Drop);
        assert_eq!(
            c.filter.match_,
            vec![MatchField::RequestUri, MatchField::To]
        );
        assert_eq!(c.limits.max_message, 65535);
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = err("[listen]\nadvertise = \"pbx:5060\"\npublic = [\"udp:1.2.3.4\"]\n");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("listen.public"));
        assert!(e.message.contains("not a socket"), "{e}");

        let e = err(&format!("{MIN}[filter]\nmode = \"loud\"\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("filter.mode")));

        let e = err(&format!("{MIN}[filter]\ndomains = [\"a b\"]\n"));
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(4), Some("filter.domains"))
        );

        let e = err(&format!("{MIN}[limits]\nbogus = 1\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("limits.bogus")));
        assert!(e.message.contains("unknown field"), "{e}");

        let e = err(&format!(
            "{MIN}[backend]\naddress = \"tcp:127.0.0.1:5080\"\n"
        ));
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(4), Some("backend.address"))
        );

        let e = err("[listen]\n");
        assert!(e.message.contains("advertise"), "{e}");

        let e = err(&format!("{MIN}internal = \"udp:127.0.0.1:99999\"\n"));
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("listen.internal"))
        );
        assert!(e.message.contains("is not a socket"), "{e}");

        let e = err(&format!("{MIN}[ban]\nwindow = \"5 minutes\"\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("ban.window")));

        let e = err(&format!("{MIN}udp_coalesce = \"1s\"\n"));
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("listen.udp_coalesce"))
        );
        let e = err(&format!("{MIN}udp_batch = 0\n"));
        assert_eq!(e.key.as_deref(), Some("listen.udp_batch"));
        let e = err(&format!("{MIN}udp_rcvbuf = 1000\n"));
        assert_eq!(e.key.as_deref(), Some("listen.udp_rcvbuf"));
        let e = err(&format!("{MIN}[tcp]\ndrain_timeout = \"6s\"\n"));
        assert_eq!(e.key.as_deref(), Some("tcp.drain_timeout"));

        let shown = err(&format!("{MIN}[filter]\non_reject = \"404\"\n")).to_string();
        assert!(
            shown.starts_with("t.toml: line 4: key `filter.on_reject`: "),
            "{shown}"
        );
    }

    #[test]
    fn internal_one_or_many() {
        let c = parse(
            &format!("{MIN}internal = [\"udp:127.0.0.1:5070\", \"tcp:127.0.0.1:5070\"]\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.internal().len(), 2);
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../config/sipwarden.toml");
        parse(text, "config/sipwarden.toml").unwrap();
    }
}
