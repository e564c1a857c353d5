//! `sipwarden top`: a live full-screen view of a running proxy, polled on
//! its control socket every interval, with keys to ban and unban a
//! source. Three parts: the [`model`] (state and keys, no terminal), the
//! [`view`] (ratatui widgets over a model) and here the terminal loop,
//! which owns the real terminal and restores it on every way out.

pub mod model;
pub mod view;

use std::io::IsTerminal;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use sipwarden_core::control::answer::{Banned, Unbanned};
use sipwarden_core::control::Request;

use model::{Action, Key, Model, Snapshot};

/// Sources asked for: more than a tall terminal shows.
const SOURCES: usize = 50;

/// Sends one request to the control socket and returns its `result`, or
/// why there is none, as a line for the status line.
pub type Ask = Box<dyn Fn(&Request) -> Result<serde_json::Value, String> + Send>;

/// The answer to `req`, read as `T` (a `serde_json::from_value`).
fn ask_as<T>(
    ask: &Ask,
    req: Request,
    read: fn(serde_json::Value) -> serde_json::Result<T>,
) -> Result<T, String> {
    read(ask(&req)?).map_err(|e| format!("{}: unexpected answer: {e}", req.name()))
}

/// Every answer the screen needs.
pub fn poll(ask: &Ask) -> Result<Snapshot, String> {
    Ok(Snapshot {
        status: ask_as(ask, Request::Status, serde_json::from_value)?,
        bans: ask_as(ask, Request::Bans, serde_json::from_value)?,
        trunks: ask_as(ask, Request::Trunks, serde_json::from_value)?,
        sources: ask_as(
            ask,
            Request::Sources {
                limit: Some(SOURCES),
            },
            serde_json::from_value,
        )?,
    })
}

/// Carries out a ban or an unban; a line saying what happened.
pub fn act(ask: &Ask, a: &Action) -> Result<String, String> {
    match a {
        Action::Ban(t) => {
            let b: Banned = ask_as(
                ask,
                Request::Ban {
                    target: t.clone(),
                    duration: None,
                },
                serde_json::from_value,
            )?;
            let mut m = format!(
                "banned {} for {}",
                b.ban.target,
                model::human_secs(b.ban.left_s)
            );
            if let Some(why) = b.exempt {
                m.push_str(&format!(" (but {why})"));
            }
            Ok(m)
        }
        Action::Unban(t) => {
            let u: Unbanned = ask_as(
                ask,
                Request::Unban { target: t.clone() },
                serde_json::from_value,
            )?;
            let mut m = format!("unbanned {}", u.target);
            if !u.still_banned_by.is_empty() {
                m.push_str(&format!(
                    " (still banned by {})",
                    u.still_banned_by.join(", ")
                ));
            }
            Ok(m)
        }
        Action::Quit => Ok(String::new()),
    }
}

/// What the poller sends back to the terminal loop.
enum Msg {
    /// Boxed: a snapshot is large, the other message small.
    Polled(Box<Result<Snapshot, String>>),
    Done(Action, Result<String, String>),
}

/// The poller: a thread, so that a slow or hung socket never stops the
/// keys. It polls every `interval`, and right after a ban or unban so the
/// lists show it. It ends when the loop drops its sender.
fn poller(ask: Ask, interval: Duration, acts: Receiver<Action>, out: Sender<Msg>) {
    let mut next = Instant::now();
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match acts.recv_timeout(wait) {
            Ok(a) => {
                let r = act(&ask, &a);
                if out.send(Msg::Done(a, r)).is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if out.send(Msg::Polled(Box::new(poll(&ask)))).is_err() {
            return;
        }
        next = Instant::now() + interval;
    }
}

/// The key of a terminal event, if it is one `top` knows.
fn key_of(e: &Event) -> Option<Key> {
    let Event::Key(k) = e else { return None };
    if k.kind == KeyEventKind::Release {
        return None;
    }
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Esc => Key::Esc,
        KeyCode::Enter => Key::Enter,
        _ => return None,
    })
}

/// Puts the terminal back (cooked mode, the main screen, a cursor) when
/// dropped: on return, on error and on unwinding. A panic's message is
/// printed after it by the hook `ratatui::try_init` installs.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
        let _ = ratatui::crossterm::execute!(std::io::stdout(), ratatui::crossterm::cursor::Show);
    }
}

/// Why `top` did not run.
#[derive(Debug)]
pub enum Refused {
    /// Standard output or input is not a terminal: exit 2.
    NotATerminal,
    /// The terminal could not be set up or drawn on: exit 1.
    Terminal(std::io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NotATerminal => f.write_str(
                "top draws a full-screen view and needs a terminal: standard input and output \
                 are not both one (for scripts use `sipwarden status --json`, `sources --json`)",
            ),
            Refused::Terminal(e) => write!(f, "the terminal: {e}"),
        }
    }
}

/// Runs the view until a quit key: `socket` names the socket on screen,
/// `ask` reaches it.
pub fn run(socket: String, ask: Ask, interval: Duration) -> Result<(), Refused> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Refused::NotATerminal);
    }
    let (act_tx, act_rx) = mpsc::channel();
    let (msg_tx, msg_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("top-poller".into())
        .spawn(move || poller(ask, interval, act_rx, msg_tx))
        .map_err(Refused::Terminal)?;
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            // Raw mode may be on already.
            ratatui::restore();
            return Err(Refused::Terminal(e));
        }
    };
    let _restore = Restore;
    let mut m = Model::new(socket, interval.as_secs_f64());
    loop {
        terminal
            .draw(|f| view::draw(f, &m))
            .map_err(Refused::Terminal)?;
        // Up to a quarter second for a key, then whatever the poller sent.
        if event::poll(Duration::from_millis(250)).map_err(Refused::Terminal)? {
            let e = event::read().map_err(Refused::Terminal)?;
            if let Some(k) = key_of(&e) {
                match m.key(k) {
                    Some(Action::Quit) => return Ok(()),
                    Some(a) => {
                        m.notice = Some(match &a {
                            Action::Ban(t) => format!("banning {t}..."),
                            Action::Unban(t) => format!("unbanning {t}..."),
                            Action::Quit => String::new(),
                        });
                        // The poller is gone only if it panicked: say so.
                        if act_tx.send(a).is_err() {
                            m.error = Some("the poller stopped".into());
                        }
                    }
                    None => {}
                }
            }
        }
        while let Ok(msg) = msg_rx.try_recv() {
            match msg {
                Msg::Polled(r) => m.polled(*r),
                Msg::Done(a, r) => m.done(&a, r),
            }
        }
    }
}
