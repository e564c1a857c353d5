//! The TLS benchmark's tables (bench/tls.sh), from its JSON lines.
//!
//! Each `{"kind":"tls", ...}` line is one measurement: the system, the
//! certificate key type, the scenario, the load tool's report (swtls), the
//! sink's (forward, latency) and /proc samples of the system under test
//! before and after. Every figure is derived here, so the raw lines stay
//! the record and the table can be re-rendered from them.

use std::collections::BTreeMap;

use serde_json::{json, Value};

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |cur, k| cur.get(k))?.as_f64()
}

/// CPU of the system under test over the measurement, in microseconds.
fn cpu_us(m: &Value) -> Option<f64> {
    let d = num(m, &["after", "cpu_us"])? - num(m, &["before", "cpu_us"])?;
    (d >= 0.0).then_some(d)
}

/// Per (system, cert): what the run measured.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct Figures {
    /// Full handshakes per CPU-second of the system.
    pub hs_per_cpu_s: Option<f64>,
    /// Full handshakes per wall second (how fast the load made them).
    pub hs_per_s: Option<f64>,
    /// CPU microseconds per wrong-SNI / no-SNI ClientHello.
    pub reject_cpu_us: Option<f64>,
    /// Of those hellos: closed with no byte from the server, and completed handshakes.
    pub reject_silent: Option<f64>,
    /// Completed handshakes among the reject attempts.
    pub reject_completed: Option<f64>,
    /// Reject attempts.
    pub reject_attempts: Option<f64>,
    /// CPU microseconds per bare TCP connection (no TLS byte): the floor under a rejected hello.
    pub connect_cpu_us: Option<f64>,
    /// Bytes of PSS per idle connection, and the connections held.
    pub idle_pss_bytes: Option<f64>,
    /// Bytes of RSS (summed over processes) per idle connection.
    pub idle_rss_bytes: Option<f64>,
    /// Connections up when memory was sampled.
    pub idle_up: Option<f64>,
    /// Forwarded msgs/s at the sink, as fast as possible.
    pub fwd_rate: Option<f64>,
    /// CPU microseconds per forwarded message.
    pub fwd_cpu_us: Option<f64>,
    /// Offered rate of the latency run and its one-way p50 / p99 (µs).
    pub lat: Option<(f64, f64, f64)>,
}

impl Figures {
    /// CPU µs of one full handshake.
    pub fn hs_cpu_us(&self) -> Option<f64> {
        self.hs_per_cpu_s.filter(|&r| r > 0.0).map(|r| 1e6 / r)
    }
}

/// Folds one measurement line into the figures of its (system, cert, transport).
fn fold(fig: &mut Figures, m: &Value) {
    let scenario = m["scenario"].as_str().unwrap_or("");
    let cpu = cpu_us(m);
    match scenario {
        "handshake" => {
            let done = num(m, &["load", "outcomes", "completed"]);
            if let (Some(d), Some(c)) = (done, cpu) {
                if c > 0.0 {
                    fig.hs_per_cpu_s = Some(d / (c / 1e6));
                }
            }
            fig.hs_per_s = num(m, &["load", "completed_per_s"]);
        }
        "reject" => {
            let attempts = num(m, &["load", "attempts"]);
            if let (Some(a), Some(c)) = (attempts, cpu) {
                if a > 0.0 {
                    fig.reject_cpu_us = Some(c / a);
                }
            }
            fig.reject_attempts = attempts;
            fig.reject_silent = num(m, &["load", "outcomes", "closed_silently"]);
            fig.reject_completed = num(m, &["load", "outcomes", "completed"]);
        }
        "connect" => {
            if let (Some(a), Some(c)) = (num(m, &["load", "attempts"]), cpu) {
                if a > 0.0 {
                    fig.connect_cpu_us = Some(c / a);
                }
            }
        }
        "idle" => {
            let up = num(m, &["ready", "opened"]).filter(|&u| u > 0.0);
            let per = |key: &str| {
                let d = num(m, &["after", key])? - num(m, &["before", key])?;
                Some(d * 1024.0 / up?)
            };
            fig.idle_pss_bytes = per("pss_kb_sum");
            fig.idle_rss_bytes = per("rss_kb_sum");
            fig.idle_up = up;
        }
        "forward" => {
            let got = num(m, &["sink", "received"]);
            let secs = num(m, &["load", "duration_s"]);
            if let (Some(g), Some(s)) = (got, secs) {
                if s > 0.0 {
                    fig.fwd_rate = Some(g / s);
                }
                if g > 0.0 {
                    fig.fwd_cpu_us = cpu.map(|c| c / g);
                }
            }
        }
        "latency" => {
            let rate = num(m, &["rate"]).unwrap_or(0.0);
            if let (Some(p50), Some(p99)) = (
                num(m, &["sink", "latency_us", "p50"]),
                num(m, &["sink", "latency_us", "p99"]),
            ) {
                fig.lat = Some((rate, p50, p99));
            }
        }
        _ => {}
    }
}

/// Key of a row: system label, certificate, transport.
type Row = (String, String, String);

/// Figures per row, in the order rows first appear.
pub fn figures(input: &str) -> Vec<(Row, Figures)> {
    let mut order: Vec<Row> = Vec::new();
    let mut by: BTreeMap<Row, Figures> = BTreeMap::new();
    for line in input.lines() {
        let Ok(m) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if m["kind"] != "tls" {
            continue;
        }
        let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
        let row = (s("label"), s("cert"), s("transport"));
        if !by.contains_key(&row) {
            order.push(row.clone());
        }
        fold(by.entry(row).or_default(), &m);
    }
    order
        .into_iter()
        .map(|r| {
            let f = by.get(&r).cloned().unwrap_or_default();
            (r, f)
        })
        .collect()
}

fn fmt(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "n/a".into(),
    }
}

fn kib(x: Option<f64>) -> String {
    fmt(x.map(|b| b / 1024.0), 1)
}

/// The markdown tables and a JSON summary line.
pub fn render(input: &str) -> (String, Value) {
    let rows = figures(input);
    let mut md = String::new();
    md.push_str("| system | certificate | full handshakes / CPU-s | CPU µs / handshake | handshakes/s (wall) | CPU µs / rejected hello (wrong or no SNI) | rejected / handshake | hellos closed without a byte | CPU µs / bare TCP connection |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let mut summary = Vec::new();
    for ((label, cert, transport), f) in &rows {
        if transport != "tls" || f.hs_per_cpu_s.is_none() && f.reject_cpu_us.is_none() {
            continue;
        }
        let ratio = match (f.reject_cpu_us, f.hs_cpu_us()) {
            (Some(r), Some(h)) if h > 0.0 => Some(r / h),
            _ => None,
        };
        let silent = match (f.reject_silent, f.reject_attempts) {
            (Some(s), Some(a)) if a > 0.0 => format!(
                "{:.0} of {:.0} ({:.1}%), {:.0} completed",
                s,
                a,
                100.0 * s / a,
                f.reject_completed.unwrap_or(0.0)
            ),
            _ => "n/a".into(),
        };
        md.push_str(&format!(
            "| {label} | {cert} | {} | {} | {} | {} | {} | {silent} | {} |\n",
            fmt(f.hs_per_cpu_s, 0),
            fmt(f.hs_cpu_us(), 0),
            fmt(f.hs_per_s, 0),
            fmt(f.reject_cpu_us, 1),
            ratio
                .map(|r| format!("1/{:.1}", 1.0 / r))
                .unwrap_or("n/a".into()),
            fmt(f.connect_cpu_us, 1),
        ));
        summary.push(
            json!({"system": label, "cert": cert, "transport": transport,
            "handshakes_per_cpu_s": f.hs_per_cpu_s, "handshakes_per_s": f.hs_per_s,
            "cpu_us_per_handshake": f.hs_cpu_us(), "cpu_us_per_rejected_hello": f.reject_cpu_us,
            "rejected_over_handshake": ratio, "reject_closed_silently": f.reject_silent,
            "reject_completed": f.reject_completed, "reject_attempts": f.reject_attempts,
            "cpu_us_per_bare_tcp_connection": f.connect_cpu_us}),
        );
    }
    md.push('\n');
    md.push_str("| system | certificate | transport | KiB per idle connection, PSS (RSS summed) | connections up | forwarded msgs/s, as fast as possible | CPU µs / forwarded msg | one-way latency p50 / p99 µs (at msgs/s) |\n");
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    for ((label, cert, transport), f) in &rows {
        if f.idle_up.is_none() && f.fwd_rate.is_none() && f.lat.is_none() {
            continue;
        }
        let idle = if f.idle_up.is_some() {
            format!("{} ({})", kib(f.idle_pss_bytes), kib(f.idle_rss_bytes))
        } else {
            "n/a".into()
        };
        let lat = f
            .lat
            .map(|(r, a, b)| format!("{a:.0} / {b:.0} (at {r:.0})"))
            .unwrap_or("n/a".into());
        md.push_str(&format!(
            "| {label} | {cert} | {transport} | {idle} | {} | {} | {} | {lat} |\n",
            fmt(f.idle_up, 0),
            fmt(f.fwd_rate, 0),
            fmt(f.fwd_cpu_us, 2),
        ));
        summary.push(json!({"system": label, "cert": cert, "transport": transport,
            "idle_pss_bytes_per_conn": f.idle_pss_bytes, "idle_rss_bytes_per_conn": f.idle_rss_bytes,
            "idle_connections_up": f.idle_up, "forward_msgs_per_s": f.fwd_rate,
            "cpu_us_per_forwarded_msg": f.fwd_cpu_us,
            "latency_rate": f.lat.map(|l| l.0), "latency_p50_us": f.lat.map(|l| l.1),
            "latency_p99_us": f.lat.map(|l| l.2)}));
    }
    (md, json!({"kind": "tls_summary", "rows": summary}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(scenario: &str, cert: &str, transport: &str, extra: Value) -> String {
        let mut v = json!({"kind": "tls", "label": "sw", "cert": cert,
            "transport": transport, "scenario": scenario});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v.to_string()
    }

    #[test]
    fn figures_from_lines() {
        let input = [
            "not json".to_string(),
            r#"{"kind":"env"}"#.to_string(),
            line(
                "handshake",
                "ecdsa",
                "tls",
                json!({
                "load": {"outcomes": {"completed": 2000}, "completed_per_s": 400.0},
                "before": {"cpu_us": 1_000_000}, "after": {"cpu_us": 2_000_000}}),
            ),
            line(
                "reject",
                "ecdsa",
                "tls",
                json!({
                "load": {"attempts": 10000, "outcomes": {"closed_silently": 10000, "completed": 0}},
                "before": {"cpu_us": 0}, "after": {"cpu_us": 200_000}}),
            ),
            line(
                "connect",
                "ecdsa",
                "tls",
                json!({
                "load": {"attempts": 1000},
                "before": {"cpu_us": 0}, "after": {"cpu_us": 15_000}}),
            ),
            line(
                "idle",
                "ecdsa",
                "tls",
                json!({
                "ready": {"opened": 10000},
                "before": {"pss_kb_sum": 10_000, "rss_kb_sum": 12_000},
                "after": {"pss_kb_sum": 50_000, "rss_kb_sum": 62_000}}),
            ),
            line(
                "forward",
                "ecdsa",
                "tls",
                json!({
                "load": {"duration_s": 2.0}, "sink": {"received": 100_000},
                "before": {"cpu_us": 0}, "after": {"cpu_us": 1_000_000}}),
            ),
            line(
                "latency",
                "ecdsa",
                "tls",
                json!({"rate": 5000,
                "sink": {"latency_us": {"p50": 80, "p99": 300}}}),
            ),
            line(
                "latency",
                "ecdsa",
                "tcp",
                json!({"rate": 5000,
                "sink": {"latency_us": {"p50": 60, "p99": 200}}}),
            ),
        ]
        .join("\n");
        let rows = figures(&input);
        assert_eq!(rows.len(), 2);
        let (row, f) = &rows[0];
        assert_eq!(row.2, "tls");
        assert_eq!(f.hs_per_cpu_s, Some(2000.0));
        assert_eq!(f.hs_cpu_us(), Some(500.0));
        assert_eq!(f.reject_cpu_us, Some(20.0));
        assert_eq!(f.connect_cpu_us, Some(15.0));
        assert_eq!(f.idle_pss_bytes, Some(4096.0));
        assert_eq!(f.idle_rss_bytes, Some(5120.0));
        assert_eq!(f.fwd_rate, Some(50_000.0));
        assert_eq!(f.fwd_cpu_us, Some(10.0));
        assert_eq!(f.lat, Some((5000.0, 80.0, 300.0)));
        assert_eq!(rows[1].1.lat, Some((5000.0, 60.0, 200.0)));
        let (md, summary) = render(&input);
        assert!(md.contains("| sw | ecdsa | 2000 | 500 | 400 | 20.0 | 1/25.0 | 10000 of 10000 (100.0%), 0 completed | 15.0 |"), "{md}");
        assert!(
            md.contains(
                "| sw | ecdsa | tls | 4.0 (5.0) | 10000 | 50000 | 10.00 | 80 / 300 (at 5000) |"
            ),
            "{md}"
        );
        assert_eq!(summary["rows"][0]["rejected_over_handshake"], 0.04);
    }

    #[test]
    fn a_counter_that_went_back_gives_no_figure() {
        let input = line(
            "handshake",
            "rsa",
            "tls",
            json!({
            "load": {"outcomes": {"completed": 10}},
            "before": {"cpu_us": 5}, "after": {"cpu_us": 1}}),
        );
        assert_eq!(figures(&input)[0].1.hs_per_cpu_s, None);
    }
}
