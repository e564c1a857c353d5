//! The cluster link (`[cluster]`, docs/cluster.md): this node's bans and
//! trunk registrations to Redis, and the other nodes' into the core.
//!
//! Redis holds, under `NAME:`, a hash per kind (`NAME:bans` keyed by
//! target, `NAME:regs` keyed by token) with the current record of each,
//! which a starting node loads; every change is also published on the
//! channel `NAME:changes`, which the nodes subscribe to. What a record
//! means and whether it holds is the core's (`sipwarden_core::cluster`);
//! this module only moves bytes, and no request ever waits on it: the
//! core queues its changes in a bounded outbox (`state::feed`), this
//! task drains it.
//!
//! Redis down, slow or restarted empty: the node goes on with its own
//! tables, says so once (and once when it is back), counts
//! (`sipwarden_cluster_up`, `sipwarden_cluster_errors_total`), retries
//! with a backoff up to `cluster.retry_max`, and once back publishes
//! everything it holds, so that nothing learned meanwhile is lost.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use sipwarden_core::cluster::{self, Applied, Body, Origin, Record};
use sipwarden_core::config::Cluster as ClusterConfig;
use sipwarden_core::metrics::Event;
use sipwarden_core::proxy::Core;
use sipwarden_core::state::Change;

use crate::transport::now_ms;

/// How often the outbox is drained: the floor of the propagation delay.
const DRAIN_EVERY: Duration = Duration::from_millis(5);
/// Changes sent in one pipeline.
const BATCH: usize = 1000;
/// How often Redis is asked whether it is there while nothing changes.
const PING_EVERY: Duration = Duration::from_secs(1);
/// The first wait after a failure; doubled up to `cluster.retry_max`.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Fields read per HSCAN step: the memory a load holds at once.
const SCAN_COUNT: usize = 500;

/// What a load from Redis brought.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub bans: usize,
    pub registrations: usize,
    /// Records whose end had passed, or that named nothing held here.
    pub expired: usize,
    /// Values that are no valid record (counted in
    /// `sipwarden_cluster_records_rejected_total`).
    pub rejected: usize,
    /// Records the tables' caps left out.
    pub over_cap: usize,
}

impl Loaded {
    /// Redis held nothing for this cluster (it restarted empty, or the
    /// cluster is new).
    pub fn is_empty(&self) -> bool {
        self.bans + self.registrations + self.expired + self.rejected + self.over_cap == 0
    }
}

/// The link of one node: its Redis clients and names.
pub struct Link {
    core: Arc<Core>,
    clients: Vec<redis::Client>,
    /// The servers as status shows them (no password).
    servers: Vec<String>,
    node: String,
    bans_key: String,
    regs_key: String,
    channel: String,
    max_value: usize,
    /// Bounds each command and connection attempt (`cluster.load_timeout`).
    timeout: Duration,
    republish_every: Duration,
    retry_max: Duration,
}

/// This host's name, the default `cluster.node`.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if rc == 0 && !name.is_empty() {
        name
    } else {
        "sipwarden".into()
    }
}

/// This node's name in its records: `cluster.node`, or the host name.
pub fn node_name(cfg: &ClusterConfig) -> String {
    if cfg.node.is_empty() {
        host_name()
    } else {
        cfg.node.clone()
    }
}

/// `cluster.redis` as logs and `status` show it: without passwords.
pub fn servers(cfg: &ClusterConfig) -> Vec<String> {
    cfg.redis.to_vec().iter().map(|u| redacted(u)).collect()
}

/// A Redis URL with its password (userinfo) masked, for logs and status.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => url.into(),
    }
}

impl Link {
    /// The link `cfg` describes; an error names a URL the client refuses.
    pub fn new(core: Arc<Core>, cfg: &ClusterConfig) -> Result<Link, String> {
        let urls = cfg.redis.to_vec();
        let mut clients = Vec::with_capacity(urls.len());
        for u in &urls {
            let c = redis::Client::open(u.as_str())
                .map_err(|e| format!("cluster.redis {}: {e}", redacted(u)))?;
            clients.push(c);
        }
        Ok(Link {
            core,
            clients,
            servers: servers(cfg),
            node: node_name(cfg),
            bans_key: format!("{}:bans", cfg.name),
            regs_key: format!("{}:regs", cfg.name),
            channel: format!("{}:changes", cfg.name),
            max_value: cfg.max_value,
            timeout: cfg.load_timeout.0,
            republish_every: cfg.republish_interval.0,
            retry_max: cfg.retry_max.0,
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The Redis servers, without passwords.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    fn config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
    }

    /// A connection to the first server that answers, from `from` on.
    async fn connect(&self, from: usize) -> Result<(usize, MultiplexedConnection), String> {
        let mut last = String::from("no server");
        for i in 0..self.clients.len() {
            let k = (from + i) % self.clients.len();
            let Some(c) = self.clients.get(k) else {
                continue;
            };
            match c
                .get_multiplexed_async_connection_with_config(&self.config())
                .await
            {
                Ok(conn) => return Ok((k, conn)),
                Err(e) => last = format!("{}: {e}", self.servers.get(k).map_or("", |s| s)),
            }
        }
        Err(last)
    }

    /// Loads the shared state into the core at start, before the public
    /// sockets open. The caller bounds it with `cluster.load_timeout`.
    pub async fn load(&self) -> Result<Loaded, String> {
        let (_, mut conn) = self.connect(0).await?;
        self.load_from(&mut conn).await
    }

    /// Reads both hashes (HSCAN, a step at a time) and applies each
    /// record; this node's own records too (from before a restart).
    async fn load_from(&self, conn: &mut MultiplexedConnection) -> Result<Loaded, String> {
        let mut loaded = Loaded::default();
        for key in [&self.bans_key, &self.regs_key] {
            let mut cursor = String::from("0");
            loop {
                let (next, flat) = hscan_step(conn, key, &cursor).await?;
                // Field, value, field, value...
                for value in flat.iter().skip(1).step_by(2) {
                    self.take(value, Origin::Stored, &mut loaded);
                }
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(loaded)
    }

    /// One value from Redis into the core.
    fn take(&self, value: &[u8], origin: Origin, loaded: &mut Loaded) {
        let m = self.core.metrics();
        let now = now_ms();
        let rec = match cluster::decode(value, self.max_value) {
            Ok(r) => r,
            Err(why) => {
                m.event(Event::ClusterRejected);
                loaded.rejected += 1;
                tracing::warn!(
                    reason = why.as_str(),
                    bytes = value.len(),
                    "cluster: a value from Redis is no record; ignored"
                );
                return;
            }
        };
        match cluster::apply_remote(&self.core, &self.node, origin, now, &rec) {
            Applied::Taken => {
                m.event(Event::ClusterReceived);
                if origin == Origin::Channel {
                    m.set_cluster_lag(now.since(rec.at));
                }
                match &rec.body {
                    Body::Ban { target, .. } => {
                        loaded.bans += 1;
                        if origin == Origin::Channel {
                            tracing::info!(source = %target, node = %rec.node, "banned by another node");
                        }
                    }
                    Body::Unban { target } => {
                        tracing::info!(source = %target, node = %rec.node, "unbanned by another node");
                    }
                    Body::Reg { trunk, .. } => {
                        loaded.registrations += 1;
                        if origin == Origin::Channel {
                            tracing::info!(%trunk, node = %rec.node, "trunk registered through another node");
                        }
                    }
                    Body::Unreg { .. } => {
                        tracing::info!(node = %rec.node, "trunk unregistered through another node");
                    }
                }
            }
            Applied::Echo => {}
            Applied::Expired => loaded.expired += 1,
            Applied::OverCap => loaded.over_cap += 1,
            Applied::Rejected(why) => {
                m.event(Event::ClusterRejected);
                loaded.rejected += 1;
                tracing::warn!(
                    reason = why.as_str(),
                    node = %rec.node,
                    "cluster: a record from Redis does not hold; ignored"
                );
            }
        }
    }

    /// The link, forever: connect, catch up, then publish the outbox and
    /// apply what the other nodes publish, until Redis fails; then again
    /// after a backoff.
    pub async fn run(self) {
        let m = self.core.metrics().clone();
        let mut backoff = FIRST_RETRY;
        let mut server = 0;
        // Whether the loss is still to be logged: once per outage.
        let mut announced_down = false;
        let mut ever_up = false;
        loop {
            let err = self
                .session(&mut server, &mut ever_up, &mut announced_down, &mut backoff)
                .await;
            m.event(Event::ClusterErrors);
            m.set_cluster_up(false);
            if !announced_down {
                announced_down = true;
                tracing::warn!(error = %err, "cluster: Redis unreachable; going on with the local tables, retrying");
            } else {
                tracing::debug!(error = %err, "cluster: Redis still unreachable");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.retry_max);
            server += 1;
        }
    }

    /// One connected period; returns why it ended.
    async fn session(
        &self,
        server: &mut usize,
        ever_up: &mut bool,
        announced_down: &mut bool,
        backoff: &mut Duration,
    ) -> String {
        let (k, mut conn) = match self.connect(*server).await {
            Ok(c) => c,
            Err(e) => return e,
        };
        *server = k;
        let client = &self.clients[k];
        // Subscribed before the catch-up read: what is published while
        // it runs is not missed.
        let pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => return format!("subscribe: {e}"),
        };
        let (mut sink, mut stream) = pubsub.split();
        if let Err(e) = sink.subscribe(&self.channel).await {
            return format!("SUBSCRIBE {}: {e}", self.channel);
        }
        // This node's changes made while away first (an unban must reach
        // the hash before the hash is read back), then the others'.
        if let Err(e) = self.flush(&mut conn).await {
            return e;
        }
        let loaded = match self.load_from(&mut conn).await {
            Ok(l) => l,
            Err(e) => return e,
        };
        if let Err(e) = self.republish(&mut conn, true).await {
            return e;
        }
        let m = self.core.metrics();
        m.set_cluster_up(true);
        *backoff = FIRST_RETRY;
        let server = self.servers.get(k).map_or("", |s| s.as_str());
        if *announced_down || !*ever_up {
            tracing::info!(
                redis = server,
                node = %self.node,
                bans = loaded.bans,
                registrations = loaded.registrations,
                "cluster: connected to Redis; local state published"
            );
        }
        *announced_down = false;
        *ever_up = true;
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut republish = tokio::time::interval_at(
            tokio::time::Instant::now() + self.republish_every,
            self.republish_every,
        );
        republish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scratch = Loaded::default();
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return "the subscription closed".into();
                    };
                    self.take(msg.get_payload_bytes(), Origin::Channel, &mut scratch);
                }
                _ = drain.tick() => {
                    if let Err(e) = self.flush(&mut conn).await {
                        return e;
                    }
                }
                _ = ping.tick() => {
                    let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
                    if let Err(e) = r {
                        return format!("PING: {e}");
                    }
                }
                _ = republish.tick() => {
                    if let Err(e) = self.republish(&mut conn, false).await {
                        return e;
                    }
                    if let Err(e) = self.forget_expired(&mut conn).await {
                        return e;
                    }
                }
            }
        }
    }

    /// Publishes the outbox, a pipeline per [`BATCH`]; after an overflow,
    /// everything this node holds.
    async fn flush(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let feed = &self.core.tables().feed;
        if feed.take_resync() {
            self.core.metrics().event(Event::ClusterOverflow);
            tracing::warn!("cluster: the outbox overflowed (cluster.max_outbox); publishing all");
            self.republish(conn, true).await?;
        }
        loop {
            let changes = feed.drain(BATCH);
            if changes.is_empty() {
                return Ok(());
            }
            let mut p = redis::pipe();
            let mut n = 0;
            for c in &changes {
                let rec = cluster::of_change(&self.node, c);
                let Some(value) = self.value(&rec) else {
                    continue;
                };
                let key = self.key_of(&rec.body);
                match c {
                    // An unban stays in the hash (a tombstone) so that a
                    // node that was away when it was made lifts the ban
                    // when it reconnects, instead of publishing it again.
                    Change::Ban(_) | Change::Registered { .. } | Change::Unban { .. } => {
                        p.cmd("HSET")
                            .arg(key)
                            .arg(cluster::field(&rec.body))
                            .arg(&value)
                            .ignore();
                    }
                    Change::Unregistered { .. } => {
                        p.cmd("HDEL")
                            .arg(key)
                            .arg(cluster::field(&rec.body))
                            .ignore();
                    }
                }
                p.cmd("PUBLISH").arg(&self.channel).arg(&value).ignore();
                n += 1;
            }
            if let Err(e) = p.query_async::<()>(conn).await {
                // Not lost: the next session's re-publish carries the
                // tables as they are (an unban lost here stays lost; see
                // docs/cluster.md).
                feed_lost(feed);
                return Err(format!("publish: {e}"));
            }
            for _ in 0..n {
                self.core.metrics().event(Event::ClusterSent);
            }
        }
    }

    /// Writes every ban in force and every live registration this node
    /// holds to the hashes, and with `announce` on the channel too: after
    /// an outage or an overflow, when the other nodes may have missed
    /// them. The periodic re-publish only repairs the hashes: announcing
    /// every record every few minutes would make each node apply (and
    /// log) all of them again.
    async fn republish(
        &self,
        conn: &mut MultiplexedConnection,
        announce: bool,
    ) -> Result<(), String> {
        let now = now_ms();
        let grace = self.core.settings().config.registration.grace.ms();
        let records = cluster::records_of(self.core.tables(), &self.node, now, grace);
        for chunk in records.chunks(BATCH) {
            let mut p = redis::pipe();
            for rec in chunk {
                let Some(value) = self.value(rec) else {
                    continue;
                };
                p.cmd("HSET")
                    .arg(self.key_of(&rec.body))
                    .arg(cluster::field(&rec.body))
                    .arg(&value)
                    .ignore();
                if announce {
                    p.cmd("PUBLISH").arg(&self.channel).arg(&value).ignore();
                }
            }
            p.query_async::<()>(conn)
                .await
                .map_err(|e| format!("re-publish: {e}"))?;
            for _ in chunk {
                self.core.metrics().event(Event::ClusterSent);
            }
        }
        Ok(())
    }

    /// Removes from the hashes the records whose end has passed (Redis 7.0
    /// has no expiry per hash field). Garbage is left for an operator to
    /// look at; it is counted each time it is read.
    async fn forget_expired(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let now = now_ms();
        let grace = self.core.settings().config.registration.grace.ms();
        for key in [&self.bans_key, &self.regs_key] {
            let mut cursor = String::from("0");
            loop {
                let (next, flat) = hscan_step(conn, key, &cursor).await?;
                let mut gone: Vec<&[u8]> = Vec::new();
                for pair in flat.chunks(2) {
                    let [field, value] = pair else { continue };
                    let ended = cluster::decode(value, self.max_value)
                        .is_ok_and(|r| cluster::ended(&r, now, grace));
                    if ended {
                        gone.push(field);
                    }
                }
                if !gone.is_empty() {
                    redis::cmd("HDEL")
                        .arg(key)
                        .arg(gone)
                        .query_async::<()>(conn)
                        .await
                        .map_err(|e| format!("HDEL {key}: {e}"))?;
                }
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    fn key_of(&self, body: &Body) -> &str {
        match body {
            Body::Ban { .. } | Body::Unban { .. } => &self.bans_key,
            Body::Reg { .. } | Body::Unreg { .. } => &self.regs_key,
        }
    }

    /// The record's bytes, unless longer than `cluster.max_value` (the
    /// other nodes would refuse it).
    fn value(&self, rec: &Record) -> Option<Vec<u8>> {
        let v = cluster::encode(rec);
        if v.len() > self.max_value {
            self.core.metrics().event(Event::ClusterErrors);
            tracing::warn!(
                bytes = v.len(),
                max = self.max_value,
                "cluster: a record longer than cluster.max_value is not published"
            );
            return None;
        }
        Some(v)
    }
}

/// Changes drained but not published: the next session re-publishes the
/// tables whole.
fn feed_lost(feed: &sipwarden_core::state::Feed) {
    feed.ask_resync();
}

/// One step of HSCAN over `key` from `cursor`: the next cursor ("0" at the
/// end) and the fields and values, flat (field, value, field, value...).
async fn hscan_step(
    conn: &mut MultiplexedConnection,
    key: &str,
    cursor: &str,
) -> Result<(String, Vec<Vec<u8>>), String> {
    redis::cmd("HSCAN")
        .arg(key)
        .arg(cursor)
        .arg("COUNT")
        .arg(SCAN_COUNT)
        .query_async(conn)
        .await
        .map_err(|e| format!("HSCAN {key}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            redacted("redis://:s3cret@127.0.0.1:18379/0"),
            "redis://***@127.0.0.1:18379/0"
        );
        assert_eq!(
            redacted("rediss://user:pw@redis.example:6380"),
            "rediss://***@redis.example:6380"
        );
        assert_eq!(
            redacted("redis://127.0.0.1:18379"),
            "redis://127.0.0.1:18379"
        );
        assert_eq!(redacted("nonsense"), "nonsense");
    }

    #[test]
    fn a_host_name() {
        assert!(!host_name().is_empty());
    }
}
