//! Conversions from store types to wire types, made at the edge.

use banter_proto::frame::MessageView;
use banter_proto::http::{ConversationKind, ConversationView, UserView};
use banter_proto::ServerFrame;
use banter_store::{Conversation, Kind, StoredMessage, User};
use serde_json::value::RawValue;

pub fn message(m: &StoredMessage) -> MessageView {
    MessageView {
        conversation_id: m.conversation_id.to_string(),
        message_id: m.message_id.to_string(),
        seq: m.seq,
        sender_id: m.sender_id.to_string(),
        client_msg_id: m.client_msg_id.clone(),
        ts: m.ts,
        // Stored content was validated as JSON before it was stored.
        content: RawValue::from_string(m.content.clone())
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("valid JSON")),
    }
}

/// The `message` frame of a stored message, serialized once for all recipients.
pub fn message_frame(m: &StoredMessage) -> String {
    ServerFrame::Message(message(m)).to_json()
}

pub fn sent_frame(m: &StoredMessage) -> ServerFrame {
    ServerFrame::Sent {
        client_msg_id: m.client_msg_id.clone(),
        conversation_id: m.conversation_id.to_string(),
        message_id: m.message_id.to_string(),
        seq: m.seq,
        ts: m.ts,
    }
}

pub fn conversation(c: &Conversation) -> ConversationView {
    ConversationView {
        conversation_id: c.id.to_string(),
        kind: match c.kind {
            Kind::Direct => ConversationKind::Direct,
            Kind::Group => ConversationKind::Group,
        },
        title: c.title.clone(),
        members: c.members.as_ref().map(|m| m.iter().map(|u| u.to_string()).collect()),
        member_count: c.member_count,
        last_seq: c.last_seq,
        read_seq: c.read_seq,
        created_at: c.created_at,
        last_activity: c.last_activity,
    }
}

pub fn user(u: &User) -> UserView {
    UserView { user_id: u.id.to_string(), username: u.username.clone() }
}

/// Parses a wire id (a decimal string); anything else is `None`.
pub fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
