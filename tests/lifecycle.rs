//! The real binary as an operator runs it: one instance per set of
//! sockets and state file (a second one exits at once, naming the first),
//! a SIGHUP that moves the public socket, and a SIGTERM under load.
//!
//! Each test finds free loopback ports itself (a probe bound and dropped:
//! a second instance needs fixed ports, so port 0 will not do) and runs
//! its instances in a temporary directory of its own.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sipwarden");
const DOMAIN: &str = "pbx.lifecycle.example";
/// Long enough for a loaded machine; a second instance that keeps
/// running, or a shutdown that hangs, still fails.
const EXIT_BOUND: Duration = Duration::from_secs(5);

/// A temporary directory, removed at the end of the test.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p =
            std::env::temp_dir().join(format!("sipwarden-lifecycle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free for both UDP and TCP on `ip` right now.
fn free_port(ip: &str) -> u16 {
    for _ in 0..100 {
        let u = UdpSocket::bind((ip, 0)).expect("probe bind");
        let port = u.local_addr().expect("probe addr").port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// The ports of one instance.
#[derive(Clone, Copy)]
struct Ports {
    public: u16,
    internal: u16,
    backend: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            public: free_port("127.0.0.1"),
            internal: free_port("127.0.0.1"),
            backend: free_port("127.0.0.1"),
        }
    }
}

/// A config on 127.0.0.1; `state`: with a state file in `dir`.
fn config(dir: &Dir, name: &str, p: Ports, state: bool, extra: &str) -> PathBuf {
    let state = if state {
        format!(
            "[state]\npath = \"{}\"\nsave_interval = \"200ms\"\n",
            dir.path(&format!("{name}.state")).display()
        )
    } else {
        String::new()
    };
    let text = format!(
        r#"[listen]
public = ["udp:127.0.0.1:{pub_}", "tcp:127.0.0.1:{pub_}"]
internal = "udp:127.0.0.1:{int}"
advertise = "127.0.0.1:{pub_}"
workers = 1
[backend]
address = "udp:127.0.0.1:{be}"
[filter]
domains = ["{DOMAIN}"]
[secret]
key_file = "{key}"
[metrics]
summary_interval = "0s"
[log]
level = "info"
{state}{extra}"#,
        pub_ = p.public,
        int = p.internal,
        be = p.backend,
        key = dir.path("secret").display(),
    );
    let path = dir.path(&format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// A running (or exited) sipwarden whose stderr goes to a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(config: &Path) -> Proc {
        let log = config.with_extension("log");
        let err = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start sipwarden");
        Proc { child, log }
    }

    /// Started and serving: "sipwarden running" in its log.
    fn start(config: &Path) -> Proc {
        let mut p = Proc::spawn(config);
        p.wait_log("sipwarden running", 1);
        p
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Until the log has `n` lines containing `what` (at most 10 s).
    fn wait_log(&mut self, what: &str, n: usize) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.log().matches(what).count() >= n {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("sipwarden exited ({st}) before {what:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {what:?} in the log within 10 s:\n{}", self.log());
    }

    /// Its exit status and how long it took, if within `bound`.
    fn wait_exit(&mut self, bound: Duration) -> Option<(ExitStatus, Duration)> {
        let start = Instant::now();
        while start.elapsed() < bound {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some((st, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on a child this test started and has not reaped.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a second instance that must refuse to run: exits non-zero
/// within the bound. Returns its stderr.
fn refused(config: &Path) -> String {
    let mut second = Proc::spawn(config);
    let Some((status, took)) = second.wait_exit(EXIT_BOUND) else {
        panic!(
            "the second instance still runs after {} s:\n{}",
            EXIT_BOUND.as_secs(),
            second.log()
        );
    };
    let err = second.log();
    assert!(!status.success(), "the second instance exited 0:\n{err}");
    eprintln!("second instance: {status} after {took:?}: {err}");
    err
}

fn options(call_id: &str) -> String {
    format!(
        "OPTIONS sip:100@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=f-{call_id}\r\nTo: <sip:100@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Sends an OPTIONS with the domain to `public` until the backend socket
/// receives it (at most 5 s).
fn forwarded(public: SocketAddr, backend: &UdpSocket, call_id: &str) -> bool {
    let phone = UdpSocket::bind("127.0.0.1:0").expect("phone");
    backend
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        phone
            .send_to(options(call_id).as_bytes(), public)
            .expect("send");
        while let Ok((n, _)) = backend.recv_from(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains(&format!("Call-ID: {call_id}")) {
                return true;
            }
        }
    }
    false
}

// ------------------------------------------------------ one instance per state

/// `sipwarden --config F` twice: the second exits at once and names the
/// first (PID) and the state file it holds.
#[test]
fn the_same_config_twice_is_refused() {
    let dir = Dir::new("same");
    let cfg = config(&dir, "a", Ports::new(), true, "");
    let first = Proc::start(&cfg);
    let err = refused(&cfg);
    assert!(
        err.contains(&format!("PID {}", first.pid())),
        "names the running instance's PID {}: {err}",
        first.pid()
    );
    assert!(
        err.contains(&dir.path("a.state").display().to_string()),
        "names the state file: {err}"
    );
}

/// Other files, one public socket in common: refused, naming the socket
/// and the PID holding it.
#[test]
fn a_shared_public_socket_is_refused() {
    let dir = Dir::new("socket");
    let a = Ports::new();
    let first = Proc::start(&config(&dir, "a", a, true, ""));
    // Only the UDP public port is the same.
    let b = Ports {
        internal: free_port("127.0.0.1"),
        ..a
    };
    let text = std::fs::read_to_string(config(&dir, "b", b, true, "")).unwrap();
    let tcp = free_port("127.0.0.1");
    let text = text.replace(
        &format!("\"tcp:127.0.0.1:{}\"", a.public),
        &format!("\"tcp:127.0.0.1:{tcp}\""),
    );
    let text = text.replace(
        &dir.path("secret").display().to_string(),
        &dir.path("secret-b").display().to_string(),
    );
    let cfg_b = dir.path("b.toml");
    std::fs::write(&cfg_b, text).unwrap();
    let err = refused(&cfg_b);
    assert!(
        err.contains(&format!("udp:127.0.0.1:{}", a.public)),
        "names the socket: {err}"
    );
    assert!(
        err.contains(&format!("PID {}", first.pid())),
        "names the running instance's PID {}: {err}",
        first.pid()
    );
}

/// Without a state file the secret key file is the instance's identity.
#[test]
fn without_a_state_file_the_key_file_is_the_identity() {
    let dir = Dir::new("key");
    let first = Proc::start(&config(&dir, "a", Ports::new(), false, ""));
    let err = refused(&config(&dir, "b", Ports::new(), false, ""));
    assert!(
        err.contains(&format!("PID {}", first.pid())),
        "names the running instance's PID {}: {err}",
        first.pid()
    );
    assert!(
        err.contains(&dir.path("secret").display().to_string()),
        "names the key file: {err}"
    );
}

/// Another program on the public socket, even one that shares it
/// (SO_REUSEPORT, as sipwarden's own sockets do): refused, naming it.
#[test]
fn a_socket_held_by_another_program_is_named() {
    let dir = Dir::new("other");
    let p = Ports::new();
    let udp = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    udp.set_reuse_port(true).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", p.public).parse().unwrap();
    udp.bind(&addr.into()).unwrap();
    let err = refused(&config(&dir, "a", p, true, ""));
    assert!(
        err.contains(&format!("udp:127.0.0.1:{}", p.public)),
        "names the socket: {err}"
    );
    assert!(
        err.contains(&format!("PID {}", std::process::id())),
        "names this test process ({}) as the holder: {err}",
        std::process::id()
    );
    drop(udp);

    // A plain TCP listener on the port.
    let q = Ports::new();
    let _tcp = TcpListener::bind(("127.0.0.1", q.public)).unwrap();
    let err = refused(&config(&dir, "b", q, true, ""));
    assert!(
        err.contains(&format!("tcp:127.0.0.1:{}", q.public))
            && err.contains(&format!("PID {}", std::process::id())),
        "names the socket and this process: {err}"
    );
}

/// SIGHUP with a new public port: the new one serves, the old one is
/// released, and the instance still holds its files.
#[test]
fn sighup_moves_the_public_port() {
    let dir = Dir::new("hup");
    let p = Ports::new();
    let backend = UdpSocket::bind(("127.0.0.1", p.backend)).unwrap();
    let cfg = config(&dir, "a", p, true, "");
    let mut first = Proc::start(&cfg);
    let old: SocketAddr = format!("127.0.0.1:{}", p.public).parse().unwrap();
    assert!(forwarded(old, &backend, "before-hup"), "{}", first.log());

    let moved = Ports {
        public: free_port("127.0.0.1"),
        ..p
    };
    config(&dir, "a", moved, true, "");
    first.signal(libc::SIGHUP);
    first.wait_log("config reloaded", 1);
    let new: SocketAddr = format!("127.0.0.1:{}", moved.public).parse().unwrap();
    assert!(
        forwarded(new, &backend, "after-hup"),
        "the new public port forwards: {}",
        first.log()
    );
    // The old port is free again (the UDP workers notice within 200 ms).
    let start = Instant::now();
    let released = loop {
        if UdpSocket::bind(old).is_ok() && TcpListener::bind(old).is_ok() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(5) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(released, "the old public port {old} is released");
    // A second instance of the moved config is still refused.
    let err = refused(&cfg);
    assert!(err.contains(&format!("PID {}", first.pid())), "{err}");
}

/// Runs the test `name` of this binary again in a network namespace of
/// its own (`unshare -rn`, loopback up) and asserts it passed there. A
/// test that binds a wildcard address does so there, not on the host.
/// False when already inside.
fn in_own_netns(name: &str) -> bool {
    if std::env::var_os("SIPWARDEN_TEST_NETNS").is_some() {
        return false;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("unshare")
        .args([
            "-rn",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("SIPWARDEN_TEST_NETNS", "1")
        .output()
        .expect("unshare (util-linux) and ip (iproute2) are needed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in its own network namespace: {}\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("{stderr}");
    true
}

/// A wildcard and a specific address of one port and transport overlap:
/// 0.0.0.0:P held, 127.0.0.1:P is refused, and the other way round. The
/// holder itself may move between them on SIGHUP.
#[test]
fn a_wildcard_and_a_specific_address_overlap() {
    if in_own_netns("a_wildcard_and_a_specific_address_overlap") {
        return;
    }
    let dir = Dir::new("wildcard");
    let p = Ports::new();
    let backend = UdpSocket::bind(("127.0.0.1", p.backend)).unwrap();
    // The public sockets on the wildcard address.
    let wild = |text: String| {
        text.lines()
            .map(|l| match l.starts_with("public = ") {
                true => l.replace(":127.0.0.1:", ":0.0.0.0:"),
                false => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let cfg_a = config(&dir, "a", p, true, "");
    std::fs::write(&cfg_a, wild(std::fs::read_to_string(&cfg_a).unwrap())).unwrap();
    let mut first = Proc::start(&cfg_a);

    // 127.0.0.1:P under another state file and internal port.
    let b = Ports {
        internal: free_port("127.0.0.1"),
        ..p
    };
    let cfg_b = config(&dir, "b", b, true, "");
    let err = refused(&cfg_b);
    assert!(
        err.contains(&format!("udp:127.0.0.1:{}", p.public))
            && err.contains(&format!("PID {}", first.pid())),
        "the specific address is refused while the wildcard is held: {err}"
    );

    // The holder itself moves from the wildcard to 127.0.0.1.
    config(&dir, "a", p, true, "");
    first.signal(libc::SIGHUP);
    first.wait_log("config reloaded", 1);
    let public: SocketAddr = format!("127.0.0.1:{}", p.public).parse().unwrap();
    assert!(forwarded(public, &backend, "moved"), "{}", first.log());

    // Now the wildcard is refused.
    std::fs::write(&cfg_b, wild(std::fs::read_to_string(&cfg_b).unwrap())).unwrap();
    let err = refused(&cfg_b);
    assert!(
        err.contains(&format!("udp:0.0.0.0:{}", p.public))
            && err.contains(&format!("PID {}", first.pid())),
        "the wildcard is refused while the specific address is held: {err}"
    );
}
