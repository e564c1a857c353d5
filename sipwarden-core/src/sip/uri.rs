//! SIP, SIPS and tel URIs: just the parts a proxy routes and filters on.

use std::net::IpAddr;

use super::params;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Other,
}

/// A URI split into its parts, borrowing from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: Scheme,
    /// User part without password (`tel:` number for tel URIs).
    pub user: Option<&'a [u8]>,
    /// Host as written; IPv6 keeps its brackets. Empty for tel/other.
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// URI parameters including the leading `;` (empty if none).
    pub params: &'a [u8],
    /// Offsets inside the parsed URI bytes, for editing.
    pub host_start: usize,
    /// End of host[:port].
    pub hostport_end: usize,
    /// Offset of `params` (= end of host[:port]).
    pub params_start: usize,
    /// Start of the user part, if any.
    pub user_start: usize,
}

impl<'a> Uri<'a> {
    pub fn parse(u: &'a [u8]) -> Option<Uri<'a>> {
        // URIs are a few dozen bytes: plain loops, not memchr calls (whose
        // set-up costs more than the search on so few bytes, and a
        // scanner's request needs two).
        let colon = find(u, b':')?;
        let scheme = match &u[..colon] {
            [a, b, c] if [a | 0x20, b | 0x20, c | 0x20] == *b"sip" => Scheme::Sip,
            [a, b, c, d] if [a | 0x20, b | 0x20, c | 0x20, d | 0x20] == *b"sips" => Scheme::Sips,
            [a, b, c] if [a | 0x20, b | 0x20, c | 0x20] == *b"tel" => Scheme::Tel,
            _ => Scheme::Other,
        };
        let rest_start = colon + 1;
        let rest = &u[rest_start..];
        if matches!(scheme, Scheme::Tel | Scheme::Other) {
            let e = find(rest, b';').unwrap_or(rest.len());
            return Some(Uri {
                scheme,
                user: Some(&rest[..e]),
                host: &[],
                port: None,
                params: &rest[e..],
                host_start: rest_start + e,
                hostport_end: rest_start + e,
                params_start: rest_start + e,
                user_start: rest_start,
            });
        }
        // The user part ends at the only unescaped `@` (RFC 3261 25.1:
        // neither host, params nor headers may contain one); its password
        // at the first `:`.
        let (user, hp_start) = match find(rest, b'@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let user_end = find(userinfo, b':').unwrap_or(at);
                (Some(&userinfo[..user_end]), at + 1)
            }
            None => (None, 0),
        };
        let hp = &rest[hp_start..];
        let (host, after) = if hp.first() == Some(&b'[') {
            let close = find(hp, b']')?;
            let host = &hp[..=close];
            if host.iter().any(|c| c.is_ascii_whitespace()) {
                return None;
            }
            (host, close + 1)
        } else {
            let mut e = 0;
            while let Some(&c) = hp.get(e) {
                if matches!(c, b':' | b';' | b'?' | b'>') {
                    break;
                }
                if c.is_ascii_whitespace() {
                    return None;
                }
                e += 1;
            }
            (&hp[..e], e)
        };
        if host.is_empty() {
            return None;
        }
        let mut port = None;
        let mut pe = after;
        if hp.get(after) == Some(&b':') {
            let ds = after + 1;
            let mut de = ds;
            while de < hp.len() && hp[de].is_ascii_digit() {
                de += 1;
            }
            if de == ds || de - ds > 5 {
                return None;
            }
            let p = digits_value(&hp[ds..de]);
            port = Some(u16::try_from(p).ok()?);
            pe = de;
        }
        let pend = find(&hp[pe..], b'?').map_or(hp.len(), |q| pe + q);
        let base = rest_start + hp_start;
        Some(Uri {
            scheme,
            user,
            host,
            port,
            params: &hp[pe..pend],
            host_start: base,
            hostport_end: base + pe,
            params_start: base + pe,
            user_start: rest_start,
        })
    }

    /// The host as an IP address, brackets removed.
    pub fn host_ip(&self) -> Option<IpAddr> {
        parse_host_ip(self.host)
    }

    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        params::find(self.params, name)
    }

    /// The `transport` parameter, lower-cased into a known transport.
    pub fn transport(&self) -> Option<&'a [u8]> {
        self.param(b"transport").flatten()
    }
}

/// The first `b` in a short slice.
fn find(hay: &[u8], b: u8) -> Option<usize> {
    hay.iter().position(|&c| c == b)
}

/// The value of at most five ASCII digits (a port, checked by the caller
/// to be 1-5 digits): without the UTF-8 check and `str::parse` the
/// standard route costs (it runs for every Via).
pub(crate) fn digits_value(d: &[u8]) -> u32 {
    d.iter()
        .fold(0u32, |n, &c| n * 10 + u32::from(c.wrapping_sub(b'0')))
}

/// Host text (IPv4, bracketed or bare IPv6) to an address.
pub fn parse_host_ip(host: &[u8]) -> Option<IpAddr> {
    let h = if host.first() == Some(&b'[') && host.last() == Some(&b']') {
        &host[1..host.len() - 1]
    } else {
        host
    };
    std::str::from_utf8(h).ok()?.parse().ok()
}

/// Compares two hosts as SIP does: case-insensitive, IPv6 by value.
pub fn host_eq(a: &[u8], b: &[u8]) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    matches!((parse_host_ip(a), parse_host_ip(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parser before plain loops replaced its memchr calls: the
    /// reference the new one must agree with on every input.
    fn parse_with_memchr<'a>(u: &'a [u8]) -> Option<Uri<'a>> {
        let colon = memchr::memchr(b':', u)?;
        let scheme_b = &u[..colon];
        let scheme = if scheme_b.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme_b.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme_b.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let rest_start = colon + 1;
        let rest = &u[rest_start..];
        if matches!(scheme, Scheme::Tel | Scheme::Other) {
            let e = memchr::memchr(b';', rest).unwrap_or(rest.len());
            return Some(Uri {
                scheme,
                user: Some(&rest[..e]),
                host: &[],
                port: None,
                params: &rest[e..],
                host_start: rest_start + e,
                hostport_end: rest_start + e,
                params_start: rest_start + e,
                user_start: rest_start,
            });
        }
        // The user part ends at the only unescaped `@` (RFC 3261 25.1:
        // neither host, params nor headers may contain one).
        let (user, hp_start) = match memchr::memchr(b'@', rest) {
            Some(at) => {
                let userinfo = &rest[..at];
                let user_end = memchr::memchr(b':', userinfo).unwrap_or(userinfo.len());
                (Some(&userinfo[..user_end]), at + 1)
            }
            None => (None, 0),
        };
        let hp = &rest[hp_start..];
        let (host, after) = if hp.first() == Some(&b'[') {
            let close = memchr::memchr(b']', hp)?;
            (&hp[..=close], close + 1)
        } else {
            let e = hp
                .iter()
                .position(|&c| matches!(c, b':' | b';' | b'?' | b'>'))
                .unwrap_or(hp.len());
            (&hp[..e], e)
        };
        if host.is_empty() || host.iter().any(|c| c.is_ascii_whitespace()) {
            return None;
        }
        let mut port = None;
        let mut pe = after;
        if hp.get(after) == Some(&b':') {
            let ds = after + 1;
            let mut de = ds;
            while de < hp.len() && hp[de].is_ascii_digit() {
                de += 1;
            }
            if de == ds || de - ds > 5 {
                return None;
            }
            let p = digits_value(&hp[ds..de]);
            port = Some(u16::try_from(p).ok()?);
            pe = de;
        }
        let pend = memchr::memchr(b'?', &hp[pe..]).map_or(hp.len(), |q| pe + q);
        let base = rest_start + hp_start;
        Some(Uri {
            scheme,
            user,
            host,
            port,
            params: &hp[pe..pend],
            host_start: base,
            hostport_end: base + pe,
            params_start: base + pe,
            user_start: rest_start,
        })
    }

    proptest::proptest! {
        #[test]
        fn same_as_the_memchr_parser(
            data in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"sSiIpPtTeElL:@[]:;?>0123456789.aZ \t\r".to_vec()),
                    proptest::prelude::any::<u8>(),
                ],
                0..48,
            ),
            prefix in proptest::sample::select(vec![&b""[..], b"sip:", b"SIPS:", b"tel:", b"sip:u@", b"sip:u:p@[", b"sip:h:"]),
        ) {
            let mut u = prefix.to_vec();
            u.extend_from_slice(&data);
            proptest::prop_assert_eq!(Uri::parse(&u), parse_with_memchr(&u));
        }
    }

    #[test]
    fn parses_sip_uris() {
        let u = Uri::parse(b"sip:alice:pw@Example.COM:5070;transport=tcp;lr?x=y").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.host, b"Example.COM");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params, b";transport=tcp;lr");
        assert_eq!(u.transport(), Some(&b"tcp"[..]));
        assert_eq!(u.param(b"lr"), Some(None));

        let u = Uri::parse(b"sip:[2001:db8::1]:5060").unwrap();
        assert_eq!(u.host, b"[2001:db8::1]");
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.host_ip(), "2001:db8::1".parse().ok());

        let u = Uri::parse(b"sips:+1;phone-context=x@h").unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.user, Some(&b"+1;phone-context=x"[..]));
        assert_eq!(u.host, b"h");
        assert_eq!(u.port, None);

        let u = Uri::parse(b"tel:+1-201-555-0123;phone-context=x").unwrap();
        assert_eq!(u.scheme, Scheme::Tel);
        assert!(u.host.is_empty());

        assert!(Uri::parse(b"sip:").is_none());
        assert!(Uri::parse(b"sip:h:99999").is_none());
        assert!(Uri::parse(b"sip:h:").is_none());
        assert!(Uri::parse(b"sip:[::1").is_none());
        assert!(Uri::parse(b"nocolon").is_none());
    }

    #[test]
    fn offsets_allow_editing() {
        let s = b"sip:acct@127.0.0.1:5080;line=x";
        let u = Uri::parse(s).unwrap();
        assert_eq!(&s[u.host_start..u.hostport_end], b"127.0.0.1:5080");
        assert_eq!(&s[u.params_start..], b";line=x");
    }

    #[test]
    fn host_comparison() {
        assert!(host_eq(b"PBX.example.com", b"pbx.EXAMPLE.com"));
        assert!(host_eq(b"[::1]", b"[0:0::1]"));
        assert!(!host_eq(b"a", b"b"));
    }
}
