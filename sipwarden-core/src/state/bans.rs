//! Inline auto-ban: a source is banned after too many rejected messages,
//! or too many failed authentications at Asterisk, within a window. No log
//! parsing: sipwarden sees the real source address, which Asterisk behind
//! a proxy (and fail2ban reading its log) no longer does.

use crate::time::UnixMs;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use ipnet::IpNet;

use super::Restore;

/// Credentials whose failure a source has had counted, per window: the
/// answers to a slow backend's retransmissions count once. As many as the
/// default `ban.after_auth_failures` less one: the next distinct failure
/// bans anyway.
const RECENT: usize = 4;

/// Counting state of one source.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    window_start: UnixMs,
    rejects: u32,
    auth_failures: u32,
    /// `UnixMs::ZERO` when not banned.
    banned_until: UnixMs,
    /// When the ban in force began.
    banned_at: UnixMs,
    /// Keys of the last failed credentials counted (0 = empty).
    recent: [u32; RECENT],
    /// Why it is banned (kept in the state file).
    trigger: Option<Trigger>,
}

/// Thresholds, from `[ban]`.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub after_rejects: u32,
    pub after_auth_failures: u32,
    /// How long the counts run (ms).
    pub window: u64,
    /// How long a ban lasts (ms).
    pub duration: u64,
}

/// Why a source was banned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Rejects,
    AuthFailures,
    /// An operator's `sipwarden ban` on the control socket.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Rejects => "rejected messages",
            Trigger::AuthFailures => "authentication failures",
            Trigger::Manual => "manual",
        }
    }

    /// Its name in the state file and on the control socket.
    pub fn key(self) -> &'static str {
        match self {
            Trigger::Rejects => "rejects",
            Trigger::AuthFailures => "auth-failures",
            Trigger::Manual => "manual",
        }
    }

    pub fn from_key(s: &str) -> Option<Trigger> {
        match s {
            "rejects" => Some(Trigger::Rejects),
            "auth-failures" => Some(Trigger::AuthFailures),
            "manual" => Some(Trigger::Manual),
            _ => None,
        }
    }
}

/// A ban in force, as the control socket and the state file show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanInfo {
    /// A source address, or a network banned by an operator.
    pub net: IpNet,
    pub trigger: Trigger,
    /// When it began.
    pub since: UnixMs,
    /// When it ends.
    pub until: UnixMs,
}

/// What an unban lifted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lifted {
    /// Address bans removed (the address, or every one inside the network).
    pub addresses: Vec<IpAddr>,
    /// The network ban removed, when a network was named.
    pub network: bool,
    /// Network bans that still hold the address named.
    pub still_banned_by: Vec<IpNet>,
}

/// The network ban list is at `ban.max_cidrs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BansFull;

/// The ban table, bounded by `ban.max_entries`.
pub struct Bans {
    map: DashMap<IpAddr, Entry, ahash::RandomState>,
    cap: AtomicUsize,
    /// Entries in `map`, for the cap check of a new source.
    count: super::EntryCount,
    /// Last time room was made in a full table (at most once a second).
    last_room: AtomicU64,
    /// Networks banned by an operator: a short list (`ban.max_cidrs`),
    /// read without a lock by every message, replaced whole on a change.
    cidrs: ArcSwap<Vec<BanInfo>>,
    /// `cidrs` may hold entries: without network bans a message pays one
    /// load of a flag that never changes.
    any_cidr: AtomicBool,
    cidr_cap: AtomicUsize,
    /// Serializes the changes of `cidrs` (control requests, the sweep).
    cidr_write: Mutex<()>,
}

impl Bans {
    pub fn new(cap: usize) -> Bans {
        Bans {
            map: DashMap::with_hasher(ahash::RandomState::new()),
            cap: AtomicUsize::new(cap.max(1)),
            count: super::EntryCount::default(),
            last_room: AtomicU64::new(0),
            cidrs: ArcSwap::from_pointee(Vec::new()),
            any_cidr: AtomicBool::new(false),
            cidr_cap: AtomicUsize::new(256),
            cidr_write: Mutex::new(()),
        }
    }

    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap.max(1), Relaxed);
    }

    /// `ban.max_cidrs`: network bans already made are kept.
    pub fn set_cidr_cap(&self, cap: usize) {
        self.cidr_cap.store(cap, Relaxed);
    }

    /// Sources tracked (banned or counting).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Sources banned now.
    pub fn banned_count(&self, now: UnixMs) -> usize {
        self.map.iter().filter(|e| e.banned_until > now).count()
    }

    /// Step 2: is the source banned now, by its address or a network?
    #[inline]
    pub fn is_banned(&self, ip: IpAddr, now: UnixMs) -> bool {
        self.map.get(&ip).is_some_and(|e| e.banned_until > now)
            || (self.any_cidr.load(Relaxed) && self.in_banned_net(ip, now))
    }

    #[cold]
    fn in_banned_net(&self, ip: IpAddr, now: UnixMs) -> bool {
        self.cidrs
            .load()
            .iter()
            .any(|b| b.until > now && b.net.contains(&ip))
    }

    /// Network bans in force at `now`.
    pub fn banned_nets(&self, now: UnixMs) -> Vec<BanInfo> {
        self.cidrs
            .load()
            .iter()
            .filter(|b| b.until > now)
            .copied()
            .collect()
    }

    /// Bans `ip` from `now` until `until`, whatever it was counting (an
    /// operator's ban replaces an automatic one). Refused only when the
    /// table is full of bans.
    pub fn ban_address(
        &self,
        ip: IpAddr,
        trigger: Trigger,
        now: UnixMs,
        until: UnixMs,
    ) -> Result<(), BansFull> {
        if !self.map.contains_key(&ip) && self.count.get() >= self.cap.load(Relaxed) {
            self.make_room(now);
            if self.count.get() >= self.cap.load(Relaxed) {
                return Err(BansFull);
            }
        }
        let mut e = self.entry(ip);
        e.window_start = now;
        e.rejects = 0;
        e.auth_failures = 0;
        e.recent = [0; RECENT];
        e.banned_at = now;
        e.banned_until = until;
        e.trigger = Some(trigger);
        Ok(())
    }

    /// Bans the network `net` (a prefix shorter than a host's) from `now`
    /// until `until`; the same network again replaces its entry. Refused
    /// at `ban.max_cidrs` network bans in force.
    pub fn ban_network(
        &self,
        net: IpNet,
        trigger: Trigger,
        now: UnixMs,
        until: UnixMs,
    ) -> Result<(), BansFull> {
        let net = net.trunc();
        let _w = self.cidr_write.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<BanInfo> = self
            .cidrs
            .load()
            .iter()
            .filter(|b| b.until > now && b.net != net)
            .copied()
            .collect();
        if v.len() >= self.cidr_cap.load(Relaxed) {
            return Err(BansFull);
        }
        v.push(BanInfo {
            net,
            trigger,
            since: now,
            until,
        });
        self.store_nets(v);
        Ok(())
    }

    fn store_nets(&self, v: Vec<BanInfo>) {
        self.any_cidr.store(!v.is_empty(), Relaxed);
        self.cidrs.store(Arc::new(v));
    }

    /// When the ban of `net` in force at `now` began: the address's own
    /// ban for a host, the network's for a network; `None` when none.
    pub fn ban_since(&self, net: IpNet, now: UnixMs) -> Option<UnixMs> {
        let net = net.trunc();
        if net.prefix_len() == net.max_prefix_len() {
            self.map
                .get(&net.addr())
                .filter(|e| e.banned_until > now)
                .map(|e| e.banned_at)
        } else {
            self.cidrs
                .load()
                .iter()
                .find(|b| b.net == net && b.until > now)
                .map(|b| b.since)
        }
    }

    /// Lifts the ban of an address (automatic or not), or of a network
    /// and of every address banned inside it. An address also inside a
    /// banned network stays banned by it: [`Lifted::still_banned_by`].
    pub fn unban(&self, net: IpNet, now: UnixMs) -> Lifted {
        let net = net.trunc();
        let mut lifted = Lifted::default();
        let host = net.prefix_len() == net.max_prefix_len();
        if host {
            let ip = net.addr();
            if self
                .map
                .remove_if(&ip, |_, e| e.banned_until > now)
                .is_some()
            {
                self.count.removed();
                lifted.addresses.push(ip);
            }
        } else {
            self.map.retain(|ip, e| {
                if e.banned_until > now && net.contains(ip) {
                    lifted.addresses.push(*ip);
                    false
                } else {
                    true
                }
            });
            self.count.set(self.map.len());
        }
        let _w = self.cidr_write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.cidrs.load_full();
        let mut kept = Vec::with_capacity(old.len());
        for b in old.iter().filter(|b| b.until > now) {
            if b.net == net {
                lifted.network = true;
            } else {
                if host && b.net.contains(&net.addr()) {
                    lifted.still_banned_by.push(b.net);
                }
                kept.push(*b);
            }
        }
        if kept.len() != old.len() {
            self.store_nets(kept);
        }
        lifted.addresses.sort();
        lifted
    }

    /// Counts one event; returns the trigger when it bans the source.
    /// `enforce = false` (monitor mode) counts and reports but bans not.
    /// `key` names the credentials of a failed authentication (0: none):
    /// the same credentials failing again within the window add nothing.
    fn record(
        &self,
        ip: IpAddr,
        now: UnixMs,
        p: &Policy,
        auth: bool,
        enforce: bool,
        key: u32,
    ) -> Option<Trigger> {
        let limit = if auth {
            p.after_auth_failures
        } else {
            p.after_rejects
        };
        if limit == 0 {
            return None;
        }
        if !self.map.contains_key(&ip) && self.count.get() >= self.cap.load(Relaxed) {
            if super::once_a_second(&self.last_room, now) {
                self.make_room(now);
            }
            if self.count.get() >= self.cap.load(Relaxed) {
                return None;
            }
        }
        let mut e = self.entry(ip);
        if e.banned_until > now {
            return None;
        }
        if now.since(e.window_start) >= p.window {
            e.window_start = now;
            e.rejects = 0;
            e.auth_failures = 0;
            e.recent = [0; RECENT];
        }
        let n = if auth {
            if key != 0 {
                if e.recent.contains(&key) {
                    return None;
                }
                let at = e.auth_failures as usize % RECENT;
                e.recent[at] = key;
            }
            e.auth_failures += 1;
            e.auth_failures
        } else {
            e.rejects += 1;
            e.rejects
        };
        if n < limit {
            return None;
        }
        e.rejects = 0;
        e.auth_failures = 0;
        e.recent = [0; RECENT];
        e.window_start = now;
        let trigger = if auth {
            Trigger::AuthFailures
        } else {
            Trigger::Rejects
        };
        if enforce {
            e.banned_at = now;
            e.banned_until = now + p.duration;
            e.trigger = Some(trigger);
        }
        Some(trigger)
    }

    /// The bans in force at `now`: source, trigger, end. At most
    /// `ban.max_entries`, the table's cap.
    pub fn banned(&self, now: UnixMs) -> Vec<(IpAddr, Trigger, UnixMs)> {
        self.map
            .iter()
            .filter(|e| e.banned_until > now)
            .map(|e| {
                (
                    *e.key(),
                    e.trigger.unwrap_or(Trigger::Rejects),
                    e.banned_until,
                )
            })
            .collect()
    }

    /// Every ban in force at `now`, addresses and networks, with when
    /// each began.
    pub fn all_bans(&self, now: UnixMs) -> Vec<BanInfo> {
        let mut v: Vec<BanInfo> = self
            .map
            .iter()
            .filter(|e| e.banned_until > now)
            .map(|e| BanInfo {
                net: IpNet::from(*e.key()),
                trigger: e.trigger.unwrap_or(Trigger::Rejects),
                since: e.banned_at,
                until: e.banned_until,
            })
            .collect();
        v.extend(self.banned_nets(now));
        v
    }

    /// Puts back a ban from the state file, ending at `until`, but
    /// never later than `longest` from now: a clock set back while the
    /// process was down must not stretch a ban.
    pub fn restore(
        &self,
        ip: IpAddr,
        trigger: Trigger,
        until: UnixMs,
        now: UnixMs,
        longest: u64,
    ) -> Restore {
        self.restore_since(ip, trigger, now, until, now, longest)
    }

    /// [`Bans::restore`] of a ban that began at `since`.
    pub fn restore_since(
        &self,
        ip: IpAddr,
        trigger: Trigger,
        since: UnixMs,
        until: UnixMs,
        now: UnixMs,
        longest: u64,
    ) -> Restore {
        if until <= now {
            return Restore::Expired;
        }
        if !self.map.contains_key(&ip) && self.count.get() >= self.cap.load(Relaxed) {
            return Restore::OverCap;
        }
        let mut e = self.entry(ip);
        e.window_start = now;
        e.banned_at = since.min(now);
        e.banned_until = until.min(now.saturating_add(longest));
        e.trigger = Some(trigger);
        Restore::Kept
    }

    /// Puts back a network ban from the state file, ending at `until` but
    /// never later than `longest` from now.
    pub fn restore_network(&self, b: BanInfo, now: UnixMs, longest: u64) -> Restore {
        if b.until <= now {
            return Restore::Expired;
        }
        let until = b.until.min(now.saturating_add(longest));
        match self.ban_network(b.net, b.trigger, b.since.min(now), until) {
            Ok(()) => Restore::Kept,
            Err(BansFull) => Restore::OverCap,
        }
    }

    pub fn reject(&self, ip: IpAddr, now: UnixMs, p: &Policy, enforce: bool) -> Option<Trigger> {
        self.record(ip, now, p, false, enforce, 0)
    }

    /// A failed authentication of the credentials `key` names (0: unknown,
    /// always counted).
    pub fn auth_failure(
        &self,
        ip: IpAddr,
        now: UnixMs,
        p: &Policy,
        enforce: bool,
        key: u32,
    ) -> Option<Trigger> {
        self.record(ip, now, p, true, enforce, key)
    }

    /// Lifts expired bans and forgets stale counters. Returns the sources
    /// whose ban ended.
    pub fn sweep(&self, now: UnixMs, window: u64) -> Vec<IpAddr> {
        if self.any_cidr.load(Relaxed) {
            let _w = self.cidr_write.lock().unwrap_or_else(|e| e.into_inner());
            let old = self.cidrs.load_full();
            if old.iter().any(|b| b.until <= now) {
                let kept = old.iter().filter(|b| b.until > now).copied().collect();
                self.store_nets(kept);
            }
        }
        let mut lifted = Vec::new();
        self.map.retain(|ip, e| {
            if e.banned_until != UnixMs::ZERO && e.banned_until <= now {
                lifted.push(*ip);
                return false;
            }
            e.banned_until > now || now.since(e.window_start) < window
        });
        self.count.set(self.map.len());
        lifted
    }

    /// The source's entry, made (and counted toward the cap) if new; the
    /// caller has checked the cap.
    fn entry(&self, ip: IpAddr) -> dashmap::mapref::one::RefMut<'_, IpAddr, Entry> {
        match self.map.entry(ip) {
            dashmap::Entry::Occupied(o) => o.into_ref(),
            dashmap::Entry::Vacant(v) => {
                self.count.added();
                v.insert(Entry::default())
            }
        }
    }

    /// At the cap: drop counters of unbanned sources (bans are kept).
    fn make_room(&self, now: UnixMs) {
        self.map.retain(|_, e| e.banned_until > now);
        self.count.set(self.map.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        after_rejects: 3,
        after_auth_failures: 2,
        window: 60_000,
        duration: 900_000,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bans_after_n_within_the_window_and_expires() {
        let b = Bans::new(10);
        let a = ip("192.0.2.1");
        assert_eq!(b.reject(a, UnixMs(0), &P, true), None);
        assert_eq!(b.reject(a, UnixMs(1000), &P, true), None);
        // The window restarts: older rejects no longer count.
        assert_eq!(b.reject(a, UnixMs(61_000), &P, true), None);
        assert_eq!(b.reject(a, UnixMs(62_000), &P, true), None);
        assert_eq!(
            b.reject(a, UnixMs(63_000), &P, true),
            Some(Trigger::Rejects)
        );
        assert!(b.is_banned(a, UnixMs(63_000)));
        assert!(b.is_banned(a, UnixMs(63_000 + 899_999)));
        assert!(b.sweep(UnixMs(63_000 + 899_999), P.window).is_empty());
        assert_eq!(b.sweep(UnixMs(63_000 + 900_000), P.window), vec![a]);
        assert!(!b.is_banned(a, UnixMs(63_000 + 900_000)));
    }

    #[test]
    fn auth_failures_and_monitor_mode() {
        let b = Bans::new(10);
        let a = ip("2001:db8::1");
        assert_eq!(b.auth_failure(a, UnixMs(0), &P, false, 0), None);
        assert_eq!(
            b.auth_failure(a, UnixMs(10), &P, false, 0),
            Some(Trigger::AuthFailures)
        );
        assert!(
            !b.is_banned(a, UnixMs(20)),
            "monitor mode reports, never bans"
        );
        assert_eq!(b.auth_failure(a, UnixMs(30), &P, true, 0), None);
        assert_eq!(
            b.auth_failure(a, UnixMs(40), &P, true, 0),
            Some(Trigger::AuthFailures)
        );
        assert!(b.is_banned(a, UnixMs(50)));
        let off = Policy {
            after_auth_failures: 0,
            ..P
        };
        assert_eq!(
            b.auth_failure(ip("192.0.2.9"), UnixMs(0), &off, true, 0),
            None
        );
    }

    #[test]
    fn the_same_credentials_failing_again_count_once() {
        let b = Bans::new(10);
        let a = ip("192.0.2.5");
        let p = Policy {
            after_auth_failures: 3,
            ..P
        };
        // Key 7 answered four times (a retransmitted request): one failure.
        for t in 0..4 {
            assert_eq!(b.auth_failure(a, UnixMs(t), &p, true, 7), None);
        }
        assert_eq!(b.auth_failure(a, UnixMs(10), &p, true, 8), None);
        assert_eq!(b.auth_failure(a, UnixMs(11), &p, true, 8), None);
        assert_eq!(b.auth_failure(a, UnixMs(12), &p, true, 7), None);
        // A third distinct key bans.
        assert_eq!(
            b.auth_failure(a, UnixMs(20), &p, true, 9),
            Some(Trigger::AuthFailures)
        );
        // Unknown credentials (0) always count.
        let c = ip("192.0.2.6");
        assert_eq!(b.auth_failure(c, UnixMs(0), &p, true, 0), None);
        assert_eq!(b.auth_failure(c, UnixMs(1), &p, true, 0), None);
        assert_eq!(
            b.auth_failure(c, UnixMs(2), &p, true, 0),
            Some(Trigger::AuthFailures)
        );
        // The memory is per window: the same key a window later counts.
        let d = ip("192.0.2.7");
        assert_eq!(b.auth_failure(d, UnixMs(0), &p, true, 5), None);
        assert_eq!(b.auth_failure(d, UnixMs(1), &p, true, 6), None);
        assert_eq!(b.auth_failure(d, UnixMs(P.window), &p, true, 5), None);
        assert_eq!(b.auth_failure(d, UnixMs(P.window + 1), &p, true, 6), None);
        assert_eq!(b.auth_failure(d, UnixMs(P.window + 2), &p, true, 5), None);
        assert_eq!(
            b.auth_failure(d, UnixMs(P.window + 3), &p, true, 4),
            Some(Trigger::AuthFailures)
        );
    }

    #[test]
    fn banned_and_restored_with_trigger_and_cap() {
        let b = Bans::new(2);
        let a = ip("192.0.2.1");
        for t in 0..2 {
            b.auth_failure(a, UnixMs(t), &P, true, 0);
        }
        assert_eq!(
            b.banned(UnixMs(10)),
            vec![(a, Trigger::AuthFailures, UnixMs(1 + 900_000))]
        );
        assert!(b.banned(UnixMs(1 + 900_000)).is_empty());

        let r = Bans::new(2);
        let now = 1_000_000;
        assert_eq!(
            r.restore(
                a,
                Trigger::AuthFailures,
                UnixMs(now),
                UnixMs(now),
                P.duration
            ),
            Restore::Expired
        );
        assert_eq!(
            r.restore(
                a,
                Trigger::AuthFailures,
                UnixMs(now + 5),
                UnixMs(now),
                P.duration
            ),
            Restore::Kept
        );
        assert!(r.is_banned(a, UnixMs(now + 4)) && !r.is_banned(a, UnixMs(now + 5)));
        // Clock went back: no longer than the duration from now.
        let c = ip("192.0.2.3");
        assert_eq!(
            r.restore(
                c,
                Trigger::Rejects,
                UnixMs(u64::MAX),
                UnixMs(now),
                P.duration
            ),
            Restore::Kept
        );
        assert_eq!(
            r.banned(UnixMs(now)).iter().find(|x| x.0 == c).map(|x| x.2),
            Some(UnixMs(now + P.duration))
        );
        assert_eq!(
            r.restore(
                ip("192.0.2.4"),
                Trigger::Rejects,
                UnixMs(now + 9),
                UnixMs(now),
                P.duration
            ),
            Restore::OverCap
        );
        assert_eq!(r.len(), 2);
        assert_eq!(
            Trigger::from_key(Trigger::AuthFailures.key()),
            Some(Trigger::AuthFailures)
        );
        assert_eq!(
            Trigger::from_key(Trigger::Rejects.key()),
            Some(Trigger::Rejects)
        );
        assert_eq!(Trigger::from_key("other"), None);
    }

    #[test]
    fn bounded_keeping_bans() {
        let b = Bans::new(4);
        let banned = ip("192.0.2.100");
        for t in 0..3 {
            b.reject(banned, UnixMs(t), &P, true);
        }
        for i in 0..100u8 {
            b.reject(
                IpAddr::from([198, 51, 100, i]),
                UnixMs(1000 + u64::from(i)),
                &P,
                true,
            );
        }
        assert!(b.len() <= 4);
        assert!(b.is_banned(banned, UnixMs(20)));
    }
}
