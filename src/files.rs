//! What start needs of the file system, asked without changing anything:
//! `sipwarden check` uses it to refuse what start would fail on.

use std::path::Path;

/// Whether this user could create the file `path`, the directories above
/// it included (as start does with `create_dir_all`): the nearest
/// ancestor that exists must be a directory this user may write into.
/// Creates nothing.
pub fn can_create(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("{} is a directory", path.display()));
    }
    let mut dir = parent(path);
    loop {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => return writable(dir),
            Ok(_) => {
                return Err(format!(
                    "{} is not a directory, so nothing can be created under it",
                    dir.display()
                ))
            }
            // Missing, or below a file: the ancestor above says why.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                let up = parent(dir);
                if up == dir {
                    return Err(format!("{}: {e}", dir.display()));
                }
                dir = up;
            }
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
}

/// The directory of `path`; `.` for a bare name (and above the root).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether this user may create entries in the directory `dir`.
fn writable(dir: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a path with a NUL byte", dir.display()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot create files in {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creatable_paths() {
        let d = std::env::temp_dir().join(format!("sw-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        can_create(&d.join("f")).unwrap();
        can_create(&d.join("a/b/c/f")).unwrap();
        assert!(!d.join("a").exists(), "nothing is created");
        std::fs::write(d.join("file"), "x").unwrap();
        let e = can_create(&d.join("file/sub/f")).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
        let e = can_create(&d).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        can_create(Path::new("relative-name")).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }
}
