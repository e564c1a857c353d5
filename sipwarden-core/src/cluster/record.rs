//! The records nodes exchange, as Redis holds them (one hash field each)
//! and publishes them: compact JSON, one object, with a format version,
//! the publishing node and when the change was made. Decoding is a pure
//! function of the bytes with a size limit: whatever Redis returns (a
//! corrupted value, another program's, a hostile one) is a record or a
//! [`RejectReason`], never a panic.

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::flow::Transport;
use crate::state::bans::BanInfo;
use crate::state::registrations::TrunkReg;
use crate::time::UnixMs;

/// The format's version: a record of another version is rejected
/// (counted), so nodes of two incompatible versions never misread each
/// other. Fields may be added with a default without changing it.
pub const VERSION: u32 = 1;

/// The longest node name, trunk name, registrar and token a record may
/// hold; a Contact may be longer (`MAX_CONTACT`).
const MAX_WORD: usize = 255;
const MAX_CONTACT: usize = 2048;

/// One change, as published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`VERSION`].
    pub v: u32,
    /// The node that published it (`cluster.node`).
    pub node: String,
    /// When the change was made (or the record re-published).
    pub at: UnixMs,
    #[serde(flatten)]
    pub body: Body,
}

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    /// An address or a network banned from `since` until `until`.
    Ban {
        /// `192.0.2.7` or `198.51.100.0/24`.
        target: String,
        /// `rejects`, `auth-failures` or `manual`.
        trigger: String,
        since: UnixMs,
        until: UnixMs,
    },
    /// The ban of `target` was lifted.
    Unban { target: String },
    /// A trunk registration, with what admits the provider by it.
    Reg {
        token: String,
        trunk: String,
        registrar: String,
        contact: String,
        expires: UnixMs,
        registrar_addr: SocketAddr,
        transport: Transport,
        #[serde(default)]
        listener: Option<u8>,
    },
    /// The registration of `token` was removed by its registrar.
    Unreg { token: String },
}

/// Why a value was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Longer than `cluster.max_value`.
    TooLarge,
    /// Not a record (not JSON, a field missing or of the wrong type).
    Malformed,
    /// A record of another format version.
    Version,
    /// A field out of its bounds (a name too long, control characters, an
    /// address that is not one, a token that does not verify).
    Invalid,
}

impl RejectReason {
    /// For the log.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too large",
            RejectReason::Malformed => "not a record",
            RejectReason::Version => "another format version",
            RejectReason::Invalid => "a field out of bounds",
        }
    }
}

/// A decoded value.
pub type Decoded = Result<Record, RejectReason>;

/// The record's bytes.
pub fn encode(r: &Record) -> Vec<u8> {
    // A record is strings, numbers and an address: it always serializes.
    serde_json::to_vec(r).unwrap_or_default()
}

/// The record in `data`, if it is one of this version within `max` bytes
/// whose text fields hold no control characters and fit their bounds.
/// What the fields mean (a target that parses, a token that verifies) is
/// `apply`'s to check.
pub fn decode(data: &[u8], max: usize) -> Decoded {
    if data.len() > max {
        return Err(RejectReason::TooLarge);
    }
    // The version first, alone: a newer record may not parse as this one.
    #[derive(Deserialize)]
    struct Head {
        v: u32,
    }
    let head: Head = serde_json::from_slice(data).map_err(|_| RejectReason::Malformed)?;
    if head.v != VERSION {
        return Err(RejectReason::Version);
    }
    let r: Record = serde_json::from_slice(data).map_err(|_| RejectReason::Malformed)?;
    if !word(&r.node) {
        return Err(RejectReason::Invalid);
    }
    let ok = match &r.body {
        Body::Ban {
            target, trigger, ..
        } => word(target) && word(trigger),
        Body::Unban { target } => word(target),
        Body::Reg {
            token,
            trunk,
            registrar,
            contact,
            ..
        } => {
            word(token)
                && word(trunk)
                && word(registrar)
                && !contact.is_empty()
                && contact.len() <= MAX_CONTACT
                && printable(contact)
        }
        Body::Unreg { token } => word(token),
    };
    if ok {
        Ok(r)
    } else {
        Err(RejectReason::Invalid)
    }
}

/// Text without control characters or spaces, 1 to [`MAX_WORD`] bytes.
fn word(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_WORD && s.chars().all(|c| !c.is_control() && c != ' ')
}

/// Text that may be written into a header: no control character (CR and
/// LF above all).
fn printable(s: &str) -> bool {
    s.chars().all(|c| !c.is_control())
}

/// An address alone, a network with its prefix.
pub fn target_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// The body of a ban in force.
pub fn ban_body(b: &BanInfo) -> Body {
    Body::Ban {
        target: target_text(&b.net),
        trigger: b.trigger.key().into(),
        since: b.since,
        until: b.until,
    }
}

/// The body of a registration.
pub fn reg_body(token: &str, reg: &TrunkReg) -> Body {
    Body::Reg {
        token: token.into(),
        trunk: reg.trunk.to_string(),
        registrar: reg.registrar.to_string(),
        contact: reg.contact.clone(),
        expires: reg.expires,
        registrar_addr: reg.registrar_addr,
        transport: reg.transport,
        listener: reg.listener,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban() -> Record {
        Record {
            v: VERSION,
            node: "edge-a".into(),
            at: UnixMs(1_000),
            body: Body::Ban {
                target: "192.0.2.7".into(),
                trigger: "manual".into(),
                since: UnixMs(1_000),
                until: UnixMs(61_000),
            },
        }
    }

    #[test]
    fn round_trip_and_the_literal_form() {
        let r = ban();
        let bytes = encode(&r);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"node":"edge-a","at":1000,"kind":"ban","target":"192.0.2.7","trigger":"manual","since":1000,"until":61000}"#
        );
        assert_eq!(decode(&bytes, 4096), Ok(r));
        let reg = Record {
            v: VERSION,
            node: "edge-b".into(),
            at: UnixMs(5),
            body: Body::Reg {
                token: "00112233445566778899".into(),
                trunk: "provider1".into(),
                registrar: "sip.provider.example".into(),
                contact: "sip:acct@127.0.0.1:5080;line=x".into(),
                expires: UnixMs(600_005),
                registrar_addr: "198.51.100.10:5060".parse().unwrap(),
                transport: Transport::Udp,
                listener: Some(0),
            },
        };
        assert_eq!(decode(&encode(&reg), 4096), Ok(reg));
    }

    #[test]
    fn garbage_is_rejected_never_a_panic() {
        let cases: &[(&[u8], RejectReason)] = &[
            (b"", RejectReason::Malformed),
            (b"garbage", RejectReason::Malformed),
            (b"\xff\xfe{", RejectReason::Malformed),
            (b"{}", RejectReason::Malformed),
            (br#"{"v":2,"node":"a"}"#, RejectReason::Version),
            (br#"{"v":1,"node":"a","at":1,"kind":"nuke"}"#, RejectReason::Malformed),
            (
                br#"{"v":1,"node":"a","at":1,"kind":"ban","target":"x","trigger":"manual","since":-1,"until":2}"#,
                RejectReason::Malformed,
            ),
            (
                br#"{"v":1,"node":"","at":1,"kind":"unban","target":"192.0.2.1"}"#,
                RejectReason::Invalid,
            ),
            (
                br#"{"v":1,"node":"a","at":1,"kind":"unreg","token":"a b"}"#,
                RejectReason::Invalid,
            ),
            (
                br#"{"v":1,"node":"a","at":1,"kind":"reg","token":"t","trunk":"p","registrar":"r","contact":"sip:a@b\r\nX: y","expires":1,"registrar_addr":"192.0.2.1:5060","transport":"udp"}"#,
                RejectReason::Invalid,
            ),
        ];
        for (bytes, why) in cases {
            assert_eq!(
                decode(bytes, 4096),
                Err(*why),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let big = encode(&ban());
        assert_eq!(decode(&big, big.len() - 1), Err(RejectReason::TooLarge));
    }
}
