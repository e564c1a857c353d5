//! Command line of swtls.

use clap::{Parser, ValueEnum};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// What to do against the TLS listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Full handshakes, no resumption, by `--concurrency` clients; each connection closed after it.
    Handshake,
    /// ClientHellos with a wrong server name and with none; counts what the server did with them.
    Reject,
    /// TCP connections that send nothing and close: what a connection costs
    /// the server by itself, the floor under `reject`.
    Connect,
    /// Opens `--connections` TLS connections and holds them until SIGTERM or `--duration`.
    Idle,
    /// INVITEs to the secret domain over `--connections` established TLS connections.
    Forward,
}

/// TLS load generator for the sipwarden benchmark (loopback only, bounded in count and time).
#[derive(Parser, Debug)]
#[command(version)]
pub struct Args {
    /// What to do.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// TLS listener under test (must be a loopback address).
    #[arg(long, default_value = "127.0.0.1:5061")]
    pub target: SocketAddr,
    /// Server names to send, used in turn by successive connections; `-`
    /// sends none. Default: the secret domain (handshake, idle, forward),
    /// `scanner.invalid` and none (reject).
    #[arg(long)]
    pub sni: Vec<String>,
    /// Client threads making connections (handshake, reject, idle).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Connections to open and hold (idle) or to send over (forward).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Seconds to run (handshake, reject, forward) or to hold at most (idle); at most 3600.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Forward: INVITEs per second over all connections, 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Forward and idle: plain TCP instead of TLS (the reference that shows
    /// what TLS adds; an idle plain connection sends nothing).
    #[arg(long)]
    pub plain: bool,
    /// Secret domain (Request-URI of the INVITEs, and the default server name).
    #[arg(long, default_value = "pbx.secret.example")]
    pub domain: String,
    /// User part of the INVITEs' Request-URI.
    #[arg(long, default_value = "1001")]
    pub user: String,
    /// First source address; successive connections use this and the next `--src-addrs - 1`.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))]
    pub src_base: IpAddr,
    /// Source addresses to spread connections over (1..=250).
    #[arg(long, default_value_t = 1)]
    pub src_addrs: usize,
    /// Seconds any connect, read or write may block before the attempt counts as timed out.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Idle: file written (JSON) once every connection was attempted, so a script can sample then.
    #[arg(long)]
    pub ready_file: Option<String>,
    /// Forward: largest batch of INVITEs per write (one TLS record up to 16 KiB).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
}

impl Args {
    /// Refuses what would take load off the machine or run unbounded.
    pub fn validate(&self) -> Result<(), String> {
        swbench::net::ensure_loopback(&self.target)?;
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            return Err(format!(
                "--duration {} must be within (0, 3600]",
                self.duration
            ));
        }
        if !(self.timeout > 0.0 && self.timeout <= 60.0) {
            return Err(format!("--timeout {} must be within (0, 60]", self.timeout));
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            return Err("--concurrency must be within 1..=256".into());
        }
        if self.connections == 0 || self.connections > 100_000 {
            return Err("--connections must be within 1..=100000".into());
        }
        if self.src_addrs == 0 || self.src_addrs > 250 {
            return Err("--src-addrs must be within 1..=250".into());
        }
        if self.batch == 0 || self.batch > 64 {
            return Err("--batch must be within 1..=64".into());
        }
        for i in 0..self.src_addrs {
            swbench::net::ensure_loopback(&SocketAddr::new(source(self.src_base, i)?, 0))?;
        }
        for name in self.server_names().into_iter().flatten() {
            rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| format!("--sni {name}: {e}"))?;
        }
        Ok(())
    }

    /// The server names in the order connections use them (`None` = no SNI).
    pub fn server_names(&self) -> Vec<Option<String>> {
        let defaults: Vec<String> = match self.mode {
            Mode::Reject => vec!["scanner.invalid".into(), "-".into()],
            _ => vec![self.domain.clone()],
        };
        let given = if self.sni.is_empty() {
            &defaults
        } else {
            &self.sni
        };
        given.iter().map(|s| parse_sni(s)).collect()
    }

    /// `--duration` in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        (self.duration * 1e9) as u64
    }
}

/// `-` (or an empty value) means "send no server name".
pub fn parse_sni(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() || s == "-" {
        None
    } else {
        Some(s.to_ascii_lowercase())
    }
}

/// The `i`-th source address after `base` (IPv4 only: loopback 127/8 has room).
pub fn source(base: IpAddr, i: usize) -> Result<IpAddr, String> {
    match base {
        IpAddr::V4(v4) => {
            let n = u32::from(v4)
                .checked_add(i as u32)
                .ok_or_else(|| format!("source {base} + {i} overflows"))?;
            Ok(IpAddr::V4(Ipv4Addr::from(n)))
        }
        IpAddr::V6(_) if i == 0 => Ok(base),
        IpAddr::V6(_) => Err("only one IPv6 source address (::1) exists".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["swtls", "--target", "127.0.0.1:25061"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    #[test]
    fn sni_values() {
        assert_eq!(parse_sni("-"), None);
        assert_eq!(parse_sni(""), None);
        assert_eq!(
            parse_sni(" PBX.Secret.Example "),
            Some("pbx.secret.example".into())
        );
    }

    #[test]
    fn default_names_per_mode() {
        let a = args(&["--mode", "handshake", "--domain", "x.example"]);
        assert_eq!(a.server_names(), vec![Some("x.example".to_string())]);
        let r = args(&["--mode", "reject"]);
        assert_eq!(
            r.server_names(),
            vec![Some("scanner.invalid".to_string()), None]
        );
        let g = args(&["--mode", "reject", "--sni", "-", "--sni", "a.example"]);
        assert_eq!(g.server_names(), vec![None, Some("a.example".to_string())]);
        assert!(g.validate().is_ok());
    }

    #[test]
    fn refuses_what_leaves_the_machine_or_is_unbounded() {
        assert!(
            Args::parse_from(["swtls", "--mode", "idle", "--target", "192.0.2.1:5061"])
                .validate()
                .is_err()
        );
        assert!(args(&["--mode", "idle", "--duration", "0"])
            .validate()
            .is_err());
        assert!(args(&["--mode", "idle", "--src-base", "10.0.0.1"])
            .validate()
            .is_err());
        assert!(args(&["--mode", "idle", "--sni", "bad name!"])
            .validate()
            .is_err());
        assert!(args(&["--mode", "idle", "--connections", "10000"])
            .validate()
            .is_ok());
    }

    #[test]
    fn sources_count_up() {
        let b: IpAddr = "127.0.0.250".parse().unwrap();
        assert_eq!(
            source(b, 7).unwrap(),
            "127.0.1.1".parse::<IpAddr>().unwrap()
        );
        assert!(source("::1".parse().unwrap(), 1).is_err());
    }
}
