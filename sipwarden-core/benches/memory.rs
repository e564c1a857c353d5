//! `cargo bench --bench memory`: table memory, driven through the core
//! (real INVITEs, REGISTERs and 200 OKs, not table inserts): bytes per live
//! dialog at 1,000,000 dialogs, bytes per trunk registration at 100,000,
//! and resident memory during a Call-ID flood against a capped table.

use bytes::Bytes;
use sipwarden_core::flow::Flow;
use sipwarden_core::proxy::Core;
use sipwarden_core::time::UnixMs;

mod common;
use common::{asterisk, core_from, public};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

fn core(extra: &str) -> Core {
    core_from(&format!(
        "[listen]\npublic = [\"udp:203.0.113.10:5060\"]\nadvertise = \"pbx.example.com:5060\"\n\
         [filter]\ndomains = [\"sip-7f3k.example.com\"]\n[log]\ndrop_rate = 0\n\
         [limits]\nrate = 1000000000\nburst = 1000000000\n[ban]\nafter_rejects = 0\n{extra}"
    ))
}

/// Phone number `i`, from its own address 10.x.y.z.
fn phone(i: u32) -> Flow {
    public(std::net::SocketAddr::new(
        std::net::IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        5062,
    ))
}

/// An INVITE with a realistic, unique Call-ID (~40 bytes) and tag.
fn invite(i: u32) -> Bytes {
    Bytes::from(format!(
        "INVITE sip:1002@sip-7f3k.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK-{i:08x}\r\n\
         From: <sip:1001@sip-7f3k.example.com>;tag=a{i:08x}\r\nTo: <sip:1002@sip-7f3k.example.com>\r\n\
         Call-ID: {i:08x}-4d2a-4f1e-9c7b-3e1f0a9d2c55@10.0.0.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ))
}

/// Asterisk's 200 to a forwarded INVITE (confirms the dialog).
fn ok_for(fwd: &[u8]) -> Bytes {
    let text = std::str::from_utf8(fwd).unwrap_or_default();
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for l in text.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let n = l.split(':').next().unwrap_or("").to_ascii_lowercase();
        if ["via", "from", "call-id", "cseq"].contains(&n.as_str()) {
            ok.push_str(l);
            ok.push_str("\r\n");
        } else if n == "to" {
            ok.push_str(l);
            ok.push_str(";tag=b\r\n");
        }
    }
    ok.push_str("Content-Length: 0\r\n\r\n");
    Bytes::from(ok)
}

fn dialogs(n: u32) {
    // The table is allocated for its cap when the core is made: measured
    // from before that, for a cap of exactly the dialogs made.
    let before = rss_bytes();
    let c = core(&format!("[dialog]\nmax_entries = {n}\n"));
    let t = std::time::Instant::now();
    // One source (an SBC, or a busy office behind NAT), so only the
    // dialog table grows.
    for i in 0..n {
        let out = c.handle(UnixMs(0), &phone(0), invite(i));
        let ok = ok_for(&out.transmits[0].data);
        c.handle(UnixMs(1), &asterisk(), ok);
    }
    let after = rss_bytes();
    let live = c.tables().dialogs.len();
    println!(
        "dialogs: {n} INVITEs and 200s via the core, {live} confirmed dialogs live in {:.1} s; RSS +{:.1} MiB = {:.0} bytes per dialog",
        t.elapsed().as_secs_f64(),
        (after - before) as f64 / 1048576.0,
        (after - before) as f64 / live.max(1) as f64
    );
}

fn registrations(n: u32) {
    let c = core("[registration]\nmax_entries = 200000\n");
    let before = rss_bytes();
    for i in 0..n {
        let reg = format!(
            "REGISTER sip:10.{}.{}.{} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-r{i}\r\n\
             From: <sip:acct{i}@prov>;tag=r{i}\r\nTo: <sip:acct{i}@prov>\r\nCall-ID: reg-{i:08x}-7f1e@127.0.0.1\r\n\
             CSeq: 1 REGISTER\r\nContact: <sip:acct{i}@127.0.0.1:5080;line=abcdefg>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n",
            (i >> 16) as u8, (i >> 8) as u8, i as u8
        );
        let out = c.handle(UnixMs(0), &asterisk(), Bytes::from(reg));
        let fwd = out.transmits[0].data.clone();
        let ok = ok_for(&fwd);
        let registrar = std::net::SocketAddr::new(
            std::net::IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
            5060,
        );
        let flow = Flow {
            remote: registrar,
            ..phone(0)
        };
        c.handle(UnixMs(1), &flow, ok);
    }
    let after = rss_bytes();
    let live = c.tables().regs.len();
    println!(
        "registrations: {live} trunk registrations via the core; RSS +{:.1} MiB = {:.0} bytes per registration",
        (after - before) as f64 / 1048576.0,
        (after - before) as f64 / live.max(1) as f64
    );
}

fn flood(cap: usize, n: u32) {
    let start = rss_bytes();
    let c = core(&format!("[dialog]\nmax_entries = {cap}\n"));
    let line = format!(
        " start: {:.1} MiB;",
        (rss_bytes() - start) as f64 / 1048576.0
    );
    let mut line = line;
    for i in 0..n {
        c.handle(UnixMs(u64::from(i)), &phone(i), invite(i));
        if (i + 1) % (n / 5) == 0 {
            line.push_str(&format!(
                " {}k: {:.1} MiB ({} live);",
                (i + 1) / 1000,
                (rss_bytes() - start) as f64 / 1048576.0,
                c.tables().dialogs.len()
            ));
        }
    }
    println!("Call-ID flood, dialog.max_entries = {cap}: RSS growth after{line}");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // and should stay quick.
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 100 };
    dialogs(1_000_000 / scale);
    registrations(100_000 / scale);
    flood(100_000 / scale as usize, 1_000_000 / scale);
}
