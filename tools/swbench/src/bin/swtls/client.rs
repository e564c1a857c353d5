//! One TLS client connection: connect, handshake, and what the server did.
//!
//! The handshake is driven by hand (`write_tls` / `read_tls` on a blocking
//! socket with a timeout) so that the bytes the server sent are counted: a
//! server that closes after the ClientHello without a single byte (sipwarden's
//! SNI gate) is told apart from one that answered with a ServerHello.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// What one connection attempt ended in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The handshake finished (the server sent its certificate and Finished).
    Completed,
    /// The server closed (FIN or RST) without sending a byte: no ServerHello.
    ClosedSilently,
    /// The server closed after sending something (an alert, or part of a handshake).
    ClosedAfterBytes,
    /// Nothing within the timeout.
    TimedOut,
    /// The TCP connect failed (refused, or no local port left).
    ConnectFailed,
    /// A TLS error on our side (bad record, alert received...).
    TlsError,
}

impl Outcome {
    /// Key of the outcome in the JSON report.
    pub fn key(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClosedSilently => "closed_silently",
            Outcome::ClosedAfterBytes => "closed_after_bytes",
            Outcome::TimedOut => "timed_out",
            Outcome::ConnectFailed => "connect_failed",
            Outcome::TlsError => "tls_error",
        }
    }

    /// Every outcome, in report order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Completed,
        Outcome::ClosedSilently,
        Outcome::ClosedAfterBytes,
        Outcome::TimedOut,
        Outcome::ConnectFailed,
        Outcome::TlsError,
    ];
}

/// How a read that ended the handshake classifies, given what the server had sent.
pub fn classify_end(read: &std::io::Result<usize>, bytes_from_server: u64) -> Outcome {
    let closed = match read {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    };
    match read {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Outcome::TimedOut
        }
        _ if closed && bytes_from_server == 0 => Outcome::ClosedSilently,
        _ if closed => Outcome::ClosedAfterBytes,
        _ => Outcome::TlsError,
    }
}

/// Accepts any certificate (the benchmark's is made at run time and
/// self-signed) but checks the handshake signatures, as a real client would:
/// the server's signing work is what is measured, the client's chain
/// building is not the server's cost.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
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
        crypto::verify_tls12_signature(
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
        crypto::verify_tls13_signature(
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

/// The client configuration: rustls defaults (TLS 1.3 preferred, X25519),
/// no session resumption (every handshake is a full one).
pub fn config() -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.resumption = Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// The name rustls is given: a DNS name sends SNI, an IP address sends none (RFC 6066).
pub fn server_name(sni: Option<&str>, target: SocketAddr) -> Result<ServerName<'static>, String> {
    match sni {
        Some(n) => ServerName::try_from(n.to_string()).map_err(|e| format!("{n}: {e}")),
        None => Ok(ServerName::IpAddress(target.ip().into())),
    }
}

/// How connections are made.
#[derive(Clone, Copy, Debug)]
pub struct Dial {
    /// Bound of every connect, read and write.
    pub timeout: Duration,
    /// SO_LINGER 0: the close is a RST and leaves no TIME_WAIT, so
    /// thousands of short connections per second from one source address do
    /// not run out of local ports.
    pub abort_on_close: bool,
    /// SO_SNDBUF request (0 = the kernel's autotuning): forward keeps it
    /// small so that what a slow server has not read when the load stops
    /// is bounded (as swload's TCP scenario).
    pub sndbuf: usize,
}

/// A TCP connection from `src` (any port) with Nagle off and every blocking call bounded.
pub fn tcp(src: IpAddr, target: SocketAddr, dial: Dial) -> std::io::Result<TcpStream> {
    let Dial {
        timeout,
        abort_on_close,
        sndbuf,
    } = dial;
    let domain = if target.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if sndbuf > 0 {
        s.set_send_buffer_size(sndbuf)?;
    }
    s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    s.connect_timeout(&SockAddr::from(target), timeout)?;
    s.set_tcp_nodelay(true)?;
    if abort_on_close {
        s.set_linger(Some(Duration::ZERO))?;
    }
    let stream: TcpStream = s.into();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// An established connection and what the handshake negotiated.
pub struct Established {
    /// The socket (blocking, with timeouts).
    pub sock: TcpStream,
    /// rustls' state of the connection.
    pub tls: ClientConnection,
}

/// Connects and runs a full handshake.
pub fn handshake(
    cfg: &Arc<ClientConfig>,
    name: ServerName<'static>,
    src: IpAddr,
    target: SocketAddr,
    dial: Dial,
) -> Result<Established, Outcome> {
    let mut sock = tcp(src, target, dial).map_err(|_| Outcome::ConnectFailed)?;
    let mut tls = ClientConnection::new(cfg.clone(), name).map_err(|_| Outcome::TlsError)?;
    let mut from_server = 0u64;
    loop {
        while tls.wants_write() {
            match tls.write_tls(&mut sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(classify_end(&Err(e), from_server)),
            }
        }
        if !tls.is_handshaking() {
            return Ok(Established { sock, tls });
        }
        let read = tls.read_tls(&mut sock);
        match read {
            Ok(n) if n > 0 => {
                from_server += n as u64;
                if tls.process_new_packets().is_err() {
                    // Send the alert rustls queued, as a client would; then give up.
                    let _ = tls.write_tls(&mut sock);
                    return Err(Outcome::TlsError);
                }
            }
            Err(ref e) if e.kind() == ErrorKind::Interrupted => {}
            _ => return Err(classify_end(&read, from_server)),
        }
    }
}

/// Writes everything rustls holds for the socket (blocking, bounded by the socket's timeout).
pub fn flush(e: &mut Established) -> std::io::Result<()> {
    while e.tls.wants_write() {
        e.tls.write_tls(&mut e.sock)?;
    }
    e.sock.flush()
}

/// Reads what the server sent (non-blocking socket) and throws the
/// plaintext away; Ok(false) when the server closed.
pub fn drain(e: &mut Established) -> std::io::Result<bool> {
    let mut scratch = [0u8; 16_384];
    loop {
        match e.tls.read_tls(&mut e.sock) {
            Ok(0) => return Ok(false),
            Ok(_) => {
                e.tls
                    .process_new_packets()
                    .map_err(|err| std::io::Error::other(err.to_string()))?;
                while let Ok(n) = e.tls.reader().read(&mut scratch) {
                    if n == 0 {
                        break;
                    }
                }
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(true),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Starts a clean close: close_notify (TLS) and our FIN; the socket must be non-blocking.
pub fn start_close(sock: &TcpStream, tls: Option<&mut ClientConnection>) {
    if let Some(tls) = tls {
        tls.send_close_notify();
        let mut s = sock;
        while tls.wants_write() {
            if tls.write_tls(&mut s).is_err() {
                break;
            }
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Write);
}

/// True once the server closed its side (EOF, or an error), reading and
/// discarding what it still sends; the socket must be non-blocking.
pub fn server_closed(mut sock: &TcpStream) -> bool {
    let mut buf = [0u8; 16_384];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Closes `socks` cleanly and waits until the server closed each, or
/// `deadline_ns`; returns how many the server closed. After a load, the
/// server has then read (and handled) everything sent before our close.
pub fn close_all(
    conns: &mut [(&TcpStream, Option<&mut ClientConnection>)],
    deadline_ns: u64,
) -> usize {
    for (sock, tls) in conns.iter_mut() {
        start_close(sock, tls.as_deref_mut());
    }
    let mut done = vec![false; conns.len()];
    loop {
        for (i, (sock, _)) in conns.iter().enumerate() {
            if !done[i] && server_closed(sock) {
                done[i] = true;
            }
        }
        let closed = done.iter().filter(|d| **d).count();
        if closed == conns.len() || swbench::clock::mono_ns() >= deadline_ns {
            return closed;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn what_the_end_of_a_handshake_means() {
        assert_eq!(classify_end(&Ok(0), 0), Outcome::ClosedSilently);
        assert_eq!(classify_end(&Ok(0), 90), Outcome::ClosedAfterBytes);
        let reset = Err(io::Error::from(ErrorKind::ConnectionReset));
        assert_eq!(classify_end(&reset, 0), Outcome::ClosedSilently);
        assert_eq!(classify_end(&reset, 7), Outcome::ClosedAfterBytes);
        let slow = Err(io::Error::from(ErrorKind::WouldBlock));
        assert_eq!(classify_end(&slow, 0), Outcome::TimedOut);
        let other = Err(io::Error::from(ErrorKind::InvalidData));
        assert_eq!(classify_end(&other, 0), Outcome::TlsError);
    }

    #[test]
    fn an_address_sends_no_server_name() {
        let t: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        assert!(matches!(server_name(None, t), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name(Some("pbx.secret.example"), t),
            Ok(ServerName::DnsName(_))
        ));
        assert!(config().is_ok());
    }
}
