//! The state file: trunk registrations and confirmed dialogs, so that a
//! restarted sidecar keeps admitting a provider's calls until Asterisk
//! re-registers (which can be an hour away), and bans, so that a restart
//! does not free every scanner and password guesser at once. Written
//! atomically (write, fsync, rename); a corrupt or foreign file is
//! reported and ignored.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::dialogs::Dialog;
use super::registrations::TrunkReg;

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
    pub saved_at: u64,
    pub registrations: Vec<SavedReg>,
    pub sources: Vec<SavedSource>,
    pub dialogs: Vec<SavedDialog>,
    /// Absent from files written before bans were kept.
    #[serde(default)]
    pub bans: Vec<SavedBan>,
}

/// A ban in force when the file was written. Fields are kept as text and
/// checked on restore, so that one bad entry is counted, not the whole
/// file refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBan {
    pub ip: String,
    /// `rejects` or `auth-failures`.
    pub trigger: String,
    /// When it ends (ms since the epoch, like every time in the file).
    pub until: u64,
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
    pub until: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDialog {
    /// Hex of the keyed dialog hash.
    pub key: String,
    #[serde(flatten)]
    pub dialog: Dialog,
}

/// Writes the snapshot next to `path` and renames it into place.
pub fn write(path: &Path, snap: &Snapshot) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec(snap).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename itself must survive a crash.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// What start needs to write the state file later: its directory can be
/// created and written (the file is replaced by a rename within it).
/// Creates nothing.
pub fn check_writable(path: &Path) -> Result<(), String> {
    crate::files::can_create(path)
        .map_err(|e| format!("{}: the state file cannot be written: {e}", path.display()))
}

/// Why a state file was not used.
#[derive(Debug, PartialEq, Eq)]
pub enum LoadError {
    Missing,
    Unreadable(String),
    Corrupt(String),
    Foreign(String),
}

/// Reads a snapshot written under the key `key_id`.
pub fn read(path: &Path, key_id: &str) -> Result<Snapshot, LoadError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => return Err(LoadError::Unreadable(e.to_string())),
    };
    let snap: Snapshot =
        serde_json::from_slice(&data).map_err(|e| LoadError::Corrupt(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_refusals() {
        let dir = std::env::temp_dir().join(format!("sw-state-{}", std::process::id()));
        let path = dir.join("state.json");
        let snap = Snapshot {
            format: FORMAT.into(),
            version: VERSION,
            key_id: "abc".into(),
            saved_at: 5,
            registrations: vec![],
            sources: vec![SavedSource {
                ip: "192.0.2.1".parse().unwrap(),
                trunk: "p".into(),
                until: 9,
            }],
            dialogs: vec![],
            bans: vec![SavedBan {
                ip: "192.0.2.7".into(),
                trigger: "rejects".into(),
                until: 99,
            }],
        };
        write(&path, &snap).unwrap();
        assert_eq!(read(&path, "abc").unwrap(), snap);
        assert!(matches!(read(&path, "other"), Err(LoadError::Foreign(_))));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(read(&path, "abc"), Err(LoadError::Corrupt(_))));
        std::fs::write(&path, br#"{"format":"x","version":1,"key_id":"abc","saved_at":0,"registrations":[],"sources":[],"dialogs":[]}"#).unwrap();
        assert!(matches!(read(&path, "abc"), Err(LoadError::Foreign(_))));
        assert_eq!(read(&dir.join("none"), "abc"), Err(LoadError::Missing));
        // A file written before bans were kept.
        std::fs::write(&path, br#"{"format":"sipwarden-state","version":1,"key_id":"abc","saved_at":0,"registrations":[],"sources":[],"dialogs":[]}"#).unwrap();
        assert_eq!(read(&path, "abc").unwrap().bans, vec![]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
