//! The Prometheus endpoint: `GET /metrics` over plain HTTP/1.x, nothing
//! else. Small enough not to need an HTTP crate.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::egress::Egress;
use sipwarden_core::metrics::Gauge;

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, eg: Arc<Egress>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let eg = eg.clone();
        tokio::spawn(async move {
            let mut req = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut req)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let line = req[..n]
                .split(|&c| c == b'\r' || c == b'\n')
                .next()
                .unwrap_or_default();
            let (status, ctype, body) =
                if line.starts_with(b"GET /metrics ") || line == b"GET /metrics" {
                    ("200 OK", "text/plain; version=0.0.4", render(&eg))
                } else {
                    (
                        "404 Not Found",
                        "text/plain",
                        "not found: try /metrics\n".to_string(),
                    )
                };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// The metrics text with the gauges the transport knows.
pub fn render(eg: &Egress) -> String {
    let mut gauges = vec![Gauge {
        name: "sipwarden_tcp_connections",
        help: "Open TCP connections, both sides",
        value: eg.tcp.len() as u64,
    }];
    let now = super::now_ms();
    gauges.extend(eg.core.gauges(now));
    let mut text = eg.core.metrics().render(&gauges);
    text.push_str(&sipwarden_core::control::trunk_metrics(&eg.core, now));
    text
}
