//! The benchmark table: medians (min-max) per system, then the ratios.
//!
//! run.sh appends one JSON line per event to results.jsonl: `env` (machine
//! and command), `system` (one per system under test, with its status) and
//! `run` (one measurement: loadgen report, sink report, /proc samples of the
//! system under test before and after). Everything derived (messages
//! handled, CPU per message) is computed here, in one place.

use serde_json::Value;
use std::fmt::Write;

/// Systems the ratios are taken against.
const BASELINE_KAMAILIO: &str = "kamailio-tlsf";
const BASELINE_RAW: &str = "raw-mmsg";
const SUBJECT: &str = "sipwarden";

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |cur, k| cur.get(k))?.as_f64()
}

fn delta(run: &Value, key: &str) -> Option<f64> {
    Some(f(run, &["after", key])? - f(run, &["before", key])?)
}

/// Messages the system under test itself handled in a flood run:
/// sent minus what the kernel dropped at its full socket buffer.
fn flood_handled(run: &Value) -> Option<f64> {
    let sent = f(run, &["load", "sent"])?;
    let drops = delta(run, "udp_drops").unwrap_or(0.0);
    Some((sent - drops).max(0.0))
}

/// Messages that reached the sink, per second of sink activity.
fn forwarded_rate(run: &Value) -> Option<f64> {
    let n = f(run, &["sink", "received"])?;
    let active = f(run, &["sink", "active_s"]).filter(|&a| a > 0.5);
    let secs = active.or_else(|| f(run, &["load", "duration_s"]))?;
    (secs > 0.0).then(|| n / secs)
}

/// One number of a run for a column, or None when it does not apply.
fn metric(run: &Value, col: Col) -> Option<f64> {
    let scenario = run.get("scenario")?.as_str()?;
    let cpu = delta(run, "cpu_us");
    match (col, scenario) {
        (Col::FwdRate, "forward") | (Col::TcpRate, "tcp") => forwarded_rate(run),
        (Col::FwdCpu, "forward") | (Col::TcpCpu, "tcp") => {
            let (n, c) = (f(run, &["sink", "received"])?, cpu?);
            (n > 0.0).then(|| c / n)
        }
        (Col::FloodCpu, "flood") => {
            let (n, c) = (flood_handled(run)?, cpu?);
            (n > 0.0).then(|| c / n)
        }
        (Col::FloodRate, "flood") => Some(flood_handled(run)? / f(run, &["load", "duration_s"])?),
        (Col::FloodShare, "flood") => {
            let sent = f(run, &["load", "sent"])?;
            (sent > 0.0).then(|| flood_handled(run).unwrap_or(0.0) / sent)
        }
        (Col::LatP50, "latency") => f(run, &["sink", "latency_us", "p50"]),
        (Col::LatP99, "latency") => f(run, &["sink", "latency_us", "p99"]),
        (Col::LatP999, "latency") => f(run, &["sink", "latency_us", "p999"]),
        (Col::MixSuccess, "mix") => f(run, &["load", "exchanges", "success_rate"]),
        (Col::MixP50, "mix") => f(run, &["load", "exchanges", "latency_us", "p50"]),
        (Col::MixP99, "mix") => f(run, &["load", "exchanges", "latency_us", "p99"]),
        (Col::MixP999, "mix") => f(run, &["load", "exchanges", "latency_us", "p999"]),
        (Col::Rss, _) => f(run, &["after", "hwm_kb_sum"]),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    FwdRate,
    FwdCpu,
    FloodCpu,
    FloodRate,
    FloodShare,
    TcpRate,
    TcpCpu,
    LatP50,
    LatP99,
    LatP999,
    MixSuccess,
    MixP50,
    MixP99,
    MixP999,
    Rss,
}

/// Median, min, max.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Spread {
    med: f64,
    min: f64,
    max: f64,
}

fn spread(mut v: Vec<f64>) -> Option<Spread> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        med,
        min: v[0],
        max: v[n - 1],
    })
}

fn kilo(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.1}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn with_range(s: Option<Spread>, fmt: fn(f64) -> String) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if s.min == s.max => fmt(s.med),
        Some(s) => format!("{} ({}–{})", fmt(s.med), fmt(s.min), fmt(s.max)),
    }
}

/// Flood msgs/s handled, with the median share of what the generators
/// sent that the system handled rather than lost at a full socket buffer
/// (100% = it dropped everything they could send).
fn flood_rate(s: &System) -> String {
    let rate = with_range(s.spread(Col::FloodRate), kilo);
    match s.spread(Col::FloodShare) {
        Some(sh) if rate != "n/a" => format!("{rate}, {:.1}%", sh.med * 100.0),
        _ => rate,
    }
}

struct System {
    id: String,
    label: String,
    status: String,
    runs: Vec<Value>,
}

impl System {
    fn spread(&self, col: Col) -> Option<Spread> {
        spread(self.runs.iter().filter_map(|r| metric(r, col)).collect())
    }

    fn triple(&self, a: Col, b: Col, c: Col) -> String {
        match (self.spread(a), self.spread(b), self.spread(c)) {
            (Some(a), Some(b), Some(c)) => {
                format!("{} / {} / {}", num(a.med), num(b.med), num(c.med))
            }
            _ => "n/a".into(),
        }
    }
}

fn parse(input: &str) -> (Option<Value>, Vec<System>) {
    let mut env = None;
    let mut systems: Vec<System> = Vec::new();
    for line in input.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let id = v
            .get("system")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match v.get("kind").and_then(Value::as_str) {
            Some("env") => env = Some(v),
            Some("system") => {
                let label = v
                    .get("label")
                    .and_then(Value::as_str)
                    .unwrap_or(&id)
                    .to_string();
                let status = v
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("ok")
                    .to_string();
                match systems.iter_mut().find(|s| s.id == id) {
                    Some(s) => s.status = status,
                    None => systems.push(System {
                        id,
                        label,
                        status,
                        runs: Vec::new(),
                    }),
                }
            }
            Some("run") => {
                if let Some(s) = systems.iter_mut().find(|s| s.id == id) {
                    s.runs.push(v);
                }
            }
            _ => {}
        }
    }
    (env, systems)
}

fn ratio(a: Option<Spread>, b: Option<Spread>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.med > 0.0 => format!("{:.2}x", a.med / b.med),
        _ => "n/a".into(),
    }
}

/// Warnings worth a line under the table: lost answers at the sink, send errors.
fn notes(systems: &[System]) -> Vec<String> {
    let mut out = Vec::new();
    for s in systems {
        for r in &s.runs {
            let scen = r.get("scenario").and_then(Value::as_str).unwrap_or("?");
            let run = r.get("run").and_then(Value::as_u64).unwrap_or(0);
            if let Some(d) = f(r, &["sink", "kernel_drops"]).filter(|&d| d > 0.0) {
                out.push(format!(
                    "{} {scen} run {run}: the sink's socket dropped {d:.0} datagrams (sink too slow; rate understated)",
                    s.id
                ));
            }
            if scen == "flood" {
                if let Some(n) = f(r, &["sink", "received"]).filter(|&n| n > 0.0) {
                    out.push(format!(
                        "{} flood run {run}: {n:.0} scanner messages reached the backend",
                        s.id
                    ));
                }
            }
            if let Some(e) = f(r, &["load", "send_errors"]).filter(|&e| e > 0.0) {
                out.push(format!(
                    "{} {scen} run {run}: {e:.0} loadgen send errors",
                    s.id
                ));
            }
        }
    }
    out
}

/// Median forward msgs/s of `system` in the results so far.
pub fn forward_ceiling(input: &str, system: &str) -> Option<f64> {
    let (_, systems) = parse(input);
    systems
        .iter()
        .find(|s| s.id == system)?
        .spread(Col::FwdRate)
        .map(|s| s.med)
}

/// Where core 0's time went in a system's runs, as medians of shares of
/// the core's busy time: the system under test (utime+stime), softirq
/// (charged to no process), and other processes (noise on a shared machine).
fn core_note(s: &System) -> Option<String> {
    let mut sut = Vec::new();
    let mut soft = Vec::new();
    let mut other = Vec::new();
    let mut soft_per_msg = Vec::new();
    for r in &s.runs {
        let scen = r.get("scenario").and_then(Value::as_str).unwrap_or("");
        let (Some(busy), Some(cpu), Some(si)) = (
            delta(r, "core_busy_us"),
            delta(r, "cpu_us"),
            delta(r, "core_softirq_us"),
        ) else {
            continue;
        };
        // Wall time between the two samples (load plus the drain wait).
        let wall = delta(r, "mono_us")
            .or_else(|| f(r, &["load", "duration_s"]).map(|d| d * 1e6))
            .unwrap_or(0.0);
        if wall <= 0.0 {
            continue;
        }
        let irq = delta(r, "core_irq_us").unwrap_or(0.0);
        sut.push(cpu / wall);
        soft.push((si + irq) / wall);
        other.push(((busy - cpu - si - irq) / wall).max(0.0));
        if scen == "forward" {
            if let Some(n) = f(r, &["sink", "received"]).filter(|&n| n > 0.0) {
                soft_per_msg.push((si + irq) / n);
            }
        }
    }
    let pct = |v: Vec<f64>| spread(v).map(|s| format!("{:.0}%", s.med * 100.0));
    let hogs = top_others(s);
    let (a, b, c) = (pct(sut)?, pct(soft)?, pct(other)?);
    let extra = spread(soft_per_msg)
        .map(|s| {
            format!(
                "; softirq per forwarded msg {} µs (not in the CPU columns)",
                num(s.med)
            )
        })
        .unwrap_or_default();
    Some(format!(
        "{}: core 0 busy, median of runs: {a} the system under test, {b} irq+softirq, {c} other processes{extra}{hogs}",
        s.id
    ))
}

/// The processes (outside the system under test) that used the most CPU
/// during a system's runs, summed over its runs, any core.
fn top_others(s: &System) -> String {
    let mut total: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    let mut wall = 0.0;
    for r in &s.runs {
        let (Some(Value::Object(before)), Some(Value::Object(after))) = (
            r.get("before").and_then(|b| b.get("others_cpu_us")),
            r.get("after").and_then(|a| a.get("others_cpu_us")),
        ) else {
            continue;
        };
        wall += delta(r, "mono_us").unwrap_or(0.0);
        for (k, v) in after {
            let d =
                v.as_f64().unwrap_or(0.0) - before.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            // Drop the pid: the same program under new pids adds up.
            let name = k.split_once(' ').map(|x| x.1).unwrap_or(k).to_string();
            *total.entry(name).or_default() += d;
        }
    }
    if wall <= 0.0 {
        return String::new();
    }
    let mut v: Vec<(String, f64)> = total
        .into_iter()
        .filter(|(_, d)| *d / wall >= 0.02)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(4);
    if v.is_empty() {
        return String::new();
    }
    let list: Vec<String> = v
        .iter()
        .map(|(n, d)| format!("{n} {:.0}%", d / wall * 100.0))
        .collect();
    format!(
        "; busiest other processes (any core, % of one core): {}",
        list.join(", ")
    )
}

/// Renders the whole report.
pub fn render(input: &str) -> String {
    let (env, systems) = parse(input);
    let mut o = String::new();
    if let Some(e) = &env {
        let g = |k: &str| {
            e.get(k)
                .map(|v| v.to_string().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        // Results written before the forward load could be paced have none.
        let forward_rate = Some(g("forward_rate"))
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| "0".into());
        let _ = writeln!(
            o,
            "Date: {} · nproc: {} · kernel: {} · {} runs x {} s per scenario · receive buffer {} bytes · nice {} · SCHED_FIFO for latency runs: {} · flood offered {} msgs/s, forward offered {} msgs/s (0 = max)\n\nCommand: `{}`\n",
            g("date"), g("nproc"), g("kernel"), g("runs"), g("duration"), g("rcvbuf"), g("nice"),
            if g("fifo") == "1" { "yes" } else { "no" }, g("flood_rate"), forward_rate, g("command")
        );
    }
    o.push_str("| system | forward msgs/s | CPU µs / forwarded msg | flood CPU µs / dropped msg | flood msgs/s handled (share of sent) | TCP forward msgs/s | CPU µs / TCP msg | one-way latency at ½ ceiling p50 / p99 / p99.9 µs | mix: calls OK | mix: call latency p50 / p99 / p99.9 µs | peak RSS MiB |\n");
    o.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for s in &systems {
        if s.status != "ok" {
            let _ = writeln!(o, "| {} | {} | | | | | | | | | |", s.label, s.status);
            continue;
        }
        let mix = s
            .spread(Col::MixSuccess)
            .map(|m| format!("{:.2}%", m.med * 100.0))
            .unwrap_or_else(|| "n/a".into());
        let rss = s
            .spread(Col::Rss)
            .map(|r| format!("{:.1}", r.max / 1024.0))
            .unwrap_or_else(|| "n/a".into());
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.label,
            with_range(s.spread(Col::FwdRate), kilo),
            with_range(s.spread(Col::FwdCpu), num),
            with_range(s.spread(Col::FloodCpu), num),
            flood_rate(s),
            with_range(s.spread(Col::TcpRate), kilo),
            with_range(s.spread(Col::TcpCpu), num),
            s.triple(Col::LatP50, Col::LatP99, Col::LatP999),
            mix,
            s.triple(Col::MixP50, Col::MixP99, Col::MixP999),
            rss,
        );
    }
    let find = |id: &str| systems.iter().find(|s| s.id == id && s.status == "ok");
    let subject = find(SUBJECT);
    o.push('\n');
    o.push_str("| ratio (medians) | forward msgs/s | CPU / forwarded msg | CPU / dropped msg | TCP msgs/s | latency p50 |\n|---|---|---|---|---|---|\n");
    for base in [BASELINE_KAMAILIO, BASELINE_RAW] {
        let b = find(base);
        let row = match (subject, b) {
            (Some(s), Some(b)) => format!(
                "| {SUBJECT} / {base} | {} | {} | {} | {} | {} |",
                ratio(s.spread(Col::FwdRate), b.spread(Col::FwdRate)),
                ratio(s.spread(Col::FwdCpu), b.spread(Col::FwdCpu)),
                ratio(s.spread(Col::FloodCpu), b.spread(Col::FloodCpu)),
                ratio(s.spread(Col::TcpRate), b.spread(Col::TcpRate)),
                ratio(s.spread(Col::LatP50), b.spread(Col::LatP50)),
            ),
            (None, _) => format!("| {SUBJECT} / {base} | n/a ({SUBJECT} not available) | | | | |"),
            (_, None) => format!("| {SUBJECT} / {base} | n/a ({base} not available) | | | | |"),
        };
        o.push_str(&row);
        o.push('\n');
    }
    let mut n: Vec<String> = systems
        .iter()
        .filter(|s| s.status == "ok")
        .filter_map(core_note)
        .collect();
    n.extend(notes(&systems));
    if !n.is_empty() {
        o.push_str("\nNotes:\n");
        for line in n {
            let _ = writeln!(o, "- {line}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
{"kind":"env","date":"2026-11-25","nproc":2,"runs":3,"duration":4,"rcvbuf":4194304,"command":"bench/run.sh","kernel":"6.1"}
{"kind":"system","system":"sipwarden","label":"sipwarden","status":"skipped: sipwarden not available"}
{"kind":"system","system":"kamailio-tlsf","label":"Kamailio -x tlsf","status":"ok"}
{"kind":"run","system":"kamailio-tlsf","scenario":"forward","run":1,"load":{"sent":500000,"duration_s":4.0},"sink":{"received":400000,"active_s":4.0,"kernel_drops":0},"before":{"cpu_us":0,"udp_drops":0,"hwm_kb_sum":1000},"after":{"cpu_us":4000000,"udp_drops":100000,"hwm_kb_sum":2048}}
{"kind":"run","system":"kamailio-tlsf","scenario":"forward","run":2,"load":{"sent":500000,"duration_s":4.0},"sink":{"received":200000,"active_s":4.0,"kernel_drops":5},"before":{"cpu_us":0},"after":{"cpu_us":2000000}}
{"kind":"run","system":"kamailio-tlsf","scenario":"flood","run":1,"load":{"sent":1000000,"duration_s":4.0},"sink":null,"before":{"cpu_us":10,"udp_drops":0},"after":{"cpu_us":2000010,"udp_drops":200000}}
{"kind":"run","system":"kamailio-tlsf","scenario":"latency","run":1,"load":{},"sink":{"latency_us":{"p50":60.0,"p99":200.0,"p999":900.0}},"before":{},"after":{}}
{"kind":"run","system":"kamailio-tlsf","scenario":"mix","run":1,"load":{"exchanges":{"success_rate":1.0,"latency_us":{"p50":150.0,"p99":400.0,"p999":1000.0}}},"sink":{},"before":{},"after":{}}
"#;

    #[test]
    fn medians_and_derived_metrics() {
        let (_, systems) = parse(SAMPLE);
        let k = &systems[1];
        let fwd = k.spread(Col::FwdRate).unwrap();
        assert_eq!((fwd.med, fwd.min, fwd.max), (75_000.0, 50_000.0, 100_000.0));
        let cpu = k.spread(Col::FwdCpu).unwrap();
        assert!((cpu.med - 10.0).abs() < 1e-9);
        let flood = k.spread(Col::FloodCpu).unwrap();
        assert!((flood.med - 2.5).abs() < 1e-9); // 2 s CPU / 800k handled
        assert!((k.spread(Col::FloodShare).unwrap().med - 0.8).abs() < 1e-9);
        assert_eq!(flood_rate(k), "200.0k, 80.0%");
        assert_eq!(k.spread(Col::Rss).unwrap().max, 2048.0);
        assert_eq!(forward_ceiling(SAMPLE, "kamailio-tlsf"), Some(75_000.0));
        assert_eq!(forward_ceiling(SAMPLE, "sipwarden"), None);
    }

    #[test]
    fn renders_skips_and_notes() {
        let out = render(SAMPLE);
        assert!(out.contains("| sipwarden | skipped: sipwarden not available |"));
        assert!(out.contains("Kamailio -x tlsf | 75.0k (50.0k–100.0k) | 10.0 |"));
        assert!(out.contains("60.0 / 200 / 900"));
        assert!(out.contains("100.00%"));
        assert!(out.contains("n/a (sipwarden not available)"));
        assert!(out.contains("dropped 5 datagrams"));
        assert!(out.contains("nproc: 2"));
        // SAMPLE predates FORWARD_RATE: read as full speed.
        assert!(out.contains("forward offered 0 msgs/s"));
        let paced = SAMPLE.replacen(
            r#""kernel":"6.1""#,
            r#""kernel":"6.1","forward_rate":100000"#,
            1,
        );
        assert!(render(&paced).contains("forward offered 100000 msgs/s"));
    }

    #[test]
    fn spread_of_even_and_empty() {
        assert_eq!(spread(vec![]), None);
        let s = spread(vec![4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.med, s.min, s.max), (2.5, 1.0, 4.0));
    }
}
