//! The tools against each other on loopback: swload -> rawrelay -> swsink,
//! the mix scenario's calls answered by swsink, and TCP framing both ways.
//! Each process runs for at most a few seconds; no timing is asserted.

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use serde_json::Value;

/// A port free for both UDP and TCP on 127.0.0.1 (racy, good enough for a test).
fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn spawn(bin: &str, args: &[String]) -> Child {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// SIGTERM, then the JSON the tool printed on its way out.
fn stop(child: Child) -> Value {
    // SAFETY: kill(2) takes no pointers; the pid is our own child's, not
    // yet waited for, so it cannot have been reused by another process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn swload(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_swload"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Both ways of sending, one after the other (two tests side by side
/// would double the chance that `free_port` hands out a port twice).
#[test]
fn forward_through_the_raw_relay() {
    relay_forwards_everything(false);
    relay_forwards_everything(true);
}

fn relay_forwards_everything(connected: bool) {
    let (relay_port, sink_port) = (free_port(), free_port());
    let sink_addr = format!("127.0.0.1:{sink_port}");
    let relay_addr = format!("127.0.0.1:{relay_port}");
    let sink = spawn(
        env!("CARGO_BIN_EXE_swsink"),
        &s(&["--listen", &sink_addr, "--duration", "20", "--no-tcp"]),
    );
    let mut args = s(&[
        "--listen",
        &relay_addr,
        "--backend",
        &sink_addr,
        "--mode",
        "relay",
        "--io",
        "mmsg",
        "--duration",
        "20",
    ]);
    if connected {
        args.push("--connected".into());
    }
    let relay = spawn(env!("CARGO_BIN_EXE_rawrelay"), &args);
    sleep(Duration::from_millis(300));
    let load = swload(&[
        "--scenario",
        "forward",
        "--target",
        &relay_addr,
        "--rate",
        "2000",
        "--duration",
        "0.5",
        "--src-addrs",
        "2",
        "--src-ports",
        "2",
    ]);
    sleep(Duration::from_millis(200));
    let r = stop(relay);
    let k = stop(sink);
    let sent = load["sent"].as_u64().unwrap();
    assert!(sent >= 900, "{load}");
    assert_eq!(r["received"].as_u64(), Some(sent), "{r}");
    assert_eq!(r["forwarded"].as_u64(), Some(sent), "{r}");
    assert_eq!(r["connected"].as_bool(), Some(connected), "{r}");
    assert_eq!(k["received"].as_u64(), Some(sent), "{k}");
    assert_eq!(k["requests"]["INVITE"].as_u64(), Some(sent));
    assert_eq!(k["latency_us"]["count"].as_u64(), Some(sent));
    assert_eq!(k["bad_ts"].as_u64(), Some(0));
}

#[test]
fn mix_calls_complete_against_an_answering_sink() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let sink = spawn(
        env!("CARGO_BIN_EXE_swsink"),
        &s(&["--listen", &addr, "--answer", "--duration", "20"]),
    );
    sleep(Duration::from_millis(300));
    // Straight at the sink: no proxy, so no Record-Route; ACK/BYE go to its Contact.
    let load = swload(&[
        "--scenario",
        "mix",
        "--target",
        &addr,
        "--rate",
        "2000",
        "--duration",
        "0.5",
        "--legit-every",
        "10",
    ]);
    let ex = &load["exchanges"];
    assert!(ex["started"].as_u64().unwrap() >= 90, "{load}");
    assert_eq!(ex["completed"], ex["started"], "{load}");
    assert_eq!(load["exchange_success"].as_f64(), Some(1.0));
    assert!(load["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    // TCP: the sink answers every INVITE on the same connection.
    let tcp = swload(&[
        "--scenario",
        "tcp",
        "--target",
        &addr,
        "--rate",
        "2000",
        "--duration",
        "0.5",
        "--connections",
        "3",
    ]);
    let k = stop(sink);
    let sent = tcp["sent"].as_u64().unwrap();
    assert!(sent >= 900, "{tcp}");
    assert_eq!(tcp["received"].as_u64(), Some(sent), "{tcp}");
    assert_eq!(k["tcp"].as_u64(), Some(sent), "{k}");
    assert_eq!(k["tcp_connections"].as_u64(), Some(3));
    let calls = ex["started"].as_u64().unwrap();
    assert_eq!(k["requests"]["ACK"].as_u64(), Some(calls));
    assert_eq!(k["requests"]["BYE"].as_u64(), Some(calls));
}

#[test]
fn refuses_targets_off_loopback() {
    let out = Command::new(env!("CARGO_BIN_EXE_swload"))
        .args([
            "--scenario",
            "flood",
            "--target",
            "192.0.2.1:5060",
            "--duration",
            "0.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
    let out = Command::new(env!("CARGO_BIN_EXE_rawrelay"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "192.0.2.1:5080",
            "--duration",
            "0.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
