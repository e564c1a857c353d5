//! Which keys a reload changed, for the "config reloaded" log line: an
//! operator who sent SIGHUP sees what took effect, and one reading the log
//! later sees what changed when behaviour changed. Only key names come out,
//! never values: `filter.domains` is a secret, and so may be whatever a
//! future key holds.
//!
//! The two configs are compared as their effective values (every default
//! filled in), serialized to TOML tables and walked key by key: a key
//! written out with its default value, a reordered file or an edited
//! comment is no change.

use toml::{Table, Value};

use super::Config;

/// The dotted names of the keys whose values differ between `old` and
/// `new`, sorted by name: `["filter.domains", "limits.rate"]`. A key present in one and absent in the other (an
/// optional key set or unset) counts as changed. A `[[trunk]]` key is named
/// with its position, `trunk[1].registrar`; trunks added or removed make the
/// whole list `trunk`. Empty when nothing changed.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    match (as_table(old), as_table(new)) {
        (Some(a), Some(b)) => {
            let mut out = Vec::new();
            diff_tables("", &a, &b, &mut out);
            out.sort();
            out
        }
        // The schema's types all serialize; should one not, say that
        // something changed rather than nothing.
        _ => vec!["(config)".to_string()],
    }
}

/// The config as the TOML table it would be written as.
fn as_table(c: &Config) -> Option<Table> {
    match Value::try_from(c) {
        Ok(Value::Table(t)) => Some(t),
        _ => None,
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Keys of `a`, then those only in `b`.
fn diff_tables(prefix: &str, a: &Table, b: &Table, out: &mut Vec<String>) {
    for (k, va) in a {
        let name = join(prefix, k);
        match b.get(k) {
            Some(vb) => diff_values(&name, va, vb, out),
            None => out.push(name),
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(join(prefix, k));
    }
}

fn diff_values(name: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Table(ta), Value::Table(tb)) => diff_tables(name, ta, tb, out),
        // An array of tables of the same length (the trunks): entry by
        // entry, so that the line says which key of which trunk.
        (Value::Array(xa), Value::Array(xb))
            if xa.len() == xb.len()
                && !xa.is_empty()
                && xa.iter().chain(xb).all(Value::is_table) =>
        {
            for (i, (ea, eb)) in xa.iter().zip(xb).enumerate() {
                diff_values(&format!("{name}[{i}]"), ea, eb, out);
            }
        }
        _ if a != b => out.push(name.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const MIN: &str = "[listen]\nadvertise = \"pbx.example.com:5060\"\n";

    fn changed(old: &str, new: &str) -> Vec<String> {
        let a = parse(&format!("{MIN}{old}"), "old").unwrap();
        let b = parse(&format!("{MIN}{new}"), "new").unwrap();
        changed_keys(&a, &b)
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let text = "[filter]\ndomains = [\"a.example\"]\n[limits]\nrate = 10\n";
        assert_eq!(changed(text, text), Vec::<String>::new());
    }

    #[test]
    fn a_default_written_out_or_a_comment_is_no_change() {
        assert_eq!(
            changed(
                "",
                "# a comment\n[limits]\nrate = 50\n[log]\nlevel = \"info\"\n"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn changed_keys_are_named_in_order() {
        assert_eq!(
            changed(
                "[filter]\ndomains = [\"a.example\"]\n",
                "[limits]\nrate = 10\n[filter]\ndomains = [\"a.example\", \"b.example\"]\n"
            ),
            vec!["filter.domains", "limits.rate"]
        );
        assert_eq!(
            changed(
                "",
                "[filter]\nmode = \"monitor\"\n[ban]\nduration = \"1h\"\n"
            ),
            vec!["ban.duration", "filter.mode"]
        );
    }

    #[test]
    fn an_optional_key_set_or_unset_is_a_change() {
        assert_eq!(
            changed("", "[metrics]\nlisten = \"127.0.0.1:9090\"\n"),
            vec!["metrics.listen"]
        );
        assert_eq!(
            changed("[state]\npath = \"/tmp/s\"\n", ""),
            vec!["state.path"]
        );
    }

    #[test]
    fn trunk_keys_are_named_with_their_position() {
        let one = "[[trunk]]\nname = \"a\"\nregistrar = \"sip.a.example\"\n";
        let two = "[[trunk]]\nname = \"a\"\nregistrar = \"sip.a.example\"\n\
                   [[trunk]]\nname = \"b\"\nregistrar = \"sip.b.example\"\n";
        let two_edited = "[[trunk]]\nname = \"a\"\nregistrar = \"sip.a.example\"\n\
                          [[trunk]]\nname = \"b\"\nregistrar = \"sip.c.example\"\nkeepalive = \"30s\"\n";
        assert_eq!(changed(one, two), vec!["trunk"]);
        assert_eq!(changed("", one), vec!["trunk"]);
        assert_eq!(
            changed(two, two_edited),
            vec!["trunk[1].keepalive", "trunk[1].registrar"]
        );
    }

    /// The names only: a secret domain (or any value) never reaches the
    /// line.
    #[test]
    fn values_are_never_part_of_the_names() {
        let keys = changed(
            "[filter]\ndomains = [\"old-secret.example\"]\n",
            "[filter]\ndomains = [\"new-secret.example\"]\n",
        );
        assert_eq!(keys, vec!["filter.domains"]);
        assert!(!keys.join(",").contains("secret."));
    }
}
