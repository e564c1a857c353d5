//! SIP over WebSocket in-process with real sockets: a REGISTER over a
//! `ws:` connection reaches the backend with the browser's Via kept
//! (`received`, `rport`) and the answer comes back as a text message; the
//! bounds of the transport: an upgrade that never completes gets 408, a
//! head over `ws.max_header` 431, a message over `limits.max_message`
//! closes the connection (`too-large`), and a ping comes every
//! `ws.ping_interval`. Loopback 127.0.70.x, ports 17201-17204.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sipwarden::transport::Server;
use sipwarden_core::metrics::Metrics;
use sipwarden_core::proxy::Core;
use sipwarden_core::settings::Settings;
use sipwarden_core::token::Keys;
use sipwarden_core::verdict::{Disposition, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn start(port: u16, extra: &str) -> (Arc<Server>, Arc<Core>) {
    let text = format!(
        r#"
[listen]
public = ["ws:127.0.70.1:{port}"]
internal = "udp:127.0.70.1:{int}"
advertise = "127.0.70.1:{port}"
[backend]
address = "udp:127.0.70.2:{be}"
[filter]
domains = ["pbx.secret.example"]
[metrics]
summary_interval = "0s"
[ws]
origins = ["https://phone.example.com"]
{extra}
"#,
        int = port + 100,
        be = port + 200,
    );
    let cfg = sipwarden_core::config::parse(&text, "test").expect("config");
    let core = Arc::new(Core::new(
        Settings::new(cfg),
        Keys::new([7; 32]),
        Arc::new(Metrics::default()),
    ));
    let server = Server::start(core.clone()).expect("bind");
    (server, core)
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(port: u16) -> Ws {
    let tcp = TcpStream::connect(("127.0.70.1", port)).await.unwrap();
    let mut req = format!("ws://127.0.70.1:{port}/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    req.headers_mut().insert(
        "Origin",
        HeaderValue::from_static("https://phone.example.com"),
    );
    let (ws, resp) = timeout(WAIT, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("upgrade in time")
        .expect("upgraded");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.as_bytes()),
        Some(&b"sip"[..])
    );
    ws
}

/// Everything the server writes until it closes (or `WAIT`).
async fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = timeout(WAIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_goes_to_the_backend_and_its_answer_comes_back_as_text() {
    let port = 17201;
    let backend = UdpSocket::bind(("127.0.70.2", port + 200)).await.unwrap();
    let (server, core) = start(port, "");
    let mut ws = connect(port).await;
    let register = "REGISTER sip:pbx.secret.example SIP/2.0\r\n\
        Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK5146935\r\n\
        Max-Forwards: 69\r\nTo: <sip:1003@pbx.secret.example>\r\n\
        From: <sip:1003@pbx.secret.example>;tag=vsdm5m0ulc\r\nCall-ID: ws-reg-1\r\n\
        CSeq: 1 REGISTER\r\nContact: <sip:p6pc1sbt@df7jal23ls0d.invalid;transport=ws>;expires=600\r\n\
        Supported: path,gruu,outbound\r\nUser-Agent: JsSIP 3.13.8\r\n\r\n";
    ws.send(Message::text(register)).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, from) = timeout(WAIT, backend.recv_from(&mut buf))
        .await
        .expect("the REGISTER reaches the backend")
        .unwrap();
    let fwd = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        fwd.contains("\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK5146935;received=127.0.0.1;rport="),
        "{fwd}"
    );
    assert!(fwd.contains("\r\nPath: <sip:f"), "{fwd}");
    // The 200: our Via popped, the browser's kept.
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for l in fwd.lines().skip(1) {
        if l.starts_with("Via:")
            || l.starts_with("From:")
            || l.starts_with("To:")
            || l.starts_with("Call-ID:")
            || l.starts_with("CSeq:")
        {
            ok.push_str(l);
            ok.push_str("\r\n");
        }
    }
    ok.push_str("Content-Length: 0\r\n\r\n");
    backend.send_to(ok.as_bytes(), from).await.unwrap();
    let answer = loop {
        match timeout(WAIT, ws.next()).await.expect("the answer in time") {
            Some(Ok(Message::Text(t))) => break t.to_string(),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    };
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert!(answer.contains(
        "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK5146935;received=127.0.0.1;rport="
    ));
    assert_eq!(
        core.metrics().total(Reason::Domain, Disposition::Forwarded),
        1
    );
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_never_completes_gets_408_and_an_oversized_head_431() {
    let port = 17202;
    let (server, core) = start(port, "upgrade_timeout = \"1s\"\nmax_header = 512\n");
    let mut slow = TcpStream::connect(("127.0.70.1", port)).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let got = read_all(&mut slow).await;
    assert!(
        got.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{got:?}"
    );
    let mut big = TcpStream::connect(("127.0.70.1", port)).await.unwrap();
    let head = format!("GET /ws HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(600));
    big.write_all(head.as_bytes()).await.unwrap();
    let got = read_all(&mut big).await;
    assert!(
        got.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{got:?}"
    );
    assert_eq!(
        core.metrics()
            .total(Reason::WsUpgrade, Disposition::Dropped),
        2
    );
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_closes_the_connection() {
    let port = 17203;
    let (server, core) = start(port, "[limits]\nmax_message = 2000\n");
    let mut ws = connect(port).await;
    ws.send(Message::text("x".repeat(3000))).await.unwrap();
    let end = timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the connection is closed");
    assert_eq!(
        core.metrics().total(Reason::TooLarge, Disposition::Dropped),
        1
    );
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_every_ping_interval() {
    let port = 17204;
    let (server, _core) = start(port, "ping_interval = \"1s\"\n");
    let mut ws = connect(port).await;
    let ping = timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => return true,
                Some(Ok(_)) => continue,
                _ => return false,
            }
        }
    })
    .await;
    assert_eq!(ping, Ok(true));
    server.shutdown();
}
