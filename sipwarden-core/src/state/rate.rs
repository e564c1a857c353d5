//! Per-source token buckets: one budget for REGISTER (password guessing
//! comes as REGISTERs) and one for everything else, so a phone's calls do
//! not starve its registrations.

use crate::time::UnixMs;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use dashmap::DashMap;

/// Bucket sizes and refill rates, from `[limits]`.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub rate: u32,
    pub burst: u32,
    pub register_rate: u32,
    pub register_burst: u32,
}

#[derive(Clone, Copy, Debug)]
struct Buckets {
    /// Tokens, in thousandths, for exact integer refills.
    general: u64,
    register: u64,
    last: UnixMs,
}

/// The rate table, bounded by `limits.max_sources`.
pub struct Rates {
    map: DashMap<IpAddr, Buckets, ahash::RandomState>,
    cap: AtomicUsize,
    /// Entries in `map`, for the cap check of a new source.
    count: super::EntryCount,
    /// When the full table was last swept: at most once a second, so a
    /// flood from many sources cannot make every packet cost a sweep.
    last_sweep: AtomicU64,
}

fn refill(tokens: u64, elapsed_ms: u64, rate: u32, burst: u32) -> u64 {
    // rate tokens per second = rate milli-tokens per millisecond.
    (tokens + elapsed_ms.saturating_mul(u64::from(rate))).min(u64::from(burst) * 1000)
}

impl Rates {
    pub fn new(cap: usize) -> Rates {
        Rates {
            map: DashMap::with_hasher(ahash::RandomState::new()),
            cap: AtomicUsize::new(cap.max(1)),
            count: super::EntryCount::default(),
            last_sweep: AtomicU64::new(0),
        }
    }

    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap.max(1), Relaxed);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Takes one token for a message from `ip`. False: over its rate.
    /// A full table admits untracked sources (fail open: the domain
    /// filter still applies) rather than starving new callers.
    pub fn allow(&self, ip: IpAddr, register: bool, now: UnixMs, b: &Budget) -> bool {
        if !self.map.contains_key(&ip) && self.count.get() >= self.cap.load(Relaxed) {
            if super::once_a_second(&self.last_sweep, now) {
                self.sweep(now, b);
            }
            if self.count.get() >= self.cap.load(Relaxed) {
                return true;
            }
        }
        let mut e = match self.map.entry(ip) {
            dashmap::Entry::Occupied(o) => o.into_ref(),
            dashmap::Entry::Vacant(v) => {
                self.count.added();
                v.insert(Buckets {
                    general: u64::from(b.burst) * 1000,
                    register: u64::from(b.register_burst) * 1000,
                    last: now,
                })
            }
        };
        let elapsed = now.since(e.last);
        e.last = now.max(e.last);
        e.general = refill(e.general, elapsed, b.rate, b.burst);
        e.register = refill(e.register, elapsed, b.register_rate, b.register_burst);
        let bucket = if register {
            &mut e.register
        } else {
            &mut e.general
        };
        if *bucket >= 1000 {
            *bucket -= 1000;
            true
        } else {
            false
        }
    }

    /// Forgets sources whose buckets have refilled: they cost nothing to
    /// recreate.
    pub fn sweep(&self, now: UnixMs, b: &Budget) {
        self.map.retain(|_, e| {
            let elapsed = now.since(e.last);
            refill(e.general, elapsed, b.rate, b.burst) < u64::from(b.burst) * 1000
                || refill(e.register, elapsed, b.register_rate, b.register_burst)
                    < u64::from(b.register_burst) * 1000
        });
        self.count.set(self.map.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Budget = Budget {
        rate: 10,
        burst: 20,
        register_rate: 1,
        register_burst: 2,
    };

    #[test]
    fn bucket_refills_at_the_rate() {
        let r = Rates::new(10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let ok = (0..30).filter(|_| r.allow(a, false, UnixMs(0), &B)).count();
        assert_eq!(ok, 20, "the burst");
        assert!(!r.allow(a, false, UnixMs(99), &B));
        assert!(
            r.allow(a, false, UnixMs(100), &B),
            "one token per 100 ms at 10/s"
        );
        assert!(!r.allow(a, false, UnixMs(100), &B));
        // REGISTER has its own budget.
        assert!(r.allow(a, true, UnixMs(100), &B));
        assert!(r.allow(a, true, UnixMs(100), &B));
        assert!(!r.allow(a, true, UnixMs(100), &B));
        assert!(r.allow(a, true, UnixMs(1100), &B));
        // Another source is not affected.
        assert!(r.allow("192.0.2.2".parse().unwrap(), false, UnixMs(100), &B));
    }

    #[test]
    fn bounded_and_swept() {
        let r = Rates::new(3);
        for i in 0..3u8 {
            r.allow(IpAddr::from([192, 0, 2, i]), false, UnixMs(0), &B);
        }
        // Full of fresh entries: a new source passes untracked.
        assert!(r.allow("198.51.100.1".parse().unwrap(), false, UnixMs(0), &B));
        assert_eq!(r.len(), 3);
        // Once refilled they are swept and the new one is tracked.
        assert!(r.allow("198.51.100.1".parse().unwrap(), false, UnixMs(10_000), &B));
        assert_eq!(r.len(), 1);
        // A flood of fresh sources sweeps at most once a second.
        for i in 0..10u8 {
            r.allow(IpAddr::from([203, 0, 113, i]), false, UnixMs(10_001), &B);
        }
        assert_eq!(r.len(), 3);
    }
}
