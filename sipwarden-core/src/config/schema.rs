//! The config file's shape (every key, its default and meaning:
//! `docs/configuration.md`). Key names are an interface: they may be
//! added, never renamed; a default changes only with the reason in the docs.
//!
//! Each default is written once, in its section's `Default` (serde fills
//! a missing key from it: `#[serde(default)]` on the section); `[listen]`,
//! which has a key without a default, keeps its defaults in one `impl`
//! block instead. A test holds `docs/configuration.md` to these values
//! (`sipwarden-core/tests/config_docs.rs`), through the `Serialize` the
//! sections derive for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{Cidr, Dur, HostPort, SocketSpec};

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize)]
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
    #[serde(default)]
    pub control: Control,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub cluster: Cluster,
    #[serde(default)]
    pub ws: Ws,
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

impl<T: Serialize> Serialize for OneOrMany<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OneOrMany::One(t) => t.serialize(s),
            OneOrMany::Many(v) => v.serialize(s),
        }
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

/// A socket written as a literal in the source.
fn socket(s: &str) -> SocketSpec {
    s.parse().expect("literal")
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Where the world reaches the PBX.
    #[serde(default = "Listen::default_public")]
    pub public: Vec<SocketSpec>,
    /// Asterisk's outbound proxy; also the socket sipwarden talks to the
    /// backend from.
    #[serde(default = "Listen::default_internal")]
    pub internal: OneOrMany<SocketSpec>,
    /// Public host and port written into Via, Record-Route, Path, Contact.
    pub advertise: HostPort,
    /// The same for what faces the public side over TLS (a TLS phone's
    /// Record-Route, a provider reached over TLS): the TLS listener's port,
    /// not 5060. Absent: `advertise`'s host with the port of the first
    /// `tls:` public socket.
    #[serde(default)]
    pub advertise_tls: Option<HostPort>,
    /// Sockets (and threads) per UDP listener, sharing the address with
    /// SO_REUSEPORT; 0 = one per core.
    #[serde(default = "Listen::default_workers")]
    pub workers: usize,
    /// Datagrams a UDP worker takes per receive system call (`recvmmsg`).
    #[serde(default = "Listen::default_udp_batch")]
    pub udp_batch: usize,
    /// Under a flood, how long a UDP worker may wait before its next
    /// receive so that it reads a fuller batch: a wake-up costs as much as
    /// receiving dozens of datagrams. The most it adds to a message's
    /// latency, and only while batches arrive well filled; "0us" = never.
    #[serde(default = "Listen::default_udp_coalesce")]
    pub udp_coalesce: Dur,
    /// Receive buffer asked of the kernel for each UDP socket (bytes):
    /// what a flood or a burst may queue while the workers are busy. The
    /// kernel grants at most `net.core.rmem_max` (a warning says so).
    #[serde(default = "Listen::default_udp_rcvbuf")]
    pub udp_rcvbuf: usize,
}

/// The defaults of `[listen]`. `advertise` has none, so `Listen` has no
/// `Default` and serde takes each default from here.
impl Listen {
    fn default_public() -> Vec<SocketSpec> {
        vec![socket("udp:0.0.0.0:5060"), socket("tcp:0.0.0.0:5060")]
    }
    fn default_internal() -> OneOrMany<SocketSpec> {
        OneOrMany::One(socket("udp:127.0.0.1:5070"))
    }
    fn default_workers() -> usize {
        0
    }
    fn default_udp_batch() -> usize {
        64
    }
    fn default_udp_coalesce() -> Dur {
        Dur(Duration::from_micros(200))
    }
    fn default_udp_rcvbuf() -> usize {
        4 << 20
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backend {
    /// Asterisk's own transport address.
    pub address: SocketSpec,
}

impl Default for Backend {
    fn default() -> Self {
        Backend {
            address: socket("udp:127.0.0.1:5080"),
        }
    }
}

/// Which headers name the destination domain for admission step 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchField {
    RequestUri,
    To,
    From,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum OnReject {
    #[serde(rename = "drop")]
    Drop,
    #[serde(rename = "403")]
    Forbidden,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Monitor,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// The secret domains; `*.example.com` matches its subdomains.
    pub domains: Vec<String>,
    #[serde(rename = "match")]
    pub match_: Vec<MatchField>,
    pub on_reject: OnReject,
    pub mode: Mode,
    /// Case-insensitive substrings of User-Agent that are always dropped.
    pub user_agents: Vec<String>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            domains: Vec::new(),
            match_: vec![MatchField::RequestUri, MatchField::To],
            on_reject: OnReject::Drop,
            mode: Mode::Enforce,
            // Well-known SIP scanners and dialers.
            user_agents: [
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
            .map(String::from)
            .to_vec(),
        }
    }
}

/// One `[[trunk]]` table: `name` and `registrar` have no default, the
/// other keys default to empty and absent.
#[derive(Clone, Debug, Deserialize, Serialize)]
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

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Nat {
    /// Rewrite Contact to the observed source instead of adding Path.
    pub fix_contact: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Messages per second per source (token bucket refill).
    pub rate: u32,
    pub burst: u32,
    /// Separate REGISTER budget per source, so a phone's registrations are
    /// not starved by its calls and subscriptions.
    pub register_rate: u32,
    pub register_burst: u32,
    pub max_message: usize,
    pub max_headers: usize,
    /// Longest header line, in bytes.
    pub max_line: usize,
    /// Cap of the per-source rate table.
    pub max_sources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // The scanner's own defaults: one source for both.
        let scan = crate::sip::Limits::default();
        Limits {
            // The budgets are sized for an office of 100 phones behind one
            // NAT address booting at once, not for one phone
            // (docs/admission.md, "Rate budgets and bans"): going over
            // them only delays messages, it never bans.
            rate: 50,
            // 100 phones x 10 requests at boot (SUBSCRIBEs for the mailbox
            // and four BLF keys, each challenged once).
            burst: 1000,
            // Refills the REGISTER burst in 40 s: a re-registration of 100
            // phones (200 REGISTERs with the challenge) every 20 s is
            // absorbed.
            register_rate: 10,
            // 100 phones x 2 REGISTERs (challenge, credentials) x 2: each
            // once retransmitted (timer E, 500 ms) while a busy PBX answers
            // slowly, or a boot followed at once by a full re-registration.
            register_burst: 400,
            max_message: scan.max_message,
            max_headers: scan.max_headers,
            max_line: scan.max_line,
            max_sources: 100_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ban {
    /// Rejected messages within `window` that ban a source (0 = never).
    pub after_rejects: u32,
    /// Failed authentications within `window` (0 = never): 403, or 401/407
    /// to a request with credentials unless the nonce was stale; the same
    /// credentials answered again count once.
    pub after_auth_failures: u32,
    pub window: Dur,
    pub duration: Dur,
    pub max_entries: usize,
    /// Network (CIDR) bans made on the control socket, kept at most: each
    /// is compared with every message from a source not banned by address.
    pub max_cidrs: usize,
}

impl Default for Ban {
    fn default() -> Self {
        Ban {
            after_rejects: 20,
            after_auth_failures: 5,
            window: Dur(Duration::from_secs(60)),
            duration: Dur(Duration::from_secs(900)),
            max_entries: 100_000,
            max_cidrs: 256,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CidrList {
    pub cidrs: Vec<Cidr>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Prometheus text at http://LISTEN/metrics; absent = off.
    pub listen: Option<SocketAddr>,
    /// Period of the one-line summary in the log ("0s" = off).
    pub summary_interval: Dur,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: None,
            summary_interval: Dur(Duration::from_secs(60)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct State {
    /// Registrations and confirmed dialogs, kept across restarts.
    pub path: Option<PathBuf>,
    /// Debounce of state-file writes.
    pub save_interval: Dur,
}

impl Default for State {
    fn default() -> Self {
        State {
            path: None,
            save_interval: Dur(Duration::from_secs(2)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Secret {
    /// 32 random bytes (hex) that sign branches and tokens; created when
    /// missing.
    pub key_file: PathBuf,
}

impl Default for Secret {
    fn default() -> Self {
        Secret {
            // In the state directory: the key is state sipwarden creates,
            // and the shipped systemd unit can write only there
            // (`docs/configuration.md`, "Changed defaults").
            key_file: PathBuf::from("/var/lib/sipwarden/secret"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    pub format: LogFormat,
    /// A level ("info") or tracing `TARGET=LEVEL` directives
    /// ("sipwarden=debug,info"); a bare word must be a level (see
    /// [`super::log_level_words`]).
    pub level: String,
    /// Drop log lines per second, all sources together; the rest are
    /// counted and reported as suppressed.
    pub drop_rate: u32,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Human,
            level: "info".into(),
            drop_rate: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dialog {
    pub max_entries: usize,
    /// A confirmed dialog without traffic for this long is forgotten.
    pub max_lifetime: Dur,
    /// An INVITE without a final answer is forgotten after this.
    pub early_timeout: Dur,
    /// Time an ended dialog stays for retransmissions (64*T1).
    pub linger: Dur,
}

impl Default for Dialog {
    fn default() -> Self {
        Dialog {
            max_entries: 100_000,
            max_lifetime: Dur(Duration::from_secs(4 * 3600)),
            early_timeout: Dur(Duration::from_secs(180)),
            linger: Dur(Duration::from_secs(32)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Registration {
    /// Trunk and phone-flow registrations kept at most.
    pub max_entries: usize,
    /// A registration stays usable this long past its granted expiry.
    pub grace: Dur,
}

impl Default for Registration {
    fn default() -> Self {
        Registration {
            max_entries: 100_000,
            grace: Dur(Duration::from_secs(60)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tcp {
    pub max_connections: usize,
    /// A connection with no message for this long is closed.
    pub idle_timeout: Dur,
    pub connect_timeout: Dur,
    /// At SIGTERM, the longest queued writes get to reach their peers
    /// before the process exits (it exits as soon as they have).
    pub drain_timeout: Dur,
}

impl Default for Tcp {
    fn default() -> Self {
        Tcp {
            max_connections: 4096,
            idle_timeout: Dur(Duration::from_secs(600)),
            connect_timeout: Dur(Duration::from_secs(5)),
            drain_timeout: Dur(Duration::from_millis(500)),
        }
    }
}

/// The control socket (`docs/control.md`): a Unix socket only this host's
/// proxy user reaches, for `sipwarden status`, `bans`, `ban`, `unban`,
/// `trunks` and `sources`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Control {
    /// Path of the Unix socket; `""` = no control socket.
    pub socket: PathBuf,
    /// Clients served at once; more are answered `busy` and closed.
    pub max_connections: usize,
    /// A client that sends no complete request for this long is closed.
    pub timeout: Dur,
    /// Sources each of the top-sources sketch's shards keeps per window:
    /// the sketch is bounded by it whatever the number of sources.
    pub top_sources: usize,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            // systemd's RuntimeDirectory=sipwarden (config/sipwarden.service).
            socket: PathBuf::from("/run/sipwarden/control.sock"),
            max_connections: 8,
            timeout: Dur(Duration::from_secs(10)),
            top_sources: 256,
        }
    }
}

/// The certificate of the `tls:` public listeners and the gate in front of
/// their handshake (`docs/tls.md`): a ClientHello whose server name is no
/// secret domain is closed before the server says anything, so a scanner
/// connecting by IP never sees the certificate.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain, leaf first; required with a `tls:` listener.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the leaf (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: Option<PathBuf>,
    /// Server names admitted besides `filter.domains` (`*.` allowed).
    pub server_names: Vec<String>,
    /// A ClientHello without a server name is closed, unless its source is
    /// a trunk's or in `allow.cidrs`.
    pub require_sni: bool,
    /// The ClientHello must have arrived this long after the accept.
    pub hello_timeout: Dur,
    /// The handshake must have finished this long after the ClientHello.
    pub handshake_timeout: Dur,
    /// PEM certificates trusted, instead of the system's roots, for the
    /// providers sipwarden connects to over TLS (a pinned CA).
    pub ca_file: Option<PathBuf>,
    /// Verify the certificate of a provider reached over TLS. `false`
    /// trusts any certificate (a warning at start says so).
    pub verify: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert_file: None,
            key_file: None,
            server_names: Vec::new(),
            require_sni: true,
            hello_timeout: Dur(Duration::from_secs(5)),
            handshake_timeout: Dur(Duration::from_secs(10)),
            ca_file: None,
            verify: true,
        }
    }
}

/// Several nodes sharing bans and trunk registrations through Redis
/// (`docs/cluster.md`). Off while `redis` names no server.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]` or `rediss://...` (TLS), or a
    /// list of them tried in turn; none (the default) = no cluster.
    pub redis: OneOrMany<String>,
    /// Prefix of the cluster's keys and channel, so that several clusters
    /// share one Redis.
    pub name: String,
    /// This node's name in the records it publishes; "" = the host name.
    pub node: String,
    /// Changes queued toward Redis at most; beyond, a full re-publish
    /// replaces them.
    pub max_outbox: usize,
    /// The longest record (bytes) published or accepted.
    pub max_value: usize,
    /// At start, how long the shared state may take to load before the
    /// node starts from its state file.
    pub load_timeout: Dur,
    /// How often every record this node holds is published again (and
    /// the expired ones removed from Redis).
    pub republish_interval: Dur,
    /// The longest wait between two attempts to reach Redis.
    pub retry_max: Dur,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            redis: OneOrMany::Many(Vec::new()),
            name: "sipwarden".into(),
            node: String::new(),
            max_outbox: 100_000,
            max_value: 4096,
            load_timeout: Dur(Duration::from_secs(3)),
            republish_interval: Dur(Duration::from_secs(300)),
            retry_max: Dur(Duration::from_secs(5)),
        }
    }
}

impl Cluster {
    /// Whether a cluster is configured (`redis` names a server).
    pub fn is_on(&self) -> bool {
        !self.redis.to_vec().is_empty()
    }
}

/// The `ws:` and `wss:` public listeners (`docs/websocket.md`): browser
/// softphones (SIP over WebSocket, RFC 7118). The HTTP upgrade request is
/// checked before any SIP is read: the path, the `sip` subprotocol and the
/// page's web origin.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ws {
    /// The request path the upgrade must ask for (query string ignored).
    pub path: String,
    /// Web origins allowed to open a connection (`https://phone.example.com`,
    /// scheme, host and port as the browser sends them in `Origin`). Absent:
    /// only pages served from the host the browser connected to (the
    /// `Host` header's host, or the TLS server name).
    pub origins: Option<Vec<String>>,
    /// Longest upgrade request head, in bytes.
    pub max_header: usize,
    /// The upgrade request must be complete this long after the accept
    /// (after the TLS handshake for `wss:`).
    pub upgrade_timeout: Dur,
    /// A WebSocket ping goes to each browser this often (NAT bindings and
    /// proxies on the way stay open; the pong counts as traffic for
    /// `tcp.idle_timeout`); `0s` sends none.
    pub ping_interval: Dur,
}

impl Default for Ws {
    fn default() -> Self {
        Ws {
            path: "/ws".to_string(),
            origins: None,
            max_header: 8192,
            upgrade_timeout: Dur(Duration::from_secs(5)),
            ping_interval: Dur(Duration::from_secs(30)),
        }
    }
}
