//! swsink: the backend of the sipwarden benchmark (Asterisk's place).
//!
//! Counts every message that reaches it over UDP and TCP and computes the
//! one-way latency from `X-Bench-Ts`; with `--answer` it acts as a UAS that
//! accepts every call (see `answer.rs`). It reports JSON on SIGINT/SIGTERM
//! or when `--duration` runs out, so the benchmark script decides when a
//! measurement window ends.

mod answer;
mod stats;
mod tcp;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use clap::Parser;
use serde_json::json;
use swbench::mmsg::Batch;
use swbench::net::{self, Buffers};
use swbench::{clock, procfs, signal, sip};

use answer::{answer, Answer};
use stats::Stats;

/// Counting (and optionally answering) SIP sink on loopback.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// UDP and TCP address to serve (loopback only).
    #[arg(long, default_value = "127.0.0.1:5080")]
    listen: SocketAddr,
    /// Answer like a PBX: 200 to INVITE/BYE/OPTIONS (and anything else but ACK).
    #[arg(long)]
    answer: bool,
    /// Serve UDP only.
    #[arg(long)]
    no_tcp: bool,
    /// Stop by itself after this many seconds (at most 3600).
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// SO_RCVBUF request in bytes (the benchmark gives every receiver the same).
    #[arg(long, default_value_t = 4_194_304)]
    rcvbuf: usize,
    /// Datagrams per recvmmsg.
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

/// Receives what is queued on the UDP socket (bounded rounds), counts and answers it.
fn udp_round(
    sock: &UdpSocket,
    local: &SocketAddr,
    rx: &mut Batch,
    tx: &mut Batch,
    stats: &mut Stats,
    answering: bool,
) {
    let fd = sock.as_fd();
    for _ in 0..64 {
        let n = match rx.recv(fd, libc::MSG_DONTWAIT) {
            Ok(n) if n > 0 => n,
            _ => return,
        };
        let now = clock::mono_ns();
        let mut k = 0;
        for i in 0..n {
            let msg = rx.data(i);
            stats.udp += 1;
            if rx.truncated(i) {
                stats.truncated += 1;
            }
            stats.record(msg, now);
            if !answering {
                continue;
            }
            match answer(msg, local, false) {
                Answer::Reply(resp) => {
                    let dest = sip::top_via(msg).and_then(|v| v.response_addr());
                    match dest {
                        Some(d) if net::is_loopback(&d) && tx.fill(k, &resp) => {
                            tx.set_addr(k, &d);
                            k += 1;
                        }
                        _ => stats.refused_dest += 1,
                    }
                }
                Answer::Absorb => {}
                Answer::Unanswerable => stats.unanswerable += 1,
            }
        }
        if k > 0 {
            let (ok, failed) = tx.send_all(fd, k, true);
            stats.answered += ok as u64;
            stats.send_errors += failed as u64;
        }
    }
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    net::ensure_loopback(&args.listen)?;
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err("--duration must be within (0, 3600] s".into());
    }
    let bufs = Buffers {
        rcv: args.rcvbuf,
        snd: args.rcvbuf,
    };
    let udp = net::udp_socket(args.listen, None, bufs)
        .map_err(|e| format!("binding UDP {}: {e}", args.listen))?;
    let mut tcp = if args.no_tcp {
        None
    } else {
        let l = net::tcp_listen(args.listen)
            .map_err(|e| format!("binding TCP {}: {e}", args.listen))?;
        Some(tcp::TcpServer::new(l, args.listen).map_err(|e| e.to_string())?)
    };
    let batch = args.batch.clamp(1, 1024);
    let mut rx = Batch::new(batch, 65_536);
    let mut tx = Batch::new(batch, 65_536);
    let mut stats = Stats::default();
    let deadline = clock::mono_ns() + (args.duration * 1e9) as u64;
    let poll_ts = clock::timespec_from_ns(50_000_000);
    while !signal::stopped() && clock::mono_ns() < deadline {
        let mut fds = vec![libc::pollfd {
            fd: udp.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(t) = &tcp {
            fds.extend(t.pollfds());
        }
        // SAFETY: `fds` is a live pollfd array of the given length; `poll_ts` is valid.
        let r = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &poll_ts,
                std::ptr::null(),
            )
        };
        if r <= 0 {
            continue;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            udp_round(
                &udp,
                &args.listen,
                &mut rx,
                &mut tx,
                &mut stats,
                args.answer,
            );
        }
        if let Some(t) = tcp.as_mut() {
            t.service(&fds[1..], &mut stats, args.answer);
        }
    }
    // Whatever is still queued counts too.
    udp_round(
        &udp,
        &args.listen,
        &mut rx,
        &mut tx,
        &mut stats,
        args.answer,
    );
    let drops = match args.listen.ip() {
        IpAddr::V4(ip) => procfs::udp_drops(ip, args.listen.port()).1,
        IpAddr::V6(_) => 0,
    };
    Ok(stats.report(json!({
        "listen": args.listen.to_string(),
        "answer_mode": args.answer,
        "kernel_drops": drops,
        "rcvbuf_granted": net::granted_rcvbuf(&udp),
    })))
}

fn main() {
    let args = Args::parse();
    signal::install();
    match run(&args) {
        Ok(r) => println!("{r}"),
        Err(e) => {
            eprintln!("swsink: {e}");
            std::process::exit(1);
        }
    }
}
