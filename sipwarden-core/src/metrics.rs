//! Counters of every decision, kept in fixed arrays of atomics so that
//! counting costs no allocation and no lock on the drop path, the result
//! of the last config load, the periodic summary line, and the drop log
//! ([`DropLog`]: its rate limit and its line). Rendering as Prometheus
//! text is pure; serving it over HTTP, and the metrics only the program
//! can read (`process_*`, `sipwarden_build_info`), live in the program.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::flow::{Flow, Side, Transport};
use crate::time::UnixMs;
use crate::verdict::{Disposition, Reason, Verdict};

const SIDES: usize = 2;
const TRANSPORTS: usize = Transport::ALL.len();
const REASONS: usize = Reason::ALL.len();
const DISPOSITIONS: usize = Disposition::ALL.len();
const SLOTS: usize = SIDES * TRANSPORTS * REASONS * DISPOSITIONS;

/// Upper bounds of the processing-time histogram, in nanoseconds: the
/// per-message observation compares integers (no float conversion on every
/// message); the exposition shows them in seconds.
const BUCKETS_NS: [u64; 10] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Events counted outside the per-message matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Event {
    DropLogsSuppressed,
    SendErrors,
    DnsFailures,
    TcpRefused,
    ReloadOk,
    ReloadFailed,
    DialogsRefused,
    RegistrationsRefused,
    Bans,
    Unbans,
    KeepalivesSent,
    StateWrites,
    StateErrors,
    TlsConnectFailures,
    ClusterSent,
    ClusterReceived,
    ClusterRejected,
    ClusterErrors,
    ClusterOverflow,
}

const EVENTS: [(Event, &str, &str); 19] = [
    (
        Event::DropLogsSuppressed,
        "sipwarden_drop_logs_suppressed_total",
        "Drop log lines not written because of the log rate limit",
    ),
    (
        Event::SendErrors,
        "sipwarden_send_errors_total",
        "Messages that could not be sent (socket error, connection gone)",
    ),
    (
        Event::DnsFailures,
        "sipwarden_dns_failures_total",
        "Next hops that did not resolve",
    ),
    (
        Event::TcpRefused,
        "sipwarden_tcp_refused_total",
        "TCP connections refused at tcp.max_connections",
    ),
    (
        Event::ReloadOk,
        "sipwarden_reloads_total{result=\"ok\"}",
        "Config reloads",
    ),
    (
        Event::ReloadFailed,
        "sipwarden_reloads_total{result=\"refused\"}",
        "",
    ),
    (
        Event::DialogsRefused,
        "sipwarden_table_refused_total{table=\"dialogs\"}",
        "Entries a full table refused",
    ),
    (
        Event::RegistrationsRefused,
        "sipwarden_table_refused_total{table=\"registrations\"}",
        "",
    ),
    (Event::Bans, "sipwarden_bans_total", "Sources banned"),
    (Event::Unbans, "sipwarden_unbans_total", "Bans that expired"),
    (
        Event::KeepalivesSent,
        "sipwarden_keepalives_sent_total",
        "CRLF keepalives sent to registered trunks",
    ),
    (
        Event::StateWrites,
        "sipwarden_state_writes_total",
        "State file writes",
    ),
    (
        Event::StateErrors,
        "sipwarden_state_errors_total",
        "State file write or load failures",
    ),
    (
        Event::TlsConnectFailures,
        "sipwarden_tls_connect_failures_total",
        "TLS connections to providers that failed their handshake (certificate not trusted, wrong name, timeout)",
    ),
    (
        Event::ClusterSent,
        "sipwarden_cluster_records_total{direction=\"sent\"}",
        "Cluster records published to Redis, and applied from it",
    ),
    (
        Event::ClusterReceived,
        "sipwarden_cluster_records_total{direction=\"received\"}",
        "",
    ),
    (
        Event::ClusterRejected,
        "sipwarden_cluster_records_rejected_total",
        "Values read from the cluster's Redis keys or channel that are no valid record",
    ),
    (
        Event::ClusterErrors,
        "sipwarden_cluster_errors_total",
        "Failed Redis commands and connections of the cluster link",
    ),
    (
        Event::ClusterOverflow,
        "sipwarden_cluster_outbox_overflow_total",
        "Changes that did not fit in the cluster outbox (a full re-publish carries them)",
    ),
];

/// Shards of the counters. Every message bumps three counters; UDP
/// workers on different cores bumping the same ones would pass their cache
/// lines back and forth on every message, so each thread writes to its own
/// shard (threads are dealt shards in turn) and readers add them up.
const SHARDS: usize = 8;

/// One shard, on cache lines of its own.
#[repr(align(128))]
struct Shard {
    messages: Box<[AtomicU64]>,
    events: [AtomicU64; EVENTS.len()],
    hist: [AtomicU64; BUCKETS_NS.len() + 1],
    hist_sum_ns: AtomicU64,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            messages: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            hist: std::array::from_fn(|_| AtomicU64::new(0)),
            hist_sum_ns: AtomicU64::new(0),
        }
    }
}

/// The shard the current thread writes to.
fn my_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    MINE.with(|m| *m)
}

/// The requests of the control socket, as `sipwarden_control_requests_total`
/// labels them (`request`); `invalid` is a line that names none.
pub const CONTROL_REQUESTS: [&str; 7] = [
    "status", "bans", "ban", "unban", "trunks", "sources", "invalid",
];

/// All counters of one process. Shared by reference; never locked.
pub struct Metrics {
    shards: Box<[Shard]>,
    /// Whether the last load of the config (the start's, or a SIGHUP
    /// reload's) succeeded.
    reload_ok: AtomicBool,
    /// When the config in force was loaded (ms since the epoch; 0 = not
    /// recorded).
    reload_ok_at: AtomicU64,
    /// Control requests by [`CONTROL_REQUESTS`] and result (ok, error):
    /// a few a minute at most, so one counter each, not sharded.
    control: [[AtomicU64; 2]; CONTROL_REQUESTS.len()],
    /// The cluster link: 0 no cluster, 1 Redis unreachable, 2 connected.
    cluster_link: std::sync::atomic::AtomicU8,
    /// The delay of the last record received from another node (ms).
    cluster_lag_ms: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            shards: (0..SHARDS).map(|_| Shard::new()).collect(),
            reload_ok: AtomicBool::new(true),
            reload_ok_at: AtomicU64::new(0),
            control: std::array::from_fn(|_| [AtomicU64::new(0), AtomicU64::new(0)]),
            cluster_link: std::sync::atomic::AtomicU8::new(0),
            cluster_lag_ms: AtomicU64::new(0),
        }
    }
}

/// The result of the last config load, as `sipwarden_config_last_reload_*`
/// shows it and a status command reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastReload {
    /// The last load succeeded: true after a start (a start with a bad
    /// config does not run), false after a refused reload until the next
    /// good one.
    pub success: bool,
    /// When the config in force was loaded: the start, or the last
    /// successful reload. `None` before [`Metrics::loaded`] is called.
    pub last_success: Option<UnixMs>,
}

fn slot(side: Side, t: Transport, r: Reason, d: Disposition) -> usize {
    let s = match side {
        Side::Public => 0,
        Side::Internal => 1,
    };
    let t = match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
        Transport::Ws => 3,
        Transport::Wss => 4,
    };
    ((s * TRANSPORTS + t) * REASONS + r.index()) * DISPOSITIONS + d.index()
}

/// A gauge value supplied at render time (table sizes, connections).
pub struct Gauge<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub value: u64,
}

impl Metrics {
    fn shard(&self) -> &Shard {
        &self.shards[my_shard()]
    }

    /// Sum of one counter over the shards.
    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| f(s).load(Relaxed))
            .fold(0, u64::wrapping_add)
    }

    pub fn count(&self, side: Side, t: Transport, r: Reason, d: Disposition) {
        self.shard().messages[slot(side, t, r, d)].fetch_add(1, Relaxed);
    }

    pub fn get(&self, side: Side, t: Transport, r: Reason, d: Disposition) -> u64 {
        let i = slot(side, t, r, d);
        self.sum(|s| &s.messages[i])
    }

    /// Sum over sides and transports, for tests and the log summary.
    pub fn total(&self, r: Reason, d: Disposition) -> u64 {
        let mut n = 0;
        for side in [Side::Public, Side::Internal] {
            for t in Transport::ALL {
                n += self.get(side, t, r, d);
            }
        }
        n
    }

    /// Sum over every reason with this disposition.
    pub fn total_by(&self, d: Disposition) -> u64 {
        Reason::ALL.iter().map(|r| self.total(*r, d)).sum()
    }

    /// Every message counter with its labels, summed over the shards in
    /// one pass: for checks of which counters one message moved (the fuzz
    /// invariants), never on the message path.
    pub fn messages(&self) -> Vec<(Side, Transport, Reason, Disposition, u64)> {
        let mut sums = vec![0u64; SLOTS];
        for sh in self.shards.iter() {
            for (sum, c) in sums.iter_mut().zip(sh.messages.iter()) {
                *sum = sum.wrapping_add(c.load(Relaxed));
            }
        }
        let mut out = Vec::with_capacity(SLOTS);
        for side in [Side::Public, Side::Internal] {
            for t in Transport::ALL {
                for r in Reason::ALL {
                    for d in Disposition::ALL {
                        out.push((side, t, r, d, sums[slot(side, t, r, d)]));
                    }
                }
            }
        }
        out
    }

    pub fn event(&self, e: Event) {
        self.shard().events[e as usize].fetch_add(1, Relaxed);
    }

    /// The config was loaded at start, at `now`: a success, so that an
    /// alert on a failed reload does not fire at every start, and the
    /// timestamp of the config in force. Not a reload: no reload counted.
    pub fn loaded(&self, now: UnixMs) {
        self.reload_ok_at.store(now.0, Relaxed);
        self.reload_ok.store(true, Relaxed);
    }

    /// A SIGHUP reload at `now` was applied (`ok`) or refused: counted in
    /// `sipwarden_reloads_total`, and the result of the last load.
    pub fn reloaded(&self, now: UnixMs, ok: bool) {
        if ok {
            self.event(Event::ReloadOk);
            self.reload_ok_at.store(now.0, Relaxed);
        } else {
            self.event(Event::ReloadFailed);
        }
        self.reload_ok.store(ok, Relaxed);
    }

    /// The result of the last config load and when the config in force
    /// was loaded.
    pub fn last_reload(&self) -> LastReload {
        let at = self.reload_ok_at.load(Relaxed);
        LastReload {
            success: self.reload_ok.load(Relaxed),
            last_success: (at != 0).then_some(UnixMs(at)),
        }
    }

    /// The cluster link is up (`Some(true)`), down (`Some(false)`); `None`
    /// without a cluster. Set by the program's link.
    pub fn set_cluster_up(&self, up: bool) {
        self.cluster_link.store(1 + u8::from(up), Relaxed);
    }

    /// The link's state: `None` without a cluster.
    pub fn cluster_up(&self) -> Option<bool> {
        match self.cluster_link.load(Relaxed) {
            0 => None,
            n => Some(n == 2),
        }
    }

    /// How long the last record from another node took to arrive (ms).
    pub fn set_cluster_lag(&self, ms: u64) {
        self.cluster_lag_ms.store(ms, Relaxed);
    }

    pub fn cluster_lag(&self) -> u64 {
        self.cluster_lag_ms.load(Relaxed)
    }

    pub fn events(&self, e: Event) -> u64 {
        self.sum(|s| &s.events[e as usize])
    }

    /// Counts a control request named `request` (one of
    /// [`CONTROL_REQUESTS`]; another name counts as `invalid`).
    pub fn control_request(&self, request: &str, ok: bool) {
        let i = CONTROL_REQUESTS
            .iter()
            .position(|r| *r == request)
            .unwrap_or(CONTROL_REQUESTS.len() - 1);
        self.control[i][usize::from(!ok)].fetch_add(1, Relaxed);
    }

    /// Control requests counted for `request`, with `ok` or not.
    pub fn control_requests(&self, request: &str, ok: bool) -> u64 {
        CONTROL_REQUESTS
            .iter()
            .position(|r| *r == request)
            .map_or(0, |i| self.control[i][usize::from(!ok)].load(Relaxed))
    }

    /// Records the time one message took to process.
    pub fn observe_ns(&self, ns: u64) {
        let i = BUCKETS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BUCKETS_NS.len());
        let sh = self.shard();
        sh.hist[i].fetch_add(1, Relaxed);
        sh.hist_sum_ns.fetch_add(ns, Relaxed);
    }

    /// Messages dropped (or that monitor mode would have dropped) for
    /// `reason`, over sides and transports.
    pub fn drops(&self, reason: Reason) -> u64 {
        self.total(reason, Disposition::Dropped) + self.total(reason, Disposition::WouldDrop)
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let mut o = String::with_capacity(8192);
        o.push_str("# HELP sipwarden_messages_total SIP messages by side, transport, reason and what was done with them\n");
        o.push_str("# TYPE sipwarden_messages_total counter\n");
        for side in [Side::Public, Side::Internal] {
            for t in Transport::ALL {
                for r in Reason::ALL {
                    for d in Disposition::ALL {
                        let v = self.get(side, t, r, d);
                        if v > 0 {
                            let _ = writeln!(
                                o,
                                "sipwarden_messages_total{{side=\"{}\",transport=\"{}\",reason=\"{}\",disposition=\"{}\"}} {v}",
                                side.as_str(),
                                t.as_str(),
                                r.as_str(),
                                d.as_str()
                            );
                        }
                    }
                }
            }
        }
        let last = self.last_reload();
        let _ = writeln!(
            o,
            "# HELP sipwarden_config_last_reload_success Whether the last config load (the start or a SIGHUP reload) succeeded\n\
             # TYPE sipwarden_config_last_reload_success gauge\n\
             sipwarden_config_last_reload_success {}\n\
             # HELP sipwarden_config_last_reload_success_timestamp_seconds When the config in force was loaded (the start or the last successful reload), Unix time\n\
             # TYPE sipwarden_config_last_reload_success_timestamp_seconds gauge\n\
             sipwarden_config_last_reload_success_timestamp_seconds {}.{:03}",
            u8::from(last.success),
            last.last_success.map_or(0, |t| t.0 / 1000),
            last.last_success.map_or(0, |t| t.0 % 1000),
        );
        let mut last_family = "";
        for (e, name, help) in EVENTS {
            let family = name.split('{').next().unwrap_or(name);
            if family != last_family {
                let _ = writeln!(o, "# HELP {family} {help}\n# TYPE {family} counter");
                last_family = family;
            }
            let _ = writeln!(o, "{name} {}", self.events(e));
        }
        o.push_str("# HELP sipwarden_control_requests_total Requests on the control socket, by request and result\n");
        o.push_str("# TYPE sipwarden_control_requests_total counter\n");
        for (i, request) in CONTROL_REQUESTS.iter().enumerate() {
            for (j, result) in ["ok", "error"].iter().enumerate() {
                let _ = writeln!(
                    o,
                    "sipwarden_control_requests_total{{request=\"{request}\",result=\"{result}\"}} {}",
                    self.control[i][j].load(Relaxed)
                );
            }
        }
        if let Some(up) = self.cluster_up() {
            let lag = self.cluster_lag();
            let _ = writeln!(
                o,
                "# HELP sipwarden_cluster_up Whether the cluster link reaches Redis\n\
                 # TYPE sipwarden_cluster_up gauge\n\
                 sipwarden_cluster_up {}\n\
                 # HELP sipwarden_cluster_lag_seconds How long the last record from another node took to arrive\n\
                 # TYPE sipwarden_cluster_lag_seconds gauge\n\
                 sipwarden_cluster_lag_seconds {}.{:03}",
                u8::from(up),
                lag / 1000,
                lag % 1000
            );
        }
        for g in gauges {
            let _ = writeln!(
                o,
                "# HELP {} {}\n# TYPE {} gauge\n{} {}",
                g.name, g.help, g.name, g.name, g.value
            );
        }
        o.push_str(
            "# HELP sipwarden_processing_seconds Time to decide on and rewrite one message\n",
        );
        o.push_str("# TYPE sipwarden_processing_seconds histogram\n");
        let mut cum = 0;
        for (i, ns) in BUCKETS_NS.iter().enumerate() {
            cum += self.sum(|s| &s.hist[i]);
            // Division by the exact 1e9 gives the double nearest the bound.
            let b = *ns as f64 / 1e9;
            let _ = writeln!(
                o,
                "sipwarden_processing_seconds_bucket{{le=\"{b:e}\"}} {cum}"
            );
        }
        cum += self.sum(|s| &s.hist[BUCKETS_NS.len()]);
        let _ = writeln!(
            o,
            "sipwarden_processing_seconds_bucket{{le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            o,
            "sipwarden_processing_seconds_sum {}",
            self.sum(|s| &s.hist_sum_ns) as f64 * 1e-9
        );
        let _ = writeln!(o, "sipwarden_processing_seconds_count {cum}");
        o
    }
}

/// Declares [`Metrics::log_summary`] from one list of `Variant => "field"`
/// arms, one per [`Reason`]: tracing needs each field name written out as
/// a literal, and a test holds the list to `Reason::ALL` and its labels.
macro_rules! summary_line {
    ($($variant:ident => $field:literal,)*) => {
        /// The reasons the summary line names, with their field names.
        #[cfg(test)]
        const SUMMARY_REASONS: &[(Reason, &str)] = &[$((Reason::$variant, $field)),*];

        impl Metrics {
            /// Logs the periodic summary at level info: the messages so
            /// far by disposition, `tcp` (open TCP connections), and the
            /// drops by reason (those not zero), each count a field of
            /// its own: with `log.format = "json"` a number a log system
            /// can sum and graph, not one preformatted string.
            pub fn log_summary(&self, tcp: usize) {
                let nonzero = |r: Reason| Some(self.drops(r)).filter(|n| *n > 0);
                tracing::info!(
                    target: "sipwarden",
                    forwarded = self.total_by(Disposition::Forwarded),
                    replied = self.total_by(Disposition::Replied),
                    dropped = self.total_by(Disposition::Dropped),
                    "would-drop" = self.total_by(Disposition::WouldDrop),
                    tcp,
                    $($field = nonzero(Reason::$variant),)*
                    "summary"
                );
            }
        }
    };
}

summary_line! {
    Malformed => "drops.malformed",
    TooLarge => "drops.too-large",
    Banned => "drops.banned",
    Denied => "drops.denied",
    RateLimited => "drops.rate-limited",
    UserAgent => "drops.user-agent",
    StrayResponse => "drops.stray-response",
    Keepalive => "drops.keepalive",
    ForgedToken => "drops.forged-token",
    TlsSni => "drops.tls-sni",
    WsUpgrade => "drops.ws-upgrade",
    WsOrigin => "drops.ws-origin",
    DialogRoute => "drops.dialog-route",
    TrunkContact => "drops.trunk-contact",
    Trunk => "drops.trunk",
    Domain => "drops.domain",
    Dialog => "drops.dialog",
    NoDomain => "drops.no-domain",
    Response => "drops.response",
    Outbound => "drops.outbound",
    TooManyHops => "drops.too-many-hops",
    Loop => "drops.loop",
    Unroutable => "drops.unroutable",
}

/// The drop log: a line per dropped message, at most `log.drop_rate` per
/// second, without a lock: an attack must not flood the log or contend on
/// a mutex. Lines over the rate are counted
/// (`sipwarden_drop_logs_suppressed_total`).
pub struct DropLog {
    rate: AtomicU32,
    second: AtomicU64,
    used: AtomicU32,
}

impl DropLog {
    /// At most `rate` lines per second.
    pub fn new(rate: u32) -> DropLog {
        DropLog {
            rate: AtomicU32::new(rate),
            second: AtomicU64::new(0),
            used: AtomicU32::new(0),
        }
    }

    /// A reload's `log.drop_rate`.
    pub fn set_rate(&self, rate: u32) {
        self.rate.store(rate, Relaxed);
    }

    fn allow(&self, now: UnixMs) -> bool {
        let sec = now.secs();
        if self.second.load(Relaxed) != sec {
            self.second.store(sec, Relaxed);
            self.used.store(0, Relaxed);
        }
        // Under a flood the second's budget is spent after a few lines:
        // from then on only read the shared counter (a write from every
        // worker on every message would pass its cache line around).
        let rate = self.rate.load(Relaxed);
        self.used.load(Relaxed) < rate && self.used.fetch_add(1, Relaxed) < rate
    }

    /// Logs a dropped message `raw` (or one monitor mode would have
    /// dropped) at level info, unless the second's lines are spent. Its
    /// checks are inlined into the drop path; the line is written out of
    /// line.
    #[inline(always)]
    pub fn log(&self, metrics: &Metrics, now: UnixMs, flow: &Flow, v: Verdict, raw: &[u8]) {
        // Keepalives are routine, not worth a line; and below level info
        // there is no line to limit.
        if v.reason == Reason::Keepalive || !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        if !self.allow(now) {
            metrics.event(Event::DropLogsSuppressed);
            return;
        }
        write_line(flow, v, raw);
    }
}

/// The drop log's line for one message. Its text fields are [`&str`]
/// values, which the human format quotes (a space in a request line
/// cannot start a forged `key=value`) and the JSON format escapes.
#[inline(never)]
fn write_line(flow: &Flow, v: Verdict, raw: &[u8]) {
    let what = if v.disposition == Disposition::WouldDrop {
        "would drop (monitor mode)"
    } else {
        "dropped"
    };
    let ua = user_agent(raw).map(|u| log_text(u, MAX_UA_LOG));
    tracing::info!(
        source = %flow.remote,
        side = flow.side.as_str(),
        transport = flow.transport.as_str(),
        reason = v.reason.as_str(),
        ua = ua.as_deref(),
        line = log_text(first_line(raw), MAX_LINE_LOG).as_str(),
        "{what}"
    );
}

/// Bytes of the request line a drop line shows.
const MAX_LINE_LOG: usize = 96;
/// Bytes of the User-Agent a drop line shows: enough to tell one scanner
/// from another, not enough to fill the log with what a scanner chose.
const MAX_UA_LOG: usize = 64;

/// The first line of a message, without its line end.
fn first_line(data: &[u8]) -> &[u8] {
    let end = data
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .unwrap_or(data.len());
    &data[..end]
}

/// The value of the first User-Agent header of a message, if any (the
/// name in any case; no compact form exists). Only for the drop log: the
/// message may be one the scanner refused, so this reads raw lines and
/// gives up at the first empty one.
fn user_agent(data: &[u8]) -> Option<&[u8]> {
    data.split(|&c| c == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let colon = l.iter().position(|&c| c == b':')?;
            l[..colon]
                .trim_ascii_end()
                .eq_ignore_ascii_case(b"user-agent")
                .then(|| l[colon + 1..].trim_ascii())
        })
}

/// Text a peer chose, made safe for a log line: at most `max` bytes of
/// it, each control character (CR, LF, ESC of an ANSI sequence, C1) and
/// each byte that is not UTF-8 written as `\xNN` (or `\u{NNNN}`), so
/// that it can neither start a forged line nor drive the operator's
/// terminal; `...` when cut.
pub fn log_text(data: &[u8], max: usize) -> String {
    let cut = data.len() > max;
    let data = &data[..data.len().min(max)];
    let mut out = String::with_capacity(data.len() + 3);
    for chunk in data.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                if (c as u32) < 0x100 {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                } else {
                    let _ = write!(out, "\\u{{{:04x}}}", c as u32);
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if cut {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_log_allows_its_rate_per_second() {
        let d = DropLog::new(3);
        let allowed = |ms: u64| (0..10).filter(|_| d.allow(UnixMs(ms))).count();
        assert_eq!(allowed(5_000), 3);
        // The same second: nothing more, and the counter stops growing.
        assert_eq!(allowed(5_999), 0);
        assert_eq!(d.used.load(Relaxed), 3);
        assert_eq!(allowed(6_000), 3);
        d.set_rate(0);
        assert_eq!(allowed(7_000), 0);
    }

    /// The rendered bounds (seconds) are the observed ones (ns), and an
    /// observation on a bound falls in that bound's bucket.
    #[test]
    fn bucket_bounds_agree() {
        let m = Metrics::default();
        let shown = m.render(&[]);
        let labels = [
            "1e-6", "2.5e-6", "5e-6", "1e-5", "2.5e-5", "5e-5", "1e-4", "1e-3", "1e-2", "1e-1",
        ];
        for (label, n) in labels.iter().zip(BUCKETS_NS) {
            let line = format!("sipwarden_processing_seconds_bucket{{le=\"{label}\"}} 0\n");
            assert!(shown.contains(&line), "{line} in {shown}");
            assert_eq!((label.parse::<f64>().unwrap() * 1e9).round() as u64, n);
        }
        m.observe_ns(2_500);
        m.observe_ns(2_501);
        m.observe_ns(u64::MAX);
        let sh = m.shard();
        assert_eq!(sh.hist[1].load(Relaxed), 1);
        assert_eq!(sh.hist[2].load(Relaxed), 1);
        assert_eq!(sh.hist[BUCKETS_NS.len()].load(Relaxed), 1);
    }

    /// Every (side, transport, reason, disposition) has a counter of its
    /// own: a label set sharing a slot with another would count into the
    /// other's series.
    #[test]
    fn every_label_set_has_its_own_slot() {
        let mut seen = vec![false; SLOTS];
        for side in [Side::Public, Side::Internal] {
            for t in Transport::ALL {
                for r in Reason::ALL {
                    for d in Disposition::ALL {
                        let i = slot(side, t, r, d);
                        assert!(i < SLOTS, "{side:?} {t:?} {r:?} {d:?}: slot {i} of {SLOTS}");
                        assert!(!seen[i], "{side:?} {t:?} {r:?} {d:?}: slot {i} taken");
                        seen[i] = true;
                    }
                }
            }
        }
        assert!(seen.iter().all(|s| *s), "every slot belongs to a label set");
    }

    #[test]
    fn counts_and_renders() {
        let m = Metrics::default();
        m.count(
            Side::Public,
            Transport::Udp,
            Reason::NoDomain,
            Disposition::Dropped,
        );
        m.count(
            Side::Public,
            Transport::Udp,
            Reason::NoDomain,
            Disposition::Dropped,
        );
        m.count(
            Side::Internal,
            Transport::Tcp,
            Reason::Outbound,
            Disposition::Forwarded,
        );
        m.event(Event::ReloadOk);
        m.observe_ns(3000);
        assert_eq!(m.total(Reason::NoDomain, Disposition::Dropped), 2);
        let t = m.render(&[Gauge {
            name: "sipwarden_dialogs",
            help: "Live dialogs",
            value: 4,
        }]);
        assert!(t.contains("sipwarden_messages_total{side=\"public\",transport=\"udp\",reason=\"no-domain\",disposition=\"dropped\"} 2"));
        assert!(t.contains("sipwarden_messages_total{side=\"internal\",transport=\"tcp\",reason=\"outbound\",disposition=\"forwarded\"} 1"));
        assert!(t.contains("sipwarden_reloads_total{result=\"ok\"} 1"));
        assert!(t.contains("sipwarden_dialogs 4"));
        assert!(t.contains("sipwarden_processing_seconds_count 1"));
        assert_eq!(m.drops(Reason::NoDomain), 2);
    }

    /// A scanner's User-Agent cannot forge a log line or drive the
    /// terminal: CR, LF, ESC and bytes that are not UTF-8 are escaped,
    /// and the length is bounded.
    #[test]
    fn log_text_escapes_what_could_forge_a_line() {
        let ua = b"evil\r\nINFO sipwarden: forged line\x1b[31mred\x1b[0m\xff\xfe\xc2\x9b";
        let shown = log_text(ua, MAX_UA_LOG);
        assert_eq!(
            shown,
            "evil\\x0d\\x0aINFO sipwarden: forged line\\x1b[31mred\\x1b[0m\\xff\\xfe\\x9b"
        );
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        // Printable text, UTF-8 included, stays as it is.
        assert_eq!(
            log_text("Zoiper 5 – ünïcode".as_bytes(), 64),
            "Zoiper 5 – ünïcode"
        );
        // Bounded: at most `max` bytes of the input, then "...".
        let long = log_text(&[b'a'; 1000], MAX_UA_LOG);
        assert_eq!(long, format!("{}...", "a".repeat(MAX_UA_LOG)));
        assert_eq!(log_text(b"", 64), "");
    }

    #[test]
    fn user_agent_is_read_from_the_raw_headers() {
        let msg = b"OPTIONS sip:100@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nuser-AGENT :  friendly-scanner \r\n\
                    User-Agent: second\r\n\r\nUser-Agent: in the body\r\n";
        assert_eq!(user_agent(msg), Some(&b"friendly-scanner"[..]));
        // Not in the body, nor in the request line; bare LF line ends.
        assert_eq!(
            user_agent(b"OPTIONS sip:x SIP/2.0\r\n\r\nUser-Agent: body\r\n"),
            None
        );
        assert_eq!(user_agent(b"User-Agent: x\nVia: y\n"), None);
        assert_eq!(
            user_agent(b"OPTIONS sip:x SIP/2.0\nUser-Agent: lf\n\n"),
            Some(&b"lf"[..])
        );
        assert_eq!(user_agent(b""), None);
        assert_eq!(
            first_line(b"BYE sip:x SIP/2.0\r\nVia: y"),
            b"BYE sip:x SIP/2.0"
        );
    }

    /// The summary line names every reason, by its metric label.
    #[test]
    fn the_summary_names_every_reason() {
        assert_eq!(SUMMARY_REASONS.len(), Reason::ALL.len());
        for ((r, field), want) in SUMMARY_REASONS.iter().zip(Reason::ALL) {
            assert_eq!(*r, want);
            assert_eq!(*field, format!("drops.{}", r.as_str()));
        }
    }

    /// As Prometheus' own `prometheus_config_last_reload_successful`: 1
    /// after a start, 0 after a refused reload until a good one, and the
    /// timestamp of the config in force.
    #[test]
    fn last_reload_follows_the_loads() {
        let m = Metrics::default();
        let gauges = |m: &Metrics| {
            let t = m.render(&[]);
            let v = |name: &str| {
                t.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name} ")))
                    .unwrap_or_else(|| panic!("{name} in {t}"))
                    .to_string()
            };
            (
                v("sipwarden_config_last_reload_success"),
                v("sipwarden_config_last_reload_success_timestamp_seconds"),
            )
        };
        m.loaded(UnixMs(1_700_000_000_250));
        assert_eq!(
            m.last_reload(),
            LastReload {
                success: true,
                last_success: Some(UnixMs(1_700_000_000_250))
            }
        );
        assert_eq!(gauges(&m), ("1".into(), "1700000000.250".into()));
        assert_eq!(m.events(Event::ReloadOk), 0, "a start is not a reload");
        m.reloaded(UnixMs(1_700_000_100_000), false);
        assert_eq!(gauges(&m), ("0".into(), "1700000000.250".into()));
        m.reloaded(UnixMs(1_700_000_200_007), true);
        assert_eq!(gauges(&m), ("1".into(), "1700000200.007".into()));
        assert_eq!(
            (m.events(Event::ReloadOk), m.events(Event::ReloadFailed)),
            (1, 1)
        );
    }

    #[test]
    fn messages_lists_every_counter_with_its_labels() {
        let m = Metrics::default();
        m.count(
            Side::Internal,
            Transport::Tcp,
            Reason::Outbound,
            Disposition::Forwarded,
        );
        m.count(
            Side::Public,
            Transport::Udp,
            Reason::Loop,
            Disposition::Replied,
        );
        let all = m.messages();
        assert_eq!(all.len(), SLOTS);
        for (side, t, r, d, n) in all {
            assert_eq!(n, m.get(side, t, r, d), "{side:?} {t:?} {r:?} {d:?}");
        }
        assert_eq!(m.messages().iter().map(|x| x.4).sum::<u64>(), 2);
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let m = Metrics::default();
        std::thread::scope(|sc| {
            for _ in 0..SHARDS + 3 {
                sc.spawn(|| {
                    for _ in 0..1000 {
                        m.count(
                            Side::Public,
                            Transport::Udp,
                            Reason::NoDomain,
                            Disposition::Dropped,
                        );
                        m.observe_ns(1500);
                    }
                    m.event(Event::Bans);
                });
            }
        });
        let n = (SHARDS + 3) as u64;
        assert_eq!(m.total(Reason::NoDomain, Disposition::Dropped), n * 1000);
        assert_eq!(m.events(Event::Bans), n);
        let t = m.render(&[]);
        assert!(
            t.contains(&format!("sipwarden_processing_seconds_count {}", n * 1000)),
            "{t}"
        );
    }
}
