//! The scanner fast path: most of what reaches the public port under
//! attack is a request addressed by IP, and it can be dropped after
//! reading its start line and a handful of headers, without indexing and
//! validating the whole message.
//!
//! The fast path only ever says "drop"; anything that might be admitted
//! (the secret domain in a header that counts, a Route, a Contact token,
//! a To tag, a CANCEL, a folded header it would have to read) goes to the
//! full scanner and the admission rules. The one visible difference: a
//! malformed message that is also a scanner's is counted `no-domain` (or
//! `user-agent`) rather than `malformed`; it is dropped either way.

use crate::settings::Settings;
use crate::sip::addr::NameAddr;
use crate::sip::header::{HeaderName, TOKEN};
use crate::sip::lines::LineEnds;
use crate::sip::params;
use crate::sip::uri::Uri;
use crate::verdict::Reason;

fn host_of(value: &[u8]) -> Option<&[u8]> {
    let na = NameAddr::parse(value)?;
    Some(Uri::parse(na.uri)?.host)
}

/// What the fast path found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastPath {
    /// A request that the admission rules would certainly reject.
    Drop(Reason),
    /// The full scanner and the admission rules decide. `ruri_domain`: the
    /// Request-URI names a secret domain (and `match` includes it) and
    /// carries no `sw` token, so admission need not parse it again (a
    /// URI parse is a visible share of a forwarded request).
    FullScan { ruri_domain: bool },
}

/// Screens a request from its start line and a few headers: drop it now,
/// or scan it fully (with what was learnt for admission).
pub fn screen(data: &[u8], s: &Settings) -> FastPath {
    const FULL_SCAN: FastPath = FastPath::FullScan { ruri_domain: false };
    // Monitor mode forwards everything; on_reject = "403" answers.
    if s.monitor || s.reject_403 {
        return FULL_SCAN;
    }
    match drop_reason(data, s) {
        Ok(r) => FastPath::Drop(r),
        Err(ruri_domain) => FastPath::FullScan { ruri_domain },
    }
}

/// `Ok(reason)` to drop; `Err(ruri_domain)` for the full path.
fn drop_reason(data: &[u8], s: &Settings) -> Result<Reason, bool> {
    // Start line: METHOD SP Request-URI SP SIP/2.0. One pass of line
    // ends serves the start line and the headers.
    let mut lines = LineEnds::new(data);
    let line_end = lines.next().ok_or(false)?;
    let line = data[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&data[..line_end]);
    let sp1 = memchr::memchr(b' ', line).ok_or(false)?;
    let method = &line[..sp1];
    if method.is_empty() || method == b"CANCEL" || !method.iter().all(|&c| TOKEN[c as usize]) {
        return Err(false);
    }
    let rest = &line[sp1 + 1..];
    let sp2 = memchr::memchr(b' ', rest).ok_or(false)?;
    if &rest[sp2 + 1..] != b"SIP/2.0" {
        return Err(false);
    }
    let ruri = Uri::parse(&rest[..sp2]).ok_or(false)?;
    if params::find(ruri.params, b"sw").is_some() {
        return Err(false);
    }
    if s.match_ruri && s.domains.matches(ruri.host) {
        return Err(true);
    }
    // The headers that can admit a request, and User-Agent.
    let mut to = None;
    let mut from = None;
    let mut ua = None;
    let mut pos = line_end + 1;
    loop {
        let nl = lines.next().ok_or(false)?;
        let l = data[pos..nl].strip_suffix(b"\r").unwrap_or(&data[pos..nl]);
        if l.is_empty() {
            break;
        }
        let first = l[0];
        if first == b' ' || first == b'\t' {
            // A folded line: the full scanner reads these.
            return Err(false);
        }
        if matches!(first | 0x20, b't' | b'r' | b'f' | b'u') {
            // A header name is a few bytes: a loop, not a memchr call.
            let colon = l.iter().position(|&c| c == b':').ok_or(false)?;
            let name = l[..colon].trim_ascii_end();
            let value = l[colon + 1..].trim_ascii();
            match HeaderName::from_bytes(name) {
                HeaderName::Route => return Err(false),
                HeaderName::To if to.is_none() => to = Some(value),
                HeaderName::From if from.is_none() => from = Some(value),
                HeaderName::UserAgent if ua.is_none() => ua = Some(value),
                _ => {}
            }
        }
        pos = nl + 1;
    }
    let to = to.ok_or(false)?;
    let na = NameAddr::parse(to).ok_or(false)?;
    // A To tag: maybe in a dialog, which only the table can tell.
    if params::find(na.params, b"tag").is_some() {
        return Err(false);
    }
    if s.match_to && Uri::parse(na.uri).is_some_and(|u| s.domains.matches(u.host)) {
        return Err(false);
    }
    if s.match_from {
        let from = from.ok_or(false)?;
        if host_of(from).is_none_or(|h| s.domains.matches(h)) {
            return Err(false);
        }
    }
    let blocked = match (&s.user_agents, ua) {
        (Some(ac), Some(ua)) => ac.is_match(ua),
        _ => false,
    };
    Ok(if blocked {
        Reason::UserAgent
    } else {
        Reason::NoDomain
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reason to drop, if the fast path drops.
    fn prefilter(data: &[u8], s: &Settings) -> Option<Reason> {
        match screen(data, s) {
            FastPath::Drop(r) => Some(r),
            FastPath::FullScan { .. } => None,
        }
    }

    fn settings(extra: &str) -> Settings {
        Settings::new(
            crate::config::parse(
                &format!(
                    "[listen]\nadvertise = \"pbx.example.com:5060\"\n[filter]\ndomains = [\"sip-7f3k.example.com\"]\n{extra}"
                ),
                "t",
            )
            .unwrap(),
        )
    }

    fn msg(start: &str, headers: &str) -> Vec<u8> {
        format!(
            "{start}\r\nVia: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-1\r\nFrom: <sip:100@1.1.1.1>;tag=a\r\n{headers}\
             Call-ID: 1@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn drops_only_what_admission_would_drop() {
        let s = settings("");
        let by_ip = "OPTIONS sip:100@192.0.2.1 SIP/2.0";
        assert_eq!(
            prefilter(&msg(by_ip, "To: <sip:100@192.0.2.1>\r\n"), &s),
            Some(Reason::NoDomain)
        );
        assert_eq!(
            prefilter(
                &msg(
                    by_ip,
                    "To: <sip:100@192.0.2.1>\r\nUser-Agent: friendly-scanner\r\n"
                ),
                &s
            ),
            Some(Reason::UserAgent)
        );
        // Everything that might be admitted goes to the full path.
        for (start, headers) in [
            (
                "OPTIONS sip:100@sip-7f3k.example.com SIP/2.0",
                "To: <sip:100@192.0.2.1>\r\n",
            ),
            (by_ip, "t: <sip:100@SIP-7F3K.example.com>\r\n"),
            (by_ip, "To: <sip:100@192.0.2.1>;tag=x\r\n"),
            (
                by_ip,
                "To: <sip:100@192.0.2.1>\r\nRoute: <sip:pbx.example.com;lr>\r\n",
            ),
            (
                "INVITE sip:acct@pbx.example.com;line=a;sw=abc SIP/2.0",
                "To: <sip:1@x>\r\n",
            ),
            (
                "CANCEL sip:100@192.0.2.1 SIP/2.0",
                "To: <sip:100@192.0.2.1>\r\n",
            ),
            (by_ip, "To:\r\n <sip:100@192.0.2.1>\r\n"),
            (by_ip, ""),
            ("SIP/2.0 200 OK", "To: <sip:100@192.0.2.1>\r\n"),
            (
                "OPTIONS sip:100@192.0.2.1 SIP/2.0 ",
                "To: <sip:100@192.0.2.1>\r\n",
            ),
        ] {
            assert_eq!(
                prefilter(&msg(start, headers), &s),
                None,
                "{start} / {headers}"
            );
        }
        assert_eq!(
            prefilter(b"OPTIONS sip:1@2 SIP/2.0\r\nTo: <sip:1@2>\r\n", &s),
            None,
            "no blank line"
        );
        // From counts when configured.
        let f = settings("match = [\"from\"]\n");
        assert_eq!(
            prefilter(&msg(by_ip, "To: <sip:1@sip-7f3k.example.com>\r\n"), &f),
            Some(Reason::NoDomain)
        );
        let fm = msg(by_ip, "To: <sip:1@x>\r\n")
            .into_iter()
            .collect::<Vec<u8>>();
        let fm = String::from_utf8(fm)
            .unwrap()
            .replace("1.1.1.1", "sip-7f3k.example.com");
        assert_eq!(prefilter(fm.as_bytes(), &f), None);
        // The full path learns when the Request-URI already matched.
        let secret = msg(
            "OPTIONS sip:100@sip-7f3k.example.com SIP/2.0",
            "To: <sip:1@x>\r\n",
        );
        assert_eq!(
            screen(&secret, &s),
            FastPath::FullScan { ruri_domain: true }
        );
        let token = msg(
            "INVITE sip:acct@sip-7f3k.example.com;sw=abc SIP/2.0",
            "To: <sip:1@x>\r\n",
        );
        assert_eq!(
            screen(&token, &s),
            FastPath::FullScan { ruri_domain: false }
        );
        let by_to = msg(by_ip, "To: <sip:1@sip-7f3k.example.com>\r\n");
        assert_eq!(
            screen(&by_to, &s),
            FastPath::FullScan { ruri_domain: false }
        );
        let to_only = settings("match = [\"to\"]\n");
        assert_eq!(screen(&secret, &to_only), FastPath::Drop(Reason::NoDomain));
        // Monitor mode forwards everything: never decided here.
        let m = settings("mode = \"monitor\"\n");
        assert_eq!(
            prefilter(&msg(by_ip, "To: <sip:100@192.0.2.1>\r\n"), &m),
            None
        );
    }
}
