//! name-addr / addr-spec values (To, From, Contact, Route, Record-Route,
//! Path) and comma-separated lists of them.

/// `"Display" <uri>;params`, `<uri>;params` or `uri;params`. In the last
/// form the parameters belong to the header, not the URI (RFC 3261 20.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    pub uri: &'a [u8],
    /// Header parameters after the URI, including the leading `;`.
    pub params: &'a [u8],
    /// Offset of `uri` inside the parsed value.
    pub uri_start: usize,
    /// Offset of `params` inside the parsed value.
    pub params_start: usize,
    pub bracketed: bool,
}

impl<'a> NameAddr<'a> {
    /// Parses one entry (already split from its list).
    pub fn parse(v: &'a [u8]) -> Option<NameAddr<'a>> {
        let mut i = 0;
        let mut quoted = false;
        // Find `<` outside a quoted display name.
        while i < v.len() {
            match v[i] {
                b'"' => quoted = !quoted,
                b'\\' if quoted => i += 1,
                b'<' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        if quoted {
            return None;
        }
        if i < v.len() {
            let close = memchr::memchr(b'>', &v[i..])? + i;
            return Some(NameAddr {
                uri: &v[i + 1..close],
                params: &v[close + 1..],
                uri_start: i + 1,
                params_start: close + 1,
                bracketed: true,
            });
        }
        // addr-spec: the URI ends at the first `;` after which header
        // params start; a plain addr-spec has no display name.
        let s = v.len() - v.trim_ascii_start().len();
        let e = memchr::memchr(b';', v).unwrap_or(v.len());
        let ue = s + v[s..e].trim_ascii_end().len();
        if s >= ue || v[s..ue].iter().any(|c| c.is_ascii_whitespace()) {
            return None;
        }
        Some(NameAddr {
            uri: &v[s..ue],
            params: &v[e..],
            uri_start: s,
            params_start: e,
            bracketed: false,
        })
    }
}

/// Splits a header value into list entries at commas that are outside
/// quotes and angle brackets. Yields `(start, end)` offsets into `v`,
/// trimmed of whitespace.
pub fn split_list(v: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < v.len() {
            let start = pos;
            let mut i = pos;
            let mut quoted = false;
            let mut angle = false;
            while i < v.len() {
                match v[i] {
                    b'"' if !angle => quoted = !quoted,
                    b'\\' if quoted => i += 1,
                    b'<' if !quoted => angle = true,
                    b'>' if !quoted => angle = false,
                    b',' if !quoted && !angle => break,
                    _ => {}
                }
                i += 1;
            }
            let end = i.min(v.len());
            pos = end + 1;
            let item = &v[start..end];
            let lead = item.len() - item.trim_ascii_start().len();
            let trimmed = item.trim_ascii();
            if !trimmed.is_empty() {
                return Some((start + lead, start + lead + trimmed.len()));
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let n = NameAddr::parse(b"\"A, <b>\" <sip:a@b;lr>;tag=1").unwrap();
        assert_eq!(n.uri, b"sip:a@b;lr");
        assert_eq!(n.params, b";tag=1");
        let n = NameAddr::parse(b"sip:a@b;tag=2").unwrap();
        assert_eq!(n.uri, b"sip:a@b");
        assert_eq!(n.params, b";tag=2");
        let n = NameAddr::parse(b"Bob <tel:+123>").unwrap();
        assert_eq!(n.uri, b"tel:+123");
        assert!(NameAddr::parse(b"\"unterminated <sip:a@b>").is_none());
        assert!(NameAddr::parse(b"<sip:a@b").is_none());
        assert!(NameAddr::parse(b"bob sip:a@b").is_none());
    }

    #[test]
    fn splits_lists() {
        let v = b"<sip:a;lr>, \"x,y\" <sip:b>;p=1 ,<sip:c,d>";
        let parts: Vec<&[u8]> = split_list(v).map(|(s, e)| &v[s..e]).collect();
        assert_eq!(
            parts,
            vec![&b"<sip:a;lr>"[..], b"\"x,y\" <sip:b>;p=1", b"<sip:c,d>"]
        );
        assert_eq!(split_list(b" , ").count(), 0);
    }
}
