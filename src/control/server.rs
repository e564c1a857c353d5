//! The control socket's server: a Unix stream socket only the proxy's user
//! (and root) can reach, one JSON request per line and one JSON response
//! per line, several requests per connection (`docs/control.md`). The
//! answers are the core's (`sipwarden_core::control`); this module owns
//! the socket file, its permissions and the limits on clients.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use sipwarden_core::control::{self, Context, ErrorBody, ErrorCode, Response, MAX_LINE};
use sipwarden_core::proxy::Core;

use crate::transport::now_ms;

/// Why the control socket could not be set up: start fails with it.
#[derive(Debug)]
pub struct BindError {
    pub path: PathBuf,
    pub why: String,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "control.socket {}: {}", self.path.display(), self.why)
    }
}

impl std::error::Error for BindError {}

/// The bound socket file: removed when dropped (at exit), if it is still
/// the one this process made.
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds the control socket at `path`, mode 0600, and listens. Its
/// directory is made (mode 0700) when missing. A socket file that no
/// process answers on is a crashed instance's and is replaced (the
/// instance lock says no other sipwarden runs on this state); one that
/// answers, or a file of another kind, is refused. The socket is not
/// listening until its mode is 0600, so no client can connect while it
/// has wider permissions.
pub fn bind(path: &Path) -> Result<(UnixListener, SocketFile), BindError> {
    let err = |why: String| BindError {
        path: path.to_path_buf(),
        why,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(
                    "a running process answers on it (another sipwarden with the same \
                     control.socket?)"
                        .into(),
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
            tracing::info!(path = %path.display(), "replaced a stale control socket");
        }
        Ok(_) => {
            return Err(err(
                "exists and is not a socket: remove it or choose another path".into(),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    use socket2::{Domain, SockAddr, Socket, Type};
    let s = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| err(e.to_string()))?;
    let addr = SockAddr::unix(path).map_err(|e| err(e.to_string()))?;
    s.bind(&addr)
        .map_err(|e| err(format!("cannot bind: {e}")))?;
    // Owned from here: removed again if a step below fails.
    let meta = std::fs::symlink_metadata(path).map_err(|e| err(e.to_string()))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(format!("cannot set mode 0600: {e}")))?;
    s.listen(16)
        .map_err(|e| err(format!("cannot listen: {e}")))?;
    s.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
    let std_listener = std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(s));
    let l = UnixListener::from_std(std_listener).map_err(|e| err(e.to_string()))?;
    Ok((l, file))
}

/// What the server needs besides the core: the context of each answer.
pub type ContextFn = Arc<dyn Fn() -> Context + Send + Sync>;

/// Serves until the task is aborted. At most `control.max_connections`
/// clients at once (a client over it is answered `busy` and closed); each
/// is closed after `control.timeout` without a complete request.
pub async fn serve(listener: UnixListener, core: Arc<Core>, ctx: ContextFn) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (max, timeout) = {
            let s = core.settings();
            (s.config.control.max_connections, s.config.control.timeout.0)
        };
        if active.load(Relaxed) >= max {
            tokio::spawn(refuse(
                stream,
                ErrorBody::new(
                    ErrorCode::Busy,
                    "every control connection is taken (control.max_connections)",
                ),
            ));
            continue;
        }
        active.fetch_add(1, Relaxed);
        let (core, ctx, active) = (core.clone(), ctx.clone(), active.clone());
        tokio::spawn(async move {
            connection(stream, &core, &ctx, timeout).await;
            active.fetch_sub(1, Relaxed);
        });
    }
}

/// One error line, then the connection closed.
async fn refuse(mut stream: UnixStream, e: ErrorBody) {
    let line = Response::error(e).to_line();
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// Whether the peer may use the socket: root or this process's user. The
/// file's mode already keeps others out; this holds if it is changed.
fn peer_allowed(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    stream
        .peer_cred()
        .is_ok_and(|c| c.uid() == 0 || c.uid() == me)
}

/// A line read within the limit.
enum Line {
    Complete(Vec<u8>),
    /// The peer closed the connection.
    Closed,
    TooLong,
}

/// Reads one line (its `\n` taken off) of at most `max` bytes; a last line
/// without `\n` before the peer closes counts as a line.
async fn read_line(r: &mut (impl AsyncBufRead + Unpin), max: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() {
                Line::Closed
            } else {
                Line::Complete(line)
            });
        }
        let (take, done) = match memchr_nl(buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = max.saturating_sub(line.len());
        if take.min(buf.len()) > room + usize::from(done) {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            line.pop();
            return Ok(Line::Complete(line));
        }
    }
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

async fn connection(stream: UnixStream, core: &Core, ctx: &ContextFn, timeout: Duration) {
    if !peer_allowed(&stream) {
        tracing::warn!("control socket: a client of another user was refused");
        return refuse(
            stream,
            ErrorBody::new(
                ErrorCode::NotAllowed,
                "only the proxy's user and root may use the control socket",
            ),
        )
        .await;
    }
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(8192, r);
    loop {
        let line = match tokio::time::timeout(timeout, read_line(&mut r, MAX_LINE - 1)).await {
            Ok(Ok(Line::Complete(l))) => l,
            Ok(Ok(Line::Closed)) | Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!("control client idle past control.timeout: closed");
                return;
            }
            Ok(Ok(Line::TooLong)) => {
                let e = ErrorBody::new(
                    ErrorCode::TooLong,
                    format!("a request is at most {MAX_LINE} bytes: closing"),
                );
                let line = control::refused(core, e).to_line();
                let _ = tokio::time::timeout(timeout, w.write_all(line.as_bytes())).await;
                let _ = w.shutdown().await;
                return;
            }
        };
        let response = match control::parse(&line) {
            Ok(req) => control::answer(core, &ctx(), now_ms(), &req),
            Err(e) => control::refused(core, e),
        };
        let out = response.to_line();
        match tokio::time::timeout(timeout, w.write_all(out.as_bytes())).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let data: &[u8] = b"abc\n\ndef";
        let mut r = BufReader::with_capacity(2, data);
        let mut got = Vec::new();
        loop {
            match read_line(&mut r, 8).await.unwrap() {
                Line::Complete(l) => got.push(l),
                Line::Closed => break,
                Line::TooLong => panic!("too long"),
            }
        }
        assert_eq!(got, vec![b"abc".to_vec(), vec![], b"def".to_vec()]);
        let long: &[u8] = b"0123456789\n";
        let mut r = BufReader::with_capacity(4, long);
        assert!(matches!(read_line(&mut r, 8).await.unwrap(), Line::TooLong));
        let exact: &[u8] = b"01234567\n";
        let mut r = BufReader::with_capacity(3, exact);
        assert!(matches!(read_line(&mut r, 8).await.unwrap(), Line::Complete(l) if l.len() == 8));
    }
}
