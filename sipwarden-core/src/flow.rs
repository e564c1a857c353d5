//! Where a message came from and where it goes: the vocabulary shared by
//! the sans-IO core and the socket layer.

use std::fmt;
use std::net::SocketAddr;

/// IPv4-mapped IPv6 addresses are IPv4 for comparisons and headers.
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// Transport protocols sipwarden speaks.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS on a TCP connection: framed and routed like TCP, with
    /// its own connections, Via token and `transport=tls` parameter.
    Tls,
    /// SIP over WebSocket (RFC 7118) on a TCP connection: one message per
    /// WebSocket message, routed over its connection like TCP, with Via
    /// `SIP/2.0/WS` and `transport=ws`.
    Ws,
    /// SIP over secure WebSocket: WebSocket inside TLS (Via `WSS`).
    Wss,
}

impl Transport {
    /// Every transport, in metric slot order.
    pub const ALL: [Transport; 5] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    /// The token used in Via headers and `transport=` parameters.
    pub fn via_token(self) -> &'static [u8] {
        match self {
            Transport::Udp => b"UDP",
            Transport::Tcp => b"TCP",
            Transport::Tls => b"TLS",
            Transport::Ws => b"WS",
            Transport::Wss => b"WSS",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// Connection transports share TCP's connection table and flow
    /// tokens (WebSocket ones too, though their messages come framed).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// WebSocket transports: a message per WebSocket message, reached only
    /// over a connection the browser opened.
    pub fn is_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }

    /// The port a URI or Via without one means (RFC 3261 19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Udp | Transport::Tcp => 5060,
            // RFC 7118 5.2: the ports of HTTP and HTTPS.
            Transport::Ws => 80,
            Transport::Wss => 443,
        }
    }

    /// From a Via transport or URI `transport=` value.
    pub fn from_token(t: &[u8]) -> Option<Transport> {
        if t.eq_ignore_ascii_case(b"udp") {
            Some(Transport::Udp)
        } else if t.eq_ignore_ascii_case(b"tcp") {
            Some(Transport::Tcp)
        } else if t.eq_ignore_ascii_case(b"tls") {
            Some(Transport::Tls)
        } else if t.eq_ignore_ascii_case(b"ws") {
            Some(Transport::Ws)
        } else if t.eq_ignore_ascii_case(b"wss") {
            Some(Transport::Wss)
        } else {
            None
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which trust zone a socket belongs to: everything on `Public` is
/// untrusted (a loopback source there too), everything on `Internal` comes
/// from Asterisk. Trust follows the socket, never the source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Public,
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Public => "public",
            Side::Internal => "internal",
        }
    }
}

/// Listeners of one side, at most: a Via branch names the listener a
/// request arrived on in one base-36 character (`0`-`9`, `a`-`z`), and the
/// config refuses more sockets than that.
pub const MAX_LISTENERS: usize = 36;

/// The listener index of a TLS connection sipwarden opened (to a provider
/// reached over TLS): no listener accepted it, and a flow token naming it
/// must still say TLS when it comes back (`Settings::flow_transport`).
/// Listener indices fit in a flow token's 6 bits and a config has at most
/// 36 public sockets, so 63 names none of them.
pub const OPENED_TLS: u8 = 63;

/// The flow a message arrived on: enough to send an answer back the same
/// way (same socket, same TCP connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub side: Side,
    pub transport: Transport,
    /// Index of the listener in its side's configured list, or
    /// [`OPENED_TLS`] for a TLS connection sipwarden opened itself.
    pub listener: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}
