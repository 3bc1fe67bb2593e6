//! WebSocket frames: one JSON object per text frame, tagged by `"type"`.
//!
//! Identifiers are JSON strings (decimal for numeric ids), `seq` is an
//! integer and `content` is carried as raw JSON, so a server relays it
//! byte-for-byte without parsing it more than once.

use crate::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A frame sent by a client.
#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// The first frame of every connection.
    Hello { token: String },
    /// Store a message in a conversation.
    Send { client_msg_id: String, conversation_id: String, content: Box<RawValue> },
    /// Cumulative acknowledgement: the device holds every message up to `seq`.
    Ack { conversation_id: String, seq: u64 },
    /// The user has read up to `seq`.
    Read { conversation_id: String, seq: u64 },
    /// The user is typing.
    Typing { conversation_id: String },
    /// Keep-alive.
    Heartbeat,
    /// Follow the presence of these users.
    PresenceSubscribe { user_ids: Vec<String> },
    /// Stop following the presence of these users (an extension).
    PresenceUnsubscribe { user_ids: Vec<String> },
}

/// Just the `type` of a frame.
#[derive(Debug, Deserialize)]
struct TypeTag<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

/// The fields of a `send` frame.
#[derive(Debug, Deserialize)]
struct SendFields {
    client_msg_id: String,
    conversation_id: String,
    content: Box<RawValue>,
}

impl ClientFrame {
    /// Parses a client frame.
    ///
    /// `send` is read as a plain struct: serde cannot hand a raw JSON value
    /// through an internally tagged enum, and `content` is kept raw so the
    /// server stores and relays it exactly as given.
    pub fn parse(text: &str) -> serde_json::Result<ClientFrame> {
        let tag: TypeTag<'_> = serde_json::from_str(text)?;
        if tag.kind.as_deref() == Some("send") {
            let f: SendFields = serde_json::from_str(text)?;
            return Ok(ClientFrame::Send {
                client_msg_id: f.client_msg_id,
                conversation_id: f.conversation_id,
                content: f.content,
            });
        }
        serde_json::from_str(text)
    }

    /// The frame's `type`, for error `ref`s and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Hello { .. } => "hello",
            ClientFrame::Send { .. } => "send",
            ClientFrame::Ack { .. } => "ack",
            ClientFrame::Read { .. } => "read",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::Heartbeat => "heartbeat",
            ClientFrame::PresenceSubscribe { .. } => "presence_subscribe",
            ClientFrame::PresenceUnsubscribe { .. } => "presence_unsubscribe",
        }
    }
}

/// What little can be read from a frame that failed to parse, so that the
/// error can name the request it answers.
#[derive(Debug, Default, Deserialize)]
pub struct FrameRef {
    #[serde(rename = "type")]
    pub kind: Option<serde_json::Value>,
    pub client_msg_id: Option<serde_json::Value>,
}

impl FrameRef {
    /// Best-effort `ref` for an unparseable frame: its `client_msg_id`, else its `type`.
    pub fn of(text: &str) -> Option<String> {
        let r: FrameRef = serde_json::from_str(text).ok()?;
        match (r.client_msg_id, r.kind) {
            (Some(serde_json::Value::String(id)), _) => Some(id),
            (_, Some(serde_json::Value::String(kind))) => Some(kind),
            _ => None,
        }
    }
}

/// A stored message as it travels in `message` frames and history pages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageView {
    pub conversation_id: String,
    pub message_id: String,
    pub seq: u64,
    pub sender_id: String,
    pub client_msg_id: String,
    pub ts: i64,
    pub content: Box<RawValue>,
}

/// What a client needs to place a `message` frame (its conversation, its
/// seq and its content), borrowed from the frame's text: one pass over the
/// text and no copies, for clients that receive many messages a second.
#[derive(Debug, Deserialize)]
pub struct MessageHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    pub conversation_id: Cow<'a, str>,
    pub seq: u64,
    #[serde(borrow)]
    pub content: &'a RawValue,
}

impl<'a> MessageHead<'a> {
    /// Reads the head of a `message` frame; `None` for any other frame, or a malformed one.
    pub fn parse(text: &'a str) -> Option<MessageHead<'a>> {
        serde_json::from_str::<MessageHead<'a>>(text).ok().filter(|m| m.kind == "message")
    }
}

/// The `text` of a `{"type":"text"}` content, borrowed where it has no escapes.
pub fn content_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let head: ContentHead<'_> = serde_json::from_str(raw.get()).ok()?;
    if head.kind == "text" {
        head.text
    } else {
        None
    }
}

/// Whether a conversation of `member_count` members keeps receipts, given
/// the `receipts_up_to` of the `welcome` (the fan-out threshold). One that
/// does not sends no `receipt` or `typing` frames, and its acks may wait
/// (docs/protocol.md, "Acknowledging a large group").
pub fn keeps_receipts(member_count: u64, receipts_up_to: u64) -> bool {
    member_count <= receipts_up_to
}

/// Presence of one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Offline,
}

/// Which receipt a `receipt` frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    Delivered,
    Read,
}

/// A frame sent by the server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        user_id: String,
        device_id: String,
        heartbeat_interval_ms: u64,
        ack_timeout_ms: u64,
        server_time: i64,
        /// Extension: the most unacknowledged messages in flight to this device.
        window: u32,
        /// Extension: the largest frame the server accepts, in bytes.
        max_frame_bytes: usize,
        /// Extension: conversations of more members than this keep no receipts.
        receipts_up_to: u64,
        /// Extension: how long a client may hold its ack of a message in a
        /// conversation that keeps no receipts.
        lazy_ack_ms: u64,
    },
    Sent {
        client_msg_id: String,
        conversation_id: String,
        message_id: String,
        seq: u64,
        ts: i64,
    },
    Message(MessageView),
    Receipt {
        conversation_id: String,
        user_id: String,
        kind: ReceiptKind,
        seq: u64,
    },
    Typing {
        conversation_id: String,
        user_id: String,
    },
    HeartbeatAck {
        server_time: i64,
    },
    Presence(crate::http::PresenceView),
    Conversation {
        conversation: crate::http::ConversationView,
    },
    Error {
        code: ErrorCode,
        message: String,
        /// The `client_msg_id` or frame `type` answered; `null` when the frame was unreadable.
        #[serde(rename = "ref", default)]
        reference: Option<String>,
    },
}

impl ServerFrame {
    /// Parses a server frame (`message` is read as a plain struct, as in [`ClientFrame::parse`]).
    pub fn parse(text: &str) -> serde_json::Result<ServerFrame> {
        let tag: TypeTag<'_> = serde_json::from_str(text)?;
        if tag.kind.as_deref() == Some("message") {
            return Ok(ServerFrame::Message(serde_json::from_str(text)?));
        }
        serde_json::from_str(text)
    }

    /// Serializes the frame; serializing these types cannot fail.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

/// The head of a message `content`: an object with a string `type`, and for
/// `{"type":"text"}` a string `text`.
#[derive(Debug, Deserialize)]
struct ContentHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

/// Why a `content` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentError {
    /// Not an object with a string `type`, or a text without a non-empty string `text`.
    Invalid,
    /// A text longer than [`crate::limits::MAX_TEXT_BYTES`].
    TooLarge,
}

/// Checks a message `content` against the contract.
pub fn validate_content(raw: &RawValue) -> Result<(), ContentError> {
    let head: ContentHead<'_> = serde_json::from_str(raw.get()).map_err(|_| ContentError::Invalid)?;
    if head.kind == "text" {
        let text = head.text.ok_or(ContentError::Invalid)?;
        if text.is_empty() {
            return Err(ContentError::Invalid);
        }
        if text.len() > crate::limits::MAX_TEXT_BYTES {
            return Err(ContentError::TooLarge);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn content_rules() {
        assert_eq!(validate_content(&raw(r#"{"type":"text","text":"hi"}"#)), Ok(()));
        assert_eq!(validate_content(&raw(r#"{"type":"image","url":"x"}"#)), Ok(()));
        assert_eq!(validate_content(&raw(r#"{"type":"text","text":""}"#)), Err(ContentError::Invalid));
        assert_eq!(validate_content(&raw(r#"{"type":"text","text":5}"#)), Err(ContentError::Invalid));
        assert_eq!(validate_content(&raw(r#"{"type":"text"}"#)), Err(ContentError::Invalid));
        assert_eq!(validate_content(&raw(r#"{"text":"x"}"#)), Err(ContentError::Invalid));
        assert_eq!(validate_content(&raw(r#""text""#)), Err(ContentError::Invalid));
        assert_eq!(validate_content(&raw(r#"{"type":7}"#)), Err(ContentError::Invalid));
        let long = format!(r#"{{"type":"text","text":"{}"}}"#, "a".repeat(16 * 1024 + 1));
        assert_eq!(validate_content(&raw(&long)), Err(ContentError::TooLarge));
        let escaped = r#"{"type":"text","text":"a\"b\u00e9"}"#;
        assert_eq!(validate_content(&raw(escaped)), Ok(()));
    }

    #[test]
    fn client_frames_parse() {
        let f = ClientFrame::parse(r#"{"type":"heartbeat","extra":1}"#).unwrap();
        assert!(matches!(f, ClientFrame::Heartbeat));
        let f = ClientFrame::parse(
            r#"{"type":"send","client_msg_id":"a","conversation_id":"1","content":{"type":"text","text":"x"}}"#,
        )
        .unwrap();
        let ClientFrame::Send { content, .. } = &f else { panic!("not a send") };
        assert_eq!(content.get(), r#"{"type":"text","text":"x"}"#);
        let back = serde_json::to_string(&f).unwrap();
        assert!(back.starts_with(r#"{"type":"send","#), "{back}");
        assert!(ClientFrame::parse(r#"{"type":"ack","conversation_id":"1","seq":"2"}"#).is_err());
        assert!(ClientFrame::parse(r#"{"type":"send","conversation_id":"1"}"#).is_err());
        assert!(ClientFrame::parse(r#"{"type":"nope"}"#).is_err());
        assert!(ClientFrame::parse("[1]").is_err());
        assert_eq!(FrameRef::of(r#"{"type":"send","client_msg_id":"m1"}"#).as_deref(), Some("m1"));
        assert_eq!(FrameRef::of(r#"{"type":"bogus"}"#).as_deref(), Some("bogus"));
        assert_eq!(FrameRef::of("not json"), None);
    }

    #[test]
    fn message_frames_round_trip() {
        let text = r#"{"type":"message","conversation_id":"1","message_id":"9","seq":3,"sender_id":"2","client_msg_id":"c","ts":5,"content":{"type":"text","text":"hi"}}"#;
        let ServerFrame::Message(m) = ServerFrame::parse(text).unwrap() else { panic!("not a message") };
        assert_eq!(m.seq, 3);
        assert_eq!(ServerFrame::Message(m).to_json(), text);
        assert!(matches!(
            ServerFrame::parse(r#"{"type":"heartbeat_ack","server_time":1}"#),
            Ok(ServerFrame::HeartbeatAck { .. })
        ));
    }

    #[test]
    fn message_heads_borrow_from_the_frame() {
        let text = r#"{"type":"message","conversation_id":"1","message_id":"9","seq":3,"sender_id":"2","client_msg_id":"c","ts":5,"content":{"type":"text","text":"hi"}}"#;
        let m = MessageHead::parse(text).unwrap();
        assert_eq!((m.conversation_id.as_ref(), m.seq), ("1", 3));
        assert!(matches!(m.conversation_id, Cow::Borrowed(_)));
        assert_eq!(m.content.get(), r#"{"type":"text","text":"hi"}"#);
        assert_eq!(content_text(m.content).as_deref(), Some("hi"));
        assert_eq!(content_text(&raw(r#"{"type":"text","text":"a\"b"}"#)).as_deref(), Some("a\"b"));
        assert_eq!(content_text(&raw(r#"{"type":"image","text":"x"}"#)), None);
        // Any other frame, or a message without what places it, is not a message.
        assert!(MessageHead::parse(r#"{"type":"sent","conversation_id":"1","seq":3,"content":{}}"#).is_none());
        assert!(MessageHead::parse(r#"{"type":"message","conversation_id":"1","content":{}}"#).is_none());
        assert!(MessageHead::parse("not json").is_none());
    }

    #[test]
    fn error_frame_shape() {
        let f = ServerFrame::Error { code: ErrorCode::NotFound, message: "m".into(), reference: Some("r".into()) };
        assert_eq!(f.to_json(), r#"{"type":"error","code":"not_found","message":"m","ref":"r"}"#);
    }
}
