//! The monitoring files shipped in docs/ hold to the program: every metric
//! the Grafana dashboard (`docs/grafana/sipwarden.json`) and the alert
//! rules (`docs/prometheus/alerts.yml`) name is one a running sipwarden
//! exports (scraped from the real binary after a little traffic), the
//! rules pass `promtool check rules` and their unit tests
//! (`docs/prometheus/alerts_test.yml`), the dashboard's queries are valid
//! PromQL, and the scrape passes `promtool check metrics`.
//!
//! promtool comes with Debian's `prometheus` package (`scripts/setup.sh`
//! installs it); without it these tests fail, saying so: never skipped.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Series Prometheus makes itself for every target, not the proxy.
const FROM_PROMETHEUS: [&str; 1] = ["up"];

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(repo(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

// ------------------------------------------------------ names in PromQL

/// Words of PromQL that are not metric names.
const KEYWORDS: [&str; 13] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// The metric names a PromQL expression reads: identifiers that are not
/// function or aggregation names (followed by `(`, `by` or `without`),
/// keywords, label names
/// (inside `{...}` or in the list after `by`, `without`, `on`,
/// `ignoring`, `group_left`, `group_right`), durations and numbers, string
/// literals or Grafana variables (`$__rate_interval`, `${x}`).
fn promql_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut names = Vec::new();
    let mut i = 0;
    // After a grouping keyword, its parenthesised list of labels.
    let mut labels_next = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                // A string: to its closing quote, past escapes.
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' | b'[' => {
                // Label matchers or a range / subquery: no names inside
                // (a string inside may hold a brace: skip strings).
                let close = if c == b'{' { b'}' } else { b']' };
                i += 1;
                while i < b.len() && b[i] != close {
                    if b[i] == b'"' || b[i] == b'\'' {
                        let q = b[i];
                        i += 1;
                        while i < b.len() && b[i] != q {
                            i += if b[i] == b'\\' { 2 } else { 1 };
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            b'(' if labels_next => {
                labels_next = false;
                while i < b.len() && b[i] != b')' {
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                // A Grafana variable: $name or ${name}.
                i += 1;
                if i < b.len() && b[i] == b'{' {
                    while i < b.len() && b[i] != b'}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < b.len() && ident(b[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == b'.' => {
                // A number or a duration (1e-6, 0.99, 5m, 0x1f).
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if ident_start(c) => {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                // A function or an aggregation: `f(`, or `sum by (..) (`.
                let rest = &expr[j..];
                let grouping = ["by", "without"].iter().any(|k| {
                    rest.get(..k.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(k))
                        && !rest.as_bytes().get(k.len()).is_some_and(|&c| ident(c))
                });
                let call = (j < b.len() && b[j] == b'(') || grouping;
                let lower = word.to_ascii_lowercase();
                if KEYWORDS.contains(&lower.as_str()) {
                    labels_next = matches!(
                        lower.as_str(),
                        "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                    );
                } else if !call {
                    names.push(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn promql_names_finds_metrics_and_nothing_else() {
    let n = |e: &str| promql_names(e);
    assert_eq!(n("up{job=\"sipwarden\"} == 0"), ["up"]);
    assert_eq!(
        n("rate(sipwarden_send_errors_total[5m]) > 1"),
        ["sipwarden_send_errors_total"]
    );
    assert_eq!(
        n("sum by (reason) (rate(sipwarden_messages_total{disposition=~\"dropped|would-drop\",reason!=\"a}b\"}[$__rate_interval]))"),
        ["sipwarden_messages_total"]
    );
    assert_eq!(
        n("sum(rate(x_total[5m])) by (instance, le) / on (instance) group_left (version) sipwarden_build_info"),
        ["x_total", "sipwarden_build_info"]
    );
    assert_eq!(
        n("histogram_quantile(0.99, sum by (le) (rate(sipwarden_processing_seconds_bucket{instance=~\"$instance\"}[${__rate_interval}])))"),
        ["sipwarden_processing_seconds_bucket"]
    );
    assert_eq!(
        n("sum(rate(a_sum[1m])) / sum(rate(a_count[1m])) * 1e-6 + time() - process_start_time_seconds offset 5m"),
        ["a_sum", "a_count", "process_start_time_seconds"]
    );
    assert_eq!(
        n("max_over_time(m[10m:1m]) and bool ignoring (x) n"),
        ["m", "n"]
    );
    assert_eq!(
        n("label_replace(m, \"dst\", \"$1\", \"src\", \"(.*)\")"),
        ["m"]
    );
}

/// Whether `name` is a metric of the scrape: a sample name, or a family of
/// a histogram or summary read with its `_bucket`, `_sum` or `_count`
/// series (or the family itself).
fn exported(name: &str, scrape: &Scrape) -> bool {
    if scrape.samples.contains(name) || scrape.families.contains(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|base| scrape.histograms.contains(base))
    })
}

#[test]
fn histogram_suffixes_count_as_their_family() {
    let s = Scrape::parse(
        "# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_sum 0\nh_count 0\n# TYPE c counter\nc_total 1\n",
    );
    for ok in ["h_bucket", "h_sum", "h_count", "h", "c_total"] {
        assert!(exported(ok, &s), "{ok}");
    }
    for bad in ["c_total_bucket", "c_bucket", "h_total", "nope"] {
        assert!(!exported(bad, &s), "{bad}");
    }
}

// ------------------------------------------------------ the shipped files

/// The dashboard, parsed and checked for what Grafana needs to import it.
/// Returns its PromQL queries (panel targets, then template variables'
/// `label_values(...)` queries, reduced to their metric selector).
fn dashboard_exprs() -> Vec<String> {
    let text = read("docs/grafana/sipwarden.json");
    let d: serde_json::Value = serde_json::from_str(&text).expect("sipwarden.json is JSON");
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 30),
        "schemaVersion"
    );
    assert!(d["title"].is_string() && d["uid"].is_string(), "title, uid");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus data source variable"
    );
    let ds_ok = |ds: &serde_json::Value| ds["uid"] == "${datasource}";
    let mut exprs = Vec::new();
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "{title}: id unique"
        );
        assert!(p["gridPos"]["w"].is_u64(), "{title}: gridPos");
        if p["type"] == "row" {
            continue;
        }
        assert!(ds_ok(&p["datasource"]), "{title}: data source variable");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: targets");
        for t in targets {
            assert!(ds_ok(&t["datasource"]), "{title}: target data source");
            let e = t["expr"].as_str().expect("expr");
            exprs.push(e.to_string());
        }
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert!(ds_ok(&v["datasource"]), "{}: data source", v["name"]);
        let q = v["query"]["query"].as_str().expect("variable query");
        // label_values(SELECTOR, LABEL): the selector is the PromQL.
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map(|(sel, _)| sel)
            .unwrap_or_else(|| panic!("{q}: label_values(selector, label)"));
        exprs.push(inner.to_string());
    }
    exprs
}

/// The `expr:` of every rule in alerts.yml. Each is on one line (the file
/// says so); a block scalar is refused here rather than misread.
fn rule_exprs() -> Vec<String> {
    let text = read("docs/prometheus/alerts.yml");
    let exprs: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_string())
        .collect();
    for e in &exprs {
        assert!(
            !e.is_empty() && !e.starts_with('|') && !e.starts_with('>'),
            "alerts.yml: keep each expr on one line: {e:?}"
        );
    }
    let alerts = text
        .lines()
        .filter(|l| l.trim().starts_with("- alert:"))
        .count();
    assert_eq!(exprs.len(), alerts, "one expr per alert");
    assert!(alerts >= 6);
    exprs
}

// ------------------------------------------------------ promtool

fn promtool(args: &[&str], input: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("promtool");
    cmd.args(args)
        .current_dir(repo("."))
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run promtool ({e}): install Debian's `prometheus` package \
             (`scripts/setup.sh` does, as CI's .ci/run)"
        )
    });
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", "docs/prometheus/alerts.yml"], None);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&["test", "rules", "docs/prometheus/alerts_test.yml"], None);
    assert!(ok, "promtool test rules:\n{out}");
}

/// The dashboard's queries are valid PromQL: each becomes a recording rule
/// of a scratch file that `promtool check rules` parses, Grafana's
/// variables replaced by values.
#[test]
fn the_dashboard_queries_are_valid_promql() {
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in dashboard_exprs().iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("${__rate_interval}", "5m")
            .replace("$instance", ".+")
            .replace("$job", ".+");
        assert!(!e.contains('$'), "a Grafana variable left in {e}");
        let quoted = serde_json::to_string(&e).expect("a string quotes");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let file = std::env::temp_dir().join(format!("sw-dashboard-{}.yml", std::process::id()));
    std::fs::write(&file, &rules).expect("write the scratch rules");
    let path = file.display().to_string();
    let (ok, out) = promtool(&["check", "rules", &path], None);
    let _ = std::fs::remove_file(&file);
    assert!(
        ok,
        "promtool check rules on the dashboard's queries:\n{out}\n{rules}"
    );
}

// ------------------------------------------------------ a running instance

/// The metric names of one scrape.
struct Scrape {
    /// Sample names (`sipwarden_processing_seconds_bucket`).
    samples: BTreeSet<String>,
    /// Families of `# TYPE` lines.
    families: BTreeSet<String>,
    /// Families of type histogram or summary.
    histograms: BTreeSet<String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut s = Scrape {
            samples: BTreeSet::new(),
            families: BTreeSet::new(),
            histograms: BTreeSet::new(),
        };
        for l in text.lines() {
            if let Some(t) = l.strip_prefix("# TYPE ") {
                let mut w = t.split_whitespace();
                let (Some(name), Some(kind)) = (w.next(), w.next()) else {
                    continue;
                };
                s.families.insert(name.to_string());
                if kind == "histogram" || kind == "summary" {
                    s.histograms.insert(name.to_string());
                }
            } else if !l.starts_with('#') && !l.is_empty() {
                let end = l.find(['{', ' ']).unwrap_or(l.len());
                s.samples.insert(l[..end].to_string());
            }
        }
        s
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    for _ in 0..100 {
        let u = UdpSocket::bind("127.0.0.1:0").expect("probe bind");
        let port = u.local_addr().expect("probe addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

struct Running {
    child: Child,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn get_metrics(addr: SocketAddr) -> Option<String> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

const DOMAIN: &str = "pbx.monitoring.example";

fn options(call_id: &str, domain: &str) -> String {
    format!(
        "OPTIONS sip:100@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{domain}>;tag=f-{call_id}\r\nTo: <sip:100@{domain}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: monitoring-test\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Starts the binary (with a trunk, so the per-trunk series exist), sends
/// a request it forwards and one it drops, and returns the scrape once both
/// are counted.
fn scrape_after_traffic() -> String {
    let dir = std::env::temp_dir().join(format!("sw-monitoring-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let backend = UdpSocket::bind("127.0.0.1:0").expect("backend");
    let (public, internal, mport) = (free_port(), free_port(), free_port());
    let cfg = dir.join("sipwarden.toml");
    std::fs::write(
        &cfg,
        format!(
            "[listen]\npublic = [\"udp:127.0.0.1:{public}\"]\ninternal = \"udp:127.0.0.1:{internal}\"\n\
             advertise = \"127.0.0.1:{public}\"\nworkers = 1\n\
             [backend]\naddress = \"udp:{be}\"\n[filter]\ndomains = [\"{DOMAIN}\"]\n\
             [secret]\nkey_file = \"{key}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{mport}\"\nsummary_interval = \"0s\"\n\
             [control]\nsocket = \"{sock}\"\n\
             [[trunk]]\nname = \"provider1\"\nregistrar = \"127.0.0.3\"\n",
            be = backend.local_addr().expect("backend addr"),
            key = dir.join("secret").display(),
            sock = dir.join("control.sock").display(),
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.join("log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_sipwarden"))
        .arg("--config")
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sipwarden");
    let mut running = Running { child, dir };
    let metrics: SocketAddr = format!("127.0.0.1:{mport}").parse().expect("addr");
    let phone = UdpSocket::bind("127.0.0.1:0").expect("phone");
    let public: SocketAddr = format!("127.0.0.1:{public}").parse().expect("addr");
    // Until both are counted (UDP: resent until then); bounded against a
    // hang, not timed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(st)) = running.child.try_wait() {
            let log = std::fs::read_to_string(running.dir.join("log")).unwrap_or_default();
            panic!("sipwarden exited ({st}):\n{log}");
        }
        let _ = phone.send_to(options("mon-fwd", DOMAIN).as_bytes(), public);
        let _ = phone.send_to(options("mon-drop", "elsewhere.example").as_bytes(), public);
        if let Some(text) = get_metrics(metrics) {
            if text.contains("reason=\"domain\",disposition=\"forwarded\"")
                && text.contains("reason=\"no-domain\",disposition=\"dropped\"")
            {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no forwarded and dropped message counted within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every metric the dashboard and the rules name is exported by a running
/// proxy; the scrape passes `promtool check metrics`.
#[test]
fn every_metric_the_dashboard_and_rules_name_is_exported() {
    let text = scrape_after_traffic();
    let scrape = Scrape::parse(&text);
    let mut named = BTreeSet::new();
    for (what, exprs) in [
        ("dashboard", dashboard_exprs()),
        ("alerts.yml", rule_exprs()),
    ] {
        for e in exprs {
            let names = promql_names(&e);
            assert!(!names.is_empty(), "{what}: no metric in {e}");
            for n in names {
                named.insert((n, what, e.clone()));
            }
        }
    }
    let missing: Vec<String> = named
        .iter()
        .filter(|(n, _, _)| !exported(n, &scrape) && !FROM_PROMETHEUS.contains(&n.as_str()))
        .map(|(n, what, e)| format!("{n} ({what}: {e})"))
        .collect();
    assert!(
        missing.is_empty(),
        "named but not exported by sipwarden:\n  {}\nexported: {:?}",
        missing.join("\n  "),
        scrape.samples
    );
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics:\n{out}\n{text}");
}
