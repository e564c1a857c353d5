//! `docs/configuration.md` against the schema: every key the config file
//! takes has a row there, every row is a key, and each row's default is
//! the schema's. The keys are walked from the config itself (serialized,
//! absent values as `null`), the defaults read the way the program reads
//! them: the docs' value, written into a file, must give the config an
//! empty file gives.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sipwarden_core::config;

const DOCS: &str = include_str!("../../docs/configuration.md");

/// The smallest file: the keys without a default, and one `[[trunk]]` so
/// that the keys of a trunk are seen too.
const REQUIRED: &str = "[listen]\nadvertise = \"pbx.example.com:5060\"\n\
                        [[trunk]]\nname = \"t\"\nregistrar = \"sip.example.net\"\n";

/// The config of a file as JSON: sections are objects, a `[[trunk]]` an
/// array of objects, an absent value `null`.
fn json(text: &str) -> Result<Value, config::ConfigError> {
    let c = config::parse(text, "docs")?;
    Ok(serde_json::to_value(c.config()).expect("a config serializes"))
}

/// Every key under `v`, dotted, with its value; the keys of an array of
/// tables are those of its first table.
fn keys(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    let join = |k: &str| match prefix {
        "" => k.to_string(),
        p => format!("{p}.{k}"),
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                keys(v, &join(k), out);
            }
        }
        Value::Array(a) if a.first().is_some_and(Value::is_object) => keys(&a[0], prefix, out),
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

/// The value at a dotted key (into the first table of an array).
fn at<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(v, |v, k| match v {
        Value::Array(a) => a.first()?.get(k),
        v => v.get(k),
    })
}

/// The rows of the key tables: `(key, default cell, whole row)`.
fn rows(docs: &str) -> Vec<(String, String, String)> {
    docs.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix("| `")?.splitn(3, '|').collect();
            let [key, default, _] = cells[..] else {
                return None;
            };
            let key = key.trim().strip_suffix('`')?;
            Some((
                key.to_string(),
                default.trim().to_string(),
                line.to_string(),
            ))
        })
        .collect()
}

/// The first `` `...` `` of a cell.
fn literal(cell: &str) -> Option<&str> {
    let (_, rest) = cell.split_once('`')?;
    Some(rest.split_once('`')?.0)
}

/// `REQUIRED` as a table, with `f` applied to the table of `key`'s
/// section (a trunk's: the first `[[trunk]]`).
fn required_with(key: &str, f: impl FnOnce(&mut toml::Table, &str)) -> String {
    let mut doc: toml::Table = toml::from_str(REQUIRED).expect("REQUIRED is TOML");
    let (section, name) = key.rsplit_once('.').expect("a key is section.name");
    let mut table = &mut doc;
    for s in section.split('.') {
        let v = table
            .entry(s)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match v {
            toml::Value::Array(a) => a.first_mut().and_then(toml::Value::as_table_mut),
            v => v.as_table_mut(),
        }
        .expect("a section is a table");
    }
    f(table, name);
    toml::to_string(&doc).expect("a table prints")
}

/// What is wrong between `docs` and the schema, one line each.
fn problems(docs: &str) -> Vec<String> {
    let defaults = json(REQUIRED).unwrap_or_else(|e| panic!("REQUIRED: {e}"));
    let mut schema = BTreeMap::new();
    keys(&defaults, "", &mut schema);
    let rows = rows(docs);
    let documented: BTreeSet<&str> = rows.iter().map(|(k, _, _)| k.as_str()).collect();
    let mut out = Vec::new();
    for key in schema.keys() {
        if !documented.contains(key.as_str()) {
            out.push(format!(
                "{key}: a key of the config file without a row in the docs"
            ));
        }
    }
    for (key, cell, row) in &rows {
        let Some(default) = schema.get(key) else {
            out.push(format!(
                "{key}: documented, but not a key of the config file"
            ));
            continue;
        };
        if cell.starts_with("required") {
            // No default: a file without it is refused, naming it.
            let text = required_with(key, |t, name| {
                t.remove(name);
            });
            match config::parse(&text, "docs") {
                Err(e) if e.key.as_deref() == Some(key) && e.message.contains("missing field") => {}
                other => out.push(format!(
                    "{key}: documented as required, but a file without it gives {other:?}"
                )),
            }
        } else if cell.starts_with("absent") {
            if !default.is_null() {
                out.push(format!(
                    "{key}: documented as absent by default, but the default is {default}"
                ));
            }
        } else if let Some(n) = cell.strip_prefix("a list of ") {
            // A list too long for the cell: its entries are in the row.
            let n: usize = n
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let entries = default.as_array().cloned().unwrap_or_default();
            if entries.len() != n {
                out.push(format!(
                    "{key}: documented as a list of {n}, but the default has {}",
                    entries.len()
                ));
            }
            for e in entries {
                let e = e.as_str().unwrap_or_default();
                if !row.contains(&format!("`{e}`")) {
                    out.push(format!("{key}: the default entry {e:?} is not in the docs"));
                }
            }
        } else if let Some(lit) = literal(cell) {
            // The docs' value, written into a file, gives the default.
            let value = match toml::from_str::<toml::Table>(&format!("v = {lit}")) {
                Ok(mut t) => t.remove("v").expect("the key just written"),
                Err(_) => {
                    out.push(format!("{key}: the default `{lit}` is not a TOML value"));
                    continue;
                }
            };
            let text = required_with(key, |t, name| {
                t.insert(name.to_string(), value);
            });
            match json(&text) {
                Ok(got) if at(&got, key) == Some(default) => {}
                Ok(got) => out.push(format!(
                    "{key}: documented default `{lit}` reads as {}, but the default is {default}",
                    at(&got, key).unwrap_or(&Value::Null)
                )),
                Err(e) => out.push(format!("{key}: the documented default `{lit}`: {e}")),
            }
        } else {
            out.push(format!("{key}: cannot read the default {cell:?}"));
        }
    }
    out
}

#[test]
fn every_key_is_documented_with_its_default() {
    let p = problems(DOCS);
    assert!(p.is_empty(), "docs/configuration.md:\n{}", p.join("\n"));
}

/// The check above can fail: on the docs with a row taken out, a default
/// changed, a key the schema does not have, a required key given a
/// default.
#[test]
fn the_check_finds_what_the_docs_get_wrong() {
    let row = |key: &str| {
        DOCS.lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("no row for {key}"))
            .to_string()
    };
    let without = DOCS.replace(&format!("{}\n", row("tcp.drain_timeout")), "");
    assert_eq!(
        problems(&without),
        ["tcp.drain_timeout: a key of the config file without a row in the docs"]
    );
    let wrong = DOCS.replace(
        &row("ban.window"),
        "| `ban.window` | `\"30s\"` | The counting window. |",
    );
    let p = problems(&wrong);
    assert!(
        p.len() == 1 && p[0].starts_with("ban.window: documented default `\"30s\"`"),
        "{p:?}"
    );
    let extra = DOCS.replace(
        &row("ban.window"),
        &format!("{}\n| `ban.length` | `\"1h\"` | x |", row("ban.window")),
    );
    assert_eq!(
        problems(&extra),
        ["ban.length: documented, but not a key of the config file"]
    );
    let optional = DOCS.replace(
        &row("listen.workers"),
        "| `listen.workers` | required | x |",
    );
    let p = problems(&optional);
    assert!(
        p.len() == 1 && p[0].starts_with("listen.workers: documented as required"),
        "{p:?}"
    );
    let shorter = DOCS.replace("`voipscan`, ", "");
    assert_eq!(
        problems(&shorter),
        ["filter.user_agents: the default entry \"voipscan\" is not in the docs"]
    );
}
