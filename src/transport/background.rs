//! Periodic work around the core: the table sweep and trunk keepalives
//! (`Core::tick`), registrar address lookups, and the debounced state file.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sipwarden_core::flow::Transport;
use sipwarden_core::metrics::Event;
use sipwarden_core::proxy::Core;
use sipwarden_core::state::persist::LoadError;
use sipwarden_core::time::UnixMs;

use crate::statefile;

use super::egress::Egress;
use super::now_ms;

/// How often the tables are swept and keepalives considered.
const TICK: Duration = Duration::from_secs(1);
/// How often registrar names are looked up again, at most (the DNS TTL
/// shortens it).
const DNS_REFRESH: Duration = Duration::from_secs(300);

/// Sweeps and keepalives, every second.
pub async fn ticker(eg: Arc<Egress>) {
    let mut i = tokio::time::interval(TICK);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        i.tick().await;
        for s in eg.core.tick(now_ms()) {
            eg.send(s);
        }
    }
}

/// Resolves the registrars of trunks so that INVITEs from their other
/// addresses are admitted too, refreshed with the DNS TTL.
pub async fn registrar_dns(eg: Arc<Egress>) {
    loop {
        let mut next = DNS_REFRESH;
        for (trunk, host) in eg.core.registrars() {
            if let Ok(ip) = host.parse::<IpAddr>() {
                eg.core.learn_trunk_addresses(&trunk, &[ip], UnixMs::NEVER);
                continue;
            }
            let mut ips = Vec::new();
            let mut ttl = DNS_REFRESH;
            for t in [Transport::Udp, Transport::Tcp] {
                match eg.dns.resolve_all(&host, t).await {
                    Ok((addrs, valid)) => {
                        ips.extend(addrs.iter().map(|a| a.ip()));
                        ttl = ttl.min(valid.max(Duration::from_secs(30)));
                    }
                    Err(e) => {
                        tracing::debug!(%trunk, %host, error = %e, "registrar lookup failed");
                    }
                }
            }
            ips.sort();
            ips.dedup();
            if !ips.is_empty() {
                // Keep the addresses a little past the TTL: the next lookup
                // replaces them before they lapse.
                let until = now_ms() + (ttl + DNS_REFRESH).as_millis() as u64;
                eg.core.learn_trunk_addresses(&trunk, &ips, until);
                tracing::debug!(%trunk, %host, addresses = ?ips, "registrar addresses");
            }
            next = next.min(ttl);
        }
        tokio::time::sleep(next).await;
    }
}

/// Loads the state file at start. A missing file is normal; a corrupt or
/// foreign one is reported and ignored, never fatal.
pub fn load_state(core: &Core, path: &Path) {
    load_state_with(core, path, true);
}

/// [`load_state`]; `shared` false leaves out what a cluster shares (bans,
/// registrations and their addresses), already loaded from Redis.
pub fn load_state_with(core: &Core, path: &Path, shared: bool) {
    match statefile::read(path, &core.keys().key_id()) {
        Ok(mut snap) => {
            if !shared {
                snap.bans.clear();
                snap.ban_networks.clear();
                snap.registrations.clear();
                snap.sources.clear();
            }
            let r = core.restore(snap, now_ms());
            tracing::info!(
                path = %path.display(),
                registrations = r.registrations,
                dialogs = r.dialogs,
                bans = r.bans,
                expired = r.expired,
                "state restored"
            );
            if r.bad > 0 {
                for _ in 0..r.bad {
                    core.metrics().event(Event::StateErrors);
                }
                tracing::warn!(path = %path.display(), entries = r.bad, "state file entries that could not be read were left out");
            }
            let cfg = &core.settings().config;
            if r.bans_over_cap > 0 {
                tracing::warn!(
                    path = %path.display(),
                    bans = r.bans_over_cap,
                    cap = cfg.ban.max_entries,
                    "bans beyond ban.max_entries were left out (those ending soonest)"
                );
            }
            if r.registrations_over_cap > 0 {
                tracing::warn!(
                    path = %path.display(),
                    registrations = r.registrations_over_cap,
                    cap = cfg.registration.max_entries,
                    "registrations beyond registration.max_entries were left out"
                );
            }
            if r.dialogs_over_cap > 0 {
                tracing::warn!(
                    path = %path.display(),
                    dialogs = r.dialogs_over_cap,
                    cap = cfg.dialog.max_entries,
                    "dialogs beyond dialog.max_entries were left out"
                );
            }
        }
        Err(LoadError::Missing) => {}
        Err(e) => {
            core.metrics().event(Event::StateErrors);
            tracing::warn!(path = %path.display(), error = ?e, "state file ignored");
        }
    }
}

/// Writes the state file now (blocking I/O).
pub fn save_state(core: &Core, path: &Path) {
    let snap = core.snapshot(now_ms());
    match statefile::write(path, &snap) {
        Ok(()) => core.metrics().event(Event::StateWrites),
        Err(e) => {
            core.metrics().event(Event::StateErrors);
            tracing::warn!(path = %path.display(), error = %e, "cannot write the state file");
        }
    }
}

/// Writes the state file when the tables changed, at most once per
/// `state.save_interval`.
pub async fn state_writer(core: Arc<Core>) {
    loop {
        let (path, every) = {
            let s = core.settings();
            (s.config.state.path.clone(), s.config.state.save_interval.0)
        };
        tokio::time::sleep(every.max(Duration::from_millis(100))).await;
        let Some(path) = path else {
            continue;
        };
        if core.tables().take_dirty() {
            let c = core.clone();
            let _ = tokio::task::spawn_blocking(move || save_state(&c, &path)).await;
        }
    }
}
