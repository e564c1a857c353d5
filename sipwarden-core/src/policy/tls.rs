//! The gate in front of a TLS handshake (`docs/admission.md`, "TLS"):
//! the server name a ClientHello asks for must be a secret domain, so that
//! a scanner connecting by IP (or by any other name) is closed before the
//! server sends a byte, and never sees the certificate that would name the
//! domain. Pure: the transport reads the ClientHello and asks.

use std::net::IpAddr;

use crate::flow::canonical_ip;
use crate::settings::Settings;
use crate::state::Tables;
use crate::time::UnixMs;
use crate::verdict::Reason;

/// Whether a ClientHello from `source` naming `server_name` (its SNI;
/// `None` when it sent none) may proceed to the handshake.
///
/// A name in `filter.domains` (wildcards as for SIP) or in
/// `tls.server_names` proceeds, any other name is refused; a hello without
/// a name proceeds only when `tls.require_sni` is off or the source is a
/// trunk's (configured ranges or a live registration's registrar) or in
/// `allow.cidrs`: a phone that sends no name needs its address allowed.
pub fn admit_hello(
    server_name: Option<&str>,
    source: IpAddr,
    s: &Settings,
    tables: &Tables,
    now: UnixMs,
) -> Result<(), Reason> {
    match server_name {
        Some(name) => {
            let n = name.as_bytes();
            if s.domains.matches(n) || s.tls_names.matches(n) {
                Ok(())
            } else {
                Err(Reason::TlsSni)
            }
        }
        None if !s.config.tls.require_sni => Ok(()),
        None => {
            let ip = canonical_ip(source);
            let grace = s.config.registration.grace.ms();
            let trunk = || {
                s.trunk_by_source(ip).is_some() || tables.regs.by_source(ip, now, grace).is_some()
            };
            if s.is_allowed(ip) || trunk() {
                Ok(())
            } else {
                Err(Reason::TlsSni)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Settings {
        let c = crate::config::parse(
            &format!(
                "[listen]\nadvertise = \"pbx.example.com:5060\"\n\
                 [filter]\ndomains = [\"sip-7f3k.example.com\", \"*.tenants.example.org\"]\n{extra}"
            ),
            "t",
        )
        .unwrap();
        Settings::new(c)
    }

    fn admit(name: Option<&str>, src: &str, s: &Settings) -> Result<(), Reason> {
        let tables = Tables::new(&s.config);
        admit_hello(name, src.parse().unwrap(), s, &tables, UnixMs(1_000_000))
    }

    const SCANNER: &str = "203.0.113.9";

    #[test]
    fn a_secret_domain_proceeds_any_other_name_does_not() {
        let s = settings("");
        assert_eq!(admit(Some("sip-7f3k.example.com"), SCANNER, &s), Ok(()));
        assert_eq!(admit(Some("SIP-7F3K.Example.COM"), SCANNER, &s), Ok(()));
        // Wildcards as for SIP: subdomains, not the parent itself.
        assert_eq!(admit(Some("acme.tenants.example.org"), SCANNER, &s), Ok(()));
        for other in [
            "tenants.example.org",
            "example.com",
            "pbx.example.com",
            "203.0.113.1",
            "",
        ] {
            assert_eq!(
                admit(Some(other), SCANNER, &s),
                Err(Reason::TlsSni),
                "{other}"
            );
        }
    }

    #[test]
    fn tls_server_names_are_admitted_too() {
        let s = settings("[tls]\nserver_names = [\"edge.example.net\", \"*.x.example.net\"]\n");
        assert_eq!(admit(Some("edge.example.net"), SCANNER, &s), Ok(()));
        assert_eq!(admit(Some("a.x.example.net"), SCANNER, &s), Ok(()));
        assert_eq!(admit(Some("sip-7f3k.example.com"), SCANNER, &s), Ok(()));
        assert_eq!(
            admit(Some("other.example.net"), SCANNER, &s),
            Err(Reason::TlsSni)
        );
    }

    #[test]
    fn no_name_only_from_allowed_and_trunk_sources() {
        let s = settings(
            "[allow]\ncidrs = [\"192.0.2.0/24\"]\n\
             [[trunk]]\nname = \"prov\"\nregistrar = \"sip.provider.example\"\n\
             allow = [\"198.51.100.0/24\"]\n",
        );
        assert_eq!(admit(None, SCANNER, &s), Err(Reason::TlsSni));
        assert_eq!(admit(None, "192.0.2.7", &s), Ok(()));
        assert_eq!(admit(None, "::ffff:192.0.2.7", &s), Ok(()));
        assert_eq!(admit(None, "198.51.100.20", &s), Ok(()));
        // An allowed source still needs the right name when it sends one.
        assert_eq!(admit(Some("other"), "192.0.2.7", &s), Err(Reason::TlsSni));
    }

    #[test]
    fn require_sni_off_lets_a_nameless_hello_through() {
        let s = settings("[tls]\nrequire_sni = false\n");
        assert_eq!(admit(None, SCANNER, &s), Ok(()));
        assert_eq!(admit(Some("other"), SCANNER, &s), Err(Reason::TlsSni));
    }
}
