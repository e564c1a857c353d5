//! Property tests: random valid messages survive scan and edit with every
//! unchanged line byte-identical; random and mutated bytes never panic.

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use sipwarden_core::flow::{Flow, Side, Transport};
use sipwarden_core::sip::{frame, scan, Editor, Framing, HeaderName, Limits};
use sipwarden_core::verdict::{Disposition, Reason};

/// Writes a header name in a random spelling: full or compact, any case.
fn spell(full: &str, compact: Option<&str>, pick: u8) -> String {
    let base = match compact {
        Some(c) if pick % 3 == 0 => c.to_string(),
        _ => full.to_string(),
    };
    match pick % 4 {
        0 => base.to_ascii_lowercase(),
        1 => base.to_ascii_uppercase(),
        _ => base,
    }
}

/// Random header value bytes: printable ASCII and high bytes (non-UTF-8
/// included), never CR, LF or NUL.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![0x21u8..0x7f, 0x80u8..=0xff, Just(b' ')], 1..40).prop_map(
        |mut v| {
            v[0] = b'x';
            let last = v.len() - 1;
            v[last] = b'y';
            v
        },
    )
}

#[derive(Debug, Clone)]
struct Msg {
    lines: Vec<Vec<u8>>,
    body: Vec<u8>,
}

impl Msg {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in &self.lines {
            out.extend_from_slice(l);
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

fn message() -> impl Strategy<Value = Msg> {
    (
        any::<[u8; 8]>(),
        proptest::collection::vec((value_bytes(), any::<bool>(), 0u8..3), 0..12),
        proptest::collection::vec(any::<u8>(), 0..200),
        1u32..100_000,
        0u32..=255,
        prop_oneof![Just("\r\n"), Just("\n")],
    )
        .prop_map(|(picks, extra, body, cseq, mf, eol)| {
            let sep = |p: u8| match p % 3 {
                0 => ": ",
                1 => " :  ",
                _ => ":",
            };
            let mut lines =
                vec![format!("INVITE sip:1002@sip-7f3k.example.com SIP/2.0{eol}").into_bytes()];
            lines.push(
                format!(
                    "{}{}SIP/2.0/UDP 192.0.2.{}:5060;branch=z9hG4bK{};rport{eol}",
                    spell("Via", Some("v"), picks[0]),
                    sep(picks[1]),
                    picks[2],
                    cseq
                )
                .into_bytes(),
            );
            lines.push(
                format!(
                    "{}{}<sip:a@b>;tag=t{}{eol}",
                    spell("From", Some("f"), picks[3]),
                    sep(picks[4]),
                    cseq
                )
                .into_bytes(),
            );
            lines.push(
                format!(
                    "{}{}<sip:1002@sip-7f3k.example.com>{eol}",
                    spell("To", Some("t"), picks[5]),
                    sep(picks[6])
                )
                .into_bytes(),
            );
            lines.push(
                format!("{}: c{cseq}@h{eol}", spell("Call-ID", Some("i"), picks[7])).into_bytes(),
            );
            lines.push(format!("CSeq: {cseq} INVITE{eol}").into_bytes());
            lines.push(format!("Max-Forwards: {mf}{eol}").into_bytes());
            for (i, (v, folded, kind)) in extra.into_iter().enumerate() {
                let name = match kind {
                    0 => format!("X-Extra-{i}"),
                    1 => "Subject".to_string(),
                    _ => "X-Sipwarden-Source".to_string(),
                };
                let mut line = format!("{name}: ").into_bytes();
                line.extend_from_slice(&v);
                if folded {
                    line.extend_from_slice(format!("{eol} folded").as_bytes());
                }
                line.extend_from_slice(eol.as_bytes());
                lines.push(line);
            }
            // Content-Length is written by `bytes()` with CRLF; the body
            // is arbitrary bytes.
            Msg { lines, body }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn scan_indexes_every_line_exactly(m in message()) {
        let raw = m.bytes();
        let msg = scan(Bytes::from(raw.clone()), Framing::Datagram, &Limits::default()).expect("valid message");
        prop_assert_eq!(msg.bytes().as_ref(), &raw[..]);
        prop_assert_eq!(msg.headers.len(), m.lines.len());
        for (h, line) in msg.headers.iter().zip(&m.lines[1..]) {
            prop_assert_eq!(&raw[h.line.range()], &line[..]);
        }
        prop_assert_eq!(msg.slice(msg.body), &m.body[..]);
    }

    #[test]
    fn edits_leave_other_lines_identical(m in message()) {
        let raw = m.bytes();
        let msg = scan(Bytes::from(raw.clone()), Framing::Datagram, &Limits::default()).expect("valid");
        let mut ed = Editor::new(&msg);
        let via = *msg.first(HeaderName::Via).expect("via");
        ed.insert_header_before(&via, b"Via", &[b"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx"]);
        let mf = *msg.first(HeaderName::MaxForwards).expect("mf");
        ed.replace(mf.value, &[b"7"]);
        let owned: Vec<_> = msg.all(HeaderName::XSipwarden).copied().collect();
        for h in &owned {
            ed.remove_header(h);
        }
        let out = ed.finish();
        // Expected: the same lines with exactly those three changes.
        let mut want = Vec::new();
        want.extend_from_slice(&m.lines[0]);
        for (h, line) in msg.headers.iter().zip(&m.lines[1..]) {
            if h.line == via.line {
                want.extend_from_slice(b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n");
            }
            if h.name == HeaderName::XSipwarden {
                continue;
            }
            if h.line == mf.line {
                let eol: &[u8] = if line.ends_with(b"\r\n") { b"\r\n" } else { b"\n" };
                want.extend_from_slice(b"Max-Forwards: 7");
                want.extend_from_slice(eol);
                continue;
            }
            want.extend_from_slice(line);
        }
        // Content-Length (written last by `bytes()`), blank line and body.
        let cl = msg.headers[m.lines.len() - 1];
        want.extend_from_slice(&raw[cl.line.start as usize..]);
        prop_assert_eq!(out.as_ref(), &want[..]);
    }

    #[test]
    fn the_core_forwards_random_valid_messages_byte_for_byte(m in message()) {
        let lab = Lab::new("");
        let raw = m.bytes();
        let out = lab.handle_bytes(&public_udp("198.51.100.7:5062"), &raw);
        if m.lines.iter().any(|l| l.starts_with(b"Max-Forwards: 0\r") || l.starts_with(b"Max-Forwards: 0\n")) {
            prop_assert_eq!(out.verdict.reason, Reason::TooManyHops);
            return Ok(());
        }
        prop_assert_eq!(out.transmits.len(), 1);
        let fwd = &out.transmits[0].data;
        // Every line sipwarden does not own or edit is there, unchanged,
        // and in its original order.
        let mut pos = 0;
        for line in &m.lines[1..] {
            let edited = line.starts_with(b"X-Sipwarden")
                || line.starts_with(b"Max-Forwards")
                || line.windows(5).any(|w| w == b"rport");
            if edited {
                continue;
            }
            let found = fwd[pos..].windows(line.len()).position(|w| w == &line[..]);
            prop_assert!(found.is_some(), "line missing: {:?}", String::from_utf8_lossy(line));
            pos += found.unwrap_or(0) + line.len();
        }
        prop_assert!(fwd.ends_with(&m.body), "body unchanged");
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let lab = Lab::new("");
        let l = Limits::default();
        let _ = scan(Bytes::from(data.clone()), Framing::Datagram, &l);
        let _ = scan(Bytes::from(data.clone()), Framing::Stream, &l);
        let _ = frame(&data, &l);
        for flow in flows() {
            let _ = lab.handle_bytes(&flow, &data);
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        m in message(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let lab = Lab::new("");
        let mut raw = m.bytes();
        for (i, b) in flips {
            let at = i.index(raw.len());
            raw[at] = b;
        }
        let truncated = &raw[..cut.index(raw.len() + 1)];
        for flow in flows() {
            let _ = lab.handle_bytes(&flow, &raw);
            let _ = lab.handle_bytes(&flow, truncated);
        }
        prop_assert!(lab.core.metrics().total_by(Disposition::Dropped) + lab.core.metrics().total_by(Disposition::Forwarded)
            + lab.core.metrics().total_by(Disposition::Replied) > 0);
    }
}

fn flows() -> Vec<Flow> {
    vec![
        public_udp("192.0.2.1:5060"),
        public_tcp("192.0.2.1:40000"),
        asterisk(),
        Flow {
            side: Side::Internal,
            transport: Transport::Tcp,
            listener: 0,
            local: "127.0.0.1:5070".parse().unwrap(),
            remote: "127.0.0.1:40000".parse().unwrap(),
        },
    ]
}
