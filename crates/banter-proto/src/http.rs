//! Bodies of the HTTP API under `/v1`.

use crate::frame::{MessageView, PresenceStatus};
use crate::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `POST /v1/users`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateUser {
    pub username: String,
    pub password: String,
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    pub user_id: String,
    pub username: String,
}

/// `POST /v1/sessions`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateSession {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

/// A new session: one device with its token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionView {
    pub token: String,
    pub user_id: String,
    pub device_id: String,
}

/// Kind of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

/// `POST /v1/conversations`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateConversation {
    pub kind: ConversationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub members: Vec<String>,
}

/// A conversation as seen by one user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversationView {
    pub conversation_id: String,
    pub kind: ConversationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Omitted above [`crate::limits::MEMBERS_LISTED_UP_TO`] members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    pub member_count: u64,
    pub last_seq: u64,
    pub read_seq: u64,
    pub created_at: i64,
    /// Extension: server time of the newest message, or of creation.
    #[serde(default)]
    pub last_activity: i64,
}

/// `GET /v1/conversations`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConversationList {
    pub conversations: Vec<ConversationView>,
}

/// `POST /v1/conversations/{id}/members`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddMembers {
    pub user_ids: Vec<String>,
}

/// `POST /v1/conversations/{id}/messages`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PostMessage {
    pub client_msg_id: String,
    pub content: Box<RawValue>,
}

/// A page of history, ascending by seq.
#[derive(Debug, Serialize, Deserialize)]
pub struct MessagePage {
    pub messages: Vec<MessageView>,
    pub has_more: bool,
}

/// Presence of one user, in `GET /v1/presence` and in `presence` frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceView {
    pub user_id: String,
    pub status: PresenceStatus,
    /// When the user was last connected (ms since the Unix epoch); `null` if never.
    pub last_seen: Option<i64>,
}

/// `GET /v1/presence`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PresenceList {
    pub presence: Vec<PresenceView>,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

/// The body of every HTTP error.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Code and message of an HTTP error.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}
