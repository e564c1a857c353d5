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
pub fn iter(list: &[u8]) -> Params<'_> {
    Params {
        list,
        pos: 0,
        masks: masks(list),
    }
}

/// The iterator of [`iter`].
pub struct Params<'a> {
    list: &'a [u8],
    pos: usize,
    /// `;` and `=` positions as bits, for a list of at most 64 bytes
    /// without quotes (nearly all): separators are then found with bit
    /// operations, not a `memchr` call or a byte loop per parameter
    /// (whose cost is mostly in the long `branch` value).
    masks: Option<(u64, u64)>,
}

fn masks(list: &[u8]) -> Option<(u64, u64)> {
    // Short lists (`;lr`, a tag) are cheaper byte by byte than setting up
    // the masks.
    if list.len() <= 16 {
        return None;
    }
    let mut block = [0u8; 64];
    block.get_mut(..list.len())?.copy_from_slice(list);
    if super::lines::eq_mask(&block, b'"') != 0 {
        return None;
    }
    Some((
        super::lines::eq_mask(&block, b';'),
        super::lines::eq_mask(&block, b'='),
    ))
}

/// Bits at and above `from`.
fn from_bit(m: u64, from: usize) -> u64 {
    if from >= 64 {
        0
    } else {
        m & (u64::MAX << from)
    }
}

impl<'a> Params<'a> {
    /// End of the item starting at `start`, and its first `=` if any.
    fn split(&self, start: usize) -> (usize, Option<usize>) {
        let list = self.list;
        if let Some((semis, eqs)) = self.masks {
            let end = match from_bit(semis, start) {
                0 => list.len(),
                m => m.trailing_zeros() as usize,
            };
            let eq = match from_bit(eqs, start) {
                0 => None,
                m => Some(m.trailing_zeros() as usize).filter(|&e| e < end),
            };
            return (end, eq.map(|e| e - start));
        }
        // Short or long lists, or quotes: byte by byte.
        let mut i = start;
        let mut eq = None;
        let mut quoted = false;
        while i < list.len() {
            match list[i] {
                b'"' => quoted = !quoted,
                b'\\' if quoted => {
                    // The escaped byte is skipped, but an `=` there still
                    // splits name from value.
                    if eq.is_none() && list.get(i + 1) == Some(&b'=') {
                        eq = Some(i + 1 - start);
                    }
                    i += 1;
                }
                b';' if !quoted => break,
                b'=' if eq.is_none() => eq = Some(i - start),
                _ => {}
            }
            i += 1;
        }
        (i.min(list.len()), eq)
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Param<'a>;

    fn next(&mut self) -> Option<Param<'a>> {
        let list = self.list;
        while self.pos < list.len() {
            let start = self.pos;
            let (end, eq) = self.split(start);
            self.pos = end + 1;
            if let Some(p) = item(list, start, end, eq) {
                return Some(p);
            }
        }
        None
    }
}

/// The parameter at `list[start..end]` whose `=` (if any) is `eq` bytes in;
/// None when its name is empty.
fn item(list: &[u8], start: usize, end: usize, eq: Option<usize>) -> Option<Param<'_>> {
    let item = &list[start..end];
    let (name, value) = match eq {
        Some(eq) => (trim(&item[..eq]), Some(trim(&item[eq + 1..]))),
        None => (trim(item), None),
    };
    if name.is_empty() {
        return None;
    }
    // Report the range without surrounding whitespace.
    let lead = item.len() - item.trim_ascii_start().len();
    let tail = item.len() - item.trim_ascii_end().len();
    Some(Param {
        name,
        value,
        start: start + lead,
        end: end - tail,
    })
}

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

    /// The memchr-based splitter this replaced, kept as the reference for
    /// where items and their `=` are (turning an item into a `Param` is
    /// shared).
    fn reference(list: &[u8]) -> Vec<Param<'_>> {
        let mut out = Vec::new();
        let mut pos = 0;
        let plain = memchr::memchr(b'"', list).is_none();
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
            let eq = memchr::memchr(b'=', &list[start..end]);
            out.extend(item(list, start, end, eq));
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn same_as_the_reference(
            data in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b";=\" \\\tab".to_vec()),
                    proptest::prelude::any::<u8>(),
                ],
                0..90,
            )
        ) {
            proptest::prop_assert_eq!(iter(&data).collect::<Vec<_>>(), reference(&data));
        }
    }

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
