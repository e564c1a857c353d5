//! The sans-IO core of sipwarden, a SIP edge proxy in front of an Asterisk
//! PBX: the SIP scanner and editor, admission, routing, the tables and the
//! config types. It turns received bytes, a flow and a time into sends,
//! reads no clock and opens no socket or file, and depends on no async
//! runtime, socket, DNS or TLS crate (as quinn-proto is to quinn). The
//! `sipwarden` crate moves the bytes: sockets, DNS, files, signals, the
//! CLI. ARCHITECTURE.md draws the map.
//!
//! The modules depend on each other one way: the vocabulary (`flow`,
//! `time`, `verdict`) on nothing; `sip` and `token` on `flow`; `web` (the
//! HTTP of a WebSocket upgrade) on nothing; `metrics`
//! on the vocabulary; `state` on `config` and `token`; admission
//! (`policy`) on the settings, `state` and `metrics`; `proxy`, which
//! dispatches and forwards, on all of them; `control`, which answers the
//! control socket's requests, on `proxy` and what is below it; `cluster`,
//! the records nodes share through Redis, on `control` and below.

pub mod cluster;
pub mod config;
pub mod control;
pub mod flow;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod rates;
pub mod settings;
pub mod sip;
pub mod state;
pub mod time;
pub mod token;
pub mod verdict;
pub mod web;
