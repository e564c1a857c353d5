//! CLI, logging, signals and wiring. `sipwarden --config F` runs the proxy;
//! `sipwarden check --config F` validates a config and exits 0 or 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::{reload, EnvFilter};

use sipwarden::instance::{Identity, InstanceLock};
use sipwarden::preflight::{self, Probe};
use sipwarden::secret;
use sipwarden::transport::{background, now_ms, Server};
use sipwarden_core::config::{self, LogFormat};
use sipwarden_core::metrics::Metrics;
use sipwarden_core::proxy::Core;
use sipwarden_core::settings::Settings;
use sipwarden_core::token::Keys;

#[derive(Parser)]
#[command(
    name = "sipwarden",
    version,
    about = "SIP edge proxy that keeps scanners away from an Asterisk PBX"
)]
struct Cli {
    /// Config file (TOML).
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/sipwarden/sipwarden.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate the config file and exit 0 (valid) or 1 (with the reason).
    Check,
    /// Ask a running sipwarden if it is alive (for container health
    /// checks): a CRLF ping on its public TCP socket, else GET /metrics.
    Health,
    /// Version, uptime, mode, sockets, message rates, table sizes and the
    /// last reload of the running proxy (on its control socket).
    Status(Out),
    /// Every banned source and network, with its trigger and time left.
    Bans(Out),
    /// Ban an address or a network (CIDR) now; kept in the state file.
    Ban {
        /// An address (192.0.2.7, 2001:db8::7) or a network (198.51.100.0/24).
        target: String,
        /// How long: "30m", "2h", "7d" (default: ban.duration).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        #[command(flatten)]
        out: Out,
    },
    /// Lift the ban of an address, or of a network and every address
    /// banned inside it.
    Unban {
        /// An address or a network (CIDR).
        target: String,
        #[command(flatten)]
        out: Out,
    },
    /// Each trunk: registered or not, registrar addresses, expiry, last
    /// REGISTER and last INVITE.
    Trunks(Out),
    /// The sources of the last minute with the most messages and the most
    /// rejects, with the reasons.
    Sources {
        /// Sources listed in each table.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[command(flatten)]
        out: Out,
    },
    /// A live full-screen view of the running proxy, refreshed every
    /// interval: rates, top sources, bans, trunks, dialogs; keys to ban
    /// and unban. Needs a terminal (80x24 is enough).
    Top {
        /// Time between refreshes: "1s", "500ms", "5s" (200ms to 1h).
        #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = interval)]
        interval: Duration,
    },
}

/// The output options of the control subcommands.
#[derive(Args)]
struct Out {
    /// Print the proxy's answer as JSON (one object) instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    use sipwarden::control::human;
    use sipwarden_core::control::Request;
    let c = &cli.config;
    match cli.cmd {
        Some(Cmd::Check) => check(c),
        Some(Cmd::Health) => health(c),
        Some(Cmd::Status(o)) => control(c, Request::Status, o, human::status),
        Some(Cmd::Bans(o)) => control(c, Request::Bans, o, human::bans),
        Some(Cmd::Ban {
            target,
            duration,
            out,
        }) => control(c, Request::Ban { target, duration }, out, human::banned),
        Some(Cmd::Unban { target, out }) => {
            control(c, Request::Unban { target }, out, human::unbanned)
        }
        Some(Cmd::Trunks(o)) => control(c, Request::Trunks, o, human::trunks),
        Some(Cmd::Sources { limit, out }) => control(
            c,
            Request::Sources { limit: Some(limit) },
            out,
            human::sources,
        ),
        Some(Cmd::Top { interval }) => top(c, interval),
        None => run(c),
    }
}

/// A control subcommand: the request on the socket `control.socket` of the
/// config at `path` names; the answer printed as JSON or by `show`. Exit
/// codes: 0 answered, 1 the proxy refused (or the config cannot be read),
/// 2 the socket cannot be reached.
fn control(
    path: &Path,
    req: sipwarden_core::control::Request,
    out: Out,
    show: fn(serde_json::Value) -> Result<String, String>,
) -> ExitCode {
    use sipwarden::control::client::{self, ClientError};
    let cfg = match preflight::load(path, Probe::TextOnly) {
        Ok(l) => l.config,
        Err(r) => {
            print_rejected(&r);
            return ExitCode::FAILURE;
        }
    };
    let socket = &cfg.control.socket;
    if socket.as_os_str().is_empty() {
        eprintln!(
            "sipwarden: the control socket is off in {} (control.socket = \"\")",
            path.display()
        );
        return ExitCode::from(2);
    }
    match client::request(socket, &req, Duration::from_secs(10)) {
        Ok((result, whole)) => {
            let text = if out.json {
                Ok(format!("{whole}\n"))
            } else {
                show(result)
            };
            match text {
                Ok(t) => {
                    print!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sipwarden: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err((e @ ClientError::Unreachable(_), _)) => {
            eprintln!("sipwarden: {e}");
            ExitCode::from(2)
        }
        Err((e, raw)) => {
            if let (true, Some(raw)) = (out.json, raw) {
                println!("{raw}");
            }
            eprintln!("sipwarden: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--interval`: a duration between 200 ms and an hour.
fn interval(s: &str) -> Result<Duration, String> {
    let d = s.parse::<config::Dur>()?.0;
    if !(Duration::from_millis(200)..=Duration::from_secs(3600)).contains(&d) {
        return Err(format!("{s:?}: between 200ms and 1h"));
    }
    Ok(d)
}

/// `sipwarden top`: the live view on the socket `control.socket` of the
/// config at `path`. Exit codes: 0 quit, 1 the config cannot be read or
/// the terminal failed, 2 not a terminal or the control socket is off. A
/// socket that cannot be reached is shown on screen and tried again.
fn top(path: &Path, interval: Duration) -> ExitCode {
    use sipwarden::control::client;
    use sipwarden::top::{self, Refused};
    let cfg = match preflight::load(path, Probe::TextOnly) {
        Ok(l) => l.config,
        Err(r) => {
            print_rejected(&r);
            return ExitCode::FAILURE;
        }
    };
    let socket = cfg.control.socket.clone();
    if socket.as_os_str().is_empty() {
        eprintln!(
            "sipwarden: the control socket is off in {} (control.socket = \"\")",
            path.display()
        );
        return ExitCode::from(2);
    }
    let name = socket.display().to_string();
    // A poll waits at most this long for each answer: a hung proxy shows
    // as an error on screen, not a frozen one.
    let timeout = interval.max(Duration::from_secs(2));
    let ask: top::Ask = Box::new(move |req| {
        client::request(&socket, req, timeout)
            .map(|(result, _)| result)
            .map_err(|(e, _)| e.to_string())
    });
    match top::run(name, ask, interval) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Refused::NotATerminal) => {
            eprintln!("sipwarden: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("sipwarden: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything start would refuse, refused with its line; what is legal but
/// likely wrong printed as `warning:` lines (exit 0).
fn check(path: &Path) -> ExitCode {
    match preflight::load(path, Probe::Host) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            let c = &loaded.config;
            println!(
                "{}: OK: {} public socket(s), {} domain(s), {} trunk(s), mode {:?}, \
                 dialog table {:.1} MiB (allocated at start){}",
                path.display(),
                c.listen.public.len(),
                c.filter.domains.len(),
                c.trunks.len(),
                c.filter.mode,
                sipwarden_core::state::Dialogs::bytes_for(c.dialog.max_entries) as f64 / 1048576.0,
                match loaded.warnings.len() {
                    0 => String::new(),
                    n => format!(", {n} warning(s)"),
                }
            );
            if c.cluster.is_on() {
                let node = sipwarden::cluster::node_name(&c.cluster);
                let servers = sipwarden::cluster::servers(&c.cluster);
                println!(
                    "cluster {:?}: this node is {node:?}, sharing bans and trunk registrations through {}. \
                     Every node must use the same secret.key_file (a copy of {}): the tokens one node \
                     writes must verify on the others, and a registration made under another key is rejected.",
                    c.cluster.name,
                    servers.join(", "),
                    c.secret.key_file.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(rejected) => {
            print_rejected(&rejected);
            ExitCode::FAILURE
        }
    }
}

/// A refused config on stderr: every error, then the warnings.
fn print_rejected(r: &config::Rejected) {
    for e in &r.errors {
        eprintln!("config error: {e}");
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
}

/// Where to reach a listener bound to a wildcard address.
fn reachable(a: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match a.ip() {
        IpAddr::V4(v) if v.is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        IpAddr::V6(v) if v.is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        _ => a,
    }
}

fn health(path: &Path) -> ExitCode {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    // Only the sockets matter here: the key file and state directory are
    // the running instance's business (and may not be this user's).
    let cfg = match preflight::load(path, Probe::TextOnly) {
        Ok(l) => l.config,
        Err(r) => {
            print_rejected(&r);
            return ExitCode::FAILURE;
        }
    };
    let t = Duration::from_secs(3);
    let tcp = cfg
        .listen
        .public
        .iter()
        .find(|s| s.transport == sipwarden_core::flow::Transport::Tcp);
    let result: Result<String, String> = if let Some(s) = tcp {
        let addr = reachable(s.addr);
        (|| {
            let mut c = TcpStream::connect_timeout(&addr, t).map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
            c.write_all(b"\r\n\r\n").map_err(|e| e.to_string())?;
            let mut pong = [0u8; 2];
            c.read_exact(&mut pong).map_err(|e| e.to_string())?;
            if &pong == b"\r\n" {
                Ok(format!("keepalive pong from {addr}"))
            } else {
                Err(format!("unexpected answer from {addr}"))
            }
        })()
    } else if let Some(m) = cfg.metrics.listen {
        let addr = reachable(m);
        (|| {
            let mut c = TcpStream::connect_timeout(&addr, t).map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
            c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut head = [0u8; 12];
            c.read_exact(&mut head).map_err(|e| e.to_string())?;
            if head.ends_with(b" 200") {
                Ok(format!("metrics from {addr}"))
            } else {
                Err(format!("unexpected answer from {addr}"))
            }
        })()
    } else {
        Err("nothing to ask: configure a public TCP socket or metrics.listen".into())
    };
    match result {
        Ok(what) => {
            println!("healthy: {what}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

type FilterHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// Whether a valid `RUST_LOG` overrides `log.level`.
fn rust_log_in_force() -> bool {
    std::env::var("RUST_LOG").is_ok_and(|v| preflight::log_filter(&v).is_ok())
}

/// Installs the log subscriber. `RUST_LOG`, when set and valid, overrides
/// `log.level`.
fn init_logging(cfg: &config::Config) -> FilterHandle {
    use tracing_subscriber::prelude::*;
    let from_env = std::env::var("RUST_LOG").ok().and_then(|v| {
        preflight::log_filter(&v)
            .map_err(|e| eprintln!("sipwarden: RUST_LOG ignored, log.level used: {e}"))
            .ok()
    });
    // `log.level` was checked with the config.
    let filter = from_env
        .or_else(|| preflight::log_filter(&cfg.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    // Logs go to stderr (journald and docker collect it); colours only
    // on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match cfg.log.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Human => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    handle
}

/// Why a start failed, on stderr whatever the log settings: through the
/// log when it shows errors, else as a plain line (`log.level = "off"`,
/// `RUST_LOG=off` or a filter that leaves sipwarden's errors out).
fn start_failed(why: impl std::fmt::Display) -> ExitCode {
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!("cannot start: {why}");
    } else {
        eprintln!("sipwarden: cannot start: {why}");
    }
    ExitCode::FAILURE
}

fn run(path: &Path) -> ExitCode {
    // The same checks as `sipwarden check`: the config, the key file, the
    // state directory and the addresses, before anything is created.
    let loaded = match preflight::load(path, Probe::Host) {
        Ok(l) => l,
        Err(r) => {
            print_rejected(&r);
            return ExitCode::FAILURE;
        }
    };
    let cfg = loaded.config;
    let log = init_logging(&cfg);
    log_warnings(&loaded.warnings);
    // Before the key file is created or the state file read: a second
    // instance must touch neither.
    let lock = match InstanceLock::acquire(&Identity::of(
        cfg.state.path.as_deref(),
        &cfg.secret.key_file,
    )) {
        Ok(l) => l,
        Err(e) => return start_failed(e),
    };
    let key = match secret::load_or_create(&cfg.secret.key_file) {
        Ok((key, created)) => {
            if created {
                tracing::info!(
                    path = %cfg.secret.key_file.display(),
                    "generated a new secret key; keep this file: it signs the tokens of live dialogs and registrations"
                );
            }
            key
        }
        Err(e) => return start_failed(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return start_failed(format!("cannot start the runtime: {e}")),
    };
    let code = rt.block_on(serve(path, cfg, key, log, lock));
    // Whatever task is left is dropped; a blocking one gets this long.
    rt.shutdown_timeout(Duration::from_millis(500));
    code
}

/// The config's warnings, logged once logging is up (`check` prints the
/// same ones).
fn log_warnings(warnings: &[config::ConfigWarning]) {
    for w in warnings {
        tracing::warn!("config: {w}");
    }
}

async fn serve(
    path: &Path,
    cfg: config::Checked,
    key: [u8; 32],
    log: FilterHandle,
    mut lock: InstanceLock,
) -> ExitCode {
    let key_file = cfg.secret.key_file.clone();
    let metrics = Arc::new(Metrics::default());
    metrics.loaded(now_ms());
    let state_path = cfg.state.path.clone();
    let cluster_cfg = cfg.cluster.clone();
    let core = Arc::new(Core::new(
        Settings::new(cfg),
        Keys::new(key),
        metrics.clone(),
    ));
    let link = if cluster_cfg.is_on() {
        core.tables().feed.enable(cluster_cfg.max_outbox);
        metrics.set_cluster_up(false);
        match sipwarden::cluster::Link::new(core.clone(), &cluster_cfg) {
            Ok(l) => Some(l),
            Err(e) => return start_failed(e),
        }
    } else {
        None
    };
    // Tables first, sockets second: a provider's INVITE arriving right
    // after a restart finds its registration.
    let shared_loaded = match &link {
        Some(l) => load_shared(l, cluster_cfg.load_timeout.0).await,
        None => false,
    };
    if let Some(p) = &state_path {
        // With the cluster's state loaded, the state file gives the
        // dialogs only: its bans and registrations may be older than
        // Redis's (an unban made on another node while this one was down).
        background::load_state_with(&core, p, !shared_loaded);
    }
    let cluster_ctx = link
        .as_ref()
        .map(|l| sipwarden_core::control::ClusterContext {
            name: cluster_cfg.name.clone(),
            node: l.node().to_string(),
            servers: l.servers().to_vec(),
        });
    let started = sipwarden::transport::now_ms();
    let server = match Server::start(core.clone()) {
        Ok(s) => s,
        Err(e) => return start_failed(e),
    };
    // The control socket: after the SIP sockets (a status shows them),
    // before the first signal can stop us (its file is removed at exit).
    let control_path = core.settings().config.control.socket.clone();
    let last_reload: Arc<std::sync::Mutex<Option<sipwarden_core::control::Reload>>> =
        Arc::default();
    let (control_task, _control_file) = if control_path.as_os_str().is_empty() {
        (None, None)
    } else {
        match sipwarden::control::server::bind(&control_path) {
            Ok((listener, file)) => {
                let ctx = control_context(
                    started,
                    server.clone(),
                    last_reload.clone(),
                    cluster_ctx.clone(),
                );
                let task = tokio::spawn(sipwarden::control::server::serve(
                    listener,
                    core.clone(),
                    ctx,
                ));
                (Some(task), Some(file))
            }
            Err(e) => return start_failed(e),
        }
    };
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return start_failed("cannot install signal handlers");
    };
    let eg = server.egress().clone();
    let mut tasks = vec![
        tokio::spawn(background::ticker(eg.clone())),
        tokio::spawn(background::registrar_dns(eg)),
        tokio::spawn(background::state_writer(core.clone())),
    ];
    if let Some(l) = link {
        tasks.push(tokio::spawn(l.run()));
    }
    tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "sipwarden running");
    // A SIGHUP's outcome, in both places that report it: the metrics
    // (`sipwarden_reloads_total`, the last-load gauges) and `status` (with
    // the refusal's reason). `None` = applied.
    let record_reload = |refused: Option<String>| {
        let now = now_ms();
        metrics.reloaded(now, refused.is_none());
        let result = if refused.is_some() { "refused" } else { "ok" };
        *last_reload.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(sipwarden_core::control::Reload {
                at: now.rfc3339(),
                at_ms: now,
                result: result.into(),
                error: refused,
            });
    };
    let mut summary_every = core.settings().config.metrics.summary_interval.0;
    let mut summary = new_ticker(summary_every);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match preflight::load(path, Probe::Host) {
                    Ok(loaded) => {
                        log_warnings(&loaded.warnings);
                        let c = loaded.config;
                        if c.cluster.redis.to_vec() != cluster_cfg.redis.to_vec()
                            || c.cluster.name != cluster_cfg.name
                            || c.cluster.node != cluster_cfg.node
                        {
                            tracing::warn!("cluster.redis, name or node changed: used after a restart only");
                        }
                        if c.secret.key_file != key_file {
                            tracing::warn!("secret.key_file changed: the new file is used after a restart only");
                        }
                        if !rust_log_in_force() {
                            if let Ok(f) = preflight::log_filter(&c.log.level) {
                                let _ = log.reload(f);
                            }
                        }
                        let every = c.metrics.summary_interval.0;
                        let old = core.settings();
                        // A new state.path moves the lock: the new one is
                        // taken first, the old released once the reload
                        // stands.
                        let id = Identity::of(c.state.path.as_deref(), &key_file);
                        let moved = if id == lock.identity {
                            Ok(None)
                        } else {
                            InstanceLock::acquire(&id).map(Some)
                        };
                        let applied = moved.and_then(|m| {
                            server
                                .reload(Settings::new(c))
                                .map(|()| m)
                                .map_err(|e| e.to_string())
                        });
                        if server.egress().core.settings().config.control.socket != control_path {
                            tracing::warn!("control.socket changed: the new path is used after a restart only");
                        }
                        match applied {
                            Ok(moved) => {
                                record_reload(None);
                                if let Some(new) = moved {
                                    lock = new;
                                }
                                if every != summary_every {
                                    summary_every = every;
                                    summary = new_ticker(every);
                                }
                                // Names only: values may be secrets.
                                let changed = config::changed_keys(&old.config, &core.settings().config).join(", ");
                                tracing::info!(config = %path.display(), changed = changed.as_str(), "config reloaded");
                            }
                            Err(e) => {
                                record_reload(Some(e.to_string()));
                                tracing::error!(error = %e, "reload refused; the running config stays");
                            }
                        }
                    }
                    Err(r) => {
                        record_reload(Some(r.to_string()));
                        log_warnings(&r.warnings);
                        tracing::error!(error = %r, "reload refused; the running config stays");
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick(&mut summary) => {
                metrics.log_summary(server.egress().tcp.len());
            }
        }
    }
    tracing::info!("stopping: no longer receiving");
    server.shutdown();
    for t in tasks {
        t.abort();
    }
    if let Some(t) = control_task {
        t.abort();
    }
    // The state file is written while queued TCP writes drain (until they
    // have, or tcp.drain_timeout); lookups still pending are not waited for.
    let settings = core.settings();
    let save = async {
        if let Some(p) = settings.config.state.path.clone() {
            let c = core.clone();
            let _ = tokio::task::spawn_blocking(move || background::save_state(&c, &p)).await;
        }
    };
    let limit = settings.config.tcp.drain_timeout.0;
    let ((), left) = tokio::join!(save, server.egress().tcp.drain(limit));
    if left > 0 {
        tracing::warn!(
            connections = left,
            "TCP writes still queued after tcp.drain_timeout; closing them"
        );
    }
    metrics.log_summary(server.egress().tcp.len());
    tracing::info!("stopped");
    // Held to the last: the state file is written.
    drop(lock);
    ExitCode::SUCCESS
}

/// The context of each control answer: what the program knows that the
/// core does not.
fn control_context(
    started: sipwarden_core::time::UnixMs,
    server: Arc<Server>,
    last_reload: Arc<std::sync::Mutex<Option<sipwarden_core::control::Reload>>>,
    cluster: Option<sipwarden_core::control::ClusterContext>,
) -> sipwarden::control::server::ContextFn {
    Arc::new(move || {
        let s = server.egress().core.settings();
        let c = &s.config;
        let mut sockets: Vec<(String, String)> = Vec::new();
        for p in &c.listen.public {
            sockets.push(("public".into(), p.to_string()));
        }
        for i in c.internal() {
            sockets.push(("internal".into(), i.to_string()));
        }
        sockets.push(("backend".into(), c.backend.address.to_string()));
        if let Some(m) = c.metrics.listen {
            sockets.push(("metrics".into(), format!("tcp:{m}")));
        }
        sockets.push(("control".into(), c.control.socket.display().to_string()));
        sipwarden_core::control::Context {
            version: env!("CARGO_PKG_VERSION").into(),
            started,
            sockets,
            tcp_connections: server.egress().tcp.len(),
            reload: last_reload
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            cluster: cluster.clone(),
        }
    })
}

/// The cluster's shared state into the core, before the public sockets
/// open, within `cluster.load_timeout`. True when Redis answered with
/// something: the state file then gives only what the cluster does not
/// share. False (Redis silent, or empty after a restart of its own): the
/// node starts from its state file, and publishes it once connected.
async fn load_shared(link: &sipwarden::cluster::Link, limit: Duration) -> bool {
    match tokio::time::timeout(limit, link.load()).await {
        Ok(Ok(l)) => {
            tracing::info!(
                node = link.node(),
                bans = l.bans,
                registrations = l.registrations,
                expired = l.expired,
                rejected = l.rejected,
                over_cap = l.over_cap,
                "cluster: shared state loaded from Redis"
            );
            !l.is_empty()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cluster: cannot load the shared state from Redis; starting from the state file");
            false
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = limit.as_millis() as u64,
                "cluster: Redis did not answer within cluster.load_timeout; starting from the state file"
            );
            false
        }
    }
}

fn new_ticker(every: Duration) -> Option<tokio::time::Interval> {
    if every.is_zero() {
        return None;
    }
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Some(i)
}

async fn tick(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
