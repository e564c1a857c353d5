//! What the core asks the socket layer to do.

use std::net::SocketAddr;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::flow::{Side, Transport};
use crate::verdict::Verdict;

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    Addr(SocketAddr),
    /// A host name to resolve (RFC 3263): SRV first when `port` is `None`,
    /// then A/AAAA. The socket layer resolves it off the receive path.
    Name {
        host: Box<str>,
        port: Option<u16>,
    },
}

/// One message to send: `data` from a socket of `side` over `transport`
/// (quinn-proto's name for it). For TCP the connection to the destination
/// is reused if one exists (an inbound one included: responses go back
/// over the connection the request came on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub side: Side,
    pub transport: Transport,
    /// Which listener of the side to send from (UDP); `None` picks one of
    /// the destination's address family.
    pub listener: Option<u8>,
    pub dest: Dest,
    pub data: Bytes,
    /// Answer to send back on the original flow if `dest` cannot be
    /// reached (a 503 for requests Asterisk sent to an unknown host, a 430
    /// Flow Failed when a phone's TCP connection is gone).
    pub on_fail: Option<Box<Transmit>>,
    /// TCP: only over a connection that exists (the flow a token names, a
    /// keepalive on a registration's connection); never open one, since the
    /// far end behind NAT cannot be reached that way.
    pub reuse_only: bool,
}

/// The result of handling one message: what to send, and the verdict
/// that counts it (every message gets one).
#[derive(Debug)]
pub struct Output {
    pub transmits: SmallVec<[Transmit; 1]>,
    pub verdict: Verdict,
}

impl Output {
    pub fn verdict(v: Verdict) -> Output {
        Output {
            transmits: SmallVec::new(),
            verdict: v,
        }
    }

    pub fn send(v: Verdict, t: Transmit) -> Output {
        let mut transmits = SmallVec::new();
        transmits.push(t);
        Output {
            transmits,
            verdict: v,
        }
    }
}
