//! The dialog table: which calls are live, so that their ACK, BYE, CANCEL
//! and re-INVITEs pass even when nothing in them names the secret domain
//! (admission step 9). Entries are keyed by a keyed hash of Call-ID and
//! From tag, so an entry costs a few dozen bytes whatever the Call-ID's
//! length and an attacker cannot aim at a hash bucket.

use crate::time::UnixMs;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::Restore;

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
    /// Last time a message of this dialog passed.
    pub last_seen: UnixMs,
    /// When it is forgotten.
    pub expires: UnixMs,
}

/// Lifetimes, from `[dialog]`, in milliseconds.
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

/// Slots of one set. A lookup, an insert and the choice of what to evict
/// read one set: a few adjacent cache lines under one lock.
const WAYS: usize = 8;
/// Slots per entry of the cap. With twice the slots, a set is full below
/// the cap only rarely (half the cap: ~0.1% of sets), so eviction before
/// the cap is rare and takes the idlest of eight.
const SPREAD: usize = 2;
/// Sets a sweep step visits at least (~3 MiB of the table).
const SWEEP_STEP_MIN: usize = 32_768;
/// Steps a larger table is swept in.
const SWEEP_STEPS: usize = 8;

/// One slot; key 0 marks it empty (keys are normalized to be non-zero).
#[derive(Clone, Copy)]
struct Slot {
    key: u128,
    d: Dialog,
}

const EMPTY: Slot = Slot {
    key: 0,
    d: Dialog {
        to_tag: 0,
        invite_cseq: 0,
        phase: Phase::Ended,
        last_seen: UnixMs::ZERO,
        expires: UnixMs::ZERO,
    },
};

/// One set on its own cache lines, so two workers never share a line by
/// accident of placement.
#[repr(align(64))]
struct Set(Mutex<[Slot; WAYS]>);

type Slots = [Slot; WAYS];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Key 0 means an empty slot; a real key of 0 (1 in 2^128) shares a slot
/// with key 1.
fn norm(key: u128) -> u128 {
    key.max(1)
}

fn find(set: &mut Slots, key: u128) -> Option<&mut Dialog> {
    set.iter_mut().find(|s| s.key == key).map(|s| &mut s.d)
}

/// An empty slot.
fn free(set: &Slots) -> Option<usize> {
    set.iter().position(|s| s.key == 0)
}

/// The live slot idle longest: the one eviction takes.
fn idlest(set: &Slots) -> Option<usize> {
    (0..WAYS)
        .filter(|&i| set[i].key != 0)
        .min_by_key(|&i| set[i].d.last_seen)
}

/// Empties the expired slots of `count` sets from `start` (wrapping).
/// Returns how many were dropped and how many live entries it saw.
fn sweep_sets(table: &Table, start: usize, count: usize, now: UnixMs) -> (usize, usize) {
    let n = table.sets.len();
    let (mut dropped, mut live) = (0, 0);
    for i in 0..count {
        let mut set = table.set((start + i) % n);
        for slot in set.iter_mut().filter(|s| s.key != 0) {
            if slot.d.expires <= now {
                *slot = EMPTY;
                dropped += 1;
            } else {
                live += 1;
            }
        }
    }
    (dropped, live)
}

/// The sets, allocated once for a cap.
struct Table {
    sets: Box<[Set]>,
}

impl Table {
    fn sets_for(cap: usize) -> usize {
        cap.saturating_mul(SPREAD).div_ceil(WAYS).max(1)
    }

    fn new(cap: usize) -> Table {
        Table {
            sets: (0..Table::sets_for(cap))
                .map(|_| Set(Mutex::new([EMPTY; WAYS])))
                .collect(),
        }
    }

    /// Keys are keyed hashes already; the multiply spreads test keys too
    /// and maps onto any set count without a modulo.
    fn index(&self, key: u128) -> usize {
        let h = ((key as u64) ^ ((key >> 64) as u64).rotate_left(32))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((u128::from(h) * self.sets.len() as u128) >> 64) as usize
    }

    fn set(&self, i: usize) -> MutexGuard<'_, Slots> {
        lock(&self.sets[i].0)
    }

    /// Every live entry, each set copied under its lock (no allocation
    /// per set).
    fn live(&self) -> impl Iterator<Item = (u128, Dialog)> + '_ {
        self.sets.iter().flat_map(|s| {
            let set = *lock(&s.0);
            set.into_iter().filter(|s| s.key != 0).map(|s| (s.key, s.d))
        })
    }
}

/// The table. Bounded: at `dialog.max_entries`, a new dialog takes the
/// place of the idlest entry of its set, or of a neighbouring set when its
/// own is empty. Like conntrack's early drop, eviction looks at a few
/// entries next to the new one, not at the whole table: one random memory
/// access per new INVITE instead of four (perf, forward benchmark at the
/// default cap: the hash map and its global eviction queue took 12% of a
/// forwarded INVITE's time, nearly all of it cache misses).
pub struct Dialogs {
    table: ArcSwap<Table>,
    cap: AtomicUsize,
    /// Live (not yet swept) entries, for the cap check.
    count: super::EntryCount,
    /// Serializes rebuilds on reload.
    resizing: Mutex<()>,
    /// Where the next [`Dialogs::sweep_step`] starts.
    cursor: AtomicUsize,
}

impl Dialogs {
    pub fn new(cap: usize) -> Dialogs {
        let cap = cap.max(1);
        Dialogs {
            table: ArcSwap::from_pointee(Table::new(cap)),
            cap: AtomicUsize::new(cap),
            count: super::EntryCount::default(),
            resizing: Mutex::new(()),
            cursor: AtomicUsize::new(0),
        }
    }

    /// A reload's cap. A cap that needs another number of sets rebuilds
    /// the table and moves the entries over; an update racing with the
    /// move may be lost (rare, and only when `max_entries` changes).
    pub fn set_cap(&self, cap: usize) {
        let cap = cap.max(1);
        let _one = lock(&self.resizing);
        self.cap.store(cap, Relaxed);
        let old = self.table.load_full();
        if Table::sets_for(cap) == old.sets.len() {
            return;
        }
        let new = Table::new(cap);
        let mut kept = 0;
        for (key, d) in old.live() {
            let mut set = new.set(new.index(key));
            if let Some(i) = free(&set) {
                set[i] = Slot { key, d };
                kept += 1;
            }
        }
        self.table.store(Arc::new(new));
        self.count.set(kept);
    }

    /// Memory the table for `cap` entries takes, all of it from the
    /// start: a sidecar under a memory limit that starts at all will not
    /// be killed for it under a Call-ID flood.
    pub fn bytes_for(cap: usize) -> usize {
        Table::sets_for(cap.max(1)) * std::mem::size_of::<Set>()
    }

    pub fn len(&self) -> usize {
        self.count.get()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts loading the set of `key` into the cache. Called when a
    /// request is known to touch the table a few microseconds before it
    /// does, so the miss overlaps the editing of the message.
    pub fn prefetch(&self, key: u128) {
        let t = self.table.load();
        let set: *const Set = &t.sets[t.index(norm(key))];
        #[cfg(target_arch = "x86_64")]
        for line in (0..std::mem::size_of::<Set>()).step_by(64) {
            // SAFETY: a prefetch only hints the cache; it never faults
            // and reads nothing, and the address is inside `t.sets`.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>(set.cast::<i8>().wrapping_add(line));
            }
        }
        let _ = set;
    }

    pub fn get(&self, key: u128) -> Option<Dialog> {
        let key = norm(key);
        let t = self.table.load();
        let mut set = t.set(t.index(key));
        find(&mut set, key).copied()
    }

    /// An INVITE passed. A new dialog starts early; a known one (a
    /// retransmission or re-INVITE) is touched. Returns how many live
    /// entries were evicted to make room.
    pub fn invite(&self, key: u128, cseq: u32, now: UnixMs, t: &Lifetimes) -> usize {
        let key = norm(key);
        let new = Slot {
            key,
            d: Dialog {
                to_tag: 0,
                invite_cseq: cseq,
                phase: Phase::Early,
                last_seen: now,
                expires: now + t.early,
            },
        };
        let table = self.table.load();
        let at = table.index(key);
        let mut set = table.set(at);
        if let Some(d) = find(&mut set, key) {
            d.last_seen = now;
            if d.phase == Phase::Confirmed {
                d.expires = now + t.confirmed_idle;
            }
            return 0;
        }
        // An expired entry is as good as free (the sweep would drop it),
        // and the count already holds it.
        if let Some(i) = set.iter().position(|s| s.key != 0 && s.d.expires <= now) {
            set[i] = new;
            return 0;
        }
        let full = self.count.get() >= self.cap.load(Relaxed);
        if !full {
            if let Some(i) = free(&set) {
                set[i] = new;
                self.count.added();
                return 0;
            }
        }
        if let Some(i) = idlest(&set) {
            set[i] = new;
            return 1;
        }
        // At the cap with an empty set: room is made next door, one lock
        // at a time (never two sets locked at once).
        drop(set);
        let evicted = self.evict_near(&table, at);
        let mut set = table.set(at);
        if find(&mut set, key).is_none() {
            if let Some(i) = free(&set) {
                set[i] = new;
                self.count.added();
            }
        }
        evicted
    }

    /// Removes the idlest entry of the first set after `at` that has one.
    fn evict_near(&self, table: &Table, at: usize) -> usize {
        let n = table.sets.len();
        for step in 1..n {
            let mut set = table.set((at + step) % n);
            if let Some(i) = idlest(&set) {
                set[i] = EMPTY;
                self.count.removed();
                return 1;
            }
        }
        0
    }

    /// A response to an INVITE passed.
    pub fn invite_response(
        &self,
        key: u128,
        code: u16,
        to_tag: Option<u64>,
        now: UnixMs,
        t: &Lifetimes,
    ) {
        let key = norm(key);
        let table = self.table.load();
        let mut set = table.set(table.index(key));
        let Some(d) = find(&mut set, key) else {
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
    pub fn end(&self, key: u128, now: UnixMs, t: &Lifetimes) {
        let key = norm(key);
        let table = self.table.load();
        let mut set = table.set(table.index(key));
        if let Some(d) = find(&mut set, key) {
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
    pub fn matches(&self, r: &InDialog, now: UnixMs, t: &Lifetimes) -> Option<u128> {
        let table = self.table.load();
        // `ok` decides on the live entry; a match refreshes it.
        let hit = |key: u128, ok: &dyn Fn(&Dialog) -> bool| -> bool {
            let key = norm(key);
            let mut set = table.set(table.index(key));
            let Some(d) = find(&mut set, key) else {
                return false;
            };
            if d.expires <= now || !ok(d) {
                return false;
            }
            d.last_seen = now;
            if d.phase == Phase::Confirmed {
                d.expires = now + t.confirmed_idle;
            }
            true
        };
        let from_caller = |d: &Dialog| match r.to_tag {
            // From the caller's side: the To tag must be the callee's
            // (not known yet in an early dialog without a tagged 1xx).
            Some(tag) => d.to_tag == 0 || d.to_tag == tag,
            // No To tag: only a CANCEL of the pending INVITE.
            None => r.is_cancel && d.phase == Phase::Early && r.cseq == d.invite_cseq,
        };
        if hit(r.by_from, &from_caller) {
            return Some(r.by_from);
        }
        // From the callee's side: its From tag is the stored To tag.
        let by_to = r.by_to?;
        hit(by_to, &|d| d.to_tag != 0 && d.to_tag == r.from_tag).then_some(by_to)
    }

    /// Drops expired entries. Returns how many were dropped.
    pub fn sweep(&self, now: UnixMs) -> usize {
        let table = self.table.load();
        let (dropped, live) = sweep_sets(&table, 0, table.sets.len(), now);
        self.count.set(live);
        dropped
    }

    /// The periodic sweep: the whole table when it has at most
    /// [`SWEEP_STEP_MIN`] sets (the default cap's 25,000), else the next
    /// [`SWEEP_STEPS`]th of it. A sweep reads every set, and the table is
    /// allocated for its cap: every second over a table for 1,000,000 that
    /// would be ~7 ms of CPU and 107 MiB of memory traffic, idle or not.
    /// Expired entries waiting for their step are already treated as
    /// gone: lookups check the expiry and new dialogs reuse their slots.
    pub fn sweep_step(&self, now: UnixMs) -> usize {
        let table = self.table.load();
        let n = table.sets.len();
        let step = SWEEP_STEP_MIN.max(n.div_ceil(SWEEP_STEPS));
        if step >= n {
            return self.sweep(now);
        }
        let start = self.cursor.fetch_add(step, Relaxed) % n;
        let (dropped, _) = sweep_sets(&table, start, step, now);
        self.count.removed_n(dropped);
        dropped
    }

    /// Confirmed dialogs, for the state file.
    pub fn confirmed(&self) -> Vec<(u128, Dialog)> {
        self.table
            .load()
            .live()
            .filter(|(_, d)| d.phase == Phase::Confirmed)
            .collect()
    }

    /// Restores an entry from the state file unless it expired meanwhile
    /// or there is no room without evicting.
    pub fn restore(&self, key: u128, d: Dialog, now: UnixMs) -> Restore {
        if d.expires <= now {
            return Restore::Expired;
        }
        let key = norm(key);
        let table = self.table.load();
        let mut set = table.set(table.index(key));
        if let Some(old) = find(&mut set, key) {
            *old = d;
            return Restore::Kept;
        }
        if self.count.get() >= self.cap.load(Relaxed) {
            return Restore::OverCap;
        }
        let Some(i) = free(&set) else {
            return Restore::OverCap;
        };
        set[i] = Slot { key, d };
        self.count.added();
        Restore::Kept
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
        d.invite(k, 1, UnixMs(0), &T);
        // CANCEL of the pending INVITE matches; another CSeq does not.
        let cancel = InDialog {
            is_cancel: true,
            cseq: 1,
            ..req(k, None, 11, None)
        };
        assert_eq!(d.matches(&cancel, UnixMs(1000), &T), Some(k));
        assert_eq!(
            d.matches(&InDialog { cseq: 9, ..cancel }, UnixMs(1000), &T),
            None
        );
        // A plain request without To tag is no in-dialog request.
        assert_eq!(d.matches(&req(k, None, 11, None), UnixMs(1000), &T), None);
        d.invite_response(k, 200, Some(22), UnixMs(2000), &T);
        assert_eq!(d.get(k).unwrap().phase, Phase::Confirmed);
        // Caller's ACK/BYE: To tag = callee's.
        assert_eq!(
            d.matches(&req(k, Some(5), 11, Some(22)), UnixMs(3000), &T),
            Some(k)
        );
        assert_eq!(
            d.matches(&req(k, Some(5), 11, Some(23)), UnixMs(3000), &T),
            None
        );
        // Callee's BYE: its From tag is the stored To tag, its To tag keys.
        assert_eq!(
            d.matches(&req(99, Some(k), 22, Some(11)), UnixMs(3000), &T),
            Some(k)
        );
        assert_eq!(
            d.matches(&req(99, Some(k), 21, Some(11)), UnixMs(3000), &T),
            None
        );
        // Hours later, still live while it has traffic...
        let later = 3 * 3_600_000;
        assert!(d
            .matches(&req(k, Some(5), 11, Some(22)), UnixMs(later), &T)
            .is_some());
        // ...BYE ends it, retransmissions pass during the linger, then not.
        d.end(k, UnixMs(later), &T);
        assert!(d
            .matches(&req(k, Some(5), 11, Some(22)), UnixMs(later + 31_000), &T)
            .is_some());
        assert_eq!(
            d.matches(&req(k, Some(5), 11, Some(22)), UnixMs(later + 33_000), &T),
            None
        );
        assert_eq!(d.sweep(UnixMs(later + 33_000)), 1);
        assert!(d.is_empty());
    }

    #[test]
    fn timeouts() {
        let d = Dialogs::new(10);
        d.invite(1, 1, UnixMs(0), &T);
        d.invite(2, 1, UnixMs(0), &T);
        d.invite_response(2, 486, Some(7), UnixMs(1000), &T);
        assert_eq!(d.get(2).unwrap().phase, Phase::Ended);
        // The failed INVITE's ACK passes during the linger.
        assert!(d
            .matches(&req(2, None, 1, Some(7)), UnixMs(2000), &T)
            .is_some());
        d.invite(3, 1, UnixMs(0), &T);
        d.invite_response(3, 200, Some(8), UnixMs(0), &T);
        // Failed ones go after the linger, early ones after early_timeout.
        assert_eq!(d.sweep(UnixMs(32_999)), 0);
        assert_eq!(d.sweep(UnixMs(33_000)), 1);
        assert_eq!(d.sweep(UnixMs(179_999)), 0);
        assert_eq!(d.sweep(UnixMs(180_000)), 1);
        // Confirmed ones after max_lifetime without traffic.
        assert_eq!(d.sweep(UnixMs(4 * 3_600_000 - 1)), 0);
        assert_eq!(d.sweep(UnixMs(4 * 3_600_000)), 1);
        // A failed re-INVITE does not end a confirmed dialog.
        d.invite(4, 1, UnixMs(0), &T);
        d.invite_response(4, 200, Some(9), UnixMs(0), &T);
        d.invite_response(4, 491, Some(9), UnixMs(10), &T);
        assert_eq!(d.get(4).unwrap().phase, Phase::Confirmed);
    }

    /// Keys that land in set `set` of `d`'s table.
    fn keys_in(d: &Dialogs, set: usize, n: usize) -> Vec<u128> {
        let t = d.table.load();
        (1u128..)
            .map(|k| (k << 64) | k.wrapping_mul(0x51ed_27b1))
            .filter(|&k| t.index(k) == set)
            .take(n)
            .collect()
    }

    #[test]
    fn bounded_with_eviction_of_the_idlest() {
        let d = Dialogs::new(80);
        assert_eq!(d.table.load().sets.len(), 20);
        // Below the cap, a full set makes room by evicting its idlest
        // entry; a recently active one stays.
        let same = keys_in(&d, 3, WAYS + 2);
        for (i, &k) in same[..WAYS].iter().enumerate() {
            assert_eq!(d.invite(k, 1, UnixMs(i as u64), &T), 0);
        }
        d.invite_response(same[0], 200, Some(1), UnixMs(500), &T);
        assert_eq!(d.invite(same[WAYS], 1, UnixMs(1000), &T), 1);
        assert!(d.get(same[0]).is_some(), "recently active");
        assert!(d.get(same[1]).is_none(), "idlest gone");
        assert!(d.get(same[2]).is_some(), "one at a time");
        assert_eq!(d.invite(same[WAYS + 1], 1, UnixMs(1001), &T), 1);
        assert!(d.get(same[2]).is_none(), "then the next idlest");
        assert_eq!(d.len(), WAYS);
        // An expired entry is reused without counting an eviction.
        let later = 1001 + T.early;
        let other = keys_in(&d, 3, WAYS + 3)[WAYS + 2];
        assert_eq!(d.invite(other, 1, UnixMs(later), &T), 0);
        assert_eq!(d.len(), WAYS);
        // At the cap, a new dialog in an empty set takes the place of the
        // idlest entry of the next set that has one.
        let d = Dialogs::new(80);
        let mut t = 0;
        for set in 0..10 {
            for k in keys_in(&d, set, WAYS) {
                d.invite(k, 1, UnixMs(t), &T);
                t += 1;
            }
        }
        assert_eq!(d.len(), 80);
        let lone = keys_in(&d, 19, 1)[0];
        assert_eq!(d.invite(lone, 1, UnixMs(t), &T), 1);
        assert_eq!(d.len(), 80);
        assert!(d.get(lone).is_some());
        assert!(d.get(keys_in(&d, 0, 1)[0]).is_none(), "idlest of set 0");
        // A flood never grows it past the cap.
        for k in 3000..13_000u128 {
            d.invite(
                k.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                1,
                UnixMs(k as u64),
                &T,
            );
            assert!(d.len() <= 80);
        }
        d.sweep(UnixMs(0));
        assert!(d.len() <= 80);
    }

    #[test]
    fn a_large_table_is_swept_in_steps() {
        // 50,000 sets: two steps of 32,768.
        let d = Dialogs::new(200_000);
        for k in 1..=1000u128 {
            d.invite(k << 64 | k, 1, UnixMs(0), &T);
        }
        d.invite(7, 1, UnixMs(T.early), &T);
        let later = T.early;
        let first = d.sweep_step(UnixMs(later));
        assert!(first < 1000, "one step is not the whole table");
        assert_eq!(d.len(), 1001 - first);
        let second = d.sweep_step(UnixMs(later));
        assert_eq!(first + second, 1000);
        assert_eq!(d.len(), 1);
        assert!(d.get(7).is_some());
        // A small table goes whole every step.
        let d = Dialogs::new(100);
        d.invite(1, 1, UnixMs(0), &T);
        assert_eq!(d.sweep_step(UnixMs(T.early)), 1);
        assert!(d.is_empty());
    }

    #[test]
    fn memory_is_what_the_docs_say() {
        // docs/configuration.md and the example config promise about 112
        // bytes per entry.
        assert_eq!(std::mem::size_of::<Set>() % 64, 0);
        let per_entry = Dialogs::bytes_for(100_000) / 100_000;
        assert!((100..=120).contains(&per_entry), "{per_entry}");
        assert_eq!(
            Dialogs::bytes_for(100_000),
            Dialogs::new(100_000).table.load().sets.len() * std::mem::size_of::<Set>()
        );
    }

    #[test]
    fn reload_resizes_and_keeps_entries() {
        let d = Dialogs::new(10);
        for k in 1..=10u128 {
            d.invite(k << 64 | k, 1, UnixMs(0), &T);
        }
        d.set_cap(1000);
        assert_eq!(d.table.load().sets.len(), 250);
        assert_eq!(d.len(), 10);
        for k in 1..=10u128 {
            assert!(d.get(k << 64 | k).is_some(), "{k}");
        }
        for k in 11..=500u128 {
            assert_eq!(d.invite(k << 64 | k, 1, UnixMs(0), &T), 0, "{k}");
        }
        assert_eq!(d.len(), 500);
        // Shrinking keeps at most what the new sets hold.
        d.set_cap(20);
        assert!(d.len() <= 40);
        d.invite(7777, 1, UnixMs(1), &T);
        assert!(d.len() <= 40);
    }
}
