//! The control socket's client, for the CLI subcommands: one request, one
//! response, over a blocking Unix stream with timeouts. The path comes
//! from the config (`control.socket`); a path that is not a socket
//! (a symbolic link, a regular file) is refused rather than followed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use sipwarden_core::control::{ErrorBody, Request, Response};

/// The longest response read: a full ban table is a few MiB.
const MAX_RESPONSE: u64 = 256 << 20;

/// Why a request got no answer.
#[derive(Debug)]
pub enum ClientError {
    /// The socket cannot be reached (exit code 2): the message says which
    /// path and why.
    Unreachable(String),
    /// The proxy answered with an error (exit code 1).
    Refused(ErrorBody),
    /// The answer could not be read (exit code 1).
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(m) | ClientError::Protocol(m) => f.write_str(m),
            ClientError::Refused(e) => {
                let code = serde_json::to_value(e.code)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                write!(f, "{} ({code})", e.message)
            }
        }
    }
}

/// Checks that `path` is a socket without following a link: the CLI,
/// often run as root, must not be steered into another socket.
pub fn check_socket(path: &Path) -> Result<(), ClientError> {
    let p = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => Err(ClientError::Unreachable(format!(
            "{p} is a symbolic link, not a socket: refusing to follow it"
        ))),
        Ok(_) => Err(ClientError::Unreachable(format!(
            "{p} is not a socket (a regular file or directory): not sipwarden's control socket"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ClientError::Unreachable(
            format!("cannot reach {p}: no such socket (is sipwarden running, with this config?)"),
        )),
        Err(e) => Err(ClientError::Unreachable(format!("cannot reach {p}: {e}"))),
    }
}

/// Sends `req` to the control socket at `path` and returns the answer's
/// `result`, with the whole answer as it came (for `--json`).
pub fn request(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<(serde_json::Value, serde_json::Value), (ClientError, Option<serde_json::Value>)> {
    let mut raw = None;
    request_inner(path, req, timeout, &mut raw).map_err(|e| (e, raw.clone()))
}

fn request_inner(
    path: &Path,
    req: &Request,
    timeout: Duration,
    raw: &mut Option<serde_json::Value>,
) -> Result<(serde_json::Value, serde_json::Value), ClientError> {
    check_socket(path)?;
    let p = path.display();
    let mut s = UnixStream::connect(path).map_err(|e| {
        ClientError::Unreachable(match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                format!("cannot reach {p}: permission denied (run as the proxy's user or root)")
            }
            std::io::ErrorKind::ConnectionRefused => {
                format!("cannot reach {p}: nothing listens (sipwarden not running? a stale socket)")
            }
            _ => format!("cannot reach {p}: {e}"),
        })
    })?;
    let io = |e: std::io::Error| ClientError::Protocol(format!("{p}: {e}"));
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    s.write_all(req.to_line().as_bytes()).map_err(io)?;
    let mut line = Vec::new();
    BufReader::new((&s).take(MAX_RESPONSE))
        .read_until(b'\n', &mut line)
        .map_err(io)?;
    if line.is_empty() {
        return Err(ClientError::Protocol(format!(
            "{p}: the connection closed without an answer"
        )));
    }
    let whole: serde_json::Value = serde_json::from_slice(&line)
        .map_err(|e| ClientError::Protocol(format!("{p}: not an answer: {e}")))?;
    *raw = Some(whole.clone());
    let r: Response = serde_json::from_value(whole.clone())
        .map_err(|e| ClientError::Protocol(format!("{p}: not an answer: {e}")))?;
    match (r.ok, r.result, r.error) {
        (true, Some(v), _) => Ok((v, whole)),
        (_, _, Some(e)) => Err(ClientError::Refused(e)),
        _ => Err(ClientError::Protocol(format!(
            "{p}: an answer without a result"
        ))),
    }
}
