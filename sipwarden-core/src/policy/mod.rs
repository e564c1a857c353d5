//! Admission of messages from the public side (the order and the reasons:
//! `docs/admission.md`): pure functions of the message, its source, the
//! tables and the config; and what a rejection or a failed authentication
//! costs its source (`ban`).

pub mod admission;
pub mod ban;
pub mod fast_path;
