//! The secret key file: 32 random bytes, hex-encoded, that sign every
//! token sipwarden writes. Kept across restarts so that Record-Route, Path
//! and Contact tokens issued before a restart still verify after it.

use std::io::Write;
use std::path::Path;

use sipwarden_core::token::{from_hex, to_hex};

/// Reads the key, or creates the file with a fresh key when it does not
/// exist. A file that exists but is not 64 hex digits is an error: a
/// silently replaced key would invalidate every live dialog.
pub fn load_or_create(path: &Path) -> Result<([u8; 32], bool), String> {
    if let Some(key) = read(path)? {
        return Ok((key, false));
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for the secret key: {e}"))?;
    write_new(path, &key)
        .map_err(|e| format!("{}: cannot create the secret key file: {e}", path.display()))?;
    Ok((key, true))
}

/// What start would say about the key file, without creating it: a file
/// that exists must be readable and hold a key; a missing one must be
/// creatable (see [`crate::files::can_create`]).
pub fn check(path: &Path) -> Result<(), String> {
    match read(path)? {
        Some(_) => Ok(()),
        None => crate::files::can_create(path).map_err(|e| {
            format!(
                "{}: the secret key file is missing and cannot be created: {e}",
                path.display()
            )
        }),
    }
}

/// The key in the file, `None` when there is no file.
fn read(path: &Path) -> Result<Option<[u8; 32]>, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut key = [0u8; 32];
            from_hex(bytes.trim_ascii(), &mut key).ok_or_else(|| {
                format!(
                    "{}: the secret key file must hold 64 hex digits (delete it to have a new one generated)",
                    path.display()
                )
            })?;
            Ok(Some(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "{}: cannot read the secret key file: {e}",
            path.display()
        )),
    }
}

fn write_new(path: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(to_hex(key).as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses() {
        let dir = std::env::temp_dir().join(format!("sw-secret-{}", std::process::id()));
        let path = dir.join("sub/secret");
        let _ = std::fs::remove_dir_all(&dir);
        check(&path).unwrap();
        assert!(!path.exists(), "check creates nothing");
        let (k1, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (k2, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1, k2);
        std::fs::write(&path, "not hex").unwrap();
        assert!(load_or_create(&path).unwrap_err().contains("64 hex digits"));
        assert!(check(&path).unwrap_err().contains("64 hex digits"));
        let e = check(&path.join("below-a-file")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        let e = check(&dir.join("sub/secret/x/y")).unwrap_err();
        assert!(e.contains("cannot"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
