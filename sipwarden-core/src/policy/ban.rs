//! What counts toward a ban. A ban cuts off every phone behind a source
//! address, so only what a scanner or a password guesser does may count,
//! never what an office of phones behind one NAT address does when it is
//! busy: congestion (a request that would be admitted but is over its
//! source's rate) is never held against a source, nor is a challenge to a
//! request without credentials, a stale nonce, or the same credentials
//! answered again (a retransmission).
//!
//! The counting itself is the ban table's (`state::bans`); this module
//! decides what is counted, for which sources, and announces a ban.

use std::net::IpAddr;

use crate::flow::canonical_ip;
use crate::metrics::{Event, Metrics};
use crate::settings::Settings;
use crate::sip::{HeaderName, Message, Method};
use crate::state::bans::{BanInfo, Trigger};
use crate::state::Change;
use crate::state::Tables;
use crate::time::UnixMs;
use crate::verdict::Reason;

/// A request from the public side rejected for this reason counts toward
/// `ban.after_rejects`: it names no secret domain, dialog or token
/// (`no-domain`, `forged-token`), comes from a scanner's User-Agent, or
/// cannot be read. `rate-limited` does not: only requests the admission
/// rules admitted are rate-limited (a source's rejects are counted as
/// such, whatever its rate), and an office's boot storm is no attack.
pub fn counts_as_reject(r: Reason) -> bool {
    matches!(
        r,
        Reason::NoDomain
            | Reason::UserAgent
            | Reason::ForgedToken
            | Reason::Malformed
            | Reason::TooLarge
            | Reason::TlsSni
            | Reason::WsUpgrade
            | Reason::WsOrigin
    )
}

/// Sources never banned: `allow` CIDRs, and a trunk's configured ranges
/// (a spoofed flood must not cut a provider off).
#[inline]
fn exempt(s: &Settings, ip: IpAddr) -> bool {
    s.is_allowed(ip) || s.trunk_by_source(ip).is_some()
}

/// A message from `ip` rejected for a reason that
/// [`counts_as_reject`] counts toward its ban. On the drop path of every
/// such message, hence inlined.
#[inline(always)]
pub fn count_reject(s: &Settings, tables: &Tables, metrics: &Metrics, now: UnixMs, ip: IpAddr) {
    let ip = canonical_ip(ip);
    if exempt(s, ip) {
        return;
    }
    if let Some(t) = tables.bans.reject(ip, now, &s.ban, !s.monitor) {
        announce(s, tables, metrics, now, ip, t);
    }
}

/// A failed authentication of `ip` ([`auth_failed`]), of the credentials
/// `key` names (0: unknown).
pub fn count_auth_failure(
    s: &Settings,
    tables: &Tables,
    metrics: &Metrics,
    now: UnixMs,
    ip: IpAddr,
    key: u32,
) {
    let ip = canonical_ip(ip);
    if exempt(s, ip) {
        return;
    }
    if let Some(t) = tables.bans.auth_failure(ip, now, &s.ban, !s.monitor, key) {
        announce(s, tables, metrics, now, ip, t);
    }
}

/// A source just reached a threshold: banned (kept in the state file),
/// or in monitor mode only reported.
#[cold]
fn announce(s: &Settings, tables: &Tables, metrics: &Metrics, now: UnixMs, ip: IpAddr, t: Trigger) {
    let minutes = s.ban.duration / 60_000;
    if s.monitor {
        tracing::warn!(source = %ip, trigger = t.as_str(), "would ban (monitor mode)");
    } else {
        // The state file keeps bans: a restart must not free the source.
        tables.mark_dirty();
        // The other nodes of a cluster drop the source too.
        tables.feed.push(Change::Ban(BanInfo {
            net: ip.into(),
            trigger: t,
            since: now,
            until: now + s.ban.duration,
        }));
        metrics.event(Event::Bans);
        tracing::warn!(source = %ip, trigger = t.as_str(), duration_min = minutes, "banned");
    }
}

/// The backend's final response `msg` to a REGISTER or INVITE from the
/// public side: is it a failed authentication of the request's source
/// (toward `ban.after_auth_failures`)? A 403; or a 401/407 to a request
/// that carried credentials (`credentials`), unless the challenge says
/// `stale=true`: the credentials were right but their nonce had expired
/// (RFC 2617 section 3.2.1; Asterisk answers so after its nonce lifetime
/// and after a restart, to every phone at once). A 401 to a request
/// without credentials is the first challenge every phone gets.
pub fn auth_failed(msg: &Message, credentials: bool) -> bool {
    if !matches!(msg.cseq_method(), Method::Register | Method::Invite) {
        return false;
    }
    match msg.status() {
        Some(403) => true,
        Some(401 | 407) => credentials && !stale_challenge(msg),
        _ => false,
    }
}

/// A challenge in the response has `stale=true`.
pub fn stale_challenge(msg: &Message) -> bool {
    msg.all(HeaderName::WwwAuthenticate)
        .chain(msg.all(HeaderName::ProxyAuthenticate))
        .any(|h| stale_param(msg.value(h)))
}

/// `stale=true` (any case, quoted or not) among the auth-params of one
/// challenge (`Digest realm="x", nonce="y", stale=TRUE`). Quoted strings
/// are skipped whole: a nonce may hold any text.
fn stale_param(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        // Skip separators: commas, whitespace.
        while i < v.len() && matches!(v[i], b',' | b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        let name_start = i;
        while i < v.len() && !matches!(v[i], b'=' | b',' | b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        let name = &v[name_start..i];
        while i < v.len() && matches!(v[i], b' ' | b'\t') {
            i += 1;
        }
        if i >= v.len() || v[i] != b'=' {
            // The scheme (`Digest`), or a bare token.
            continue;
        }
        i += 1;
        while i < v.len() && matches!(v[i], b' ' | b'\t') {
            i += 1;
        }
        let value = if v.get(i) == Some(&b'"') {
            i += 1;
            let start = i;
            while i < v.len() && v[i] != b'"' {
                if v[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            let end = i.min(v.len());
            i = end + 1;
            &v[start..end]
        } else {
            let start = i;
            while i < v.len() && !matches!(v[i], b',' | b' ' | b'\t' | b'\r' | b'\n') {
                i += 1;
            }
            &v[start..i]
        };
        if name.eq_ignore_ascii_case(b"stale") && value.eq_ignore_ascii_case(b"true") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{scan, Framing, Limits};
    use bytes::Bytes;

    fn response(code: u16, method: &str, extra: &str) -> Message {
        let s = format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:1001@d>;tag=1\r\nTo: <sip:1001@d>;tag=2\r\nCall-ID: c\r\n\
             CSeq: 2 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        scan(Bytes::from(s), Framing::Datagram, &Limits::default()).unwrap()
    }

    #[test]
    fn stale_is_read_from_the_auth_params_only() {
        for (v, want) in [
            (&b"Digest realm=\"a\", nonce=\"b\", stale=true"[..], true),
            (b"Digest realm=\"a\",stale=TRUE,nonce=\"b\"", true),
            (b"Digest stale = \"true\" , realm=\"a\"", true),
            (b"Digest realm=\"a\", nonce=\"b\", stale=false", false),
            (b"Digest realm=\"a\", nonce=\"b\"", false),
            // In a quoted value, even with an escaped quote, it is text.
            (
                b"Digest realm=\"stale=true\", nonce=\"x\\\", stale=true\"",
                false,
            ),
            (b"Digest nonce=\"unterminated, stale=true", false),
            (b"stale", false),
            (b"", false),
        ] {
            assert_eq!(stale_param(v), want, "{}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn failed_authentications() {
        let www = "WWW-Authenticate: Digest realm=\"d\", nonce=\"n\"\r\n";
        let stale = "WWW-Authenticate: Digest realm=\"d\", nonce=\"n\", stale=true\r\n";
        let proxy_stale = "Proxy-Authenticate: Digest realm=\"d\", nonce=\"n\", stale=true\r\n";
        // A first challenge is no failure; wrong credentials are.
        assert!(!auth_failed(&response(401, "REGISTER", www), false));
        assert!(auth_failed(&response(401, "REGISTER", www), true));
        assert!(auth_failed(&response(407, "INVITE", www), true));
        // A stale nonce is no failure, in either header; two challenges
        // (MD5 and SHA-256), one of them stale, neither.
        assert!(!auth_failed(&response(401, "REGISTER", stale), true));
        assert!(!auth_failed(&response(407, "INVITE", proxy_stale), true));
        assert!(!auth_failed(
            &response(401, "REGISTER", &format!("{www}{stale}")),
            true
        ));
        // 403 always; other codes and methods never.
        assert!(auth_failed(&response(403, "REGISTER", ""), false));
        assert!(!auth_failed(&response(200, "REGISTER", ""), true));
        assert!(!auth_failed(&response(404, "REGISTER", ""), true));
        assert!(!auth_failed(&response(401, "SUBSCRIBE", www), true));
    }

    #[test]
    fn congestion_is_no_reject() {
        assert!(!counts_as_reject(Reason::RateLimited));
        assert!(counts_as_reject(Reason::NoDomain));
        assert!(counts_as_reject(Reason::UserAgent));
        assert!(!counts_as_reject(Reason::Keepalive));
        assert!(!counts_as_reject(Reason::StrayResponse));
    }
}
