//! Seq assignment for one batch of messages, as pure logic.
//!
//! The batch transaction ([`super::append`]) locks the counter rows of the
//! batch's conversations and reads what decides each message's fate: the
//! counters, which senders are members, and which (conversation, sender,
//! `client_msg_id`) keys are stored already. [`assign`] then settles every
//! message in arrival order, so that seqs follow the order in which this node
//! received the messages of a conversation:
//! - a sender who is not a member (or a conversation that does not exist) is
//!   `NotFound`, and takes no seq, so a refused message leaves no gap;
//! - a key stored already, or stored earlier in the same batch, is a duplicate
//!   and returns that message;
//! - anything else takes the conversation's next seq.

use crate::{Appended, ConversationId, NewMessage, Result, StoreError, StoredMessage, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The idempotency key of a message.
pub(super) type Key = (ConversationId, UserId, String);

/// What the batch transaction read, under the counter locks.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    /// `last_seq` of each existing conversation of the batch.
    pub(super) last_seq: HashMap<ConversationId, i64>,
    /// (conversation, sender) pairs of the batch where the sender is a member.
    pub(super) members: HashSet<(ConversationId, UserId)>,
    /// Messages of the batch's keys that are stored already.
    pub(super) stored: HashMap<Key, Arc<StoredMessage>>,
}

/// A conversation's counter after the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counter {
    pub(super) conversation_id: ConversationId,
    pub(super) last_seq: i64,
    /// The `ts` of the message that took `last_seq`.
    pub(super) last_activity: i64,
}

/// The outcome of a batch, to be written and then answered.
#[derive(Debug)]
pub(super) struct Assigned {
    /// One answer per message, in batch order.
    pub(super) answers: Vec<Result<Appended>>,
    /// The messages to insert.
    pub(super) new: Vec<Arc<StoredMessage>>,
    /// The counters to update, one per conversation that got a new message.
    pub(super) counters: Vec<Counter>,
}

/// Settles each message of `batch` against `snapshot`.
pub(super) fn assign(batch: Vec<NewMessage>, snapshot: Snapshot) -> Assigned {
    let Snapshot { mut last_seq, members, mut stored } = snapshot;
    let mut answers = Vec::with_capacity(batch.len());
    let mut new = Vec::new();
    let mut counters: HashMap<ConversationId, Counter> = HashMap::new();
    for m in batch {
        let conversation = m.conversation_id;
        let Some(last) = last_seq.get_mut(&conversation) else {
            answers.push(Err(StoreError::NotFound));
            continue;
        };
        if !members.contains(&(conversation, m.sender_id)) {
            answers.push(Err(StoreError::NotFound));
            continue;
        }
        let key = (conversation, m.sender_id, m.client_msg_id);
        if let Some(original) = stored.get(&key) {
            answers.push(Ok(Appended { message: Arc::clone(original), duplicate: true }));
            continue;
        }
        *last += 1;
        let message = Arc::new(StoredMessage {
            conversation_id: conversation,
            seq: *last as u64,
            message_id: m.message_id,
            sender_id: m.sender_id,
            sender_device: m.sender_device,
            client_msg_id: key.2.clone(),
            ts: m.ts,
            content: m.content,
        });
        counters.insert(conversation, Counter { conversation_id: conversation, last_seq: *last, last_activity: m.ts });
        stored.insert(key, Arc::clone(&message));
        new.push(Arc::clone(&message));
        answers.push(Ok(Appended { message, duplicate: false }));
    }
    let mut counters: Vec<Counter> = counters.into_values().collect();
    counters.sort_by_key(|c| c.conversation_id);
    Assigned { answers, new, counters }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(conversation: ConversationId, sender: UserId, client_msg_id: &str, ts: i64) -> NewMessage {
        NewMessage {
            conversation_id: conversation,
            sender_id: sender,
            sender_device: 0,
            client_msg_id: client_msg_id.to_owned(),
            content: "{}".to_owned(),
            message_id: ts,
            ts,
        }
    }

    fn seqs(assigned: &Assigned) -> Vec<Option<(u64, bool)>> {
        assigned.answers.iter().map(|a| a.as_ref().ok().map(|a| (a.message.seq, a.duplicate))).collect()
    }

    #[test]
    fn seqs_follow_arrival_order_per_conversation() {
        let snapshot = Snapshot {
            last_seq: HashMap::from([(1, 7), (2, 0)]),
            members: HashSet::from([(1, 10), (2, 10)]),
            ..Snapshot::default()
        };
        let batch = vec![message(2, 10, "a", 1), message(1, 10, "b", 2), message(2, 10, "c", 3)];
        let assigned = assign(batch, snapshot);
        assert_eq!(seqs(&assigned), vec![Some((1, false)), Some((8, false)), Some((2, false))]);
        assert_eq!(
            assigned.counters,
            vec![
                Counter { conversation_id: 1, last_seq: 8, last_activity: 2 },
                Counter { conversation_id: 2, last_seq: 2, last_activity: 3 }
            ]
        );
        assert_eq!(assigned.new.len(), 3);
    }

    #[test]
    fn refused_messages_take_no_seq() {
        let snapshot =
            Snapshot { last_seq: HashMap::from([(1, 0)]), members: HashSet::from([(1, 10)]), ..Snapshot::default() };
        // A non-member, then a conversation that does not exist, between two good messages.
        let batch =
            vec![message(1, 10, "a", 1), message(1, 11, "b", 2), message(9, 10, "c", 3), message(1, 10, "d", 4)];
        let assigned = assign(batch, snapshot);
        assert_eq!(seqs(&assigned), vec![Some((1, false)), None, None, Some((2, false))]);
        assert!(matches!(assigned.answers[1], Err(StoreError::NotFound)));
        assert!(matches!(assigned.answers[2], Err(StoreError::NotFound)));
        assert_eq!(assigned.counters, vec![Counter { conversation_id: 1, last_seq: 2, last_activity: 4 }]);
    }

    #[test]
    fn duplicates_return_the_original_whether_stored_or_in_the_batch() {
        let original = Arc::new(StoredMessage {
            conversation_id: 1,
            seq: 3,
            message_id: 99,
            sender_id: 10,
            sender_device: 0,
            client_msg_id: "old".to_owned(),
            ts: 99,
            content: "{}".to_owned(),
        });
        let snapshot = Snapshot {
            last_seq: HashMap::from([(1, 3)]),
            members: HashSet::from([(1, 10), (1, 11)]),
            stored: HashMap::from([((1, 10, "old".to_owned()), Arc::clone(&original))]),
        };
        let batch = vec![
            message(1, 10, "old", 5),
            message(1, 10, "new", 6),
            message(1, 10, "new", 7),
            // The same client id from another sender is another message.
            message(1, 11, "new", 8),
        ];
        let assigned = assign(batch, snapshot);
        assert_eq!(seqs(&assigned), vec![Some((3, true)), Some((4, false)), Some((4, true)), Some((5, false))]);
        let answers: Vec<_> = assigned.answers.into_iter().map(|a| a.ok().map(|a| a.message)).collect();
        assert_eq!(answers[0].as_ref(), Some(&original));
        assert_eq!(answers[2].as_ref().map(|m| m.message_id), Some(6));
        assert_eq!(assigned.new.len(), 2);
        assert_eq!(assigned.counters, vec![Counter { conversation_id: 1, last_seq: 5, last_activity: 8 }]);
    }

    #[test]
    fn a_batch_with_nothing_new_updates_no_counter() {
        let snapshot = Snapshot { last_seq: HashMap::from([(1, 0)]), ..Snapshot::default() };
        let assigned = assign(vec![message(1, 10, "a", 1)], snapshot);
        assert!(assigned.new.is_empty() && assigned.counters.is_empty());
    }
}
