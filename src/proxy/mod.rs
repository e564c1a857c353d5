//! Routing and rewriting (RFC 3261 section 16, stateless): pure functions
//! from a scanned message to the sends that forward it.

pub mod action;
pub mod core;
pub mod reply;
pub mod route;
pub mod settings;
pub mod token;

pub use action::{Dest, Output, Send};
pub use core::Core;
pub use settings::Settings;
pub use token::Keys;
