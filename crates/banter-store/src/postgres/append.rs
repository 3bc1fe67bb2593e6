//! The transaction that stores one batch of messages: where `seq` is assigned.
//!
//! Whatever the batch's size, it is one transaction in three round trips:
//! 1. lock the counter rows (`conversations`) of the batch's conversations,
//!    in ascending `conversation_id` order, so that two batches (of this node
//!    or another) never wait for each other in a cycle;
//! 2. read which senders are members, and 3. which idempotency keys are stored
//!    already (one small query per sender and per message, all pipelined:
//!    with plain parameters each probes an index in one partition, where a
//!    join against `unnest` arrays is planned as a scan of every partition). Both read after the locks are held, so they see
//!    every message committed before: nothing can be inserted into these
//!    conversations meanwhile, since every insert holds its counter's lock;
//! 4. insert the new messages (one statement over `unnest` arrays), and
//!    5. move the counters (one update per conversation), sent together.
//!
//! The commit releases the locks; only then are the callers answered.
//! Between 3 and 4, [`seq::assign`] decides each message's fate in memory.

use super::rows;
use super::seq::{self, Snapshot};
use crate::{Appended, NewMessage, Result, StoredMessage};
use deadpool_postgres::Client;
use futures_util::future::try_join_all;
use std::sync::Arc;
use tokio_postgres::types::ToSql;

const LOCK_COUNTERS: &str = "SELECT conversation_id, last_seq FROM conversations \
     WHERE conversation_id = ANY($1::bigint[]) ORDER BY conversation_id FOR UPDATE";

/// Whether a sender is a member. One query per (conversation, sender) of
/// the batch, all pipelined: with plain parameters the planner probes the
/// primary key, where a join against `unnest` arrays (estimated at 100 rows)
/// would scan the table.
pub(super) const IS_MEMBER: &str = "SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2";

/// An earlier message with the same idempotency key, if any; reads the
/// columns of [`rows::message`]. One per message of the batch, pipelined, so
/// each prunes to one partition and probes its unique index.
const STORED_KEY: &str =
    "SELECT conversation_id, seq, message_id, sender_id, sender_device, client_msg_id, ts, content \
     FROM messages WHERE conversation_id = $1 AND sender_id = $2 AND client_msg_id = $3";

const INSERT_MESSAGES: &str = "INSERT INTO messages \
     (conversation_id, seq, message_id, sender_id, sender_device, client_msg_id, ts, content) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
     $6::text[], $7::bigint[], $8::text[])";

/// One per conversation of the batch, pipelined.
const MOVE_COUNTER: &str = "UPDATE conversations SET last_seq = $2, last_activity = $3 WHERE conversation_id = $1";

/// Stores `batch` in one transaction; one answer per message, in order, once
/// committed. An error is the whole batch's: nothing of it was stored.
pub(super) async fn store_batch(client: &mut Client, batch: Vec<NewMessage>) -> Result<Vec<Result<Appended>>> {
    let mut conversations: Vec<i64> = batch.iter().map(|m| m.conversation_id).collect();
    conversations.sort_unstable();
    conversations.dedup();
    let mut senders: Vec<(i64, i64)> = batch.iter().map(|m| (m.conversation_id, m.sender_id)).collect();
    senders.sort_unstable();
    senders.dedup();

    let tx = client.transaction().await?;
    let lock = tx.prepare_cached(LOCK_COUNTERS).await?;
    let is_member = tx.prepare_cached(IS_MEMBER).await?;
    let stored_key = tx.prepare_cached(STORED_KEY).await?;
    let insert = tx.prepare_cached(INSERT_MESSAGES).await?;
    let move_counter = tx.prepare_cached(MOVE_COUNTER).await?;

    let mut snapshot = Snapshot::default();
    for row in tx.query(&lock, &[&conversations]).await? {
        snapshot.last_seq.insert(row.try_get(0)?, row.try_get(1)?);
    }
    // Sent together: tokio-postgres pipelines queries issued concurrently on one connection.
    let (t, is_member, stored_key) = (&tx, &is_member, &stored_key);
    let members = try_join_all(senders.iter().map(|(c, u)| async move {
        Ok::<_, tokio_postgres::Error>(t.query_opt(is_member, &[c, u]).await?.map(|_| (*c, *u)))
    }));
    let stored =
        try_join_all(batch.iter().map(|m| async move {
            t.query_opt(stored_key, &[&m.conversation_id, &m.sender_id, &m.client_msg_id]).await
        }));
    let (members, stored) = tokio::try_join!(members, stored)?;
    snapshot.members.extend(members.into_iter().flatten());
    for row in stored.into_iter().flatten() {
        let message = rows::message(&row)?;
        let key = (message.conversation_id, message.sender_id, message.client_msg_id.clone());
        snapshot.stored.insert(key, Arc::new(message));
    }

    let assigned = seq::assign(batch, snapshot);
    if !assigned.new.is_empty() {
        let messages = Columns::of(&assigned.new);
        let message_params = messages.params();
        let move_counter = &move_counter;
        let counters = try_join_all(assigned.counters.iter().map(|c| async move {
            t.execute(move_counter, &[&c.conversation_id, &c.last_seq, &c.last_activity]).await
        }));
        tokio::try_join!(tx.execute(&insert, &message_params), counters)?;
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
