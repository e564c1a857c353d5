//! The sources that sent the most messages, and the most rejected ones,
//! over the last minute (`sipwarden sources`): a bounded heavy-hitter
//! sketch, never a map of every source, since a flood may come from
//! millions of addresses.
//!
//! Space-saving in small buckets: a source hashes (keyed, so that a sender
//! of many addresses cannot aim at one bucket) to a bucket of [`WAYS`]
//! slots; a source not in its bucket takes the slot with the fewest
//! messages and inherits that count as its error bound, as in Metwally et
//! al.'s Space-Saving. A source that sends more than a slot's share of the
//! messages keeps its slot; the counts are over-estimates by at most
//! `error`. Each UDP worker writes to a shard of its own (as the metrics
//! do), so the hot path takes an uncontended lock; a query adds the
//! shards up. Two windows of [`WINDOW_MS`] turn over: a query sees the
//! current one and the previous one, between 30 and 60 seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use crate::time::UnixMs;
use crate::verdict::Reason;

/// The length of one window.
pub const WINDOW_MS: u64 = 30_000;
/// Slots per bucket: what a source's arrival compares against.
const WAYS: usize = 4;
/// Shards, as many as the metrics' (threads are dealt them in turn).
const SHARDS: usize = 8;
const REASONS: usize = Reason::ALL.len();

/// One source's counts in one window.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// `None`: empty.
    ip: Option<IpAddr>,
    messages: u32,
    /// Messages inherited from the slot's previous source: `messages`
    /// over-counts by at most this.
    error: u32,
    rejects: u32,
    /// Rejections by reason.
    reasons: [u32; REASONS],
}

const EMPTY: Slot = Slot {
    ip: None,
    messages: 0,
    error: 0,
    rejects: 0,
    reasons: [0; REASONS],
};

/// One window of one shard.
struct Window {
    slots: Box<[Slot]>,
}

impl Window {
    fn new(buckets: usize) -> Window {
        Window {
            slots: vec![EMPTY; buckets * WAYS].into_boxed_slice(),
        }
    }

    fn clear(&mut self) {
        self.slots.fill(EMPTY);
    }

    #[inline]
    fn record(&mut self, bucket: usize, ip: IpAddr, rejected: Option<Reason>) {
        let b = &mut self.slots[bucket * WAYS..(bucket + 1) * WAYS];
        let mut min = 0;
        let mut at = None;
        for (i, s) in b.iter().enumerate() {
            if s.ip == Some(ip) {
                at = Some(i);
                break;
            }
            if s.messages < b[min].messages {
                min = i;
            }
        }
        let s = match at {
            Some(i) => &mut b[i],
            None => {
                let s = &mut b[min];
                let inherited = s.messages;
                *s = EMPTY;
                s.ip = Some(ip);
                s.messages = inherited;
                s.error = inherited;
                s
            }
        };
        s.messages = s.messages.saturating_add(1);
        if let Some(r) = rejected {
            s.rejects = s.rejects.saturating_add(1);
            s.reasons[r.index()] = s.reasons[r.index()].saturating_add(1);
        }
    }
}

/// One shard: the current window and the one before.
struct Shard {
    /// `now / WINDOW_MS` of `cur`.
    index: u64,
    cur: Window,
    prev: Window,
}

/// A source's counts over the last minute, as a query reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopSource {
    pub ip: IpAddr,
    pub messages: u64,
    /// `messages` over-counts by at most this (0: exact).
    pub error: u64,
    pub rejects: u64,
    /// Rejections by reason, the most frequent first.
    pub reasons: Vec<(Reason, u64)>,
}

/// The sketch. Its size is fixed at creation: `top_sources` slots per
/// window per shard (`control.top_sources`, rounded up to a whole bucket).
pub struct TopSources {
    shards: Box<[Mutex<Shard>]>,
    buckets: usize,
    /// Random per process: which sources share a bucket cannot be known
    /// from outside.
    seed: u64,
}

impl TopSources {
    pub fn new(top_sources: usize) -> TopSources {
        let buckets = top_sources.div_ceil(WAYS).max(1);
        TopSources {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        index: 0,
                        cur: Window::new(buckets),
                        prev: Window::new(buckets),
                    })
                })
                .collect(),
            buckets,
            seed: ahash::RandomState::new().hash_one(0x5eed_u64) | 1,
        }
    }

    /// The bucket of `ip`: a multiplicative hash of the address folded to
    /// 64 bits and keyed with the seed, reduced to `buckets` by a
    /// multiply (Lemire) rather than a division. A few instructions: it is
    /// on the path of every message.
    #[inline]
    fn bucket(&self, ip: IpAddr) -> usize {
        let k = match ip {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => {
                let x = u128::from(a);
                (x as u64) ^ ((x >> 64) as u64).rotate_left(29)
            }
        };
        let h = (k ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (((h >> 32) * self.buckets as u64) >> 32) as usize
    }

    /// Slots per window per shard.
    pub fn capacity(&self) -> usize {
        self.buckets * WAYS
    }

    /// Counts one message from `ip` at `now`; `rejected`: the reason it
    /// was rejected for. On the path of every message from the public side.
    /// The shard's lock is this thread's alone but while a query adds the
    /// shards up (a copy of 2 windows) or when there are more workers than
    /// shards.
    #[inline]
    pub fn record(&self, now: UnixMs, ip: IpAddr, rejected: Option<Reason>) {
        let bucket = self.bucket(ip);
        let index = now.0 / WINDOW_MS;
        let mut sh = self.shards[my_shard()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if sh.index != index {
            turn(&mut sh, index);
        }
        sh.cur.record(bucket, ip, rejected);
    }

    /// The sources of the current and previous window at `now`, summed
    /// over the shards: the `limit` with the most messages and the `limit`
    /// with the most rejects (those with any).
    pub fn top(&self, now: UnixMs, limit: usize) -> (Vec<TopSource>, Vec<TopSource>) {
        let index = now.0 / WINDOW_MS;
        // The windows in force are copied under their shard's lock (a
        // memcpy), and added up after: a worker waits for the copy only.
        let mut copies: Vec<Box<[Slot]>> = Vec::with_capacity(2 * SHARDS);
        for sh in self.shards.iter() {
            let sh = sh.lock().unwrap_or_else(|e| e.into_inner());
            if sh.index == index {
                copies.push(sh.cur.slots.clone());
                copies.push(sh.prev.slots.clone());
            } else if sh.index + 1 == index {
                copies.push(sh.cur.slots.clone());
            }
        }
        let mut all: HashMap<IpAddr, TopSource> = HashMap::new();
        for w in &copies {
            for s in w.iter() {
                let Some(ip) = s.ip else { continue };
                let t = all.entry(ip).or_insert_with(|| TopSource {
                    ip,
                    messages: 0,
                    error: 0,
                    rejects: 0,
                    reasons: Vec::new(),
                });
                t.messages += u64::from(s.messages);
                t.error += u64::from(s.error);
                t.rejects += u64::from(s.rejects);
                for (i, n) in s.reasons.iter().enumerate() {
                    if *n > 0 {
                        let r = Reason::ALL[i];
                        match t.reasons.iter_mut().find(|x| x.0 == r) {
                            Some(x) => x.1 += u64::from(*n),
                            None => t.reasons.push((r, u64::from(*n))),
                        }
                    }
                }
            }
        }
        let mut v: Vec<TopSource> = all.into_values().collect();
        for t in &mut v {
            t.reasons
                .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.index().cmp(&b.0.index())));
        }
        v.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.ip.cmp(&b.ip)));
        let by_messages: Vec<TopSource> = v.iter().take(limit).cloned().collect();
        v.retain(|t| t.rejects > 0);
        v.sort_by(|a, b| b.rejects.cmp(&a.rejects).then(a.ip.cmp(&b.ip)));
        v.truncate(limit);
        (by_messages, v)
    }
}

/// Moves a shard to window `index`: the current window becomes the
/// previous one if it is the one just before, else both are forgotten.
#[cold]
fn turn(sh: &mut Shard, index: u64) {
    if sh.index + 1 == index {
        std::mem::swap(&mut sh.cur, &mut sh.prev);
        sh.cur.clear();
    } else {
        sh.cur.clear();
        sh.prev.clear();
    }
    sh.index = index;
}

/// The shard the current thread writes to.
fn my_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    MINE.with(|m| *m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0xc633_6400u32 + i))
    }

    #[test]
    fn finds_the_heavy_hitters_among_many_sources_and_stays_bounded() {
        let t = TopSources::new(64);
        // Every bucket is in range.
        for i in 0..100_000u32 {
            assert!(t.bucket(ip(i)) < t.buckets);
        }
        assert!(t.bucket(IpAddr::from([0xffu8; 16])) < t.buckets);
        let now = UnixMs(1_000_000 * WINDOW_MS);
        // 20 000 sources once each, interleaved with three heavy ones.
        for i in 0..20_000u32 {
            t.record(now, ip(1000 + i), None);
            if i % 10 == 0 {
                t.record(now, ip(1), Some(Reason::NoDomain));
            }
            if i % 20 == 0 {
                t.record(now, ip(2), None);
                t.record(now, ip(3), Some(Reason::UserAgent));
            }
        }
        let (by_msgs, by_rejects) = t.top(now, 3);
        let ips: Vec<IpAddr> = by_msgs.iter().map(|s| s.ip).collect();
        assert_eq!(ips[0], ip(1), "{by_msgs:?}");
        assert!(ips.contains(&ip(2)) && ips.contains(&ip(3)), "{by_msgs:?}");
        // Counts are over-estimates within their error bound.
        let one = &by_msgs[0];
        assert!(
            one.messages >= 2000 && one.messages - one.error <= 2000,
            "{one:?}"
        );
        assert_eq!(by_rejects[0].ip, ip(1));
        assert_eq!(by_rejects[0].reasons, vec![(Reason::NoDomain, 2000)]);
        assert_eq!(by_rejects[1].ip, ip(3));
        assert_eq!(by_rejects[1].reasons[0].0, Reason::UserAgent);
        assert!(!by_rejects.iter().any(|s| s.ip == ip(2)));
        // Bounded: never more sources than slots, whatever was sent.
        let (all, _) = t.top(now, usize::MAX);
        assert!(all.len() <= t.capacity() * SHARDS * 2, "{}", all.len());
    }

    #[test]
    fn windows_turn_over() {
        let t = TopSources::new(16);
        let w0 = UnixMs(500 * WINDOW_MS);
        t.record(w0, ip(1), Some(Reason::Banned));
        // Seen in its window and the next.
        assert_eq!(t.top(w0, 10).0.len(), 1);
        let w1 = UnixMs(501 * WINDOW_MS + 10);
        assert_eq!(t.top(w1, 10).0[0].messages, 1);
        t.record(w1, ip(2), None);
        let (m, r) = t.top(w1, 10);
        assert_eq!(m.len(), 2);
        assert_eq!(r.len(), 1);
        // Two windows later it is gone.
        let w2 = UnixMs(502 * WINDOW_MS);
        let (m, _) = t.top(w2, 10);
        assert_eq!(m.iter().map(|s| s.ip).collect::<Vec<_>>(), vec![ip(2)]);
        // A long pause forgets both.
        t.record(UnixMs(900 * WINDOW_MS), ip(3), None);
        let (m, _) = t.top(UnixMs(900 * WINDOW_MS), 10);
        assert_eq!(m.iter().map(|s| s.ip).collect::<Vec<_>>(), vec![ip(3)]);
    }
}
