//! Defence in depth through the core with a virtual clock: auto-bans after
//! rejects and after failed authentications, per-source rate limits,
//! allow/deny lists, the User-Agent blocklist, and monitor mode.

mod common;

use common::*;
use sipwarden_core::metrics::Event;
use sipwarden_core::verdict::{Disposition, Reason, Verdict};

const SCANNER: &str = "192.0.2.66:5060";
const PHONE: &str = "198.51.100.7:5062";

fn by_ip(n: u32) -> String {
    format!(
        "OPTIONS sip:{n}@203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-s{n}\r\n\
         From: <sip:{n}@203.0.113.10>;tag=s{n}\r\nTo: <sip:{n}@203.0.113.10>\r\nCall-ID: scan-{n}\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn with_domain(method: &str, n: u32, extra: &str) -> String {
    format!(
        "{method} sip:1001@sip-7f3k.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK-d{n}\r\n\
         From: <sip:1001@sip-7f3k.example.com>;tag=d{n}\r\nTo: <sip:1001@sip-7f3k.example.com>\r\nCall-ID: dom-{n}\r\n\
         CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// What the transport cannot read whole (a datagram the socket cut, a
/// stream that cannot be framed) is a verdict of the core like any
/// message: counted, held against a public source, never against
/// Asterisk. A CRLF ping on a stream is answered on its own connection.
#[test]
fn unreadable_transport_input_counts_toward_a_ban() {
    use sipwarden_core::proxy::Dest;
    use sipwarden_core::sip::ScanError;
    let lab = Lab::new("[ban]\nafter_rejects = 3\n");
    let cut = vec![b'x'; 2000];
    dropped(
        &lab.core.on_truncated(lab.now, &public_udp(SCANNER), &cut),
        Reason::TooLarge,
    );
    let tcp = public_tcp(SCANNER);
    dropped(
        &lab.core
            .on_frame_error(lab.now, &tcp, ScanError::TooLarge, b"INVITE"),
        Reason::TooLarge,
    );
    dropped(
        &lab.core
            .on_frame_error(lab.now, &tcp, ScanError::BadContentLength, b"INVITE"),
        Reason::Malformed,
    );
    assert_eq!(lab.core.metrics().events(Event::Bans), 1);
    dropped(
        &lab.handle(&public_udp(SCANNER), &with_domain("OPTIONS", 1, "")),
        Reason::Banned,
    );
    // Asterisk's side is trusted: nothing it sends counts toward a ban.
    for _ in 0..3 {
        dropped(
            &lab.core.on_truncated(lab.now, &asterisk(), &cut),
            Reason::TooLarge,
        );
    }
    assert_eq!(lab.core.metrics().events(Event::Bans), 1);

    let out = lab.core.on_ping(lab.now, &public_tcp(PHONE));
    let pong = one_send(&out, Verdict::replied(Reason::Keepalive));
    assert_eq!(pong.data.as_ref(), b"\r\n");
    assert_eq!(pong.dest, Dest::Addr(PHONE.parse().unwrap()));
    assert!(pong.reuse_only, "only on the ping's own connection");
    assert_eq!(lab.count(Reason::Keepalive, Disposition::Replied), 1);
}

#[test]
fn rejects_ban_a_source_for_the_duration() {
    let mut lab = Lab::new("[ban]\nafter_rejects = 20\nwindow = \"60s\"\nduration = \"15m\"\n");
    for n in 0..19 {
        dropped(
            &lab.handle(&public_udp(SCANNER), &by_ip(n)),
            Reason::NoDomain,
        );
    }
    assert_eq!(lab.core.metrics().events(Event::Bans), 0);
    dropped(
        &lab.handle(&public_udp(SCANNER), &by_ip(19)),
        Reason::NoDomain,
    );
    assert_eq!(lab.core.metrics().events(Event::Bans), 1);
    // Now even a request with the secret domain is dropped, as banned.
    dropped(
        &lab.handle(&public_udp(SCANNER), &with_domain("OPTIONS", 1, "")),
        Reason::Banned,
    );
    // Others are not affected.
    one_send(
        &lab.handle(&public_udp(PHONE), &with_domain("OPTIONS", 2, "")),
        Verdict::forward(Reason::Domain),
    );
    // The ban ends after its duration.
    lab.now += 15 * 60_000;
    lab.core.tick(lab.now);
    assert_eq!(lab.core.metrics().events(Event::Unbans), 1);
    one_send(
        &lab.handle(&public_udp(SCANNER), &with_domain("OPTIONS", 3, "")),
        Verdict::forward(Reason::Domain),
    );
}

#[test]
fn failed_authentications_ban_but_challenges_do_not() {
    let lab = Lab::new("[ban]\nafter_auth_failures = 5\n");
    let auth = "Authorization: Digest username=\"1001\", realm=\"pbx\", nonce=\"n\", uri=\"sip:x\", response=\"bad\"\r\n";
    // First challenges (no credentials) are normal: many of them ban nobody.
    for n in 0..10 {
        let out = lab.handle(&public_udp(PHONE), &with_domain("REGISTER", n, ""));
        let fwd = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
        assert!(!fwd.contains(";swa"));
        let challenge = answer(&fwd, 401, "");
        one_send(
            &lab.handle(&asterisk(), &challenge),
            Verdict::forward(Reason::Response),
        );
    }
    assert_eq!(lab.core.metrics().events(Event::Bans), 0);
    // Wrong passwords: 401 to requests with credentials, each guess its own.
    for n in 100..105 {
        let guess = auth.replace("\"bad\"", &format!("\"bad{n}\""));
        let out = lab.handle(&public_udp(PHONE), &with_domain("REGISTER", n, &guess));
        let fwd = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
        assert!(headers(&fwd, "via")[0].contains(";swa="), "{fwd}");
        one_send(
            &lab.handle(&asterisk(), &answer(&fwd, 401, "")),
            Verdict::forward(Reason::Response),
        );
    }
    assert_eq!(lab.core.metrics().events(Event::Bans), 1);
    dropped(
        &lab.handle(&public_udp(PHONE), &with_domain("REGISTER", 200, auth)),
        Reason::Banned,
    );
}

#[test]
fn rate_limits_per_source_with_a_separate_register_budget() {
    let lab = Lab::new("[limits]\nrate = 10\nburst = 20\nregister_rate = 1\nregister_burst = 3\n[ban]\nafter_rejects = 0\n");
    let mut passed = 0;
    for n in 0..50 {
        let out = lab.handle(&public_udp(PHONE), &with_domain("OPTIONS", n, ""));
        match out.verdict {
            v if v == Verdict::forward(Reason::Domain) => passed += 1,
            v => assert_eq!(v, Verdict::drop(Reason::RateLimited)),
        }
    }
    assert_eq!(passed, 20, "the burst, at one instant");
    // REGISTERs have their own budget, untouched by the OPTIONS flood.
    for n in 0..3 {
        one_send(
            &lab.handle(&public_udp(PHONE), &with_domain("REGISTER", 100 + n, "")),
            Verdict::forward(Reason::Domain),
        );
    }
    dropped(
        &lab.handle(&public_udp(PHONE), &with_domain("REGISTER", 103, "")),
        Reason::RateLimited,
    );
    // Another source is not limited by this one.
    one_send(
        &lab.handle(
            &public_udp("198.51.100.8:5062"),
            &with_domain("OPTIONS", 7, ""),
        ),
        Verdict::forward(Reason::Domain),
    );
    assert_eq!(lab.count(Reason::RateLimited, Disposition::Dropped), 31);
}

#[test]
fn allow_and_deny_lists() {
    let lab = Lab::new(
        "[ban]\nafter_rejects = 2\n[limits]\nrate = 1\nburst = 1\n[allow]\ncidrs = [\"192.0.2.0/24\"]\n[deny]\ncidrs = [\"198.51.100.0/24\", \"2001:db8::/32\"]\n",
    );
    // Allowed: never rate-limited or banned (still filtered by domain).
    for n in 0..10 {
        dropped(
            &lab.handle(&public_udp(SCANNER), &by_ip(n)),
            Reason::NoDomain,
        );
        one_send(
            &lab.handle(&public_udp(SCANNER), &with_domain("OPTIONS", n, "")),
            Verdict::forward(Reason::Domain),
        );
    }
    assert_eq!(lab.core.metrics().events(Event::Bans), 0);
    // `allow` spares a source the limits, not the scanner fast path: a
    // scanner's message with a broken Call-ID (which the full scanner would
    // call malformed) is dropped from its start line and To, as no-domain.
    let broken = by_ip(99).replace("Call-ID: scan-99", "Call-ID: a\0b");
    dropped(&lab.handle(&public_udp(SCANNER), &broken), Reason::NoDomain);
    assert_eq!(lab.count(Reason::Malformed, Disposition::Dropped), 0);
    // Denied: dropped whatever it says, IPv4 and IPv6.
    dropped(
        &lab.handle(&public_udp(PHONE), &with_domain("OPTIONS", 1, "")),
        Reason::Denied,
    );
    dropped(
        &lab.handle(
            &public_udp("[2001:db8::5]:5060"),
            &with_domain("OPTIONS", 2, ""),
        ),
        Reason::Denied,
    );
}

#[test]
fn the_user_agent_blocklist_counts_toward_bans() {
    let lab = Lab::new("[ban]\nafter_rejects = 3\n");
    for n in 0..3 {
        let m = with_domain("REGISTER", n, "User-Agent: friendly-scanner\r\n");
        dropped(&lab.handle(&public_udp(SCANNER), &m), Reason::UserAgent);
    }
    assert_eq!(lab.core.metrics().events(Event::Bans), 1);
}

#[test]
fn monitor_mode_drops_and_bans_nothing() {
    let lab = Lab::new(
        "mode = \"monitor\"\n[ban]\nafter_rejects = 2\n[limits]\nrate = 1\nburst = 1\n[deny]\ncidrs = [\"198.51.100.9/32\"]\n",
    );
    let would = |r: Reason| Verdict {
        reason: r,
        disposition: Disposition::WouldDrop,
    };
    one_send(
        &lab.handle(&public_udp(SCANNER), &by_ip(1)),
        would(Reason::NoDomain),
    );
    // Reported as enforce decides: a reject whatever the source's rate...
    one_send(
        &lab.handle(&public_udp(SCANNER), &by_ip(2)),
        would(Reason::NoDomain),
    );
    // ...and an admitted request over it rate-limited.
    one_send(
        &lab.handle(&public_udp(SCANNER), &with_domain("OPTIONS", 2, "")),
        Verdict::forward(Reason::Domain),
    );
    one_send(
        &lab.handle(&public_udp(SCANNER), &with_domain("OPTIONS", 3, "")),
        would(Reason::RateLimited),
    );
    let ua = with_domain("OPTIONS", 4, "User-Agent: sipvicious\r\n");
    one_send(
        &lab.handle(&public_udp("192.0.2.70:5060"), &ua),
        would(Reason::UserAgent),
    );
    one_send(
        &lab.handle(
            &public_udp("198.51.100.9:5060"),
            &with_domain("OPTIONS", 5, ""),
        ),
        would(Reason::Denied),
    );
    assert_eq!(
        lab.core.metrics().events(Event::Bans),
        0,
        "monitor mode never bans"
    );
    assert!(!lab
        .core
        .tables()
        .bans
        .is_banned("192.0.2.66".parse().unwrap(), lab.now));
    assert_eq!(lab.core.metrics().total_by(Disposition::Dropped), 0);
}

#[test]
fn trunks_are_never_rate_limited_or_banned() {
    let lab = Lab::new(
        "[[trunk]]\nname = \"p\"\nregistrar = \"sip.p.example\"\nallow = [\"198.51.100.0/24\"]\n\
         [limits]\nrate = 1\nburst = 1\n[ban]\nafter_rejects = 1\n",
    );
    for n in 0..20 {
        let inv = with_domain("INVITE", n, "").replace(
            "sip:1001@sip-7f3k.example.com SIP",
            "sip:+4930@203.0.113.10 SIP",
        );
        one_send(
            &lab.handle(&public_udp(PHONE), &inv),
            Verdict::forward(Reason::Trunk),
        );
    }
    assert_eq!(lab.core.metrics().events(Event::Bans), 0);
}

/// A TLS connection's server name is judged before the handshake: a
/// refusal is a counted `tls-sni` drop that counts toward a ban; the banned
/// source is then closed at the accept; the secret name, and a nameless
/// hello from an `allow`ed source, proceed. Monitor mode lets every hello
/// through and counts what enforce would have refused.
#[test]
fn tls_server_names_count_toward_a_ban() {
    use sipwarden_core::flow::{Flow, Side, Transport};
    let tls = |remote: &str| Flow {
        side: Side::Public,
        transport: Transport::Tls,
        listener: 2,
        local: "203.0.113.10:5061".parse().unwrap(),
        remote: remote.parse().unwrap(),
    };
    let lab = Lab::new("[ban]\nafter_rejects = 2\n[allow]\ncidrs = [\"198.51.100.0/24\"]\n");
    let (c, now) = (&lab.core, lab.now);
    assert!(c.on_accept(now, &tls(SCANNER)));
    assert!(!c.on_client_hello(now, &tls(SCANNER), Some("203.0.113.10")));
    assert!(c.on_client_hello(now, &tls(SCANNER), Some("SIP-7F3K.example.com")));
    assert!(!c.on_client_hello(now, &tls(SCANNER), None));
    assert_eq!(c.metrics().total(Reason::TlsSni, Disposition::Dropped), 2);
    assert_eq!(c.metrics().events(Event::Bans), 1);
    assert!(!c.on_accept(now, &tls(SCANNER)), "banned: closed at accept");
    assert_eq!(c.metrics().total(Reason::Banned, Disposition::Dropped), 1);
    // An allowed source may send no name, and is never banned.
    assert!(c.on_client_hello(now, &tls(PHONE), None));
    for _ in 0..3 {
        assert!(!c.on_client_hello(now, &tls(PHONE), Some("other")));
    }
    assert!(c.on_accept(now, &tls(PHONE)));

    let lab = Lab::new("mode = \"monitor\"\n[ban]\nafter_rejects = 1\n");
    let (c, now) = (&lab.core, lab.now);
    assert!(c.on_client_hello(now, &tls(SCANNER), None));
    assert!(c.on_client_hello(now, &tls(SCANNER), Some("other")));
    assert!(c.on_accept(now, &tls(SCANNER)));
    assert_eq!(c.metrics().total(Reason::TlsSni, Disposition::WouldDrop), 2);
    assert_eq!(
        c.metrics().events(Event::Bans),
        0,
        "monitor mode never bans"
    );
}
