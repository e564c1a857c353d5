//! Counters of every decision, kept in fixed arrays of atomics so that
//! counting costs no allocation and no lock on the drop path, and the
//! drop log's rate limit ([`DropLog`]). Rendering as Prometheus text is
//! pure; serving it over HTTP lives in the program.

use std::fmt::Write;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::flow::{Flow, Side, Transport};
use crate::time::UnixMs;
use crate::verdict::{Disposition, Reason, Verdict};

const SIDES: usize = 2;
const TRANSPORTS: usize = 2;
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
}

const EVENTS: [(Event, &str, &str); 13] = [
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
    /// Control requests by [`CONTROL_REQUESTS`] and result (ok, error):
    /// a few a minute at most, so one counter each, not sharded.
    control: [[AtomicU64; 2]; CONTROL_REQUESTS.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            shards: (0..SHARDS).map(|_| Shard::new()).collect(),
            control: std::array::from_fn(|_| [AtomicU64::new(0), AtomicU64::new(0)]),
        }
    }
}

fn slot(side: Side, t: Transport, r: Reason, d: Disposition) -> usize {
    let s = match side {
        Side::Public => 0,
        Side::Internal => 1,
    };
    let t = match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
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
            for t in [Transport::Udp, Transport::Tcp] {
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
            for t in [Transport::Udp, Transport::Tcp] {
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

    /// The one-line summary written to the log periodically.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for d in Disposition::ALL {
            let _ = write!(s, "{}={} ", d.as_str(), self.total_by(d));
        }
        let mut top: Vec<(Reason, u64)> = Reason::ALL
            .iter()
            .map(|r| {
                (
                    *r,
                    self.total(*r, Disposition::Dropped) + self.total(*r, Disposition::WouldDrop),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.1));
        if !top.is_empty() {
            s.push_str("drops:");
            for (r, n) in top.iter().take(5) {
                let _ = write!(s, " {}={}", r.as_str(), n);
            }
        }
        s.trim_end().to_string()
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let mut o = String::with_capacity(8192);
        o.push_str("# HELP sipwarden_messages_total SIP messages by side, transport, reason and what was done with them\n");
        o.push_str("# TYPE sipwarden_messages_total counter\n");
        for side in [Side::Public, Side::Internal] {
            for t in [Transport::Udp, Transport::Tcp] {
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

/// The drop log's line for one message.
#[inline(never)]
fn write_line(flow: &Flow, v: Verdict, raw: &[u8]) {
    let what = if v.disposition == Disposition::WouldDrop {
        "would drop (monitor mode)"
    } else {
        "dropped"
    };
    tracing::info!(
        source = %flow.remote,
        side = flow.side.as_str(),
        transport = flow.transport.as_str(),
        reason = v.reason.as_str(),
        line = %first_line(raw),
        "{what}"
    );
}

/// The first line of a message for logs, at most 96 bytes, lossy.
fn first_line(data: &[u8]) -> String {
    let end = data
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .unwrap_or(data.len())
        .min(96);
    String::from_utf8_lossy(&data[..end]).into_owned()
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
            for t in [Transport::Udp, Transport::Tcp] {
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
        assert!(m.summary().contains("no-domain=2"), "{}", m.summary());
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
