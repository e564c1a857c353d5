//! Why a message was forwarded, answered or dropped. Every message gets
//! exactly one reason; the reasons are the metric labels operators read.

/// The reason behind a decision; `as_str` is the metric label and the
/// name `docs/admission.md` uses for each rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    // Drops before admission.
    Malformed,
    TooLarge,
    Banned,
    Denied,
    RateLimited,
    UserAgent,
    StrayResponse,
    Keepalive,
    /// A token of ours with a bad signature, the wrong Call-ID or expired.
    ForgedToken,
    // Admission of requests from the public side.
    DialogRoute,
    TrunkContact,
    Trunk,
    Domain,
    Dialog,
    NoDomain,
    // Forwarding outcomes.
    /// A response whose top Via is ours and verifies.
    Response,
    /// A request from Asterisk, forwarded out.
    Outbound,
    TooManyHops,
    Loop,
    /// No usable next hop (tel: URI without Route, unknown transport, ...).
    Unroutable,
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::Malformed,
        Reason::TooLarge,
        Reason::Banned,
        Reason::Denied,
        Reason::RateLimited,
        Reason::UserAgent,
        Reason::StrayResponse,
        Reason::Keepalive,
        Reason::ForgedToken,
        Reason::DialogRoute,
        Reason::TrunkContact,
        Reason::Trunk,
        Reason::Domain,
        Reason::Dialog,
        Reason::NoDomain,
        Reason::Response,
        Reason::Outbound,
        Reason::TooManyHops,
        Reason::Loop,
        Reason::Unroutable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::TooLarge => "too-large",
            Reason::Banned => "banned",
            Reason::Denied => "denied",
            Reason::RateLimited => "rate-limited",
            Reason::UserAgent => "user-agent",
            Reason::StrayResponse => "stray-response",
            Reason::Keepalive => "keepalive",
            Reason::ForgedToken => "forged-token",
            Reason::DialogRoute => "dialog-route",
            Reason::TrunkContact => "trunk-contact",
            Reason::Trunk => "trunk",
            Reason::Domain => "domain",
            Reason::Dialog => "dialog",
            Reason::NoDomain => "no-domain",
            Reason::Response => "response",
            Reason::Outbound => "outbound",
            Reason::TooManyHops => "too-many-hops",
            Reason::Loop => "loop",
            Reason::Unroutable => "unroutable",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What happened to the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Disposition {
    Forwarded,
    /// sipwarden answered it itself (403, 482, 483, CRLF pong).
    Replied,
    Dropped,
    /// `mode = "monitor"`: enforce would have dropped it; it was forwarded.
    WouldDrop,
}

impl Disposition {
    pub const ALL: [Disposition; 4] = [
        Disposition::Forwarded,
        Disposition::Replied,
        Disposition::Dropped,
        Disposition::WouldDrop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Forwarded => "forwarded",
            Disposition::Replied => "replied",
            Disposition::Dropped => "dropped",
            Disposition::WouldDrop => "would-drop",
        }
    }
}

/// The decision for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: Reason,
    pub disposition: Disposition,
}

impl Verdict {
    pub fn drop(reason: Reason) -> Verdict {
        Verdict {
            reason,
            disposition: Disposition::Dropped,
        }
    }
    pub fn forward(reason: Reason) -> Verdict {
        Verdict {
            reason,
            disposition: Disposition::Forwarded,
        }
    }
    pub fn replied(reason: Reason) -> Verdict {
        Verdict {
            reason,
            disposition: Disposition::Replied,
        }
    }
}
