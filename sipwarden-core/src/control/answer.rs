//! The answers to control requests, from the core's tables, settings and
//! counters and a clock value: pure functions the program's socket server
//! calls. `ban` and `unban` change the ban table (kept in the state file,
//! logged and counted); the rest only read.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::Dur;
use crate::flow::canonical_ip;
use crate::proxy::Core;
use crate::state::bans::{BanInfo, BansFull, Trigger};
use crate::state::Change;
use crate::time::UnixMs;
use crate::verdict::Disposition;

use super::protocol::{ErrorBody, ErrorCode, Request, Response, DEFAULT_LIMIT, MAX_LIMIT};

/// What the program knows that the core does not: passed with each
/// request.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// The program's version.
    pub version: String,
    pub started: UnixMs,
    /// `(role, address)` of every socket: `public`, `internal`, `backend`,
    /// `metrics`, `control`.
    pub sockets: Vec<(String, String)>,
    /// Open TCP connections.
    pub tcp_connections: usize,
    /// The last reload, if any.
    pub reload: Option<Reload>,
    /// This node's cluster, when `[cluster]` names a Redis.
    pub cluster: Option<ClusterContext>,
}

/// What the program knows of its cluster link.
#[derive(Clone, Debug, Default)]
pub struct ClusterContext {
    /// `cluster.name`, the key prefix.
    pub name: String,
    /// This node's name.
    pub node: String,
    /// The Redis URLs, without their passwords.
    pub servers: Vec<String>,
}

/// `sipwarden status`'s cluster part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub name: String,
    pub node: String,
    pub servers: Vec<String>,
    /// Redis reached now.
    pub up: bool,
    /// How long the last record from another node took (ms).
    pub lag_ms: u64,
    pub sent: u64,
    pub received: u64,
    pub rejected: u64,
    pub errors: u64,
    /// Changes waiting to be published.
    pub outbox: usize,
}

/// A reload and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reload {
    pub at: String,
    pub at_ms: UnixMs,
    /// `ok` or `refused`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The longest a manual ban may last, and the broadest network it may
/// name: a wider one is a `deny` in the config, reviewed like the rest.
pub const LONGEST_BAN_MS: u64 = 366 * 86_400_000;
pub const MIN_PREFIX_V4: u8 = 8;
pub const MIN_PREFIX_V6: u8 = 16;

/// Answers one request at `now`; counts it (`sipwarden_control_requests_total`).
pub fn answer(core: &Core, ctx: &Context, now: UnixMs, req: &Request) -> Response {
    let r = match req {
        Request::Status => Ok(Response::ok(status(core, ctx, now))),
        Request::Bans => Ok(Response::ok(bans(core, now))),
        Request::Ban { target, duration } => {
            ban(core, now, target, duration.as_deref()).map(Response::ok)
        }
        Request::Unban { target } => unban(core, now, target).map(Response::ok),
        Request::Trunks => Ok(Response::ok(trunks(core, now))),
        Request::Sources { limit } => Ok(Response::ok(sources(core, now, *limit))),
    };
    let r = r.unwrap_or_else(Response::error);
    core.metrics().control_request(req.name(), r.ok);
    r
}

/// A line that is no request: its error, counted as `invalid`.
pub fn refused(core: &Core, e: ErrorBody) -> Response {
    core.metrics().control_request("invalid", false);
    Response::error(e)
}

/// `sipwarden status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub started: String,
    pub started_ms: UnixMs,
    pub uptime_s: u64,
    /// `enforce` or `monitor`.
    pub mode: String,
    pub sockets: Vec<Socket>,
    pub rates: Rates,
    /// Messages since start, by disposition.
    pub totals: BTreeMap<String, u64>,
    pub tables: TableSizes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<Reload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Socket {
    pub role: String,
    pub address: String,
}

/// Messages per second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Seconds the `last_10s` figures span (less just after start).
    pub window_s: f64,
    /// By disposition, over the last 10 s.
    pub last_10s: BTreeMap<String, f64>,
    /// By disposition, since start.
    pub since_start: BTreeMap<String, f64>,
    /// By reason and disposition over the last 10 s, those with messages.
    pub by_reason: Vec<ReasonRate>,
    /// Per disposition, one rate per second of the last minute, oldest
    /// first (a sparkline's points).
    pub history: BTreeMap<String, Vec<f64>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReasonRate {
    pub reason: String,
    pub disposition: String,
    pub per_second: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSizes {
    pub bans: usize,
    pub ban_networks: usize,
    pub rate_sources: usize,
    pub dialogs: usize,
    pub registrations: usize,
    pub tcp_connections: usize,
}

/// Rounded to what a person reads: three decimals.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn status(core: &Core, ctx: &Context, now: UnixMs) -> Status {
    let s = core.settings();
    let m = core.metrics();
    let uptime_ms = now.since(ctx.started);
    let mut totals = BTreeMap::new();
    let mut since_start = BTreeMap::new();
    for d in Disposition::ALL {
        let n = m.total_by(d);
        totals.insert(d.as_str().to_string(), n);
        since_start.insert(
            d.as_str().to_string(),
            round(n as f64 / (uptime_ms.max(1000) as f64 / 1000.0)),
        );
    }
    let rates = core.with_history(|h| {
        let by = h.rates(10_000);
        let mut last_10s: BTreeMap<String, f64> = Disposition::ALL
            .iter()
            .map(|d| (d.as_str().to_string(), 0.0))
            .collect();
        for r in &by {
            *last_10s
                .entry(r.disposition.as_str().to_string())
                .or_default() += r.per_second;
        }
        for v in last_10s.values_mut() {
            *v = round(*v);
        }
        Rates {
            window_s: h.span_secs().min(10.0),
            last_10s,
            since_start,
            by_reason: by
                .iter()
                .map(|r| ReasonRate {
                    reason: r.reason.as_str().into(),
                    disposition: r.disposition.as_str().into(),
                    per_second: round(r.per_second),
                })
                .collect(),
            history: Disposition::ALL
                .iter()
                .map(|d| {
                    (
                        d.as_str().to_string(),
                        h.per_second(*d).into_iter().map(round).collect(),
                    )
                })
                .collect(),
        }
    });
    let t = core.tables();
    Status {
        version: ctx.version.clone(),
        started: ctx.started.rfc3339(),
        started_ms: ctx.started,
        uptime_s: uptime_ms / 1000,
        mode: if s.monitor { "monitor" } else { "enforce" }.into(),
        sockets: ctx
            .sockets
            .iter()
            .map(|(role, address)| Socket {
                role: role.clone(),
                address: address.clone(),
            })
            .collect(),
        rates,
        totals,
        tables: TableSizes {
            bans: t.bans.banned_count(now),
            ban_networks: t.bans.banned_nets(now).len(),
            rate_sources: t.rates.len(),
            dialogs: t.dialogs.len(),
            registrations: t.regs.len(),
            tcp_connections: ctx.tcp_connections,
        },
        reload: ctx.reload.clone(),
        cluster: ctx.cluster.as_ref().map(|c| {
            use crate::metrics::Event;
            ClusterStatus {
                name: c.name.clone(),
                node: c.node.clone(),
                servers: c.servers.clone(),
                up: m.cluster_up().unwrap_or(false),
                lag_ms: m.cluster_lag(),
                sent: m.events(Event::ClusterSent),
                received: m.events(Event::ClusterReceived),
                rejected: m.events(Event::ClusterRejected),
                errors: m.events(Event::ClusterErrors),
                outbox: t.feed.len(),
            }
        }),
    }
}

/// One ban, as `bans` lists it and `ban` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// An address, or a network (`198.51.100.0/24`).
    pub target: String,
    /// `rejects`, `auth-failures` or `manual`.
    pub trigger: String,
    pub since: String,
    pub since_ms: UnixMs,
    pub until: String,
    pub until_ms: UnixMs,
    pub left_s: u64,
}

/// `sipwarden bans`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bans {
    pub bans: Vec<Ban>,
}

fn target_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

fn ban_view(b: &BanInfo, now: UnixMs) -> Ban {
    Ban {
        target: target_text(&b.net),
        trigger: b.trigger.key().into(),
        since: b.since.rfc3339(),
        since_ms: b.since,
        until: b.until.rfc3339(),
        until_ms: b.until,
        left_s: b.until.since(now).div_ceil(1000),
    }
}

fn bans(core: &Core, now: UnixMs) -> Bans {
    let mut v = core.tables().bans.all_bans(now);
    // Those ending last first; then by target, for a stable listing.
    v.sort_by(|a, b| b.until.cmp(&a.until).then(a.net.cmp(&b.net)));
    Bans {
        bans: v.iter().map(|b| ban_view(b, now)).collect(),
    }
}

/// An address or a network named by a request, canonical: an IPv4-mapped
/// address is IPv4, a host prefix an address, host bits are cleared.
pub fn parse_target(s: &str) -> Result<IpNet, ErrorBody> {
    let bad = || {
        ErrorBody::new(
            ErrorCode::BadArgument,
            format!(
                "{:?} is not an address or a network: write e.g. 192.0.2.7, \
                 198.51.100.0/24 or 2001:db8::/48",
                s.chars().take(64).collect::<String>()
            ),
        )
    };
    let s = s.trim();
    let net = match s.parse::<IpAddr>() {
        Ok(ip) => IpNet::from(canonical_ip(ip)),
        Err(_) => {
            let n = s.parse::<IpNet>().map_err(|_| bad())?;
            match canonical_ip(n.addr()) {
                // ::ffff:a.b.c.d/n: the IPv4 network it maps.
                IpAddr::V4(v4) if n.addr().is_ipv6() => {
                    let len = n.prefix_len().saturating_sub(96);
                    IpNet::new(IpAddr::V4(v4), len).map_err(|_| bad())?
                }
                _ => n,
            }
        }
    };
    let net = net.trunc();
    let min = if net.addr().is_ipv4() {
        MIN_PREFIX_V4
    } else {
        MIN_PREFIX_V6
    };
    if net.prefix_len() < min {
        return Err(ErrorBody::new(
            ErrorCode::BadArgument,
            format!(
                "{net} is too broad for a ban (at most /{min}): put it in `deny` in the config"
            ),
        ));
    }
    Ok(net)
}

/// `sipwarden ban`'s answer: the ban made, and why it may not bite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Banned {
    pub ban: Ban,
    /// Set when the target is never banned whatever the table says: it is
    /// in `allow` or a trunk's range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exempt: Option<String>,
}

fn ban(
    core: &Core,
    now: UnixMs,
    target: &str,
    duration: Option<&str>,
) -> Result<Banned, ErrorBody> {
    let net = parse_target(target)?;
    let s = core.settings();
    let ms = match duration {
        None => s.ban.duration,
        Some(d) => d
            .parse::<Dur>()
            .map_err(|e| ErrorBody::new(ErrorCode::BadArgument, e))?
            .ms(),
    };
    if !(1000..=LONGEST_BAN_MS).contains(&ms) {
        return Err(ErrorBody::new(
            ErrorCode::BadArgument,
            "a ban lasts between 1s and 366d",
        ));
    }
    let until = now + ms;
    let bans = &core.tables().bans;
    let host = net.prefix_len() == net.max_prefix_len();
    let made = if host {
        bans.ban_address(net.addr(), Trigger::Manual, now, until)
    } else {
        bans.ban_network(net, Trigger::Manual, now, until)
    };
    if let Err(BansFull) = made {
        let key = if host {
            "ban.max_entries"
        } else {
            "ban.max_cidrs"
        };
        return Err(ErrorBody::new(
            ErrorCode::TableFull,
            format!("no room for another ban ({key})"),
        ));
    }
    core.tables().mark_dirty();
    core.tables().feed.push(Change::Ban(BanInfo {
        net,
        trigger: Trigger::Manual,
        since: now,
        until,
    }));
    let exempt = if s.is_allowed(net.addr()) {
        Some("in `allow`: never banned".to_string())
    } else {
        s.trunk_by_source(net.addr())
            .map(|t| format!("in the range of trunk {t}: never banned"))
    };
    tracing::warn!(
        ban = %target_text(&net),
        trigger = "manual",
        duration_s = ms / 1000,
        "banned by the control socket"
    );
    Ok(Banned {
        ban: ban_view(
            &BanInfo {
                net,
                trigger: Trigger::Manual,
                since: now,
                until,
            },
            now,
        ),
        exempt,
    })
}

/// `sipwarden unban`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbanned {
    pub target: String,
    /// Address bans lifted.
    pub addresses: Vec<String>,
    /// The network ban lifted, when a network was named.
    pub network: bool,
    /// Network bans that still hold the address named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub still_banned_by: Vec<String>,
}

fn unban(core: &Core, now: UnixMs, target: &str) -> Result<Unbanned, ErrorBody> {
    let net = parse_target(target)?;
    let l = core.tables().bans.unban(net, now);
    let text = target_text(&net);
    if l.addresses.is_empty() && !l.network {
        let mut m = format!("{text} is not banned");
        if !l.still_banned_by.is_empty() {
            let nets: Vec<String> = l.still_banned_by.iter().map(|n| n.to_string()).collect();
            m.push_str(&format!(
                " by address, but by {}: unban that",
                nets.join(", ")
            ));
        }
        return Err(ErrorBody::new(ErrorCode::NotBanned, m));
    }
    core.tables().mark_dirty();
    core.tables().feed.push(Change::Unban { net, at: now });
    tracing::warn!(
        ban = %text,
        addresses = l.addresses.len(),
        network = l.network,
        "unbanned by the control socket"
    );
    Ok(Unbanned {
        target: text,
        addresses: l.addresses.iter().map(|a| a.to_string()).collect(),
        network: l.network,
        still_banned_by: l.still_banned_by.iter().map(|n| n.to_string()).collect(),
    })
}

/// One trunk, as `sipwarden trunks` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trunk {
    pub name: String,
    /// In the config (`[[trunk]]`), or only named by Asterisk's REGISTERs.
    pub configured: bool,
    pub registrar: String,
    pub registered: bool,
    pub registrations: usize,
    /// The latest granted expiry, when there is a registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<UnixMs>,
    /// Seconds until `expires` (0 once past it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
    /// Addresses the registrar answered from or its name resolved to.
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_register: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_registered: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_invite: Option<String>,
}

/// `sipwarden trunks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trunks {
    pub trunks: Vec<Trunk>,
}

fn trunks(core: &Core, now: UnixMs) -> Trunks {
    let s = core.settings();
    let regs = &core.tables().regs;
    let mut names: Vec<(String, bool, String)> = s
        .config
        .trunks
        .iter()
        .map(|t| (t.name.clone(), true, t.registrar.clone()))
        .collect();
    for n in regs.trunk_names() {
        if !names.iter().any(|(m, _, _)| **m == *n) {
            names.push((n.to_string(), false, n.to_string()));
        }
    }
    let at = |t: Option<UnixMs>| t.map(UnixMs::rfc3339);
    Trunks {
        trunks: names
            .into_iter()
            .map(|(name, configured, registrar)| {
                let v = regs.trunk_view(&name, now);
                Trunk {
                    registered: v.registrations > 0,
                    registrations: v.registrations,
                    expires: at(v.expires),
                    expires_ms: v.expires,
                    expires_in_s: v.expires.map(|e| e.since(now) / 1000),
                    addresses: v.addresses.iter().map(|a| a.to_string()).collect(),
                    last_register: at(v.activity.register_sent),
                    last_registered: at(v.activity.registered),
                    last_invite: at(v.activity.invite),
                    name,
                    configured,
                    registrar,
                }
            })
            .collect(),
    }
}

/// One source of `sipwarden sources`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub source: String,
    pub messages: u64,
    /// `messages` may over-count by this much (the sketch's bound).
    pub error: u64,
    pub rejects: u64,
    /// Rejections by reason, the most frequent first.
    pub reasons: BTreeMap<String, u64>,
    /// The most frequent reason, if any was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_reason: Option<String>,
    pub banned: bool,
}

/// `sipwarden sources`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    /// Seconds covered: the current and the previous 30-second window.
    pub window_s: u64,
    pub by_messages: Vec<Source>,
    pub by_rejects: Vec<Source>,
}

fn sources(core: &Core, now: UnixMs, limit: Option<usize>) -> Sources {
    let limit = limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let t = core.tables();
    let (m, r) = t.top.top(now, limit);
    let view = |x: &crate::state::top::TopSource| Source {
        source: x.ip.to_string(),
        messages: x.messages,
        error: x.error,
        rejects: x.rejects,
        reasons: x
            .reasons
            .iter()
            .map(|(r, n)| (r.as_str().to_string(), *n))
            .collect(),
        top_reason: x.reasons.first().map(|(r, _)| r.as_str().to_string()),
        banned: t.bans.is_banned(x.ip, now),
    };
    let window = crate::state::top::WINDOW_MS;
    Sources {
        window_s: (now.0 % window + window) / 1000,
        by_messages: m.iter().map(view).collect(),
        by_rejects: r.iter().map(view).collect(),
    }
}

/// The trunk gauges of the metrics endpoint, one series per configured
/// `[[trunk]]`: `sipwarden_trunk_registered` (1 or 0) and
/// `sipwarden_trunk_registration_expiry_timestamp_seconds` (the latest
/// granted expiry; 0 when not registered).
pub fn trunk_metrics(core: &Core, now: UnixMs) -> String {
    use std::fmt::Write;
    let s = core.settings();
    let regs = &core.tables().regs;
    let mut reg = String::new();
    let mut exp = String::new();
    for t in &s.config.trunks {
        let v = regs.trunk_view(&t.name, now);
        let name = label_value(&t.name);
        let registered = v.registrations > 0;
        let _ = writeln!(
            reg,
            "sipwarden_trunk_registered{{trunk=\"{name}\"}} {}",
            u8::from(registered)
        );
        let e = match v.expires {
            Some(e) if registered => e.0 / 1000,
            _ => 0,
        };
        let _ = writeln!(
            exp,
            "sipwarden_trunk_registration_expiry_timestamp_seconds{{trunk=\"{name}\"}} {e}"
        );
    }
    if reg.is_empty() {
        return String::new();
    }
    format!(
        "# HELP sipwarden_trunk_registered Whether the trunk has a registration in force (1) or not (0)\n\
         # TYPE sipwarden_trunk_registered gauge\n{reg}\
         # HELP sipwarden_trunk_registration_expiry_timestamp_seconds When the trunk's latest registration expires (Unix time; 0 when not registered)\n\
         # TYPE sipwarden_trunk_registration_expiry_timestamp_seconds gauge\n{exp}"
    )
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
