//! Sockets: UDP, TCP, TLS and WebSocket listeners, outgoing TCP connections, DNS, the
//! metrics endpoint. Everything here moves bytes; decisions are the core's.

pub mod background;
pub mod coalesce;
pub mod dns;
pub mod egress;
pub mod exclusive;
pub mod http;
pub(crate) mod mmsg;
pub mod server;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod ws;

pub use server::Server;

use sipwarden_core::time::UnixMs;

/// Whether `ip` is an address of this host, so that start can bind it: a
/// UDP socket bound to it on port 0 (never a port of a running instance)
/// and closed at once. Only "address not available" says no: other
/// failures are not about the address.
pub fn address_is_local(ip: std::net::IpAddr) -> bool {
    match std::net::UdpSocket::bind((ip, 0)) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrNotAvailable,
    }
}

/// Wall-clock milliseconds since the Unix epoch: the core's clock.
pub fn now_ms() -> UnixMs {
    UnixMs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}
