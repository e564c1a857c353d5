//! swtls: TLS load generator of the sipwarden benchmark (bench/tls.sh).
//!
//! Four modes against a SIP-over-TLS listener on loopback, each bounded in
//! time, printing a JSON report on stdout:
//! - `handshake`: full handshakes (no resumption) by N client threads;
//! - `reject`: ClientHellos with a wrong server name and with none, counting
//!   closes without a byte from the server (SNI gate) apart from handshakes;
//! - `connect`: TCP connections that send nothing (the floor under `reject`);
//! - `idle`: opens N connections and holds them until SIGTERM or `--duration`;
//! - `forward`: INVITEs to the secret domain with `X-Bench-Ts` over M
//!   established connections (or plain TCP), so swsink measures latency.
//!
//! Blocking sockets and one thread per client: the system under test's CPU
//! is what is measured (from /proc by the script), not this tool's.

mod args;
mod client;
mod forward;

use std::collections::BTreeMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};
use swbench::hist::Histogram;
use swbench::{clock, signal};

use args::{Args, Mode};
use client::{Established, Outcome};

/// Counts of outcomes, by report key.
type Counts = BTreeMap<&'static str, u64>;

fn empty_counts() -> Counts {
    Outcome::ALL.iter().map(|o| (o.key(), 0)).collect()
}

/// Raises RLIMIT_NOFILE to its hard limit (10,000 idle connections need it).
fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit; getrlimit/setrlimit take no other pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    r.rlim_cur
}

/// What the first completed handshake negotiated (protocol, suite, group).
fn negotiated(e: &Established) -> Value {
    json!({
        "protocol": e.tls.protocol_version().map(|v| format!("{v:?}")),
        "cipher_suite": e.tls.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())),
        "kx_group": e.tls.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name())),
    })
}

/// Ends a completed connection cleanly: close_notify, our FIN, and the
/// server's close awaited (bounded by the socket timeout), so the server has
/// read our Finished and done all its work before the RST of SO_LINGER 0.
fn close_politely(mut e: Established) {
    e.tls.send_close_notify();
    let _ = client::flush(&mut e);
    let _ = e.sock.shutdown(Shutdown::Write);
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match std::io::Read::read(&mut e.sock, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// handshake and reject: connections as fast as `--concurrency` clients make them.
fn run_connections(args: &Args) -> Result<Value, String> {
    let cfg = client::config()?;
    let names = Arc::new(args.server_names());
    let next = Arc::new(AtomicU64::new(0));
    let start = clock::mono_ns();
    let deadline = start + args.duration_ns();
    let dial = client::Dial {
        timeout: Duration::from_secs_f64(args.timeout),
        abort_on_close: true,
        sndbuf: 0,
    };
    let first = Arc::new(Mutex::new(Value::Null));
    let mode = args.mode;
    let mut threads = Vec::new();
    for _ in 0..args.concurrency {
        let (cfg, names, next, first) = (cfg.clone(), names.clone(), next.clone(), first.clone());
        let (target, base, nsrc) = (args.target, args.src_base, args.src_addrs);
        threads.push(std::thread::spawn(move || {
            let mut counts = empty_counts();
            let mut by_name: BTreeMap<String, Counts> = BTreeMap::new();
            let (mut hs_hist, mut attempt_hist) = (Histogram::new(), Histogram::new());
            while clock::mono_ns() < deadline && !signal::stopped() {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let t0 = clock::mono_ns();
                let sni = names.get(i % names.len().max(1)).cloned().flatten();
                let label = sni.clone().unwrap_or_else(|| "(none)".into());
                let outcome = match (
                    client::server_name(sni.as_deref(), target),
                    args::source(base, i % nsrc),
                ) {
                    (Ok(_), Ok(src)) if mode == Mode::Connect => bare_connection(src, target, dial),
                    (Ok(name), Ok(src)) => match client::handshake(&cfg, name, src, target, dial) {
                        Ok(e) => {
                            hs_hist.record(clock::mono_ns() - t0);
                            if let Ok(mut f) = first.lock() {
                                if f.is_null() {
                                    *f = negotiated(&e);
                                }
                            }
                            close_politely(e);
                            Outcome::Completed
                        }
                        Err(o) => o,
                    },
                    _ => Outcome::ConnectFailed,
                };
                attempt_hist.record(clock::mono_ns() - t0);
                *counts.entry(outcome.key()).or_default() += 1;
                *by_name
                    .entry(label)
                    .or_insert_with(empty_counts)
                    .entry(outcome.key())
                    .or_default() += 1;
                if outcome == Outcome::ConnectFailed {
                    // Refused: the listener is gone or full; do not spin.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            (counts, by_name, hs_hist, attempt_hist)
        }));
    }
    let mut total = empty_counts();
    let mut by_name: BTreeMap<String, Counts> = BTreeMap::new();
    let (mut hs_hist, mut attempt_hist) = (Histogram::new(), Histogram::new());
    for t in threads {
        let (c, n, h, a) = t
            .join()
            .map_err(|_| "a client thread panicked".to_string())?;
        hs_hist.merge(&h);
        attempt_hist.merge(&a);
        for (k, v) in c {
            *total.entry(k).or_default() += v;
        }
        for (name, c) in n {
            let e = by_name.entry(name).or_insert_with(empty_counts);
            for (k, v) in c {
                *e.entry(k).or_default() += v;
            }
        }
    }
    let secs = (clock::mono_ns() - start) as f64 / 1e9;
    let attempts: u64 = total.values().sum();
    let negotiated = first.lock().map(|f| f.clone()).unwrap_or(Value::Null);
    Ok(json!({
        "attempts": attempts,
        "outcomes": total,
        "by_server_name": by_name,
        "completed_per_s": total.get("completed").copied().unwrap_or(0) as f64 / secs.max(1e-9),
        "attempts_per_s": attempts as f64 / secs.max(1e-9),
        "duration_s": secs,
        "negotiated": negotiated,
        "handshake_us": hs_hist.summary_us(),
        "attempt_us": attempt_hist.summary_us(),
    }))
}

/// connect mode: a TCP connection, our FIN at once, the server's close awaited.
fn bare_connection(
    src: std::net::IpAddr,
    target: std::net::SocketAddr,
    dial: client::Dial,
) -> Outcome {
    match client::tcp(src, target, dial) {
        Ok(sock) => {
            client::start_close(&sock, None);
            // Blocking with the read timeout: false means it timed out.
            if client::server_closed(&sock) {
                Outcome::ClosedSilently
            } else {
                Outcome::TimedOut
            }
        }
        Err(_) => Outcome::ConnectFailed,
    }
}

/// idle: opens `--connections` TLS connections, reports readiness, holds them.
fn run_idle(args: &Args) -> Result<Value, String> {
    let fd_limit = raise_fd_limit();
    let cfg = client::config()?;
    let names = Arc::new(args.server_names());
    let dial = client::Dial {
        timeout: Duration::from_secs_f64(args.timeout),
        abort_on_close: true,
        sndbuf: 0,
    };
    let start = clock::mono_ns();
    let deadline = start + args.duration_ns();
    let next = Arc::new(AtomicU64::new(0));
    let total = args.connections as u64;
    let mut threads = Vec::new();
    for _ in 0..args.concurrency {
        let (cfg, names, next) = (cfg.clone(), names.clone(), next.clone());
        let (target, base, nsrc, plain) = (args.target, args.src_base, args.src_addrs, args.plain);
        threads.push(std::thread::spawn(move || {
            let mut held = Vec::new();
            let mut held_plain = Vec::new();
            let mut counts = empty_counts();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || signal::stopped() || clock::mono_ns() >= deadline {
                    break;
                }
                if plain {
                    let r = args::source(base, i as usize % nsrc)
                        .ok()
                        .and_then(|src| client::tcp(src, target, dial).ok())
                        .filter(|s| s.set_nonblocking(true).is_ok());
                    match r {
                        Some(s) => {
                            *counts.entry(Outcome::Completed.key()).or_default() += 1;
                            held_plain.push(s);
                        }
                        None => *counts.entry(Outcome::ConnectFailed.key()).or_default() += 1,
                    }
                    continue;
                }
                let sni = names
                    .get(i as usize % names.len().max(1))
                    .cloned()
                    .flatten();
                let r = match (
                    client::server_name(sni.as_deref(), target),
                    args::source(base, i as usize % nsrc),
                ) {
                    (Ok(name), Ok(src)) => client::handshake(&cfg, name, src, target, dial),
                    _ => Err(Outcome::ConnectFailed),
                };
                match r {
                    Ok(e) => {
                        *counts.entry(Outcome::Completed.key()).or_default() += 1;
                        if e.sock.set_nonblocking(true).is_ok() {
                            held.push(e);
                        }
                    }
                    Err(o) => *counts.entry(o.key()).or_default() += 1,
                }
            }
            (held, held_plain, counts)
        }));
    }
    let mut held: Vec<Established> = Vec::new();
    let mut held_plain: Vec<std::net::TcpStream> = Vec::new();
    let mut counts = empty_counts();
    for t in threads {
        let (h, p, c) = t
            .join()
            .map_err(|_| "a client thread panicked".to_string())?;
        held.extend(h);
        held_plain.extend(p);
        for (k, v) in c {
            *counts.entry(k).or_default() += v;
        }
    }
    let open_s = (clock::mono_ns() - start) as f64 / 1e9;
    let opened = held.len() + held_plain.len();
    let ready = json!({"opened": opened, "outcomes": counts, "open_s": open_s});
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{ready}\n")).map_err(|e| format!("{path}: {e}"))?;
    }
    eprintln!("swtls: {opened} connections up after {open_s:.1} s, holding");
    while !signal::stopped() && clock::mono_ns() < deadline {
        clock::sleep_until((clock::mono_ns() + 100_000_000).min(deadline));
    }
    let still_up = held
        .iter_mut()
        .map(client::drain)
        .filter(|r| matches!(r, Ok(true)))
        .count()
        + held_plain
            .iter()
            .filter(|s| !client::server_closed(s))
            .count();
    // A clean close of every connection (bounded): no burst of resets for
    // the server to log while the next measurement starts.
    let close_start = clock::mono_ns();
    let mut socks: Vec<_> = held
        .iter_mut()
        .map(|e| (&e.sock, Some(&mut e.tls)))
        .chain(held_plain.iter().map(|s| (s, None)))
        .collect();
    let closed_by_server = client::close_all(&mut socks, close_start + 10_000_000_000);
    Ok(json!({
        "connections_asked": args.connections,
        "opened": ready["opened"],
        "outcomes": counts,
        "open_s": open_s,
        "still_up_at_end": still_up,
        "closed_by_server": closed_by_server,
        "close_s": (clock::mono_ns() - close_start) as f64 / 1e9,
        "held_s": (close_start - start) as f64 / 1e9 - open_s,
        "fd_limit": fd_limit,
    }))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("swtls: {e}");
        std::process::exit(2);
    }
    signal::install();
    clock::minimise_timer_slack();
    let result = match args.mode {
        Mode::Handshake | Mode::Reject | Mode::Connect => run_connections(&args),
        Mode::Idle => run_idle(&args),
        Mode::Forward => forward::run(&args),
    };
    match result {
        Ok(mut r) => {
            r["mode"] = json!(format!("{:?}", args.mode).to_lowercase());
            r["target"] = json!(args.target.to_string());
            println!("{r}");
        }
        Err(e) => {
            eprintln!("swtls: {e}");
            std::process::exit(1);
        }
    }
}
