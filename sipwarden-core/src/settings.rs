//! The running configuration in the form the core uses: parsed once per
//! (re)load, then read without locks through an `ArcSwap`. Above config
//! and state and below policy and proxy, which both read it.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{
    cidrs_contain, Checked, Cidr, Config, HostPort, MatchField, Mode, OnReject, Parsed, SocketSpec,
};
use crate::flow::Transport;
use crate::sip::text::sockaddr_text;
use crate::sip::uri::{host_eq, parse_host_ip, Scheme, Uri};
use crate::sip::DomainSet;
use crate::sip::Limits;
use crate::state::bans::Policy;
use crate::state::rate::Budget;
use crate::state::Lifetimes;
use crate::token::FlowRef;

/// Derived, ready-to-use settings of a checked config. Not exhaustive:
/// outside this crate [`Settings::new`], from a checked config, is the only
/// way to make one.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Settings {
    pub config: Config,
    pub limits: Limits,
    pub domains: DomainSet,
    /// `tls.server_names`: admitted in a ClientHello besides `domains`.
    pub tls_names: DomainSet,
    pub match_ruri: bool,
    pub match_to: bool,
    pub match_from: bool,
    pub monitor: bool,
    pub reject_403: bool,
    pub public: Vec<SocketSpec>,
    pub internal: Vec<SocketSpec>,
    pub backend: SocketSpec,
    /// Index into `internal` of the socket that talks to the backend.
    pub backend_listener: u8,
    /// `udp:127.0.0.1:5080`: hashed into branches of inbound requests.
    pub backend_target: String,
    pub advertise: HostPort,
    /// `host:port` for Via and Record-Route on the public side.
    pub advertise_text: String,
    /// The same where the public side is reached over TLS: a TLS peer
    /// that opens a connection for an in-dialog request must reach the
    /// TLS listener, not 5060 (`listen.advertise_tls`).
    pub advertise_tls: HostPort,
    pub advertise_tls_text: String,
    /// `ip:port` of each internal socket, for Via and Record-Route.
    pub internal_text: Vec<String>,
    /// The User-Agent blocklist as one automaton (case-insensitive,
    /// one pass over the header); `None` when the list is empty.
    pub user_agents: Option<aho_corasick::AhoCorasick>,
    pub lifetimes: Lifetimes,
    /// `(name, allow CIDRs)` per configured trunk.
    pub trunk_ranges: Vec<(Arc<str>, Vec<Cidr>)>,
    pub ban: Policy,
    pub budget: Budget,
    /// Never rate-limited or banned.
    pub allow: Vec<Cidr>,
    /// Always dropped.
    pub deny: Vec<Cidr>,
    /// Sockets per UDP listener.
    pub udp_workers: usize,
}

/// The host of a `trunk.registrar` value (`host` or `host:port`),
/// lower-cased.
pub fn registrar_host(registrar: &str) -> String {
    registrar
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(registrar, |(h, _)| h)
        .to_ascii_lowercase()
}

/// `listen.advertise_tls`, or the advertised host with the port of the
/// first `tls:` public socket, or (without one) `listen.advertise`.
fn advertise_tls(config: &Config) -> HostPort {
    let l = &config.listen;
    if let Some(a) = &l.advertise_tls {
        return a.clone();
    }
    match l.public.iter().find(|s| s.transport == Transport::Tls) {
        Some(s) => HostPort {
            host: l.advertise.host.clone(),
            port: s.addr.port(),
        },
        None => l.advertise.clone(),
    }
}

impl Settings {
    /// The settings of a checked config: what its rules parsed is taken as
    /// it is, the rest is arranged for the hot path. Infallible, because
    /// only `config::read` makes a [`Checked`], and it refuses every config
    /// whose values cannot be parsed.
    pub fn new(checked: Checked) -> Settings {
        let (
            config,
            Parsed {
                domains,
                user_agents,
                backend_listener,
                tls_names,
            },
        ) = checked.into_parts();
        let internal = config.internal();
        let backend = config.backend.address;
        let m = &config.filter.match_;
        Settings {
            limits: Limits {
                max_message: config.limits.max_message,
                max_headers: config.limits.max_headers,
                max_line: config.limits.max_line,
            },
            domains,
            tls_names,
            match_ruri: m.contains(&MatchField::RequestUri),
            match_to: m.contains(&MatchField::To),
            match_from: m.contains(&MatchField::From),
            monitor: config.filter.mode == Mode::Monitor,
            reject_403: config.filter.on_reject == OnReject::Forbidden,
            public: config.listen.public.clone(),
            internal_text: internal
                .iter()
                .map(|s| String::from_utf8_lossy(sockaddr_text(s.addr).as_bytes()).into_owned())
                .collect(),
            internal,
            backend,
            backend_listener,
            backend_target: backend.to_string(),
            advertise_text: config.listen.advertise.to_string(),
            advertise_tls_text: advertise_tls(&config).to_string(),
            advertise_tls: advertise_tls(&config),
            advertise: config.listen.advertise.clone(),
            user_agents,
            lifetimes: Lifetimes {
                early: config.dialog.early_timeout.ms(),
                confirmed_idle: config.dialog.max_lifetime.ms(),
                linger: config.dialog.linger.ms(),
            },
            trunk_ranges: config
                .trunks
                .iter()
                .filter(|t| !t.allow.is_empty())
                .map(|t| (Arc::from(t.name.as_str()), t.allow.clone()))
                .collect(),
            ban: Policy {
                after_rejects: config.ban.after_rejects,
                after_auth_failures: config.ban.after_auth_failures,
                window: config.ban.window.ms(),
                duration: config.ban.duration.ms(),
            },
            budget: Budget {
                rate: config.limits.rate,
                burst: config.limits.burst,
                register_rate: config.limits.register_rate,
                register_burst: config.limits.register_burst,
            },
            allow: config.allow.cidrs.clone(),
            deny: config.deny.cidrs.clone(),
            udp_workers: match config.listen.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            config,
        }
    }

    /// The internal socket of a transport, for sending to Asterisk.
    pub fn internal_for(&self, t: Transport) -> Option<u8> {
        self.internal
            .iter()
            .position(|s| s.transport == t)
            .map(|i| i as u8)
    }

    /// `host:port` written where the public side is reached over `t`.
    pub fn advertise_for(&self, t: Transport) -> &str {
        match t {
            Transport::Tls => &self.advertise_tls_text,
            _ => &self.advertise_text,
        }
    }

    /// The first public socket of a transport.
    pub fn public_for(&self, t: Transport) -> Option<u8> {
        self.public
            .iter()
            .position(|s| s.transport == t)
            .map(|i| i as u8)
    }

    /// The transport of a flow a token names: the token says only stream
    /// or datagram, the listener it names says whether the stream is TLS.
    pub fn flow_transport(&self, f: &FlowRef) -> Transport {
        if f.listener == crate::flow::OPENED_TLS && f.transport.is_stream() {
            return Transport::Tls;
        }
        match self.public.get(usize::from(f.listener)) {
            Some(l) if f.transport.is_stream() && l.transport.is_stream() => l.transport,
            _ => f.transport,
        }
    }

    /// True when a URI names sipwarden's public side: the advertised
    /// address, a public socket, or (for an outbound-proxy Route a phone
    /// preloads) one of the secret domains.
    pub fn is_public_self(&self, u: &Uri<'_>) -> bool {
        if !matches!(u.scheme, Scheme::Sip | Scheme::Sips) {
            return false;
        }
        let port = u.port.unwrap_or(5060);
        let ours = |a: &HostPort| host_eq(u.host, a.host.as_bytes()) && port == a.port;
        if ours(&self.advertise) || ours(&self.advertise_tls) {
            return true;
        }
        let ip = parse_host_ip(u.host);
        let on_listener = self.public.iter().any(|s| {
            s.addr.port() == port
                && ip.is_some_and(|ip| !s.addr.ip().is_unspecified() && s.addr.ip() == ip)
        });
        if on_listener {
            return true;
        }
        let our_port = port == self.advertise.port
            || port == self.advertise_tls.port
            || self.public.iter().any(|s| s.addr.port() == port);
        our_port && self.domains.matches(u.host)
    }

    /// True when a URI names one of the internal sockets.
    pub fn is_internal_self(&self, u: &Uri<'_>) -> bool {
        if !matches!(u.scheme, Scheme::Sip | Scheme::Sips) {
            return false;
        }
        let Some(ip) = parse_host_ip(u.host) else {
            return false;
        };
        let port = u.port.unwrap_or(5060);
        self.internal
            .iter()
            .any(|s| s.addr.ip() == ip && s.addr.port() == port)
    }

    pub fn is_self(&self, u: &Uri<'_>) -> bool {
        self.is_internal_self(u) || self.is_public_self(u)
    }

    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        cidrs_contain(&self.allow, ip)
    }

    pub fn is_denied(&self, ip: IpAddr) -> bool {
        cidrs_contain(&self.deny, ip)
    }

    /// Step 7, configured part: a source inside a trunk's `allow` ranges.
    pub fn trunk_by_source(&self, ip: IpAddr) -> Option<Arc<str>> {
        self.trunk_ranges
            .iter()
            .find(|(_, cidrs)| cidrs_contain(cidrs, ip))
            .map(|(n, _)| n.clone())
    }

    /// The trunk a REGISTER to `host` belongs to: the configured trunk
    /// whose registrar is that host, else the host itself.
    pub fn trunk_for_registrar(&self, host: &[u8]) -> String {
        let h = String::from_utf8_lossy(host).to_ascii_lowercase();
        self.config
            .trunks
            .iter()
            .find(|t| registrar_host(&t.registrar) == h)
            .map_or(h, |t| t.name.clone())
    }

    /// Keepalive interval of a trunk, if configured.
    pub fn keepalive(&self, trunk: &str) -> Option<u64> {
        self.config
            .trunks
            .iter()
            .find(|t| t.name == trunk)
            .and_then(|t| t.keepalive)
            .map(|k| k.ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let c = crate::config::parse(
            "[listen]\npublic = [\"udp:0.0.0.0:5060\", \"udp:192.0.2.5:5062\"]\n\
             advertise = \"pbx.example.com:5060\"\n[filter]\ndomains = [\"sip-7f3k.example.com\"]\n",
            "t",
        )
        .unwrap();
        Settings::new(c)
    }

    #[test]
    fn recognises_itself() {
        let s = settings();
        let yes = |u: &str| s.is_self(&Uri::parse(u.as_bytes()).unwrap());
        assert!(yes("sip:pbx.example.com;lr"));
        assert!(yes("sip:PBX.example.com:5060;lr"));
        assert!(!yes("sip:pbx.example.com:5070;lr"));
        assert!(yes("sip:192.0.2.5:5062;lr"));
        assert!(!yes("sip:192.0.2.5;lr"));
        assert!(!yes("sip:0.0.0.0:5060"));
        assert!(yes("sip:127.0.0.1:5070;lr"));
        assert!(yes("sip:ftoken@127.0.0.1:5070;lr"));
        assert!(!yes("sip:127.0.0.1:5080"));
        assert!(yes("sip:sip-7f3k.example.com;lr"));
        assert!(!yes("sip:provider.example.net"));
        assert!(!yes("tel:+123"));
    }

    /// The backend is reached from the first internal socket of its
    /// transport, whichever place it has in the list.
    #[test]
    fn the_backend_socket_is_the_first_of_its_transport() {
        let with = |backend: &str| {
            let c = crate::config::parse(
                &format!(
                    "[listen]\nadvertise = \"pbx.example.com\"\n\
                     internal = [\"tcp:127.0.0.1:5070\", \"udp:127.0.0.1:5070\", \"udp:127.0.0.1:5071\"]\n\
                     [backend]\naddress = \"{backend}\"\n"
                ),
                "t",
            )
            .unwrap();
            Settings::new(c).backend_listener
        };
        assert_eq!(with("udp:127.0.0.1:5080"), 1);
        assert_eq!(with("tcp:127.0.0.1:5080"), 0);
    }

    /// The blocklist automaton exists exactly when the list has entries,
    /// and matches in any case.
    #[test]
    fn the_user_agent_automaton_follows_the_list() {
        let with = |list: &str| {
            let c = crate::config::parse(
                &format!(
                    "[listen]\nadvertise = \"pbx.example.com\"\n[filter]\nuser_agents = {list}\n"
                ),
                "t",
            )
            .unwrap();
            Settings::new(c).user_agents
        };
        assert!(with("[]").is_none());
        let ac = with("[\"Bad-Scanner\"]").unwrap();
        assert!(ac.is_match("x bad-scanner/1.0"));
        assert!(!ac.is_match("Yealink SIP-T46S"));
    }

    #[test]
    fn internal_addresses_are_written_as_uris_write_them() {
        let c = crate::config::parse(
            "[listen]\nadvertise = \"pbx.example.com\"\n\
             internal = [\"udp:127.0.0.1:5070\", \"tcp:[::1]:5071\"]\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            Settings::new(c).internal_text,
            ["127.0.0.1:5070", "[::1]:5071"]
        );
    }
}
