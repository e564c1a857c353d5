//! The real binary as an operator runs it: one instance per set of
//! sockets and state file (a second one exits at once, naming the first),
//! a SIGHUP that moves the public socket, a SIGTERM idle and under load,
//! and queued replies delivered at shutdown.
//!
//! Each test finds free loopback ports itself (a probe bound and dropped:
//! a second instance needs fixed ports, so port 0 will not do) and runs
//! its instances in a temporary directory of its own
//! (`SIPWARDEN_TEST_KEEP=1` keeps it, with the instances' logs). The test
//! that binds a wildcard address runs in a network namespace of its own
//! (`unshare -rn`: root, or unprivileged user namespaces).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The binary under test; `SIPWARDEN_TEST_BIN` runs these tests against
/// another build (an older one, to see them fail).
fn bin() -> String {
    std::env::var("SIPWARDEN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sipwarden").into())
}
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
        if std::env::var_os("SIPWARDEN_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
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
[control]
socket = "{sock}"
{state}{extra}"#,
        pub_ = p.public,
        int = p.internal,
        be = p.backend,
        key = dir.path("secret").display(),
        sock = dir.path(&format!("{name}.sock")).display(),
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
        let child = Command::new(bin())
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

    // The metrics port.
    let m = TcpListener::bind("127.0.0.1:0").unwrap();
    let mport = m.local_addr().unwrap().port();
    let cfg = config(&dir, "c", Ports::new(), true, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "summary_interval = \"0s\"\n",
        &format!("summary_interval = \"0s\"\nlisten = \"127.0.0.1:{mport}\"\n"),
    );
    std::fs::write(&cfg, text).unwrap();
    let err = refused(&cfg);
    assert!(
        err.contains(&format!("metrics socket tcp:127.0.0.1:{mport}"))
            && err.contains(&format!("PID {}", std::process::id())),
        "names the metrics socket and this process: {err}"
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

// ---------------------------------------------------------------- stopping

fn by_ip(n: u64) -> String {
    padded(n, 0)
}

/// A request by IP (answered 403 here) whose Via, echoed in the answer,
/// carries `pad` more bytes.
fn padded(n: u64, pad: usize) -> String {
    let pad = "x".repeat(pad);
    format!(
        "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-t{n};pad={pad}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:s@127.0.0.1>;tag=t{n}\r\nTo: <sip:100@127.0.0.1>\r\n\
         Call-ID: term-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// One value of the Prometheus text at `metrics` (0 when absent).
fn metric(metrics: SocketAddr, name: &str) -> u64 {
    let Ok(mut c) = TcpStream::connect_timeout(&metrics, Duration::from_secs(2)) else {
        return 0;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// SIGTERM, then: exit status, time to exit, and whether the state file
/// was written after the signal.
fn terminate(p: &mut Proc, state: &Path) -> (ExitStatus, Duration, bool) {
    let signalled = std::time::SystemTime::now();
    p.signal(libc::SIGTERM);
    let Some((status, took)) = p.wait_exit(EXIT_BOUND) else {
        panic!(
            "still running {} s after SIGTERM:\n{}",
            EXIT_BOUND.as_secs(),
            p.log()
        );
    };
    // The snapshot's own time (file times come from a coarse clock).
    let signalled_ms = signalled
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let written = std::fs::read(state)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("saved_at")?.as_u64())
        .is_some_and(|t| t >= signalled_ms);
    (status, took, written)
}

/// SIGTERM idle, and under load: a UDP flood from a thread plus TCP
/// connections whose peer never reads while every request it sends is
/// answered (403), so the proxy's writes to it queue up for good. Both
/// exit 0 within the bound (under load: after `tcp.drain_timeout`, the
/// queues still full) with the state file written after the signal.
#[test]
fn sigterm_under_load_exits_promptly_and_saves_state() {
    let dir = Dir::new("term");
    let p = Ports::new();
    let mport = free_port("127.0.0.1");
    let extra =
        format!("[allow]\ncidrs = [\"127.0.0.0/8\"]\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n");
    let cfg = config(&dir, "a", p, true, &extra);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[filter]\n", "[filter]\non_reject = \"403\"\n")
        .replace("[metrics]\nsummary_interval = \"0s\"\n", "");
    std::fs::write(&cfg, text).unwrap();
    let state = dir.path("a.state");
    let metrics: SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    let public: SocketAddr = format!("127.0.0.1:{}", p.public).parse().unwrap();

    let mut idle = Proc::start(&cfg);
    let (status, idle_took, written) = terminate(&mut idle, &state);
    assert!(status.success(), "idle: {status}\n{}", idle.log());
    assert!(written, "idle: the state file was written after SIGTERM");
    drop(idle);

    let mut busy = Proc::start(&cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = s.send_to(by_ip(n).as_bytes(), public);
                n += 1;
            }
            n
        })
    };
    // Peers that send and never read: 3 kB 403s pile up in the kernel's
    // buffers (a few MB), then in the proxy's queues.
    let mut peers = Vec::new();
    for _ in 0..4 {
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&public.into()).unwrap();
        let c: TcpStream = sock.into();
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        peers.push(c);
    }
    let start = Instant::now();
    let mut n = 0u64;
    while metric(metrics, "sipwarden_send_errors_total") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the TCP replies never queued up:\n{}",
            busy.log()
        );
        for c in &mut peers {
            let batch: String = (0..20).map(|i| padded(n + i, 3000)).collect();
            c.write_all(batch.as_bytes()).unwrap();
            n += 20;
        }
    }
    let (status, busy_took, written) = terminate(&mut busy, &state);
    stop.store(true, Ordering::Relaxed);
    let flooded = flood.join().unwrap();
    eprintln!(
        "SIGTERM to exit: idle {idle_took:?}; under load {busy_took:?} \
         ({flooded} datagrams flooded, {n} TCP requests from peers that never read)"
    );
    assert!(status.success(), "under load: {status}\n{}", busy.log());
    assert!(
        written,
        "under load: the state file was written after SIGTERM"
    );
    assert!(
        busy.log()
            .contains("TCP writes still queued after tcp.drain_timeout"),
        "the peers' queues were still full at the drain limit:\n{}",
        busy.log()
    );
    drop(peers);
}

/// A series of `sipwarden_messages_total`, e.g. `reason="no-domain",disposition="replied"`.
fn messages(metrics: SocketAddr, labels: &str) -> u64 {
    metric(
        metrics,
        &format!("sipwarden_messages_total{{side=\"public\",transport=\"tcp\",{labels}}}"),
    )
}

/// Replies queued for a peer that reads slowly are delivered at shutdown
/// (within `tcp.drain_timeout`), not cut off, and the connection ends with
/// a FIN after the last one.
#[test]
fn queued_replies_reach_a_slow_peer_at_shutdown() {
    let dir = Dir::new("drain");
    let p = Ports::new();
    let mport = free_port("127.0.0.1");
    let extra = "[allow]\ncidrs = [\"127.0.0.0/8\"]\n[tcp]\ndrain_timeout = \"5s\"\n";
    let cfg = config(&dir, "a", p, true, extra);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[filter]\n", "[filter]\non_reject = \"403\"\n")
        .replace(
            "summary_interval = \"0s\"\n",
            &format!("summary_interval = \"0s\"\nlisten = \"127.0.0.1:{mport}\"\n"),
        );
    std::fs::write(&cfg, text).unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    let public: SocketAddr = format!("127.0.0.1:{}", p.public).parse().unwrap();
    let mut px = Proc::start(&cfg);

    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&public.into()).unwrap();
    let mut peer: TcpStream = sock.into();
    // Requests with 3 kB answers, until the proxy's queue to this peer
    // overflows: the kernel's buffers (a few MB) and the queue are full.
    let start = Instant::now();
    let mut n = 0u64;
    while metric(metrics, "sipwarden_send_errors_total") == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", px.log());
        let batch: String = (0..20).map(|i| padded(n + i, 3000)).collect();
        peer.write_all(batch.as_bytes()).unwrap();
        n += 20;
    }
    // Until the proxy has handled all of them.
    let replied = |m| messages(m, "reason=\"no-domain\",disposition=\"replied\"");
    let mut last = (
        replied(metrics),
        metric(metrics, "sipwarden_send_errors_total"),
    );
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = (
            replied(metrics),
            metric(metrics, "sipwarden_send_errors_total"),
        );
        if now == last {
            break;
        }
        last = now;
    }
    let (replies, refused) = last;
    assert_eq!(replies, n, "every request was answered (403)");
    let queued = replies - refused;

    px.signal(libc::SIGTERM);
    // A slow peer: it starts reading a second after the signal.
    std::thread::sleep(Duration::from_secs(1));
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let end = peer.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    let delivered = text.matches("SIP/2.0 403 ").count() as u64;
    eprintln!("{n} requests: {replies} answered, {refused} refused at the full queue, {delivered} delivered after SIGTERM ({end:?})");
    assert!(end.is_ok(), "the connection ended with a FIN: {end:?}");
    assert_eq!(delivered, queued, "every queued reply reached the peer");
    let (status, _) = px.wait_exit(EXIT_BOUND).expect("exits after the drain");
    assert!(status.success(), "{status}\n{}", px.log());
}
