//! Positions in conversations: each device's cursor (how far it has
//! acknowledged), and each member's delivered and read seqs (for receipts).
//! Every position only moves forward, and never past the conversation's
//! `last_seq`.

use super::rows::{self, bigint, CURSOR_COLUMNS};
use super::{query, query_opt};
use crate::{Ack, ConversationId, Cursor, DeviceId, Result, StoreError, UserId};
use deadpool_postgres::{Client, GenericClient};

/// The cursor of a device in each conversation of its user.
pub(super) async fn cursors_of(c: &impl GenericClient, user: UserId, device: DeviceId) -> Result<Vec<Cursor>> {
    let sql = format!(
        "SELECT {CURSOR_COLUMNS} FROM members m JOIN conversations c ON c.conversation_id = m.conversation_id \
         LEFT JOIN cursors k ON k.conversation_id = m.conversation_id AND k.device_id = $2 \
         WHERE m.user_id = $1 \
         AND m.conversation_id IN (SELECT conversation_id FROM user_conversations WHERE user_id = $1) \
         ORDER BY m.conversation_id"
    );
    query(c, &sql, &[&user, &device]).await?.iter().map(rows::cursor).collect()
}

/// The cursor of a device in one conversation, if its user is a member.
pub(super) async fn cursor(
    c: &impl GenericClient,
    conversation: ConversationId,
    user: UserId,
    device: DeviceId,
) -> Result<Option<Cursor>> {
    let sql = format!(
        "SELECT {CURSOR_COLUMNS} FROM members m JOIN conversations c ON c.conversation_id = m.conversation_id \
         LEFT JOIN cursors k ON k.conversation_id = m.conversation_id AND k.device_id = $3 \
         WHERE m.conversation_id = $1 AND m.user_id = $2"
    );
    query_opt(c, &sql, &[&conversation, &user, &device]).await?.as_ref().map(rows::cursor).transpose()
}

/// The first statement of an ack: the device's cursor. With receipts, only
/// a member's device moves.
const ACK_CURSOR: &str = "INSERT INTO cursors (conversation_id, device_id, acked_seq) \
     SELECT c.conversation_id, $2, LEAST($3::bigint, c.last_seq) FROM conversations c \
     WHERE c.conversation_id = $1 AND (NOT $4::bool \
     OR EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = $1 AND m.user_id = $5::bigint)) \
     ON CONFLICT (conversation_id, device_id) DO UPDATE SET acked_seq = GREATEST(cursors.acked_seq, excluded.acked_seq)";

/// The second statement of an ack with receipts: the user's delivered seq.
/// Returns the new value if it rose.
const ACK_DELIVERED: &str = "UPDATE members m SET delivered_seq = LEAST($3::bigint, c.last_seq) \
     FROM conversations c WHERE c.conversation_id = $1 AND m.conversation_id = $1 AND m.user_id = $2 \
     AND m.delivered_seq < LEAST($3::bigint, c.last_seq) RETURNING m.delivered_seq";

/// Records the acks of one device in one transaction; returns, in the order
/// given, the conversations (asking for receipts) where the user's delivered
/// seq rose, with its new value.
pub(super) async fn ack(
    client: &mut Client,
    user: UserId,
    device: DeviceId,
    acks: &[Ack],
) -> Result<Vec<(ConversationId, u64)>> {
    // The statements are sent without waiting for each other (tokio-postgres
    // pipelines them), and run in the order sent: every cursor first, then
    // every delivered seq, each in ascending conversation order. That is the
    // order in which `leave` and the acks of the user's other devices lock the
    // same rows, so none of them waits for another in a cycle. Acks of the
    // same conversation keep their order, and apply in turn.
    let mut order: Vec<usize> = (0..acks.len()).collect();
    order.sort_by_key(|&i| acks[i].conversation_id);
    let seqs: Vec<i64> = acks.iter().map(|a| bigint(a.seq)).collect();
    let tx = client.transaction().await?;
    let cursor = tx.prepare_cached(ACK_CURSOR).await?;
    let delivered = tx.prepare_cached(ACK_DELIVERED).await?;
    let (t, cursor, delivered, seqs) = (&tx, &cursor, &delivered, &seqs);
    futures_util::future::try_join_all(order.iter().map(|&i| {
        let a = acks[i];
        async move { t.execute(cursor, &[&a.conversation_id, &device, &seqs[i], &a.receipts, &user]).await }
    }))
    .await?;
    let rose = futures_util::future::try_join_all(order.iter().filter(|&&i| acks[i].receipts).map(|&i| {
        let a = acks[i];
        async move {
            let row = t.query_opt(delivered, &[&a.conversation_id, &user, &seqs[i]]).await?;
            row.map(|row| Ok::<_, StoreError>((i, row.try_get::<_, i64>(0)? as u64))).transpose()
        }
    }))
    .await?;
    tx.commit().await?;
    let mut rose: Vec<(usize, u64)> = rose.into_iter().flatten().collect();
    rose.sort_by_key(|&(i, _)| i);
    Ok(rose.into_iter().map(|(i, seq)| (acks[i].conversation_id, seq)).collect())
}

/// Records that `user` read up to `seq` (capped at `last_seq`); returns the
/// new read seq if it rose, `NotFound` if the user is not a member.
pub(super) async fn read(
    c: &impl GenericClient,
    conversation: ConversationId,
    user: UserId,
    seq: u64,
) -> Result<Option<u64>> {
    let sql = "WITH v AS ( \
                   SELECT LEAST($3::bigint, c.last_seq) AS seq FROM conversations c WHERE c.conversation_id = $1 \
                   AND EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = $1 AND m.user_id = $2)), \
               raised AS ( \
                   UPDATE members m SET read_seq = v.seq FROM v \
                   WHERE m.conversation_id = $1 AND m.user_id = $2 AND m.read_seq < v.seq RETURNING m.read_seq) \
               SELECT v.seq, EXISTS (SELECT 1 FROM raised) FROM v";
    let row = query_opt(c, sql, &[&conversation, &user, &bigint(seq)]).await?.ok_or(StoreError::NotFound)?;
    let (seq, rose): (i64, bool) = (row.try_get(0)?, row.try_get(1)?);
    Ok(rose.then_some(seq as u64))
}
