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

    /// UTC in RFC 3339, to the second (`2024-05-01T12:00:00Z`), as the
    /// control socket shows instants. `NEVER` and instants past the year
    /// 9999 show as `never`.
    pub fn rfc3339(self) -> String {
        let secs = self.secs();
        if secs >= 253_402_300_800 {
            return "never".into();
        }
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Days to a civil date (H. Hinnant, "chrono-Compatible Low-Level
        // Date Algorithms"), for days since 1970-01-01, non-negative.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + u64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
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
        assert_eq!(UnixMs(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(UnixMs(951_782_400_999).rfc3339(), "2000-02-29T00:00:00Z");
        assert_eq!(UnixMs(1_714_564_800_000).rfc3339(), "2024-05-01T12:00:00Z");
        assert_eq!(UnixMs(4_102_444_799_000).rfc3339(), "2099-12-31T23:59:59Z");
        assert_eq!(UnixMs::NEVER.rfc3339(), "never");
        assert_eq!((t + 1999).secs(), 1_700_000_001);
        assert_eq!(serde_json::to_string(&t).unwrap(), "1700000000000");
        assert_eq!(serde_json::from_str::<UnixMs>("42").unwrap(), UnixMs(42));
    }
}
