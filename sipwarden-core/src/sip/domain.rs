//! A matcher of domain names as they stand in SIP URIs: the secret
//! domains of admission step 8. In `sip` so that the config can parse
//! `filter.domains` into one without depending on the policy that uses it.

/// Exact names and `*.` wildcard suffixes, lower-cased. Matching is
/// case-insensitive and ignores any port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainSet {
    exact: Vec<Box<[u8]>>,
    /// Stored with the leading dot: `*.example.com` -> `.example.com`.
    suffixes: Vec<Box<[u8]>>,
    /// The shortest host that can match: scanners name an IP address,
    /// usually shorter than any secret domain, and are told apart by
    /// length alone.
    min_len: usize,
}

impl DomainSet {
    /// Builds the set; returns the offending entry when one is not a host
    /// name.
    pub fn new<S: AsRef<str>>(domains: &[S]) -> Result<DomainSet, String> {
        let mut set = DomainSet::default();
        for d in domains {
            let d = d.as_ref().trim().to_ascii_lowercase();
            let (wild, name) = match d.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, d.as_str()),
            };
            let ok = !name.is_empty()
                && !name.starts_with('.')
                && !name.ends_with('.')
                && name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-');
            if !ok {
                return Err(d);
            }
            if wild {
                set.suffixes.push(format!(".{name}").into_bytes().into());
            } else {
                set.exact.push(name.as_bytes().into());
            }
        }
        set.min_len = set
            .exact
            .iter()
            .map(|d| d.len())
            .chain(set.suffixes.iter().map(|s| s.len() + 1))
            .min()
            .unwrap_or(0);
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// True when `host` (as written in a URI, possibly with `:port` or a
    /// trailing dot) is one of the domains.
    pub fn matches(&self, host: &[u8]) -> bool {
        // Removing a port or a dot only shortens it.
        if host.len() < self.min_len {
            return false;
        }
        let host = strip_port(host);
        let host = host.strip_suffix(b".").unwrap_or(host);
        self.exact.iter().any(|d| host.eq_ignore_ascii_case(d))
            || self.suffixes.iter().any(|s| {
                host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            })
    }
}

fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return host;
    }
    // A host is a few dozen bytes: a plain loop beats a memchr call.
    match host.iter().rposition(|&c| c == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard() {
        let d = DomainSet::new(&["Sip-7f3k.Example.com", "*.phones.example.net"]).unwrap();
        assert!(d.matches(b"sip-7f3k.example.com"));
        assert!(d.matches(b"SIP-7F3K.EXAMPLE.COM"));
        assert!(d.matches(b"sip-7f3k.example.com:5060"));
        assert!(d.matches(b"sip-7f3k.example.com."));
        assert!(!d.matches(b"example.com"));
        assert!(!d.matches(b"xsip-7f3k.example.com"));
        assert!(d.matches(b"a.phones.example.net"));
        assert!(d.matches(b"b.a.phones.example.net"));
        assert!(!d.matches(b"phones.example.net"));
        assert!(!d.matches(b"xphones.example.net"));
        assert!(!d.matches(b"192.0.2.1"));
        assert!(!d.matches(b""));
        // The shortest wildcard match is one character and the dot.
        let w = DomainSet::new(&["*.ex.net", "longer-name.example.com"]).unwrap();
        assert!(w.matches(b"a.ex.net"));
        assert!(w.matches(b"A.EX.NET:5060"));
        assert!(!w.matches(b".ex.net"));
        assert!(!w.matches(b"ex.net"));
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "*.", "a b", "*.*.x", ".x", "x."] {
            assert!(DomainSet::new(&[bad]).is_err(), "{bad}");
        }
    }
}
