//! Admission of messages from the public side (the order and the reasons:
//! `docs/admission.md`): pure functions of the message, its source, the
//! tables and the config.

pub mod admission;
pub mod ban;
pub mod quick;
pub mod verdict;

pub use verdict::{Disposition, Reason, Verdict};
