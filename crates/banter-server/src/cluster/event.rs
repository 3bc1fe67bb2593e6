//! What nodes tell each other over the bus, and its encoding.
//!
//! An event travels as one NATS message: a JSON header, a newline, then an
//! optional payload of raw bytes (a frame already serialized for clients),
//! so a frame is never escaped into JSON a second time.

use banter_store::{ConversationId, DeviceId, UserId};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// A node's id: its Snowflake node id, unique in the deployment.
pub type NodeId = u16;

/// One event between nodes. `payload` is carried beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Event {
    /// A message was stored; the payload is its `message` frame. Every node
    /// pushes it to its own devices of the conversation's members.
    Message {
        conversation_id: ConversationId,
        seq: u64,
        ts: i64,
        /// The WebSocket device that sent it, which gets `sent` instead.
        origin: Option<DeviceId>,
    },
    /// An ephemeral frame (typing, receipt, conversation) for every device of these users.
    Frame { users: Vec<UserId> },
    /// The user left the conversation: its devices stop delivering it.
    Left { user: UserId, conversation_id: ConversationId },
    /// The member list of a conversation changed: forget cached members.
    MembersChanged { conversation_id: ConversationId },
    /// A device connected to the sending node at `at` (ms); an older
    /// connection of the same device elsewhere closes with 4002.
    Connected { user: UserId, device: DeviceId, at: i64 },
    /// The user's last connection to the sending node closed.
    Disconnected { user: UserId },
    /// A device logged out: forget its token, close its connection with 4001.
    LoggedOut { user: UserId, device: DeviceId },
    /// The sending node is alive (sent every [`super::BEAT`]).
    Beat,
    /// The sending node (re)joined: every node answers with a [`Event::Snapshot`].
    Hello,
    /// Users with a connection to the sending node. The `first` part of a
    /// snapshot replaces what others knew of that node; later parts add to it.
    Snapshot { first: bool, users: Vec<UserId> },
}

/// An event with the node that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    #[serde(flatten)]
    pub event: Event,
}

/// Why a bus message could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable bus message: {0}")]
pub struct DecodeError(String);

impl Envelope {
    /// The wire form: header, newline, payload.
    pub fn encode(&self, payload: &[u8]) -> Bytes {
        let header = serde_json::to_vec(self).expect("events always serialize");
        let mut out = BytesMut::with_capacity(header.len() + 1 + payload.len());
        out.put_slice(&header);
        out.put_u8(b'\n');
        out.put_slice(payload);
        out.freeze()
    }

    /// Reads the wire form back; the payload shares `bytes`.
    pub fn decode(bytes: &Bytes) -> Result<(Envelope, Bytes), DecodeError> {
        let split = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| DecodeError("no header".into()))?;
        let envelope = serde_json::from_slice(&bytes[..split]).map_err(|e| DecodeError(e.to_string()))?;
        Ok((envelope, bytes.slice(split + 1..)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_a_raw_payload() {
        let e = Envelope { from: 7, event: Event::Message { conversation_id: 3, seq: 9, ts: 1, origin: Some(4) } };
        let frame = br#"{"type":"message","content":{"text":"a\nb"}}"#;
        let (back, payload) = Envelope::decode(&e.encode(frame)).unwrap();
        assert_eq!(back, e);
        assert_eq!(&payload[..], frame);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Envelope::decode(&Bytes::from_static(b"no newline")).is_err());
        assert!(Envelope::decode(&Bytes::from_static(b"{\"t\":\"nope\"}\n")).is_err());
    }
}
