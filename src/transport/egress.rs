//! Carries out the core's sends: picks the UDP socket or TCP connection,
//! resolves names off the receive path, and counts what could not be sent.

use std::net::SocketAddr;
use std::sync::Arc;

use std::os::fd::AsFd;

use arc_swap::ArcSwap;

use sipwarden_core::config::SocketSpec;
use sipwarden_core::flow::{Side, Transport};
use sipwarden_core::metrics::Event;
use sipwarden_core::proxy::{Core, Dest, Output, Transmit};

use super::dns::{Dns, Key};
use super::tcp::TcpConns;

/// A bound UDP socket and what it was configured as. A listener has
/// several (SO_REUSEPORT, one per worker).
#[derive(Clone)]
pub struct UdpEntry {
    pub side: Side,
    pub spec: SocketSpec,
    pub socket: Arc<std::net::UdpSocket>,
    /// Set on the internal listener's sockets connected to the backend
    /// (one per worker): they send there without a route lookup per
    /// datagram, and one of them (the kernel's best match) receives what
    /// the backend sends to the listener's address. Never picked for other
    /// destinations.
    pub peer: Option<SocketAddr>,
}

/// Shared by every receive thread and task.
pub struct Egress {
    pub core: Arc<Core>,
    pub udp: ArcSwap<Vec<UdpEntry>>,
    pub tcp: Arc<TcpConns>,
    /// The TLS listeners' certificate: swapped at a reload, read at each
    /// handshake, so established connections keep theirs. `None` without
    /// a `[tls]` certificate.
    pub tls: arc_swap::ArcSwapOption<rustls::ServerConfig>,
    /// How providers reached over TLS are verified (`tls.ca_file`,
    /// `tls.verify`): swapped at a reload like the certificate.
    pub tls_client: ArcSwap<rustls::ClientConfig>,
    pub dns: Arc<Dns>,
    /// The async runtime, for TCP connects and DNS lookups started from
    /// the UDP worker threads.
    pub rt: tokio::runtime::Handle,
}

/// IPv6 sockets are bound v6-only (list `0.0.0.0` and `[::]` both for
/// dual stack), so a socket only reaches its own family.
fn family_fits(local: &SocketAddr, dest: &SocketAddr) -> bool {
    local.is_ipv4() == dest.is_ipv4()
}

impl Egress {
    /// Executes every send of an output. Never waits: UDP uses
    /// `try_send_to`, TCP queues to the connection's writer, names are
    /// resolved in a task.
    pub fn execute(self: &Arc<Self>, out: Output) {
        for send in out.transmits {
            self.send(send);
        }
    }

    pub fn send(self: &Arc<Self>, send: Transmit) {
        match &send.dest {
            Dest::Addr(a) => {
                let a = *a;
                self.send_to(send, a, None);
            }
            Dest::Name { host, port } => {
                let key = Key {
                    host: host.clone(),
                    port: *port,
                    transport: send.transport,
                };
                match self.dns.cached(&key) {
                    Some(Ok(a)) => self.send_to(send, a, Some(&key.host)),
                    Some(Err(())) => self.unreachable(send, "cached DNS failure"),
                    None => {
                        let me = self.clone();
                        self.rt.spawn(async move {
                            match me.dns.resolve(&key).await {
                                Ok(a) => me.send_to(send, a, Some(&key.host)),
                                Err(e) => me.unreachable(send, &e),
                            }
                        });
                    }
                }
            }
        }
    }

    fn unreachable(self: &Arc<Self>, send: Transmit, why: &str) {
        self.core.metrics().event(Event::DnsFailures);
        tracing::warn!(dest = ?send.dest, error = why, "next hop does not resolve");
        if let Some(fail) = send.on_fail {
            self.send(*fail);
        }
    }

    /// `host`: the name `dest` was resolved from, which a TLS connection
    /// opened to it verifies (and sends as SNI).
    fn send_to(self: &Arc<Self>, send: Transmit, dest: SocketAddr, host: Option<&str>) {
        match send.transport {
            Transport::Udp => self.send_udp(&send, dest),
            Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => {
                let Transmit {
                    side,
                    transport,
                    data,
                    on_fail,
                    reuse_only,
                    ..
                } = send;
                // A browser is reached only over the connection it opened.
                let reuse_only = reuse_only || transport.is_websocket();
                // A client on a wss: connection may write WS in its Via:
                // the response still goes down its (encrypted) connection.
                // Never the other way: a WSS message never goes out in clear.
                let transport = match transport {
                    Transport::Ws if !self.tcp.has(side, transport, dest) => Transport::Wss,
                    t => t,
                };
                // A failure now (or of the connect, later) sends `on_fail`.
                let to = super::tcp::Peer {
                    side,
                    transport,
                    addr: dest,
                    host,
                };
                let sent = self.tcp.send(self, to, data, reuse_only, on_fail);
                if let Err(fail) = sent {
                    self.core.metrics().event(Event::SendErrors);
                    if let Some(fail) = fail {
                        self.send(*fail);
                    }
                }
            }
        }
    }

    /// The socket to send from: of the listener the core named when it
    /// fits the destination's family, else any of the side's.
    pub fn pick_udp(
        &self,
        side: Side,
        listener: Option<u8>,
        dest: &SocketAddr,
    ) -> Option<UdpEntry> {
        let socks = self.udp.load();
        if let Some(i) = listener {
            let settings = self.core.settings();
            let list = match side {
                Side::Public => &settings.public,
                Side::Internal => &settings.internal,
            };
            if let Some(spec) = list.get(usize::from(i)) {
                if let Some(e) = socks
                    .iter()
                    .find(|e| e.side == side && e.spec == *spec && e.peer.is_none())
                {
                    if family_fits(&e.spec.addr, dest) {
                        return Some(e.clone());
                    }
                }
            }
        }
        socks
            .iter()
            .find(|e| e.side == side && family_fits(&e.spec.addr, dest) && e.peer.is_none())
            .cloned()
    }

    /// The `worker`th (modulo their number) of the sockets of `from`'s
    /// listener that are connected (to the backend), if it has them: sends
    /// to their peer that would leave from `from` leave from it instead,
    /// from the same address and port.
    pub fn connected(&self, from: &UdpEntry, worker: usize) -> Option<UdpEntry> {
        let socks = self.udp.load();
        let of = |e: &&UdpEntry| e.side == from.side && e.spec == from.spec && e.peer.is_some();
        let n = socks.iter().filter(of).count();
        if n == 0 {
            return None;
        }
        socks.iter().filter(of).nth(worker % n).cloned()
    }

    pub fn no_socket(&self, send: &Transmit) {
        self.core.metrics().event(Event::SendErrors);
        tracing::warn!(side = send.side.as_str(), dest = ?send.dest, "no UDP socket to send from");
    }

    fn send_udp(&self, send: &Transmit, dest: SocketAddr) {
        let Some(e) = self.pick_udp(send.side, send.listener, &dest) else {
            self.no_socket(send);
            return;
        };
        // Sends from the async tasks (messages that came over TCP) share
        // the first connected socket.
        let sent = match self.connected(&e, 0).filter(|c| c.peer == Some(dest)) {
            Some(c) => {
                super::mmsg::send_connected(c.socket.as_fd(), std::slice::from_ref(&send.data))
            }
            None => super::mmsg::send_all(e.socket.as_fd(), &[(send.data.clone(), dest)]),
        };
        if sent != 1 {
            self.core.metrics().event(Event::SendErrors);
            tracing::debug!(%dest, "UDP send failed");
        }
    }
}
