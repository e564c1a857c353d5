//! swload: SIP load generator of the sipwarden benchmark.
//!
//! Sends pre-built SIP over UDP (sendmmsg from several loopback source
//! addresses and ports) or TCP (persistent connections) to a system under
//! test on loopback, bounded by `--duration` and `--max-count`, and prints a
//! JSON report on stdout. Every message carries `X-Bench-Ts` (CLOCK_MONOTONIC
//! ns) so swsink can compute one-way latency on the same host clock.

mod args;
mod dialog;
mod exchange;
mod tcp;
mod udp;

use clap::Parser;
use serde_json::json;

use args::{Args, Scenario};

fn main() {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("swload: {e}");
        std::process::exit(2);
    }
    swbench::signal::install();
    swbench::clock::minimise_timer_slack();
    let result = match args.scenario {
        Scenario::Tcp => tcp::run(&args),
        _ => udp::run(&args),
    };
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("swload: {e}");
            std::process::exit(1);
        }
    };
    let scenario = format!("{:?}", args.scenario).to_lowercase();
    report["scenario"] = json!(scenario);
    report["target"] = json!(args.target.to_string());
    report["rate_asked"] = json!(args.rate);
    // Client-side latency exists only where answers come back (mix);
    // for flood/forward/tcp swsink measures the one-way latency.
    let latency = report
        .get("exchanges")
        .and_then(|e| e.get("latency_us"))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    report["latency_us"] = latency;
    let success = report
        .get("exchanges")
        .and_then(|e| e.get("success_rate"))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    report["exchange_success"] = success;
    println!("{report}");
}
