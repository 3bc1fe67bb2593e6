//! Reading rows into domain types. Seqs and counts are `bigint` columns that
//! are never negative; the domain types hold them as `u64`.

use crate::{Conversation, Cursor, Kind, Result, StoredMessage};
use tokio_postgres::Row;

/// Columns read by [`message`].
pub(super) const MESSAGE_COLUMNS: &str =
    "conversation_id, seq, message_id, sender_id, sender_device, client_msg_id, ts, content";

pub(super) fn message(r: &Row) -> Result<StoredMessage> {
    Ok(StoredMessage {
        conversation_id: r.try_get(0)?,
        seq: r.try_get::<_, i64>(1)? as u64,
        message_id: r.try_get(2)?,
        sender_id: r.try_get(3)?,
        sender_device: r.try_get(4)?,
        client_msg_id: r.try_get(5)?,
        ts: r.try_get(6)?,
        content: r.try_get(7)?,
    })
}

/// Columns read by [`conversation`], for `conversations c JOIN members m`
/// (the viewer's membership row).
pub(super) const CONVERSATION_COLUMNS: &str =
    "c.conversation_id, c.kind, c.title, c.created_at, c.last_seq, c.last_activity, c.member_count, m.read_seq";

/// How `conversations.kind` stores [`Kind`].
pub(super) const DIRECT: i16 = 0;
pub(super) const GROUP: i16 = 1;

/// A conversation without its member list.
pub(super) fn conversation(r: &Row) -> Result<Conversation> {
    Ok(Conversation {
        id: r.try_get(0)?,
        kind: if r.try_get::<_, i16>(1)? == DIRECT { Kind::Direct } else { Kind::Group },
        title: r.try_get(2)?,
        created_at: r.try_get(3)?,
        last_seq: r.try_get::<_, i64>(4)? as u64,
        last_activity: r.try_get(5)?,
        member_count: r.try_get::<_, i64>(6)? as u64,
        members: None,
        read_seq: r.try_get::<_, i64>(7)? as u64,
    })
}

/// Columns read by [`cursor`], for `members m JOIN conversations c LEFT JOIN cursors k`.
pub(super) const CURSOR_COLUMNS: &str =
    "m.conversation_id, COALESCE(k.acked_seq, m.joined_seq), c.last_seq, c.member_count";

pub(super) fn cursor(r: &Row) -> Result<Cursor> {
    Ok(Cursor {
        conversation_id: r.try_get(0)?,
        acked_seq: r.try_get::<_, i64>(1)? as u64,
        last_seq: r.try_get::<_, i64>(2)? as u64,
        member_count: r.try_get::<_, i64>(3)? as u64,
    })
}

/// A seq or a limit from the domain, as a `bigint` parameter.
pub(super) fn bigint(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
