//! Pre-built messages with fixed-width fields patched in place.
//!
//! The load generator must spend its time in the kernel, not formatting
//! text: each message is rendered once, and per send only a sequence number
//! (Call-ID, branch, tag) and the `X-Bench-Ts` stamp are overwritten, as
//! fixed-width digits, so the length and Content-Length never change.

/// Digits of the per-message sequence number.
pub const SEQ_WIDTH: usize = 10;
/// Digits of the nanosecond timestamp (u64 max has 20 digits).
pub const TS_WIDTH: usize = 20;
/// Marker replaced by the sequence number in [`Template::new`].
pub const SEQ: &str = "{seq}";
/// Marker replaced by the timestamp in [`Template::new`].
pub const TS: &str = "{ts}";

/// Writes `value` as exactly `out.len()` decimal digits (high digits dropped, zero-padded).
pub fn write_digits(out: &mut [u8], mut value: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// A rendered message and where its variable digits are.
#[derive(Clone, Debug)]
pub struct Template {
    bytes: Vec<u8>,
    seq_at: Vec<usize>,
    ts_at: Vec<usize>,
}

impl Template {
    /// Renders `head` (start line and headers, each ending in CRLF, without
    /// Content-Length) plus `body`. `{seq}` and `{ts}` markers in `head`
    /// become fixed-width digit fields.
    pub fn new(head: &str, body: &str) -> Template {
        let mut bytes = Vec::with_capacity(head.len() + body.len() + 64);
        let mut seq_at = Vec::new();
        let mut ts_at = Vec::new();
        let mut rest = head;
        loop {
            let next_seq = rest.find(SEQ);
            let next_ts = rest.find(TS);
            let (at, is_seq) = match (next_seq, next_ts) {
                (Some(s), Some(t)) if s < t => (s, true),
                (Some(_), Some(t)) => (t, false),
                (Some(s), None) => (s, true),
                (None, Some(t)) => (t, false),
                (None, None) => break,
            };
            bytes.extend_from_slice(&rest.as_bytes()[..at]);
            if is_seq {
                seq_at.push(bytes.len());
                bytes.extend_from_slice(&[b'0'; SEQ_WIDTH]);
                rest = &rest[at + SEQ.len()..];
            } else {
                ts_at.push(bytes.len());
                bytes.extend_from_slice(&[b'0'; TS_WIDTH]);
                rest = &rest[at + TS.len()..];
            }
        }
        bytes.extend_from_slice(rest.as_bytes());
        bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        bytes.extend_from_slice(body.as_bytes());
        Template {
            bytes,
            seq_at,
            ts_at,
        }
    }

    /// Length of the rendered message.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for an empty template (never produced by [`Template::new`]).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The rendered bytes with zeroed fields.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Overwrites the variable fields of a buffer that already holds this template.
    pub fn patch(&self, out: &mut [u8], seq: u64, ts: u64) {
        for &at in &self.seq_at {
            if let Some(f) = out.get_mut(at..at + SEQ_WIDTH) {
                write_digits(f, seq);
            }
        }
        for &at in &self.ts_at {
            if let Some(f) = out.get_mut(at..at + TS_WIDTH) {
                write_digits(f, ts);
            }
        }
    }

    /// Copies the template into `out` and patches it; returns the length
    /// written, or 0 when `out` is too small.
    pub fn write(&self, out: &mut [u8], seq: u64, ts: u64) -> usize {
        let n = self.bytes.len();
        let Some(dst) = out.get_mut(..n) else {
            return 0;
        };
        dst.copy_from_slice(&self.bytes);
        self.patch(dst, seq, ts);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip;

    #[test]
    fn digits() {
        let mut b = [0u8; 5];
        write_digits(&mut b, 42);
        assert_eq!(&b, b"00042");
        write_digits(&mut b, 1_234_567);
        assert_eq!(&b, b"34567");
    }

    #[test]
    fn patch_keeps_length_and_content_length() {
        let t = Template::new(
            "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nCall-ID: c{seq}@x\r\nX-Bench-Ts: {ts}\r\nVia: SIP/2.0/UDP 127.0.0.2:1;branch=z9hG4bK{seq}\r\n",
            "abc",
        );
        let mut buf = vec![0u8; 512];
        let n = t.write(&mut buf, 77, 123_456_789);
        assert_eq!(n, t.len());
        let msg = &buf[..n];
        assert_eq!(sip::bench_ts(msg), Some(123_456_789));
        assert_eq!(
            sip::first_value(msg, "call-id", Some(b'i')),
            Some(&b"c0000000077@x"[..])
        );
        assert_eq!(
            sip::top_via(msg).unwrap().branch(),
            Some(&b"z9hG4bK0000000077"[..])
        );
        assert_eq!(
            sip::first_value(msg, "content-length", None),
            Some(&b"3"[..])
        );
        assert_eq!(&msg[sip::body_offset(msg)..], b"abc");
        assert_eq!(t.write(&mut [0u8; 4], 1, 1), 0);
    }
}
