//! The legitimate calls of the mix scenario: INVITE -> 200 -> ACK -> BYE -> 200.
//!
//! Each exchange is sent from a "phone" socket, one per source address, and
//! is identified by the number in its Call-ID (`mx<id>@...`), so responses
//! need no lookup by string. Nothing is retransmitted: on loopback at half
//! load a lost datagram is a failure of the system under test, and counting
//! it as one is what the success rate is for.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use swbench::clock;
use swbench::hist::Histogram;
use swbench::mmsg::Batch;
use swbench::sip;
use swbench::template::Template;

use crate::dialog::Dialog;

/// Counters of the exchanges.
#[derive(Default)]
pub struct ExchangeStats {
    /// INVITEs sent.
    pub started: u64,
    /// BYE answered with 2xx.
    pub completed: u64,
    /// A final non-2xx to INVITE or BYE.
    pub failed_status: u64,
    /// A 2xx whose dialog could not be used (no tag, no Contact, unroutable).
    pub failed_dialog: u64,
    /// No final answer within the timeout.
    pub timed_out: u64,
    /// Requests sent (INVITE, ACK, BYE).
    pub sent: u64,
    /// Send calls that failed.
    pub send_errors: u64,
    /// Responses received on the phone sockets.
    pub responses: u64,
    /// 1xx responses.
    pub provisional: u64,
    /// Responses for no pending exchange (late, duplicated or foreign).
    pub stray: u64,
    /// INVITE sent -> 200 received.
    pub setup: Histogram,
    /// INVITE sent -> 200 to BYE received.
    pub total: Histogram,
}

struct Pending {
    ua: usize,
    invite_ns: u64,
    bye_sent: bool,
}

/// The phones and their calls in flight.
pub struct Exchanges {
    ua: Vec<UdpSocket>,
    ua_addr: Vec<SocketAddr>,
    invite: Vec<Template>,
    target: SocketAddr,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    rx: Batch,
    buf: Vec<u8>,
    timeout_ns: u64,
    /// Counters and latencies.
    pub stats: ExchangeStats,
}

/// Prefix of exchange Call-IDs; the digits after it are the exchange id.
pub const PREFIX: &str = "mx";

fn exchange_id(call_id: &[u8]) -> Option<u64> {
    let rest = call_id.strip_prefix(PREFIX.as_bytes())?;
    let digits = &rest[..rest.iter().position(|b| !b.is_ascii_digit())?];
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Exchanges {
    /// Phones on `ua` sockets (unconnected: answers may come from any hop).
    pub fn new(
        ua: Vec<UdpSocket>,
        invite: Vec<Template>,
        target: SocketAddr,
        timeout_ns: u64,
    ) -> io::Result<Exchanges> {
        let ua_addr = ua
            .iter()
            .map(|s| s.local_addr())
            .collect::<io::Result<_>>()?;
        for s in &ua {
            s.set_nonblocking(true)?;
        }
        Ok(Exchanges {
            ua,
            ua_addr,
            invite,
            target,
            pending: HashMap::new(),
            next_id: 1,
            rx: Batch::new(32, 65_536),
            buf: vec![0; 65_536],
            timeout_ns,
            stats: ExchangeStats::default(),
        })
    }

    /// Calls still waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn send(&mut self, ua: usize, data: &[u8], to: SocketAddr) -> bool {
        match self.ua[ua].send_to(data, to) {
            Ok(_) => {
                self.stats.sent += 1;
                true
            }
            Err(_) => {
                self.stats.send_errors += 1;
                false
            }
        }
    }

    /// Starts one call.
    pub fn start(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        let ua = (id as usize) % self.ua.len();
        let now = clock::mono_ns();
        let mut buf = std::mem::take(&mut self.buf);
        let n = self.invite[ua].write(&mut buf, id, now);
        let target = self.target;
        self.stats.started += 1;
        if n > 0 && self.send(ua, &buf[..n], target) {
            self.pending.insert(
                id,
                Pending {
                    ua,
                    invite_ns: now,
                    bye_sent: false,
                },
            );
        } else {
            self.stats.failed_dialog += 1;
        }
        self.buf = buf;
    }

    /// Waits up to `timeout_ns` for answers and handles all that arrived.
    pub fn poll(&mut self, timeout_ns: u64) {
        let mut fds: Vec<libc::pollfd> = self
            .ua
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ts = clock::timespec_from_ns(timeout_ns);
        // SAFETY: `fds` is a live array of pollfd of the given length; `ts` is valid.
        let r = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if r <= 0 {
            return;
        }
        for (i, fd) in fds.iter().enumerate() {
            if fd.revents & libc::POLLIN == 0 {
                continue;
            }
            // Bounded: at most 64 batches per socket per poll.
            for _ in 0..64 {
                let n = match self.rx.recv(self.ua[i].as_fd(), libc::MSG_DONTWAIT) {
                    Ok(n) if n > 0 => n,
                    _ => break,
                };
                let now = clock::mono_ns();
                for k in 0..n {
                    let msg = self.rx.data(k).to_vec();
                    self.on_response(i, &msg, now);
                }
            }
        }
    }

    fn on_response(&mut self, ua: usize, msg: &[u8], now: u64) {
        self.stats.responses += 1;
        let Some(sip::StartLine::Response { code }) = sip::start_line(msg) else {
            self.stats.stray += 1;
            return;
        };
        let id = sip::first_value(msg, "call-id", Some(b'i')).and_then(exchange_id);
        let method = sip::first_value(msg, "cseq", None)
            .and_then(sip::cseq)
            .map(|c| c.1);
        let (Some(id), Some(method)) = (id, method) else {
            self.stats.stray += 1;
            return;
        };
        let Some(p) = self.pending.get(&id) else {
            self.stats.stray += 1;
            return;
        };
        if p.ua != ua {
            self.stats.stray += 1;
            return;
        }
        if code < 200 {
            self.stats.provisional += 1;
            return;
        }
        let (invite_ns, bye_sent) = (p.invite_ns, p.bye_sent);
        if code >= 300 {
            self.stats.failed_status += 1;
            self.pending.remove(&id);
            return;
        }
        if method.eq_ignore_ascii_case(b"INVITE") {
            if bye_sent {
                return; // a retransmitted 2xx: already acknowledged
            }
            self.stats.setup.record(now.saturating_sub(invite_ns));
            if !self.ack_and_bye(ua, id, msg) {
                self.stats.failed_dialog += 1;
                self.pending.remove(&id);
            }
        } else if method.eq_ignore_ascii_case(b"BYE") {
            self.stats.completed += 1;
            self.stats.total.record(now.saturating_sub(invite_ns));
            self.pending.remove(&id);
        } else {
            self.stats.stray += 1;
        }
    }

    fn ack_and_bye(&mut self, ua: usize, id: u64, ok: &[u8]) -> bool {
        let Ok(dialog) = Dialog::from_2xx(ok) else {
            return false;
        };
        let local = self.ua_addr[ua];
        let ts = clock::mono_ns();
        let ack = dialog.request("ACK", &local, &format!("a{PREFIX}{id}"), ts);
        let bye = dialog.request("BYE", &local, &format!("b{PREFIX}{id}"), ts);
        let (Ok((ack, ack_to)), Ok((bye, bye_to))) = (ack, bye) else {
            return false;
        };
        if !self.send(ua, &ack, ack_to) || !self.send(ua, &bye, bye_to) {
            return false;
        }
        if let Some(p) = self.pending.get_mut(&id) {
            p.bye_sent = true;
        }
        true
    }

    /// Fails calls older than the timeout.
    pub fn sweep(&mut self, now: u64) {
        let timeout = self.timeout_ns;
        let before = self.pending.len();
        self.pending
            .retain(|_, p| now.saturating_sub(p.invite_ns) < timeout);
        self.stats.timed_out += (before - self.pending.len()) as u64;
    }

    /// Ends the run: whatever is still pending has timed out.
    pub fn finish(&mut self) {
        self.stats.timed_out += self.pending.len() as u64;
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_call_ids() {
        assert_eq!(exchange_id(b"mx0000000042@bench.invalid"), Some(42));
        assert_eq!(exchange_id(b"fw0000000042@bench.invalid"), None);
        assert_eq!(exchange_id(b"mx@x"), None);
        assert_eq!(exchange_id(b"mx12"), None);
    }
}
