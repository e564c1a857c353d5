//! Where keys and values are in the config text, from the TOML parser's
//! own spans: every error and warning names the line of the key at fault,
//! including keys of the second `[[trunk]]` or an entry of a multi-line
//! list.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of the path to a key: a key of a table, or an entry of a list
/// (or of an array of tables such as `[[trunk]]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(&'static str),
    Index(usize),
}

/// The parsed document, for looking up positions.
pub struct Spans<'a> {
    text: &'a str,
    root: &'a DeTable<'a>,
}

/// The dotted name of a path, without list indices: `trunk.keepalive`.
pub fn dotted(path: &[Seg]) -> String {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(*k),
            Seg::Index(_) => None,
        })
        .collect();
    keys.join(".")
}

/// Line (1-based) of a byte offset.
pub fn line_at(text: &str, offset: usize) -> usize {
    let end = floor_char_boundary(text, offset.min(text.len()));
    text[..end].matches('\n').count() + 1
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Whether `offset` is in `span` or just after it (where a syntax error
/// in a value, such as a missing closing quote, is reported).
fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset <= span.end
}

fn entry<'t, 'a>(
    table: &'t DeTable<'a>,
    key: &str,
) -> Option<(
    &'t Spanned<std::borrow::Cow<'a, str>>,
    &'t Spanned<DeValue<'a>>,
)> {
    table.iter().find(|(k, _)| k.get_ref().as_ref() == key)
}

impl<'a> Spans<'a> {
    pub fn new(text: &'a str, root: &'a DeTable<'a>) -> Spans<'a> {
        Spans { text, root }
    }

    /// The line of the key at `path`; for a list entry, the entry's own
    /// line. A key absent from the file is at the line of the list entry
    /// it belongs to (a `[[trunk]]` header) if there is one, else nowhere.
    /// An index into a single value (a key that takes one value or a
    /// list, written as one value) stays on that key.
    pub fn line_of(&self, path: &[Seg]) -> Option<usize> {
        let mut value: Option<&Spanned<DeValue<'a>>> = None;
        let mut at: Option<usize> = None;
        let mut entry_at: Option<usize> = None;
        for seg in path {
            match *seg {
                Seg::Key(k) => {
                    let table = match value {
                        None => Some(self.root),
                        Some(v) => v.get_ref().as_table(),
                    };
                    let Some((key, v)) = table.and_then(|t| entry(t, k)) else {
                        return entry_at.map(|o| line_at(self.text, o));
                    };
                    at = Some(key.span().start);
                    value = Some(v);
                }
                Seg::Index(i) => {
                    let item = value
                        .and_then(|v| v.get_ref().as_array())
                        .and_then(|a| a.get(i));
                    if let Some(item) = item {
                        at = Some(item.span().start);
                        entry_at = at;
                        value = Some(item);
                    }
                }
            }
        }
        at.map(|o| line_at(self.text, o))
    }

    /// The dotted key whose key or value holds `offset`: the deepest one.
    pub fn key_at(&self, offset: usize) -> Option<String> {
        let mut path = Vec::new();
        let mut best: Option<(usize, String)> = None;
        walk_table(self.root, offset, &mut path, &mut best);
        best.map(|(_, k)| k)
    }
}

fn consider(path: &[String], best: &mut Option<(usize, String)>) {
    if best.as_ref().is_none_or(|(depth, _)| path.len() > *depth) {
        *best = Some((path.len(), path.join(".")));
    }
}

fn walk_table(
    table: &DeTable<'_>,
    offset: usize,
    path: &mut Vec<String>,
    best: &mut Option<(usize, String)>,
) {
    for (k, v) in table.iter() {
        path.push(k.get_ref().to_string());
        if contains(&k.span(), offset) || contains(&v.span(), offset) {
            consider(path, best);
        }
        walk_value(v, offset, path, best);
        path.pop();
    }
}

fn walk_value(
    v: &Spanned<DeValue<'_>>,
    offset: usize,
    path: &mut Vec<String>,
    best: &mut Option<(usize, String)>,
) {
    match v.get_ref() {
        DeValue::Table(t) => walk_table(t, offset, path, best),
        DeValue::Array(items) => {
            for item in items.iter() {
                if contains(&item.span(), offset) {
                    consider(path, best);
                }
                walk_value(item, offset, path, best);
            }
        }
        _ => {}
    }
}

/// Where a TOML syntax error is, and what to say. An unclosed `[` or `{`
/// makes the parser read on and fail lines later (at the next table
/// header, say); the error is then reported at the bracket that was never
/// closed, which `toml_parser` names as the error's context.
pub fn syntax_error(text: &str, e: &toml::de::Error) -> (Option<usize>, String) {
    let at = e.span().map(|s| s.start);
    let source = toml_parser::Source::new(text);
    let tokens = source.lex().into_vec();
    let mut errors: Vec<toml_parser::ParseError> = Vec::new();
    toml_parser::parser::parse_document(&tokens, &mut (), &mut errors);
    let unclosed = errors
        .iter()
        .filter(|p| p.description().starts_with("unclosed"))
        .filter_map(|p| Some((p.context()?.start(), p.description())))
        .filter(|(open, _)| at.is_none_or(|a| *open <= a))
        .min_by_key(|(open, _)| *open);
    if let Some((open, what)) = unclosed {
        let opener = text[floor_char_boundary(text, open)..]
            .chars()
            .next()
            .unwrap_or('[');
        let closer = if opener == '{' { '}' } else { ']' };
        return (
            Some(open),
            format!("{what}: this `{opener}` has no matching `{closer}`"),
        );
    }
    (at, e.message().trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_keys_list_entries_and_array_tables() {
        let text = "a = 1\n[listen]\npublic = [\n  \"x\",\n  \"y\",\n]\n\
                    [[trunk]]\nname = \"a\"\n\n[[trunk]]\nname = \"b\"\n";
        let doc = DeTable::parse(text).unwrap();
        let s = Spans::new(text, doc.get_ref());
        use Seg::{Index as I, Key as K};
        assert_eq!(s.line_of(&[K("a")]), Some(1));
        assert_eq!(s.line_of(&[K("listen"), K("public")]), Some(3));
        assert_eq!(s.line_of(&[K("listen"), K("public"), I(1)]), Some(5));
        assert_eq!(s.line_of(&[K("trunk"), I(1), K("name")]), Some(11));
        // Absent in the second trunk: that trunk's header.
        assert_eq!(s.line_of(&[K("trunk"), I(1), K("allow")]), Some(10));
        assert_eq!(s.line_of(&[K("listen"), K("internal")]), None);
        assert_eq!(
            s.key_at(text.find("\"y\"").unwrap()).as_deref(),
            Some("listen.public")
        );
        assert_eq!(
            s.key_at(text.find("\"b\"").unwrap()).as_deref(),
            Some("trunk.name")
        );
        assert_eq!(dotted(&[K("trunk"), I(1), K("name")]), "trunk.name");
    }

    #[test]
    fn an_unclosed_bracket_is_located_at_the_bracket() {
        let text = "[listen]\npublic = [\"a\",\n\n[filter]\ndomains = [\"b\"]\n";
        let e = DeTable::parse(text).unwrap_err();
        let (at, msg) = syntax_error(text, &e);
        assert_eq!(at.map(|o| line_at(text, o)), Some(2), "{msg}");
        assert!(msg.starts_with("unclosed array"), "{msg}");
        // Other errors stay where the parser found them.
        let text = "[listen]\nadvertise = \"abc\n\n[filter]\n";
        let e = DeTable::parse(text).unwrap_err();
        let (at, _) = syntax_error(text, &e);
        assert_eq!(at.map(|o| line_at(text, o)), Some(2));
        let (partial, _) = DeTable::parse_recoverable(text);
        let key = Spans::new(text, partial.get_ref()).key_at(at.unwrap());
        assert_eq!(key.as_deref(), Some("listen.advertise"));
    }
}
