//! The core's clock value. The core never reads a clock: the caller passes
//! the time in, as wall-clock milliseconds since the Unix epoch, and every
//! expiry in the tables is such an instant, which is what lets the state
//! file keep them across a restart. Durations (lifetimes, windows, grace
//! periods) stay plain milliseconds (`u64`); an instant plus a duration is
//! an instant.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use serde::{Deserialize, Serialize};

/// An instant: milliseconds since the Unix epoch. A plain `u64` inside
/// (no cost on the hot path); written to the state file as that number.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMs(pub u64);

impl UnixMs {
    /// The epoch: "never happened" where a table needs a value.
    pub const ZERO: UnixMs = UnixMs(0);
    /// Later than any real time: "never ends".
    pub const NEVER: UnixMs = UnixMs(u64::MAX);

    /// `ms` milliseconds later, saturating at [`UnixMs::NEVER`].
    pub fn saturating_add(self, ms: u64) -> UnixMs {
        UnixMs(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`; 0 when `earlier` is later
    /// (a clock set back).
    pub fn since(self, earlier: UnixMs) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Whole seconds since the epoch.
    pub fn secs(self) -> u64 {
        self.0 / 1000
    }
}

/// An instant `ms` milliseconds later.
impl Add<u64> for UnixMs {
    type Output = UnixMs;
    fn add(self, ms: u64) -> UnixMs {
        UnixMs(self.0 + ms)
    }
}

impl AddAssign<u64> for UnixMs {
    fn add_assign(&mut self, ms: u64) {
        self.0 += ms;
    }
}

/// An instant `ms` milliseconds earlier.
impl Sub<u64> for UnixMs {
    type Output = UnixMs;
    fn sub(self, ms: u64) -> UnixMs {
        UnixMs(self.0 - ms)
    }
}

impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_and_the_state_files_number() {
        let t = UnixMs(1_700_000_000_000);
        assert_eq!(t + 1500, UnixMs(1_700_000_001_500));
        assert_eq!((t + 1500).since(t), 1500);
        assert_eq!(t.since(t + 1500), 0, "a clock set back");
        assert_eq!(UnixMs::NEVER.saturating_add(1), UnixMs::NEVER);
        assert_eq!((t + 1999).secs(), 1_700_000_001);
        assert_eq!(serde_json::to_string(&t).unwrap(), "1700000000000");
        assert_eq!(serde_json::from_str::<UnixMs>("42").unwrap(), UnixMs(42));
    }
}
