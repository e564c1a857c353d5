//! Fuzz bodies of what this crate parses from outside before the core
//! sees it, shared by the cargo-fuzz targets (`fuzz/`) and the stable
//! corpus replay (`tests/fuzz_hello.rs`). The core's own bodies are in
//! `sipwarden_core::fuzzing`.

use std::sync::{Arc, OnceLock};

use rustls::server::Acceptor;
use sipwarden_core::flow::{Flow, Side, Transport};
use sipwarden_core::metrics::Metrics;
use sipwarden_core::proxy::Core;
use sipwarden_core::settings::Settings;
use sipwarden_core::time::UnixMs;
use sipwarden_core::token::Keys;
use sipwarden_core::verdict::{Disposition, Reason};

/// The secret domain of the fuzzed gate.
const DOMAIN: &str = "pbx.secret.example";

/// What the bytes of a connection's first flight give the server-name
/// gate, read the way `transport::tls` reads them (rustls' `Acceptor`,
/// which `LazyConfigAcceptor` drives): `Some(Ok(sni))` for a whole
/// ClientHello, `Some(Err(()))` for bytes that are no ClientHello, `None`
/// while one is incomplete.
pub fn client_hello(data: &[u8]) -> Option<Result<Option<String>, ()>> {
    let mut acceptor = Acceptor::default();
    let mut rest = data;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Some(Err(())),
        }
        match acceptor.accept() {
            Ok(Some(hello)) => {
                return Some(Ok(hello.client_hello().server_name().map(str::to_owned)))
            }
            Ok(None) => {}
            Err(_) => return Some(Err(())),
        }
    }
    None
}

fn core() -> &'static Core {
    static CORE: OnceLock<Core> = OnceLock::new();
    CORE.get_or_init(|| {
        let text = format!(
            "[listen]\npublic = [\"tls:127.0.0.1:5061\"]\nadvertise = \"127.0.0.1:5061\"\n\
             [filter]\ndomains = [\"{DOMAIN}\"]\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\n\
             [ban]\nafter_rejects = 0\n"
        );
        let cfg = sipwarden_core::config::parse(&text, "fuzz").expect("the fuzz config is valid");
        Core::new(
            Settings::new(cfg),
            Keys::new([7; 32]),
            Arc::new(Metrics::default()),
        )
    })
}

/// One connection's first bytes through the ClientHello reader and the
/// core's gate: never a panic, the secret name (any case) admitted, any
/// other name or none refused and counted exactly once.
pub fn client_hello_bytes(data: &[u8]) {
    let Some(Ok(sni)) = client_hello(data) else {
        return;
    };
    let core = core();
    let flow = Flow {
        side: Side::Public,
        transport: Transport::Tls,
        listener: 0,
        local: "127.0.0.1:5061".parse().expect("an address"),
        remote: "192.0.2.9:40000".parse().expect("an address"),
    };
    let before = core.metrics().total(Reason::TlsSni, Disposition::Dropped);
    let admitted = core.on_client_hello(UnixMs(1_700_000_000_000), &flow, sni.as_deref());
    let after = core.metrics().total(Reason::TlsSni, Disposition::Dropped);
    let secret = sni
        .as_deref()
        .is_some_and(|n| n.eq_ignore_ascii_case(DOMAIN));
    assert_eq!(admitted, secret, "server name {sni:?}");
    assert_eq!(
        after - before,
        u64::from(!admitted),
        "counted once: {sni:?}"
    );
}
