//! An office behind one NAT address, with the DEFAULT config: a hundred
//! phones booting at once (REGISTER, 401, REGISTER with credentials, 200;
//! then their subscriptions), re-registration storms, a slow PBX that makes
//! them retransmit, and a PBX that answers stale nonces: no ban, nothing
//! lost. Next to them, a scanner and a password guesser from other
//! addresses are still banned, and a flood that names the secret domain is
//! rate-limited but never banned. Through the core, on a virtual clock.

mod common;

use common::*;
use sipwarden_core::metrics::Event;
use sipwarden_core::verdict::{Disposition, Reason, Verdict};

/// The office's one public address; phone `i` is port 20000 + i.
const OFFICE: &str = "198.51.100.20";
const PHONES: u32 = 100;
const SCANNER: &str = "192.0.2.66:5060";
const GUESSER: &str = "192.0.2.77:5060";

fn phone(i: u32) -> sipwarden_core::flow::Flow {
    public_udp(&format!("{OFFICE}:{}", 20000 + i))
}

fn user(i: u32) -> u32 {
    1000 + i
}

/// A phone's request with the secret domain; `try_` distinguishes the
/// transactions (a retransmission is the same text again).
fn request(method: &str, i: u32, cseq: u32, try_: &str, extra: &str) -> String {
    let u = user(i);
    let (ruri, to, event) = match method {
        "REGISTER" => (
            "sip:sip-7f3k.example.com".to_string(),
            format!("<sip:{u}@sip-7f3k.example.com>"),
            String::new(),
        ),
        "SUBSCRIBE" => (
            format!("sip:{}@sip-7f3k.example.com", try_),
            format!("<sip:{}@sip-7f3k.example.com>", try_),
            "Event: dialog\r\nExpires: 600\r\n".to_string(),
        ),
        _ => (
            "sip:sip-7f3k.example.com".to_string(),
            "<sip:sip-7f3k.example.com>".to_string(),
            String::new(),
        ),
    };
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.168.1.{h}:5060;branch=z9hG4bK-{i}-{method}-{try_}-{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{u}@sip-7f3k.example.com>;tag=ph{i}\r\n\
         To: {to}\r\n\
         Call-ID: {method}-{try_}-{i}@192.168.1.{h}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:{u}@192.168.1.{h}:5060>\r\n\
         {event}{extra}User-Agent: Yealink SIP-T46U\r\n\
         Content-Length: 0\r\n\r\n",
        h = i % 250 + 2,
    )
}

/// Digest credentials as phone `i` computes them for `nonce`.
fn credentials(i: u32, nonce: &str, nc: u32) -> String {
    format!(
        "Authorization: Digest username=\"{u}\", realm=\"sip-7f3k.example.com\", nonce=\"{nonce}\", \
         uri=\"sip:sip-7f3k.example.com\", response=\"{i:08x}{nc:08x}{nonce}\", algorithm=MD5, \
         cnonce=\"c{i}\", qop=auth, nc={nc:08x}\r\n",
        u = user(i)
    )
}

fn challenge(nonce: &str, stale: bool) -> String {
    let stale = if stale { ", stale=true" } else { "" };
    format!(
        "WWW-Authenticate: Digest realm=\"sip-7f3k.example.com\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5{stale}\r\n"
    )
}

/// Sends a request from `flow`; returns what reached the backend, or
/// `None` when it was dropped (then the reason must be `allowed_drop`).
fn send(lab: &Lab, flow: &sipwarden_core::flow::Flow, req: &str) -> Option<String> {
    let out = lab.handle(flow, req);
    match out.verdict {
        v if v.disposition == Disposition::Forwarded => Some(text(one_send(&out, v)).to_string()),
        other => {
            assert!(out.transmits.is_empty(), "{out:?}");
            assert!(other.disposition == Disposition::Dropped, "{other:?}");
            None
        }
    }
}

/// The backend answers a forwarded request; the answer must reach the phone.
fn backend_answers(lab: &Lab, fwd: &str, code: u16, extra: &str) {
    let out = lab.handle(&asterisk(), &answer(fwd, code, extra));
    one_send(&out, Verdict::forward(Reason::Response));
}

fn bans(lab: &Lab) -> u64 {
    lab.core.metrics().events(Event::Bans)
}

fn banned(lab: &Lab, ip: &str) -> bool {
    lab.core
        .tables()
        .bans
        .is_banned(ip.parse().unwrap(), lab.now)
}

/// Forwards every request or panics with how many were not.
fn all_forwarded(lab: &Lab, what: &str, reqs: Vec<(u32, String)>) -> Vec<(u32, String)> {
    let n = reqs.len();
    let fwd: Vec<(u32, String)> = reqs
        .into_iter()
        .filter_map(|(i, r)| send(lab, &phone(i), &r).map(|f| (i, f)))
        .collect();
    assert_eq!(
        fwd.len(),
        n,
        "{what}: {} of {n} forwarded (rate-limited so far: {}, bans: {})",
        fwd.len(),
        lab.count(Reason::RateLimited, Disposition::Dropped),
        bans(lab)
    );
    fwd
}

/// One office boot with a slow PBX: every REGISTER is retransmitted once
/// (RFC 3261 timer E, 500 ms) before its answer, and every copy is
/// answered. Returns the REGISTERs forwarded.
fn boot(lab: &mut Lab, round: &str) -> usize {
    let first: Vec<(u32, String)> = (0..PHONES)
        .map(|i| (i, request("REGISTER", i, 1, round, "")))
        .collect();
    let fwd1 = all_forwarded(lab, "REGISTERs without credentials", first.clone());
    lab.now += 500;
    let fwd1r = all_forwarded(lab, "their retransmissions", first);
    lab.now += 100;
    // A stateless registrar challenges every copy, with a nonce each.
    for (k, (i, f)) in fwd1.iter().chain(fwd1r.iter()).enumerate() {
        backend_answers(lab, f, 401, &challenge(&format!("{round}n{i}-{k}"), false));
    }
    assert_eq!(
        bans(lab),
        0,
        "first challenges are no failed authentications"
    );
    let second: Vec<(u32, String)> = (0..PHONES)
        .map(|i| {
            let auth = credentials(i, &format!("{round}n{i}-{i}"), 1);
            (i, request("REGISTER", i, 2, round, &auth))
        })
        .collect();
    let fwd2 = all_forwarded(lab, "REGISTERs with credentials", second.clone());
    lab.now += 500;
    let fwd2r = all_forwarded(lab, "their retransmissions", second);
    lab.now += 100;
    for (_, f) in fwd2.iter().chain(fwd2r.iter()) {
        backend_answers(lab, f, 200, "Expires: 120\r\n");
    }
    fwd1.len() + fwd1r.len() + fwd2.len() + fwd2r.len()
}

/// After registering, each phone subscribes to its mailbox and four BLF
/// keys, each SUBSCRIBE challenged once: 10 requests per phone.
fn subscribe(lab: &mut Lab) -> usize {
    let mut n = 0;
    for key in ["mwi", "blf1", "blf2", "blf3", "blf4"] {
        let first: Vec<(u32, String)> = (0..PHONES)
            .map(|i| (i, request("SUBSCRIBE", i, 1, key, "")))
            .collect();
        for (i, f) in all_forwarded(lab, "SUBSCRIBEs", first) {
            backend_answers(lab, &f, 401, &challenge(&format!("s{key}{i}"), false));
            n += 1;
        }
        let second: Vec<(u32, String)> = (0..PHONES)
            .map(|i| {
                let auth = credentials(i, &format!("s{key}{i}"), 1);
                (i, request("SUBSCRIBE", i, 2, key, &auth))
            })
            .collect();
        for (_, f) in all_forwarded(lab, "SUBSCRIBEs with credentials", second) {
            backend_answers(lab, &f, 200, "Expires: 600\r\n");
            n += 1;
        }
    }
    n
}

/// Re-registration: every phone sends its cached credentials, whose nonce
/// the PBX no longer accepts (401 stale=true, as Asterisk answers after its
/// nonce lifetime or a restart), then fresh ones: 200.
fn reregister(lab: &mut Lab, round: &str) -> usize {
    let cached: Vec<(u32, String)> = (0..PHONES)
        .map(|i| {
            let auth = credentials(i, "old-nonce", 2);
            (i, request("REGISTER", i, 3, round, &auth))
        })
        .collect();
    for (i, f) in all_forwarded(lab, "re-REGISTERs with cached credentials", cached) {
        backend_answers(lab, &f, 401, &challenge(&format!("{round}r{i}"), true));
    }
    assert_eq!(bans(lab), 0, "a stale nonce is no failed authentication");
    let fresh: Vec<(u32, String)> = (0..PHONES)
        .map(|i| {
            let auth = credentials(i, &format!("{round}r{i}"), 1);
            (i, request("REGISTER", i, 4, round, &auth))
        })
        .collect();
    for (_, f) in all_forwarded(lab, "re-REGISTERs with fresh credentials", fresh) {
        backend_answers(lab, &f, 200, "Expires: 120\r\n");
    }
    2 * PHONES as usize
}

#[test]
fn an_office_of_100_phones_boots_and_reregisters_with_the_default_config() {
    let mut lab = Lab::new("");
    let regs = boot(&mut lab, "b");
    assert_eq!(
        regs,
        4 * PHONES as usize,
        "each REGISTER twice, both rounds"
    );
    let subs = subscribe(&mut lab);
    assert_eq!(subs, 10 * PHONES as usize);
    // Re-registration storms every 60 s (phones behind NAT register for
    // 120 s and refresh at half of it), a few in a row.
    for round in 1..=5 {
        lab.now += 60_000;
        lab.core.tick(lab.now);
        reregister(&mut lab, &format!("s{round}"));
    }
    assert_eq!(bans(&lab), 0);
    assert!(!banned(&lab, OFFICE));
    assert_eq!(lab.count(Reason::RateLimited, Disposition::Dropped), 0);
    assert_eq!(
        lab.count(Reason::Domain, Disposition::Forwarded),
        (4 + 10 + 5 * 2) * u64::from(PHONES)
    );
}

#[test]
fn a_boot_followed_at_once_by_a_full_reregistration_is_absorbed() {
    // A power flicker: the phones boot, the PBX restarts and every phone
    // registers again right away (without the slow PBX's retransmissions).
    let mut lab = Lab::new("");
    let first: Vec<(u32, String)> = (0..PHONES)
        .map(|i| (i, request("REGISTER", i, 1, "a", "")))
        .collect();
    for (i, f) in all_forwarded(&lab, "boot", first) {
        backend_answers(&lab, &f, 401, &challenge(&format!("a{i}"), false));
    }
    let second: Vec<(u32, String)> = (0..PHONES)
        .map(|i| {
            (
                i,
                request("REGISTER", i, 2, "a", &credentials(i, &format!("a{i}"), 1)),
            )
        })
        .collect();
    for (_, f) in all_forwarded(&lab, "boot, credentials", second) {
        backend_answers(&lab, &f, 200, "");
    }
    lab.now += 1000;
    reregister(&mut lab, "again");
    assert_eq!(bans(&lab), 0);
    assert_eq!(lab.count(Reason::RateLimited, Disposition::Dropped), 0);
}

#[test]
fn challenges_to_requests_without_credentials_and_their_retransmissions_never_count() {
    let mut lab = Lab::new("");
    // The PBX is down for a while: each phone's first REGISTER goes out at
    // 0, 0.5, 1.5, 3.5 and 7.5 s; when it is back, a stateless registrar
    // answers every copy still arriving with a 401.
    let first: Vec<(u32, String)> = (0..PHONES)
        .map(|i| (i, request("REGISTER", i, 1, "down", "")))
        .collect();
    let mut fwd = Vec::new();
    for gap in [0, 500, 1000, 2000, 4000] {
        lab.now += gap;
        // Not all of 5 x 100 pass the REGISTER burst at once, and those
        // that do not are rate-limited: never a reason to ban.
        for (i, r) in &first {
            if let Some(f) = send(&lab, &phone(*i), r) {
                fwd.push(f);
            }
        }
    }
    for (k, f) in fwd.iter().enumerate() {
        backend_answers(&lab, f, 401, &challenge(&format!("d{k}"), false));
    }
    assert_eq!(bans(&lab), 0);
    assert!(!banned(&lab, OFFICE));
}

#[test]
fn a_slow_pbx_answering_each_copy_of_wrong_credentials_counts_them_once() {
    // Four phones of the office have a wrong password; the PBX is slow, so
    // each credentialed REGISTER is retransmitted three times and every
    // copy is answered 401: four failed authentications, not sixteen.
    let mut lab = Lab::new("");
    for i in 0..4 {
        let r = request("REGISTER", i, 2, "w", &credentials(i, "n", 1));
        let mut copies = Vec::new();
        for gap in [0, 500, 1000, 2000] {
            lab.now += gap;
            copies.push(send(&lab, &phone(i), &r).expect("forwarded"));
        }
        for f in copies {
            backend_answers(&lab, &f, 401, &challenge("n2", false));
        }
    }
    assert_eq!(
        bans(&lab),
        0,
        "4 distinct failures, under after_auth_failures"
    );
    // A fifth phone with wrong credentials makes five: that looks like a
    // guesser, and bans (the threshold is the operator's choice).
    let r = request("REGISTER", 4, 2, "w", &credentials(4, "n", 1));
    let f = send(&lab, &phone(4), &r).expect("forwarded");
    backend_answers(&lab, &f, 401, &challenge("n2", false));
    assert_eq!(bans(&lab), 1);
}

#[test]
fn a_scanner_and_a_guesser_beside_the_office_are_still_banned() {
    let mut lab = Lab::new("");
    boot(&mut lab, "b");
    // The scanner addresses the server by IP: 20 rejects ban it (the
    // default ban.after_rejects), the 20th message bans.
    let by_ip = |n: u32| {
        format!(
            "OPTIONS sip:{n}@203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-s{n}\r\n\
             From: <sip:{n}@203.0.113.10>;tag=s{n}\r\nTo: <sip:{n}@203.0.113.10>\r\nCall-ID: scan-{n}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for n in 0..19 {
        dropped(
            &lab.handle(&public_udp(SCANNER), &by_ip(n)),
            Reason::NoDomain,
        );
    }
    assert!(!banned(&lab, "192.0.2.66"));
    dropped(
        &lab.handle(&public_udp(SCANNER), &by_ip(19)),
        Reason::NoDomain,
    );
    assert!(banned(&lab, "192.0.2.66"));
    // A scanner whose junk reaches the full path (a To tag, a Route), faster
    // than any rate: still counted as rejects, not excused as congestion.
    let junk = |n: u32| {
        by_ip(n)
            .replace("192.0.2.66", "192.0.2.67")
            .replace("To: <sip:", "Route: <sip:x@203.0.113.10;lr>\r\nTo: <sip:")
            .replace(
                "203.0.113.10>\r\nCall",
                &format!("203.0.113.10>;tag=t{n}\r\nCall"),
            )
    };
    for n in 0..20 {
        let out = lab.handle(&public_udp("192.0.2.67:5060"), &junk(n));
        assert!(out.transmits.is_empty());
        assert_ne!(out.verdict.reason, Reason::RateLimited);
    }
    assert!(banned(&lab, "192.0.2.67"));
    // The guesser knows the domain; every guess is answered 401 (a stale
    // nonce excepted); the fifth distinct failure bans it.
    let guess = |g: u32| {
        request(
            "REGISTER",
            1,
            10 + g,
            "g",
            &credentials(1, &format!("gn{g}"), g + 1),
        )
        .replace("192.168.1.3:5060", "192.0.2.77:5060")
    };
    let g0 = send(&lab, &public_udp(GUESSER), &guess(0)).unwrap();
    backend_answers(&lab, &g0, 401, &challenge("gn1", true));
    for g in 1..5 {
        let f = send(&lab, &public_udp(GUESSER), &guess(g)).unwrap();
        // Its own retransmission answered again adds nothing.
        let again = send(&lab, &public_udp(GUESSER), &guess(g)).unwrap();
        backend_answers(&lab, &f, 401, &challenge("x", false));
        backend_answers(&lab, &again, 401, &challenge("x", false));
        assert!(!banned(&lab, "192.0.2.77"), "guess {g}");
    }
    let f = send(&lab, &public_udp(GUESSER), &guess(5)).unwrap();
    backend_answers(&lab, &f, 401, &challenge("x", false));
    assert!(banned(&lab, "192.0.2.77"));
    dropped(&lab.handle(&public_udp(GUESSER), &guess(6)), Reason::Banned);
    // And the office was never touched: its next request goes through.
    assert!(!banned(&lab, OFFICE));
    lab.now += 60_000;
    assert!(send(&lab, &phone(7), &request("OPTIONS", 7, 1, "after", "")).is_some());
    assert_eq!(bans(&lab), 3);
}

#[test]
fn a_flood_naming_the_domain_is_rate_limited_but_never_banned() {
    let mut lab = Lab::new("");
    let flood = public_udp("192.0.2.88:5060");
    let mut passed = 0;
    for n in 0..5000 {
        let r = request("OPTIONS", 1, n, "f", "");
        if send(&lab, &flood, &r).is_some() {
            passed += 1;
        }
    }
    let burst = 1000; // limits.burst's default
    assert_eq!(passed, burst);
    let mut regs = 0;
    for n in 0..2000 {
        let r = request("REGISTER", 1, n, "f", "");
        if send(&lab, &flood, &r).is_some() {
            regs += 1;
        }
    }
    assert_eq!(regs, 400, "limits.register_burst's default");
    assert_eq!(
        lab.count(Reason::RateLimited, Disposition::Dropped),
        (5000 - burst) + (2000 - 400)
    );
    assert_eq!(bans(&lab), 0);
    assert!(!banned(&lab, "192.0.2.88"));
    // A second later its budget has refilled by the rate.
    lab.now += 1000;
    let again = (0..100)
        .filter(|n| send(&lab, &flood, &request("OPTIONS", 1, 9000 + n, "f", "")).is_some())
        .count();
    assert_eq!(again, 50, "limits.rate's default");
}
