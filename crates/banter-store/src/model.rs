//! Domain types of the store. They carry no serde: the server converts them
//! into wire types at its edge.

/// Above this many members a conversation is returned without its member list.
pub const MEMBERS_LISTED_UP_TO: u64 = 1_000;

/// Numeric ids; on the wire they are decimal strings.
pub type UserId = i64;
/// A device is one session: one token, one cursor per conversation.
pub type DeviceId = i64;
/// A conversation, the partition key of messages and cursors.
pub type ConversationId = i64;
/// A Snowflake-style message id.
pub type MessageId = i64;

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
}

/// A live device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub id: DeviceId,
    pub user_id: UserId,
}

/// Direct (two people) or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Group,
}

/// A conversation as one member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: ConversationId,
    pub kind: Kind,
    pub title: Option<String>,
    pub created_at: i64,
    pub last_seq: u64,
    pub last_activity: i64,
    pub member_count: u64,
    /// Members, when the conversation has at most `members_listed_up_to` of them.
    pub members: Option<Vec<UserId>>,
    /// The viewing user's read seq.
    pub read_seq: u64,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    /// The device that sent it over WebSocket, which is not pushed its own
    /// message; 0 when it came over HTTP and goes to every device.
    pub sender_device: DeviceId,
    pub client_msg_id: String,
    /// The `content` object as JSON text, already validated.
    pub content: String,
    /// Assigned by the caller; kept only if the message is new.
    pub message_id: MessageId,
    /// Server time in ms; kept only if the message is new.
    pub ts: i64,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub conversation_id: ConversationId,
    pub seq: u64,
    pub message_id: MessageId,
    pub sender_id: UserId,
    pub sender_device: DeviceId,
    pub client_msg_id: String,
    pub ts: i64,
    pub content: String,
}

/// The answer to [`crate::Store::append`].
#[derive(Debug, Clone)]
pub struct Appended {
    pub message: std::sync::Arc<StoredMessage>,
    /// `true` when this was a retry of an already stored message.
    pub duplicate: bool,
}

/// A device's acknowledged position in one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub conversation_id: ConversationId,
    pub acked_seq: u64,
    pub last_seq: u64,
    pub member_count: u64,
}

/// Which messages of a conversation to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqRange {
    /// The oldest messages with seq above this one.
    After(u64),
    /// The newest messages with seq below this one (`u64::MAX` for the newest).
    Before(u64),
}

/// The cumulative acks of one device, as stored together with other devices' by [`crate::Store::ack_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAcks {
    pub user: UserId,
    pub device: DeviceId,
    pub acks: Vec<Ack>,
}

/// One cumulative acknowledgement of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub conversation_id: ConversationId,
    pub seq: u64,
    /// Whether the user's delivered seq is kept for receipts. Groups above
    /// the fan-out threshold get no receipts, so their acks skip that write
    /// and the membership check: the caller acks only what it was pushed.
    pub receipts: bool,
}
