//! The HTTP a WebSocket listener sees before any SIP (RFC 6455 4.2.1,
//! RFC 7118): the upgrade request head, read as bytes into spans of the
//! header values a check needs, web origins, and the plain HTTP answers
//! sipwarden writes. Nothing here decides: `policy::ws` does.

/// Headers read from an upgrade request at most; a request with more is
/// refused (a browser sends about fifteen).
pub const MAX_HEADERS: usize = 48;

/// The parts of an upgrade request head a check reads. Header values are
/// the last occurrence's, except the list-valued ones (`Connection`,
/// `Upgrade`, `Sec-WebSocket-Protocol`), whose occurrences are all kept
/// joined by commas, as RFC 9110 5.3 allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeRequest {
    pub method: String,
    /// The request target, query string included.
    pub target: String,
    /// `1` for HTTP/1.1.
    pub minor_version: u8,
    pub host: Option<String>,
    pub origin: Option<String>,
    pub upgrade: String,
    pub connection: String,
    pub key: Option<String>,
    pub version: Option<String>,
    pub protocols: String,
    /// Bytes of the head, the blank line included: what follows them is
    /// already WebSocket data.
    pub head_len: usize,
}

/// What the bytes read so far hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    /// No blank line yet: read more (within `ws.max_header`).
    Partial,
    /// Boxed: the request is read once per connection, the enum moved
    /// around while the head is incomplete.
    Complete(Box<UpgradeRequest>),
    /// Not an HTTP/1.x request head (or more than [`MAX_HEADERS`] headers).
    Invalid,
}

/// Parses an upgrade request head from the first bytes of a connection.
/// Never panics; header values that are not UTF-8 are read lossily (a
/// check then fails on them).
pub fn parse_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Invalid,
    };
    let text = |v: &[u8]| String::from_utf8_lossy(v).trim().to_string();
    let mut out = UpgradeRequest {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        minor_version: req.version.unwrap_or(0),
        head_len,
        ..UpgradeRequest::default()
    };
    let join = |list: &mut String, v: &[u8]| {
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(&text(v));
    };
    for h in req.headers.iter() {
        let name = h.name;
        let v = h.value;
        if name.eq_ignore_ascii_case("host") {
            out.host = Some(text(v));
        } else if name.eq_ignore_ascii_case("origin") {
            out.origin = Some(text(v));
        } else if name.eq_ignore_ascii_case("upgrade") {
            join(&mut out.upgrade, v);
        } else if name.eq_ignore_ascii_case("connection") {
            join(&mut out.connection, v);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            out.key = Some(text(v));
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            out.version = Some(text(v));
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            join(&mut out.protocols, v);
        }
    }
    Head::Complete(Box::new(out))
}

/// True when the comma-separated `list` holds `token` (any case).
pub fn has_token(list: &str, token: &str) -> bool {
    list.split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A web origin (RFC 6454) as a browser sends it in `Origin`:
/// `scheme://host[:port]`, compared with the default port filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Lower-cased.
    pub scheme: String,
    /// Lower-cased; IPv6 with its brackets.
    pub host: String,
    pub port: u16,
}

/// Parses `scheme://host[:port]` (a trailing `/` tolerated, no other
/// path); `None` for anything else, `null` included.
pub fn origin_parts(s: &str) -> Option<Origin> {
    let (scheme, rest) = s.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = split_host_port(rest)?;
    if host.is_empty() {
        return None;
    }
    Some(Origin {
        scheme,
        host: host.to_ascii_lowercase(),
        port: port.unwrap_or(default),
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`: the host (brackets kept)
/// and the port when one is written. `None` for a bad port.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.starts_with('[') {
        let end = s.find(']')?;
        let (host, rest) = s.split_at(end + 1);
        match rest.strip_prefix(':') {
            None if rest.is_empty() => Some((host, None)),
            None => None,
            Some(p) => Some((host, Some(p.parse().ok()?))),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => Some((h, Some(p.parse().ok()?))),
            Some(_) => None,
            None => Some((s, None)),
        }
    }
}

/// The plain HTTP answer to a refused upgrade: the status line, a short
/// text body saying which rule refused, and `Connection: close`. A 426
/// names the WebSocket version sipwarden speaks (RFC 6455 4.4).
pub fn refusal(status: u16, why: &str) -> Vec<u8> {
    let phrase = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let body = format!("{status} {phrase}: {why}\n");
    let extra = if status == 426 {
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {phrase}\r\n{extra}Content-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer to an accepted upgrade: `accept` is the
/// `Sec-WebSocket-Accept` value the transport derived from the key (a
/// SHA-1 the WebSocket crate computes), and the subprotocol is `sip`.
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_upgrade_head_is_read() {
        let raw = b"GET /ws?x=1 HTTP/1.1\r\nHost: sip.example.com:8443\r\n\
            Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
            Origin: https://phone.example.com\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Protocol: x\r\n\r\n\x81\x00";
        let Head::Complete(r) = parse_head(raw) else {
            panic!("not complete");
        };
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/ws?x=1");
        assert_eq!(r.minor_version, 1);
        assert_eq!(r.host.as_deref(), Some("sip.example.com:8443"));
        assert_eq!(r.origin.as_deref(), Some("https://phone.example.com"));
        assert!(has_token(&r.connection, "upgrade"));
        assert!(has_token(&r.upgrade, "WebSocket"));
        assert_eq!(r.key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(r.version.as_deref(), Some("13"));
        assert_eq!(r.protocols, "sip,x");
        assert_eq!(r.head_len, raw.len() - 2);
    }

    #[test]
    fn partial_and_invalid_heads() {
        assert_eq!(parse_head(b""), Head::Partial);
        assert_eq!(parse_head(b"GET /ws HTTP/1.1\r\nHost: a"), Head::Partial);
        assert_eq!(parse_head(b"\x16\x03\x01\x00"), Head::Invalid);
        assert_eq!(parse_head(b"REGISTER sip:a SIP/2.0\r\n\r\n"), Head::Invalid);
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse_head(many.as_bytes()), Head::Invalid);
    }

    #[test]
    fn origins_as_browsers_send_them() {
        let o = origin_parts("HTTPS://Phone.Example.com").unwrap();
        assert_eq!(
            (o.scheme.as_str(), o.host.as_str(), o.port),
            ("https", "phone.example.com", 443)
        );
        assert_eq!(origin_parts("http://127.0.0.1:8000/").unwrap().port, 8000);
        assert_eq!(origin_parts("http://[::1]:81").unwrap().host, "[::1]");
        for bad in [
            "null",
            "",
            "ftp://a",
            "https://",
            "https://a/b",
            "https://a:x",
            "a.example",
        ] {
            assert_eq!(origin_parts(bad), None, "{bad}");
        }
    }

    #[test]
    fn answers_are_plain_http() {
        let r = String::from_utf8(refusal(426, "not a WebSocket upgrade")).unwrap();
        assert!(r.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(r.contains("Sec-WebSocket-Version: 13\r\n"));
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let ok = String::from_utf8(switching_protocols("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")).unwrap();
        assert!(ok.starts_with("HTTP/1.1 101 "));
        assert!(ok.ends_with("Sec-WebSocket-Protocol: sip\r\n\r\n"));
    }
}
