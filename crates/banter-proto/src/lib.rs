//! Banter's wire types: the JSON frames of the WebSocket protocol, the bodies
//! of the HTTP API, the error-code catalogue and the close codes.
//!
//! This crate is the single home of everything that crosses the wire. It has
//! no I/O and no async runtime, so the server, the SDK, the command-line
//! client and the load simulator all share exactly one definition of the
//! protocol described in `docs/protocol.md`.

pub mod close;
pub mod error_code;
pub mod frame;
pub mod http;
pub mod limits;

pub use error_code::ErrorCode;
pub use frame::{ClientFrame, ServerFrame};
