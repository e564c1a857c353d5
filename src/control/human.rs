//! The CLI's human output of control answers: aligned tables, times left
//! as `4m12s left`, instants in UTC RFC 3339. `--json` prints the answer
//! as it came instead.

use std::fmt::Write;

use serde::de::DeserializeOwned;
use sipwarden_core::control::answer::{Banned, Bans, Source, Sources, Status, Trunks, Unbanned};

/// `secs` as `1d2h`, `3h4m`, `4m12s` or `9s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    let line = |o: &mut String, cells: Vec<&str>| {
        let n = cells.len();
        for (i, (c, w)) in cells.into_iter().zip(&width).enumerate() {
            if i + 1 == n {
                o.push_str(c);
            } else {
                let _ = write!(o, "{c:<w$}  ");
            }
        }
        o.push('\n');
    };
    line(&mut o, header.to_vec());
    for r in rows {
        line(&mut o, r.iter().map(String::as_str).collect());
    }
    o
}

fn parse<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("an answer this version cannot show: {e}"))
}

fn rate(x: f64) -> String {
    format!("{x:.1}")
}

pub fn status(v: serde_json::Value) -> Result<String, String> {
    let s: Status = parse(v)?;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "sipwarden {}, mode {}, up {} (since {})",
        s.version,
        s.mode,
        duration(s.uptime_s),
        s.started
    );
    o.push('\n');
    let rows: Vec<Vec<String>> = s
        .sockets
        .iter()
        .map(|x| vec![x.role.clone(), x.address.clone()])
        .collect();
    o.push_str(&table(&["SOCKET", "ADDRESS"], &rows));
    o.push('\n');
    let rows: Vec<Vec<String>> = s
        .totals
        .iter()
        .map(|(d, n)| {
            vec![
                d.clone(),
                rate(s.rates.last_10s.get(d).copied().unwrap_or(0.0)),
                rate(s.rates.since_start.get(d).copied().unwrap_or(0.0)),
                n.to_string(),
            ]
        })
        .collect();
    o.push_str(&table(
        &[
            "MESSAGES",
            &format!("LAST {:.0}S /S", s.rates.window_s),
            "SINCE START /S",
            "TOTAL",
        ],
        &rows,
    ));
    if !s.rates.by_reason.is_empty() {
        o.push('\n');
        let mut by = s.rates.by_reason.clone();
        by.sort_by(|a, b| b.per_second.total_cmp(&a.per_second));
        let rows: Vec<Vec<String>> = by
            .iter()
            .map(|r| vec![r.reason.clone(), r.disposition.clone(), rate(r.per_second)])
            .collect();
        let last = format!("LAST {:.0}S /S", s.rates.window_s);
        o.push_str(&table(&["REASON", "DISPOSITION", &last], &rows));
    }
    o.push('\n');
    let t = &s.tables;
    let _ = writeln!(
        o,
        "tables: {} bans, {} network bans, {} rate sources, {} dialogs, {} registrations, {} TCP connections",
        t.bans, t.ban_networks, t.rate_sources, t.dialogs, t.registrations, t.tcp_connections
    );
    match &s.reload {
        None => o.push_str("last reload: none since start\n"),
        Some(r) => {
            let _ = write!(o, "last reload: {} {}", r.at, r.result);
            if let Some(e) = &r.error {
                let _ = write!(o, ": {e}");
            }
            o.push('\n');
        }
    }
    if let Some(c) = &s.cluster {
        let _ = writeln!(
            o,
            "cluster: {} node {} via {}: Redis {}, last lag {} ms, records sent {}, received {}, rejected {}, errors {}, outbox {}",
            c.name,
            c.node,
            c.servers.join(", "),
            if c.up { "up" } else { "DOWN" },
            c.lag_ms,
            c.sent,
            c.received,
            c.rejected,
            c.errors,
            c.outbox
        );
    }
    Ok(o)
}

pub fn bans(v: serde_json::Value) -> Result<String, String> {
    let b: Bans = parse(v)?;
    if b.bans.is_empty() {
        return Ok("no bans in force\n".into());
    }
    let rows: Vec<Vec<String>> = b
        .bans
        .iter()
        .map(|b| {
            vec![
                b.target.clone(),
                b.trigger.clone(),
                b.since.clone(),
                b.until.clone(),
                format!("{} left", duration(b.left_s)),
            ]
        })
        .collect();
    Ok(table(
        &["TARGET", "TRIGGER", "SINCE", "UNTIL", "LEFT"],
        &rows,
    ))
}

pub fn banned(v: serde_json::Value) -> Result<String, String> {
    let b: Banned = parse(v)?;
    let mut o = format!(
        "banned {} until {} ({} left)\n",
        b.ban.target,
        b.ban.until,
        duration(b.ban.left_s)
    );
    if let Some(e) = b.exempt {
        let _ = writeln!(o, "note: {} is {e}", b.ban.target);
    }
    Ok(o)
}

pub fn unbanned(v: serde_json::Value) -> Result<String, String> {
    let u: Unbanned = parse(v)?;
    let mut o = String::new();
    if u.network {
        let _ = writeln!(o, "unbanned network {}", u.target);
    }
    for a in &u.addresses {
        let _ = writeln!(o, "unbanned {a}");
    }
    if !u.still_banned_by.is_empty() {
        let _ = writeln!(
            o,
            "note: {} is still banned by {}",
            u.target,
            u.still_banned_by.join(", ")
        );
    }
    Ok(o)
}

pub fn trunks(v: serde_json::Value) -> Result<String, String> {
    let t: Trunks = parse(v)?;
    if t.trunks.is_empty() {
        return Ok("no trunks configured or registered\n".into());
    }
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = t
        .trunks
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                if t.registered { "yes" } else { "no" }.into(),
                t.expires.clone().unwrap_or_else(dash),
                t.expires_in_s
                    .filter(|_| t.registered)
                    .map_or_else(dash, |s| format!("{} left", duration(s))),
                if t.addresses.is_empty() {
                    dash()
                } else {
                    t.addresses.join(",")
                },
                t.last_register.clone().unwrap_or_else(dash),
                t.last_invite.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    Ok(table(
        &[
            "TRUNK",
            "REGISTERED",
            "EXPIRES",
            "LEFT",
            "ADDRESSES",
            "LAST REGISTER",
            "LAST INVITE",
        ],
        &rows,
    ))
}

fn source_rows(v: &[Source]) -> Vec<Vec<String>> {
    v.iter()
        .map(|s| {
            let mut reasons: Vec<(&String, &u64)> = s.reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let reasons: Vec<String> = reasons
                .iter()
                .take(3)
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            vec![
                s.source.clone(),
                if s.error > 0 {
                    format!("{}(±{})", s.messages, s.error)
                } else {
                    s.messages.to_string()
                },
                s.rejects.to_string(),
                if reasons.is_empty() {
                    "-".into()
                } else {
                    reasons.join(" ")
                },
                if s.banned { "yes" } else { "no" }.into(),
            ]
        })
        .collect()
}

pub fn sources(v: serde_json::Value) -> Result<String, String> {
    let s: Sources = parse(v)?;
    let header = ["SOURCE", "MESSAGES", "REJECTS", "REASONS", "BANNED"];
    let mut o = format!("top sources of the last {}s, by messages:\n", s.window_s);
    if s.by_messages.is_empty() {
        o.push_str("(none)\n");
    } else {
        o.push_str(&table(&header, &source_rows(&s.by_messages)));
    }
    o.push_str("\nby rejects:\n");
    if s.by_rejects.is_empty() {
        o.push_str("(none)\n");
    } else {
        o.push_str(&table(&header, &source_rows(&s.by_rejects)));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_tables() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(252), "4m12s");
        assert_eq!(duration(7200), "2h0m");
        assert_eq!(duration(90_000), "1d1h");
        assert_eq!(
            table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]),
            "A    LONGER\nxyz  1\n"
        );
    }
}
