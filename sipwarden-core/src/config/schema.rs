//! The config file's shape (every key, its default and meaning:
//! `docs/configuration.md`). Key names are an interface: they may be
//! added, never renamed; a default changes only with the reason in the docs.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::types::{Cidr, Dur, HostPort, SocketSpec};

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default, rename = "trunk")]
    pub trunks: Vec<Trunk>,
    #[serde(default)]
    pub nat: Nat,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub ban: Ban,
    #[serde(default)]
    pub allow: CidrList,
    #[serde(default)]
    pub deny: CidrList,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub state: State,
    #[serde(default)]
    pub secret: Secret,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub dialog: Dialog,
    #[serde(default)]
    pub registration: Registration,
    #[serde(default)]
    pub tcp: Tcp,
}

/// One value or a list of values. Deserialized by hand so that a bad
/// value reports the value's own error, not "no variant matched".
#[derive(Clone, Debug)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(serde::de::value::StrDeserializer::new(v)).map(OneOrMany::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(OneOrMany::Many(v))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<T: Clone> OneOrMany<T> {
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Where the world reaches the PBX.
    #[serde(default = "default_public")]
    pub public: Vec<SocketSpec>,
    /// Asterisk's outbound proxy; also the socket sipwarden talks to the
    /// backend from.
    #[serde(default = "default_internal")]
    pub internal: OneOrMany<SocketSpec>,
    /// Public host and port written into Via, Record-Route, Path, Contact.
    pub advertise: HostPort,
    /// Sockets (and threads) per UDP listener, sharing the address with
    /// SO_REUSEPORT; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// Datagrams a UDP worker takes per receive system call (`recvmmsg`).
    #[serde(default = "d_udp_batch")]
    pub udp_batch: usize,
    /// Under a flood, how long a UDP worker may wait before its next
    /// receive so that it reads a fuller batch: a wake-up costs as much as
    /// receiving dozens of datagrams. The most it adds to a message's
    /// latency, and only while batches arrive well filled; "0us" = never.
    #[serde(default = "d_udp_coalesce")]
    pub udp_coalesce: Dur,
    /// Receive buffer asked of the kernel for each UDP socket (bytes):
    /// what a flood or a burst may queue while the workers are busy. The
    /// kernel grants at most `net.core.rmem_max` (a warning says so).
    #[serde(default = "d_udp_rcvbuf")]
    pub udp_rcvbuf: usize,
}

fn d_udp_rcvbuf() -> usize {
    4 << 20
}

fn d_udp_batch() -> usize {
    64
}

fn d_udp_coalesce() -> Dur {
    Dur(std::time::Duration::from_micros(200))
}

fn default_public() -> Vec<SocketSpec> {
    vec![
        "udp:0.0.0.0:5060".parse().expect("literal"),
        "tcp:0.0.0.0:5060".parse().expect("literal"),
    ]
}

fn default_internal() -> OneOrMany<SocketSpec> {
    OneOrMany::One("udp:127.0.0.1:5070".parse().expect("literal"))
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Asterisk's own transport address.
    #[serde(default = "default_backend")]
    pub address: SocketSpec,
}

impl Default for Backend {
    fn default() -> Self {
        Backend {
            address: default_backend(),
        }
    }
}

fn default_backend() -> SocketSpec {
    "udp:127.0.0.1:5080".parse().expect("literal")
}

/// Which headers name the destination domain for admission step 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchField {
    RequestUri,
    To,
    From,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum OnReject {
    #[serde(rename = "drop")]
    Drop,
    #[serde(rename = "403")]
    Forbidden,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Monitor,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// The secret domains; `*.example.com` matches its subdomains.
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default = "default_match", rename = "match")]
    pub match_: Vec<MatchField>,
    #[serde(default = "default_on_reject")]
    pub on_reject: OnReject,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Case-insensitive substrings of User-Agent that are always dropped.
    #[serde(default = "default_user_agents")]
    pub user_agents: Vec<String>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            domains: Vec::new(),
            match_: default_match(),
            on_reject: default_on_reject(),
            mode: default_mode(),
            user_agents: default_user_agents(),
        }
    }
}

fn default_match() -> Vec<MatchField> {
    vec![MatchField::RequestUri, MatchField::To]
}
fn default_on_reject() -> OnReject {
    OnReject::Drop
}
fn default_mode() -> Mode {
    Mode::Enforce
}

/// User-Agent substrings of well-known SIP scanners and dialers.
pub fn default_user_agents() -> Vec<String> {
    [
        "friendly-scanner",
        "sipvicious",
        "sipcli",
        "sip-scan",
        "sundayddr",
        "iWar",
        "VaxSIPUserAgent",
        "VaxIPUserAgent",
        "pplsip",
        "SIPBomber",
        "sipptk",
        "smap",
        "Cisco-SIPGateway-Scanner",
        "Asterisk PBX scanner",
        "PortSIP VoIP SDK",
        "voipscan",
        "SIPScan",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    pub name: String,
    /// Registrar host (or host:port) that Asterisk registers to.
    pub registrar: String,
    /// Extra source ranges of the provider (media gateways, SBCs).
    #[serde(default)]
    pub allow: Vec<Cidr>,
    /// CRLF keepalive interval while registered; absent = off.
    #[serde(default)]
    pub keepalive: Option<Dur>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nat {
    /// Rewrite Contact to the observed source instead of adding Path.
    #[serde(default)]
    pub fix_contact: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Messages per second per source (token bucket refill).
    #[serde(default = "d_rate")]
    pub rate: u32,
    #[serde(default = "d_burst")]
    pub burst: u32,
    /// Separate REGISTER budget per source, so a phone's registrations are
    /// not starved by its calls and subscriptions.
    #[serde(default = "d_register_rate")]
    pub register_rate: u32,
    #[serde(default = "d_register_burst")]
    pub register_burst: u32,
    #[serde(default = "d_max_message")]
    pub max_message: usize,
    #[serde(default = "d_max_headers")]
    pub max_headers: usize,
    /// Longest header line, in bytes.
    #[serde(default = "d_max_line")]
    pub max_line: usize,
    /// Cap of the per-source rate table.
    #[serde(default = "d_max_sources")]
    pub max_sources: usize,
}

// The budgets are sized for an office of 100 phones behind one NAT
// address booting at once, not for one phone (docs/admission.md, "Rate
// budgets and bans"): going over them only delays messages, it never bans.
fn d_rate() -> u32 {
    50
}
/// 100 phones x 10 requests at boot (SUBSCRIBEs for the mailbox and four
/// BLF keys, each challenged once).
fn d_burst() -> u32 {
    1000
}
/// Refills the REGISTER burst in 40 s: a re-registration of 100 phones
/// (200 REGISTERs with the challenge) every 20 s is absorbed.
fn d_register_rate() -> u32 {
    10
}
/// 100 phones x 2 REGISTERs (challenge, credentials) x 2: each once
/// retransmitted (timer E, 500 ms) while a busy PBX answers slowly, or
/// a boot followed at once by a full re-registration.
fn d_register_burst() -> u32 {
    400
}
fn d_max_message() -> usize {
    65535
}
fn d_max_headers() -> usize {
    128
}
fn d_max_line() -> usize {
    8192
}
fn d_max_sources() -> usize {
    100_000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate: d_rate(),
            burst: d_burst(),
            register_rate: d_register_rate(),
            register_burst: d_register_burst(),
            max_message: d_max_message(),
            max_headers: d_max_headers(),
            max_line: d_max_line(),
            max_sources: d_max_sources(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    /// Rejected messages within `window` that ban a source (0 = never).
    #[serde(default = "d_after_rejects")]
    pub after_rejects: u32,
    /// Failed authentications within `window` (0 = never): 403, or 401/407
    /// to a request with credentials unless the nonce was stale; the same
    /// credentials answered again count once.
    #[serde(default = "d_after_auth")]
    pub after_auth_failures: u32,
    #[serde(default = "d_window")]
    pub window: Dur,
    #[serde(default = "d_ban_duration")]
    pub duration: Dur,
    #[serde(default = "d_max_bans")]
    pub max_entries: usize,
}

fn d_after_rejects() -> u32 {
    20
}
fn d_after_auth() -> u32 {
    5
}
fn d_window() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
fn d_ban_duration() -> Dur {
    Dur(std::time::Duration::from_secs(900))
}
fn d_max_bans() -> usize {
    100_000
}

impl Default for Ban {
    fn default() -> Self {
        Ban {
            after_rejects: d_after_rejects(),
            after_auth_failures: d_after_auth(),
            window: d_window(),
            duration: d_ban_duration(),
            max_entries: d_max_bans(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrList {
    #[serde(default)]
    pub cidrs: Vec<Cidr>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Prometheus text at http://LISTEN/metrics; absent = off.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Period of the one-line summary in the log ("0s" = off).
    #[serde(default = "d_summary")]
    pub summary_interval: Dur,
}

fn d_summary() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: None,
            summary_interval: d_summary(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Registrations and confirmed dialogs, kept across restarts.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Debounce of state-file writes.
    #[serde(default = "d_save_interval")]
    pub save_interval: Dur,
}

fn d_save_interval() -> Dur {
    Dur(std::time::Duration::from_secs(2))
}

impl Default for State {
    fn default() -> Self {
        State {
            path: None,
            save_interval: d_save_interval(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// 32 random bytes (hex) that sign branches and tokens; created when
    /// missing.
    #[serde(default = "d_key_file")]
    pub key_file: PathBuf,
}

/// In the state directory: the key is state sipwarden creates, and the
/// shipped systemd unit can write only there (`docs/configuration.md`,
/// "Changed defaults").
fn d_key_file() -> PathBuf {
    PathBuf::from("/var/lib/sipwarden/secret")
}

impl Default for Secret {
    fn default() -> Self {
        Secret {
            key_file: d_key_file(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    #[serde(default = "d_log_format")]
    pub format: LogFormat,
    /// A level ("info") or tracing `TARGET=LEVEL` directives
    /// ("sipwarden=debug,info"); a bare word must be a level (see
    /// [`super::log_level_words`]).
    #[serde(default = "d_log_level")]
    pub level: String,
    /// Drop log lines per second, all sources together; the rest are
    /// counted and reported as suppressed.
    #[serde(default = "d_drop_rate")]
    pub drop_rate: u32,
}

fn d_log_format() -> LogFormat {
    LogFormat::Human
}
fn d_log_level() -> String {
    "info".into()
}
fn d_drop_rate() -> u32 {
    10
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: d_log_format(),
            level: d_log_level(),
            drop_rate: d_drop_rate(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dialog {
    #[serde(default = "d_dialogs")]
    pub max_entries: usize,
    /// A confirmed dialog without traffic for this long is forgotten.
    #[serde(default = "d_max_lifetime")]
    pub max_lifetime: Dur,
    /// An INVITE without a final answer is forgotten after this.
    #[serde(default = "d_early")]
    pub early_timeout: Dur,
    /// Time an ended dialog stays for retransmissions (64*T1).
    #[serde(default = "d_linger")]
    pub linger: Dur,
}

fn d_dialogs() -> usize {
    100_000
}
fn d_max_lifetime() -> Dur {
    Dur(std::time::Duration::from_secs(4 * 3600))
}
fn d_early() -> Dur {
    Dur(std::time::Duration::from_secs(180))
}
fn d_linger() -> Dur {
    Dur(std::time::Duration::from_secs(32))
}

impl Default for Dialog {
    fn default() -> Self {
        Dialog {
            max_entries: d_dialogs(),
            max_lifetime: d_max_lifetime(),
            early_timeout: d_early(),
            linger: d_linger(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Trunk and phone-flow registrations kept at most.
    #[serde(default = "d_regs")]
    pub max_entries: usize,
    /// A registration stays usable this long past its granted expiry.
    #[serde(default = "d_grace")]
    pub grace: Dur,
}

fn d_regs() -> usize {
    100_000
}
fn d_grace() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}

impl Default for Registration {
    fn default() -> Self {
        Registration {
            max_entries: d_regs(),
            grace: d_grace(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tcp {
    #[serde(default = "d_tcp_max")]
    pub max_connections: usize,
    /// A connection with no message for this long is closed.
    #[serde(default = "d_tcp_idle")]
    pub idle_timeout: Dur,
    #[serde(default = "d_tcp_connect")]
    pub connect_timeout: Dur,
    /// At SIGTERM, the longest queued writes get to reach their peers
    /// before the process exits (it exits as soon as they have).
    #[serde(default = "d_tcp_drain")]
    pub drain_timeout: Dur,
}

fn d_tcp_max() -> usize {
    4096
}
fn d_tcp_idle() -> Dur {
    Dur(std::time::Duration::from_secs(600))
}
fn d_tcp_connect() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}
fn d_tcp_drain() -> Dur {
    Dur(std::time::Duration::from_millis(500))
}

impl Default for Tcp {
    fn default() -> Self {
        Tcp {
            max_connections: d_tcp_max(),
            idle_timeout: d_tcp_idle(),
            connect_timeout: d_tcp_connect(),
            drain_timeout: d_tcp_drain(),
        }
    }
}
