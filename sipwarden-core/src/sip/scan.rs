//! The message scanner: finds the start line, the header lines and the body
//! of one SIP message without copying or decoding it.
//!
//! It accepts what real user agents send (compact names, any letter case,
//! whitespace around the colon, folded lines, LF-only line ends, non-UTF-8
//! bytes) and rejects what would make the proxy misbehave (NUL bytes in the
//! header section, oversized lines, too many headers, a Content-Length that
//! disagrees with the datagram).

use bytes::Bytes;
use smallvec::SmallVec;

use super::header::{is_token_char, HeaderName, TOKEN};
use super::lines::LineEnds;
use super::via::{self, Via};

/// Header lines kept inline before the index spills to the heap: most
/// messages have fewer.
pub const HEADERS_INLINE: usize = 20;

/// A byte range inside a message. `u32` keeps the header index small; a
/// message is never larger than `Limits::max_message` (< 4 GiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// Size limits, all configurable (`[limits]`), applied before anything else
/// is looked at so hostile input costs bounded work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_message: usize,
    pub max_headers: usize,
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 65535,
            max_headers: 128,
            max_line: 8192,
        }
    }
}

/// Why a message was refused. Each maps to a counted drop reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanError {
    TooLarge,
    TooManyHeaders,
    LineTooLong,
    NulByte,
    /// No blank line ends the header section.
    Incomplete,
    BadStartLine,
    BadVersion,
    BadHeader,
    MissingHeader(HeaderName),
    BadContentLength,
    /// The datagram holds fewer body bytes than Content-Length says.
    ShortBody,
    BadCSeq,
    /// CSeq method differs from the request method (RFC 4475 mismatch01).
    CSeqMismatch,
    BadMaxForwards,
    BadVia,
}

impl ScanError {
    /// Short stable name, used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanError::TooLarge => "too-large",
            ScanError::TooManyHeaders => "too-many-headers",
            ScanError::LineTooLong => "line-too-long",
            ScanError::NulByte => "nul-byte",
            ScanError::Incomplete => "incomplete",
            ScanError::BadStartLine => "bad-start-line",
            ScanError::BadVersion => "bad-version",
            ScanError::BadHeader => "bad-header",
            ScanError::MissingHeader(_) => "missing-header",
            ScanError::BadContentLength => "bad-content-length",
            ScanError::ShortBody => "short-body",
            ScanError::BadCSeq => "bad-cseq",
            ScanError::CSeqMismatch => "cseq-mismatch",
            ScanError::BadMaxForwards => "bad-max-forwards",
            ScanError::BadVia => "bad-via",
        }
    }
}

/// How the message was delimited: a datagram carries exactly one message
/// (extra bytes past Content-Length are cut), a stream frame was already
/// cut by `frame`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Datagram,
    Stream,
}

/// SIP methods the proxy treats specially; the rest are `Other` and are
/// forwarded like any non-INVITE request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Subscribe,
    Notify,
    Refer,
    Update,
    Info,
    Prack,
    Message,
    Publish,
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 3261 7.1).
    pub fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"UPDATE" => Method::Update,
            b"INFO" => Method::Info,
            b"PRACK" => Method::Prack,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => Method::Other,
        }
    }
}

/// One header line (with its folded continuation lines).
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub name: HeaderName,
    /// The whole line from the first byte of the name through the line end
    /// of the last continuation line: what to delete to remove the header.
    pub line: Span,
    /// The value with surrounding whitespace trimmed; may contain folds.
    pub value: Span,
}

/// The start line, decoded.
#[derive(Clone, Copy, Debug)]
pub enum StartLine {
    Request {
        method: Method,
        method_span: Span,
        uri: Span,
    },
    Response {
        code: u16,
    },
}

/// A scanned message: the original bytes plus an index into them.
#[derive(Clone, Debug)]
pub struct Message {
    buf: Bytes,
    pub start: StartLine,
    /// The start line without its line end.
    pub start_line: Span,
    pub headers: SmallVec<[Header; HEADERS_INLINE]>,
    /// Offset of the blank line that ends the headers: new headers go here.
    pub headers_end: usize,
    pub body: Span,
    pub cseq_num: u32,
    pub cseq_method: Span,
    pub max_forwards: Option<u32>,
    /// The `tag` parameters of From and To, found while validating them
    /// (empty span: none).
    from_tag: Span,
    to_tag: Span,
    /// The first value of the first Via, read while validating it.
    top_via: via::ViaAt,
}

/// What `frame` found at the front of a stream buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// More bytes are needed.
    Incomplete,
    /// `\r\n\r\n` keepalive ping (RFC 5626 4.4.1): answer with `\r\n`.
    Ping(usize),
    /// A lone `\r\n` (a pong, or padding between messages): skip it.
    Skip(usize),
    /// One whole message of this many bytes.
    Message(usize),
    /// Unrecoverable framing error: the connection must be closed.
    Error(ScanError),
}

/// Where the header section ends, before the start line and the required
/// headers are checked. The header lines themselves go into the caller's
/// vector, so the index is built in place, never moved.
struct Head {
    start_line: Span,
    headers_end: usize,
    body_start: usize,
}

fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn trim_start(b: &[u8], mut s: usize, e: usize) -> usize {
    while s < e && is_ws(b[s]) {
        s += 1;
    }
    s
}

fn trim_end(b: &[u8], s: usize, mut e: usize) -> usize {
    while e > s && is_ws(b[e - 1]) {
        e -= 1;
    }
    e
}

/// Splits the header section into lines, stopping at the blank line. One
/// SIMD pass finds the line ends; header names are validated and the colon
/// found in the same byte loop.
fn scan_head(
    b: &[u8],
    limits: &Limits,
    headers: &mut SmallVec<[Header; HEADERS_INLINE]>,
) -> Result<Head, ScanError> {
    let mut pos = 0;
    // RFC 3261 7.5: ignore empty lines before the start line.
    while pos < b.len() && (b[pos] == b'\r' || b[pos] == b'\n') {
        pos += 1;
    }
    let mut start_line = None;
    let base = pos;
    let mut line_ends = LineEnds::new(&b[base..]);
    loop {
        let Some(nl) = line_ends.next().map(|i| base + i) else {
            // No line end: either a datagram without a blank line or a
            // stream buffer that needs more bytes.
            if b.len() - pos > limits.max_line {
                return Err(ScanError::LineTooLong);
            }
            return Err(ScanError::Incomplete);
        };
        let mut end = nl;
        if end > pos && b[end - 1] == b'\r' {
            end -= 1;
        }
        if end - pos > limits.max_line {
            return Err(ScanError::LineTooLong);
        }
        if end == pos {
            let Some(start_line) = start_line else {
                return Err(ScanError::BadStartLine);
            };
            // NUL bytes anywhere in the header section (one SIMD pass).
            if memchr::memchr(0, &b[..nl]).is_some() {
                return Err(ScanError::NulByte);
            }
            return Ok(Head {
                start_line,
                headers_end: pos,
                body_start: nl + 1,
            });
        }
        if start_line.is_none() {
            start_line = Some(Span::new(pos, end));
        } else if is_ws(b[pos]) {
            // Folded continuation of the previous header (RFC 3261 7.3.1).
            let Some(h) = headers.last_mut() else {
                return Err(ScanError::BadHeader);
            };
            h.line.end = (nl + 1) as u32;
            let ve = trim_end(b, pos, end);
            if ve > pos {
                if h.value.is_empty() {
                    h.value.start = trim_start(b, pos, ve) as u32;
                }
                h.value.end = ve as u32;
            }
        } else {
            // The header name: token characters up to the colon.
            let name_end = b[pos..end]
                .iter()
                .position(|&c| !TOKEN[c as usize])
                .map_or(end, |k| pos + k);
            let i = trim_start(b, name_end, end);
            if name_end == pos || i >= end || b[i] != b':' {
                return Err(ScanError::BadHeader);
            }
            if headers.len() >= limits.max_headers {
                return Err(ScanError::TooManyHeaders);
            }
            let vs = trim_start(b, i + 1, end);
            let ve = trim_end(b, vs, end);
            headers.push(Header {
                name: HeaderName::from_bytes(&b[pos..name_end]),
                line: Span::new(pos, nl + 1),
                value: Span::new(vs, ve),
            });
        }
        pos = nl + 1;
    }
}

/// Parses a decimal header value such as Content-Length or Max-Forwards.
/// At most 10 digits (a CSeq may be near 2**31), so no overflow; callers
/// check the range they allow.
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The single Content-Length of a header set, if any. Several that agree
/// are tolerated; several that disagree make the message ambiguous.
fn content_length(b: &[u8], headers: &[Header]) -> Result<Option<usize>, ScanError> {
    let mut cl = None;
    for h in headers
        .iter()
        .filter(|h| h.name == HeaderName::ContentLength)
    {
        let v = parse_decimal(&b[h.value.range()])
            .filter(|&n| n <= u64::from(u32::MAX))
            .ok_or(ScanError::BadContentLength)? as usize;
        match cl {
            Some(prev) if prev != v => return Err(ScanError::BadContentLength),
            _ => cl = Some(v),
        }
    }
    Ok(cl)
}

/// Finds the first message in a TCP stream buffer (Content-Length framing,
/// RFC 3261 18.3) or a keepalive in front of it.
pub fn frame(buf: &[u8], limits: &Limits) -> Frame {
    if buf.starts_with(b"\r\n") {
        if buf.starts_with(b"\r\n\r\n") {
            return Frame::Ping(4);
        }
        if buf.len() < 4 && b"\r\n\r\n".starts_with(buf) {
            return Frame::Incomplete;
        }
        return Frame::Skip(2);
    }
    if buf.first() == Some(&b'\n') {
        return Frame::Skip(1);
    }
    let mut headers = SmallVec::new();
    let head = match scan_head(buf, limits, &mut headers) {
        Ok(h) => h,
        Err(ScanError::Incomplete) if buf.len() <= limits.max_message => return Frame::Incomplete,
        Err(ScanError::Incomplete) => return Frame::Error(ScanError::TooLarge),
        Err(e) => return Frame::Error(e),
    };
    // RFC 3261 requires Content-Length on streams; a missing one is read
    // as 0, which is what the sender most likely meant.
    let cl = match content_length(buf, &headers) {
        Ok(cl) => cl.unwrap_or(0),
        Err(e) => return Frame::Error(e),
    };
    let total = head.body_start + cl;
    if total > limits.max_message {
        return Frame::Error(ScanError::TooLarge);
    }
    if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Message(total)
    }
}

/// Scans one message. For datagrams, bytes past Content-Length are cut
/// (RFC 3261 18.3) and a short body is an error.
pub fn scan(data: Bytes, framing: Framing, limits: &Limits) -> Result<Message, ScanError> {
    if data.len() > limits.max_message {
        return Err(ScanError::TooLarge);
    }
    let mut headers = SmallVec::new();
    let head = scan_head(&data, limits, &mut headers)?;
    let b: &[u8] = &data;
    let avail = b.len() - head.body_start;
    let body_len = match (content_length(b, &headers)?, framing) {
        (Some(cl), _) if cl > avail => return Err(ScanError::ShortBody),
        (Some(cl), _) => cl,
        (None, Framing::Datagram) => avail,
        (None, Framing::Stream) => 0,
    };
    let end = head.body_start + body_len;
    let buf = if end < data.len() {
        data.slice(..end)
    } else {
        data
    };
    let b: &[u8] = &buf;
    let start = parse_start_line(b, head.start_line)?;

    let mut have = [false; 5];
    let mut from_tag = Span::default();
    let mut to_tag = Span::default();
    let mut cseq = None;
    let mut max_forwards = None;
    let mut top_via = None;
    for h in &headers {
        let v = &b[h.value.range()];
        match h.name {
            HeaderName::Via if !have[0] => {
                // The top Via decides where responses go: it must be
                // readable.
                let Some(v) = via::first(b, h.value) else {
                    return Err(ScanError::BadVia);
                };
                top_via = Some(via::ViaAt::of(b, &v));
                have[0] = true;
            }
            // From and To must at least be name-addr or addr-spec:
            // unbalanced quotes or brackets (RFC 4475 quotbal) are refused.
            HeaderName::From | HeaderName::To => {
                let i = if h.name == HeaderName::From { 1 } else { 2 };
                let Some(na) = super::addr::NameAddr::parse(v) else {
                    return Err(ScanError::BadHeader);
                };
                if !have[i] {
                    let tag = super::params::find(na.params, b"tag").flatten().map_or(
                        Span::default(),
                        |t| {
                            let s = t.as_ptr() as usize - b.as_ptr() as usize;
                            Span::new(s, s + t.len())
                        },
                    );
                    if i == 1 {
                        from_tag = tag;
                    } else {
                        to_tag = tag;
                    }
                }
                have[i] = true;
            }
            HeaderName::CallId => {
                if v.is_empty() {
                    return Err(ScanError::BadHeader);
                }
                have[3] = true
            }
            HeaderName::CSeq if cseq.is_none() => {
                have[4] = true;
                cseq = Some(parse_cseq(b, h.value)?);
            }
            HeaderName::MaxForwards if max_forwards.is_none() => {
                let n = parse_decimal(v).ok_or(ScanError::BadMaxForwards)?;
                if n > 255 {
                    return Err(ScanError::BadMaxForwards);
                }
                max_forwards = Some(n as u32);
            }
            _ => {}
        }
    }
    const NEEDED: [HeaderName; 5] = [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ];
    if let Some(i) = have.iter().position(|h| !h) {
        return Err(ScanError::MissingHeader(NEEDED[i]));
    }
    let Some((cseq_num, cseq_method)) = cseq else {
        return Err(ScanError::MissingHeader(HeaderName::CSeq));
    };
    let Some(top_via) = top_via else {
        return Err(ScanError::MissingHeader(HeaderName::Via));
    };
    if let StartLine::Request { method_span, .. } = start {
        if b[method_span.range()] != b[cseq_method.range()] {
            return Err(ScanError::CSeqMismatch);
        }
    }
    Ok(Message {
        start,
        start_line: head.start_line,
        headers,
        headers_end: head.headers_end,
        body: Span::new(head.body_start, end),
        cseq_num,
        cseq_method,
        max_forwards,
        from_tag,
        to_tag,
        top_via,
        buf,
    })
}

fn parse_cseq(b: &[u8], v: Span) -> Result<(u32, Span), ScanError> {
    let s = v.start as usize;
    let e = v.end as usize;
    let mut i = s;
    while i < e && b[i].is_ascii_digit() {
        i += 1;
    }
    // RFC 3261 8.1.1.5: the number is less than 2**31.
    let num = parse_decimal(&b[s..i]).ok_or(ScanError::BadCSeq)?;
    if num >= 1 << 31 {
        return Err(ScanError::BadCSeq);
    }
    // The value may be folded between number and method (RFC 4475 wsinv).
    let mut ms = i;
    while ms < e && b[ms].is_ascii_whitespace() {
        ms += 1;
    }
    if ms == i || ms == e || !b[ms..e].iter().all(|&c| is_token_char(c)) {
        return Err(ScanError::BadCSeq);
    }
    Ok((num as u32, Span::new(ms, e)))
}

fn parse_start_line(b: &[u8], line: Span) -> Result<StartLine, ScanError> {
    let l = &b[line.range()];
    let off = line.start as usize;
    if l.len() >= 8 && l[..8].eq_ignore_ascii_case(b"SIP/2.0 ") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let rest = &l[8..];
        if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
            return Err(ScanError::BadStartLine);
        }
        if rest.len() > 3 && rest[3] != b' ' {
            return Err(ScanError::BadStartLine);
        }
        let code = rest[..3]
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&code) {
            return Err(ScanError::BadStartLine);
        }
        return Ok(StartLine::Response { code });
    }
    if l.len() >= 4 && l[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(ScanError::BadVersion);
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single spaces.
    let sp1 = memchr::memchr(b' ', l).ok_or(ScanError::BadStartLine)?;
    let method = &l[..sp1];
    if method.is_empty() || !method.iter().all(|&c| is_token_char(c)) {
        return Err(ScanError::BadStartLine);
    }
    let rest = &l[sp1 + 1..];
    let sp2 = memchr::memchr(b' ', rest).ok_or(ScanError::BadStartLine)?;
    let uri = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        // Covers trailing whitespace (RFC 4475 trws) and SIP/7.0 (badvers).
        return Err(
            if version.len() >= 4 && version[..4].eq_ignore_ascii_case(b"SIP/") {
                ScanError::BadVersion
            } else {
                ScanError::BadStartLine
            },
        );
    }
    // absoluteURI: a scheme, a colon, no brackets (RFC 4475 ltgtruri).
    let colon = memchr::memchr(b':', uri).ok_or(ScanError::BadStartLine)?;
    let scheme = &uri[..colon];
    if scheme.is_empty()
        || !scheme[0].is_ascii_alphabetic()
        || !scheme
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        || uri.iter().any(|&c| c == b'<' || c == b'>' || c == b'\t')
    {
        return Err(ScanError::BadStartLine);
    }
    let uri_start = off + sp1 + 1;
    Ok(StartLine::Request {
        method: Method::from_bytes(method),
        method_span: Span::new(off, off + sp1),
        uri: Span::new(uri_start, uri_start + uri.len()),
    })
}

impl Message {
    /// The message bytes (cut at the end of the body).
    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }

    pub fn slice(&self, s: Span) -> &[u8] {
        &self.buf[s.range()]
    }

    pub fn value(&self, h: &Header) -> &[u8] {
        &self.buf[h.value.range()]
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&[u8]> {
        match self.start {
            StartLine::Request { uri, .. } => Some(self.slice(uri)),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri_span(&self) -> Option<Span> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The method a response answers, from its CSeq.
    pub fn cseq_method(&self) -> Method {
        Method::from_bytes(self.slice(self.cseq_method))
    }

    pub fn first(&self, name: HeaderName) -> Option<&Header> {
        self.headers.iter().find(|h| h.name == name)
    }

    pub fn first_value(&self, name: HeaderName) -> Option<&[u8]> {
        self.first(name).map(|h| self.value(h))
    }

    pub fn all(&self, name: HeaderName) -> impl Iterator<Item = &Header> + '_ {
        self.headers.iter().filter(move |h| h.name == name)
    }

    pub fn call_id(&self) -> &[u8] {
        self.first_value(HeaderName::CallId).unwrap_or_default()
    }

    /// `tag` parameter of the From header.
    pub fn from_tag(&self) -> Option<&[u8]> {
        (!self.from_tag.is_empty()).then(|| self.slice(self.from_tag))
    }

    /// `tag` parameter of the To header: present on in-dialog requests.
    pub fn to_tag(&self) -> Option<&[u8]> {
        (!self.to_tag.is_empty()).then(|| self.slice(self.to_tag))
    }

    /// The first value of the first Via header, with its position. Every
    /// scanned message has one: the scanner refuses a message without a
    /// readable top Via.
    pub fn top_via(&self) -> Via<'_> {
        self.top_via.view(&self.buf)
    }

    /// Every Via value in order, across lines and commas; `None` for one
    /// that cannot be read.
    pub fn vias(&self) -> impl Iterator<Item = Option<Via<'_>>> + '_ {
        self.all(HeaderName::Via)
            .flat_map(move |h| via::all(&self.buf, h.value))
    }

    /// Header section bytes only (start line through the blank line).
    pub fn head_len(&self) -> usize {
        self.body.start as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sc(s: &str) -> Result<Message, ScanError> {
        scan(
            Bytes::copy_from_slice(s.as_bytes()),
            Framing::Datagram,
            &Limits::default(),
        )
    }

    const OPTS: &str = "OPTIONS sip:100@192.0.2.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport\r\n\
        From: \"sipvicious\"<sip:100@1.1.1.1>;tag=abc\r\n\
        To: \"sipvicious\"<sip:100@1.1.1.1>\r\n\
        Call-ID: 123@x\r\n\
        CSeq: 1 OPTIONS\r\n\
        Max-Forwards: 70\r\n\
        User-Agent: friendly-scanner\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn scans_a_request() {
        let m = sc(OPTS).unwrap();
        assert_eq!(m.method(), Some(Method::Options));
        assert_eq!(m.request_uri(), Some(&b"sip:100@192.0.2.1"[..]));
        assert_eq!(m.call_id(), b"123@x");
        assert_eq!(m.cseq_num, 1);
        assert_eq!(m.max_forwards, Some(70));
        assert_eq!(m.from_tag(), Some(&b"abc"[..]));
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.headers.len(), 8);
        assert!(m.body.is_empty());
        assert_eq!(m.headers_end, OPTS.len() - 2);
    }

    #[test]
    fn compact_forms_lf_only_and_folding() {
        let s = "INVITE sip:a@pbx.example.com SIP/2.0\n\
            v: SIP/2.0/UDP h1;branch=z9hG4bK1\n\
            f: <sip:b@x>\n ;tag=1\n\
            t: <sip:a@pbx.example.com>\n\
            i: cid\n\
            CSEQ   :    5 INVITE\n\
            l: 4\n\n\
            abcdEXTRA";
        let m = sc(s).unwrap();
        assert_eq!(m.from_tag(), Some(&b"1"[..]));
        assert_eq!(m.cseq_num, 5);
        assert_eq!(m.slice(m.body), b"abcd");
        assert_eq!(
            m.bytes().len(),
            s.len() - 5,
            "datagram cut at Content-Length"
        );
    }

    #[test]
    fn non_utf8_passes() {
        let mut v = OPTS.replace("friendly-scanner", "ua-\u{1}").into_bytes();
        let p = v.windows(4).position(|w| w == b"ua-\x01").unwrap();
        v[p + 3] = 0xff;
        let m = scan(
            Bytes::from(v.clone()),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(m.bytes().as_ref(), &v[..]);
    }

    #[test]
    fn rejects() {
        let cases: &[(&str, ScanError)] = &[
            ("", ScanError::Incomplete),
            ("OPTIONS sip:x SIP/2.0\r\n", ScanError::Incomplete),
            ("\r\n\r\n", ScanError::Incomplete),
            ("garbage\r\n\r\n", ScanError::BadStartLine),
            ("OPTIONS sip:x SIP/7.0\r\n\r\n", ScanError::BadVersion),
            ("OPTIONS sip:x SIP/2.0 \r\n\r\n", ScanError::BadVersion),
            ("OPTIONS <sip:x> SIP/2.0\r\n\r\n", ScanError::BadStartLine),
            ("SIP/2.0 99 Odd\r\n\r\n", ScanError::BadStartLine),
            ("SIP/2.0 2000 Odd\r\n\r\n", ScanError::BadStartLine),
            (" Via: x\r\n\r\n", ScanError::BadStartLine),
        ];
        for (s, e) in cases {
            assert_eq!(sc(s).unwrap_err(), *e, "{s:?}");
        }
        let with = |from: &str, to: &str| sc(&OPTS.replace(from, to)).unwrap_err();
        assert_eq!(
            with("Call-ID: 123@x\r\n", ""),
            ScanError::MissingHeader(HeaderName::CallId)
        );
        assert_eq!(
            with("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"),
            ScanError::CSeqMismatch
        );
        assert_eq!(
            with("CSeq: 1 OPTIONS", "CSeq: -1 OPTIONS"),
            ScanError::BadCSeq
        );
        assert_eq!(
            with("CSeq: 1 OPTIONS", "CSeq: 4294967296 OPTIONS"),
            ScanError::BadCSeq
        );
        assert_eq!(
            with("Max-Forwards: 70", "Max-Forwards: 300"),
            ScanError::BadMaxForwards
        );
        assert_eq!(
            with("Content-Length: 0", "Content-Length: 5"),
            ScanError::ShortBody
        );
        assert_eq!(
            with("Content-Length: 0", "Content-Length: -1"),
            ScanError::BadContentLength
        );
        assert_eq!(
            with("Content-Length: 0", "Content-Length: 0\r\nl: 1"),
            ScanError::BadContentLength
        );
        assert_eq!(with("User-Agent:", "User Agent:"), ScanError::BadHeader);
        assert_eq!(
            with("User-Agent: friendly", "User-Agent: fr\0iendly"),
            ScanError::NulByte
        );
        assert_eq!(
            with("SIP/2.0/UDP 198.51.100.7", "SIP/2.0/UDP "),
            ScanError::BadVia
        );
        assert_eq!(with("SIP/2.0/UDP 198", "SIP/2.0/UDP ."), ScanError::BadVia);
    }

    #[test]
    fn limits() {
        let l = Limits {
            max_message: 300,
            max_headers: 8,
            max_line: 50,
        };
        let s = |x: &str| scan(Bytes::copy_from_slice(x.as_bytes()), Framing::Datagram, &l);
        assert_eq!(s(OPTS).unwrap_err(), ScanError::LineTooLong);
        let l2 = Limits { max_line: 100, ..l };
        let s2 = |x: &str| scan(Bytes::copy_from_slice(x.as_bytes()), Framing::Datagram, &l2);
        assert!(s2(OPTS).is_ok());
        let more = OPTS.replace("Content-Length", "X-A: 1\r\nContent-Length");
        assert_eq!(s2(&more).unwrap_err(), ScanError::TooManyHeaders);
        let big = OPTS.replace(
            "Content-Length: 0",
            &format!("Content-Length: 100\r\n\r\n{}", "x".repeat(100)),
        );
        assert_eq!(s2(&big).unwrap_err(), ScanError::TooLarge);
    }

    #[test]
    fn framing() {
        let l = Limits::default();
        assert_eq!(frame(b"\r\n\r\n", &l), Frame::Ping(4));
        assert_eq!(frame(b"\r\n", &l), Frame::Incomplete);
        assert_eq!(frame(b"\r\nOPT", &l), Frame::Skip(2));
        assert_eq!(frame(&OPTS.as_bytes()[..40], &l), Frame::Incomplete);
        let two = format!("{OPTS}{OPTS}");
        assert_eq!(frame(two.as_bytes(), &l), Frame::Message(OPTS.len()));
        let body = OPTS.replace("Content-Length: 0\r\n\r\n", "Content-Length: 3\r\n\r\nabc");
        assert_eq!(
            frame(&body.as_bytes()[..body.len() - 1], &l),
            Frame::Incomplete
        );
        assert_eq!(frame(body.as_bytes(), &l), Frame::Message(body.len()));
        let nocl = OPTS.replace("Content-Length: 0\r\n", "");
        assert_eq!(frame(nocl.as_bytes(), &l), Frame::Message(nocl.len()));
        let huge = OPTS.replace("Content-Length: 0", "Content-Length: 9999999999");
        assert_eq!(
            frame(huge.as_bytes(), &l),
            Frame::Error(ScanError::BadContentLength)
        );
        let big = OPTS.replace("Content-Length: 0", "Content-Length: 99999");
        assert_eq!(frame(big.as_bytes(), &l), Frame::Error(ScanError::TooLarge));
        let endless = "x".repeat(70000);
        assert_eq!(
            frame(endless.as_bytes(), &l),
            Frame::Error(ScanError::LineTooLong)
        );
    }

    #[test]
    fn response_without_reason_phrase() {
        let s = "SIP/2.0 100 \r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
                 To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = sc(s).unwrap();
        assert_eq!(m.status(), Some(100));
        assert_eq!(m.cseq_method(), Method::Invite);
    }
}
