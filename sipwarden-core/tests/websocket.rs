//! SIP over WebSocket through the sans-IO core: a browser's REGISTER and
//! calls on a `wss:` flow (Via `.invalid` kept, `received`/`rport` added,
//! responses back down the connection, the Path flow token naming the
//! WebSocket connection, Record-Route `transport=wss`), a scanner over
//! WebSocket dropped as over TCP, and refused upgrades counted toward a ban.

mod common;

use common::*;
use sipwarden_core::flow::{Flow, Side, Transport};
use sipwarden_core::policy::ws::Upgrade;
use sipwarden_core::verdict::{Disposition, Reason, Verdict};

const WS_CFG: &str = "[ws]\norigins = [\"https://phone.example.com\"]\n[ban]\nafter_rejects = 3\n";

/// The lab with a `wss:` listener (index 2) besides UDP and TCP.
fn lab() -> Lab {
    let lab = Lab::new(WS_CFG);
    let text = BASE_CFG.replace(
        "\"tcp:203.0.113.10:5060\"]",
        "\"tcp:203.0.113.10:5060\", \"wss:203.0.113.10:8443\"]",
    );
    lab.reload_with(&format!(
        "{text}{WS_CFG}[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n"
    ));
    lab
}

fn browser(remote: &str) -> Flow {
    Flow {
        side: Side::Public,
        transport: Transport::Wss,
        listener: 2,
        local: "203.0.113.10:8443".parse().unwrap(),
        remote: remote.parse().unwrap(),
    }
}

const BROWSER: &str = "198.51.100.40:51234";

/// What JsSIP sends (abridged).
fn browser_register() -> String {
    "REGISTER sip:sip-7f3k.example.com SIP/2.0\r\n\
     Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK5146935\r\n\
     Max-Forwards: 69\r\n\
     To: <sip:1003@sip-7f3k.example.com>\r\n\
     From: <sip:1003@sip-7f3k.example.com>;tag=vsdm5m0ulc\r\n\
     Call-ID: 3kfa0j2v7hl0l2tjq6m1o4\r\n\
     CSeq: 1 REGISTER\r\n\
     Contact: <sip:p6pc1sbt@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:0b5d1f2a-1e0f-4b43-a0d2-5b3c5b1d2e11>\";expires=600\r\n\
     Expires: 600\r\n\
     Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n\
     Supported: path,gruu,outbound\r\n\
     User-Agent: JsSIP 3.13.8\r\n\
     Content-Length: 0\r\n\r\n"
        .to_string()
}

#[test]
fn a_browser_registers_and_is_called_down_its_websocket() {
    let lab = lab();
    let b = browser(BROWSER);
    let out = lab.handle(&b, &browser_register());
    let fwd = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
    // Our Via on top, the browser's `.invalid` one kept below with the
    // connection's address and port.
    let vias = headers(&fwd, "via");
    assert!(
        vias[0].starts_with("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKsw"),
        "{vias:?}"
    );
    assert_eq!(
        vias[1],
        "Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK5146935;received=198.51.100.40;rport=51234"
    );
    let path = headers(&fwd, "path");
    assert_eq!(path.len(), 1, "{fwd}");
    assert!(path[0].starts_with("Path: <sip:f"), "{path:?}");
    assert!(fwd.contains("Contact: <sip:p6pc1sbt@df7jal23ls0d.invalid;transport=ws>"));

    // The 200 goes back down the browser's connection.
    let ok = answer(&fwd, 200, "");
    let out = lab.handle(&asterisk(), &ok);
    let s = one_send(&out, Verdict::forward(Reason::Response));
    assert_eq!(
        (s.side, s.transport, addr(s)),
        (Side::Public, Transport::Wss, BROWSER.parse().unwrap())
    );
    assert!(text(s).contains("Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK5146935;received=198.51.100.40;rport=51234\r\n"));

    // Asterisk calls the browser's Contact through the Path: down the
    // WebSocket connection, Record-Route facing the browser says wss.
    let path_uri = path[0].trim_start_matches("Path: ");
    let inv = format!(
        "INVITE sip:p6pc1sbt@df7jal23ls0d.invalid;transport=ws SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK-ai1\r\nRoute: <sip:127.0.0.1:5070;lr>\r\n\
         From: <sip:1002@pbx.example.com>;tag=ast1\r\nTo: <sip:1003@pbx.example.com>\r\n\
         Contact: <sip:asterisk@127.0.0.1:5080>\r\nCall-ID: to-browser-1\r\nCSeq: 10 INVITE\r\n\
         Max-Forwards: 70\r\nRoute: {path_uri}\r\nContent-Length: 0\r\n\r\n"
    );
    let out = lab.handle(&asterisk(), &inv);
    let s = one_send(&out, Verdict::forward(Reason::Outbound));
    assert_eq!(
        (s.side, s.transport, addr(s)),
        (Side::Public, Transport::Wss, BROWSER.parse().unwrap())
    );
    let t = text(s).to_string();
    assert!(t.starts_with("INVITE sip:p6pc1sbt@df7jal23ls0d.invalid;transport=ws SIP/2.0\r\n"));
    assert!(
        headers(&t, "via")[0].starts_with("Via: SIP/2.0/WSS "),
        "{t}"
    );
    let rr = record_routes(&t);
    assert!(rr[0].contains(";transport=wss"), "{rr:?}");

    // The browser's 200 (its Via is ours, with the WSS token) goes to
    // Asterisk.
    let ok = answer(
        &t,
        200,
        "Contact: <sip:p6pc1sbt@df7jal23ls0d.invalid;transport=ws>\r\n",
    );
    let out = lab.handle(&b, &ok);
    let s = one_send(&out, Verdict::forward(Reason::Response));
    assert_eq!(
        (s.side, addr(s)),
        (Side::Internal, "127.0.0.1:5080".parse().unwrap())
    );
    assert_eq!(
        lab.core.metrics().get(
            Side::Public,
            Transport::Wss,
            Reason::Domain,
            Disposition::Forwarded
        ),
        1
    );
}

#[test]
fn a_scanner_over_websocket_is_dropped_as_over_tcp() {
    let lab = lab();
    let scan = |via: &str| {
        format!(
            "REGISTER sip:203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bKs1\r\n\
             To: <sip:100@203.0.113.10>\r\nFrom: <sip:100@203.0.113.10>;tag=s1\r\nCall-ID: s1\r\n\
             CSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let out = lab.handle(&browser("198.51.100.66:40000"), &scan("WSS x.invalid"));
    dropped(&out, Reason::NoDomain);
    let out = lab.handle(
        &public_tcp("198.51.100.66:40001"),
        &scan("TCP 198.51.100.66:40001"),
    );
    dropped(&out, Reason::NoDomain);
    let m = lab.core.metrics();
    assert_eq!(
        m.get(
            Side::Public,
            Transport::Wss,
            Reason::NoDomain,
            Disposition::Dropped
        ),
        1
    );
    assert_eq!(
        m.get(
            Side::Public,
            Transport::Tcp,
            Reason::NoDomain,
            Disposition::Dropped
        ),
        1
    );
}

#[test]
fn refused_upgrades_are_counted_and_ban_the_source() {
    let lab = lab();
    let b = browser("198.51.100.77:40000");
    let head = |origin: &str, proto: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: sip-7f3k.example.com:8443\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nOrigin: {origin}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {proto}\r\n\r\n"
        )
    };
    let sni = Some("sip-7f3k.example.com");
    // The page's origin and sip: upgraded, nothing counted.
    let ok = head("https://phone.example.com", "sip");
    assert!(matches!(
        lab.core.on_ws_upgrade(lab.now, &b, ok.as_bytes(), sni),
        Upgrade::Accept { .. }
    ));
    // Half a head: read on.
    assert_eq!(
        lab.core
            .on_ws_upgrade(lab.now, &b, &ok.as_bytes()[..40], sni),
        Upgrade::More
    );
    let refused = |h: &str| match lab.core.on_ws_upgrade(lab.now, &b, h.as_bytes(), sni) {
        Upgrade::Refuse(r) => (r.status, r.reason),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(&head("https://evil.example", "sip")),
        (403, Reason::WsOrigin)
    );
    assert_eq!(
        refused(&head("https://phone.example.com", "chat")),
        (400, Reason::WsUpgrade)
    );
    assert_eq!(lab.count(Reason::WsOrigin, Disposition::Dropped), 1);
    assert_eq!(lab.count(Reason::WsUpgrade, Disposition::Dropped), 1);
    assert!(!lab.core.tables().bans.is_banned(b.remote.ip(), lab.now));
    // The third reject (a slow upgrade) bans: the next accept is closed.
    lab.core.on_ws_timeout(lab.now, &b, b"GET /ws HT");
    assert!(lab.core.tables().bans.is_banned(b.remote.ip(), lab.now));
    assert!(!lab.core.on_accept(lab.now, &b));
}
