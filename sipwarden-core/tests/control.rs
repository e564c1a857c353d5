//! The control protocol's answers, from a core that saw literal SIP on a
//! virtual clock: status, bans, manual bans of addresses and networks
//! (v4 and v6) and their expiry, unban, persistence across a restart,
//! trunks with their timestamps, the heaviest sources, and the trunk
//! gauges.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::Value;
use sipwarden_core::control::{self, answer, Context, ErrorCode, Request, Response};
use sipwarden_core::metrics::Metrics;
use sipwarden_core::proxy::Core;
use sipwarden_core::settings::Settings;
use sipwarden_core::token::Keys;
use sipwarden_core::verdict::{Disposition, Reason, Verdict};

const TRUNK: &str = r#"
[[trunk]]
name = "provider1"
registrar = "sip.provider.example"
[[trunk]]
name = "idle"
registrar = "sip.idle.example"
[ban]
after_rejects = 3
duration = "15m"
[allow]
cidrs = ["10.9.0.0/16"]
"#;

const PROVIDER: &str = "198.51.100.10:5060";

fn ctx(lab: &Lab) -> Context {
    Context {
        version: "0.1.0".into(),
        started: lab.now - 60_000,
        sockets: vec![("public".into(), "udp:203.0.113.10:5060".into())],
        tcp_connections: 2,
        reload: None,
        cluster: None,
    }
}

fn ask(lab: &Lab, req: Request) -> Response {
    answer(&lab.core, &ctx(lab), lab.now, &req)
}

fn ok(lab: &Lab, req: Request) -> Value {
    let r = ask(lab, req.clone());
    assert!(r.ok, "{req:?}: {:?}", r.error);
    r.result.expect("a result")
}

fn err(lab: &Lab, req: Request) -> ErrorCode {
    let r = ask(lab, req.clone());
    assert!(!r.ok, "{req:?} answered {:?}", r.result);
    r.error.expect("an error").code
}

fn ban(target: &str, d: Option<&str>) -> Request {
    Request::Ban {
        target: target.into(),
        duration: d.map(String::from),
    }
}

fn unban(target: &str) -> Request {
    Request::Unban {
        target: target.into(),
    }
}

fn options_from_domain(n: u32) -> String {
    format!(
        "OPTIONS sip:1001@sip-7f3k.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK-d{n}\r\n\
         From: <sip:1001@sip-7f3k.example.com>;tag=d{n}\r\nTo: <sip:1001@sip-7f3k.example.com>\r\nCall-ID: dom-{n}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn scan(n: u32) -> String {
    format!(
        "OPTIONS sip:{n}@203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-s{n}\r\n\
         From: <sip:{n}@203.0.113.10>;tag=s{n}\r\nTo: <sip:{n}@203.0.113.10>\r\nCall-ID: scan-{n}\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn verdict(lab: &Lab, from: &str, n: u32) -> Verdict {
    lab.handle(&public_udp(from), &options_from_domain(n))
        .verdict
}

const BANNED: Verdict = Verdict {
    reason: Reason::Banned,
    disposition: Disposition::Dropped,
};

fn targets(v: &Value) -> Vec<String> {
    v["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["target"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_manual_ban_drops_the_next_message_and_an_unban_admits_it() {
    let mut lab = Lab::new(TRUNK);
    let src = "192.0.2.50:5060";
    assert_eq!(verdict(&lab, src, 1).disposition, Disposition::Forwarded);
    let r = ok(&lab, ban("192.0.2.50", Some("2h")));
    assert_eq!(r["ban"]["trigger"], "manual");
    assert_eq!(r["ban"]["left_s"], 7200);
    assert!(r.get("exempt").is_none(), "{r}");
    assert_eq!(verdict(&lab, src, 2), BANNED);
    let bans = ok(&lab, Request::Bans);
    assert_eq!(targets(&bans), vec!["192.0.2.50"]);
    assert_eq!(bans["bans"][0]["until_ms"], lab.now.0 + 7_200_000);
    // The default duration is ban.duration.
    ok(&lab, ban("192.0.2.51", None));
    let bans = ok(&lab, Request::Bans);
    assert_eq!(bans["bans"][1]["left_s"], 900, "{bans}");
    // Unban: admitted again; a second unban has nothing to do.
    let r = ok(&lab, unban("192.0.2.50"));
    assert_eq!(r["addresses"], serde_json::json!(["192.0.2.50"]));
    assert_eq!(verdict(&lab, src, 3).disposition, Disposition::Forwarded);
    assert_eq!(err(&lab, unban("192.0.2.50")), ErrorCode::NotBanned);
    // Counted by request and result.
    let m = lab.core.metrics();
    assert_eq!(m.control_requests("ban", true), 2);
    assert_eq!(m.control_requests("unban", true), 1);
    assert_eq!(m.control_requests("unban", false), 1);
    // A ban ends by itself, swept by the tick.
    lab.now += 900_000;
    lab.core.tick(lab.now);
    assert!(targets(&ok(&lab, Request::Bans)).is_empty());
    // The state file is to be written after each change.
    assert!(lab.core.tables().take_dirty());
}

#[test]
fn network_bans_v4_and_v6_and_unban_inside_them() {
    let mut lab = Lab::new(TRUNK);
    ok(&lab, ban("198.18.0.0/16", Some("1h")));
    ok(&lab, ban("2001:db8:1::/48", Some("30m")));
    // Host bits are cleared; an IPv4-mapped address is IPv4.
    ok(&lab, ban("203.0.113.77/24", Some("10m")));
    assert_eq!(verdict(&lab, "198.18.3.4:5060", 1), BANNED);
    assert_eq!(verdict(&lab, "[2001:db8:1::9]:5060", 2), BANNED);
    assert_eq!(verdict(&lab, "[::ffff:203.0.113.9]:5060", 3), BANNED);
    assert_eq!(
        verdict(&lab, "[2001:db8:2::9]:5060", 4).disposition,
        Disposition::Forwarded
    );
    assert_eq!(
        targets(&ok(&lab, Request::Bans)),
        vec!["198.18.0.0/16", "2001:db8:1::/48", "203.0.113.0/24"]
    );
    // An address banned by itself inside a banned network: unbanning the
    // address says the network still holds it; unbanning the network
    // lifts both.
    ok(&lab, ban("198.18.9.9", Some("5m")));
    let r = ok(&lab, unban("198.18.9.9"));
    assert_eq!(r["still_banned_by"], serde_json::json!(["198.18.0.0/16"]));
    assert_eq!(err(&lab, unban("198.18.3.4")), ErrorCode::NotBanned);
    ok(&lab, ban("198.18.9.9", Some("5m")));
    let r = ok(&lab, unban("198.18.0.0/16"));
    assert_eq!(r["network"], true);
    assert_eq!(r["addresses"], serde_json::json!(["198.18.9.9"]));
    assert_eq!(
        verdict(&lab, "198.18.3.4:5060", 5).disposition,
        Disposition::Forwarded
    );
    // An automatic ban is lifted by unban too.
    for n in 0..3 {
        lab.handle(&public_udp("192.0.2.66:5060"), &scan(n));
    }
    let bans = ok(&lab, Request::Bans);
    let auto = bans["bans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["target"] == "192.0.2.66")
        .unwrap()
        .clone();
    assert_eq!(auto["trigger"], "rejects");
    ok(&lab, unban("192.0.2.66"));
    // Network bans expire on their own.
    lab.now += 600_000;
    lab.core.tick(lab.now);
    assert_eq!(
        verdict(&lab, "[::ffff:203.0.113.9]:5060", 6).disposition,
        Disposition::Forwarded
    );
    assert_eq!(
        targets(&ok(&lab, Request::Bans)),
        vec!["198.18.0.0/16", "2001:db8:1::/48"]
            .into_iter()
            .filter(|t| *t != "198.18.0.0/16")
            .collect::<Vec<_>>()
    );
}

#[test]
fn bad_targets_durations_and_full_lists_are_refused() {
    let lab = Lab::new(&TRUNK.replace(
        "duration = \"15m\"\n",
        "duration = \"15m\"\nmax_cidrs = 2\n",
    ));
    for t in [
        "example.com",
        "",
        "192.0.2.1/33",
        "0.0.0.0/0",
        "10.0.0.0/7",
        "2001::/15",
        "1.2.3",
    ] {
        assert_eq!(err(&lab, ban(t, None)), ErrorCode::BadArgument, "{t}");
        assert_eq!(err(&lab, unban(t)), ErrorCode::BadArgument, "{t}");
    }
    for d in ["2 hours", "0s", "500ms", "367d", "-1h"] {
        assert_eq!(
            err(&lab, ban("192.0.2.1", Some(d))),
            ErrorCode::BadArgument,
            "{d}"
        );
    }
    ok(&lab, ban("198.51.0.0/16", None));
    ok(&lab, ban("198.52.0.0/16", None));
    // The same network again replaces its entry; a third is one too many.
    ok(&lab, ban("198.52.0.0/16", Some("1h")));
    assert_eq!(err(&lab, ban("198.53.0.0/16", None)), ErrorCode::TableFull);
    // An allowed source can be banned, but the answer says it is exempt.
    let r = ok(&lab, ban("10.9.1.1", None));
    assert!(r["exempt"].as_str().unwrap().contains("allow"), "{r}");
}

#[test]
fn manual_bans_survive_a_restart_with_their_own_length() {
    let lab = Lab::new(TRUNK);
    ok(&lab, ban("192.0.2.50", Some("2h")));
    ok(&lab, ban("2001:db8::/32", Some("3h")));
    let snap = lab.core.snapshot(lab.now);
    let text = sipwarden_core::state::persist::encode(&snap).unwrap();
    let back = sipwarden_core::state::persist::decode(&text, &lab.core.keys().key_id()).unwrap();
    assert_eq!(back, snap);
    // A new process, 10 minutes later: both still there, ending when they
    // would have (longer than ban.duration, 15m).
    let core = Core::new(
        Settings::new(sipwarden_core::config::parse(&format!("{BASE_CFG}{TRUNK}"), "t").unwrap()),
        Keys::new([42; 32]),
        Arc::new(Metrics::default()),
    );
    let later = lab.now + 600_000;
    let r = core.restore(back, later);
    assert_eq!(r.bans, 2, "{r:?}");
    let c = Context::default();
    let bans = answer(&core, &c, later, &Request::Bans).result.unwrap();
    assert_eq!(
        bans["bans"][0],
        serde_json::json!({
            "target": "2001:db8::/32", "trigger": "manual",
            "since": lab.now.rfc3339(), "since_ms": lab.now.0,
            "until": (lab.now + 10_800_000).rfc3339(), "until_ms": lab.now.0 + 10_800_000,
            "left_s": 10_200,
        })
    );
    assert_eq!(bans["bans"][1]["until_ms"], lab.now.0 + 7_200_000);
    let flow = public_udp("[2001:db8::5]:5060");
    let out = core.handle(later, &flow, bytes::Bytes::from(options_from_domain(9)));
    assert_eq!(out.verdict, BANNED);
}

fn register() -> String {
    "REGISTER sip:sip.provider.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK-reg1\r\n\
     Route: <sip:127.0.0.1:5070;lr>\r\nFrom: <sip:acct@sip.provider.example>;tag=r1\r\nTo: <sip:acct@sip.provider.example>\r\n\
     Call-ID: reg-call-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:acct@127.0.0.1:5080;line=xyz>\r\nExpires: 3600\r\n\
     Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        .into()
}

#[test]
fn trunks_show_registration_expiry_and_last_activity() {
    let mut lab = Lab::new(TRUNK);
    let t0 = lab.now;
    let out = lab.handle(&asterisk(), &register());
    let fwd = text(one_send(&out, Verdict::forward(Reason::Outbound))).to_string();
    let before = ok(&lab, Request::Trunks);
    assert_eq!(before["trunks"][0]["name"], "provider1");
    assert_eq!(before["trunks"][0]["registered"], false);
    assert_eq!(before["trunks"][0]["last_register"], t0.rfc3339());
    assert!(before["trunks"][0].get("expires").is_none());
    let contact = headers(&fwd, "contact")[0];
    let uri = contact
        .split('<')
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    lab.now += 1000;
    let ok200 = answer_to(&fwd, &format!("Contact: <{uri}>;expires=600\r\n"));
    lab.handle(&public_udp(PROVIDER), &ok200);
    lab.now += 1000;
    let invite = format!(
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-inv1\r\n\
         From: <sip:+15551234@198.51.100.10>;tag=p-1\r\nTo: <sip:+4930123@198.51.100.10>\r\nCall-ID: inv-1\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let v = lab.handle(&public_udp(PROVIDER), &invite).verdict;
    assert_eq!(v.disposition, Disposition::Forwarded);
    let t = ok(&lab, Request::Trunks);
    let p = &t["trunks"][0];
    assert_eq!(p["registered"], true);
    assert_eq!(p["registrations"], 1);
    assert_eq!(p["expires_ms"], t0.0 + 1000 + 600_000);
    assert_eq!(p["expires_in_s"], 599);
    assert_eq!(p["addresses"], serde_json::json!(["198.51.100.10"]));
    assert_eq!(p["last_registered"], (t0 + 1000).rfc3339());
    assert_eq!(p["last_invite"], (t0 + 2000).rfc3339());
    let idle = &t["trunks"][1];
    assert_eq!(
        (idle["name"].as_str(), idle["registered"].as_bool()),
        (Some("idle"), Some(false))
    );
    // The gauges: one series per configured trunk.
    let m = control::trunk_metrics(&lab.core, lab.now);
    assert!(
        m.contains("sipwarden_trunk_registered{trunk=\"provider1\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("sipwarden_trunk_registered{trunk=\"idle\"} 0\n"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "sipwarden_trunk_registration_expiry_timestamp_seconds{{trunk=\"provider1\"}} {}\n",
            (t0.0 + 601_000) / 1000
        )),
        "{m}"
    );
    assert!(
        m.contains("sipwarden_trunk_registration_expiry_timestamp_seconds{trunk=\"idle\"} 0\n"),
        "{m}"
    );
    // Past its expiry (within grace) it is no longer registered.
    lab.now = t0 + 700_000;
    let t = ok(&lab, Request::Trunks);
    assert_eq!(t["trunks"][0]["registered"], false);
    assert_eq!(t["trunks"][0]["expires_in_s"], 0);
    assert!(control::trunk_metrics(&lab.core, lab.now).contains(
        "sipwarden_trunk_registration_expiry_timestamp_seconds{trunk=\"provider1\"} 0\n"
    ));
}

/// A 200 to a forwarded REGISTER, with `extra` headers.
fn answer_to(req: &str, extra: &str) -> String {
    common::answer(req, 200, extra)
}

#[test]
fn sources_list_the_heaviest_and_the_most_rejected_with_reasons() {
    let mut lab = Lab::new(TRUNK);
    for n in 0..2 {
        lab.handle(&public_udp("192.0.2.66:5060"), &scan(n));
    }
    for n in 0..5 {
        verdict(&lab, "192.0.2.10:5060", n);
    }
    let s = ok(&lab, Request::Sources { limit: Some(5) });
    assert_eq!(s["by_messages"][0]["source"], "192.0.2.10");
    assert_eq!(s["by_messages"][0]["messages"], 5);
    assert_eq!(s["by_messages"][0]["rejects"], 0);
    assert_eq!(s["by_rejects"].as_array().unwrap().len(), 1);
    let r = &s["by_rejects"][0];
    assert_eq!(r["source"], "192.0.2.66");
    assert_eq!(r["top_reason"], "no-domain");
    assert_eq!(r["reasons"]["no-domain"], 2);
    assert_eq!(r["banned"], false);
    // The third reject bans; the next message is counted as banned.
    lab.handle(&public_udp("192.0.2.66:5060"), &scan(3));
    verdict(&lab, "192.0.2.66:5060", 9);
    let s = ok(&lab, Request::Sources { limit: Some(1) });
    assert_eq!(s["by_messages"].as_array().unwrap().len(), 1);
    let r = &s["by_rejects"][0];
    assert_eq!(
        (r["rejects"].as_u64(), r["banned"].as_bool()),
        (Some(4), Some(true))
    );
    assert_eq!(r["reasons"]["banned"], 1);
    // A minute and more later they are gone.
    lab.now += 61_000;
    let s = ok(&lab, Request::Sources { limit: None });
    assert!(s["by_messages"].as_array().unwrap().is_empty(), "{s}");
}

#[test]
fn status_reports_mode_rates_tables_and_sockets() {
    let mut lab = Lab::new(TRUNK);
    lab.core.tick(lab.now);
    for s in 0..12u32 {
        for n in 0..3 {
            verdict(&lab, "192.0.2.10:5060", s * 10 + n);
        }
        lab.now += 1000;
        lab.core.tick(lab.now);
    }
    ok(&lab, ban("198.18.0.0/16", None));
    let s = ok(&lab, Request::Status);
    assert_eq!(s["mode"], "enforce");
    assert_eq!(s["version"], "0.1.0");
    assert_eq!(s["uptime_s"], 60);
    assert_eq!(s["sockets"][0]["role"], "public");
    assert_eq!(s["totals"]["forwarded"], 36);
    assert_eq!(s["rates"]["last_10s"]["forwarded"], 3.0);
    assert_eq!(s["rates"]["last_10s"]["dropped"], 0.0);
    assert_eq!(s["rates"]["window_s"], 10.0);
    assert_eq!(s["rates"]["by_reason"][0]["reason"], "domain");
    assert_eq!(
        s["rates"]["history"]["forwarded"].as_array().unwrap().len(),
        12
    );
    assert_eq!(s["tables"]["ban_networks"], 1);
    assert_eq!(s["tables"]["tcp_connections"], 2);
    // The status of a monitor-mode config says so.
    lab.reload_with(&format!("{BASE_CFG}{TRUNK}").replace(
        "domains = [\"sip-7f3k.example.com\"]",
        "domains = [\"sip-7f3k.example.com\"]\nmode = \"monitor\"",
    ));
    assert_eq!(ok(&lab, Request::Status)["mode"], "monitor");
}

#[test]
fn a_line_that_is_no_request_is_counted_invalid() {
    let lab = Lab::new(TRUNK);
    let e = control::parse(b"{\"version\":1,\"request\":\"reboot\"}").unwrap_err();
    let r = control::refused(&lab.core, e);
    assert!(!r.ok);
    assert_eq!(lab.core.metrics().control_requests("invalid", false), 1);
    let text = lab.core.metrics().render(&[]);
    assert!(
        text.contains("sipwarden_control_requests_total{request=\"invalid\",result=\"error\"} 1\n"),
        "{text}"
    );
}
