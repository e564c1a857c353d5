//! The core's output vocabulary: why a message was forwarded, answered or
//! dropped ([`Reason`]), what was done with it ([`Disposition`]), and the
//! two together ([`Verdict`]). Every message gets exactly one verdict;
//! its reason and disposition are the metric labels operators read.
//!
//! A module of its own, below everything that decides: admission
//! (`policy`) and forwarding (`proxy`) produce verdicts, and `metrics`
//! counts them without depending on either.

/// Declares a label enum from one list of `Enum::Variant => "label"` arms:
/// the enum, `ALL` (every variant, in declaration order) and `as_str`
/// come from the same list, so a variant cannot be missing from `ALL`
/// (whose length sizes the metric arrays) or lack its label. The arms keep
/// the `Enum::Variant => "label"` form the e2e scripts read label values
/// from (`tests/e2e/lib.sh`, `known_label`).
macro_rules! labelled {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $ename:ident :: $variant:ident => $label:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every variant, in declaration order: `ALL[i].index() == i`.
            pub const ALL: [$name; [$($name::$variant),*].len()] = [$($name::$variant),*];

            /// The metric label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $ename::$variant => $label, )*
                }
            }

            /// Position in [`Self::ALL`]: the metric arrays' index.
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

labelled! {
    /// The reason behind a decision; `as_str` is the metric label and the
    /// name `docs/admission.md` uses for each rule. Three groups: drops
    /// before admission, the admission rules for requests from the public
    /// side, and the outcomes of forwarding (either side).
    pub enum Reason {
        // Drops before admission.
        Reason::Malformed => "malformed",
        Reason::TooLarge => "too-large",
        Reason::Banned => "banned",
        Reason::Denied => "denied",
        Reason::RateLimited => "rate-limited",
        Reason::UserAgent => "user-agent",
        Reason::StrayResponse => "stray-response",
        Reason::Keepalive => "keepalive",
        /// A token of ours with a bad signature, the wrong Call-ID or expired.
        Reason::ForgedToken => "forged-token",
        /// A TLS ClientHello naming no secret domain (or none at all):
        /// closed before the server says anything.
        Reason::TlsSni => "tls-sni",
        /// A WebSocket upgrade request refused (method, path, headers,
        /// subprotocol other than `sip`, too large or too slow): answered
        /// with a plain HTTP error before any SIP is read.
        Reason::WsUpgrade => "ws-upgrade",
        /// A WebSocket upgrade from a web origin not in `ws.origins` (or,
        /// without that list, not the host the browser connected to).
        Reason::WsOrigin => "ws-origin",
        // Admission of requests from the public side.
        Reason::DialogRoute => "dialog-route",
        Reason::TrunkContact => "trunk-contact",
        Reason::Trunk => "trunk",
        Reason::Domain => "domain",
        Reason::Dialog => "dialog",
        Reason::NoDomain => "no-domain",
        // Forwarding outcomes.
        /// A response whose top Via is ours and verifies.
        Reason::Response => "response",
        /// A request from Asterisk, forwarded out.
        Reason::Outbound => "outbound",
        Reason::TooManyHops => "too-many-hops",
        Reason::Loop => "loop",
        /// No usable next hop (tel: URI without Route, unknown transport, ...).
        Reason::Unroutable => "unroutable",
    }
}

labelled! {
    /// What happened to the message.
    pub enum Disposition {
        Disposition::Forwarded => "forwarded",
        /// sipwarden answered it itself (403, 416, 482, 483, CRLF pong).
        Disposition::Replied => "replied",
        Disposition::Dropped => "dropped",
        /// `mode = "monitor"`: enforce would have dropped it; it was forwarded.
        Disposition::WouldDrop => "would-drop",
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
    /// Enforce would have dropped it; monitor mode forwarded it.
    pub fn would_drop(reason: Reason) -> Verdict {
        Verdict {
            reason,
            disposition: Disposition::WouldDrop,
        }
    }

    /// The message was refused: dropped (or would have been), or answered
    /// 403 for naming no secret domain (`filter.on_reject = "403"`). What
    /// may count toward a ban and be logged as a drop.
    pub fn is_rejection(self) -> bool {
        matches!(
            self.disposition,
            Disposition::Dropped | Disposition::WouldDrop
        ) || (self.disposition == Disposition::Replied && self.reason == Reason::NoDomain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric arrays index by `index()`: it must be the position in
    /// `ALL`, for every variant.
    #[test]
    fn indexes_are_positions_in_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        for (i, d) in Disposition::ALL.iter().enumerate() {
            assert_eq!(d.index(), i, "{d:?}");
        }
    }

    /// Labels are distinct (two reasons under one label would merge their
    /// counts in every dashboard).
    #[test]
    fn labels_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "{r:?}");
        }
        let mut seen = std::collections::HashSet::new();
        for d in Disposition::ALL {
            assert!(seen.insert(d.as_str()), "{d:?}");
        }
    }
}
