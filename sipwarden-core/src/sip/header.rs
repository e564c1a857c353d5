//! Header names the proxy cares about, recognised in full and compact form
//! (RFC 3261 section 7.3.3) in any letter case.

/// The headers sipwarden reads or edits. Everything else is `Other` and is
/// forwarded byte for byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HeaderName {
    Via,
    Route,
    RecordRoute,
    To,
    From,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    ContentLength,
    Expires,
    UserAgent,
    Supported,
    Require,
    Path,
    Authorization,
    ProxyAuthorization,
    /// Challenges in 401/407 responses: read for `stale=true`.
    WwwAuthenticate,
    ProxyAuthenticate,
    /// `X-Sipwarden-*`: owned by sipwarden, never accepted from outside.
    XSipwarden,
    Other,
}

impl HeaderName {
    /// Classifies a header name as it appears on the wire.
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b't' => HeaderName::To,
                b'f' => HeaderName::From,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'k' => HeaderName::Supported,
                _ => HeaderName::Other,
            };
        }
        // Dispatch on length first so most names cost one comparison,
        // made a word at a time.
        let eq = |s: &[u8]| eq_lower(name, s);
        match name.len() {
            2 if eq(b"to") => HeaderName::To,
            3 if eq(b"via") => HeaderName::Via,
            4 if eq(b"from") => HeaderName::From,
            4 if eq(b"cseq") => HeaderName::CSeq,
            4 if eq(b"path") => HeaderName::Path,
            5 if eq(b"route") => HeaderName::Route,
            7 if eq(b"call-id") => HeaderName::CallId,
            7 if eq(b"contact") => HeaderName::Contact,
            7 if eq(b"expires") => HeaderName::Expires,
            7 if eq(b"require") => HeaderName::Require,
            9 if eq(b"supported") => HeaderName::Supported,
            10 if eq(b"user-agent") => HeaderName::UserAgent,
            12 if eq(b"max-forwards") => HeaderName::MaxForwards,
            12 if eq(b"record-route") => HeaderName::RecordRoute,
            13 if eq(b"authorization") => HeaderName::Authorization,
            19 if eq(b"proxy-authorization") => HeaderName::ProxyAuthorization,
            14 if eq(b"content-length") => HeaderName::ContentLength,
            16 if eq(b"www-authenticate") => HeaderName::WwwAuthenticate,
            18 if eq(b"proxy-authenticate") => HeaderName::ProxyAuthenticate,
            n if n >= 12 && eq_lower(&name[..12], b"x-sipwarden-") => HeaderName::XSipwarden,
            _ => HeaderName::Other,
        }
    }

    /// Headers whose value is a comma-separated list (RFC 3261 7.3.1), so one
    /// line may hold several entries.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Contact
                | HeaderName::Path
                | HeaderName::Supported
                | HeaderName::Require
        )
    }
}

/// Up to 8 bytes as a little-endian word, zero-padded.
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(w)
}

/// `name` equals `lower` (lower-case letters, digits and `-`) ignoring
/// ASCII case, eight bytes per step: bit 0x20 is ignored exactly where
/// `lower` has a letter (the letters are the bytes with bit 0x40 set).
fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    name.chunks(8).zip(lower.chunks(8)).all(|(a, l)| {
        let l = word(l);
        let case = (l & u64::from_le_bytes([0x40; 8])) >> 1;
        word(a) | case == l
    })
}

/// RFC 3261 token characters, as a table: the scanner's inner loop.
pub static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        c += 1;
    }
    t
};

/// RFC 3261 token characters, used to validate header names and methods.
pub fn is_token_char(c: u8) -> bool {
    TOKEN[c as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_compare_agrees_with_ignore_case() {
        let names: [&[u8]; 6] = [
            b"call-id",
            b"proxy-authorization",
            b"to",
            b"x-sipwarden-",
            b"max-forwards",
            b"via",
        ];
        for lower in names {
            // Every single-byte change of every position.
            for i in 0..lower.len() {
                for c in 0..=255u8 {
                    let mut n = lower.to_vec();
                    n[i] = c;
                    assert_eq!(eq_lower(&n, lower), n.eq_ignore_ascii_case(lower));
                }
            }
            assert!(!eq_lower(&lower[1..], lower));
        }
    }

    #[test]
    fn compact_and_full_forms_in_any_case() {
        for (n, h) in [
            ("v", HeaderName::Via),
            ("V", HeaderName::Via),
            ("VIA", HeaderName::Via),
            ("t", HeaderName::To),
            ("f", HeaderName::From),
            ("i", HeaderName::CallId),
            ("call-id", HeaderName::CallId),
            ("m", HeaderName::Contact),
            ("l", HeaderName::ContentLength),
            ("k", HeaderName::Supported),
            ("cseq", HeaderName::CSeq),
            ("record-route", HeaderName::RecordRoute),
            ("max-forwards", HeaderName::MaxForwards),
            ("x-sipwarden-source", HeaderName::XSipwarden),
            ("X-SIPWARDEN-TRUNK", HeaderName::XSipwarden),
            ("X-Sipwarden-", HeaderName::XSipwarden),
            ("WWW-Authenticate", HeaderName::WwwAuthenticate),
            ("proxy-authenticate", HeaderName::ProxyAuthenticate),
            ("X-Other", HeaderName::Other),
            ("s", HeaderName::Other),
            ("Subject", HeaderName::Other),
        ] {
            assert_eq!(HeaderName::from_bytes(n.as_bytes()), h, "{n}");
        }
    }
}
