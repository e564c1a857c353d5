//! What both benches drive the core with: a core built from a config text
//! and the two flows, a public UDP source and Asterisk on loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use sipwarden_core::flow::{Flow, Side, Transport};
use sipwarden_core::metrics::Metrics;
use sipwarden_core::proxy::Core;
use sipwarden_core::settings::Settings;
use sipwarden_core::token::Keys;

/// A core with this config; the key is fixed so runs compare.
pub fn core_from(cfg: &str) -> Core {
    let cfg = sipwarden_core::config::parse(cfg, "bench").expect("bench config");
    Core::new(
        Settings::new(cfg),
        Keys::new([7; 32]),
        Arc::new(Metrics::default()),
    )
}

/// A message from `remote` to the public UDP listener 203.0.113.10:5060.
pub fn public(remote: SocketAddr) -> Flow {
    Flow {
        side: Side::Public,
        transport: Transport::Udp,
        listener: 0,
        local: "203.0.113.10:5060".parse().expect("literal"),
        remote,
    }
}

/// A message from Asterisk (127.0.0.1:5080) to the internal listener.
pub fn asterisk() -> Flow {
    Flow {
        side: Side::Internal,
        transport: Transport::Udp,
        listener: 0,
        local: "127.0.0.1:5070".parse().expect("literal"),
        remote: "127.0.0.1:5080".parse().expect("literal"),
    }
}
