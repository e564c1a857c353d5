//! The change feed of a cluster (`docs/cluster.md`): every change of the
//! tables that other nodes must learn (a ban, an unban, a trunk
//! registration learned, refreshed or removed) is queued here by the code
//! that made it, and the program's cluster link drains the queue toward
//! Redis. Off (one relaxed load per change) without `[cluster]`.
//!
//! The queue is bounded (`cluster.max_outbox`): when the link is slower
//! than the changes (Redis down, a burst of bans), what does not fit is
//! counted and the link is asked for a full re-publish instead, which
//! carries the tables as they are, so nothing is lost but latency.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use super::bans::BanInfo;
use super::registrations::TrunkReg;
use crate::time::UnixMs;

/// One change to tell the other nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A ban made here (automatic or manual), address or network.
    Ban(BanInfo),
    /// An operator lifted the ban of an address or a network at `at`.
    Unban { net: IpNet, at: UnixMs },
    /// A registrar granted (or refreshed) a trunk registration.
    Registered {
        token: Arc<str>,
        reg: TrunkReg,
        at: UnixMs,
    },
    /// A registrar confirmed the removal of a trunk registration.
    Unregistered { token: Arc<str>, at: UnixMs },
}

/// The bounded queue of changes, shared by every thread that makes one.
pub struct Feed {
    on: AtomicBool,
    cap: AtomicUsize,
    queue: Mutex<VecDeque<Change>>,
    /// Changes that did not fit since start.
    overflowed: AtomicU64,
    /// A change was lost to the cap: the next drain must re-publish all.
    resync: AtomicBool,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            on: AtomicBool::new(false),
            cap: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
            overflowed: AtomicU64::new(0),
            resync: AtomicBool::new(false),
        }
    }
}

impl Feed {
    /// Starts queueing, at most `cap` changes (a cluster is configured).
    pub fn enable(&self, cap: usize) {
        self.cap.store(cap.max(1), Relaxed);
        self.on.store(true, Relaxed);
    }

    /// A reloaded `cluster.max_outbox`; queued changes are kept.
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap.max(1), Relaxed);
    }

    /// Whether changes are queued (a cluster is configured).
    pub fn is_on(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// Queues a change; at the cap it is counted and a full re-publish
    /// asked for instead. Nothing without a cluster.
    pub fn push(&self, c: Change) {
        if !self.on.load(Relaxed) {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= self.cap.load(Relaxed) {
            drop(q);
            self.overflowed.fetch_add(1, Relaxed);
            self.resync.store(true, Relaxed);
            return;
        }
        q.push_back(c);
    }

    /// Takes up to `max` changes, oldest first.
    pub fn drain(&self, max: usize) -> Vec<Change> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Changes waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once after a change was lost to the cap.
    pub fn take_resync(&self) -> bool {
        self.resync.swap(false, Relaxed)
    }

    /// Asks the next drain for a full re-publish (changes drained but
    /// not delivered).
    pub fn ask_resync(&self) {
        self.resync.store(true, Relaxed);
    }

    /// Changes lost to the cap since start.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::bans::Trigger;

    fn ban(i: u8) -> Change {
        Change::Ban(BanInfo {
            net: IpNet::from(std::net::IpAddr::from([192, 0, 2, i])),
            trigger: Trigger::Manual,
            since: UnixMs(1),
            until: UnixMs(2),
        })
    }

    #[test]
    fn off_queues_nothing() {
        let f = Feed::default();
        f.push(ban(1));
        assert!(f.is_empty());
        assert!(!f.take_resync());
    }

    #[test]
    fn bounded_and_overflow_asks_for_a_resync() {
        let f = Feed::default();
        f.enable(2);
        for i in 0..5 {
            f.push(ban(i));
        }
        assert_eq!(f.len(), 2);
        assert_eq!(f.overflowed(), 3);
        assert!(f.take_resync());
        assert!(!f.take_resync(), "once");
        assert_eq!(f.drain(10), vec![ban(0), ban(1)]);
        assert!(f.is_empty());
    }
}
