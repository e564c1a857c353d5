//! Signed values sipwarden writes into messages and later trusts again
//! without keeping state: Via branches, Record-Route tokens and flow
//! tokens. All are keyed BLAKE3 MACs over the secret key file, so they
//! verify after a restart as long as the key file is kept.
//!
//! Below admission (`policy` verifies Route and Contact tokens) and
//! forwarding (`proxy` writes them): it depends on nothing but `flow`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::flow::{Transport, MAX_LISTENERS};

/// RFC 3261 magic cookie plus our own marker.
pub const BRANCH_PREFIX: &[u8] = b"z9hG4bKsw";
/// Prefix + direction + listener + 16 + 8 + 16 hex digits.
pub const BRANCH_LEN: usize = BRANCH_PREFIX.len() + 2 + 40;
/// Length of a Record-Route token (`swr=` parameter).
pub const ROUTE_TOKEN_LEN: usize = 16;

/// Which way a request we forwarded was going; responses must come back
/// from the opposite side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the public side to the backend.
    Inbound,
    /// From Asterisk to the outside.
    Outbound,
}

impl Dir {
    fn byte(self) -> u8 {
        match self {
            Dir::Inbound => b'i',
            Dir::Outbound => b'o',
        }
    }
}

/// What a verified branch of ours says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BranchInfo {
    pub dir: Dir,
    /// Index of the listener the request arrived on.
    pub listener: u8,
    /// Loop-detection digest of the request that carried this branch.
    pub loop_key: [u8; 4],
}

/// Where the response to a request we forward goes: the transport and
/// address of the Via below ours, as RFC 3581 (`received`, `rport`) left
/// it. The branch binds it: whoever receives the request sees that Via
/// and can rewrite it, so a response is relayed to this address or
/// nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReturnAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// The hop a forwarded request came from, as its branch binds it: its
/// transaction (`key`: the incoming top branch, or a digest of an RFC 2543
/// Via) and where the responses to it go back to.
#[derive(Clone, Copy, Debug)]
pub struct PrevHop<'a> {
    pub key: &'a [u8],
    pub back: Option<ReturnAddr>,
}

/// Longest encoding of a return address: a tag, an IPv6 address, a port.
const RETURN_LEN: usize = 1 + 16 + 2;

/// A return address as the branch MAC takes it: a tag (0 for none, else
/// the transport and the address family), the address and the port.
fn return_bytes(r: Option<ReturnAddr>) -> ([u8; RETURN_LEN], usize) {
    let mut out = [0u8; RETURN_LEN];
    let Some(r) = r else {
        return (out, 1);
    };
    let t = match r.transport {
        Transport::Udp => 1,
        Transport::Tcp => 2,
        Transport::Tls => 3,
        // Clear of the address-family bit (4).
        Transport::Ws => 8,
        Transport::Wss => 16,
    };
    let n = match r.addr.ip() {
        IpAddr::V4(a) => {
            out[0] = t;
            out[1..5].copy_from_slice(&a.octets());
            5
        }
        IpAddr::V6(a) => {
            out[0] = t | 4;
            out[1..17].copy_from_slice(&a.octets());
            17
        }
    };
    out[n..n + 2].copy_from_slice(&r.addr.port().to_be_bytes());
    (out, n + 2)
}

/// Where a phone or trunk can be reached again: the transport, the public
/// listener and the remote address its message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowRef {
    pub transport: Transport,
    pub listener: u8,
    pub remote: SocketAddr,
}

/// The secret key and the MACs made with it.
#[derive(Clone)]
pub struct Keys {
    key: [u8; 32],
    /// SipHash key derived from `key`, for table keys and uniqueness
    /// hashes (not for tokens a forger could use).
    sip: [u8; 16],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
}

fn unhex(s: &[u8], out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = (val(s[2 * i])? << 4) | val(s[2 * i + 1])?;
    }
    Some(())
}

/// Constant-time comparison, so a forger learns nothing from timing.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The character that names each listener in a branch: its length ties
/// the encoding to the number of listeners the config allows.
const LISTENER_CHARS: &[u8; MAX_LISTENERS] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn listener_char(l: u8) -> u8 {
    LISTENER_CHARS[usize::from(l).min(MAX_LISTENERS - 1)]
}

fn char_listener(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'z' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Longest flow token: `f` + hex of 1 + 16 + 2 bytes of flow and 6 of MAC.
const FLOW_TOKEN_MAX: usize = 1 + 2 * (1 + 16 + 2 + 6);
/// Flow tokens each thread remembers (direct-mapped).
const FLOW_CACHE: usize = 64;

/// A flow token as written into a URI user part: on the stack, no
/// allocation per forwarded request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FlowToken {
    buf: [u8; FLOW_TOKEN_MAX],
    len: u8,
}

impl FlowToken {
    /// No flow (an entry without a user part).
    pub const NONE: FlowToken = FlowToken {
        buf: [0; FLOW_TOKEN_MAX],
        len: 0,
    };

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Display for FlowToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only 'f' and hex digits.
        f.write_str(std::str::from_utf8(self.as_bytes()).unwrap_or_default())
    }
}

impl std::fmt::Debug for FlowToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlowToken({self})")
    }
}

/// Cache slot of a flow: its port and the low bits of its address.
fn flow_slot(f: &FlowRef) -> usize {
    let low = match f.remote.ip() {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => (u128::from(a) as u32) ^ ((u128::from(a) >> 64) as u32),
    };
    let h = low ^ u32::from(f.remote.port()).rotate_left(7) ^ u32::from(f.listener) << 3;
    (h.wrapping_mul(0x9e37_79b9) >> 26) as usize % FLOW_CACHE
}

/// Length of `label` followed by each part as a 4-byte little-endian
/// length and its bytes: the input every hash and MAC here is taken over.
fn framed_len(label: &[u8], parts: &[&[u8]]) -> usize {
    label.len() + parts.iter().map(|p| 4 + p.len()).sum::<usize>()
}

/// Short inputs are hashed from one stack buffer: SipHash and BLAKE3 both
/// cost several times more when fed the pieces one by one (SipHash
/// buffers each small write). Longer inputs are fed piece by piece; both ways hash the
/// same bytes, so values never depend on which way was taken.
const FRAME_BUF: usize = 192;

/// Calls `f` with the framed input of `label` and `parts` in one piece,
/// or returns None when it is longer than [`FRAME_BUF`].
fn one_piece<R>(label: &[u8], parts: &[&[u8]], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    if framed_len(label, parts) > FRAME_BUF {
        return None;
    }
    let mut buf = [0u8; FRAME_BUF];
    buf[..label.len()].copy_from_slice(label);
    let mut n = label.len();
    for p in parts {
        buf[n..n + 4].copy_from_slice(&(p.len() as u32).to_le_bytes());
        buf[n + 4..n + 4 + p.len()].copy_from_slice(p);
        n += 4 + p.len();
    }
    Some(f(&buf[..n]))
}

/// Calls `write` with the framed input piece by piece.
fn pieces(label: &[u8], parts: &[&[u8]], mut write: impl FnMut(&[u8])) {
    write(label);
    for p in parts {
        write(&(p.len() as u32).to_le_bytes());
        write(p);
    }
}

/// The framed input to a streaming hasher: in one piece when short.
fn feed(label: &[u8], parts: &[&[u8]], mut write: impl FnMut(&[u8])) {
    if one_piece(label, parts, &mut write).is_none() {
        pieces(label, parts, write);
    }
}

impl Keys {
    pub fn new(key: [u8; 32]) -> Keys {
        let d = blake3::keyed_hash(&key, b"siphash-key");
        let mut sip = [0u8; 16];
        sip.copy_from_slice(&d.as_bytes()[..16]);
        Keys { key, sip }
    }

    /// Keyed SipHash-1-3 over length-prefixed parts: 128 bits, stable.
    fn sip128(&self, label: &[u8], parts: &[&[u8]]) -> u128 {
        use std::hash::Hasher;
        let mut h = siphasher::sip128::SipHasher13::new_with_key(&self.sip);
        feed(label, parts, |b| h.write(b));
        siphasher::sip128::Hasher128::finish128(&h).as_u128()
    }

    /// Keyed SipHash-1-3, 64 bits: where 64 bits are plenty.
    fn sip64(&self, label: &[u8], parts: &[&[u8]]) -> u64 {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_key(&self.sip);
        feed(label, parts, |b| h.write(b));
        h.finish()
    }

    /// MAC over length-prefixed parts under a domain label, so values of
    /// one kind can never be replayed as another.
    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        // BLAKE3's one-shot function skips the incremental hasher's
        // bookkeeping.
        if let Some(m) = one_piece(label, parts, |b| blake3::keyed_hash(&self.key, b)) {
            return *m.as_bytes();
        }
        let mut h = blake3::Hasher::new_keyed(&self.key);
        pieces(label, parts, |b| {
            h.update(b);
        });
        *h.finalize().as_bytes()
    }

    /// Digest of what makes a request the same request when it comes back
    /// (RFC 3261 16.3 item 4): Request-URI, Call-ID, From tag, CSeq number.
    pub fn loop_key(&self, ruri: &[u8], call_id: &[u8], from_tag: &[u8], cseq: u32) -> [u8; 4] {
        let m = self
            .sip64(b"loop", &[ruri, call_id, from_tag, &cseq.to_le_bytes()])
            .to_le_bytes();
        [m[0], m[1], m[2], m[3]]
    }

    /// The branch for a request we forward. `prev` is where it came from:
    /// its transaction and where its responses go, bound so that the peer
    /// who sees the Via below ours cannot send them elsewhere. `target` is
    /// the next hop. A CANCEL or a non-2xx ACK from the same place as its
    /// INVITE has all three equal to the INVITE's and gets the same branch
    /// (RFC 3261 16.11). `call_id` binds the MAC to the dialog.
    pub fn branch(
        &self,
        dir: Dir,
        listener: u8,
        prev: PrevHop<'_>,
        target: &[u8],
        call_id: &[u8],
        loop_key: [u8; 4],
    ) -> [u8; BRANCH_LEN] {
        let mut out = [0u8; BRANCH_LEN];
        let p = BRANCH_PREFIX.len();
        out[..p].copy_from_slice(BRANCH_PREFIX);
        out[p] = dir.byte();
        out[p + 1] = listener_char(listener);
        // Uniqueness only (the MAC below is what verifies).
        let h1 = self.sip64(b"branch", &[prev.key, target]).to_le_bytes();
        hex_into(&mut out[p + 2..p + 18], &h1[..8]);
        hex_into(&mut out[p + 18..p + 26], &loop_key);
        let tag = self.branch_mac(&out[p..p + 26], prev, call_id);
        hex_into(&mut out[p + 26..], &tag[..8]);
        out
    }

    fn branch_mac(&self, head: &[u8], prev: PrevHop<'_>, call_id: &[u8]) -> [u8; 32] {
        let (back, n) = return_bytes(prev.back);
        self.mac(b"branch-mac", &[head, prev.key, &back[..n], call_id])
    }

    /// Checks that `branch` is one we made for a request that came from
    /// `prev` (its transaction, and where its responses go), in the dialog
    /// `call_id`.
    pub fn verify_branch(
        &self,
        branch: &[u8],
        prev: PrevHop<'_>,
        call_id: &[u8],
    ) -> Option<BranchInfo> {
        if branch.len() != BRANCH_LEN || !branch.starts_with(BRANCH_PREFIX) {
            return None;
        }
        let p = BRANCH_PREFIX.len();
        let dir = match branch[p] {
            b'i' => Dir::Inbound,
            b'o' => Dir::Outbound,
            _ => return None,
        };
        let listener = char_listener(branch[p + 1])?;
        let mut given = [0u8; 8];
        unhex(&branch[p + 26..], &mut given)?;
        let tag = self.branch_mac(&branch[p..p + 26], prev, call_id);
        if !ct_eq(&given, &tag[..8]) {
            return None;
        }
        let mut loop_key = [0u8; 4];
        unhex(&branch[p + 18..p + 26], &mut loop_key)?;
        Some(BranchInfo {
            dir,
            listener,
            loop_key,
        })
    }

    /// Token for our Record-Route entries, bound to the Call-ID and to the
    /// flow token in the entry's user part (empty if none).
    pub fn route_token(&self, call_id: &[u8], user: &[u8]) -> [u8; ROUTE_TOKEN_LEN] {
        let m = self.mac(b"route", &[call_id, user]);
        let mut out = [0u8; ROUTE_TOKEN_LEN];
        hex_into(&mut out, &m[..ROUTE_TOKEN_LEN / 2]);
        out
    }

    pub fn verify_route_token(&self, token: &[u8], call_id: &[u8], user: &[u8]) -> bool {
        ct_eq(token, &self.route_token(call_id, user))
    }

    /// Encodes a flow as a URI user part: `f` + hex(transport+listener,
    /// ip, port) + hex(mac). Used in Path and Record-Route.
    ///
    /// A phone or trunk sends many requests down one flow, so each thread
    /// keeps the last tokens it made (the BLAKE3 MAC is the larger part of
    /// a forwarded INVITE's token work).
    pub fn flow_token(&self, f: &FlowRef) -> FlowToken {
        thread_local! {
            static RECENT: std::cell::RefCell<[Option<(u64, FlowRef, FlowToken)>; FLOW_CACHE]> =
                const { std::cell::RefCell::new([None; FLOW_CACHE]) };
        }
        let id = u64::from_le_bytes([
            self.sip[0],
            self.sip[1],
            self.sip[2],
            self.sip[3],
            self.sip[4],
            self.sip[5],
            self.sip[6],
            self.sip[7],
        ]);
        let slot = flow_slot(f);
        let hit = RECENT.with(|r| match r.borrow()[slot] {
            Some((k, g, t)) if k == id && g == *f => Some(t),
            _ => None,
        });
        if let Some(t) = hit {
            return t;
        }
        let t = self.make_flow_token(f);
        RECENT.with(|r| r.borrow_mut()[slot] = Some((id, *f, t)));
        t
    }

    fn make_flow_token(&self, f: &FlowRef) -> FlowToken {
        let mut raw = [0u8; 1 + 16 + 2];
        // One bit: stream or datagram. A TLS flow is a stream flow whose
        // listener is a TLS one; `Settings::flow_transport` tells them
        // apart when the token comes back (a WebSocket flow the same way).
        let t = u8::from(f.transport.is_stream());
        let v6 = f.remote.is_ipv6();
        raw[0] = (t << 7) | (u8::from(v6) << 6) | (f.listener & 0x3f);
        let n = match f.remote.ip() {
            IpAddr::V4(a) => {
                raw[1..5].copy_from_slice(&a.octets());
                5
            }
            IpAddr::V6(a) => {
                raw[1..17].copy_from_slice(&a.octets());
                17
            }
        };
        raw[n..n + 2].copy_from_slice(&f.remote.port().to_be_bytes());
        let body = &raw[..n + 2];
        let m = self.mac(b"flow", &[body]);
        let len = 1 + 2 * (body.len() + 6);
        let mut out = FlowToken {
            buf: [b'f'; FLOW_TOKEN_MAX],
            len: len as u8,
        };
        hex_into(&mut out.buf[1..1 + 2 * body.len()], body);
        hex_into(&mut out.buf[1 + 2 * body.len()..len], &m[..6]);
        out
    }

    /// Decodes and verifies a flow token.
    pub fn verify_flow_token(&self, tok: &[u8]) -> Option<FlowRef> {
        let hex = tok.strip_prefix(b"f")?;
        let body_len = match hex.len() {
            26 => 7,  // (1 + 4 + 2 + 6) * 2
            50 => 19, // (1 + 16 + 2 + 6) * 2
            _ => return None,
        };
        let mut raw = [0u8; 25];
        unhex(hex, &mut raw[..body_len + 6])?;
        let m = self.mac(b"flow", &[&raw[..body_len]]);
        if !ct_eq(&raw[body_len..body_len + 6], &m[..6]) {
            return None;
        }
        let transport = if raw[0] & 0x80 != 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let v6 = raw[0] & 0x40 != 0;
        if v6 != (body_len == 19) {
            return None;
        }
        let ip = if v6 {
            let mut o = [0u8; 16];
            o.copy_from_slice(&raw[1..17]);
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            IpAddr::V4(Ipv4Addr::new(raw[1], raw[2], raw[3], raw[4]))
        };
        let pe = body_len - 2;
        let port = u16::from_be_bytes([raw[pe], raw[pe + 1]]);
        Some(FlowRef {
            transport,
            listener: raw[0] & 0x3f,
            remote: SocketAddr::new(ip, port),
        })
    }

    /// A stable To tag for replies sipwarden generates itself, so that a
    /// retransmitted request gets the same answer.
    pub fn reply_tag(&self, call_id: &[u8], from_tag: &[u8]) -> [u8; 16] {
        let m = self.mac(b"reply-tag", &[call_id, from_tag]);
        let mut out = [0u8; 16];
        hex_into(&mut out, &m[..8]);
        out
    }

    /// Dialog table key: Call-ID and a tag, keyed so an attacker cannot
    /// pick colliding keys.
    pub fn dialog_key(&self, call_id: &[u8], tag: &[u8]) -> u128 {
        self.sip128(b"dialog", &[call_id, tag])
    }

    /// A tag, hashed for the dialog table (never 0: 0 means no tag yet).
    pub fn tag_hash(&self, tag: &[u8]) -> u64 {
        self.sip64(b"tag", &[tag]).max(1)
    }

    /// A request's credentials (its Authorization and Proxy-Authorization
    /// values), hashed into 8 hex digits for our Via (`swa=`): the answers
    /// to the same credentials, a retransmission's, then count once toward
    /// a ban. Keyed, so that a guesser cannot make two guesses collide.
    pub fn credentials_mark(&self, values: &[&[u8]]) -> [u8; 8] {
        let h = (self.sip64(b"credentials", values) as u32).max(1);
        let mut out = [0u8; 8];
        hex_into(&mut out, &h.to_be_bytes());
        out
    }

    /// Hash of a REGISTER's Call-ID, keying pending registrations.
    pub fn call_key(&self, call_id: &[u8]) -> u128 {
        self.sip128(b"call", &[call_id])
    }

    /// The `sw=` token of a trunk Contact: unguessable, stable per trunk
    /// and account, so re-registrations and restarts keep it.
    pub fn contact_token(&self, trunk: &[u8], user: &[u8]) -> String {
        let m = self.mac(b"trunk-contact", &[trunk, user]);
        to_hex(&m[..10])
    }

    /// Fingerprint of the key, stored in the state file.
    pub fn key_id(&self) -> String {
        to_hex(&self.mac(b"key-id", &[])[..8])
    }

    /// A keyed digest for other modules.
    pub fn digest(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        self.mac(label, parts)
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// Parses lower- or upper-case hex into `out`.
pub fn from_hex(s: &[u8], out: &mut [u8]) -> Option<()> {
    unhex(s, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new([7; 32])
    }

    /// Every listener the config allows comes back from its branch as
    /// itself.
    #[test]
    fn every_listener_survives_its_branch() {
        let k = keys();
        for l in 0..MAX_LISTENERS as u8 {
            let prev = PrevHop {
                key: b"z9hG4bKp",
                back: None,
            };
            let b = k.branch(Dir::Inbound, l, prev, b"t", b"cid", [0; 4]);
            let info = k.verify_branch(&b, prev, b"cid");
            assert_eq!(info.map(|i| i.listener), Some(l), "listener {l}");
        }
    }

    fn back(t: Transport, a: &str) -> Option<ReturnAddr> {
        Some(ReturnAddr {
            transport: t,
            addr: a.parse().unwrap(),
        })
    }

    fn from(key: &[u8], back: Option<ReturnAddr>) -> PrevHop<'_> {
        PrevHop { key, back }
    }

    #[test]
    fn branch_roundtrip_and_binding() {
        let k = keys();
        let lk = k.loop_key(b"sip:a@b", b"cid", b"ft", 1);
        let ast = back(Transport::Udp, "127.0.0.1:5080");
        let b = k.branch(
            Dir::Outbound,
            3,
            from(b"z9hG4bKprev", ast),
            b"sip:x:5060",
            b"cid",
            lk,
        );
        assert!(b.starts_with(BRANCH_PREFIX));
        let info = k
            .verify_branch(&b, from(b"z9hG4bKprev", ast), b"cid")
            .unwrap();
        assert_eq!(info.dir, Dir::Outbound);
        assert_eq!(info.listener, 3);
        assert_eq!(info.loop_key, lk);
        // Same inputs, same branch (CANCEL / non-2xx ACK).
        assert_eq!(
            b,
            k.branch(
                Dir::Outbound,
                3,
                from(b"z9hG4bKprev", ast),
                b"sip:x:5060",
                b"cid",
                lk
            )
        );
        // Different target, different branch.
        assert_ne!(
            b,
            k.branch(
                Dir::Outbound,
                3,
                from(b"z9hG4bKprev", ast),
                b"sip:y:5060",
                b"cid",
                lk
            )
        );
        // Bound to the previous branch, the Call-ID and the key.
        assert!(k
            .verify_branch(&b, from(b"z9hG4bKother", ast), b"cid")
            .is_none());
        assert!(k
            .verify_branch(&b, from(b"z9hG4bKprev", ast), b"cid2")
            .is_none());
        assert!(Keys::new([8; 32])
            .verify_branch(&b, from(b"z9hG4bKprev", ast), b"cid")
            .is_none());
        // And to where the response goes: another port, address, family
        // or transport, or none, is another branch.
        for other in [
            back(Transport::Udp, "127.0.0.1:6379"),
            back(Transport::Udp, "127.0.0.2:5080"),
            back(Transport::Udp, "[::ffff:127.0.0.1]:5080"),
            back(Transport::Tcp, "127.0.0.1:5080"),
            None,
        ] {
            assert!(
                k.verify_branch(&b, from(b"z9hG4bKprev", other), b"cid")
                    .is_none(),
                "{other:?}"
            );
        }
        let mut forged = b;
        forged[BRANCH_PREFIX.len()] = b'i';
        assert!(k
            .verify_branch(&forged, from(b"z9hG4bKprev", ast), b"cid")
            .is_none());
        assert!(k
            .verify_branch(b"z9hG4bKsw", from(b"", None), b"")
            .is_none());
    }

    #[test]
    fn flow_tokens() {
        let k = keys();
        for (t, addr) in [
            (Transport::Udp, "192.0.2.10:5062"),
            (Transport::Tcp, "[2001:db8::7]:40000"),
        ] {
            let f = FlowRef {
                transport: t,
                listener: 2,
                remote: addr.parse().unwrap(),
            };
            let tok = k.flow_token(&f);
            assert_eq!(k.verify_flow_token(tok.as_bytes()), Some(f));
            // Remembered or made afresh, the same token; another key's
            // token (same flow, same thread) is another one.
            assert_eq!(tok, k.make_flow_token(&f));
            assert_eq!(tok, k.flow_token(&f));
            let other = Keys::new([1; 32]);
            assert_ne!(other.flow_token(&f), tok);
            assert_eq!(k.flow_token(&f), tok);
            let mut bad = tok.as_bytes().to_vec();
            let last = bad.len() - 1;
            bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
            assert_eq!(k.verify_flow_token(&bad), None);
            assert_eq!(Keys::new([1; 32]).verify_flow_token(tok.as_bytes()), None);
        }
        assert_eq!(k.verify_flow_token(b"f00"), None);
        assert_eq!(k.verify_flow_token(b""), None);
    }

    /// Tokens issued before an upgrade must still verify: whether the
    /// input is hashed in one piece or streamed must never change a value.
    #[test]
    fn one_piece_and_streamed_hash_the_same() {
        use std::hash::Hasher;
        let k = keys();
        for len in [0, 1, 40, FRAME_BUF - 20, FRAME_BUF - 13, FRAME_BUF, 300] {
            let long = vec![b'x'; len];
            let parts: [&[u8]; 3] = [b"cid", &long, b""];
            let mut s64 = siphasher::sip::SipHasher13::new_with_key(&k.sip);
            let mut s128 = siphasher::sip128::SipHasher13::new_with_key(&k.sip);
            let mut b3 = blake3::Hasher::new_keyed(&k.key);
            pieces(b"label", &parts, |b| {
                s64.write(b);
                s128.write(b);
                b3.update(b);
            });
            assert_eq!(k.sip64(b"label", &parts), s64.finish(), "{len}");
            assert_eq!(
                k.sip128(b"label", &parts),
                siphasher::sip128::Hasher128::finish128(&s128).as_u128()
            );
            assert_eq!(k.mac(b"label", &parts), *b3.finalize().as_bytes());
        }
    }

    #[test]
    fn route_tokens() {
        let k = keys();
        let t = k.route_token(b"cid", b"");
        assert!(k.verify_route_token(&t, b"cid", b""));
        assert!(!k.verify_route_token(&t, b"cid2", b""));
        assert!(!k.verify_route_token(&t, b"cid", b"fabc"));
        assert!(!k.verify_route_token(&t[..8], b"cid", b""));
    }
}
