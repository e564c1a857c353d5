//! swws: SIP over WebSocket load for the benchmark (bench/ws.sh).
//!
//! `--mode idle`: opens `--conns` WebSocket (or, with `--tls-name`, secure
//! WebSocket) connections, each upgraded with subprotocol `sip`, holds them
//! `--hold` seconds (the script samples the server's memory meanwhile) and
//! reports how many were up. `--mode load`: over `--conns` connections, each
//! keeps `--window` OPTIONS in flight toward the secret domain for
//! `--duration` seconds and counts the 200s that come back (each is two SIP
//! messages through the proxy: the request forwarded, the answer relayed).
//! JSON on stdout. Only loopback targets are accepted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use swbench::net::ensure_loopback;

#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The WebSocket listener (loopback only).
    #[arg(long)]
    target: SocketAddr,
    /// `idle` or `load`.
    #[arg(long, default_value = "load")]
    mode: String,
    /// Connections.
    #[arg(long, default_value_t = 10)]
    conns: usize,
    /// Requests in flight per connection (load).
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Seconds of load (at most 600).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds the idle connections are held (at most 600).
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// The request path.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// The Origin header.
    #[arg(long, default_value = "http://127.0.0.1")]
    origin: String,
    /// The SIP domain of the requests.
    #[arg(long, default_value = "pbx.secret.example")]
    domain: String,
    /// wss: the TLS server name, verified against `--ca`.
    #[arg(long)]
    tls_name: Option<String>,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Source addresses 127.0.0.2 .. 127.0.0.(N+1), used in turn (more than
    /// one when the connections outnumber one address's ephemeral ports).
    #[arg(long, default_value_t = 1)]
    sources: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256)]
    parallel: usize,
}

type Conn = WebSocketStream<Box<dyn Io>>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn tls_connector(ca: &std::path::Path) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

async fn open(
    args: &Args,
    tls: Option<&tokio_rustls::TlsConnector>,
    i: usize,
) -> Result<Conn, String> {
    let src = std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        0,
        0,
        2 + (i % args.sources.clamp(1, 250)) as u8,
    ));
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(src, 0))
        .map_err(|e| e.to_string())?;
    let tcp: TcpStream = sock.connect(args.target).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let (io, scheme, host): (Box<dyn Io>, &str, String) = match (tls, &args.tls_name) {
        (Some(c), Some(name)) => {
            let sn =
                rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| e.to_string())?;
            let s = c.connect(sn, tcp).await.map_err(|e| format!("TLS: {e}"))?;
            (Box::new(s), "wss", name.clone())
        }
        _ => (Box::new(tcp), "ws", args.target.ip().to_string()),
    };
    let url = format!("{scheme}://{host}:{}{}", args.target.port(), args.path);
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    h.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    h.insert(
        "Origin",
        HeaderValue::from_str(&args.origin).map_err(|e| e.to_string())?,
    );
    let (ws, _) = tokio_tungstenite::client_async(req, io)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

/// Opens `n` connections, `parallel` at a time.
async fn open_all(
    args: Arc<Args>,
    tls: Option<tokio_rustls::TlsConnector>,
) -> (Vec<Conn>, Vec<String>) {
    let mut conns = Vec::with_capacity(args.conns);
    let mut errors = Vec::new();
    let mut i = 0;
    while i < args.conns {
        let batch: Vec<_> = (i..(i + args.parallel).min(args.conns))
            .map(|k| {
                let (a, t) = (args.clone(), tls.clone());
                tokio::spawn(async move { open(&a, t.as_ref(), k).await })
            })
            .collect();
        i += batch.len();
        for h in batch {
            match h.await {
                Ok(Ok(c)) => conns.push(c),
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    (conns, errors)
}

fn options(domain: &str, conn: usize, seq: u64) -> String {
    format!(
        "OPTIONS sip:bench@{domain} SIP/2.0\r\n\
         Via: SIP/2.0/WS swws{conn}.invalid;branch=z9hG4bKswws{conn}x{seq}\r\n\
         Max-Forwards: 70\r\nTo: <sip:bench@{domain}>\r\n\
         From: <sip:swws{conn}@{domain}>;tag=t{conn}\r\nCall-ID: swws-{conn}-{seq}\r\n\
         CSeq: {seq} OPTIONS\r\nUser-Agent: swws\r\nContent-Length: 0\r\n\r\n"
    )
}

/// One connection under load: `window` OPTIONS in flight until `until`.
async fn drive(mut ws: Conn, conn: usize, args: Arc<Args>, until: Instant, done: Arc<AtomicU64>) {
    let mut seq = 0u64;
    for _ in 0..args.window {
        seq += 1;
        if ws
            .send(Message::text(options(&args.domain, conn, seq)))
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.starts_with("SIP/2.0 200") => {
                done.fetch_add(1, Relaxed);
                seq += 1;
                if ws
                    .send(Message::text(options(&args.domain, conn, seq)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    let _ = ws.close(None).await;
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    ensure_loopback(&args.target)?;
    if !(0.0..=600.0).contains(&args.duration) || !(0.0..=600.0).contains(&args.hold) {
        return Err("--duration and --hold: at most 600 s".into());
    }
    let tls = match (&args.tls_name, &args.ca) {
        (Some(_), Some(ca)) => Some(tls_connector(ca)?),
        (Some(_), None) => return Err("--tls-name needs --ca".into()),
        _ => None,
    };
    let args = Arc::new(args);
    let t0 = Instant::now();
    let (conns, errors) = open_all(args.clone(), tls).await;
    let open_s = t0.elapsed().as_secs_f64();
    let up = conns.len();
    let first_error = errors.first().cloned();
    match args.mode.as_str() {
        "idle" => {
            println!("{}", json!({"kind": "ws-idle-up", "up": up}));
            tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
            Ok(
                json!({"kind": "ws-idle", "conns": args.conns, "up": up, "errors": errors.len(),
                      "first_error": first_error, "open_s": open_s}),
            )
        }
        "load" => {
            let done = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let until = start + Duration::from_secs_f64(args.duration);
            let tasks: Vec<_> = conns
                .into_iter()
                .enumerate()
                .map(|(i, ws)| tokio::spawn(drive(ws, i, args.clone(), until, done.clone())))
                .collect();
            for t in tasks {
                let _ = t.await;
            }
            let secs = start.elapsed().as_secs_f64();
            let n = done.load(Relaxed);
            Ok(
                json!({"kind": "ws-load", "conns": up, "window": args.window, "errors": errors.len(),
                      "first_error": first_error, "answered": n, "seconds": secs,
                      "round_trips_per_s": n as f64 / secs,
                      "sip_messages_per_s": 2.0 * n as f64 / secs}),
            )
        }
        m => Err(format!("--mode {m}: idle or load")),
    }
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("swws: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("swws: {e}");
            std::process::exit(1);
        }
    }
}
