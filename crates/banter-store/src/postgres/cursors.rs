//! Positions in conversations: each device's cursor (how far it has
//! acknowledged), and each member's delivered and read seqs (for receipts).
//! Every position only moves forward, and never past the conversation's
//! `last_seq`.

use super::rows::{self, bigint, CURSOR_COLUMNS};
use super::{query, query_opt};
use crate::{ConversationId, Cursor, DeviceAcks, DeviceId, Result, StoreError, UserId};
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

/// Records the acks of many devices in one transaction; returns, for each
/// device in the order given, the conversations (asking for receipts) where
/// its user's delivered seq rose, with the new value, in the order of its acks.
pub(super) async fn ack(client: &mut Client, devices: &[DeviceAcks]) -> Result<Vec<Vec<(ConversationId, u64)>>> {
    // The statements are sent without waiting for each other (tokio-postgres
    // pipelines them), and run in the order sent: every cursor first, in
    // (conversation, device) order, then every delivered seq, in
    // (conversation, user) order. Every writer of these rows (other batches
    // of acks, on any node, and `leave`) locks them in that order, so none
    // waits for another in a cycle. Acks of the same row keep the order
    // given, and apply in turn.
    let entries: Vec<(usize, usize)> =
        devices.iter().enumerate().flat_map(|(d, dev)| (0..dev.acks.len()).map(move |a| (d, a))).collect();
    let ack_of = |&(d, a): &(usize, usize)| (&devices[d], devices[d].acks[a]);
    let mut by_cursor = entries.clone();
    by_cursor.sort_by_key(|e| {
        let (dev, ack) = ack_of(e);
        (ack.conversation_id, dev.device)
    });
    let mut by_member: Vec<(usize, usize)> = entries.into_iter().filter(|e| ack_of(e).1.receipts).collect();
    by_member.sort_by_key(|e| {
        let (dev, ack) = ack_of(e);
        (ack.conversation_id, dev.user)
    });
    let tx = client.transaction().await?;
    let cursor = tx.prepare_cached(ACK_CURSOR).await?;
    let delivered = tx.prepare_cached(ACK_DELIVERED).await?;
    let (t, cursor, delivered) = (&tx, &cursor, &delivered);
    futures_util::future::try_join_all(
        by_cursor.iter().map(|e| {
            let (dev, a) = ack_of(e);
            async move {
                t.execute(cursor, &[&a.conversation_id, &dev.device, &bigint(a.seq), &a.receipts, &dev.user]).await
            }
        }),
    )
    .await?;
    let rose = futures_util::future::try_join_all(by_member.iter().map(|e| {
        let (dev, a) = ack_of(e);
        let entry = *e;
        async move {
            let row = t.query_opt(delivered, &[&a.conversation_id, &dev.user, &bigint(a.seq)]).await?;
            row.map(|row| Ok::<_, StoreError>((entry, row.try_get::<_, i64>(0)? as u64))).transpose()
        }
    }))
    .await?;
    tx.commit().await?;
    let mut rose: Vec<((usize, usize), u64)> = rose.into_iter().flatten().collect();
    rose.sort_by_key(|&(entry, _)| entry);
    let mut out: Vec<Vec<(ConversationId, u64)>> = devices.iter().map(|_| Vec::new()).collect();
    for ((d, a), seq) in rose {
        out[d].push((devices[d].acks[a].conversation_id, seq));
    }
    Ok(out)
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
