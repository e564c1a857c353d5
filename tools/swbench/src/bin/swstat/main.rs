//! swstat: the benchmark script's measuring and reporting helper.
//!
//! `proc`  samples a process tree (CPU, peak RSS) and the UDP drops of a port,
//! `get`   pulls one field out of a JSON document (so run.sh needs no jq),
//! `table` turns the run's JSON lines into the markdown table,
//! `tls-table` does the same for bench/tls.sh.

mod table;
mod tls_table;

use std::net::Ipv4Addr;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use swbench::procfs;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Samples /proc and renders the sipwarden benchmark table"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// CPU time and peak RSS of PID and its descendants, and UDP drops on IP:PORT, as JSON.
    Proc {
        /// Root process of the system under test.
        #[arg(long)]
        pid: u32,
        /// UDP port whose sockets' drop counters to sum.
        #[arg(long, default_value_t = 5060)]
        port: u16,
        /// Address of those sockets (wildcard binds are included too).
        #[arg(long, default_value = "127.0.0.1")]
        ip: Ipv4Addr,
        /// CPU core the system under test is pinned to (its busy/softirq time is sampled).
        #[arg(long, default_value_t = 0)]
        core: usize,
    },
    /// Prints the value at a dotted PATH of the JSON in FILE ("-" = stdin); empty if absent.
    Get {
        /// JSON file, or "-".
        file: String,
        /// Dotted path, e.g. latency_us.p99.
        path: String,
    },
    /// Prints the median forward msgs/s of SYSTEM so far (the ceiling); empty if none.
    Ceiling {
        /// results.jsonl written by run.sh.
        results: String,
        /// System id, e.g. kamailio-tlsf.
        system: String,
    },
    /// Adds up the reports of load generators that ran side by side: one
    /// report, with `sent` and the rates summed and the longest duration.
    MergeLoads {
        /// swload JSON reports.
        files: Vec<String>,
    },
    /// Renders the markdown table from the JSON lines of a run.
    Table {
        /// results.jsonl written by run.sh.
        results: String,
    },
    /// Renders bench/tls.sh's markdown tables from its JSON lines.
    TlsTable {
        /// results.jsonl written by tls.sh.
        results: String,
        /// Also write the figures as one JSON document to this file.
        #[arg(long)]
        json: Option<String>,
    },
}

fn proc_sample(pid: u32, ip: Ipv4Addr, port: u16, core: usize) -> Value {
    let pids = procfs::process_tree(pid);
    let cpu: u64 = pids.iter().filter_map(|&p| procfs::cpu_us(p)).sum();
    let hwm: Vec<u64> = pids
        .iter()
        .filter_map(|&p| procfs::status_kb(p, "VmHWM"))
        .collect();
    let rss: u64 = pids
        .iter()
        .filter_map(|&p| procfs::status_kb(p, "VmRSS"))
        .sum();
    let pss: u64 = pids.iter().filter_map(|&p| procfs::pss_kb(p)).sum();
    let (sockets, drops) = procfs::udp_drops(ip, port);
    let c = procfs::core_times(core).unwrap_or_default();
    // Everything else, as "pid comm" -> CPU us, to name the noise afterwards.
    let mut others = serde_json::Map::new();
    for (p, comm, us) in procfs::all_cpu_us() {
        if !pids.contains(&p) && us > 0 {
            others.insert(format!("{p} {comm}"), json!(us));
        }
    }
    json!({
        "pids": pids,
        "procs": pids.len(),
        "cpu_us": cpu,
        "hwm_kb_sum": hwm.iter().sum::<u64>(),
        "hwm_kb_max": hwm.iter().copied().max().unwrap_or(0),
        "rss_kb_sum": rss,
        "pss_kb_sum": pss,
        "udp_sockets": sockets,
        "udp_drops": drops,
        "mono_us": swbench::clock::mono_ns() / 1000,
        "core": core,
        "core_busy_us": c.busy_us,
        "core_softirq_us": c.softirq_us,
        "core_irq_us": c.irq_us,
        "others_cpu_us": others,
    })
}

fn read_input(file: &str) -> Result<String, String> {
    if file == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| e.to_string())?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))
    }
}

/// Value at a dotted path (`a.b.0.c`).
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(v, |cur, key| match cur {
            Value::Object(m) => m.get(key),
            Value::Array(a) => a.get(key.parse::<usize>().ok()?),
            _ => None,
        })
}

fn merge_loads(files: &[String]) -> Result<Value, String> {
    let mut out: Option<Value> = None;
    let mut n = 0;
    for file in files {
        let text = read_input(file)?;
        let v: Value =
            serde_json::from_str(text.trim()).map_err(|e| format!("{file}: bad JSON: {e}"))?;
        if !v.is_object() {
            continue;
        }
        n += 1;
        let Some(acc) = out.as_mut() else {
            out = Some(v);
            continue;
        };
        for key in [
            "sent",
            "scanner_sent",
            "send_errors",
            "received",
            "msgs_per_s",
        ] {
            if let (Some(a), Some(b)) = (acc[key].as_f64(), v[key].as_f64()) {
                acc[key] = if key == "msgs_per_s" {
                    json!(a + b)
                } else {
                    json!((a + b) as u64)
                };
            }
        }
        if let (Some(a), Some(b)) = (acc["duration_s"].as_f64(), v["duration_s"].as_f64()) {
            acc["duration_s"] = json!(a.max(b));
        }
    }
    let mut out = out.ok_or("no load report to merge")?;
    out["generators"] = json!(n);
    Ok(out)
}

fn main() {
    let cli = Cli::parse();
    let out = match cli.cmd {
        Cmd::Proc {
            pid,
            port,
            ip,
            core,
        } => Ok(proc_sample(pid, ip, port, core).to_string()),
        Cmd::Get { file, path } => read_input(&file).and_then(|s| {
            let v: Value = serde_json::from_str(s.trim()).map_err(|e| format!("bad JSON: {e}"))?;
            Ok(match lookup(&v, &path) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            })
        }),
        Cmd::Ceiling { results, system } => read_input(&results).map(|s| {
            table::forward_ceiling(&s, &system)
                .map(|c| format!("{c:.0}"))
                .unwrap_or_default()
        }),
        Cmd::MergeLoads { files } => merge_loads(&files).map(|v| v.to_string()),
        Cmd::Table { results } => read_input(&results).map(|s| table::render(&s)),
        Cmd::TlsTable { results, json } => read_input(&results).and_then(|s| {
            let (md, summary) = tls_table::render(&s);
            if let Some(path) = json {
                std::fs::write(&path, format!("{summary}\n"))
                    .map_err(|e| format!("{path}: {e}"))?;
            }
            Ok(md)
        }),
    };
    match out {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("swstat: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_lookup() {
        let v = json!({"a": {"b": [1, {"c": "x"}]}});
        assert_eq!(lookup(&v, "a.b.1.c"), Some(&json!("x")));
        assert_eq!(lookup(&v, "a.z"), None);
        assert_eq!(lookup(&v, "a.b.9"), None);
    }

    #[test]
    fn loads_add_up() {
        let dir = std::env::temp_dir().join(format!("swstat-merge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.json");
        let b = dir.join("b.json");
        std::fs::write(
            &a,
            r#"{"sent":100,"duration_s":4.0,"msgs_per_s":25.0,"scenario":"flood"}"#,
        )
        .unwrap();
        std::fs::write(
            &b,
            r#"{"sent":50,"duration_s":4.5,"msgs_per_s":11.0,"scenario":"flood"}"#,
        )
        .unwrap();
        let files = [a, b].map(|p| p.to_string_lossy().into_owned());
        let v = merge_loads(&files).unwrap();
        assert_eq!(v["sent"], 150);
        assert_eq!(v["duration_s"], 4.5);
        assert_eq!(v["msgs_per_s"], 36.0);
        assert_eq!(v["generators"], 2);
        assert_eq!(v["scenario"], "flood");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sample_self() {
        let v = proc_sample(std::process::id(), Ipv4Addr::LOCALHOST, 1, 0);
        assert_eq!(v["procs"], 1);
        assert!(v["hwm_kb_max"].as_u64().unwrap_or(0) > 0);
    }
}
