//! The real binary refusing to start: whatever the log settings
//! (`log.level = "off"` or `"error"`, `log.format = "json"`,
//! `RUST_LOG=off`), it says why on stderr and exits 1. Loopback only, port
//! 0 or a port this test holds.

use std::io::Read;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh directory for one case's config and key file.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sw-start-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// A config with one public UDP socket and the internal one on port 0
/// (another address: two port-0 sockets on one address were refused as
/// "listed twice").
fn config(dir: &Path, public_port: u16, extra: &str) -> PathBuf {
    let text = format!(
        "[listen]\n\
         public = [\"udp:127.0.0.1:{public_port}\"]\n\
         internal = \"udp:127.0.0.2:0\"\n\
         advertise = \"pbx.example.com:5060\"\n\
         workers = 1\n\
         [backend]\n\
         address = \"udp:127.0.0.1:9\"\n\
         [filter]\n\
         domains = [\"pbx.secret.example\"]\n\
         [control]\n\
         socket = \"{sock}\"\n\
         {extra}",
        sock = dir.join("control.sock").display()
    );
    let path = dir.join("sipwarden.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs `sipwarden --config F` with `envs`; returns its exit code and
/// stderr. A binary still running after 10 s (it started after all) is
/// killed and reported as exit code `None`.
fn start(cfg: &Path, envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipwarden"));
    cmd.arg("--config")
        .arg(cfg)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sipwarden");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        match child.try_wait().expect("wait") {
            Some(status) => break status.code(),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (code, err)
}

/// The log settings a failed start must not silence.
const LOG_SETTINGS: [(&str, &str, Option<&str>); 5] = [
    ("human-info", "[log]\nlevel = \"info\"\n", None),
    ("off", "[log]\nlevel = \"off\"\n", None),
    (
        "json-error",
        "[log]\nformat = \"json\"\nlevel = \"error\"\n",
        None,
    ),
    (
        "json-off",
        "[log]\nformat = \"json\"\nlevel = \"off\"\n",
        None,
    ),
    ("rust-log-off", "[log]\nlevel = \"info\"\n", Some("off")),
];

#[test]
fn a_public_socket_in_use_is_named_on_stderr_whatever_the_log_settings() {
    // Held without SO_REUSEPORT: sipwarden's bind of the same address fails.
    let held = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = held.local_addr().expect("local addr").port();
    for (name, log, rust_log) in LOG_SETTINGS {
        let dir = scratch(&format!("bind-{name}"));
        let key = dir.join("secret");
        let cfg = config(
            &dir,
            port,
            &format!("[secret]\nkey_file = \"{}\"\n{log}", key.display()),
        );
        let envs: Vec<(&str, &str)> = rust_log.map(|v| ("RUST_LOG", v)).into_iter().collect();
        let (code, err) = start(&cfg, &envs);
        assert_eq!(code, Some(1), "{name}: exit code; stderr: {err}");
        assert!(
            err.contains(&format!("udp:127.0.0.1:{port}"))
                && err.contains("cannot start")
                && err.contains("already in use"),
            "{name}: stderr should name the socket that cannot be bound: {err:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_key_file_that_cannot_be_created_is_named_on_stderr() {
    for (name, log, rust_log) in LOG_SETTINGS {
        let dir = scratch(&format!("key-{name}"));
        // A regular file where the key's directory should be: not even
        // root can create the directory.
        std::fs::write(dir.join("blocker"), "x").expect("write blocker");
        let cfg = config(
            &dir,
            0,
            &format!("[secret]\nkey_file = \"blocker/sub/secret\"\n{log}"),
        );
        let envs: Vec<(&str, &str)> = rust_log.map(|v| ("RUST_LOG", v)).into_iter().collect();
        let (code, err) = start(&cfg, &envs);
        assert_eq!(code, Some(1), "{name}: exit code; stderr: {err}");
        assert!(
            err.contains("blocker/sub/secret") && err.contains("secret.key_file"),
            "{name}: stderr should name the key file and its key: {err:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_log_level_that_is_not_a_level_is_refused_before_it_silences_the_log() {
    let dir = scratch("verbose");
    let key = dir.join("secret");
    let cfg = config(
        &dir,
        0,
        &format!(
            "[secret]\nkey_file = \"{}\"\n[log]\nlevel = \"verbose\"\n",
            key.display()
        ),
    );
    let (code, err) = start(&cfg, &[]);
    assert_eq!(code, Some(1), "exit code; stderr: {err}");
    assert!(
        err.contains("log.level") && err.contains("verbose"),
        "stderr should name log.level: {err:?}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sipwarden"))
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1), "check refuses it too");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A key file directory this user may not write: refused by `check` (and
/// so by start) before anything is tried. Root may write anywhere, so as
/// root the check runs as `nobody` through setpriv(1).
#[test]
fn a_directory_the_user_cannot_write_is_refused_by_check() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("locked");
    let locked = dir.join("locked");
    std::fs::create_dir_all(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = config(
        &dir,
        0,
        &format!(
            "[secret]\nkey_file = \"{}\"\n",
            locked.join("sub/secret").display()
        ),
    );
    let bin = env!("CARGO_BIN_EXE_sipwarden");
    // SAFETY: geteuid has no preconditions.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run check (as root this needs setpriv from util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains("key `secret.key_file`") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(!locked.join("sub").exists(), "check created nothing");
    let _ = std::fs::remove_dir_all(&dir);
}
