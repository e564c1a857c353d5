//! rawrelay: the physical limit of the benchmark.
//!
//! Receives UDP and either discards it (`--mode drop`) or sends every
//! datagram, unparsed, to one fixed backend (`--mode relay`). No SIP work
//! at all, so its CPU per message is what the kernel charges to move a
//! datagram through a process; any proxy's number is that plus its own
//! work. `--io simple` uses one recvfrom/sendto per datagram, `--io mmsg`
//! batches with recvmmsg/sendmmsg. Relayed datagrams leave from the
//! listening socket, as a proxy's would, or with `--connected` from a
//! second socket connected to the backend (no route lookup per datagram,
//! which is what sipwarden does for its backend).

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde_json::json;
use swbench::mmsg::Batch;
use swbench::net::{self, Buffers};
use swbench::{clock, signal};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Receive and discard.
    Drop,
    /// Forward each datagram to --backend.
    Relay,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Io {
    /// recvfrom/sendto, one datagram per syscall.
    Simple,
    /// recvmmsg/sendmmsg batches.
    Mmsg,
}

/// No-parsing UDP drop sink / relay (loopback only).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to receive on (loopback only).
    #[arg(long, default_value = "127.0.0.1:5060")]
    listen: SocketAddr,
    /// drop or relay.
    #[arg(long, value_enum, default_value = "relay")]
    mode: Mode,
    /// simple (recvfrom/sendto) or mmsg (recvmmsg/sendmmsg).
    #[arg(long, value_enum, default_value = "mmsg")]
    io: Io,
    /// Where relay mode sends (loopback only).
    #[arg(long, default_value = "127.0.0.1:5080")]
    backend: SocketAddr,
    /// SO_RCVBUF request in bytes (same as every other system under test).
    #[arg(long, default_value_t = 4_194_304)]
    rcvbuf: usize,
    /// mmsg relay: send from a socket connected to --backend (no address
    /// per datagram) instead of from the listening socket.
    #[arg(long)]
    connected: bool,
    /// Datagrams per recvmmsg/sendmmsg.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Stop by itself after this many seconds (at most 3600).
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
}

#[derive(Default)]
struct Counts {
    received: u64,
    forwarded: u64,
    send_errors: u64,
    truncated: u64,
}

fn run_simple(sock: &UdpSocket, args: &Args, deadline: u64, c: &mut Counts) {
    let mut buf = vec![0u8; 65_536];
    while !signal::stopped() && clock::mono_ns() < deadline {
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => continue,
        };
        c.received += 1;
        if args.mode == Mode::Relay {
            match sock.send_to(&buf[..n], args.backend) {
                Ok(_) => c.forwarded += 1,
                Err(_) => c.send_errors += 1,
            }
        }
    }
}

fn run_mmsg(sock: &UdpSocket, out: Option<&UdpSocket>, args: &Args, deadline: u64, c: &mut Counts) {
    let mut batch = Batch::new(args.batch.clamp(1, 1024), 65_536);
    let fd = sock.as_fd();
    while !signal::stopped() && clock::mono_ns() < deadline {
        // Blocks for the first datagram (up to SO_RCVTIMEO), then takes what is queued.
        let n = match batch.recv(fd, libc::MSG_WAITFORONE) {
            Ok(n) => n,
            Err(_) => continue,
        };
        c.received += n as u64;
        for i in 0..n {
            if batch.truncated(i) {
                c.truncated += 1;
            }
        }
        if args.mode == Mode::Relay && n > 0 {
            let (ok, failed) = match out {
                Some(o) => batch.send_all(o.as_fd(), n, false),
                None => {
                    for i in 0..n {
                        batch.set_addr(i, &args.backend);
                    }
                    batch.send_all(fd, n, true)
                }
            };
            c.forwarded += ok as u64;
            c.send_errors += failed as u64;
        }
    }
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    net::ensure_loopback(&args.listen)?;
    net::ensure_loopback(&args.backend)?;
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err("--duration must be within (0, 3600] s".into());
    }
    let bufs = Buffers {
        rcv: args.rcvbuf,
        snd: args.rcvbuf,
    };
    let sock = net::udp_socket(args.listen, None, bufs)
        .map_err(|e| format!("binding {}: {e}", args.listen))?;
    // A receive timeout lets the loop notice the deadline when no traffic comes.
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let out = match (args.connected, args.io) {
        (false, _) => None,
        (true, Io::Mmsg) => Some(
            net::udp_socket(
                SocketAddr::new(args.listen.ip(), 0),
                Some(args.backend),
                bufs,
            )
            .map_err(|e| format!("connecting to {}: {e}", args.backend))?,
        ),
        (true, Io::Simple) => return Err("--connected needs --io mmsg".into()),
    };
    let start = clock::mono_ns();
    let deadline = start + (args.duration * 1e9) as u64;
    let mut c = Counts::default();
    match args.io {
        Io::Simple => run_simple(&sock, args, deadline, &mut c),
        Io::Mmsg => run_mmsg(&sock, out.as_ref(), args, deadline, &mut c),
    }
    Ok(json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "io": format!("{:?}", args.io).to_lowercase(),
        "connected": args.connected,
        "received": c.received,
        "forwarded": c.forwarded,
        "send_errors": c.send_errors,
        "truncated": c.truncated,
        "rcvbuf_granted": net::granted_rcvbuf(&sock),
        "uptime_s": (clock::mono_ns() - start) as f64 / 1e9,
    }))
}

fn main() {
    let args = Args::parse();
    signal::install();
    match run(&args) {
        Ok(r) => println!("{r}"),
        Err(e) => {
            eprintln!("rawrelay: {e}");
            std::process::exit(1);
        }
    }
}
