//! The sink's UAS behaviour in `--answer` mode: a PBX that says yes.
//!
//! Responses are built per RFC 3261 8.2.6: every Via line copied in order
//! (the proxies under test find their own Via on top), From, Call-ID and
//! CSeq copied, To copied with a tag added, and for INVITE the
//! Record-Route lines copied (12.1.1) and a Contact that names this sink,
//! so the caller's ACK and BYE can find it.

use std::net::SocketAddr;

use swbench::sip::{self, StartLine};

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Nothing to send (ACK, or a response).
    Absorb,
    /// A request that lacks a header a response needs.
    Unanswerable,
}

/// Stable tag per call, so a retransmitted INVITE gets the same To tag.
fn to_tag(call_id: &[u8], from: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in call_id.iter().chain(sip::tag(from).unwrap_or(b"")) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("sk{h:016x}")
}

/// Builds the answer to `req`; `local` and `tcp` go into the Contact.
pub fn answer(req: &[u8], local: &SocketAddr, tcp: bool) -> Answer {
    let Some(StartLine::Request { method, .. }) = sip::start_line(req) else {
        return Answer::Absorb;
    };
    if method.eq_ignore_ascii_case(b"ACK") {
        return Answer::Absorb;
    }
    let invite = method.eq_ignore_ascii_case(b"INVITE");
    let mut vias: Vec<&[u8]> = Vec::new();
    let mut rrs: Vec<&[u8]> = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    let mut call_id_value: &[u8] = b"";
    for h in sip::headers(req) {
        if sip::is_header(h.name, "via", Some(b'v')) {
            vias.push(h.line);
        } else if sip::is_header(h.name, "record-route", None) {
            rrs.push(h.line);
        } else if sip::is_header(h.name, "from", Some(b'f')) {
            from = Some(h);
        } else if sip::is_header(h.name, "to", Some(b't')) {
            to = Some(h);
        } else if sip::is_header(h.name, "call-id", Some(b'i')) {
            call_id = Some(h.line);
            call_id_value = h.value;
        } else if sip::is_header(h.name, "cseq", None) {
            cseq = Some(h.line);
        }
    }
    let (Some(from), Some(to), Some(call_id), Some(cseq)) = (from, to, call_id, cseq) else {
        return Answer::Unanswerable;
    };
    if vias.is_empty() {
        return Answer::Unanswerable;
    }
    let mut m = Vec::with_capacity(req.len().min(4096) + 256);
    m.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    let mut line = |l: &[u8]| {
        m.extend_from_slice(l);
        m.extend_from_slice(b"\r\n");
    };
    for v in &vias {
        line(v);
    }
    if invite {
        for r in &rrs {
            line(r);
        }
    }
    line(from.line);
    line(call_id);
    line(cseq);
    if sip::tag(to.value).is_some() {
        line(to.line);
    } else {
        let mut t = to.line.to_vec();
        t.extend_from_slice(b";tag=");
        t.extend_from_slice(to_tag(call_id_value, from.value).as_bytes());
        line(&t);
    }
    if invite {
        let transport = if tcp { ";transport=tcp" } else { "" };
        let host = match local {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        line(format!("Contact: <sip:sink@{host}{transport}>").as_bytes());
    }
    line(b"Server: swsink");
    line(b"Content-Length: 0");
    m.extend_from_slice(b"\r\n");
    Answer::Reply(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &[u8] = b"INVITE sip:1001@pbx.secret.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKk1\r\n\
Record-Route: <sip:127.0.0.1:5060;lr>\r\n\
v: SIP/2.0/UDP 127.0.0.2:4000;branch=z9hG4bK-a;rport=4000;received=127.0.0.2\r\n\
From: <sip:2000@pbx.secret.example>;tag=ft1\r\n\
To: <sip:1001@pbx.secret.example>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";

    fn local() -> SocketAddr {
        "127.0.0.1:5080".parse().unwrap()
    }

    #[test]
    fn invite_gets_200_with_dialog_headers() {
        let Answer::Reply(r) = answer(INV, &local(), false) else {
            panic!("no reply");
        };
        assert_eq!(sip::start_line(&r), Some(StartLine::Response { code: 200 }));
        assert_eq!(sip::all_values(&r, "via", Some(b'v')).len(), 2);
        assert_eq!(
            sip::top_via(&r).unwrap().response_addr(),
            Some("127.0.0.1:5060".parse().unwrap())
        );
        assert_eq!(sip::all_values(&r, "record-route", None).len(), 1);
        let to = sip::first_value(&r, "to", None).unwrap();
        assert!(sip::tag(to).unwrap().starts_with(b"sk"));
        assert_eq!(
            sip::first_value(&r, "contact", None),
            Some(&b"<sip:sink@127.0.0.1:5080>"[..])
        );
        assert_eq!(sip::first_value(&r, "cseq", None), Some(&b"1 INVITE"[..]));
        // Same call, same tag.
        let Answer::Reply(again) = answer(INV, &local(), false) else {
            panic!()
        };
        assert_eq!(r, again);
    }

    #[test]
    fn bye_ack_and_junk() {
        let bye = String::from_utf8_lossy(INV)
            .replace("INVITE sip", "BYE sip")
            .replace("1 INVITE", "2 BYE")
            .replace(
                "pbx.secret.example>\r\nCall",
                "pbx.secret.example>;tag=x\r\nCall",
            );
        let Answer::Reply(r) = answer(bye.as_bytes(), &local(), true) else {
            panic!()
        };
        assert!(sip::first_value(&r, "contact", None).is_none());
        assert!(sip::all_values(&r, "record-route", None).is_empty());
        assert_eq!(
            sip::tag(sip::first_value(&r, "to", None).unwrap()),
            Some(&b"x"[..])
        );
        let ack = String::from_utf8_lossy(INV).replace("INVITE sip", "ACK sip");
        assert_eq!(answer(ack.as_bytes(), &local(), false), Answer::Absorb);
        assert_eq!(
            answer(b"SIP/2.0 200 OK\r\n\r\n", &local(), false),
            Answer::Absorb
        );
        assert_eq!(
            answer(
                b"OPTIONS sip:x SIP/2.0\r\nTo: <sip:x>\r\n\r\n",
                &local(),
                false
            ),
            Answer::Unanswerable
        );
    }
}
