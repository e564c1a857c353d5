//! What the sink counts, and its JSON report.

use serde_json::json;
use swbench::hist::Histogram;
use swbench::sip::{self, StartLine};

/// Stamps further than this from "now" are not latencies but foreign clocks or garbage.
const MAX_PLAUSIBLE_NS: u64 = 60_000_000_000;

const METHODS: [&str; 6] = ["INVITE", "ACK", "BYE", "OPTIONS", "CANCEL", "REGISTER"];

/// Counters of one sink run.
#[derive(Default)]
pub struct Stats {
    /// Messages received (UDP datagrams and TCP frames).
    pub received: u64,
    /// Of which over UDP.
    pub udp: u64,
    /// Of which over TCP.
    pub tcp: u64,
    /// Bytes received.
    pub bytes: u64,
    requests: [u64; METHODS.len()],
    other_requests: u64,
    /// Responses received (a sink normally gets none).
    pub responses: u64,
    /// Messages with no parsable start line.
    pub unparsable: u64,
    /// Datagrams larger than the receive buffer.
    pub truncated: u64,
    /// Answers sent.
    pub answered: u64,
    /// Requests that could not be answered (missing headers).
    pub unanswerable: u64,
    /// Answers not sent because the Via pointed off loopback or nowhere.
    pub refused_dest: u64,
    /// Answers the kernel refused.
    pub send_errors: u64,
    /// Messages carrying a plausible X-Bench-Ts.
    pub stamped: u64,
    /// Stamps in the future or too old to be ours.
    pub bad_ts: u64,
    /// First and last receive time (CLOCK_MONOTONIC ns).
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
    /// One-way latency from X-Bench-Ts to receive.
    pub latency: Histogram,
    /// TCP connections accepted.
    pub tcp_connections: u64,
}

impl Stats {
    /// Counts one message received at `now`.
    pub fn record(&mut self, msg: &[u8], now: u64) {
        self.received += 1;
        self.bytes += msg.len() as u64;
        if self.first_ns == 0 {
            self.first_ns = now;
        }
        self.last_ns = now;
        match sip::start_line(msg) {
            Some(StartLine::Request { method, .. }) => {
                match METHODS
                    .iter()
                    .position(|m| m.as_bytes().eq_ignore_ascii_case(method))
                {
                    Some(i) => self.requests[i] += 1,
                    None => self.other_requests += 1,
                }
            }
            Some(StartLine::Response { .. }) => self.responses += 1,
            None => self.unparsable += 1,
        }
        if let Some(ts) = sip::bench_ts(msg) {
            if ts <= now && now - ts < MAX_PLAUSIBLE_NS {
                self.stamped += 1;
                self.latency.record(now - ts);
            } else {
                self.bad_ts += 1;
            }
        }
    }

    /// The report; `extra` fields (listen address, drops) are merged in.
    pub fn report(&self, extra: serde_json::Value) -> serde_json::Value {
        let active = self.last_ns.saturating_sub(self.first_ns) as f64 / 1e9;
        let mut requests = serde_json::Map::new();
        for (m, c) in METHODS.iter().zip(self.requests) {
            requests.insert((*m).to_string(), json!(c));
        }
        requests.insert("other".into(), json!(self.other_requests));
        let mut r = json!({
            "received": self.received,
            "udp": self.udp,
            "tcp": self.tcp,
            "bytes": self.bytes,
            "requests": requests,
            "responses_received": self.responses,
            "unparsable": self.unparsable,
            "truncated": self.truncated,
            "answered": self.answered,
            "unanswerable": self.unanswerable,
            "refused_dest": self.refused_dest,
            "send_errors": self.send_errors,
            "stamped": self.stamped,
            "bad_ts": self.bad_ts,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "active_s": active,
            "msgs_per_s": if active > 0.0 { self.received as f64 / active } else { 0.0 },
            "latency_us": self.latency.summary_us(),
            "tcp_connections": self.tcp_connections,
        });
        if let (Some(obj), serde_json::Value::Object(more)) = (r.as_object_mut(), extra) {
            obj.extend(more);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_latency() {
        let mut s = Stats::default();
        s.record(b"INVITE sip:a SIP/2.0\r\nX-Bench-Ts: 1000\r\n\r\n", 3000);
        s.record(b"bye sip:a SIP/2.0\r\nX-Bench-Ts: 9000\r\n\r\n", 3000);
        s.record(b"SIP/2.0 200 OK\r\n\r\n", 4000);
        s.record(b"\x00\x01", 5000);
        let r = s.report(json!({"x": 1}));
        assert_eq!(r["received"], 4);
        assert_eq!(r["requests"]["INVITE"], 1);
        assert_eq!(r["requests"]["BYE"], 1);
        assert_eq!(r["responses_received"], 1);
        assert_eq!(r["unparsable"], 1);
        assert_eq!(r["stamped"], 1);
        assert_eq!(r["bad_ts"], 1);
        assert_eq!(r["x"], 1);
    }
}
