//! Batched UDP I/O: `recvmmsg` and `sendmmsg` move up to a batch of
//! datagrams per system call, which is what makes the drop path cheap
//! under a flood. Received datagrams become `Bytes` that share their
//! slot's buffer: once the core is done with them, the next receive
//! reuses the same memory, so the steady state allocates nothing.
//!
//! Crate-private: the unsafe part (the kernel writing into the slots'
//! spare capacity) is sound because nothing outside this module can reach
//! a slot. A receive hands out its datagrams through [`Received`], which
//! yields each filled slot once and borrows the batch, so no slot can be
//! read twice or while the kernel may write it.

use std::io;
use std::iter::FusedIterator;
use std::mem::zeroed;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use socket2::{SockAddr, SockAddrStorage};

/// One received datagram.
pub(crate) struct Datagram {
    pub data: Bytes,
    pub from: SocketAddr,
    /// Larger than the slot: cut, to be counted as too large.
    pub truncated: bool,
}

/// Receive slots and the kernel's descriptors for them. The descriptors
/// point into the vectors' heap buffers, never into the struct, so it can
/// move freely. All are set up once; before each call only the slots the
/// last call filled are set up again: the others still point at their
/// unused buffers, and at a datagram per call (ordinary traffic) setting
/// up all of them would cost more than handling the message.
///
/// Invariant: every slot outside `0..filled` is armed (its buffer is
/// empty and its descriptors point at its spare capacity and address
/// storage); every slot in `0..filled` holds what the last `recvmmsg`
/// wrote, untouched unless [`Received`] has handed it out. Not `Send`
/// (raw pointers inside): a batch lives in its worker thread.
pub(crate) struct RecvBatch {
    slots: Vec<BytesMut>,
    slot_size: usize,
    addrs: Vec<SockAddrStorage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Datagrams of the last call; their slots need setting up again.
    filled: usize,
}

impl RecvBatch {
    pub fn new(n: usize, slot_size: usize) -> RecvBatch {
        let n = n.max(1);
        let mut b = RecvBatch {
            slots: (0..n).map(|_| BytesMut::with_capacity(slot_size)).collect(),
            slot_size,
            addrs: (0..n).map(|_| SockAddrStorage::zeroed()).collect(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ],
            // SAFETY: mmsghdr is a C struct of integers and raw pointers,
            // for which all zeroes (null pointers, zero lengths) is a valid
            // value; `arm` fills in every header below.
            hdrs: vec![unsafe { zeroed() }; n],
            filled: 0,
        };
        for i in 0..n {
            b.arm(i);
        }
        b
    }

    /// Points slot `i`'s descriptors at the free space of its buffer.
    fn arm(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.clear();
        // Reuses the slot's buffer when the last datagram from it is
        // gone; allocates only when one is still in use.
        slot.reserve(self.slot_size);
        let spare = slot.spare_capacity_mut();
        self.iovs[i] = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: self.slot_size.min(spare.len()),
        };
        let name = &mut self.addrs[i];
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_namelen = name.size_of();
        h.msg_name = (name as *mut SockAddrStorage).cast();
        h.msg_iov = &mut self.iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
        self.hdrs[i].msg_len = 0;
    }

    /// Waits for at least one datagram (up to the socket's receive
    /// timeout) and takes as many as are queued, up to the batch size.
    /// The datagrams come out of the returned [`Received`]; none on
    /// timeout.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<Received<'_>> {
        let n = self.slots.len();
        for i in 0..self.filled {
            self.arm(i);
        }
        // Every slot is armed now: if the call fails, none holds a datagram.
        self.filled = 0;
        // SAFETY: `fd` is an open descriptor, borrowed for the call. The
        // `n` headers are all armed (above, or in `new` and not filled
        // since): each points at its slot's address storage (`msg_namelen`
        // bytes) and at an iovec of `iov_len` bytes of its slot's spare
        // capacity, which no `Bytes` shares (the slot was emptied and
        // reserved, and not split since). These are heap buffers owned by
        // `self`, which the `&mut` borrow keeps alive and unmoved for the
        // call; the kernel writes nothing else.
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted
                // A connected socket's pending ICMP error (its peer was
                // down when something was sent): reading it clears it.
                | io::ErrorKind::ConnectionRefused => Ok(Received::new(self)),
                _ => Err(e),
            };
        }
        // The kernel wrote into the first `filled` descriptors (lengths,
        // flags, addresses) and their slots' spare capacity.
        self.filled = (r as usize).min(n);
        Ok(Received::new(self))
    }
}

/// The datagrams of one receive, each handed out once: the cursor only
/// moves forward, and it borrows the batch, so the next receive (which
/// sets the slots up again) can start only when it is gone.
pub(crate) struct Received<'a> {
    batch: &'a mut RecvBatch,
    next: usize,
}

impl<'a> Received<'a> {
    fn new(batch: &'a mut RecvBatch) -> Received<'a> {
        Received { batch, next: 0 }
    }

    /// How many datagrams the receive took (those without an IP source
    /// address, which no UDP socket reports, are skipped by the iterator).
    pub fn received(&self) -> usize {
        self.batch.filled
    }
}

impl Iterator for Received<'_> {
    type Item = Datagram;

    // Inlined into the worker's loop: a call per datagram (and one more
    // to find the batch done) is a visible cost at a datagram or two per
    // receive.
    #[inline]
    fn next(&mut self) -> Option<Datagram> {
        let b = &mut *self.batch;
        while self.next < b.filled {
            let i = self.next;
            // Past slot `i` before anything of it is handed out: no later
            // call of this cursor can reach it again.
            self.next += 1;
            let h = &b.hdrs[i];
            let len = (h.msg_len as usize).min(b.iovs[i].iov_len);
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let namelen = h.msg_hdr.msg_namelen;
            let Some(from) = source(&b.addrs[i], namelen) else {
                continue;
            };
            let slot = &mut b.slots[i];
            // SAFETY: slot `i` is in `0..filled`, so the last `recvmmsg`
            // wrote `msg_len` bytes (`iov_len` at most: a longer datagram
            // is cut and flagged MSG_TRUNC) at the start of its spare
            // capacity, where the slot's iovec points: it was emptied when
            // armed, so its spare capacity starts at the buffer's start,
            // and nothing has touched it since (only this cursor reaches
            // filled slots, once each: `next` moved past `i` above).
            unsafe { slot.set_len(len) };
            return Some(Datagram {
                data: slot.split().freeze(),
                from,
                truncated,
            });
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.batch.filled - self.next))
    }
}

impl FusedIterator for Received<'_> {}

/// The source address the kernel wrote into `st` (`len` bytes; none
/// when it wrote no address).
fn source(st: &SockAddrStorage, len: libc::socklen_t) -> Option<SocketAddr> {
    if len == 0 || len > st.size_of() {
        return None;
    }
    // SAFETY: `SockAddrStorage` is plain data (a C struct of integers: no
    // pointers, no `Drop`), so a bitwise copy is a value of its own and
    // leaves the original as it was; all of it is initialised (zeroed in
    // `new`, then only written by the kernel). What `SockAddr::new` asks:
    // the kernel wrote a socket address of `len` bytes (no more than the
    // storage holds, checked above) whose family field says its type.
    // (A copy rather than `mem::replace` with a zeroed one: zeroing all
    // 128 bytes per datagram is wasted work; only the few bytes
    // `as_socket` reads are loaded.)
    unsafe { SockAddr::new(std::ptr::read(st), len) }.as_socket()
}

/// Sends a set of datagrams from one socket with as few `sendmmsg` calls
/// as the kernel allows, without blocking. Returns how many were sent;
/// the rest (send buffer full) are dropped by the caller's count.
pub(crate) fn send_all(fd: BorrowedFd<'_>, msgs: &[(Bytes, SocketAddr)]) -> usize {
    send_each(fd, msgs.len(), |i| (&msgs[i].0, Some(&msgs[i].1)))
}

/// Sends datagrams to the peer of a connected socket: no address per
/// message, so the kernel reuses the socket's cached route instead of
/// looking one up per datagram (a sizeable part of what a datagram costs
/// to send and deliver on loopback).
pub(crate) fn send_connected(fd: BorrowedFd<'_>, msgs: &[Bytes]) -> usize {
    send_each(fd, msgs.len(), |i| (&msgs[i], None))
}

/// `msg(i)`: the `i`th datagram and its destination; every message has
/// one, or none has (a connected socket).
fn send_each<'a>(
    fd: BorrowedFd<'_>,
    n: usize,
    msg: impl Fn(usize) -> (&'a Bytes, Option<&'a SocketAddr>),
) -> usize {
    let mut sent = 0;
    let mut start = 0;
    while start < n {
        let end = (start + 64).min(n);
        // On the stack for the few datagrams of ordinary traffic (three
        // heap allocations per send otherwise); a flood's full batches
        // spill to the heap once per batch.
        let mut addrs: SmallVec<[SockAddr; 4]> = SmallVec::new();
        let mut iovs: SmallVec<[libc::iovec; 4]> = SmallVec::new();
        for i in start..end {
            let (d, to) = msg(i);
            if let Some(to) = to {
                addrs.push(SockAddr::from(*to));
            }
            iovs.push(libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            });
        }
        debug_assert!(addrs.is_empty() || addrs.len() == iovs.len());
        // SAFETY: mmsghdr is a C struct of integers and raw pointers, for
        // which all zeroes (null pointers, zero lengths) is a valid value;
        // filled in below.
        let empty: libc::mmsghdr = unsafe { zeroed() };
        let mut hdrs: SmallVec<[libc::mmsghdr; 4]> = smallvec::smallvec![empty; end - start];
        for (i, h) in hdrs.iter_mut().enumerate() {
            // A null name: the connected socket's peer.
            if let Some(to) = addrs.get(i) {
                // `*mut` only because the C struct says so: the kernel
                // reads a destination address, never writes it.
                h.msg_hdr.msg_name = to.as_ptr().cast_mut().cast();
                h.msg_hdr.msg_namelen = to.len();
            }
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut off = 0;
        let mut retried = usize::MAX;
        while off < hdrs.len() {
            // SAFETY: `fd` is an open descriptor, borrowed for the call.
            // The headers `off..` are in bounds and point at `addrs` (each
            // a whole address of its stated length), at `iovs` and through
            // them at the `Bytes` that `msg` lent (each `iov_len` bytes),
            // all alive and unmoved until the call returns. The kernel
            // reads those and writes only each header's `msg_len`.
            let r = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    hdrs[off..].as_mut_ptr(),
                    (hdrs.len() - off) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                let e = io::Error::last_os_error();
                if r < 0 && e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // A connected socket reports an ICMP error of an earlier
                // datagram (the peer was down) on the next send, which was
                // not sent: send it again, once.
                if r < 0 && e.kind() == io::ErrorKind::ConnectionRefused && retried != off {
                    retried = off;
                    continue;
                }
                // Full send buffer, or an unreachable destination: skip
                // the message at `off` and go on with the rest.
                off += 1;
                continue;
            }
            off += r as usize;
            sent += r as usize;
        }
        start = end;
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    /// Two loopback sockets; the second receives, with a timeout.
    fn pair(timeout: Duration) -> (UdpSocket, UdpSocket, SocketAddr) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(timeout)).unwrap();
        let to = b.local_addr().unwrap();
        (a, b, to)
    }

    #[test]
    fn batches_roundtrip_and_slots_are_reused() {
        let (a, b, to) = pair(Duration::from_millis(500));
        let msgs: Vec<(Bytes, SocketAddr)> = (0..10)
            .map(|i| (Bytes::from(format!("datagram {i}")), to))
            .collect();
        assert_eq!(send_all(a.as_fd(), &msgs), 10);
        let mut batch = RecvBatch::new(4, 2048);
        let mut got = Vec::new();
        while got.len() < 10 {
            let r = batch.recv(b.as_fd()).unwrap();
            assert!(r.received() > 0, "timed out after {}", got.len());
            for d in r {
                assert_eq!(d.from, a.local_addr().unwrap());
                assert!(!d.truncated);
                got.push(d.data);
            }
        }
        assert_eq!(got[0], "datagram 0");
        assert_eq!(got[9], "datagram 9");
        // Slots set up calls ago (not filled since) and slots just handed
        // out, while earlier datagrams are still held: all receive intact.
        let held = got;
        for round in 0..3 {
            let msgs: Vec<(Bytes, SocketAddr)> = (0..4)
                .map(|i| (Bytes::from(format!("round {round} datagram {i}")), to))
                .collect();
            assert_eq!(send_all(a.as_fd(), &msgs), 4);
            let mut seen = Vec::new();
            while seen.len() < 4 {
                let r = batch.recv(b.as_fd()).unwrap();
                assert!(r.received() > 0);
                seen.extend(r.map(|d| d.data));
            }
            for (i, d) in seen.iter().enumerate() {
                assert_eq!(d, &format!("round {round} datagram {i}"));
            }
        }
        assert_eq!(held[3], "datagram 3");
    }

    /// The shape of the bug the cursor replaced (an index-based `take`
    /// set a slot's length over uninitialised memory when asked for the
    /// same slot twice): a receive's datagrams, an empty one and one
    /// larger than a slot among them, come out as sent, each once, and
    /// none of them again after the cursor is done or dropped.
    #[test]
    fn each_datagram_comes_out_once_as_sent() {
        let (a, b, to) = pair(Duration::from_millis(500));
        let long: Bytes = (0..100u8).collect::<Vec<u8>>().into();
        let sent = [
            Bytes::from_static(b"first"),
            Bytes::new(),
            long.clone(),
            Bytes::from_static(b"last"),
        ];
        let msgs: Vec<(Bytes, SocketAddr)> = sent.iter().map(|d| (d.clone(), to)).collect();
        assert_eq!(send_all(a.as_fd(), &msgs), 4);
        let mut batch = RecvBatch::new(8, 64);
        let mut got = Vec::new();
        while got.len() < 4 {
            let mut r = batch.recv(b.as_fd()).unwrap();
            assert!(r.received() > 0, "timed out after {}", got.len());
            got.extend(r.by_ref().map(|d| (d.data, d.truncated, d.from)));
            // Done, and stays done.
            assert!(r.next().is_none());
            assert!(r.next().is_none());
        }
        let want = [
            (sent[0].clone(), false),
            (Bytes::new(), false),
            // Cut at the slot size, and flagged so the caller counts it.
            (long.slice(..64), true),
            (sent[3].clone(), false),
        ];
        for (i, ((data, truncated, from), (w, wt))) in got.iter().zip(&want).enumerate() {
            assert_eq!((data, truncated), (w, wt), "datagram {i}");
            assert_eq!(*from, a.local_addr().unwrap());
        }
        assert_eq!(got.len(), 4);

        // A cursor dropped half way: the rest of its datagrams are gone,
        // and the next receive (nothing queued: it times out) gives out
        // nothing of them.
        let msgs: Vec<(Bytes, SocketAddr)> = (0..3)
            .map(|i| (Bytes::from(format!("half {i}")), to))
            .collect();
        assert_eq!(send_all(a.as_fd(), &msgs), 3);
        std::thread::sleep(Duration::from_millis(20));
        b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        {
            let mut r = batch.recv(b.as_fd()).unwrap();
            assert_eq!(r.received(), 3);
            assert_eq!(r.next().unwrap().data, "half 0");
        }
        let r = batch.recv(b.as_fd()).unwrap();
        assert_eq!(r.received(), 0);
        assert_eq!(r.count(), 0);
    }

    /// Sources of both families come back as the kernel reported them.
    #[test]
    fn sources_of_both_families() {
        for ip in ["127.0.0.1", "::1"] {
            let b = match UdpSocket::bind((ip, 0)) {
                Ok(b) => b,
                // A host without IPv6.
                Err(e)
                    if ip == "::1"
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
                        ) =>
                {
                    eprintln!("no IPv6 loopback here ({e}): IPv4 only");
                    continue;
                }
                Err(e) => panic!("{ip}: {e}"),
            };
            let a = UdpSocket::bind((ip, 0)).unwrap();
            b.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let to = b.local_addr().unwrap();
            assert_eq!(send_all(a.as_fd(), &[(Bytes::from("x"), to)]), 1);
            let mut batch = RecvBatch::new(2, 16);
            let d: Vec<Datagram> = batch.recv(b.as_fd()).unwrap().collect();
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].from, a.local_addr().unwrap());
        }
    }

    /// A connected socket whose peer was down holds the ICMP error for its
    /// next call: the next send must still go out, and a receive must
    /// report nothing rather than fail.
    #[test]
    fn connected_socket_recovers_after_its_peer_was_down() {
        // A port nobody listens on, then a listener on it.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = probe.local_addr().unwrap();
        drop(probe);
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        assert_eq!(send_connected(s.as_fd(), &[Bytes::from("lost")]), 1);
        std::thread::sleep(Duration::from_millis(20));
        let peer = UdpSocket::bind(to).unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        // The ICMP error is pending; this send reports it, then goes.
        assert_eq!(send_connected(s.as_fd(), &[Bytes::from("after")]), 1);
        let mut buf = [0u8; 64];
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");

        // The same error met by a receive instead.
        drop(peer);
        assert_eq!(send_connected(s.as_fd(), &[Bytes::from("lost")]), 1);
        std::thread::sleep(Duration::from_millis(20));
        let mut batch = RecvBatch::new(2, 64);
        assert_eq!(batch.recv(s.as_fd()).unwrap().count(), 0);
        let peer = UdpSocket::bind(to).unwrap();
        peer.send_to(b"back", s.local_addr().unwrap()).unwrap();
        let got: Vec<Bytes> = batch.recv(s.as_fd()).unwrap().map(|d| d.data).collect();
        assert_eq!(got, ["back"]);
    }
}
