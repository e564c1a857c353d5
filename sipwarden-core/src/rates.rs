//! Message rates over the last seconds, by reason and disposition, for
//! `sipwarden status` and a live view's sparkline: the message counters
//! sampled once a second (by `Core::tick`) into a ring of the last
//! [`KEEP`] samples. Sampling the counters costs the message path nothing;
//! a rate is the difference of two samples over the time between them.

use std::collections::VecDeque;

use crate::metrics::Metrics;
use crate::time::UnixMs;
use crate::verdict::{Disposition, Reason};

/// Samples kept: a minute of per-second history, and its start.
pub const KEEP: usize = 61;
const REASONS: usize = Reason::ALL.len();
const DISPOSITIONS: usize = Disposition::ALL.len();

/// The message counters at one instant, summed over sides and transports.
struct Sample {
    at: UnixMs,
    counts: Box<[u64]>,
}

fn slot(r: Reason, d: Disposition) -> usize {
    r.index() * DISPOSITIONS + d.index()
}

impl Sample {
    fn of(metrics: &Metrics, at: UnixMs) -> Sample {
        let mut counts = vec![0u64; REASONS * DISPOSITIONS].into_boxed_slice();
        for (_, _, r, d, n) in metrics.messages() {
            counts[slot(r, d)] = counts[slot(r, d)].wrapping_add(n);
        }
        Sample { at, counts }
    }

    fn by(&self, d: Disposition) -> u64 {
        Reason::ALL.iter().map(|r| self.counts[slot(*r, d)]).sum()
    }
}

/// The ring of samples.
#[derive(Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

/// Messages per second of one reason and disposition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub reason: Reason,
    pub disposition: Disposition,
    pub per_second: f64,
}

impl History {
    /// Takes a sample of `metrics` at `now`: at most one a second (a
    /// sample closer to the last one is skipped); a clock set back starts
    /// the ring again.
    pub fn sample(&mut self, now: UnixMs, metrics: &Metrics) {
        if let Some(last) = self.samples.back() {
            if now < last.at {
                self.samples.clear();
            } else if now.since(last.at) < 900 {
                return;
            }
        }
        if self.samples.len() == KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample::of(metrics, now));
    }

    /// The newest sample and the newest one at least `span` ms older (or
    /// the oldest one kept).
    fn ends(&self, span: u64) -> Option<(&Sample, &Sample)> {
        let last = self.samples.back()?;
        let first = self
            .samples
            .iter()
            .rev()
            .find(|s| last.at.since(s.at) >= span)
            .or_else(|| self.samples.front())?;
        (last.at > first.at).then_some((first, last))
    }

    /// Rates over the last `span` ms (as far back as the ring goes), every
    /// reason and disposition that had messages.
    pub fn rates(&self, span: u64) -> Vec<Rate> {
        let Some((a, b)) = self.ends(span) else {
            return Vec::new();
        };
        let secs = b.at.since(a.at) as f64 / 1000.0;
        let mut v = Vec::new();
        for r in Reason::ALL {
            for d in Disposition::ALL {
                let n = b.counts[slot(r, d)].wrapping_sub(a.counts[slot(r, d)]);
                if n > 0 {
                    v.push(Rate {
                        reason: r,
                        disposition: d,
                        per_second: n as f64 / secs,
                    });
                }
            }
        }
        v
    }

    /// The rate of one disposition in each second of the ring, oldest
    /// first: at most [`KEEP`] - 1 values.
    pub fn per_second(&self, d: Disposition) -> Vec<f64> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(a, b)| {
                let secs = (b.at.since(a.at) as f64 / 1000.0).max(0.001);
                b.by(d).wrapping_sub(a.by(d)) as f64 / secs
            })
            .collect()
    }

    /// Seconds the ring spans.
    pub fn span_secs(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) => b.at.since(a.at) as f64 / 1000.0,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Side, Transport};

    fn count(m: &Metrics, r: Reason, d: Disposition, n: usize) {
        for _ in 0..n {
            m.count(Side::Public, Transport::Udp, r, d);
        }
    }

    #[test]
    fn rates_over_a_span_and_per_second() {
        let m = Metrics::default();
        let mut h = History::default();
        assert!(h.rates(10_000).is_empty());
        for s in 0..20u64 {
            // 5 drops a second, 2 forwards a second from second 10 on.
            count(&m, Reason::NoDomain, Disposition::Dropped, 5);
            if s >= 10 {
                count(&m, Reason::Domain, Disposition::Forwarded, 2);
            }
            h.sample(UnixMs(1_000_000 + s * 1000), &m);
            // A tick sooner than a second after is no sample.
            h.sample(UnixMs(1_000_000 + s * 1000 + 10), &m);
        }
        let r = h.rates(10_000);
        let get = |r: &[Rate], reason, d| {
            r.iter()
                .find(|x| x.reason == reason && x.disposition == d)
                .map(|x| x.per_second)
        };
        assert_eq!(get(&r, Reason::NoDomain, Disposition::Dropped), Some(5.0));
        assert_eq!(get(&r, Reason::Domain, Disposition::Forwarded), Some(2.0));
        let ps = h.per_second(Disposition::Forwarded);
        assert_eq!(ps.len(), 19);
        assert_eq!(ps[0], 0.0);
        assert_eq!(ps[18], 2.0);
        // The ring is bounded.
        for s in 20..200u64 {
            h.sample(UnixMs(1_000_000 + s * 1000), &m);
        }
        assert_eq!(h.per_second(Disposition::Dropped).len(), KEEP - 1);
        assert_eq!(h.span_secs(), (KEEP - 1) as f64);
        // The clock set back starts again.
        h.sample(UnixMs(5), &m);
        assert_eq!(h.span_secs(), 0.0);
        assert!(h.rates(10_000).is_empty());
    }
}
