//! UDP sockets: binding with the options a proxy needs, and the receive
//! loop that feeds datagrams to the core.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::flow::{Flow, Transport};
use crate::proxy::core::canonical_ip;

use super::egress::{Egress, UdpEntry};
use super::now_ms;

/// Receive buffer asked of the kernel: bursts of retransmissions and
/// floods must not overflow it while the core is busy.
const RCVBUF: usize = 4 << 20;

/// Binds a UDP socket: SO_REUSEPORT so a reload can bind the new socket
/// before the old one closes, v6-only for IPv6 addresses, a large receive
/// buffer.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    let _ = s.set_recv_buffer_size(RCVBUF);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Receives datagrams until the task is aborted.
pub async fn recv_loop(eg: Arc<Egress>, entry: UdpEntry, listener: Arc<AtomicU8>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, remote) = match entry.socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP port unreachable from an earlier send shows up here
                // on Linux; it is not fatal.
                tracing::trace!(error = %e, "UDP receive error");
                continue;
            }
        };
        let remote = SocketAddr::new(canonical_ip(remote.ip()), remote.port());
        let flow = Flow {
            side: entry.side,
            transport: Transport::Udp,
            listener: listener.load(Relaxed),
            local: entry.spec.addr,
            remote,
        };
        let data = Bytes::copy_from_slice(&buf[..n]);
        let t0 = Instant::now();
        let out = eg.core.handle(now_ms(), &flow, data);
        eg.core.metrics().observe_ns(t0.elapsed().as_nanos() as u64);
        eg.execute(out);
    }
}
