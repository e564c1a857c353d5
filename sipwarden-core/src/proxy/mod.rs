//! Routing and rewriting (RFC 3261 section 16, stateless): pure functions
//! from a scanned message to the sends that forward it, and the table
//! updates it implies.

pub mod action;
pub mod core;
mod inbound;
mod outbound;
pub mod reply;
mod response;
pub mod rewrite;
pub mod route;
pub mod token;

pub use action::{Dest, Output, Send};
pub use core::Core;
pub use token::Keys;
