//! Requests from the public side that admission let in: always to the
//! backend, never anywhere else (sipwarden is no open relay), with our Via,
//! Record-Route, Path or fixed Contact, and the headers Asterisk
//! identifies sources and trunks by.

use smallvec::SmallVec;

use crate::flow::{Flow, Side};
use crate::policy::admission::Admission;
use crate::sip::text::sockaddr_text;
use crate::sip::{Editor, HeaderName, Message, Method};
use crate::time::UnixMs;
use crate::token::{Dir, FlowRef, FlowToken, PrevHop};
use crate::verdict::Verdict;

use super::action::{Dest, Output, Transmit};
use super::core::Core;
use super::hop::{self, Hop};
use super::response::fix_contacts;
use super::rewrite::{
    creates_dialog, max_forwards, rr_insert_point, strip_owned, tcp_param, Rfc3581,
};
use super::route::pop_own_routes;
use crate::settings::Settings;

impl Core {
    pub(super) fn forward_inbound(
        &self,
        s: &Settings,
        now: UnixMs,
        flow: &Flow,
        msg: &Message,
        verdict: Verdict,
        adm: &Admission,
    ) -> Output {
        let Hop {
            loop_key,
            top,
            first_via,
            dialog,
        } = match hop::begin(&self.keys, &self.tables, flow, msg, Dir::Inbound) {
            Ok(h) => h,
            Err(out) => return out,
        };
        let call_id = msg.call_id();
        let il = usize::from(s.backend_listener);
        let internal = s.internal_text[il].as_bytes();
        // The caller's Via gets `received`/`rport` (the edit is made
        // below); where that makes the responses go is bound into our
        // branch.
        let fix = Rfc3581::new(&top, flow.remote);
        let prev = hop::prev_key(&self.keys, &top, msg);
        let branch = self.keys.branch(
            Dir::Inbound,
            flow.listener,
            PrevHop {
                key: &prev,
                back: fix.back,
            },
            s.backend_target.as_bytes(),
            call_id,
            loop_key,
        );
        let here = FlowRef {
            transport: flow.transport,
            listener: flow.listener,
            remote: flow.remote,
        };
        let mut ed = Editor::new(msg);
        // Step 6: the Request-URI goes back to the Contact Asterisk
        // registered with the provider.
        if let (Some(contact), Some(span)) = (&adm.contact, msg.request_uri_span()) {
            ed.replace(span, &[contact.as_bytes()]);
        }
        // `swa` marks a request with credentials: a 401/407 to it is a
        // failed authentication (counted for bans), not a first challenge.
        // Its value identifies the credentials, so the answers to their
        // retransmissions count once. Kept out of the branch so CANCEL and
        // ACK still match.
        let creds: SmallVec<[&[u8]; 2]> = msg
            .all(HeaderName::Authorization)
            .chain(msg.all(HeaderName::ProxyAuthorization))
            .map(|h| msg.value(h))
            .collect();
        let mark = (!creds.is_empty()).then(|| self.keys.credentials_mark(&creds));
        let (auth_mark, auth_key): (&[u8], &[u8]) = match &mark {
            Some(m) => (b";swa=", m),
            None => (b"", b""),
        };
        ed.insert_header_before(
            first_via,
            b"Via",
            &[
                b"SIP/2.0/",
                s.backend.transport.via_token(),
                b" ",
                internal,
                b";branch=",
                &branch,
                auth_mark,
                auth_key,
            ],
        );
        if creates_dialog(msg) {
            // Double Record-Route (RFC 5658): the top entry faces Asterisk
            // and names the caller's flow; the second faces the caller.
            // Both entries carry the caller's flow and one token signed
            // over the Call-ID and that flow.
            let ftok = self.keys.flow_token(&here);
            let tok = self.keys.route_token(call_id, ftok.as_bytes());
            let at = rr_insert_point(msg);
            ed.insert_header_at(
                at,
                b"Record-Route",
                &[
                    b"<sip:",
                    ftok.as_bytes(),
                    b"@",
                    internal,
                    tcp_param(s.backend.transport),
                    b";lr;swr=",
                    &tok,
                    b">",
                ],
            );
            ed.insert_header_at(
                at,
                b"Record-Route",
                &[
                    b"<sip:",
                    ftok.as_bytes(),
                    b"@",
                    s.advertise_for(flow.transport).as_bytes(),
                    tcp_param(flow.transport),
                    b";lr;swr=",
                    &tok,
                    b">",
                ],
            );
        }
        let method = msg.method();
        if s.config.nat.fix_contact {
            if matches!(
                method,
                Some(Method::Register | Method::Invite | Method::Subscribe)
            ) {
                fix_contacts(&mut ed, msg, flow);
            }
        } else if method == Some(Method::Register) {
            add_path(&mut ed, msg, &self.keys.flow_token(&here), internal, s);
        }
        fix.apply(&mut ed);
        max_forwards(&mut ed, msg);
        strip_owned(&mut ed, msg);
        pop_own_routes(&mut ed, msg, s, &self.keys);
        let source = sockaddr_text(flow.remote);
        ed.append_header(b"X-Sipwarden-Source", &[source.as_bytes()]);
        if let Some(trunk) = &adm.trunk {
            ed.append_header(b"X-Sipwarden-Trunk", &[trunk.as_bytes()]);
        }
        dialog.apply(&self.tables, &self.metrics, &s.lifetimes, now);
        Output::send(
            verdict,
            Transmit {
                side: Side::Internal,
                transport: s.backend.transport,
                listener: Some(s.backend_listener),
                dest: Dest::Addr(s.backend.addr),
                data: ed.finish(),
                on_fail: None,
                reuse_only: false,
            },
        )
    }
}

/// RFC 3327: our Path entry names the flow the REGISTER came in on, so
/// Asterisk's later requests to the phone come back through that flow.
/// Asterisk answers 420 to a Path without `Supported: path`.
fn add_path(ed: &mut Editor<'_>, msg: &Message, ftok: &FlowToken, internal: &[u8], s: &Settings) {
    let at = msg
        .first(HeaderName::Path)
        .or_else(|| msg.first(HeaderName::Via))
        .map_or(msg.headers_end, |h| h.line.start as usize);
    ed.insert_header_at(
        at,
        b"Path",
        &[
            b"<sip:",
            ftok.as_bytes(),
            b"@",
            internal,
            tcp_param(s.backend.transport),
            b";lr>",
        ],
    );
    let has_path = msg.all(HeaderName::Supported).any(|h| {
        msg.value(h)
            .split(|&c| c == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"path"))
    });
    if !has_path {
        ed.append_header(b"Supported", &[b"path"]);
    }
}
