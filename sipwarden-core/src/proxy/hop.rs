//! What forwarding a request starts with, in either direction, and what
//! a response's top Via must prove. Max-Forwards and loops end here (RFC
//! 3261 16.3: 483, 482); our Via's keyed branch is checked against the Via
//! below it; and a forwarded request's effect on the dialog table is
//! decided before the message is edited.

use smallvec::SmallVec;

use crate::flow::Flow;
use crate::metrics::{Event, Metrics};
use crate::sip::via::Via;
use crate::sip::{Header, HeaderName, Message, Method};
use crate::state::{Lifetimes, Tables};
use crate::time::UnixMs;
use crate::token::{BranchInfo, Dir, Keys, PrevHop, ReturnAddr, BRANCH_PREFIX};
use crate::verdict::{Reason, Verdict};

use super::action::Output;
use super::reply;
use super::rewrite::via_return;

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

impl DialogOp {
    /// Applies it, once the request is forwarded. Inlined into the two
    /// forwarding paths (a call with five arguments costs more than the
    /// work it does).
    #[inline]
    pub(super) fn apply(
        self,
        tables: &Tables,
        metrics: &Metrics,
        lifetimes: &Lifetimes,
        now: UnixMs,
    ) {
        match self {
            DialogOp::None => {}
            DialogOp::Invite { key, cseq } => {
                let evicted = tables.dialogs.invite(key, cseq, now, lifetimes);
                for _ in 0..evicted {
                    metrics.event(Event::DialogsRefused);
                }
            }
            DialogOp::Bye { by_from, by_to } => {
                tables.dialogs.end(by_from, now, lifetimes);
                if let Some(k) = by_to {
                    tables.dialogs.end(k, now, lifetimes);
                }
                tables.mark_dirty();
            }
        }
    }
}

/// What forwarding a request in either direction starts with: the hop
/// checks (483 / 482) passed and the top Via read. `Err` is the answer
/// (or drop) that ends it here.
pub(super) fn begin<'m>(
    keys: &Keys,
    tables: &Tables,
    flow: &Flow,
    msg: &'m Message,
    dir: Dir,
) -> Result<Hop<'m>, Output> {
    let loop_key = loop_key(keys, msg);
    if let Some(out) = hop_checks(keys, flow, msg, dir, loop_key) {
        return Err(out);
    }
    match msg.first(HeaderName::Via) {
        Some(first_via) => Ok(Hop {
            loop_key,
            top: msg.top_via(),
            first_via,
            dialog: dialog_op(keys, tables, msg),
        }),
        None => Err(Output::verdict(Verdict::drop(Reason::Malformed))),
    }
}

/// Max-Forwards 0 and loops end here (RFC 3261 16.3): 483 / 482, or a
/// silent drop for ACK, which is never answered.
fn hop_checks(
    keys: &Keys,
    flow: &Flow,
    msg: &Message,
    dir: Dir,
    loop_key: [u8; 4],
) -> Option<Output> {
    let (code, phrase, reason) = if msg.max_forwards == Some(0) {
        (483, "Too Many Hops", Reason::TooManyHops)
    } else if looped(keys, msg, dir, loop_key) {
        (482, "Loop Detected", Reason::Loop)
    } else {
        return None;
    };
    if msg.method() == Some(Method::Ack) {
        return Some(Output::verdict(Verdict::drop(reason)));
    }
    Some(reply::answer(keys, flow, msg, code, phrase, reason))
}

/// The dialog table follows INVITEs and BYEs in either direction.
fn dialog_op(keys: &Keys, tables: &Tables, msg: &Message) -> DialogOp {
    let Some(ftag) = msg.from_tag() else {
        return DialogOp::None;
    };
    match msg.method() {
        Some(Method::Invite) if msg.to_tag().is_none() => {
            let key = keys.dialog_key(msg.call_id(), ftag);
            tables.dialogs.prefetch(key);
            DialogOp::Invite {
                key,
                cseq: msg.cseq_num,
            }
        }
        Some(Method::Bye) => {
            let cid = msg.call_id();
            DialogOp::Bye {
                by_from: keys.dialog_key(cid, ftag),
                by_to: msg.to_tag().map(|t| keys.dialog_key(cid, t)),
            }
        }
        _ => DialogOp::None,
    }
}

/// The loop digest of a request: what must differ when a request comes
/// back legitimately (another Request-URI, Call-ID, From tag or CSeq).
fn loop_key(keys: &Keys, msg: &Message) -> [u8; 4] {
    keys.loop_key(
        msg.request_uri().unwrap_or_default(),
        msg.call_id(),
        msg.from_tag().unwrap_or_default(),
        msg.cseq_num,
    )
}

/// A Via of ours further down, written for the same direction, whose
/// request had the same loop digest means the request came back
/// unchanged. Its branch verifies against the Via below it as we edited
/// it, which the request carries unchanged. The other direction is no loop: a backend that proxies
/// (rather than a B2BUA like Asterisk) sends requests back out.
fn looped(keys: &Keys, msg: &Message, dir: Dir, loop_key: [u8; 4]) -> bool {
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
        let below = vias.get(i + 1);
        let prev = below.map(|n| prev_key(keys, n, msg)).unwrap_or_default();
        let from = PrevHop {
            key: &prev,
            back: below.and_then(via_return),
        };
        keys.verify_branch(b, from, msg.call_id())
            .is_some_and(|info| info.dir == dir && info.loop_key == loop_key)
    })
}

/// What identifies the previous hop's transaction: its branch when it
/// has the RFC 3261 magic cookie, else a digest of the fields RFC 2543
/// matched on.
pub(super) fn prev_key(keys: &Keys, via: &Via<'_>, msg: &Message) -> SmallVec<[u8; 64]> {
    match via.branch() {
        Some(b) if b.starts_with(b"z9hG4bK") => SmallVec::from_slice(b),
        other => {
            let port = via.port.unwrap_or(0).to_le_bytes();
            let d = keys.digest(
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

/// The top Via is ours and verifies against the Via below it: what it
/// says (direction, listener), and where the response goes next. That
/// address is the one our branch binds (the Via below as we edited it):
/// a response whose Via below names another place does not verify, so
/// whoever saw the request cannot make us send elsewhere. `None` inside:
/// verified, but no address we can send to (a transport we do not
/// speak).
pub(super) fn verify_top_via(
    keys: &Keys,
    msg: &Message,
) -> Option<(BranchInfo, Option<ReturnAddr>)> {
    // The scanner found the top Via's branch already.
    let top = msg.top_via();
    let branch = top.branch()?;
    if !branch.starts_with(BRANCH_PREFIX) {
        return None;
    }
    let next = msg.vias().nth(1)??;
    let prev = prev_key(keys, &next, msg);
    let back = via_return(&next);
    let from = PrevHop { key: &prev, back };
    let info = keys.verify_branch(branch, from, msg.call_id())?;
    Some((info, back))
}
