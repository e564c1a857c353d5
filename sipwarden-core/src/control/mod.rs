//! The control interface's protocol and answers (`docs/control.md`): the
//! requests `sipwarden status`, `bans`, `ban`, `unban`, `trunks` and
//! `sources` send over the control socket, and the pure functions that
//! answer them from the core's tables, settings and counters and a clock
//! value. The socket itself, its permissions and limits are the program's
//! (`sipwarden::control`).
//!
//! The top layer of the core: it reads `proxy`, `state`, `policy` and
//! `metrics`; nothing in the core reads it.

pub mod answer;
pub mod protocol;

pub use answer::{answer, refused, trunk_metrics, ClusterContext, ClusterStatus, Context, Reload};
pub use protocol::{parse, ErrorBody, ErrorCode, Request, Response, MAX_LINE, VERSION};
