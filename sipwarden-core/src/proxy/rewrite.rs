//! The individual edits the proxy makes to a message, each touching only
//! the bytes it must.

use std::net::SocketAddr;

use crate::flow::{canonical_ip, Transport};
use crate::sip::addr::{split_list, NameAddr};
use crate::sip::text::{ip_text, num_text, InlineText};
use crate::sip::uri::{parse_host_ip, Uri};
use crate::sip::via::Via;
use crate::sip::{Editor, HeaderName, Message, Method, Span};

use crate::token::ReturnAddr;

/// An expiry in seconds (Expires header or `expires` parameter).
pub fn parse_secs(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
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
        Transport::Tls => b";transport=tls",
        Transport::Ws => b";transport=ws",
        Transport::Wss => b";transport=wss",
    }
}

/// New Record-Route lines go above the existing ones, or above the Vias.
pub fn rr_insert_point(msg: &Message) -> usize {
    msg.first(HeaderName::RecordRoute)
        .or_else(|| msg.first(HeaderName::Via))
        .map_or(msg.headers_end, |h| h.line.start as usize)
}

/// Where a response goes (RFC 3261 18.2.2, RFC 3581 4): `received` and
/// `rport` if present, else the sent-by. `None` for a transport we do not
/// speak, or a host that is no address: the Via below ours always names
/// an address once [`Rfc3581`] has edited it.
pub fn via_return(v: &Via<'_>) -> Option<ReturnAddr> {
    let transport = Transport::from_token(v.transport)?;
    let port = match v.rport() {
        Some(Some(p)) if p != 0 => p,
        _ => v.port.unwrap_or(transport.default_port()),
    };
    let ip = parse_host_ip(v.received().unwrap_or(v.host))?;
    Some(ReturnAddr {
        transport,
        addr: SocketAddr::new(ip, port),
    })
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

/// RFC 3581 for the top Via of a request we forward: `received` when the
/// source differs from sent-by or `rport` was asked for; `rport` filled
/// in. A `received` the client wrote itself is overwritten with the truth.
///
/// Decided once, before the edit is made ([`Rfc3581::apply`]), because
/// the branch must bind where the responses will go ([`Rfc3581::back`]):
/// the edited Via as [`via_return`] reads it when a response brings it
/// back, derived from the same decisions as the edit without writing out
/// and reading back the edited Via.
pub struct Rfc3581 {
    /// The `received` parameter to overwrite, or where to add one.
    received: Option<Span>,
    add_received: Option<usize>,
    rport: Option<Span>,
    /// Where to add `;rport=PORT` to a WebSocket Via that has none.
    add_rport: Option<usize>,
    ip: InlineText,
    port: u16,
    /// Where the responses to the request go once the edit is made.
    pub back: Option<ReturnAddr>,
}

impl Rfc3581 {
    pub fn new(via: &Via<'_>, src: SocketAddr) -> Rfc3581 {
        let ip = canonical_ip(src.ip());
        let (rport, received) = via.rport_received_at();
        let ip_s = ip_text(ip);
        // Usually the sent-by is written exactly as we would write the
        // source: no need to parse it to compare.
        let sent_by_differs =
            via.host != ip_s.as_bytes() && parse_host_ip(via.host).map(canonical_ip) != Some(ip);
        let received = received.map(|p| Span::new(p.start, p.end));
        let add_received = (received.is_none() && (sent_by_differs || rport.is_some()))
            .then_some(via.span.end as usize);
        let rport = rport.map(|p| Span::new(p.start, p.end));
        // A browser's Via names no reachable host or port (`x.invalid`,
        // RFC 7118 5.2): the response goes back down the connection, whose
        // port the Via gets as `rport` so the branch can bind it. Over
        // WebSocket, that is the only way back.
        let websocket = Transport::from_token(via.transport).is_some_and(Transport::is_websocket);
        let add_rport = (websocket && rport.is_none()).then_some(via.span.end as usize);
        let add_received = add_received.or(add_rport.filter(|_| received.is_none()));
        // What `via_return` reads back: the `received` written (the
        // source's address, which its text parses back to), else the
        // sent-by host; the `rport` written unless it is 0, else the
        // sent-by port.
        let back = Transport::from_token(via.transport).and_then(|transport| {
            let host = if received.is_some() || add_received.is_some() {
                ip
            } else {
                parse_host_ip(via.host)?
            };
            let port = match rport {
                Some(_) if src.port() != 0 => src.port(),
                _ if add_rport.is_some() => src.port(),
                _ => via.port.unwrap_or(transport.default_port()),
            };
            Some(ReturnAddr {
                transport,
                addr: SocketAddr::new(host, port),
            })
        });
        Rfc3581 {
            received,
            add_received,
            rport,
            add_rport,
            ip: ip_s,
            port: src.port(),
            back,
        }
    }

    /// Makes the edit.
    pub fn apply(&self, ed: &mut Editor<'_>) {
        if let Some(p) = self.received {
            ed.replace(p, &[b"received=", self.ip.as_bytes()]);
        }
        let port = num_text(u32::from(self.port));
        match (self.add_received, self.add_rport) {
            // One insertion: both go at the end of the Via, in this order.
            (Some(at), Some(_)) => ed.insert(
                at,
                &[
                    b";received=",
                    self.ip.as_bytes(),
                    b";rport=",
                    port.as_bytes(),
                ],
            ),
            (Some(at), None) => ed.insert(at, &[b";received=", self.ip.as_bytes()]),
            (None, Some(at)) => ed.insert(at, &[b";rport=", port.as_bytes()]),
            (None, None) => {}
        }
        if let Some(p) = self.rport {
            ed.replace(p, &[b"rport=", port.as_bytes()]);
        }
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
            Rfc3581::new(&m.top_via(), src.parse().unwrap()).apply(&mut ed);
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

    /// What `Rfc3581` says the responses go to is what `via_return` reads
    /// from the Via it wrote: the branch binds the one, the response path
    /// derives the other.
    #[test]
    fn rfc3581_back_is_what_the_edited_via_says() {
        use crate::sip::{scan, Framing, Limits};
        let msg = |via: &str| {
            scan(
                bytes::Bytes::from(format!(
                    "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/{via}\r\nFrom: <sip:x@y>;tag=1\r\n\
                     To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
                )),
                Framing::Datagram,
                &Limits::default(),
            )
            .unwrap()
        };
        let vias = [
            "UDP 192.0.2.7:5060;branch=z9hG4bK1",
            "UDP 192.0.2.7;branch=z9hG4bK1",
            "UDP 10.0.0.2:5060;branch=z9hG4bK1",
            "UDP 192.0.2.7:5062;rport;branch=z9hG4bK1",
            "UDP 192.0.2.7:5062;branch=z9hG4bK1;rport=7;received=10.9.9.9",
            "udp 192.0.2.7:5062;RPORT;Received;branch=z9hG4bK1",
            "UDP 192.0.2.7;rport;rport=9;received=1.1.1.1;received=2.2.2.2",
            "TCP phone.example.net:5062;rport;branch=z9hG4bK1",
            "TCP phone.example.net;branch=z9hG4bK1",
            "UDP [::ffff:192.0.2.7]:5060;branch=z9hG4bK1",
            "UDP [2001:db8:0::7];branch=z9hG4bK1",
            "UDP [2001:db8::8]:5070;rport;branch=z9hG4bK1",
            "SCTP 192.0.2.7:5060;rport;branch=z9hG4bK1",
            "UDP 127.0.0.1:5080;rport;branch=z9hG4bK-ast, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2",
        ];
        let sources = [
            "192.0.2.7:5060",
            "192.0.2.7:40000",
            "192.0.2.7:0",
            "127.0.0.1:5080",
            "[::ffff:192.0.2.7]:5060",
            "[2001:db8::7]:5060",
        ];
        for via in vias {
            for src in sources {
                let m = msg(via);
                let mut ed = Editor::new(&m);
                let fix = Rfc3581::new(&m.top_via(), src.parse().unwrap());
                fix.apply(&mut ed);
                let said = fix.back;
                let edited = scan(ed.finish(), Framing::Datagram, &Limits::default()).unwrap();
                let read = edited.vias().next().flatten().and_then(|v| via_return(&v));
                assert_eq!(said, read, "{via} from {src}");
                let transport_known = !via.starts_with("SCTP");
                assert_eq!(said.is_some(), transport_known, "{via} from {src}");
            }
        }
    }
}
