//! Admission of messages from the public side (the order and the reasons:
//! `docs/admission.md`): pure functions of the message, its source, the
//! tables and the config; and what a rejection or a failed authentication
//! costs its source (`ban`); the server-name gate in front of a TLS
//! handshake (`tls`); the check of a WebSocket upgrade request (`ws`).

pub mod admission;
pub mod ban;
pub mod fast_path;
pub mod tls;
pub mod ws;
