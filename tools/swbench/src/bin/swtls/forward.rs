//! forward: INVITEs to the secret domain over established connections.
//!
//! One thread per connection, each paced open-loop at its share of
//! `--rate` (as swload's TCP scenario): a batch of INVITEs is stamped
//! (`X-Bench-Ts` just before encryption), handed to rustls as one write (one
//! TLS record) and written out; a connection whose socket is full keeps its
//! unsent bytes and takes no new batch until they are out, so a slow server
//! back-pressures the generator instead of growing memory. `--plain` sends
//! the same over plain TCP, the reference that shows what TLS adds.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use serde_json::{json, Value};
use swbench::messages::{self, Transport};
use swbench::pacer::Pacer;
use swbench::template::Template;
use swbench::{clock, signal};

use crate::args::{self, Args};
use crate::client::{self, Established};

enum Link {
    Tls(Box<Established>),
    Plain {
        sock: TcpStream,
        out: Vec<u8>,
        written: usize,
    },
}

impl Link {
    fn sock(&self) -> &TcpStream {
        match self {
            Link::Tls(e) => &e.sock,
            Link::Plain { sock, .. } => sock,
        }
    }

    fn pending(&self) -> bool {
        match self {
            Link::Tls(e) => e.tls.wants_write(),
            Link::Plain { out, written, .. } => *written < out.len(),
        }
    }

    /// Takes a batch (only when nothing is pending).
    fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Tls(e) => e.tls.writer().write_all(bytes),
            Link::Plain { out, written, .. } => {
                out.clear();
                out.extend_from_slice(bytes);
                *written = 0;
                Ok(())
            }
        }
    }

    /// Writes what it can without blocking.
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Link::Tls(e) => {
                while e.tls.wants_write() {
                    match e.tls.write_tls(&mut e.sock) {
                        Ok(_) => {}
                        Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(()),
                        Err(err) if err.kind() == ErrorKind::Interrupted => {}
                        Err(err) => return Err(err),
                    }
                }
                Ok(())
            }
            Link::Plain { sock, out, written } => {
                while *written < out.len() {
                    match sock.write(&out[*written..]) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        Ok(n) => *written += n,
                        Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(()),
                        Err(err) if err.kind() == ErrorKind::Interrupted => {}
                        Err(err) => return Err(err),
                    }
                }
                Ok(())
            }
        }
    }

    /// Reads and discards what came back; false once the server closed.
    fn drain(&mut self) -> bool {
        match self {
            Link::Tls(e) => matches!(client::drain(e), Ok(true)),
            Link::Plain { sock, .. } => {
                let mut buf = [0u8; 16_384];
                loop {
                    match sock.read(&mut buf) {
                        Ok(0) => return false,
                        Ok(_) => {}
                        Err(err) if err.kind() == ErrorKind::WouldBlock => return true,
                        Err(err) if err.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return false,
                    }
                }
            }
        }
    }

    /// Waits (at most `timeout_ns`) until the socket takes more bytes.
    fn wait_writable(&self, timeout_ns: u64) {
        let mut fd = libc::pollfd {
            fd: self.sock().as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ts = clock::timespec_from_ns(timeout_ns);
        // SAFETY: `fd` is one live pollfd; `ts` is a valid timespec.
        unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
    }
}

/// SO_SNDBUF of each load connection (as swload's TCP scenario; the kernel doubles it).
const SNDBUF: usize = 131_072;

fn open(args: &Args, i: usize) -> Result<(Link, SocketAddr), String> {
    let dial = client::Dial {
        timeout: Duration::from_secs_f64(args.timeout),
        abort_on_close: false,
        sndbuf: SNDBUF,
    };
    let src = args::source(args.src_base, i % args.src_addrs)?;
    let link = if args.plain {
        let sock = client::tcp(src, args.target, dial)
            .map_err(|e| format!("connect {src} -> {}: {e}", args.target))?;
        Link::Plain {
            sock,
            out: Vec::new(),
            written: 0,
        }
    } else {
        let cfg = client::config()?;
        let names = args.server_names();
        let sni = names.get(i % names.len().max(1)).cloned().flatten();
        let name = client::server_name(sni.as_deref(), args.target)?;
        let e = client::handshake(&cfg, name, src, args.target, dial)
            .map_err(|o| format!("TLS to {} from {src}: {}", args.target, o.key()))?;
        Link::Tls(Box::new(e))
    };
    link.sock()
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let local = link.sock().local_addr().map_err(|e| e.to_string())?;
    Ok((link, local))
}

struct Sent {
    sent: u64,
    broken: bool,
    /// The server closed after our clean close: it had read everything.
    drained: bool,
}

/// Closes cleanly and waits (until `deadline_ns`) for the server to close:
/// TLS is in order, so the server has then handled every INVITE sent.
fn finish(link: &mut Link, deadline_ns: u64) -> bool {
    match link {
        Link::Tls(e) => client::start_close(&e.sock, Some(&mut e.tls)),
        Link::Plain { sock, .. } => client::start_close(sock, None),
    }
    loop {
        if client::server_closed(link.sock()) {
            return true;
        }
        if clock::mono_ns() >= deadline_ns {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn send_loop(
    mut link: Link,
    tmpl: Template,
    rate: u64,
    batch: usize,
    deadline: u64,
    drain_ns: u64,
) -> Sent {
    let batch = if rate == 0 {
        batch
    } else {
        Pacer::batch_for(rate, 100, batch)
    };
    let len = tmpl.len();
    let mut buf = Vec::with_capacity(len * batch);
    for _ in 0..batch {
        buf.extend_from_slice(tmpl.bytes());
    }
    let mut pacer = Pacer::new(rate, clock::mono_ns(), batch);
    let (mut sent, mut rounds) = (0u64, 0u64);
    loop {
        let now = clock::mono_ns();
        if now >= deadline || signal::stopped() {
            break;
        }
        if link.pending() {
            if link.flush().is_err() {
                return Sent {
                    sent,
                    broken: true,
                    drained: false,
                };
            }
            if link.pending() {
                link.wait_writable(1_000_000);
                continue;
            }
        }
        let due = pacer.due(now);
        if due == 0 {
            pacer.wait();
            continue;
        }
        let stamp = clock::mono_ns();
        for m in 0..due {
            tmpl.patch(&mut buf[m * len..(m + 1) * len], sent + m as u64 + 1, stamp);
        }
        if link.push(&buf[..due * len]).is_err() || link.flush().is_err() {
            return Sent {
                sent,
                broken: true,
                drained: false,
            };
        }
        sent += due as u64;
        pacer.record(due);
        rounds += 1;
        if rounds.is_multiple_of(256) && !link.drain() {
            return Sent {
                sent,
                broken: true,
                drained: false,
            };
        }
    }
    // Bounded tail: what rustls or our buffer still holds, for at most 1 s.
    let tail_end = clock::mono_ns() + 1_000_000_000;
    while link.pending() && clock::mono_ns() < tail_end {
        if link.flush().is_err() {
            return Sent {
                sent,
                broken: true,
                drained: false,
            };
        }
        link.wait_writable(1_000_000);
    }
    let unsent = link.pending();
    let drained = finish(&mut link, clock::mono_ns() + drain_ns);
    Sent {
        sent,
        broken: unsent,
        drained,
    }
}

/// Runs the forward mode and returns its report.
pub fn run(args: &Args) -> Result<Value, String> {
    let m = args.connections;
    if m > 256 {
        return Err("forward uses one thread per connection: --connections at most 256".into());
    }
    let transport = if args.plain {
        Transport::Tcp
    } else {
        Transport::Tls
    };
    let mut links = Vec::with_capacity(m);
    for i in 0..m {
        links.push(open(args, i)?);
    }
    let start = clock::mono_ns();
    let deadline = start + args.duration_ns();
    let mut threads = Vec::new();
    for (i, (link, local)) in links.into_iter().enumerate() {
        let tmpl = messages::domain_invite(&local, &args.domain, &args.user, transport, "tl");
        // The rate split evenly; the first connections take the remainder.
        let rate = if args.rate == 0 {
            0
        } else {
            (args.rate / m as u64 + u64::from((i as u64) < args.rate % m as u64)).max(1)
        };
        let batch = args.batch;
        let drain_ns = (args.timeout * 1e9) as u64;
        threads.push(std::thread::spawn(move || {
            send_loop(link, tmpl, rate, batch, deadline, drain_ns)
        }));
    }
    let (mut sent, mut broken, mut drained) = (0u64, 0u64, 0u64);
    for t in threads {
        let s = t
            .join()
            .map_err(|_| "a sender thread panicked".to_string())?;
        sent += s.sent;
        broken += u64::from(s.broken);
        drained += u64::from(s.drained);
    }
    let end = clock::mono_ns();
    let secs = (deadline.min(end) - start) as f64 / 1e9;
    Ok(json!({
        "connections": m,
        "transport": if args.plain { "tcp" } else { "tls" },
        "broken_connections": broken,
        "closed_by_server_after_all_read": drained,
        "drain_s": (end.saturating_sub(deadline)) as f64 / 1e9,
        "sent": sent,
        "rate_asked": args.rate,
        "duration_s": secs,
        "msgs_per_s": if secs > 0.0 { sent as f64 / secs } else { 0.0 },
    }))
}
