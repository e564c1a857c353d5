//! Entry points and invariants shared by the cargo-fuzz targets (`fuzz/`),
//! the stable test that replays their corpus (`tests/fuzz_corpus.rs`) and
//! the property tests (`tests/properties.rs`): one body, so whatever the
//! fuzzer found once is checked the same way on the stable toolchain.
//!
//! The invariants ([`Rig::handle`], [`quick_vs_full`]) are what must hold
//! for any input, well-formed or not, from either side:
//!
//! - every message handled moves the message counters by exactly one, in
//!   the slot its verdict names;
//! - nothing from the public side goes back out the public side except a
//!   reply to its source (no open relay), a request from the public side
//!   goes to the backend only, and a response from the public side goes
//!   on the internal side only to the backend's address or to an address
//!   the backend itself sent from earlier (never to another local
//!   service);
//! - whatever the scanner fast path drops, full admission rejects too;
//! - a forwarded message differs from the received one only in the lines
//!   sipwarden edits, and its body not at all.
//!
//! A violation panics with what was seen: libFuzzer and proptest both
//! report a panic as a failure.

use std::cell::{OnceCell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;

use crate::flow::{Flow, Side, Transport};
use crate::metrics::Metrics;
use crate::policy::admission::{admit_request, AdmissionInputs};
use crate::policy::fast_path::{screen, FastPath};
use crate::proxy::{Core, Dest, Output, Transmit};
use crate::settings::Settings;
use crate::sip::text::sockaddr_text;
use crate::sip::uri::Uri;
use crate::sip::{frame, scan, Editor, Framing, HeaderName, Limits, Message, Method};
use crate::time::UnixMs;
use crate::token::Keys;
use crate::verdict::{Disposition, Reason, Verdict};

/// Scanner, framer and editor on arbitrary bytes.
pub fn scan_bytes(data: &[u8]) {
    let l = Limits::default();
    let _ = frame(data, &l);
    for framing in [Framing::Datagram, Framing::Stream] {
        if let Ok(m) = scan(Bytes::copy_from_slice(data), framing, &l) {
            let _ = (m.from_tag(), m.to_tag(), m.top_via(), m.vias().count());
            let mut ed = Editor::new(&m);
            if let Some(v) = m.first(HeaderName::Via) {
                ed.insert_header_before(v, b"Via", &[b"SIP/2.0/UDP x;branch=z9hG4bKf"]);
            }
            for h in m.all(HeaderName::Route) {
                ed.remove_header(h);
            }
            let out = ed.finish();
            assert!(out.len() >= m.body.len());
        }
    }
}

/// The control protocol on arbitrary bytes (one request line): it parses
/// to a request or an error, never a panic; a request reads back from its
/// own line; its answer from a rig's core, or the error, is one line of
/// JSON that reads back as a response.
pub fn control_bytes(data: &[u8]) {
    use crate::control::{self, Context, Response, MAX_LINE};
    let one_line = |r: &Response| {
        let line = r.to_line();
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line:?}"
        );
        let back: Response = serde_json::from_str(&line).expect("an answer reads back");
        assert_eq!((back.ok, back.version), (r.ok, control::VERSION), "{line}");
    };
    match control::parse(data) {
        Ok(req) => {
            let line = req.to_line();
            if line.len() < MAX_LINE {
                assert_eq!(
                    control::parse(line.trim_end_matches('\n').as_bytes()),
                    Ok(req.clone()),
                    "{line}"
                );
            }
            let rig = Rig::new(Mode::Enforce);
            one_line(&control::answer(
                &rig.core,
                &Context::default(),
                rig.now,
                &req,
            ));
        }
        Err(e) => one_line(&Response::error(e)),
    }
}

/// A cluster value on arbitrary bytes (what Redis returns or the channel
/// delivers): a record or a rejection, never a panic; a record reads back
/// from its own bytes; applied to a rig's core, from the hash or the
/// channel, it never bans beyond the longest manual ban from now, never
/// stores a registration expiring more than a week ahead, and never stores
/// one whose token the rig's key did not make.
pub fn cluster_bytes(data: &[u8]) {
    use crate::cluster::{self, Applied, Body, Origin};
    let Ok(rec) = cluster::decode(data, 4096) else {
        return;
    };
    let bytes = cluster::encode(&rec);
    assert_eq!(cluster::decode(&bytes, usize::MAX), Ok(rec.clone()));
    let rig = Rig::new(Mode::Enforce);
    for origin in [Origin::Stored, Origin::Channel] {
        let applied = cluster::apply_remote(&rig.core, "fuzz", origin, rig.now, &rec);
        let t = rig.core.tables();
        for b in t.bans.all_bans(rig.now) {
            assert!(
                b.until.0
                    <= rig
                        .now
                        .0
                        .saturating_add(crate::control::answer::LONGEST_BAN_MS),
                "{b:?} from {rec:?}"
            );
        }
        if let (Applied::Taken, Body::Reg { token, trunk, .. }) = (applied, &rec.body) {
            let reg = t
                .regs
                .live_regs(rig.now, u64::MAX / 4)
                .into_iter()
                .find(|(tok, _)| &**tok == token.as_str())
                .map(|(_, r)| r);
            let Some(reg) = reg else {
                panic!("taken but not stored: {rec:?}");
            };
            assert!(reg.expires.0 <= rig.now.0 + 7 * 86_400_000, "{reg:?}");
            assert_eq!(&*reg.trunk, trunk.as_str());
        }
    }
}

/// The WebSocket upgrade check on arbitrary bytes (the first bytes of a
/// connection on a `ws:` listener, or of a `wss:` one after the handshake
/// when the first byte is odd): it never panics; an accepted upgrade ends
/// its head with the blank line within the bytes and carries a well-formed
/// key; a refusal is an HTTP status sipwarden answers with, its answer is
/// well-formed HTTP, and it is counted exactly once (nothing else is).
pub fn ws_upgrade_bytes(data: &[u8]) {
    use crate::policy::ws::Upgrade;
    use crate::web;
    let _ = web::parse_head(data);
    if let Ok(t) = std::str::from_utf8(data) {
        let _ = web::origin_parts(t);
    }
    let rig = Rig::new(Mode::Enforce);
    let sni = (data.first().is_some_and(|b| b & 1 == 1)).then_some("pbx.example.com");
    let flow = Flow {
        side: Side::Public,
        transport: if sni.is_some() {
            Transport::Wss
        } else {
            Transport::Ws
        },
        listener: 1,
        local: "203.0.113.10:8443".parse().expect("literal"),
        remote: "198.51.100.9:50000".parse().expect("literal"),
    };
    let before = counters(rig.core.metrics());
    let up = rig.core.on_ws_upgrade(rig.now, &flow, data, sni);
    let after = counters(rig.core.metrics());
    let total = |c: &Counters| c.iter().map(|x| x.4).sum::<u64>();
    let counted = total(&after) - total(&before);
    match up {
        Upgrade::More => {
            assert!(data.len() < rig.core.settings().config.ws.max_header);
            assert_eq!(counted, 0);
        }
        Upgrade::Accept { key, head_len } => {
            assert!(head_len <= data.len() && head_len >= 4, "{head_len}");
            assert_eq!(data.get(head_len - 4..head_len), Some(&b"\r\n\r\n"[..]));
            assert_eq!(key.len(), 24, "{key}");
            assert_eq!(counted, 0);
            let ok = web::switching_protocols("k");
            assert!(ok.ends_with(b"\r\n\r\n"));
        }
        Upgrade::Refuse(r) => {
            assert!(
                [400, 403, 404, 426, 431].contains(&r.status),
                "{}",
                r.status
            );
            assert!(matches!(r.reason, Reason::WsUpgrade | Reason::WsOrigin));
            assert_eq!(counted, 1, "a refusal is counted once");
            let answer = web::refusal(r.status, r.why);
            let text = String::from_utf8(answer).expect("ASCII");
            let (head, body) = text.split_once("\r\n\r\n").expect("a head");
            assert!(
                head.starts_with(&format!("HTTP/1.1 {} ", r.status)),
                "{head}"
            );
            assert!(
                head.contains(&format!("Content-Length: {}\r\n", body.len())),
                "{head}"
            );
        }
    }
}

/// The whole core on arbitrary bytes. The first byte picks the flow (bits
/// 0-2, [`Rig::flow`]), the config (bits 3-4, [`Mode`]) and how long after
/// the rig's set-up the message arrives (bits 5-6: at once, 30 s, 2 h,
/// 2 days: registrations and dialogs expire on the way); the rest is the
/// message. Each input gets a fresh core, so a crash replays alone.
pub fn core_bytes(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let rig = Rig::new(Mode::ALL[usize::from(pick >> 3) & 3]);
    let flow = Rig::flow(usize::from(pick & 7));
    let later = [0, 30_000, 7_200_000, 172_800_000][usize::from(pick >> 5) & 3];
    if flow.side == Side::Public {
        quick_vs_full(&rig, rig.now + later, rest);
    }
    rig.handle(rig.now + later, &flow, rest);
}

/// The configs a rig runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The defaults: drop silently, match Request-URI and To, Path for
    /// phones, a UDP backend.
    Enforce,
    /// `filter.mode = "monitor"`: everything forwarded.
    Monitor,
    /// `filter.on_reject = "403"`, From matched too.
    Reject403,
    /// `nat.fix_contact = true` and a TCP backend.
    FixContact,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Enforce,
        Mode::Monitor,
        Mode::Reject403,
        Mode::FixContact,
    ];

    fn config(self) -> String {
        let (filter, tail, backend) = match self {
            Mode::Enforce => ("", "", "udp"),
            Mode::Monitor => ("mode = \"monitor\"\n", "", "udp"),
            Mode::Reject403 => (
                "on_reject = \"403\"\nmatch = [\"request-uri\", \"to\", \"from\"]\n",
                "",
                "udp",
            ),
            Mode::FixContact => ("", "[nat]\nfix_contact = true\n", "tcp"),
        };
        format!("{RIG_CFG}[backend]\naddress = \"{backend}:127.0.0.1:5080\"\n[filter]\ndomains = [\"{SECRET}\"]\n{filter}{tail}")
    }
}

/// The secret domain of the rig's configs.
pub const SECRET: &str = "sip-7f3k.example.com";

/// Small tables: a core per fuzz input must be cheap to make.
const RIG_CFG: &str = r#"
[listen]
public = ["udp:203.0.113.10:5060", "tcp:203.0.113.10:5060"]
internal = ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]
advertise = "pbx.example.com:5060"
[[trunk]]
name = "provider1"
registrar = "sip.provider.example"
keepalive = "25s"
[dialog]
max_entries = 64
[registration]
max_entries = 16
[ban]
max_entries = 64
[limits]
max_sources = 64
[log]
drop_rate = 0
"#;

/// Filter settings the fast path and admission are compared under (on
/// the rig's tables): each `match` field alone and all three, with a
/// blocklist.
const FILTERS: [&str; 4] = [
    "match = [\"request-uri\"]\n",
    "match = [\"to\"]\n",
    "match = [\"from\"]\n",
    "match = [\"request-uri\", \"to\", \"from\"]\nuser_agents = [\"friendly-scanner\", \"evil\"]\n",
];

fn settings_of(text: &str) -> Settings {
    Settings::new(crate::config::parse(text, "fuzzing").expect("the rig's config is valid"))
}

thread_local! {
    /// Parsed once per thread: a config parse per fuzz input would cost
    /// more than the message.
    static MODES: OnceCell<Vec<Settings>> = const { OnceCell::new() };
    static FILTER_SETTINGS: OnceCell<Vec<Settings>> = const { OnceCell::new() };
}

fn mode_settings(mode: Mode) -> Settings {
    MODES.with(|m| {
        m.get_or_init(|| Mode::ALL.iter().map(|m| settings_of(&m.config())).collect())
            [Mode::ALL.iter().position(|x| *x == mode).unwrap_or(0)]
        .clone()
    })
}

/// Runs `f` on each of the [`FILTERS`] settings.
fn for_each_filter(mut f: impl FnMut(&Settings)) {
    FILTER_SETTINGS.with(|cell| {
        let list = cell.get_or_init(|| {
            FILTERS
                .iter()
                .map(|extra| {
                    settings_of(&format!(
                        "{RIG_CFG}[filter]\ndomains = [\"{SECRET}\"]\n{extra}"
                    ))
                })
                .collect()
        });
        for s in list {
            f(s);
        }
    });
}

/// A realistic message and the flow (index for [`Rig::flow`]) it comes on.
#[derive(Clone, Debug)]
pub struct Seed {
    pub name: &'static str,
    pub flow: usize,
    pub data: Vec<u8>,
}

/// A core with state: a live trunk registration, a phone registered over
/// TCP with a Path, a confirmed and an early inbound call, and a pending
/// call from Asterisk to the phone. The seeds reach the paths that state opens
/// (tokens, dialogs, our own Vias); the lines are header lines with this
/// core's real tokens, for mutations to insert.
pub struct Rig {
    pub core: Core,
    pub mode: Mode,
    /// When the set-up happened (ms).
    pub now: UnixMs,
    pub seeds: Arc<Vec<Seed>>,
    pub lines: Arc<Vec<String>>,
    /// Request-URI hosts: the secret domain, addresses, the trunk
    /// contact's host with its `sw=` token.
    pub hosts: Arc<Vec<String>>,
    /// Where the backend has sent from so far (the set-up's messages and
    /// every internal message handled since): with the backend's address,
    /// the only places a public input may make the core send to on the
    /// internal side.
    pub backend_sources: RefCell<Vec<(Transport, SocketAddr)>>,
}

const NOW: UnixMs = UnixMs(1_700_000_000_000);
/// The Call-IDs of the rig's confirmed and early inbound calls.
const CALL: &str = "call-1@192.168.1.20";
const PENDING: &str = "call-3@192.168.1.20";
const PROVIDER: usize = 2;
const CALLER: usize = 3;
const PHONE: usize = 4;
const ASTERISK: usize = 5;

impl Rig {
    /// How many flows [`Rig::flow`] knows.
    pub const FLOWS: usize = 8;

    /// The flows messages arrive on: 0, 1 a stranger (UDP, TCP); 2 the
    /// trunk's registrar; 3 the caller of the confirmed call; 4 the phone
    /// registered over TCP; 5, 6 Asterisk (UDP, TCP); 7 a stranger over
    /// IPv6.
    pub fn flow(i: usize) -> Flow {
        let (side, transport, remote) = match i % Self::FLOWS {
            0 => (Side::Public, Transport::Udp, "192.0.2.66:5060"),
            1 => (Side::Public, Transport::Tcp, "192.0.2.66:40000"),
            PROVIDER => (Side::Public, Transport::Udp, "198.51.100.10:5060"),
            CALLER => (Side::Public, Transport::Udp, "198.51.100.30:5062"),
            PHONE => (Side::Public, Transport::Tcp, "198.51.100.20:40001"),
            ASTERISK => (Side::Internal, Transport::Udp, "127.0.0.1:5080"),
            6 => (Side::Internal, Transport::Tcp, "127.0.0.1:40002"),
            _ => (Side::Public, Transport::Udp, "[2001:db8::66]:5060"),
        };
        let (listener, local) = match (side, transport) {
            (Side::Public, Transport::Udp) => (0, "203.0.113.10:5060"),
            (Side::Public, _) => (1, "203.0.113.10:5060"),
            (Side::Internal, Transport::Udp) => (0, "127.0.0.1:5070"),
            (Side::Internal, _) => (1, "127.0.0.1:5070"),
        };
        Flow {
            side,
            transport,
            listener,
            local: local.parse().expect("literal"),
            remote: remote.parse().expect("literal"),
        }
    }

    /// A fresh core under `mode`'s config, with the rig's state.
    pub fn new(mode: Mode) -> Rig {
        let core = Core::new(
            mode_settings(mode),
            Keys::new([5; 32]),
            Arc::new(Metrics::default()),
        );
        let i = Mode::ALL.iter().position(|m| *m == mode).unwrap_or(0);
        let script = match SCRIPTS.with(|c| c.borrow()[i].clone()) {
            Some(script) => {
                for (flow, msg) in &script.steps {
                    core.handle(NOW, &Rig::flow(*flow), msg.clone());
                }
                script
            }
            None => {
                let script = Arc::new(Script::record(&core));
                SCRIPTS.with(|c| c.borrow_mut()[i] = Some(script.clone()));
                script
            }
        };
        let rig = Rig {
            core,
            mode,
            now: NOW,
            seeds: script.seeds.clone(),
            lines: script.lines.clone(),
            hosts: script.hosts.clone(),
            backend_sources: RefCell::new(Vec::new()),
        };
        for (flow, _) in &script.steps {
            rig.sent_from(&Rig::flow(*flow));
        }
        rig
    }

    /// Remembers an internal flow's remote as a place the backend sent
    /// from.
    fn sent_from(&self, flow: &Flow) {
        let mut seen = self.backend_sources.borrow_mut();
        let src = (flow.transport, flow.remote);
        if flow.side == Side::Internal && !seen.contains(&src) {
            seen.push(src);
        }
    }

    /// Handles one message at `now` and checks every invariant on what
    /// the core did; panics, naming the input, when one fails.
    pub fn handle(&self, now: UnixMs, flow: &Flow, data: &[u8]) -> Output {
        let s = self.core.settings();
        let before = counters(self.core.metrics());
        let out = self.core.handle(now, flow, Bytes::copy_from_slice(data));
        let after = counters(self.core.metrics());
        let what = || {
            format!(
                "{flow:?} {:?}\n{}",
                self.mode,
                String::from_utf8_lossy(data)
            )
        };
        let v = out.verdict;
        counted_once(flow, v, &before, &after).unwrap_or_else(|e| panic!("{e}: {}", what()));
        let sources = self.backend_sources.borrow().clone();
        no_open_relay(flow, data, &out, &s, &sources).unwrap_or_else(|e| panic!("{e}: {}", what()));
        self.sent_from(flow);
        edits_only(flow, data, &out, &s).unwrap_or_else(|e| panic!("{e}: {}", what()));
        out
    }
}

/// How a rig gets its state, recorded on the first rig of a mode in a
/// thread and replayed on the next ones (the same keys and clock give the
/// same bytes): a core per fuzz input must be cheap.
struct Script {
    steps: Vec<(usize, Bytes)>,
    seeds: Arc<Vec<Seed>>,
    lines: Arc<Vec<String>>,
    hosts: Arc<Vec<String>>,
}

thread_local! {
    static SCRIPTS: std::cell::RefCell<[Option<Arc<Script>>; 4]> =
        const { std::cell::RefCell::new([None, None, None, None]) };
}

impl Script {
    /// The set-up steps, straight through the core (the seeds, checked,
    /// take the same paths), and the seeds and lines their answers give.
    fn record(core: &Core) -> Script {
        let mut steps = Vec::new();
        let mut send = |flow: usize, msg: &str| -> String {
            let msg = Bytes::copy_from_slice(msg.as_bytes());
            steps.push((flow, msg.clone()));
            let out = core.handle(NOW, &Rig::flow(flow), msg);
            out.transmits
                .first()
                .map(|s| String::from_utf8_lossy(&s.data).into_owned())
                .unwrap_or_default()
        };
        // Asterisk registers to the provider, which grants an hour.
        let register = asterisk_register(1);
        let to_provider = send(ASTERISK, &register);
        let contact = header_values(&to_provider, "contact")
            .first()
            .and_then(|c| c.split('<').nth(1))
            .and_then(|c| c.split('>').next())
            .unwrap_or_default()
            .to_string();
        let ok = answer(
            &to_provider,
            "200 OK",
            &format!("Contact: <{contact}>;expires=3600\r\n"),
        );
        send(PROVIDER, &ok);
        // A phone registers over TCP: Asterisk learns a Path.
        let phone_reg = phone_register();
        let to_backend = send(PHONE, &phone_reg);
        let path = header_values(&to_backend, "path")
            .first()
            .copied()
            .unwrap_or("<sip:127.0.0.1:5070;lr>")
            .to_string();
        // An inbound call, answered: a confirmed dialog.
        let invite = phone_invite(CALL, SECRET);
        let to_asterisk = send(CALLER, &invite);
        let asterisk_ok = answer(
            &to_asterisk,
            "200 OK",
            "Contact: <sip:1002@127.0.0.1:5080>\r\n",
        );
        let to_caller = send(ASTERISK, &asterisk_ok);
        let rr: Vec<String> = header_values(&to_caller, "record-route")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .collect();
        let caller_routes = rr.iter().rev().cloned().collect::<Vec<_>>().join(", ");
        let asterisk_routes = rr.join(", ");
        // A second inbound call, not answered yet: an early dialog.
        send(CALLER, &phone_invite(PENDING, SECRET));
        // Asterisk calls the phone through its Path: pending.
        let to_phone_req = asterisk_invite_via_path(&path);
        let to_phone = send(ASTERISK, &to_phone_req);

        let tag = to_tag(&to_caller).unwrap_or("uas-tag").to_string();
        let trunk_host = contact.split('@').nth(1).unwrap_or("pbx.example.com");
        let s = |name, flow, text: String| Seed {
            name,
            flow,
            data: text.into_bytes(),
        };
        let seeds = vec![
            s("scanner-options", 0, scanner_options()),
            s(
                "scanner-invite-tcp",
                1,
                phone_invite("scan-1", SECRET).replace(
                    "Content-Type",
                    "User-Agent: friendly-scanner\r\nContent-Type",
                ),
            ),
            s(
                "phone-invite",
                CALLER,
                phone_invite("call-2@192.168.1.20", SECRET),
            ),
            s("phone-register-tcp", PHONE, phone_register()),
            s(
                "caller-bye-route",
                CALLER,
                in_dialog("BYE", CALL, &format!("Route: {caller_routes}\r\n"), &tag, 2),
            ),
            s(
                "caller-ack-route",
                CALLER,
                in_dialog("ACK", CALL, &format!("Route: {caller_routes}\r\n"), &tag, 1),
            ),
            s(
                "caller-reinvite-dialog",
                CALLER,
                in_dialog("INVITE", CALL, "", &tag, 3),
            ),
            s(
                "caller-cancel",
                CALLER,
                in_dialog("CANCEL", PENDING, "", "", 1),
            ),
            s(
                "provider-invite-trunk-contact",
                PROVIDER,
                provider_invite(&contact, "p-1"),
            ),
            s(
                "stranger-invite-trunk-contact",
                0,
                provider_invite(&contact, "p-2"),
            ),
            s(
                "provider-invite-by-ip",
                PROVIDER,
                provider_invite("sip:+4930123@203.0.113.10", "p-3"),
            ),
            s(
                "provider-401",
                PROVIDER,
                answer(
                    &to_provider,
                    "401 Unauthorized",
                    "WWW-Authenticate: Digest realm=\"p\", nonce=\"n\"\r\n",
                ),
            ),
            s("provider-200-register", PROVIDER, ok),
            s("phone-180-tcp", PHONE, answer(&to_phone, "180 Ringing", "")),
            s(
                "phone-200-tcp",
                PHONE,
                answer(
                    &to_phone,
                    "200 OK",
                    "Contact: <sip:1001@10.0.0.99:5062;transport=tcp>\r\n",
                ),
            ),
            s("asterisk-register", ASTERISK, asterisk_register(2)),
            s("asterisk-invite-path", ASTERISK, to_phone_req),
            s(
                "asterisk-invite-provider",
                ASTERISK,
                asterisk_invite_provider(),
            ),
            s(
                "asterisk-bye-route",
                ASTERISK,
                asterisk_bye(&asterisk_routes, &tag),
            ),
            s(
                "asterisk-180",
                ASTERISK,
                answer(&to_asterisk, "180 Ringing", ""),
            ),
            s("asterisk-options-tcp", 6, asterisk_options_tcp()),
            s("stranger-register-ipv6", 7, phone_register()),
            s("keepalive", 0, "\r\n\r\n".to_string()),
        ];
        let mut lines: Vec<String> = vec![
            format!("Route: {caller_routes}"),
            format!("Route: {}", rr.first().map_or("", |r| r.as_str())),
            format!("Route: {path}"),
            "Route: <sip:127.0.0.1:5070;lr>".into(),
            "Route: <sip:pbx.example.com;lr;swr=00ff00ff00ff00ff>".into(),
            "Route: <sip:evil.example.net;lr>".into(),
            format!("To: <sip:1002@{SECRET}>"),
            "To: <sip:100@203.0.113.10>;tag=uas-tag".into(),
            format!("From: <sip:x@{SECRET}>;tag=zz"),
            format!("t: <sip:1@{SECRET}>;tag={tag}"),
            "User-Agent: friendly-scanner".into(),
            "X-Sipwarden-Trunk: forged".into(),
            "X-Sipwarden-Source: 10.0.0.1:5060".into(),
            "Max-Forwards: 0".into(),
            "Max-Forwards: 1".into(),
            "Via: SIP/2.0/UDP 203.0.113.99:5060;branch=z9hG4bK-x;rport".into(),
            "v: SIP/2.0/TCP [2001:db8::9]:5062;received=10.0.0.1;branch=z9hG4bK-y".into(),
            "Contact: *".into(),
            "Contact: <sip:1001@10.0.0.99:5062>;expires=0".into(),
            "m: sip:a@192.0.2.5;ob".into(),
            "Expires: 0".into(),
            "Content-Length: 5".into(),
            " folded continuation".into(),
            "Supported: path".into(),
            "Path: <sip:x@192.0.2.5;lr>".into(),
            "Record-Route: <sip:rr.example.net;lr>".into(),
            format!("Call-ID: {CALL}"),
            "Authorization: Digest username=\"acct\", response=\"00\"".into(),
            // Lines nobody edits, which must pass untouched.
            "X-Custom: keep me".into(),
            format!("Subject: call {SECRET}"),
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS".into(),
        ];
        // Our own Vias, as they went out: a message that carries one
        // back is a response to match, or a loop.
        for fwd in [&to_provider, &to_asterisk, &to_phone] {
            if let Some(v) = header_values(fwd, "via").first() {
                lines.push(format!("Via: {v}"));
            }
        }
        let hosts = vec![
            SECRET.into(),
            "SIP-7F3K.Example.COM:5060".into(),
            "203.0.113.10".into(),
            trunk_host.into(),
            "pbx.example.com;sw=0011".into(),
            "sip.provider.example".into(),
            "[2001:db8::1]:5062".into(),
            "127.0.0.1:5080".into(),
        ];
        Script {
            steps,
            seeds: Arc::new(seeds),
            lines: Arc::new(lines),
            hosts: Arc::new(hosts),
        }
    }
}

/// Every message counter with its labels (for [`counted_once`]).
pub type Counters = Vec<(Side, Transport, Reason, Disposition, u64)>;

pub fn counters(m: &Metrics) -> Counters {
    m.messages()
}

/// Invariant: one message moved exactly one counter, by one: the one
/// its flow and verdict name.
pub fn counted_once(
    flow: &Flow,
    v: Verdict,
    before: &Counters,
    after: &Counters,
) -> Result<(), String> {
    let name = |side: Side, t: Transport, r: Reason, d: Disposition| {
        format!(
            "{}/{}/{}/{}",
            side.as_str(),
            t.as_str(),
            r.as_str(),
            d.as_str()
        )
    };
    let moved: Vec<(String, i128)> = before
        .iter()
        .zip(after)
        .filter(|(b, a)| a.4 != b.4)
        .map(|(b, a)| (name(a.0, a.1, a.2, a.3), i128::from(a.4) - i128::from(b.4)))
        .collect();
    let want = name(flow.side, flow.transport, v.reason, v.disposition);
    if moved.len() == 1 && moved[0] == (want.clone(), 1) {
        Ok(())
    } else {
        Err(format!("counters moved {moved:?}, expected {want} by one"))
    }
}

fn reply_to_source(flow: &Flow, s: &Transmit) -> bool {
    s.side == flow.side && s.transport == flow.transport && s.dest == Dest::Addr(flow.remote)
}

fn describe(s: &Transmit) -> String {
    format!(
        "{:?}/{:?} to {:?}: {:?}",
        s.side,
        s.transport,
        s.dest,
        String::from_utf8_lossy(&s.data[..s.data.len().min(80)])
    )
}

fn framing(flow: &Flow) -> Framing {
    match flow.transport {
        // A WebSocket message holds exactly one SIP message, Content-Length
        // optional (RFC 7118 5.2): a datagram's framing.
        Transport::Udp | Transport::Ws | Transport::Wss => Framing::Datagram,
        Transport::Tcp | Transport::Tls => Framing::Stream,
    }
}

/// Invariant: where things go. Nothing that came in on the public side
/// leaves on the public side except a reply to its source (no open
/// relay); a request from there reaches the backend and nothing else;
/// and nothing from there reaches the internal side anywhere but the
/// backend's address or one of `backend_sources`, the places the backend
/// itself sent from (where it gets the responses to its requests): a
/// phone that rewrites the address in the Via below ours must not make
/// sipwarden send to another local service. Replies (and the answers
/// kept for a failed send) go back on the flow they answer; a drop, and
/// an input that does not scan, sends nothing.
pub fn no_open_relay(
    flow: &Flow,
    input: &[u8],
    out: &Output,
    s: &Settings,
    backend_sources: &[(Transport, SocketAddr)],
) -> Result<(), String> {
    let v = out.verdict;
    let msg = scan(Bytes::copy_from_slice(input), framing(flow), &s.limits).ok();
    if (v.disposition == Disposition::Dropped || msg.is_none()) && !out.transmits.is_empty() {
        return Err(format!(
            "{} with {} send(s): {}",
            v.disposition.as_str(),
            out.transmits.len(),
            describe(&out.transmits[0])
        ));
    }
    let public_request = flow.side == Side::Public && msg.as_ref().is_some_and(|m| m.is_request());
    for send in &out.transmits {
        if v.disposition == Disposition::Replied && !reply_to_source(flow, send) {
            return Err(format!("a reply not to its source: {}", describe(send)));
        }
        if flow.side == Side::Public && send.side == Side::Public && !reply_to_source(flow, send) {
            return Err(format!("open relay: {}", describe(send)));
        }
        if public_request && send.side == Side::Internal && send.dest != Dest::Addr(s.backend.addr)
        {
            return Err(format!(
                "a public request sent past the backend: {}",
                describe(send)
            ));
        }
        if flow.side == Side::Public && send.side == Side::Internal {
            let backend =
                send.transport == s.backend.transport && send.dest == Dest::Addr(s.backend.addr);
            let source = match &send.dest {
                Dest::Addr(a) => backend_sources.contains(&(send.transport, *a)),
                Dest::Name { .. } => false,
            };
            if !backend && !source {
                return Err(format!(
                    "relayed to the internal side where the backend never was: {}",
                    describe(send)
                ));
            }
        }
        let mut fail = send.on_fail.as_deref();
        while let Some(f) = fail {
            if !reply_to_source(flow, f) {
                return Err(format!(
                    "an on_fail answer not to its source: {}",
                    describe(f)
                ));
            }
            fail = f.on_fail.as_deref();
        }
    }
    Ok(())
}

/// Re-scanning what the core wrote: no message of ours may exceed what
/// its input plus our lines take.
const LOOSE: Limits = Limits {
    max_message: 1 << 20,
    max_headers: 4096,
    max_line: 1 << 20,
};

/// The header lines sipwarden may edit in a message of this kind;
/// every other line is forwarded as it came.
fn editable(name: HeaderName, msg: &Message, fix_contact: bool) -> bool {
    let register = msg.method() == Some(Method::Register);
    let request = msg.is_request();
    match name {
        HeaderName::Via | HeaderName::XSipwarden => true,
        HeaderName::Route | HeaderName::RecordRoute | HeaderName::MaxForwards => request,
        HeaderName::Path | HeaderName::Supported => register,
        HeaderName::Contact => register || fix_contact,
        _ => false,
    }
}

fn kept_lines(msg: &Message, fix_contact: bool) -> Vec<&[u8]> {
    msg.headers
        .iter()
        .filter(|h| !editable(h.name, msg, fix_contact))
        .map(|h| msg.slice(h.line))
        .collect()
}

fn lossy_lines(lines: &[&[u8]]) -> Vec<String> {
    lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

/// Invariant: a forwarded message is the received one with only the lines
/// sipwarden edits changed: every other header line byte-identical and in
/// its order, the body identical, the start line too unless a trunk
/// contact token (`sw=`) names the Request-URI to restore. The
/// `X-Sipwarden-*` lines are ours alone: on the way to the backend the
/// source (and a trunk), elsewhere none.
pub fn edits_only(flow: &Flow, input: &[u8], out: &Output, s: &Settings) -> Result<(), String> {
    let v = out.verdict;
    if !matches!(
        v.disposition,
        Disposition::Forwarded | Disposition::WouldDrop
    ) {
        return Ok(());
    }
    if out.transmits.len() != 1 {
        return Err(format!("forwarded as {} sends", out.transmits.len()));
    }
    let inp = scan(Bytes::copy_from_slice(input), framing(flow), &s.limits)
        .map_err(|e| format!("forwarded what does not scan ({})", e.as_str()))?;
    let fwd = scan(out.transmits[0].data.clone(), Framing::Datagram, &LOOSE)
        .map_err(|e| format!("the forwarded message does not scan ({})", e.as_str()))?;
    let fix = s.config.nat.fix_contact;
    if inp.is_request() != fwd.is_request() {
        return Err("a request became a response or back".into());
    }
    let (a, b) = (inp.slice(inp.start_line), fwd.slice(fwd.start_line));
    if a != b {
        let token = inp
            .request_uri()
            .and_then(Uri::parse)
            .is_some_and(|u| u.param(b"sw").is_some());
        let method = |m: &Message, l: &[u8]| {
            m.request_uri_span().map(|u| {
                let off = u.start as usize - m.start_line.start as usize;
                (l[..off].to_vec(), l[off + u.len()..].to_vec())
            })
        };
        if !(flow.side == Side::Public && token && method(&inp, a) == method(&fwd, b)) {
            return Err(format!(
                "start line changed: {:?} -> {:?}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            ));
        }
    }
    let (ka, kb) = (kept_lines(&inp, fix), kept_lines(&fwd, fix));
    if ka != kb {
        return Err(format!(
            "lines sipwarden does not edit changed:\n  in:  {:?}\n  out: {:?}",
            lossy_lines(&ka),
            lossy_lines(&kb)
        ));
    }
    if inp.slice(inp.body) != fwd.slice(fwd.body) {
        return Err("the body changed".into());
    }
    let ours: Vec<&[u8]> = fwd
        .all(HeaderName::XSipwarden)
        .map(|h| fwd.slice(h.line))
        .collect();
    let to_backend = flow.side == Side::Public && inp.is_request();
    let source = format!(
        "X-Sipwarden-Source: {}\r\n",
        String::from_utf8_lossy(sockaddr_text(flow.remote).as_bytes())
    );
    let ok = if to_backend {
        ours.iter().filter(|l| **l == source.as_bytes()).count() == 1
            && ours.iter().all(|l| {
                *l == source.as_bytes() || *l == b"X-Sipwarden-Trunk: provider1\r\n".as_slice()
            })
    } else {
        ours.is_empty()
    };
    if !ok {
        return Err(format!(
            "X-Sipwarden lines {:?} (expected only ours)",
            lossy_lines(&ours)
        ));
    }
    Ok(())
}

/// Invariant: the scanner fast path drops only what full admission
/// rejects, and its hint changes no decision, under each of the
/// [`FILTERS`] and the rig's tables at `now`, for a source that is no
/// trunk (a trunk's messages skip the fast path).
pub fn quick_vs_full(rig: &Rig, now: UnixMs, data: &[u8]) {
    let src: IpAddr = "192.0.2.66".parse().expect("literal");
    // What does not scan is dropped as malformed anyway. Admission reads
    // no body, so the framing only matters where one of them refuses.
    let limits = Limits::default();
    let Some(msg) = [Framing::Datagram, Framing::Stream]
        .into_iter()
        .find_map(|f| scan(Bytes::copy_from_slice(data), f, &limits).ok())
    else {
        return;
    };
    for_each_filter(|s| {
        let q = screen(data, s);
        let what = || {
            format!(
                "under {:?}:\n{}",
                (s.match_ruri, s.match_to, s.match_from),
                String::from_utf8_lossy(data)
            )
        };
        if !msg.is_request() {
            assert!(
                !matches!(q, FastPath::Drop(_)),
                "the fast path dropped a response {}",
                what()
            );
            return;
        }
        let core = &rig.core;
        let mut ctx = AdmissionInputs::new(s, core.keys(), core.tables(), now, src);
        let plain = admit_request(&msg, &ctx);
        match q {
            FastPath::Drop(r) => assert!(
                plain.is_err(),
                "the fast path dropped ({}) what admission admits ({:?}) {}",
                r.as_str(),
                plain,
                what()
            ),
            FastPath::FullScan { ruri_domain: true } => {
                ctx.ruri_domain = true;
                let hinted = admit_request(&msg, &ctx);
                assert_eq!(
                    hinted,
                    plain,
                    "the fast path's hint changed the decision {}",
                    what()
                );
            }
            FastPath::FullScan { ruri_domain: false } => {}
        }
    });
}

// The literal messages, after the tests' (tests/core_rules.rs,
// tests/tables.rs).

fn scanner_options() -> String {
    "OPTIONS sip:100@203.0.113.10 SIP/2.0\r\n\
     Via: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-1\r\n\
     From: \"sipvicious\"<sip:100@1.1.1.1>;tag=x\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\n\
     Call-ID: 5@x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: Linphone\r\nContent-Length: 0\r\n\r\n"
        .into()
}

fn phone_invite(call: &str, domain: &str) -> String {
    format!(
        "INVITE sip:1002@{domain} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-{call};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:1001@{domain}>;tag=ph-tag\r\n\
         To: <sip:1002@{domain}>\r\n\
         Call-ID: {call}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:1001@192.168.1.20:5062>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: 4\r\n\r\nv=0\n"
    )
}

/// A request of the confirmed call from the caller: nothing in it names
/// the secret domain, only the dialog (or its Route set) admits it.
fn in_dialog(method: &str, call: &str, route: &str, to_tag: &str, cseq: u32) -> String {
    let tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    format!(
        "{method} sip:1002@127.0.0.1:5080 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-{method}{cseq};rport\r\n\
         {route}Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:1001@192.168.1.20>;tag=ph-tag\r\n\
         To: <sip:1002@203.0.113.10>{tag}\r\n\
         Call-ID: {call}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn phone_register() -> String {
    format!(
        "REGISTER sip:{SECRET} SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.99:5062;branch=z9hG4bK-pr1;rport\r\n\
         From: <sip:1001@{SECRET}>;tag=pt\r\nTo: <sip:1001@{SECRET}>\r\nCall-ID: phone-reg-1\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:1001@10.0.0.99:5062;transport=tcp>\r\nSupported: replaces\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn asterisk_register(cseq: u32) -> String {
    format!(
        "REGISTER sip:sip.provider.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK-reg{cseq}\r\n\
         Route: <sip:127.0.0.1:5070;lr>\r\nFrom: <sip:acct@sip.provider.example>;tag=r1\r\nTo: <sip:acct@sip.provider.example>\r\n\
         Call-ID: reg-call-1\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:acct@127.0.0.1:5080;line=xyz>\r\nExpires: 3600\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn provider_invite(ruri: &str, call: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-{call}\r\n\
         From: <sip:+15551234@198.51.100.10>;tag=p-{call}\r\nTo: <sip:+4930123@198.51.100.10>\r\nCall-ID: {call}\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
    )
}

fn asterisk_invite_via_path(path: &str) -> String {
    format!(
        "INVITE sip:1001@10.0.0.99:5062;transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK-ai1\r\n\
         Route: <sip:127.0.0.1:5070;lr>\r\nFrom: <sip:1002@pbx.example.com>;tag=ast1\r\nTo: <sip:1001@pbx.example.com>\r\n\
         Contact: <sip:asterisk@127.0.0.1:5080>\r\nCall-ID: to-phone-1\r\nCSeq: 10 INVITE\r\nMax-Forwards: 70\r\n\
         Route: {path}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn asterisk_invite_provider() -> String {
    "INVITE sip:+4930123@sip.provider.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK-ao1\r\n\
     Route: <sip:127.0.0.1:5070;lr>\r\nFrom: <sip:acct@sip.provider.example>;tag=ao\r\nTo: <sip:+4930123@sip.provider.example>\r\n\
     Contact: <sip:acct@127.0.0.1:5080>\r\nCall-ID: out-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
     Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
        .into()
}

fn asterisk_bye(routes: &str, to_tag: &str) -> String {
    format!(
        "BYE sip:1001@192.168.1.20:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK-ab1\r\n\
         Route: {routes}\r\nFrom: <sip:1002@{SECRET}>;tag={to_tag}\r\nTo: \"Alice\" <sip:1001@{SECRET}>;tag=ph-tag\r\n\
         Call-ID: {CALL}\r\nCSeq: 5 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn asterisk_options_tcp() -> String {
    "OPTIONS sip:1001@198.51.100.20:40001;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:40002;rport;branch=z9hG4bK-qo1\r\n\
     From: <sip:asterisk@pbx.example.com>;tag=q1\r\nTo: <sip:1001@pbx.example.com>\r\nCall-ID: qualify-1\r\n\
     CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        .into()
}

/// The values of the header lines with this (full) name.
fn header_values<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fn to_tag(msg: &str) -> Option<&str> {
    header_values(msg, "to")
        .first()?
        .split(";tag=")
        .nth(1)
        .map(|t| t.split(';').next().unwrap_or(t))
}

/// What a UAS answers (RFC 3261 8.2.6, 12.1.1): Vias, Record-Routes,
/// From, To (with a tag), Call-ID and CSeq of the request.
fn answer(req: &str, status: &str, extra: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in req.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "record-route" | "from" | "f" | "call-id" | "i" | "cseq" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "to" | "t" => {
                out.push_str(line);
                if !line.contains("tag=") {
                    out.push_str(";tag=uas-tag");
                }
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.push_str(extra);
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}
