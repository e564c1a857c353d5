//! SIP over TLS on the public side: the certificate (loaded at start and
//! at every reload, swapped for new connections only) and the accept path,
//! where the server-name gate runs between the ClientHello and the
//! server's first byte. What follows the handshake is TCP's (`tcp::run`).

use std::path::Path;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::Acceptor;
use rustls::ServerConfig;
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
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: no PEM certificate: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", cert_file.display()));
    }
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
