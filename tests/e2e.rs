//! End-to-end tests against real SIP programs (`tests/e2e/README.md`): SIPp
//! phones and scanners, Kamailio as the Asterisk stand-in (`-A WITH_EDGE`),
//! sipvicious, sipsak and tshark, all on loopback. Each test runs one script
//! of `tests/e2e/` with the binary cargo built for this test
//! (`SIPWARDEN_BIN`) and fails with the script's output when it fails.
//!
//! The scripts share ports (public 15060, internal 15070, backend 15080,
//! metrics 19099 by default; `E2E_PORT_BASE` moves them all), so the tests
//! run one at a time: a mutex here, and an flock in the scripts against
//! other processes running them. They need the SIP tools:
//! `scripts/setup.sh` (or `.ci/run`) installs them. Without them the tests fail
//! (they are never skipped silently). Run one with its output:
//! `cargo test --test e2e e2e_reload -- --nocapture`, or all the scripts
//! without cargo: `tests/e2e/run_all.sh`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One script at a time: they bind the same ports.
static SERIAL: Mutex<()> = Mutex::new(());

/// The programs the scripts call.
const TOOLS: [&str; 12] = [
    "sipp", "kamailio", "kamcmd", "svmap", "svwar", "svcrack", "sipsak", "tshark", "curl", "ss",
    "flock", "python3",
];

/// Longest a script may take before it is stopped. Each bounds itself well
/// below this (the longest, trunk, takes about 30-40 s), plus at most 240 s
/// waiting for the cross-process lock when another `cargo test` runs them.
const SCRIPT_LIMIT: Duration = Duration::from_secs(400);

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("e2e")
}

fn on_path(tool: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .any(|d| d.join(tool).is_file())
}

fn require_tools() {
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !on_path(t)).collect();
    assert!(
        missing.is_empty(),
        "the end-to-end tests need the SIP lab tools, missing: {}.\n\
         Install them with `scripts/setup.sh` (or `.ci/run`) \
         (Debian: sip-tester kamailio sipvicious sipsak tshark curl iproute2 python3).",
        missing.join(", ")
    );
}

fn read_all(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `tests/e2e/<script>`; panics with its output unless it exits 0.
fn run_script(script: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_tools();
    let path = e2e_dir().join(script);
    assert!(path.is_file(), "missing {}", path.display());

    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(&path)
        .current_dir(e2e_dir())
        .env("SIPWARDEN_BIN", env!("CARGO_BIN_EXE_sipwarden"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", path.display()));
    let out = read_all(child.stdout.take().expect("piped stdout"));
    let err = read_all(child.stderr.take().expect("piped stderr"));

    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > SCRIPT_LIMIT && !timed_out => {
                // SIGTERM first: the script's trap stops what it started.
                timed_out = true;
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
            Ok(None) if timed_out && started.elapsed() > SCRIPT_LIMIT + Duration::from_secs(15) => {
                let _ = child.kill();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("waiting for {script}: {e}"),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let secs = started.elapsed().as_secs_f64();

    if status.success() && !timed_out {
        println!("{stdout}");
        if !stderr.trim().is_empty() {
            println!("--- stderr ---\n{stderr}");
        }
        println!("{script}: passed in {secs:.1} s");
        return;
    }
    panic!(
        "{script} failed ({}, after {secs:.1} s)\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        if timed_out {
            format!("stopped after {} s", SCRIPT_LIMIT.as_secs())
        } else {
            format!("{status}")
        }
    );
}

/// The helpers of `lib.sh` (no SIP): a metric lookup of a known sample gives
/// its value; a misspelt name or label, an absent sample or a failed scrape
/// fails loudly and fails the script, instead of reading 0.
#[test]
fn e2e_selftest() {
    run_script("selftest.sh");
}

/// `sipwarden check`: exit 0 for config/sipwarden.toml, 1 with
/// "line N: key `x.y`" for broken files; `kamailio -c` on the stand-in's cfg.
#[test]
fn e2e_check() {
    run_script("check.sh");
}

/// A SIPp phone registers over UDP through sipwarden (200), and a second
/// SIPp phone calls it: sipwarden -> kamailio -> sipwarden -> phone, with
/// ACK and BYE along the Record-Route set.
#[test]
fn e2e_call_udp() {
    run_script("call_udp.sh");
}

/// Kamailio (the Asterisk stand-in) stops and starts again behind a
/// running sipwarden, whose forwards leave from a socket connected to it:
/// the first REGISTER after the restart (no retransmissions) gets its 200,
/// a call through the restarted backend completes, no send error, no
/// receive warning.
#[test]
fn e2e_backend_restart() {
    run_script("backend_restart.sh");
}

/// The same with the phones on TCP (`-t t1`); the kamailio leg stays UDP.
#[test]
fn e2e_call_tcp() {
    run_script("call_tcp.sh");
}

/// Requests by IP (and a scanner User-Agent with a valid domain) get no
/// answer and never reach the backend (tshark capture of the public and
/// backend ports, Kamailio's `core:rcv_requests`, metrics), while a control
/// request with the domain does, through the same checks.
#[test]
fn e2e_scanner() {
    run_script("scanner.sh");
}

/// svmap and svwar against the public port find nothing, and nothing of
/// theirs reaches the backend (capture, Kamailio's `core:rcv_requests`); a
/// forwarded control OPTIONS shows both checks see what does.
#[test]
fn e2e_sipvicious() {
    run_script("sipvicious.sh");
}

/// SIGHUP under a 200-call load: unchanged file, an added domain (admitted
/// afterwards), a broken file (refused, logged, old config stays); no call
/// failed and no message was lost.
#[test]
fn e2e_reload() {
    run_script("reload.sh");
}

/// Trunk registrations: a SIPp "Asterisk" registers through the
/// internal socket to a SIPp registrar on 127.0.0.3 (401, then 200); the
/// provider's INVITEs to the registered Contact (`sw=` token) and to a DID
/// reach the backend with `X-Sipwarden-Trunk` and the Request-URI rewritten
/// back; the scanner's copies (127.0.0.4) get nothing; after Expires: 0, and
/// after a granted 4 s expiry + 1 s grace, the provider is no longer
/// admitted. UDP and TCP provider; CRLF keepalives to the registrar.
#[test]
fn e2e_trunk() {
    run_script("trunk.sh");
}

/// The control socket and its CLI: with a trunk registered through the
/// internal socket and a SIPp scanner banned, `sipwarden status`, `bans`,
/// `trunks`, `sources` (tables and `--json`) show them; `unban` frees the
/// scanner (its OPTIONS with the domain is answered by Kamailio), a manual
/// ban drops it again; the requests are counted, the socket is 0600 and
/// removed at exit.
#[test]
fn e2e_control() {
    run_script("control.sh");
}

/// `sipwarden top` in tmux at 80x24: with a trunk registered and a SIPp
/// scanner sending, the screen has every heading, the trunk and the
/// scanner's row; the arrows, `b` and `y` ban it (`sipwarden bans --json`
/// agrees), Tab and `u` unban it; with sipwarden stopped it says so and
/// stays up; `q` exits 0 with the terminal restored. Needs tmux.
#[test]
fn e2e_top() {
    run_script("top.sh");
}

/// The state file: after a trunk registration and with a call up,
/// SIGKILL and restart: "state restored", the provider's DID and Contact
/// INVITEs are admitted and the call's Route-less BYE passes; a state file
/// under another secret key, and a corrupt one, are reported and ignored.
#[test]
fn e2e_restart() {
    run_script("restart.sh");
}

/// Phones behind NAT: a phone whose Contact names 127.0.0.99
/// registers from 127.0.0.2 through sipwarden to Kamailio (Path stored) and
/// answers a call from the backend side on the flow it registered from,
/// over UDP and over the same TCP connection; and with `nat.fix_contact`.
#[test]
fn e2e_nat() {
    run_script("nat.sh");
}

/// The dialog table: Route-less ACK, re-INVITE and BYE without the
/// secret domain pass while the dialog lives (and its linger); a scanner's
/// BYE with an unknown Call-ID or wrong tags, and the BYE after the linger,
/// do not.
#[test]
fn e2e_dialog() {
    run_script("dialog.sh");
}

/// Defence: svcrack is banned after `ban.after_auth_failures`
/// while a SIPp phone keeps registering and calling; svmap and svwar are
/// dropped by User-Agent; a 2000-OPTIONS flood is rate-limited while another
/// source's calls succeed; monitor mode counts would-drop and drops nothing;
/// the metrics of every part, and a figures table.
#[test]
fn e2e_defence() {
    run_script("defence.sh");
}

/// An office behind one NAT address, with the default limits and
/// ban settings: 100 SIPp phones on one address boot at once (401, then
/// credentials, 200) and register again at once: all register, no ban,
/// nothing rate-limited; a scanner on another address is still banned.
#[test]
fn e2e_office() {
    run_script("office.sh");
}

/// SIP over TLS in front of Kamailio with auth: `openssl s_client` sees
/// the certificate only with the secret name (0 bytes by IP or with another
/// name, counted `tls-sni`); a Python `ssl` phone registers with digest auth
/// and a UDP caller's INVITE reaches it down its TLS connection by the Path.
#[test]
fn e2e_tls() {
    run_script("tls.sh");
}

/// SIP over WebSocket, the refusals: a Python `websockets` client's
/// upgrades with the wrong Origin (403), subprotocol (400), path (404), a
/// plain GET (426) and `wss:` without a server name (closed) never reach
/// Kamailio; a scanner over WebSocket is dropped `no-domain` like over TCP,
/// and the refusals ban the source.
#[test]
fn e2e_ws() {
    run_script("ws.sh");
}

/// A real browser: JsSIP in Debian's Chromium (playwright-core) registers
/// over `wss:` with digest auth to Kamailio, calls a SIPp UAS and is called
/// by SIPp through Kamailio and the Path (INVITE, 200, ACK, BYE both ways).
#[test]
fn e2e_browser() {
    run_script("browser.sh");
}

/// `scripts/try-it.sh`, the README's one-minute demo: with
/// this build and the e2e ports it exits 0 well within a minute and shows
/// the phone forwarded, svmap and a request by IP dropped, the counters,
/// and leaves nothing running.
#[test]
fn e2e_try_it() {
    run_script("try_it.sh");
}

/// A trunk provider reached over TLS (Kamailio's tls module): an
/// untrusted certificate is never talked to; with its CA in `tls.ca_file`
/// Asterisk registers over TLS (no SNI to an IP address), and the
/// provider's INVITEs come back down the connection sipwarden opened,
/// admitted as `trunk-contact` and `trunk`.
#[test]
fn e2e_tls_trunk() {
    run_script("tls_trunk.sh");
}

/// A cluster of sipwarden nodes sharing bans and trunk registrations
/// through a redis-server the script starts on its own port: failover
/// after a SIGKILL (the provider's DID INVITE through the other node is
/// admitted as `trunk`), a node started later admits before any REGISTER,
/// garbage in the keys and on the channel is rejected and counted, a ban
/// on one node drops on the other and an unban there frees it, and with
/// Redis killed the nodes go on and catch up when it returns empty.
#[test]
fn e2e_cluster() {
    assert!(
        on_path("redis-server") && on_path("redis-cli"),
        "e2e_cluster needs redis-server and redis-cli: `scripts/setup.sh` \
         (Debian: redis-server)"
    );
    run_script("cluster.sh");
}
