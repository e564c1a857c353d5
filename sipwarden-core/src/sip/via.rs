//! Via values (RFC 3261 20.42): transport, sent-by and parameters, with
//! absolute positions so the editor can add `received`/`rport`.

use super::addr::split_list;
use super::params::{self, Param};
use super::scan::Span;

/// One via-parm. Positions are absolute offsets in the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// `UDP`, `TCP`, `TLS`, ... as written.
    pub transport: &'a [u8],
    /// Host as written (IPv6 with brackets).
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// Parameters including the leading `;`.
    pub params: &'a [u8],
    /// The whole via-parm.
    pub span: Span,
    /// Where `params` starts (= end of sent-by, plus whitespace).
    pub params_start: usize,
    /// `branch`, `rport` and `received`, when already found (the top Via
    /// of a scanned message); else they are looked up in `params`.
    pub known: Option<Known>,
}

/// A parameter's positions, absolute in the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamAt {
    name: Span,
    value: Option<Span>,
    span: Span,
}

/// The parameters forwarding reads from the top Via, found in one pass
/// when the message is scanned (looking up `branch` and then
/// `rport`/`received` separately walks the parameters three times).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Known {
    branch: Option<ParamAt>,
    rport: Option<ParamAt>,
    received: Option<ParamAt>,
}

fn skip_ws(b: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

fn token_end(b: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && super::header::is_token_char(b[i]) {
        i += 1;
    }
    i
}

/// Parses one via-parm at `[s, e)` of `b`.
pub fn parse_at(b: &[u8], s: usize, e: usize) -> Option<Via<'_>> {
    // sent-protocol = name SLASH version SLASH transport, with SWS around
    // the slashes.
    let mut i = skip_ws(b, s, e);
    let ne = token_end(b, i, e);
    if !b[i..ne].eq_ignore_ascii_case(b"SIP") {
        return None;
    }
    i = skip_ws(b, ne, e);
    if b.get(i) != Some(&b'/') {
        return None;
    }
    i = skip_ws(b, i + 1, e);
    let ve = token_end(b, i, e);
    if &b[i..ve] != b"2.0" {
        return None;
    }
    i = skip_ws(b, ve, e);
    if b.get(i) != Some(&b'/') {
        return None;
    }
    i = skip_ws(b, i + 1, e);
    let te = token_end(b, i, e);
    if te == i {
        return None;
    }
    let transport = &b[i..te];
    let hs = skip_ws(b, te, e);
    if hs == te || hs >= e {
        return None;
    }
    let (host_end, after) = if b[hs] == b'[' {
        let close = memchr::memchr(b']', &b[hs..e])? + hs;
        (close + 1, close + 1)
    } else {
        let mut j = hs;
        while j < e && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'.' | b'-' | b'_')) {
            j += 1;
        }
        (j, j)
    };
    if host_end == hs || !(b[hs] == b'[' || b[hs].is_ascii_alphanumeric()) {
        return None;
    }
    let mut j = skip_ws(b, after, e);
    let mut port = None;
    if j < e && b[j] == b':' {
        j = skip_ws(b, j + 1, e);
        let ds = j;
        while j < e && b[j].is_ascii_digit() {
            j += 1;
        }
        if j == ds || j - ds > 5 {
            return None;
        }
        let p = super::uri::digits_value(&b[ds..j]);
        port = Some(u16::try_from(p).ok()?);
    }
    let ps = skip_ws(b, j, e);
    if ps < e && b[ps] != b';' && b[ps] != b'(' {
        return None;
    }
    Some(Via {
        transport,
        host: &b[hs..host_end],
        port,
        params: &b[ps..e],
        span: Span::new(s, e),
        params_start: ps,
        known: None,
    })
}

/// The first via-parm of a Via header value. Without quotes in the value
/// (the usual case) the first comma ends it: no character-by-character
/// list split.
pub fn first(b: &[u8], value: Span) -> Option<Via<'_>> {
    let v = &b[value.range()];
    if memchr::memchr(b'"', v).is_some() {
        return all(b, value).next().flatten();
    }
    let base = value.start as usize;
    let e = memchr::memchr(b',', v).unwrap_or(v.len());
    let seg = &v[..e];
    let s = seg.len() - seg.trim_ascii_start().len();
    let t = seg.trim_ascii_end().len();
    if s >= t {
        return None;
    }
    parse_at(b, base + s, base + t)
}

/// All via-parms of one Via header value, `None` for unreadable ones.
pub fn all(b: &[u8], value: Span) -> impl Iterator<Item = Option<Via<'_>>> + '_ {
    let base = value.start as usize;
    split_list(&b[value.range()]).map(move |(s, e)| parse_at(b, base + s, base + e))
}

/// A via-parm as positions only, so a scanned message can keep its top
/// Via without borrowing itself: the scanner reads it once to validate it,
/// and forwarding and answering use it again (a second parse would cost
/// as much as the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViaAt {
    transport: Span,
    host: Span,
    port: Option<u16>,
    params: Span,
    span: Span,
    params_start: u32,
    known: Known,
}

impl ViaAt {
    /// The positions of `v`, a Via read from `b`.
    pub fn of(b: &[u8], v: &Via<'_>) -> ViaAt {
        let at = |x: &[u8]| {
            let s = x.as_ptr() as usize - b.as_ptr() as usize;
            Span::new(s, s + x.len())
        };
        ViaAt {
            transport: at(v.transport),
            host: at(v.host),
            port: v.port,
            params: at(v.params),
            span: v.span,
            params_start: v.params_start as u32,
            known: v.known.unwrap_or_else(|| v.find_known()),
        }
    }

    /// The Via again, over the bytes it was read from.
    pub fn view<'a>(&self, b: &'a [u8]) -> Via<'a> {
        Via {
            transport: &b[self.transport.range()],
            host: &b[self.host.range()],
            port: self.port,
            params: &b[self.params.range()],
            span: self.span,
            params_start: self.params_start as usize,
            known: Some(self.known),
        }
    }
}

impl<'a> Via<'a> {
    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        params::find(self.params, name)
    }

    /// `branch`, `rport` and `received` in one pass over the parameters.
    pub fn find_known(&self) -> Known {
        let mut k = Known::default();
        let at = |p: &Param<'_>| {
            let base = self.params_start;
            let rel = |x: &[u8]| {
                let s = x.as_ptr() as usize - self.params.as_ptr() as usize + base;
                Span::new(s, s + x.len())
            };
            ParamAt {
                name: rel(p.name),
                value: p.value.map(rel),
                span: Span::new(base + p.start, base + p.end),
            }
        };
        for p in params::iter(self.params) {
            let slot = if p.name.eq_ignore_ascii_case(b"branch") {
                &mut k.branch
            } else if p.name.eq_ignore_ascii_case(b"rport") {
                &mut k.rport
            } else if p.name.eq_ignore_ascii_case(b"received") {
                &mut k.received
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(at(&p));
            }
        }
        k
    }

    fn known(&self) -> Known {
        self.known.unwrap_or_else(|| self.find_known())
    }

    /// The bytes of an absolute span inside `params`.
    fn text(&self, s: Span) -> &'a [u8] {
        let params: &'a [u8] = self.params;
        let from = s.start as usize - self.params_start;
        &params[from..from + s.len()]
    }

    fn param_of(&self, p: ParamAt) -> Param<'a> {
        Param {
            name: self.text(p.name),
            value: p.value.map(|v| self.text(v)),
            start: p.span.start as usize,
            end: p.span.end as usize,
        }
    }

    /// `rport` and `received` with absolute positions.
    pub fn rport_received_at(&self) -> (Option<Param<'a>>, Option<Param<'a>>) {
        let k = self.known();
        (
            k.rport.map(|p| self.param_of(p)),
            k.received.map(|p| self.param_of(p)),
        )
    }

    /// One known parameter's value, else a lookup that stops at the
    /// first match (cheaper than finding all three for one).
    fn one(&self, pick: fn(&Known) -> Option<ParamAt>, name: &[u8]) -> Option<Option<&'a [u8]>> {
        match &self.known {
            Some(k) => pick(k).map(|p| p.value.map(|v| self.text(v))),
            None => self.param(name),
        }
    }

    pub fn branch(&self) -> Option<&'a [u8]> {
        self.one(|k| k.branch, b"branch").flatten()
    }

    pub fn received(&self) -> Option<&'a [u8]> {
        self.one(|k| k.received, b"received").flatten()
    }

    /// `Some(None)` for a bare `;rport` (RFC 3581 request), `Some(Some(p))`
    /// once filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.one(|k| k.rport, b"rport").map(|v| {
            v.and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| p.parse().ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vias(v: &str) -> Vec<Option<Via<'_>>> {
        all(v.as_bytes(), Span::new(0, v.len())).collect()
    }

    #[test]
    fn parses_vias() {
        let v = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport, SIP / 2.0 / TCP [2001:db8::9] ; received=1.2.3.4";
        let all = vias(v);
        assert_eq!(all.len(), 2);
        let a = all[0].unwrap();
        assert_eq!(a.transport, b"UDP");
        assert_eq!(a.host, b"10.0.0.1");
        assert_eq!(a.port, Some(5060));
        assert_eq!(a.branch(), Some(&b"z9hG4bK1"[..]));
        assert_eq!(a.rport(), Some(None));
        assert_eq!(
            &v.as_bytes()[a.params_start..a.span.end as usize],
            b";branch=z9hG4bK1;rport"
        );
        let b = all[1].unwrap();
        assert_eq!(b.transport, b"TCP");
        assert_eq!(b.host, b"[2001:db8::9]");
        assert_eq!(b.port, None);
        assert_eq!(b.received(), Some(&b"1.2.3.4"[..]));
        let p = b.rport_received_at().1.unwrap();
        assert_eq!(&v.as_bytes()[p.start..p.end], b"received=1.2.3.4");
    }

    #[test]
    fn rejects_bad_vias() {
        for v in [
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "SIP/3.0/UDP h",
            "HTTP/2.0/UDP h",
            "SIP/2.0 UDP h",
            "SIP/2.0/UDP h:",
            "SIP/2.0/UDP h:70000",
            "SIP/2.0/UDP h junk",
            "SIP/2.0/UDP [::1",
        ] {
            assert_eq!(vias(v), vec![None], "{v}");
        }
    }

    type Flat<'x> = Option<(&'x [u8], Option<&'x [u8]>, usize, usize)>;

    fn flat(p: Option<Param<'_>>, base: usize) -> Flat<'_> {
        p.map(|p| (p.name, p.value, p.start + base, p.end + base))
    }

    #[test]
    fn params_found_at_scan_time_are_the_ones_looked_up() {
        for v in [
            "SIP/2.0/UDP h;branch=z9hG4bK1;rport",
            "SIP/2.0/UDP h ; RPORT = 7 ;Branch=x;received=1.2.3.4;branch=y;rport",
            "SIP/2.0/TCP [::1]:5;received;x=\"a;b\";rport=9",
            "SIP/2.0/UDP h",
            "SIP/2.0/UDP h;branch",
        ] {
            let b = v.as_bytes();
            let looked = parse_at(b, 0, b.len()).unwrap();
            let known = ViaAt::of(b, &looked).view(b);
            assert!(known.known.is_some());
            assert_eq!(known.branch(), looked.param(b"branch").flatten(), "{v}");
            assert_eq!(known.received(), looked.param(b"received").flatten(), "{v}");
            assert_eq!(known.rport(), looked.rport(), "{v}");
            let want = (
                params::find_param(looked.params, b"rport"),
                params::find_param(looked.params, b"received"),
            );
            let got = known.rport_received_at();
            assert_eq!(flat(got.0, 0), flat(want.0, looked.params_start), "{v}");
            assert_eq!(flat(got.1, 0), flat(want.1, looked.params_start), "{v}");
            assert_eq!(looked.rport_received_at(), got, "{v}");
        }
    }

    #[test]
    fn filled_rport() {
        let v = "SIP/2.0/UDP h;rport=5062;received=192.0.2.1";
        let a = vias(v)[0].unwrap();
        assert_eq!(a.rport(), Some(Some(5062)));
    }
}
