//! The control socket (`docs/control.md`): the server the running proxy
//! listens on, and the client the CLI subcommands (`status`, `bans`,
//! `ban`, `unban`, `trunks`, `sources`) use. The protocol and the answers
//! are the core's (`sipwarden_core::control`).

pub mod client;
pub mod human;
pub mod server;
