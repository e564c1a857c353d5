//! `cargo bench`: the pure core on realistic messages. Reports time per
//! message (criterion) and heap allocations per message (a counting
//! global allocator), for the drop path and the forward path.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sipwarden_core::flow::Flow;
use sipwarden_core::proxy::Core;
use sipwarden_core::sip::{scan, Framing, Limits};
use sipwarden_core::time::UnixMs;

mod common;
use common::{asterisk, core_from, public};

/// Counts allocations so the bench can report allocations per message.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method hands its arguments unchanged to `System` and
// returns its result, so the memory comes from and goes back to the one
// allocator that upholds `GlobalAlloc`'s contract; the count is an atomic
// add, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: the caller's guarantee for `l` (non-zero size) passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's guarantee passed on: `p` came from this
        // allocator, which is `System`, with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: the caller's guarantees passed on: `p` came from
        // `System` with layout `l`, and `n` is a valid non-zero size.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CFG: &str = r#"
[listen]
public = ["udp:203.0.113.10:5060", "tcp:203.0.113.10:5060"]
internal = "udp:127.0.0.1:5070"
advertise = "pbx.example.com:5060"
[backend]
address = "udp:127.0.0.1:5080"
[filter]
domains = ["sip-7f3k.example.com"]
[log]
drop_rate = 0
[limits]
rate = 1000000000
burst = 1000000000
register_rate = 1000000000
register_burst = 1000000000
[ban]
after_rejects = 0
"#;

/// A ~900-byte INVITE as a phone sends it.
fn invite(ruri: &str) -> Bytes {
    let sdp = "v=0\r\no=- 3957284929 3957284929 IN IP4 192.168.1.20\r\ns=call\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0 8 9 18 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\n\
               a=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";
    Bytes::from(format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-524287-1---a3f1c9b2e4d7;rport\r\n\
         Max-Forwards: 70\r\nContact: <sip:1001@192.168.1.20:5062;transport=UDP>\r\n\
         To: <sip:1002@sip-7f3k.example.com>\r\nFrom: \"Alice\" <sip:1001@sip-7f3k.example.com>;tag=8c6f2a1e\r\n\
         Call-ID: YzFhNjM0ZGQ2ZWQ3YjQ5MTk2YmI1ZTI3ZjQ1MDc2ZWE\r\nCSeq: 2 INVITE\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
         Content-Type: application/sdp\r\nSupported: replaces, norefersub, extended-refer, timer, outbound, path, X-cisco-serviceuri\r\n\
         User-Agent: Z 5.6.1 v2.10.20.1\r\nAllow-Events: presence, kpml, talk\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ))
}

fn scanner() -> Bytes {
    Bytes::from_static(
        b"OPTIONS sip:100@203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-2431203563;rport\r\n\
Content-Length: 0\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag=6133353236643761313363340131393732373736373636\r\n\
Accept: application/sdp\r\nUser-Agent: Linphone/3.6\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\nContact: sip:100@192.0.2.66:5060\r\n\
CSeq: 1 OPTIONS\r\nCall-ID: 646930493012876743587312\r\nMax-Forwards: 70\r\n\r\n",
    )
}

fn register() -> Bytes {
    Bytes::from_static(
        b"REGISTER sip:sip-7f3k.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-524287-1---77ab;rport\r\n\
Max-Forwards: 70\r\nContact: <sip:1001@192.168.1.20:5062;rinstance=2b1f0c3d;transport=UDP>\r\n\
To: <sip:1001@sip-7f3k.example.com>\r\nFrom: <sip:1001@sip-7f3k.example.com>;tag=5d2a1b\r\n\
Call-ID: reg-NzU4ZjY1MjRiZDA5\r\nCSeq: 7 REGISTER\r\nExpires: 3600\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
Supported: replaces, norefersub, extended-refer, timer, outbound, path\r\nUser-Agent: Z 5.6.1 v2.10.20.1\r\n\
Allow-Events: presence, kpml, talk\r\nContent-Length: 0\r\n\r\n",
    )
}

fn phone() -> Flow {
    public("198.51.100.7:5062".parse().expect("literal"))
}

/// Asterisk's 200 OK to the forwarded INVITE, built once.
fn ok_for(core: &Core) -> Bytes {
    let out = core.handle(UnixMs(0), &phone(), invite("sip:1002@sip-7f3k.example.com"));
    let fwd = std::str::from_utf8(&out.transmits[0].data)
        .expect("utf-8")
        .to_string();
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for l in fwd.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let n = l.split(':').next().unwrap_or("").to_ascii_lowercase();
        if ["via", "record-route", "from", "call-id", "cseq"].contains(&n.as_str()) {
            ok.push_str(l);
            ok.push_str("\r\n");
        } else if n == "to" {
            ok.push_str(l);
            ok.push_str(";tag=as5f2\r\n");
        }
    }
    ok.push_str("Contact: <sip:1002@127.0.0.1:5080>\r\nContent-Length: 0\r\n\r\n");
    Bytes::from(ok)
}

/// Allocations per call of `f`, averaged over many calls.
fn allocs_per(mut f: impl FnMut()) -> f64 {
    for _ in 0..100 {
        f();
    }
    let n = 10_000;
    let before = ALLOCS.load(Relaxed);
    for _ in 0..n {
        f();
    }
    (ALLOCS.load(Relaxed) - before) as f64 / n as f64
}

fn benches(c: &mut Criterion) {
    let core = core_from(CFG);
    let limits = Limits::default();
    let inv = invite("sip:1002@sip-7f3k.example.com");
    let scan_msg = scanner();
    let reg = register();
    let ok = ok_for(&core);

    // Allocation report first (criterion's own allocations would blur it).
    let drop_allocs = allocs_per(|| {
        black_box(core.handle(UnixMs(1), &phone(), scan_msg.clone()));
    });
    let scan_allocs = allocs_per(|| {
        black_box(scan(inv.clone(), Framing::Datagram, &limits).ok());
    });
    let fwd_allocs = allocs_per(|| {
        black_box(core.handle(UnixMs(1), &phone(), inv.clone()));
    });
    let resp_allocs = allocs_per(|| {
        black_box(core.handle(UnixMs(1), &asterisk(), ok.clone()));
    });
    println!(
        "allocations per message: scanner drop {drop_allocs:.2}, scan INVITE {scan_allocs:.2}, \
         forward INVITE {fwd_allocs:.2}, relay 200 OK {resp_allocs:.2}"
    );

    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("scan INVITE", |b| {
        b.iter(|| scan(black_box(inv.clone()), Framing::Datagram, &limits))
    });
    g.bench_function("scan REGISTER", |b| {
        b.iter(|| scan(black_box(reg.clone()), Framing::Datagram, &limits))
    });
    g.bench_function("scan 200 OK", |b| {
        b.iter(|| scan(black_box(ok.clone()), Framing::Datagram, &limits))
    });
    g.bench_function("drop scanner OPTIONS (scan+admit)", |b| {
        b.iter(|| core.handle(UnixMs(1), &phone(), black_box(scan_msg.clone())))
    });
    g.bench_function("forward INVITE (scan+admit+edit)", |b| {
        b.iter(|| core.handle(UnixMs(1), &phone(), black_box(inv.clone())))
    });
    g.bench_function("forward REGISTER (scan+admit+Path)", |b| {
        b.iter(|| core.handle(UnixMs(1), &phone(), black_box(reg.clone())))
    });
    g.bench_function("relay 200 OK (verify+pop)", |b| {
        b.iter(|| core.handle(UnixMs(1), &asterisk(), black_box(ok.clone())))
    });
    g.finish();
}

criterion_group!(core_benches, benches);
criterion_main!(core_benches);
