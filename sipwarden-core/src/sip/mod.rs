//! Zero-copy SIP message scanning and byte-preserving editing.
//!
//! sipwarden never re-serializes a message: it indexes the received bytes,
//! reads the dozen headers a proxy needs, and splices in the few lines it
//! must change (`docs/design.md` explains why no SIP crate is used).

pub mod addr;
pub mod domain;
pub mod edit;
pub mod header;
pub mod lines;
pub mod params;
pub mod scan;
pub mod text;
pub mod uri;
pub mod via;

pub use domain::DomainSet;
pub use edit::Editor;
pub use header::HeaderName;
pub use scan::{frame, scan, Frame, Framing, Header, Limits, Message, Method, ScanError, Span};
