//! The dialog table: which calls are live, so that their ACK, BYE, CANCEL
//! and re-INVITEs pass even when nothing in them names the secret domain
//! (admission step 9). Entries are keyed by a keyed hash of Call-ID and
//! From tag, so an entry costs a few dozen bytes whatever the Call-ID's
//! length and an attacker cannot aim at a hash bucket.

use std::collections::VecDeque;
use std::sync::Mutex;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Where a dialog is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// INVITE sent, no final answer yet.
    Early,
    /// 2xx seen.
    Confirmed,
    /// BYE or a final failure seen: lingers for retransmissions.
    Ended,
}

/// One dialog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialog {
    /// Keyed hash of the callee's tag, 0 until a response carries one.
    pub to_tag: u64,
    pub invite_cseq: u32,
    pub phase: Phase,
    /// Last time a message of this dialog passed (ms).
    pub last_seen: u64,
    /// When it is forgotten (ms).
    pub expires: u64,
}

/// Lifetimes, from `[dialog]`.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    pub early: u64,
    pub confirmed_idle: u64,
    pub linger: u64,
}

/// What a request from the public side looks like to the table.
#[derive(Clone, Copy, Debug)]
pub struct InDialog {
    /// hash(Call-ID, From tag)
    pub by_from: u128,
    /// hash(Call-ID, To tag), when there is a To tag.
    pub by_to: Option<u128>,
    /// Keyed hashes of the tags themselves.
    pub from_tag: u64,
    pub to_tag: Option<u64>,
    pub is_cancel: bool,
    pub cseq: u32,
}

/// Eviction queues: a power of two, more than the workers of a
/// machine this runs on will contend with.
const QUEUES: usize = 8;

/// Keys with the time they were (re)queued.
type Queue = VecDeque<(u128, u64)>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The table. Bounded: when full, the longest-idle entry goes, found by
/// a second-chance queue in insertion order (an entry active since it was
/// queued is requeued), so making room is O(1) amortized and never stalls
/// the receive path with a scan of the whole table.
pub struct Dialogs {
    map: DashMap<u128, Dialog, ahash::RandomState>,
    cap: AtomicUsize,
    /// Entries in `map`, for the cap check of every new INVITE.
    count: super::EntryCount,
    /// Keys with the time they were (re)queued, in [`QUEUES`] queues by
    /// key, so that workers adding dialogs at once rarely take the same
    /// lock. Keys already gone from the map are skipped when popped.
    queues: [Mutex<Queue>; QUEUES],
}

impl Dialogs {
    pub fn new(cap: usize) -> Dialogs {
        Dialogs {
            map: DashMap::with_hasher(ahash::RandomState::new()),
            cap: AtomicUsize::new(cap.max(1)),
            count: super::EntryCount::default(),
            queues: std::array::from_fn(|_| Mutex::new(VecDeque::new())),
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

    pub fn get(&self, key: u128) -> Option<Dialog> {
        self.map.get(&key).map(|d| *d)
    }

    /// An INVITE passed. A new dialog starts early; a known one (a
    /// retransmission or re-INVITE) is touched. Returns how many entries
    /// were evicted to make room.
    pub fn invite(&self, key: u128, cseq: u32, now: u64, t: &Lifetimes) -> usize {
        if let Some(mut d) = self.map.get_mut(&key) {
            d.last_seen = now;
            if d.phase == Phase::Confirmed {
                d.expires = now + t.confirmed_idle;
            }
            return 0;
        }
        let evicted = if self.count.get() >= self.cap.load(Relaxed) {
            self.evict()
        } else {
            0
        };
        self.enqueue(key, now);
        self.insert(
            key,
            Dialog {
                to_tag: 0,
                invite_cseq: cseq,
                phase: Phase::Early,
                last_seen: now,
                expires: now + t.early,
            },
        );
        evicted
    }

    /// A response to an INVITE passed.
    pub fn invite_response(
        &self,
        key: u128,
        code: u16,
        to_tag: Option<u64>,
        now: u64,
        t: &Lifetimes,
    ) {
        let Some(mut d) = self.map.get_mut(&key) else {
            return;
        };
        d.last_seen = now;
        match code {
            100..=199 => {
                if d.to_tag == 0 {
                    d.to_tag = to_tag.unwrap_or(0);
                }
            }
            200..=299 => {
                if d.phase != Phase::Confirmed {
                    d.to_tag = to_tag.unwrap_or(d.to_tag);
                }
                d.phase = Phase::Confirmed;
                d.expires = now + t.confirmed_idle;
            }
            _ => {
                // A failure ends an early dialog; a failed re-INVITE
                // leaves a confirmed one as it was.
                if d.phase == Phase::Early {
                    d.phase = Phase::Ended;
                    d.expires = now + t.linger;
                }
            }
        }
    }

    /// A BYE passed: the dialog ends and lingers. Retransmitted BYEs do
    /// not extend the linger.
    pub fn end(&self, key: u128, now: u64, t: &Lifetimes) {
        if let Some(mut d) = self.map.get_mut(&key) {
            if d.phase == Phase::Ended {
                return;
            }
            d.phase = Phase::Ended;
            d.last_seen = now;
            d.expires = now + t.linger;
        }
    }

    /// Admission step 9: does a request belong to a live dialog (or
    /// cancel a pending INVITE)? A match refreshes the dialog.
    pub fn matches(&self, r: &InDialog, now: u64, t: &Lifetimes) -> Option<u128> {
        let hit = |key: u128, peer_tag: Option<u64>| -> bool {
            let Some(mut d) = self.map.get_mut(&key) else {
                return false;
            };
            if d.expires <= now {
                return false;
            }
            let ok = match peer_tag {
                // From the caller's side: the To tag must be the callee's
                // (not known yet in an early dialog without a tagged 1xx).
                Some(tag) => d.to_tag == 0 || d.to_tag == tag,
                // No To tag: only a CANCEL of the pending INVITE.
                None => r.is_cancel && d.phase == Phase::Early && r.cseq == d.invite_cseq,
            };
            if ok {
                d.last_seen = now;
                if d.phase == Phase::Confirmed {
                    d.expires = now + t.confirmed_idle;
                }
            }
            ok
        };
        if hit(r.by_from, r.to_tag) {
            return Some(r.by_from);
        }
        // From the callee's side: its From tag is the stored To tag.
        let by_to = r.by_to?;
        let from_callee = self
            .map
            .get(&by_to)
            .is_some_and(|d| d.to_tag != 0 && d.to_tag == r.from_tag);
        (from_callee && hit(by_to, Some(r.from_tag))).then_some(by_to)
    }

    /// Drops expired entries. Returns how many were dropped.
    pub fn sweep(&self, now: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, d| d.expires > now);
        let after = self.map.len();
        self.count.set(after);
        before.saturating_sub(after)
    }

    fn insert(&self, key: u128, d: Dialog) {
        if self.map.insert(key, d).is_none() {
            self.count.added();
        }
    }

    fn enqueue(&self, key: u128, now: u64) {
        let mut q = lock(&self.queues[(key >> 64) as usize % QUEUES]);
        q.push_back((key, now));
        // Keys that expired by the sweep linger in the queue; keep it within
        // twice its share of the table.
        if q.len() > (2 * self.cap.load(Relaxed) + 1024) / QUEUES {
            q.retain(|(k, _)| self.map.contains_key(k));
        }
    }

    /// Makes room for one entry: the oldest queued entry that has not been
    /// active since it was queued goes. Only at the cap (a flood), so it
    /// may take every queue's lock (always in index order) to find the
    /// oldest front.
    fn evict(&self) -> usize {
        let mut qs: [_; QUEUES] = std::array::from_fn(|i| lock(&self.queues[i]));
        // Bounded: every entry gets at most one second chance per pass.
        let mut budget = qs.iter().map(|q| q.len()).sum::<usize>() * 2 + 1;
        loop {
            let Some(i) = (0..qs.len())
                .filter_map(|i| qs[i].front().map(|&(_, t)| (t, i)))
                .min()
                .map(|(_, i)| i)
            else {
                return 0;
            };
            let Some((key, queued)) = qs[i].pop_front() else {
                return 0;
            };
            budget = budget.saturating_sub(1);
            let Some(d) = self.map.get(&key).map(|d| *d) else {
                continue;
            };
            if d.last_seen > queued && budget > 0 {
                qs[i].push_back((key, d.last_seen));
                continue;
            }
            if self.map.remove(&key).is_some() {
                self.count.removed();
            }
            return 1;
        }
    }

    /// Confirmed dialogs, for the state file.
    pub fn confirmed(&self) -> Vec<(u128, Dialog)> {
        self.map
            .iter()
            .filter(|e| e.phase == Phase::Confirmed)
            .map(|e| (*e.key(), *e.value()))
            .collect()
    }

    /// Restores an entry from the state file unless it expired meanwhile.
    pub fn restore(&self, key: u128, d: Dialog, now: u64) -> bool {
        if d.expires <= now || self.count.get() >= self.cap.load(Relaxed) {
            return false;
        }
        self.enqueue(key, d.last_seen);
        self.insert(key, d);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Lifetimes = Lifetimes {
        early: 180_000,
        confirmed_idle: 4 * 3_600_000,
        linger: 32_000,
    };

    fn req(by_from: u128, by_to: Option<u128>, from_tag: u64, to_tag: Option<u64>) -> InDialog {
        InDialog {
            by_from,
            by_to,
            from_tag,
            to_tag,
            is_cancel: false,
            cseq: 2,
        }
    }

    #[test]
    fn life_of_a_call() {
        let d = Dialogs::new(10);
        let k = 1u128;
        d.invite(k, 1, 0, &T);
        // CANCEL of the pending INVITE matches; another CSeq does not.
        let cancel = InDialog {
            is_cancel: true,
            cseq: 1,
            ..req(k, None, 11, None)
        };
        assert_eq!(d.matches(&cancel, 1000, &T), Some(k));
        assert_eq!(d.matches(&InDialog { cseq: 9, ..cancel }, 1000, &T), None);
        // A plain request without To tag is no in-dialog request.
        assert_eq!(d.matches(&req(k, None, 11, None), 1000, &T), None);
        d.invite_response(k, 200, Some(22), 2000, &T);
        assert_eq!(d.get(k).unwrap().phase, Phase::Confirmed);
        // Caller's ACK/BYE: To tag = callee's.
        assert_eq!(d.matches(&req(k, Some(5), 11, Some(22)), 3000, &T), Some(k));
        assert_eq!(d.matches(&req(k, Some(5), 11, Some(23)), 3000, &T), None);
        // Callee's BYE: its From tag is the stored To tag, its To tag keys.
        assert_eq!(
            d.matches(&req(99, Some(k), 22, Some(11)), 3000, &T),
            Some(k)
        );
        assert_eq!(d.matches(&req(99, Some(k), 21, Some(11)), 3000, &T), None);
        // Hours later, still live while it has traffic...
        let later = 3 * 3_600_000;
        assert!(d
            .matches(&req(k, Some(5), 11, Some(22)), later, &T)
            .is_some());
        // ...BYE ends it, retransmissions pass during the linger, then not.
        d.end(k, later, &T);
        assert!(d
            .matches(&req(k, Some(5), 11, Some(22)), later + 31_000, &T)
            .is_some());
        assert_eq!(
            d.matches(&req(k, Some(5), 11, Some(22)), later + 33_000, &T),
            None
        );
        assert_eq!(d.sweep(later + 33_000), 1);
        assert!(d.is_empty());
    }

    #[test]
    fn timeouts() {
        let d = Dialogs::new(10);
        d.invite(1, 1, 0, &T);
        d.invite(2, 1, 0, &T);
        d.invite_response(2, 486, Some(7), 1000, &T);
        assert_eq!(d.get(2).unwrap().phase, Phase::Ended);
        // The failed INVITE's ACK passes during the linger.
        assert!(d.matches(&req(2, None, 1, Some(7)), 2000, &T).is_some());
        d.invite(3, 1, 0, &T);
        d.invite_response(3, 200, Some(8), 0, &T);
        // Failed ones go after the linger, early ones after early_timeout.
        assert_eq!(d.sweep(32_999), 0);
        assert_eq!(d.sweep(33_000), 1);
        assert_eq!(d.sweep(179_999), 0);
        assert_eq!(d.sweep(180_000), 1);
        // Confirmed ones after max_lifetime without traffic.
        assert_eq!(d.sweep(4 * 3_600_000 - 1), 0);
        assert_eq!(d.sweep(4 * 3_600_000), 1);
        // A failed re-INVITE does not end a confirmed dialog.
        d.invite(4, 1, 0, &T);
        d.invite_response(4, 200, Some(9), 0, &T);
        d.invite_response(4, 491, Some(9), 10, &T);
        assert_eq!(d.get(4).unwrap().phase, Phase::Confirmed);
    }

    #[test]
    fn bounded_with_eviction_of_the_idlest() {
        // Keys spread over every eviction queue, as hashed keys are.
        let key = |k: u128| (k << 64) | k;
        let d = Dialogs::new(80);
        for k in 0..80u128 {
            d.invite(key(k), 1, k as u64, &T);
        }
        // A busy old dialog stays.
        d.invite_response(key(0), 200, Some(1), 500, &T);
        let evicted = d.invite(key(1000), 1, 1000, &T);
        assert_eq!(evicted, 1);
        assert!(d.len() <= 80);
        assert!(d.get(key(0)).is_some(), "recently active");
        assert!(d.get(key(1)).is_none(), "idlest gone");
        assert!(d.get(key(2)).is_some(), "one at a time");
        assert!(d.get(key(1000)).is_some());
        // The next ones go oldest first, whichever queue they sit in.
        for k in 0..6u128 {
            d.invite(key(2000 + k), 1, 2000, &T);
            assert!(d.get(key(2 + k)).is_none(), "{k}");
            assert!(d.get(key(3 + k)).is_some(), "{k}");
        }
        // A flood never grows it past the cap.
        for k in 3000..13_000u128 {
            d.invite(key(k), 1, 3000 + k as u64, &T);
        }
        assert!(d.len() <= 80);
    }
}
