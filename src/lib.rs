//! sipwarden: a SIP edge proxy in front of an Asterisk PBX.
//!
//! The core (`sip`, `policy`, `proxy`) is sans-IO: it turns received bytes,
//! a flow and a time into sends, and is tested without sockets. `transport`
//! moves the bytes; `main.rs` wires config, signals and sockets.

pub mod config;
pub mod files;
pub mod flow;
pub mod fuzzing;
pub mod instance;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod secret;
pub mod sip;
pub mod state;
pub mod transport;
