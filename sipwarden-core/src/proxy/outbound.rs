//! Requests from Asterisk (the internal socket): pop our Route entries,
//! then send down the flow a token names, or to the next Route, or to the
//! Request-URI. A REGISTER to a provider gets its Contact rewritten to our
//! public address with a signed `sw=` token, and is remembered until its
//! answer says how long the registration lives.

use crate::flow::{Flow, Side, Transport, OPENED_TLS};
use crate::metrics::Event;
use crate::sip::addr::NameAddr;
use crate::sip::params;
use crate::sip::text::sockaddr_text;
use crate::sip::uri::Uri;
use crate::sip::{Editor, HeaderName, Message, Method};
use crate::time::UnixMs;
use crate::token::{Dir, FlowToken, PrevHop};
use crate::verdict::{Reason, Verdict};

use super::action::{Dest, Output, Transmit};
use super::core::Core;
use super::hop::{self, Hop};
use super::reply;
use super::rewrite::{
    contacts, creates_dialog, max_forwards, parse_secs, rewrite_contact, rr_insert_point,
    strip_owned, tcp_param, Rfc3581,
};
use super::route::{next_hop, pop_own_routes};
use crate::settings::Settings;

impl Core {
    pub(super) fn forward_outbound(
        &self,
        s: &Settings,
        now: UnixMs,
        flow: &Flow,
        msg: &Message,
    ) -> Output {
        let Hop {
            loop_key,
            top,
            first_via,
            dialog,
        } = match hop::begin(&self.keys, &self.tables, flow, msg, Dir::Outbound) {
            Ok(h) => h,
            Err(out) => return out,
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
                        return reply::answer(
                            &self.keys,
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
        // Asterisk's Via gets `received`/`rport` (the edit is made below);
        // where that makes the responses go is bound into our branch, so
        // the peer that sees that Via cannot send them anywhere else on
        // the internal side.
        let fix = Rfc3581::new(&top, flow.remote);
        let prev = hop::prev_key(&self.keys, &top, msg);
        let branch = self.keys.branch(
            Dir::Outbound,
            flow.listener,
            PrevHop {
                key: &prev,
                back: fix.back,
            },
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
                s.advertise_for(transport).as_bytes(),
                b";branch=",
                &branch,
                b";rport",
            ],
        );
        if creates_dialog(msg) {
            // Double Record-Route: the top entry faces the outside, the
            // second faces Asterisk and names the flow it went down, if a
            // Path token chose one (the phone's Contact may be private).
            let ftok = popped
                .flow
                .map_or(FlowToken::NONE, |f| self.keys.flow_token(&f));
            // One token for both entries, over the Call-ID and the flow.
            let tok = self.keys.route_token(call_id, ftok.as_bytes());
            let user_sep: &[u8] = if ftok.is_empty() { b"" } else { b"@" };
            let at = rr_insert_point(msg);
            ed.insert_header_at(
                at,
                b"Record-Route",
                &[
                    b"<sip:",
                    ftok.as_bytes(),
                    user_sep,
                    s.advertise_for(transport).as_bytes(),
                    tcp_param(transport),
                    b";lr;swr=",
                    &tok,
                    b">",
                ],
            );
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
                    &tok,
                    b">",
                ],
            );
        }
        if msg.method() == Some(Method::Register) {
            self.trunk_register(s, now, msg, &mut ed, transport, listener);
        }
        fix.apply(&mut ed);
        max_forwards(&mut ed, msg);
        strip_owned(&mut ed, msg);
        dialog.apply(&self.tables, &self.metrics, &s.lifetimes, now);
        // A TCP flow whose connection is gone is connected to again (a
        // phone not behind NAT listens where it sent from); if that fails,
        // or the flow is a TLS phone's (sipwarden opens no TLS connection
        // to a phone), Asterisk gets 430 Flow Failed (RFC 5626 5.3) at
        // once instead of timing out. A TLS connection sipwarden opened
        // went to a provider's listening port: that one is opened again.
        let tcp_flow = popped.flow.is_some() && transport.is_stream();
        let reuse_only = popped
            .flow
            .is_some_and(|f| transport == Transport::Tls && f.listener != OPENED_TLS);
        let on_fail = match (&dest, msg.method()) {
            (_, Some(Method::Ack)) => None,
            (Dest::Name { .. }, _) => Some(Box::new(reply::transmit(
                &self.keys,
                flow,
                msg,
                503,
                "Service Unavailable",
            ))),
            _ if tcp_flow => Some(Box::new(reply::transmit(
                &self.keys,
                flow,
                msg,
                430,
                "Flow Failed",
            ))),
            _ => None,
        };
        Output::send(
            Verdict::forward(Reason::Outbound),
            Transmit {
                side: Side::Public,
                transport,
                listener,
                dest,
                data: ed.finish(),
                on_fail,
                reuse_only,
            },
        )
    }

    /// Asterisk registers to a provider (a trunk registration): its
    /// loopback Contact becomes our advertised address plus a `sw=` token
    /// (user part and Asterisk's parameters such as `line=` kept), and the
    /// REGISTER is remembered until its answer.
    fn trunk_register(
        &self,
        s: &Settings,
        now: UnixMs,
        msg: &Message,
        ed: &mut Editor<'_>,
        transport: Transport,
        listener: Option<u8>,
    ) {
        let Some(registrar) = msg.request_uri().and_then(Uri::parse).map(|u| u.host) else {
            return;
        };
        let trunk = s.trunk_for_registrar(registrar);
        let registrar = String::from_utf8_lossy(registrar).to_ascii_lowercase();
        let header_expires = msg.first_value(HeaderName::Expires).and_then(parse_secs);
        let list = contacts(msg);
        let call = self.keys.call_key(msg.call_id());
        let Some(c) = list.first() else {
            // `Contact: *` (remove all) or a query: the account is in To.
            let star = msg
                .first_value(HeaderName::Contact)
                .is_some_and(|v| v.trim_ascii() == b"*");
            if star {
                let user = msg
                    .first_value(HeaderName::To)
                    .and_then(NameAddr::parse)
                    .and_then(|na| Uri::parse(na.uri))
                    .and_then(|u| u.user)
                    .unwrap_or_default();
                let token = self.keys.contact_token(trunk.as_bytes(), user);
                self.tables.regs.sent(
                    call,
                    &token,
                    &trunk,
                    &registrar,
                    String::new(),
                    0,
                    transport,
                    listener,
                    now,
                );
            }
            return;
        };
        let user = c.uri.user.unwrap_or_default();
        let token = self.keys.contact_token(trunk.as_bytes(), user);
        let original = String::from_utf8_lossy(&msg.bytes()[c.start..c.start + c.len]).into_owned();
        let asked = params::find(c.params, b"expires")
            .flatten()
            .and_then(parse_secs)
            .or(header_expires)
            .unwrap_or(3600);
        for c in &list {
            let user = c.uri.user.unwrap_or_default();
            let tok = self.keys.contact_token(trunk.as_bytes(), user);
            // Over TCP the provider must call back over TCP (RFC 3263).
            let tcp: &[u8] = if c.uri.transport().is_none() {
                tcp_param(transport)
            } else {
                b""
            };
            rewrite_contact(
                ed,
                c,
                s.advertise_for(transport).as_bytes(),
                &[tcp, b";sw=", tok.as_bytes()],
            );
        }
        if !self.tables.regs.sent(
            call, &token, &trunk, &registrar, original, asked, transport, listener, now,
        ) {
            self.metrics.event(Event::RegistrationsRefused);
        }
    }
}
