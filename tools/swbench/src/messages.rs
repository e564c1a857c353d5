//! The messages swload and swtls send, rendered once per source socket.
//!
//! Sizes follow the measurements (~900-byte INVITE with SDP): the
//! proxy's cost depends on how much it has to scan, so a toy 200-byte
//! request would flatter every system under test.

use crate::template::Template;

use std::net::SocketAddr;

/// Transport token for Via and Contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `UDP`
    Udp,
    /// `TCP`
    Tcp,
    /// `TLS` (swtls: SIP over a TLS connection)
    Tls,
}

impl Transport {
    fn via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

fn sdp(src: &SocketAddr) -> String {
    let ip = src.ip();
    format!(
        "v=0\r\n\
o=bench 8000 8000 IN IP4 {ip}\r\n\
s=swload\r\n\
c=IN IP4 {ip}\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 9 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n"
    )
}

/// A scanner's OPTIONS probe by IP, like svmap's (`OPTIONS sip:100@<ip>`).
pub fn scanner_options(src: &SocketAddr, target: &SocketAddr) -> Template {
    let t = target.ip();
    let head = format!(
        "OPTIONS sip:100@{t} SIP/2.0\r\n\
Via: SIP/2.0/UDP {src};branch=z9hG4bK-s{{seq}};rport\r\n\
Max-Forwards: 70\r\n\
X-Bench-Ts: {{ts}}\r\n\
From: \"sipvicious\" <sip:100@{t}>;tag=s{{seq}}\r\n\
To: \"sipvicious\" <sip:100@{t}>\r\n\
Call-ID: sc{{seq}}@bench.invalid\r\n\
CSeq: 1 OPTIONS\r\n\
Contact: <sip:100@{src}>\r\n\
User-Agent: friendly-scanner\r\n\
Accept: application/sdp\r\n"
    );
    Template::new(&head, "")
}

/// A toll-fraud dialer's INVITE by IP to an international number.
pub fn scanner_invite(src: &SocketAddr, target: &SocketAddr) -> Template {
    let t = target.ip();
    let head = format!(
        "INVITE sip:00972592777777@{t} SIP/2.0\r\n\
Via: SIP/2.0/UDP {src};branch=z9hG4bK-d{{seq}};rport\r\n\
Max-Forwards: 70\r\n\
X-Bench-Ts: {{ts}}\r\n\
From: \"100\" <sip:100@{t}>;tag=d{{seq}}\r\n\
To: <sip:00972592777777@{t}>\r\n\
Call-ID: dc{{seq}}@bench.invalid\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:100@{src}>\r\n\
User-Agent: Z 3.15.40006 rv2.8.20\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY\r\n\
Content-Type: application/sdp\r\n"
    );
    Template::new(&head, &sdp(src))
}

/// A phone's INVITE with the secret domain in the Request-URI and To.
///
/// `prefix` keeps Call-IDs of forward traffic (`fw`) and mix exchanges
/// (`mx`) apart; the mix parses the exchange id back from the Call-ID.
pub fn domain_invite(
    src: &SocketAddr,
    domain: &str,
    user: &str,
    transport: Transport,
    prefix: &str,
) -> Template {
    let (v, p) = (transport.via(), transport.param());
    let head = format!(
        "INVITE sip:{user}@{domain} SIP/2.0\r\n\
Via: SIP/2.0/{v} {src};branch=z9hG4bK-{prefix}{{seq}};rport\r\n\
Max-Forwards: 70\r\n\
X-Bench-Ts: {{ts}}\r\n\
From: \"Bench Caller\" <sip:2000@{domain}>;tag={prefix}{{seq}}\r\n\
To: <sip:{user}@{domain}>\r\n\
Call-ID: {prefix}{{seq}}@bench.invalid\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:2000@{src};transport={p}>\r\n\
User-Agent: swload/0.1 (sipwarden bench)\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY\r\n\
Supported: replaces, timer\r\n\
Session-Expires: 1800\r\n\
Content-Type: application/sdp\r\n"
    );
    Template::new(&head, &sdp(src))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sizes_are_realistic() {
        let src = addr("127.0.0.2:40000");
        let inv = domain_invite(&src, "pbx.secret.example", "1001", Transport::Udp, "fw");
        assert!((800..1100).contains(&inv.len()), "{}", inv.len());
        let scan = scanner_invite(&src, &addr("127.0.0.1:5060"));
        assert!((700..1100).contains(&scan.len()), "{}", scan.len());
    }

    #[test]
    fn domain_invite_parses() {
        let src = addr("127.0.0.2:40000");
        let t = domain_invite(&src, "pbx.secret.example", "1001", Transport::Tcp, "mx");
        let mut buf = vec![0; 2048];
        let n = t.write(&mut buf, 5, 99);
        let m = &buf[..n];
        match sip::start_line(m) {
            Some(sip::StartLine::Request { method, uri }) => {
                assert_eq!(method, b"INVITE");
                assert_eq!(uri, b"sip:1001@pbx.secret.example");
            }
            other => panic!("{other:?}"),
        }
        let via = sip::top_via(m).unwrap();
        assert_eq!(via.transport, b"TCP");
        assert_eq!(via.response_addr(), Some(src));
        assert_eq!(
            sip::first_value(m, "call-id", None),
            Some(&b"mx0000000005@bench.invalid"[..])
        );
        assert_eq!(sip::bench_ts(m), Some(99));
    }

    #[test]
    fn scanner_targets_by_ip() {
        let t = scanner_options(&addr("127.0.0.3:1"), &addr("127.0.0.1:5060"));
        assert!(t
            .bytes()
            .starts_with(b"OPTIONS sip:100@127.0.0.1 SIP/2.0\r\n"));
    }
}
