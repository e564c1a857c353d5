//! In-dialog requests of the mix scenario, built by RFC 3261 rules.
//!
//! A proxy that record-routes must see the ACK and BYE again, and only a UAC
//! that follows section 12 sends them there: route set = the 2xx's
//! Record-Route entries in reverse order (12.1.2, the UAC side),
//! Request-URI = the 2xx's Contact, To with the UAS's tag (12.2.1.1), and
//! the next hop taken from the first Route (loose routing) or, for a strict
//! router (no `;lr`), the Request-URI rewrite of 12.2.1.1.

use std::net::SocketAddr;

use swbench::net;
use swbench::sip;

/// What a 2xx to INVITE establishes, owned so it outlives the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Contact URI of the UAS (the remote target).
    pub remote_target: Vec<u8>,
    /// Route set in the order the UAC puts it in Route (reversed Record-Route).
    pub route_set: Vec<Vec<u8>>,
    /// From value (our tag).
    pub from: Vec<u8>,
    /// To value with the UAS's tag.
    pub to: Vec<u8>,
    /// Call-ID.
    pub call_id: Vec<u8>,
    /// CSeq number of the INVITE (the ACK reuses it).
    pub invite_cseq: u32,
}

/// Why a dialog could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogError {
    /// A header the dialog needs is missing or malformed.
    Malformed,
    /// The 2xx's To has no tag.
    NoToTag,
    /// The next hop is not an IP literal, or not on loopback.
    Unroutable,
}

/// Where an in-dialog request goes and what it carries for routing.
struct Routing {
    ruri: Vec<u8>,
    routes: Vec<Vec<u8>>,
    hop: SocketAddr,
}

impl Dialog {
    /// Reads the dialog from a 2xx response to INVITE.
    pub fn from_2xx(resp: &[u8]) -> Result<Dialog, DialogError> {
        let contact =
            sip::first_value(resp, "contact", Some(b'm')).ok_or(DialogError::Malformed)?;
        let first_contact = *sip::split_list(contact)
            .first()
            .ok_or(DialogError::Malformed)?;
        let remote_target = sip::split_name_addr(first_contact).0.to_vec();
        let mut route_set: Vec<Vec<u8>> = sip::all_values(resp, "record-route", None)
            .into_iter()
            .map(|v| v.to_vec())
            .collect();
        route_set.reverse();
        let to = sip::first_value(resp, "to", Some(b't')).ok_or(DialogError::Malformed)?;
        if sip::tag(to).is_none() {
            return Err(DialogError::NoToTag);
        }
        let from = sip::first_value(resp, "from", Some(b'f')).ok_or(DialogError::Malformed)?;
        let call_id =
            sip::first_value(resp, "call-id", Some(b'i')).ok_or(DialogError::Malformed)?;
        let cseq = sip::first_value(resp, "cseq", None).ok_or(DialogError::Malformed)?;
        let (invite_cseq, _) = sip::cseq(cseq).ok_or(DialogError::Malformed)?;
        Ok(Dialog {
            remote_target,
            route_set,
            from: from.to_vec(),
            to: to.to_vec(),
            call_id: call_id.to_vec(),
            invite_cseq,
        })
    }

    /// Request-URI, Route header values and next-hop address for a request in this dialog.
    fn routing(&self) -> Result<Routing, DialogError> {
        let (ruri, routes, hop_uri) = match self.route_set.first() {
            None => (
                self.remote_target.clone(),
                Vec::new(),
                self.remote_target.clone(),
            ),
            Some(first) => {
                let first_uri = sip::split_name_addr(first).0.to_vec();
                let lr = sip::parse_uri(&first_uri)
                    .ok_or(DialogError::Unroutable)?
                    .lr();
                if lr {
                    (
                        self.remote_target.clone(),
                        self.route_set.clone(),
                        first_uri,
                    )
                } else {
                    // Strict router: it becomes the Request-URI, the remote target goes last.
                    let mut rest: Vec<Vec<u8>> = self.route_set[1..].to_vec();
                    let mut last = b"<".to_vec();
                    last.extend_from_slice(&self.remote_target);
                    last.push(b'>');
                    rest.push(last);
                    (first_uri.clone(), rest, first_uri)
                }
            }
        };
        let hop = sip::parse_uri(&hop_uri)
            .and_then(|u| u.socket_addr())
            .ok_or(DialogError::Unroutable)?;
        net::ensure_loopback(&hop).map_err(|_| DialogError::Unroutable)?;
        Ok(Routing { ruri, routes, hop })
    }

    /// Builds ACK (for the 2xx) or BYE; returns the bytes and where to send them.
    pub fn request(
        &self,
        method: &str,
        local: &SocketAddr,
        branch: &str,
        ts_ns: u64,
    ) -> Result<(Vec<u8>, SocketAddr), DialogError> {
        let Routing { ruri, routes, hop } = self.routing()?;
        let cseq = if method == "ACK" {
            self.invite_cseq
        } else {
            self.invite_cseq + 1
        };
        let mut m = Vec::with_capacity(512);
        m.extend_from_slice(method.as_bytes());
        m.push(b' ');
        m.extend_from_slice(&ruri);
        m.extend_from_slice(b" SIP/2.0\r\n");
        m.extend_from_slice(
            format!("Via: SIP/2.0/UDP {local};branch=z9hG4bK-{branch};rport\r\n").as_bytes(),
        );
        for r in &routes {
            m.extend_from_slice(b"Route: ");
            m.extend_from_slice(r);
            m.extend_from_slice(b"\r\n");
        }
        m.extend_from_slice(b"Max-Forwards: 70\r\n");
        m.extend_from_slice(format!("X-Bench-Ts: {ts_ns:020}\r\n").as_bytes());
        for (name, value) in [
            ("From", &self.from),
            ("To", &self.to),
            ("Call-ID", &self.call_id),
        ] {
            m.extend_from_slice(name.as_bytes());
            m.extend_from_slice(b": ");
            m.extend_from_slice(value);
            m.extend_from_slice(b"\r\n");
        }
        m.extend_from_slice(format!("CSeq: {cseq} {method}\r\n").as_bytes());
        m.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        Ok((m, hop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.2:4000;branch=z9hG4bK-mx1;rport=4000\r\n\
Record-Route: <sip:tok1@127.0.0.1:5070;lr>\r\n\
Record-Route: <sip:tok2@127.0.0.1:5060;lr>\r\n\
From: \"Bench Caller\" <sip:2000@pbx.secret.example>;tag=mx1\r\n\
To: <sip:1001@pbx.secret.example>;tag=sk42\r\n\
Call-ID: mx0000000001@bench.invalid\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:sink@127.0.0.1:5080>\r\n\
Content-Length: 0\r\n\r\n";

    fn local() -> SocketAddr {
        "127.0.0.2:4000".parse().unwrap()
    }

    #[test]
    fn loose_route_reverses_record_route() {
        let d = Dialog::from_2xx(OK).unwrap();
        let (bye, hop) = d.request("BYE", &local(), "b1", 5).unwrap();
        assert_eq!(hop, "127.0.0.1:5060".parse().unwrap());
        let routes = sip::all_values(&bye, "route", None);
        assert_eq!(
            routes,
            vec![
                &b"<sip:tok2@127.0.0.1:5060;lr>"[..],
                b"<sip:tok1@127.0.0.1:5070;lr>"
            ]
        );
        assert!(bye.starts_with(b"BYE sip:sink@127.0.0.1:5080 SIP/2.0\r\n"));
        assert_eq!(sip::first_value(&bye, "cseq", None), Some(&b"2 BYE"[..]));
        assert_eq!(
            sip::tag(sip::first_value(&bye, "to", None).unwrap()),
            Some(&b"sk42"[..])
        );
        let (ack, _) = d.request("ACK", &local(), "a1", 5).unwrap();
        assert_eq!(sip::first_value(&ack, "cseq", None), Some(&b"1 ACK"[..]));
        assert_eq!(sip::bench_ts(&ack), Some(5));
    }

    #[test]
    fn no_record_route_goes_to_contact() {
        let no_rr: Vec<u8> = String::from_utf8_lossy(OK)
            .lines()
            .filter(|l| !l.starts_with("Record-Route"))
            .map(|l| format!("{l}\r\n"))
            .collect::<String>()
            .into_bytes();
        let d = Dialog::from_2xx(&no_rr).unwrap();
        let (ack, hop) = d.request("ACK", &local(), "a", 1).unwrap();
        assert_eq!(hop, "127.0.0.1:5080".parse().unwrap());
        assert!(sip::all_values(&ack, "route", None).is_empty());
    }

    #[test]
    fn strict_router() {
        let strict = String::from_utf8_lossy(OK).replace("127.0.0.1:5060;lr", "127.0.0.1:5060");
        let d = Dialog::from_2xx(strict.as_bytes()).unwrap();
        let (bye, hop) = d.request("BYE", &local(), "b", 1).unwrap();
        assert_eq!(hop, "127.0.0.1:5060".parse().unwrap());
        assert!(bye.starts_with(b"BYE sip:tok2@127.0.0.1:5060 SIP/2.0\r\n"));
        let routes = sip::all_values(&bye, "route", None);
        assert_eq!(
            routes,
            vec![
                &b"<sip:tok1@127.0.0.1:5070;lr>"[..],
                b"<sip:sink@127.0.0.1:5080>"
            ]
        );
    }

    #[test]
    fn refuses_non_loopback_and_untagged() {
        let far = String::from_utf8_lossy(OK).replace("sink@127.0.0.1:5080", "sink@192.0.2.1");
        let far = far.replace("Record-Route", "X-Old-RR");
        let d = Dialog::from_2xx(far.as_bytes()).unwrap();
        assert_eq!(
            d.request("ACK", &local(), "a", 1).unwrap_err(),
            DialogError::Unroutable
        );
        let untagged = String::from_utf8_lossy(OK).replace(";tag=sk42", "");
        assert_eq!(
            Dialog::from_2xx(untagged.as_bytes()).unwrap_err(),
            DialogError::NoToTag
        );
        assert_eq!(
            Dialog::from_2xx(b"SIP/2.0 200 OK\r\n\r\n").unwrap_err(),
            DialogError::Malformed
        );
    }
}
