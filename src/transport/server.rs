//! The running listeners and their (re)binding. A reload binds what is new
//! first, swaps the settings, then closes what is gone: a failed bind
//! refuses the whole reload and leaves everything as it was.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use sipwarden_core::config::SocketSpec;
use sipwarden_core::flow::{Side, Transport};
use sipwarden_core::proxy::Core;
use sipwarden_core::settings::Settings;

use super::dns::Dns;
use super::egress::{Egress, UdpEntry};
use super::exclusive::{self, BindLock};
use super::tcp::{accept_loop, TcpConns};
use super::{http, tls, udp, ws};

struct Running {
    side: Side,
    spec: SocketSpec,
    /// The backend, for the listener whose sockets are connected to it.
    peer: Option<SocketAddr>,
    listener: Arc<AtomicU8>,
    /// TCP: the accept task.
    task: Option<JoinHandle<()>>,
    /// UDP: tells the worker threads to end.
    stop: Arc<AtomicBool>,
}

impl Running {
    fn retire(&self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

enum Bound {
    Udp(Vec<Arc<std::net::UdpSocket>>),
    Tcp(TcpListener),
}

/// The `[tls]` certificate of `s`, loaded.
fn tls_config(s: &Settings) -> Result<Option<Arc<rustls::ServerConfig>>, ListenError> {
    tls::from_settings(&s.config.tls).map_err(ListenError::Tls)
}

/// Why listeners could not be bound: start fails, or a reload is refused
/// and everything stays as it was. Displayed as the line the log shows.
#[derive(Debug)]
pub enum ListenError {
    /// Another process holds the address of a listener to bind (see
    /// `exclusive`).
    Busy {
        side: Side,
        spec: SocketSpec,
        busy: exclusive::Busy,
    },
    /// Binding a listener failed.
    Bind {
        side: Side,
        spec: SocketSpec,
        error: std::io::Error,
    },
    /// The `[tls]` certificate and key do not load or do not match, or
    /// `tls.ca_file` does not load.
    Tls(String),
    /// Binding `metrics.listen` failed; `holders` are the processes that
    /// hold the address, when it is in use and they can be seen.
    Metrics {
        addr: SocketAddr,
        error: std::io::Error,
        holders: Vec<(u32, String)>,
    },
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenError::Busy { side, spec, busy } => {
                f.write_str(&exclusive::busy_message(side.as_str(), spec, busy))
            }
            ListenError::Bind { side, spec, error } => {
                write!(f, "cannot bind {} socket {spec}: {error}", side.as_str())
            }
            ListenError::Tls(e) => write!(f, "TLS certificate: {e}"),
            ListenError::Metrics {
                addr,
                error,
                holders,
            } if holders.is_empty() => write!(f, "cannot bind metrics.listen {addr}: {error}"),
            ListenError::Metrics { addr, holders, .. } => {
                let spec = SocketSpec {
                    transport: Transport::Tcp,
                    addr: *addr,
                };
                let busy = exclusive::Busy::By(holders.clone());
                write!(
                    f,
                    "cannot bind metrics.listen: {}",
                    exclusive::busy_message("metrics", &spec, &busy)
                )
            }
        }
    }
}

impl std::error::Error for ListenError {}

/// What a (re)load does to the metrics listener.
enum MetricsChange {
    /// Its address is the same: keep it.
    Keep,
    /// `metrics.listen` was removed: close it.
    Close,
    /// A new address, bound already.
    Open(SocketAddr, TcpListener),
}

/// Owns the listener tasks.
pub struct Server {
    eg: Arc<Egress>,
    running: Mutex<Vec<Running>>,
    metrics: Mutex<Option<(SocketAddr, JoinHandle<()>)>>,
}

/// A listener: its side, socket, index among the side's sockets, and the
/// peer it is connected to (see [`backend_peer`]).
type Want = (Side, SocketSpec, u8, Option<SocketAddr>);

fn wanted(s: &Settings) -> Vec<Want> {
    let mut v: Vec<Want> = s
        .public
        .iter()
        .enumerate()
        .map(|(i, sp)| (Side::Public, *sp, i as u8, None))
        .collect();
    v.extend(
        s.internal
            .iter()
            .enumerate()
            .map(|(i, sp)| (Side::Internal, *sp, i as u8, None)),
    );
    if let Some((i, sp, peer)) = backend_peer(s) {
        v.push((Side::Internal, sp, i, Some(peer)));
    }
    v
}

/// The internal UDP socket that talks to a UDP backend gets more sockets
/// on its address, one per worker, connected to the backend: forwarded
/// requests leave through them without a route lookup (a sizeable part
/// of a send on loopback), and what the backend sends back
/// arrives on one of them (a connected socket is the kernel's best
/// match). One per worker, because sends on a shared connected socket
/// update its cached route's reference count from every core (two
/// senders on two cores lost the gain that way, measured); the unconnected
/// path uses a per-core route. The listener's other sockets still take
/// everything from anyone else. Not for port 0, whose real port only the
/// first bind learns.
fn backend_peer(s: &Settings) -> Option<(u8, SocketSpec, SocketAddr)> {
    let i = s.backend_listener;
    let sp = *s.internal.get(usize::from(i))?;
    let b = s.backend;
    let fits = sp.transport == Transport::Udp
        && b.transport == Transport::Udp
        && sp.addr.port() != 0
        && sp.addr.is_ipv4() == b.addr.is_ipv4();
    fits.then_some((i, sp, b.addr))
}

fn bind(spec: &SocketSpec, s: &Settings, peer: Option<SocketAddr>) -> std::io::Result<Bound> {
    let (workers, rcvbuf) = (s.udp_workers, s.config.listen.udp_rcvbuf);
    match spec.transport {
        Transport::Udp => match peer {
            Some(p) => Ok(Bound::Udp(udp::bind_connected_n(
                spec.addr, p, workers, rcvbuf,
            )?)),
            None => Ok(Bound::Udp(udp::bind_n(spec.addr, workers, rcvbuf)?)),
        },
        Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(spec.addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            if spec.addr.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.set_nonblocking(true)?;
            s.bind(&spec.addr.into())?;
            s.listen(1024)?;
            TcpListener::from_std(s.into()).map(Bound::Tcp)
        }
    }
}

impl Server {
    /// Binds every listener of the core's settings and starts serving.
    pub fn start(core: Arc<Core>) -> Result<Arc<Server>, ListenError> {
        let eg = Arc::new(Egress {
            core: core.clone(),
            udp: arc_swap::ArcSwap::from_pointee(Vec::new()),
            tcp: Arc::new(TcpConns::default()),
            tls: arc_swap::ArcSwapOption::empty(),
            tls_client: arc_swap::ArcSwap::new(
                tls::client_config(&core.settings().config.tls).map_err(ListenError::Tls)?,
            ),
            dns: Arc::new(Dns::system()),
            rt: tokio::runtime::Handle::current(),
        });
        let server = Arc::new(Server {
            eg,
            running: Mutex::new(Vec::new()),
            metrics: Mutex::new(None),
        });
        let settings = core.settings();
        let cert = tls_config(&settings)?;
        let metrics = server.prepare_metrics(&settings)?;
        server.rebind(&settings, false)?;
        server.eg.tls.store(cert);
        server.install_metrics(metrics);
        Ok(server)
    }

    pub fn egress(&self) -> &Arc<Egress> {
        &self.eg
    }

    /// Applies new settings: bind what is new (a failure refuses the
    /// reload and changes nothing), swap the settings, close what is gone.
    /// The certificate is loaded first: a pair that does not load refuses
    /// the reload; a good one serves the handshakes from then on, while
    /// established TLS connections keep the one they were made with.
    pub fn reload(&self, settings: Settings) -> Result<(), ListenError> {
        let cert = tls_config(&settings)?;
        let client = tls::client_config(&settings.config.tls).map_err(ListenError::Tls)?;
        let metrics = self.prepare_metrics(&settings)?;
        self.rebind(&settings, true)?;
        self.eg.tls.store(cert);
        self.eg.tls_client.store(client);
        self.install_metrics(metrics);
        Ok(())
    }

    /// Binds missing listeners; on success swaps the settings into the
    /// core (if `swap`) and retires listeners that are no longer wanted.
    fn rebind(&self, s: &Settings, swap: bool) -> Result<(), ListenError> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let want = wanted(s);
        let is_new = |&(side, spec, _, peer): &Want| {
            !running
                .iter()
                .any(|r| r.side == side && r.spec == spec && r.peer == peer)
        };
        // No other process may hold a new listener's address (see
        // `exclusive`): probed and bound under the bind lock.
        let _bind_lock = BindLock::take();
        let ours: Vec<SocketSpec> = running.iter().map(|r| r.spec).collect();
        for (side, spec, _, _) in want.iter().filter(|w| w.3.is_none() && is_new(w)) {
            if let Err(busy) = exclusive::check(spec, &ours) {
                return Err(ListenError::Busy {
                    side: *side,
                    spec: *spec,
                    busy,
                });
            }
        }
        let mut fresh = Vec::new();
        for &(side, spec, idx, peer) in &want {
            if !is_new(&(side, spec, idx, peer)) {
                continue;
            }
            match (bind(&spec, s, peer), peer) {
                (Ok(b), _) => fresh.push((side, spec, idx, peer, b)),
                // Only a shortcut: the listener's own sockets reach the
                // backend too.
                (Err(e), Some(p)) => {
                    tracing::warn!(socket = %spec, backend = %p, error = %e, "cannot connect a socket to the backend; sending unconnected")
                }
                (Err(error), None) => return Err(ListenError::Bind { side, spec, error }),
            }
        }
        if swap {
            self.eg.core.reload(s.clone());
        }
        // Existing listeners keep running with their new index.
        for r in running.iter() {
            if let Some((_, _, idx, _)) = want
                .iter()
                .find(|(sd, sp, _, p)| *sd == r.side && *sp == r.spec && *p == r.peer)
            {
                r.listener.store(*idx, Relaxed);
            }
        }
        let mut udp_list: Vec<UdpEntry> = self
            .eg
            .udp
            .load()
            .iter()
            .filter(|e| {
                want.iter()
                    .any(|(sd, sp, _, p)| *sd == e.side && *sp == e.spec && *p == e.peer)
            })
            .cloned()
            .collect();
        for (side, spec, idx, peer, b) in fresh {
            let listener = Arc::new(AtomicU8::new(idx));
            let stop = Arc::new(AtomicBool::new(false));
            let task = match b {
                Bound::Udp(socks) => {
                    for (i, sock) in socks.into_iter().enumerate() {
                        let entry = UdpEntry {
                            side,
                            spec,
                            socket: sock,
                            peer,
                        };
                        udp_list.push(entry.clone());
                        let (eg, l, st) = (self.eg.clone(), listener.clone(), stop.clone());
                        let name = match peer {
                            Some(_) => format!("udp-backend-{i}"),
                            None => format!("udp-{}-{i}", side.as_str()),
                        };
                        let spawned = std::thread::Builder::new()
                            .name(name)
                            .spawn(move || udp::worker(eg, entry, i, l, st));
                        if let Err(e) = spawned {
                            tracing::error!(socket = %spec, error = %e, "cannot start a UDP worker");
                        }
                    }
                    None
                }
                Bound::Tcp(l) if spec.transport.is_websocket() => Some(tokio::spawn(
                    ws::accept_loop(self.eg.clone(), l, side, spec.transport, listener.clone()),
                )),
                Bound::Tcp(l) if spec.transport == Transport::Tls => Some(tokio::spawn(
                    tls::accept_loop(self.eg.clone(), l, side, listener.clone()),
                )),
                Bound::Tcp(l) => Some(tokio::spawn(accept_loop(
                    self.eg.clone(),
                    l,
                    side,
                    listener.clone(),
                ))),
            };
            match peer {
                Some(p) => {
                    tracing::info!(side = side.as_str(), socket = %spec, backend = %p, "connected to the backend")
                }
                None => tracing::info!(side = side.as_str(), socket = %spec, "listening"),
            }
            running.push(Running {
                side,
                spec,
                peer,
                listener,
                task,
                stop,
            });
        }
        self.eg.udp.store(Arc::new(udp_list));
        running.retain(|r| {
            let keep = want
                .iter()
                .any(|(sd, sp, _, p)| *sd == r.side && *sp == r.spec && *p == r.peer);
            if !keep {
                tracing::info!(side = r.side.as_str(), socket = %r.spec, "closing listener");
                r.retire();
            }
            keep
        });
        Ok(())
    }

    /// Binds the metrics listener when its address changes.
    fn prepare_metrics(&self, s: &Settings) -> Result<MetricsChange, ListenError> {
        let want = s.config.metrics.listen;
        let cur = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref().map(|(a, _)| *a) == want {
            return Ok(MetricsChange::Keep);
        }
        drop(cur);
        let Some(addr) = want else {
            return Ok(MetricsChange::Close);
        };
        let failed = |error: std::io::Error| {
            // Exclusive anyway (no SO_REUSEPORT); the error names the holder.
            let holders = match error.kind() {
                std::io::ErrorKind::AddrInUse => exclusive::holders(&SocketSpec {
                    transport: Transport::Tcp,
                    addr,
                }),
                _ => Vec::new(),
            };
            ListenError::Metrics {
                addr,
                error,
                holders,
            }
        };
        let std = std::net::TcpListener::bind(addr).map_err(failed)?;
        std.set_nonblocking(true).map_err(failed)?;
        let l = TcpListener::from_std(std).map_err(failed)?;
        Ok(MetricsChange::Open(addr, l))
    }

    fn install_metrics(&self, m: MetricsChange) {
        if let MetricsChange::Keep = m {
            return;
        }
        let mut cur = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, task)) = cur.take() {
            task.abort();
        }
        if let MetricsChange::Open(addr, l) = m {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            *cur = Some((addr, tokio::spawn(http::serve(l, self.eg.clone()))));
        }
    }

    /// Stops receiving: every listener task ends.
    pub fn shutdown(&self) {
        for r in self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            r.retire();
        }
        if let Some((_, t)) = self
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines start and a refused reload log (operators and the e2e
    /// scripts read them).
    #[test]
    fn listen_errors_say_which_socket_and_why() {
        let spec: SocketSpec = "udp:192.0.2.1:5060".parse().unwrap();
        let refused = || std::io::Error::from(std::io::ErrorKind::AddrNotAvailable);
        let bind = ListenError::Bind {
            side: Side::Public,
            spec,
            error: refused(),
        };
        assert_eq!(
            bind.to_string(),
            format!(
                "cannot bind public socket udp:192.0.2.1:5060: {}",
                refused()
            )
        );
        let busy = ListenError::Busy {
            side: Side::Internal,
            spec,
            busy: exclusive::Busy::By(vec![(42, "sipwarden".into())]),
        };
        assert!(
            busy.to_string()
                .starts_with("internal socket udp:192.0.2.1:5060 is already in use by PID 42 (sipwarden): another sipwarden"),
            "{busy}"
        );
        let addr: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        let metrics = |holders| ListenError::Metrics {
            addr,
            error: std::io::Error::from(std::io::ErrorKind::AddrInUse),
            holders,
        };
        assert!(metrics(vec![])
            .to_string()
            .starts_with("cannot bind metrics.listen 127.0.0.1:9100: "));
        assert_eq!(
            metrics(vec![(7, "nginx".into())]).to_string(),
            "cannot bind metrics.listen: metrics socket tcp:127.0.0.1:9100 is already in use by \
             PID 7 (nginx): stop that program or give sipwarden another socket"
        );
    }
}
