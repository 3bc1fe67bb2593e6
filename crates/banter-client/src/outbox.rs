//! The outbox: sends that the server has not confirmed yet.
//!
//! Entries stay in the order they were queued until a `sent` confirms them
//! or an `error` refuses them. Only a window of them is on the wire at a time,
//! so a long outbox replayed after a reconnect does not trip the server's
//! rate limit. After every reconnect the window rewinds and every entry is
//! sent again with its own `client_msg_id`; the server's idempotency turns a
//! repeat of an already stored message into the original `sent`.

use banter_proto::ClientFrame;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One queued send.
#[derive(Debug)]
pub(crate) struct OutboxEntry {
    /// The conversation the message goes to.
    pub(crate) conversation_id: String,
    /// The client's id of the message, unique per sender and conversation.
    pub(crate) client_msg_id: String,
    /// The message content, kept to record the message once it is stored.
    pub(crate) content: Box<RawValue>,
    /// The `send` frame, serialized once and shared by every retry.
    pub(crate) frame: Utf8Bytes,
    /// The outbox slot this entry holds; dropping the entry frees it for a waiting sender.
    _permit: Option<OwnedSemaphorePermit>,
}

impl OutboxEntry {
    /// An entry with its `send` frame serialized.
    pub(crate) fn new(
        conversation_id: String,
        client_msg_id: String,
        content: Box<RawValue>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let frame = ClientFrame::Send {
            client_msg_id: client_msg_id.clone(),
            conversation_id: conversation_id.clone(),
            content: content.clone(),
        };
        let frame = serde_json::to_string(&frame).expect("client frames always serialize");
        OutboxEntry { conversation_id, client_msg_id, content, frame: frame.into(), _permit: permit }
    }

    /// The size of the `send` frame in bytes.
    pub(crate) fn frame_len(&self) -> usize {
        self.frame.len()
    }
}

/// The ordered set of unconfirmed sends.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Entries by queueing order.
    entries: BTreeMap<u64, OutboxEntry>,
    /// The order of each entry, by conversation and `client_msg_id`.
    index: HashMap<(String, String), u64>,
    /// The order the next queued entry gets.
    next_order: u64,
    /// Entries ordered below this were written on the current connection.
    cursor: u64,
    /// How many entries below `cursor` are still unconfirmed.
    in_flight: usize,
}

impl Outbox {
    /// An empty outbox.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Queues an entry at the end. An entry with the same conversation and
    /// `client_msg_id` as a queued one is handed back: the queued one already
    /// stands for it.
    pub(crate) fn push(&mut self, entry: OutboxEntry) -> Result<(), OutboxEntry> {
        let key = (entry.conversation_id.clone(), entry.client_msg_id.clone());
        if self.index.contains_key(&key) {
            return Err(entry);
        }
        let order = self.next_order;
        self.next_order += 1;
        self.index.insert(key, order);
        self.entries.insert(order, entry);
        Ok(())
    }

    /// Forgets what was written: the next writes start again from the oldest entry.
    pub(crate) fn rewind(&mut self) {
        self.cursor = 0;
        self.in_flight = 0;
    }

    /// The next entry to write, if fewer than `window` are in flight; it counts
    /// as in flight from now on.
    pub(crate) fn next_to_write(&mut self, window: usize) -> Option<&OutboxEntry> {
        if self.in_flight >= window {
            return None;
        }
        let (&order, entry) = self.entries.range(self.cursor..).next()?;
        self.cursor = order + 1;
        self.in_flight += 1;
        Some(entry)
    }

    /// Removes the entry a `sent` frame confirms.
    pub(crate) fn confirm(&mut self, conversation_id: &str, client_msg_id: &str) -> Option<OutboxEntry> {
        let order = self.index.remove(&(conversation_id.to_owned(), client_msg_id.to_owned()))?;
        self.remove_order(order)
    }

    /// Finds the oldest in-flight entry an `error` frame's `ref` names.
    pub(crate) fn find_in_flight(&self, reference: &str) -> Option<(&str, &str)> {
        self.entries
            .range(..self.cursor)
            .map(|(_, e)| e)
            .find(|e| e.client_msg_id == reference)
            .map(|e| (e.conversation_id.as_str(), e.client_msg_id.as_str()))
    }

    /// Removes the oldest in-flight entry an `error` frame's `ref` names.
    pub(crate) fn fail(&mut self, reference: &str) -> Option<OutboxEntry> {
        let (conversation_id, client_msg_id) = self.find_in_flight(reference)?;
        let (conversation_id, client_msg_id) = (conversation_id.to_owned(), client_msg_id.to_owned());
        self.confirm(&conversation_id, &client_msg_id)
    }

    /// How many entries are queued.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many written entries wait for their answer.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Removes an entry by its order, keeping the in-flight count right.
    fn remove_order(&mut self, order: u64) -> Option<OutboxEntry> {
        let entry = self.entries.remove(&order)?;
        if order < self.cursor {
            self.in_flight -= 1;
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(conv: &str, id: &str) -> OutboxEntry {
        let content = RawValue::from_string(r#"{"type":"text","text":"hi"}"#.to_owned()).unwrap();
        OutboxEntry::new(conv.to_owned(), id.to_owned(), content, None)
    }

    fn write_all(outbox: &mut Outbox, window: usize) -> Vec<String> {
        let mut written = Vec::new();
        while let Some(e) = outbox.next_to_write(window) {
            written.push(e.client_msg_id.clone());
        }
        written
    }

    #[test]
    fn frames_are_send_frames() {
        let e = entry("c1", "m1");
        let frame: serde_json::Value = serde_json::from_str(e.frame.as_str()).unwrap();
        let content = serde_json::json!({"type": "text", "text": "hi"});
        let expected =
            serde_json::json!({"type": "send", "client_msg_id": "m1", "conversation_id": "c1", "content": content});
        assert_eq!(frame, expected);
    }

    #[test]
    fn writes_in_order_within_the_window_and_replays_after_rewind() {
        let mut outbox = Outbox::new();
        for i in 0..5 {
            outbox.push(entry("c", &format!("m{i}"))).unwrap();
        }
        assert!(outbox.push(entry("c", "m1")).is_err(), "a queued id is not queued twice");
        outbox.push(entry("other", "m1")).unwrap();

        assert_eq!(write_all(&mut outbox, 2), vec!["m0", "m1"]);
        assert!(outbox.confirm("c", "m0").is_some());
        assert!(outbox.confirm("c", "m0").is_none(), "a second sent for one entry is ignored");
        assert_eq!(write_all(&mut outbox, 2), vec!["m2"]);
        assert_eq!(outbox.in_flight(), 2);

        outbox.rewind();
        assert_eq!(write_all(&mut outbox, 10), vec!["m1", "m2", "m3", "m4", "m1"]);
        assert_eq!(outbox.len(), 5);
    }

    #[test]
    fn errors_remove_only_written_entries() {
        let mut outbox = Outbox::new();
        outbox.push(entry("c", "a")).unwrap();
        outbox.push(entry("c", "b")).unwrap();
        assert!(outbox.fail("a").is_none(), "an entry not yet written cannot be refused");
        write_all(&mut outbox, 1);
        let failed = outbox.fail("a").unwrap();
        assert_eq!(failed.client_msg_id, "a");
        assert_eq!(outbox.in_flight(), 0);
        assert_eq!(write_all(&mut outbox, 1), vec!["b"]);
    }
}
