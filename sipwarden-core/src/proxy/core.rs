//! The sans-IO proxy: `handle(now, flow, bytes) -> Output` and
//! `tick(now) -> transmits`. It reads no clock and touches no socket; the
//! caller passes the time in and carries out the transmits it returns.
//!
//! `Core` dispatches: each message to the admission rules (`policy`) or
//! the forwarding of its direction (`inbound`, `outbound`, `response`),
//! then counts its verdict, toward a ban (`policy::ban`) and in the drop
//! log (`metrics::DropLog`); each tick to the tables' sweeps and the
//! registrations' keepalives. What each step decides lives with its
//! concept: hop and Via checks in `hop`, generated answers in `reply`,
//! the state file's content in `state::persist`.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::flow::{canonical_ip, Flow, Side, Transport};
use crate::metrics::{DropLog, Event, Gauge, Metrics};
use crate::policy::{admission, ban, fast_path, tls, ws};
use crate::rates::History;
use crate::sip::{scan, Framing, Message, Method, ScanError};
use crate::state::persist::{Restored, Snapshot};
use crate::state::Tables;
use crate::time::UnixMs;
use crate::token::{Dir, Keys};
use crate::verdict::{Disposition, Reason, Verdict};

use super::action::{Dest, Output, Transmit};
use super::reply;
use crate::settings::Settings;

/// The proxy core, shared by every socket task and thread.
///
/// Unlike quinn-proto's `Endpoint`, which one task owns and drives through
/// `&mut self`, every method takes `&self`: the tables behind it are
/// shared, concurrent (sharded locks, atomics) and bounded, so the UDP
/// worker threads and the TCP tasks all call `handle` at once without a
/// lock around the core, and the settings are swapped under them
/// (`ArcSwap`) on reload.
pub struct Core {
    pub(super) settings: ArcSwap<Settings>,
    pub(super) keys: Keys,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tables: Tables,
    drop_log: DropLog,
    /// The message counters of the last minute, sampled by `tick`.
    history: std::sync::Mutex<History>,
}

/// Is this datagram only line ends (a CRLF keepalive)?
fn is_keepalive(data: &[u8]) -> bool {
    !data.is_empty() && data.iter().all(|&c| c == b'\r' || c == b'\n')
}

/// Why a message that cannot be read is dropped: the one mapping from a
/// scanner or framing error to a reason.
fn unreadable(e: ScanError) -> Reason {
    match e {
        ScanError::TooLarge => Reason::TooLarge,
        _ => Reason::Malformed,
    }
}

/// A response relayed in monitor mode from a source enforce would have
/// dropped is reported as such.
fn monitored(mut out: Output, would: Option<Reason>) -> Output {
    if let Some(reason) = would {
        if out.verdict.disposition == Disposition::Forwarded {
            out.verdict = Verdict::would_drop(reason);
        }
    }
    out
}

impl Core {
    pub fn new(settings: Settings, keys: Keys, metrics: Arc<Metrics>) -> Core {
        let drop_log = DropLog::new(settings.config.log.drop_rate);
        let tables = Tables::new(&settings.config);
        Core {
            settings: ArcSwap::from_pointee(settings),
            keys,
            metrics,
            tables,
            drop_log,
            history: std::sync::Mutex::new(History::default()),
        }
    }

    /// Reads the rates of the last minute (`rates::History`).
    pub fn with_history<R>(&self, f: impl FnOnce(&History) -> R) -> R {
        f(&self.history.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Whether `s` are the current settings: a check per receive batch,
    /// without the shared reference-count update of [`Core::settings`].
    pub fn settings_are(&self, s: &Arc<Settings>) -> bool {
        Arc::ptr_eq(&self.settings.load(), s)
    }

    /// Swaps in new settings atomically: a message being handled finishes
    /// with the old ones, the next one sees the new ones. Tables are kept.
    pub fn reload(&self, settings: Settings) {
        self.drop_log.set_rate(settings.config.log.drop_rate);
        self.tables.resize(&settings.config);
        self.settings.store(Arc::new(settings));
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Table sizes, for the metrics endpoint.
    pub fn gauges(&self, now: UnixMs) -> [Gauge<'static>; 4] {
        [
            Gauge {
                name: "sipwarden_bans",
                help: "Sources banned now",
                value: self.tables.bans.banned_count(now) as u64,
            },
            Gauge {
                name: "sipwarden_rate_sources",
                help: "Sources tracked by the rate limiter",
                value: self.tables.rates.len() as u64,
            },
            Gauge {
                name: "sipwarden_dialogs",
                help: "Dialogs in the dialog table",
                value: self.tables.dialogs.len() as u64,
            },
            Gauge {
                name: "sipwarden_registrations",
                help: "Trunk registrations in force",
                value: self.tables.regs.len() as u64,
            },
        ]
    }

    /// Handles one message (a datagram, or one frame of a TCP stream)
    /// that arrived on `flow` at `now` (milliseconds since the epoch:
    /// the state file keeps absolute times).
    pub fn handle(&self, now: UnixMs, flow: &Flow, data: Bytes) -> Output {
        self.handle_with(&self.settings.load(), now, flow, data)
    }

    /// [`Core::handle`] under settings the caller loaded: a UDP worker
    /// loads them once per receive, not once per message. A reload then
    /// reaches the messages of the next receive.
    pub fn handle_with(&self, s: &Settings, now: UnixMs, flow: &Flow, data: Bytes) -> Output {
        let raw = data.clone();
        let out = match flow.side {
            Side::Public => self.on_public(s, now, flow, data),
            Side::Internal => self.on_internal(s, now, flow, data),
        };
        self.account(s, now, flow, out.verdict, &raw);
        out
    }

    /// A datagram larger than the receive slot (`limits.max_message`):
    /// the socket cut it, so it is dropped `too-large`, and counted and
    /// held against its source like any message that size. `data`: what
    /// was received, for the drop log.
    pub fn on_truncated(&self, now: UnixMs, flow: &Flow, data: &[u8]) -> Output {
        let out = Output::verdict(Verdict::drop(Reason::TooLarge));
        self.account_outside(now, flow, out.verdict, data);
        out
    }

    /// A stream that cannot be cut into messages (`sip::frame`): the
    /// transport closes the connection; the error is counted, and held
    /// against its source, as the same error in a whole message would be.
    /// `data`: the unframed bytes, for the drop log.
    pub fn on_frame_error(&self, now: UnixMs, flow: &Flow, e: ScanError, data: &[u8]) -> Output {
        tracing::debug!(remote = %flow.remote, error = e.as_str(), "TCP framing error, closing");
        let out = Output::verdict(Verdict::drop(unreadable(e)));
        self.account_outside(now, flow, out.verdict, data);
        out
    }

    /// A connection accepted on a public TLS listener, before anything
    /// is read: a banned or denied source is closed at once (false), so
    /// that it costs no ClientHello parse. Counted like the message it
    /// would have sent.
    pub fn on_accept(&self, now: UnixMs, flow: &Flow) -> bool {
        let s = self.settings.load();
        let src = canonical_ip(flow.remote.ip());
        let allowed = s.is_allowed(src);
        let reason = if !allowed && s.is_denied(src) {
            Reason::Denied
        } else if !allowed
            && s.trunk_by_source(src).is_none()
            && self.tables.bans.is_banned(src, now)
        {
            Reason::Banned
        } else {
            return true;
        };
        let v = if s.monitor {
            Verdict::would_drop(reason)
        } else {
            Verdict::drop(reason)
        };
        self.account(&s, now, flow, v, b"");
        s.monitor
    }

    /// The server name of a ClientHello on a public TLS listener
    /// ([`tls::admit_hello`]): true when the handshake may go on; false
    /// when the transport must close the connection without answering.
    /// A refusal is counted as `tls-sni` and held against the source like
    /// a rejected message. In monitor mode the handshake goes on and the
    /// refusal is counted as what it would have been.
    pub fn on_client_hello(&self, now: UnixMs, flow: &Flow, server_name: Option<&str>) -> bool {
        let s = self.settings.load();
        let src = flow.remote.ip();
        match tls::admit_hello(server_name, src, &s, &self.tables, now) {
            Ok(()) => true,
            Err(reason) => {
                tracing::debug!(remote = %flow.remote, sni = server_name.unwrap_or(""), "TLS server name refused");
                let v = if s.monitor {
                    Verdict::would_drop(reason)
                } else {
                    Verdict::drop(reason)
                };
                self.account(&s, now, flow, v, server_name.unwrap_or("").as_bytes());
                s.monitor
            }
        }
    }

    /// The bytes read so far from a connection on a public `ws:` or
    /// `wss:` listener ([`ws::check_upgrade`]): read more, upgrade, or
    /// answer the refusal's HTTP error and close. A refusal is counted
    /// (`ws-upgrade`, `ws-origin`) and held against the source like a
    /// rejected message; it is enforced in monitor mode too, since a
    /// refused upgrade has no SIP to let through.
    pub fn on_ws_upgrade(
        &self,
        now: UnixMs,
        flow: &Flow,
        head: &[u8],
        server_name: Option<&str>,
    ) -> ws::Upgrade {
        let s = self.settings.load();
        let up = ws::check_upgrade(head, server_name, &s);
        if let ws::Upgrade::Refuse(r) = &up {
            tracing::debug!(remote = %flow.remote, status = r.status, why = r.why, "WebSocket upgrade refused");
            self.account(&s, now, flow, Verdict::drop(r.reason), head);
        }
        up
    }

    /// A connection on a public WebSocket listener that sent no complete
    /// upgrade request within `ws.upgrade_timeout`: counted `ws-upgrade`
    /// toward a ban (a slow-loris holds a connection place); the transport
    /// answers 408 and closes.
    pub fn on_ws_timeout(&self, now: UnixMs, flow: &Flow, head: &[u8]) {
        self.account_outside(now, flow, Verdict::drop(Reason::WsUpgrade), head);
    }

    /// A CRLF ping on a stream (RFC 5626 4.4.1): answered with a pong on
    /// the same connection.
    pub fn on_ping(&self, now: UnixMs, flow: &Flow) -> Output {
        let pong = Transmit {
            side: flow.side,
            transport: flow.transport,
            listener: Some(flow.listener),
            dest: Dest::Addr(flow.remote),
            data: Bytes::from_static(b"\r\n"),
            on_fail: None,
            reuse_only: true,
        };
        let out = Output::send(Verdict::replied(Reason::Keepalive), pong);
        self.account_outside(now, flow, out.verdict, b"");
        out
    }

    /// [`Core::account`] for what the transport reports outside `handle`,
    /// under the current settings: kept out of line, so that `account` and
    /// what it calls are inlined into `handle_with` alone (given four
    /// callers, LLVM calls them out of line on the drop path instead).
    #[inline(never)]
    fn account_outside(&self, now: UnixMs, flow: &Flow, v: Verdict, raw: &[u8]) {
        self.account(&self.settings.load(), now, flow, v, raw);
    }

    /// What every verdict costs: its counter, and for a rejection the
    /// source's ban count and a drop log line. The drop path of every
    /// message: inlined, as is what it calls there.
    #[inline(always)]
    fn account(&self, s: &Settings, now: UnixMs, flow: &Flow, v: Verdict, raw: &[u8]) {
        self.metrics
            .count(flow.side, flow.transport, v.reason, v.disposition);
        let rejected = v.is_rejection();
        if flow.side == Side::Public {
            self.tables
                .top
                .record(now, flow.remote.ip(), rejected.then_some(v.reason));
        }
        if rejected {
            if flow.side == Side::Public && ban::counts_as_reject(v.reason) {
                ban::count_reject(s, &self.tables, &self.metrics, now, flow.remote.ip());
            }
            if v.disposition != Disposition::Replied {
                self.drop_log.log(&self.metrics, now, flow, v, raw);
            }
        }
    }

    fn on_public(&self, s: &Settings, now: UnixMs, flow: &Flow, data: Bytes) -> Output {
        if is_keepalive(&data) {
            return Output::verdict(Verdict::drop(Reason::Keepalive));
        }
        let src = canonical_ip(flow.remote.ip());
        // In monitor mode nothing is dropped: the first rule that would
        // have dropped is remembered and reported instead.
        let mut would: Option<Reason> = None;
        let mut hold = |reason: Reason| -> Option<Output> {
            if s.monitor {
                would.get_or_insert(reason);
                None
            } else {
                Some(Output::verdict(Verdict::drop(reason)))
            }
        };
        // Step 2, before the scan: a banned source costs one lookup.
        // `allow` CIDRs are never banned; a trunk's addresses are not
        // either (a spoofed flood must not cut a provider off).
        let allowed = s.is_allowed(src);
        if !allowed && s.is_denied(src) {
            if let Some(out) = hold(Reason::Denied) {
                return out;
            }
        }
        let mut inputs = admission::AdmissionInputs::new(s, &self.keys, &self.tables, now, src);
        let exempt = allowed || inputs.source_trunk.is_some();
        if !exempt && self.tables.bans.is_banned(src, now) {
            if let Some(out) = hold(Reason::Banned) {
                return out;
            }
        }
        // The scanner fast path: requests that certainly do not pass are
        // dropped from their start line and a few headers. An `allow`ed
        // source still needs the domain (it is only spared rate limits and
        // bans), so only a trunk's source, admitted whatever it names, must
        // skip it.
        if inputs.source_trunk.is_none() {
            match fast_path::screen(&data, s) {
                fast_path::FastPath::Drop(reason) => return Output::verdict(Verdict::drop(reason)),
                fast_path::FastPath::FullScan { ruri_domain } => inputs.ruri_domain = ruri_domain,
            }
        }
        let msg = match self.scan(s, flow, data) {
            Ok(m) => m,
            Err(v) => return Output::verdict(v),
        };
        if !msg.is_request() {
            let out = self.relay_response(s, now, flow, &msg, Dir::Outbound);
            return monitored(out, would);
        }
        match admission::admit_request(&msg, &inputs) {
            Ok(a) => {
                if let Some(t) = &a.trunk {
                    if msg.method() == Some(Method::Invite) {
                        self.tables.regs.invite_admitted(t, now);
                    }
                }
                // Only what would be admitted spends its source's budget
                // and is rate-limited: over the rate it is congestion
                // (an office booting behind one address), never counted
                // toward a ban. What admission rejects is counted as such.
                if !exempt {
                    let register = msg.method() == Some(Method::Register);
                    if !self.tables.rates.allow(src, register, now, &s.budget) {
                        if let Some(out) = hold(Reason::RateLimited) {
                            return out;
                        }
                    }
                }
                let v = match would {
                    Some(reason) => Verdict::would_drop(reason),
                    None => Verdict::forward(a.reason),
                };
                self.forward_inbound(s, now, flow, &msg, v, &a)
            }
            Err(reason) if s.monitor => {
                let v = Verdict::would_drop(would.unwrap_or(reason));
                let a = admission::Admission {
                    reason,
                    trunk: None,
                    contact: None,
                };
                self.forward_inbound(s, now, flow, &msg, v, &a)
            }
            Err(reason) => self.reject(s, flow, &msg, reason),
        }
    }

    fn on_internal(&self, s: &Settings, now: UnixMs, flow: &Flow, data: Bytes) -> Output {
        if is_keepalive(&data) {
            return Output::verdict(Verdict::drop(Reason::Keepalive));
        }
        let msg = match self.scan(s, flow, data) {
            Ok(m) => m,
            Err(v) => return Output::verdict(v),
        };
        if msg.is_request() {
            self.forward_outbound(s, now, flow, &msg)
        } else {
            self.relay_response(s, now, flow, &msg, Dir::Inbound)
        }
    }

    fn scan(&self, s: &Settings, flow: &Flow, data: Bytes) -> Result<Message, Verdict> {
        let framing = match flow.transport {
            // A WebSocket message holds exactly one SIP message,
            // Content-Length optional (RFC 7118 5.2): a datagram's framing.
            Transport::Udp | Transport::Ws | Transport::Wss => Framing::Datagram,
            Transport::Tcp | Transport::Tls => Framing::Stream,
        };
        scan(data, framing, &s.limits).map_err(|e| {
            tracing::debug!(source = %flow.remote, error = e.as_str(), "unreadable message");
            Verdict::drop(unreadable(e))
        })
    }

    /// Step 10: silent drop, or 403 when `filter.on_reject = "403"`.
    fn reject(&self, s: &Settings, flow: &Flow, msg: &Message, reason: Reason) -> Output {
        if s.reject_403 && reason == Reason::NoDomain && msg.method() != Some(Method::Ack) {
            return reply::answer(&self.keys, flow, msg, 403, "Forbidden", reason);
        }
        Output::verdict(Verdict::drop(reason))
    }

    /// Periodic work: sweeps the tables and sends CRLF keepalives to
    /// registered trunks that asked for them. Call it every second or so.
    pub fn tick(&self, now: UnixMs) -> Vec<Transmit> {
        let s = self.settings.load();
        let grace = s.config.registration.grace.ms();
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sample(now, &self.metrics);
        for ip in self.tables.bans.sweep(now, s.ban.window) {
            self.metrics.event(Event::Unbans);
            self.tables.mark_dirty();
            tracing::info!(source = %ip, "ban lifted");
        }
        self.tables.rates.sweep(now, &s.budget);
        let gone_d = self.tables.dialogs.sweep_step(now);
        let gone_r = self.tables.regs.sweep(now, grace);
        if gone_r > 0 {
            self.tables.mark_dirty();
            tracing::info!(expired = gone_r, "trunk registrations expired");
        }
        if gone_d > 0 {
            self.tables.mark_dirty();
        }
        let due = self
            .tables
            .regs
            .due_keepalives(now, grace, |trunk| s.keepalive(trunk));
        due.into_iter()
            .map(|reg| {
                self.metrics.event(Event::KeepalivesSent);
                Transmit {
                    side: Side::Public,
                    transport: reg.transport,
                    listener: reg.listener,
                    dest: Dest::Addr(reg.registrar_addr),
                    data: Bytes::from_static(b"\r\n\r\n"),
                    on_fail: None,
                    // Over TCP only on the registration's own connection.
                    reuse_only: true,
                }
            })
            .collect()
    }

    /// Registrar hosts to resolve (RFC 3263) so that a provider's other
    /// addresses are admitted too: configured trunks and live
    /// registrations. `(trunk, host)`.
    pub fn registrars(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let s = self.settings.load();
        let mut v = self.tables.regs.registrars();
        for t in &s.config.trunks {
            v.push((
                t.name.as_str().into(),
                crate::settings::registrar_host(&t.registrar).into(),
            ));
        }
        v.sort();
        v.dedup();
        v
    }

    /// DNS answers for a registrar host, valid until `until` (ms).
    pub fn learn_trunk_addresses(&self, trunk: &str, addrs: &[IpAddr], until: UnixMs) {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| canonical_ip(*a)).collect();
        self.tables.regs.learn_addresses(trunk, &addrs, until);
    }

    /// What the state file keeps now (`state::persist`).
    pub fn snapshot(&self, now: UnixMs) -> Snapshot {
        let grace = self.settings.load().config.registration.grace.ms();
        self.tables.snapshot(now, grace, self.keys.key_id())
    }

    /// Loads a snapshot into the tables (`state::persist`), under the
    /// current settings' registration grace and ban duration.
    pub fn restore(&self, snap: Snapshot, now: UnixMs) -> Restored {
        let s = self.settings.load();
        let grace = s.config.registration.grace.ms();
        self.tables.restore(snap, now, grace, s.ban.duration)
    }
}
