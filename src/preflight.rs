//! The config file as start reads it: the core's checks of the text, then
//! what start needs of this host (the key file, the state directory, the
//! addresses, the log filter), asked without changing anything. `check`,
//! start and reload all go through [`load`], so `check` refuses exactly
//! what start would.

use std::net::IpAddr;
use std::path::Path;

use sipwarden_core::config::{
    self, listeners, Config, Diagnostic, Loaded, Rejected, Report, Seg::Key as K,
};

/// How far loading looks beyond the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The text alone.
    TextOnly,
    /// Also what start needs of this host (key file, state directory,
    /// local addresses), asked without changing anything: what `check`,
    /// start and reload use.
    Host,
}

/// Reads and checks a config file. Relative paths inside it
/// (`state.path`, `secret.key_file`) are taken relative to the file.
pub fn load(path: &Path, probe: Probe) -> Result<Loaded, Rejected> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Rejected::one(Diagnostic {
            file: file.clone(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    config::read_with(&text, &file, Some(base), |cfg, r| {
        if let Err(e) = log_filter(&cfg.log.level) {
            r.error(&[K("log"), K("level")], e);
        }
        if probe == Probe::Host {
            host_rules(cfg, r);
        }
    })
}

/// The log filter of a `log.level` value (or of `RUST_LOG`): the core's
/// rule on its words (a bare word must be a level), then the filter's own
/// syntax.
pub fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    config::log_level_words(level)?;
    tracing_subscriber::EnvFilter::try_new(level).map_err(|e| format!("{level:?}: {e}"))
}

/// What start needs of this host, asked without changing anything: the
/// key file readable and valid or creatable, the state file's directory
/// writable, the `[tls]` certificate and key loaded and matching, and
/// every specific address one of this host's. Sockets of a
/// running instance are never bound (only port 0 is).
fn host_rules(cfg: &Config, r: &mut Report) {
    if let Err(e) = crate::secret::check(&cfg.secret.key_file) {
        r.error(&[K("secret"), K("key_file")], e.to_string());
    }
    if let Some(p) = &cfg.state.path {
        if let Err(e) = crate::statefile::check_writable(p) {
            r.error(&[K("state"), K("path")], e);
        }
    }
    if let Err(e) = control_socket(&cfg.control.socket) {
        r.error(&[K("control"), K("socket")], e);
    }
    // The pair loads and matches: what every handshake needs, known now.
    if let Err(e) = crate::transport::tls::from_settings(&cfg.tls) {
        r.error(&[K("tls"), K("cert_file")], e);
    }
    // Only a named CA file can refuse the client side; the system's roots
    // (300 files here) are read once, by the server that uses them.
    if cfg.tls.ca_file.is_some() {
        if let Err(e) = crate::transport::tls::client_config(&cfg.tls) {
            r.error(&[K("tls"), K("ca_file")], e);
        }
    }
    let mut seen: Vec<IpAddr> = Vec::new();
    for l in listeners(cfg) {
        let ip = l.addr.ip();
        if ip.is_unspecified() || seen.contains(&ip) {
            continue;
        }
        seen.push(ip);
        if !crate::transport::address_is_local(ip) {
            r.error(
                &l.path,
                format!(
                    "{ip} is not an address of this host: {} cannot be bound",
                    l.spec()
                ),
            );
        }
    }
}

/// Whether start could make the control socket at `path` (`""`: off):
/// its directory creatable or writable, and the path free or a socket
/// (a stale one is replaced at start). Creates nothing.
fn control_socket(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(()),
        Ok(_) => Err(format!(
            "{} exists and is not a socket: remove it or choose another path",
            path.display()
        )),
        Err(_) => crate::files::can_create(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const MIN: &str = "[listen]\nadvertise = \"pbx.example.com:5060\"\n";

    /// A scratch directory for the file checks.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sw-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_key_file_that_cannot_be_created_is_refused() {
        let d = scratch("keyfile");
        // A regular file where the key's directory should be: the directory
        // cannot be created, not even by root.
        std::fs::write(d.join("blocker"), "x").unwrap();
        let cfg = d.join("c.toml");
        std::fs::write(
            &cfg,
            format!("{MIN}[secret]\nkey_file = \"blocker/sub/secret\"\n"),
        )
        .unwrap();
        let e = load(&cfg, Probe::Host).unwrap_err().first();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(4), Some("secret.key_file")),
            "{e}"
        );
        // Creatable: fine, and check creates nothing.
        std::fs::write(&cfg, format!("{MIN}[secret]\nkey_file = \"new/secret\"\n")).unwrap();
        load(&cfg, Probe::Host).unwrap();
        assert!(!d.join("new").exists());
        // Present but not a key.
        std::fs::write(d.join("bad"), "not hex").unwrap();
        std::fs::write(&cfg, format!("{MIN}[secret]\nkey_file = \"bad\"\n")).unwrap();
        let e = load(&cfg, Probe::Host).unwrap_err().first();
        assert!(e.message.contains("64 hex digits"), "{e}");
        // The state file's directory likewise.
        std::fs::write(
            &cfg,
            format!(
                "{MIN}[state]\npath = \"blocker/state\"\n[secret]\nkey_file = \"new/secret\"\n"
            ),
        )
        .unwrap();
        let e = load(&cfg, Probe::Host).unwrap_err().first();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(4), Some("state.path")),
            "{e}"
        );
        // An address that is not this host's (TEST-NET-1): start could not
        // bind it. The text alone is fine.
        let text = format!(
            "{MIN}public = [\"udp:0.0.0.0:5060\",\n  \"udp:192.0.2.1:5062\"]\n[secret]\nkey_file = \"new/secret\"\n"
        );
        std::fs::write(&cfg, &text).unwrap();
        let e = load(&cfg, Probe::Host).unwrap_err().first();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(4), Some("listen.public")),
            "{e}"
        );
        assert!(e.message.contains("not an address of this host"), "{e}");
        assert!(load(&cfg, Probe::TextOnly).is_ok());
        // The control socket: under a regular file, or a regular file
        // itself, refused; the same path as the key refused by the text.
        for (sock, what) in [
            ("blocker/sub/control.sock", "is not a directory"),
            ("blocker", "is not a socket"),
            ("new/secret", "must not be the path"),
        ] {
            std::fs::write(
                &cfg,
                format!(
                    "{MIN}[secret]\nkey_file = \"new/secret\"\n[control]\nsocket = \"{sock}\"\n"
                ),
            )
            .unwrap();
            let e = load(&cfg, Probe::Host).unwrap_err().first();
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(6), Some("control.socket")),
                "{e}"
            );
            assert!(e.message.contains(what), "{sock}: {e}");
        }
        std::fs::write(
            &cfg,
            format!(
                "{MIN}[secret]\nkey_file = \"new/secret\"\n[control]\nsocket = \"run/c.sock\"\n"
            ),
        )
        .unwrap();
        load(&cfg, Probe::Host).unwrap();
        assert!(!d.join("run").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// `check` (and a reload) load the `[tls]` pair: a key of another
    /// certificate, or a file that is no PEM, is refused on `tls.cert_file`;
    /// a `tls:` listener without the files is refused by the text.
    #[test]
    fn the_tls_pair_must_load_and_match() {
        let d = scratch("tls");
        let a = rcgen::generate_simple_self_signed(vec!["a.example.com".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.example.com".into()]).unwrap();
        std::fs::write(d.join("a.pem"), a.cert.pem()).unwrap();
        std::fs::write(d.join("a.key"), a.signing_key.serialize_pem()).unwrap();
        std::fs::write(d.join("b.key"), b.signing_key.serialize_pem()).unwrap();
        std::fs::write(d.join("junk"), "not pem").unwrap();
        let cfg = d.join("c.toml");
        let with = |cert: &str, key: &str| {
            format!(
                "{MIN}public = [\"tls:127.0.0.1:0\"]\n[secret]\nkey_file = \"new/secret\"\n\
                 [tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
            )
        };
        std::fs::write(&cfg, with("a.pem", "a.key")).unwrap();
        load(&cfg, Probe::Host).unwrap();
        for (cert, key, what) in [
            ("a.pem", "b.key", "does not belong to the certificate"),
            ("junk", "a.key", "no PEM certificate"),
            ("a.pem", "junk", "no PEM private key"),
            ("missing.pem", "a.key", "missing.pem"),
        ] {
            std::fs::write(&cfg, with(cert, key)).unwrap();
            let e = load(&cfg, Probe::Host).unwrap_err().first();
            assert_eq!(e.key.as_deref(), Some("tls.cert_file"), "{e}");
            assert!(e.message.contains(what), "{cert} {key}: {e}");
            // The text alone does not read the files.
            assert!(load(&cfg, Probe::TextOnly).is_ok());
        }
        std::fs::write(
            &cfg,
            format!("{MIN}public = [\"tls:127.0.0.1:0\"]\n[secret]\nkey_file = \"new/secret\"\n"),
        )
        .unwrap();
        let e = load(&cfg, Probe::TextOnly).unwrap_err().first();
        assert_eq!(e.key.as_deref(), Some("tls.cert_file"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_log_filter_takes_levels_and_directives_only() {
        for ok in [
            "info",
            "sipwarden=debug,info",
            "info,sipwarden::proxy=trace",
        ] {
            log_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["verbose", "sipwarden=verbose", "sipwarden"] {
            assert!(log_filter(bad).is_err(), "{bad}");
        }
    }
}
