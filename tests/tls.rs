//! SIP over TLS, in-process with real sockets: the server-name gate seen
//! from `openssl s_client` (the certificate for the secret name, nothing
//! at all for another name or none), SIP over the TLS connection both ways
//! (a REGISTER's Path brings Asterisk's request back down the phone's TLS
//! connection), and a reload that swaps the certificate for new
//! connections only. Certificates are made here (rcgen): no key is
//! committed. Loopback 127.0.60.x to 127.0.64.x.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use sipwarden::transport::Server;
use sipwarden_core::metrics::Metrics;
use sipwarden_core::proxy::Core;
use sipwarden_core::settings::Settings;
use sipwarden_core::token::Keys;
use sipwarden_core::verdict::{Disposition, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

const WAIT: Duration = Duration::from_secs(10);

/// A wildcard certificate for the secret domain's parent, as `docs/tls.md`
/// advises, written to `dir` as `NAME.pem` and `NAME.key`.
fn cert(dir: &std::path::Path, name: &str) -> CertificateDer<'static> {
    let c = rcgen::generate_simple_self_signed(vec!["*.secret.example".into()]).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), c.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        c.signing_key.serialize_pem(),
    )
    .unwrap();
    c.cert.der().clone()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sw-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(n: u8, dir: &std::path::Path, name: &str) -> String {
    format!(
        r#"
[listen]
public = ["tls:127.0.{n}.1:5061"]
internal = "udp:127.0.{n}.1:5070"
advertise = "127.0.{n}.1:5061"
[backend]
address = "udp:127.0.{n}.2:5080"
[filter]
domains = ["pbx.secret.example"]
[metrics]
summary_interval = "0s"
[tls]
cert_file = "{d}/{name}.pem"
key_file = "{d}/{name}.key"
"#,
        d = dir.display()
    )
}

fn start(text: &str) -> (Arc<Server>, Arc<Core>) {
    let cfg = sipwarden_core::config::parse(text, "test").expect("config");
    let core = Arc::new(Core::new(
        Settings::new(cfg),
        Keys::new([9; 32]),
        Arc::new(Metrics::default()),
    ));
    let server = Server::start(core.clone()).expect("bind");
    (server, core)
}

/// `openssl s_client` against `addr` with `args`, stdin closed: what it
/// printed, both streams.
async fn s_client(addr: String, args: &'static [&'static str]) -> String {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl runs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
    .await
    .unwrap()
}

/// A TLS phone that trusts `root` and names `sni`.
async fn phone(
    addr: &str,
    local: &str,
    root: &CertificateDer<'static>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(local.parse().unwrap())?;
    let tcp = sock.connect(addr.parse().unwrap()).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    timeout(
        WAIT,
        connector.connect(ServerName::try_from(sni.to_string()).unwrap(), tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))?
}

fn request(method: &str, ruri: &str, via: &str, call_id: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: {via};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:1001@pbx.secret.example>;tag=f-{call_id}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nContact: <sip:1001@192.168.1.5:5063;transport=tls>\r\n\
         Supported: path\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A UAS answer: Vias, Record-Routes and Path copied, To tag added.
fn answer(req: &str, code: u16) -> String {
    let mut out = format!("SIP/2.0 {code} OK\r\n");
    for line in req.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let n = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if ["via", "record-route", "from", "call-id", "cseq", "path"].contains(&n.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        } else if n == "to" {
            out.push_str(line);
            out.push_str(";tag=uas\r\n");
        }
    }
    out + "Content-Length: 0\r\n\r\n"
}

async fn recv(s: &UdpSocket) -> (String, SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let (n, from) = timeout(WAIT, s.recv_from(&mut buf))
        .await
        .expect("timed out")
        .expect("recv");
    (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
}

/// One whole message from a stream (headers to the blank line; the
/// tests' messages have no body).
async fn read_msg(s: &mut TlsStream<TcpStream>) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = timeout(WAIT, s.read(&mut b)).await.unwrap().unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.push(b[0]);
    }
    String::from_utf8(got).unwrap()
}

fn header<'a>(m: &'a str, name: &str) -> Option<&'a str> {
    m.split("\r\n")
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_secret_name_sees_the_certificate() {
    let dir = scratch("sni");
    cert(&dir, "a");
    let (_server, core) = start(&config(60, &dir, "a"));
    let addr = "127.0.60.1:5061".to_string();

    let ok = s_client(addr.clone(), &["-servername", "pbx.secret.example"]).await;
    assert!(ok.contains("-----BEGIN CERTIFICATE-----"), "{ok}");
    assert!(
        ok.contains("CN = rcgen self signed cert") || ok.contains("rcgen"),
        "{ok}"
    );

    for args in [
        &["-servername", "other.example"][..],
        &["-servername", "secret.example"][..],
        &["-noservername"][..],
    ] {
        let args: &'static [&'static str] = Box::leak(args.to_vec().into_boxed_slice());
        let out = s_client(addr.clone(), args).await;
        assert!(
            out.contains("no peer certificate available"),
            "{args:?}: {out}"
        );
        assert!(!out.contains("BEGIN CERTIFICATE"), "{args:?}: {out}");
        // Not one byte from sipwarden: no ServerHello, not even an alert.
        assert!(
            out.contains("SSL handshake has read 0 bytes"),
            "{args:?}: {out}"
        );
    }
    assert_eq!(
        core.metrics().total(Reason::TlsSni, Disposition::Dropped),
        3
    );
    let text = core.metrics().render(&[]);
    assert!(
        text.contains(
            "sipwarden_messages_total{side=\"public\",transport=\"tls\",reason=\"tls-sni\",disposition=\"dropped\"} 3"
        ),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_over_tls_both_ways_through_the_path_flow() {
    let dir = scratch("sip");
    let root = cert(&dir, "a");
    let asterisk = UdpSocket::bind("127.0.61.2:5080").await.unwrap();
    let (_server, core) = start(&config(61, &dir, "a"));
    let mut ph = phone(
        "127.0.61.1:5061",
        "127.0.61.3:0",
        &root,
        "pbx.secret.example",
    )
    .await
    .unwrap();
    let local = ph.get_ref().0.local_addr().unwrap();

    // REGISTER over TLS: forwarded to Asterisk with the phone's Via
    // marked where it came from and a Path naming the TLS connection.
    let via = "SIP/2.0/TLS 192.168.1.5:5063";
    let reg = request("REGISTER", "sip:pbx.secret.example", via, "reg-1");
    ph.write_all(reg.as_bytes()).await.unwrap();
    let (fwd, from) = recv(&asterisk).await;
    assert!(
        fwd.starts_with("REGISTER sip:pbx.secret.example SIP/2.0"),
        "{fwd}"
    );
    let phone_via = format!(
        "Via: {via};branch=z9hG4bK-reg-1;rport={};received=127.0.61.3",
        local.port()
    );
    assert!(fwd.contains(&phone_via), "{fwd}");
    // Facing Asterisk (the internal socket); its flow token names the
    // phone's TLS connection, as the OPTIONS below shows.
    let path = header(&fwd, "Path").expect("a Path").to_string();
    assert!(path.starts_with("<sip:f"), "{path}");
    asterisk
        .send_to(answer(&fwd, 200).as_bytes(), from)
        .await
        .unwrap();
    let resp = read_msg(&mut ph).await;
    assert!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
    assert!(resp.contains("Call-ID: reg-1"), "{resp}");

    // Asterisk's INVITE to the registered phone, routed by the Path: it
    // goes down the phone's TLS connection, with our Via saying TLS and
    // the Record-Route facing the phone `transport=tls`.
    let opt = request(
        "INVITE",
        "sip:1001@192.168.1.5:5063;transport=tls",
        "SIP/2.0/UDP 127.0.61.2:5080",
        "opt-1",
    )
    .replace(
        "Max-Forwards",
        &format!("Route: <sip:127.0.61.1:5070;lr>\r\nRoute: {path}\r\nMax-Forwards"),
    );
    asterisk
        .send_to(opt.as_bytes(), "127.0.61.1:5070")
        .await
        .unwrap();
    let got = read_msg(&mut ph).await;
    assert!(got.starts_with("INVITE sip:1001@"), "{got}");
    assert!(
        got.contains("Via: SIP/2.0/TLS 127.0.61.1:5061;branch=z9hG4bKswo"),
        "{got}"
    );
    let rr = header(&got, "Record-Route").expect("a Record-Route");
    assert!(rr.contains("@127.0.61.1:5061;transport=tls;lr"), "{got}");
    ph.write_all(answer(&got, 200).as_bytes()).await.unwrap();
    let (back, _) = recv(&asterisk).await;
    assert!(
        back.starts_with("SIP/2.0 200 OK\r\n") && back.contains("Call-ID: opt-1"),
        "{back}"
    );

    assert_eq!(
        core.metrics().total(Reason::TlsSni, Disposition::Dropped),
        0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_certificate_for_new_connections_only() {
    let dir = scratch("reload");
    let a = cert(&dir, "a");
    let b = cert(&dir, "b");
    let asterisk = UdpSocket::bind("127.0.62.2:5080").await.unwrap();
    let (server, _core) = start(&config(62, &dir, "a"));
    let addr = "127.0.62.1:5061";
    let mut old = phone(addr, "127.0.62.3:0", &a, "pbx.secret.example")
        .await
        .unwrap();
    let seen = |s: &TlsStream<TcpStream>| s.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(seen(&old), a);

    // A bad pair (b's certificate, a's key) refuses the reload.
    std::fs::copy(dir.join("b.pem"), dir.join("bad.pem")).unwrap();
    std::fs::copy(dir.join("a.key"), dir.join("bad.key")).unwrap();
    let bad = sipwarden_core::config::parse(&config(62, &dir, "bad"), "test").unwrap();
    let e = server.reload(Settings::new(bad)).unwrap_err().to_string();
    assert!(e.contains("does not belong to the certificate"), "{e}");
    let still = phone(addr, "127.0.62.4:0", &a, "pbx.secret.example")
        .await
        .unwrap();
    assert_eq!(seen(&still), a);

    let good = sipwarden_core::config::parse(&config(62, &dir, "b"), "test").unwrap();
    server.reload(Settings::new(good)).unwrap();
    let new = phone(addr, "127.0.62.5:0", &b, "pbx.secret.example")
        .await
        .unwrap();
    assert_eq!(seen(&new), b);
    // The connection made before the reload still carries SIP.
    let via = "SIP/2.0/TLS 192.168.1.5:5063";
    let opt = request("OPTIONS", "sip:1002@pbx.secret.example", via, "after-1");
    old.write_all(opt.as_bytes()).await.unwrap();
    let (fwd, from) = recv(&asterisk).await;
    assert!(fwd.contains("Call-ID: after-1"), "{fwd}");
    asterisk
        .send_to(answer(&fwd, 200).as_bytes(), from)
        .await
        .unwrap();
    let resp = read_msg(&mut old).await;
    assert!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_time_out_and_refused_names_ban() {
    let dir = scratch("ban");
    let root = cert(&dir, "a");
    let text = config(63, &dir, "a").replace(
        "[tls]\n",
        "[ban]\nafter_rejects = 2\n[tcp]\nmax_connections = 1\n[tls]\nhello_timeout = \"1s\"\n",
    );
    let (_server, core) = start(&text);
    let addr = "127.0.63.1:5061";

    // A client that sends no ClientHello holds the one place under
    // tcp.max_connections until tls.hello_timeout closes it, with nothing
    // written.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let refused = TcpStream::connect(addr).await.unwrap();
    let mut refused = refused;
    let mut buf = [0u8; 64];
    let n = timeout(WAIT, refused.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "over the cap: closed");
    let n = timeout(WAIT, idle.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "silent: closed, nothing sent");
    assert_eq!(
        core.metrics().total(Reason::TlsSni, Disposition::Dropped),
        0
    );

    // Two refused names ban the source: its next connection is closed at
    // the accept, even with the right name.
    for _ in 0..2 {
        let e = phone(addr, "127.0.63.3:0", &root, "other.secret.example").await;
        assert!(e.is_err());
    }
    assert_eq!(
        core.metrics().total(Reason::TlsSni, Disposition::Dropped),
        2
    );
    let e = phone(addr, "127.0.63.3:0", &root, "pbx.secret.example").await;
    assert!(e.is_err(), "banned");
    assert_eq!(
        core.metrics().total(Reason::Banned, Disposition::Dropped),
        1
    );
    // Another source still gets through.
    phone(addr, "127.0.63.4:0", &root, "pbx.secret.example")
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An RSA 2048 certificate (openssl, PKCS#8 and the traditional PKCS#1
/// key) serves as well as an ECDSA one, and a key that is not the
/// certificate's is refused where it is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_certificates_serve_and_mismatched_keys_are_refused() {
    let dir = scratch("rsa");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=rsa.secret.example",
        "-addext",
        "subjectAltName=DNS:*.secret.example",
        "-keyout",
        "r.key",
        "-out",
        "r.pem",
    ]);
    // The same key in the traditional PKCS#1 form ("BEGIN RSA PRIVATE KEY").
    openssl(&["rsa", "-in", "r.key", "-traditional", "-out", "r1.key"]);
    std::fs::copy(dir.join("r.pem"), dir.join("r1.pem")).unwrap();
    for name in ["r", "r1"] {
        sipwarden::transport::tls::load(
            &dir.join(format!("{name}.pem")),
            &dir.join(format!("{name}.key")),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let (_server, _core) = start(&config(64, &dir, "r1"));
    let out = s_client(
        "127.0.64.1:5061".into(),
        &["-servername", "pbx.secret.example"],
    )
    .await;
    assert!(out.contains("CN = rsa.secret.example"), "{out}");
    assert!(out.contains("2048 bit"), "{out}");
    // Another key with this certificate: refused with the reason.
    cert(&dir, "ec");
    let e = sipwarden::transport::tls::load(&dir.join("r.pem"), &dir.join("ec.key")).unwrap_err();
    assert!(e.contains("does not belong to the certificate"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
