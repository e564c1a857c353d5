//! How `sipwarden top` draws a [`Model`]: ratatui widgets laid out to fit
//! 80x24 (a terminal over SSH), with the extra room of a bigger one going
//! to the sources and bans lists. Drawing reads the model and nothing
//! else, so a `TestBackend` of any size shows exactly what a terminal
//! would.

use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::model::{header_rates, history, human_rate, human_secs, Focus, Model, Prompt};

/// The keys, on the bottom line and in the help.
const KEYS: &str = "q quit  ↑↓/jk select  Tab sources/bans  b ban  u unban  ? help";

const HELP: [(&str, &str); 9] = [
    ("↑ ↓  j k", "select a row of the focused list"),
    ("Home End  g G", "first, last row"),
    ("Tab", "focus the sources or the bans list"),
    ("b", "ban the selected source (ban.duration), y/n"),
    ("u", "unban the selected ban, or banned source"),
    ("?", "this help (any key closes it)"),
    ("q  Esc  Ctrl-C", "quit"),
    ("", ""),
    ("", "rates: messages/s; fwd includes would-drop"),
];

/// Draws the whole screen.
pub fn draw(f: &mut Frame, m: &Model) {
    let [header, spark, middle, lists, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(7),
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, header, m);
    draw_sparkline(f, spark, m);
    let [rates, trunks] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(middle);
    draw_rates(f, rates, m);
    draw_trunks(f, trunks, m);
    let bans_width = (lists.width / 3).max(32).min(lists.width / 2);
    let [sources, bans] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(bans_width)]).areas(lists);
    draw_sources(f, sources, m);
    draw_bans(f, bans, m);
    draw_status(f, status, m);
    f.render_widget(
        Paragraph::new(KEYS).style(Style::new().add_modifier(Modifier::DIM)),
        keys,
    );
    if m.help {
        draw_help(f, f.area());
    }
}

fn bold(s: impl Into<String>) -> Span<'static> {
    Span::styled(s.into(), Style::new().add_modifier(Modifier::BOLD))
}

fn draw_header(f: &mut Frame, area: Rect, m: &Model) {
    let line = match m.status() {
        None => Line::from(vec![
            bold("sipwarden top"),
            Span::raw(format!("  waiting for {}", m.socket)),
        ]),
        Some(s) => {
            let (inn, fwd, stop) = header_rates(s);
            let mut v = vec![
                bold(format!("sipwarden {}", s.version)),
                Span::raw("  "),
                Span::styled(
                    s.mode.clone(),
                    Style::new().fg(if s.mode == "monitor" {
                        Color::Yellow
                    } else {
                        Color::Green
                    }),
                ),
                Span::raw(format!("  up {}  ", human_secs(s.uptime_s))),
                Span::raw(format!(
                    "in {}/s  fwd {}/s  drop {}/s",
                    human_rate(inn),
                    human_rate(fwd),
                    human_rate(stop)
                )),
            ];
            if m.error.is_some() {
                v.push(Span::styled(
                    "  [stale]",
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                ));
            }
            Line::from(v)
        }
    };
    f.render_widget(Paragraph::new(line), area);
}

fn titled(title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    Block::new()
        .borders(Borders::ALL)
        .border_style(style)
        .title(Span::styled(title, style.add_modifier(Modifier::BOLD)))
}

fn draw_sparkline(f: &mut Frame, area: Rect, m: &Model) {
    let points = m.status().map(history).unwrap_or_default();
    let peak = points.iter().copied().fold(0.0, f64::max);
    let title = format!(
        "Messages/s, last {} s (peak {}/s)",
        points.len(),
        human_rate(peak)
    );
    let block = Block::new().borders(Borders::TOP).title(bold(title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    // Tenths of a message per second, so that a trickle still shows.
    let data: Vec<u64> = points
        .iter()
        .map(|x| (x * 10.0).round().max(0.0) as u64)
        .collect();
    // The newest seconds when the terminal is narrower than the minute.
    let shown = &data[data.len().saturating_sub(usize::from(inner.width))..];
    let max = shown.iter().copied().max().unwrap_or(0).max(1);
    f.render_widget(
        Sparkline::default()
            .data(shown)
            .max(max)
            .style(Style::new().fg(Color::Green)),
        inner,
    );
}

fn draw_rates(f: &mut Frame, area: Rect, m: &Model) {
    let block = titled("Rates by reason, last 10 s".into(), false);
    let mut by = m
        .status()
        .map(|s| s.rates.by_reason.clone())
        .unwrap_or_default();
    by.sort_by(|a, b| b.per_second.total_cmp(&a.per_second));
    if by.is_empty() {
        let text = if m.status().is_some() {
            "no messages"
        } else {
            ""
        };
        f.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let rows = by.iter().map(|r| {
        let style = match r.disposition.as_str() {
            "dropped" | "replied" => Style::new().fg(Color::Red),
            "would-drop" => Style::new().fg(Color::Yellow),
            _ => Style::new(),
        };
        Row::new(vec![
            Cell::from(r.reason.clone()),
            Cell::from(r.disposition.clone()).style(style),
            Cell::from(Line::from(format!("{}/s", human_rate(r.per_second))).right_aligned()),
        ])
    });
    let t = Table::new(
        rows,
        [
            Constraint::Length(14),
            Constraint::Length(10),
            Constraint::Min(7),
        ],
    )
    .block(block);
    f.render_widget(t, area);
}

fn draw_trunks(f: &mut Frame, area: Rect, m: &Model) {
    let dialogs = m.status().map_or(String::new(), |s| {
        format!(" · {} dialogs", s.tables.dialogs)
    });
    let block = titled(format!("Trunks{dialogs}"), false);
    let trunks = m.trunks();
    if trunks.is_empty() {
        let text = if m.status().is_some() {
            "no trunks"
        } else {
            ""
        };
        f.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let rows = trunks.iter().map(|t| {
        let (state, style) = if t.registered {
            ("registered", Style::new().fg(Color::Green))
        } else {
            ("unregistered", Style::new().fg(Color::Red))
        };
        let expires = match (t.registered, t.expires_in_s) {
            (true, Some(s)) => format!("exp {}", human_secs(s)),
            _ => String::new(),
        };
        Row::new(vec![
            Cell::from(t.name.clone()),
            Cell::from(state).style(style),
            Cell::from(expires),
        ])
    });
    let t = Table::new(
        rows,
        [
            Constraint::Min(8),
            Constraint::Length(12),
            Constraint::Length(9),
        ],
    )
    .block(block);
    f.render_widget(t, area);
}

fn highlight(focused: bool) -> Style {
    if focused {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new().add_modifier(Modifier::UNDERLINED)
    }
}

fn header_row(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.iter().map(|c| Cell::from(*c)))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED))
}

fn draw_sources(f: &mut Frame, area: Rect, m: &Model) {
    let focused = m.focus == Focus::Sources;
    let window = m.snapshot.as_ref().map_or(String::new(), |s| {
        format!(", last {} s", s.sources.window_s)
    });
    let block = titled(format!("Top sources{window}"), focused);
    let rows = m.sources.iter().map(|s| {
        let style = if s.banned {
            Style::new().fg(Color::Red)
        } else if s.rejects > 0 {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        };
        Row::new(vec![
            Cell::from(s.source.clone()),
            Cell::from(Line::from(s.messages.to_string()).right_aligned()),
            Cell::from(Line::from(s.rejects.to_string()).right_aligned()),
            Cell::from(s.top_reason.clone().unwrap_or_default()),
            Cell::from(if s.banned { "yes" } else { "" }),
        ])
        .style(style)
    });
    let t = Table::new(
        rows,
        [
            Constraint::Min(15),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(12),
            Constraint::Length(3),
        ],
    )
    .header(header_row(&[
        "Source",
        "   Msgs",
        "   Rej",
        "Top reason",
        "Ban",
    ]))
    .block(block)
    .row_highlight_style(highlight(focused))
    .highlight_symbol(">");
    let mut state = TableState::default().with_selected(m.selected_source_index());
    f.render_stateful_widget(t, area, &mut state);
}

/// The trigger of a ban, short enough for the 80-column bans list.
fn trigger(t: &str) -> &str {
    match t {
        "rejects" => "rej",
        "auth-failures" => "auth",
        "manual" => "man",
        other => other,
    }
}

fn draw_bans(f: &mut Frame, area: Rect, m: &Model) {
    let focused = m.focus == Focus::Bans;
    let block = titled(format!("Bans ({})", m.bans().len()), focused);
    let rows = m.bans().iter().map(|b| {
        Row::new(vec![
            Cell::from(b.target.clone()),
            Cell::from(trigger(&b.trigger).to_string()),
            Cell::from(Line::from(human_secs(b.left_s)).right_aligned()),
        ])
    });
    let t = Table::new(
        rows,
        [
            Constraint::Min(15),
            Constraint::Length(4),
            Constraint::Length(6),
        ],
    )
    .header(header_row(&["Banned", "Why", "  Left"]))
    .block(block)
    .row_highlight_style(highlight(focused))
    .highlight_symbol(">");
    let mut state = TableState::default().with_selected(m.selected_ban_index());
    f.render_stateful_widget(t, area, &mut state);
}

fn draw_status(f: &mut Frame, area: Rect, m: &Model) {
    let line = if let Some(Prompt::Ban(t)) = &m.prompt {
        Line::from(Span::styled(
            format!("Ban {t} for the default duration (ban.duration)? y/n"),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ))
    } else if let Some(e) = &m.error {
        Line::from(Span::styled(
            format!("error, retrying every {} s: {e}", m.interval_s),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ))
    } else if let Some(n) = &m.notice {
        Line::from(n.clone())
    } else if m.snapshot.is_some() {
        Line::from(Span::styled(
            format!("{} every {} s", m.socket, m.interval_s),
            Style::new().add_modifier(Modifier::DIM),
        ))
    } else {
        Line::default()
    };
    f.render_widget(Paragraph::new(line), area);
}

fn draw_help(f: &mut Frame, area: Rect) {
    let w = 62.min(area.width);
    let h = (HELP.len() as u16 + 2).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| Line::from(vec![bold(format!("{k:>16}  ")), Span::raw(*what)]))
        .collect();
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .block(
                Block::new()
                    .borders(Borders::ALL)
                    .title(bold("Keys"))
                    .title_alignment(Alignment::Center),
            )
            .style(Style::new()),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::snapshot;
    use crate::top::model::Key;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    /// The screen as text, one string per row.
    fn screen(m: &Model, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, m)).unwrap();
        let b = t.backend().buffer();
        (0..h)
            .map(|y| (0..w).map(|x| b[(x, y)].symbol()).collect::<String>())
            .collect()
    }

    fn polled() -> Model {
        let mut m = Model::new("/run/sipwarden/control.sock", 1.0);
        m.polled(Ok(snapshot()));
        m
    }

    fn row_with<'a>(s: &'a [String], needle: &str) -> &'a str {
        s.iter()
            .find(|r| r.contains(needle))
            .unwrap_or_else(|| panic!("no row with {needle:?}:\n{}", s.join("\n")))
    }

    /// Every heading, a source row with its figures, a ban, a trunk and a
    /// sparkline at 80x24.
    #[test]
    fn everything_fits_80x24() {
        let s = screen(&polled(), 80, 24);
        let text = s.join("\n");
        for heading in [
            "sipwarden 0.1.0",
            "enforce",
            "up 1h02m",
            "in 53.8/s  fwd 12.5/s  drop 41.2/s",
            "Messages/s, last 60 s (peak 41.0/s)",
            "Rates by reason, last 10 s",
            "Trunks · 4 dialogs",
            "Top sources, last 45 s",
            "Bans (2)",
            "q quit",
        ] {
            assert!(text.contains(heading), "{heading:?} missing:\n{text}");
        }
        let scanner = row_with(&s, "127.0.0.4");
        assert!(scanner.starts_with("│>127.0.0.4"), "selected:\n{text}");
        for cell in ["400", "user-agent"] {
            assert!(scanner.contains(cell), "{cell} not in {scanner:?}");
        }
        assert!(text.contains("│ 203.0.113.9           3      3 user-agent yes│"));
        assert!(row_with(&s, "carrier").contains("registered   exp 3m05s"));
        assert!(row_with(&s, "user-agent     dropped").contains("40.2/s"));
        assert!(row_with(&s, "198.51.100.0/24").contains("1m00s"));
        // The sparkline: bars of more than one height in its two rows.
        let bars: String = s[2..4].concat();
        let kinds: std::collections::BTreeSet<char> =
            bars.chars().filter(|c| "▁▂▃▄▅▆▇█".contains(*c)).collect();
        assert!(kinds.len() > 3, "no sparkline:\n{text}");
        assert!(s.iter().all(|r| r.chars().count() == 80));
    }

    #[test]
    fn a_bigger_terminal_lists_more_sources() {
        let mut snap = snapshot();
        snap.sources.by_messages = (0..30)
            .map(|i| {
                crate::top::model::tests::source(&format!("198.51.100.{i}"), 100 - i, 0, false)
            })
            .collect();
        let mut m = Model::new("s", 1.0);
        m.polled(Ok(snap.clone()));
        let rows = |s: &[String]| s.iter().filter(|r| r.contains("198.51.100.")).count();
        let small = screen(&m, 80, 24);
        let big = screen(&m, 120, 40);
        assert!(rows(&small) >= 6, "{}", small.join("\n"));
        assert!(rows(&big) >= rows(&small) + 14, "{}", big.join("\n"));
        assert!(big.join("\n").contains("Top sources, last 45 s"));
        // The selection scrolls into view.
        for _ in 0..40 {
            m.key(Key::Down);
        }
        let s = screen(&m, 80, 24);
        let text = s.join("\n");
        assert!(text.contains("│>203.0.113.9           3"), "{text}");
    }

    #[test]
    fn prompt_error_and_help_on_screen() {
        let mut m = polled();
        m.key(Key::Char('b'));
        let s = screen(&m, 80, 24);
        assert!(
            s[22].starts_with("Ban 127.0.0.4 for the default duration"),
            "{}",
            s.join("\n")
        );
        m.key(Key::Char('n'));
        m.polled(Err("cannot reach /run/x.sock: no such socket".into()));
        let s = screen(&m, 80, 24);
        assert!(
            s[22].starts_with("error, retrying every 1 s: cannot reach /run/x.sock"),
            "{}",
            s.join("\n")
        );
        assert!(s[0].contains("[stale]"));
        // The last answers stay on screen.
        row_with(&s, "127.0.0.4");
        m.key(Key::Char('?'));
        let s = screen(&m, 80, 24);
        row_with(&s, "ban the selected source");
        // Focus on bans: the bans list is the one with the reversed row.
        m.key(Key::Esc);
        m.key(Key::Tab);
        let s = screen(&m, 80, 24);
        assert!(row_with(&s, "203.0.113.9       man").contains(">203.0.113.9"));
    }

    #[test]
    fn before_the_first_answer_and_in_a_tiny_terminal() {
        let mut m = Model::new("/run/sipwarden/control.sock", 1.0);
        let s = screen(&m, 80, 24);
        assert!(s[0].contains("waiting for /run/sipwarden/control.sock"));
        m.polled(Err("nothing listens".into()));
        let s = screen(&m, 80, 24);
        assert!(s[22].contains("nothing listens"));
        // Too small for the layout: drawn clipped, no panic.
        let m = polled();
        for (w, h) in [(1, 1), (10, 5), (40, 12), (80, 3)] {
            screen(&m, w, h);
        }
        let mut m = polled();
        m.key(Key::Char('?'));
        screen(&m, 20, 6);
    }
}
