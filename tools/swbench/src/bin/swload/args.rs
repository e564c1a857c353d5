//! Command line of swload.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// 100% OPTIONS/INVITE addressed by IP: the system under test must drop all.
    Flood,
    /// 100% INVITEs to the secret domain, forwarded to a sink that answers nothing.
    Forward,
    /// 95% flood, 5% full INVITE/200/ACK/BYE/200 calls against an answering sink.
    Mix,
    /// Forward traffic over N persistent TCP connections.
    Tcp,
}

/// SIP load generator for the sipwarden benchmark (loopback only, bounded in count and time).
#[derive(Parser, Debug)]
#[command(version)]
pub struct Args {
    /// Scenario to run.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// System under test (must be a loopback address).
    #[arg(long, default_value = "127.0.0.1:5060")]
    pub target: SocketAddr,
    /// New messages per second, 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to send for (at most 600).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many new messages (1..=1e9).
    #[arg(long, default_value_t = 50_000_000)]
    pub max_count: u64,
    /// Secret domain of legitimate requests.
    #[arg(long, default_value = "pbx.secret.example")]
    pub domain: String,
    /// User part of legitimate Request-URIs.
    #[arg(long, default_value = "1001")]
    pub user: String,
    /// Source addresses 127.0.0.2 .. 127.0.0.(N+1).
    #[arg(long, default_value_t = 4)]
    pub src_addrs: usize,
    /// UDP source ports (sockets) per source address.
    #[arg(long, default_value_t = 2)]
    pub src_ports: usize,
    /// TCP connections (tcp scenario).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Largest batch per sendmmsg / write; at a set rate smaller batches keep ~100 us gaps.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Mix: one new message in N starts a legitimate call (20 = 5%).
    #[arg(long, default_value_t = 20)]
    pub legit_every: u64,
    /// Mix: a call without its final answer after this many ms has failed.
    #[arg(long, default_value_t = 2000)]
    pub exchange_timeout_ms: u64,
    /// SO_SNDBUF of each socket in bytes (0 = kernel default).
    #[arg(long, default_value_t = 4_194_304)]
    pub sndbuf: usize,
}

impl Args {
    /// Checks the bounds that keep a run finite and on this machine.
    pub fn validate(&self) -> Result<(), String> {
        swbench::net::ensure_loopback(&self.target)?;
        if !(self.duration > 0.0 && self.duration <= 600.0) {
            return Err(format!(
                "--duration {} must be within (0, 600] s",
                self.duration
            ));
        }
        if self.rate > 10_000_000 {
            return Err(format!(
                "--rate {} must be at most 10,000,000 (0 = unlimited)",
                self.rate
            ));
        }
        if self.max_count == 0 || self.max_count > 1_000_000_000 {
            return Err(format!(
                "--max-count {} must be within 1..=1e9",
                self.max_count
            ));
        }
        if self.src_ports == 0 || self.src_ports > 64 {
            return Err("--src-ports must be within 1..=64".into());
        }
        if self.connections == 0 || self.connections > 1024 {
            return Err("--connections must be within 1..=1024".into());
        }
        if self.batch == 0 || self.batch > 1024 {
            return Err("--batch must be within 1..=1024".into());
        }
        if self.legit_every == 0 {
            return Err("--legit-every must be at least 1".into());
        }
        if self.exchange_timeout_ms == 0 || self.exchange_timeout_ms > 30_000 {
            return Err("--exchange-timeout-ms must be within 1..=30000".into());
        }
        swbench::net::source_addrs(self.src_addrs)?;
        Ok(())
    }

    /// Sending time in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        (self.duration * 1e9) as u64
    }
}
