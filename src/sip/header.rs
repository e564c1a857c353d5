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
        // Dispatch on length first so most names cost one comparison.
        let eq = |s: &[u8]| name.eq_ignore_ascii_case(s);
        match name.len() {
            2 if eq(b"To") => HeaderName::To,
            3 if eq(b"Via") => HeaderName::Via,
            4 if eq(b"From") => HeaderName::From,
            4 if eq(b"CSeq") => HeaderName::CSeq,
            4 if eq(b"Path") => HeaderName::Path,
            5 if eq(b"Route") => HeaderName::Route,
            7 if eq(b"Call-ID") => HeaderName::CallId,
            7 if eq(b"Contact") => HeaderName::Contact,
            7 if eq(b"Expires") => HeaderName::Expires,
            7 if eq(b"Require") => HeaderName::Require,
            9 if eq(b"Supported") => HeaderName::Supported,
            10 if eq(b"User-Agent") => HeaderName::UserAgent,
            12 if eq(b"Max-Forwards") => HeaderName::MaxForwards,
            12 if eq(b"Record-Route") => HeaderName::RecordRoute,
            13 if eq(b"Authorization") => HeaderName::Authorization,
            19 if eq(b"Proxy-Authorization") => HeaderName::ProxyAuthorization,
            14 if eq(b"Content-Length") => HeaderName::ContentLength,
            n if n >= 12 && name[..12].eq_ignore_ascii_case(b"X-Sipwarden-") => {
                HeaderName::XSipwarden
            }
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
            ("X-Other", HeaderName::Other),
            ("s", HeaderName::Other),
            ("Subject", HeaderName::Other),
        ] {
            assert_eq!(HeaderName::from_bytes(n.as_bytes()), h, "{n}");
        }
    }
}
