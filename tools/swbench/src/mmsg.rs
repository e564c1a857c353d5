//! Batched datagram I/O with `recvmmsg`/`sendmmsg`.
//!
//! One syscall per batch instead of per datagram is what lets one core of
//! load generator outrun the system under test, and it is the "mmsg" half of
//! the raw relay's physical limit. The batch owns its buffers and rebuilds
//! the kernel's pointer arrays right before each call, so it is never
//! self-referential and can be moved freely. Addresses go through
//! `socket2::SockAddr`, so no code here lays out a sockaddr by hand.

use std::io;
use std::mem::zeroed;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::{SockAddr, SockAddrStorage};

/// A set of datagram buffers handed to the kernel in one call.
pub struct Batch {
    bufs: Vec<Box<[u8]>>,
    lens: Vec<usize>,
    /// Where `recvmmsg` writes each datagram's source.
    names: Vec<SockAddrStorage>,
    /// Source after a receive, destination for a send; `None`: unknown
    /// (or not set), which sends to a connected socket's peer.
    peers: Vec<Option<SockAddr>>,
    truncated: Vec<bool>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    /// `n` buffers of `cap` bytes each.
    pub fn new(n: usize, cap: usize) -> Self {
        let n = n.max(1);
        Batch {
            bufs: (0..n).map(|_| vec![0u8; cap].into_boxed_slice()).collect(),
            lens: vec![0; n],
            names: (0..n).map(|_| SockAddrStorage::zeroed()).collect(),
            peers: vec![None; n],
            truncated: vec![false; n],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ],
            // SAFETY: mmsghdr is a C struct of integers and raw pointers,
            // for which all zeroes (null pointers, zero lengths) is a valid
            // value; `recv` and `send` fill in the headers they pass.
            hdrs: vec![unsafe { zeroed() }; n],
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.bufs.len()
    }

    /// Payload of slot `i` (what was received, or what will be sent).
    pub fn data(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i]]
    }

    /// Whole buffer of slot `i`, for writing a payload in place; then [`Batch::set_len`].
    pub fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i]
    }

    /// Sets the payload length of slot `i` (clamped to the buffer).
    pub fn set_len(&mut self, i: usize, len: usize) {
        self.lens[i] = len.min(self.bufs[i].len());
    }

    /// Copies `data` into slot `i`; false (and nothing copied) when it does not fit.
    pub fn fill(&mut self, i: usize, data: &[u8]) -> bool {
        if data.len() > self.bufs[i].len() {
            return false;
        }
        self.bufs[i][..data.len()].copy_from_slice(data);
        self.lens[i] = data.len();
        true
    }

    /// Peer address of slot `i`: the source after a receive.
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        self.peers[i].as_ref()?.as_socket()
    }

    /// Sets the destination of slot `i` for [`Batch::send`] with `per_slot_addr`.
    pub fn set_addr(&mut self, i: usize, addr: &SocketAddr) {
        self.peers[i] = Some(SockAddr::from(*addr));
    }

    /// True when the datagram received in slot `i` was larger than the buffer.
    pub fn truncated(&self, i: usize) -> bool {
        self.truncated[i]
    }

    /// Receives up to `slots()` datagrams with one `recvmmsg`.
    ///
    /// `flags` is usually `MSG_WAITFORONE` (block for the first, take what
    /// else is queued) or `MSG_DONTWAIT`. Returns the number received.
    pub fn recv(&mut self, fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<usize> {
        let n = self.bufs.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            let name = &mut self.names[i];
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_namelen = name.size_of();
            h.msg_hdr.msg_name = (name as *mut SockAddrStorage).cast();
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: `fd` is an open descriptor, borrowed for the call. All
        // `n` headers were set up just above: each points at its slot's
        // address storage (`msg_namelen` bytes) and at an iovec of its
        // whole buffer (`iov_len` bytes), heap memory owned by `self`,
        // which the `&mut` borrow keeps alive and unmoved for the call.
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = (r as usize).min(n);
        for i in 0..got {
            let h = &self.hdrs[i];
            self.lens[i] = (h.msg_len as usize).min(self.bufs[i].len());
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let len = h.msg_hdr.msg_namelen;
            // Zeroed again for the next receive: a slot the kernel gives
            // no address then reads as none, never as an earlier one's.
            let st = std::mem::replace(&mut self.names[i], SockAddrStorage::zeroed());
            self.peers[i] = (len != 0 && len <= st.size_of()).then(|| {
                // SAFETY: the kernel wrote a socket address of `len` bytes
                // (no more than the storage, checked) whose family field
                // says its type; the storage is initialised throughout
                // (zeroed before the call).
                unsafe { SockAddr::new(st, len) }
            });
        }
        Ok(got)
    }

    /// Sends slots `start..start+n` with one `sendmmsg`.
    ///
    /// With `per_slot_addr` each slot goes to its [`Batch::set_addr`]
    /// destination; without, to the socket's connected peer. Returns how
    /// many the kernel took (possibly fewer than `n`).
    pub fn send(
        &mut self,
        fd: BorrowedFd<'_>,
        start: usize,
        n: usize,
        per_slot_addr: bool,
    ) -> io::Result<usize> {
        let end = (start + n).min(self.bufs.len());
        if end <= start {
            return Ok(0);
        }
        for i in start..end {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
            let h = &mut self.hdrs[i];
            match &self.peers[i] {
                // `*mut` only because the C struct says so: the kernel
                // reads a destination address, never writes it.
                Some(to) if per_slot_addr => {
                    h.msg_hdr.msg_name = to.as_ptr().cast_mut().cast();
                    h.msg_hdr.msg_namelen = to.len();
                }
                _ => {
                    h.msg_hdr.msg_name = std::ptr::null_mut();
                    h.msg_hdr.msg_namelen = 0;
                }
            }
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: `fd` is an open descriptor, borrowed for the call. The
        // headers `start..end` (in bounds: `end` is clamped above) were set
        // up just above: each points at an iovec of its slot's first
        // `lens[i]` bytes (never past the buffer: every length is clamped)
        // and at its whole destination address or none, all owned by
        // `self` and unchanged for the call. The kernel reads those and
        // writes only each header's `msg_len`.
        let r = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                self.hdrs[start..end].as_mut_ptr(),
                (end - start) as libc::c_uint,
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// Sends slots `0..n`, retrying the remainder after a short write.
    ///
    /// Returns how many were sent and how many were given up on (an error
    /// other than a short write, e.g. `EAGAIN` on a full send buffer or
    /// `ECONNREFUSED` reported from an earlier ICMP).
    pub fn send_all(
        &mut self,
        fd: BorrowedFd<'_>,
        n: usize,
        per_slot_addr: bool,
    ) -> (usize, usize) {
        let n = n.min(self.bufs.len());
        let mut done = 0;
        let mut failed = 0;
        while done + failed < n {
            match self.send(fd, done + failed, n - done - failed, per_slot_addr) {
                Ok(0) => {
                    failed += 1;
                }
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The first datagram of the rest failed; skip it and go on.
                    failed += 1;
                }
            }
        }
        (done, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn addresses_round_trip() {
        let mut b = Batch::new(2, 4);
        assert_eq!(b.addr(0), None);
        for a in ["127.0.0.2:5060", "[::1]:7"] {
            let addr: SocketAddr = a.parse().unwrap();
            b.set_addr(1, &addr);
            assert_eq!(b.addr(1), Some(addr));
        }
    }

    /// Sent to each slot's own destination, and the sources come back.
    #[test]
    fn per_slot_destinations_and_sources() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rxs: Vec<UdpSocket> = (0..2)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                s
            })
            .collect();
        let mut out = Batch::new(2, 16);
        for (i, rx) in rxs.iter().enumerate() {
            assert!(out.fill(i, format!("to {i}").as_bytes()));
            out.set_addr(i, &rx.local_addr().unwrap());
        }
        assert_eq!(out.send_all(tx.as_fd(), 2, true), (2, 0));
        for (i, rx) in rxs.iter().enumerate() {
            let mut inb = Batch::new(2, 16);
            assert_eq!(inb.recv(rx.as_fd(), libc::MSG_WAITFORONE).unwrap(), 1);
            assert_eq!(inb.data(0), format!("to {i}").as_bytes());
            assert_eq!(inb.addr(0), Some(tx.local_addr().unwrap()));
        }
    }

    #[test]
    fn send_and_receive_a_batch() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let mut out = Batch::new(4, 64);
        for i in 0..4 {
            assert!(out.fill(i, format!("msg{i}").as_bytes()));
        }
        let (sent, failed) = out.send_all(tx.as_fd(), 4, false);
        assert_eq!((sent, failed), (4, 0));
        let mut inb = Batch::new(8, 64);
        let mut got = Vec::new();
        while got.len() < 4 {
            let n = inb.recv(rx.as_fd(), libc::MSG_WAITFORONE).unwrap();
            for i in 0..n {
                assert_eq!(inb.addr(i), Some(tx.local_addr().unwrap()));
                got.push(inb.data(i).to_vec());
            }
        }
        assert_eq!(got[3], b"msg3");
    }

    #[test]
    fn truncation_is_flagged() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[7u8; 100], rx.local_addr().unwrap()).unwrap();
        let mut inb = Batch::new(1, 10);
        assert_eq!(inb.recv(rx.as_fd(), 0).unwrap(), 1);
        assert!(inb.truncated(0));
        assert_eq!(inb.data(0).len(), 10);
    }

    #[test]
    fn fill_refuses_oversize() {
        let mut b = Batch::new(1, 4);
        assert!(!b.fill(0, b"too long"));
    }
}
