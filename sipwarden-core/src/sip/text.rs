//! Numbers and addresses as the text written into SIP headers
//! (`received=`, `rport=`, Via and Record-Route host ports), without the
//! formatting machinery or a heap allocation: they are written for every
//! forwarded message.

use std::net::{IpAddr, SocketAddr};

use crate::flow::canonical_ip;

/// A number or an address as SIP text, built on the stack: what is
/// written into headers without the formatting machinery or a heap
/// allocation (at most 56 bytes: an IPv6 address, brackets and port fit).
pub struct InlineText {
    buf: [u8; 56],
    len: usize,
}

impl InlineText {
    fn new() -> InlineText {
        InlineText {
            buf: [0; 56],
            len: 0,
        }
    }

    fn push(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    fn push_byte(&mut self, c: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = c;
            self.len += 1;
        }
    }

    /// Digits written one by one: the numbers here have one to five, and
    /// a call to `memcpy` per octet and port cost more than the digits.
    fn push_num(&mut self, v: u32) {
        let mut d = [0u8; 10];
        let mut i = d.len();
        let mut v = v;
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for &c in &d[i..] {
            self.push_byte(c);
        }
    }

    /// An IPv4 octet and the dot before it (unless first): digits
    /// written in place after one bounds check (the general digit loop of
    /// `push_num` is several times slower per octet).
    fn push_octet(&mut self, o: u8, dot: bool) {
        let Some(out) = self.buf.get_mut(self.len..self.len + 4) else {
            return;
        };
        let mut n = 0;
        if dot {
            out[0] = b'.';
            n = 1;
        }
        if o >= 100 {
            out[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            out[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        out[n] = b'0' + o % 10;
        self.len += n + 1;
    }

    fn push_ip(&mut self, ip: IpAddr, bracket_v6: bool) {
        match canonical_ip(ip) {
            IpAddr::V4(v4) => {
                for (i, o) in v4.octets().iter().enumerate() {
                    self.push_octet(*o, i > 0);
                }
            }
            IpAddr::V6(v6) => {
                // Rare: the formatting machinery is fine here.
                use std::io::Write;
                let mut tmp = [0u8; 48];
                let mut c = std::io::Cursor::new(&mut tmp[..]);
                let _ = write!(c, "{v6}");
                let n = c.position() as usize;
                if bracket_v6 {
                    self.push(b"[");
                }
                self.push(&tmp[..n]);
                if bracket_v6 {
                    self.push(b"]");
                }
            }
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A number as text.
pub fn num_text(v: u32) -> InlineText {
    let mut t = InlineText::new();
    t.push_num(v);
    t
}

/// An address as text (IPv6 without brackets, as in `received=`).
pub fn ip_text(ip: IpAddr) -> InlineText {
    let mut t = InlineText::new();
    t.push_ip(ip, false);
    t
}

/// `ip:port`, IPv6 bracketed, as written in SIP URIs and our headers.
pub fn sockaddr_text(a: SocketAddr) -> InlineText {
    let mut t = InlineText::new();
    t.push_ip(a.ip(), true);
    t.push_byte(b':');
    t.push_num(u32::from(a.port()));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_formatting_matches_std() {
        for a in [
            "192.0.2.1:5060",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[2001:db8::1]:5062",
            "[::ffff:10.0.0.1]:9",
        ] {
            let sa: SocketAddr = a.parse().unwrap();
            let want = match canonical_ip(sa.ip()) {
                IpAddr::V4(v4) => format!("{v4}:{}", sa.port()),
                IpAddr::V6(v6) => format!("[{v6}]:{}", sa.port()),
            };
            assert_eq!(sockaddr_text(sa).as_bytes(), want.as_bytes());
            assert_eq!(
                ip_text(sa.ip()).as_bytes(),
                canonical_ip(sa.ip()).to_string().as_bytes()
            );
        }
        for o in 0..=255u8 {
            let ip = IpAddr::from([o, 9, o, 100]);
            assert_eq!(ip_text(ip).as_bytes(), ip.to_string().as_bytes());
        }
        for n in [0u32, 7, 69, 255, 65535, 4_294_967_295] {
            assert_eq!(num_text(n).as_bytes(), n.to_string().as_bytes());
        }
    }
}
