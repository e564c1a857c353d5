//! The sink's TCP side: accept, frame by Content-Length, count, answer on
//! the same connection (RFC 3261 18.2.2: a response to a request that came
//! over TCP goes back over that connection).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use swbench::clock;
use swbench::framing::{self, Frame};

use crate::answer::{answer, Answer};
use crate::stats::Stats;

/// Most connections kept at once; more are accepted and closed.
const MAX_CONNS: usize = 4096;

struct Conn {
    stream: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    alive: bool,
}

/// Listener and connections.
pub struct TcpServer {
    listener: TcpListener,
    conns: Vec<Conn>,
    local: SocketAddr,
}

impl TcpServer {
    /// Serves on a bound, listening socket.
    pub fn new(listener: TcpListener, local: SocketAddr) -> std::io::Result<TcpServer> {
        listener.set_nonblocking(true)?;
        Ok(TcpServer {
            listener,
            conns: Vec::new(),
            local,
        })
    }

    /// Poll entries: the listener first, then one per connection, in order.
    pub fn pollfds(&self) -> Vec<libc::pollfd> {
        let mut v = vec![libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for c in &self.conns {
            let mut events = libc::POLLIN;
            if !c.out.is_empty() {
                events |= libc::POLLOUT;
            }
            v.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        v
    }

    /// Handles readiness reported for the entries of [`TcpServer::pollfds`].
    pub fn service(&mut self, fds: &[libc::pollfd], stats: &mut Stats, answering: bool) {
        for (i, fd) in fds.iter().enumerate().skip(1) {
            if fd.revents == 0 {
                continue;
            }
            if let Some(c) = self.conns.get_mut(i - 1) {
                serve(c, stats, answering, &self.local);
            }
        }
        if fds.first().is_some_and(|f| f.revents & libc::POLLIN != 0) {
            self.accept(stats);
        }
        self.conns.retain(|c| c.alive);
    }

    fn accept(&mut self, stats: &mut Stats) {
        for _ in 0..64 {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
                        continue; // dropped: closes it
                    }
                    let _ = stream.set_nodelay(true);
                    stats.tcp_connections += 1;
                    self.conns.push(Conn {
                        stream,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        alive: true,
                    });
                }
                Err(_) => break,
            }
        }
    }
}

fn serve(c: &mut Conn, stats: &mut Stats, answering: bool, local: &SocketAddr) {
    let mut chunk = [0u8; 65_536];
    for _ in 0..16 {
        match c.stream.read(&mut chunk) {
            Ok(0) => {
                c.alive = false;
                break;
            }
            Ok(n) => c.inbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                c.alive = false;
                break;
            }
        }
    }
    let now = clock::mono_ns();
    let mut used = 0;
    loop {
        match framing::next_frame(&c.inbuf[used..]) {
            Frame::Message(n) => {
                let msg = &c.inbuf[used..used + n];
                stats.tcp += 1;
                stats.record(msg, now);
                if answering {
                    match answer(msg, local, true) {
                        Answer::Reply(r) => {
                            c.out.extend_from_slice(&r);
                            stats.answered += 1;
                        }
                        Answer::Absorb => {}
                        Answer::Unanswerable => stats.unanswerable += 1,
                    }
                }
                used += n;
            }
            Frame::Keepalive(n) => used += n,
            Frame::Incomplete => break,
            Frame::Invalid => {
                stats.unparsable += 1;
                c.alive = false;
                break;
            }
        }
    }
    c.inbuf.drain(..used);
    while !c.out.is_empty() && c.alive {
        match c.stream.write(&c.out) {
            Ok(0) => c.alive = false,
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => c.alive = false,
        }
    }
}
