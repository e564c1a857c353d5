//! The secret key file: 32 random bytes, hex-encoded, that sign every
//! token sipwarden writes. Kept across restarts so that Record-Route, Path
//! and Contact tokens issued before a restart still verify after it.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use sipwarden_core::token::{from_hex, to_hex};

/// Why the key file cannot be used (start refuses; `check` reports it
/// under `secret.key_file`). Displayed as the line the operator reads.
#[derive(Debug)]
pub enum SecretError {
    /// The file exists but does not hold 64 hex digits: never replaced
    /// silently, since a new key would invalidate every live dialog.
    NotAKey { path: PathBuf },
    /// The file exists but cannot be read.
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// No randomness for a new key.
    NoRandomness(getrandom::Error),
    /// The new key file could not be written.
    Create {
        path: PathBuf,
        error: std::io::Error,
    },
    /// `check`: the file is missing and could not be created (`why`).
    CannotCreate { path: PathBuf, why: String },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::NotAKey { path } => write!(
                f,
                "{}: the secret key file must hold 64 hex digits (delete it to have a new one generated)",
                path.display()
            ),
            SecretError::Unreadable { path, error } => {
                write!(f, "{}: cannot read the secret key file: {error}", path.display())
            }
            SecretError::NoRandomness(e) => write!(f, "no randomness for the secret key: {e}"),
            SecretError::Create { path, error } => write!(
                f,
                "{}: cannot create the secret key file: {error}",
                path.display()
            ),
            SecretError::CannotCreate { path, why } => write!(
                f,
                "{}: the secret key file is missing and cannot be created: {why}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// Reads the key, or creates the file with a fresh key when it does not
/// exist. A file that exists but is not 64 hex digits is an error: a
/// silently replaced key would invalidate every live dialog. The flag
/// says whether the key was created.
pub fn load_or_create(path: &Path) -> Result<([u8; 32], bool), SecretError> {
    if let Some(key) = read(path)? {
        return Ok((key, false));
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(SecretError::NoRandomness)?;
    write_new(path, &key).map_err(|error| SecretError::Create {
        path: path.to_path_buf(),
        error,
    })?;
    Ok((key, true))
}

/// What start would say about the key file, without creating it: a file
/// that exists must be readable and hold a key; a missing one must be
/// creatable (see [`crate::files::can_create`]).
pub fn check(path: &Path) -> Result<(), SecretError> {
    match read(path)? {
        Some(_) => Ok(()),
        None => crate::files::can_create(path).map_err(|why| SecretError::CannotCreate {
            path: path.to_path_buf(),
            why,
        }),
    }
}

/// The key in the file, `None` when there is no file.
fn read(path: &Path) -> Result<Option<[u8; 32]>, SecretError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut key = [0u8; 32];
            from_hex(bytes.trim_ascii(), &mut key).ok_or_else(|| SecretError::NotAKey {
                path: path.to_path_buf(),
            })?;
            Ok(Some(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(SecretError::Unreadable {
            path: path.to_path_buf(),
            error,
        }),
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
        let e = load_or_create(&path).unwrap_err();
        assert!(matches!(e, SecretError::NotAKey { .. }), "{e:?}");
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        assert!(matches!(
            check(&path).unwrap_err(),
            SecretError::NotAKey { .. }
        ));
        let e = check(&path.join("below-a-file")).unwrap_err();
        assert!(matches!(e, SecretError::Unreadable { .. }), "{e:?}");
        assert!(e.to_string().contains("cannot read"), "{e}");
        let e = check(&dir.join("sub/secret/x/y")).unwrap_err();
        assert!(matches!(e, SecretError::Unreadable { .. }), "{e:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
