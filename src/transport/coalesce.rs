//! When a UDP worker should pause before its next receive. Under a flood
//! the receiver keeps up, drains its socket, and goes to sleep; being woken
//! for the next few datagrams costs as much CPU as receiving dozens of
//! them (measured here: about 0.6 µs of every 1.2 µs per dropped datagram
//! went to wake-ups). A short pause after a well-filled batch lets the
//! next receive return a full one. Light traffic (a few datagrams per
//! receive) never waits, so its latency is untouched.

use std::time::{Duration, Instant};

/// Pauses shorter than this are not worth a sleep.
const MIN_PAUSE: Duration = Duration::from_micros(10);

/// The pause policy of one worker, fed with each receive's outcome.
pub struct Coalescer {
    batch: usize,
    max: Duration,
    last: Option<Instant>,
}

impl Coalescer {
    /// `batch` datagrams per receive at most; pauses up to `max` (zero:
    /// never).
    pub fn new(batch: usize, max: Duration) -> Coalescer {
        Coalescer {
            batch: batch.max(1),
            max,
            last: None,
        }
    }

    /// `n` datagrams came with the receive that returned at `received`;
    /// the batch was handled by `now`. Returns how long to pause: about
    /// the time the rest of a batch takes to arrive at the rate the last
    /// receives saw, less the time handling took, at most `max`. No pause
    /// for a full batch (more is queued) or a sparse one (no flood).
    pub fn pause(&mut self, n: usize, received: Instant, now: Instant) -> Option<Duration> {
        let since = self.last.map(|l| received.saturating_duration_since(l));
        self.last = Some(received);
        if self.max.is_zero() || n >= self.batch || n < (self.batch / 8).max(2) {
            return None;
        }
        let per = since? / n as u32;
        let want = (per * (self.batch - n) as u32)
            .saturating_sub(now.saturating_duration_since(received))
            .min(self.max);
        (want >= MIN_PAUSE).then_some(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn pauses_only_for_well_filled_batches() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(64, 200 * US);
        // The first receive has no rate to go by.
        assert_eq!(c.pause(32, t0, t0), None);
        // 32 datagrams in 100 µs: the other 32 take 100 µs more, of which
        // handling took 20.
        let t1 = t0 + 100 * US;
        assert_eq!(c.pause(32, t1, t1 + 20 * US), Some(80 * US));
        // Full: more is queued, no pause.
        let t2 = t1 + 100 * US;
        assert_eq!(c.pause(64, t2, t2), None);
        // Sparse (fewer than an eighth): ordinary traffic, no pause.
        let t3 = t2 + 100 * US;
        assert_eq!(c.pause(7, t3, t3), None);
        // A slow trickle would wait long: capped.
        let t4 = t3 + 10_000 * US;
        assert_eq!(c.pause(8, t4, t4), Some(200 * US));
        // Handling took longer than the rest needs: no pause.
        let t5 = t4 + 100 * US;
        assert_eq!(c.pause(32, t5, t5 + 150 * US), None);
    }

    #[test]
    fn zero_means_never() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(64, Duration::ZERO);
        assert_eq!(c.pause(32, t0, t0), None);
        assert_eq!(c.pause(32, t0 + 100 * US, t0 + 100 * US), None);
    }
}
