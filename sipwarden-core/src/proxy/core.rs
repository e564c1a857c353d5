//! The sans-IO proxy: `handle(now, flow, bytes) -> Output` and
//! `tick(now) -> sends`. It reads no clock and touches no socket; the
//! caller passes the time in and carries out the sends it returns (the
//! shape of quinn-proto's `Endpoint`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use smallvec::SmallVec;

use crate::flow::{Flow, Side, Transport};
use crate::metrics::{Event, Gauge, Metrics};
use crate::policy::{admission, ban, quick, Disposition, Reason, Verdict};
use crate::sip::via::Via;
use crate::sip::{scan, Framing, Header, HeaderName, Message, Method, ScanError};
use crate::state::bans::{Restore, Trigger};
use crate::state::persist::{
    SavedBan, SavedDialog, SavedReg, SavedSource, Snapshot, FORMAT, VERSION,
};
use crate::state::Tables;

use super::action::{Dest, Output, Send};
use super::reply;
use super::token::{from_hex, to_hex, BranchInfo, Dir, Keys, BRANCH_PREFIX};
use crate::settings::Settings;

pub use super::rewrite::canonical_ip;

/// The proxy core. Shared by all socket tasks; every method takes `&self`.
pub struct Core {
    pub(super) settings: ArcSwap<Settings>,
    pub(super) keys: Keys,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tables: Tables,
    droplog: DropLog,
    /// Set when a table changed in a way the state file should keep.
    dirty: AtomicBool,
    /// Last keepalive per trunk registration token (ms), for `tick`.
    keepalives: dashmap::DashMap<Arc<str>, u64>,
}

/// At most `rate` drop log lines per second, without a lock: an attack
/// must not flood the log or contend on a mutex.
struct DropLog {
    rate: AtomicU32,
    second: AtomicU64,
    used: AtomicU32,
}

impl DropLog {
    fn allow(&self, now_ms: u64) -> bool {
        let sec = now_ms / 1000;
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
}

/// Is this datagram only line ends (a CRLF keepalive)?
fn is_keepalive(data: &[u8]) -> bool {
    !data.is_empty() && data.iter().all(|&c| c == b'\r' || c == b'\n')
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

/// A response relayed in monitor mode from a source enforce would have
/// dropped is reported as such.
fn monitored(mut out: Output, would: Option<Reason>) -> Output {
    if let (Some(reason), Some(v)) = (would, out.verdict.as_mut()) {
        if v.disposition == Disposition::Forwarded {
            *v = Verdict {
                reason,
                disposition: Disposition::WouldDrop,
            };
        }
    }
    out
}

/// A request about to be forwarded: its loop digest and top Via.
pub(super) struct Hop<'m> {
    pub loop_key: [u8; 4],
    pub top: Via<'m>,
    pub first_via: &'m Header,
    /// What forwarding it does to the dialog table.
    pub dialog: DialogOp,
}

/// What a forwarded request does to the dialog table. Decided before the
/// message is edited, so the table's set is being fetched into the cache
/// meanwhile (perf: at the default cap, the first touch of the set was
/// most of the table's cost).
#[derive(Clone, Copy)]
pub(super) enum DialogOp {
    None,
    /// A dialog-creating INVITE: hash(Call-ID, From tag) and its CSeq.
    Invite {
        key: u128,
        cseq: u32,
    },
    /// A BYE ends the dialog under both tags.
    Bye {
        by_from: u128,
        by_to: Option<u128>,
    },
}

/// What was restored from a state file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub registrations: usize,
    pub dialogs: usize,
    pub bans: usize,
    /// Entries that ended while the process was down.
    pub expired: usize,
    /// Entries that could not be read (an unknown address or trigger, a
    /// dialog key that is not hex).
    pub bad: usize,
    /// Bans beyond `ban.max_entries` (those ending soonest).
    pub bans_over_cap: usize,
}

impl Core {
    pub fn new(settings: Settings, keys: Keys, metrics: Arc<Metrics>) -> Core {
        let rate = settings.config.log.drop_rate;
        let tables = Tables::new(&settings.config);
        Core {
            settings: ArcSwap::from_pointee(settings),
            keys,
            metrics,
            tables,
            droplog: DropLog {
                rate: AtomicU32::new(rate),
                second: AtomicU64::new(0),
                used: AtomicU32::new(0),
            },
            dirty: AtomicBool::new(false),
            keepalives: dashmap::DashMap::new(),
        }
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
        self.droplog
            .rate
            .store(settings.config.log.drop_rate, Relaxed);
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

    pub(super) fn mark_dirty(&self) {
        self.dirty.store(true, Relaxed);
    }

    /// True once since the last call when the state file should be
    /// written.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Relaxed)
    }

    /// Table sizes, for the metrics endpoint.
    pub fn gauges(&self, now: u64) -> [Gauge<'static>; 4] {
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
    /// that arrived on `flow` at `now_ms` (milliseconds since the epoch:
    /// the state file keeps absolute times).
    pub fn handle(&self, now_ms: u64, flow: &Flow, data: Bytes) -> Output {
        self.handle_with(&self.settings.load(), now_ms, flow, data)
    }

    /// [`Core::handle`] under settings the caller loaded: a UDP worker
    /// loads them once per receive, not once per message. A reload then
    /// reaches the messages of the next receive.
    pub fn handle_with(&self, s: &Settings, now_ms: u64, flow: &Flow, data: Bytes) -> Output {
        let raw = data.clone();
        let out = match flow.side {
            Side::Public => self.on_public(s, now_ms, flow, data),
            Side::Internal => self.on_internal(s, now_ms, flow, data),
        };
        if let Some(v) = out.verdict {
            self.metrics
                .count(flow.side, flow.transport, v.reason, v.disposition);
            let rejected = matches!(v.disposition, Disposition::Dropped | Disposition::WouldDrop)
                || (v.disposition == Disposition::Replied && v.reason == Reason::NoDomain);
            if rejected {
                if flow.side == Side::Public && ban::counts_as_reject(v.reason) {
                    self.count_reject(s, now_ms, flow);
                }
                if v.disposition != Disposition::Replied {
                    self.log_drop(now_ms, flow, v, &raw);
                }
            }
        }
        out
    }

    /// A rejected message from a source counts toward its ban.
    fn count_reject(&self, s: &Settings, now: u64, flow: &Flow) {
        let ip = canonical_ip(flow.remote.ip());
        if s.is_allowed(ip) || s.trunk_by_source(ip).is_some() {
            return;
        }
        if let Some(t) = self.tables.bans.reject(ip, now, &s.ban, !s.monitor) {
            self.announce_ban(s, ip, t);
        }
    }

    /// A failed authentication of that source ([`ban::auth_failed`]), of
    /// the credentials `key` names (0: unknown).
    pub(super) fn count_auth_failure(&self, s: &Settings, now: u64, ip: IpAddr, key: u32) {
        let ip = canonical_ip(ip);
        if s.is_allowed(ip) || s.trunk_by_source(ip).is_some() {
            return;
        }
        if let Some(t) = self
            .tables
            .bans
            .auth_failure(ip, now, &s.ban, !s.monitor, key)
        {
            self.announce_ban(s, ip, t);
        }
    }

    fn announce_ban(&self, s: &Settings, ip: IpAddr, t: Trigger) {
        let minutes = s.ban.duration / 60_000;
        if s.monitor {
            tracing::warn!(source = %ip, trigger = t.as_str(), "would ban (monitor mode)");
        } else {
            // The state file keeps bans: a restart must not free the source.
            self.mark_dirty();
            self.metrics.event(Event::Bans);
            tracing::warn!(source = %ip, trigger = t.as_str(), duration_min = minutes, "banned");
        }
    }

    fn log_drop(&self, now_ms: u64, flow: &Flow, v: Verdict, raw: &[u8]) {
        // Keepalives are routine, not worth a line; and below level info
        // there is no line to limit.
        if v.reason == Reason::Keepalive || !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        if !self.droplog.allow(now_ms) {
            self.metrics.event(Event::DropLogsSuppressed);
            return;
        }
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

    fn on_public(&self, s: &Settings, now: u64, flow: &Flow, data: Bytes) -> Output {
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
        let mut ctx = admission::Ctx::new(s, &self.keys, &self.tables, now, src);
        let exempt = allowed || ctx.source_trunk.is_some();
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
        if ctx.source_trunk.is_none() {
            match quick::quick(&data, s) {
                quick::Quick::Drop(reason) => return Output::verdict(Verdict::drop(reason)),
                quick::Quick::Full { ruri_domain } => ctx.ruri_domain = ruri_domain,
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
        match admission::admit_request(&msg, &ctx) {
            Ok(a) => {
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
                    Some(reason) => Verdict {
                        reason,
                        disposition: Disposition::WouldDrop,
                    },
                    None => Verdict::forward(a.reason),
                };
                self.forward_inbound(s, now, flow, &msg, v, &a)
            }
            Err(reason) if s.monitor => {
                let v = Verdict {
                    reason: would.unwrap_or(reason),
                    disposition: Disposition::WouldDrop,
                };
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

    fn on_internal(&self, s: &Settings, now: u64, flow: &Flow, data: Bytes) -> Output {
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
            Transport::Udp => Framing::Datagram,
            Transport::Tcp => Framing::Stream,
        };
        scan(data, framing, &s.limits).map_err(|e| {
            tracing::debug!(source = %flow.remote, error = e.as_str(), "unreadable message");
            Verdict::drop(match e {
                ScanError::TooLarge => Reason::TooLarge,
                _ => Reason::Malformed,
            })
        })
    }

    /// Step 10: silent drop, or 403 when `filter.on_reject = "403"`.
    fn reject(&self, s: &Settings, flow: &Flow, msg: &Message, reason: Reason) -> Output {
        if s.reject_403 && reason == Reason::NoDomain && msg.method() != Some(Method::Ack) {
            return self.reply(flow, msg, 403, "Forbidden", reason);
        }
        Output::verdict(Verdict::drop(reason))
    }

    /// A response generated here, sent back on the flow the request came on.
    pub(super) fn reply(
        &self,
        flow: &Flow,
        msg: &Message,
        code: u16,
        phrase: &str,
        reason: Reason,
    ) -> Output {
        Output::send(
            Verdict::replied(reason),
            self.reply_send(flow, msg, code, phrase),
        )
    }

    pub(super) fn reply_send(&self, flow: &Flow, msg: &Message, code: u16, phrase: &str) -> Send {
        let tag = self
            .keys
            .reply_tag(msg.call_id(), msg.from_tag().unwrap_or_default());
        Send {
            side: flow.side,
            transport: flow.transport,
            listener: Some(flow.listener),
            dest: Dest::Addr(flow.remote),
            data: reply::build(msg, code, phrase, &tag),
            on_fail: None,
            reuse_only: false,
        }
    }

    /// Max-Forwards 0 and loops end here (RFC 3261 16.3): 483 / 482, or a
    /// silent drop for ACK, which is never answered.
    pub(super) fn hop_checks(
        &self,
        flow: &Flow,
        msg: &Message,
        dir: Dir,
        loop_key: [u8; 4],
    ) -> Option<Output> {
        let (code, phrase, reason) = if msg.max_forwards == Some(0) {
            (483, "Too Many Hops", Reason::TooManyHops)
        } else if self.looped(msg, dir, loop_key) {
            (482, "Loop Detected", Reason::Loop)
        } else {
            return None;
        };
        if msg.method() == Some(Method::Ack) {
            return Some(Output::verdict(Verdict::drop(reason)));
        }
        Some(self.reply(flow, msg, code, phrase, reason))
    }

    /// What forwarding a request in either direction starts with: the hop
    /// checks (483 / 482) passed and the top Via read.
    pub(super) fn begin_forward<'m>(
        &self,
        flow: &Flow,
        msg: &'m Message,
        dir: Dir,
    ) -> Result<Hop<'m>, Output> {
        let loop_key = self.loop_key(msg);
        if let Some(out) = self.hop_checks(flow, msg, dir, loop_key) {
            return Err(out);
        }
        match msg.first(HeaderName::Via) {
            Some(first_via) => Ok(Hop {
                loop_key,
                top: msg.top_via(),
                first_via,
                dialog: self.dialog_op(msg),
            }),
            None => Err(Output::verdict(Verdict::drop(Reason::Malformed))),
        }
    }

    /// The dialog table follows INVITEs and BYEs in either direction.
    fn dialog_op(&self, msg: &Message) -> DialogOp {
        let Some(ftag) = msg.from_tag() else {
            return DialogOp::None;
        };
        match msg.method() {
            Some(Method::Invite) if msg.to_tag().is_none() => {
                let key = self.keys.dialog_key(msg.call_id(), ftag);
                self.tables.dialogs.prefetch(key);
                DialogOp::Invite {
                    key,
                    cseq: msg.cseq_num,
                }
            }
            Some(Method::Bye) => {
                let cid = msg.call_id();
                DialogOp::Bye {
                    by_from: self.keys.dialog_key(cid, ftag),
                    by_to: msg.to_tag().map(|t| self.keys.dialog_key(cid, t)),
                }
            }
            _ => DialogOp::None,
        }
    }

    /// Applies a forwarded request's [`DialogOp`].
    pub(super) fn track_dialog(&self, s: &Settings, now: u64, op: DialogOp) {
        match op {
            DialogOp::None => {}
            DialogOp::Invite { key, cseq } => {
                let evicted = self.tables.dialogs.invite(key, cseq, now, &s.lifetimes);
                for _ in 0..evicted {
                    self.metrics.event(Event::DialogsRefused);
                }
            }
            DialogOp::Bye { by_from, by_to } => {
                self.tables.dialogs.end(by_from, now, &s.lifetimes);
                if let Some(k) = by_to {
                    self.tables.dialogs.end(k, now, &s.lifetimes);
                }
                self.mark_dirty();
            }
        }
    }

    pub(super) fn loop_key(&self, msg: &Message) -> [u8; 4] {
        self.keys.loop_key(
            msg.request_uri().unwrap_or_default(),
            msg.call_id(),
            msg.from_tag().unwrap_or_default(),
            msg.cseq_num,
        )
    }

    /// A Via of ours further down, written for the same direction, whose
    /// request had the same loop digest means the request came back
    /// unchanged. The other direction is no loop: a backend that proxies
    /// (rather than a B2BUA like Asterisk) sends requests back out.
    fn looped(&self, msg: &Message, dir: Dir, loop_key: [u8; 4]) -> bool {
        // Almost always there is no Via of ours at all: one SIMD search
        // per Via line (not over the whole header section).
        static OURS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(BRANCH_PREFIX));
        if !msg
            .all(HeaderName::Via)
            .any(|h| OURS.find(msg.value(h)).is_some())
        {
            return false;
        }
        let vias: SmallVec<[Via<'_>; 8]> = msg.vias().map_while(|v| v).collect();
        vias.iter().enumerate().any(|(i, v)| {
            let Some(b) = v.branch().filter(|b| b.starts_with(BRANCH_PREFIX)) else {
                return false;
            };
            let prev = vias
                .get(i + 1)
                .map(|n| self.prev_key(n, msg))
                .unwrap_or_default();
            self.keys
                .verify_branch(b, &prev, msg.call_id())
                .is_some_and(|info| info.dir == dir && info.loop_key == loop_key)
        })
    }

    /// What identifies the previous hop's transaction: its branch when it
    /// has the RFC 3261 magic cookie, else a digest of the fields RFC 2543
    /// matched on.
    pub(super) fn prev_key(&self, via: &Via<'_>, msg: &Message) -> SmallVec<[u8; 64]> {
        match via.branch() {
            Some(b) if b.starts_with(b"z9hG4bK") => SmallVec::from_slice(b),
            other => {
                let port = via.port.unwrap_or(0).to_le_bytes();
                let d = self.keys.digest(
                    b"rfc2543",
                    &[
                        via.host,
                        &port,
                        msg.call_id(),
                        msg.from_tag().unwrap_or_default(),
                        &msg.cseq_num.to_le_bytes(),
                        other.unwrap_or_default(),
                    ],
                );
                SmallVec::from_slice(&d[..16])
            }
        }
    }

    /// The top Via is ours and verifies against the Via below it.
    pub(super) fn verify_top_via<'m>(&self, msg: &'m Message) -> Option<(BranchInfo, Via<'m>)> {
        // The scanner found the top Via's branch already.
        let top = msg.top_via();
        let next = msg.vias().nth(1)??;
        let branch = top.branch()?;
        if !branch.starts_with(BRANCH_PREFIX) {
            return None;
        }
        let prev = self.prev_key(&next, msg);
        let info = self.keys.verify_branch(branch, &prev, msg.call_id())?;
        Some((info, next))
    }

    /// Periodic work: sweeps the tables and sends CRLF keepalives to
    /// registered trunks that asked for them. Call it every second or so.
    pub fn tick(&self, now: u64) -> Vec<Send> {
        let s = self.settings.load();
        let grace = s.config.registration.grace.ms();
        for ip in self.tables.bans.sweep(now, s.ban.window) {
            self.metrics.event(Event::Unbans);
            self.mark_dirty();
            tracing::info!(source = %ip, "ban lifted");
        }
        self.tables.rates.sweep(now, &s.budget);
        let gone_d = self.tables.dialogs.sweep_step(now);
        let gone_r = self.tables.regs.sweep(now, grace);
        if gone_r > 0 {
            self.mark_dirty();
            tracing::info!(expired = gone_r, "trunk registrations expired");
        }
        if gone_d > 0 {
            self.mark_dirty();
        }
        let mut sends = Vec::new();
        let live = self.tables.regs.live_regs(now, grace);
        self.keepalives
            .retain(|tok, _| live.iter().any(|(t, _)| t == tok));
        for (token, reg) in live {
            let Some(every) = s.keepalive(&reg.trunk) else {
                continue;
            };
            let last = self.keepalives.get(&token).map(|l| *l);
            if last.is_some_and(|l| now < l + every) {
                continue;
            }
            self.keepalives.insert(token, now);
            if last.is_none() {
                // Start the period now; the REGISTER itself opened the path.
                continue;
            }
            self.metrics.event(Event::KeepalivesSent);
            sends.push(Send {
                side: Side::Public,
                transport: reg.transport,
                listener: reg.listener,
                dest: Dest::Addr(reg.registrar_addr),
                data: Bytes::from_static(b"\r\n\r\n"),
                on_fail: None,
                // Over TCP only on the registration's own connection.
                reuse_only: true,
            });
        }
        sends
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
    pub fn learn_trunk_addresses(&self, trunk: &str, addrs: &[IpAddr], until: u64) {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| canonical_ip(*a)).collect();
        self.tables.regs.learn_addresses(trunk, &addrs, until);
    }

    /// What the state file keeps: live registrations, their addresses,
    /// confirmed dialogs and bans in force.
    pub fn snapshot(&self, now: u64) -> Snapshot {
        let grace = self.settings.load().config.registration.grace.ms();
        Snapshot {
            format: FORMAT.into(),
            version: VERSION,
            key_id: self.keys.key_id(),
            saved_at: now,
            registrations: self
                .tables
                .regs
                .live_regs(now, grace)
                .into_iter()
                .map(|(token, reg)| SavedReg {
                    token: token.to_string(),
                    reg,
                })
                .collect(),
            sources: self
                .tables
                .regs
                .sources(now)
                .into_iter()
                .map(|(ip, trunk, until)| SavedSource {
                    ip,
                    trunk: trunk.to_string(),
                    until,
                })
                .collect(),
            dialogs: self
                .tables
                .dialogs
                .confirmed()
                .into_iter()
                .map(|(k, d)| SavedDialog {
                    key: to_hex(&k.to_le_bytes()),
                    dialog: d,
                })
                .collect(),
            bans: self
                .tables
                .bans
                .banned(now)
                .into_iter()
                .map(|(ip, trigger, until)| SavedBan {
                    ip: ip.to_string(),
                    trigger: trigger.key().into(),
                    until,
                })
                .collect(),
        }
    }

    /// Loads a snapshot, dropping what expired meanwhile.
    pub fn restore(&self, snap: Snapshot, now: u64) -> Restored {
        let grace = self.settings.load().config.registration.grace.ms();
        let mut r = Restored::default();
        for s in snap.registrations {
            if self.tables.regs.restore(&s.token, s.reg, now, grace) {
                r.registrations += 1;
            } else {
                r.expired += 1;
            }
        }
        for s in snap.sources {
            self.tables
                .regs
                .restore_source(s.ip, &s.trunk, s.until, now);
        }
        for d in snap.dialogs {
            let mut k = [0u8; 16];
            if from_hex(d.key.as_bytes(), &mut k).is_none() {
                r.bad += 1;
                continue;
            }
            if self
                .tables
                .dialogs
                .restore(u128::from_le_bytes(k), d.dialog, now)
            {
                r.dialogs += 1;
            } else {
                r.expired += 1;
            }
        }
        self.restore_bans(snap.bans, now, &mut r);
        r
    }

    /// Bans in force at `now`, the longest first, up to the table's cap.
    fn restore_bans(&self, saved: Vec<SavedBan>, now: u64, r: &mut Restored) {
        let longest = self.settings.load().ban.duration;
        let mut bans: Vec<(IpAddr, Trigger, u64)> = Vec::with_capacity(saved.len());
        for b in saved {
            let ip = b.ip.parse::<IpAddr>().ok().map(canonical_ip);
            match (ip, Trigger::from_key(&b.trigger)) {
                (Some(ip), Some(t)) => bans.push((ip, t, b.until)),
                _ => r.bad += 1,
            }
        }
        bans.sort_unstable_by_key(|b| std::cmp::Reverse(b.2));
        for (ip, t, until) in bans {
            match self.tables.bans.restore(ip, t, until, now, longest) {
                Restore::Banned => r.bans += 1,
                Restore::Expired => r.expired += 1,
                Restore::Full => r.bans_over_cap += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_log_allows_its_rate_per_second() {
        let d = DropLog {
            rate: AtomicU32::new(3),
            second: AtomicU64::new(0),
            used: AtomicU32::new(0),
        };
        let allowed = |ms: u64| (0..10).filter(|_| d.allow(ms)).count();
        assert_eq!(allowed(5_000), 3);
        // The same second: nothing more, and the counter stops growing.
        assert_eq!(allowed(5_999), 0);
        assert_eq!(d.used.load(Relaxed), 3);
        assert_eq!(allowed(6_000), 3);
        d.rate.store(0, Relaxed);
        assert_eq!(allowed(7_000), 0);
    }
}
