//! The standard `process_*` metrics (CPU time, memory, file descriptors,
//! start time), read from `/proc/self` at scrape time as the Prometheus
//! client libraries do, with their names and help texts: dashboards and
//! alerts written for any exporter work on these. The parsing is pure and
//! tested on literal text; what cannot be read is left out of the scrape
//! (never a panic, never a made-up value).

use std::fmt::Write;

/// What `/proc/self/stat` says of the process.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Start time, in clock ticks after boot.
    pub starttime: u64,
    /// Virtual memory size, bytes.
    pub vsize: u64,
    /// Resident set size, pages.
    pub rss: u64,
}

/// Parses `/proc/self/stat` (proc(5)). The command name, field 2, is in
/// parentheses and may hold spaces and parentheses itself: the fields
/// are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: num(14)?,
        stime: num(15)?,
        starttime: num(22)?,
        vsize: num(23)?,
        rss: num(24)?,
    })
}

/// The soft limit of open files from `/proc/self/limits`; `None` when
/// unlimited or absent.
pub fn parse_max_fds(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time (`btime`, Unix seconds) from `/proc/stat`.
pub fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// `sysconf(name)`, if the system answers.
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf(3) reads a system value; it takes no pointer and has
    // no precondition.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0)
}

/// One metric with its HELP and TYPE lines.
fn metric(o: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        o,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Appends the `process_*` metrics that can be read now to `o`.
pub fn render(o: &mut String) {
    let ticks = sysconf(libc::_SC_CLK_TCK);
    let page = sysconf(libc::_SC_PAGESIZE);
    let stat = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t));
    if let (Some(s), Some(hz)) = (&stat, ticks) {
        let cpu = (s.utime + s.stime) as f64 / hz as f64;
        metric(
            o,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        metric(
            o,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            dir.count(),
        );
    }
    if let Some(max) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| parse_max_fds(&t))
    {
        metric(
            o,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    if let Some(s) = &stat {
        metric(
            o,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            s.vsize,
        );
        if let Some(page) = page {
            metric(
                o,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                s.rss * page,
            );
        }
    }
    let btime = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_btime(&t));
    if let (Some(s), Some(hz), Some(boot)) = (&stat, ticks, btime) {
        let start = boot as f64 + s.starttime as f64 / hz as f64;
        metric(
            o,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command name with a space and a parenthesis does not shift the
    /// fields.
    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (sip warden) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    150 75 0 0 20 0 9 0 987654 123456789 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17642 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 150,
                stime: 75,
                starttime: 987654,
                vsize: 123456789,
                rss: 2048,
            })
        );
        assert_eq!(parse_stat("4242 (sipwarden) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn limits_and_btime() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63473                63473                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1700000000)
        );
        assert_eq!(parse_btime("cpu 1\n"), None);
    }

    /// This test process's own values: all six present and plausible.
    #[test]
    fn renders_the_six_metrics_of_this_process() {
        let mut o = String::new();
        render(&mut o);
        let value = |name: &str| -> f64 {
            o.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} in {o}"))
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_resident_memory_bytes") > 1e5);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let start = value("process_start_time_seconds");
        assert!(start > 1e9 && start <= now + 5.0, "{start} vs {now}");
    }
}
