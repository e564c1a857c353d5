//! Every admission and forwarding rule of `docs/admission.md`,
//! driven through the sans-IO core with literal SIP messages.

mod common;

use common::*;
use sipwarden_core::flow::{Side, Transport};
use sipwarden_core::proxy::Dest;
use sipwarden_core::verdict::{Disposition, Reason, Verdict};

const PHONE: &str = "198.51.100.7:5062";

fn invite(ruri: &str, extra: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-ph1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:1001@sip-7f3k.example.com>;tag=ph-tag\r\n\
         To: <sip:1002@sip-7f3k.example.com>\r\n\
         Call-ID: call-1@192.168.1.20\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:1001@192.168.1.20:5062>\r\n\
         {extra}Content-Type: application/sdp\r\n\
         Content-Length: 4\r\n\r\nv=0\n"
    )
}

const SECRET_URI: &str = "sip:1002@sip-7f3k.example.com";

#[test]
fn scanner_by_ip_is_dropped_silently() {
    let lab = Lab::new("");
    let scan = "OPTIONS sip:100@203.0.113.10 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-1\r\n\
        From: \"sipvicious\"<sip:100@1.1.1.1>;tag=x\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\n\
        Call-ID: 5@x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: Linphone\r\nContent-Length: 0\r\n\r\n";
    dropped(
        &lab.handle(&public_udp("192.0.2.66:5060"), scan),
        Reason::NoDomain,
    );
    assert_eq!(lab.count(Reason::NoDomain, Disposition::Dropped), 1);
}

#[test]
fn domain_request_goes_to_the_backend_with_only_the_needed_edits() {
    let lab = Lab::new("");
    let req = invite(
        SECRET_URI,
        "X-Sipwarden-Trunk: forged\r\nUser-Agent: Yealink\r\n",
    );
    let out = lab.handle(&public_udp(PHONE), &req);
    let s = one_send(&out, Verdict::forward(Reason::Domain));
    assert_eq!((s.side, s.transport), (Side::Internal, Transport::Udp));
    assert_eq!(s.dest, Dest::Addr("127.0.0.1:5080".parse().unwrap()));
    let fwd = text(s);
    let lines: Vec<&str> = fwd.split("\r\n").collect();
    assert_eq!(lines[0], "INVITE sip:1002@sip-7f3k.example.com SIP/2.0");
    assert!(
        lines[1].starts_with("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKswi0"),
        "{}",
        lines[1]
    );
    // Double Record-Route: the top entry faces Asterisk and carries the
    // caller's flow, the second faces the caller.
    assert!(lines[2].starts_with("Record-Route: <sip:f"), "{}", lines[2]);
    assert!(lines[2].contains("@127.0.0.1:5070;lr;swr="), "{}", lines[2]);
    assert!(lines[3].starts_with("Record-Route: <sip:f"), "{}", lines[3]);
    assert!(
        lines[3].contains("@pbx.example.com:5060;lr;swr="),
        "{}",
        lines[3]
    );
    let token = |l: &str| l.split("swr=").nth(1).unwrap().to_string();
    assert_eq!(
        token(lines[2]),
        token(lines[3]),
        "one token signs both entries"
    );
    assert_eq!(
        lines[4],
        "Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-ph1;rport=5062;received=198.51.100.7"
    );
    assert_eq!(lines[5], "Max-Forwards: 69");
    assert!(
        !fwd.contains("forged"),
        "X-Sipwarden-* from outside is stripped"
    );
    assert!(fwd.contains("\r\nX-Sipwarden-Source: 198.51.100.7:5062\r\n"));
    // Everything else is byte-identical, body included.
    let mut expect = req.replace("X-Sipwarden-Trunk: forged\r\n", "");
    expect = expect.replace(";rport\r\n", ";rport=5062;received=198.51.100.7\r\n");
    expect = expect.replace("Max-Forwards: 70", "Max-Forwards: 69");
    expect = expect.replace(
        "Content-Length: 4\r\n",
        "Content-Length: 4\r\nX-Sipwarden-Source: 198.51.100.7:5062\r\n",
    );
    let without_ours: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| !(1..=3).contains(i))
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(without_ours.join("\r\n"), expect);
}

#[test]
fn max_forwards_rules() {
    let lab = Lab::new("");
    // Absent: inserted as 70 (then not decremented: it is our hop's value).
    let req = invite(SECRET_URI, "").replace("Max-Forwards: 70\r\n", "");
    let out = lab.handle(&public_udp(PHONE), &req);
    assert_eq!(
        headers(
            text(one_send(&out, Verdict::forward(Reason::Domain))),
            "max-forwards"
        ),
        vec!["Max-Forwards: 70"]
    );
    // 0: answered 483, never forwarded.
    let req = invite(SECRET_URI, "").replace("Max-Forwards: 70", "Max-Forwards: 0");
    let out = lab.handle(&public_udp(PHONE), &req);
    let s = one_send(&out, Verdict::replied(Reason::TooManyHops));
    assert!(text(s).starts_with("SIP/2.0 483 Too Many Hops\r\n"));
    assert_eq!((s.side, addr(s)), (Side::Public, PHONE.parse().unwrap()));
    // ACK with 0: dropped, never answered.
    let ack = req
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK");
    dropped(&lab.handle(&public_udp(PHONE), &ack), Reason::TooManyHops);
}

#[test]
fn responses_follow_the_vias_and_strays_are_dropped() {
    let lab = Lab::new("");
    let fwd_out = lab.handle(&public_udp(PHONE), &invite(SECRET_URI, ""));
    let fwd = text(one_send(&fwd_out, Verdict::forward(Reason::Domain))).to_string();
    // Asterisk answers 180 with a forged X-Sipwarden header.
    let ringing = answer(&fwd, 180, "X-Sipwarden-Source: 1.2.3.4:5\r\n");
    let out = lab.handle(&asterisk(), &ringing);
    let s = one_send(&out, Verdict::forward(Reason::Response));
    assert_eq!(
        (s.side, s.transport, addr(s)),
        (Side::Public, Transport::Udp, PHONE.parse().unwrap())
    );
    assert_eq!(s.listener, Some(0));
    let back = text(s);
    assert!(
        !back.contains("127.0.0.1:5070;branch"),
        "our Via is popped: {back}"
    );
    assert!(back.contains("Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-ph1;rport=5062;received=198.51.100.7\r\n"));
    assert!(!back.contains("X-Sipwarden"));

    // A response whose top Via is not ours: stray.
    let stray = answer(&invite(SECRET_URI, ""), 200, "");
    dropped(&lab.handle(&asterisk(), &stray), Reason::StrayResponse);
    dropped(
        &lab.handle(&public_udp(PHONE), &stray),
        Reason::StrayResponse,
    );
    // Our branch with a different Call-ID: forged.
    let forged = ringing.replace("call-1@192.168.1.20", "call-2@x");
    dropped(&lab.handle(&asterisk(), &forged), Reason::StrayResponse);
    // Our branch arriving from the wrong side (a reflection attempt).
    dropped(
        &lab.handle(&public_udp(PHONE), &ringing),
        Reason::StrayResponse,
    );
    // A tampered branch.
    let tampered = ringing.replacen("branch=z9hG4bKswi0", "branch=z9hG4bKswo0", 1);
    dropped(&lab.handle(&asterisk(), &tampered), Reason::StrayResponse);
}

#[test]
fn tcp_responses_go_back_over_the_connection() {
    let lab = Lab::new("");
    let req =
        invite(SECRET_URI, "").replace("SIP/2.0/UDP 192.168.1.20", "SIP/2.0/TCP 192.168.1.20");
    let flow = public_tcp("198.51.100.7:40001");
    let out = lab.handle(&flow, &req);
    let fwd = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
    assert!(
        fwd.contains("@pbx.example.com:5060;transport=tcp;lr;swr="),
        "{fwd}"
    );
    let ok = answer(&fwd, 200, "");
    let out = lab.handle(&asterisk(), &ok);
    let s = one_send(&out, Verdict::forward(Reason::Response));
    // received:rport is the connection's remote address.
    assert_eq!(
        (s.transport, addr(s)),
        (Transport::Tcp, "198.51.100.7:40001".parse().unwrap())
    );
}

#[test]
fn cancel_and_non_2xx_ack_reuse_the_invite_branch() {
    let lab = Lab::new("");
    let inv = invite(SECRET_URI, "");
    let out = lab.handle(&public_udp(PHONE), &inv);
    let fwd_inv = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
    let branch = |m: &str| {
        headers(m, "via")[0]
            .split("branch=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    };
    let cancel = inv
        .replace("INVITE sip:1002", "CANCEL sip:1002")
        .replace("1 INVITE", "1 CANCEL")
        .replace(
            "Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
            "Content-Length: 0\r\n\r\n",
        );
    let out = lab.handle(&public_udp(PHONE), &cancel);
    let fwd_cancel = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
    assert_eq!(branch(&fwd_cancel), branch(&fwd_inv));
    assert!(
        headers(&fwd_cancel, "record-route").is_empty(),
        "CANCEL is not record-routed"
    );
    let ack = cancel
        .replace("CANCEL sip", "ACK sip")
        .replace("1 CANCEL", "1 ACK")
        .replace(
            "To: <sip:1002@sip-7f3k.example.com>",
            "To: <sip:1002@sip-7f3k.example.com>;tag=487tag",
        );
    let out = lab.handle(&public_udp(PHONE), &ack);
    assert_eq!(
        branch(text(one_send(&out, Verdict::forward(Reason::Domain)))),
        branch(&fwd_inv)
    );
    // A new transaction (other branch) gets another branch.
    let other = inv.replace("z9hG4bK-ph1", "z9hG4bK-ph2");
    let out = lab.handle(&public_udp(PHONE), &other);
    assert_ne!(
        branch(text(one_send(&out, Verdict::forward(Reason::Domain)))),
        branch(&fwd_inv)
    );
}

#[test]
fn a_full_call_with_record_routed_in_dialog_requests() {
    let lab = Lab::new("");
    // Phone calls in.
    let inv = invite(SECRET_URI, "");
    let out = lab.handle(&public_udp(PHONE), &inv);
    let to_ast = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
    // Asterisk answers 200 with its Contact on loopback.
    let ok = answer(&to_ast, 200, "Contact: <sip:asterisk@127.0.0.1:5080>\r\n");
    let out = lab.handle(&asterisk(), &ok);
    let to_phone = text(one_send(&out, Verdict::forward(Reason::Response))).to_string();
    let rr = record_routes(&to_phone);
    assert_eq!(rr.len(), 2);
    // The phone (UAC) uses the reversed Record-Route as its route set and
    // sends the ACK and BYE to Asterisk's Contact: no domain anywhere
    // except in From/To, which the route token admits regardless.
    let route: Vec<String> = rr.iter().rev().cloned().collect();
    let bye = format!(
        "BYE sip:asterisk@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-bye;rport\r\n\
         Route: {}\r\nMax-Forwards: 70\r\nFrom: <sip:1001@10.0.0.1>;tag=ph-tag\r\nTo: <sip:1002@10.0.0.1>;tag=uas-tag\r\n\
         Call-ID: call-1@192.168.1.20\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        route.join(", ")
    );
    let out = lab.handle(&public_udp(PHONE), &bye);
    let s = one_send(&out, Verdict::forward(Reason::DialogRoute));
    assert_eq!(addr(s), "127.0.0.1:5080".parse().unwrap());
    assert!(
        headers(text(s), "route").is_empty(),
        "our Route entries are popped: {}",
        text(s)
    );

    // Asterisk, the UAS of this dialog, uses the Record-Route in the order
    // it saw it: the internal entry first.
    let ast_route: Vec<String> = record_routes(&to_ast);
    assert!(ast_route[0].contains("@127.0.0.1:5070"));
    let ast_bye = format!(
        "BYE sip:1001@192.168.1.20:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-ast;rport\r\n\
         Max-Forwards: 70\r\nRoute: {}\r\nFrom: <sip:1002@x>;tag=uas-tag\r\nTo: <sip:1001@x>;tag=ph-tag\r\n\
         Call-ID: call-1@192.168.1.20\r\nCSeq: 102 BYE\r\nContent-Length: 0\r\n\r\n",
        ast_route.join(", ")
    );
    let out = lab.handle(&asterisk(), &ast_bye);
    let s = one_send(&out, Verdict::forward(Reason::Outbound));
    // The private Contact is unreachable; the flow token in our
    // Record-Route names where the phone really is.
    assert_eq!(
        (s.side, s.transport, addr(s)),
        (Side::Public, Transport::Udp, PHONE.parse().unwrap())
    );
    let out_bye = text(s);
    assert!(headers(out_bye, "route").is_empty(), "{out_bye}");
    assert!(headers(out_bye, "via")[0]
        .starts_with("Via: SIP/2.0/UDP pbx.example.com:5060;branch=z9hG4bKswo0"));
    // The phone's 200 to that BYE goes back to Asterisk.
    let ok_bye = answer(out_bye, 200, "");
    let out = lab.handle(&public_udp(PHONE), &ok_bye);
    let s = one_send(&out, Verdict::forward(Reason::Response));
    assert_eq!(
        (s.side, addr(s)),
        (Side::Internal, "127.0.0.1:5080".parse().unwrap())
    );
}

#[test]
fn forged_route_tokens_are_refused() {
    let lab = Lab::new("");
    let bye = |route: &str| {
        format!(
            "BYE sip:asterisk@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66;branch=z9hG4bK-x\r\n\
             Route: {route}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: victim-call\r\n\
             CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    dropped(
        &lab.handle(
            &public_udp("192.0.2.66:5060"),
            &bye("<sip:pbx.example.com:5060;lr;swr=0123456789abcdef>"),
        ),
        Reason::ForgedToken,
    );
    // A real token of another call does not open this one.
    let inv = invite(SECRET_URI, "");
    let out = lab.handle(&public_udp(PHONE), &inv);
    let rr = record_routes(text(&out.transmits[0]));
    dropped(
        &lab.handle(&public_udp("192.0.2.66:5060"), &bye(&rr[1])),
        Reason::ForgedToken,
    );
    // No Route, no domain: the scanner's BYE is nothing.
    let plain = bye("<sip:203.0.113.10;lr>");
    dropped(
        &lab.handle(&public_udp("192.0.2.66:5060"), &plain),
        Reason::NoDomain,
    );
}

fn from_asterisk(ruri: &str, routes: &str, method: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK-a1\r\n{routes}\
         From: <sip:1002@pbx.example.com>;tag=ast\r\nTo: <{ruri}>\r\nContact: <sip:asterisk@127.0.0.1:5080>\r\n\
         Call-ID: ast-call-1\r\nCSeq: 5 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn asterisk_requests_are_routed_by_route_then_request_uri() {
    let lab = Lab::new("");
    // Outbound-proxy Route on top, other headers, then a foreign Route.
    let m = from_asterisk(
        "sip:2000@198.51.100.50:5070",
        "Route: <sip:127.0.0.1:5070;lr>\r\nUser-Agent: Asterisk PBX 22\r\nRoute: <sip:198.51.100.60;lr>\r\n",
        "OPTIONS",
    );
    let out = lab.handle(&asterisk(), &m);
    let s = one_send(&out, Verdict::forward(Reason::Outbound));
    assert_eq!(
        (s.side, addr(s)),
        (Side::Public, "198.51.100.60:5060".parse().unwrap())
    );
    let t = text(s);
    assert_eq!(headers(t, "route"), vec!["Route: <sip:198.51.100.60;lr>"]);
    assert!(t.starts_with("OPTIONS sip:2000@198.51.100.50:5070 SIP/2.0\r\nVia: SIP/2.0/UDP pbx.example.com:5060;branch=z9hG4bKswo0"));
    // RFC 3581: rport asked for, so received is added even when equal.
    assert!(
        t.contains(";rport\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport=5080;branch=z9hG4bK-a1;received=127.0.0.1\r\n"),
        "{t}"
    );

    // No Route left: the Request-URI, TCP when it says so.
    let m = from_asterisk(
        "sip:2000@198.51.100.50:5070;transport=tcp",
        "Route: <sip:127.0.0.1:5070;lr>\r\n",
        "OPTIONS",
    );
    let out = lab.handle(&asterisk(), &m);
    let s = one_send(&out, Verdict::forward(Reason::Outbound));
    assert_eq!(
        (s.transport, addr(s)),
        (Transport::Tcp, "198.51.100.50:5070".parse().unwrap())
    );
    assert!(text(s).contains("Via: SIP/2.0/TCP pbx.example.com:5060;"));

    // A name: resolved by the socket layer, 503 back if it fails.
    let m = from_asterisk(
        "sip:100@sip.provider.example",
        "Route: <sip:127.0.0.1:5070;lr>\r\n",
        "REGISTER",
    );
    let out = lab.handle(&asterisk(), &m);
    let s = one_send(&out, Verdict::forward(Reason::Outbound));
    assert_eq!(
        s.dest,
        Dest::Name {
            host: "sip.provider.example".into(),
            port: None
        }
    );
    let fail = s.on_fail.as_ref().expect("a 503 for Asterisk if DNS fails");
    assert!(text(fail).starts_with("SIP/2.0 503 "));
    assert_eq!(fail.side, Side::Internal);

    // tel: without a Route cannot be routed: 416.
    let m = from_asterisk("tel:+15551234", "", "INVITE");
    let out = lab.handle(&asterisk(), &m);
    assert!(text(one_send(&out, Verdict::replied(Reason::Unroutable))).starts_with("SIP/2.0 416 "));
}

#[test]
fn outbound_invites_are_record_routed_and_the_answer_returns() {
    let lab = Lab::new("");
    let m = from_asterisk(
        "sip:+15551234@198.51.100.50",
        "Route: <sip:127.0.0.1:5070;lr>\r\n",
        "INVITE",
    );
    let out = lab.handle(&asterisk(), &m);
    let s = one_send(&out, Verdict::forward(Reason::Outbound));
    let t = text(s).to_string();
    let rr = record_routes(&t);
    assert_eq!(rr.len(), 2);
    assert!(
        rr[0].starts_with("<sip:pbx.example.com:5060;lr;swr="),
        "{rr:?}"
    );
    assert!(rr[1].starts_with("<sip:127.0.0.1:5070;lr;swr="), "{rr:?}");
    // The provider answers; the answer goes back to Asterisk.
    let ok = answer(&t, 200, "");
    let out = lab.handle(&public_udp("198.51.100.50:5060"), &ok);
    let s = one_send(&out, Verdict::forward(Reason::Response));
    assert_eq!(
        (s.side, addr(s)),
        (Side::Internal, "127.0.0.1:5080".parse().unwrap())
    );
    // The provider's BYE later carries the Record-Route as Route.
    let bye = format!(
        "BYE sip:asterisk@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.50;branch=z9hG4bK-pb\r\n\
         Route: {}, {}\r\nFrom: <sip:+15551234@x>;tag=uas-tag\r\nTo: <sip:1002@pbx.example.com>;tag=ast\r\n\
         Call-ID: ast-call-1\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
        rr[0], rr[1]
    );
    let out = lab.handle(&public_udp("198.51.100.50:5060"), &bye);
    let s = one_send(&out, Verdict::forward(Reason::DialogRoute));
    assert_eq!(addr(s), "127.0.0.1:5080".parse().unwrap());
}

#[test]
fn a_request_that_comes_back_is_a_loop() {
    let lab = Lab::new("");
    // Asterisk sends to our own public address; the request re-enters
    // from the public side carrying our outbound Via and is forwarded in;
    // if Asterisk (as a proxy) sent it out again unchanged, that is a loop.
    let m = from_asterisk("sip:1002@sip-7f3k.example.com", "", "OPTIONS");
    let out = lab.handle(&asterisk(), &m);
    let once = text(&out.transmits[0]).to_string();
    let out = lab.handle(&public_udp("203.0.113.10:5060"), &once);
    let twice = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
    let out = lab.handle(&asterisk(), &twice);
    let s = one_send(&out, Verdict::replied(Reason::Loop));
    assert!(text(s).starts_with("SIP/2.0 482 Loop Detected\r\n"));
}

#[test]
fn monitor_mode_forwards_what_enforce_drops() {
    let lab = Lab::new("mode = \"monitor\"\n");
    let m = invite("sip:100@203.0.113.10", "").replace("sip-7f3k.example.com", "203.0.113.10");
    let out = lab.handle(&public_udp("192.0.2.66:5060"), &m);
    let s = one_send(
        &out,
        Verdict {
            reason: Reason::NoDomain,
            disposition: Disposition::WouldDrop,
        },
    );
    assert_eq!(addr(s), "127.0.0.1:5080".parse().unwrap());
    assert_eq!(lab.count(Reason::NoDomain, Disposition::WouldDrop), 1);
    assert_eq!(lab.count(Reason::NoDomain, Disposition::Dropped), 0);
}

#[test]
fn on_reject_403_answers_and_ack_is_never_answered() {
    let lab = Lab::new("on_reject = \"403\"\n");
    let m = invite("sip:100@203.0.113.10", "").replace("sip-7f3k.example.com", "203.0.113.10");
    let out = lab.handle(&public_udp("192.0.2.66:5060"), &m);
    let s = one_send(&out, Verdict::replied(Reason::NoDomain));
    let t = text(s);
    assert!(t.starts_with("SIP/2.0 403 Forbidden\r\n"));
    assert!(headers(t, "to")[0].contains(";tag="));
    let again = lab.handle(&public_udp("192.0.2.66:5060"), &m);
    assert_eq!(
        again.transmits[0].data, s.data,
        "a retransmission gets the same answer"
    );
    let ack = m
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK");
    dropped(
        &lab.handle(&public_udp("192.0.2.66:5060"), &ack),
        Reason::NoDomain,
    );
}

#[test]
fn keepalives_and_garbage_are_counted_drops() {
    let lab = Lab::new("");
    let f = public_udp("192.0.2.66:5060");
    dropped(&lab.handle(&f, "\r\n\r\n"), Reason::Keepalive);
    dropped(&lab.handle(&f, "\r\n"), Reason::Keepalive);
    for junk in [
        &b""[..],
        b"\x00\x01\x00\x00\x21\x12\xa4\x42stun",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\n",
        b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n",
        b"\xff\xfe\xfd",
    ] {
        dropped(&lab.handle_bytes(&f, junk), Reason::Malformed);
    }
    let big = format!("{}{}", invite(SECRET_URI, ""), "x".repeat(70_000));
    dropped(&lab.handle(&f, &big), Reason::TooLarge);
    assert_eq!(lab.count(Reason::Malformed, Disposition::Dropped), 6);
}

#[test]
fn reload_swaps_the_domain_list() {
    let lab = Lab::new("");
    let m = invite("sip:1002@new-secret.example.net", "")
        .replace("sip-7f3k.example.com", "new-secret.example.net");
    dropped(&lab.handle(&public_udp(PHONE), &m), Reason::NoDomain);
    lab.reload_with(&BASE_CFG.replace(
        "domains = [\"sip-7f3k.example.com\"]",
        "domains = [\"sip-7f3k.example.com\", \"new-secret.example.net\"]",
    ));
    let out = lab.handle(&public_udp(PHONE), &m);
    one_send(&out, Verdict::forward(Reason::Domain));
}

#[test]
fn asterisk_over_tcp_gets_its_responses_on_its_connection() {
    let lab = Lab::new("");
    let ast_tcp = sipwarden_core::flow::Flow {
        side: Side::Internal,
        transport: Transport::Tcp,
        listener: 0,
        local: "127.0.0.1:5070".parse().unwrap(),
        remote: "127.0.0.1:41234".parse().unwrap(),
    };
    let m = from_asterisk("sip:2000@198.51.100.50", "", "OPTIONS")
        .replace("SIP/2.0/UDP 127.0.0.1:5080", "SIP/2.0/TCP 127.0.0.1:5080");
    let out = lab.handle(&ast_tcp, &m);
    let fwd = text(one_send(&out, Verdict::forward(Reason::Outbound))).to_string();
    let out = lab.handle(&public_udp("198.51.100.50:5060"), &answer(&fwd, 200, ""));
    let s = one_send(&out, Verdict::forward(Reason::Response));
    assert_eq!(
        (s.side, s.transport, addr(s)),
        (
            Side::Internal,
            Transport::Tcp,
            "127.0.0.1:41234".parse().unwrap()
        )
    );
}

/// Our branch binds where the response goes: the Via below ours as we
/// edited it (RFC 3581 `received`/`rport`) and its transport. The phone
/// that receives Asterisk's request sees that Via and can rewrite it; a
/// response that names another place is a stray, counted as one, and
/// nothing is sent (not to another service on loopback either).
#[test]
fn a_response_goes_only_where_its_request_came_from() {
    let lab = Lab::new("");
    let m = from_asterisk(
        "sip:1001@198.51.100.7:5062",
        "Route: <sip:127.0.0.1:5070;lr>\r\n",
        "INVITE",
    );
    let out = lab.handle(&asterisk(), &m);
    let fwd = text(one_send(&out, Verdict::forward(Reason::Outbound))).to_string();
    let ast_via =
        "Via: SIP/2.0/UDP 127.0.0.1:5080;rport=5080;branch=z9hG4bK-a1;received=127.0.0.1\r\n";
    assert!(fwd.contains(ast_via), "{fwd}");
    let ringing = answer(&fwd, 180, "");
    let phone = public_udp("198.51.100.7:5062");
    let strays = || lab.count(Reason::StrayResponse, Disposition::Dropped);
    for altered in [
        // rport, received, both gone with another sent-by port, the
        // transport, a name, IPv6.
        "Via: SIP/2.0/UDP 127.0.0.1:5080;rport=6379;branch=z9hG4bK-a1;received=127.0.0.1\r\n",
        "Via: SIP/2.0/UDP 127.0.0.1:5080;rport=5080;branch=z9hG4bK-a1;received=127.0.0.2\r\n",
        "Via: SIP/2.0/UDP 127.0.0.1:6379;branch=z9hG4bK-a1\r\n",
        "Via: SIP/2.0/TCP 127.0.0.1:5080;rport=5080;branch=z9hG4bK-a1;received=127.0.0.1\r\n",
        "Via: SIP/2.0/UDP localhost:5080;rport=5080;branch=z9hG4bK-a1\r\n",
        "Via: SIP/2.0/UDP [::1]:5080;rport=5080;branch=z9hG4bK-a1\r\n",
    ] {
        let before = strays();
        let out = lab.handle(&phone, &ringing.replace(ast_via, altered));
        dropped(&out, Reason::StrayResponse);
        assert_eq!(strays(), before + 1, "{altered}");
    }
    // The same place written another way is the same place: bound is the
    // address, not the text.
    let same = "Via: SIP/2.0/UDP 127.0.0.1:5080;rport=5080;branch=z9hG4bK-a1\r\n";
    for ok in [ringing.clone(), ringing.replace(ast_via, same)] {
        let out = lab.handle(&phone, &ok);
        let s = one_send(&out, Verdict::forward(Reason::Response));
        assert_eq!(
            (s.side, s.transport, addr(s)),
            (
                Side::Internal,
                Transport::Udp,
                "127.0.0.1:5080".parse().unwrap()
            )
        );
    }
    // Our outbound branch is answered from the public side only.
    dropped(&lab.handle(&asterisk(), &ringing), Reason::StrayResponse);

    // The other direction alike: Asterisk's answer goes to the phone's Via
    // as we wrote it, nowhere else, and never out of the internal side.
    let out = lab.handle(&phone, &invite(SECRET_URI, ""));
    let to_ast = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
    let phone_via =
        "Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-ph1;rport=5062;received=198.51.100.7\r\n";
    assert!(to_ast.contains(phone_via), "{to_ast}");
    let ok = answer(&to_ast, 200, "");
    let elsewhere = phone_via.replace("198.51.100.7", "192.0.2.99");
    dropped(
        &lab.handle(&asterisk(), &ok.replace(phone_via, &elsewhere)),
        Reason::StrayResponse,
    );
    // A phone holding the backend's answer (our inbound branch on top)
    // cannot have it relayed from the public side.
    dropped(&lab.handle(&phone, &ok), Reason::StrayResponse);
    let out = lab.handle(&asterisk(), &ok);
    let s = one_send(&out, Verdict::forward(Reason::Response));
    assert_eq!(
        (s.side, addr(s)),
        (Side::Public, "198.51.100.7:5062".parse().unwrap())
    );
}

/// Asterisk's CANCEL (and non-2xx ACK) from where its INVITE came from
/// gets the INVITE's branch (RFC 3261 16.11), though the branch binds
/// where responses go; from elsewhere it would be answered elsewhere, so
/// it is another transaction.
#[test]
fn asterisk_cancel_gets_the_invite_branch() {
    let lab = Lab::new("");
    let branch = |out: &sipwarden_core::proxy::Output| {
        let t = text(one_send(out, Verdict::forward(Reason::Outbound))).to_string();
        headers(&t, "via")[0]
            .split("branch=")
            .nth(1)
            .and_then(|b| b.split(';').next())
            .unwrap()
            .to_string()
    };
    let route = "Route: <sip:127.0.0.1:5070;lr>\r\n";
    let ruri = "sip:1001@198.51.100.7:5062";
    let inv = branch(&lab.handle(&asterisk(), &from_asterisk(ruri, route, "INVITE")));
    let cancel = branch(&lab.handle(&asterisk(), &from_asterisk(ruri, route, "CANCEL")));
    assert_eq!(cancel, inv);
    let ack = branch(&lab.handle(&asterisk(), &from_asterisk(ruri, route, "ACK")));
    assert_eq!(ack, inv);
    let mut other_port = asterisk();
    other_port.remote = "127.0.0.1:5081".parse().unwrap();
    let moved = branch(&lab.handle(&other_port, &from_asterisk(ruri, route, "CANCEL")));
    assert_ne!(moved, inv);
}
