//! Batched datagram I/O with `recvmmsg`/`sendmmsg`.
//!
//! One syscall per batch instead of per datagram is what lets one core of
//! load generator outrun the system under test, and it is the "mmsg" half of
//! the raw relay's physical limit. The batch owns its buffers and rebuilds
//! the kernel's pointer arrays right before each call, so it is never
//! self-referential and can be moved freely.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Converts a socket address into the kernel's representation.
pub fn to_storage(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut st: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut st as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut st as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

/// Converts the kernel's representation back; `None` for other families.
pub fn from_storage(st: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match st.ss_family as libc::c_int {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: family and length say this storage holds a sockaddr_in.
            let sin = unsafe { &*(st as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: family and length say this storage holds a sockaddr_in6.
            let s = unsafe { &*(st as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(s.sin6_addr.s6_addr),
                u16::from_be(s.sin6_port),
                s.sin6_flowinfo,
                s.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A set of datagram buffers handed to the kernel in one call.
pub struct Batch {
    bufs: Vec<Box<[u8]>>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
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
            // SAFETY: all-zero sockaddr_storage is valid (AF_UNSPEC).
            addrs: vec![unsafe { zeroed() }; n],
            addr_lens: vec![0; n],
            truncated: vec![false; n],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ],
            // SAFETY: all-zero mmsghdr (null pointers, zero lengths) is valid.
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
        from_storage(&self.addrs[i], self.addr_lens[i])
    }

    /// Sets the destination of slot `i` for [`Batch::send`] with `per_slot_addr`.
    pub fn set_addr(&mut self, i: usize, addr: &SocketAddr) {
        let (st, len) = to_storage(addr);
        self.addrs[i] = st;
        self.addr_lens[i] = len;
    }

    /// True when the datagram received in slot `i` was larger than the buffer.
    pub fn truncated(&self, i: usize) -> bool {
        self.truncated[i]
    }

    /// Receives up to `slots()` datagrams with one `recvmmsg`.
    ///
    /// `flags` is usually `MSG_WAITFORONE` (block for the first, take what
    /// else is queued) or `MSG_DONTWAIT`. Returns the number received.
    pub fn recv(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        let n = self.bufs.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at live buffers owned by `self` for the call's duration.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = r as usize;
        for i in 0..got {
            let h = &self.hdrs[i];
            self.lens[i] = (h.msg_len as usize).min(self.bufs[i].len());
            self.addr_lens[i] = h.msg_hdr.msg_namelen;
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
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
        fd: RawFd,
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
            if per_slot_addr {
                h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = self.addr_lens[i];
            } else {
                h.msg_hdr.msg_name = std::ptr::null_mut();
                h.msg_hdr.msg_namelen = 0;
            }
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: headers start..end point at live buffers owned by `self` for the call's duration.
        let r = unsafe {
            libc::sendmmsg(
                fd,
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
    pub fn send_all(&mut self, fd: RawFd, n: usize, per_slot_addr: bool) -> (usize, usize) {
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
    use std::os::fd::AsRawFd;

    #[test]
    fn storage_round_trip() {
        for a in ["127.0.0.2:5060", "[::1]:7"] {
            let addr: SocketAddr = a.parse().unwrap();
            let (st, len) = to_storage(&addr);
            assert_eq!(from_storage(&st, len), Some(addr));
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
        let (sent, failed) = out.send_all(tx.as_raw_fd(), 4, false);
        assert_eq!((sent, failed), (4, 0));
        let mut inb = Batch::new(8, 64);
        let mut got = Vec::new();
        while got.len() < 4 {
            let n = inb.recv(rx.as_raw_fd(), libc::MSG_WAITFORONE).unwrap();
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
        assert_eq!(inb.recv(rx.as_raw_fd(), 0).unwrap(), 1);
        assert!(inb.truncated(0));
        assert_eq!(inb.data(0).len(), 10);
    }

    #[test]
    fn fill_refuses_oversize() {
        let mut b = Batch::new(1, 4);
        assert!(!b.fill(0, b"too long"));
    }
}
