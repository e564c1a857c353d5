//! A record from another node applied to this node's tables, as a pure
//! function of the tables, the key, the settings and a clock value. It
//! never makes more of a record than it says (a ban ends when the record
//! says, or sooner; a registration expires when the registrar granted),
//! and rejects what cannot hold: a target that is no address or is too
//! broad, a trigger it does not know, a registration whose token this
//! node's key did not make (a value written by someone without the
//! cluster's `secret.key_file` never admits a call).

use std::net::IpAddr;
use std::sync::Arc;

use crate::control::answer::{parse_target, LONGEST_BAN_MS};
use crate::proxy::Core;
use crate::sip::addr::NameAddr;
use crate::sip::uri::Uri;
use crate::state::bans::{BanInfo, Trigger};
use crate::state::registrations::TrunkReg;
use crate::state::Restore;
use crate::time::UnixMs;

use super::record::{Body, Record, RejectReason};

/// The longest a registration received may run from now: a registrar
/// grants hours at most; a record that says more is cut to this.
const LONGEST_REG_MS: u64 = 7 * 86_400_000;

/// Where a record comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The channel, as another node published it: this node's own
    /// records come back on it and are ignored.
    Channel,
    /// The hash in Redis, read at start or after a reconnection: this
    /// node's records from before its restart are its state too.
    Stored,
}

/// What became of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The tables changed (or already held it).
    Taken,
    /// This node's own record, back on the channel.
    Echo,
    /// It ended before it arrived (or names nothing this node holds).
    Expired,
    /// The table is at its cap.
    OverCap,
    /// Not applicable: counted as rejected.
    Rejected(RejectReason),
}

/// Applies `rec` at `now` to `core`'s tables; this node is `own`.
pub fn apply_remote(core: &Core, own: &str, origin: Origin, now: UnixMs, rec: &Record) -> Applied {
    if origin == Origin::Channel && rec.node == own {
        return Applied::Echo;
    }
    let tables = core.tables();
    let applied = match &rec.body {
        Body::Ban {
            target,
            trigger,
            since,
            until,
        } => {
            let (Ok(net), Some(trigger)) = (parse_target(target), Trigger::from_key(trigger))
            else {
                return Applied::Rejected(RejectReason::Invalid);
            };
            if since > until {
                return Applied::Rejected(RejectReason::Invalid);
            }
            let restored = if net.prefix_len() == net.max_prefix_len() {
                tables
                    .bans
                    .restore_since(net.addr(), trigger, *since, *until, now, LONGEST_BAN_MS)
            } else {
                let info = BanInfo {
                    net,
                    trigger,
                    since: *since,
                    until: *until,
                };
                tables.bans.restore_network(info, now, LONGEST_BAN_MS)
            };
            of_restore(restored)
        }
        Body::Unban { target } => {
            let Ok(net) = parse_target(target) else {
                return Applied::Rejected(RejectReason::Invalid);
            };
            // An unban lifts the ban it was made against, not one made
            // after it (the source banned again since): an unban is kept
            // in the hash as a record of its own, read by every node that
            // (re)connects.
            if tables
                .bans
                .ban_since(net, now)
                .is_some_and(|since| since > rec.at)
            {
                return Applied::Expired;
            }
            let l = tables.bans.unban(net, now);
            if l.addresses.is_empty() && !l.network {
                Applied::Expired
            } else {
                Applied::Taken
            }
        }
        Body::Reg {
            token,
            trunk,
            registrar,
            contact,
            expires,
            registrar_addr,
            transport,
            listener,
        } => {
            if !token_verifies(core, token, trunk, contact) {
                return Applied::Rejected(RejectReason::Invalid);
            }
            let s = core.settings();
            let grace = s.config.registration.grace.ms();
            let reg = TrunkReg {
                trunk: Arc::from(trunk.as_str()),
                registrar: Arc::from(registrar.as_str()),
                contact: contact.clone(),
                expires: (*expires).min(now.saturating_add(LONGEST_REG_MS)),
                registrar_addr: *registrar_addr,
                transport: *transport,
                // Another node's listener index means nothing here unless
                // this node has as many public sockets.
                listener: listener.filter(|l| usize::from(*l) < s.public.len()),
            };
            let restored = tables.regs.restore(token, reg, now, grace);
            if restored == Restore::Kept {
                let ip = crate::flow::canonical_ip(registrar_addr.ip());
                tables.regs.restore_source(ip, trunk, UnixMs::NEVER, now);
            }
            of_restore(restored)
        }
        Body::Unreg { token } => {
            if tables.regs.remove(token) {
                Applied::Taken
            } else {
                Applied::Expired
            }
        }
    };
    if applied == Applied::Taken {
        tables.mark_dirty();
    }
    applied
}

fn of_restore(r: Restore) -> Applied {
    match r {
        Restore::Kept => Applied::Taken,
        Restore::Expired => Applied::Expired,
        Restore::OverCap => Applied::OverCap,
    }
}

/// The token is the one this node's key makes for the trunk and the
/// Contact's user (`Keys::contact_token`), as the node that learned the
/// registration made it.
fn token_verifies(core: &Core, token: &str, trunk: &str, contact: &str) -> bool {
    let c = contact.as_bytes();
    let uri = Uri::parse(c).or_else(|| NameAddr::parse(c).and_then(|na| Uri::parse(na.uri)));
    let Some(uri) = uri else {
        return false;
    };
    let user = uri.user.unwrap_or_default();
    let expected = core.keys().contact_token(trunk.as_bytes(), user);
    // Not secret: the token is in every INVITE to the Contact.
    expected == token
}

/// The source address a record's ban names, when it is one address (for
/// tests and logs).
pub fn banned_address(rec: &Record) -> Option<IpAddr> {
    match &rec.body {
        Body::Ban { target, .. } => target.parse().ok(),
        _ => None,
    }
}
