//! The proxy with real sockets, in-process: UDP and TCP in both directions,
//! responses over the request's TCP connection, CRLF keepalive, outgoing
//! TCP, reload and the metrics endpoint. Each test uses its own loopback
//! addresses (127.0.N.x), so tests run in parallel without colliding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sipwarden::transport::Server;
use sipwarden_core::metrics::Metrics;
use sipwarden_core::proxy::Core;
use sipwarden_core::settings::Settings;
use sipwarden_core::token::Keys;
use sipwarden_core::verdict::{Disposition, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

struct Net {
    n: u8,
}

impl Net {
    fn ip(&self, host: u8) -> String {
        format!("127.0.{}.{host}", self.n)
    }
    fn config(&self, extra: &str) -> String {
        format!(
            r#"
[listen]
public = ["udp:{p}:5060", "tcp:{p}:5060"]
internal = ["udp:{p}:5070", "tcp:{p}:5070"]
advertise = "{p}:5060"
[backend]
address = "udp:{b}:5080"
[filter]
domains = ["pbx.secret.example"]
[metrics]
summary_interval = "0s"
{extra}"#,
            p = self.ip(1),
            b = self.ip(2)
        )
    }
}

fn start(net: &Net, extra: &str) -> (Arc<Server>, Arc<Core>) {
    start_with(&net.config(extra))
}

fn start_with(text: &str) -> (Arc<Server>, Arc<Core>) {
    let cfg = sipwarden_core::config::parse(text, "test").expect("config");
    let core = Arc::new(Core::new(
        Settings::new(cfg),
        Keys::new([9; 32]),
        Arc::new(Metrics::default()),
    ));
    let server = Server::start(core.clone()).expect("bind");
    (server, core)
}

async fn udp(addr: String) -> UdpSocket {
    UdpSocket::bind(addr).await.expect("bind test socket")
}

async fn recv(s: &UdpSocket) -> (String, SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let (n, from) = timeout(WAIT, s.recv_from(&mut buf))
        .await
        .expect("timed out")
        .expect("recv");
    (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
}

fn request(method: &str, ruri: &str, via: &str, call_id: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: {via};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:1001@pbx.secret.example>;tag=f-{call_id}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nContact: <sip:1001@127.0.0.1:1>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A UAS answer: Vias and Record-Routes copied, To tag added.
fn answer(req: &str, code: u16) -> String {
    let mut out = format!("SIP/2.0 {code} OK\r\n");
    for line in req.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let n = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if ["via", "record-route", "from", "call-id", "cseq"].contains(&n.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        } else if n == "to" {
            out.push_str(line);
            out.push_str(";tag=uas\r\n");
        }
    }
    out + "Content-Length: 0\r\n\r\n"
}

fn first_line(m: &str) -> &str {
    m.split("\r\n").next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_both_ways_and_scanners_never_reach_the_backend() {
    let net = Net { n: 31 };
    let backend = udp(format!("{}:5080", net.ip(2))).await;
    let (_server, core) = start(&net, "");
    let phone = udp(format!("{}:5062", net.ip(3))).await;
    let scanner = udp(format!("{}:5062", net.ip(4))).await;
    let public: SocketAddr = format!("{}:5060", net.ip(1)).parse().unwrap();

    // The scanner first, then the phone: the backend's first message must
    // be the phone's, so the scanner's was dropped.
    let scan = request(
        "OPTIONS",
        &format!("sip:100@{}", net.ip(1)),
        "SIP/2.0/UDP 10.9.9.9:5060",
        "scan-1",
    )
    .replace("pbx.secret.example", "1.1.1.1");
    scanner.send_to(scan.as_bytes(), public).await.unwrap();
    let inv = request(
        "INVITE",
        "sip:1002@pbx.secret.example",
        "SIP/2.0/UDP 192.168.1.5:5062",
        "call-1",
    );
    phone.send_to(inv.as_bytes(), public).await.unwrap();
    let (got, from) = recv(&backend).await;
    assert_eq!(
        first_line(&got),
        "INVITE sip:1002@pbx.secret.example SIP/2.0"
    );
    assert_eq!(
        from,
        format!("{}:5070", net.ip(1)).parse().unwrap(),
        "sent from the internal socket"
    );
    assert!(got.contains(&format!("X-Sipwarden-Source: {}:5062", net.ip(3))));
    assert!(got.contains(&format!("received={}", net.ip(3))));

    // The backend answers; the phone gets it from the public socket.
    backend
        .send_to(answer(&got, 200).as_bytes(), from)
        .await
        .unwrap();
    let (resp, from) = recv(&phone).await;
    assert_eq!(first_line(&resp), "SIP/2.0 200 OK");
    assert_eq!(from, public);
    assert!(
        !resp.contains("branch=z9hG4bKsw"),
        "our Via is gone: {resp}"
    );
    assert_eq!(
        core.metrics().total(Reason::NoDomain, Disposition::Dropped),
        1
    );
    let mut buf = [0u8; 100];
    assert!(
        timeout(Duration::from_millis(300), scanner.recv_from(&mut buf))
            .await
            .is_err(),
        "the scanner hears nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_responses_use_the_request_connection_and_keepalives_pong() {
    let net = Net { n: 32 };
    let backend = udp(format!("{}:5080", net.ip(2))).await;
    let (_server, core) = start(&net, "");
    let mut phone = TcpStream::connect(format!("{}:5060", net.ip(1)))
        .await
        .unwrap();
    // RFC 5626 keepalive: ping, pong.
    phone.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    timeout(WAIT, phone.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");
    // Two requests in one write, the second split across writes.
    let reg = request(
        "REGISTER",
        "sip:pbx.secret.example",
        "SIP/2.0/TCP 192.168.1.5:5062",
        "reg-1",
    );
    let opt = request(
        "OPTIONS",
        "sip:1002@pbx.secret.example",
        "SIP/2.0/TCP 192.168.1.5:5062",
        "opt-1",
    );
    let both = format!("{reg}{}", &opt[..40]);
    phone.write_all(both.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    phone.write_all(&opt.as_bytes()[40..]).await.unwrap();
    let (m1, from) = recv(&backend).await;
    let (m2, _) = recv(&backend).await;
    let mut got = [first_line(&m1).to_string(), first_line(&m2).to_string()];
    got.sort();
    assert_eq!(
        got,
        [
            "OPTIONS sip:1002@pbx.secret.example SIP/2.0",
            "REGISTER sip:pbx.secret.example SIP/2.0"
        ]
    );
    // The answer to the REGISTER comes back over the phone's connection.
    let reg_fwd = if m1.starts_with("REGISTER") { &m1 } else { &m2 };
    backend
        .send_to(answer(reg_fwd, 200).as_bytes(), from)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = timeout(WAIT, phone.read(&mut buf)).await.unwrap().unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
    assert!(resp.contains("Call-ID: reg-1"));
    assert_eq!(
        core.metrics()
            .total(Reason::Keepalive, Disposition::Replied),
        1
    );
    // A delimited but unreadable message is dropped, the stream goes on.
    phone.write_all(b"NOT SIP AT ALL\r\n\r\n").await.unwrap();
    let ping = request(
        "OPTIONS",
        "sip:1002@pbx.secret.example",
        "SIP/2.0/TCP 192.168.1.5:5062",
        "opt-2",
    );
    phone.write_all(ping.as_bytes()).await.unwrap();
    let (m3, _) = recv(&backend).await;
    assert!(m3.contains("Call-ID: opt-2"));
    assert_eq!(
        core.metrics()
            .total(Reason::Malformed, Disposition::Dropped),
        1
    );
    // A broken Content-Length breaks the framing: the connection closes.
    phone
        .write_all(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: many\r\n\r\n")
        .await
        .unwrap();
    let closed = timeout(WAIT, phone.read(&mut buf)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "connection closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_requests_go_out_over_udp_and_tcp() {
    let net = Net { n: 33 };
    let asterisk = udp(format!("{}:5080", net.ip(2))).await;
    let (_server, _core) = start(&net, "");
    let internal: SocketAddr = format!("{}:5070", net.ip(1)).parse().unwrap();
    let public: SocketAddr = format!("{}:5060", net.ip(1)).parse().unwrap();
    let via = format!("SIP/2.0/UDP {}:5080", net.ip(2));

    // UDP: an OPTIONS to a phone, outbound proxy Route on top.
    let phone = udp(format!("{}:5062", net.ip(3))).await;
    let opt = request(
        "OPTIONS",
        &format!("sip:1001@{}:5062", net.ip(3)),
        &via,
        "q-1",
    )
    .replace(
        "Max-Forwards",
        &format!("Route: <sip:{internal};lr>\r\nMax-Forwards"),
    );
    asterisk.send_to(opt.as_bytes(), internal).await.unwrap();
    let (got, from) = recv(&phone).await;
    assert_eq!(from, public, "leaves from the public socket");
    assert!(!got.contains("Route:"), "our Route is popped: {got}");
    phone
        .send_to(answer(&got, 200).as_bytes(), from)
        .await
        .unwrap();
    let (resp, _) = recv(&asterisk).await;
    assert!(
        resp.starts_with("SIP/2.0 200 OK\r\n") && resp.contains("Call-ID: q-1"),
        "{resp}"
    );

    // TCP: a Request-URI with transport=tcp opens a connection; the answer
    // comes back over it and reaches Asterisk.
    let provider = TcpListener::bind(format!("{}:5090", net.ip(5)))
        .await
        .unwrap();
    let inv = request(
        "INVITE",
        &format!("sip:555@{}:5090;transport=tcp", net.ip(5)),
        &via,
        "t-1",
    );
    asterisk.send_to(inv.as_bytes(), internal).await.unwrap();
    let (mut conn, _) = timeout(WAIT, provider.accept()).await.unwrap().unwrap();
    let mut buf = vec![0u8; 8192];
    let n = timeout(WAIT, conn.read(&mut buf)).await.unwrap().unwrap();
    let got = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(got.starts_with("INVITE sip:555@"), "{got}");
    assert!(
        got.contains(&format!("Via: SIP/2.0/TCP {public};branch=z9hG4bKswo")),
        "{got}"
    );
    assert!(
        got.contains(";transport=tcp;lr;swr="),
        "Record-Route for TCP: {got}"
    );
    conn.write_all(answer(&got, 180).as_bytes()).await.unwrap();
    let (resp, _) = recv(&asterisk).await;
    assert!(
        resp.starts_with("SIP/2.0 180 OK\r\n") && resp.contains("Call-ID: t-1"),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_new_domains_and_refuses_bad_binds() {
    let net = Net { n: 34 };
    let backend = udp(format!("{}:5080", net.ip(2))).await;
    let (server, core) = start(&net, "");
    let phone = udp(format!("{}:5062", net.ip(3))).await;
    let public: SocketAddr = format!("{}:5060", net.ip(1)).parse().unwrap();
    let new_domain = request(
        "OPTIONS",
        "sip:1@new.secret.example",
        "SIP/2.0/UDP 10.0.0.1:5062",
        "n-1",
    );
    phone.send_to(new_domain.as_bytes(), public).await.unwrap();
    for _ in 0..500 {
        if core.metrics().total(Reason::NoDomain, Disposition::Dropped) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        core.metrics().total(Reason::NoDomain, Disposition::Dropped),
        1
    );

    // A config whose new listener cannot bind is refused as a whole.
    let clash = net
        .config("")
        .replace(
            "domains = [\"pbx.secret.example\"]",
            "domains = [\"pbx.secret.example\", \"new.secret.example\"]",
        )
        .replace(
            "public = [",
            &format!("public = [\"tcp:{}:1\", ", "192.0.2.1"),
        );
    let err = server
        .reload(Settings::new(
            sipwarden_core::config::parse(&clash, "t").unwrap(),
        ))
        .unwrap_err();
    assert!(
        matches!(&err, sipwarden::transport::server::ListenError::Bind { spec, .. } if spec.addr.port() == 1),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("cannot bind public socket tcp:192.0.2.1:1: "),
        "{err}"
    );
    assert!(
        !core.settings().domains.matches(b"new.secret.example"),
        "old config stays"
    );

    // A good one applies.
    let good = net.config("").replace(
        "domains = [\"pbx.secret.example\"]",
        "domains = [\"pbx.secret.example\", \"new.secret.example\"]",
    );
    server
        .reload(Settings::new(
            sipwarden_core::config::parse(&good, "t").unwrap(),
        ))
        .unwrap();
    let again = new_domain.replace("n-1", "n-2");
    phone.send_to(again.as_bytes(), public).await.unwrap();
    let (got, _) = recv(&backend).await;
    assert!(
        got.contains("Call-ID: n-2"),
        "the first send was dropped, the second admitted: {got}"
    );
    assert_eq!(
        core.metrics().total(Reason::NoDomain, Disposition::Dropped),
        1
    );
}

/// Each UDP worker remembers which socket its forwards leave from; a
/// reload that moves the internal listener must move them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_forwards_to_the_new_internal_socket() {
    let net = Net { n: 36 };
    let backend = udp(format!("{}:5080", net.ip(2))).await;
    let (server, _core) = start(&net, "");
    let phone = udp(format!("{}:5062", net.ip(3))).await;
    let public: SocketAddr = format!("{}:5060", net.ip(1)).parse().unwrap();
    let req = |cid: &str| {
        request(
            "OPTIONS",
            "sip:1@pbx.secret.example",
            "SIP/2.0/UDP 10.0.0.1:5062",
            cid,
        )
    };
    phone.send_to(req("m-1").as_bytes(), public).await.unwrap();
    let (got, from) = recv(&backend).await;
    assert!(got.contains("Call-ID: m-1"), "{got}");
    assert_eq!(from.to_string(), format!("{}:5070", net.ip(1)));

    let moved = net.config("").replace(
        &format!(
            "internal = [\"udp:{p}:5070\", \"tcp:{p}:5070\"]",
            p = net.ip(1)
        ),
        &format!(
            "internal = [\"udp:{p}:5071\", \"tcp:{p}:5071\"]",
            p = net.ip(1)
        ),
    );
    assert_ne!(moved, net.config(""));
    server
        .reload(Settings::new(
            sipwarden_core::config::parse(&moved, "t").unwrap(),
        ))
        .unwrap();
    phone.send_to(req("m-2").as_bytes(), public).await.unwrap();
    let (got, from) = recv(&backend).await;
    assert!(got.contains("Call-ID: m-2"), "{got}");
    assert_eq!(from.to_string(), format!("{}:5071", net.ip(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_over_http() {
    let net = Net { n: 35 };
    let (_server, _core) = start(&net, &format!("listen = \"{}:9099\"\n", net.ip(1)));
    let phone = udp(format!("{}:5062", net.ip(3))).await;
    let scan = request(
        "OPTIONS",
        "sip:100@1.2.3.4",
        "SIP/2.0/UDP 10.0.0.1:5062",
        "m-1",
    );
    phone
        .send_to(scan.as_bytes(), format!("{}:5060", net.ip(1)))
        .await
        .unwrap();
    let mut body = String::new();
    for _ in 0..50 {
        let mut c = TcpStream::connect(format!("{}:9099", net.ip(1)))
            .await
            .unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        body.clear();
        timeout(WAIT, c.read_to_string(&mut body))
            .await
            .unwrap()
            .unwrap();
        if body.contains("reason=\"no-domain\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
    assert!(
        body.contains("sipwarden_messages_total{side=\"public\",transport=\"udp\",reason=\"no-domain\",disposition=\"dropped\"} 1"),
        "{body}"
    );
    assert!(body.contains("sipwarden_tcp_connections"));
}

/// This process's UDP sockets bound to `local` and connected to `remote`,
/// found through its open descriptors. (`/proc/net/udp` is no good here:
/// the kernel writes it in pages and resumes each page by position, so
/// while other tests open and close sockets a read lists some twice and
/// misses others.)
fn connected_sockets(local: &str, remote: &str) -> usize {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (local, remote): (SocketAddr, SocketAddr) =
        (local.parse().unwrap(), remote.parse().unwrap());
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&fd| {
            // The descriptors belong to other threads, which may close
            // them meanwhile: each is queried through a duplicate of its
            // own, so what the number means when it is duplicated (or
            // EBADF, if nothing) is what gets queried.
            // SAFETY: F_DUPFD_CLOEXEC reads no memory of ours; on any
            // number, open or not, it makes a new descriptor or fails.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                return false;
            }
            // SAFETY: `dup` was just made by fcntl for this thread alone:
            // open, and owned by nothing else.
            let fd = unsafe { OwnedFd::from_raw_fd(dup) };
            let s = socket2::SockRef::from(&fd);
            let addr = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
            s.r#type().ok() == Some(socket2::Type::DGRAM)
                && addr(s.local_addr()) == Some(local)
                && addr(s.peer_addr()) == Some(remote)
        })
        .count()
}

/// Forwards to the backend leave from sockets connected to it (no route
/// lookup per datagram; one per worker), bound to the internal address
/// like the others; what the backend sends comes in on one of them;
/// anyone else who sends to the internal address still reaches the
/// listener's other sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_has_connected_sockets() {
    let net = Net { n: 37 };
    let backend = udp(format!("{}:5080", net.ip(2))).await;
    // Three workers: more sockets than this machine's cores, so the test
    // says the same on any machine.
    let (_server, core) = start_with(
        &net.config("")
            .replace("advertise =", "workers = 3\nadvertise ="),
    );
    let internal = format!("{}:5070", net.ip(1));
    assert_eq!(core.settings().udp_workers, 3);
    assert_eq!(
        connected_sockets(&internal, &format!("{}:5080", net.ip(2))),
        3
    );
    let phone = udp(format!("{}:5062", net.ip(3))).await;
    let public: SocketAddr = format!("{}:5060", net.ip(1)).parse().unwrap();
    invite_answered(&phone, public, &backend, &internal, "c-1").await;

    // Another sender on the internal address (not the backend's).
    let other = udp(format!("{}:5080", net.ip(6))).await;
    let opt = request(
        "OPTIONS",
        &format!("sip:1001@{}:5062", net.ip(3)),
        &format!("SIP/2.0/UDP {}:5080", net.ip(6)),
        "c-2",
    )
    .replace(
        "Max-Forwards",
        &format!("Route: <sip:{internal};lr>\r\nMax-Forwards"),
    );
    other.send_to(opt.as_bytes(), &internal).await.unwrap();
    let (got, from) = recv(&phone).await;
    assert!(got.contains("Call-ID: c-2"), "{got}");
    assert_eq!(from, public);
}

/// A reload that moves the backend connects a new socket to it and closes
/// the one connected to the old address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reconnects_to_a_moved_backend() {
    let net = Net { n: 38 };
    let internal = format!("{}:5070", net.ip(1));
    let (old, new) = (format!("{}:5080", net.ip(2)), format!("{}:5080", net.ip(7)));
    let (server, core) = start(&net, "");
    let workers = core.settings().udp_workers;
    assert_eq!(connected_sockets(&internal, &old), workers);
    let backend = udp(new.clone()).await;
    let moved = net.config("").replace(&old, &new);
    assert_ne!(moved, net.config(""));
    server
        .reload(Settings::new(
            sipwarden_core::config::parse(&moved, "t").unwrap(),
        ))
        .unwrap();
    assert_eq!(connected_sockets(&internal, &new), workers);
    // The old sockets close once their workers and every worker's send
    // picks let go of them (a receive timeout, 200 ms, at most).
    for _ in 0..250 {
        if connected_sockets(&internal, &old) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(connected_sockets(&internal, &old), 0);

    let phone = udp(format!("{}:5062", net.ip(3))).await;
    let public: SocketAddr = format!("{}:5060", net.ip(1)).parse().unwrap();
    invite_answered(&phone, public, &backend, &internal, "r-1").await;
}

/// The phone's INVITE reaches the backend from the internal address, and
/// the backend's 200 (sent back to it, so through a connected socket)
/// reaches the phone.
async fn invite_answered(
    phone: &UdpSocket,
    public: SocketAddr,
    backend: &UdpSocket,
    internal: &str,
    call_id: &str,
) {
    let inv = request(
        "INVITE",
        "sip:1@pbx.secret.example",
        "SIP/2.0/UDP 10.0.0.1:5062",
        call_id,
    );
    phone.send_to(inv.as_bytes(), public).await.unwrap();
    let (got, from) = recv(backend).await;
    assert!(got.contains(&format!("Call-ID: {call_id}")), "{got}");
    assert_eq!(from.to_string(), internal);
    backend
        .send_to(answer(&got, 200).as_bytes(), from)
        .await
        .unwrap();
    let (resp, _) = recv(phone).await;
    assert!(
        resp.starts_with("SIP/2.0 200 OK\r\n") && resp.contains(&format!("Call-ID: {call_id}")),
        "{resp}"
    );
}

/// What the transport cannot frame or receive whole goes through the core
/// like every other message: oversized datagrams (cut by the socket) and
/// TCP streams with a broken Content-Length are counted as rejects of
/// their source and ban it at `ban.after_rejects`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_datagrams_and_framing_errors_count_toward_a_ban() {
    let net = Net { n: 40 };
    let backend = udp(format!("{}:5080", net.ip(2))).await;
    let (_server, core) = start(
        &net,
        "[limits]\nmax_message = 2048\n[ban]\nafter_rejects = 3\n",
    );
    let public: SocketAddr = format!("{}:5060", net.ip(1)).parse().unwrap();
    let call = |call_id: &str| {
        request(
            "INVITE",
            "sip:1002@pbx.secret.example",
            "SIP/2.0/UDP 192.168.1.5:5062",
            call_id,
        )
    };
    let forwarded = |what: &'static str| {
        let backend = &backend;
        async move {
            let (got, _) = recv(backend).await;
            assert!(got.contains(&format!("Call-ID: {what}")), "{got}");
        }
    };

    // A flood of datagrams larger than limits.max_message.
    let flooder = udp(format!("{}:5062", net.ip(3))).await;
    flooder
        .send_to(call("before").as_bytes(), public)
        .await
        .unwrap();
    forwarded("before").await;
    let huge = vec![b'x'; 5000];
    for _ in 0..3 {
        flooder.send_to(&huge, public).await.unwrap();
    }
    flooder
        .send_to(call("after").as_bytes(), public)
        .await
        .unwrap();
    // The INVITE after the flood is dropped: its source is banned.
    let mut n = 0;
    while core.metrics().total(Reason::Banned, Disposition::Dropped) == 0 && n < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        n += 1;
    }
    assert_eq!(
        core.metrics().total(Reason::TooLarge, Disposition::Dropped),
        3
    );
    assert_eq!(
        core.metrics().total(Reason::Banned, Disposition::Dropped),
        1,
        "three oversized datagrams ban their source"
    );

    // Three TCP connections whose framing breaks, from another address.
    let breaker: SocketAddr = format!("{}:0", net.ip(4)).parse().unwrap();
    for _ in 0..3 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(breaker).unwrap();
        let mut c = s.connect(public).await.unwrap();
        c.write_all(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: many\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let closed = timeout(WAIT, c.read(&mut buf)).await.unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "connection closed");
    }
    assert_eq!(
        core.metrics()
            .total(Reason::Malformed, Disposition::Dropped),
        3
    );
    let other = udp(format!("{}:5062", net.ip(4))).await;
    other
        .send_to(call("late").as_bytes(), public)
        .await
        .unwrap();
    let mut n = 0;
    while core.metrics().total(Reason::Banned, Disposition::Dropped) < 2 && n < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        n += 1;
    }
    assert_eq!(
        core.metrics().total(Reason::Banned, Disposition::Dropped),
        2,
        "three framing errors ban their source"
    );
    let mut buf = [0u8; 100];
    assert!(
        timeout(Duration::from_millis(300), backend.recv_from(&mut buf))
            .await
            .is_err(),
        "nothing from a banned source reached the backend"
    );
}
