//! Value types of the config file, each parsed and checked while the file
//! is read so that errors point at the line of the bad value.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use crate::flow::Transport;

/// Deserializes a type from a string through its `FromStr`, inside the
/// visitor: a bad value's error then carries the span of the value itself
/// (a list entry's own line), not of the list or table around it.
macro_rules! from_str_deserialize {
    ($t:ty, $expecting:expr) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// Serializes a type as its `Display` text, which its `FromStr` reads
/// back: what the file would say.
macro_rules! display_serialize {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

/// `udp:IP:PORT` or `tcp:[IPv6]:PORT`: a socket to bind or to reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketSpec {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl FromStr for SocketSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!("{s:?} is not a socket: expected \"udp:IP:PORT\", \"tcp:IP:PORT\", \"tls:IP:PORT\", \"ws:IP:PORT\" or \"wss:IP:PORT\" (IPv6 as [::1]:5060)")
        };
        let (t, a) = s.split_once(':').ok_or_else(err)?;
        let transport = Transport::from_token(t.as_bytes()).ok_or_else(err)?;
        let addr = a.parse().map_err(|_| err())?;
        Ok(SocketSpec { transport, addr })
    }
}

from_str_deserialize!(SocketSpec, "a socket such as \"udp:IP:PORT\"");
display_serialize!(SocketSpec);

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

/// A host name or IP with a port, as written into Via and Record-Route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// Lower-cased; IPv6 with brackets, as it goes into a SIP URI.
    pub host: String,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = |why: &str| format!("{s:?} is not a usable HOST:PORT: {why}");
        let (host, ip, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest
                .split_once(']')
                .ok_or_else(|| err("no `]` after the IPv6 address"))?;
            let ip: std::net::Ipv6Addr = h
                .parse()
                .map_err(|_| err("not an IPv6 address in the brackets"))?;
            let port = match p {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("write [IPv6]:PORT"))?,
                ),
            };
            (format!("[{h}]"), Some(IpAddr::V6(ip)), port)
        } else {
            let (h, p) = match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            if h.contains(':') {
                return Err(err("an IPv6 address goes in brackets: [2001:db8::1]:5060"));
            }
            (h.to_string(), h.parse::<IpAddr>().ok(), p)
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| err("the port is a number from 1 to 65535"))?,
            None => 5060,
        };
        if port == 0 {
            return Err(err("port 0 is not a port phones can send to"));
        }
        match ip {
            Some(ip) if ip.is_unspecified() => {
                return Err(err(
                    "0.0.0.0 and :: mean \"any address\" to a socket, but phones and \
                     trunks cannot send to them: write the public name or IP",
                ))
            }
            Some(ip) if ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) => {
                return Err(err("a multicast or broadcast address"))
            }
            Some(_) => {}
            None => host_name(&host).map_err(err)?,
        }
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// A DNS name as it may stand in a SIP URI: dot-separated labels of
/// letters, digits and inner hyphens, at most 63 bytes each and 253 in
/// all; digits-only labels throughout would be a malformed IPv4 address.
fn host_name(h: &str) -> Result<(), &'static str> {
    if h.is_empty() {
        return Err("no host");
    }
    if h.len() > 253 {
        return Err("a host name is at most 253 characters");
    }
    let mut all_digits = true;
    for label in h.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err("not a host name (labels of letters, digits and inner hyphens, separated by single dots) or an IP address");
        }
        all_digits &= label.bytes().all(|c| c.is_ascii_digit());
    }
    if all_digits {
        return Err("not an IPv4 address");
    }
    Ok(())
}

from_str_deserialize!(HostPort, "a string HOST:PORT");
display_serialize!(HostPort);

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A duration written as `200us`, `500ms`, `25s`, `15m`, `2h` or `1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "{s:?} is not a duration: write e.g. \"200us\", \"500ms\", \"25s\", \"15m\", \"2h\", \"1d\""
            )
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().map_err(|_| err())?;
        if unit == "us" {
            return Ok(Dur(Duration::from_micros(n)));
        }
        let ms = match unit {
            "ms" => n,
            "s" => n.saturating_mul(1000),
            "m" => n.saturating_mul(60_000),
            "h" => n.saturating_mul(3_600_000),
            "d" => n.saturating_mul(86_400_000),
            _ => return Err(err()),
        };
        Ok(Dur(Duration::from_millis(ms)))
    }
}

from_str_deserialize!(Dur, "a duration such as \"25s\"");
display_serialize!(Dur);

/// In the largest unit that says it exactly (`"15m"`, `"180s"` is `"3m"`),
/// as the file may write it.
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        if us == 0 {
            return f.write_str("0s");
        }
        if !us.is_multiple_of(1000) {
            return write!(f, "{us}us");
        }
        let ms = us / 1000;
        let (n, unit) = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ]
        .into_iter()
        .find(|(per, _)| ms.is_multiple_of(*per))
        .map_or((ms, "ms"), |(per, unit)| (ms / per, unit));
        write!(f, "{n}{unit}")
    }
}

impl Dur {
    pub fn ms(self) -> u64 {
        self.0.as_millis() as u64
    }
}

/// An IPv4 or IPv6 network, `198.51.100.0/24`; a bare address is a /32 or
/// /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.parse::<ipnet::IpNet>() {
            return Ok(Cidr(n.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Cidr(ipnet::IpNet::from(ip)));
        }
        Err(format!(
            "{s:?} is not an IP network: write e.g. \"198.51.100.0/24\" or \"2001:db8::/32\""
        ))
    }
}

from_str_deserialize!(Cidr, "a network such as \"198.51.100.0/24\"");
display_serialize!(Cidr);

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

/// True when any network of the list holds `ip` (IPv4-mapped IPv6
/// addresses count as IPv4).
pub fn cidrs_contain(list: &[Cidr], ip: IpAddr) -> bool {
    let ip = crate::flow::canonical_ip(ip);
    list.iter().any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_specs() {
        let s: SocketSpec = "udp:0.0.0.0:5060".parse().unwrap();
        assert_eq!(s.transport, Transport::Udp);
        assert_eq!(s.addr.port(), 5060);
        let s: SocketSpec = "tcp:[::1]:5070".parse().unwrap();
        assert!(s.addr.is_ipv6());
        let s: SocketSpec = "tls:[2001:db8::1]:5061".parse().unwrap();
        assert_eq!((s.transport, s.addr.port()), (Transport::Tls, 5061));
        assert_eq!(s.to_string(), "tls:[2001:db8::1]:5061");
        let s: SocketSpec = "tls:0.0.0.0:5061".parse().unwrap();
        assert_eq!(s.transport, Transport::Tls);
        for bad in [
            "0.0.0.0:5060",
            "tls:host:5061",
            "udp:host:5060",
            "udp:1.2.3.4",
        ] {
            assert!(bad.parse::<SocketSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_ports() {
        let h: HostPort = "PBX.example.com:5060".parse().unwrap();
        assert_eq!(h.host, "pbx.example.com");
        let h: HostPort = "[2001:db8::1]:5062".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("[2001:db8::1]", 5062));
        let h: HostPort = "203.0.113.5".parse().unwrap();
        assert_eq!(h.port, 5060);
        for bad in [
            "",
            ":5060",
            "a b:5060",
            "h:0",
            "h:x",
            "[zz]:5060",
            "[::1]x",
            "::1:5060",
            "0.0.0.0:5060",
            "[::]:5060",
            "255.255.255.255:5060",
            "1.2.3:5060",
            "a_b:5060",
            "pbx-.example.com:5060",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!("25s".parse::<Dur>().unwrap().ms(), 25_000);
        assert_eq!("15m".parse::<Dur>().unwrap().ms(), 900_000);
        assert_eq!("500ms".parse::<Dur>().unwrap().ms(), 500);
        assert_eq!("1d".parse::<Dur>().unwrap().ms(), 86_400_000);
        assert_eq!(
            "200us".parse::<Dur>().unwrap().0,
            Duration::from_micros(200)
        );
        for bad in ["", "s", "5", "5 min", "-1s", "5µs"] {
            assert!(bad.parse::<Dur>().is_err(), "{bad}");
        }
    }

    /// What a duration prints, it reads back as.
    #[test]
    fn durations_print_as_they_read() {
        for (text, shown) in [
            ("200us", "200us"),
            ("1500us", "1500us"),
            ("2000us", "2ms"),
            ("500ms", "500ms"),
            ("180s", "3m"),
            ("90s", "90s"),
            ("60m", "1h"),
            ("48h", "2d"),
            ("0us", "0s"),
        ] {
            let d: Dur = text.parse().unwrap();
            assert_eq!(d.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<Dur>().unwrap(), d, "{text}");
        }
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "198.51.100.7/24".parse().unwrap();
        assert!(cidrs_contain(&[c], "198.51.100.200".parse().unwrap()));
        assert!(cidrs_contain(&[c], "::ffff:198.51.100.1".parse().unwrap()));
        assert!(!cidrs_contain(&[c], "198.51.101.1".parse().unwrap()));
        let one: Cidr = "2001:db8::1".parse().unwrap();
        assert!(cidrs_contain(&[one], "2001:db8::1".parse().unwrap()));
        assert!("300.1.1.1/8".parse::<Cidr>().is_err());
    }
}
