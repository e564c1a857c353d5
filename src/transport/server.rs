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
use super::{http, udp};

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
/// requests leave through them without a route lookup (on loopback ~0.35
/// µs of a ~3 µs send, measured), and what the backend sends back
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
        Transport::Tcp => {
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
    pub fn start(core: Arc<Core>) -> Result<Arc<Server>, String> {
        let eg = Arc::new(Egress {
            core: core.clone(),
            udp: arc_swap::ArcSwap::from_pointee(Vec::new()),
            tcp: Arc::new(TcpConns::default()),
            dns: Arc::new(Dns::system()),
            rt: tokio::runtime::Handle::current(),
        });
        let server = Arc::new(Server {
            eg,
            running: Mutex::new(Vec::new()),
            metrics: Mutex::new(None),
        });
        let settings = core.settings();
        let metrics = server.prepare_metrics(&settings)?;
        server.rebind(&settings, false)?;
        server.install_metrics(metrics);
        Ok(server)
    }

    pub fn egress(&self) -> &Arc<Egress> {
        &self.eg
    }

    /// Applies new settings: bind what is new (a failure refuses the
    /// reload and changes nothing), swap the settings, close what is gone.
    pub fn reload(&self, settings: Settings) -> Result<(), String> {
        let metrics = self.prepare_metrics(&settings)?;
        self.rebind(&settings, true)?;
        self.install_metrics(metrics);
        Ok(())
    }

    /// Binds missing listeners; on success swaps the settings into the
    /// core (if `swap`) and retires listeners that are no longer wanted.
    fn rebind(&self, s: &Settings, swap: bool) -> Result<(), String> {
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
                return Err(exclusive::busy_message(side.as_str(), spec, &busy));
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
                (Err(e), None) => {
                    return Err(format!("cannot bind {} socket {spec}: {e}", side.as_str()))
                }
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

    /// Binds the metrics listener when its address changes. `Ok(None)`:
    /// nothing to change.
    fn prepare_metrics(
        &self,
        s: &Settings,
    ) -> Result<Option<Option<(SocketAddr, TcpListener)>>, String> {
        let want = s.config.metrics.listen;
        let cur = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref().map(|(a, _)| *a) == want {
            return Ok(None);
        }
        drop(cur);
        let Some(addr) = want else {
            return Ok(Some(None));
        };
        let std = std::net::TcpListener::bind(addr).map_err(|e| {
            let spec = SocketSpec {
                transport: Transport::Tcp,
                addr,
            };
            // Exclusive anyway (no SO_REUSEPORT); the error names the holder.
            let holders = match e.kind() {
                std::io::ErrorKind::AddrInUse => exclusive::holders(&spec),
                _ => Vec::new(),
            };
            if holders.is_empty() {
                format!("cannot bind metrics.listen {addr}: {e}")
            } else {
                let busy = exclusive::Busy::By(holders);
                format!(
                    "cannot bind metrics.listen: {}",
                    exclusive::busy_message("metrics", &spec, &busy)
                )
            }
        })?;
        std.set_nonblocking(true).map_err(|e| e.to_string())?;
        let l = TcpListener::from_std(std).map_err(|e| e.to_string())?;
        Ok(Some(Some((addr, l))))
    }

    fn install_metrics(&self, m: Option<Option<(SocketAddr, TcpListener)>>) {
        let Some(m) = m else {
            return;
        };
        let mut cur = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, task)) = cur.take() {
            task.abort();
        }
        if let Some((addr, l)) = m {
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
