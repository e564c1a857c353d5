//! Shared pieces of the sipwarden benchmark tools (`swload`, `swsink`,
//! `swtls`, `rawrelay`, `swstat`).
//!
//! Everything here is built for measuring, not for being a SIP stack: the
//! parser in [`sip`] understands just enough to answer and route a dialog,
//! and every send path refuses destinations outside 127.0.0.0/8 so that no
//! bug, and no address read from a message, can push load off the machine.

pub mod clock;
pub mod framing;
pub mod hist;
pub mod messages;
pub mod mmsg;
pub mod net;
pub mod pacer;
pub mod procfs;
pub mod signal;
pub mod sip;
pub mod template;
