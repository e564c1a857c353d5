//! Admission of requests from the public side, in the order of DESIGN.md
//! section 4: the first rule that holds decides.

use crate::proxy::settings::Settings;
use crate::proxy::token::Keys;
use crate::sip::addr::{split_list, NameAddr};
use crate::sip::uri::Uri;
use crate::sip::{HeaderName, Message};

use super::Reason;

/// Outcome of the token check on the top Route (step 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteCheck {
    /// No `swr` token on the top Route (or no Route at all).
    None,
    /// One of our Record-Route entries, signed for this Call-ID.
    Valid,
    /// Looks like ours but the signature does not verify.
    Forged,
}

/// The URI of the first entry of the first Route header.
pub fn top_route(msg: &Message) -> Option<Uri<'_>> {
    let h = msg.first(HeaderName::Route)?;
    let v = msg.value(h);
    let (s, e) = split_list(v).next()?;
    let na = NameAddr::parse(&v[s..e])?;
    Uri::parse(na.uri)
}

/// Step 5: is the top Route one of our signed Record-Route entries?
pub fn check_route(msg: &Message, keys: &Keys) -> RouteCheck {
    let Some(u) = top_route(msg) else {
        return RouteCheck::None;
    };
    match u.param(b"swr") {
        None => RouteCheck::None,
        Some(Some(tok))
            if keys.verify_route_token(tok, msg.call_id(), u.user.unwrap_or_default()) =>
        {
            RouteCheck::Valid
        }
        Some(_) => RouteCheck::Forged,
    }
}

fn header_host(msg: &Message, name: HeaderName) -> Option<&[u8]> {
    let v = msg.first_value(name)?;
    let na = NameAddr::parse(v)?;
    Some(Uri::parse(na.uri)?.host)
}

/// Step 8: does a configured header name one of the secret domains?
pub fn domain_matches(msg: &Message, s: &Settings) -> bool {
    if s.domains.is_empty() {
        return false;
    }
    if s.match_ruri {
        if let Some(u) = msg.request_uri().and_then(Uri::parse) {
            if s.domains.matches(u.host) {
                return true;
            }
        }
    }
    (s.match_to && header_host(msg, HeaderName::To).is_some_and(|h| s.domains.matches(h)))
        || (s.match_from
            && header_host(msg, HeaderName::From).is_some_and(|h| s.domains.matches(h)))
}

/// The scanner blocklist: a case-insensitive substring of User-Agent.
pub fn blocked_user_agent(msg: &Message, s: &Settings) -> bool {
    if s.user_agents.is_empty() {
        return false;
    }
    let Some(ua) = msg.first_value(HeaderName::UserAgent) else {
        return false;
    };
    s.user_agents
        .iter()
        .any(|needle| contains_ignore_case(ua, needle))
}

/// `needle` must be lower-case.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() || needle.len() > hay.len() {
        return needle.is_empty();
    }
    hay.windows(needle.len()).any(|w| {
        w.iter()
            .zip(needle)
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
    })
}

/// Decides on a request from the public side. `Ok` names the rule that
/// admitted it, `Err` why it is rejected.
pub fn admit_request(msg: &Message, s: &Settings, keys: &Keys) -> Result<Reason, Reason> {
    if blocked_user_agent(msg, s) {
        return Err(Reason::UserAgent);
    }
    match check_route(msg, keys) {
        RouteCheck::Valid => return Ok(Reason::DialogRoute),
        RouteCheck::Forged => return Err(Reason::ForgedToken),
        RouteCheck::None => {}
    }
    if domain_matches(msg, s) {
        return Ok(Reason::Domain);
    }
    Err(Reason::NoDomain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{scan, Framing, Limits};
    use bytes::Bytes;

    fn settings(extra: &str) -> Settings {
        let c = crate::config::parse(
            &format!(
                "[listen]\nadvertise = \"pbx.example.com:5060\"\n[filter]\ndomains = [\"sip-7f3k.example.com\", \"*.tenants.example.org\"]\n{extra}"
            ),
            "t",
        )
        .unwrap();
        Settings::new(c)
    }

    fn req(ruri: &str, to: &str, from: &str, extra: &str) -> Message {
        let s = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\
             From: <{from}>;tag=1\r\nTo: <{to}>\r\nCall-ID: cid-1\r\nCSeq: 1 INVITE\r\n{extra}\
             Content-Length: 0\r\n\r\n"
        );
        scan(Bytes::from(s), Framing::Datagram, &Limits::default()).unwrap()
    }

    const SECRET: &str = "sip:100@sip-7f3k.example.com";
    const BY_IP: &str = "sip:100@203.0.113.9";

    #[test]
    fn domain_rule_follows_match_setting() {
        let keys = Keys::new([1; 32]);
        let s = settings("");
        assert_eq!(
            admit_request(&req(SECRET, BY_IP, BY_IP, ""), &s, &keys),
            Ok(Reason::Domain)
        );
        assert_eq!(
            admit_request(&req(BY_IP, SECRET, BY_IP, ""), &s, &keys),
            Ok(Reason::Domain)
        );
        assert_eq!(
            admit_request(&req(BY_IP, BY_IP, SECRET, ""), &s, &keys),
            Err(Reason::NoDomain)
        );
        assert_eq!(
            admit_request(
                &req("sip:1@a.tenants.example.org:5060", BY_IP, BY_IP, ""),
                &s,
                &keys
            ),
            Ok(Reason::Domain)
        );
        assert_eq!(
            admit_request(&req("tel:+1555", BY_IP, BY_IP, ""), &s, &keys),
            Err(Reason::NoDomain)
        );

        let from_only = settings("match = [\"from\"]\n");
        assert_eq!(
            admit_request(&req(SECRET, SECRET, BY_IP, ""), &from_only, &keys),
            Err(Reason::NoDomain)
        );
        assert_eq!(
            admit_request(&req(BY_IP, BY_IP, SECRET, ""), &from_only, &keys),
            Ok(Reason::Domain)
        );
        let ruri_only = settings("match = [\"request-uri\"]\n");
        assert_eq!(
            admit_request(&req(BY_IP, SECRET, BY_IP, ""), &ruri_only, &keys),
            Err(Reason::NoDomain)
        );
    }

    #[test]
    fn domain_anywhere_else_does_not_count() {
        let keys = Keys::new([1; 32]);
        let s = settings("");
        // The secret domain in Contact, a Subject or the body is not an address.
        let m = req(
            BY_IP,
            BY_IP,
            BY_IP,
            "Contact: <sip:x@sip-7f3k.example.com>\r\nSubject: sip-7f3k.example.com\r\n",
        );
        assert_eq!(admit_request(&m, &s, &keys), Err(Reason::NoDomain));
    }

    #[test]
    fn user_agent_blocklist_wins_over_domain() {
        let keys = Keys::new([1; 32]);
        let s = settings("");
        let m = req(
            SECRET,
            SECRET,
            SECRET,
            "User-Agent: Friendly-Scanner 1.0\r\n",
        );
        assert_eq!(admit_request(&m, &s, &keys), Err(Reason::UserAgent));
        let m = req(SECRET, SECRET, SECRET, "User-Agent: Yealink SIP-T46S\r\n");
        assert_eq!(admit_request(&m, &s, &keys), Ok(Reason::Domain));
    }

    #[test]
    fn signed_route_admits_and_forged_is_refused() {
        let keys = Keys::new([1; 32]);
        let s = settings("");
        let tok = keys.route_token(b"cid-1", b"");
        let good = format!(
            "Route: <sip:pbx.example.com;lr;swr={}>\r\n",
            std::str::from_utf8(&tok).unwrap()
        );
        assert_eq!(
            admit_request(&req(BY_IP, BY_IP, BY_IP, &good), &s, &keys),
            Ok(Reason::DialogRoute)
        );
        let other = keys.route_token(b"cid-2", b"");
        let wrong_call = format!(
            "Route: <sip:pbx.example.com;lr;swr={}>\r\n",
            std::str::from_utf8(&other).unwrap()
        );
        assert_eq!(
            admit_request(&req(BY_IP, BY_IP, BY_IP, &wrong_call), &s, &keys),
            Err(Reason::ForgedToken)
        );
        let junk = "Route: <sip:pbx.example.com;lr;swr=0123456789abcdef>\r\n";
        assert_eq!(
            admit_request(&req(SECRET, SECRET, SECRET, junk), &s, &keys),
            Err(Reason::ForgedToken)
        );
        // A plain preloaded Route (outbound proxy) is not a token.
        let preloaded = "Route: <sip:sip-7f3k.example.com;lr>\r\n";
        assert_eq!(
            admit_request(&req(SECRET, SECRET, SECRET, preloaded), &s, &keys),
            Ok(Reason::Domain)
        );
    }
}
