//! The cluster's records through two cores on a virtual clock, no Redis:
//! a change on node A becomes a record (the feed), its bytes are decoded
//! and applied on node B (`apply_remote`), and B then admits or drops as
//! A does. What a record may not do: stretch a ban or a registration,
//! come back to its own node, admit with a token another key made.

mod common;

use std::sync::Arc;

use common::*;
use sipwarden_core::cluster::{self, apply_remote, Applied, Body, Origin, Record, RejectReason};
use sipwarden_core::control::{self as ctl, Context, Request};
use sipwarden_core::metrics::Metrics;
use sipwarden_core::proxy::{Core, Dest};
use sipwarden_core::settings::Settings;
use sipwarden_core::state::Change;
use sipwarden_core::time::UnixMs;
use sipwarden_core::token::Keys;
use sipwarden_core::verdict::{Disposition, Reason, Verdict};

const TRUNK: &str = r#"
[[trunk]]
name = "provider1"
registrar = "sip.provider.example"
[registration]
grace = "60s"
[cluster]
redis = "redis://127.0.0.1:18379"
"#;

const PROVIDER: &str = "198.51.100.10:5060";
const SCANNER: &str = "192.0.2.66:5060";

/// A node of the cluster: a lab whose feed is on.
fn node() -> Lab {
    let lab = Lab::new(TRUNK);
    lab.core.tables().feed.enable(1000);
    lab
}

fn register(expires: &str) -> String {
    format!(
        "REGISTER sip:sip.provider.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK-reg1\r\n\
         Route: <sip:127.0.0.1:5070;lr>\r\nFrom: <sip:acct@sip.provider.example>;tag=r1\r\nTo: <sip:acct@sip.provider.example>\r\n\
         Call-ID: reg-call-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:acct@127.0.0.1:5080;line=xyz>\r\nExpires: {expires}\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Asterisk registers through `lab`; the provider grants `granted` s.
fn trunk_registers(lab: &Lab, granted: u64) {
    let out = lab.handle(&asterisk(), &register("3600"));
    let fwd = text(one_send(&out, Verdict::forward(Reason::Outbound))).to_string();
    let ok = answer_to(&fwd, granted);
    let out = lab.handle(&public_udp(PROVIDER), &ok);
    one_send(&out, Verdict::forward(Reason::Response));
}

fn answer_to(fwd: &str, granted: u64) -> String {
    let contact = headers(fwd, "contact")[0].to_string();
    let uri = contact
        .split('<')
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    answer(fwd, 200, &format!("Contact: <{uri}>;expires={granted}\r\n"))
}

fn did_invite(call: &str) -> String {
    format!(
        "INVITE sip:+4930123@203.0.113.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-{call}\r\n\
         From: <sip:+15551234@198.51.100.10>;tag=p-{call}\r\nTo: <sip:+4930123@198.51.100.10>\r\nCall-ID: {call}\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn options_with_domain(call: &str) -> String {
    format!(
        "OPTIONS sip:100@sip-7f3k.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-{call}\r\n\
         From: <sip:x@sip-7f3k.example.com>;tag=s-{call}\r\nTo: <sip:100@sip-7f3k.example.com>\r\nCall-ID: {call}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Everything `from` queued, published as node `name` and carried as
/// bytes (what Redis holds and the channel delivers).
fn published(from: &Lab, name: &str) -> Vec<Vec<u8>> {
    from.core
        .tables()
        .feed
        .drain(100)
        .iter()
        .map(|c| cluster::encode(&cluster::of_change(name, c)))
        .collect()
}

fn apply_all(to: &Lab, own: &str, origin: Origin, values: &[Vec<u8>]) -> Vec<Applied> {
    values
        .iter()
        .map(|v| {
            let rec = cluster::decode(v, 4096).expect("a record");
            apply_remote(&to.core, own, origin, to.now, &rec)
        })
        .collect()
}

fn control(lab: &Lab, req: Request) -> serde_json::Value {
    let r = ctl::answer(&lab.core, &Context::default(), lab.now, &req);
    assert!(r.ok, "{r:?}");
    serde_json::to_value(&r).unwrap()
}

#[test]
fn a_registration_learned_on_one_node_admits_on_the_other() {
    let a = node();
    let b = node();
    // Before: node B has never seen the REGISTER.
    let out = b.handle(&public_udp(PROVIDER), &did_invite("before"));
    assert_eq!(out.verdict, Verdict::drop(Reason::NoDomain));

    trunk_registers(&a, 600);
    let values = published(&a, "a");
    assert_eq!(values.len(), 1, "one record: the registration");
    assert_eq!(
        apply_all(&b, "b", Origin::Channel, &values),
        vec![Applied::Taken]
    );

    let out = b.handle(&public_udp(PROVIDER), &did_invite("after"));
    let s = one_send(&out, Verdict::forward(Reason::Trunk));
    assert_eq!(s.dest, Dest::Addr("127.0.0.1:5080".parse().unwrap()));
    assert!(text(s).contains("X-Sipwarden-Trunk: provider1\r\n"));
    // Its expiry is the registrar's: past it and the grace, nothing.
    let mut later = b;
    later.now = a.now + 600_000 + 60_000;
    let out = later.handle(&public_udp(PROVIDER), &did_invite("expired"));
    assert_eq!(out.verdict, Verdict::drop(Reason::NoDomain));

    // The removal confirmed by the registrar reaches the other node too.
    let c = node();
    apply_all(&c, "c", Origin::Channel, &values);
    let out = a.handle(&asterisk(), &register("0"));
    let fwd = text(one_send(&out, Verdict::forward(Reason::Outbound))).to_string();
    let out = a.handle(&public_udp(PROVIDER), &answer(&fwd, 200, ""));
    one_send(&out, Verdict::forward(Reason::Response));
    let values = published(&a, "a");
    let rec = cluster::decode(&values[0], 4096).unwrap();
    assert!(matches!(rec.body, Body::Unreg { .. }), "{rec:?}");
    assert_eq!(
        apply_all(&c, "c", Origin::Channel, &values),
        vec![Applied::Taken]
    );
    let out = c.handle(&public_udp(PROVIDER), &did_invite("unregistered"));
    assert_eq!(out.verdict, Verdict::drop(Reason::NoDomain));
}

#[test]
fn a_token_made_by_another_key_is_rejected() {
    let a = node();
    trunk_registers(&a, 600);
    let values = published(&a, "a");
    let text = TRUNK.to_string();
    let cfg = sipwarden_core::config::parse(&format!("{BASE_CFG}{text}"), "t").unwrap();
    let other = Lab {
        core: Core::new(
            Settings::new(cfg),
            Keys::new([7; 32]),
            Arc::new(Metrics::default()),
        ),
        now: a.now,
    };
    assert_eq!(
        apply_all(&other, "x", Origin::Channel, &values),
        vec![Applied::Rejected(RejectReason::Invalid)]
    );
    let out = other.handle(&public_udp(PROVIDER), &did_invite("forged"));
    assert_eq!(out.verdict, Verdict::drop(Reason::NoDomain));
}

#[test]
fn a_ban_on_one_node_drops_on_the_other_and_an_unban_frees_it() {
    let a = node();
    let b = node();
    control(
        &a,
        Request::Ban {
            target: "192.0.2.66".into(),
            duration: Some("1h".into()),
        },
    );
    let values = published(&a, "a");
    assert_eq!(
        apply_all(&b, "b", Origin::Channel, &values),
        vec![Applied::Taken]
    );
    let out = b.handle(&public_udp(SCANNER), &options_with_domain("banned"));
    assert_eq!(out.verdict, Verdict::drop(Reason::Banned));
    assert_eq!(b.count(Reason::Banned, Disposition::Dropped), 1);
    // Applying a remote record queues nothing: no echo loop.
    assert!(b.core.tables().feed.is_empty());

    control(
        &b,
        Request::Unban {
            target: "192.0.2.66".into(),
        },
    );
    let values = published(&b, "b");
    assert_eq!(
        apply_all(&a, "a", Origin::Channel, &values),
        vec![Applied::Taken]
    );
    let out = a.handle(&public_udp(SCANNER), &options_with_domain("free"));
    assert_eq!(out.verdict, Verdict::forward(Reason::Domain));
}

#[test]
fn an_automatic_ban_is_published_with_its_trigger_and_end() {
    let a = Lab::new(&format!(
        "{TRUNK}[ban]\nafter_rejects = 2\nduration = \"10m\"\n"
    ));
    a.core.tables().feed.enable(10);
    let scan = "OPTIONS sip:100@203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-1\r\n\
                From: <sip:x@203.0.113.10>;tag=1\r\nTo: <sip:100@203.0.113.10>\r\nCall-ID: scan\r\n\
                CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    a.handle(&public_udp(SCANNER), scan);
    a.handle(&public_udp(SCANNER), scan);
    let changes = a.core.tables().feed.drain(10);
    assert_eq!(changes.len(), 1);
    let rec = cluster::of_change("a", &changes[0]);
    assert_eq!(
        rec.body,
        Body::Ban {
            target: "192.0.2.66".into(),
            trigger: "rejects".into(),
            since: a.now,
            until: a.now + 600_000,
        }
    );
}

#[test]
fn a_record_never_stretches_what_it_says() {
    let b = node();
    let ban = |target: &str, trigger: &str, since: u64, until: u64| Record {
        v: cluster::VERSION,
        node: "a".into(),
        at: b.now,
        body: Body::Ban {
            target: target.into(),
            trigger: trigger.into(),
            since: UnixMs(since),
            until: UnixMs(until),
        },
    };
    let now = b.now.0;
    let apply = |r: &Record| apply_remote(&b.core, "b", Origin::Channel, b.now, r);
    // Ended before it arrived.
    assert_eq!(
        apply(&ban("192.0.2.1", "manual", now - 10, now)),
        Applied::Expired
    );
    assert!(!b
        .core
        .tables()
        .bans
        .is_banned("192.0.2.1".parse().unwrap(), b.now));
    // Ends when it says.
    assert_eq!(
        apply(&ban("192.0.2.2", "rejects", now, now + 5_000)),
        Applied::Taken
    );
    let bans = b.core.tables().bans.all_bans(b.now);
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].until, UnixMs(now + 5_000));
    // Forever is cut to the longest manual ban.
    assert_eq!(
        apply(&ban("192.0.2.3", "manual", now, u64::MAX)),
        Applied::Taken
    );
    let until = b
        .core
        .tables()
        .bans
        .all_bans(b.now)
        .into_iter()
        .find(|x| x.net.addr().to_string() == "192.0.2.3")
        .unwrap()
        .until;
    assert_eq!(until, UnixMs(now + 366 * 86_400_000));
    // A network too broad for a ban, an unknown trigger, a start after
    // the end: rejected.
    for r in [
        ban("0.0.0.0/0", "manual", now, now + 1000),
        ban("192.0.2.9", "nuke", now, now + 1000),
        ban("192.0.2.9", "manual", now + 2000, now + 1000),
        ban("not-an-address", "manual", now, now + 1000),
    ] {
        assert_eq!(apply(&r), Applied::Rejected(RejectReason::Invalid), "{r:?}");
    }
    assert_eq!(b.core.tables().bans.all_bans(b.now).len(), 2);
}

#[test]
fn own_records_come_back_only_from_the_hash() {
    let a = node();
    control(
        &a,
        Request::Ban {
            target: "198.51.100.0/24".into(),
            duration: None,
        },
    );
    let values = published(&a, "a");
    // A restarted node A (empty tables) reading the hash takes its own
    // record back; on the channel its own record is an echo.
    let restarted = node();
    assert_eq!(
        apply_all(&restarted, "a", Origin::Channel, &values),
        vec![Applied::Echo]
    );
    assert!(restarted
        .core
        .tables()
        .bans
        .all_bans(restarted.now)
        .is_empty());
    assert_eq!(
        apply_all(&restarted, "a", Origin::Stored, &values),
        vec![Applied::Taken]
    );
    assert_eq!(
        restarted.core.tables().bans.banned_nets(restarted.now)[0]
            .net
            .to_string(),
        "198.51.100.0/24"
    );
}

#[test]
fn a_full_republish_carries_every_ban_and_registration() {
    let a = node();
    trunk_registers(&a, 600);
    control(
        &a,
        Request::Ban {
            target: "192.0.2.66".into(),
            duration: None,
        },
    );
    let grace = 60_000;
    let records = cluster::records_of(a.core.tables(), "a", a.now, grace);
    assert_eq!(records.len(), 2);
    let b = node();
    let values: Vec<Vec<u8>> = records.iter().map(cluster::encode).collect();
    assert_eq!(
        apply_all(&b, "b", Origin::Stored, &values),
        vec![Applied::Taken, Applied::Taken]
    );
    let out = b.handle(&public_udp(PROVIDER), &did_invite("republished"));
    one_send(&out, Verdict::forward(Reason::Trunk));
}

#[test]
fn without_a_cluster_nothing_is_queued() {
    let lab = Lab::new(TRUNK.split("[cluster]").next().unwrap());
    trunk_registers(&lab, 600);
    control(
        &lab,
        Request::Ban {
            target: "192.0.2.66".into(),
            duration: None,
        },
    );
    assert!(!lab.core.tables().feed.is_on());
    assert!(lab.core.tables().feed.is_empty());
    let _ = Change::Unban {
        net: "192.0.2.66/32".parse().unwrap(),
        at: lab.now,
    };
}

#[test]
fn status_shows_the_cluster() {
    use sipwarden_core::control::ClusterContext;
    let a = node();
    control(
        &a,
        Request::Ban {
            target: "192.0.2.66".into(),
            duration: None,
        },
    );
    a.core.metrics().set_cluster_up(true);
    a.core.metrics().set_cluster_lag(12);
    let ctx = Context {
        cluster: Some(ClusterContext {
            name: "pbx1".into(),
            node: "edge-a".into(),
            servers: vec!["redis://***@10.0.0.5:6379".into()],
        }),
        ..Context::default()
    };
    let r = ctl::answer(&a.core, &ctx, a.now, &Request::Status);
    let v = serde_json::to_value(&r).unwrap();
    let c = &v["result"]["cluster"];
    assert_eq!(c["node"], "edge-a");
    assert_eq!(c["up"], true);
    assert_eq!(c["lag_ms"], 12);
    assert_eq!(c["outbox"], 1, "the ban waits for the link");
    let m = a.core.metrics().render(&[]);
    assert!(m.contains("\nsipwarden_cluster_up 1\n"), "{m}");
    assert!(m.contains("\nsipwarden_cluster_lag_seconds 0.012\n"), "{m}");
    // Without a cluster: no cluster in status, no cluster gauges.
    let lone = Lab::new("");
    let r = ctl::answer(&lone.core, &Context::default(), lone.now, &Request::Status);
    assert!(serde_json::to_value(&r).unwrap()["result"]
        .get("cluster")
        .is_none());
    assert!(!lone
        .core
        .metrics()
        .render(&[])
        .contains("sipwarden_cluster_up"));
}

#[test]
fn an_unban_lifts_the_ban_it_was_made_against_not_a_later_one() {
    let b = node();
    let unban = |at: UnixMs| Record {
        v: cluster::VERSION,
        node: "a".into(),
        at,
        body: Body::Unban {
            target: "192.0.2.66".into(),
        },
    };
    control(
        &b,
        Request::Ban {
            target: "192.0.2.66".into(),
            duration: None,
        },
    );
    let banned = |lab: &Lab| {
        lab.core
            .tables()
            .bans
            .is_banned("192.0.2.66".parse().unwrap(), lab.now)
    };
    // An unban older than the ban (read back from the hash by a node
    // that banned the source again since): the ban stays.
    let older = unban(UnixMs(b.now.0 - 1));
    assert_eq!(
        apply_remote(&b.core, "b", Origin::Stored, b.now, &older),
        Applied::Expired
    );
    assert!(banned(&b));
    // The unban made after it lifts it, from the channel or the hash.
    let newer = unban(b.now);
    assert_eq!(
        apply_remote(&b.core, "b", Origin::Stored, b.now, &newer),
        Applied::Taken
    );
    assert!(!banned(&b));
}
