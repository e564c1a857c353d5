//! TCP: Content-Length framing, CRLF keepalive pongs (RFC 5626 4.4.1), a
//! table of live connections keyed by remote address so that responses go
//! back over the connection their request came on and outgoing connections
//! are reused, a connection cap, an idle timeout, and the drain of queued
//! writes at shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use dashmap::DashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

use sipwarden_core::flow::{Flow, Side, Transport, OPENED_TLS};
use sipwarden_core::metrics::Event;
use sipwarden_core::proxy::Transmit;
use sipwarden_core::sip::{frame, Frame};

use super::egress::Egress;
use super::now_ms;

/// Messages queued per connection before sends are refused.
const QUEUE: usize = 512;
/// Read space of a connection with nothing pending: one REGISTER refresh
/// fits. Most of a PBX's connections wait minutes between refreshes, so
/// this, not [`BUSY_READ`], is what an idle connection holds.
const QUIET_READ: usize = 1024;
/// Read space made once messages arrive faster than one per read.
const BUSY_READ: usize = 8192;
/// A connection quiet this long with nothing pending gives back the read
/// space it grew to.
const QUIET_AFTER: Duration = Duration::from_secs(1);
/// How long a closed connection's writer may take to send what is queued
/// before it is dropped (a peer that stopped reading must not keep it).
pub(super) const WRITER_GRACE: Duration = Duration::from_secs(2);

struct Conn {
    id: u64,
    tx: mpsc::Sender<Bytes>,
}

/// Live connections of both sides, TLS ones included (keyed apart: a
/// message for a TLS flow never goes out in clear).
#[derive(Default)]
pub struct TcpConns {
    map: DashMap<(Side, Transport, SocketAddr), Conn>,
    count: AtomicUsize,
    next_id: AtomicU64,
    /// Set at shutdown: readers stop, no new connection is opened.
    closing: AtomicBool,
    /// Wakes the readers at shutdown.
    stop: Notify,
    /// Writer tasks still running, and the wake-up when the last ends.
    writers: AtomicUsize,
    writers_done: Notify,
}

/// Counts a running writer task; the count drops however the task ends.
pub(super) struct WriterGuard(Arc<TcpConns>);

impl WriterGuard {
    pub(super) fn new(conns: &Arc<TcpConns>) -> WriterGuard {
        conns.writers.fetch_add(1, Relaxed);
        WriterGuard(conns.clone())
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if self.0.writers.fetch_sub(1, Relaxed) == 1 {
            self.0.writers_done.notify_waiters();
        }
    }
}

impl TcpConns {
    /// At shutdown: stops every reader (what a connection still sends is
    /// no longer handled) and waits until every connection's queued writes
    /// have been written and the connection closed, or `limit`, whichever
    /// comes first. Returns the connections still writing at the limit.
    pub async fn drain(&self, limit: Duration) -> usize {
        self.closing.store(true, Relaxed);
        self.stop.notify_waiters();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before the count is read: a writer ending in
            // between still wakes it.
            let done = self.writers_done.notified();
            let left = self.writers.load(Relaxed);
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return self.writers.load(Relaxed);
            }
        }
    }

    /// True once shutdown began: readers of every kind stop.
    pub(super) fn closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    /// Completes at shutdown; made before [`Self::closing`] is read, so a
    /// shutdown in between still wakes the reader.
    pub(super) fn stopped(&self) -> tokio::sync::futures::Notified<'_> {
        self.stop.notified()
    }

    /// True when a connection to `remote` is registered under this side
    /// and transport.
    pub(super) fn has(&self, side: Side, transport: Transport, remote: SocketAddr) -> bool {
        self.map.contains_key(&(side, transport, remote))
    }

    pub fn len(&self) -> usize {
        self.count.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `data` on the connection to `to`, opening one when there is
    /// none and `reuse_only` is false (over TLS, a TLS connection: to a
    /// provider reached over TLS). `Err(on_fail)` when it cannot be queued
    /// now; a connect that fails later sends `on_fail` itself.
    pub fn send(
        &self,
        eg: &Arc<Egress>,
        to: Peer<'_>,
        data: Bytes,
        reuse_only: bool,
        on_fail: Option<Box<Transmit>>,
    ) -> Result<(), Option<Box<Transmit>>> {
        let key = (to.side, to.transport, to.addr);
        if let Some(c) = self.map.get(&key) {
            match c.tx.try_send(data) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => return Err(on_fail),
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    drop(c);
                    self.map.remove(&key);
                    if reuse_only {
                        return Err(on_fail);
                    }
                    return self.connect(eg, to, d, on_fail);
                }
            }
        }
        if reuse_only {
            return Err(on_fail);
        }
        self.connect(eg, to, data, on_fail)
    }

    /// Takes a place under `tcp.max_connections`; false (counted) when
    /// there is none.
    pub(super) fn reserve(&self, eg: &Egress) -> bool {
        let max = eg.core.settings().config.tcp.max_connections;
        let n = self.count.fetch_add(1, Relaxed);
        if n >= max {
            self.count.fetch_sub(1, Relaxed);
            eg.core.metrics().event(Event::TcpRefused);
            return false;
        }
        true
    }

    /// Gives back a place [`Self::reserve`] took, for a connection that
    /// ends before it is registered (a refused TLS hello).
    pub(super) fn release(&self) {
        self.count.fetch_sub(1, Relaxed);
    }

    /// Registers a connection and returns its id and receiver.
    pub(super) fn register(
        &self,
        side: Side,
        transport: Transport,
        remote: SocketAddr,
    ) -> (u64, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Relaxed);
        self.map
            .insert((side, transport, remote), Conn { id, tx: tx.clone() });
        (id, tx, rx)
    }

    pub(super) fn unregister(&self, side: Side, transport: Transport, remote: SocketAddr, id: u64) {
        self.map
            .remove_if(&(side, transport, remote), |_, c| c.id == id);
        self.count.fetch_sub(1, Relaxed);
    }

    /// Opens a connection to `to` (TCP, or TLS verified against the
    /// name it was reached by) with `first` queued, and serves it. A
    /// connection sipwarden opened over TLS is a provider's: its flow's
    /// listener is [`OPENED_TLS`], so a flow token naming it says TLS.
    fn connect(
        &self,
        eg: &Arc<Egress>,
        to: Peer<'_>,
        first: Bytes,
        on_fail: Option<Box<Transmit>>,
    ) -> Result<(), Option<Box<Transmit>>> {
        if self.closing() || !self.reserve(eg) {
            return Err(on_fail);
        }
        let Peer {
            side,
            transport,
            addr: dest,
            host,
        } = to;
        let (id, tx, rx) = self.register(side, transport, dest);
        // Queued before the connection exists: sent once it is up.
        let _ = tx.try_send(first);
        let name = super::tls::server_name(host, dest);
        let eg = eg.clone();
        eg.rt.clone().spawn(async move {
            let timeout = Duration::from_millis(eg.core.settings().config.tcp.connect_timeout.ms());
            let stream = match tokio::time::timeout(timeout, TcpStream::connect(dest)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return connect_failed(&eg, side, transport, dest, id, &e, on_fail),
                Err(_) => {
                    return connect_failed(&eg, side, transport, dest, id, &"timed out", on_fail)
                }
            };
            let local = stream.local_addr().unwrap_or(dest);
            let _ = stream.set_nodelay(true);
            let listener = {
                let s = eg.core.settings();
                match (side, transport) {
                    (_, Transport::Tls) => OPENED_TLS,
                    (Side::Public, _) => s.public_for(Transport::Tcp).unwrap_or(0),
                    (Side::Internal, _) => s.internal_for(Transport::Tcp).unwrap_or(0),
                }
            };
            let flow = Flow {
                side,
                transport,
                listener,
                local,
                remote: dest,
            };
            if transport == Transport::Tls {
                match super::tls::connect(&eg, stream, name).await {
                    Ok(tls) => {
                        let (rd, wr) = tokio::io::split(tls);
                        run(eg.clone(), rd, wr, flow, id, tx, rx).await;
                    }
                    Err(e) => {
                        eg.core.metrics().event(Event::TlsConnectFailures);
                        connect_failed(&eg, side, transport, dest, id, &e, on_fail);
                    }
                }
            } else {
                let (rd, wr) = stream.into_split();
                run(eg.clone(), rd, wr, flow, id, tx, rx).await;
            }
        });
        Ok(())
    }
}

/// A connection sipwarden opened could not be set up: counted, logged,
/// its place given back, and Asterisk told (`on_fail`).
fn connect_failed(
    eg: &Arc<Egress>,
    side: Side,
    transport: Transport,
    dest: SocketAddr,
    id: u64,
    error: &dyn std::fmt::Display,
    on_fail: Option<Box<Transmit>>,
) {
    tracing::warn!(%dest, %transport, error = %error, "connect failed");
    eg.core.metrics().event(Event::SendErrors);
    eg.tcp.unregister(side, transport, dest, id);
    if let Some(f) = on_fail {
        eg.send(*f);
    }
}

/// Where a stream send goes: the connection table's key, and the host
/// name the address was resolved from (what a TLS connection opened to it
/// verifies and sends as SNI; `None`: the address itself).
pub struct Peer<'a> {
    pub side: Side,
    pub transport: Transport,
    pub addr: SocketAddr,
    pub host: Option<&'a str>,
}

/// Accepts connections on a listener until the task is aborted.
pub async fn accept_loop(
    eg: Arc<Egress>,
    listener: TcpListener,
    side: Side,
    listener_idx: Arc<std::sync::atomic::AtomicU8>,
) {
    loop {
        let (stream, flow) = accept(&eg, &listener, side, Transport::Tcp, &listener_idx).await;
        let (id, tx, rx) = eg.tcp.register(side, Transport::Tcp, flow.remote);
        let (rd, wr) = stream.into_split();
        tokio::spawn(run(eg.clone(), rd, wr, flow, id, tx, rx));
    }
}

/// The next connection on a TCP or TLS listener that fits under
/// `tcp.max_connections` (its place is reserved: the caller releases it
/// if it ends the connection before registering it), with its flow. An
/// accept error is logged and retried after a short pause.
pub(super) async fn accept(
    eg: &Arc<Egress>,
    listener: &TcpListener,
    side: Side,
    transport: Transport,
    listener_idx: &std::sync::atomic::AtomicU8,
) -> (TcpStream, Flow) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !eg.tcp.reserve(eg) {
            tracing::debug!(%remote, ?transport, "connection refused: tcp.max_connections reached");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        let flow = Flow {
            side,
            transport,
            listener: listener_idx.load(Relaxed),
            local,
            remote,
        };
        return (stream, flow);
    }
}

/// Serves one connection: a writer draining the queue and a reader that
/// frames the stream and hands each frame to the core (a message, a CRLF
/// ping, a framing error), carrying out what it returns. `tx`, the queue's
/// own sender, is held until the reader ends, so the writer outlives a
/// table entry another connection from the same address replaced. The
/// same for a TLS connection once its handshake is done: `rd` and `wr` are
/// the halves of either stream.
pub(super) async fn run<R, W>(
    eg: Arc<Egress>,
    mut rd: R,
    mut wr: W,
    flow: Flow,
    id: u64,
    tx: mpsc::Sender<Bytes>,
    mut rx: mpsc::Receiver<Bytes>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let guard = WriterGuard::new(&eg.tcp);
    let mut writer = tokio::spawn(async move {
        let _guard = guard;
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = BytesMut::with_capacity(QUIET_READ);
    let idle = Duration::from_millis(eg.core.settings().config.tcp.idle_timeout.ms());
    // Created before the flag is read: a shutdown in between still wakes it.
    let stop = eg.tcp.stopped();
    tokio::pin!(stop);
    'conn: loop {
        if eg.tcp.closing() {
            break;
        }
        // A connection quiet for QUIET_AFTER with nothing pending gives
        // back the read space it grew to; a busy one keeps it. `read_buf`
        // is cancel-safe: the timed-out read loses nothing.
        if buf.capacity() - buf.len() < QUIET_READ / 2 {
            buf.reserve(BUSY_READ);
        }
        let read = async {
            match tokio::time::timeout(QUIET_AFTER, rd.read_buf(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    if buf.is_empty() && buf.capacity() > QUIET_READ {
                        buf = BytesMut::with_capacity(QUIET_READ);
                    }
                    rd.read_buf(&mut buf).await
                }
            }
        };
        tokio::select! {
            _ = &mut stop => break,
            r = tokio::time::timeout(idle, read) => match r {
                Err(_) => {
                    tracing::debug!(remote = %flow.remote, "TCP connection idle, closing");
                    break;
                }
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
            },
        }
        loop {
            let limits = eg.core.settings().limits;
            match frame(&buf, &limits) {
                Frame::Incomplete => break,
                Frame::Ping(n) => {
                    buf.advance(n);
                    eg.execute(eg.core.on_ping(now_ms(), &flow));
                }
                Frame::Skip(n) => buf.advance(n),
                Frame::Message(n) => {
                    let data = buf.split_to(n).freeze();
                    let out = eg.core.handle(now_ms(), &flow, data);
                    eg.execute(out);
                }
                Frame::Error(e) => {
                    eg.execute(eg.core.on_frame_error(now_ms(), &flow, e, &buf));
                    break 'conn;
                }
            }
        }
    }
    // Unregistered first, so no new sends queue; the writer drains what
    // is queued and closes (FIN). Meanwhile what the peer still sends is
    // read and discarded: unread data at close makes the kernel reset the
    // connection, and the peer would lose the replies still in flight.
    eg.tcp
        .unregister(flow.side, flow.transport, flow.remote, id);
    drop(tx);
    // (Into the read buffer, emptied each time: an array here would be
    // part of every connection's task for its whole life.)
    let discard = async {
        buf.clear();
        while matches!(rd.read_buf(&mut buf).await, Ok(n) if n > 0) {
            buf.clear();
        }
        std::future::pending::<()>().await
    };
    let grace = WRITER_GRACE.max(eg.core.settings().config.tcp.drain_timeout.0);
    let drained = tokio::time::timeout(grace, async {
        tokio::select! {
            _ = &mut writer => {}
            _ = discard => {}
        }
    })
    .await;
    if drained.is_err() {
        writer.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sipwarden_core::flow::{Flow, Side, Transport};

    /// Every connection's task is this future for the connection's whole
    /// life: a buffer in it (a 4 KiB array once was) is paid 10,000 times
    /// over by 10,000 idle phones. The read space lives in a `BytesMut`
    /// that shrinks when the connection is quiet.
    #[tokio::test]
    async fn a_connections_task_holds_no_buffer() {
        let cfg = sipwarden_core::config::parse("[listen]\nadvertise = \"a:5060\"\n", "t").unwrap();
        let core = Arc::new(sipwarden_core::proxy::Core::new(
            sipwarden_core::settings::Settings::new(cfg),
            sipwarden_core::token::Keys::new([1; 32]),
            Default::default(),
        ));
        let eg = Arc::new(super::Egress {
            core,
            udp: arc_swap::ArcSwap::from_pointee(Vec::new()),
            tcp: Default::default(),
            tls: arc_swap::ArcSwapOption::empty(),
            tls_client: arc_swap::ArcSwap::new(
                super::super::tls::client_config(&Default::default()).unwrap(),
            ),
            dns: Arc::new(super::super::dns::Dns::system()),
            rt: tokio::runtime::Handle::current(),
        });
        let flow = Flow {
            side: Side::Public,
            transport: Transport::Tcp,
            listener: 0,
            local: "127.0.0.1:1".parse().unwrap(),
            remote: "127.0.0.1:2".parse().unwrap(),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let (rd, wr) = tokio::io::split(tokio::io::duplex(64).0);
        let task = super::run(eg, rd, wr, flow, 0, tx, rx);
        let size = std::mem::size_of_val(&task);
        assert!(size < 1024, "the connection task is {size} bytes");
    }
}
