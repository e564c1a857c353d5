//! Readings from /proc: CPU time, peak memory and UDP socket drops.
//!
//! The drop path is measured as CPU per message rather than throughput,
//! because one core of load generator cannot saturate a fast dropper; and
//! datagrams the kernel discarded at a full socket buffer never cost the
//! system under test any CPU, so they are subtracted via the `drops` column
//! of /proc/net/udp.

use std::collections::HashMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Parent pid and utime+stime (clock ticks) from `/proc/PID/stat`.
fn stat_fields(pid: u32) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let after = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ')' : [0]=state [1]=ppid ... [11]=utime [12]=stime
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Every process's name and user+system CPU in microseconds.
///
/// Used to name what else ran during a measurement on a shared machine
/// (including `ksoftirqd`, which carries deferred network work).
pub fn all_cpu_us() -> Vec<(u32, String, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    let tps = ticks_per_sec();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (s.find('('), s.rfind(')')) else {
            continue;
        };
        let comm = s[open + 1..close].to_string();
        if let Some((_, ticks)) = stat_fields(pid) {
            out.push((pid, comm, ticks * 1_000_000 / tps));
        }
    }
    out
}

/// `root` and all its descendants (processes, not threads).
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, _)) = stat_fields(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    if stat_fields(root).is_none() {
        return out;
    }
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        out.push(p);
        if let Some(c) = children.get(&p) {
            stack.extend(c);
        }
    }
    out.sort_unstable();
    out
}

/// Kernel clock ticks per second (for utime/stime).
pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// User+system CPU of a process (all its threads) in microseconds.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let (_, ticks) = stat_fields(pid)?;
    Some(ticks * 1_000_000 / ticks_per_sec())
}

/// Time spent by one CPU core since boot, from its `cpuN` line in /proc/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoreTimes {
    /// Everything but idle and iowait, in microseconds.
    pub busy_us: u64,
    /// Of which in softirq (network receive work runs here, charged to no process).
    pub softirq_us: u64,
    /// Of which in hard irq.
    pub irq_us: u64,
}

/// Times of core `n`.
///
/// The kernel accounts softirq time (loopback delivery of the datagrams a
/// process sends) apart from the process's utime/stime; the core's line
/// shows it, and shows how much of the core other processes took.
pub fn core_times(n: usize) -> Option<CoreTimes> {
    let s = fs::read_to_string("/proc/stat").ok()?;
    parse_core_times(&s, n)
}

fn parse_core_times(stat: &str, n: usize) -> Option<CoreTimes> {
    let name = format!("cpu{n}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    let to_us = |t: u64| t * 1_000_000 / ticks_per_sec();
    Some(CoreTimes {
        busy_us: to_us(total.saturating_sub(get(3) + get(4))),
        softirq_us: to_us(get(6)),
        irq_us: to_us(get(5)),
    })
}

/// A `kB` field of `/proc/PID/status` (e.g. `VmHWM`, `VmRSS`).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Proportional set size of a process in kB, from `/proc/PID/smaps_rollup`.
///
/// Kamailio's shared memory is one mapping in every process: RSS counts it
/// once per process, PSS divides each page among the processes mapping it,
/// so PSS summed over a process tree is what the tree costs the machine.
pub fn pss_kb(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_pss_kb(&s)
}

fn parse_pss_kb(rollup: &str) -> Option<u64> {
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Sockets bound to `port` on `ip` (or the wildcard) in /proc/net/udp and their summed drops.
pub fn udp_drops(ip: Ipv4Addr, port: u16) -> (u64, u64) {
    let Ok(s) = fs::read_to_string("/proc/net/udp") else {
        return (0, 0);
    };
    parse_udp_drops(&s, ip, port)
}

fn parse_udp_drops(table: &str, ip: Ipv4Addr, port: u16) -> (u64, u64) {
    let mut sockets = 0;
    let mut drops = 0;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(local) = f.get(1).and_then(|l| parse_hex_addr(l)) else {
            continue;
        };
        if local.port() != port || !(local.ip() == &ip || local.ip().is_unspecified()) {
            continue;
        }
        sockets += 1;
        drops += f.last().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
    }
    (sockets, drops)
}

/// `0100007F:13C4` -> 127.0.0.1:5060 (the kernel prints the address as a host-order u32).
fn parse_hex_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process() {
        let me = std::process::id();
        assert!(process_tree(me).contains(&me));
        assert!(cpu_us(me).is_some());
        assert!(status_kb(me, "VmHWM").unwrap_or(0) > 0);
        assert!(process_tree(u32::MAX - 1).is_empty());
    }

    #[test]
    fn pss_line() {
        let rollup = "00400000-7ffd rw-p 00000000 00:00 0 [rollup]\n\
Rss:               12345 kB\n\
Pss:                6789 kB\n\
Pss_Dirty:          4000 kB\n\
Pss_Anon:           3000 kB\n";
        assert_eq!(parse_pss_kb(rollup), Some(6789));
        assert_eq!(parse_pss_kb("Rss: 1 kB\nPss_Anon: 2 kB\n"), None);
        assert_eq!(parse_pss_kb("Pss: x kB\n"), None);
        assert!(pss_kb(std::process::id()).unwrap_or(0) > 0);
    }

    #[test]
    fn core_line() {
        let stat = "cpu  1 2 3 4\ncpu0 100 0 50 1000 10 5 20 0 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\n";
        let t = parse_core_times(stat, 0).unwrap();
        let tick = 1_000_000 / ticks_per_sec();
        assert_eq!(t.busy_us, 175 * tick);
        assert_eq!(t.softirq_us, 20 * tick);
        assert_eq!(t.irq_us, 5 * tick);
        assert!(parse_core_times(stat, 7).is_none());
        assert!(core_times(0).is_some());
    }

    #[test]
    fn udp_table() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
 1: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 ffff 17\n\
 2: 00000000:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 ffff 3\n\
 3: 0100007F:13CE 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 ffff 99\n";
        if cfg!(target_endian = "little") {
            assert_eq!(parse_udp_drops(t, Ipv4Addr::LOCALHOST, 5060), (2, 20));
        }
    }
}
