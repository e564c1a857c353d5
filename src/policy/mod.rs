//! Admission of messages from the public side (DESIGN.md section 4): pure
//! functions of the message, its source, the tables and the config.

pub mod admission;
pub mod ban;
pub mod domain;
pub mod quick;
pub mod verdict;

pub use verdict::{Disposition, Reason, Verdict};
