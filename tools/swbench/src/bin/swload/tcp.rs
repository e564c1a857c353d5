//! TCP scenario: legitimate INVITEs over N persistent connections.
//!
//! Each connection keeps a buffer of pre-rendered messages back to back;
//! a send patches the first `due` of them and writes them with one
//! `write`. A connection whose kernel buffer is full keeps its unwritten
//! tail and is skipped until it drains, so a slow system under test
//! back-pressures the generator instead of growing memory.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

use serde_json::json;
use swbench::clock;
use swbench::framing::{self, Frame};
use swbench::net::{self, Buffers};
use swbench::pacer::Pacer;
use swbench::template::Template;

use crate::args::Args;
use swbench::messages::{self, Transport};

/// SO_SNDBUF of each load connection (the kernel doubles it).
const TCP_SNDBUF: usize = 131_072;

struct Conn {
    stream: TcpStream,
    tmpl: Template,
    out: Vec<u8>,
    /// Unwritten bytes are `out[written..end]`.
    written: usize,
    end: usize,
    bytes_sent: u64,
    inbuf: Vec<u8>,
    alive: bool,
}

impl Conn {
    fn busy(&self) -> bool {
        self.written < self.end
    }

    /// Writes what is pending; false when the connection broke.
    fn flush(&mut self) -> bool {
        while self.written < self.end {
            match self.stream.write(&self.out[self.written..self.end]) {
                Ok(0) => return false,
                Ok(n) => {
                    self.written += n;
                    self.bytes_sent += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads and counts complete messages that came back; false on EOF/error.
    fn read(&mut self, responses: &mut u64) -> bool {
        let mut chunk = [0u8; 16_384];
        for _ in 0..16 {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        loop {
            match framing::next_frame(&self.inbuf) {
                Frame::Message(n) => {
                    *responses += 1;
                    self.inbuf.drain(..n);
                }
                Frame::Keepalive(n) => {
                    self.inbuf.drain(..n);
                }
                Frame::Incomplete => return true,
                Frame::Invalid => {
                    self.inbuf.clear();
                    return true;
                }
            }
        }
    }
}

fn connect(args: &Args, batch: usize) -> Result<Vec<Conn>, String> {
    let srcs = net::source_addrs(args.src_addrs)?;
    let mut conns = Vec::new();
    for i in 0..args.connections {
        let ip = srcs[i % srcs.len()];
        // A small fixed send buffer: what sits unread in socket buffers when the
        // run ends is still processed afterwards and would blur the next run.
        let bufs = Buffers {
            rcv: 0,
            snd: TCP_SNDBUF,
        };
        let stream = net::tcp_connect(SocketAddr::new(ip, 0), args.target, bufs)
            .map_err(|e| format!("TCP connect {ip} -> {}: {e}", args.target))?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let local = stream.local_addr().map_err(|e| e.to_string())?;
        let tmpl = messages::domain_invite(&local, &args.domain, &args.user, Transport::Tcp, "tc");
        let mut out = Vec::with_capacity(tmpl.len() * batch);
        for _ in 0..batch {
            out.extend_from_slice(tmpl.bytes());
        }
        conns.push(Conn {
            stream,
            tmpl,
            out,
            written: 0,
            end: 0,
            bytes_sent: 0,
            inbuf: Vec::new(),
            alive: true,
        });
    }
    Ok(conns)
}

/// Waits until some connection can take more bytes (bounded by `timeout_ns`).
fn wait_writable(conns: &[Conn], timeout_ns: u64) {
    let mut fds: Vec<libc::pollfd> = conns
        .iter()
        .filter(|c| c.alive)
        .map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        })
        .collect();
    let ts = clock::timespec_from_ns(timeout_ns);
    // SAFETY: `fds` is a live pollfd array of the given length; `ts` is valid.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
}

/// Runs the TCP scenario and returns its report.
pub fn run(args: &Args) -> Result<serde_json::Value, String> {
    let batch = if args.rate == 0 {
        args.batch
    } else {
        Pacer::batch_for(args.rate, 100, args.batch)
    };
    let mut conns = connect(args, batch)?;
    let start = clock::mono_ns();
    let deadline = start + args.duration_ns();
    let mut pacer = Pacer::new(args.rate, start, batch);
    let (mut seq, mut queued, mut responses, mut broken) = (0u64, 0u64, 0u64, 0u64);
    let mut turn = 0usize;
    let mut rounds = 0u64;
    loop {
        let now = clock::mono_ns();
        if now >= deadline || queued >= args.max_count || swbench::signal::stopped() {
            break;
        }
        if conns.iter().all(|c| !c.alive) {
            break;
        }
        let due = pacer.due(now).min((args.max_count - queued) as usize);
        if due == 0 {
            pacer.wait();
            continue;
        }
        // Next idle connection, flushing busy ones on the way.
        let mut chosen = None;
        for k in 0..conns.len() {
            let i = (turn + k) % conns.len();
            let c = &mut conns[i];
            if !c.alive {
                continue;
            }
            if c.busy() && !c.flush() {
                c.alive = false;
                broken += 1;
                continue;
            }
            if !c.busy() {
                chosen = Some(i);
                break;
            }
        }
        let Some(i) = chosen else {
            wait_writable(&conns, 1_000_000);
            continue;
        };
        turn = i + 1;
        let c = &mut conns[i];
        let len = c.tmpl.len();
        for m in 0..due {
            seq += 1;
            c.tmpl.patch(&mut c.out[m * len..(m + 1) * len], seq, now);
        }
        c.written = 0;
        c.end = due * len;
        if !c.flush() {
            c.alive = false;
            broken += 1;
        }
        queued += due as u64;
        pacer.record(due);
        rounds += 1;
        if rounds.is_multiple_of(256) {
            for c in conns.iter_mut().filter(|c| c.alive) {
                if !c.read(&mut responses) {
                    c.alive = false;
                    broken += 1;
                }
            }
        }
    }
    // Bounded tail: push out what is still buffered, for at most 1 s.
    let tail_end = clock::mono_ns() + 1_000_000_000;
    while conns.iter().any(|c| c.alive && c.busy()) && clock::mono_ns() < tail_end {
        for c in conns.iter_mut().filter(|c| c.alive && c.busy()) {
            if !c.flush() {
                c.alive = false;
                broken += 1;
            }
        }
        wait_writable(&conns, 1_000_000);
    }
    let send_end = clock::mono_ns();
    clock::sleep_until(send_end + 100_000_000);
    for c in conns.iter_mut().filter(|c| c.alive) {
        c.read(&mut responses);
    }
    let sent: u64 = conns
        .iter()
        .map(|c| c.bytes_sent / c.tmpl.len() as u64)
        .sum();
    let secs = (send_end - start) as f64 / 1e9;
    Ok(json!({
        "connections": conns.len(),
        "broken_connections": broken,
        "sent": sent,
        "send_errors": queued.saturating_sub(sent),
        "received": responses,
        "duration_s": secs,
        "msgs_per_s": if secs > 0.0 { sent as f64 / secs } else { 0.0 },
    }))
}
