//! What a realtime session reports to the application.
//!
//! A session hands out its [`Event`]s through [`Events`], a bounded queue.
//! The application must keep reading it: while the queue is full the session
//! stops reading its socket, which in turn slows the server's pushes down.
//!
//! A message is acknowledged to the server only once the application has
//! taken it from [`Events`]: messages still queued when a session closes are
//! pushed again to the next session of the device.

use banter_proto::frame::{MessageView, ReceiptKind};
use banter_proto::http::{ConversationView, PresenceView};
use banter_proto::ErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

/// One thing that happened in a realtime session.
#[derive(Debug, Clone)]
pub enum Event {
    /// The session is connected: the server sent `welcome`. Comes after every (re)connection.
    Connected {
        /// The user this session acts for.
        user_id: String,
        /// The device this session is.
        device_id: String,
    },
    /// The connection was lost; the session reconnects unless a [`Event::Closed`] follows.
    Disconnected {
        /// The WebSocket close code, when the server sent one.
        code: Option<u16>,
        /// Why the connection ended.
        reason: String,
    },
    /// A new message from another device, in seq order per conversation and
    /// never twice. The session acknowledges it once the application has taken it.
    Message(MessageView),
    /// The server stored one of this session's sends.
    Sent {
        /// The id the send was queued with.
        client_msg_id: String,
        /// The conversation it went to.
        conversation_id: String,
        /// The id the server gave the message.
        message_id: String,
        /// The message's seq in its conversation.
        seq: u64,
        /// When the server stored it, in milliseconds since the Unix epoch.
        ts: i64,
    },
    /// The server refused one of this session's sends; it is no longer retried.
    SendFailed {
        /// The id the send was queued with.
        client_msg_id: String,
        /// The conversation it was meant for.
        conversation_id: String,
        /// Why the server refused it.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// A user's devices received (`delivered`) or the user read (`read`) a conversation up to `seq`.
    Receipt {
        /// The conversation.
        conversation_id: String,
        /// The user the receipt is about.
        user_id: String,
        /// Delivered or read.
        kind: ReceiptKind,
        /// The highest seq delivered or read.
        seq: u64,
    },
    /// A user is typing in a conversation.
    Typing {
        /// The conversation.
        conversation_id: String,
        /// The user typing.
        user_id: String,
    },
    /// A followed user came online or went offline.
    Presence(PresenceView),
    /// This user became a member of a conversation that someone else created or added it to.
    Conversation(ConversationView),
    /// The server reported an error not tied to a queued send.
    Error {
        /// The wire error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// The `client_msg_id` or frame type the error answers, if any.
        reference: Option<String>,
    },
    /// The session is over and will not reconnect: closed by the application,
    /// or by the server with 4001 (unauthorized) or 4002 (replaced). The last event.
    Closed {
        /// The close code that ended the session.
        code: u16,
        /// Why the session ended.
        reason: String,
    },
}

/// The receiving end of a session's events.
#[derive(Debug)]
pub struct Events {
    /// The bounded queue the session's task fills.
    rx: mpsc::Receiver<Event>,
    /// Where the seqs of the messages taken are recorded, for acknowledgement.
    consumed: Arc<Consumed>,
}

impl Events {
    /// Wraps the receiving end of the session's event queue.
    pub(crate) fn new(rx: mpsc::Receiver<Event>, consumed: Arc<Consumed>) -> Self {
        Events { rx, consumed }
    }

    /// The next event; `None` once the session is over and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        self.taken(event)
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        let event = self.rx.try_recv().ok();
        self.taken(event)
    }

    /// Records a message as taken by the application.
    fn taken(&self, event: Option<Event>) -> Option<Event> {
        if let Some(Event::Message(message)) = &event {
            self.consumed.record(&message.conversation_id, message.seq);
        }
        event
    }
}

/// The highest seq per conversation that the application has taken from
/// [`Events`], shared between the receiver and the session's task.
#[derive(Debug, Default)]
pub(crate) struct Consumed {
    /// Highest seq taken, per conversation.
    seqs: Mutex<HashMap<String, u64>>,
    /// Wakes the session's task to acknowledge what was taken.
    pub(crate) notify: Notify,
}

impl Consumed {
    /// Records that the application took message `seq` of a conversation.
    fn record(&self, conversation_id: &str, seq: u64) {
        {
            let mut seqs = self.seqs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match seqs.get_mut(conversation_id) {
                Some(highest) => *highest = (*highest).max(seq),
                None => {
                    seqs.insert(conversation_id.to_owned(), seq);
                }
            }
        }
        self.notify.notify_one();
    }

    /// The highest seq of a conversation the application took, if any.
    pub(crate) fn highest(&self, conversation_id: &str) -> Option<u64> {
        let seqs = self.seqs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seqs.get(conversation_id).copied()
    }
}
