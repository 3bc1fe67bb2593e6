//! The Banter SDK: a Rust client of the Banter chat server.
//!
//! - [`HttpClient`] calls the HTTP API: accounts, sessions, conversations,
//!   history, presence.
//! - [`Session`] is a realtime connection that survives network trouble: it
//!   reconnects with exponential backoff and full jitter, keeps unconfirmed
//!   sends in an outbox and replays them with their `client_msg_id`, drops
//!   duplicate pushes, hands out messages in seq order per conversation,
//!   fills gaps from the history endpoint and acknowledges on its own.
//! - [`LocalHistory`] is what a session deduplicates against:
//!   [`MemoryHistory`] for one process, [`SqliteHistory`] across restarts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), banter_client::ClientError> {
//! use banter_client::{Event, HttpClient, Session, SessionOptions};
//!
//! let http = HttpClient::new("http://127.0.0.1:8080")?;
//! let login = http.login("alice", "correct horse", Some("laptop")).await?;
//! let http = http.with_token(login.token);
//! let (session, mut events) = Session::connect(http, SessionOptions::default()).await?;
//! session.send_text("42", "hello").await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Message(message) = event {
//!         println!("#{} {}", message.seq, message.content.get());
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The wire types come from `banter_proto` and are re-exported as [`proto`].

mod backoff;
mod connection;
mod driver;
mod error;
mod event;
mod history;
mod http;
mod lazy;
mod outbox;
mod sequencer;
mod session;
mod sqlite_history;

pub use banter_proto as proto;
pub use error::ClientError;
pub use event::{Event, Events};
pub use history::{LocalHistory, MemoryHistory};
pub use http::HttpClient;
pub use session::{Session, SessionOptions};
pub use sqlite_history::SqliteHistory;

/// A fresh `client_msg_id`: 128 random bits as 32 hexadecimal digits.
pub fn new_client_msg_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails to compile unless `T` can be shared between tasks.
    fn assert_send_sync<T: Send + Sync>() {}

    /// Fails to compile unless `T` can be moved between tasks.
    fn assert_send<T: Send>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Session>();
        assert_send_sync::<HttpClient>();
        assert_send_sync::<Events>();
        assert_send_sync::<Event>();
        assert_send_sync::<ClientError>();
        assert_send_sync::<SessionOptions>();
        assert_send::<MemoryHistory>();
        assert_send::<SqliteHistory>();
        assert_send::<Box<dyn LocalHistory>>();
    }

    #[test]
    fn client_msg_ids_are_valid_and_distinct() {
        let a = new_client_msg_id();
        assert_eq!(a.len(), 32);
        assert!(proto::limits::valid_client_msg_id(&a));
        assert_ne!(a, new_client_msg_id());
    }
}
