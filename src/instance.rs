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
//! file itself stays and is harmless. A key file in a directory sipwarden
//! may not write to (an operator's read-only /etc) is locked itself
//! instead; its holder is then found in /proc/locks.

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
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        let mut f = match opened {
            Ok(f) => f,
            Err(e) if read_only(&e) && id.what == "secret key file" && id.file.is_file() => {
                return InstanceLock::acquire_in_place(id);
            }
            Err(e) => {
                return Err(format!("cannot open the lock file {}: {e}", path.display()));
            }
        };
        if !try_lock(&f).map_err(|e| format!("cannot lock {}: {e}", path.display()))? {
            let who = holder(&mut f);
            return Err(in_use(id, &who, &path));
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

    /// Locks the key file itself (opened read-only): for a key in a
    /// directory this process may not write to.
    fn acquire_in_place(id: &Identity) -> Result<InstanceLock, String> {
        let f =
            File::open(&id.file).map_err(|e| format!("cannot open {}: {e}", id.file.display()))?;
        if !try_lock(&f).map_err(|e| format!("cannot lock {}: {e}", id.file.display()))? {
            let who = match locks_holder(&f) {
                Some(pid) => describe_pid(pid),
                None => "a process that /proc/locks does not name".into(),
            };
            return Err(in_use(id, &who, &id.file));
        }
        Ok(InstanceLock {
            identity: id.clone(),
            _file: f,
        })
    }
}

/// A directory sipwarden may not write to.
fn read_only(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS)
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file holds it.
fn try_lock(f: &File) -> std::io::Result<bool> {
    // SAFETY: flock(2) on a file descriptor the caller owns.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn in_use(id: &Identity, who: &str, lock: &Path) -> String {
    let own = match id.what {
        "state file" => "state.path",
        _ => "secret.key_file (or a state.path)",
    };
    let lock = if lock == id.file {
        "which holds its lock".to_string()
    } else {
        format!("which holds its lock file {}", lock.display())
    };
    format!(
        "the {} {} is in use by {who}, {lock}: another sipwarden runs with it, and two \
         would split the traffic and overwrite each other's state. Stop it first, or give \
         this one its own {own}",
        id.what,
        id.file.display(),
    )
}

/// The PID of the `flock` on `f`'s file, from /proc/locks.
fn locks_holder(f: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata().ok()?;
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    flock_pid(&text, m.dev(), m.ino())
}

/// In /proc/locks text, the PID of the FLOCK on device `dev`, inode `ino`
/// (`1: FLOCK  ADVISORY  WRITE 4242 08:02:393218 0 EOF`; waiters, marked
/// `->`, are skipped).
fn flock_pid(text: &str, dev: u64, ino: u64) -> Option<u32> {
    let want = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
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
    fn a_key_file_locked_in_place_names_its_holder() {
        let dir = std::env::temp_dir().join(format!("sw-lock-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("secret");
        std::fs::write(&key, "00").unwrap();
        let id = Identity::of(None, &key);
        let held = InstanceLock::acquire_in_place(&id).expect("first lock");
        let err = InstanceLock::acquire_in_place(&id).unwrap_err();
        assert!(
            err.contains(&format!("PID {}", std::process::id()))
                && err.contains("which holds its lock:"),
            "{err}"
        );
        drop(held);
        InstanceLock::acquire_in_place(&id).expect("free again after drop");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_proc_locks() {
        let text = "1: POSIX  ADVISORY  WRITE 10 fd:01:77 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 4242 fd:01:77 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 4343 fd:01:77 0 EOF\n";
        let dev = libc::makedev(0xfd, 1);
        assert_eq!(flock_pid(text, dev, 77), Some(4242));
        assert_eq!(flock_pid(text, dev, 78), None);
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
