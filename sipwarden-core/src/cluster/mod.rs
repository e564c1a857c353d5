//! The cluster's side of the core (`docs/cluster.md`): the records several
//! nodes exchange through Redis so that a ban made on one node drops the
//! source on all, and a trunk registration learned through one admits the
//! provider's calls through every other (failover without waiting for a
//! re-registration). Pure: the program's link (`sipwarden::cluster`) moves
//! the bytes.
//!
//! - [`record`]: the wire format, versioned JSON with size limits, and its
//!   decoder (fuzzed: `fuzz/fuzz_targets/cluster.rs`).
//! - [`apply`]: a remote record applied to the tables over a clock value,
//!   never stretching what the record says, rejecting what does not hold.
//! - here: the records of the feed's changes (`state::feed`) and of a
//!   whole table for a full re-publish.

pub mod apply;
pub mod record;

pub use apply::{apply_remote, Applied, Origin};
pub use record::{decode, encode, Body, Decoded, Record, RejectReason, VERSION};

use crate::state::{Change, Tables};
use crate::time::UnixMs;

/// The hash field of a record: the banned address or network, or the
/// registration's token. Redis keeps one current value per field.
pub fn field(body: &Body) -> &str {
    match body {
        Body::Ban { target, .. } | Body::Unban { target } => target,
        Body::Reg { token, .. } | Body::Unreg { token } => token,
    }
}

/// How long an unban stays in the hash (a tombstone): a node away for
/// longer publishes the ban it still holds again when it returns
/// (docs/cluster.md).
pub const TOMBSTONE_MS: u64 = 86_400_000;

/// Whether a record stored in the cluster's hash has ended at `now`, so
/// that the hash may forget it: a ban past its end, a registration past
/// its expiry and `grace` (ms), an unban past its tombstone's day; an
/// unregistration is never worth keeping.
pub fn ended(rec: &Record, now: UnixMs, grace: u64) -> bool {
    match rec.body {
        Body::Ban { until, .. } => until <= now,
        Body::Reg { expires, .. } => expires.saturating_add(grace) <= now,
        Body::Unban { .. } => rec.at.saturating_add(TOMBSTONE_MS) <= now,
        Body::Unreg { .. } => true,
    }
}

/// The record of one change of this node's tables.
pub fn of_change(node: &str, c: &Change) -> Record {
    let (at, body) = match c {
        Change::Ban(b) => (b.since, record::ban_body(b)),
        Change::Unban { net, at } => (
            *at,
            Body::Unban {
                target: record::target_text(net),
            },
        ),
        Change::Registered { token, reg, at } => (*at, record::reg_body(token, reg)),
        Change::Unregistered { token, at } => (
            *at,
            Body::Unreg {
                token: token.to_string(),
            },
        ),
    };
    Record {
        v: VERSION,
        node: node.into(),
        at,
        body,
    }
}

/// Everything this node holds that the cluster shares, at `now`: the bans
/// in force and the live registrations (within `grace`, ms). A full
/// re-publish sends them all, after Redis came back or the outbox
/// overflowed, and every `cluster.republish_interval`.
pub fn records_of(tables: &Tables, node: &str, now: UnixMs, grace: u64) -> Vec<Record> {
    let mut v: Vec<Record> = tables
        .bans
        .all_bans(now)
        .iter()
        .map(|b| Record {
            v: VERSION,
            node: node.into(),
            at: now,
            body: record::ban_body(b),
        })
        .collect();
    v.extend(
        tables
            .regs
            .live_regs(now, grace)
            .iter()
            .map(|(token, reg)| Record {
                v: VERSION,
                node: node.into(),
                at: now,
                body: record::reg_body(token, reg),
            }),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Transport;

    fn rec(at: u64, body: Body) -> Record {
        Record {
            v: VERSION,
            node: "a".into(),
            at: UnixMs(at),
            body,
        }
    }

    #[test]
    fn what_the_hash_may_forget() {
        let ban = |until| {
            rec(
                0,
                Body::Ban {
                    target: "192.0.2.7".into(),
                    trigger: "manual".into(),
                    since: UnixMs(0),
                    until: UnixMs(until),
                },
            )
        };
        assert!(!ended(&ban(1001), UnixMs(1000), 0));
        assert!(ended(&ban(1000), UnixMs(1000), 0));
        let reg = |expires| {
            rec(
                0,
                Body::Reg {
                    token: "t".into(),
                    trunk: "p".into(),
                    registrar: "r".into(),
                    contact: "c".into(),
                    expires: UnixMs(expires),
                    registrar_addr: "192.0.2.1:5060".parse().unwrap(),
                    transport: Transport::Udp,
                    listener: None,
                },
            )
        };
        // The registration lives on for its grace.
        assert!(!ended(&reg(1000), UnixMs(1500), 600));
        assert!(ended(&reg(1000), UnixMs(1600), 600));
        // An unban is kept a day, so a node back from away lifts its ban.
        let unban = rec(
            5,
            Body::Unban {
                target: "192.0.2.7".into(),
            },
        );
        assert!(!ended(&unban, UnixMs(5 + TOMBSTONE_MS - 1), 0));
        assert!(ended(&unban, UnixMs(5 + TOMBSTONE_MS), 0));
        assert!(ended(
            &rec(0, Body::Unreg { token: "t".into() }),
            UnixMs(0),
            0
        ));
    }
}
