//! The state file: trunk registrations and confirmed dialogs, so that a
//! restarted sidecar keeps admitting a provider's calls until Asterisk
//! re-registers (which can be an hour away), and bans, so that a restart
//! does not free every scanner and password guesser at once. This module
//! is the file's content and its checks; the program writes it atomically
//! and reads it back (`sipwarden::statefile`). A corrupt or foreign file is
//! reported and ignored.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::flow::canonical_ip;
use crate::time::UnixMs;
use crate::token::{from_hex, to_hex};

use super::bans::{BanInfo, Trigger};
use super::dialogs::Dialog;
use super::registrations::TrunkReg;
use super::{Restore, Tables};

/// Format marker: a file without it is not ours.
pub const FORMAT: &str = "sipwarden-state";
/// Changes only when a reader of the previous version would misread the
/// file. A section is added with a default instead (`bans` came that way):
/// an older file loads without it, and an older sipwarden loads a newer
/// file, ignoring what it does not know.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: String,
    pub version: u32,
    /// Fingerprint of the secret key: tokens and dialog keys in this file
    /// only mean something under the same key.
    pub key_id: String,
    pub saved_at: UnixMs,
    pub registrations: Vec<SavedReg>,
    pub sources: Vec<SavedSource>,
    pub dialogs: Vec<SavedDialog>,
    /// Absent from files written before bans were kept.
    #[serde(default)]
    pub bans: Vec<SavedBan>,
    /// Networks banned on the control socket (`ip` holds the network,
    /// `198.51.100.0/24`). Absent from files written before they existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ban_networks: Vec<SavedBan>,
}

/// A ban in force when the file was written. Fields are kept as text and
/// checked on restore, so that one bad entry is counted, not the whole
/// file refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBan {
    pub ip: String,
    /// `rejects`, `auth-failures` or `manual`.
    pub trigger: String,
    /// When it ends (ms since the epoch, like every time in the file).
    pub until: UnixMs,
    /// When it began; absent from files written before it was kept.
    #[serde(default)]
    pub since: UnixMs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedReg {
    pub token: String,
    #[serde(flatten)]
    pub reg: TrunkReg,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSource {
    pub ip: IpAddr,
    pub trunk: String,
    pub until: UnixMs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDialog {
    /// Hex of the keyed dialog hash.
    pub key: String,
    #[serde(flatten)]
    pub dialog: Dialog,
}

/// The file's bytes.
pub fn encode(snap: &Snapshot) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(snap)
}

/// Why a state file was not used.
#[derive(Debug, PartialEq, Eq)]
pub enum LoadError {
    Missing,
    Unreadable(String),
    Corrupt(String),
    Foreign(String),
}

/// The snapshot in a file's bytes, if it was written under the key
/// `key_id` by a version that writes this format.
pub fn decode(data: &[u8], key_id: &str) -> Result<Snapshot, LoadError> {
    let snap: Snapshot =
        serde_json::from_slice(data).map_err(|e| LoadError::Corrupt(e.to_string()))?;
    if snap.format != FORMAT || snap.version != VERSION {
        return Err(LoadError::Foreign(format!(
            "format {:?} version {}",
            snap.format, snap.version
        )));
    }
    if snap.key_id != key_id {
        return Err(LoadError::Foreign(
            "written under another secret key: its tokens would not verify".into(),
        ));
    }
    Ok(snap)
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
    /// Registrations beyond `registration.max_entries`.
    pub registrations_over_cap: usize,
    /// Dialogs beyond `dialog.max_entries` (or their set of the table).
    pub dialogs_over_cap: usize,
}

impl Tables {
    /// What the state file keeps at `now`: live registrations (within
    /// `grace`, ms, of their expiry), their addresses, confirmed dialogs
    /// and bans in force, under the key fingerprinted `key_id`.
    pub fn snapshot(&self, now: UnixMs, grace: u64, key_id: String) -> Snapshot {
        Snapshot {
            format: FORMAT.into(),
            version: VERSION,
            key_id,
            saved_at: now,
            registrations: self
                .regs
                .live_regs(now, grace)
                .into_iter()
                .map(|(token, reg)| SavedReg {
                    token: token.to_string(),
                    reg,
                })
                .collect(),
            sources: self
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
                .dialogs
                .confirmed()
                .into_iter()
                .map(|(k, d)| SavedDialog {
                    key: to_hex(&k.to_le_bytes()),
                    dialog: d,
                })
                .collect(),
            bans: self
                .bans
                .all_bans(now)
                .into_iter()
                .filter(|b| b.net.prefix_len() == b.net.max_prefix_len())
                .map(|b| SavedBan {
                    ip: b.net.addr().to_string(),
                    trigger: b.trigger.key().into(),
                    until: b.until,
                    since: b.since,
                })
                .collect(),
            ban_networks: self
                .bans
                .banned_nets(now)
                .into_iter()
                .map(|b| SavedBan {
                    ip: b.net.to_string(),
                    trigger: b.trigger.key().into(),
                    until: b.until,
                    since: b.since,
                })
                .collect(),
        }
    }

    /// Loads a snapshot at `now`, dropping what expired meanwhile and
    /// counting what cannot be read. A restored ban ends no later than
    /// `longest_ban` (ms, `ban.duration`) from now.
    pub fn restore(&self, snap: Snapshot, now: UnixMs, grace: u64, longest_ban: u64) -> Restored {
        let mut r = Restored::default();
        for s in snap.registrations {
            match self.regs.restore(&s.token, s.reg, now, grace) {
                Restore::Kept => r.registrations += 1,
                Restore::Expired => r.expired += 1,
                Restore::OverCap => r.registrations_over_cap += 1,
            }
        }
        for s in snap.sources {
            self.regs.restore_source(s.ip, &s.trunk, s.until, now);
        }
        for d in snap.dialogs {
            let mut k = [0u8; 16];
            if from_hex(d.key.as_bytes(), &mut k).is_none() {
                r.bad += 1;
                continue;
            }
            match self.dialogs.restore(u128::from_le_bytes(k), d.dialog, now) {
                Restore::Kept => r.dialogs += 1,
                Restore::Expired => r.expired += 1,
                Restore::OverCap => r.dialogs_over_cap += 1,
            }
        }
        self.restore_bans(snap.bans, now, longest_ban, &mut r);
        for b in snap.ban_networks {
            let net = b.ip.parse::<ipnet::IpNet>().ok();
            let (Some(net), Some(trigger)) = (net, Trigger::from_key(&b.trigger)) else {
                r.bad += 1;
                continue;
            };
            let info = BanInfo {
                net,
                trigger,
                since: b.since,
                until: b.until,
            };
            match self
                .bans
                .restore_network(info, now, own_length(&info, longest_ban))
            {
                Restore::Kept => r.bans += 1,
                Restore::Expired => r.expired += 1,
                Restore::OverCap => r.bans_over_cap += 1,
            }
        }
        r
    }

    /// Bans in force at `now`, the longest first, up to the table's cap.
    fn restore_bans(&self, saved: Vec<SavedBan>, now: UnixMs, longest: u64, r: &mut Restored) {
        let mut bans: Vec<BanInfo> = Vec::with_capacity(saved.len());
        for b in saved {
            let ip = b.ip.parse::<IpAddr>().ok().map(canonical_ip);
            match (ip, Trigger::from_key(&b.trigger)) {
                (Some(ip), Some(trigger)) => bans.push(BanInfo {
                    net: ip.into(),
                    trigger,
                    since: b.since,
                    until: b.until,
                }),
                _ => r.bad += 1,
            }
        }
        bans.sort_unstable_by_key(|b| std::cmp::Reverse(b.until));
        for b in bans {
            let longest = own_length(&b, longest);
            let since = if b.since == UnixMs::ZERO {
                now
            } else {
                b.since
            };
            match self
                .bans
                .restore_since(b.net.addr(), b.trigger, since, b.until, now, longest)
            {
                Restore::Kept => r.bans += 1,
                Restore::Expired => r.expired += 1,
                Restore::OverCap => r.bans_over_cap += 1,
            }
        }
    }
}

/// The longest a restored ban may still run: an automatic one
/// `ban.duration` (`longest`), a manual one the length it was given (an
/// operator's `--for` may exceed `ban.duration`). Either way a clock set
/// back while the process was down cannot stretch it.
fn own_length(b: &BanInfo, longest: u64) -> u64 {
    match b.trigger {
        Trigger::Manual if b.since != UnixMs::ZERO => b.until.since(b.since).max(longest),
        _ => longest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_refusals() {
        let snap = Snapshot {
            format: FORMAT.into(),
            version: VERSION,
            key_id: "abc".into(),
            saved_at: UnixMs(5),
            registrations: vec![],
            sources: vec![SavedSource {
                ip: "192.0.2.1".parse().unwrap(),
                trunk: "p".into(),
                until: UnixMs(9),
            }],
            dialogs: vec![],
            bans: vec![SavedBan {
                ip: "192.0.2.7".into(),
                trigger: "rejects".into(),
                until: UnixMs(99),
                since: UnixMs(1),
            }],
            ban_networks: vec![SavedBan {
                ip: "198.51.100.0/24".into(),
                trigger: "manual".into(),
                until: UnixMs(99),
                since: UnixMs(2),
            }],
        };
        let data = encode(&snap).unwrap();
        assert_eq!(decode(&data, "abc").unwrap(), snap);
        assert!(matches!(decode(&data, "other"), Err(LoadError::Foreign(_))));
        assert!(matches!(
            decode(b"{not json", "abc"),
            Err(LoadError::Corrupt(_))
        ));
        let other = br#"{"format":"x","version":1,"key_id":"abc","saved_at":0,"registrations":[],"sources":[],"dialogs":[]}"#;
        assert!(matches!(decode(other, "abc"), Err(LoadError::Foreign(_))));
        // A file written before bans were kept.
        let old = br#"{"format":"sipwarden-state","version":1,"key_id":"abc","saved_at":0,"registrations":[],"sources":[],"dialogs":[]}"#;
        assert_eq!(decode(old, "abc").unwrap().bans, vec![]);
    }
}
