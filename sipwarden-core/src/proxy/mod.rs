//! The proxy: `Core` dispatches each message (admission is `policy`'s)
//! and forwards it (RFC 3261 section 16, stateless): pure functions from a
//! scanned message to the transmits that forward it (`inbound`,
//! `outbound`, `response`, with `hop`, `route`, `rewrite` and `reply`),
//! and the table updates it implies.

pub mod action;
pub mod core;
mod hop;
mod inbound;
mod outbound;
pub mod reply;
mod response;
pub mod rewrite;
pub mod route;

pub use action::{Dest, Output, Transmit};
pub use core::Core;
