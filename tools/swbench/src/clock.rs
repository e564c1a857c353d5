//! One clock for every process of a run.
//!
//! `CLOCK_MONOTONIC` is system-wide on Linux: its origin (boot) is the same in
//! the load generator, the proxy under test and the sink, so a stamp written by
//! one and read by another subtracts into a one-way latency on the same host
//! clock, with no NTP steps in between.

/// Nanoseconds since the `CLOCK_MONOTONIC` origin.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Converts nanoseconds to a `timespec` for `ppoll` and `clock_nanosleep`.
pub fn timespec_from_ns(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Sleeps until the absolute monotonic time `deadline_ns` (returns early on a signal).
pub fn sleep_until(deadline_ns: u64) {
    let ts = timespec_from_ns(deadline_ns);
    // SAFETY: `ts` is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// Asks the kernel for 1 ns timer slack instead of the default 50 us.
///
/// A paced sender sleeps between small batches; with the default slack every
/// wake-up may come 50 us late, which turns an even rate into bursts and
/// shows up as queueing latency in the system under test.
pub fn minimise_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long value and no pointers.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_does_not_go_back() {
        let a = mono_ns();
        let b = mono_ns();
        assert!(b >= a);
    }

    #[test]
    fn timespec_split() {
        let ts = timespec_from_ns(3_000_000_007);
        assert_eq!(ts.tv_sec, 3);
        assert_eq!(ts.tv_nsec, 7);
    }
}
