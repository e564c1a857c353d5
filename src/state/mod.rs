//! The tables that replace conntrack (DESIGN.md section 5): dialogs, trunk
//! registrations, bans and rate buckets. All are concurrent, bounded,
//! expire by the clock passed in, and are swept by `Core::tick`.

pub mod bans;
pub mod dialogs;
pub mod persist;
pub mod rate;
pub mod registrations;

pub use bans::Bans;
pub use dialogs::{Dialogs, Lifetimes};
pub use rate::Rates;
pub use registrations::Registrations;

/// True at most once a second per `last`: keeps the maintenance of a full
/// table (a sweep) off the per-packet path under a flood from many sources.
pub(crate) fn once_a_second(last: &std::sync::atomic::AtomicU64, now: u64) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let prev = last.load(Relaxed);
    now >= prev + 1000 && last.compare_exchange(prev, now, Relaxed, Relaxed).is_ok()
}

/// Every table of one process.
pub struct Tables {
    pub dialogs: Dialogs,
    pub regs: Registrations,
    pub bans: Bans,
    pub rates: Rates,
}

impl Tables {
    pub fn new(cfg: &crate::config::Config) -> Tables {
        Tables {
            dialogs: Dialogs::new(cfg.dialog.max_entries),
            regs: Registrations::new(cfg.registration.max_entries),
            bans: Bans::new(cfg.ban.max_entries),
            rates: Rates::new(cfg.limits.max_sources),
        }
    }

    /// Applies the caps of a reloaded config; entries are kept.
    pub fn resize(&self, cfg: &crate::config::Config) {
        self.dialogs.set_cap(cfg.dialog.max_entries);
        self.regs.set_cap(cfg.registration.max_entries);
        self.bans.set_cap(cfg.ban.max_entries);
        self.rates.set_cap(cfg.limits.max_sources);
    }
}
