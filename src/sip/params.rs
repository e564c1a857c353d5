//! `;name=value` parameter lists (URI, header and Via parameters).

fn trim(mut b: &[u8]) -> &[u8] {
    while let [c, rest @ ..] = b {
        if c.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., c] = b {
        if c.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// One parameter with its byte range inside the list it came from, so an
/// editor can replace or delete it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
    /// Range of `name[=value]` inside the list (without the `;`).
    pub start: usize,
    pub end: usize,
}

/// Iterates over a parameter list such as `;lr;transport=tcp` or
/// `branch=z9hG4bK1;rport`. A leading `;` is optional. Quoted values may
/// hold `;`.
pub fn iter(list: &[u8]) -> impl Iterator<Item = Param<'_>> + '_ {
    let mut pos = 0;
    // Without quotes (nearly always) a separator search does it.
    let plain = memchr::memchr(b'"', list).is_none();
    std::iter::from_fn(move || {
        while pos < list.len() {
            let start = pos;
            let mut i = pos;
            if plain {
                i = memchr::memchr(b';', &list[pos..]).map_or(list.len(), |j| pos + j);
            } else {
                let mut quoted = false;
                while i < list.len() {
                    match list[i] {
                        b'"' => quoted = !quoted,
                        b'\\' if quoted => i += 1,
                        b';' if !quoted => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            let end = i.min(list.len());
            pos = end + 1;
            let item = &list[start..end];
            let (name, value) = match memchr::memchr(b'=', item) {
                Some(eq) => (trim(&item[..eq]), Some(trim(&item[eq + 1..]))),
                None => (trim(item), None),
            };
            if name.is_empty() {
                continue;
            }
            // Report the range without surrounding whitespace.
            let lead = item.len() - item.trim_ascii_start().len();
            let tail = item.len() - item.trim_ascii_end().len();
            return Some(Param {
                name,
                value,
                start: start + lead,
                end: end - tail,
            });
        }
        None
    })
}

/// Finds a parameter by name (case-insensitive). `Some(None)` is a flag
/// parameter such as `lr` or a bare `rport`.
pub fn find<'a>(list: &'a [u8], name: &[u8]) -> Option<Option<&'a [u8]>> {
    find_param(list, name).map(|p| p.value)
}

/// Like `find`, with the parameter's position.
pub fn find_param<'a>(list: &'a [u8], name: &[u8]) -> Option<Param<'a>> {
    iter(list).find(|p| p.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_params() {
        let l = b";lr;transport=TCP; tag = a1 ;x=\"q;uoted\";y";
        assert_eq!(find(l, b"lr"), Some(None));
        assert_eq!(find(l, b"TRANSPORT"), Some(Some(&b"TCP"[..])));
        assert_eq!(find(l, b"tag"), Some(Some(&b"a1"[..])));
        assert_eq!(find(l, b"x"), Some(Some(&b"\"q;uoted\""[..])));
        assert_eq!(find(l, b"y"), Some(None));
        assert_eq!(find(l, b"z"), None);
        let p = find_param(l, b"tag").unwrap();
        assert_eq!(&l[p.start..p.end], b"tag = a1");
        assert_eq!(iter(b"").count(), 0);
        assert_eq!(iter(b";;;").count(), 0);
    }
}
