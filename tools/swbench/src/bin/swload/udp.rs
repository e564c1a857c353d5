//! UDP scenarios: flood, forward and mix.
//!
//! Each source socket (address x port) is connected to the target and has
//! its own batch of pre-rendered messages; a send patches the sequence
//! numbers and the timestamp and hands the whole batch to one `sendmmsg`.
//! Sockets take turns, so the system under test sees many sources.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;

use serde_json::json;
use swbench::clock;
use swbench::mmsg::Batch;
use swbench::net::{self, Buffers};
use swbench::pacer::Pacer;
use swbench::template::Template;

use crate::args::{Args, Scenario};
use crate::exchange::{self, Exchanges};
use swbench::messages::{self, Transport};

/// One source socket and its pre-filled batch.
struct Source {
    sock: UdpSocket,
    batch: Batch,
    /// Template of each batch slot (slot i uses `kinds[i % kinds.len()]`).
    kinds: Vec<Template>,
}

fn sources(args: &Args) -> Result<Vec<Source>, String> {
    let mut out = Vec::new();
    let bufs = Buffers {
        rcv: 0,
        snd: args.sndbuf,
    };
    for ip in net::source_addrs(args.src_addrs)? {
        for _ in 0..args.src_ports {
            let sock = net::udp_socket(SocketAddr::new(ip, 0), Some(args.target), bufs)
                .map_err(|e| format!("binding a source socket on {ip}: {e}"))?;
            sock.set_nonblocking(true).map_err(|e| e.to_string())?;
            let local = sock.local_addr().map_err(|e| e.to_string())?;
            let kinds = match args.scenario {
                Scenario::Forward => vec![messages::domain_invite(
                    &local,
                    &args.domain,
                    &args.user,
                    Transport::Udp,
                    "fw",
                )],
                _ => vec![
                    messages::scanner_options(&local, &args.target),
                    messages::scanner_invite(&local, &args.target),
                ],
            };
            let mut batch = Batch::new(args.batch, 2048);
            for i in 0..batch.slots() {
                batch.fill(i, kinds[i % kinds.len()].bytes());
            }
            out.push(Source { sock, batch, kinds });
        }
    }
    Ok(out)
}

fn phones(args: &Args) -> Result<Exchanges, String> {
    let mut socks = Vec::new();
    let mut invites = Vec::new();
    for ip in net::source_addrs(args.src_addrs)? {
        let sock = net::udp_socket(SocketAddr::new(ip, 0), None, Buffers::default())
            .map_err(|e| format!("binding a phone socket on {ip}: {e}"))?;
        let local = sock.local_addr().map_err(|e| e.to_string())?;
        invites.push(messages::domain_invite(
            &local,
            &args.domain,
            &args.user,
            Transport::Udp,
            exchange::PREFIX,
        ));
        socks.push(sock);
    }
    Exchanges::new(
        socks,
        invites,
        args.target,
        args.exchange_timeout_ms * 1_000_000,
    )
    .map_err(|e| e.to_string())
}

/// Reads and counts whatever came back on the source sockets (nothing, normally).
fn drain(srcs: &mut [Source], rx: &mut Batch) -> u64 {
    let mut got = 0;
    for s in srcs.iter_mut() {
        for _ in 0..64 {
            match rx.recv(s.sock.as_fd(), libc::MSG_DONTWAIT) {
                Ok(n) if n > 0 => got += n as u64,
                _ => break,
            }
        }
    }
    got
}

/// Runs a UDP scenario and returns its report.
pub fn run(args: &Args) -> Result<serde_json::Value, String> {
    let mut srcs = sources(args)?;
    let mut phones = match args.scenario {
        Scenario::Mix => Some(phones(args)?),
        _ => None,
    };
    let mut rx = Batch::new(64, 65_536);
    let batch = if args.rate == 0 {
        args.batch
    } else {
        Pacer::batch_for(args.rate, 100, args.batch)
    };
    let start = clock::mono_ns();
    let deadline = start + args.duration_ns();
    let mut pacer = Pacer::new(args.rate, start, batch);
    let (mut seq, mut sent, mut errors, mut received) = (0u64, 0u64, 0u64, 0u64);
    let mut new_msgs = 0u64;
    let mut turn = 0usize;
    let mut rounds = 0u64;
    let mut last_sweep = start;
    loop {
        let now = clock::mono_ns();
        if now >= deadline || new_msgs >= args.max_count || swbench::signal::stopped() {
            break;
        }
        let due = pacer.due(now).min((args.max_count - new_msgs) as usize);
        if due == 0 {
            match phones.as_mut() {
                Some(p) => p.poll(pacer.next_due_ns().saturating_sub(now)),
                None => pacer.wait(),
            }
            continue;
        }
        let nsrc = srcs.len();
        let src = &mut srcs[turn % nsrc];
        turn += 1;
        let mut slots = 0;
        for _ in 0..due {
            new_msgs += 1;
            if let Some(p) = phones.as_mut() {
                if new_msgs.is_multiple_of(args.legit_every) {
                    p.start();
                    continue;
                }
            }
            seq += 1;
            let kind = &src.kinds[slots % src.kinds.len()];
            kind.patch(src.batch.buf_mut(slots), seq, now);
            slots += 1;
        }
        let (ok, failed) = src.batch.send_all(src.sock.as_fd(), slots, false);
        sent += ok as u64;
        errors += failed as u64;
        pacer.record(due);
        rounds += 1;
        if let Some(p) = phones.as_mut() {
            p.poll(0);
            if now - last_sweep > 50_000_000 {
                p.sweep(now);
                last_sweep = now;
            }
        } else if rounds.is_multiple_of(1024) {
            received += drain(&mut srcs, &mut rx);
        }
    }
    let send_end = clock::mono_ns();
    // Bounded tail: let calls in flight finish, then count stray answers.
    if let Some(p) = phones.as_mut() {
        let tail_end = send_end + args.exchange_timeout_ms * 1_000_000;
        while p.in_flight() > 0 && clock::mono_ns() < tail_end && !swbench::signal::stopped() {
            p.poll(5_000_000);
            p.sweep(clock::mono_ns());
        }
        p.finish();
    } else {
        clock::sleep_until(send_end + 100_000_000);
    }
    received += drain(&mut srcs, &mut rx);
    let secs = (send_end - start) as f64 / 1e9;
    let mut report = json!({
        "sources": srcs.len(),
        "scanner_sent": sent,
        "send_errors": errors,
        "received": received,
        "duration_s": secs,
    });
    let mut total_sent = sent;
    if let Some(p) = phones.as_ref() {
        let s = &p.stats;
        total_sent += s.sent;
        report["received"] = json!(received + s.responses);
        report["send_errors"] = json!(errors + s.send_errors);
        report["exchanges"] = json!({
            "started": s.started,
            "completed": s.completed,
            "failed_status": s.failed_status,
            "failed_dialog": s.failed_dialog,
            "timed_out": s.timed_out,
            "success_rate": if s.started == 0 { 0.0 } else { s.completed as f64 / s.started as f64 },
            "requests_sent": s.sent,
            "responses": s.responses,
            "provisional": s.provisional,
            "stray": s.stray,
            "setup_latency_us": s.setup.summary_us(),
            "latency_us": s.total.summary_us(),
        });
    }
    report["sent"] = json!(total_sent);
    report["msgs_per_s"] = json!(if secs > 0.0 {
        total_sent as f64 / secs
    } else {
        0.0
    });
    Ok(report)
}
