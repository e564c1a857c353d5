//! The check of a WebSocket upgrade request (`docs/websocket.md`), before
//! any SIP is read from the connection: a well-formed RFC 6455 upgrade
//! to `ws.path` asking for the `sip` subprotocol (RFC 7118), from a web
//! origin sipwarden serves. Pure: the transport reads the head bytes and
//! asks; a refusal carries the HTTP status to answer with and the reason
//! counted toward a ban.

use crate::settings::Settings;
use crate::verdict::Reason;
use crate::web::{self, has_token, Head, UpgradeRequest};

/// What the bytes read so far from a new WebSocket connection come to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// The head is not complete and still under `ws.max_header`.
    More,
    /// Upgrade: answer 101 with the accept value of `key`; the first
    /// `head_len` bytes were the request.
    Accept {
        key: String,
        head_len: usize,
    },
    Refuse(Refusal),
}

/// A refused upgrade: the HTTP status answered, why (the body's text) and
/// the reason counted (`ws-upgrade` or `ws-origin`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: Reason,
    pub why: &'static str,
}

fn refuse(status: u16, reason: Reason, why: &'static str) -> Upgrade {
    Upgrade::Refuse(Refusal {
        status,
        reason,
        why,
    })
}

/// Checks the first bytes of a connection on a `ws:` or `wss:` listener.
/// `server_name` is the TLS server name of a `wss:` connection (`None` on
/// `ws:`), one of the hosts a page may come from when `ws.origins` is not
/// set.
pub fn check_upgrade(bytes: &[u8], server_name: Option<&str>, s: &Settings) -> Upgrade {
    let max = s.config.ws.max_header;
    match web::parse_head(bytes) {
        Head::Partial if bytes.len() < max => Upgrade::More,
        Head::Partial => refuse(431, Reason::WsUpgrade, "request head too large"),
        Head::Complete(r) if r.head_len > max => {
            refuse(431, Reason::WsUpgrade, "request head too large")
        }
        Head::Invalid => refuse(400, Reason::WsUpgrade, "not an HTTP/1.1 request"),
        Head::Complete(r) => match admit(&r, server_name, s) {
            Ok(()) => match r.key {
                Some(key) => Upgrade::Accept {
                    key,
                    head_len: r.head_len,
                },
                None => refuse(400, Reason::WsUpgrade, "no Sec-WebSocket-Key"),
            },
            Err(refusal) => Upgrade::Refuse(refusal),
        },
    }
}

/// The rules, in the order a refusal is reported: the request line, the
/// path, the WebSocket handshake headers, the `sip` subprotocol, then the
/// origin.
fn admit(r: &UpgradeRequest, server_name: Option<&str>, s: &Settings) -> Result<(), Refusal> {
    let no = |status, reason, why| {
        Err(Refusal {
            status,
            reason,
            why,
        })
    };
    let ws = &s.config.ws;
    if r.method != "GET" || r.minor_version != 1 {
        return no(400, Reason::WsUpgrade, "an upgrade is a GET over HTTP/1.1");
    }
    let path = r.target.split('?').next().unwrap_or_default();
    if path != ws.path {
        return no(404, Reason::WsUpgrade, "no WebSocket endpoint at this path");
    }
    let Some(host) = r.host.as_deref() else {
        return no(400, Reason::WsUpgrade, "no Host header");
    };
    if !has_token(&r.upgrade, "websocket") || !has_token(&r.connection, "upgrade") {
        return no(426, Reason::WsUpgrade, "not a WebSocket upgrade");
    }
    if r.version.as_deref() != Some("13") {
        return no(426, Reason::WsUpgrade, "Sec-WebSocket-Version must be 13");
    }
    if !r.key.as_deref().is_some_and(valid_key) {
        return no(400, Reason::WsUpgrade, "bad Sec-WebSocket-Key");
    }
    if !has_token(&r.protocols, "sip") {
        return no(
            400,
            Reason::WsUpgrade,
            "Sec-WebSocket-Protocol must offer sip (RFC 7118)",
        );
    }
    if !origin_allowed(
        r.origin.as_deref(),
        host,
        server_name,
        ws.origins.as_deref(),
    ) {
        return no(403, Reason::WsOrigin, "origin not allowed");
    }
    Ok(())
}

/// A `Sec-WebSocket-Key`: 16 bytes in base64, 24 characters ending `==`.
fn valid_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() == 24
        && b.ends_with(b"==")
        && b.iter()
            .take(22)
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// Whether a page of `origin` may open a connection. With `ws.origins`,
/// only those (scheme, host and port compared, default ports filled in);
/// without, a page whose host is the one the browser connected to: the
/// `Host` header's host or the TLS server name. No `Origin` (no browser
/// sends none) is refused either way.
pub fn origin_allowed(
    origin: Option<&str>,
    host: &str,
    server_name: Option<&str>,
    allowed: Option<&[String]>,
) -> bool {
    let Some(o) = origin.and_then(web::origin_parts) else {
        return false;
    };
    match allowed {
        Some(list) => list
            .iter()
            .filter_map(|a| web::origin_parts(a))
            .any(|a| a == o),
        None => {
            let host = web::split_host_port(host).map_or(host, |(h, _)| h);
            o.host.eq_ignore_ascii_case(host)
                || server_name.is_some_and(|n| o.host.eq_ignore_ascii_case(n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Settings {
        let c = crate::config::parse(
            &format!(
                "[listen]\nadvertise = \"pbx.example.com:5060\"\n\
                 public = [\"udp:0.0.0.0:5060\", \"ws:0.0.0.0:8080\"]\n\
                 [filter]\ndomains = [\"sip-7f3k.example.com\"]\n{extra}"
            ),
            "t",
        )
        .unwrap();
        Settings::new(c)
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// A browser's upgrade with `line` replaced or added: each entry is
    /// `Name: value` (empty value = header left out).
    fn head(target: &str, changes: &[(&str, &str)]) -> Vec<u8> {
        let mut h: Vec<(String, String)> = [
            ("Host", "sip-7f3k.example.com:8443"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Origin", "https://sip-7f3k.example.com"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", KEY),
            ("Sec-WebSocket-Protocol", "sip"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        for (name, v) in changes {
            h.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if !v.is_empty() {
                h.push((name.to_string(), v.to_string()));
            }
        }
        let mut out = format!("GET {target} HTTP/1.1\r\n");
        for (n, v) in h {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    fn status(u: Upgrade) -> (u16, Reason) {
        match u {
            Upgrade::Refuse(r) => (r.status, r.reason),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_browser_upgrade_to_the_path_with_sip_is_accepted() {
        let s = settings("");
        let h = head("/ws", &[]);
        assert_eq!(
            check_upgrade(&h, None, &s),
            Upgrade::Accept {
                key: KEY.into(),
                head_len: h.len()
            }
        );
        // A query string, other subprotocols and other tokens are fine.
        let h = head(
            "/ws?token=1",
            &[
                ("Sec-WebSocket-Protocol", "chat, SIP"),
                ("Connection", "keep-alive, upgrade"),
            ],
        );
        assert!(matches!(
            check_upgrade(&h, None, &s),
            Upgrade::Accept { .. }
        ));
    }

    #[test]
    fn wrong_path_subprotocol_or_handshake_is_refused() {
        let s = settings("");
        // (target, header changes, status)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16);
        let cases: &[Case] = &[
            ("/", &[], 404),
            ("/wss", &[], 404),
            ("/ws", &[("Sec-WebSocket-Protocol", "")], 400),
            ("/ws", &[("Sec-WebSocket-Protocol", "chat")], 400),
            ("/ws", &[("Upgrade", "")], 426),
            ("/ws", &[("Connection", "keep-alive")], 426),
            ("/ws", &[("Sec-WebSocket-Version", "8")], 426),
            ("/ws", &[("Sec-WebSocket-Key", "")], 400),
            ("/ws", &[("Sec-WebSocket-Key", "short==")], 400),
            ("/ws", &[("Host", "")], 400),
        ];
        for (target, changes, want) in cases {
            let h = head(target, changes);
            assert_eq!(
                status(check_upgrade(&h, None, &s)),
                (*want, Reason::WsUpgrade),
                "{target} {changes:?}"
            );
        }
        let post = String::from_utf8(head("/ws", &[]))
            .unwrap()
            .replacen("GET", "POST", 1);
        assert_eq!(
            status(check_upgrade(post.as_bytes(), None, &s)),
            (400, Reason::WsUpgrade)
        );
        // SIP, TLS or junk where HTTP is expected.
        for junk in [
            &b"REGISTER sip:x SIP/2.0\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01",
        ] {
            assert_eq!(
                status(check_upgrade(junk, None, &s)),
                (400, Reason::WsUpgrade)
            );
        }
    }

    #[test]
    fn another_path_is_configured_with_ws_path() {
        let s = settings("[ws]\npath = \"/sip\"\n");
        assert!(matches!(
            check_upgrade(&head("/sip", &[]), None, &s),
            Upgrade::Accept { .. }
        ));
        assert_eq!(
            status(check_upgrade(&head("/ws", &[]), None, &s)),
            (404, Reason::WsUpgrade)
        );
    }

    #[test]
    fn without_ws_origins_the_page_must_come_from_the_host_connected_to() {
        let s = settings("");
        let check = |origin: &str, host: &str, sni: Option<&str>| {
            check_upgrade(&head("/ws", &[("Origin", origin), ("Host", host)]), sni, &s)
        };
        let host = "sip-7f3k.example.com:8443";
        assert!(matches!(
            check("https://SIP-7f3k.example.com:444", host, None),
            Upgrade::Accept { .. }
        ));
        // The server name of a wss: connection counts too.
        assert!(matches!(
            check(
                "https://phone.example.com",
                "203.0.113.1:8443",
                Some("phone.example.com")
            ),
            Upgrade::Accept { .. }
        ));
        for bad in ["https://evil.example", "null", "https://example.com", ""] {
            assert_eq!(
                status(check(bad, host, Some("sip-7f3k.example.com"))),
                (403, Reason::WsOrigin),
                "{bad}"
            );
        }
    }

    #[test]
    fn with_ws_origins_only_those_pages() {
        let s = settings(
            "[ws]\norigins = [\"https://phone.example.com\", \"http://127.0.0.1:8000\"]\n",
        );
        let check = |origin: &str| check_upgrade(&head("/ws", &[("Origin", origin)]), None, &s);
        for ok in [
            "https://phone.example.com",
            "https://PHONE.example.com:443",
            "http://127.0.0.1:8000",
        ] {
            assert!(matches!(check(ok), Upgrade::Accept { .. }), "{ok}");
        }
        for bad in [
            "http://phone.example.com",
            "https://phone.example.com:8443",
            "http://127.0.0.1:8001",
            // The host connected to is no longer enough.
            "https://sip-7f3k.example.com",
        ] {
            assert_eq!(status(check(bad)), (403, Reason::WsOrigin), "{bad}");
        }
    }

    #[test]
    fn a_head_is_bounded_by_ws_max_header() {
        let s = settings("[ws]\nmax_header = 1024\n");
        let h = head("/ws", &[]);
        assert_eq!(check_upgrade(&h[..h.len() - 2], None, &s), Upgrade::More);
        let long = vec![b'a'; 1024];
        let mut partial = b"GET /ws HTTP/1.1\r\nX: ".to_vec();
        partial.extend_from_slice(&long);
        assert_eq!(
            status(check_upgrade(&partial, None, &s)),
            (431, Reason::WsUpgrade)
        );
        let big = head("/ws", &[("X-Pad", &"a".repeat(1024))]);
        assert_eq!(
            status(check_upgrade(&big, None, &s)),
            (431, Reason::WsUpgrade)
        );
    }
}
