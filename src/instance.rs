//! One running instance per state. Two processes on the same sockets
//! (SO_REUSEPORT lets them) would split the traffic between two sets of
//! tables and overwrite each other's state file; this module keeps the
//! files exclusive, `transport::exclusive` the sockets.
//!
//! An instance's files are its state file, or, when it has none, its
//! secret key file (tokens signed with one key are one identity). It holds
//! an `flock` on a lock file beside that file (`<file>.lock`) for its whole
//! life, with its PID written in it. The kernel releases the lock when the
//! process ends, however it ends, so a crash leaves no stale lock; the
//! file itself stays and is harmless.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The file an instance's identity is bound to, and its lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// "state file" or "secret key file", for messages.
    pub what: &'static str,
    pub file: PathBuf,
}

impl Identity {
    /// The state file when there is one, else the secret key file.
    pub fn of(state: Option<&Path>, key_file: &Path) -> Identity {
        match state {
            Some(p) => Identity {
                what: "state file",
                file: p.to_path_buf(),
            },
            None => Identity {
                what: "secret key file",
                file: key_file.to_path_buf(),
            },
        }
    }

    pub fn lock_path(&self) -> PathBuf {
        let mut s = self.file.clone().into_os_string();
        s.push(".lock");
        PathBuf::from(s)
    }
}

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct InstanceLock {
    pub identity: Identity,
    _file: File,
}

impl InstanceLock {
    /// Takes the lock of `id` or says who holds it.
    pub fn acquire(id: &Identity) -> Result<InstanceLock, String> {
        let path = id.lock_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot create the directory of the lock file {}: {e}",
                    path.display()
                )
            })?;
        }
        // Not truncated before the lock is ours: it names the holder.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
        // SAFETY: flock(2) on a file descriptor this function owns.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(format!("cannot lock {}: {e}", path.display()));
            }
            let own = match id.what {
                "state file" => "state.path",
                _ => "secret.key_file (or a state.path)",
            };
            return Err(format!(
                "the {} {} is in use by {}, which holds its lock file {}: another sipwarden \
                 runs with it, and two would split the traffic and overwrite each other's \
                 state. Stop it first, or give this one its own {own}",
                id.what,
                id.file.display(),
                holder(&mut f),
                path.display()
            ));
        }
        let pid = std::process::id();
        let written = f
            .set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| writeln!(f, "{pid}"));
        if let Err(e) = written {
            return Err(format!(
                "cannot write the lock file {}: {e}",
                path.display()
            ));
        }
        Ok(InstanceLock {
            identity: id.clone(),
            _file: f,
        })
    }
}

/// Who holds a lock file: the PID written in it (the holder writes it
/// right after locking, so a moment's retry covers that window).
fn holder(f: &mut File) -> String {
    for _ in 0..20 {
        let mut s = String::new();
        if f.rewind().is_ok() && f.read_to_string(&mut s).is_ok() {
            if let Ok(pid) = s.trim().parse::<u32>() {
                return describe_pid(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    "a process whose PID the lock file does not name".into()
}

/// "PID 1234 (sipwarden --config /etc/sipwarden/sipwarden.toml)": the
/// process's command line, or its name, as far as /proc shows them.
pub fn describe_pid(pid: u32) -> String {
    match command_of(pid) {
        Some(cmd) => format!("PID {pid} ({cmd})"),
        None => format!("PID {pid}"),
    }
}

/// The command line of `pid` (at most ~120 characters), else its name.
pub fn command_of(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let cmd = if words.is_empty() {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_string()
    } else {
        // The program's file name, not its whole path.
        let prog = words[0].rsplit('/').next().unwrap_or(&words[0]).to_string();
        std::iter::once(prog)
            .chain(words[1..].iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    // One line, whatever the arguments hold.
    let cmd: String = cmd
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Some(shorten(cmd, 120))
}

fn shorten(mut s: String, max: usize) -> String {
    if s.chars().count() > max {
        s = s.chars().take(max).collect::<String>() + "...";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_is_free_after_drop() {
        let dir = std::env::temp_dir().join(format!("sw-lock-{}", std::process::id()));
        let id = Identity::of(Some(&dir.join("sub/state")), Path::new("/nonexistent"));
        assert_eq!(id.lock_path(), dir.join("sub/state.lock"));
        let held = InstanceLock::acquire(&id).expect("first lock");
        let text = std::fs::read_to_string(id.lock_path()).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // flock locks belong to the open file: a second open in the same
        // process conflicts like another process would.
        let err = InstanceLock::acquire(&id).unwrap_err();
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("state file"), "{err}");
        assert!(
            err.contains(&dir.join("sub/state").display().to_string()),
            "{err}"
        );
        drop(held);
        InstanceLock::acquire(&id).expect("free again after drop");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_a_state_file_the_key_file_is_the_identity() {
        let id = Identity::of(None, Path::new("/var/lib/sipwarden/secret"));
        assert_eq!(id.what, "secret key file");
        assert_eq!(
            id.lock_path(),
            PathBuf::from("/var/lib/sipwarden/secret.lock")
        );
    }

    #[test]
    fn describes_this_process() {
        let d = describe_pid(std::process::id());
        assert!(
            d.starts_with(&format!("PID {} (", std::process::id())),
            "{d}"
        );
        assert_eq!(shorten("abcdef".into(), 3), "abc...");
    }
}
