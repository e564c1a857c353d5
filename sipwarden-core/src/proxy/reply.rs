//! Responses sipwarden generates itself (403, 416, 430, 482, 483, 503):
//! built from the request's Via, From, To, Call-ID and CSeq lines (RFC
//! 3261 8.2.6), sent back on the flow the request came on. 430 and 503
//! answer a forwarded request whose next hop failed (the phone's TCP
//! connection is gone, no DNS answer); the others answer at once.

use bytes::{BufMut, Bytes, BytesMut};

use crate::flow::{Flow, Transport};
use crate::sip::{HeaderName, Message};
use crate::token::Keys;
use crate::verdict::{Reason, Verdict};

use super::action::{Dest, Output, Transmit};

/// Answers `msg`, which came on `flow`, with `code`: the output of a
/// message that ends here, replied for `reason`.
pub fn answer(
    keys: &Keys,
    flow: &Flow,
    msg: &Message,
    code: u16,
    phrase: &str,
    reason: Reason,
) -> Output {
    Output::send(
        Verdict::replied(reason),
        transmit(keys, flow, msg, code, phrase),
    )
}

/// The answer `code` to `msg` as a transmit back on `flow` (also what is
/// sent when a forwarded request cannot be delivered: `on_fail`). Its To
/// tag is keyed on the Call-ID and From tag, so a retransmission gets the
/// same answer.
pub fn transmit(keys: &Keys, flow: &Flow, msg: &Message, code: u16, phrase: &str) -> Transmit {
    let tag = keys.reply_tag(msg.call_id(), msg.from_tag().unwrap_or_default());
    Transmit {
        side: flow.side,
        transport: flow.transport,
        listener: Some(flow.listener),
        dest: Dest::Addr(flow.remote),
        data: build(msg, code, phrase, &tag),
        on_fail: None,
        // Over TLS only on the connection the request came on.
        reuse_only: flow.transport == Transport::Tls,
    }
}

/// Builds a response to `req`. `to_tag` is added when the To header has
/// none, so that a retransmitted request gets the identical answer.
pub fn build(req: &Message, code: u16, phrase: &str, to_tag: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(req.head_len() + 64);
    out.put_slice(b"SIP/2.0 ");
    out.put_slice(code.to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(phrase.as_bytes());
    out.put_slice(b"\r\n");
    for h in req.headers.iter() {
        let copy = matches!(
            h.name,
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq
        );
        if copy {
            put_line(&mut out, req, h.name, req.value(h));
        } else if h.name == HeaderName::To {
            put_line(&mut out, req, h.name, req.value(h));
            if req.to_tag().is_none() && !to_tag.is_empty() {
                // Drop the CRLF just written and append the tag.
                out.truncate(out.len() - 2);
                out.put_slice(b";tag=");
                out.put_slice(to_tag);
                out.put_slice(b"\r\n");
            }
        }
    }
    out.put_slice(b"Content-Length: 0\r\n\r\n");
    out.freeze()
}

fn put_line(out: &mut BytesMut, _req: &Message, name: HeaderName, value: &[u8]) {
    let n: &[u8] = match name {
        HeaderName::Via => b"Via",
        HeaderName::From => b"From",
        HeaderName::To => b"To",
        HeaderName::CallId => b"Call-ID",
        HeaderName::CSeq => b"CSeq",
        _ => return,
    };
    out.put_slice(n);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{scan, Framing, Limits};

    #[test]
    fn copies_the_right_headers() {
        let r = "INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h1;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP h0;branch=z9hG4bK0\r\n\
                 f: <sip:x@y>;tag=9\r\nt: <sip:a@b>\r\ni: c1\r\nCSeq: 3 INVITE\r\nContact: <sip:x@h1>\r\n\
                 Content-Type: application/sdp\r\nContent-Length: 3\r\n\r\nv=0";
        let m = scan(Bytes::from(r), Framing::Datagram, &Limits::default()).unwrap();
        let out = build(&m, 403, "Forbidden", b"abc");
        let want = "SIP/2.0 403 Forbidden\r\nVia: SIP/2.0/UDP h1;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP h0;branch=z9hG4bK0\r\n\
                    From: <sip:x@y>;tag=9\r\nTo: <sip:a@b>;tag=abc\r\nCall-ID: c1\r\nCSeq: 3 INVITE\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(std::str::from_utf8(&out).unwrap(), want);
        let parsed = scan(out, Framing::Datagram, &Limits::default()).unwrap();
        assert_eq!(parsed.status(), Some(403));
    }
}
