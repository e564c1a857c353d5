//! Admission of requests from the public side, in the order of
//! `docs/admission.md`: the first rule that holds decides.

use std::net::IpAddr;
use std::sync::Arc;

use crate::settings::Settings;
use crate::sip::addr::{split_list, NameAddr};
use crate::sip::uri::Uri;
use crate::sip::{HeaderName, Message, Method};
use crate::state::dialogs::InDialog;
use crate::state::Tables;
use crate::time::UnixMs;
use crate::token::Keys;
use crate::verdict::Reason;

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
/// `ruri` is the parsed Request-URI, if it parses.
pub fn domain_matches(msg: &Message, ruri: Option<&Uri<'_>>, s: &Settings) -> bool {
    if s.domains.is_empty() {
        return false;
    }
    if s.match_ruri && ruri.is_some_and(|u| s.domains.matches(u.host)) {
        return true;
    }
    (s.match_to && header_host(msg, HeaderName::To).is_some_and(|h| s.domains.matches(h)))
        || (s.match_from
            && header_host(msg, HeaderName::From).is_some_and(|h| s.domains.matches(h)))
}

/// The scanner blocklist: a case-insensitive substring of User-Agent.
pub fn blocked_user_agent(msg: &Message, s: &Settings) -> bool {
    let Some(ac) = &s.user_agents else {
        return false;
    };
    msg.first_value(HeaderName::UserAgent)
        .is_some_and(|ua| ac.is_match(ua))
}

/// Why a request from the public side was admitted, and what the
/// forwarding must add for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub reason: Reason,
    /// The trunk it came from (steps 6 and 7): `X-Sipwarden-Trunk`.
    pub trunk: Option<Arc<str>>,
    /// Step 6: the Contact Asterisk registered, to restore as Request-URI.
    pub contact: Option<String>,
}

impl Admission {
    fn plain(reason: Reason) -> Admission {
        Admission {
            reason,
            trunk: None,
            contact: None,
        }
    }
}

/// What admission reads besides the message.
pub struct AdmissionInputs<'a> {
    pub settings: &'a Settings,
    pub keys: &'a Keys,
    pub tables: &'a Tables,
    pub now: UnixMs,
    pub source: IpAddr,
    /// Step 7: the trunk the source address belongs to (a `trunk.allow`
    /// range, or a live registration's registrar). Looked up once: the
    /// caller also needs it, to exempt trunks from bans and rate limits.
    pub source_trunk: Option<Arc<str>>,
    /// The fast path found the Request-URI in a secret domain, without a
    /// `sw` token ([`crate::policy::fast_path::FastPath::FullScan`]).
    pub ruri_domain: bool,
}

impl<'a> AdmissionInputs<'a> {
    pub fn new(
        settings: &'a Settings,
        keys: &'a Keys,
        tables: &'a Tables,
        now: UnixMs,
        source: IpAddr,
    ) -> AdmissionInputs<'a> {
        let grace = settings.config.registration.grace.ms();
        let source_trunk = settings
            .trunk_by_source(source)
            .or_else(|| tables.regs.by_source(source, now, grace));
        AdmissionInputs {
            settings,
            keys,
            tables,
            now,
            source,
            source_trunk,
            ruri_domain: false,
        }
    }
}

/// The `sw` token of a Request-URI (admission step 6).
pub fn contact_token<'m>(ruri: Option<&Uri<'m>>) -> Option<&'m [u8]> {
    ruri?.param(b"sw").flatten()
}

/// Decides on a request from the public side, steps 5 to 10 of the
/// admission order (steps 1 to 4 are the caller's, `Core::on_public`). `Ok` names the rule that
/// admitted it, `Err` why it is rejected. A token that does not verify
/// admits nothing but does not stop later rules; if nothing admits, the
/// reason is `ForgedToken`.
pub fn admit_request(msg: &Message, c: &AdmissionInputs<'_>) -> Result<Admission, Reason> {
    let s = c.settings;
    if blocked_user_agent(msg, s) {
        return Err(Reason::UserAgent);
    }
    let mut forged = false;
    match check_route(msg, c.keys) {
        RouteCheck::Valid => return Ok(Admission::plain(Reason::DialogRoute)),
        RouteCheck::Forged => forged = true,
        RouteCheck::None => {}
    }
    let grace = s.config.registration.grace.ms();
    // Read by the fast path already when it named a domain: then it has
    // no token either.
    let ruri = if c.ruri_domain {
        None
    } else {
        msg.request_uri().and_then(Uri::parse)
    };
    if let Some(tok) = contact_token(ruri.as_ref()) {
        let live = std::str::from_utf8(tok)
            .ok()
            .and_then(|t| c.tables.regs.by_token(t, c.now, grace));
        match live {
            Some(a) => {
                return Ok(Admission {
                    reason: Reason::TrunkContact,
                    trunk: Some(a.trunk),
                    contact: Some(a.contact),
                })
            }
            None => forged = true,
        }
    }
    if let Some(trunk) = &c.source_trunk {
        return Ok(Admission {
            reason: Reason::Trunk,
            trunk: Some(trunk.clone()),
            contact: None,
        });
    }
    if c.ruri_domain || domain_matches(msg, ruri.as_ref(), s) {
        return Ok(Admission::plain(Reason::Domain));
    }
    if let Some(d) = in_dialog(msg, c.keys) {
        if c.tables.dialogs.matches(&d, c.now, &s.lifetimes).is_some() {
            return Ok(Admission::plain(Reason::Dialog));
        }
    }
    Err(if forged {
        Reason::ForgedToken
    } else {
        Reason::NoDomain
    })
}

/// Step 9's view of a request: keyed hashes of its Call-ID and tags.
/// `None` for a request that cannot be in a dialog (no To tag and not a
/// CANCEL), which spares a scanner's OPTIONS the hashing.
pub fn in_dialog(msg: &Message, keys: &Keys) -> Option<InDialog> {
    let to_tag = msg.to_tag();
    let is_cancel = msg.method() == Some(Method::Cancel);
    if to_tag.is_none() && !is_cancel {
        return None;
    }
    let call_id = msg.call_id();
    let from_tag = msg.from_tag()?;
    Some(InDialog {
        by_from: keys.dialog_key(call_id, from_tag),
        by_to: to_tag.map(|t| keys.dialog_key(call_id, t)),
        from_tag: keys.tag_hash(from_tag),
        to_tag: to_tag.map(|t| keys.tag_hash(t)),
        is_cancel,
        cseq: msg.cseq_num,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fast_path::{self, FastPath};
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

    /// Admission as the core runs it: after the fast path, with its hint.
    /// Every case also checks that the fast path only drops what admission
    /// rejects, and that its hint changes no decision.
    fn admit(m: &Message, s: &Settings, keys: &Keys) -> Result<Reason, Reason> {
        let tables = Tables::new(&s.config);
        let mut c =
            AdmissionInputs::new(s, keys, &tables, UnixMs(0), "198.51.100.7".parse().unwrap());
        let plain = admit_request(m, &c).map(|a| a.reason);
        match fast_path::screen(m.bytes(), s) {
            FastPath::Drop(_) => {
                assert!(plain.is_err(), "fast path dropped what admission admits")
            }
            FastPath::FullScan { ruri_domain } => {
                c.ruri_domain = ruri_domain;
                let hinted = admit_request(m, &c).map(|a| a.reason);
                assert_eq!(hinted, plain, "the fast path's hint changed the decision");
            }
        }
        plain
    }

    #[test]
    fn domain_rule_follows_match_setting() {
        let keys = Keys::new([1; 32]);
        let s = settings("");
        assert_eq!(
            admit(&req(SECRET, BY_IP, BY_IP, ""), &s, &keys),
            Ok(Reason::Domain)
        );
        assert_eq!(
            admit(&req(BY_IP, SECRET, BY_IP, ""), &s, &keys),
            Ok(Reason::Domain)
        );
        assert_eq!(
            admit(&req(BY_IP, BY_IP, SECRET, ""), &s, &keys),
            Err(Reason::NoDomain)
        );
        assert_eq!(
            admit(
                &req("sip:1@a.tenants.example.org:5060", BY_IP, BY_IP, ""),
                &s,
                &keys
            ),
            Ok(Reason::Domain)
        );
        assert_eq!(
            admit(&req("tel:+1555", BY_IP, BY_IP, ""), &s, &keys),
            Err(Reason::NoDomain)
        );

        let from_only = settings("match = [\"from\"]\n");
        assert_eq!(
            admit(&req(SECRET, SECRET, BY_IP, ""), &from_only, &keys),
            Err(Reason::NoDomain)
        );
        assert_eq!(
            admit(&req(BY_IP, BY_IP, SECRET, ""), &from_only, &keys),
            Ok(Reason::Domain)
        );
        let ruri_only = settings("match = [\"request-uri\"]\n");
        assert_eq!(
            admit(&req(BY_IP, SECRET, BY_IP, ""), &ruri_only, &keys),
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
        assert_eq!(admit(&m, &s, &keys), Err(Reason::NoDomain));
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
        assert_eq!(admit(&m, &s, &keys), Err(Reason::UserAgent));
        let m = req(SECRET, SECRET, SECRET, "User-Agent: Yealink SIP-T46S\r\n");
        assert_eq!(admit(&m, &s, &keys), Ok(Reason::Domain));
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
            admit(&req(BY_IP, BY_IP, BY_IP, &good), &s, &keys),
            Ok(Reason::DialogRoute)
        );
        let other = keys.route_token(b"cid-2", b"");
        let wrong_call = format!(
            "Route: <sip:pbx.example.com;lr;swr={}>\r\n",
            std::str::from_utf8(&other).unwrap()
        );
        assert_eq!(
            admit(&req(BY_IP, BY_IP, BY_IP, &wrong_call), &s, &keys),
            Err(Reason::ForgedToken)
        );
        // A bad token admits nothing, but the secret domain still does.
        let junk = "Route: <sip:pbx.example.com;lr;swr=0123456789abcdef>\r\n";
        assert_eq!(
            admit(&req(SECRET, SECRET, SECRET, junk), &s, &keys),
            Ok(Reason::Domain)
        );
        // A plain preloaded Route (outbound proxy) is not a token.
        let preloaded = "Route: <sip:sip-7f3k.example.com;lr>\r\n";
        assert_eq!(
            admit(&req(SECRET, SECRET, SECRET, preloaded), &s, &keys),
            Ok(Reason::Domain)
        );
        // An unknown sw= Contact token is forged; line= alone is nothing.
        assert_eq!(
            admit(
                &req(
                    "sip:acct@pbx.example.com;line=abc;sw=0011",
                    BY_IP,
                    BY_IP,
                    ""
                ),
                &s,
                &keys
            ),
            Err(Reason::ForgedToken)
        );
        assert_eq!(
            admit(
                &req("sip:acct@pbx.example.com;line=abc", BY_IP, BY_IP, ""),
                &s,
                &keys
            ),
            Err(Reason::NoDomain)
        );
    }

    #[test]
    fn configured_trunk_ranges_admit_any_request_uri() {
        let keys = Keys::new([1; 32]);
        let s = settings("[[trunk]]\nname = \"prov\"\nregistrar = \"sip.provider.example\"\nallow = [\"198.51.100.0/24\"]\n");
        let tables = Tables::new(&s.config);
        let c = AdmissionInputs::new(
            &s,
            &keys,
            &tables,
            UnixMs(0),
            "198.51.100.7".parse().unwrap(),
        );
        let a = admit_request(&req("sip:+4930123@203.0.113.9", BY_IP, BY_IP, ""), &c).unwrap();
        assert_eq!(
            (a.reason, a.trunk.as_deref()),
            (Reason::Trunk, Some("prov"))
        );
        let other = AdmissionInputs::new(
            &s,
            &keys,
            &tables,
            UnixMs(0),
            "198.51.101.7".parse().unwrap(),
        );
        assert_eq!(
            admit_request(&req(BY_IP, BY_IP, BY_IP, ""), &other).unwrap_err(),
            Reason::NoDomain
        );
    }
}
