//! The individual edits the proxy makes to a message, each touching only
//! the bytes it must.

use std::net::{IpAddr, SocketAddr};

use crate::flow::Transport;
use crate::sip::addr::{split_list, NameAddr};
use crate::sip::uri::{parse_host_ip, Uri};
use crate::sip::via::Via;
use crate::sip::{Editor, HeaderName, Message, Method, Span};

use super::action::Dest;

/// IPv4-mapped IPv6 addresses are IPv4 for comparisons and headers.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `ip:port`, IPv6 bracketed, as written in SIP URIs and our headers.
pub fn sockaddr_text(a: SocketAddr) -> String {
    match canonical_ip(a.ip()) {
        IpAddr::V4(v4) => format!("{v4}:{}", a.port()),
        IpAddr::V6(v6) => format!("[{v6}]:{}", a.port()),
    }
}

/// Dialog-creating requests get Record-Route (DESIGN.md section 3).
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
    let rport = via.param_at(b"rport");
    let received = via.param_at(b"received");
    let sent_by_differs = parse_host_ip(via.host).map(canonical_ip) != Some(ip);
    let ip_s = ip.to_string();
    match received {
        Some(p) => ed.replace(Span::new(p.start, p.end), &[b"received=", ip_s.as_bytes()]),
        None if sent_by_differs || rport.is_some() => {
            ed.insert(via.span.end as usize, &[b";received=", ip_s.as_bytes()])
        }
        None => {}
    }
    if let Some(p) = rport {
        let port = src.port().to_string();
        ed.replace(Span::new(p.start, p.end), &[b"rport=", port.as_bytes()]);
    }
}

/// Decrements Max-Forwards, or inserts 70 when absent (checked for 0
/// before).
pub fn max_forwards(ed: &mut Editor<'_>, msg: &Message) {
    match (msg.first(HeaderName::MaxForwards), msg.max_forwards) {
        (Some(h), Some(n)) => {
            let v = (n.saturating_sub(1)).to_string();
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
