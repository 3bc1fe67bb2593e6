//! The local history a realtime session deduplicates and orders against.
//!
//! A [`LocalHistory`] remembers, per conversation, the *contiguous* seq: the
//! highest seq such that the client holds every message of the conversation
//! from its baseline up to it. The baseline is set by the first message of a
//! conversation the history ever sees, so older history is never backfilled.
//! A message is a duplicate when its seq is at or below the contiguous seq,
//! or when its `message_id` is already held above it. That rule lets an
//! implementation forget ids at or below the contiguous seq and stay bounded.
//!
//! Two implementations ship: [`MemoryHistory`] (ids only, for one process)
//! and [`crate::SqliteHistory`] (whole messages in a file, across restarts).

use crate::ClientError;
use banter_proto::frame::MessageView;
use std::collections::{BTreeMap, HashMap};

/// Storage of what the client already holds, used by a session to drop
/// duplicates and to know where each conversation's contiguous run ends.
///
/// A session calls these methods from its one background task, never
/// concurrently, so an implementation needs `Send` but not `Sync`.
pub trait LocalHistory: Send {
    /// Whether the message with this id is held. An implementation may forget
    /// ids at or below its conversation's contiguous seq, so callers should use
    /// [`LocalHistory::is_duplicate`] to decide about a message.
    fn contains(&self, message_id: &str) -> Result<bool, ClientError>;

    /// Records a message as held. Inserting a message twice changes nothing.
    fn insert(&mut self, message: &MessageView) -> Result<(), ClientError>;

    /// The highest seq up to which every message of the conversation, from its
    /// baseline on, is held; `None` for a conversation never seen.
    fn contiguous(&self, conversation_id: &str) -> Result<Option<u64>, ClientError>;

    /// Records the conversation's contiguous seq. It never goes down: a lower
    /// value than the one held is ignored.
    fn set_contiguous(&mut self, conversation_id: &str, seq: u64) -> Result<(), ClientError>;

    /// Whether `message` is already held: its seq is at or below its
    /// conversation's contiguous seq, or its id is held.
    fn is_duplicate(&self, message: &MessageView) -> Result<bool, ClientError> {
        if let Some(contiguous) = self.contiguous(&message.conversation_id)? {
            if message.seq <= contiguous {
                return Ok(true);
            }
        }
        self.contains(&message.message_id)
    }
}

impl<H: LocalHistory + ?Sized> LocalHistory for Box<H> {
    fn contains(&self, message_id: &str) -> Result<bool, ClientError> {
        (**self).contains(message_id)
    }

    fn insert(&mut self, message: &MessageView) -> Result<(), ClientError> {
        (**self).insert(message)
    }

    fn contiguous(&self, conversation_id: &str) -> Result<Option<u64>, ClientError> {
        (**self).contiguous(conversation_id)
    }

    fn set_contiguous(&mut self, conversation_id: &str, seq: u64) -> Result<(), ClientError> {
        (**self).set_contiguous(conversation_id, seq)
    }
}

/// An in-memory history that keeps only what deduplication needs: per
/// conversation, the contiguous seq and the ids held above it.
///
/// Its memory is bounded by the number of conversations plus the messages
/// held out of order, since ids at or below the contiguous seq are pruned.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    /// Per conversation: its contiguous seq and the ids held above it.
    conversations: HashMap<String, ConversationIds>,
    /// Every id held above its conversation's contiguous seq, for [`LocalHistory::contains`].
    ids: HashMap<String, String>,
}

/// What [`MemoryHistory`] keeps for one conversation.
#[derive(Debug, Default)]
struct ConversationIds {
    /// The contiguous seq, once the conversation has a baseline.
    contiguous: Option<u64>,
    /// Ids of messages held above the contiguous seq, by seq.
    above: BTreeMap<u64, String>,
}

impl MemoryHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many ids the history holds above contiguous seqs (for tests and metrics).
    pub fn held_ids(&self) -> usize {
        self.ids.len()
    }
}

impl LocalHistory for MemoryHistory {
    fn contains(&self, message_id: &str) -> Result<bool, ClientError> {
        Ok(self.ids.contains_key(message_id))
    }

    fn insert(&mut self, message: &MessageView) -> Result<(), ClientError> {
        let conversation = self.conversations.entry(message.conversation_id.clone()).or_default();
        if conversation.contiguous.is_some_and(|c| message.seq <= c) {
            return Ok(());
        }
        if self.ids.contains_key(&message.message_id) {
            return Ok(());
        }
        if let Some(previous) = conversation.above.insert(message.seq, message.message_id.clone()) {
            // A seq names one message; a different id for it can only be a
            // misbehaving server, and the newer id wins.
            self.ids.remove(&previous);
        }
        self.ids.insert(message.message_id.clone(), message.conversation_id.clone());
        Ok(())
    }

    fn contiguous(&self, conversation_id: &str) -> Result<Option<u64>, ClientError> {
        Ok(self.conversations.get(conversation_id).and_then(|c| c.contiguous))
    }

    fn set_contiguous(&mut self, conversation_id: &str, seq: u64) -> Result<(), ClientError> {
        let conversation = self.conversations.entry(conversation_id.to_owned()).or_default();
        if conversation.contiguous.is_some_and(|c| c >= seq) {
            return Ok(());
        }
        conversation.contiguous = Some(seq);
        let above = conversation.above.split_off(&(seq + 1));
        let pruned = std::mem::replace(&mut conversation.above, above);
        for id in pruned.into_values() {
            self.ids.remove(&id);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::value::RawValue;

    /// A text message of conversation `conv` with seq `seq` and id `m{seq}`.
    pub(crate) fn message(conv: &str, seq: u64) -> MessageView {
        MessageView {
            conversation_id: conv.to_owned(),
            message_id: format!("{conv}-m{seq}"),
            seq,
            sender_id: "u1".to_owned(),
            client_msg_id: format!("c{seq}"),
            ts: 1_700_000_000_000 + seq as i64,
            content: RawValue::from_string(format!(r#"{{"type":"text","text":"hello {seq}"}}"#)).unwrap(),
        }
    }

    /// The rules every [`LocalHistory`] must follow.
    pub(crate) fn check_rules(history: &mut dyn LocalHistory) {
        assert_eq!(history.contiguous("a").unwrap(), None);
        assert!(!history.is_duplicate(&message("a", 5)).unwrap());

        history.set_contiguous("a", 4).unwrap();
        history.insert(&message("a", 5)).unwrap();
        history.insert(&message("a", 5)).unwrap();
        history.insert(&message("a", 7)).unwrap();
        assert!(history.is_duplicate(&message("a", 5)).unwrap());
        assert!(history.is_duplicate(&message("a", 3)).unwrap(), "below the baseline counts as held");
        assert!(!history.is_duplicate(&message("a", 6)).unwrap());
        assert!(history.is_duplicate(&message("a", 7)).unwrap());
        assert!(history.contains("a-m7").unwrap());

        history.set_contiguous("a", 5).unwrap();
        assert_eq!(history.contiguous("a").unwrap(), Some(5));
        history.set_contiguous("a", 2).unwrap();
        assert_eq!(history.contiguous("a").unwrap(), Some(5), "the contiguous seq never goes down");
        assert!(history.is_duplicate(&message("a", 5)).unwrap());
        assert!(history.is_duplicate(&message("a", 7)).unwrap());

        assert_eq!(history.contiguous("b").unwrap(), None, "conversations are independent");
        assert!(!history.is_duplicate(&message("b", 5)).unwrap());
    }

    #[test]
    fn memory_history_follows_the_rules() {
        check_rules(&mut MemoryHistory::new());
    }

    #[test]
    fn memory_history_prunes_ids_at_or_below_contiguous() {
        let mut history = MemoryHistory::new();
        history.set_contiguous("a", 0).unwrap();
        for seq in 1..=1000 {
            history.insert(&message("a", seq)).unwrap();
        }
        history.insert(&message("a", 1002)).unwrap();
        assert_eq!(history.held_ids(), 1001);
        history.set_contiguous("a", 1000).unwrap();
        assert_eq!(history.held_ids(), 1, "only the id above the contiguous seq is kept");
        assert!(history.is_duplicate(&message("a", 999)).unwrap());
        assert!(history.is_duplicate(&message("a", 1002)).unwrap());
        history.insert(&message("a", 10)).unwrap();
        assert_eq!(history.held_ids(), 1, "inserting below the contiguous seq keeps nothing");
    }
}
