//! The individual edits the proxy makes to a message, each touching only
//! the bytes it must.

use std::net::{IpAddr, SocketAddr};

use crate::flow::Transport;
use crate::sip::addr::{split_list, NameAddr};
use crate::sip::uri::{parse_host_ip, Uri};
use crate::sip::via::Via;
use crate::sip::{Editor, HeaderName, Message, Method, Span};

use super::action::Dest;

pub use crate::flow::canonical_ip;

/// An expiry in seconds (Expires header or `expires` parameter).
pub fn parse_secs(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Short text built on the stack: addresses and numbers written into
/// headers without the formatting machinery or a heap allocation.
pub struct Text {
    buf: [u8; 56],
    len: usize,
}

impl Text {
    fn new() -> Text {
        Text {
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
    /// written in place after one bounds check (callgrind: the digit loop
    /// of `push_num` was ~40 instructions per octet).
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
pub fn num_text(v: u32) -> Text {
    let mut t = Text::new();
    t.push_num(v);
    t
}

/// An address as text (IPv6 without brackets, as in `received=`).
pub fn ip_text(ip: IpAddr) -> Text {
    let mut t = Text::new();
    t.push_ip(ip, false);
    t
}

/// `ip:port`, IPv6 bracketed, as written in SIP URIs and our headers.
pub fn sockaddr_text(a: SocketAddr) -> Text {
    let mut t = Text::new();
    t.push_ip(a.ip(), true);
    t.push_byte(b':');
    t.push_num(u32::from(a.port()));
    t
}

/// Dialog-creating requests get Record-Route: Asterisk ignores its
/// outbound proxy inside a dialog, so without it BYE and ACK would go
/// straight from loopback to the phone's Contact and reach nobody.
pub fn creates_dialog(msg: &Message) -> bool {
    matches!(
        msg.method(),
        Some(Method::Invite | Method::Subscribe | Method::Refer)
    ) && msg.to_tag().is_none()
}

pub fn tcp_param(t: Transport) -> &'static [u8] {
    match t {
        Transport::Udp => b"",
        Transport::Tcp => b";transport=tcp",
    }
}

/// New Record-Route lines go above the existing ones, or above the Vias.
pub fn rr_insert_point(msg: &Message) -> usize {
    msg.first(HeaderName::RecordRoute)
        .or_else(|| msg.first(HeaderName::Via))
        .map_or(msg.headers_end, |h| h.line.start as usize)
}

/// Where a response goes (RFC 3261 18.2.2, RFC 3581 4): `received` and
/// `rport` if present, else the sent-by.
pub fn via_dest(v: &Via<'_>) -> Option<(Dest, Transport)> {
    let transport = Transport::from_token(v.transport)?;
    let port = match v.rport() {
        Some(Some(p)) if p != 0 => p,
        _ => v.port.unwrap_or(5060),
    };
    let host = v.received().unwrap_or(v.host);
    let dest = match parse_host_ip(host) {
        Some(ip) => Dest::Addr(SocketAddr::new(ip, port)),
        None => Dest::Name {
            host: String::from_utf8_lossy(host).to_ascii_lowercase().into(),
            port: Some(port),
        },
    };
    Some((dest, transport))
}

/// Removes the first Via value (ours).
pub fn pop_top_via(ed: &mut Editor<'_>, msg: &Message) {
    let Some(h) = msg.first(HeaderName::Via) else {
        return;
    };
    let v = msg.value(h);
    let mut entries = split_list(v);
    let _first = entries.next();
    match entries.next() {
        Some((second, _)) => ed.delete(Span::new(
            h.value.start as usize,
            h.value.start as usize + second,
        )),
        None => ed.remove_header(h),
    }
}

/// RFC 3581: `received` when the source differs from sent-by or `rport`
/// was asked for; `rport` filled in. A `received` the client wrote itself
/// is overwritten with the truth.
pub fn rfc3581(ed: &mut Editor<'_>, via: &Via<'_>, src: SocketAddr) {
    let ip = canonical_ip(src.ip());
    let (rport, received) = via.rport_received_at();
    let ip_s = ip_text(ip);
    // Usually the sent-by is written exactly as we would write the
    // source: no need to parse it to compare.
    let sent_by_differs =
        via.host != ip_s.as_bytes() && parse_host_ip(via.host).map(canonical_ip) != Some(ip);
    match received {
        Some(p) => ed.replace(Span::new(p.start, p.end), &[b"received=", ip_s.as_bytes()]),
        None if sent_by_differs || rport.is_some() => {
            ed.insert(via.span.end as usize, &[b";received=", ip_s.as_bytes()])
        }
        None => {}
    }
    if let Some(p) = rport {
        let port = num_text(u32::from(src.port()));
        ed.replace(Span::new(p.start, p.end), &[b"rport=", port.as_bytes()]);
    }
}

/// Decrements Max-Forwards, or inserts 70 when absent (checked for 0
/// before).
pub fn max_forwards(ed: &mut Editor<'_>, msg: &Message) {
    match (msg.first(HeaderName::MaxForwards), msg.max_forwards) {
        (Some(h), Some(n)) => {
            let v = num_text(n.saturating_sub(1));
            ed.replace(h.value, &[v.as_bytes()]);
        }
        _ => ed.append_header(b"Max-Forwards", &[b"70"]),
    }
}

/// Removes every `X-Sipwarden-*` header: only sipwarden may set them.
pub fn strip_owned(ed: &mut Editor<'_>, msg: &Message) {
    for h in msg.all(HeaderName::XSipwarden) {
        ed.remove_header(h);
    }
}

/// One Contact URI of a message, with its absolute position.
pub struct ContactUri<'m> {
    pub uri: Uri<'m>,
    /// Absolute offset of the URI in the message.
    pub start: usize,
    pub len: usize,
    pub bracketed: bool,
    /// Header parameters of the entry (`;expires=...`).
    pub params: &'m [u8],
    /// Absolute span of the whole entry.
    pub entry: Span,
}

/// Every Contact URI of a message (none for `Contact: *`).
pub fn contacts(msg: &Message) -> Vec<ContactUri<'_>> {
    let mut out = Vec::new();
    for h in msg.all(HeaderName::Contact) {
        let v = msg.value(h);
        let base = h.value.start as usize;
        for (s, e) in split_list(v) {
            let Some(na) = NameAddr::parse(&v[s..e]) else {
                continue;
            };
            let Some(uri) = Uri::parse(na.uri) else {
                continue;
            };
            out.push(ContactUri {
                uri,
                start: base + s + na.uri_start,
                len: na.uri.len(),
                bracketed: na.bracketed,
                params: na.params,
                entry: Span::new(base + s, base + e),
            });
        }
    }
    out
}

/// Replaces the host:port of a Contact URI and optionally adds URI
/// parameters, keeping user part and the other parameters. An addr-spec
/// Contact is bracketed first, so an added URI parameter is not read as a
/// header parameter.
pub fn rewrite_contact(
    ed: &mut Editor<'_>,
    c: &ContactUri<'_>,
    hostport: &[u8],
    add_params: &[&[u8]],
) {
    let hs = c.start + c.uri.host_start;
    let he = c.start + c.uri.hostport_end;
    // URI parameters end before any `?headers`.
    let params_end = c.start + c.uri.params_start + c.uri.params.len();
    let uri_end = c.start + c.len;
    if !c.bracketed {
        ed.insert(c.start, &[b"<"]);
    }
    ed.replace(Span::new(hs, he), &[hostport]);
    if !add_params.is_empty() {
        ed.insert(params_end, add_params);
    }
    if !c.bracketed {
        ed.insert(uri_end, &[b">"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3581_received_only_when_the_source_differs_or_rport_asks() {
        use crate::sip::{scan, Framing, Limits};
        let run = |via: &str, src: &str| {
            let m = scan(
                bytes::Bytes::from(format!(
                    "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP {via}\r\nFrom: <sip:x@y>;tag=1\r\n\
                     To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
                )),
                Framing::Datagram,
                &Limits::default(),
            )
            .unwrap();
            let mut ed = Editor::new(&m);
            rfc3581(&mut ed, &m.top_via(), src.parse().unwrap());
            let out = ed.finish();
            let t = std::str::from_utf8(&out).unwrap();
            t[t.find("Via: SIP/2.0/UDP ").unwrap() + 17..t.find("\r\nFrom").unwrap()].to_string()
        };
        let s = "192.0.2.7:5060";
        assert_eq!(
            run("192.0.2.7:5060;branch=z9hG4bK1", s),
            "192.0.2.7:5060;branch=z9hG4bK1"
        );
        assert_eq!(
            run("10.0.0.2:5060;branch=z9hG4bK1", s),
            "10.0.0.2:5060;branch=z9hG4bK1;received=192.0.2.7"
        );
        assert_eq!(
            run("192.0.2.7:5062;rport;branch=z9hG4bK1", s),
            "192.0.2.7:5062;rport=5060;branch=z9hG4bK1;received=192.0.2.7"
        );
        // The same address written another way is the same address.
        assert_eq!(
            run("[2001:db8:0::7];branch=z9hG4bK1", "[2001:db8::7]:5060"),
            "[2001:db8:0::7];branch=z9hG4bK1"
        );
        assert_eq!(
            run("[2001:db8::8];branch=z9hG4bK1", "[2001:db8::7]:5060"),
            "[2001:db8::8];branch=z9hG4bK1;received=2001:db8::7"
        );
    }

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
