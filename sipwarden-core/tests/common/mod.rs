//! A socket-free lab: phones, scanners and a backend exchange literal SIP
//! messages with the core, on a virtual clock.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use sipwarden_core::flow::{Flow, Side, Transport};
use sipwarden_core::metrics::Metrics;
use sipwarden_core::proxy::{Core, Dest, Output, Transmit};
use sipwarden_core::settings::Settings;
use sipwarden_core::time::UnixMs;
use sipwarden_core::token::Keys;
use sipwarden_core::verdict::{Disposition, Reason, Verdict};

pub const BASE_CFG: &str = r#"
[listen]
public = ["udp:203.0.113.10:5060", "tcp:203.0.113.10:5060"]
internal = "udp:127.0.0.1:5070"
advertise = "pbx.example.com:5060"
[backend]
address = "udp:127.0.0.1:5080"
[filter]
domains = ["sip-7f3k.example.com"]
"#;

pub struct Lab {
    pub core: Core,
    pub now: UnixMs,
}

impl Lab {
    pub fn new(extra: &str) -> Lab {
        let text = format!("{BASE_CFG}{extra}");
        let cfg = sipwarden_core::config::parse(&text, "test").expect("valid test config");
        Lab {
            core: Core::new(
                Settings::new(cfg),
                Keys::new([42; 32]),
                Arc::new(Metrics::default()),
            ),
            now: UnixMs(1_700_000_000_000),
        }
    }

    /// Swaps in a whole new config text.
    pub fn reload_with(&self, text: &str) {
        let cfg = sipwarden_core::config::parse(text, "test").expect("valid test config");
        self.core.reload(Settings::new(cfg));
    }

    pub fn handle(&self, flow: &Flow, msg: &str) -> Output {
        self.core
            .handle(self.now, flow, Bytes::copy_from_slice(msg.as_bytes()))
    }

    pub fn handle_bytes(&self, flow: &Flow, msg: &[u8]) -> Output {
        self.core
            .handle(self.now, flow, Bytes::copy_from_slice(msg))
    }

    pub fn count(&self, r: Reason, d: Disposition) -> u64 {
        self.core.metrics().total(r, d)
    }
}

pub fn public_udp(remote: &str) -> Flow {
    Flow {
        side: Side::Public,
        transport: Transport::Udp,
        listener: 0,
        local: "203.0.113.10:5060".parse().unwrap(),
        remote: remote.parse().unwrap(),
    }
}

pub fn public_tcp(remote: &str) -> Flow {
    Flow {
        side: Side::Public,
        transport: Transport::Tcp,
        listener: 1,
        local: "203.0.113.10:5060".parse().unwrap(),
        remote: remote.parse().unwrap(),
    }
}

/// Asterisk sending from its transport to the internal socket.
pub fn asterisk() -> Flow {
    Flow {
        side: Side::Internal,
        transport: Transport::Udp,
        listener: 0,
        local: "127.0.0.1:5070".parse().unwrap(),
        remote: "127.0.0.1:5080".parse().unwrap(),
    }
}

/// The one send of an output, with its verdict checked.
pub fn one_send(out: &Output, want: Verdict) -> &Transmit {
    assert_eq!(out.verdict, want, "verdict");
    assert_eq!(out.transmits.len(), 1, "one send expected: {out:?}");
    &out.transmits[0]
}

pub fn dropped(out: &Output, reason: Reason) {
    assert_eq!(out.verdict, Verdict::drop(reason), "{out:?}");
    assert!(out.transmits.is_empty(), "a drop sends nothing: {out:?}");
}

pub fn text(s: &Transmit) -> &str {
    std::str::from_utf8(&s.data).expect("utf-8 in tests")
}

pub fn addr(s: &Transmit) -> SocketAddr {
    match &s.dest {
        Dest::Addr(a) => *a,
        other => panic!("not an address: {other:?}"),
    }
}

/// Header lines (name: value) of a message with the given name,
/// case-insensitive.
pub fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| {
            l.split(':')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
        })
        .collect()
}

/// What a UAS answers: Vias, Record-Routes, From, To (+tag), Call-ID,
/// CSeq copied from the request (RFC 3261 8.2.6 / 12.1.1).
pub fn answer(req: &str, code: u16, extra: &str) -> String {
    let mut out = format!("SIP/2.0 {code} X\r\n");
    for line in req.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "record-route" | "from" | "f" | "call-id" | "i" | "cseq" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "to" | "t" => {
                out.push_str(line);
                if !line.contains("tag=") {
                    out.push_str(";tag=uas-tag");
                }
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.push_str(extra);
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// The Record-Route values of a message, in order, as a Route set a UAC
/// would use (reversed) or a UAS (as is).
pub fn record_routes(msg: &str) -> Vec<String> {
    headers(msg, "record-route")
        .iter()
        .flat_map(|l| l.split_once(':').map(|x| x.1).unwrap_or("").split(','))
        .map(|v| v.trim().to_string())
        .collect()
}
