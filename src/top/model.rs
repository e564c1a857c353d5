//! What `sipwarden top` shows and what a key does, without a terminal: the
//! last answers of the control socket, the selection in the sources and
//! bans lists, the confirmation prompt and the status line. A key gives at
//! most one [`Action`] for the terminal loop to carry out; its result and
//! each poll come back as plain values. All of it is tested without a
//! terminal or a socket.

use sipwarden_core::control::answer::{Ban, Bans, Source, Sources, Status, Trunk, Trunks};

/// The answers of one poll: every request the view needs, taken together
/// so that a screen never mixes two polls.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub status: Status,
    pub bans: Bans,
    pub trunks: Trunks,
    pub sources: Sources,
}

/// The list the arrows move in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Sources,
    Bans,
}

/// A key, as the terminal loop reads it (only those `top` uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    Home,
    End,
    Tab,
    BackTab,
    Esc,
    Enter,
    /// Ctrl-C: quits whatever is on screen (raw mode turns it into a key).
    Interrupt,
    Char(char),
}

/// What a key asks the terminal loop to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ban the address for `ban.duration` (the `ban` request without `for`).
    Ban(String),
    /// Lift the ban of an address or a network.
    Unban(String),
    Quit,
}

/// A question on the status line, waiting for y or n.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    Ban(String),
}

/// A selected row, kept on the same source (or ban) across refreshes
/// while it is listed: the lists reorder every second.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Selection {
    index: usize,
    key: Option<String>,
}

impl Selection {
    /// After the list changed: back on the row with the same key if it is
    /// still there, else at the same position (within the list).
    fn follow(&mut self, keys: &[String]) {
        if let Some(i) = self
            .key
            .as_deref()
            .and_then(|k| keys.iter().position(|x| x == k))
        {
            self.index = i;
        } else {
            self.index = self.index.min(keys.len().saturating_sub(1));
        }
        self.key = keys.get(self.index).cloned();
    }

    fn step(&mut self, keys: &[String], delta: isize) {
        if keys.is_empty() {
            return;
        }
        let last = keys.len() - 1;
        self.index = self.index.saturating_add_signed(delta).min(last);
        self.key = Some(keys[self.index].clone());
    }

    fn to(&mut self, keys: &[String], index: usize) {
        self.index = index.min(keys.len().saturating_sub(1));
        self.key = keys.get(self.index).cloned();
    }
}

/// The state of the view.
#[derive(Clone, Debug)]
pub struct Model {
    /// The socket's path, for the status line.
    pub socket: String,
    /// Seconds between polls, for the status line.
    pub interval_s: f64,
    /// The last answered poll; kept (and shown as stale) while the socket
    /// is unreachable.
    pub snapshot: Option<Snapshot>,
    /// The top sources of the last poll: those with the most messages and
    /// those with the most rejects, merged, most messages first.
    pub sources: Vec<Source>,
    pub focus: Focus,
    source_sel: Selection,
    ban_sel: Selection,
    pub prompt: Option<Prompt>,
    pub help: bool,
    /// Why the last poll failed, until one succeeds.
    pub error: Option<String>,
    /// What became of the last ban or unban.
    pub notice: Option<String>,
    /// Polls answered, polls failed: the status line says which came last.
    pub polls: u64,
    pub failures: u64,
}

impl Model {
    pub fn new(socket: impl Into<String>, interval_s: f64) -> Model {
        Model {
            socket: socket.into(),
            interval_s,
            snapshot: None,
            sources: Vec::new(),
            focus: Focus::Sources,
            source_sel: Selection::default(),
            ban_sel: Selection::default(),
            prompt: None,
            help: false,
            error: None,
            notice: None,
            polls: 0,
            failures: 0,
        }
    }

    fn source_keys(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.source.clone()).collect()
    }

    fn ban_keys(&self) -> Vec<String> {
        self.bans().iter().map(|b| b.target.clone()).collect()
    }

    /// The keys of the focused list and its selection.
    fn focused(&mut self) -> (Vec<String>, &mut Selection) {
        match self.focus {
            Focus::Sources => (self.source_keys(), &mut self.source_sel),
            Focus::Bans => (self.ban_keys(), &mut self.ban_sel),
        }
    }

    /// The bans of the last poll.
    pub fn bans(&self) -> &[Ban] {
        self.snapshot.as_ref().map_or(&[], |s| &s.bans.bans)
    }

    /// The trunks of the last poll.
    pub fn trunks(&self) -> &[Trunk] {
        self.snapshot.as_ref().map_or(&[], |s| &s.trunks.trunks)
    }

    pub fn status(&self) -> Option<&Status> {
        self.snapshot.as_ref().map(|s| &s.status)
    }

    /// The selected row of the sources list, if it has any.
    pub fn selected_source_index(&self) -> Option<usize> {
        (!self.sources.is_empty()).then_some(self.source_sel.index)
    }

    /// The selected row of the bans list, if it has any.
    pub fn selected_ban_index(&self) -> Option<usize> {
        (!self.bans().is_empty()).then_some(self.ban_sel.index)
    }

    pub fn selected_source(&self) -> Option<&Source> {
        self.selected_source_index()
            .and_then(|i| self.sources.get(i))
    }

    pub fn selected_ban(&self) -> Option<&Ban> {
        self.selected_ban_index().and_then(|i| self.bans().get(i))
    }

    /// A poll's outcome. A failure keeps what was shown and says why on
    /// the status line; the next poll tries again.
    pub fn polled(&mut self, r: Result<Snapshot, String>) {
        match r {
            Ok(s) => {
                self.sources = merge(&s.sources);
                self.snapshot = Some(s);
                self.error = None;
                self.polls += 1;
                let keys = self.source_keys();
                self.source_sel.follow(&keys);
                let keys = self.ban_keys();
                self.ban_sel.follow(&keys);
            }
            Err(e) => {
                self.error = Some(e);
                self.failures += 1;
            }
        }
    }

    /// The result of a ban or unban: a line for the status line.
    pub fn done(&mut self, action: &Action, r: Result<String, String>) {
        self.notice = Some(match (action, r) {
            (_, Ok(m)) => m,
            (Action::Ban(t), Err(e)) => format!("ban {t} failed: {e}"),
            (Action::Unban(t), Err(e)) => format!("unban {t} failed: {e}"),
            (Action::Quit, Err(e)) => e,
        });
    }

    /// One key: what it changes on screen and what, if anything, the loop
    /// has to do.
    pub fn key(&mut self, k: Key) -> Option<Action> {
        if k == Key::Interrupt {
            return Some(Action::Quit);
        }
        if self.help {
            // Any key closes the help; it does nothing else.
            self.help = false;
            return None;
        }
        if let Some(Prompt::Ban(target)) = &self.prompt {
            let target = target.clone();
            return match k {
                Key::Char('y' | 'Y') => {
                    self.prompt = None;
                    Some(Action::Ban(target))
                }
                Key::Char('n' | 'N' | 'q') | Key::Esc => {
                    self.prompt = None;
                    self.notice = Some(format!("not banned: {target}"));
                    None
                }
                _ => None,
            };
        }
        match k {
            Key::Char('q') | Key::Esc => return Some(Action::Quit),
            Key::Char('?') => self.help = true,
            Key::Up | Key::Char('k') => self.step(-1),
            Key::Down | Key::Char('j') => self.step(1),
            Key::Home | Key::Char('g') => self.jump(0),
            Key::End | Key::Char('G') => self.jump(usize::MAX),
            Key::Tab | Key::BackTab => {
                self.focus = match self.focus {
                    Focus::Sources => Focus::Bans,
                    Focus::Bans => Focus::Sources,
                }
            }
            Key::Char('b') => match self.focus {
                Focus::Sources => match self.selected_source() {
                    Some(s) => self.prompt = Some(Prompt::Ban(s.source.clone())),
                    None => self.notice = Some("no source to ban".into()),
                },
                Focus::Bans => {
                    self.notice = Some("b bans a source: Tab to the sources list".into())
                }
            },
            Key::Char('u') => {
                let target = match self.focus {
                    Focus::Sources => match self.selected_source() {
                        Some(s) if s.banned => Some(s.source.clone()),
                        Some(s) => {
                            self.notice = Some(format!("{} is not banned", s.source));
                            None
                        }
                        None => {
                            self.notice = Some("no source selected".into());
                            None
                        }
                    },
                    Focus::Bans => match self.selected_ban() {
                        Some(b) => Some(b.target.clone()),
                        None => {
                            self.notice = Some("no ban to lift".into());
                            None
                        }
                    },
                };
                return target.map(Action::Unban);
            }
            _ => {}
        }
        None
    }

    fn step(&mut self, delta: isize) {
        let (keys, sel) = self.focused();
        sel.step(&keys, delta);
    }

    fn jump(&mut self, index: usize) {
        let (keys, sel) = self.focused();
        sel.to(&keys, index);
    }
}

/// The sources with the most messages and those with the most rejects in
/// one list, most messages first: a scanner that is turned away shows up
/// even when the trunk sends more.
pub fn merge(s: &Sources) -> Vec<Source> {
    let mut v: Vec<Source> = s.by_messages.clone();
    for r in &s.by_rejects {
        if !v.iter().any(|x| x.source == r.source) {
            v.push(r.clone());
        }
    }
    v.sort_by(|a, b| {
        b.messages
            .cmp(&a.messages)
            .then(b.rejects.cmp(&a.rejects))
            .then(a.source.cmp(&b.source))
    });
    v
}

/// Messages per second in, forwarded and stopped over the last 10 s, from
/// the status answer: forwarded counts `would-drop` (monitor mode sent it
/// on), stopped counts `dropped` and `replied` (answered by sipwarden
/// itself, a 403 or a pong).
pub fn header_rates(s: &Status) -> (f64, f64, f64) {
    let get = |d: &str| s.rates.last_10s.get(d).copied().unwrap_or(0.0);
    let total = s.rates.last_10s.values().sum();
    (
        total,
        get("forwarded") + get("would-drop"),
        get("dropped") + get("replied"),
    )
}

/// Messages per second of every second of the last minute, all
/// dispositions together, oldest first.
pub fn history(s: &Status) -> Vec<f64> {
    let n = s.rates.history.values().map(Vec::len).max().unwrap_or(0);
    let mut v = vec![0.0; n];
    for h in s.rates.history.values() {
        // Right-aligned: every series ends at the newest second.
        let off = n - h.len();
        for (i, x) in h.iter().enumerate() {
            v[off + i] += x;
        }
    }
    v
}

/// A duration for a person: `45s`, `3m05s`, `2h03m`, `3d04h`.
pub fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A rate for a column: one decimal below 1000/s, whole numbers above.
pub fn human_rate(x: f64) -> String {
    if x < 1000.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use sipwarden_core::control::answer::{Rates, ReasonRate, TableSizes};
    use sipwarden_core::time::UnixMs;

    pub(crate) fn source(ip: &str, messages: u64, rejects: u64, banned: bool) -> Source {
        Source {
            source: ip.into(),
            messages,
            error: 0,
            rejects,
            reasons: if rejects > 0 {
                BTreeMap::from([("user-agent".to_string(), rejects)])
            } else {
                BTreeMap::new()
            },
            top_reason: (rejects > 0).then(|| "user-agent".into()),
            banned,
        }
    }

    pub(crate) fn ban(target: &str, left_s: u64) -> Ban {
        Ban {
            target: target.into(),
            trigger: "manual".into(),
            since: "2026-01-01T00:00:00Z".into(),
            since_ms: UnixMs(0),
            until: "2026-01-01T01:00:00Z".into(),
            until_ms: UnixMs(3_600_000),
            left_s,
        }
    }

    /// A poll as a busy proxy answers it: a scanner, a phone, a trunk.
    pub(crate) fn snapshot() -> Snapshot {
        let d = |f: f64, w: f64, dr: f64, r: f64| {
            BTreeMap::from([
                ("forwarded".to_string(), f),
                ("would-drop".to_string(), w),
                ("dropped".to_string(), dr),
                ("replied".to_string(), r),
            ])
        };
        let mut history = BTreeMap::new();
        history.insert(
            "forwarded".to_string(),
            (0..60).map(|i| f64::from(i % 7)).collect(),
        );
        history.insert(
            "dropped".to_string(),
            (0..60).map(|i| f64::from(i % 13) * 3.0).collect(),
        );
        Snapshot {
            status: Status {
                version: "0.1.0".into(),
                started: "2026-01-01T00:00:00Z".into(),
                started_ms: UnixMs(0),
                uptime_s: 3725,
                mode: "enforce".into(),
                sockets: vec![],
                rates: Rates {
                    window_s: 10.0,
                    last_10s: d(12.5, 0.0, 40.25, 1.0),
                    since_start: d(1.0, 0.0, 2.0, 0.0),
                    by_reason: vec![
                        ReasonRate {
                            reason: "user-agent".into(),
                            disposition: "dropped".into(),
                            per_second: 40.25,
                        },
                        ReasonRate {
                            reason: "domain".into(),
                            disposition: "forwarded".into(),
                            per_second: 12.5,
                        },
                    ],
                    history,
                },
                totals: BTreeMap::new(),
                tables: TableSizes {
                    bans: 1,
                    ban_networks: 1,
                    rate_sources: 3,
                    dialogs: 4,
                    registrations: 1,
                    tcp_connections: 0,
                },
                reload: None,
                cluster: None,
            },
            bans: Bans {
                bans: vec![ban("203.0.113.9", 3599), ban("198.51.100.0/24", 60)],
            },
            trunks: Trunks {
                trunks: vec![Trunk {
                    name: "carrier".into(),
                    configured: true,
                    registrar: "sip.carrier.example".into(),
                    registered: true,
                    registrations: 1,
                    expires: Some("2026-01-01T00:05:00Z".into()),
                    expires_ms: Some(UnixMs(300_000)),
                    expires_in_s: Some(185),
                    addresses: vec!["192.0.2.50:5060".into()],
                    last_register: None,
                    last_registered: None,
                    last_invite: None,
                }],
            },
            sources: Sources {
                window_s: 45,
                by_messages: vec![
                    source("127.0.0.4", 400, 400, false),
                    source("192.0.2.50", 120, 0, false),
                ],
                by_rejects: vec![
                    source("127.0.0.4", 400, 400, false),
                    source("203.0.113.9", 3, 3, true),
                ],
            },
        }
    }

    fn polled() -> Model {
        let mut m = Model::new("/run/sipwarden/control.sock", 1.0);
        m.polled(Ok(snapshot()));
        m
    }

    #[test]
    fn sources_merge_messages_and_rejects_most_messages_first() {
        let m = polled();
        let ips: Vec<&str> = m.sources.iter().map(|s| s.source.as_str()).collect();
        assert_eq!(ips, ["127.0.0.4", "192.0.2.50", "203.0.113.9"]);
        assert_eq!(m.selected_source().unwrap().source, "127.0.0.4");
    }

    #[test]
    fn arrows_and_jk_move_within_the_focused_list() {
        let mut m = polled();
        assert_eq!(m.key(Key::Up), None);
        assert_eq!(m.selected_source_index(), Some(0));
        m.key(Key::Down);
        m.key(Key::Char('j'));
        m.key(Key::Char('j'));
        assert_eq!(m.selected_source().unwrap().source, "203.0.113.9");
        m.key(Key::Char('k'));
        assert_eq!(m.selected_source().unwrap().source, "192.0.2.50");
        m.key(Key::Tab);
        assert_eq!(m.focus, Focus::Bans);
        m.key(Key::Down);
        assert_eq!(m.selected_ban().unwrap().target, "198.51.100.0/24");
        // The sources selection did not move.
        assert_eq!(m.selected_source().unwrap().source, "192.0.2.50");
        m.key(Key::Home);
        assert_eq!(m.selected_ban().unwrap().target, "203.0.113.9");
        m.key(Key::BackTab);
        m.key(Key::End);
        assert_eq!(m.selected_source().unwrap().source, "203.0.113.9");
    }

    #[test]
    fn the_selection_follows_its_source_across_polls() {
        let mut m = polled();
        m.key(Key::Down);
        assert_eq!(m.selected_source().unwrap().source, "192.0.2.50");
        let mut s = snapshot();
        s.sources
            .by_messages
            .insert(0, source("198.51.100.7", 900, 0, false));
        m.polled(Ok(s));
        assert_eq!(m.selected_source().unwrap().source, "192.0.2.50");
        // Gone: the same position, within the shorter list.
        let mut s = snapshot();
        s.sources.by_messages.clear();
        s.sources.by_rejects.clear();
        m.polled(Ok(s));
        assert_eq!(m.selected_source(), None);
        m.polled(Ok(snapshot()));
        assert_eq!(m.selected_source().unwrap().source, "127.0.0.4");
    }

    #[test]
    fn b_asks_and_y_bans_the_selected_source() {
        let mut m = polled();
        assert_eq!(m.key(Key::Char('b')), None);
        assert_eq!(m.prompt, Some(Prompt::Ban("127.0.0.4".into())));
        // Other keys wait for the answer; q does not quit from the prompt.
        assert_eq!(m.key(Key::Down), None);
        assert_eq!(m.key(Key::Char('x')), None);
        assert_eq!(m.key(Key::Char('y')), Some(Action::Ban("127.0.0.4".into())));
        assert_eq!(m.prompt, None);
        m.done(
            &Action::Ban("127.0.0.4".into()),
            Ok("banned 127.0.0.4".into()),
        );
        assert_eq!(m.notice.as_deref(), Some("banned 127.0.0.4"));
    }

    #[test]
    fn n_or_esc_at_the_prompt_bans_nothing() {
        let mut m = polled();
        m.key(Key::Char('b'));
        assert_eq!(m.key(Key::Char('n')), None);
        assert_eq!(m.prompt, None);
        assert!(m.notice.as_deref().unwrap().contains("not banned"));
        m.key(Key::Char('b'));
        assert_eq!(m.key(Key::Esc), None);
        assert_eq!(m.prompt, None);
        // Esc answered the prompt: it did not quit.
        assert_eq!(m.key(Key::Esc), Some(Action::Quit));
    }

    #[test]
    fn u_unbans_the_selected_ban_or_a_banned_source() {
        let mut m = polled();
        // 127.0.0.4 is not banned: nothing to do, and the line says so.
        assert_eq!(m.key(Key::Char('u')), None);
        assert!(m.notice.as_deref().unwrap().contains("not banned"));
        m.key(Key::End);
        assert_eq!(
            m.key(Key::Char('u')),
            Some(Action::Unban("203.0.113.9".into()))
        );
        m.key(Key::Tab);
        m.key(Key::Down);
        assert_eq!(
            m.key(Key::Char('u')),
            Some(Action::Unban("198.51.100.0/24".into()))
        );
        // b on the bans list bans nothing.
        assert_eq!(m.key(Key::Char('b')), None);
        assert_eq!(m.prompt, None);
        m.done(
            &Action::Unban("198.51.100.0/24".into()),
            Err("not banned".into()),
        );
        assert_eq!(
            m.notice.as_deref(),
            Some("unban 198.51.100.0/24 failed: not banned")
        );
    }

    #[test]
    fn quit_keys() {
        for k in [Key::Char('q'), Key::Esc, Key::Interrupt] {
            assert_eq!(polled().key(k), Some(Action::Quit), "{k:?}");
        }
        let mut m = polled();
        m.key(Key::Char('b'));
        assert_eq!(m.key(Key::Interrupt), Some(Action::Quit));
        // Before the first answer too.
        assert_eq!(Model::new("s", 1.0).key(Key::Char('q')), Some(Action::Quit));
    }

    #[test]
    fn help_opens_with_question_mark_and_any_key_closes_it() {
        let mut m = polled();
        m.key(Key::Char('?'));
        assert!(m.help);
        assert_eq!(m.key(Key::Char('q')), None);
        assert!(!m.help);
    }

    #[test]
    fn a_failed_poll_keeps_the_last_screen_and_says_why() {
        let mut m = polled();
        m.polled(Err("cannot reach /run/x.sock".into()));
        assert!(m.snapshot.is_some());
        assert_eq!(m.error.as_deref(), Some("cannot reach /run/x.sock"));
        m.polled(Ok(snapshot()));
        assert_eq!(m.error, None);
        assert_eq!((m.polls, m.failures), (2, 1));
        // Keys work with nothing polled yet.
        let mut m = Model::new("s", 1.0);
        m.polled(Err("no".into()));
        assert_eq!(m.key(Key::Down), None);
        assert_eq!(m.key(Key::Char('b')), None);
        assert_eq!(m.key(Key::Char('u')), None);
        m.key(Key::Tab);
        assert_eq!(m.key(Key::Char('u')), None);
    }

    #[test]
    fn header_figures_and_history() {
        let s = snapshot().status;
        assert_eq!(header_rates(&s), (53.75, 12.5, 41.25));
        let h = history(&s);
        assert_eq!(h.len(), 60);
        assert_eq!(h[1], 1.0 + 3.0);
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(185), "3m05s");
        assert_eq!(human_secs(3725), "1h02m");
        assert_eq!(human_secs(2 * 86_400 + 7200), "2d02h");
        assert_eq!(human_rate(40.25), "40.2");
        assert_eq!(human_rate(12345.6), "12346");
    }
}
