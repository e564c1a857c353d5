//! Splitting a TCP byte stream into SIP messages by Content-Length (RFC 3261 18.3).

use crate::sip;

/// Largest header block accepted before the stream is declared broken.
pub const MAX_HEAD: usize = 65_536;

/// What the front of a stream buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not a complete message yet: read more.
    Incomplete,
    /// `n` bytes of CR/LF keepalive to skip (RFC 5626 4.4.1).
    Keepalive(usize),
    /// A complete message of `n` bytes.
    Message(usize),
    /// Unframeable (no or bad Content-Length, oversized head): drop the connection.
    Invalid,
}

/// Classifies the front of `buf`.
pub fn next_frame(buf: &[u8]) -> Frame {
    let ws = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if ws > 0 {
        return Frame::Keepalive(ws);
    }
    let Some(head_end) = find_head_end(buf) else {
        return if buf.len() > MAX_HEAD {
            Frame::Invalid
        } else {
            Frame::Incomplete
        };
    };
    let head = &buf[..head_end];
    let Some(cl) = sip::first_value(head, "content-length", Some(b'l')) else {
        return Frame::Invalid;
    };
    let Some(len) = std::str::from_utf8(cl)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    else {
        return Frame::Invalid;
    };
    if len > MAX_HEAD {
        return Frame::Invalid;
    }
    if buf.len() >= head_end + len {
        Frame::Message(head_end + len)
    } else {
        Frame::Incomplete
    }
}

/// Offset just after the blank line ending the headers (CRLFCRLF or LFLF).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let m = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 2\r\n\r\nhiNEXT";
        assert_eq!(next_frame(m), Frame::Message(m.len() - 4));
        assert_eq!(next_frame(&m[..20]), Frame::Incomplete);
        assert_eq!(next_frame(&m[..m.len() - 5]), Frame::Incomplete);
        assert_eq!(next_frame(b"\r\n\r\nOPT"), Frame::Keepalive(4));
        assert_eq!(next_frame(b"A b SIP/2.0\r\nTo: x\r\n\r\n"), Frame::Invalid);
        assert_eq!(next_frame(b"A b SIP/2.0\nl: 0\n\n"), Frame::Message(18));
        assert_eq!(next_frame(b"A b SIP/2.0\r\nl: -1\r\n\r\n"), Frame::Invalid);
    }
}
