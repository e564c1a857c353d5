//! The control protocol's messages (`docs/control.md`): one request per
//! line of JSON, one response per line of JSON, each with the protocol's
//! [`VERSION`]. Parsing is the validation: a line is a [`Request`] or an
//! [`ErrorBody`] with a code that says why not, never a panic, whatever
//! the bytes.

use serde::{Deserialize, Serialize};

/// The protocol version. A change that an older client would misread
/// gets a new one; a field or a request added does not (clients ignore
/// fields they do not know).
pub const VERSION: u32 = 1;

/// The longest request line, newline included: any real request is a few
/// hundred bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// Sources a `sources` request lists by default, and at most.
pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 1000;

/// One request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum Request {
    /// Version, uptime, mode, sockets, rates, table sizes, last reload.
    Status,
    /// Every ban in force.
    Bans,
    /// Bans an address or a network, for `for` (a duration such as "2h";
    /// absent: `ban.duration`).
    Ban {
        target: String,
        #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
        duration: Option<String>,
    },
    /// Lifts the ban of an address, or of a network and every address
    /// banned inside it.
    Unban { target: String },
    /// Each trunk: registered or not, addresses, expiry, last activity.
    Trunks,
    /// The heaviest sources of the last minute, by messages and by rejects.
    Sources {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
}

impl Request {
    /// Its name, the `request` field and the metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Bans => "bans",
            Request::Ban { .. } => "ban",
            Request::Unban { .. } => "unban",
            Request::Trunks => "trunks",
            Request::Sources { .. } => "sources",
        }
    }

    /// The request as one line (newline included), as a client sends it.
    pub fn to_line(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("version".into(), VERSION.into());
        }
        let mut s = v.to_string();
        s.push('\n');
        s
    }
}

/// Why a request got no answer, as a code for scripts and a message for
/// people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// The error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Not a JSON object, or a field of the wrong type.
    Malformed,
    /// A `request` this version does not know.
    UnknownRequest,
    /// A `version` other than [`VERSION`], or none.
    UnsupportedVersion,
    /// A line longer than [`MAX_LINE`]: the connection is closed.
    TooLong,
    /// An argument that is not valid (an address, a duration).
    BadArgument,
    /// Nothing to do (an unban of what is not banned).
    NotBanned,
    /// The ban table or the network ban list is full.
    TableFull,
    /// Every connection slot is taken (`control.max_connections`).
    Busy,
    /// The client runs as another user than the proxy's (nor root).
    NotAllowed,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

/// One response: `ok` with a `result` (its shape depends on the request),
/// or not `ok` with an `error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(result: impl Serialize) -> Response {
        match serde_json::to_value(result) {
            Ok(v) => Response {
                version: VERSION,
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Response::error(ErrorBody::new(ErrorCode::Malformed, e.to_string())),
        }
    }

    pub fn error(e: ErrorBody) -> Response {
        Response {
            version: VERSION,
            ok: false,
            result: None,
            error: Some(e),
        }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"version":1,"ok":false,"error":{"code":"malformed","message":"unencodable"}}"#
                .into()
        });
        s.push('\n');
        s
    }
}

/// The request on one line (without its newline; a trailing `\r` is
/// taken off).
pub fn parse(line: &[u8]) -> Result<Request, ErrorBody> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() >= MAX_LINE {
        return Err(ErrorBody::new(
            ErrorCode::TooLong,
            format!("a request is at most {MAX_LINE} bytes"),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| ErrorBody::new(ErrorCode::Malformed, format!("not JSON: {e}")))?;
    let Some(o) = v.as_object() else {
        return Err(ErrorBody::new(
            ErrorCode::Malformed,
            "a request is a JSON object",
        ));
    };
    match o.get("version").and_then(serde_json::Value::as_u64) {
        Some(n) if n == u64::from(VERSION) => {}
        other => {
            return Err(ErrorBody::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported: this sipwarden speaks version {VERSION}",
                    other.map_or("(none)".to_string(), |n| n.to_string())
                ),
            ))
        }
    }
    let Some(name) = o.get("request").and_then(serde_json::Value::as_str) else {
        return Err(ErrorBody::new(
            ErrorCode::Malformed,
            "a request has a \"request\" field naming it",
        ));
    };
    const KNOWN: [&str; 6] = ["status", "bans", "ban", "unban", "trunks", "sources"];
    if !KNOWN.contains(&name) {
        return Err(ErrorBody::new(
            ErrorCode::UnknownRequest,
            format!(
                "unknown request {:?}: one of {}",
                name.chars().take(64).collect::<String>(),
                KNOWN.join(", ")
            ),
        ));
    }
    serde_json::from_value(v.clone())
        .map_err(|e| ErrorBody::new(ErrorCode::Malformed, format!("{name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_parses_from_its_own_line() {
        for r in [
            Request::Status,
            Request::Bans,
            Request::Ban {
                target: "192.0.2.1".into(),
                duration: Some("2h".into()),
            },
            Request::Ban {
                target: "2001:db8::/48".into(),
                duration: None,
            },
            Request::Unban {
                target: "192.0.2.0/24".into(),
            },
            Request::Trunks,
            Request::Sources { limit: Some(5) },
            Request::Sources { limit: None },
        ] {
            let line = r.to_line();
            assert!(
                line.ends_with('\n') && line.contains("\"version\":1"),
                "{line}"
            );
            assert_eq!(parse(line.trim_end().as_bytes()), Ok(r.clone()), "{line}");
        }
        assert_eq!(
            parse(br#"{"version":1,"request":"ban","target":"192.0.2.1","for":"15m"}"#),
            Ok(Request::Ban {
                target: "192.0.2.1".into(),
                duration: Some("15m".into())
            })
        );
        // A CRLF line and unknown fields are fine.
        assert_eq!(
            parse(b"{\"version\":1,\"request\":\"status\",\"x\":[1]}\r"),
            Ok(Request::Status)
        );
    }

    fn code(line: &[u8]) -> ErrorCode {
        parse(line).expect_err("refused").code
    }

    #[test]
    fn what_is_not_a_request_gets_its_error_code() {
        use ErrorCode::*;
        assert_eq!(code(b""), Malformed);
        assert_eq!(code(b"{not json"), Malformed);
        assert_eq!(code(b"[1,2]"), Malformed);
        assert_eq!(code(b"\xff\xfe"), Malformed);
        assert_eq!(code(br#"{"version":1}"#), Malformed);
        assert_eq!(code(br#"{"version":1,"request":7}"#), Malformed);
        assert_eq!(code(br#"{"version":1,"request":"ban"}"#), Malformed);
        assert_eq!(
            code(br#"{"version":1,"request":"ban","target":5}"#),
            Malformed
        );
        assert_eq!(
            code(br#"{"version":1,"request":"sources","limit":-1}"#),
            Malformed
        );
        assert_eq!(code(br#"{"version":1,"request":"reboot"}"#), UnknownRequest);
        assert_eq!(code(br#"{"request":"status"}"#), UnsupportedVersion);
        assert_eq!(
            code(br#"{"version":2,"request":"status"}"#),
            UnsupportedVersion
        );
        assert_eq!(
            code(br#"{"version":"1","request":"status"}"#),
            UnsupportedVersion
        );
        let big = format!(
            r#"{{"version":1,"request":"ban","target":"{}"}}"#,
            "1".repeat(MAX_LINE)
        );
        assert_eq!(code(big.as_bytes()), TooLong);
        // Deep nesting is refused by the parser's depth limit, not the stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(code(&deep.as_bytes()[..MAX_LINE - 1]), Malformed);
        let e = parse(br#"{"version":2,"request":"status"}"#).unwrap_err();
        assert!(e.message.contains("version 1"), "{}", e.message);
    }

    #[test]
    fn responses_are_one_line_and_read_back() {
        let ok = Response::ok(serde_json::json!({"a": "b\nc"}));
        let line = ok.to_line();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let back: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(back, ok);
        let err = Response::error(ErrorBody::new(ErrorCode::UnknownRequest, "x"));
        assert_eq!(
            err.to_line(),
            "{\"version\":1,\"ok\":false,\"error\":{\"code\":\"unknown-request\",\"message\":\"x\"}}\n"
        );
    }
}
