//! When a UDP worker should pause before its next receive. Under a flood
//! the receiver keeps up, drains its socket, and goes to sleep; being woken
//! for the next few datagrams costs as much CPU as receiving dozens of
//! them (wake-ups are a large share of a dropped datagram's cost).
//! A short pause after a batch that was not full lets
//! the next receive return a full one. Light traffic never waits, nor does
//! a rate at which half a batch takes longer than the longest pause to
//! arrive: there a pause would add latency to every message and save
//! little (at 60k msgs/s a 200 µs pause gathers only 12 datagrams but
//! delays every forwarded message).

use std::time::{Duration, Instant};

/// Pauses shorter than this are not worth a sleep.
const MIN_PAUSE: Duration = Duration::from_micros(10);

/// The pause policy of one worker, fed with each receive's outcome.
pub struct Coalescer {
    batch: usize,
    max: Duration,
    last: Option<Instant>,
    /// Smoothed time between datagrams, in ns: a burst at a low rate must
    /// not look like a flood, nor one short batch end the pauses.
    gap_ns: Option<f64>,
}

impl Coalescer {
    /// `batch` datagrams per receive at most; pauses up to `max` (zero:
    /// never).
    pub fn new(batch: usize, max: Duration) -> Coalescer {
        Coalescer {
            batch: batch.max(1),
            max,
            last: None,
            gap_ns: None,
        }
    }

    /// `n` datagrams came with the receive that returned at `received`;
    /// the batch was handled by `now`. Returns how long to pause: the time
    /// a batch takes to arrive at the rate the receives see, at most
    /// `max`, less the time handling took. None for a full batch (more is
    /// queued), or when not even half a batch arrives within `max`: at
    /// such rates a pause would add its length to every message's latency
    /// and save few wake-ups.
    pub fn pause(&mut self, n: usize, received: Instant, now: Instant) -> Option<Duration> {
        let since = self.last.map(|l| received.saturating_duration_since(l));
        self.last = Some(received);
        if n == 0 {
            return None;
        }
        let sample = since?.as_nanos() as f64 / n as f64;
        let gap = match self.gap_ns {
            Some(g) => g + (sample - g) / 4.0,
            None => sample,
        };
        self.gap_ns = Some(gap);
        let max = self.max.as_nanos() as f64;
        let fill = gap * self.batch as f64;
        if n >= self.batch || fill / 2.0 > max {
            return None;
        }
        let handled = now.saturating_duration_since(received).as_nanos() as f64;
        let want = Duration::from_nanos((fill.min(max) - handled).max(0.0) as u64);
        (want >= MIN_PAUSE).then_some(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn pauses_at_flood_rates_only() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(64, 200 * US);
        // The first receive has no rate to go by.
        assert_eq!(c.pause(32, t0, t0), None);
        // 32 datagrams in 64 µs (2 µs apart): a batch takes 128 µs; less
        // the 20 µs handling took.
        let mut t = t0 + 64 * US;
        assert_eq!(c.pause(32, t, t + 20 * US), Some(108 * US));
        // Full: more is queued, no pause.
        t += 128 * US;
        assert_eq!(c.pause(64, t, t), None);
        // Handling took longer than a batch needs to arrive: no pause.
        t += 64 * US;
        assert_eq!(c.pause(32, t, t + 150 * US), None);
    }

    #[test]
    fn slow_rates_and_bursts_never_pause() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(64, 200 * US);
        c.pause(1, t0, t0);
        // 60k msgs/s: ~17 µs apart, half a batch takes 530 µs.
        let mut t = t0;
        for _ in 0..50 {
            t += 17 * US;
            assert_eq!(c.pause(1, t, t), None);
        }
        // A burst of 32 after a quiet millisecond is not a flood.
        t += 1000 * US;
        assert_eq!(c.pause(32, t, t), None);
    }

    #[test]
    fn a_long_batch_at_a_high_rate_is_capped() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(64, 200 * US);
        c.pause(10, t0, t0);
        // 5 µs apart: a batch takes 320 µs, half of it 160: pause 200.
        let t = t0 + 50 * US;
        assert_eq!(c.pause(10, t, t), Some(200 * US));
    }

    #[test]
    fn zero_means_never() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(64, Duration::ZERO);
        assert_eq!(c.pause(32, t0, t0), None);
        assert_eq!(c.pause(32, t0 + 100 * US, t0 + 100 * US), None);
    }
}
