//! The tables that replace conntrack (`ARCHITECTURE.md`): dialogs, trunk
//! registrations, bans and rate buckets. All are concurrent, bounded,
//! expire by the clock passed in, and are swept by `Core::tick`. What of
//! them the state file keeps, and putting it back, is [`persist`].

use crate::time::UnixMs;

pub mod bans;
pub mod dialogs;
pub mod feed;
pub mod persist;
pub mod rate;
pub mod registrations;
pub mod top;

pub use bans::Bans;
pub use dialogs::{Dialogs, Lifetimes};
pub use feed::{Change, Feed};
pub use rate::Rates;
pub use registrations::Registrations;
pub use top::TopSources;

/// What became of an entry read from the state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restore {
    /// It is in the table again.
    Kept,
    /// It ended while the process was down.
    Expired,
    /// The table is at its cap (`max_entries`), or, for a dialog, its set
    /// of the table is full.
    OverCap,
}

/// True at most once a second per `last` (an instant's milliseconds): keeps the maintenance of a full
/// table (a sweep) off the per-packet path under a flood from many sources.
pub(crate) fn once_a_second(last: &std::sync::atomic::AtomicU64, now: UnixMs) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let prev = last.load(Relaxed);
    now.0 >= prev + 1000 && last.compare_exchange(prev, now.0, Relaxed, Relaxed).is_ok()
}

/// Entries of a table, for the cap check a new entry makes.
/// `DashMap::len` read-locks every shard: 16 atomic operations on lines
/// that every worker writes, for every new dialog or, under a flood from
/// many sources, every message. Kept by the table's inserts and removals
/// (saturating: a sweep may already have counted a removal) and set from
/// the map after each whole sweep, so any drift lasts until the next one.
#[derive(Default)]
pub(crate) struct EntryCount(std::sync::atomic::AtomicUsize);

impl EntryCount {
    pub(crate) fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn added(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn removed(&self) {
        self.removed_n(1);
    }

    pub(crate) fn removed_n(&self, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = self
            .0
            .fetch_update(Relaxed, Relaxed, |c| Some(c.saturating_sub(n)));
    }

    pub(crate) fn set(&self, n: usize) {
        self.0.store(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Every table of one process.
pub struct Tables {
    pub dialogs: Dialogs,
    pub regs: Registrations,
    pub bans: Bans,
    pub rates: Rates,
    /// The heaviest sources of the last minute (`sipwarden sources`).
    pub top: TopSources,
    /// Changes the other nodes of a cluster must learn (off without one).
    pub feed: Feed,
    /// Set when a table changed in a way the state file keeps
    /// ([`persist`]): a registration, a confirmed or ended dialog, a ban.
    dirty: std::sync::atomic::AtomicBool,
}

impl Tables {
    pub fn new(cfg: &crate::config::Config) -> Tables {
        Tables {
            dialogs: Dialogs::new(cfg.dialog.max_entries),
            regs: Registrations::new(cfg.registration.max_entries),
            bans: {
                let b = Bans::new(cfg.ban.max_entries);
                b.set_cidr_cap(cfg.ban.max_cidrs);
                b
            },
            rates: Rates::new(cfg.limits.max_sources),
            top: TopSources::new(cfg.control.top_sources),
            feed: Feed::default(),
            dirty: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A change the state file should keep.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// True once since the last call when the state file should be
    /// written.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies the caps of a reloaded config; entries are kept.
    pub fn resize(&self, cfg: &crate::config::Config) {
        self.dialogs.set_cap(cfg.dialog.max_entries);
        self.regs.set_cap(cfg.registration.max_entries);
        self.bans.set_cap(cfg.ban.max_entries);
        self.bans.set_cidr_cap(cfg.ban.max_cidrs);
        self.rates.set_cap(cfg.limits.max_sources);
        self.feed.set_cap(cfg.cluster.max_outbox);
    }
}
