//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the stable
//! test that replays their corpus (`tests/fuzz_corpus.rs`), so a crash the
//! fuzzer finds stays a regression test on the stable toolchain.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::flow::{Flow, Side, Transport};
use crate::metrics::Metrics;
use crate::proxy::{Core, Keys};
use crate::settings::Settings;
use crate::sip::{frame, scan, Editor, Framing, HeaderName, Limits};

/// Scanner, framer and editor on arbitrary bytes.
pub fn scan_bytes(data: &[u8]) {
    let l = Limits::default();
    let _ = frame(data, &l);
    for framing in [Framing::Datagram, Framing::Stream] {
        if let Ok(m) = scan(Bytes::copy_from_slice(data), framing, &l) {
            let _ = (m.from_tag(), m.to_tag(), m.top_via(), m.vias().count());
            let mut ed = Editor::new(&m);
            if let Some(v) = m.first(HeaderName::Via) {
                ed.insert_header_before(v, b"Via", &[b"SIP/2.0/UDP x;branch=z9hG4bKf"]);
            }
            for h in m.all(HeaderName::Route) {
                ed.remove_header(h);
            }
            let out = ed.finish();
            assert!(out.len() >= m.body.len());
        }
    }
}

fn core() -> &'static Core {
    static CORE: OnceLock<Core> = OnceLock::new();
    CORE.get_or_init(|| {
        let cfg = crate::config::parse(
            "[listen]\npublic = [\"udp:192.0.2.1:5060\", \"tcp:192.0.2.1:5060\"]\n\
             advertise = \"pbx.example.com:5060\"\n[filter]\ndomains = [\"sip-7f3k.example.com\"]\n\
             [log]\ndrop_rate = 0\n",
            "fuzz",
        )
        .expect("fuzz config");
        Core::new(
            Settings::new(cfg),
            Keys::new([5; 32]),
            Arc::new(Metrics::default()),
        )
    })
}

/// The whole core on arbitrary bytes, from every kind of flow. The first
/// byte picks the flow so the fuzzer explores all of them.
pub fn core_bytes(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let side = if pick & 1 == 0 {
        Side::Public
    } else {
        Side::Internal
    };
    let transport = if pick & 2 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let flow = Flow {
        side,
        transport,
        listener: (pick >> 2) & 3,
        local: "192.0.2.1:5060".parse().expect("literal"),
        remote: "198.51.100.1:5062".parse().expect("literal"),
    };
    let out = core().handle(0, &flow, Bytes::copy_from_slice(rest));
    assert!(out.verdict.is_some());
}
