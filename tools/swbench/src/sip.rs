//! Just enough SIP reading to count, answer and route a benchmark dialog.
//!
//! Everything works on the received bytes and returns `Option`: a malformed
//! or hostile message yields `None`, never a panic. Compact header forms
//! (`v: f: t: i: m: l:`), LF-only line ends and folded lines are accepted
//! because proxies under test may legitimately produce them.

use std::net::{IpAddr, SocketAddr};

/// One logical header line (folded continuation lines included).
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// Header name as written (may be a compact form).
    pub name: &'a [u8],
    /// Value with surrounding whitespace trimmed.
    pub value: &'a [u8],
    /// The whole line without its line end, for copying verbatim.
    pub line: &'a [u8],
}

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `METHOD uri SIP/2.0`
    Request {
        /// Method token.
        method: &'a [u8],
        /// Request-URI as written.
        uri: &'a [u8],
    },
    /// `SIP/2.0 code reason`
    Response {
        /// Status code.
        code: u16,
    },
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Case-insensitive ASCII equality.
pub fn eq_ic(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Line starting at `pos`: (line without CR/LF, position after the line end).
fn line_at(msg: &[u8], pos: usize) -> (&[u8], usize) {
    let rest = &msg[pos..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = &rest[..i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            (line, pos + i + 1)
        }
        None => (rest, msg.len()),
    }
}

/// Parses the start line.
pub fn start_line(msg: &[u8]) -> Option<StartLine<'_>> {
    let (line, _) = line_at(msg, 0);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let a = parts.next()?;
    let b = parts.next()?;
    if a.len() >= 4 && eq_ic(&a[..4], b"SIP/") {
        let code = std::str::from_utf8(b).ok()?.parse().ok()?;
        return Some(StartLine::Response { code });
    }
    let c = parts.next()?;
    if c.len() < 4 || !eq_ic(&c[..4], b"SIP/") || a.is_empty() || b.is_empty() {
        return None;
    }
    Some(StartLine::Request { method: a, uri: b })
}

/// Iterator over the header lines of a message (stops at the blank line).
pub struct Headers<'a> {
    msg: &'a [u8],
    pos: usize,
}

/// Header lines of `msg`, after its start line.
pub fn headers(msg: &[u8]) -> Headers<'_> {
    let (_, pos) = line_at(msg, 0);
    Headers { msg, pos }
}

impl<'a> Iterator for Headers<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        loop {
            if self.pos >= self.msg.len() {
                return None;
            }
            let start = self.pos;
            let (line, mut next) = line_at(self.msg, start);
            if line.is_empty() {
                self.pos = self.msg.len();
                return None;
            }
            let mut end = start + line.len();
            // Folded continuation lines belong to this header.
            while next < self.msg.len() && matches!(self.msg[next], b' ' | b'\t') {
                let (cont, after) = line_at(self.msg, next);
                end = next + cont.len();
                next = after;
            }
            self.pos = next;
            let whole = &self.msg[start..end];
            let Some(colon) = whole.iter().position(|&b| b == b':') else {
                continue; // not a header line: skip it
            };
            return Some(Header {
                name: trim(&whole[..colon]),
                value: trim(&whole[colon + 1..]),
                line: whole,
            });
        }
    }
}

/// Offset of the body: just after the blank line (or the end).
pub fn body_offset(msg: &[u8]) -> usize {
    let mut pos = line_at(msg, 0).1;
    while pos < msg.len() {
        let (line, next) = line_at(msg, pos);
        if line.is_empty() {
            return next;
        }
        pos = next;
    }
    msg.len()
}

/// True when `name` is the header `long` or its compact form.
pub fn is_header(name: &[u8], long: &str, compact: Option<u8>) -> bool {
    eq_ic(name, long.as_bytes())
        || matches!((compact, name), (Some(c), [n]) if n.eq_ignore_ascii_case(&c))
}

/// Value of the first header named `long` (or `compact`).
pub fn first_value<'a>(msg: &'a [u8], long: &str, compact: Option<u8>) -> Option<&'a [u8]> {
    headers(msg)
        .find(|h| is_header(h.name, long, compact))
        .map(|h| h.value)
}

/// Splits a header value at commas that are outside quotes and `<...>`.
pub fn split_list(value: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut start, mut i) = (false, false, 0, 0);
    while i < value.len() {
        match value[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                out.push(trim(&value[start..i]));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let last = trim(&value[start.min(value.len())..]);
    if !last.is_empty() {
        out.push(last);
    }
    out.retain(|v| !v.is_empty());
    out
}

/// Every comma-separated value of every `long`/`compact` header, in order.
pub fn all_values<'a>(msg: &'a [u8], long: &str, compact: Option<u8>) -> Vec<&'a [u8]> {
    headers(msg)
        .filter(|h| is_header(h.name, long, compact))
        .flat_map(|h| split_list(h.value))
        .collect()
}

/// Position just past a leading quoted display name, if any.
fn skip_quoted(value: &[u8]) -> usize {
    if value.first() != Some(&b'"') {
        return 0;
    }
    let mut i = 1;
    while i < value.len() {
        match value[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    value.len()
}

/// Splits a name-addr or addr-spec header value into (URI, header params after it).
pub fn split_name_addr(value: &[u8]) -> (&[u8], &[u8]) {
    let from = skip_quoted(value);
    let rest = &value[from.min(value.len())..];
    if let Some(lt) = rest.iter().position(|&b| b == b'<') {
        let inner = &rest[lt + 1..];
        let gt = inner.iter().position(|&b| b == b'>').unwrap_or(inner.len());
        let after = &inner[(gt + 1).min(inner.len())..];
        return (trim(&inner[..gt]), after);
    }
    // addr-spec: parameters after the URI belong to the header.
    let rest = trim(rest);
    match rest.iter().position(|&b| b == b';') {
        Some(i) => (trim(&rest[..i]), &rest[i..]),
        None => (rest, &[]),
    }
}

/// Value of `;name=value` in a `;`-separated parameter list (`Some(b"")` for a bare flag).
pub fn param<'a>(params: &'a [u8], name: &str) -> Option<&'a [u8]> {
    for p in params.split(|&b| b == b';') {
        let p = trim(p);
        let (k, v) = match p.iter().position(|&b| b == b'=') {
            Some(i) => (trim(&p[..i]), trim(&p[i + 1..])),
            None => (p, &p[p.len()..]),
        };
        if eq_ic(k, name.as_bytes()) {
            return Some(v);
        }
    }
    None
}

/// The `tag` parameter of a From/To value.
pub fn tag(value: &[u8]) -> Option<&[u8]> {
    param(split_name_addr(value).1, "tag").filter(|t| !t.is_empty())
}

/// Host (brackets removed) and optional port of a `host[:port]` string.
pub fn split_host_port(hp: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let hp = trim(hp);
    if hp.first() == Some(&b'[') {
        let close = hp.iter().position(|&b| b == b']')?;
        let host = &hp[1..close];
        let rest = &hp[close + 1..];
        let port = match rest {
            [] => None,
            [b':', digits @ ..] => Some(parse_u16(digits)?),
            _ => return None,
        };
        return Some((host, port));
    }
    match hp.iter().position(|&b| b == b':') {
        Some(i) => Some((&hp[..i], Some(parse_u16(&hp[i + 1..])?))),
        None if hp.is_empty() => None,
        None => Some((hp, None)),
    }
}

fn parse_u16(d: &[u8]) -> Option<u16> {
    std::str::from_utf8(d).ok()?.trim().parse().ok()
}

/// Parses an IP literal (dotted IPv4 or IPv6 without brackets).
pub fn parse_ip(host: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(host).ok()?.parse().ok()
}

/// A SIP URI reduced to what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    /// Host as written (brackets removed).
    pub host: &'a [u8],
    /// Port, if given.
    pub port: Option<u16>,
    /// URI parameters (`;a=b;lr`), without the headers part.
    pub params: &'a [u8],
    /// True for `sips:`.
    pub secure: bool,
}

impl Uri<'_> {
    /// True for a loose-routing (`;lr`) URI.
    pub fn lr(&self) -> bool {
        param(self.params, "lr").is_some()
    }

    /// Where to send: the host must be an IP literal (the bench does no DNS);
    /// the default port is 5060 (5061 for sips).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = parse_ip(self.host)?;
        let default = if self.secure { 5061 } else { 5060 };
        Some(SocketAddr::new(ip, self.port.unwrap_or(default)))
    }
}

/// Parses `sip:` / `sips:` URIs.
pub fn parse_uri(uri: &[u8]) -> Option<Uri<'_>> {
    let uri = trim(uri);
    let (rest, secure) = if uri.len() > 4 && eq_ic(&uri[..4], b"sip:") {
        (&uri[4..], false)
    } else if uri.len() > 5 && eq_ic(&uri[..5], b"sips:") {
        (&uri[5..], true)
    } else {
        return None;
    };
    let rest = match rest.iter().position(|&b| b == b'?') {
        Some(q) => &rest[..q],
        None => rest,
    };
    let rest = match rest.iter().rposition(|&b| b == b'@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    let hp_end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
    let (host, port) = split_host_port(&rest[..hp_end])?;
    Some(Uri {
        host,
        port,
        params: &rest[hp_end..],
        secure,
    })
}

/// The parts of a Via value that decide where a response goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    /// Transport token (`UDP`, `TCP`, ...).
    pub transport: &'a [u8],
    /// sent-by host (brackets removed).
    pub host: &'a [u8],
    /// sent-by port.
    pub port: Option<u16>,
    /// All parameters.
    pub params: &'a [u8],
}

/// Parses one Via value (`SIP/2.0/UDP host:port;params`).
pub fn parse_via(value: &[u8]) -> Option<Via<'_>> {
    let value = trim(value);
    let sp = value.iter().position(|b| b.is_ascii_whitespace())?;
    let proto = &value[..sp];
    let transport = trim(proto.rsplit(|&b| b == b'/').next()?);
    let rest = trim(&value[sp..]);
    let hp_end = rest
        .iter()
        .position(|&b| b == b';' || b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    let (host, port) = split_host_port(&rest[..hp_end])?;
    let params = &rest[hp_end..];
    let params = match params.iter().position(|&b| b == b';') {
        Some(i) => &params[i..],
        None => &params[params.len()..],
    };
    Some(Via {
        transport,
        host,
        port,
        params,
    })
}

impl Via<'_> {
    /// RFC 3261 18.2.2 plus RFC 3581: `received` overrides the host,
    /// a valued `rport` overrides the port, else sent-by (default 5060).
    pub fn response_addr(&self) -> Option<SocketAddr> {
        let host = match param(self.params, "received") {
            Some(r) if !r.is_empty() => r,
            _ => self.host,
        };
        let ip = parse_ip(host)?;
        let port = match param(self.params, "rport").and_then(parse_u16) {
            Some(p) => p,
            None => self.port.unwrap_or(5060),
        };
        Some(SocketAddr::new(ip, port))
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&[u8]> {
        param(self.params, "branch")
    }
}

/// The top Via value of a message.
pub fn top_via(msg: &[u8]) -> Option<Via<'_>> {
    let first = first_value(msg, "via", Some(b'v'))?;
    parse_via(split_list(first).first()?)
}

/// CSeq number and method.
pub fn cseq(value: &[u8]) -> Option<(u32, &[u8])> {
    let value = trim(value);
    let sp = value.iter().position(|b| b.is_ascii_whitespace())?;
    let n = std::str::from_utf8(&value[..sp]).ok()?.parse().ok()?;
    Some((n, trim(&value[sp..])))
}

/// Name of the benchmark's timestamp header.
pub const BENCH_TS: &str = "X-Bench-Ts";

/// The `X-Bench-Ts` stamp (nanoseconds on CLOCK_MONOTONIC), if present.
pub fn bench_ts(msg: &[u8]) -> Option<u64> {
    let v = first_value(msg, BENCH_TS, None)?;
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &[u8] = b"INVITE sip:1001@pbx.secret.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKk1, SIP/2.0/UDP 127.0.0.2:4000;branch=z9hG4bK-a;rport=4000;received=127.0.0.2\r\n\
v: SIP/2.0/TCP [::1]:5070;branch=z9hG4bK-x\r\n\
Record-Route: <sip:127.0.0.1:5060;lr;ftag=a>,\r\n <sip:127.0.0.1:5070;lr>\r\n\
X-Bench-Ts: 00000000000000001234\r\n\
f: \"A, b\" <sip:2000@pbx.secret.example>;tag=ft1\r\n\
To: <sip:1001@pbx.secret.example>\r\n\
i: call-1@bench\r\n\
CSeq: 7 INVITE\r\n\
l: 4\r\n\
\r\n\
body";

    #[test]
    fn start_lines() {
        assert_eq!(
            start_line(INV),
            Some(StartLine::Request {
                method: b"INVITE",
                uri: b"sip:1001@pbx.secret.example"
            })
        );
        assert_eq!(
            start_line(b"SIP/2.0 200 OK\r\n\r\n"),
            Some(StartLine::Response { code: 200 })
        );
        assert_eq!(start_line(b"garbage"), None);
        assert_eq!(start_line(b"SIP/2.0 abc OK\r\n"), None);
        assert_eq!(start_line(b""), None);
    }

    #[test]
    fn header_iteration_with_folding_and_compact_forms() {
        let names: Vec<_> = headers(INV).map(|h| h.name.to_vec()).collect();
        assert_eq!(names.len(), 9);
        let rr = all_values(INV, "record-route", None);
        assert_eq!(
            rr,
            vec![
                &b"<sip:127.0.0.1:5060;lr;ftag=a>"[..],
                b"<sip:127.0.0.1:5070;lr>"
            ]
        );
        assert_eq!(
            first_value(INV, "call-id", Some(b'i')),
            Some(&b"call-1@bench"[..])
        );
        assert_eq!(all_values(INV, "via", Some(b'v')).len(), 3);
        assert_eq!(&INV[body_offset(INV)..], b"body");
    }

    #[test]
    fn via_and_response_address() {
        let v = top_via(INV).unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.response_addr(), Some("127.0.0.1:5060".parse().unwrap()));
        assert_eq!(v.branch(), Some(&b"z9hG4bKk1"[..]));
        let vias = all_values(INV, "via", Some(b'v'));
        let second = parse_via(vias[1]).unwrap();
        assert_eq!(
            second.response_addr(),
            Some("127.0.0.2:4000".parse().unwrap())
        );
        let third = parse_via(vias[2]).unwrap();
        assert_eq!(third.response_addr(), Some("[::1]:5070".parse().unwrap()));
        let bare_rport = parse_via(b"SIP/2.0/UDP 127.0.0.9:7000;rport;branch=z").unwrap();
        assert_eq!(
            bare_rport.response_addr(),
            Some("127.0.0.9:7000".parse().unwrap())
        );
        let named = parse_via(b"SIP/2.0/UDP host.example;branch=z").unwrap();
        assert_eq!(named.response_addr(), None);
        assert!(parse_via(b"nonsense").is_none());
    }

    #[test]
    fn name_addr_and_tags() {
        let from = first_value(INV, "from", Some(b'f')).unwrap();
        assert_eq!(tag(from), Some(&b"ft1"[..]));
        assert_eq!(split_name_addr(from).0, b"sip:2000@pbx.secret.example");
        let to = first_value(INV, "to", Some(b't')).unwrap();
        assert_eq!(tag(to), None);
        assert_eq!(tag(b"sip:a@b;tag=x"), Some(&b"x"[..]));
        assert_eq!(split_name_addr(b"\"<odd>\" <sip:a@b>").0, b"sip:a@b");
    }

    #[test]
    fn uris() {
        let u = parse_uri(b"sip:127.0.0.1:5070;lr;ftag=a").unwrap();
        assert!(u.lr());
        assert_eq!(u.socket_addr(), Some("127.0.0.1:5070".parse().unwrap()));
        let u = parse_uri(b"sip:sink@127.0.0.1:5080;transport=udp?x=y").unwrap();
        assert!(!u.lr());
        assert_eq!(u.socket_addr(), Some("127.0.0.1:5080".parse().unwrap()));
        let u = parse_uri(b"sips:[::1]").unwrap();
        assert_eq!(u.socket_addr(), Some("[::1]:5061".parse().unwrap()));
        assert!(parse_uri(b"tel:+123").is_none());
        assert!(parse_uri(b"sip:").is_none());
        assert_eq!(parse_uri(b"sip:u@pbx.example").unwrap().socket_addr(), None);
    }

    #[test]
    fn cseq_and_ts() {
        assert_eq!(cseq(b"7 INVITE"), Some((7, &b"INVITE"[..])));
        assert_eq!(cseq(b"x INVITE"), None);
        assert_eq!(bench_ts(INV), Some(1234));
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let samples: [&[u8]; 8] = [
            b"",
            b"\r\n",
            b"INVITE sip:a SIP/2.0\r\nVia\r\nVia:\r\nTo: <\r\n",
            b"SIP/2.0 200 OK\nVia: SIP/2.0/UDP [::1\n\n",
            b"X y SIP/2.0\r\nRecord-Route: <<<>>>,,,\"\r\n",
            b"A b SIP/2.0\r\n f: folded-first\r\n",
            b"A b SIP/2.0\r\nCSeq: 99999999999 INVITE\r\n",
            b"A b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:99999\r\n",
        ];
        for s in samples {
            let _ = start_line(s);
            let _ = top_via(s);
            let _ = all_values(s, "record-route", None);
            let _ = first_value(s, "to", Some(b't')).map(tag);
            let _ = first_value(s, "cseq", None).map(cseq);
            let _ = body_offset(s);
        }
    }
}
