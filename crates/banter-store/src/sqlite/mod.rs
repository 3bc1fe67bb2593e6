//! The embedded default store: SQLite in WAL mode, one writer thread with
//! group commit (`writer.rs`), a pool of read connections (`pool.rs`), and
//! point reads (a token's device, a connecting device's cursors, a user's
//! direct peers, one cursor) made on the caller's thread (`point.rs`).

mod point;
mod pool;
mod schema;
mod tails;
mod writer;

use crate::*;
use async_trait::async_trait;
use pool::ReadPool;
use rusqlite::{named_params, params, Connection, OptionalExtension, Row};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tails::{ForReader, Lookup, Tails};
use writer::Writer;

/// Kept here too for code written before the constant moved to the crate root.
pub use crate::MEMBERS_LISTED_UP_TO;

/// How hard SQLite syncs a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync on every commit: nothing committed is lost even on power loss. The default.
    Full,
    /// WAL without fsync per commit: survives a process crash (SIGKILL), but
    /// the last commits may be lost on power loss or a kernel crash.
    Normal,
}

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<ReadPool>,
    tails: Arc<Tails>,
    /// Keeps the checkpointer thread running while any clone of the store lives.
    _alive: Arc<()>,
}

/// Bytes of recent messages kept for reads unless told otherwise: the
/// newest page of about 20,000 conversations.
pub const DEFAULT_HISTORY_CACHE_BYTES: usize = 256 << 20;

/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// WAL size (pages) at which the writer checkpoints by itself: the bound on
/// the WAL. SQLite starts the WAL over from its beginning only when a write
/// transaction begins with every frame already copied back, and under steady
/// writes the checkpointer's passes mostly end with newer commits behind
/// them; so a busy store's WAL can grow to this bound (about 270 MB of
/// frames) before it starts over, and its file keeps the largest size it
/// reached (docs/deployment.md).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 65_536;

/// Runs passive checkpoints on a connection of its own, so that copying the
/// WAL back into the database (and its fsync) never stalls a commit.
fn start_checkpointer(path: PathBuf, alive: std::sync::Weak<()>) {
    let spawned = std::thread::Builder::new().name("banter-sqlite-checkpoint".into()).spawn(move || {
        let Ok(conn) = Connection::open(&path) else { return };
        while alive.upgrade().is_some() {
            std::thread::sleep(CHECKPOINT_EVERY);
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "checkpoint failed");
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no checkpointer thread; the writer checkpoints by itself");
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `banter.db` in `dir` and migrates it.
    pub fn open(dir: &Path, sync: Synchronous) -> Result<SqliteStore> {
        SqliteStore::open_with(dir, sync, DEFAULT_HISTORY_CACHE_BYTES)
    }

    /// Opens the store with at most `history_cache_bytes` of recent messages
    /// kept in memory for reads ([`tails`]; 0 keeps none).
    pub fn open_with(dir: &Path, sync: Synchronous, history_cache_bytes: usize) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Unavailable(format!("data dir {}: {e}", dir.display())))?;
        let path = dir.join("banter.db");
        let mut conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match sync {
                Synchronous::Full => "FULL",
                Synchronous::Normal => "NORMAL",
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        keep_plans(&conn)?;
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn)?;
        let tails = Arc::new(Tails::new(history_cache_bytes));
        let (writer, _thread) = Writer::start(conn, Arc::clone(&tails));
        let alive = Arc::new(());
        start_checkpointer(path.clone(), Arc::downgrade(&alive));
        Ok(SqliteStore { writer, readers: Arc::new(ReadPool::new(path)?), tails, _alive: alive })
    }
}

/// Turns on the query planner stability guarantee. Without it, binding a new
/// value to a parameter the planner looked at (such as `LIMIT ?`) makes
/// SQLite compile the statement again on its next step, so a cached
/// statement would be parsed and planned anew on almost every use.
fn keep_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

fn kind_of(code: i64) -> Kind {
    if code == 0 {
        Kind::Direct
    } else {
        Kind::Group
    }
}

/// The last seq of conversation `c`, from the messages index.
const LAST_SEQ_OF_C: &str = "(SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = c.conversation_id)";

const CONVERSATION_COLUMNS: &str = "c.conversation_id, c.kind, c.title, c.created_at, \
     (SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = c.conversation_id), \
     COALESCE((SELECT ts FROM messages WHERE conversation_id = c.conversation_id ORDER BY seq DESC LIMIT 1), c.created_at), \
     c.member_count, m.read_seq";

/// The last stored seq of a conversation, from the messages index.
fn stored_last_seq(conn: &Connection, conversation: ConversationId) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = ?1")?
        .query_row([conversation], |r| r.get(0))?)
}

fn conversation_row(r: &Row<'_>) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: r.get(0)?,
        kind: kind_of(r.get(1)?),
        title: r.get(2)?,
        created_at: r.get(3)?,
        last_seq: r.get::<_, i64>(4)? as u64,
        last_activity: r.get(5)?,
        member_count: r.get::<_, i64>(6)? as u64,
        members: None,
        read_seq: r.get::<_, i64>(7)? as u64,
    })
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        conversation_id: r.get(0)?,
        seq: r.get::<_, i64>(1)? as u64,
        message_id: r.get(2)?,
        sender_id: r.get(3)?,
        sender_device: r.get(4)?,
        client_msg_id: r.get(5)?,
        ts: r.get(6)?,
        content: r.get(7)?,
    })
}

/// Whether a user is a member of a conversation (`?1`, `?2`): for reads, and
/// for the writer behind its memory of memberships ([`writer::is_member`]).
const IS_MEMBER: &str = "SELECT 1 FROM members WHERE conversation_id = ?1 AND user_id = ?2";

const MESSAGE_COLUMNS: &str = "conversation_id, seq, message_id, sender_id, sender_device, client_msg_id, ts, content";

/// Fills in the member list of a conversation small enough to list.
fn with_members(conn: &Connection, mut c: Conversation) -> Result<Conversation> {
    if c.member_count <= MEMBERS_LISTED_UP_TO {
        c.members = Some(members_of(conn, c.id)?);
    }
    Ok(c)
}

fn members_of(conn: &Connection, conversation: ConversationId) -> Result<Vec<UserId>> {
    let mut stmt = conn.prepare_cached("SELECT user_id FROM members WHERE conversation_id = ?1 ORDER BY user_id")?;
    let rows = stmt.query_map([conversation], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn conversation_for(conn: &Connection, conversation: ConversationId, viewer: UserId) -> Result<Option<Conversation>> {
    let sql = format!(
        "SELECT {CONVERSATION_COLUMNS} FROM members m JOIN conversations c ON c.conversation_id = m.conversation_id \
         WHERE m.conversation_id = ?1 AND m.user_id = ?2"
    );
    let c = conn.prepare_cached(&sql)?.query_row(params![conversation, viewer], conversation_row).optional()?;
    c.map(|c| with_members(conn, c)).transpose()
}

/// Makes `users` members of `conversation` from its current `last_seq`, with
/// one cursor per live device at that seq. Returns the users newly added.
fn join(conn: &Connection, conversation: ConversationId, users: &[UserId]) -> Result<Vec<UserId>> {
    let last_seq = writer::last_seq(conn, conversation)?;
    let mut added = Vec::new();
    {
        let mut add = conn.prepare_cached(
            "INSERT OR IGNORE INTO members (conversation_id, user_id, joined_seq, delivered_seq, read_seq) \
             VALUES (?1, ?2, ?3, ?3, ?3)",
        )?;
        let mut cursors = conn.prepare_cached(
            "INSERT OR REPLACE INTO cursors (conversation_id, device_id, acked_seq) \
             SELECT ?1, device_id, ?3 FROM devices WHERE user_id = ?2 AND revoked = 0",
        )?;
        for &user in users {
            if add.execute(params![conversation, user, last_seq])? == 1 {
                cursors.execute(params![conversation, user, last_seq])?;
                added.push(user);
            }
        }
    }
    conn.execute(
        "UPDATE conversations SET member_count = member_count + ?2 WHERE conversation_id = ?1",
        params![conversation, added.len() as i64],
    )?;
    Ok(added)
}

fn users_exist(conn: &Connection, users: &[UserId]) -> Result<()> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM users WHERE user_id = ?1")?;
    for &u in users {
        if !stmt.exists([u])? {
            return Err(StoreError::NotFound);
        }
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn healthy(&self) -> bool {
        self.readers.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)).await.is_ok()
    }

    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User> {
        let (name, hash) = (username.to_owned(), password_hash.to_owned());
        self.writer
            .write(move |c| {
                if c.prepare_cached("SELECT 1 FROM users WHERE username = ?1")?.exists([&name])? {
                    return Err(StoreError::UsernameTaken);
                }
                c.prepare_cached("INSERT INTO users (username, password_hash, created_at) VALUES (?1, ?2, ?3)")?
                    .execute(params![name, hash, now_ms()])?;
                Ok(User { id: c.last_insert_rowid(), username: name })
            })
            .await
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>> {
        let name = username.to_owned();
        self.readers
            .read(move |c| {
                Ok(c.prepare_cached("SELECT user_id, username, password_hash FROM users WHERE username = ?1")?
                    .query_row([&name], |r| Ok((User { id: r.get(0)?, username: r.get(1)? }, r.get(2)?)))
                    .optional()?)
            })
            .await
    }

    async fn user(&self, user_id: UserId) -> Result<Option<User>> {
        self.readers
            .read(move |c| {
                Ok(c.prepare_cached("SELECT user_id, username FROM users WHERE user_id = ?1")?
                    .query_row([user_id], |r| Ok(User { id: r.get(0)?, username: r.get(1)? }))
                    .optional()?)
            })
            .await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        Ok(self.user_credentials(username).await?.map(|(u, _)| u))
    }

    async fn create_device(&self, user_id: UserId, name: &str, token_hash: [u8; 32]) -> Result<DeviceId> {
        let name = name.to_owned();
        self.writer
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO devices (user_id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![user_id, name, &token_hash[..], now_ms()])?;
                let device = c.last_insert_rowid();
                c.prepare_cached(&format!(
                    "INSERT INTO cursors (conversation_id, device_id, acked_seq) \
                     SELECT m.conversation_id, ?2, {LAST_SEQ_OF_C} FROM members m \
                     JOIN conversations c ON c.conversation_id = m.conversation_id WHERE m.user_id = ?1"
                ))?
                .execute(params![user_id, device])?;
                Ok(device)
            })
            .await
    }

    async fn device_by_token(&self, token_hash: [u8; 32]) -> Result<Option<Device>> {
        self.readers
            .read_here(move |c| {
                Ok(c.prepare_cached("SELECT device_id, user_id FROM devices WHERE token_hash = ?1 AND revoked = 0")?
                    .query_row([&token_hash[..]], |r| Ok(Device { id: r.get(0)?, user_id: r.get(1)? }))
                    .optional()?)
            })
            .await
    }

    async fn revoke_device(&self, device_id: DeviceId) -> Result<()> {
        self.writer
            .write(move |c| {
                c.execute("UPDATE devices SET revoked = 1 WHERE device_id = ?1", [device_id])?;
                Ok(())
            })
            .await
    }

    async fn create_direct(&self, a: UserId, b: UserId) -> Result<(Conversation, bool)> {
        if a == b {
            return Err(StoreError::Conflict("a direct conversation needs another user"));
        }
        let key = format!("{}:{}", a.min(b), a.max(b));
        self.writer
            .write(move |c| {
                users_exist(c, &[b])?;
                let existing: Option<i64> = c
                    .prepare_cached("SELECT conversation_id FROM conversations WHERE direct_key = ?1")?
                    .query_row([&key], |r| r.get(0))
                    .optional()?;
                let (id, created) = match existing {
                    Some(id) => (id, false),
                    None => {
                        let now = now_ms();
                        c.prepare_cached(
                            "INSERT INTO conversations (kind, direct_key, created_at) VALUES (0, ?1, ?2)",
                        )?
                        .execute(params![key, now])?;
                        let id = c.last_insert_rowid();
                        join(c, id, &[a, b])?;
                        (id, true)
                    }
                };
                let conv = conversation_for(c, id, a)?.ok_or(StoreError::NotFound)?;
                Ok((conv, created))
            })
            .await
    }

    async fn create_group(&self, creator: UserId, title: Option<&str>, members: &[UserId]) -> Result<Conversation> {
        let title = title.map(str::to_owned);
        let mut users = Vec::with_capacity(members.len() + 1);
        users.push(creator);
        users.extend(members.iter().copied().filter(|&u| u != creator));
        self.writer
            .write(move |c| {
                users_exist(c, &users)?;
                let now = now_ms();
                c.prepare_cached("INSERT INTO conversations (kind, title, created_at) VALUES (1, ?1, ?2)")?
                    .execute(params![title, now])?;
                let id = c.last_insert_rowid();
                join(c, id, &users)?;
                conversation_for(c, id, creator)?.ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn add_members(&self, conversation: ConversationId, by: UserId, users: &[UserId]) -> Result<Vec<UserId>> {
        let users = users.to_vec();
        self.writer
            .write(move |c| {
                let conv = conversation_for(c, conversation, by)?.ok_or(StoreError::NotFound)?;
                if conv.kind == Kind::Direct {
                    return Err(StoreError::Conflict("members cannot be added to a direct conversation"));
                }
                users_exist(c, &users)?;
                join(c, conversation, &users)
            })
            .await
    }

    async fn leave(&self, conversation: ConversationId, user: UserId) -> Result<()> {
        self.writer
            .write(move |c| {
                let conv = conversation_for(c, conversation, user)?.ok_or(StoreError::NotFound)?;
                if conv.kind == Kind::Direct {
                    return Err(StoreError::Conflict("a direct conversation cannot be left"));
                }
                c.execute("DELETE FROM members WHERE conversation_id = ?1 AND user_id = ?2", params![conversation, user])?;
                writer::forget_member(conversation, user);
                writer::record_left(conversation);
                c.execute(
                    "DELETE FROM cursors WHERE conversation_id = ?1 AND device_id IN (SELECT device_id FROM devices WHERE user_id = ?2)",
                    params![conversation, user],
                )?;
                c.execute("UPDATE conversations SET member_count = member_count - 1 WHERE conversation_id = ?1", [conversation])?;
                Ok(())
            })
            .await
    }

    async fn conversation(&self, conversation: ConversationId, viewer: UserId) -> Result<Option<Conversation>> {
        self.readers.read(move |c| conversation_for(c, conversation, viewer)).await
    }

    async fn conversations(&self, viewer: UserId) -> Result<Vec<Conversation>> {
        self.readers
            .read(move |c| {
                let sql = format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM members m JOIN conversations c ON c.conversation_id = m.conversation_id \
                     WHERE m.user_id = ?1 ORDER BY 6 DESC, 1 DESC"
                );
                let list = c.prepare_cached(&sql)?.query_map([viewer], conversation_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
                list.into_iter().map(|conv| with_members(c, conv)).collect()
            })
            .await
    }

    async fn members(&self, conversation: ConversationId) -> Result<Vec<UserId>> {
        self.readers.read(move |c| members_of(c, conversation)).await
    }

    async fn direct_peers(&self, user: UserId) -> Result<Vec<UserId>> {
        self.readers
            .read_here(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT o.user_id FROM members m JOIN conversations c ON c.conversation_id = m.conversation_id AND c.kind = 0 \
                     JOIN members o ON o.conversation_id = m.conversation_id AND o.user_id != m.user_id WHERE m.user_id = ?1",
                )?;
                let rows = stmt.query_map([user], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn append(&self, m: NewMessage) -> Result<Appended> {
        self.writer
            .write_unguarded(move |c| {
                // The one write is the INSERT, and the seq is recorded only
                // once it succeeded. A retried `client_msg_id` inserts
                // nothing (the unique index finds it, so no separate lookup
                // runs for new messages) and gets the original back.
                if !writer::is_member(c, m.conversation_id, m.sender_id)? {
                    return Err(StoreError::NotFound);
                }
                let seq = writer::last_seq(c, m.conversation_id)? + 1;
                let inserted = c
                    .prepare_cached(
                        "INSERT INTO messages (conversation_id, seq, message_id, sender_id, sender_device, client_msg_id, ts, content) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                         ON CONFLICT (conversation_id, sender_id, client_msg_id) DO NOTHING",
                    )?
                    .execute(params![
                        m.conversation_id,
                        seq,
                        m.message_id,
                        m.sender_id,
                        m.sender_device,
                        m.client_msg_id,
                        m.ts,
                        m.content
                    ])?;
                if inserted == 0 {
                    let sql = format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND sender_id = ?2 AND client_msg_id = ?3"
                    );
                    let original = c
                        .prepare_cached(&sql)?
                        .query_row(params![m.conversation_id, m.sender_id, m.client_msg_id], message_row)?;
                    return Ok(Appended { message: Arc::new(original), duplicate: true });
                }
                writer::set_last_seq(m.conversation_id, seq);
                let stored = StoredMessage {
                    conversation_id: m.conversation_id,
                    seq: seq as u64,
                    message_id: m.message_id,
                    sender_id: m.sender_id,
                    sender_device: m.sender_device,
                    client_msg_id: m.client_msg_id,
                    ts: m.ts,
                    content: m.content,
                };
                let message = Arc::new(stored);
                writer::record_appended(&message);
                Ok(Appended { message, duplicate: false })
            })
            .await
    }

    async fn messages(
        &self,
        conversation: ConversationId,
        range: SeqRange,
        limit: usize,
    ) -> Result<Vec<Arc<StoredMessage>>> {
        match self.tails.lookup(conversation, range, limit) {
            Lookup::Hit(page) => {
                cooperate().await;
                Ok(page)
            }
            miss => self.readers.read(move |c| read_page(c, miss, conversation, range, limit)).await,
        }
    }

    async fn history(
        &self,
        conversation: ConversationId,
        reader: UserId,
        range: SeqRange,
        limit: usize,
    ) -> Result<Option<Vec<Arc<StoredMessage>>>> {
        let (lookup, mark) = match self.tails.lookup_for(conversation, reader, range, limit) {
            ForReader::Known(page) => {
                cooperate().await;
                return Ok(Some(page));
            }
            ForReader::Check(lookup, mark) => (lookup, mark),
        };
        let tails = Arc::clone(&self.tails);
        self.readers
            .read(move |c| {
                if !c.prepare_cached(IS_MEMBER)?.exists(params![conversation, reader])? {
                    return Ok(None);
                }
                let page = read_page(c, lookup, conversation, range, limit)?;
                if let Some(mark) = mark {
                    tails.known(mark, reader);
                }
                Ok(Some(page))
            })
            .await
    }

    async fn cursors(&self, user: UserId, device: DeviceId) -> Result<Vec<Cursor>> {
        self.readers.read(move |c| cursors_of(c, user, device)).await
    }

    async fn cursors_on_connect(&self, user: UserId, device: DeviceId) -> Result<Vec<Cursor>> {
        self.readers.read_here(move |c| cursors_of(c, user, device)).await
    }

    async fn cursor(&self, conversation: ConversationId, user: UserId, device: DeviceId) -> Result<Option<Cursor>> {
        self.readers
            .read_here(move |c| {
                Ok(c.prepare_cached(&cursor_sql("m.conversation_id = :conversation AND m.user_id = :user"))?
                    .query_row(
                        named_params! { ":conversation": conversation, ":user": user, ":device": device },
                        cursor_row,
                    )
                    .optional()?)
            })
            .await
    }

    async fn ack(&self, user: UserId, device: DeviceId, acks: Vec<Ack>) -> Result<Vec<(ConversationId, u64)>> {
        self.writer.write_bulk(move |c| ack_device(c, user, device, acks)).await
    }

    async fn ack_many(&self, devices: Vec<DeviceAcks>) -> Vec<Result<Vec<(ConversationId, u64)>>> {
        let n = devices.len();
        // One job: one boxed closure and one answer for every device in it.
        // Each device in a savepoint of its own, so that one failing keeps
        // neither the others' writes nor a half of its own.
        let stored = self.writer.write_bulk(move |c| {
            let each =
                devices.into_iter().map(|d| writer::in_savepoint(c, |c| ack_device(c, d.user, d.device, d.acks)));
            Ok(each.collect::<Vec<_>>())
        });
        match stored.await {
            Ok(each) => each,
            // The commit failed: nothing of the job was stored.
            Err(e) => vec![Err(e); n],
        }
    }

    async fn read(&self, conversation: ConversationId, user: UserId, seq: u64) -> Result<Option<u64>> {
        self.writer
            .write(move |c| {
                let seq = capped_seq(c, conversation, user, seq)?.ok_or(StoreError::NotFound)?;
                let rose = c
                    .prepare_cached("UPDATE members SET read_seq = ?3 WHERE conversation_id = ?1 AND user_id = ?2 AND read_seq < ?3")?
                    .execute(params![conversation, user, seq])?;
                Ok((rose == 1).then_some(seq as u64))
            })
            .await
    }
}

/// Stores one device's acks inside the writer's transaction. Both writes
/// only move positions forward: harmless to keep if a later step fails.
fn ack_device(c: &Connection, user: UserId, device: DeviceId, acks: Vec<Ack>) -> Result<Vec<(ConversationId, u64)>> {
    let mut rose = Vec::new();
    for ack in acks {
        let conversation = ack.conversation_id;
        let seq = if ack.receipts {
            let Some(seq) = capped_seq(c, conversation, user, ack.seq)? else { continue };
            seq
        } else {
            (ack.seq.min(i64::MAX as u64) as i64).min(writer::last_seq(c, conversation)?)
        };
        c.prepare_cached(
            "INSERT INTO cursors (conversation_id, device_id, acked_seq) VALUES (?1, ?2, ?3) \
             ON CONFLICT (conversation_id, device_id) DO UPDATE SET acked_seq = MAX(acked_seq, excluded.acked_seq)",
        )?
        .execute(params![conversation, device, seq])?;
        if !ack.receipts {
            continue;
        }
        let changed = c
            .prepare_cached(
                "UPDATE members SET delivered_seq = ?3 WHERE conversation_id = ?1 AND user_id = ?2 AND delivered_seq < ?3",
            )?
            .execute(params![conversation, user, seq])?;
        if changed == 1 {
            rose.push((conversation, seq as u64));
        }
    }
    Ok(rose)
}

/// `seq` capped at the conversation's `last_seq`, or `None` if `user` is not a member.
fn capped_seq(c: &Connection, conversation: ConversationId, user: UserId, seq: u64) -> Result<Option<i64>> {
    if !writer::is_member(c, conversation, user)? {
        return Ok(None);
    }
    let last = writer::last_seq(c, conversation)?;
    Ok(Some((seq.min(i64::MAX as u64) as i64).min(last)))
}

/// A read answered from memory finishes without waiting for anything, so a
/// task that reads in a loop would never give its thread to other tasks:
/// this counts the read against the task's budget, and yields when the
/// budget is spent, as a read of a socket would.
async fn cooperate() {
    tokio::task::consume_budget().await;
}

/// The page a [`Tails`] lookup found, or else read from the table (and kept
/// as the conversation's tail if the lookup gave a ticket for it).
fn read_page(
    c: &Connection,
    lookup: Lookup,
    conversation: ConversationId,
    range: SeqRange,
    limit: usize,
) -> Result<Vec<Arc<StoredMessage>>> {
    match lookup {
        Lookup::Hit(page) => Ok(page),
        Lookup::Miss(fill) => {
            let rows = page(c, conversation, range, limit)?;
            if let Some(fill) = fill {
                fill.keep(&rows, limit);
            }
            Ok(rows)
        }
    }
}

/// Messages of a conversation in a seq range, ascending.
fn page(
    c: &Connection,
    conversation: ConversationId,
    range: SeqRange,
    limit: usize,
) -> Result<Vec<Arc<StoredMessage>>> {
    let (sql, bound, newest_first) = match range {
        SeqRange::After(s) => (
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"),
            s,
            false,
        ),
        SeqRange::Before(s) => (
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"),
            s,
            true,
        ),
    };
    let bound = bound.min(i64::MAX as u64) as i64;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut out = c
        .prepare_cached(&sql)?
        .query_map(params![conversation, bound, limit], |r| message_row(r).map(Arc::new))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if newest_first {
        out.reverse();
    }
    Ok(out)
}

/// The cursor of `device` in each conversation of `user`.
fn cursors_of(c: &Connection, user: UserId, device: DeviceId) -> Result<Vec<Cursor>> {
    let mut stmt = c.prepare_cached(&cursor_sql("m.user_id = :user"))?;
    let rows = stmt.query_map(named_params! { ":user": user, ":device": device }, cursor_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The cursors of `:device` in the memberships that `filter` picks, read by [`cursor_row`].
fn cursor_sql(filter: &str) -> String {
    format!(
        "SELECT m.conversation_id, COALESCE(k.acked_seq, m.joined_seq), {LAST_SEQ_OF_C}, c.member_count FROM members m \
         JOIN conversations c ON c.conversation_id = m.conversation_id \
         LEFT JOIN cursors k ON k.conversation_id = m.conversation_id AND k.device_id = :device \
         WHERE {filter}"
    )
}

fn cursor_row(r: &Row<'_>) -> rusqlite::Result<Cursor> {
    Ok(Cursor {
        conversation_id: r.get(0)?,
        acked_seq: r.get::<_, i64>(1)? as u64,
        last_seq: r.get::<_, i64>(2)? as u64,
        member_count: r.get::<_, i64>(3)? as u64,
    })
}
