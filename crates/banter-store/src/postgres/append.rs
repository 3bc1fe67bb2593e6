//! The transaction that stores one batch of messages: where `seq` is assigned.
//!
//! Whatever the batch's size, it is one transaction of five statements:
//! 1. lock the counter rows (`conversations`) of the batch's conversations,
//!    in ascending `conversation_id` order, so that two batches (of this node
//!    or another) never wait for each other in a cycle;
//! 2. read which senders are members, and 3. which idempotency keys are stored
//!    already (sent together). Both read after the locks are held, so they see
//!    every message committed before: nothing can be inserted into these
//!    conversations meanwhile, since every insert holds its counter's lock;
//! 4. insert the new messages, and 5. move the counters (sent together).
//!
//! The commit releases the locks; only then are the callers answered.
//! Between 3 and 4, [`seq::assign`] decides each message's fate in memory.
//! The statements take whole columns as arrays (`unnest`), so each is one
//! round trip and one plan for any batch size.

use super::rows;
use super::seq::{self, Snapshot};
use crate::{Appended, NewMessage, Result, StoredMessage};
use deadpool_postgres::Client;
use std::sync::Arc;
use tokio_postgres::types::ToSql;

const LOCK_COUNTERS: &str = "SELECT conversation_id, last_seq FROM conversations \
     WHERE conversation_id = ANY($1::bigint[]) ORDER BY conversation_id FOR UPDATE";

const MEMBER_SENDERS: &str = "SELECT DISTINCT m.conversation_id, m.user_id \
     FROM unnest($1::bigint[], $2::bigint[]) AS k(conversation_id, user_id) \
     JOIN members m ON m.conversation_id = k.conversation_id AND m.user_id = k.user_id";

/// Reads the columns of [`rows::message`].
const STORED_KEYS: &str = "SELECT DISTINCT m.conversation_id, m.seq, m.message_id, m.sender_id, m.sender_device, \
     m.client_msg_id, m.ts, m.content \
     FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS k(conversation_id, sender_id, client_msg_id) \
     JOIN messages m ON m.conversation_id = k.conversation_id AND m.sender_id = k.sender_id \
     AND m.client_msg_id = k.client_msg_id";

const INSERT_MESSAGES: &str = "INSERT INTO messages \
     (conversation_id, seq, message_id, sender_id, sender_device, client_msg_id, ts, content) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
     $6::text[], $7::bigint[], $8::text[])";

const MOVE_COUNTERS: &str = "UPDATE conversations c SET last_seq = v.last_seq, last_activity = v.last_activity \
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(conversation_id, last_seq, last_activity) \
     WHERE c.conversation_id = v.conversation_id";

/// Stores `batch` in one transaction; one answer per message, in order, once
/// committed. An error is the whole batch's: nothing of it was stored.
pub(super) async fn store_batch(client: &mut Client, batch: Vec<NewMessage>) -> Result<Vec<Result<Appended>>> {
    let mut conversations: Vec<i64> = batch.iter().map(|m| m.conversation_id).collect();
    conversations.sort_unstable();
    conversations.dedup();
    let senders: Vec<i64> = batch.iter().map(|m| m.sender_id).collect();
    let in_conversations: Vec<i64> = batch.iter().map(|m| m.conversation_id).collect();
    let client_ids: Vec<&str> = batch.iter().map(|m| m.client_msg_id.as_str()).collect();

    let tx = client.transaction().await?;
    let lock = tx.prepare_cached(LOCK_COUNTERS).await?;
    let member_senders = tx.prepare_cached(MEMBER_SENDERS).await?;
    let stored_keys = tx.prepare_cached(STORED_KEYS).await?;
    let insert = tx.prepare_cached(INSERT_MESSAGES).await?;
    let move_counters = tx.prepare_cached(MOVE_COUNTERS).await?;

    let mut snapshot = Snapshot::default();
    for row in tx.query(&lock, &[&conversations]).await? {
        snapshot.last_seq.insert(row.try_get(0)?, row.try_get(1)?);
    }
    // Sent together: tokio-postgres pipelines queries issued concurrently on one connection.
    let member_params: [&(dyn ToSql + Sync); 2] = [&in_conversations, &senders];
    let key_params: [&(dyn ToSql + Sync); 3] = [&in_conversations, &senders, &client_ids];
    let (members, stored) =
        tokio::try_join!(tx.query(&member_senders, &member_params), tx.query(&stored_keys, &key_params))?;
    for row in members {
        snapshot.members.insert((row.try_get(0)?, row.try_get(1)?));
    }
    for row in stored {
        let message = rows::message(&row)?;
        let key = (message.conversation_id, message.sender_id, message.client_msg_id.clone());
        snapshot.stored.insert(key, Arc::new(message));
    }

    let assigned = seq::assign(batch, snapshot);
    if !assigned.new.is_empty() {
        let messages = Columns::of(&assigned.new);
        let message_params = messages.params();
        let counters = &assigned.counters;
        let counter_ids: Vec<i64> = counters.iter().map(|c| c.conversation_id).collect();
        let last_seqs: Vec<i64> = counters.iter().map(|c| c.last_seq).collect();
        let activities: Vec<i64> = counters.iter().map(|c| c.last_activity).collect();
        let counter_params: [&(dyn ToSql + Sync); 3] = [&counter_ids, &last_seqs, &activities];
        tokio::try_join!(tx.execute(&insert, &message_params), tx.execute(&move_counters, &counter_params))?;
    }
    tx.commit().await?;
    Ok(assigned.answers)
}

/// New messages as the columns `INSERT_MESSAGES` takes.
#[derive(Default)]
struct Columns<'a> {
    conversation_ids: Vec<i64>,
    seqs: Vec<i64>,
    message_ids: Vec<i64>,
    sender_ids: Vec<i64>,
    sender_devices: Vec<i64>,
    client_msg_ids: Vec<&'a str>,
    ts: Vec<i64>,
    contents: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(messages: &'a [Arc<StoredMessage>]) -> Columns<'a> {
        let mut c = Columns::default();
        for m in messages {
            c.conversation_ids.push(m.conversation_id);
            c.seqs.push(rows::bigint(m.seq));
            c.message_ids.push(m.message_id);
            c.sender_ids.push(m.sender_id);
            c.sender_devices.push(m.sender_device);
            c.client_msg_ids.push(&m.client_msg_id);
            c.ts.push(m.ts);
            c.contents.push(&m.content);
        }
        c
    }

    /// The parameters `$1`..`$8` of `INSERT_MESSAGES`.
    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.conversation_ids,
            &self.seqs,
            &self.message_ids,
            &self.sender_ids,
            &self.sender_devices,
            &self.client_msg_ids,
            &self.ts,
            &self.contents,
        ]
    }
}
