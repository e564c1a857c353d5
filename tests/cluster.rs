//! The cluster link (`sipwarden::cluster`) against a real redis-server
//! that each test starts on its own loopback port (18350 + n: never 6379)
//! with a temporary directory and no persistence: what the e2e script does
//! not reach. An outbox that overflowed is recovered by the full
//! re-publish; a load reads hashes larger than one HSCAN step; the
//! periodic re-publish removes expired records from Redis and repairs
//! deleted ones. Without redis-server the tests fail, with the package to
//! install.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipwarden::cluster::Link;
use sipwarden::transport::now_ms;
use sipwarden_core::control::{self, Context, Request};
use sipwarden_core::metrics::{Event, Metrics};
use sipwarden_core::proxy::Core;
use sipwarden_core::settings::Settings;
use sipwarden_core::token::Keys;

/// A redis-server of one test, stopped (and its directory removed) on drop.
struct Redis {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Redis {
    fn start(n: u16) -> Redis {
        let port = 18350 + n;
        let dir = std::env::temp_dir().join(format!(
            "sipwarden-cluster-test-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it with scripts/setup.sh (Debian: redis-server)")
            });
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "redis-server did not listen on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, dir, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn core(redis: &Redis, extra: &str) -> Arc<Core> {
    let text = format!(
        r#"
[listen]
public = ["udp:127.0.0.1:5060"]
advertise = "127.0.0.1:5060"
[cluster]
redis = "{}"
name = "t"
{extra}"#,
        redis.url()
    );
    let cfg = sipwarden_core::config::parse(&text, "test").expect("config");
    let max = cfg.config().cluster.max_outbox;
    let core = Arc::new(Core::new(
        Settings::new(cfg),
        Keys::new([3; 32]),
        Arc::new(Metrics::default()),
    ));
    core.tables().feed.enable(max);
    core
}

fn link(core: &Arc<Core>) -> Link {
    Link::new(core.clone(), &core.settings().config.cluster).expect("a link")
}

fn ban(core: &Core, target: &str) {
    let r = control::answer(
        core,
        &Context::default(),
        now_ms(),
        &Request::Ban {
            target: target.into(),
            duration: Some("1h".into()),
        },
    );
    assert!(r.ok, "{r:?}");
}

/// Polls `f` every 20 ms for at most 20 s (a bound for a stalled machine,
/// not a timing assertion).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_overflowed_outbox_is_recovered_by_the_full_republish() {
    let redis = Redis::start(0);
    let a = core(&redis, "max_outbox = 10\nnode = \"a\"");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.spawn(link(&a).run());
    // Connected (its first full publish is done), then a burst the
    // outbox cannot hold: 300 bans at once (a millisecond or two; the
    // link drains every 5 ms), 10 queued.
    eventually("connected", || a.metrics().cluster_up() == Some(true));
    for i in 0..300u32 {
        ban(&a, &format!("198.18.{}.{}", i >> 8, i & 255));
    }
    assert!(a.tables().feed.overflowed() > 0, "the outbox overflowed");
    eventually("all 300 bans in Redis", || {
        redis.cli(&["HLEN", "t:bans"]) == "300"
    });
    eventually("the overflow counted", || {
        a.metrics().events(Event::ClusterOverflow) >= 1
    });
    assert_eq!(a.metrics().cluster_up(), Some(true));
}

#[test]
fn a_load_reads_a_hash_larger_than_one_scan_step() {
    let redis = Redis::start(1);
    let a = core(&redis, "node = \"a\"");
    for i in 0..1200u32 {
        ban(&a, &format!("198.18.{}.{}", i >> 8, i & 255));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.spawn(link(&a).run());
    eventually("1200 bans in Redis", || {
        redis.cli(&["HLEN", "t:bans"]) == "1200"
    });
    // One garbage value among them: counted, the rest loaded.
    redis.cli(&["HSET", "t:bans", "198.51.100.1", "not a record"]);
    let b = core(&redis, "node = \"b\"");
    let loaded = rt.block_on(link(&b).load()).expect("a load");
    assert_eq!(loaded.bans, 1200);
    assert_eq!(loaded.rejected, 1);
    assert_eq!(b.tables().bans.banned_count(now_ms()), 1200);
    assert_eq!(b.metrics().events(Event::ClusterRejected), 1);
}

#[test]
fn the_periodic_republish_forgets_expired_records_and_repairs_the_hash() {
    let redis = Redis::start(2);
    let a = core(&redis, "node = \"a\"\nrepublish_interval = \"1s\"");
    ban(&a, "192.0.2.1");
    // A record of another node that ended an hour ago.
    let old = now_ms().0 - 3_600_000;
    redis.cli(&[
        "HSET",
        "t:bans",
        "192.0.2.99",
        &format!(
            r#"{{"v":1,"node":"b","at":{old},"kind":"ban","target":"192.0.2.99","trigger":"manual","since":{old},"until":{}}}"#,
            old + 1000
        ),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.spawn(link(&a).run());
    eventually("the expired record removed", || {
        redis.cli(&["HEXISTS", "t:bans", "192.0.2.99"]) == "0"
    });
    // A field deleted behind the node's back comes back.
    redis.cli(&["HDEL", "t:bans", "192.0.2.1"]);
    eventually("the ban written again", || {
        redis.cli(&["HEXISTS", "t:bans", "192.0.2.1"]) == "1"
    });
}

#[test]
fn an_unban_made_while_a_node_was_away_lifts_its_ban_when_it_returns() {
    let redis = Redis::start(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Node B, connected, learns a ban and lifts it; Redis keeps the unban.
    let b = core(&redis, "node = \"b\"");
    rt.spawn(link(&b).run());
    eventually("b connected", || b.metrics().cluster_up() == Some(true));
    ban(&b, "192.0.2.7");
    eventually("the ban in Redis", || {
        redis
            .cli(&["HGET", "t:bans", "192.0.2.7"])
            .contains("\"kind\":\"ban\"")
    });
    // Node A holds the same ban from before (its state file), and is away.
    let a = core(&redis, "node = \"a\"");
    ban(&a, "192.0.2.7");
    a.tables().feed.drain(10);
    let r = control::answer(
        &b,
        &Context::default(),
        now_ms(),
        &Request::Unban {
            target: "192.0.2.7".into(),
        },
    );
    assert!(r.ok, "{r:?}");
    eventually("the unban in Redis", || {
        redis
            .cli(&["HGET", "t:bans", "192.0.2.7"])
            .contains("\"kind\":\"unban\"")
    });
    // A comes back: it reads the unban before it publishes what it holds.
    rt.spawn(link(&a).run());
    eventually("a connected", || a.metrics().cluster_up() == Some(true));
    assert!(!a
        .tables()
        .bans
        .is_banned("192.0.2.7".parse().unwrap(), now_ms()));
    assert!(redis
        .cli(&["HGET", "t:bans", "192.0.2.7"])
        .contains("\"kind\":\"unban\""));
    assert!(!b
        .tables()
        .bans
        .is_banned("192.0.2.7".parse().unwrap(), now_ms()));
}
