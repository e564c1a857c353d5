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
