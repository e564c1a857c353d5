//! Trunk registrations: what Asterisk registered with which provider, until
//! when. This is what the iptables trick loses when a conntrack entry
//! expires: here an entry lives exactly as long as the registration the
//! registrar granted (plus a grace period), and admits the provider's
//! INVITEs by their Contact token (step 6) or source address (step 7).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::flow::Transport;
use crate::time::UnixMs;

use super::Restore;

/// One registration: a Contact sipwarden rewrote, keyed by its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrunkReg {
    pub trunk: Arc<str>,
    /// Registrar host as Asterisk addressed it (Request-URI host).
    pub registrar: Arc<str>,
    /// Asterisk's own Contact URI, to restore on inbound INVITEs.
    pub contact: String,
    /// When the granted registration expires, before grace.
    pub expires: UnixMs,
    /// Where the registrar answered from: keepalives go there.
    pub registrar_addr: SocketAddr,
    pub transport: Transport,
    /// Listener the REGISTER left from (UDP keepalives use it).
    pub listener: Option<u8>,
}

/// A REGISTER sent, waiting for its final answer.
#[derive(Clone, Debug)]
struct Pending {
    token: Arc<str>,
    trunk: Arc<str>,
    registrar: Arc<str>,
    contact: String,
    /// Expiry asked for (seconds), used when the 2xx names none.
    asked_secs: u64,
    transport: Transport,
    listener: Option<u8>,
    until: UnixMs,
}

/// Source addresses learned for a trunk (registrar answers, DNS).
#[derive(Clone, Debug)]
struct Source {
    trunk: Arc<str>,
    /// Until when the address itself is known (DNS TTL, or forever for
    /// an address that answered a REGISTER).
    until: UnixMs,
}

/// What a live registration's Contact token admits (step 6): the trunk
/// it belongs to, and the Contact Asterisk registered, restored as the
/// Request-URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredContact {
    pub trunk: Arc<str>,
    pub contact: String,
}

/// When a trunk was last active, for `sipwarden trunks`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// The last REGISTER Asterisk sent to it through us.
    pub register_sent: Option<UnixMs>,
    /// The last 2xx its registrar gave a REGISTER.
    pub registered: Option<UnixMs>,
    /// The last INVITE admitted from it (`trunk`, `trunk-contact`).
    pub invite: Option<UnixMs>,
}

/// One trunk as `sipwarden trunks` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrunkView {
    /// Registrations in force (not yet at their granted expiry).
    pub registrations: usize,
    /// The latest granted expiry among its registrations, even past it
    /// (within the grace period).
    pub expires: Option<UnixMs>,
    /// Addresses its registrar answered from or its name resolved to.
    pub addresses: Vec<IpAddr>,
    pub activity: Activity,
}

/// The registration table is at `registration.max_entries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationsFull;

/// How long an unanswered REGISTER is remembered.
const PENDING_MS: u64 = 64_000;

/// The registration tables.
pub struct Registrations {
    by_token: DashMap<Arc<str>, TrunkReg>,
    /// The latest expiry among each trunk's registrations: step 7 asks it
    /// for every message from a trunk's address, which must not walk the
    /// whole table. Recomputed when a registration of the trunk changes
    /// (a REGISTER's answer, a restore) and in the sweep.
    trunk_until: DashMap<Arc<str>, UnixMs>,
    pending: DashMap<u128, Pending>,
    sources: DashMap<IpAddr, Source, ahash::RandomState>,
    /// `sources` may have entries: every public message asks step 7, and
    /// without trunks the answer must not cost a shard lock (a write to a
    /// line every worker shares).
    any_source: AtomicBool,
    /// When each live registration last had a CRLF keepalive sent:
    /// one entry per live registration at most (see `due_keepalives`).
    keepalive_at: DashMap<Arc<str>, UnixMs>,
    /// Per trunk name: bounded by the cap, as trunk names come from
    /// Asterisk's REGISTERs (a configured name or a registrar host).
    activity: DashMap<Arc<str>, Activity>,
    cap: AtomicUsize,
}

impl Registrations {
    pub fn new(cap: usize) -> Registrations {
        Registrations {
            by_token: DashMap::new(),
            trunk_until: DashMap::new(),
            pending: DashMap::new(),
            sources: DashMap::with_hasher(ahash::RandomState::new()),
            any_source: AtomicBool::new(false),
            keepalive_at: DashMap::new(),
            activity: DashMap::new(),
            cap: AtomicUsize::new(cap.max(1)),
        }
    }

    /// Notes an event of a trunk's (`f` sets its time), unless the table
    /// of trunks is full.
    fn active(&self, trunk: &str, f: impl FnOnce(&mut Activity)) {
        if let Some(mut a) = self.activity.get_mut(trunk) {
            f(&mut a);
            return;
        }
        if self.activity.len() >= self.cap.load(Relaxed) {
            return;
        }
        f(self.activity.entry(trunk.into()).or_default().value_mut());
    }

    /// An INVITE from the trunk was admitted at `now`.
    pub fn invite_admitted(&self, trunk: &str, now: UnixMs) {
        self.active(trunk, |a| a.invite = Some(now));
    }

    /// What is known of `trunk` at `now`.
    pub fn trunk_view(&self, trunk: &str, now: UnixMs) -> TrunkView {
        let mut v = TrunkView {
            activity: self.activity.get(trunk).map(|a| *a).unwrap_or_default(),
            ..TrunkView::default()
        };
        for r in self.by_token.iter().filter(|r| &*r.trunk == trunk) {
            if r.expires > now {
                v.registrations += 1;
            }
            v.expires = v.expires.max(Some(r.expires));
            v.addresses.push(r.registrar_addr.ip());
        }
        for s in self.sources.iter() {
            if &*s.trunk == trunk && s.until > now {
                v.addresses.push(*s.key());
            }
        }
        v.addresses.sort();
        v.addresses.dedup();
        v
    }

    /// Every trunk name with a registration or activity, sorted.
    pub fn trunk_names(&self) -> Vec<Arc<str>> {
        let mut v: Vec<Arc<str>> = self.by_token.iter().map(|r| r.trunk.clone()).collect();
        v.extend(self.activity.iter().map(|a| a.key().clone()));
        v.sort();
        v.dedup();
        v
    }

    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap.max(1), Relaxed);
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    /// Asterisk sent a REGISTER (keyed by a hash of its Call-ID). False
    /// when the table is full.
    #[allow(clippy::too_many_arguments)]
    pub fn sent(
        &self,
        call: u128,
        token: &str,
        trunk: &str,
        registrar: &str,
        contact: String,
        asked_secs: u64,
        transport: Transport,
        listener: Option<u8>,
        now: UnixMs,
    ) -> bool {
        self.active(trunk, |a| a.register_sent = Some(now));
        let cap = self.cap.load(Relaxed);
        if self.pending.len() >= cap {
            // Only Asterisk sends REGISTERs here, but stay linear anyway:
            // expired ones go in the periodic sweep.
            return false;
        }
        self.pending.insert(
            call,
            Pending {
                token: token.into(),
                trunk: trunk.into(),
                registrar: registrar.into(),
                contact,
                asked_secs,
                transport,
                listener,
                until: now + PENDING_MS,
            },
        );
        true
    }

    /// The token a pending REGISTER used, to find our Contact in its 2xx.
    pub fn pending_token(&self, call: u128) -> Option<Arc<str>> {
        self.pending.get(&call).map(|p| p.token.clone())
    }

    /// A final answer to a pending REGISTER. `Err(RegistrationsFull)` when
    /// the table has no room for a new registration. `granted_secs`: the
    /// expiry the 2xx gave our Contact, if it named one. Returns the registration
    /// stored, or `None` when it was removed or nothing was pending.
    pub fn answered(
        &self,
        call: u128,
        code: u16,
        granted_secs: Option<u64>,
        from: SocketAddr,
        now: UnixMs,
    ) -> Result<Option<TrunkReg>, RegistrationsFull> {
        if !(200..=299).contains(&code) {
            // A challenge: Asterisk answers it with the same Call-ID.
            return Ok(None);
        }
        let Some((_, p)) = self.pending.remove(&call) else {
            return Ok(None);
        };
        let secs = granted_secs.unwrap_or(p.asked_secs);
        if secs == 0 {
            if let Some((_, old)) = self.by_token.remove(&p.token) {
                self.expiry_changed(&p.trunk, Some(old.expires), None);
            }
            return Ok(None);
        }
        if !self.by_token.contains_key(&p.token) && self.by_token.len() >= self.cap.load(Relaxed) {
            return Err(RegistrationsFull);
        }
        let reg = TrunkReg {
            trunk: p.trunk.clone(),
            registrar: p.registrar,
            contact: p.contact,
            expires: now + secs * 1000,
            registrar_addr: from,
            transport: p.transport,
            listener: p.listener,
        };
        let old = self.by_token.insert(p.token, reg.clone());
        self.expiry_changed(&reg.trunk, old.map(|o| o.expires), Some(reg.expires));
        self.active(&reg.trunk, |a| a.registered = Some(now));
        self.add_source(
            from.ip(),
            Source {
                trunk: p.trunk,
                until: UnixMs::NEVER,
            },
        );
        Ok(Some(reg))
    }

    /// DNS results for a registrar host: more addresses of that trunk.
    pub fn learn_addresses(&self, trunk: &str, addrs: &[IpAddr], until: UnixMs) {
        let trunk: Arc<str> = trunk.into();
        for ip in addrs {
            let keep_forever = self
                .sources
                .get(ip)
                .is_some_and(|s| s.until == UnixMs::NEVER && *s.trunk == *trunk);
            if !keep_forever {
                self.add_source(
                    *ip,
                    Source {
                        trunk: trunk.clone(),
                        until,
                    },
                );
            }
        }
    }

    fn live(&self, trunk: &str, now: UnixMs, grace: u64) -> bool {
        self.trunk_until
            .get(trunk)
            .is_some_and(|until| *until + grace > now)
    }

    /// One of a trunk's registrations changed expiry from `old` to `new`
    /// (`None`: there was none / it is gone). Keeps the trunk's latest
    /// expiry in O(1), except when the registration that held it shrinks
    /// or goes: then the table is walked, once per such REGISTER answer.
    fn expiry_changed(&self, trunk: &Arc<str>, old: Option<UnixMs>, new: Option<UnixMs>) {
        // Under the entry's lock, so that two answers at once cannot
        // leave the smaller of them.
        match self.trunk_until.entry(trunk.clone()) {
            Entry::Vacant(v) => {
                if let Some(n) = new {
                    v.insert(n);
                }
            }
            Entry::Occupied(mut o) => {
                let latest = *o.get();
                match new {
                    Some(n) if n >= latest => *o.get_mut() = n,
                    _ if old == Some(latest) => {
                        drop(o);
                        self.refresh_trunk(trunk);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Recomputes a trunk's latest expiry from its registrations.
    fn refresh_trunk(&self, trunk: &Arc<str>) {
        let latest = self
            .by_token
            .iter()
            .filter(|r| *r.trunk == **trunk)
            .map(|r| r.expires)
            .max();
        match latest {
            Some(t) => {
                self.trunk_until.insert(trunk.clone(), t);
            }
            None => {
                self.trunk_until.remove(trunk);
            }
        }
    }

    /// Step 6: a Contact token of a live registration.
    pub fn by_token(&self, token: &str, now: UnixMs, grace: u64) -> Option<RegisteredContact> {
        let r = self.by_token.get(token)?;
        (r.expires + grace > now).then(|| RegisteredContact {
            trunk: r.trunk.clone(),
            contact: r.contact.clone(),
        })
    }

    fn add_source(&self, ip: IpAddr, s: Source) {
        self.sources.insert(ip, s);
        self.any_source.store(true, Relaxed);
    }

    /// Step 7: a source address of a trunk with a live registration.
    pub fn by_source(&self, ip: IpAddr, now: UnixMs, grace: u64) -> Option<Arc<str>> {
        if !self.any_source.load(Relaxed) {
            return None;
        }
        let s = self.sources.get(&ip)?;
        if s.until <= now {
            return None;
        }
        let trunk = s.trunk.clone();
        drop(s);
        self.live(&trunk, now, grace).then_some(trunk)
    }

    /// Registrar hosts of live registrations, for DNS refreshes.
    pub fn registrars(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let mut v: Vec<(Arc<str>, Arc<str>)> = self
            .by_token
            .iter()
            .map(|r| (r.trunk.clone(), r.registrar.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Live registrations (for keepalives and the state file).
    pub fn live_regs(&self, now: UnixMs, grace: u64) -> Vec<(Arc<str>, TrunkReg)> {
        self.by_token
            .iter()
            .filter(|r| r.expires + grace > now)
            .map(|r| (r.key().clone(), r.value().clone()))
            .collect()
    }

    /// The registrations whose CRLF keepalive is due at `now`: live ones
    /// (within `grace`, ms) whose trunk has an interval (`every`, ms) that
    /// has passed since their last keepalive. A registration seen for the
    /// first time only starts its period: the REGISTER itself opened the
    /// path. Forgets the registrations that are no longer live.
    pub fn due_keepalives(
        &self,
        now: UnixMs,
        grace: u64,
        every: impl Fn(&str) -> Option<u64>,
    ) -> Vec<TrunkReg> {
        let live = self.live_regs(now, grace);
        self.keepalive_at
            .retain(|tok, _| live.iter().any(|(t, _)| t == tok));
        let mut due = Vec::new();
        for (token, reg) in live {
            let Some(every) = every(&reg.trunk) else {
                continue;
            };
            let last = self.keepalive_at.get(&token).map(|l| *l);
            if last.is_some_and(|l| now < l + every) {
                continue;
            }
            self.keepalive_at.insert(token, now);
            if last.is_some() {
                due.push(reg);
            }
        }
        due
    }

    /// Learned source addresses (for the state file).
    pub fn sources(&self, now: UnixMs) -> Vec<(IpAddr, Arc<str>, UnixMs)> {
        self.sources
            .iter()
            .filter(|s| s.until > now)
            .map(|s| (*s.key(), s.trunk.clone(), s.until))
            .collect()
    }

    /// Restores one registration from the state file unless it expired
    /// or the table is full.
    pub fn restore(&self, token: &str, reg: TrunkReg, now: UnixMs, grace: u64) -> Restore {
        if reg.expires + grace <= now {
            return Restore::Expired;
        }
        if !self.by_token.contains_key(token) && self.by_token.len() >= self.cap.load(Relaxed) {
            return Restore::OverCap;
        }
        let (trunk, expires) = (reg.trunk.clone(), reg.expires);
        let old = self.by_token.insert(token.into(), reg);
        self.expiry_changed(&trunk, old.map(|o| o.expires), Some(expires));
        Restore::Kept
    }

    /// Removes the registration of `token` (another node saw its
    /// registrar confirm the removal). Returns whether there was one.
    pub fn remove(&self, token: &str) -> bool {
        match self.by_token.remove(token) {
            Some((_, old)) => {
                self.expiry_changed(&old.trunk, Some(old.expires), None);
                true
            }
            None => false,
        }
    }

    pub fn restore_source(&self, ip: IpAddr, trunk: &str, until: UnixMs, now: UnixMs) {
        if until > now {
            self.add_source(
                ip,
                Source {
                    trunk: trunk.into(),
                    until,
                },
            );
        }
    }

    /// Drops what expired. Returns the number of registrations dropped.
    pub fn sweep(&self, now: UnixMs, grace: u64) -> usize {
        let before = self.by_token.len();
        self.by_token.retain(|_, r| r.expires + grace > now);
        self.pending.retain(|_, p| p.until > now);
        let mut latest: std::collections::HashMap<Arc<str>, UnixMs> = Default::default();
        for r in self.by_token.iter() {
            let e = latest.entry(r.trunk.clone()).or_insert(r.expires);
            *e = (*e).max(r.expires);
        }
        // Also mends a latest expiry that a REGISTER answer racing a
        // recomputation left too low; unchanged ones are not rewritten.
        self.trunk_until.retain(|t, _| latest.contains_key(t));
        for (t, until) in &latest {
            if self.trunk_until.get(t).map(|v| *v) != Some(*until) {
                self.trunk_until.insert(t.clone(), *until);
            }
        }
        let live: std::collections::HashSet<Arc<str>> = latest.into_keys().collect();
        // Addresses of trunks without any registration left are forgotten
        // once their DNS answer is stale too.
        self.sources
            .retain(|_, s| s.until > now && (s.until != UnixMs::NEVER || live.contains(&s.trunk)));
        // A source added while this ran stays visible: it set the flag
        // after its insert, and an empty map is only seen before that.
        if self.sources.is_empty() {
            self.any_source.store(false, Relaxed);
            if !self.sources.is_empty() {
                self.any_source.store(true, Relaxed);
            }
        }
        before.saturating_sub(self.by_token.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: u64 = 60_000;

    fn send(r: &Registrations, call: u128, asked: u64, now: u64) {
        send_for(r, call, "tok1", asked, now);
    }

    /// A REGISTER of account `token` of trunk provider1.
    fn send_for(r: &Registrations, call: u128, token: &str, asked: u64, now: u64) {
        assert!(r.sent(
            call,
            token,
            "provider1",
            "sip.provider.example",
            "sip:acct@127.0.0.1:5080;line=x".into(),
            asked,
            Transport::Udp,
            Some(0),
            UnixMs(now)
        ));
    }

    fn provider() -> SocketAddr {
        "198.51.100.10:5060".parse().unwrap()
    }

    #[test]
    fn registration_lives_until_expiry_plus_grace() {
        let r = Registrations::new(100);
        send(&r, 7, 3600, 0);
        assert_eq!(
            r.by_token("tok1", UnixMs(0), GRACE),
            None,
            "not before the 2xx"
        );
        // A challenge keeps it pending; the 2xx grants 600 s.
        assert_eq!(r.answered(7, 401, None, provider(), UnixMs(10)), Ok(None));
        let reg = r
            .answered(7, 200, Some(600), provider(), UnixMs(20))
            .unwrap()
            .unwrap();
        assert_eq!(reg.expires, UnixMs(20 + 600_000));
        let ip = provider().ip();
        assert_eq!(
            r.by_source(ip, UnixMs(600_000), GRACE).as_deref(),
            Some("provider1")
        );
        assert_eq!(
            r.by_token("tok1", UnixMs(600_000), GRACE).unwrap().contact,
            "sip:acct@127.0.0.1:5080;line=x"
        );
        // An hour of conntrack-free life is not the question; the granted
        // expiry is: valid through the grace period, gone after.
        assert!(r
            .by_source(ip, UnixMs(20 + 600_000 + GRACE - 1), GRACE)
            .is_some());
        assert!(r
            .by_source(ip, UnixMs(20 + 600_000 + GRACE), GRACE)
            .is_none());
        assert!(r
            .by_token("tok1", UnixMs(20 + 600_000 + GRACE), GRACE)
            .is_none());
        assert_eq!(r.sweep(UnixMs(20 + 600_000 + GRACE), GRACE), 1);
        assert!(
            r.by_source(ip, UnixMs(0), GRACE).is_none(),
            "source forgotten with it"
        );
        assert!(!r.any_source.load(Relaxed), "an empty map is not asked");
        // The next registration is seen again.
        send(&r, 8, 3600, 700_000);
        r.answered(8, 200, Some(600), provider(), UnixMs(700_000))
            .unwrap();
        assert!(r.by_source(ip, UnixMs(700_001), GRACE).is_some());
    }

    #[test]
    fn refresh_and_unregister() {
        let r = Registrations::new(100);
        send(&r, 1, 120, 0);
        r.answered(1, 200, None, provider(), UnixMs(0)).unwrap();
        // Re-REGISTER before expiry extends it.
        send(&r, 2, 120, 100_000);
        r.answered(2, 200, Some(120), provider(), UnixMs(100_000))
            .unwrap();
        assert!(r.by_token("tok1", UnixMs(200_000), 0).is_some());
        // Expires: 0 removes it at once.
        send(&r, 3, 0, 150_000);
        assert_eq!(
            r.answered(3, 200, Some(0), provider(), UnixMs(150_000)),
            Ok(None)
        );
        assert!(r.by_token("tok1", UnixMs(150_001), GRACE).is_none());
        assert!(r
            .by_source(provider().ip(), UnixMs(150_001), GRACE)
            .is_none());
        // A 2xx nobody asked for changes nothing.
        assert_eq!(
            r.answered(99, 200, Some(3600), provider(), UnixMs(0)),
            Ok(None)
        );
        assert!(r.is_empty());
    }

    #[test]
    fn dns_addresses_follow_the_registration() {
        let r = Registrations::new(100);
        let other: IpAddr = "198.51.100.11".parse().unwrap();
        r.learn_addresses("provider1", &[other], UnixMs(300_000));
        assert!(
            r.by_source(other, UnixMs(0), GRACE).is_none(),
            "no live registration yet"
        );
        send(&r, 1, 3600, 0);
        r.answered(1, 200, None, provider(), UnixMs(0)).unwrap();
        assert!(r.by_source(other, UnixMs(1000), GRACE).is_some());
        assert!(
            r.by_source(other, UnixMs(300_000), GRACE).is_none(),
            "DNS TTL over"
        );
    }

    #[test]
    fn a_trunk_lives_while_any_of_its_registrations_does() {
        let r = Registrations::new(100);
        let reg = |call: u128, token: &str, asked: u64, now: u64| {
            send_for(&r, call, token, asked, now);
            r.answered(call, 200, Some(asked), provider(), UnixMs(now))
                .unwrap();
        };
        let ip = provider().ip();
        // Two accounts of one trunk, 600 s and 3600 s.
        reg(1, "acct-a", 600, 0);
        reg(2, "acct-b", 3600, 0);
        assert!(
            r.by_source(ip, UnixMs(1_000_000), 0).is_some(),
            "b still lives"
        );
        // b unregisters: the trunk lives as long as a does.
        reg(3, "acct-b", 0, 10_000);
        assert!(r.by_source(ip, UnixMs(599_999), 0).is_some());
        assert!(r.by_source(ip, UnixMs(600_000), 0).is_none());
        // a refreshes with a shorter expiry: the shorter one counts.
        reg(4, "acct-a", 60, 20_000);
        assert!(r.by_source(ip, UnixMs(79_999), 0).is_some());
        assert!(r.by_source(ip, UnixMs(80_000), 0).is_none());
        // The sweep keeps what lives and forgets the rest.
        reg(5, "acct-b", 3600, 30_000);
        r.sweep(UnixMs(100_000), 0);
        assert!(r.by_source(ip, UnixMs(3_000_000), 0).is_some());
        r.sweep(UnixMs(3_700_000), 0);
        assert!(r.by_source(ip, UnixMs(3_700_000), 0).is_none());
        assert!(r.trunk_until.is_empty());
    }

    #[test]
    fn bounded() {
        let r = Registrations::new(2);
        for i in 0..2u128 {
            assert!(r.sent(
                i,
                &format!("t{i}"),
                "p",
                "h",
                String::new(),
                60,
                Transport::Udp,
                None,
                UnixMs(0)
            ));
        }
        assert!(!r.sent(
            9,
            "t9",
            "p",
            "h",
            String::new(),
            60,
            Transport::Udp,
            None,
            UnixMs(0)
        ));
        r.answered(0, 200, None, provider(), UnixMs(0)).unwrap();
        r.answered(1, 200, None, provider(), UnixMs(0)).unwrap();
        assert!(r.sent(
            2,
            "t2",
            "p",
            "h",
            String::new(),
            60,
            Transport::Udp,
            None,
            UnixMs(0)
        ));
        assert_eq!(
            r.answered(2, 200, None, provider(), UnixMs(0)),
            Err(RegistrationsFull)
        );
        assert_eq!(r.len(), 2);
    }
}
