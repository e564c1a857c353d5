//! SIP over TLS on the public side: the certificate (loaded at start and
//! at every reload, swapped for new connections only) and the accept path,
//! where the server-name gate runs between the ClientHello and the
//! server's first byte. What follows the handshake is TCP's (`tcp::run`).
//! And the client side, for providers reached over TLS: its roots and
//! the connect.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::Acceptor;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;

use sipwarden_core::config::Tls as TlsConfig;
use sipwarden_core::flow::{Flow, Side, Transport};

use super::egress::Egress;
use super::now_ms;

/// The server config of a certificate and key pair (PEM): the chain as
/// given, the key checked against the leaf, so that a mismatched pair is
/// refused where it is loaded (start, `check`, reload) rather than failing
/// every handshake.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs = pem_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: no PEM private key: {e}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| format!("{}: unusable private key: {e}", key_file.display()))?;
    rustls::sign::CertifiedKey::new(certs.clone(), signing)
        .keys_match()
        .map_err(|e| {
            format!(
                "{} does not belong to the certificate in {}: {e}",
                key_file.display(),
                cert_file.display()
            )
        })?;
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    Ok(Arc::new(cfg))
}

/// The certificates of a PEM file, at least one: a file without any is
/// as wrong as one that does not read.
fn pem_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: no PEM certificate: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", file.display()));
    }
    Ok(certs)
}

/// The server config `[tls]` names, or `None` without a certificate.
pub fn from_settings(t: &TlsConfig) -> Result<Option<Arc<ServerConfig>>, String> {
    match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => load(c, k).map(Some),
        _ => Ok(None),
    }
}

/// Accepts connections on a TLS listener until the task is aborted. Each
/// counts toward `tcp.max_connections` from the accept on.
pub async fn accept_loop(
    eg: Arc<Egress>,
    listener: TcpListener,
    side: Side,
    listener_idx: Arc<AtomicU8>,
) {
    loop {
        let (stream, flow) =
            super::tcp::accept(&eg, &listener, side, Transport::Tls, &listener_idx).await;
        if !eg.core.on_accept(now_ms(), &flow) {
            eg.tcp.release();
            continue;
        }
        tokio::spawn(serve(eg.clone(), stream, flow));
    }
}

/// One TLS connection: the ClientHello within `tls.hello_timeout`, the
/// core's verdict on its server name (a refusal drops the socket with
/// nothing written: no ServerHello, no certificate), the handshake within
/// `tls.handshake_timeout` with the certificate in force, then SIP as over
/// TCP.
async fn serve(eg: Arc<Egress>, stream: TcpStream, flow: Flow) {
    let Some((tls, _)) = handshake(&eg, stream, &flow).await else {
        return;
    };
    let (rd, wr) = tokio::io::split(tls);
    let (id, tx, rx) = eg.tcp.register(flow.side, flow.transport, flow.remote);
    super::tcp::run(eg, rd, wr, flow, id, tx, rx).await;
}

/// The server side of a TLS handshake behind the server-name gate, for
/// `tls:` and `wss:` listeners: the stream and the server name it asked
/// for, or `None` (the connection's place released) when the hello is
/// late, refused or the handshake fails.
pub(super) async fn handshake(
    eg: &Arc<Egress>,
    stream: TcpStream,
    flow: &Flow,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Option<String>)> {
    let t = eg.core.settings().config.tls.clone();
    let hello = LazyConfigAcceptor::new(Acceptor::default(), stream);
    let start = match tokio::time::timeout(t.hello_timeout.0, hello).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            tracing::debug!(remote = %flow.remote, error = %e, "no TLS ClientHello");
            eg.tcp.release();
            return None;
        }
        Err(_) => {
            tracing::debug!(remote = %flow.remote, "no TLS ClientHello in time, closing");
            eg.tcp.release();
            return None;
        }
    };
    let sni = start.client_hello().server_name().map(str::to_owned);
    let config = eg.tls.load_full();
    let admitted = eg.core.on_client_hello(now_ms(), flow, sni.as_deref());
    let Some(config) = config.filter(|_| admitted) else {
        // Dropped unanswered: the scanner learns nothing.
        eg.tcp.release();
        return None;
    };
    let tls = match tokio::time::timeout(t.handshake_timeout.0, start.into_stream(config)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(remote = %flow.remote, error = %e, "TLS handshake failed");
            eg.tcp.release();
            return None;
        }
        Err(_) => {
            tracing::debug!(remote = %flow.remote, "TLS handshake not finished in time, closing");
            eg.tcp.release();
            return None;
        }
    };
    Some((tls, sni))
}

/// The client side, for providers reached over TLS (a next hop that is
/// `sips:` or `;transport=tls`): their certificate verified against the
/// system's roots, or only against `tls.ca_file` when one is named (the
/// provider's CA, pinned), or not at all with `tls.verify = false` (the
/// config's warning says what that costs). Built at start and at every
/// reload; a `ca_file` that does not load refuses them.
pub fn client_config(t: &TlsConfig) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let cfg = if t.verify {
        builder
            .with_root_certificates(roots(t.ca_file.as_deref())?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustAnyone(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(cfg))
}

/// The roots a provider's certificate must chain to.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(f) => {
            for c in pem_certs(f)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: unusable CA certificate: {e}", f.display()))?;
            }
        }
        None => {
            // Unreadable entries are skipped (the OS's problem, not a
            // reason to refuse the config); what loaded is logged.
            let found = rustls_native_certs::load_native_certs();
            let (added, skipped) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(
                added,
                skipped,
                errors = found.errors.len(),
                "system roots for providers over TLS"
            );
        }
    }
    Ok(roots)
}

/// `tls.verify = false`: any certificate is taken as the provider's. The
/// handshake signatures are still checked (they prove the peer holds the
/// key of the certificate it sent, whoever it is).
#[derive(Debug)]
struct TrustAnyone(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for TrustAnyone {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The name a provider's certificate is verified against and, for a host
/// name, sent as SNI: the host the next hop named, or its IP address
/// (RFC 6066 3 forbids an address in SNI; rustls sends none for one).
pub fn server_name(host: Option<&str>, addr: SocketAddr) -> ServerName<'static> {
    host.and_then(|h| ServerName::try_from(h.to_owned()).ok())
        .unwrap_or(ServerName::IpAddress(addr.ip().into()))
}

/// Opens a TLS connection to a provider over `stream` within
/// `tls.handshake_timeout`.
pub async fn connect(
    eg: &Egress,
    stream: TcpStream,
    name: ServerName<'static>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let timeout = eg.core.settings().config.tls.handshake_timeout.0;
    let connector = tokio_rustls::TlsConnector::from(eg.tls_client.load_full());
    match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake not finished in tls.handshake_timeout".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_is_verified_and_sent_an_address_is_only_verified() {
        let a: SocketAddr = "192.0.2.7:5061".parse().unwrap();
        assert_eq!(
            server_name(Some("sip.provider.example"), a),
            ServerName::try_from("sip.provider.example").unwrap()
        );
        assert_eq!(
            server_name(None, a),
            ServerName::IpAddress("192.0.2.7".parse::<std::net::IpAddr>().unwrap().into())
        );
        // A name no certificate can carry falls back to the address.
        assert_eq!(
            server_name(Some("bad name"), a),
            ServerName::IpAddress("192.0.2.7".parse::<std::net::IpAddr>().unwrap().into())
        );
    }

    #[test]
    fn a_ca_file_that_does_not_load_is_refused() {
        let dir = std::env::temp_dir().join(format!("sw-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let t = TlsConfig {
            ca_file: Some(f.clone()),
            ..TlsConfig::default()
        };
        let e = client_config(&t).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let t = TlsConfig {
            ca_file: Some(dir.join("missing.pem")),
            ..TlsConfig::default()
        };
        assert!(client_config(&t).is_err());
        // Without a file: the system's roots, whatever they are.
        assert!(client_config(&TlsConfig::default()).is_ok());
        let t = TlsConfig {
            verify: false,
            ..TlsConfig::default()
        };
        assert!(client_config(&t).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
