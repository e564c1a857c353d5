//! Socket set-up and the loopback-only guard.
//!
//! The benchmark must never send to anything but this machine: every address
//! a tool sends to (from the command line, or read from a Via, Contact or
//! Route of a received message) goes through [`ensure_loopback`] first.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};

/// True for 127.0.0.0/8 and ::1.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// Refuses any destination outside the loopback range.
pub fn ensure_loopback(addr: &SocketAddr) -> Result<(), String> {
    if is_loopback(addr) {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address (127.0.0.0/8 or ::1): refused"
        ))
    }
}

/// The load generator's source addresses: 127.0.0.2 .. 127.0.0.(n+1).
///
/// Linux accepts any 127.x.y.z as a local address without configuration,
/// so distinct sources (as a proxy's per-source tables see them) cost nothing.
pub fn source_addrs(n: usize) -> Result<Vec<IpAddr>, String> {
    if n == 0 || n > 253 {
        return Err(format!("source address count {n} must be within 1..=253"));
    }
    Ok((0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
        .collect())
}

fn domain_of(addr: &SocketAddr) -> Domain {
    if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

/// Socket buffer sizes; 0 keeps the kernel default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Buffers {
    /// SO_RCVBUF request in bytes (the kernel doubles it and caps it at net.core.rmem_max).
    pub rcv: usize,
    /// SO_SNDBUF request in bytes.
    pub snd: usize,
}

fn apply_buffers(s: &Socket, b: Buffers) -> io::Result<()> {
    if b.rcv > 0 {
        s.set_recv_buffer_size(b.rcv)?;
    }
    if b.snd > 0 {
        s.set_send_buffer_size(b.snd)?;
    }
    Ok(())
}

/// A UDP socket bound to `bind`, optionally connected to `peer`.
pub fn udp_socket(bind: SocketAddr, peer: Option<SocketAddr>, b: Buffers) -> io::Result<UdpSocket> {
    let s = Socket::new(domain_of(&bind), Type::DGRAM, Some(Protocol::UDP))?;
    apply_buffers(&s, b)?;
    s.bind(&SockAddr::from(bind))?;
    if let Some(p) = peer {
        s.connect(&SockAddr::from(p))?;
    }
    Ok(s.into())
}

/// A TCP connection from `bind` (port 0 for any) to `peer`, with Nagle off.
pub fn tcp_connect(bind: SocketAddr, peer: SocketAddr, b: Buffers) -> io::Result<TcpStream> {
    let s = Socket::new(domain_of(&peer), Type::STREAM, Some(Protocol::TCP))?;
    apply_buffers(&s, b)?;
    s.bind(&SockAddr::from(bind))?;
    s.connect(&SockAddr::from(peer))?;
    s.set_tcp_nodelay(true)?;
    Ok(s.into())
}

/// A TCP listener with SO_REUSEADDR so a restart does not wait out TIME_WAIT.
pub fn tcp_listen(bind: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(domain_of(&bind), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(bind))?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Reads back the receive buffer the kernel actually granted (bytes, as getsockopt reports).
pub fn granted_rcvbuf(sock: &UdpSocket) -> usize {
    socket2::SockRef::from(sock).recv_buffer_size().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_guard() {
        assert!(ensure_loopback(&"127.1.2.3:5060".parse().unwrap()).is_ok());
        assert!(ensure_loopback(&"[::1]:5060".parse().unwrap()).is_ok());
        assert!(ensure_loopback(&"10.0.0.1:5060".parse().unwrap()).is_err());
        assert!(ensure_loopback(&"8.8.8.8:53".parse().unwrap()).is_err());
    }

    #[test]
    fn sources() {
        let s = source_addrs(3).unwrap();
        assert_eq!(s[0].to_string(), "127.0.0.2");
        assert_eq!(s[2].to_string(), "127.0.0.4");
        assert!(source_addrs(0).is_err());
        assert!(source_addrs(254).is_err());
    }

    #[test]
    fn bind_on_second_loopback_address() {
        let s = udp_socket("127.0.0.3:0".parse().unwrap(), None, Buffers::default()).unwrap();
        assert_eq!(s.local_addr().unwrap().ip().to_string(), "127.0.0.3");
    }
}
