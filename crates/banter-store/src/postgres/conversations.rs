//! Conversations and membership: creating conversations, joining, leaving,
//! and reading a conversation as one member sees it.
//!
//! Membership is written in two places, in the same transaction: `members`
//! (by conversation, with the member's positions) and `user_conversations`
//! (by user, the index of "conversations of a user"). Every change of a
//! conversation's membership first locks its `conversations` row, the same
//! row appends lock, so a membership check in an append batch and a join or
//! a leave never interleave.

use super::rows::{self, CONVERSATION_COLUMNS, DIRECT, GROUP};
use super::{execute, query, query_one, query_opt};
use crate::{now_ms, Conversation, ConversationId, Kind, Result, StoreError, UserId, MEMBERS_LISTED_UP_TO};
use deadpool_postgres::{Client, GenericClient, Transaction};
use std::collections::{HashMap, HashSet};

/// The conversation as `viewer` sees it, with its members if few enough.
pub(super) async fn conversation_for(
    c: &impl GenericClient,
    conversation: ConversationId,
    viewer: UserId,
) -> Result<Option<Conversation>> {
    let sql = format!(
        "SELECT {CONVERSATION_COLUMNS} FROM members m JOIN conversations c ON c.conversation_id = m.conversation_id \
         WHERE m.conversation_id = $1 AND m.user_id = $2"
    );
    let Some(row) = query_opt(c, &sql, &[&conversation, &viewer]).await? else { return Ok(None) };
    let mut list = vec![rows::conversation(&row)?];
    with_members(c, &mut list).await?;
    Ok(list.pop())
}

/// The viewer's conversations, most recent activity first.
pub(super) async fn conversations_of(c: &impl GenericClient, viewer: UserId) -> Result<Vec<Conversation>> {
    let sql = format!(
        "SELECT {CONVERSATION_COLUMNS} FROM members m JOIN conversations c ON c.conversation_id = m.conversation_id \
         WHERE m.user_id = $1 \
         AND m.conversation_id IN (SELECT conversation_id FROM user_conversations WHERE user_id = $1) \
         ORDER BY c.last_activity DESC, c.conversation_id DESC"
    );
    let mut list = query(c, &sql, &[&viewer]).await?.iter().map(rows::conversation).collect::<Result<Vec<_>>>()?;
    with_members(c, &mut list).await?;
    Ok(list)
}

/// Fills in the member lists of the conversations small enough to list, in one query.
async fn with_members(c: &impl GenericClient, list: &mut [Conversation]) -> Result<()> {
    let listed: Vec<ConversationId> =
        list.iter().filter(|conv| conv.member_count <= MEMBERS_LISTED_UP_TO).map(|conv| conv.id).collect();
    if listed.is_empty() {
        return Ok(());
    }
    let mut members: HashMap<ConversationId, Vec<UserId>> = listed.iter().map(|&id| (id, Vec::new())).collect();
    let sql = "SELECT conversation_id, user_id FROM members WHERE conversation_id = ANY($1::bigint[]) \
               ORDER BY conversation_id, user_id";
    for row in query(c, sql, &[&listed]).await? {
        let conversation: ConversationId = row.try_get(0)?;
        members.entry(conversation).or_default().push(row.try_get(1)?);
    }
    for conv in list {
        if let Some(users) = members.remove(&conv.id) {
            conv.members = Some(users);
        }
    }
    Ok(())
}

/// Members of a conversation, ascending.
pub(super) async fn members_of(c: &impl GenericClient, conversation: ConversationId) -> Result<Vec<UserId>> {
    let sql = "SELECT user_id FROM members WHERE conversation_id = $1 ORDER BY user_id";
    query(c, sql, &[&conversation]).await?.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// `NotFound` unless every user exists.
async fn users_exist(c: &impl GenericClient, users: &[UserId]) -> Result<()> {
    let distinct: HashSet<UserId> = users.iter().copied().collect();
    let sql = "SELECT count(*) FROM users WHERE user_id = ANY($1::bigint[])";
    let found: i64 = query_one(c, sql, &[&users]).await?.try_get(0)?;
    if found as usize == distinct.len() {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// A new conversation row, with no members yet.
async fn insert_conversation(tx: &Transaction<'_>, kind: i16, title: Option<&str>) -> Result<ConversationId> {
    let now = now_ms();
    let sql = "INSERT INTO conversations (kind, title, created_at, last_activity) VALUES ($1, $2, $3, $3) \
               RETURNING conversation_id";
    Ok(query_one(tx, sql, &[&kind, &title, &now]).await?.try_get(0)?)
}

/// Locks the conversation's row for a membership change, if `user` is a
/// member; returns its kind and `last_seq`.
async fn lock_for_member(
    tx: &Transaction<'_>,
    conversation: ConversationId,
    user: UserId,
) -> Result<Option<(Kind, i64)>> {
    let sql = "SELECT c.kind, c.last_seq FROM conversations c \
               JOIN members m ON m.conversation_id = c.conversation_id AND m.user_id = $2 \
               WHERE c.conversation_id = $1 FOR UPDATE OF c";
    let Some(row) = query_opt(tx, sql, &[&conversation, &user]).await? else { return Ok(None) };
    let kind = if row.try_get::<_, i16>(0)? == DIRECT { Kind::Direct } else { Kind::Group };
    Ok(Some((kind, row.try_get(1)?)))
}

/// Makes `users` members of `conversation` from `last_seq` (the caller holds
/// the conversation's lock), with one cursor per live device at that seq.
/// Returns the users newly added, in the order given.
async fn join(
    tx: &Transaction<'_>,
    conversation: ConversationId,
    last_seq: i64,
    users: &[UserId],
) -> Result<Vec<UserId>> {
    let mut seen = HashSet::new();
    let candidates: Vec<UserId> = users.iter().copied().filter(|u| seen.insert(*u)).collect();
    let sql = "INSERT INTO members (conversation_id, user_id, joined_seq, delivered_seq, read_seq) \
               SELECT $1, u, $2, $2, $2 FROM unnest($3::bigint[]) AS u ON CONFLICT DO NOTHING RETURNING user_id";
    let inserted: HashSet<UserId> = query(tx, sql, &[&conversation, &last_seq, &candidates])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let added: Vec<UserId> = candidates.into_iter().filter(|u| inserted.contains(u)).collect();
    if added.is_empty() {
        return Ok(added);
    }
    let cursors = "INSERT INTO cursors (conversation_id, device_id, acked_seq) \
                   SELECT $1, device_id, $2 FROM devices WHERE user_id = ANY($3::bigint[]) AND NOT revoked \
                   ON CONFLICT (conversation_id, device_id) DO UPDATE SET acked_seq = excluded.acked_seq";
    // A direct conversation's rows are claimed beforehand (`create_direct`), and are kept.
    let index = "INSERT INTO user_conversations (user_id, conversation_id) \
                 SELECT u, $1 FROM unnest($2::bigint[]) AS u ON CONFLICT DO NOTHING";
    let count = "UPDATE conversations SET member_count = member_count + $2 WHERE conversation_id = $1";
    execute(tx, cursors, &[&conversation, &last_seq, &added]).await?;
    execute(tx, index, &[&conversation, &added]).await?;
    execute(tx, count, &[&conversation, &(added.len() as i64)]).await?;
    Ok(added)
}

/// The direct conversation of `a` and `b`, created if missing; `true` if created.
pub(super) async fn create_direct(client: &mut Client, a: UserId, b: UserId) -> Result<(Conversation, bool)> {
    users_exist(&*client, &[b]).await?;
    let (low, high) = (a.min(b), a.max(b));
    let existing = "SELECT conversation_id FROM user_conversations WHERE user_id = $1 AND direct_peer = $2";
    if let Some(row) = query_opt(&*client, existing, &[&low, &high]).await? {
        let conv = conversation_for(&*client, row.try_get(0)?, a).await?.ok_or(StoreError::NotFound)?;
        return Ok((conv, false));
    }
    let tx = client.transaction().await?;
    let id = insert_conversation(&tx, DIRECT, None).await?;
    // Claiming the pair: the unique (user_id, direct_peer) key lets one
    // conversation per pair in. A concurrent creator (on this node or
    // another) waits here for the first to commit, then finds its row taken.
    let claim = "INSERT INTO user_conversations (user_id, conversation_id, direct_peer) \
                 VALUES ($1, $3, $2), ($2, $3, $1) ON CONFLICT DO NOTHING";
    if execute(&tx, claim, &[&low, &high, &id]).await? < 2 {
        drop(tx);
        let row = query_opt(&*client, existing, &[&low, &high])
            .await?
            .ok_or(StoreError::Unavailable("a concurrent direct conversation vanished; retry".into()))?;
        let conv = conversation_for(&*client, row.try_get(0)?, a).await?.ok_or(StoreError::NotFound)?;
        return Ok((conv, false));
    }
    join(&tx, id, 0, &[a, b]).await?;
    let conv = conversation_for(&tx, id, a).await?.ok_or(StoreError::NotFound)?;
    tx.commit().await?;
    Ok((conv, true))
}

/// Creates a group of `users` (the creator first).
pub(super) async fn create_group(
    client: &mut Client,
    creator: UserId,
    title: Option<&str>,
    users: &[UserId],
) -> Result<Conversation> {
    users_exist(&*client, users).await?;
    let tx = client.transaction().await?;
    let id = insert_conversation(&tx, GROUP, title).await?;
    join(&tx, id, 0, users).await?;
    let conv = conversation_for(&tx, id, creator).await?.ok_or(StoreError::NotFound)?;
    tx.commit().await?;
    Ok(conv)
}

/// Adds users to a group `by` one of its members; returns those newly added.
pub(super) async fn add_members(
    client: &mut Client,
    conversation: ConversationId,
    by: UserId,
    users: &[UserId],
) -> Result<Vec<UserId>> {
    let tx = client.transaction().await?;
    let (kind, last_seq) = lock_for_member(&tx, conversation, by).await?.ok_or(StoreError::NotFound)?;
    if kind == Kind::Direct {
        return Err(StoreError::Conflict("members cannot be added to a direct conversation"));
    }
    users_exist(&tx, users).await?;
    let added = join(&tx, conversation, last_seq, users).await?;
    tx.commit().await?;
    Ok(added)
}

/// Removes `user` from a group, with the cursors of its devices there.
pub(super) async fn leave(client: &mut Client, conversation: ConversationId, user: UserId) -> Result<()> {
    let tx = client.transaction().await?;
    let (kind, _) = lock_for_member(&tx, conversation, user).await?.ok_or(StoreError::NotFound)?;
    if kind == Kind::Direct {
        return Err(StoreError::Conflict("a direct conversation cannot be left"));
    }
    // Cursors before the membership row: the order in which acks lock them.
    let cursors = "DELETE FROM cursors WHERE conversation_id = $1 \
                   AND device_id IN (SELECT device_id FROM devices WHERE user_id = $2)";
    execute(&tx, cursors, &[&conversation, &user]).await?;
    execute(&tx, "DELETE FROM members WHERE conversation_id = $1 AND user_id = $2", &[&conversation, &user]).await?;
    let index = "DELETE FROM user_conversations WHERE user_id = $2 AND conversation_id = $1";
    let count = "UPDATE conversations SET member_count = member_count - 1 WHERE conversation_id = $1";
    execute(&tx, index, &[&conversation, &user]).await?;
    execute(&tx, count, &[&conversation]).await?;
    tx.commit().await?;
    Ok(())
}
