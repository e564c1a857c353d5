//! Open-loop pacing: messages are due at fixed times from the start,
//! whatever the system under test does.
//!
//! A closed loop (send after each answer) would slow down with the system
//! under test and hide its queueing delay (coordinated omission). Here the
//! n-th message is due at `start + n / rate`; a sender that fell behind
//! catches up in batches instead of skipping.

use crate::clock;

/// Decides how many messages may go now.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: u64,
    start_ns: u64,
    sent: u64,
    max_batch: usize,
}

impl Pacer {
    /// `rate` messages per second (0 = as fast as possible), batches of at most `max_batch`.
    pub fn new(rate: u64, start_ns: u64, max_batch: usize) -> Pacer {
        Pacer {
            rate,
            start_ns,
            sent: 0,
            max_batch: max_batch.max(1),
        }
    }

    /// Batch size that keeps ~`gap_us` microseconds between sends at `rate`,
    /// within 1..=`cap`. Small batches at moderate rates keep the load even,
    /// so latency measures the system under test rather than our bursts.
    pub fn batch_for(rate: u64, gap_us: u64, cap: usize) -> usize {
        if rate == 0 {
            return cap.max(1);
        }
        ((rate * gap_us / 1_000_000) as usize).clamp(1, cap.max(1))
    }

    /// How many messages are due at `now_ns` (capped at the batch size).
    pub fn due(&self, now_ns: u64) -> usize {
        if self.rate == 0 {
            return self.max_batch;
        }
        let elapsed = now_ns.saturating_sub(self.start_ns) as u128;
        let allowed = (elapsed * u128::from(self.rate) / 1_000_000_000) as u64 + 1;
        (allowed.saturating_sub(self.sent) as usize).min(self.max_batch)
    }

    /// Time at which the next message is due.
    pub fn next_due_ns(&self) -> u64 {
        if self.rate == 0 {
            return self.start_ns;
        }
        self.start_ns + (u128::from(self.sent) * 1_000_000_000 / u128::from(self.rate)) as u64
    }

    /// Records `n` messages handed to the kernel.
    pub fn record(&mut self, n: usize) {
        self.sent += n as u64;
    }

    /// Sleeps until the next message is due.
    pub fn wait(&self) {
        clock::sleep_until(self.next_due_ns());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_at_rate() {
        let mut p = Pacer::new(1000, 0, 10);
        assert_eq!(p.due(0), 1);
        p.record(1);
        assert_eq!(p.due(500_000), 0);
        assert_eq!(p.next_due_ns(), 1_000_000);
        assert_eq!(p.due(1_000_000), 1);
        // Far behind: catch up in capped batches.
        assert_eq!(p.due(1_000_000_000), 10);
    }

    #[test]
    fn unlimited() {
        let p = Pacer::new(0, 0, 32);
        assert_eq!(p.due(0), 32);
    }

    #[test]
    fn batch_size() {
        assert_eq!(Pacer::batch_for(50_000, 100, 64), 5);
        assert_eq!(Pacer::batch_for(100, 100, 64), 1);
        assert_eq!(Pacer::batch_for(10_000_000, 100, 64), 64);
        assert_eq!(Pacer::batch_for(0, 100, 64), 64);
    }
}
