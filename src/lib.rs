//! sipwarden, the program: sockets, DNS, the state and key files, the
//! config file and what start needs of the host, one instance per state.
//! Every decision is the core's (`sipwarden-core`); this crate moves bytes
//! and carries out what the core returns. ARCHITECTURE.md draws the map.

pub mod cluster;
pub mod control;
pub mod files;
pub mod fuzzing;
pub mod instance;
pub mod preflight;
pub mod procstat;
pub mod secret;
pub mod statefile;
pub mod top;
pub mod transport;
