//! The individual edits the proxy makes to a message, each touching only
//! the bytes it must.

use std::net::SocketAddr;

use crate::flow::{canonical_ip, Transport};
use crate::sip::addr::{split_list, NameAddr};
use crate::sip::text::{ip_text, num_text};
use crate::sip::uri::{parse_host_ip, Uri};
use crate::sip::via::Via;
use crate::sip::{Editor, HeaderName, Message, Method, Span};

use super::action::Dest;

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
}
