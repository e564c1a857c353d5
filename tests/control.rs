//! The control socket of the real binary (`docs/control.md`): made with
//! mode 0600 and removed at exit, a stale one replaced and a live one
//! refused, several clients and several requests per connection, garbage,
//! an oversized line, an idle client and one too many refused without
//! harm; the CLI refuses a symbolic link or a regular file at the socket's
//! path; every subcommand in JSON and as a table against a proxy that saw
//! traffic; a manual ban drops the next message (counted as banned), an
//! unban admits it again, and a ban survives a restart.
//!
//! Each test runs its instance in a directory of its own, on free loopback
//! ports (`SIPWARDEN_TEST_KEEP=1` keeps the directory and the logs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DOMAIN: &str = "pbx.control.example";
/// Long enough for a loaded machine.
const BOUND: Duration = Duration::from_secs(10);

fn bin() -> String {
    std::env::var("SIPWARDEN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sipwarden").into())
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("sw-control-{name}-{}", std::process::id()));
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

fn free_port() -> u16 {
    for _ in 0..100 {
        let u = UdpSocket::bind("127.0.0.1:0").expect("probe");
        let port = u.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// One instance's config, ports and files.
struct Setup {
    dir: Dir,
    config: PathBuf,
    socket: PathBuf,
    public: SocketAddr,
    metrics: SocketAddr,
    backend: UdpSocket,
}

impl Setup {
    fn new(name: &str, extra: &str) -> Setup {
        let dir = Dir::new(name);
        let backend = UdpSocket::bind("127.0.0.1:0").expect("backend");
        let (public, internal, metrics) = (free_port(), free_port(), free_port());
        let socket = dir.path("run/control.sock");
        let text = format!(
            r#"[listen]
public = ["udp:127.0.0.1:{public}"]
internal = "udp:127.0.0.1:{internal}"
advertise = "127.0.0.1:{public}"
workers = 1
[backend]
address = "udp:{backend}"
[filter]
domains = ["{DOMAIN}"]
[[trunk]]
name = "provider1"
registrar = "127.0.0.1"
[ban]
after_rejects = 5
[secret]
key_file = "{key}"
[state]
path = "{state}"
save_interval = "100ms"
[metrics]
listen = "127.0.0.1:{metrics}"
summary_interval = "0s"
[control]
socket = "{sock}"
{extra}"#,
            backend = backend.local_addr().expect("addr"),
            key = dir.path("secret").display(),
            state = dir.path("state.json").display(),
            sock = socket.display(),
        );
        let config = dir.path("sipwarden.toml");
        std::fs::write(&config, text).expect("config");
        Setup {
            public: format!("127.0.0.1:{public}").parse().expect("addr"),
            metrics: format!("127.0.0.1:{metrics}").parse().expect("addr"),
            dir,
            config,
            socket,
            backend,
        }
    }

    fn start(&self) -> Proc {
        let log = self.dir.path("sipwarden.log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let child = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start");
        let mut p = Proc { child, log };
        let start = Instant::now();
        while !self.socket.exists() || metric(self.metrics, "sipwarden_bans").is_none() {
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("sipwarden exited ({st}):\n{}", p.log());
            }
            assert!(start.elapsed() < BOUND, "not up:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// `sipwarden ARGS --config F`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run the CLI")
    }

    /// A subcommand that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{args:?}: {:?}\nstdout: {out}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }

    /// A subcommand with `--json`: the answer object.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let v: Value = serde_json::from_str(&self.ok(&a)).expect("one JSON object");
        assert_eq!(
            (v["version"].as_u64(), v["ok"].as_bool()),
            (Some(1), Some(true))
        );
        v["result"].clone()
    }
}

struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait: it must exit 0.
    fn stop(mut self) {
        // SAFETY: kill(2) on a child this test started and has not reaped.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(r, 0);
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(st.success(), "exit {st}:\n{}", self.log());
                return;
            }
            assert!(start.elapsed() < BOUND, "no exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series of the metrics text (`None`: the endpoint did not answer).
fn metric(metrics: SocketAddr, name: &str) -> Option<u64> {
    let mut c = TcpStream::connect_timeout(&metrics, Duration::from_secs(2)).ok()?;
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0),
    )
}

fn banned_drops(s: &Setup) -> u64 {
    metric(
        s.metrics,
        "sipwarden_messages_total{side=\"public\",transport=\"udp\",reason=\"banned\",disposition=\"dropped\"}",
    )
    .unwrap_or(0)
}

fn options(call_id: &str, domain: &str) -> String {
    format!(
        "OPTIONS sip:100@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{domain}>;tag=f-{call_id}\r\nTo: <sip:100@{domain}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Sends OPTIONS with the domain from `from` until the backend receives it
/// (true) or `BOUND` passes (false).
fn forwarded(s: &Setup, from: &str, call_id: &str) -> bool {
    let phone = UdpSocket::bind((from, 0)).expect("phone");
    s.backend
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        phone
            .send_to(options(call_id, DOMAIN).as_bytes(), s.public)
            .expect("send");
        while let Ok((n, _)) = s.backend.recv_from(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains(&format!("Call-ID: {call_id}")) {
                return true;
            }
        }
    }
    false
}

/// One request line on a raw connection; the answer line (`Null` when
/// none came).
fn ask(c: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
    // A refused client may find the connection closed before it writes:
    // what it read, if anything, is the answer.
    let _ = c.get_mut().write_all(line);
    let mut out = String::new();
    let _ = c.read_line(&mut out);
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

fn connect(s: &Setup) -> BufReader<UnixStream> {
    let c = UnixStream::connect(&s.socket).expect("connect");
    c.set_read_timeout(Some(BOUND)).expect("timeout");
    BufReader::new(c)
}

#[test]
fn the_socket_is_0600_serves_several_clients_and_goes_at_exit() {
    let s = Setup::new("perm", "");
    let p = s.start();
    let mode = std::fs::symlink_metadata(&s.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let dir_mode = std::fs::metadata(s.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        dir_mode & 0o777,
        0o700,
        "the directory it made: {dir_mode:o}"
    );
    // Two clients at once, several requests on one connection.
    let mut a = connect(&s);
    let mut b = connect(&s);
    let status = br#"{"version":1,"request":"status"}
"#;
    assert_eq!(ask(&mut a, status)["ok"], true);
    assert_eq!(ask(&mut b, status)["result"]["mode"], "enforce");
    let bans = ask(&mut a, b"{\"version\":1,\"request\":\"bans\"}\n");
    assert_eq!(bans["result"]["bans"], serde_json::json!([]));
    drop((a, b));
    p.stop();
    assert!(!s.socket.exists(), "the socket file is removed at exit");
}

#[test]
fn garbage_an_oversized_line_an_idle_and_a_surplus_client_do_no_harm() {
    let s = Setup::new("garbage", "max_connections = 2\ntimeout = \"1s\"\n");
    let mut p = s.start();
    let mut c = connect(&s);
    for (line, code) in [
        (&b"hello\n"[..], "malformed"),
        (b"\xff\xfe\x00\n", "malformed"),
        (
            b"{\"version\":1,\"request\":\"reboot\"}\n",
            "unknown-request",
        ),
        (
            b"{\"version\":9,\"request\":\"status\"}\n",
            "unsupported-version",
        ),
        (
            b"{\"version\":1,\"request\":\"ban\",\"target\":\"nonsense\"}\n",
            "bad-argument",
        ),
    ] {
        let r = ask(&mut c, line);
        assert_eq!(
            (r["ok"].as_bool(), r["error"]["code"].as_str()),
            (Some(false), Some(code)),
            "{r}"
        );
    }
    // The same connection still answers.
    assert_eq!(
        ask(&mut c, b"{\"version\":1,\"request\":\"trunks\"}\n")["ok"],
        true
    );
    drop(c);
    // A 1 MiB line: an error and the connection closed.
    let mut big = connect(&s);
    let line = vec![b'x'; 1 << 20];
    let _ = big.get_mut().write_all(&line);
    let mut answer = String::new();
    let _ = big.read_line(&mut answer);
    assert!(answer.contains("too-long"), "{answer:?}");
    let mut rest = String::new();
    assert_eq!(
        big.read_line(&mut rest).unwrap_or(0),
        0,
        "closed after the error"
    );
    // An idle client is closed after control.timeout; meanwhile a third
    // client over max_connections (2) is told so.
    // (The connections closed above free their slots as the server sees
    // them go: until both new ones are answered, try again.)
    let start = Instant::now();
    let (mut idle, mut other) = loop {
        let (mut a, mut b) = (connect(&s), connect(&s));
        let st = b"{\"version\":1,\"request\":\"status\"}\n";
        if ask(&mut a, st)["ok"] == true && ask(&mut b, st)["ok"] == true {
            break (a, b);
        }
        assert!(start.elapsed() < BOUND, "two clients never served at once");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut surplus = connect(&s);
    let mut busy = String::new();
    surplus.read_line(&mut busy).expect("busy line");
    assert!(busy.contains("\"busy\""), "{busy:?}");
    let mut nothing = String::new();
    assert_eq!(idle.read_line(&mut nothing).expect("eof"), 0, "idle closed");
    assert_eq!(
        other.read_line(&mut nothing).expect("eof"),
        0,
        "idle closed"
    );
    // Still up, still answering, and the bad lines were counted.
    assert!(p.alive(), "{}", p.log());
    let st = s.json(&["status"]);
    assert_eq!(st["mode"], "enforce");
    assert_eq!(
        metric(
            s.metrics,
            "sipwarden_control_requests_total{request=\"invalid\",result=\"error\"}"
        ),
        Some(5)
    );
    assert_eq!(
        metric(
            s.metrics,
            "sipwarden_control_requests_total{request=\"ban\",result=\"error\"}"
        ),
        Some(1)
    );
    p.stop();
}

#[test]
fn the_cli_refuses_what_is_not_a_socket_and_says_when_none_is_there() {
    let s = Setup::new("cli", "");
    std::fs::create_dir_all(s.socket.parent().unwrap()).unwrap();
    // Nothing there: exit 2, naming the path.
    let o = s.cli(&["status"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&s.socket.display().to_string()) && err.contains("no such socket"),
        "{err}"
    );
    // A symbolic link to a real socket is not followed.
    let real = s.dir.path("real.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&real).unwrap();
    std::os::unix::fs::symlink(&real, &s.socket).unwrap();
    let o = s.cli(&["bans", "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(o.stdout.is_empty());
    // A regular file neither; and start refuses to replace it.
    std::fs::remove_file(&s.socket).unwrap();
    std::fs::write(&s.socket, "x").unwrap();
    let o = s.cli(&["ban", "192.0.2.1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("not a socket"), "{err}");
    let o = Command::new(bin())
        .arg("--config")
        .arg(&s.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("control.socket") && err.contains("not a socket"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&s.socket).unwrap(),
        "x",
        "left alone"
    );
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let s = Setup::new("stale", "");
    std::fs::create_dir_all(s.socket.parent().unwrap()).unwrap();
    // A crashed instance's socket: bound, nobody listening any more.
    drop(std::os::unix::net::UnixListener::bind(&s.socket).unwrap());
    assert!(s.socket.exists());
    let p = s.start();
    assert_eq!(s.json(&["status"])["mode"], "enforce");
    // Another instance (its own state and ports) on the same socket path
    // is refused: the live socket is not taken over.
    let other = Setup::new("stale-other", "");
    let text = std::fs::read_to_string(&other.config).unwrap().replace(
        &other.socket.display().to_string(),
        &s.socket.display().to_string(),
    );
    std::fs::write(&other.config, text).unwrap();
    let o = Command::new(bin())
        .arg("--config")
        .arg(&other.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("a running process answers on it"), "{err}");
    assert_eq!(
        s.json(&["status"])["mode"],
        "enforce",
        "the first still serves"
    );
    p.stop();
}

#[test]
fn every_subcommand_answers_in_json_and_as_a_table() {
    let s = Setup::new("all", "");
    let p = s.start();
    // Traffic: a phone with the domain, a scanner without it.
    assert!(forwarded(&s, "127.0.0.21", "all-1"));
    let scanner = UdpSocket::bind(("127.0.0.22", 0)).unwrap();
    for n in 0..3 {
        let m = options(&format!("scan-{n}"), "127.0.0.1");
        scanner.send_to(m.as_bytes(), s.public).unwrap();
    }
    // Until the sketch has seen them (the datagrams are handled in turn).
    let start = Instant::now();
    let sources = loop {
        let v = s.json(&["sources"]);
        if v["by_rejects"][0]["rejects"] == 3 {
            break v;
        }
        assert!(start.elapsed() < BOUND, "{v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(sources["by_rejects"][0]["source"], "127.0.0.22");
    assert_eq!(sources["by_rejects"][0]["top_reason"], "no-domain");
    assert!(sources["by_messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["source"] == "127.0.0.21"));
    let table = s.ok(&["sources"]);
    assert!(
        table.contains("SOURCE") && table.contains("127.0.0.22") && table.contains("no-domain=3"),
        "{table}"
    );

    let st = s.json(&["status"]);
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(st["totals"]["forwarded"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["totals"]["dropped"].as_u64().unwrap() >= 3, "{st}");
    let roles: Vec<&str> = st["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["public", "internal", "backend", "metrics", "control"]
    );
    let table = s.ok(&["status"]);
    assert!(
        table.contains("mode enforce")
            && table.contains("SINCE START /S")
            && table.contains("last reload: none"),
        "{table}"
    );

    let t = s.json(&["trunks"]);
    assert_eq!(t["trunks"][0]["name"], "provider1");
    assert_eq!(t["trunks"][0]["registered"], false);
    let table = s.ok(&["trunks"]);
    assert!(
        table.starts_with("TRUNK") && table.contains("provider1  no"),
        "{table}"
    );

    let b = s.json(&["ban", "192.0.2.0/24", "--for", "2h"]);
    assert_eq!(b["ban"]["left_s"], 7200);
    let table = s.ok(&["ban", "2001:db8::1"]);
    assert!(
        table.starts_with("banned 2001:db8::1 until ") && table.contains("(15m0s left)"),
        "{table}"
    );
    let bans = s.json(&["bans"]);
    assert_eq!(bans["bans"].as_array().unwrap().len(), 2);
    let table = s.ok(&["bans"]);
    assert!(
        table.contains("192.0.2.0/24") && table.contains("manual") && table.contains("2h0m left"),
        "{table}"
    );
    let u = s.json(&["unban", "192.0.2.0/24"]);
    assert_eq!(u["network"], true);
    let table = s.ok(&["unban", "2001:db8::1"]);
    assert_eq!(table, "unbanned 2001:db8::1\n");
    // An error from the proxy: exit 1, the message on stderr (and the
    // answer on stdout with --json).
    let o = s.cli(&["unban", "2001:db8::1", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not banned"));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["code"], "not-banned");
    // SIGHUP: the status says how the reload went.
    // SAFETY: kill(2) on a child this test started and has not reaped.
    unsafe { libc::kill(p.child.id() as libc::pid_t, libc::SIGHUP) };
    let start = Instant::now();
    while s.json(&["status"])["reload"]["result"] != "ok" {
        assert!(start.elapsed() < BOUND);
        std::thread::sleep(Duration::from_millis(50));
    }
    p.stop();
}

#[test]
fn a_ban_drops_the_next_message_an_unban_admits_it_and_a_restart_keeps_it() {
    let s = Setup::new("ban", "");
    let p = s.start();
    let phone = "127.0.0.31";
    assert!(forwarded(&s, phone, "before"));
    let before = banned_drops(&s);
    s.ok(&["ban", phone, "--for", "1h"]);
    assert!(
        !forwarded(&s, phone, "during"),
        "a banned source is not forwarded"
    );
    assert!(banned_drops(&s) > before, "counted as banned");
    assert_eq!(
        metric(
            s.metrics,
            "sipwarden_control_requests_total{request=\"ban\",result=\"ok\"}"
        ),
        Some(1)
    );
    assert!(
        p.log().contains("banned by the control socket"),
        "{}",
        p.log()
    );
    // Written to the state file, kept across a restart.
    let start = Instant::now();
    while !std::fs::read_to_string(s.dir.path("state.json"))
        .unwrap_or_default()
        .contains(phone)
    {
        assert!(start.elapsed() < BOUND, "not in the state file");
        std::thread::sleep(Duration::from_millis(50));
    }
    p.stop();
    let p = s.start();
    let bans = s.json(&["bans"]);
    assert_eq!(bans["bans"][0]["target"], phone, "{bans}");
    assert_eq!(bans["bans"][0]["trigger"], "manual");
    assert!(!forwarded(&s, phone, "after-restart"));
    s.ok(&["unban", phone]);
    assert!(
        forwarded(&s, phone, "after-unban"),
        "admitted after the unban"
    );
    assert!(p.log().contains("unbanned by the control socket"));
    p.stop();
}
