//! UDP: each listener is several sockets bound to the same address with
//! SO_REUSEPORT (one per worker, so every core takes a share), each served
//! by its own thread that receives in batches (`recvmmsg`), runs the core,
//! and sends what the batch produced in batches (`sendmmsg`). No async
//! runtime on this path: a dropped datagram must cost little more than
//! receiving it.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};

use sipwarden_core::flow::{canonical_ip, Flow, Transport};
use sipwarden_core::metrics::Event;

use sipwarden_core::proxy::Dest;

use super::coalesce::Coalescer;
use super::egress::{Egress, UdpEntry};
use super::mmsg::{send_all, send_connected, RecvBatch};
use super::now_ms;

/// How often a blocked receive wakes up to see if it must stop.
const WAKE: Duration = Duration::from_millis(200);

/// Binds one UDP socket: SO_REUSEPORT (several workers, and a reload can
/// bind the new socket before the old one closes), v6-only for IPv6, a
/// receive buffer of `rcvbuf` bytes (`listen.udp_rcvbuf`: bursts and
/// floods must not overflow it while the core is busy), a receive timeout
/// so the worker can stop.
pub fn bind(addr: SocketAddr, rcvbuf: usize) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    let _ = s.set_recv_buffer_size(rcvbuf);
    s.set_read_timeout(Some(WAKE))?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Binds `n` sockets on `addr` (which the listener's own sockets hold
/// too) and connects them to `peer`. The kernel then delivers what `peer`
/// sends to `addr` to one of them (a connected socket is the better
/// match; the first of equals), and sends to `peer` skip the route lookup.
pub fn bind_connected_n(
    addr: SocketAddr,
    peer: SocketAddr,
    n: usize,
    rcvbuf: usize,
) -> std::io::Result<Vec<Arc<std::net::UdpSocket>>> {
    (0..n.max(1))
        .map(|_| {
            let s = bind(addr, rcvbuf)?;
            s.connect(peer)?;
            Ok(Arc::new(s))
        })
        .collect()
}

/// Binds `n` sockets on one address (port 0 is resolved by the first).
pub fn bind_n(
    addr: SocketAddr,
    n: usize,
    rcvbuf: usize,
) -> std::io::Result<Vec<Arc<std::net::UdpSocket>>> {
    let first = bind(addr, rcvbuf)?;
    warn_if_capped(&first, addr, rcvbuf);
    let actual = first.local_addr()?;
    let mut v = vec![Arc::new(first)];
    for _ in 1..n.max(1) {
        v.push(Arc::new(bind(actual, rcvbuf)?));
    }
    Ok(v)
}

/// The receive buffer the kernel granted (Linux reports twice the size
/// asked, its bookkeeping included).
pub fn granted_rcvbuf(s: &std::net::UdpSocket) -> usize {
    socket2::SockRef::from(s).recv_buffer_size().unwrap_or(0)
}

/// Says so when the kernel granted less than `listen.udp_rcvbuf`: on a
/// stock system `net.core.rmem_max` caps it at ~208 KiB, a few
/// milliseconds of a flood.
fn warn_if_capped(s: &std::net::UdpSocket, addr: SocketAddr, asked: usize) {
    let granted = granted_rcvbuf(s);
    if granted < asked {
        tracing::warn!(
            socket = %addr,
            asked,
            granted,
            "UDP receive buffer smaller than listen.udp_rcvbuf: raise the sysctl net.core.rmem_max"
        );
    }
}

/// Serves one socket until `stop` is set. `index`: which of its
/// listener's workers this is (it sends to the backend through the
/// connected socket of the same index).
pub fn worker(
    eg: Arc<Egress>,
    entry: UdpEntry,
    index: usize,
    listener: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) {
    // Timer slack of 1 µs, so the coalescing nap is what it says (the
    // default slack is 50 µs).
    // SAFETY: PR_SET_TIMERSLACK takes a value (no pointer) and changes
    // only this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
    let fd = entry.socket.as_fd();
    // Batch and pause are read when the worker starts (like
    // `listen.workers`): a reload that changes them applies to listeners
    // it binds.
    let (slot, batch_len, pause) = {
        let s = eg.core.settings();
        let l = &s.config.listen;
        (
            s.limits.max_message.min(65535) + 1,
            l.udp_batch,
            l.udp_coalesce.0,
        )
    };
    let mut batch = RecvBatch::new(batch_len, slot);
    let mut coalesce = Coalescer::new(batch_len, pause);
    let mut out = Outbox::new(index);
    let mut current = Current::load(&eg);
    while !stop.load(Relaxed) {
        let datagrams = match batch.recv(fd) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(socket = %entry.spec, error = %e, "UDP receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // Also after an idle wait (the receive times out every 200 ms), so a
        // worker without traffic does not keep a retired socket open.
        if current.refresh(&eg) {
            out.forget();
        }
        let n = datagrams.received();
        if n == 0 {
            continue;
        }
        let now = now_ms();
        let received = Instant::now();
        let mut t = mono_ns();
        for d in datagrams {
            let remote = SocketAddr::new(canonical_ip(d.from.ip()), d.from.port());
            let flow = Flow {
                side: entry.side,
                transport: Transport::Udp,
                listener: listener.load(Relaxed),
                local: entry.spec.addr,
                remote,
            };
            let handled = if d.truncated {
                eg.core.on_truncated(now, &flow, &d.data)
            } else {
                eg.core.handle_with(&current.settings, now, &flow, d.data)
            };
            for send in handled.transmits {
                match (&send.dest, send.transport) {
                    (Dest::Addr(to), Transport::Udp) => {
                        let to = *to;
                        out.push(&eg, send, to)
                    }
                    _ => eg.send(send),
                }
            }
            let t2 = mono_ns();
            eg.core.metrics().observe_ns(t2.saturating_sub(t));
            t = t2;
        }
        out.flush(&eg);
        if let Some(d) = coalesce.pause(n, received, Instant::now()) {
            std::thread::sleep(d);
        }
    }
}

/// Monotonic nanoseconds, for the per-message processing time: one
/// `clock_gettime` and a subtraction (`Instant` arithmetic costs
/// measurably more per message on the drop path).
fn mono_ns() -> u64 {
    // SAFETY: all-zero timespec is valid; clock_gettime only writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a timespec owned by this frame.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The UDP sends of one batch, grouped by the socket they leave from.
///
/// Which socket a send leaves from depends only on its side, the listener
/// the core named and the destination's address family, and changes only
/// when a reload swaps the socket list or the settings. Each group keeps
/// its socket across batches, so a forwarded message costs no socket
/// lookup and no reference-count traffic on the shared socket list (two
/// workers on two cores each bounced those cache lines per message).
struct Outbox {
    /// The worker's index: picks its own connected socket.
    worker: usize,
    groups: Vec<Group>,
}

/// The socket list and settings a worker's batch runs under, checked once
/// per receive: the core gets the settings from here (an `ArcSwap` load
/// per message would be a visible share of a drop), and the outbox's picks
/// are made under them (held, so a new list can never reuse their
/// addresses).
struct Current {
    socks: Arc<Vec<UdpEntry>>,
    settings: Arc<sipwarden_core::settings::Settings>,
}

impl Current {
    fn load(eg: &Egress) -> Current {
        Current {
            socks: eg.udp.load_full(),
            settings: eg.core.settings(),
        }
    }

    /// Takes up what a reload changed; true if anything did.
    fn refresh(&mut self, eg: &Egress) -> bool {
        let same = Arc::ptr_eq(&self.socks, &eg.udp.load()) && eg.core.settings_are(&self.settings);
        if !same {
            *self = Current::load(eg);
        }
        !same
    }
}

struct Group {
    side: sipwarden_core::flow::Side,
    listener: Option<u8>,
    v4: bool,
    entry: UdpEntry,
    msgs: Vec<(Bytes, SocketAddr)>,
    /// This worker's socket of `entry`'s listener connected to the
    /// backend, and what goes there.
    connected: Option<UdpEntry>,
    to_peer: Vec<Bytes>,
}

impl Outbox {
    fn new(worker: usize) -> Outbox {
        Outbox {
            worker,
            groups: Vec::new(),
        }
    }

    /// Forgets the picks (a reload changed the sockets or settings).
    fn forget(&mut self) {
        self.groups.clear();
    }

    fn push(&mut self, eg: &Egress, send: sipwarden_core::proxy::Transmit, to: SocketAddr) {
        let v4 = to.is_ipv4();
        let found = self
            .groups
            .iter_mut()
            .find(|g| g.side == send.side && g.listener == send.listener && g.v4 == v4);
        let g = match found {
            Some(g) => g,
            None => match eg.pick_udp(send.side, send.listener, &to) {
                Some(entry) => {
                    let connected = eg.connected(&entry, self.worker);
                    self.groups.push(Group {
                        side: send.side,
                        listener: send.listener,
                        v4,
                        entry,
                        msgs: Vec::new(),
                        connected,
                        to_peer: Vec::new(),
                    });
                    let last = self.groups.len() - 1;
                    &mut self.groups[last]
                }
                None => return eg.no_socket(&send),
            },
        };
        match &g.connected {
            Some(c) if c.peer == Some(to) => g.to_peer.push(send.data),
            _ => g.msgs.push((send.data, to)),
        }
    }

    /// Sends what the batch produced, a `sendmmsg` per socket.
    fn flush(&mut self, eg: &Egress) {
        for g in &mut self.groups {
            if let Some(c) = &g.connected {
                if !g.to_peer.is_empty() {
                    let sent = send_connected(c.socket.as_fd(), &g.to_peer);
                    count_unsent(eg, g.to_peer.len() - sent);
                    g.to_peer.clear();
                }
            }
            if !g.msgs.is_empty() {
                let sent = send_all(g.entry.socket.as_fd(), &g.msgs);
                count_unsent(eg, g.msgs.len() - sent);
                g.msgs.clear();
            }
        }
    }
}

fn count_unsent(eg: &Egress, n: usize) {
    for _ in 0..n {
        eg.core.metrics().event(Event::SendErrors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipwarden_core::flow::Side;
    use sipwarden_core::metrics::Metrics;
    use sipwarden_core::proxy::{Core, Transmit};
    use sipwarden_core::settings::Settings;
    use sipwarden_core::token::Keys;

    /// `listen.udp_rcvbuf` reaches the kernel (it doubles what it grants;
    /// 200,000 bytes is below a stock `net.core.rmem_max`).
    #[test]
    fn sockets_get_the_receive_buffer_asked() {
        for asked in [100_000, 200_000] {
            let socks = bind_n("127.0.0.1:0".parse().unwrap(), 2, asked).unwrap();
            for s in &socks {
                assert!(granted_rcvbuf(s) >= asked, "{}", granted_rcvbuf(s));
                assert!(granted_rcvbuf(s) <= 2 * asked + 4096);
            }
        }
    }

    /// A batch's sends to the backend leave from the listener's connected
    /// socket of the worker's index, its other sends from the listener's
    /// own; `Egress::send` (the path of TCP-received messages) uses the
    /// first connected socket.
    #[tokio::test]
    async fn sends_to_the_backend_take_the_workers_connected_socket() {
        let ip = "127.0.39.1";
        let cfg = format!(
            "[listen]\npublic = [\"udp:{ip}:5060\"]\ninternal = \"udp:{ip}:5070\"\n\
             advertise = \"{ip}:5060\"\n[backend]\naddress = \"udp:127.0.39.2:5080\"\n\
             [filter]\ndomains = [\"pbx.secret.example\"]\n"
        );
        let settings = Settings::new(sipwarden_core::config::parse(&cfg, "t").unwrap());
        let spec = settings.internal[0];
        let core = Arc::new(Core::new(
            settings,
            Keys::new([1; 32]),
            Arc::new(Metrics::default()),
        ));
        let recv_on = |a: &str| {
            let s = std::net::UdpSocket::bind(a).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        };
        let backend = recv_on("127.0.39.2:5080");
        let other = recv_on("127.0.39.3:5080");
        // The connected sockets on other ports than the listener's, so the
        // receiver can tell which one a datagram left from.
        let own = bind(spec.addr, 1 << 20).unwrap();
        let conn = || {
            let c = std::net::UdpSocket::bind("127.0.39.1:0").unwrap();
            c.connect(backend.local_addr().unwrap()).unwrap();
            let a = c.local_addr().unwrap();
            (c, a)
        };
        let ((c0, a0), (c1, a1)) = (conn(), conn());
        let entry = |socket, peer| UdpEntry {
            side: Side::Internal,
            spec,
            socket: Arc::new(socket),
            peer,
        };
        let to_backend = Some(backend.local_addr().unwrap());
        let eg = Arc::new(Egress {
            core,
            udp: arc_swap::ArcSwap::from_pointee(vec![
                entry(own, None),
                entry(c0, to_backend),
                entry(c1, to_backend),
            ]),
            tcp: Arc::new(super::super::tcp::TcpConns::default()),
            tls: arc_swap::ArcSwapOption::empty(),
            tls_client: arc_swap::ArcSwap::new(
                super::super::tls::client_config(&Default::default()).unwrap(),
            ),
            dns: Arc::new(super::super::dns::Dns::system()),
            rt: tokio::runtime::Handle::current(),
        });
        let send = |to: &std::net::UdpSocket, text: &'static str| Transmit {
            side: Side::Internal,
            transport: Transport::Udp,
            listener: Some(0),
            dest: Dest::Addr(to.local_addr().unwrap()),
            data: Bytes::from(text),
            on_fail: None,
            reuse_only: false,
        };
        let from_of = |s: &std::net::UdpSocket| {
            let mut buf = [0u8; 64];
            let (n, from) = s.recv_from(&mut buf).unwrap();
            (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
        };

        for (worker, via) in [(0, a0), (1, a1), (2, a0)] {
            let mut out = Outbox::new(worker);
            // The group's first send goes elsewhere: the backend's still
            // find the connected socket.
            for (to, text) in [(&other, "o1"), (&backend, "b1"), (&backend, "b2")] {
                let s = send(to, text);
                let Dest::Addr(a) = s.dest else {
                    unreachable!()
                };
                out.push(&eg, s, a);
            }
            out.flush(&eg);
            assert_eq!(from_of(&other), ("o1".into(), spec.addr));
            assert_eq!(from_of(&backend), ("b1".into(), via), "worker {worker}");
            assert_eq!(from_of(&backend), ("b2".into(), via), "worker {worker}");
        }

        eg.send(send(&backend, "b3"));
        eg.send(send(&other, "o2"));
        assert_eq!(from_of(&backend), ("b3".into(), a0));
        assert_eq!(from_of(&other), ("o2".into(), spec.addr));
    }
}
