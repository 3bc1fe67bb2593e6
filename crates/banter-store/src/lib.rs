//! Banter's persistence seam.
//!
//! [`Store`] is a domain-level trait: it speaks of users, devices,
//! conversations, messages and cursors, never of rows or keys, so that each
//! backend can be idiomatic. [`sqlite::SqliteStore`] is the embedded default;
//! `postgres::PgStore` (cargo feature `postgres`, on by default) is the
//! shared store of a cluster.
//!
//! Architecture invariants:
//! - Only this crate speaks SQL.
//! - Only the store assigns `seq`, inside the transaction that stores the
//!   message; a message is acknowledged to its sender only after that
//!   transaction has committed.
//! - Every table is keyed by `conversation_id` or `user_id` (devices by their
//!   user), so the data can be partitioned along those keys; PostgreSQL's
//!   lookup tables are keyed by what they look up (a username, a token hash).

mod error;
mod model;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

pub use error::StoreError;
pub use model::*;

use async_trait::async_trait;
use std::sync::Arc;

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The server clock in ms since the Unix epoch, for creation times.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The durable state of a Banter deployment.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether the store can serve right now (for `/healthz`).
    async fn healthy(&self) -> bool;

    /// Registers a user; `UsernameTaken` if the name exists.
    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User>;
    /// A user and its password hash, by username.
    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>>;
    /// A user by id.
    async fn user(&self, user_id: UserId) -> Result<Option<User>>;
    /// A user by username.
    async fn user_by_name(&self, username: &str) -> Result<Option<User>>;

    /// Creates a device (a session) whose token hashes to `token_hash`. Its
    /// cursors start at the current `last_seq` of every conversation of the user.
    async fn create_device(&self, user_id: UserId, name: &str, token_hash: [u8; 32]) -> Result<DeviceId>;
    /// The live (not revoked) device whose token hashes to `token_hash`.
    async fn device_by_token(&self, token_hash: [u8; 32]) -> Result<Option<Device>>;
    /// Revokes a device: its token stops working.
    async fn revoke_device(&self, device_id: DeviceId) -> Result<()>;

    /// The direct conversation of `a` and `b`, created if missing; `true` if created.
    async fn create_direct(&self, a: UserId, b: UserId) -> Result<(Conversation, bool)>;
    /// Creates a group; the creator is always a member.
    async fn create_group(&self, creator: UserId, title: Option<&str>, members: &[UserId]) -> Result<Conversation>;
    /// Adds users to a group (the caller must be a member); returns those newly added.
    async fn add_members(&self, conversation: ConversationId, by: UserId, users: &[UserId]) -> Result<Vec<UserId>>;
    /// Removes the user from a group.
    async fn leave(&self, conversation: ConversationId, user: UserId) -> Result<()>;
    /// The conversation as `viewer` sees it, if `viewer` is a member.
    async fn conversation(&self, conversation: ConversationId, viewer: UserId) -> Result<Option<Conversation>>;
    /// The viewer's conversations, most recent activity first.
    async fn conversations(&self, viewer: UserId) -> Result<Vec<Conversation>>;
    /// Members of a conversation.
    async fn members(&self, conversation: ConversationId) -> Result<Vec<UserId>>;
    /// Users who share a direct conversation with `user`.
    async fn direct_peers(&self, user: UserId) -> Result<Vec<UserId>>;

    /// Stores a message, assigning its `seq`; an earlier message with the same
    /// (sender, conversation, client_msg_id) is returned instead of storing anew.
    /// Returns only after the message is durable.
    ///
    /// Appends of one caller get their seqs in the order their futures were
    /// first polled: an implementation takes its place in line in the first
    /// poll, without awaiting anything before it, and a line that is full
    /// gives room in the order it was asked for.
    async fn append(&self, message: NewMessage) -> Result<Appended>;
    /// Messages of a conversation in a seq range, ascending.
    async fn messages(
        &self,
        conversation: ConversationId,
        range: SeqRange,
        limit: usize,
    ) -> Result<Vec<Arc<StoredMessage>>>;
    /// [`Store::messages`] as `reader` may see them: `None` when `reader` is
    /// not a member of the conversation. One read for both.
    async fn history(
        &self,
        conversation: ConversationId,
        reader: UserId,
        range: SeqRange,
        limit: usize,
    ) -> Result<Option<Vec<Arc<StoredMessage>>>>;

    /// The cursor of a device in each conversation of its user.
    async fn cursors(&self, user: UserId, device: DeviceId) -> Result<Vec<Cursor>>;
    /// The same read as [`Store::cursors`], made once as the device
    /// connects. A store may serve it on the caller's thread (the embedded
    /// store does), while [`Store::cursors`], which a resync of many
    /// connections at once calls, stays off it.
    async fn cursors_on_connect(&self, user: UserId, device: DeviceId) -> Result<Vec<Cursor>> {
        self.cursors(user, device).await
    }
    /// The cursor of a device in one conversation, if the user is a member.
    async fn cursor(&self, conversation: ConversationId, user: UserId, device: DeviceId) -> Result<Option<Cursor>>;
    /// Records cumulative acks of one device in one write; returns the
    /// conversations (among those asking for receipts) where the user's
    /// delivered seq rose, with its new value. Acks asking for receipts in
    /// conversations the user is not in are skipped.
    async fn ack(&self, user: UserId, device: DeviceId, acks: Vec<Ack>) -> Result<Vec<(ConversationId, u64)>>;
    /// Records the acks of many devices, each as [`Store::ack`] does, in as
    /// few writes as the store can. Returns, for each device in order, what
    /// `ack` would: the conversations where its user's delivered seq rose,
    /// or the error that kept that device's acks from being stored (one
    /// device failing does not undo the others). The devices may be stored
    /// in any order: when two devices of one user raise the same
    /// conversation in one call, either may be the one reported.
    async fn ack_many(&self, devices: Vec<DeviceAcks>) -> Vec<Result<Vec<(ConversationId, u64)>>> {
        futures_util::future::join_all(devices.into_iter().map(|d| self.ack(d.user, d.device, d.acks))).await
    }
    /// Records that the user read up to `seq`; returns the new read seq if it rose.
    async fn read(&self, conversation: ConversationId, user: UserId, seq: u64) -> Result<Option<u64>>;
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Store")
    }
}
