//! Reading and checking the TOML config. Building a config from the text
//! is the validation: it returns the config and its warnings, or every
//! error found, as values, each with the file, the line (from the TOML
//! parser's spans) and the key, so that `sipwarden check` can print them
//! and the running proxy can log them.

mod diff;
mod rules;
pub mod schema;
mod spans;
pub mod types;

use std::fmt;
use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use serde::Deserialize;

use crate::sip::DomainSet;

pub use diff::changed_keys;
pub use rules::{listeners, log_level_words, Listener};
pub use schema::*;
pub use types::{cidrs_contain, Cidr, Dur, HostPort, SocketSpec};

pub use spans::Seg;
use spans::{line_at, Spans};

/// One finding about a config file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

/// A config file that cannot be used, and where it goes wrong.
pub type ConfigError = Diagnostic;

/// Something legal in a config file that is likely a mistake.
pub type ConfigWarning = Diagnostic;

impl fmt::Display for Diagnostic {
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

impl std::error::Error for Diagnostic {}

/// A config that can be used, and what in it is likely wrong.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Checked,
    pub warnings: Vec<ConfigWarning>,
}

/// A config that passed every rule, with the values the rules parsed out
/// of it on the way: the secret domains, the User-Agent automaton, the
/// internal socket that talks to the backend. Only [`read`], [`read_with`]
/// and [`parse`] make one, so `Settings` is built from checked configs
/// only and never derives (or falls back on) what the rules refused. It
/// reads as the [`Config`] it holds.
#[derive(Debug, Clone)]
pub struct Checked {
    config: Config,
    parsed: Parsed,
}

/// What the rules parse out of a config, once.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    /// `filter.domains`.
    pub domains: DomainSet,
    /// `filter.user_agents` as one case-insensitive automaton; `None`
    /// when the list is empty.
    pub user_agents: Option<AhoCorasick>,
    /// Index into `listen.internal` of the first socket of the backend's
    /// transport: the one that talks to the backend.
    pub backend_listener: u8,
    /// `tls.server_names`.
    pub tls_names: DomainSet,
}

impl Checked {
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn into_parts(self) -> (Config, Parsed) {
        (self.config, self.parsed)
    }
}

impl std::ops::Deref for Checked {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

/// Marks a value the rules could not parse: the error that says why is
/// in the report, so a missing value is never missing silently.
pub(crate) struct Reported;

/// A config that cannot be used: every error found (in line order; at
/// least one), and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigWarning>,
}

impl Rejected {
    /// A config rejected for one reason (a file that cannot be read).
    pub fn one(e: ConfigError) -> Rejected {
        Rejected {
            errors: vec![e],
            warnings: Vec::new(),
        }
    }

    /// The first error (by line).
    pub fn first(mut self) -> ConfigError {
        self.errors.swap_remove(0)
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejected {}

/// Errors and warnings as they are found, each located by its key's path:
/// the rules of this module write to it, and so do the checks the program
/// makes of the host (key file, state directory, addresses), which need
/// I/O and live outside the core.
pub struct Report<'a> {
    file: &'a str,
    spans: &'a Spans<'a>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
}

impl<'a> Report<'a> {
    fn new(file: &'a str, spans: &'a Spans<'a>) -> Report<'a> {
        Report {
            file,
            spans,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn at(&self, path: &[Seg], message: String) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line: self.spans.line_of(path),
            key: Some(spans::dotted(path)),
            message,
        }
    }

    /// Whether the key at `path` is written in the file (not a default).
    pub fn has_line(&self, path: &[Seg]) -> bool {
        self.spans.line_of(path).is_some()
    }

    /// An error at the key `path`: the config cannot be used.
    pub fn error(&mut self, path: &[Seg], message: impl Into<String>) {
        let d = self.at(path, message.into());
        self.errors.push(d);
    }

    /// An error at the key `path` about a value the rules parse.
    fn refuse(&mut self, path: &[Seg], message: impl Into<String>) -> Reported {
        self.error(path, message);
        Reported
    }

    /// A warning at the key `path`: legal, but likely a mistake.
    pub fn warn(&mut self, path: &[Seg], message: impl Into<String>) {
        let d = self.at(path, message.into());
        self.warnings.push(d);
    }

    fn finish(
        mut self,
        config: Config,
        parsed: Result<Parsed, Reported>,
    ) -> Result<Loaded, Rejected> {
        let by_line = |d: &Diagnostic| d.line.unwrap_or(usize::MAX);
        self.errors.sort_by_key(by_line);
        self.warnings.sort_by_key(by_line);
        match parsed {
            Ok(parsed) if self.errors.is_empty() => Ok(Loaded {
                config: Checked { config, parsed },
                warnings: self.warnings,
            }),
            // `Reported` means an error is in the list.
            _ => Err(Rejected {
                errors: self.errors,
                warnings: self.warnings,
            }),
        }
    }
}

/// Checks config text alone; `file` only labels the findings.
pub fn read(text: &str, file: &str) -> Result<Loaded, Rejected> {
    read_with(text, file, None, |_, _| {})
}

/// Checks config text alone and keeps the config and the first error:
/// for tests and tools that build a config from a literal.
pub fn parse(text: &str, file: &str) -> Result<Checked, ConfigError> {
    read(text, file).map(|l| l.config).map_err(Rejected::first)
}

/// Checks config text: its syntax and values, then the rules on the config
/// alone, then `more` (the program's checks of the host). Relative paths
/// in it (`state.path`, `secret.key_file`, `tls.cert_file`,
/// `tls.key_file`) are taken relative to `base`,
/// the config file's directory, when given.
pub fn read_with(
    text: &str,
    file: &str,
    base: Option<&Path>,
    more: impl FnOnce(&Config, &mut Report),
) -> Result<Loaded, Rejected> {
    let doc = match toml::de::DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let (at, message) = spans::syntax_error(text, &e);
            let (partial, _) = toml::de::DeTable::parse_recoverable(text);
            let key = at.and_then(|o| Spans::new(text, partial.get_ref()).key_at(o));
            return Err(Rejected::one(Diagnostic {
                file: file.to_string(),
                line: at.map(|o| line_at(text, o)),
                key,
                message,
            }));
        }
    };
    let spans = Spans::new(text, doc.get_ref());
    let mut cfg = Config::deserialize(toml::de::Deserializer::from(doc.clone()))
        .map_err(|e| Rejected::one(value_error(text, file, &spans, &e)))?;
    if let Some(base) = base {
        let rel = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rel(&mut cfg.secret.key_file);
        if let Some(p) = cfg.state.path.as_mut() {
            rel(p);
        }
        for p in [cfg.tls.cert_file.as_mut(), cfg.tls.key_file.as_mut()]
            .into_iter()
            .flatten()
        {
            rel(p);
        }
        // `""` turns the control socket off: it stays empty.
        if !cfg.control.socket.as_os_str().is_empty() {
            rel(&mut cfg.control.socket);
        }
    }
    let mut report = Report::new(file, &spans);
    let parsed = rules::rules(&cfg, &mut report);
    more(&cfg, &mut report);
    report.finish(cfg, parsed)
}

/// A value the schema refuses: located by the error's span.
fn value_error(text: &str, file: &str, spans: &Spans, e: &toml::de::Error) -> Diagnostic {
    let message = e.message().trim().to_string();
    // The whole document's span (0..0): no line says more than the message.
    let at = e.span().filter(|s| *s != (0..0)).map(|s| s.start);
    let mut key = at.and_then(|o| spans.key_at(o));
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        key = Some(match key {
            Some(k) => format!("{k}.{field}"),
            None => field.to_string(),
        });
    }
    Diagnostic {
        file: file.to_string(),
        line: at.map(|o| line_at(text, o)),
        key,
        message,
    }
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
    fn the_example_file_is_valid_without_warnings() {
        let text = include_str!("../../../config/sipwarden.toml");
        let l = read(text, "config/sipwarden.toml").unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    /// `(line, key)` of each warning.
    fn warnings(text: &str) -> Vec<(Option<usize>, String)> {
        read(text, "t")
            .unwrap_or_else(|r| panic!("{r}"))
            .warnings
            .into_iter()
            .map(|w| (w.line, w.key.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn an_unverified_provider_certificate_is_a_warning() {
        let text = format!("{MIN}[filter]\ndomains = [\"a.example\"]\n[tls]\nverify = false\n");
        assert_eq!(warnings(&text), vec![(Some(6), "tls.verify".into())]);
    }

    #[test]
    fn likely_mistakes_are_warnings_with_their_line() {
        let quiet = format!("{MIN}[filter]\ndomains = [\"a.example\"]\n");
        assert_eq!(warnings(&quiet), vec![]);
        // No domain in enforce mode drops every phone; in monitor mode
        // nothing is dropped.
        let text = format!("{MIN}[filter]\ndomains = []\n");
        assert_eq!(warnings(&text), vec![(Some(4), "filter.domains".into())]);
        assert_eq!(warnings(MIN), vec![(None, "filter.domains".into())]);
        let text = format!("{MIN}[filter]\nmode = \"monitor\"\n");
        assert_eq!(warnings(&text), vec![]);
        // An internal socket on a wildcard or another interface.
        let text = format!(
            "{MIN}internal = [\"udp:127.0.0.1:5070\",\n  \"tcp:0.0.0.0:5070\",\n  \"udp:10.0.0.1:5070\"]\n\
             [filter]\ndomains = [\"a.example\"]\n"
        );
        let w = read(&text, "t").unwrap().warnings;
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            (w[0].line, w[0].key.as_deref()),
            (Some(4), Some("listen.internal"))
        );
        assert!(w[0].message.contains("every address"), "{}", w[0]);
        assert_eq!(
            (w[1].line, w[1].key.as_deref()),
            (Some(5), Some("listen.internal"))
        );
        assert!(w[1].message.contains("not on loopback"), "{}", w[1]);
        // Asterisk on another host.
        let text = format!(
            "{MIN}[backend]\naddress = \"udp:192.0.2.7:5080\"\n[filter]\ndomains = [\"a.example\"]\n"
        );
        assert_eq!(warnings(&text), vec![(Some(4), "backend.address".into())]);
    }

    #[test]
    fn every_error_is_reported_in_line_order() {
        let text = format!(
            "{MIN}[limits]\nmax_headers = 1\n[log]\nlevel = \"verbose\"\n[ban]\nwindow = \"0s\"\n"
        );
        let r = read(&text, "t").unwrap_err();
        let got: Vec<_> = r
            .errors
            .iter()
            .map(|e| (e.line, e.key.clone().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(4), "limits.max_headers".to_string()),
                (Some(6), "log.level".to_string()),
                (Some(8), "ban.window".to_string()),
            ]
        );
        // The warnings of a refused file are kept for `check` to print.
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    }

    /// A `tls:` listener needs the certificate files; TLS is for the
    /// public side only; a `tls:` and a `tcp:` socket on one port collide
    /// (both are TCP sockets); a bad `tls.server_names` entry or timeout is
    /// refused.
    #[test]
    fn tls_rules() {
        let keys = |text: &str| -> Vec<String> {
            read(text, "t")
                .map(|_| Vec::new())
                .unwrap_or_else(|r| r.errors.into_iter().filter_map(|e| e.key).collect())
        };
        let base = "[listen]\nadvertise = \"pbx.example.com:5060\"\n";
        let files = "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
        let tls = format!("{base}public = [\"tls:0.0.0.0:5061\", \"tls:[::]:5061\"]\n");
        assert_eq!(keys(&tls), ["tls.cert_file", "tls.key_file"]);
        assert!(keys(&format!("{tls}{files}")).is_empty());
        let clash =
            format!("{base}public = [\"tcp:0.0.0.0:5061\", \"tls:127.0.0.1:5061\"]\n{files}");
        assert_eq!(keys(&clash), ["listen.public"]);
        let inside = format!("{base}internal = [\"udp:127.0.0.1:5070\", \"tls:127.0.0.1:5071\"]\n");
        assert_eq!(keys(&inside), ["listen.internal"]);
        let backend = format!("{base}internal = [\"udp:127.0.0.1:5070\"]\n[backend]\naddress = \"tls:127.0.0.1:5081\"\n");
        assert!(keys(&backend).contains(&"backend.address".to_string()));
        let names = format!("{base}[tls]\nserver_names = [\"bad name\"]\nhello_timeout = \"0s\"\n");
        assert_eq!(keys(&names), ["tls.server_names", "tls.hello_timeout"]);
    }

    /// `ws:` and `wss:` listeners: `wss:` needs the certificate files, both
    /// are public only and collide with `tcp:` on one port; a bad
    /// `ws.path`, origin, header bound or timeout is refused.
    #[test]
    fn ws_rules() {
        let keys = |text: &str| -> Vec<String> {
            read(text, "t")
                .map(|_| Vec::new())
                .unwrap_or_else(|r| r.errors.into_iter().filter_map(|e| e.key).collect())
        };
        let base = "[listen]\nadvertise = \"pbx.example.com:5060\"\n";
        let files = "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
        let ws = format!("{base}public = [\"udp:0.0.0.0:5060\", \"ws:0.0.0.0:8080\"]\n");
        assert!(keys(&ws).is_empty());
        let wss = format!("{base}public = [\"wss:0.0.0.0:8443\"]\n");
        assert_eq!(keys(&wss), ["tls.cert_file", "tls.key_file"]);
        assert!(keys(&format!("{wss}{files}")).is_empty());
        let clash = format!("{base}public = [\"tcp:0.0.0.0:8080\", \"ws:127.0.0.1:8080\"]\n");
        assert_eq!(keys(&clash), ["listen.public"]);
        let inside = format!("{base}internal = [\"udp:127.0.0.1:5070\", \"ws:127.0.0.1:5071\"]\n");
        assert_eq!(keys(&inside), ["listen.internal"]);
        let backend = format!("{base}internal = [\"udp:127.0.0.1:5070\"]\n[backend]\naddress = \"ws:127.0.0.1:5081\"\n");
        assert!(keys(&backend).contains(&"backend.address".to_string()));
        let bad = format!(
            "{base}[ws]\npath = \"ws\"\norigins = [\"https://a.example\", \"a.example\"]\n\
             max_header = 100\nupgrade_timeout = \"0s\"\nping_interval = \"2h\"\n"
        );
        assert_eq!(
            keys(&bad),
            [
                "ws.path",
                "ws.origins",
                "ws.max_header",
                "ws.upgrade_timeout",
                "ws.ping_interval"
            ]
        );
    }

    #[test]
    fn a_missing_key_is_named() {
        let e = err("# comment\n[listen]\npublic = []\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("listen.advertise"))
        );
        let e = err(&format!(
            "{MIN}[[trunk]]\nname = \"a\"\nregistrar = \"r\"\n[[trunk]]\nname = \"b\"\n"
        ));
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(6), Some("trunk.registrar"))
        );
        let e = err("[filter]\n");
        assert_eq!((e.line, e.key.as_deref()), (None, Some("listen")));
    }

    /// `(line, key)` of the first error.
    fn at(text: &str) -> (Option<usize>, Option<String>) {
        let e = err(text);
        (e.line, e.key)
    }

    fn key(k: &str) -> Option<String> {
        Some(k.to_string())
    }

    #[test]
    fn log_level_is_a_level_or_target_directives() {
        for ok in [
            "info",
            "debug",
            "warn",
            "error",
            "off",
            "trace",
            "INFO",
            "sipwarden=debug,info",
            "info,sipwarden::proxy=trace",
            "sipwarden=debug",
        ] {
            parse(&format!("{MIN}[log]\nlevel = \"{ok}\"\n"), "t")
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        // EnvFilter reads a bare word as a target: "verbose" would enable
        // the target "verbose" and silence everything else.
        for bad in [
            "verbose",
            "sipwarden=debug,loud",
            "sipwarden=verbose",
            "sipwarden",
        ] {
            let e = err(&format!("{MIN}[log]\nlevel = \"{bad}\"\n"));
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(4), Some("log.level")),
                "{bad}: {e}"
            );
        }
    }

    /// As many sockets per side as a branch can name (one base-36
    /// character), and no more.
    #[test]
    fn at_most_max_listeners_sockets_per_side() {
        use crate::flow::MAX_LISTENERS;
        let list = |port: usize, n: usize| {
            let v: Vec<String> = (0..n)
                .map(|i| format!("\"udp:127.0.0.1:{}\"", port + i))
                .collect();
            format!("[{}]", v.join(", "))
        };
        let text = |public: usize, internal: usize| {
            format!(
                "[listen]\nadvertise = \"pbx:5060\"\npublic = {}\ninternal = {}\n",
                list(6000, public),
                list(7000, internal)
            )
        };
        parse(&text(MAX_LISTENERS, MAX_LISTENERS), "t").unwrap();
        let e = err(&text(MAX_LISTENERS + 1, 1));
        assert_eq!(e.key.as_deref(), Some("listen.public"), "{e}");
        assert_eq!(e.message, "at most 36 public sockets");
        let e = err(&text(1, MAX_LISTENERS + 1));
        assert_eq!(e.key.as_deref(), Some("listen.internal"), "{e}");
        assert_eq!(e.message, "between 1 and 36 internal sockets");
    }

    #[test]
    fn sockets_that_collide_across_sections_are_refused() {
        // metrics.listen on the default public TCP socket.
        let text = format!("{MIN}[metrics]\nlisten = \"0.0.0.0:5060\"\n");
        assert_eq!(at(&text), (Some(4), key("metrics.listen")));
        // A specific address under a wildcard of the same transport and port.
        let text = format!("{MIN}[metrics]\nlisten = \"127.0.0.1:5060\"\n");
        assert_eq!(at(&text), (Some(4), key("metrics.listen")));
        let text = "[listen]\npublic = [\"udp:0.0.0.0:5060\",\n  \"udp:127.0.0.1:5060\"]\nadvertise = \"pbx:5060\"\n";
        assert_eq!(at(text), (Some(3), key("listen.public")));
        // listen.internal on a public socket: reported on the internal key.
        let text = "[listen]\npublic = [\"udp:0.0.0.0:5060\"]\nadvertise = \"pbx:5060\"\ninternal = \"udp:0.0.0.0:5060\"\n";
        assert_eq!(at(text), (Some(4), key("listen.internal")));
        let text = "[listen]\npublic = [\"udp:127.0.0.1:5060\"]\nadvertise = \"pbx:5060\"\ninternal = [\"tcp:127.0.0.1:5070\", \"udp:0.0.0.0:5060\"]\n";
        assert_eq!(at(text), (Some(4), key("listen.internal")));
        // The backend on one of sipwarden's own sockets.
        let text = format!("{MIN}[backend]\naddress = \"udp:127.0.0.1:5060\"\n");
        assert_eq!(at(&text), (Some(4), key("backend.address")));
        // Legal: UDP and TCP on one port, IPv4 and (v6-only) IPv6 wildcards,
        // metrics on a port of a UDP socket.
        parse(
            "[listen]\npublic = [\"udp:0.0.0.0:5060\", \"tcp:0.0.0.0:5060\", \"udp:[::]:5060\", \"tcp:[::]:5060\"]\n\
             advertise = \"pbx:5060\"\n[metrics]\nlisten = \"127.0.0.1:5070\"\n",
            "t",
        )
        .unwrap();
        // The metrics listener on [::] is dual-stack: it takes IPv4 too.
        let text = format!("{MIN}[metrics]\nlisten = \"[::]:5060\"\n");
        assert_eq!(at(&text), (Some(4), key("metrics.listen")));
    }

    #[test]
    fn advertise_must_be_a_usable_address() {
        for bad in [
            "0.0.0.0:5060",
            "[::]:5060",
            "pbx:0",
            "999.1.1.1:5060",
            "-pbx.example.com:5060",
            "pbx..example.com:5060",
            "224.0.0.1:5060",
        ] {
            let e = err(&format!("[listen]\n\nadvertise = \"{bad}\"\n"));
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(3), Some("listen.advertise")),
                "{bad}: {e}"
            );
        }
        for ok in [
            "pbx:5060",
            "203.0.113.5:5060",
            "[2001:db8::1]:5060",
            "a-b.example.com",
        ] {
            parse(&format!("[listen]\nadvertise = \"{ok}\"\n"), "t")
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn an_unclosed_bracket_is_reported_on_its_line() {
        let text = format!("{MIN}public = [\"udp:0.0.0.0:5060\",\n\n# the next table\n[filter]\ndomains = [\"a.example\"]\n");
        let e = err(&text);
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("unclosed"), "{e}");
        let text = format!("{MIN}[filter\ndomains = [\"a.example\"]\n");
        assert_eq!(err(&text).line, Some(3));
    }

    #[test]
    fn a_key_of_the_second_trunk_is_reported_on_its_line() {
        let text = format!(
            "{MIN}[[trunk]]\nname = \"a\"\nregistrar = \"sip.a.example\"\n\n[[trunk]]\nname = \"a\"\nregistrar = \"sip.b.example\"\n"
        );
        assert_eq!(at(&text), (Some(8), key("trunk.name")));
        let text = format!(
            "{MIN}[[trunk]]\nname = \"a\"\nregistrar = \"sip.a.example\"\nkeepalive = \"5s\"\n[[trunk]]\nname = \"b\"\nregistrar = \"sip.b.example\"\nkeepalive = \"10ms\"\n"
        );
        assert_eq!(at(&text), (Some(10), key("trunk.keepalive")));
    }

    #[test]
    fn a_bad_list_entry_is_reported_on_its_own_line() {
        let text = "[listen]\nadvertise = \"pbx:5060\"\npublic = [\n  \"udp:0.0.0.0:5060\",\n  \"udp:nowhere\",\n]\n";
        assert_eq!(at(text), (Some(5), key("listen.public")));
    }
}
