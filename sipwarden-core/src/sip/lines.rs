//! Line ends of a header block. Both scanners step from line to line, and
//! SIP lines are short (30-60 bytes): a `memchr` call per line spends much
//! of its work setting up its vector loop. This finds the line feeds of 64
//! bytes at a time as one bit mask (four SSE2 compares on x86_64, where
//! SSE2 is always present) and hands them out from it.

/// Positions of every `\n` in a slice, in order, as `memchr_iter` would
/// give them.
pub struct LineEnds<'a> {
    data: &'a [u8],
    /// Offset of the 64-byte block `mask` describes.
    base: usize,
    /// Line feeds of that block not yet handed out, bit i = `base + i`.
    mask: u64,
}

impl<'a> LineEnds<'a> {
    pub fn new(data: &'a [u8]) -> LineEnds<'a> {
        LineEnds {
            data,
            base: 0,
            mask: block_mask(data),
        }
    }
}

impl Iterator for LineEnds<'_> {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        loop {
            if self.mask != 0 {
                let i = self.mask.trailing_zeros() as usize;
                self.mask &= self.mask - 1;
                return Some(self.base + i);
            }
            let next = self.base + 64;
            if next >= self.data.len() {
                return None;
            }
            self.base = next;
            self.mask = block_mask(&self.data[next..]);
        }
    }
}

/// Bit i set when `block[i]` is a line feed, for its first 64 bytes.
#[inline]
fn block_mask(block: &[u8]) -> u64 {
    match block.first_chunk::<64>() {
        Some(full) => full_mask(full),
        None => {
            // The last, short block: copied into a zeroed one (zero is not
            // a line feed), so it takes the same path.
            let mut b = [0u8; 64];
            b[..block.len()].copy_from_slice(block);
            full_mask(&b)
        }
    }
}

/// The same for exactly 64 bytes.
#[inline]
fn full_mask(b: &[u8; 64]) -> u64 {
    eq_mask(b, b'\n')
}

/// Bit i set when `b[i] == c` (four SSE2 compares on x86_64, where SSE2
/// is always present).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn eq_mask(b: &[u8; 64], c: u8) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let p = b.as_ptr().cast::<__m128i>();
    // SAFETY: SSE2 is part of the x86_64 baseline; the four unaligned
    // 16-byte loads stay within the 64-byte array.
    unsafe {
        let needle = _mm_set1_epi8(c as i8);
        let m = |i: usize| {
            let v = _mm_loadu_si128(p.add(i));
            u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, needle)) as u16)
        };
        m(0) | m(1) << 16 | m(2) << 32 | m(3) << 48
    }
}

/// The same (portable).
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(crate) fn eq_mask(b: &[u8; 64], c: u8) -> u64 {
    let mut m = 0u64;
    for (i, &x) in b.iter().enumerate() {
        m |= u64::from(x == c) << i;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_as_memchr(data: &[u8]) {
        let want: Vec<usize> = memchr::memchr_iter(b'\n', data).collect();
        let got: Vec<usize> = LineEnds::new(data).collect();
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(data));
    }

    #[test]
    fn agrees_with_memchr_at_every_length_and_offset() {
        same_as_memchr(b"");
        same_as_memchr(b"\n");
        same_as_memchr(b"no line end");
        // Line feeds on and around every block boundary.
        for len in 0..200 {
            for every in [1usize, 2, 7, 63, 64, 65] {
                let data: Vec<u8> = (0..len)
                    .map(|i| if i % every == every - 1 { b'\n' } else { b'x' })
                    .collect();
                same_as_memchr(&data);
            }
        }
        let msg = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-1\r\n\
                    From: <sip:100@1.1.1.1>;tag=a\r\nTo: <sip:100@192.0.2.1>\r\nCall-ID: 1@x\r\n\r\nbody\n";
        same_as_memchr(msg);
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_memchr_on_random_bytes(
            data in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(b'\n'), proptest::prelude::any::<u8>()],
                0..700,
            )
        ) {
            same_as_memchr(&data);
        }
    }
}
