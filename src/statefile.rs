//! The state file on disk: written atomically (write, fsync, rename, fsync
//! of the directory) so that a crash leaves the old file or the new one,
//! never half of one. Its content is the core's (`state::persist`).

use std::io::Write;
use std::path::Path;

use sipwarden_core::state::persist::{self, LoadError, Snapshot};

/// Writes the snapshot next to `path` and renames it into place.
pub fn write(path: &Path, snap: &Snapshot) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let data = persist::encode(snap).map_err(std::io::Error::other)?;
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

/// Reads a snapshot written under the key `key_id`.
pub fn read(path: &Path, key_id: &str) -> Result<Snapshot, LoadError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => return Err(LoadError::Unreadable(e.to_string())),
    };
    persist::decode(&data, key_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipwarden_core::state::persist::{FORMAT, VERSION};

    #[test]
    fn written_then_read_back() {
        let dir = std::env::temp_dir().join(format!("sw-state-{}", std::process::id()));
        let path = dir.join("sub").join("state.json");
        let snap = Snapshot {
            format: FORMAT.into(),
            version: VERSION,
            key_id: "abc".into(),
            saved_at: sipwarden_core::time::UnixMs(5),
            registrations: vec![],
            sources: vec![],
            dialogs: vec![],
            bans: vec![],
            ban_networks: vec![],
        };
        write(&path, &snap).unwrap();
        assert!(!path.with_extension("tmp").exists());
        assert_eq!(read(&path, "abc").unwrap(), snap);
        assert!(matches!(read(&path, "other"), Err(LoadError::Foreign(_))));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(read(&path, "abc"), Err(LoadError::Corrupt(_))));
        assert_eq!(read(&dir.join("none"), "abc"), Err(LoadError::Missing));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
