//! The sans-IO proxy: `handle(now, flow, bytes) -> Output`. It reads no
//! clock and touches no socket; the caller passes the time in and carries
//! out the sends it returns (the shape of quinn-proto's `Endpoint`).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use smallvec::SmallVec;

use crate::flow::{Flow, Side, Transport};
use crate::metrics::{Event, Metrics};
use crate::policy::{admission, Disposition, Reason, Verdict};
use crate::sip::addr::split_list;
use crate::sip::uri::{parse_host_ip, Uri};
use crate::sip::via::Via;
use crate::sip::{scan, Editor, Framing, HeaderName, Message, Method, ScanError, Span};

use super::action::{Dest, Output, Send};
use super::reply;
use super::route::{next_hop, pop_own_routes};
use super::settings::Settings;
use super::token::{BranchInfo, Dir, FlowRef, Keys, BRANCH_PREFIX};

/// The proxy core. Shared by all socket tasks; every method takes `&self`.
pub struct Core {
    settings: ArcSwap<Settings>,
    keys: Keys,
    metrics: Arc<Metrics>,
    droplog: DropLog,
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
        self.used.fetch_add(1, Relaxed) < self.rate.load(Relaxed)
    }
}

/// Is this datagram only line ends (a CRLF keepalive)?
fn is_keepalive(data: &[u8]) -> bool {
    !data.is_empty() && data.iter().all(|&c| c == b'\r' || c == b'\n')
}

/// IPv4-mapped IPv6 addresses are IPv4 for comparisons and headers.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn ip_text(ip: IpAddr) -> String {
    canonical_ip(ip).to_string()
}

fn sockaddr_text(a: SocketAddr) -> String {
    match canonical_ip(a.ip()) {
        IpAddr::V4(v4) => format!("{v4}:{}", a.port()),
        IpAddr::V6(v6) => format!("[{v6}]:{}", a.port()),
    }
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

/// Dialog-creating requests get Record-Route (DESIGN.md section 3).
fn creates_dialog(msg: &Message) -> bool {
    matches!(
        msg.method(),
        Some(Method::Invite | Method::Subscribe | Method::Refer)
    ) && msg.to_tag().is_none()
}

impl Core {
    pub fn new(settings: Settings, keys: Keys, metrics: Arc<Metrics>) -> Core {
        let rate = settings.config.log.drop_rate;
        Core {
            settings: ArcSwap::from_pointee(settings),
            keys,
            metrics,
            droplog: DropLog {
                rate: AtomicU32::new(rate),
                second: AtomicU64::new(0),
                used: AtomicU32::new(0),
            },
        }
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Swaps in new settings atomically: a message being handled finishes
    /// with the old ones, the next one sees the new ones.
    pub fn reload(&self, settings: Settings) {
        self.droplog
            .rate
            .store(settings.config.log.drop_rate, Relaxed);
        self.settings.store(Arc::new(settings));
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Handles one message (a datagram, or one frame of a TCP stream)
    /// that arrived on `flow` at `now_ms` (milliseconds, any epoch).
    pub fn handle(&self, now_ms: u64, flow: &Flow, data: Bytes) -> Output {
        let s = self.settings.load();
        let raw = data.clone();
        let out = match flow.side {
            Side::Public => self.on_public(&s, flow, data),
            Side::Internal => self.on_internal(&s, flow, data),
        };
        if let Some(v) = out.verdict {
            self.metrics
                .count(flow.side, flow.transport, v.reason, v.disposition);
            if matches!(v.disposition, Disposition::Dropped | Disposition::WouldDrop) {
                self.log_drop(now_ms, flow, v, &raw);
            }
        }
        out
    }

    fn log_drop(&self, now_ms: u64, flow: &Flow, v: Verdict, raw: &[u8]) {
        // Keepalives are routine, not worth a line.
        if v.reason == Reason::Keepalive {
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

    fn on_public(&self, s: &Settings, flow: &Flow, data: Bytes) -> Output {
        if is_keepalive(&data) {
            return Output::verdict(Verdict::drop(Reason::Keepalive));
        }
        let msg = match self.scan(s, flow, data) {
            Ok(m) => m,
            Err(v) => return Output::verdict(v),
        };
        if !msg.is_request() {
            return self.relay_response(s, &msg, Dir::Outbound);
        }
        match admission::admit_request(&msg, s, &self.keys) {
            Ok(reason) => self.forward_inbound(s, flow, &msg, Verdict::forward(reason)),
            Err(reason) if s.monitor => self.forward_inbound(
                s,
                flow,
                &msg,
                Verdict {
                    reason,
                    disposition: Disposition::WouldDrop,
                },
            ),
            Err(reason) => self.reject(s, flow, &msg, reason),
        }
    }

    fn on_internal(&self, s: &Settings, flow: &Flow, data: Bytes) -> Output {
        if is_keepalive(&data) {
            return Output::verdict(Verdict::drop(Reason::Keepalive));
        }
        let msg = match self.scan(s, flow, data) {
            Ok(m) => m,
            Err(v) => return Output::verdict(v),
        };
        if msg.is_request() {
            self.forward_outbound(s, flow, &msg)
        } else {
            self.relay_response(s, &msg, Dir::Inbound)
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
    fn reply(&self, flow: &Flow, msg: &Message, code: u16, phrase: &str, reason: Reason) -> Output {
        let tag = self
            .keys
            .reply_tag(msg.call_id(), msg.from_tag().unwrap_or_default());
        let data = reply::build(msg, code, phrase, &tag);
        Output::send(
            Verdict::replied(reason),
            Send {
                side: flow.side,
                transport: flow.transport,
                listener: Some(flow.listener),
                dest: Dest::Addr(flow.remote),
                data,
                on_fail: None,
            },
        )
    }

    /// Max-Forwards 0 and loops end here (RFC 3261 16.3): 483 / 482, or a
    /// silent drop for ACK, which is never answered.
    fn hop_checks(
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

    fn loop_key(&self, msg: &Message) -> [u8; 4] {
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
    fn prev_key(&self, via: &Via<'_>, msg: &Message) -> SmallVec<[u8; 64]> {
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
    fn verify_top_via<'m>(&self, msg: &'m Message) -> Option<(BranchInfo, Via<'m>)> {
        let mut vias = msg.vias();
        let top = vias.next()??;
        let next = vias.next()??;
        let branch = top.branch()?;
        if !branch.starts_with(BRANCH_PREFIX) {
            return None;
        }
        let prev = self.prev_key(&next, msg);
        let info = self.keys.verify_branch(branch, &prev, msg.call_id())?;
        Some((info, next))
    }

    /// Responses: accepted only when the top Via is ours, verifies, and
    /// was written for a request going the other way (`expect`). Our Via
    /// is popped and the response goes to the next one.
    fn relay_response(&self, s: &Settings, msg: &Message, expect: Dir) -> Output {
        let Some((info, next)) = self.verify_top_via(msg).filter(|(i, _)| i.dir == expect) else {
            return Output::verdict(Verdict::drop(Reason::StrayResponse));
        };
        let Some((dest, transport)) = via_dest(&next) else {
            return Output::verdict(Verdict::drop(Reason::Unroutable));
        };
        let mut ed = Editor::new(msg);
        pop_top_via(&mut ed, msg);
        strip_owned(&mut ed, msg);
        let (side, count) = match expect {
            Dir::Outbound => (Side::Internal, s.internal.len()),
            Dir::Inbound => (Side::Public, s.public.len()),
        };
        let listener = (usize::from(info.listener) < count).then_some(info.listener);
        Output::send(
            Verdict::forward(Reason::Response),
            Send {
                side,
                transport,
                listener,
                dest,
                data: ed.finish(),
                on_fail: None,
            },
        )
    }

    /// A request from the public side, admitted: to the backend, always.
    /// Nothing from outside is ever relayed anywhere else.
    fn forward_inbound(
        &self,
        s: &Settings,
        flow: &Flow,
        msg: &Message,
        verdict: Verdict,
    ) -> Output {
        let loop_key = self.loop_key(msg);
        if let Some(out) = self.hop_checks(flow, msg, Dir::Inbound, loop_key) {
            return out;
        }
        let Some(top) = msg.top_via() else {
            return Output::verdict(Verdict::drop(Reason::Malformed));
        };
        let call_id = msg.call_id();
        let il = usize::from(s.backend_listener);
        let prev = self.prev_key(&top, msg);
        let branch = self.keys.branch(
            Dir::Inbound,
            flow.listener,
            &prev,
            s.backend_target.as_bytes(),
            call_id,
            loop_key,
        );
        let mut ed = Editor::new(msg);
        let Some(first_via) = msg.first(HeaderName::Via) else {
            return Output::verdict(Verdict::drop(Reason::Malformed));
        };
        ed.insert_header_before(
            first_via,
            b"Via",
            &[
                b"SIP/2.0/",
                s.backend.transport.via_token(),
                b" ",
                s.internal_text[il].as_bytes(),
                b";branch=",
                &branch,
            ],
        );
        if creates_dialog(msg) {
            // Double Record-Route (RFC 5658): the top entry faces Asterisk
            // and names the caller's flow; the second faces the caller.
            let ftok = self.keys.flow_token(&FlowRef {
                transport: flow.transport,
                listener: flow.listener,
                remote: flow.remote,
            });
            let itok = self.keys.route_token(call_id, ftok.as_bytes());
            let ptok = self.keys.route_token(call_id, b"");
            let at = rr_insert_point(msg);
            ed.insert_header_at(
                at,
                b"Record-Route",
                &[
                    b"<sip:",
                    ftok.as_bytes(),
                    b"@",
                    s.internal_text[il].as_bytes(),
                    tcp_param(s.backend.transport),
                    b";lr;swr=",
                    &itok,
                    b">",
                ],
            );
            ed.insert_header_at(
                at,
                b"Record-Route",
                &[
                    b"<sip:",
                    s.advertise_text.as_bytes(),
                    tcp_param(flow.transport),
                    b";lr;swr=",
                    &ptok,
                    b">",
                ],
            );
        }
        rfc3581(&mut ed, &top, flow.remote);
        max_forwards(&mut ed, msg);
        strip_owned(&mut ed, msg);
        pop_own_routes(&mut ed, msg, s, &self.keys);
        let source = sockaddr_text(flow.remote);
        ed.append_header(b"X-Sipwarden-Source", &[source.as_bytes()]);
        Output::send(
            verdict,
            Send {
                side: Side::Internal,
                transport: s.backend.transport,
                listener: Some(s.backend_listener),
                dest: Dest::Addr(s.backend.addr),
                data: ed.finish(),
                on_fail: None,
            },
        )
    }

    /// A request from Asterisk: pop our Route entries, then send it down
    /// the flow a token names, or to the next Route, or to the
    /// Request-URI.
    fn forward_outbound(&self, s: &Settings, flow: &Flow, msg: &Message) -> Output {
        let loop_key = self.loop_key(msg);
        if let Some(out) = self.hop_checks(flow, msg, Dir::Outbound, loop_key) {
            return out;
        }
        let Some(top) = msg.top_via() else {
            return Output::verdict(Verdict::drop(Reason::Malformed));
        };
        let Some(first_via) = msg.first(HeaderName::Via) else {
            return Output::verdict(Verdict::drop(Reason::Malformed));
        };
        let call_id = msg.call_id();
        let mut ed = Editor::new(msg);
        let popped = pop_own_routes(&mut ed, msg, s, &self.keys);
        let flow_target;
        let (dest, transport, listener, target): (Dest, Transport, Option<u8>, &[u8]) =
            match popped.flow {
                Some(f) => {
                    flow_target = sockaddr_text(f.remote);
                    let l = (usize::from(f.listener) < s.public.len()).then_some(f.listener);
                    (Dest::Addr(f.remote), f.transport, l, flow_target.as_bytes())
                }
                None => {
                    let uri_bytes = popped
                        .next
                        .unwrap_or_else(|| msg.request_uri().unwrap_or_default());
                    let hop = Uri::parse(uri_bytes).and_then(|u| next_hop(&u));
                    let Some((dest, transport)) = hop else {
                        if msg.method() == Some(Method::Ack) {
                            return Output::verdict(Verdict::drop(Reason::Unroutable));
                        }
                        return self.reply(
                            flow,
                            msg,
                            416,
                            "Unsupported URI Scheme",
                            Reason::Unroutable,
                        );
                    };
                    (dest, transport, None, uri_bytes)
                }
            };
        let prev = self.prev_key(&top, msg);
        let branch = self.keys.branch(
            Dir::Outbound,
            flow.listener,
            &prev,
            target,
            call_id,
            loop_key,
        );
        ed.insert_header_before(
            first_via,
            b"Via",
            &[
                b"SIP/2.0/",
                transport.via_token(),
                b" ",
                s.advertise_text.as_bytes(),
                b";branch=",
                &branch,
                b";rport",
            ],
        );
        if creates_dialog(msg) {
            let ftok = popped
                .flow
                .map(|f| self.keys.flow_token(&f))
                .unwrap_or_default();
            let itok = self.keys.route_token(call_id, ftok.as_bytes());
            let ptok = self.keys.route_token(call_id, b"");
            let at = rr_insert_point(msg);
            ed.insert_header_at(
                at,
                b"Record-Route",
                &[
                    b"<sip:",
                    s.advertise_text.as_bytes(),
                    tcp_param(transport),
                    b";lr;swr=",
                    &ptok,
                    b">",
                ],
            );
            let user_sep: &[u8] = if ftok.is_empty() { b"" } else { b"@" };
            let il = usize::from(flow.listener).min(s.internal_text.len().saturating_sub(1));
            ed.insert_header_at(
                at,
                b"Record-Route",
                &[
                    b"<sip:",
                    ftok.as_bytes(),
                    user_sep,
                    s.internal_text[il].as_bytes(),
                    tcp_param(flow.transport),
                    b";lr;swr=",
                    &itok,
                    b">",
                ],
            );
        }
        rfc3581(&mut ed, &top, flow.remote);
        max_forwards(&mut ed, msg);
        strip_owned(&mut ed, msg);
        let on_fail = match (&dest, msg.method()) {
            (Dest::Name { .. }, m) if m != Some(Method::Ack) => {
                let tag = self
                    .keys
                    .reply_tag(call_id, msg.from_tag().unwrap_or_default());
                Some(Box::new(Send {
                    side: flow.side,
                    transport: flow.transport,
                    listener: Some(flow.listener),
                    dest: Dest::Addr(flow.remote),
                    data: reply::build(msg, 503, "Service Unavailable", &tag),
                    on_fail: None,
                }))
            }
            _ => None,
        };
        Output::send(
            Verdict::forward(Reason::Outbound),
            Send {
                side: Side::Public,
                transport,
                listener,
                dest,
                data: ed.finish(),
                on_fail,
            },
        )
    }
}

fn tcp_param(t: Transport) -> &'static [u8] {
    match t {
        Transport::Udp => b"",
        Transport::Tcp => b";transport=tcp",
    }
}

/// New Record-Route lines go above the existing ones, or above the Vias.
fn rr_insert_point(msg: &Message) -> usize {
    msg.first(HeaderName::RecordRoute)
        .or_else(|| msg.first(HeaderName::Via))
        .map_or(msg.headers_end, |h| h.line.start as usize)
}

/// Where a response goes (RFC 3261 18.2.2, RFC 3581 4): `received` and
/// `rport` if present, else the sent-by.
fn via_dest(v: &Via<'_>) -> Option<(Dest, Transport)> {
    let transport = Transport::from_token(v.transport)?;
    let port = match v.rport() {
        Some(Some(p)) if p != 0 => p,
        _ => v.port.unwrap_or(5060),
    };
    let host = v.received().unwrap_or(v.host);
    let dest = match parse_host_ip(host) {
        Some(ip) => Dest::Addr(SocketAddr::new(ip, port)),
        None => Dest::Name {
            host: String::from_utf8_lossy(host).to_ascii_lowercase().into(),
            port: Some(port),
        },
    };
    Some((dest, transport))
}

/// Removes the first Via value (ours).
fn pop_top_via(ed: &mut Editor<'_>, msg: &Message) {
    let Some(h) = msg.first(HeaderName::Via) else {
        return;
    };
    let v = msg.value(h);
    let mut entries = split_list(v);
    let _first = entries.next();
    match entries.next() {
        Some((second, _)) => ed.delete(Span::new(
            h.value.start as usize,
            h.value.start as usize + second,
        )),
        None => ed.remove_header(h),
    }
}

/// RFC 3581: `received` when the source differs from sent-by or `rport`
/// was asked for; `rport` filled in. A `received` the client wrote itself
/// is overwritten with the truth.
fn rfc3581(ed: &mut Editor<'_>, via: &Via<'_>, src: SocketAddr) {
    let ip = canonical_ip(src.ip());
    let rport = via.param_at(b"rport");
    let received = via.param_at(b"received");
    let sent_by_differs = parse_host_ip(via.host).map(canonical_ip) != Some(ip);
    let ip_s = ip_text(ip);
    match received {
        Some(p) => ed.replace(Span::new(p.start, p.end), &[b"received=", ip_s.as_bytes()]),
        None if sent_by_differs || rport.is_some() => {
            ed.insert(via.span.end as usize, &[b";received=", ip_s.as_bytes()])
        }
        None => {}
    }
    if let Some(p) = rport {
        let port = src.port().to_string();
        ed.replace(Span::new(p.start, p.end), &[b"rport=", port.as_bytes()]);
    }
}

/// Decrements Max-Forwards, or inserts 70 when absent (checked for 0
/// before).
fn max_forwards(ed: &mut Editor<'_>, msg: &Message) {
    match (msg.first(HeaderName::MaxForwards), msg.max_forwards) {
        (Some(h), Some(n)) => {
            let v = (n.saturating_sub(1)).to_string();
            ed.replace(h.value, &[v.as_bytes()]);
        }
        _ => ed.append_header(b"Max-Forwards", &[b"70"]),
    }
}

/// Removes every `X-Sipwarden-*` header: only sipwarden may set them.
fn strip_owned(ed: &mut Editor<'_>, msg: &Message) {
    for h in msg.all(HeaderName::XSipwarden) {
        ed.remove_header(h);
    }
}
