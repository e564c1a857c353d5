//! One instance per socket. sipwarden binds with SO_REUSEPORT (several
//! workers per address, and a reload binds a new listener before the old
//! one closes), which also lets a second process of the same user bind
//! the same address: the kernel would then split the traffic between two
//! processes with separate tables. Before binding a listener, a probe
//! socket is bound to its address *without* SO_REUSEPORT: the kernel
//! refuses it if any socket overlaps (the same address, or a wildcard and
//! a specific address of the same port), whoever holds it. The holder is
//! then looked up in /proc (the socket's inode in /proc/net, the process
//! whose fd points at it) to name it in the error.
//!
//! Probing and binding happen under a lock shared by every sipwarden of
//! the network namespace (an abstract Unix socket), so two instances
//! started at the same moment cannot both probe before either binds.

use std::net::{IpAddr, SocketAddr};
use std::os::linux::net::SocketAddrExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::instance::command_of;
use sipwarden_core::config::SocketSpec;
use sipwarden_core::flow::Transport;

/// Why a listener's address is not ours to take.
#[derive(Debug)]
pub enum Busy {
    /// Held by these processes (PID, command).
    By(Vec<(u32, String)>),
    /// In use, but the holder is not visible to this user.
    Unknown,
}

/// Binds a probe to `spec` without SO_REUSEPORT and drops it. `Ok` when
/// nothing else holds an overlapping address; `Err(None)` when something
/// does, `Err(Some(e))` on any other bind error (the real bind will report
/// it).
fn probe(spec: &SocketSpec) -> Result<(), Option<std::io::Error>> {
    let (ty, proto) = match spec.transport {
        Transport::Udp => (Type::DGRAM, Protocol::UDP),
        Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => {
            (Type::STREAM, Protocol::TCP)
        }
    };
    let s = Socket::new(Domain::for_address(spec.addr), ty, Some(proto)).map_err(Some)?;
    if spec.addr.is_ipv6() {
        s.set_only_v6(true).map_err(Some)?;
    }
    // TCP: connections of an earlier instance in TIME_WAIT must not count
    // (SO_REUSEADDR ignores them, but never a listening socket).
    if spec.transport.is_stream() {
        s.set_reuse_address(true).map_err(Some)?;
    }
    match s.bind(&spec.addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(None),
        Err(e) => Err(Some(e)),
    }
}

/// Checks that `spec` is free of other processes. `ours`: listeners this
/// process holds already (a reload may move to an address that overlaps
/// one of them).
pub fn check(spec: &SocketSpec, ours: &[SocketSpec]) -> Result<(), Busy> {
    if spec.addr.port() == 0 {
        return Ok(());
    }
    match probe(spec) {
        Ok(()) | Err(Some(_)) => Ok(()),
        Err(None) => {
            let me = std::process::id();
            let holders = holders(spec);
            let others: Vec<(u32, String)> =
                holders.iter().filter(|(p, _)| *p != me).cloned().collect();
            if !others.is_empty() {
                Err(Busy::By(others))
            } else if !holders.is_empty() || ours.iter().any(|o| overlaps(o, spec)) {
                Ok(())
            } else {
                Err(Busy::Unknown)
            }
        }
    }
}

/// The error for a busy listener address.
pub fn busy_message(side: &str, spec: &SocketSpec, busy: &Busy) -> String {
    match busy {
        Busy::By(procs) => {
            let mut names: Vec<String> = procs
                .iter()
                .take(3)
                .map(|(pid, cmd)| format!("PID {pid} ({cmd})"))
                .collect();
            if procs.len() > 3 {
                names.push(format!("{} more", procs.len() - 3));
            }
            let sipwarden = procs.iter().any(|(_, c)| c.starts_with("sipwarden"));
            let advice = if sipwarden {
                "another sipwarden runs on this socket, and two would split its traffic \
                 between two sets of tables: stop it first, or give this one other sockets"
            } else {
                "stop that program or give sipwarden another socket"
            };
            format!(
                "{side} socket {spec} is already in use by {}: {advice}",
                names.join(", ")
            )
        }
        Busy::Unknown => format!(
            "{side} socket {spec} is already in use by a process this user cannot see \
             (`ss -lnp 'sport = :{}'` as root names it)",
            spec.addr.port()
        ),
    }
}

/// Do two listener addresses of one protocol overlap in the kernel's
/// eyes (IPv6 sockets being v6-only, as sipwarden binds them)? TCP and TLS
/// are both TCP sockets.
pub fn overlaps(a: &SocketSpec, b: &SocketSpec) -> bool {
    a.transport.is_stream() == b.transport.is_stream()
        && a.addr.port() == b.addr.port()
        && a.addr.is_ipv4() == b.addr.is_ipv4()
        && (a.addr.ip() == b.addr.ip()
            || a.addr.ip().is_unspecified()
            || b.addr.ip().is_unspecified())
}

/// One socket of /proc/net/{udp,tcp}{,6}.
#[derive(Debug, PartialEq, Eq)]
struct NetEntry {
    local: SocketAddr,
    listening: bool,
    inode: u64,
}

/// A line of /proc/net/{udp,tcp}{,6} (the header line gives `None`).
fn parse_net_line(line: &str) -> Option<NetEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (addr, port) = f.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The address is the kernel's bytes printed as native-endian 32-bit
    // words.
    let ip = match addr.len() {
        8 => IpAddr::from(u32::from_str_radix(addr, 16).ok()?.to_ne_bytes()),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_mut(4).enumerate() {
                let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::from(b)
        }
        _ => return None,
    };
    Some(NetEntry {
        local: SocketAddr::new(ip, port),
        // TCP_LISTEN
        listening: *f.get(3)? == "0A",
        inode: f.get(9)?.parse().ok()?,
    })
}

/// Could this socket be the one that made the probe of `spec` fail?
fn may_hold(e: &NetEntry, spec: &SocketSpec) -> bool {
    if e.local.port() != spec.addr.port() || e.inode == 0 {
        return false;
    }
    if spec.transport.is_stream() && !e.listening {
        return false;
    }
    let (a, b) = (e.local.ip(), spec.addr.ip());
    match (a, b) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            a == b || a.is_unspecified() || b.is_unspecified()
        }
        // A dual-stack IPv6 socket covers IPv4 too.
        (IpAddr::V6(v6), IpAddr::V4(v4)) => {
            v6.is_unspecified() || v6.to_ipv4_mapped() == Some(v4) || v4.is_unspecified()
        }
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// The inodes of the sockets that may hold `spec`'s address.
fn inodes(spec: &SocketSpec) -> Vec<u64> {
    let base = match spec.transport {
        Transport::Udp => "udp",
        Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => "tcp",
    };
    let mut v = Vec::new();
    for file in [format!("/proc/net/{base}"), format!("/proc/net/{base}6")] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        v.extend(
            text.lines()
                .filter_map(parse_net_line)
                .filter(|e| may_hold(e, spec))
                .map(|e| e.inode),
        );
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// The processes with a file descriptor on one of `inodes` (those whose
/// fds this user may read), with their command lines.
fn pids_of(inodes: &[u64]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| {
                    let l = l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
                    l.parse::<u64>().ok()
                })
                .is_some_and(|i| inodes.binary_search(&i).is_ok())
        });
        if holds {
            out.push((pid, command_of(pid).unwrap_or_else(|| "?".into())));
        }
    }
    out
}

/// The processes holding a socket that overlaps `spec`, as far as /proc
/// shows them.
pub fn holders(spec: &SocketSpec) -> Vec<(u32, String)> {
    pids_of(&inodes(spec))
}

/// Serialises probe-and-bind among the sipwarden processes of a network
/// namespace (and the servers of one process). Held while a start or a
/// reload binds, for milliseconds.
pub struct BindLock {
    _local: std::sync::MutexGuard<'static, ()>,
    _shared: Option<std::os::unix::net::UnixListener>,
}

static LOCAL: Mutex<()> = Mutex::new(());

/// The abstract socket name of the bind lock.
const LOCK_NAME: &[u8] = b"sipwarden/bind";

impl BindLock {
    /// Waits (at most 3 s) for the lock. Without one (no AF_UNIX, or a
    /// holder that never lets go) the probe still catches an instance
    /// that runs already; only a simultaneous start could slip through.
    pub fn take() -> BindLock {
        let local = LOCAL.lock().unwrap_or_else(|p| p.into_inner());
        let start = Instant::now();
        let shared = loop {
            let bound = std::os::unix::net::SocketAddr::from_abstract_name(LOCK_NAME)
                .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a));
            match bound {
                Ok(l) => break Some(l),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    if start.elapsed() > Duration::from_secs(3) {
                        tracing::warn!(
                            "another process kept the bind lock for 3 s; binding without it"
                        );
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no bind lock (abstract Unix socket)");
                    break None;
                }
            }
        };
        BindLock {
            _local: local,
            _shared: shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> SocketSpec {
        s.parse().unwrap()
    }

    #[test]
    fn parses_proc_net_lines() {
        let v4 = "   3: 0100007F:13C4 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            parse_net_line(v4),
            Some(NetEntry {
                local: "127.0.0.1:5060".parse().unwrap(),
                listening: true,
                inode: 123456,
            })
        );
        let v6 = "   0: 00000000000000000000000001000000:13C4 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0";
        assert_eq!(
            parse_net_line(v6),
            Some(NetEntry {
                local: "[::1]:5060".parse().unwrap(),
                listening: false,
                inode: 777,
            })
        );
        assert_eq!(
            parse_net_line("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"),
            None
        );
        assert_eq!(parse_net_line(""), None);
    }

    #[test]
    fn wildcard_and_specific_overlap() {
        let e = |a: &str, listening: bool| NetEntry {
            local: a.parse().unwrap(),
            listening,
            inode: 1,
        };
        let s = spec("udp:127.0.0.1:5060");
        assert!(may_hold(&e("0.0.0.0:5060", false), &s));
        assert!(may_hold(&e("127.0.0.1:5060", false), &s));
        assert!(!may_hold(&e("127.0.0.2:5060", false), &s));
        assert!(!may_hold(&e("127.0.0.1:5061", false), &s));
        assert!(may_hold(&e("[::]:5060", false), &s));
        assert!(may_hold(
            &e("127.0.0.9:5060", false),
            &spec("udp:0.0.0.0:5060")
        ));
        // TCP: only a listening socket holds the address.
        assert!(!may_hold(
            &e("127.0.0.1:5060", false),
            &spec("tcp:127.0.0.1:5060")
        ));
        assert!(may_hold(
            &e("0.0.0.0:5060", true),
            &spec("tcp:127.0.0.1:5060")
        ));
        assert!(overlaps(
            &spec("udp:0.0.0.0:5060"),
            &spec("udp:127.0.0.1:5060")
        ));
        assert!(!overlaps(
            &spec("udp:0.0.0.0:5060"),
            &spec("tcp:127.0.0.1:5060")
        ));
        assert!(!overlaps(
            &spec("udp:127.0.0.2:5060"),
            &spec("udp:127.0.0.1:5060")
        ));
        assert!(!overlaps(&spec("udp:[::]:5060"), &spec("udp:0.0.0.0:5060")));
    }

    #[test]
    fn a_shared_socket_of_this_process_is_found() {
        let s = socket2::Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_port(true).unwrap();
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        s.bind(&a.into()).unwrap();
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        let sp = spec(&format!("udp:127.0.0.1:{port}"));
        // SO_REUSEPORT would share it; the probe does not.
        assert!(matches!(probe(&sp), Err(None)));
        let h = holders(&sp);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].0, std::process::id());
        // Ours: not a conflict.
        assert!(check(&sp, &[]).is_ok());
        let msg = busy_message(
            "public",
            &sp,
            &Busy::By(vec![(42, "sipwarden --config x".into())]),
        );
        assert!(
            msg.contains("PID 42 (sipwarden --config x)") && msg.contains("another sipwarden"),
            "{msg}"
        );
        drop(s);
        assert!(probe(&sp).is_ok());
    }
}
