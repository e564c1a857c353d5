//! RFC 3263 next-hop resolution for requests Asterisk sends out: SRV
//! (`_sip._udp` / `_sip._tcp`) when the URI has no port, then A/AAAA.
//! Answers are cached with their TTL; a lookup never runs on the receive
//! path: a miss is resolved in a task and the message sent when it is done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use tokio::sync::Semaphore;

use sipwarden_core::flow::Transport;

/// Cache key: the name, the port if the URI gave one, the transport (it
/// picks the SRV service).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub host: Box<str>,
    pub port: Option<u16>,
    pub transport: Transport,
}

#[derive(Clone, Debug)]
struct Entry {
    /// Empty for a cached failure.
    addrs: Arc<[SocketAddr]>,
    until: Instant,
}

/// How long a failed lookup is remembered, so a dead name is not asked for
/// on every retransmission.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Cap of cached names.
const MAX_ENTRIES: usize = 10_000;
/// Lookups in flight at most; more are refused (counted as failures).
const MAX_PENDING: usize = 256;

/// The resolver and its cache.
pub struct Dns {
    resolver: Option<TokioResolver>,
    cache: DashMap<Key, Entry>,
    pending: Arc<Semaphore>,
}

impl Dns {
    /// Uses the system resolver configuration (`/etc/resolv.conf`,
    /// `/etc/hosts`). Without one, only IP literals can be reached.
    pub fn system() -> Dns {
        let built = TokioResolver::builder_tokio().and_then(|mut b| {
            // A proxy cannot wait long: the sender retransmits anyway.
            b.options_mut().timeout = Duration::from_secs(2);
            b.options_mut().attempts = 2;
            b.build()
        });
        let resolver = match built {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver: host names in Request-URIs and Routes cannot be reached");
                None
            }
        };
        Dns {
            resolver,
            cache: DashMap::new(),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
        }
    }

    /// A cached answer: `Some(Ok(addr))`, `Some(Err(()))` for a cached
    /// failure, `None` when the name must be resolved.
    pub fn cached(&self, key: &Key) -> Option<Result<SocketAddr, ()>> {
        let e = self.cache.get(key)?;
        if e.until < Instant::now() {
            drop(e);
            self.cache.remove(key);
            return None;
        }
        Some(e.addrs.first().copied().ok_or(()))
    }

    /// Resolves and caches. `Err` when the name does not resolve or too
    /// many lookups are already in flight.
    pub async fn resolve(&self, key: &Key) -> Result<SocketAddr, String> {
        if let Some(hit) = self.cached(key) {
            return hit.map_err(|()| format!("{} did not resolve (cached)", key.host));
        }
        let _permit = self
            .pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| "too many DNS lookups in flight".to_string())?;
        let Some(r) = &self.resolver else {
            return Err("no DNS resolver configured".into());
        };
        let result = lookup(r, key).await;
        if self.cache.len() >= MAX_ENTRIES {
            let now = Instant::now();
            self.cache.retain(|_, e| e.until > now);
            if self.cache.len() >= MAX_ENTRIES {
                self.cache.clear();
            }
        }
        match result {
            Ok((addrs, until)) if !addrs.is_empty() => {
                let first = addrs[0];
                self.cache.insert(
                    key.clone(),
                    Entry {
                        addrs: addrs.into(),
                        until,
                    },
                );
                Ok(first)
            }
            Ok(_) | Err(_) => {
                self.cache.insert(
                    key.clone(),
                    Entry {
                        addrs: Arc::from(Vec::new()),
                        until: Instant::now() + NEGATIVE_TTL,
                    },
                );
                Err(match result {
                    Err(e) => e,
                    Ok(_) => format!("{} has no address", key.host),
                })
            }
        }
    }
}

impl Dns {
    /// Every address of a host (SRV targets included), with the time the
    /// answer is valid for: how a trunk's registrar addresses are learned.
    pub async fn resolve_all(
        &self,
        host: &str,
        transport: Transport,
    ) -> Result<(Vec<SocketAddr>, Duration), String> {
        let Some(r) = &self.resolver else {
            return Err("no DNS resolver configured".into());
        };
        let key = Key {
            host: host.into(),
            port: None,
            transport,
        };
        let (addrs, until) = lookup(r, &key).await?;
        Ok((addrs, until.saturating_duration_since(Instant::now())))
    }
}

/// RFC 3263 4.2 and 4.4 without NAPTR: SRV for a name without a port,
/// ordered by priority then weight, else A/AAAA on 5060.
async fn lookup(r: &TokioResolver, key: &Key) -> Result<(Vec<SocketAddr>, Instant), String> {
    if key.port.is_none() {
        let service = match key.transport {
            Transport::Udp => "_sip._udp.",
            Transport::Tcp => "_sip._tcp.",
            Transport::Tls => "_sips._tcp.",
            // No SRV for WebSocket (RFC 7118): a browser is only reached
            // over its own connection, never looked up.
            Transport::Ws => "_sip._tcp.",
            Transport::Wss => "_sips._tcp.",
        };
        let name = format!("{service}{}.", key.host.trim_end_matches('.'));
        if let Ok(srv) = r.srv_lookup(name.as_str()).await {
            let mut targets: Vec<(u16, u16, u16, String)> = srv
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_utf8())),
                    _ => None,
                })
                .collect();
            targets.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            let mut until = srv.valid_until();
            let mut addrs = Vec::new();
            for (_, _, port, target) in targets {
                if let Ok(ips) = r.lookup_ip(target.as_str()).await {
                    until = until.min(ips.valid_until());
                    addrs.extend(ips.iter().map(|ip| SocketAddr::new(ip, port)));
                }
            }
            if !addrs.is_empty() {
                return Ok((addrs, until));
            }
        }
    }
    let port = key.port.unwrap_or(5060);
    let ips = r
        .lookup_ip(key.host.as_ref())
        .await
        .map_err(|e| format!("{}: {e}", key.host))?;
    let until = ips.valid_until();
    Ok((
        ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
        until,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hosts_file_names_resolve_and_are_cached() {
        let dns = Dns::system();
        let key = Key {
            host: "localhost".into(),
            port: Some(5099),
            transport: Transport::Udp,
        };
        assert!(dns.cached(&key).is_none());
        let a = dns.resolve(&key).await.unwrap();
        assert!(a.ip().is_loopback());
        assert_eq!(a.port(), 5099);
        assert_eq!(dns.cached(&key), Some(Ok(a)));
    }

    #[tokio::test]
    async fn failures_are_cached() {
        let dns = Dns::system();
        let key = Key {
            host: "no-such-host.invalid".into(),
            port: Some(5060),
            transport: Transport::Udp,
        };
        assert!(dns.resolve(&key).await.is_err());
        assert_eq!(dns.cached(&key), Some(Err(())));
    }
}
