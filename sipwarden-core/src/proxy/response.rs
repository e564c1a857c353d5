//! Responses: accepted only when the top Via is ours, verifies, and was
//! written for a request going the other way; our Via is popped and the
//! response goes to the next Via's address, which the branch binds. On the way, the tables learn from them:
//! dialogs from INVITE answers, trunk registrations from REGISTER answers.

use crate::flow::{Flow, Side, Transport};
use crate::metrics::Event;
use crate::policy::ban;
use crate::sip::params;
use crate::sip::text::sockaddr_text;
use crate::sip::{Editor, HeaderName, Message, Method};
use crate::state::Change;
use crate::time::UnixMs;
use crate::token::Dir;
use crate::verdict::{Reason, Verdict};

use super::action::{Dest, Output, Transmit};
use super::core::Core;
use super::hop;
use super::rewrite::{contacts, parse_secs, pop_top_via, rewrite_contact, strip_owned, tcp_param};
use crate::settings::Settings;

impl Core {
    pub(super) fn relay_response(
        &self,
        s: &Settings,
        now: UnixMs,
        flow: &Flow,
        msg: &Message,
        expect: Dir,
    ) -> Output {
        // Sent only where the branch says: the address it binds.
        let Some((info, back)) =
            hop::verify_top_via(&self.keys, msg).filter(|(i, _)| i.dir == expect)
        else {
            return Output::verdict(Verdict::drop(Reason::StrayResponse));
        };
        let Some(back) = back else {
            return Output::verdict(Verdict::drop(Reason::Unroutable));
        };
        let code = msg.status().unwrap_or(0);
        let mut ed = Editor::new(msg);
        pop_top_via(&mut ed, msg);
        strip_owned(&mut ed, msg);
        let method = msg.cseq_method();
        if method == Method::Invite {
            self.learn_dialog(s, now, msg, code);
        }
        if expect == Dir::Inbound && code >= 400 {
            let swa = msg.top_via().param(b"swa");
            if ban::auth_failed(msg, swa.is_some()) {
                ban::count_auth_failure(
                    s,
                    &self.tables,
                    &self.metrics,
                    now,
                    back.addr.ip(),
                    credentials_key(swa.flatten()),
                );
            }
        }
        if expect == Dir::Outbound {
            if method == Method::Register {
                self.learn_registration(now, flow, msg, code);
            }
            // An answering phone behind NAT: its Contact becomes the
            // address its answer came from.
            if s.config.nat.fix_contact
                && (200..300).contains(&code)
                && matches!(method, Method::Invite | Method::Subscribe)
            {
                fix_contacts(&mut ed, msg, flow);
            }
        }
        let (side, count) = match expect {
            Dir::Outbound => (Side::Internal, s.internal.len()),
            Dir::Inbound => (Side::Public, s.public.len()),
        };
        let listener = (usize::from(info.listener) < count).then_some(info.listener);
        Output::send(
            Verdict::forward(Reason::Response),
            Transmit {
                side,
                transport: back.transport,
                listener,
                dest: Dest::Addr(back.addr),
                data: ed.finish(),
                on_fail: None,
                // A TLS connection gone is not opened again for a response:
                // the peer sends its request again over a new one.
                reuse_only: back.transport == Transport::Tls,
            },
        )
    }

    fn learn_dialog(&self, s: &Settings, now: UnixMs, msg: &Message, code: u16) {
        let Some(ftag) = msg.from_tag() else {
            return;
        };
        let key = self.keys.dialog_key(msg.call_id(), ftag);
        let to_tag = msg.to_tag().map(|t| self.keys.tag_hash(t));
        self.tables
            .dialogs
            .invite_response(key, code, to_tag, now, &s.lifetimes);
        if code >= 200 {
            self.tables.mark_dirty();
        }
    }

    /// A registrar answered a REGISTER Asterisk sent through us: store,
    /// refresh or remove the trunk registration.
    fn learn_registration(&self, now: UnixMs, flow: &Flow, msg: &Message, code: u16) {
        let call = self.keys.call_key(msg.call_id());
        let token = self.tables.regs.pending_token(call);
        // RFC 3261 10.2.4: the expiry granted to our Contact, else Expires.
        let granted = token
            .as_deref()
            .and_then(|tok| {
                contacts(msg).into_iter().find_map(|c| {
                    let ours = c.uri.param(b"sw").flatten() == Some(tok.as_bytes());
                    ours.then(|| {
                        params::find(c.params, b"expires")
                            .flatten()
                            .and_then(parse_secs)
                    })
                    .flatten()
                })
            })
            .or_else(|| msg.first_value(HeaderName::Expires).and_then(parse_secs));
        match self
            .tables
            .regs
            .answered(call, code, granted, flow.remote, now)
        {
            Ok(Some(reg)) => {
                self.tables.mark_dirty();
                if let Some(token) = &token {
                    self.tables.feed.push(Change::Registered {
                        token: token.clone(),
                        reg: reg.clone(),
                        at: now,
                    });
                }
                tracing::info!(
                    trunk = %reg.trunk,
                    registrar = %flow.remote,
                    expires_in_s = reg.expires.since(now) / 1000,
                    "trunk registered"
                );
            }
            Ok(None) if (200..300).contains(&code) && token.is_some() => {
                self.tables.mark_dirty();
                if let Some(token) = &token {
                    self.tables.feed.push(Change::Unregistered {
                        token: token.clone(),
                        at: now,
                    });
                }
                tracing::info!(registrar = %flow.remote, "trunk unregistered");
            }
            Ok(None) => {}
            Err(_) => {
                self.metrics.event(Event::RegistrationsRefused);
                tracing::warn!("registration table full (registration.max_entries): not stored");
            }
        }
    }
}

/// The credentials a `swa=` mark names (0: none, or a mark without a
/// value).
fn credentials_key(mark: Option<&[u8]>) -> u32 {
    let mut k = [0u8; 4];
    match mark.and_then(|m| crate::token::from_hex(m, &mut k)) {
        Some(()) => u32::from_be_bytes(k),
        None => 0,
    }
}

/// `nat.fix_contact`: every Contact of a message from the public side
/// names the address it really came from.
pub(super) fn fix_contacts(ed: &mut Editor<'_>, msg: &Message, flow: &Flow) {
    let hostport = sockaddr_text(flow.remote);
    for c in contacts(msg) {
        // A transport the Contact names is kept; over TCP one is added.
        let transport = if c.uri.transport().is_some() {
            b"" as &[u8]
        } else {
            tcp_param(flow.transport)
        };
        rewrite_contact(ed, &c, hostport.as_bytes(), &[transport]);
    }
}
