//! Value types of the config file, each parsed and checked while the file
//! is read so that errors point at the line of the bad value.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::flow::Transport;

/// `udp:IP:PORT` or `tcp:[IPv6]:PORT`: a socket to bind or to reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct SocketSpec {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl FromStr for SocketSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!("{s:?} is not a socket: expected \"udp:IP:PORT\" or \"tcp:IP:PORT\" (IPv6 as [::1]:5060)")
        };
        let (t, a) = s.split_once(':').ok_or_else(err)?;
        let transport = Transport::from_token(t.as_bytes()).ok_or_else(err)?;
        let addr = a.parse().map_err(|_| err())?;
        Ok(SocketSpec { transport, addr })
    }
}

impl TryFrom<String> for SocketSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

/// A host name or IP with a port, as written into Via and Record-Route.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostPort {
    /// Lower-cased; IPv6 with brackets, as it goes into a SIP URI.
    pub host: String,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("{s:?} is not HOST:PORT (a name or IP, IPv6 in brackets, and a port)");
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once(']').ok_or_else(err)?;
            h.parse::<std::net::Ipv6Addr>().map_err(|_| err())?;
            (format!("[{h}]"), p.strip_prefix(':'))
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (s.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| err())?,
            None => 5060,
        };
        let valid = !host.is_empty()
            && (host.starts_with('[')
                || host
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-'));
        if !valid || port == 0 {
            return Err(err());
        }
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A duration written as `200us`, `500ms`, `25s`, `15m`, `2h` or `1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
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

impl TryFrom<String> for Dur {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl Dur {
    pub fn ms(self) -> u64 {
        self.0.as_millis() as u64
    }
}

/// An IPv4 or IPv6 network, `198.51.100.0/24`; a bare address is a /32 or
/// /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
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

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
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
        for bad in [
            "0.0.0.0:5060",
            "tls:1.2.3.4:5061",
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
        for bad in ["", ":5060", "a b:5060", "h:0", "h:x", "[zz]:5060"] {
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
