//! Loose routing (RFC 3261 16.4 and 16.6): removing the Route entries that
//! name sipwarden, reading the flow tokens they carry, and finding the next
//! hop from the next Route or the Request-URI.

use crate::flow::Transport;
use crate::sip::addr::{split_list, NameAddr};
use crate::sip::uri::{Scheme, Uri};
use crate::sip::{Editor, HeaderName, Message, Span};

use super::action::Dest;
use crate::settings::Settings;
use crate::token::{FlowRef, Keys};

/// What popping our own Route entries found.
#[derive(Debug, Default)]
pub struct Popped<'m> {
    pub count: usize,
    /// A verified flow token from a popped entry's user part (a Path we
    /// added, or the Record-Route facing Asterisk).
    pub flow: Option<FlowRef>,
    /// A popped entry carried a token that does not verify.
    pub forged: bool,
    /// The first Route entry left (the next hop), as URI bytes.
    pub next: Option<&'m [u8]>,
}

/// Removes every leading Route entry that names sipwarden, across Route
/// lines that other headers may separate (Asterisk 22 puts its outbound
/// proxy Route first and a stored Path as a second Route line, with its
/// Vias between the two), and records the edits in `ed`.
pub fn pop_own_routes<'m>(
    ed: &mut Editor<'m>,
    msg: &'m Message,
    s: &Settings,
    keys: &Keys,
) -> Popped<'m> {
    let mut p = Popped::default();
    let call_id = msg.call_id();
    for h in msg.all(HeaderName::Route) {
        let v = msg.value(h);
        let base = h.value.start as usize;
        let mut popped_here = 0;
        let mut entries = 0;
        let mut first_kept = None;
        for (es, ee) in split_list(v) {
            entries += 1;
            if first_kept.is_some() {
                continue;
            }
            let na = NameAddr::parse(&v[es..ee]);
            let uri = na.and_then(|na| Uri::parse(na.uri));
            match uri {
                Some(u) if s.is_self(&u) => {
                    popped_here += 1;
                    let user = u.user.unwrap_or_default();
                    if let Some(tok) = u.param(b"swr") {
                        let ok = tok.is_some_and(|t| keys.verify_route_token(t, call_id, user));
                        if !ok {
                            p.forged = true;
                            continue;
                        }
                    }
                    if user.first() == Some(&b'f') {
                        match keys.verify_flow_token(user) {
                            Some(mut f) => {
                                f.transport = s.flow_transport(&f);
                                p.flow = p.flow.or(Some(f));
                            }
                            None => p.forged = true,
                        }
                    }
                }
                Some(_) => {
                    first_kept = Some(base + es);
                    p.next = na.map(|na| na.uri);
                }
                None => {
                    // Unreadable entry: stop popping, route by it no further.
                    first_kept = Some(base + es);
                }
            }
        }
        p.count += popped_here;
        if popped_here == entries && entries > 0 {
            ed.remove_header(h);
        } else if popped_here > 0 {
            if let Some(k) = first_kept {
                ed.delete(Span::new(base, k));
            }
        }
        if first_kept.is_some() {
            break;
        }
    }
    p
}

/// The next hop of a URI (RFC 3263 without NAPTR): the `transport`
/// parameter or UDP (TLS for `sips:`), the host as an address or a name
/// to resolve. A TLS hop is reached only over a connection that is up.
pub fn next_hop(uri: &Uri<'_>) -> Option<(Dest, Transport)> {
    let transport = match (uri.scheme, uri.transport()) {
        // tel: needs a Route: it cannot be reached here.
        (Scheme::Sip, None) => Transport::Udp,
        (Scheme::Sips, None) => Transport::Tls,
        (Scheme::Sip, Some(t)) => Transport::from_token(t)?,
        // sips: over anything but TLS is no sips: (RFC 3261 26.2.2).
        (Scheme::Sips, Some(t)) => match Transport::from_token(t)? {
            Transport::Udp => return None,
            _ => Transport::Tls,
        },
        _ => return None,
    };
    let port = uri.port.unwrap_or(transport.default_port());
    if let Some(maddr) = uri.param(b"maddr").flatten() {
        if let Some(ip) = crate::sip::uri::parse_host_ip(maddr) {
            return Some((Dest::Addr(std::net::SocketAddr::new(ip, port)), transport));
        }
    }
    let dest = match uri.host_ip() {
        Some(ip) => Dest::Addr(std::net::SocketAddr::new(ip, port)),
        None => Dest::Name {
            host: String::from_utf8_lossy(uri.host)
                .to_ascii_lowercase()
                .into(),
            port: uri.port,
        },
    };
    Some((dest, transport))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{scan, Framing, Limits};
    use bytes::Bytes;

    fn settings() -> Settings {
        Settings::new(
            crate::config::parse(
                "[listen]\nadvertise = \"pbx.example.com:5060\"\n[filter]\ndomains = [\"sip-7f3k.example.com\"]\n",
                "t",
            )
            .unwrap(),
        )
    }

    fn msg(routes: &str) -> Message {
        let s = format!(
            "INVITE sip:1001@192.0.2.9:5062 SIP/2.0\r\n{routes}Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK1\r\n\
             From: <sip:a@b>;tag=1\r\nTo: <sip:1001@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        scan(Bytes::from(s), Framing::Datagram, &Limits::default()).unwrap()
    }

    #[test]
    fn pops_leading_own_entries_across_lines() {
        let s = settings();
        let keys = Keys::new([3; 32]);
        let flow = FlowRef {
            transport: Transport::Udp,
            listener: 0,
            remote: "192.0.2.9:40000".parse().unwrap(),
        };
        let tok = keys.flow_token(&flow);
        // Asterisk's layout: outbound proxy Route, other headers, then Path.
        let m = msg(&format!(
            "Route: <sip:127.0.0.1:5070;lr>\r\nMax-Forwards: 70\r\nRoute: <sip:{tok}@127.0.0.1:5070;lr>, <sip:next.example.net;lr>\r\n"
        ));
        let mut ed = Editor::new(&m);
        let p = pop_own_routes(&mut ed, &m, &s, &keys);
        assert_eq!(p.count, 2);
        assert_eq!(p.flow, Some(flow));
        assert!(!p.forged);
        assert_eq!(p.next, Some(&b"sip:next.example.net;lr"[..]));
        let out = ed.finish();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.contains("Max-Forwards: 70\r\nRoute: <sip:next.example.net;lr>\r\nVia"),
            "{text}"
        );
        assert!(!text.contains("127.0.0.1:5070"), "{text}");
    }

    #[test]
    fn forged_tokens_are_flagged() {
        let s = settings();
        let keys = Keys::new([3; 32]);
        let m = msg("Route: <sip:f0123456789abcdef0123456789@127.0.0.1:5070;lr>\r\n");
        let mut ed = Editor::new(&m);
        let p = pop_own_routes(&mut ed, &m, &s, &keys);
        assert!(p.forged);
        assert_eq!(p.flow, None);
        let m = msg("Route: <sip:pbx.example.com;lr;swr=00>\r\n");
        let mut ed = Editor::new(&m);
        assert!(pop_own_routes(&mut ed, &m, &s, &keys).forged);
    }

    #[test]
    fn next_hops() {
        let h = |u: &str| next_hop(&Uri::parse(u.as_bytes()).unwrap());
        assert_eq!(
            h("sip:1@192.0.2.1"),
            Some((
                Dest::Addr("192.0.2.1:5060".parse().unwrap()),
                Transport::Udp
            ))
        );
        assert_eq!(
            h("sip:1@[2001:db8::1]:5070;transport=TCP"),
            Some((
                Dest::Addr("[2001:db8::1]:5070".parse().unwrap()),
                Transport::Tcp
            ))
        );
        assert_eq!(
            h("sip:sip.Provider.example"),
            Some((
                Dest::Name {
                    host: "sip.provider.example".into(),
                    port: None
                },
                Transport::Udp
            ))
        );
        let tls = |a: &str| Some((Dest::Addr(a.parse().unwrap()), Transport::Tls));
        assert_eq!(h("sip:x@192.0.2.1;transport=tls"), tls("192.0.2.1:5061"));
        assert_eq!(h("sips:x@192.0.2.1"), tls("192.0.2.1:5061"));
        assert_eq!(h("SIPS:x@[2001:db8::1]:5071"), tls("[2001:db8::1]:5071"));
        assert_eq!(h("sips:x@192.0.2.1;transport=tcp"), tls("192.0.2.1:5061"));
        assert_eq!(h("sips:x@192.0.2.1;transport=udp"), None);
        assert_eq!(h("sip:x@h;transport=sctp"), None);
        assert_eq!(h("tel:+1"), None);
    }
}
