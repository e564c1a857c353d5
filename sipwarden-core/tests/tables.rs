//! The tables that replace conntrack, driven through the core with a
//! virtual clock: trunk registrations (hours of table time in
//! milliseconds), Path flows for phones behind NAT, `nat.fix_contact`,
//! dialogs, keepalives and the state snapshot.

mod common;

use std::sync::Arc;

use common::*;
use sipwarden_core::flow::{Side, Transport};
use sipwarden_core::metrics::Metrics;
use sipwarden_core::proxy::{Core, Dest};
use sipwarden_core::settings::Settings;
use sipwarden_core::time::UnixMs;
use sipwarden_core::token::Keys;
use sipwarden_core::verdict::{Disposition, Reason, Verdict};

const TRUNK: &str = r#"
[[trunk]]
name = "provider1"
registrar = "sip.provider.example"
keepalive = "25s"
[registration]
grace = "60s"
"#;

const PROVIDER: &str = "198.51.100.10:5060";
const SCANNER: &str = "192.0.2.66:5060";

fn register(cseq: u32, expires: &str, extra: &str) -> String {
    format!(
        "REGISTER sip:sip.provider.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK-reg{cseq}\r\n\
         Route: <sip:127.0.0.1:5070;lr>\r\nFrom: <sip:acct@sip.provider.example>;tag=r1\r\nTo: <sip:acct@sip.provider.example>\r\n\
         Call-ID: reg-call-1\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:acct@127.0.0.1:5080;line=xyz>\r\nExpires: {expires}\r\n\
         {extra}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Asterisk registers through the lab's core; the provider grants
/// `granted` seconds. Returns the rewritten Contact URI.
fn trunk_registers(lab: &Lab, cseq: u32, granted: u64) -> String {
    let out = lab.handle(&asterisk(), &register(cseq, "3600", ""));
    let s = one_send(&out, Verdict::forward(Reason::Outbound));
    assert_eq!(
        s.dest,
        Dest::Name {
            host: "sip.provider.example".into(),
            port: None
        }
    );
    let fwd = text(s).to_string();
    let contact = headers(&fwd, "contact")[0].to_string();
    let uri = contact
        .split('<')
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap()
        .to_string();
    let ok = answer(
        &fwd,
        200,
        &format!("Contact: <{uri}>;expires={granted}\r\n"),
    );
    let out = lab.handle(&public_udp(PROVIDER), &ok);
    let back = one_send(&out, Verdict::forward(Reason::Response));
    assert_eq!(back.side, Side::Internal);
    uri
}

fn invite_to(ruri: &str, call: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-{call}\r\n\
         From: <sip:+15551234@198.51.100.10>;tag=p-{call}\r\nTo: <sip:+4930123@198.51.100.10>\r\nCall-ID: {call}\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn trunk_contact_is_rewritten_with_a_signed_token() {
    let lab = Lab::new(TRUNK);
    let out = lab.handle(&asterisk(), &register(1, "3600", ""));
    let fwd = text(one_send(&out, Verdict::forward(Reason::Outbound))).to_string();
    let contact = headers(&fwd, "contact")[0];
    assert!(
        contact.starts_with("Contact: <sip:acct@pbx.example.com:5060;line=xyz;sw="),
        "{contact}"
    );
    assert!(
        !fwd.contains("127.0.0.1:5080;line"),
        "Asterisk's loopback address never leaves"
    );
    // Stable per trunk and account: a re-REGISTER (new line= after an
    // Asterisk restart) keeps the token.
    let again = register(2, "3600", "").replace("line=xyz", "line=abc");
    let out = lab.handle(&asterisk(), &again);
    let tok = |c: &str| {
        c.split("sw=")
            .nth(1)
            .unwrap()
            .split('>')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        tok(headers(text(&out.transmits[0]), "contact")[0]),
        tok(contact)
    );
}

#[test]
fn a_trunk_registered_over_tcp_is_called_back_over_tcp() {
    let lab = Lab::new(TRUNK);
    let reg = register(1, "3600", "").replace(
        "REGISTER sip:sip.provider.example SIP",
        "REGISTER sip:sip.provider.example;transport=tcp SIP",
    );
    let out = lab.handle(&asterisk(), &reg);
    let s = one_send(&out, Verdict::forward(Reason::Outbound));
    assert_eq!(s.transport, Transport::Tcp);
    let contact = headers(text(s), "contact")[0].to_string();
    assert!(
        contact.starts_with("Contact: <sip:acct@pbx.example.com:5060;line=xyz;transport=tcp;sw="),
        "{contact}"
    );
}

#[test]
fn provider_invites_pass_while_the_registration_lives() {
    let mut lab = Lab::new(TRUNK);
    // A challenge first: nothing is learned from a 401.
    let out = lab.handle(&asterisk(), &register(1, "3600", ""));
    let fwd = text(&out.transmits[0]).to_string();
    let challenge = answer(
        &fwd,
        401,
        "WWW-Authenticate: Digest realm=\"p\", nonce=\"n\"\r\n",
    );
    one_send(
        &lab.handle(&public_udp(PROVIDER), &challenge),
        Verdict::forward(Reason::Response),
    );
    dropped(
        &lab.handle(
            &public_udp(PROVIDER),
            &invite_to("sip:+4930123@203.0.113.10", "c0"),
        ),
        Reason::NoDomain,
    );

    let contact = trunk_registers(&lab, 2, 600);
    assert_eq!(lab.core.tables().regs.len(), 1);

    // To the registered Contact: back to Asterisk's own Contact, with the
    // trunk named for pjsip identify_by=header.
    let out = lab.handle(&public_udp(PROVIDER), &invite_to(&contact, "c1"));
    let t = text(one_send(&out, Verdict::forward(Reason::TrunkContact))).to_string();
    assert!(
        t.starts_with("INVITE sip:acct@127.0.0.1:5080;line=xyz SIP/2.0\r\n"),
        "{t}"
    );
    assert!(t.contains("\r\nX-Sipwarden-Trunk: provider1\r\n"));
    // A DID in the Request-URI: admitted by the provider's address.
    let out = lab.handle(
        &public_udp(PROVIDER),
        &invite_to("sip:+4930123@203.0.113.10", "c2"),
    );
    let t = text(one_send(&out, Verdict::forward(Reason::Trunk))).to_string();
    assert!(t.contains("\r\nX-Sipwarden-Trunk: provider1\r\n"));
    // The very same INVITE from a scanner: nothing. A forged token: counted.
    dropped(
        &lab.handle(
            &public_udp(SCANNER),
            &invite_to("sip:+4930123@203.0.113.10", "c3"),
        ),
        Reason::NoDomain,
    );
    let forged = contact.replace("sw=", "sw=0");
    dropped(
        &lab.handle(&public_udp(SCANNER), &invite_to(&forged, "c4")),
        Reason::ForgedToken,
    );
    // Asterisk's line= alone admits nothing.
    dropped(
        &lab.handle(
            &public_udp(SCANNER),
            &invite_to("sip:acct@203.0.113.10;line=xyz", "c5"),
        ),
        Reason::NoDomain,
    );
    // The registration outlives any conntrack timeout: 9 minutes later...
    lab.now += 540_000;
    lab.core.tick(lab.now);
    one_send(
        &lab.handle(&public_udp(PROVIDER), &invite_to("sip:+1@x", "c6")),
        Verdict::forward(Reason::Trunk),
    );
    // ...and ends with its expiry plus grace.
    lab.now += 60_000 + 60_000;
    lab.core.tick(lab.now);
    assert_eq!(lab.core.tables().regs.len(), 0);
    dropped(
        &lab.handle(&public_udp(PROVIDER), &invite_to("sip:+1@x", "c7")),
        Reason::NoDomain,
    );
    dropped(
        &lab.handle(&public_udp(PROVIDER), &invite_to(&contact, "c8")),
        Reason::ForgedToken,
    );
}

#[test]
fn hours_of_refreshes_then_silence() {
    let mut lab = Lab::new(TRUNK);
    trunk_registers(&lab, 1, 3600);
    // Asterisk refreshes every 3000 s for ten hours.
    for i in 0..12 {
        lab.now += 3_000_000;
        lab.core.tick(lab.now);
        let out = lab.handle(
            &public_udp(PROVIDER),
            &invite_to("sip:+1@x", &format!("h{i}")),
        );
        one_send(&out, Verdict::forward(Reason::Trunk));
        trunk_registers(&lab, 2 + i, 3600);
    }
    // Then it stops: admitted until 3600 s + 60 s grace, not after.
    lab.now += 3_659_000;
    lab.core.tick(lab.now);
    one_send(
        &lab.handle(&public_udp(PROVIDER), &invite_to("sip:+1@x", "late")),
        Verdict::forward(Reason::Trunk),
    );
    lab.now += 2_000;
    lab.core.tick(lab.now);
    dropped(
        &lab.handle(&public_udp(PROVIDER), &invite_to("sip:+1@x", "gone")),
        Reason::NoDomain,
    );
}

#[test]
fn unregister_ends_admission_at_once() {
    let lab = Lab::new(TRUNK);
    trunk_registers(&lab, 1, 3600);
    let out = lab.handle(&asterisk(), &register(2, "0", ""));
    let fwd = text(&out.transmits[0]).to_string();
    let ok = answer(&fwd, 200, "");
    one_send(
        &lab.handle(&public_udp(PROVIDER), &ok),
        Verdict::forward(Reason::Response),
    );
    assert_eq!(lab.core.tables().regs.len(), 0);
    dropped(
        &lab.handle(&public_udp(PROVIDER), &invite_to("sip:+1@x", "u1")),
        Reason::NoDomain,
    );
    // A 200 that answers no pending REGISTER changes nothing.
    let stray_ok = ok.replace("reg-call-1", "other-call");
    dropped(
        &lab.handle(&public_udp(PROVIDER), &stray_ok),
        Reason::StrayResponse,
    );
    assert_eq!(lab.core.tables().regs.len(), 0);
}

#[test]
fn dns_addresses_of_the_registrar_are_admitted_too() {
    let lab = Lab::new(TRUNK);
    let other = "198.51.100.77:5060";
    lab.core.learn_trunk_addresses(
        "provider1",
        &["198.51.100.77".parse().unwrap()],
        lab.now + 300_000,
    );
    dropped(
        &lab.handle(&public_udp(other), &invite_to("sip:+1@x", "d0")),
        Reason::NoDomain,
    );
    trunk_registers(&lab, 1, 3600);
    one_send(
        &lab.handle(&public_udp(other), &invite_to("sip:+1@x", "d1")),
        Verdict::forward(Reason::Trunk),
    );
    assert!(lab
        .core
        .registrars()
        .contains(&("provider1".into(), "sip.provider.example".into())));
}

#[test]
fn keepalives_go_to_registered_trunks() {
    let mut lab = Lab::new(TRUNK);
    assert!(lab.core.tick(lab.now).is_empty());
    trunk_registers(&lab, 1, 3600);
    assert!(
        lab.core.tick(lab.now).is_empty(),
        "the REGISTER itself opened the path"
    );
    lab.now += 24_000;
    assert!(lab.core.tick(lab.now).is_empty());
    lab.now += 1_000;
    let sends = lab.core.tick(lab.now);
    assert_eq!(sends.len(), 1);
    assert_eq!(&sends[0].data[..], b"\r\n\r\n");
    assert_eq!(
        (sends[0].side, addr(&sends[0])),
        (Side::Public, PROVIDER.parse().unwrap())
    );
    lab.now += 25_000;
    assert_eq!(lab.core.tick(lab.now).len(), 1);
}

fn phone_register(via_transport: &str) -> String {
    format!(
        "REGISTER sip:sip-7f3k.example.com SIP/2.0\r\nVia: SIP/2.0/{via_transport} 10.0.0.99:5062;branch=z9hG4bK-pr1;rport\r\n\
         From: <sip:1001@sip-7f3k.example.com>;tag=pt\r\nTo: <sip:1001@sip-7f3k.example.com>\r\nCall-ID: phone-reg-1\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:1001@10.0.0.99:5062>\r\nSupported: replaces\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Asterisk's INVITE to a phone registered with a Path: outbound proxy
/// Route first, other headers, then the stored Path as a second Route.
fn asterisk_invite_via_path(path: &str, contact: &str) -> String {
    format!(
        "INVITE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK-ai1\r\nRoute: <sip:127.0.0.1:5070;lr>\r\n\
         From: <sip:1002@pbx.example.com>;tag=ast1\r\nTo: <sip:1001@pbx.example.com>\r\nContact: <sip:asterisk@127.0.0.1:5080>\r\n\
         Call-ID: to-phone-1\r\nCSeq: 10 INVITE\r\nMax-Forwards: 70\r\nRoute: {path}\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn phones_behind_nat_are_reached_on_their_flow_via_path() {
    let lab = Lab::new("");
    for (flow, via_t) in [
        (public_udp("198.51.100.20:40000"), "UDP"),
        (public_tcp("198.51.100.20:40001"), "TCP"),
    ] {
        let out = lab.handle(&flow, &phone_register(via_t));
        let fwd = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
        let path = headers(&fwd, "path");
        assert_eq!(path.len(), 1);
        assert!(
            path[0].starts_with("Path: <sip:f") && path[0].ends_with("@127.0.0.1:5070;lr>"),
            "{}",
            path[0]
        );
        assert!(
            fwd.contains("\r\nSupported: path\r\n"),
            "Asterisk answers 420 without it"
        );
        assert!(
            fwd.contains("Contact: <sip:1001@10.0.0.99:5062>"),
            "Contact untouched with Path"
        );
        // Asterisk later calls the phone's (unreachable) Contact via Path.
        let path_uri = path[0].trim_start_matches("Path: ");
        let inv = asterisk_invite_via_path(path_uri, "sip:1001@10.0.0.99:5062");
        let out = lab.handle(&asterisk(), &inv);
        let s = one_send(&out, Verdict::forward(Reason::Outbound));
        assert_eq!(
            (s.side, s.transport, addr(s)),
            (Side::Public, flow.transport, flow.remote)
        );
        let t = text(s);
        assert!(
            headers(t, "route").is_empty(),
            "both our Routes popped: {t}"
        );
        // The Record-Route facing Asterisk names the flow, so the BYE
        // finds the phone too.
        let rr = record_routes(t);
        assert!(rr[1].starts_with("<sip:f"), "{rr:?}");
    }
    // A Path that already says `Supported: path` is not doubled.
    let out = lab.handle(
        &public_udp("198.51.100.20:40000"),
        &phone_register("UDP").replace("Supported: replaces", "Supported: replaces, path"),
    );
    assert_eq!(headers(text(&out.transmits[0]), "supported").len(), 1);
}

#[test]
fn fix_contact_rewrites_contacts_to_the_observed_address() {
    let lab = Lab::new("[nat]\nfix_contact = true\n");
    let out = lab.handle(&public_udp("198.51.100.20:40000"), &phone_register("UDP"));
    let fwd = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
    assert!(headers(&fwd, "path").is_empty());
    assert_eq!(
        headers(&fwd, "contact"),
        vec!["Contact: <sip:1001@198.51.100.20:40000>"]
    );
    let out = lab.handle(&public_tcp("198.51.100.20:40001"), &phone_register("TCP"));
    assert_eq!(
        headers(text(&out.transmits[0]), "contact"),
        vec!["Contact: <sip:1001@198.51.100.20:40001;transport=tcp>"]
    );
    // The phone answers a call from Asterisk: its 200's Contact too.
    let inv = asterisk_invite_via_path("<sip:127.0.0.1:5070;lr>", "sip:1001@198.51.100.20:40000");
    let out = lab.handle(&asterisk(), &inv);
    let to_phone = text(&out.transmits[0]).to_string();
    let ok = answer(&to_phone, 200, "Contact: sip:1001@10.0.0.99:5062;ob\r\n");
    let out = lab.handle(&public_udp("198.51.100.20:40000"), &ok);
    let t = text(one_send(&out, Verdict::forward(Reason::Response))).to_string();
    // In addr-spec form `;ob` was a header parameter, and stays one.
    assert_eq!(
        headers(&t, "contact"),
        vec!["Contact: <sip:1001@198.51.100.20:40000>;ob"]
    );
}

fn call_in(lab: &Lab, call: &str) -> String {
    let inv = format!(
        "INVITE sip:1002@sip-7f3k.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.30:5062;branch=z9hG4bK-{call}\r\n\
         From: <sip:1001@198.51.100.30>;tag=ft-{call}\r\nTo: <sip:1002@198.51.100.30>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let out = lab.handle(&public_udp("198.51.100.30:5062"), &inv);
    text(one_send(&out, Verdict::forward(Reason::Domain))).to_string()
}

fn in_dialog(method: &str, call: &str, to_tag: &str, cseq: u32) -> String {
    // A UA that ignores Record-Route: straight to Asterisk's Contact,
    // nothing that names the secret domain.
    format!(
        "{method} sip:asterisk@203.0.113.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.30:5062;branch=z9hG4bK-{method}{cseq}\r\n\
         From: <sip:1001@198.51.100.30>;tag=ft-{call}\r\nTo: <sip:1002@198.51.100.30>{to_tag}\r\nCall-ID: {call}\r\nCSeq: {cseq} {method}\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn dialogs_admit_their_requests_until_they_end() {
    let mut lab = Lab::new("");
    let fwd = call_in(&lab, "d-1");
    assert_eq!(lab.core.tables().dialogs.len(), 1);
    // CANCEL of the pending INVITE (no domain, no Route).
    let cancel = in_dialog("CANCEL", "d-1", "", 1);
    one_send(
        &lab.handle(&public_udp("198.51.100.30:5062"), &cancel),
        Verdict::forward(Reason::Dialog),
    );
    // Asterisk answers 200: the dialog is confirmed.
    let ok = answer(&fwd, 200, "");
    one_send(
        &lab.handle(&asterisk(), &ok),
        Verdict::forward(Reason::Response),
    );
    let ack = in_dialog("ACK", "d-1", ";tag=uas-tag", 1);
    one_send(
        &lab.handle(&public_udp("198.51.100.30:5062"), &ack),
        Verdict::forward(Reason::Dialog),
    );
    // A wrong To tag is no part of it.
    dropped(
        &lab.handle(
            &public_udp("198.51.100.30:5062"),
            &in_dialog("BYE", "d-1", ";tag=other", 2),
        ),
        Reason::NoDomain,
    );
    // An hour later a re-INVITE and the BYE still pass.
    lab.now += 3_600_000;
    one_send(
        &lab.handle(
            &public_udp("198.51.100.30:5062"),
            &in_dialog("INVITE", "d-1", ";tag=uas-tag", 2),
        ),
        Verdict::forward(Reason::Dialog),
    );
    let bye = in_dialog("BYE", "d-1", ";tag=uas-tag", 3);
    one_send(
        &lab.handle(&public_udp("198.51.100.30:5062"), &bye),
        Verdict::forward(Reason::Dialog),
    );
    // BYE retransmissions during the linger pass; after it, nothing.
    lab.now += 31_000;
    one_send(
        &lab.handle(&public_udp("198.51.100.30:5062"), &bye),
        Verdict::forward(Reason::Dialog),
    );
    lab.now += 2_000;
    lab.core.tick(lab.now);
    dropped(
        &lab.handle(&public_udp("198.51.100.30:5062"), &bye),
        Reason::NoDomain,
    );
    assert_eq!(lab.core.tables().dialogs.len(), 0);
    // A scanner's BYE with an unknown Call-ID: nothing.
    dropped(
        &lab.handle(
            &public_udp(SCANNER),
            &in_dialog("BYE", "unknown", ";tag=x", 2),
        ),
        Reason::NoDomain,
    );
}

#[test]
fn the_callee_side_of_an_outbound_call_is_matched_too() {
    let lab = Lab::new("");
    // Asterisk calls out; the far end's BYE (From = callee) comes without
    // Route and without the domain.
    let inv = "INVITE sip:+15551234@198.51.100.50 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-o1\r\n\
               From: <sip:1002@pbx.example.com>;tag=ast-o\r\nTo: <sip:+15551234@198.51.100.50>\r\nCall-ID: out-1\r\nCSeq: 7 INVITE\r\n\
               Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let out = lab.handle(&asterisk(), inv);
    let fwd = text(&out.transmits[0]).to_string();
    let ok = answer(&fwd, 200, "").replace("tag=uas-tag", "tag=far-end");
    one_send(
        &lab.handle(&public_udp("198.51.100.50:5060"), &ok),
        Verdict::forward(Reason::Response),
    );
    let bye = "BYE sip:asterisk@203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.50;branch=z9hG4bK-fb\r\n\
               From: <sip:+15551234@198.51.100.50>;tag=far-end\r\nTo: <sip:1002@pbx.example.com>;tag=ast-o\r\nCall-ID: out-1\r\n\
               CSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    one_send(
        &lab.handle(&public_udp("198.51.100.50:5060"), bye),
        Verdict::forward(Reason::Dialog),
    );
    // A guessed far-end tag does not work.
    let guess = bye.replace("tag=far-end", "tag=guess");
    dropped(&lab.handle(&public_udp(SCANNER), &guess), Reason::NoDomain);
}

#[test]
fn a_call_id_flood_stays_within_the_cap() {
    let lab = Lab::new("[dialog]\nmax_entries = 100\n[limits]\nrate = 100000\nburst = 100000\n");
    for i in 0..2000 {
        call_in(&lab, &format!("flood-{i}"));
    }
    assert!(lab.core.tables().dialogs.len() <= 100);
    assert!(
        lab.core
            .metrics()
            .events(sipwarden_core::metrics::Event::DialogsRefused)
            >= 1900
    );
}

#[test]
fn registrations_and_dialogs_survive_a_restart() {
    let lab = Lab::new(TRUNK);
    let contact = trunk_registers(&lab, 1, 3600);
    let fwd = call_in(&lab, "keep-1");
    one_send(
        &lab.handle(&asterisk(), &answer(&fwd, 200, "")),
        Verdict::forward(Reason::Response),
    );
    let snap = lab.core.snapshot(lab.now);
    assert_eq!(snap.registrations.len(), 1);
    assert_eq!(snap.dialogs.len(), 1);
    let json = serde_json::to_string(&snap).unwrap();

    // A new process, same key file, ten minutes later.
    let cfg = sipwarden_core::config::parse(&format!("{BASE_CFG}{TRUNK}"), "t").unwrap();
    let core = Core::new(
        Settings::new(cfg),
        Keys::new([42; 32]),
        Arc::new(Metrics::default()),
    );
    let later = lab.now + 600_000;
    let r = core.restore(serde_json::from_str(&json).unwrap(), later);
    assert_eq!((r.registrations, r.dialogs), (1, 1));
    let out = core.handle(
        later,
        &public_udp(PROVIDER),
        bytes::Bytes::from(invite_to(&contact, "after")),
    );
    assert_eq!(out.verdict, Verdict::forward(Reason::TrunkContact));
    let out = core.handle(
        later,
        &public_udp(PROVIDER),
        bytes::Bytes::from(invite_to("sip:+1@x", "after2")),
    );
    assert_eq!(out.verdict, Verdict::forward(Reason::Trunk));
    let ack = in_dialog("BYE", "keep-1", ";tag=uas-tag", 2);
    let out = core.handle(
        later,
        &public_udp("198.51.100.30:5062"),
        bytes::Bytes::from(ack),
    );
    assert_eq!(out.verdict, Verdict::forward(Reason::Dialog));
    // What expired while it was down is not restored.
    let core2 = Core::new(
        Settings::new(sipwarden_core::config::parse(&format!("{BASE_CFG}{TRUNK}"), "t").unwrap()),
        Keys::new([42; 32]),
        Arc::new(Metrics::default()),
    );
    let r = core2.restore(serde_json::from_str(&json).unwrap(), lab.now + 3_700_000);
    assert_eq!(r.registrations, 0);
    assert!(r.expired >= 1);
    assert_eq!(Disposition::Forwarded.as_str(), "forwarded");
    let _ = Transport::Udp;
}

/// A registration or dialog the table has no room for is counted as
/// such, not as expired: the operator must learn that the cap, not time,
/// left it out.
#[test]
fn restored_entries_beyond_the_caps_are_counted_as_over_cap() {
    let lab = Lab::new(TRUNK);
    trunk_registers(&lab, 1, 3600);
    let fwd = call_in(&lab, "cap-1");
    one_send(
        &lab.handle(&asterisk(), &answer(&fwd, 200, "")),
        Verdict::forward(Reason::Response),
    );
    let mut snap = lab.core.snapshot(lab.now);
    let mut reg = snap.registrations[0].clone();
    reg.token = "another-token".into();
    snap.registrations.push(reg);
    let mut dialog = snap.dialogs[0].clone();
    dialog.key = "0123456789abcdef0123456789abcdef".into();
    snap.dialogs.push(dialog);

    let core = restarted(&format!(
        "{TRUNK}max_entries = 1\n[dialog]\nmax_entries = 1\n"
    ));
    let r = core.restore(snap, lab.now);
    assert_eq!((r.registrations, r.dialogs, r.expired), (1, 1, 0), "{r:?}");
    assert_eq!(
        (r.registrations_over_cap, r.dialogs_over_cap),
        (1, 1),
        "{r:?}"
    );
}

const BANS: &str = "[ban]\nafter_rejects = 3\nafter_auth_failures = 2\nduration = \"15m\"\n";
const GUESSER: &str = "192.0.2.77:5060";

fn by_ip(n: u32) -> String {
    format!(
        "OPTIONS sip:{n}@203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-s{n}\r\n\
         From: <sip:{n}@203.0.113.10>;tag=s{n}\r\nTo: <sip:{n}@203.0.113.10>\r\nCall-ID: scan-{n}\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn with_domain(n: u32) -> String {
    format!(
        "OPTIONS sip:1001@sip-7f3k.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK-d{n}\r\n\
         From: <sip:1001@sip-7f3k.example.com>;tag=d{n}\r\nTo: <sip:1001@sip-7f3k.example.com>\r\nCall-ID: dom-{n}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A new process with the lab's key and `extra` config.
fn restarted(extra: &str) -> Core {
    Core::new(
        Settings::new(sipwarden_core::config::parse(&format!("{BASE_CFG}{extra}"), "t").unwrap()),
        Keys::new([42; 32]),
        Arc::new(Metrics::default()),
    )
}

fn verdict_of(core: &Core, now: UnixMs, from: &str, n: u32) -> Verdict {
    core.handle(now, &public_udp(from), bytes::Bytes::from(with_domain(n)))
        .verdict
}

/// A ban outlives a restart for its remaining time, with its trigger; one
/// that expired while the process was down is gone.
#[test]
fn bans_survive_a_restart() {
    let mut lab = Lab::new(BANS);
    let _ = lab.core.tables().take_dirty();
    for n in 0..3 {
        dropped(
            &lab.handle(&public_udp(SCANNER), &by_ip(n)),
            Reason::NoDomain,
        );
    }
    assert!(
        lab.core.tables().take_dirty(),
        "a ban marks the state for the writer"
    );
    dropped(
        &lab.handle(&public_udp(SCANNER), &with_domain(1)),
        Reason::Banned,
    );
    // A second source, banned ten minutes later.
    lab.now += 600_000;
    for n in 10..13 {
        dropped(
            &lab.handle(&public_udp(GUESSER), &by_ip(n)),
            Reason::NoDomain,
        );
    }
    let json = serde_json::to_string(&lab.core.snapshot(lab.now)).unwrap();

    // Back up a minute later: both still banned.
    let core = restarted(BANS);
    core.restore(serde_json::from_str(&json).unwrap(), lab.now + 60_000);
    for (src, n) in [(SCANNER, 2), (GUESSER, 3)] {
        assert_eq!(
            verdict_of(&core, lab.now + 60_000, src, n),
            Verdict::drop(Reason::Banned),
            "{src} is still banned after the restart"
        );
    }
    assert_eq!(core.gauges(lab.now + 60_000)[0].value, 2);

    // Back up six minutes later: the first ban (15 min from 16 min ago)
    // ended, the second has four minutes left.
    let later = lab.now + 6 * 60_000;
    let core = restarted(BANS);
    core.restore(serde_json::from_str(&json).unwrap(), later);
    assert_eq!(
        verdict_of(&core, later, SCANNER, 4),
        Verdict::forward(Reason::Domain),
        "an expired ban is not restored"
    );
    assert_eq!(
        verdict_of(&core, later, GUESSER, 5),
        Verdict::drop(Reason::Banned)
    );
    assert_eq!(
        verdict_of(&core, lab.now + 15 * 60_000, GUESSER, 6),
        Verdict::forward(Reason::Domain),
        "the restored ban ends when it would have"
    );
}

/// At most `ban.max_entries` bans come back, those ending last; an entry
/// that cannot be read is counted, not silently skipped.
#[test]
fn restored_bans_are_bounded_and_bad_entries_counted() {
    use sipwarden_core::state::persist::SavedBan;
    let lab = Lab::new(BANS);
    let mut snap = lab.core.snapshot(lab.now);
    assert!(snap.bans.is_empty());
    let ban = |ip: &str, trigger: &str, until: UnixMs| SavedBan {
        ip: ip.into(),
        trigger: trigger.into(),
        until,
        since: UnixMs::ZERO,
    };
    snap.bans = (0..5u64)
        .map(|i| {
            ban(
                &format!("192.0.2.{i}"),
                "rejects",
                lab.now + 60_000 * (i + 1),
            )
        })
        .collect();
    snap.bans
        .push(ban("not-an-ip", "rejects", lab.now + 60_000));
    snap.bans
        .push(ban("192.0.2.50", "sorcery", lab.now + 60_000));
    snap.bans
        .push(ban("2001:db8::9", "auth-failures", lab.now - 1));
    let core = restarted("[ban]\nmax_entries = 3\n");
    let r = core.restore(snap, lab.now);
    assert_eq!(
        (r.bans, r.bans_over_cap, r.bad, r.expired),
        (3, 2, 2, 1),
        "{r:?}"
    );
    assert_eq!(core.tables().bans.len(), 3);
    for (i, banned) in [(0, false), (1, false), (2, true), (3, true), (4, true)] {
        let from = format!("192.0.2.{i}:5060");
        let want = match banned {
            true => Verdict::drop(Reason::Banned),
            false => Verdict::forward(Reason::Domain),
        };
        assert_eq!(verdict_of(&core, lab.now, &from, 20 + i), want, "{from}");
    }
    // What comes back is saved again, with its trigger.
    let again = core.snapshot(lab.now);
    assert_eq!(again.bans.len(), 3);
    assert!(again.bans.iter().all(|b| b.trigger == "rejects"));
}

/// A state file written before bans were kept (no `bans` key) loads.
#[test]
fn a_state_file_without_bans_still_loads() {
    let lab = Lab::new(TRUNK);
    trunk_registers(&lab, 1, 3600);
    let mut v = serde_json::to_value(lab.core.snapshot(lab.now)).unwrap();
    assert!(v.as_object_mut().unwrap().remove("bans").is_some());
    let core = restarted(TRUNK);
    let r = core.restore(serde_json::from_value(v).unwrap(), lab.now + 1000);
    assert_eq!((r.registrations, r.bans, r.bad), (1, 0, 0));
}

/// The lab with a third public socket, `tls:203.0.113.10:5061` (listener
/// 2), and `extra` appended. The core reads no certificate: the paths
/// only satisfy the config's rule.
fn tls_lab(extra: &str) -> Lab {
    let lab = Lab::new("");
    lab.reload_with(&format!(
        "{}{extra}[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
        BASE_CFG.replace(
            "\"tcp:203.0.113.10:5060\"]",
            "\"tcp:203.0.113.10:5060\", \"tls:203.0.113.10:5061\"]"
        )
    ));
    lab
}

/// A provider reached over TLS: Asterisk registers with
/// `;transport=tls`, the REGISTER leaves over TLS with our TLS address in
/// Via and Contact (not 5060, where no TLS listens), and the provider's
/// INVITE over the connection sipwarden opened (listener `OPENED_TLS`) is
/// admitted as `trunk`; Asterisk's BYE goes back down that connection.
#[test]
fn a_provider_reached_over_tls_calls_back_over_its_connection() {
    let lab = tls_lab(TRUNK);
    let reg = register(1, "3600", "").replace(
        "REGISTER sip:sip.provider.example SIP",
        "REGISTER sip:sip.provider.example;transport=tls SIP",
    );
    let out = lab.handle(&asterisk(), &reg);
    let s = one_send(&out, Verdict::forward(Reason::Outbound));
    assert_eq!((s.side, s.transport), (Side::Public, Transport::Tls));
    let fwd = text(s).to_string();
    assert!(
        headers(&fwd, "via")[0].starts_with("Via: SIP/2.0/TLS pbx.example.com:5061;"),
        "{fwd}"
    );
    let contact = headers(&fwd, "contact")[0].to_string();
    assert!(
        contact.starts_with("Contact: <sip:acct@pbx.example.com:5061;line=xyz;transport=tls;sw="),
        "{contact}"
    );
    // The registrar answers over the connection sipwarden opened.
    let provider = sipwarden_core::flow::Flow {
        side: Side::Public,
        transport: Transport::Tls,
        listener: sipwarden_core::flow::OPENED_TLS,
        local: "203.0.113.10:40000".parse().unwrap(),
        remote: "198.51.100.10:5061".parse().unwrap(),
    };
    let uri = contact
        .split('<')
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    let ok = answer(&fwd, 200, &format!("Contact: <{uri}>;expires=600\r\n"));
    let out = lab.handle(&provider, &ok);
    let back = one_send(&out, Verdict::forward(Reason::Response));
    assert_eq!(back.side, Side::Internal);
    // Its INVITE to a DID over that connection: a trunk's.
    let inv = invite_to("sip:+4930123@203.0.113.10", "tls1").replace(
        "SIP/2.0/UDP 198.51.100.10:5060",
        "SIP/2.0/TLS 198.51.100.10:5061",
    );
    let out = lab.handle(&provider, &inv);
    let fwd = text(one_send(&out, Verdict::forward(Reason::Trunk))).to_string();
    let rr = record_routes(&fwd);
    assert!(
        rr[1].contains("@pbx.example.com:5061;transport=tls;lr;"),
        "the provider's in-dialog requests reach the TLS listener: {rr:?}"
    );
    // Asterisk's BYE, routed by the Record-Route facing it, goes back over
    // TLS to the provider's connection: never in clear, never to 5060.
    let ok = answer(&fwd, 200, "Contact: <sip:asterisk@127.0.0.1:5080>\r\n");
    lab.handle(&asterisk(), &ok);
    let bye = format!(
        "BYE sip:+15551234@198.51.100.10:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK-bye1\r\n\
         Route: {}, {}\r\nFrom: <sip:+4930123@198.51.100.10>;tag=uas-tag\r\nTo: <sip:+15551234@198.51.100.10>;tag=p-tls1\r\n\
         Call-ID: tls1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        rr[0], rr[1]
    );
    let out = lab.handle(&asterisk(), &bye);
    let s = one_send(&out, Verdict::forward(Reason::Outbound));
    assert_eq!(
        (s.side, s.transport, addr(s)),
        (Side::Public, Transport::Tls, provider.remote)
    );
    assert!(
        !s.reuse_only,
        "a provider's listening port: its connection is opened again if gone"
    );
}

/// A phone over TLS is reached only over the connection it opened: a
/// phone's port behind NAT cannot be connected to, so Asterisk's INVITE
/// down its Path flow and the answers to its requests are never sent
/// over a connection sipwarden would open.
#[test]
fn a_tls_phone_is_reached_only_over_its_own_connection() {
    let lab = tls_lab("");
    let phone = sipwarden_core::flow::Flow {
        side: Side::Public,
        transport: Transport::Tls,
        listener: 2,
        local: "203.0.113.10:5061".parse().unwrap(),
        remote: "198.51.100.20:40002".parse().unwrap(),
    };
    let out = lab.handle(&phone, &phone_register("TLS"));
    let fwd = text(one_send(&out, Verdict::forward(Reason::Domain))).to_string();
    let path = headers(&fwd, "path")[0]
        .trim_start_matches("Path: ")
        .to_string();
    let reply = answer(&fwd, 200, "");
    let out = lab.handle(&asterisk(), &reply);
    let back = one_send(&out, Verdict::forward(Reason::Response));
    assert_eq!((back.transport, addr(back)), (Transport::Tls, phone.remote));
    assert!(
        back.reuse_only,
        "an answer goes back on its connection only"
    );
    let inv = asterisk_invite_via_path(&path, "sip:1001@10.0.0.99:5062");
    let out = lab.handle(&asterisk(), &inv);
    let s = one_send(&out, Verdict::forward(Reason::Outbound));
    assert_eq!((s.transport, addr(s)), (Transport::Tls, phone.remote));
    assert!(s.reuse_only, "never a new TLS connection to a phone");
    let rr = record_routes(text(s));
    assert!(
        rr[0].contains("@pbx.example.com:5061;transport=tls;lr;"),
        "the phone's BYE goes to the TLS listener: {rr:?}"
    );
    // Unreachable: Asterisk hears 430 at once.
    assert!(s
        .on_fail
        .as_ref()
        .is_some_and(|f| text(f).starts_with("SIP/2.0 430 ")));
}
