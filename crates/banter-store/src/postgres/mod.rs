//! The shared store of a cluster: PostgreSQL, which several nodes share,
//! each through its own pool of connections. It behaves exactly like
//! [`crate::sqlite::SqliteStore`]; the conformance suite
//! (`tests/conformance`) holds both to the same contract.
//!
//! The parts: `pool.rs` opens connections and bounds every wait; `schema.rs`
//! holds the versioned migrations; `batcher.rs` gathers the sends of this
//! node into batches, `append.rs` stores a batch in one transaction, and
//! `seq.rs` decides, as pure logic, which seq each message of a batch takes;
//! `ack_lane.rs` gathers the acks of all devices of this node into batches;
//! `conversations.rs` handles conversations and membership, `cursors.rs`
//! cursors, acks and reads; `rows.rs` reads rows into domain types;
//! `error.rs` classifies PostgreSQL errors into [`StoreError`] kinds.
//!
//! # Layout
//!
//! Every table's primary key leads with its partition key: `conversation_id`
//! for what belongs to a conversation, `user_id` for what belongs to a user.
//! Lookups by another key go through a small table keyed by that key, never
//! through a unique index led by something else, because a distributed table
//! can only enforce uniqueness that includes its distribution column. The
//! migrations are in `schema.rs`.
//!
//! | table | primary key | distributed by |
//! |---|---|---|
//! | `conversations` (the seq counter `last_seq`, `last_activity`, `member_count`) | `conversation_id` | `conversation_id` |
//! | `members` (joined, delivered and read seqs) | `(conversation_id, user_id)` | `conversation_id` |
//! | `messages`, hash-partitioned in 16 | `(conversation_id, seq)`, unique `(conversation_id, sender_id, client_msg_id)` | `conversation_id` |
//! | `cursors` | `(conversation_id, device_id)` | `conversation_id` |
//! | `users` | `user_id` | `user_id` |
//! | `devices` | `(user_id, device_id)` | `user_id` |
//! | `user_conversations` (the conversations of a user, and the peer of a direct one) | `(user_id, conversation_id)`, unique `(user_id, direct_peer)` | `user_id` |
//! | `usernames` (name → user) | `username` | `username` |
//! | `device_tokens` (live token hash → device) | `token_hash` | `token_hash` |
//!
//! `messages` is `PARTITION BY HASH (conversation_id)` on a single server too,
//! so no one partition's indexes grow with the whole history. The schema is
//! ready to be distributed (for example by Citus, with `create_distributed_table`
//! on the column above, the tables of a conversation colocated with each
//! other and those of a user with each other) without change. No table needs
//! to be a reference table: each grows with the users or the conversations.
//! `schema_migrations` stays a local table of the coordinator. Ids come from
//! identity columns (PostgreSQL sequences), so they are unique across nodes.
//! Queries that cross partition keys (the conversations of a user) read the
//! user's `user_conversations` rows first, in a subquery a distributed planner
//! runs on its own, then the conversations by their key.
//!
//! # Seq assignment
//!
//! A conversation's row in `conversations` is its seq counter. A batch of
//! messages is one transaction (`append.rs`): it locks the counter rows of its
//! conversations in ascending `conversation_id` order (so batches of different
//! nodes never deadlock), checks that each sender is a member and whether its
//! (conversation, sender, `client_msg_id`) is stored already, inserts the new
//! messages with consecutive seqs, and moves each counter and `last_activity`.
//! Whichever node commits first takes the next seqs; the other waits for the
//! lock and continues from there, so the order of a conversation is total and
//! has no gaps however many nodes write. A refused message (the sender is not
//! a member) takes no seq and does not fail the rest of its batch. Callers are
//! answered after the commit, never before. Membership changes lock the same
//! counter row, so they and the membership checks of appends never interleave.
//!
//! # Batching
//!
//! `append` goes through bounded per-node queues, one per lane; a conversation
//! always uses the same lane, and a lane has one batch in flight, which keeps
//! each conversation in the order the node received its messages. A lane's
//! task takes whatever is waiting, up to [`PgOptions::max_batch`], and stores
//! it in one transaction of three round trips whatever the batch's size (see
//! `append.rs`). Lanes run side by side on connections of their own
//! ([`PgOptions::append_lanes`]), so reads never hold up a batch. Acks are
//! batched the same way, across devices, by one ack lane with its own
//! connection: one transaction per batch instead of one per device and
//! flush. There is no unbounded queue: a full lane makes its caller wait,
//! within the caller's deadline.
//!
//! # When PostgreSQL is unreachable
//!
//! Every operation has a deadline ([`PgOptions::operation_timeout`], 3 s by
//! default) that covers waiting for a connection, opening one
//! ([`PgOptions::connect_timeout`]) and the statements themselves, which the
//! server also bounds ([`PgOptions::statement_timeout`]). When it passes, or
//! when the connection fails, the operation answers
//! [`StoreError::Unavailable`]: nothing hangs. `healthy()` runs `SELECT 1`
//! within [`HEALTH_TIMEOUT`]. Broken connections are dropped by the pool and
//! replaced by new ones on demand, so the node recovers by itself once
//! PostgreSQL is back. A send that times out while its commit was already on
//! its way may be stored though its caller was told otherwise; the client's
//! retry with the same `client_msg_id` then returns the stored message.
//!
//! # Differences from SQLite
//!
//! None in what [`Store`] answers; the conformance suite runs unchanged on
//! both. What differs is timing, since writes here are not all serialized
//! through one thread:
//! - A new device starts its cursors at each conversation's `last_seq` as
//!   committed when it is created (a join, by contrast, locks the counter);
//!   a message committed by another node at that very moment is or is not in
//!   its backlog, as if the device had been created a moment later or earlier.
//! - Messages of one conversation are ordered as this node received them,
//!   and, between nodes, as their batches committed.
//! - Operations can time out (`Unavailable`), which SQLite's never do.

mod ack_lane;
mod append;
mod batcher;
mod conversations;
mod cursors;
mod error;
mod pool;
mod rows;
mod schema;
mod seq;

use crate::*;
use async_trait::async_trait;
use batcher::{Batcher, LaneSizes};
use deadpool_postgres::{GenericClient, Pool};
use error::is_unique_violation;
use rows::{bigint, MESSAGE_COLUMNS};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// How long `healthy()` waits for `SELECT 1`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Sizes and timeouts of a [`PgStore`]; [`PgOptions::default`] suits most deployments.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections for reads and writes other than appends and acks; the
    /// append lanes and the ack lane have their own (`append_lanes` + 1).
    pub pool_size: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// How long any one operation may take, waiting for a connection
    /// included; after it, the operation answers `Unavailable`.
    pub operation_timeout: Duration,
    /// How long the server lets one statement run before cancelling it.
    pub statement_timeout: Duration,
    /// Most messages stored in one transaction.
    pub max_batch: usize,
    /// Append lanes, each with one batch in flight on its own connection.
    pub append_lanes: usize,
    /// Messages that may wait in one lane's queue before `append` waits.
    pub lane_queue: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(2),
            max_batch: 512,
            append_lanes: 4,
            lane_queue: 4096,
        }
    }
}

/// The PostgreSQL store. Clones share the pool and the append lanes.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: Pool,
    batcher: Batcher,
    acks: ack_lane::AckLane,
    operation_timeout: Duration,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`,
    /// or `host=… user=… dbname=…`) with [`PgOptions::default`], and
    /// migrates it. `Unavailable` if PostgreSQL cannot be reached.
    pub async fn connect(url: &str) -> Result<PgStore> {
        PgStore::connect_with(url, PgOptions::default()).await
    }

    /// Connects to the database at `url` and migrates it (waiting for other
    /// nodes migrating it at the same moment). Must run inside a tokio
    /// runtime, which runs the append lanes.
    pub async fn connect_with(url: &str, options: PgOptions) -> Result<PgStore> {
        let config = pool::config(url, &options)?;
        let (mut client, connection) = config.connect(NoTls).await.map_err(error::from_connect)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the PostgreSQL migration connection failed");
            }
        });
        schema::migrate(&mut client).await?;
        drop(client);
        // The append lanes and the ack lane have connections of their own, so
        // reads and other writes never hold up a batch, nor a batch them.
        let lanes = options.append_lanes.max(1);
        let pool = pool::build(config.clone(), &options, options.pool_size)?;
        let sizes = LaneSizes {
            lanes,
            queue: options.lane_queue,
            max_batch: options.max_batch,
            deadline: options.operation_timeout,
        };
        let batcher = Batcher::start(pool::build(config.clone(), &options, lanes)?, sizes);
        let acks = ack_lane::AckLane::start(pool::build(config, &options, 1)?, options.operation_timeout);
        Ok(PgStore { pool, batcher, acks, operation_timeout: options.operation_timeout })
    }

    /// Runs `op` within the operation deadline.
    async fn deadline<T>(&self, op: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.operation_timeout, op).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {} ms",
                self.operation_timeout.as_millis()
            ))),
        }
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Client> {
        Ok(self.pool.get().await?)
    }
}

/// Runs a statement through the connection's statement cache.
async fn query(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

/// Messages of a conversation in a seq range, ascending.
async fn page(
    c: &impl GenericClient,
    conversation: ConversationId,
    range: SeqRange,
    limit: usize,
) -> Result<Vec<Arc<StoredMessage>>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (sql, bound, newest_first) = match range {
        SeqRange::After(seq) => (
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
            bigint(seq),
            false,
        ),
        SeqRange::Before(seq) => (
            format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
            ),
            bigint(seq),
            true,
        ),
    };
    let mut page = query(c, &sql, &[&conversation, &bound, &limit])
        .await?
        .iter()
        .map(|r| rows::message(r).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    if newest_first {
        page.reverse();
    }
    Ok(page)
}

/// Like [`query`], for exactly one row.
async fn query_one(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_one(&statement, params).await?)
}

/// Like [`query`], for at most one row.
async fn query_opt(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

/// Like [`query`], returning the number of rows changed.
async fn execute(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

fn user_row(r: &Row) -> Result<User> {
    Ok(User { id: r.try_get(0)?, username: r.try_get(1)? })
}

#[async_trait]
impl Store for PgStore {
    async fn healthy(&self) -> bool {
        let check = async {
            self.client().await?.simple_query("SELECT 1").await?;
            Ok::<_, StoreError>(())
        };
        matches!(tokio::time::timeout(HEALTH_TIMEOUT, check).await, Ok(Ok(())))
    }

    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User> {
        self.deadline(async {
            let c = self.client().await?;
            // One statement, so a taken name leaves no user behind.
            let sql = "WITH u AS (INSERT INTO users (username, password_hash, created_at) VALUES ($1, $2, $3) \
                       RETURNING user_id) \
                       INSERT INTO usernames (username, user_id) SELECT $1, user_id FROM u RETURNING user_id";
            let statement = c.prepare_cached(sql).await?;
            match c.query_one(&statement, &[&username, &password_hash, &now_ms()]).await {
                Ok(row) => Ok(User { id: row.try_get(0)?, username: username.to_owned() }),
                Err(e) if is_unique_violation(&e) => Err(StoreError::UsernameTaken),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>> {
        self.deadline(async {
            let c = self.client().await?;
            let sql = "SELECT user_id, username, password_hash FROM users \
                       WHERE user_id = (SELECT user_id FROM usernames WHERE username = $1)";
            let Some(row) = query_opt(&c, sql, &[&username]).await? else { return Ok(None) };
            Ok(Some((user_row(&row)?, row.try_get(2)?)))
        })
        .await
    }

    async fn user(&self, user_id: UserId) -> Result<Option<User>> {
        self.deadline(async {
            let c = self.client().await?;
            let row = query_opt(&c, "SELECT user_id, username FROM users WHERE user_id = $1", &[&user_id]).await?;
            row.as_ref().map(user_row).transpose()
        })
        .await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        Ok(self.user_credentials(username).await?.map(|(u, _)| u))
    }

    async fn create_device(&self, user_id: UserId, name: &str, token_hash: [u8; 32]) -> Result<DeviceId> {
        self.deadline(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let sql = "INSERT INTO devices (user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4) \
                       RETURNING device_id";
            let device: DeviceId =
                query_one(&tx, sql, &[&user_id, &name, &&token_hash[..], &now_ms()]).await?.try_get(0)?;
            let token = "INSERT INTO device_tokens (token_hash, user_id, device_id) VALUES ($1, $2, $3)";
            let cursors = "INSERT INTO cursors (conversation_id, device_id, acked_seq) \
                           SELECT c.conversation_id, $2, c.last_seq FROM conversations c \
                           WHERE c.conversation_id IN (SELECT conversation_id FROM user_conversations WHERE user_id = $1)";
            execute(&tx, token, &[&&token_hash[..], &user_id, &device]).await?;
            execute(&tx, cursors, &[&user_id, &device]).await?;
            tx.commit().await?;
            Ok(device)
        })
        .await
    }

    async fn device_by_token(&self, token_hash: [u8; 32]) -> Result<Option<Device>> {
        self.deadline(async {
            let c = self.client().await?;
            let sql = "SELECT device_id, user_id FROM device_tokens WHERE token_hash = $1";
            let Some(row) = query_opt(&c, sql, &[&&token_hash[..]]).await? else { return Ok(None) };
            Ok(Some(Device { id: row.try_get(0)?, user_id: row.try_get(1)? }))
        })
        .await
    }

    async fn revoke_device(&self, device_id: DeviceId) -> Result<()> {
        self.deadline(async {
            let c = self.client().await?;
            let sql = "WITH d AS (UPDATE devices SET revoked = true WHERE device_id = $1 RETURNING token_hash) \
                       DELETE FROM device_tokens WHERE token_hash IN (SELECT token_hash FROM d)";
            execute(&c, sql, &[&device_id]).await?;
            Ok(())
        })
        .await
    }

    async fn create_direct(&self, a: UserId, b: UserId) -> Result<(Conversation, bool)> {
        if a == b {
            return Err(StoreError::Conflict("a direct conversation needs another user"));
        }
        self.deadline(async { conversations::create_direct(&mut self.client().await?, a, b).await }).await
    }

    async fn create_group(&self, creator: UserId, title: Option<&str>, members: &[UserId]) -> Result<Conversation> {
        let mut users = Vec::with_capacity(members.len() + 1);
        users.push(creator);
        users.extend(members.iter().copied().filter(|&u| u != creator));
        self.deadline(async { conversations::create_group(&mut self.client().await?, creator, title, &users).await })
            .await
    }

    async fn add_members(&self, conversation: ConversationId, by: UserId, users: &[UserId]) -> Result<Vec<UserId>> {
        self.deadline(async { conversations::add_members(&mut self.client().await?, conversation, by, users).await })
            .await
    }

    async fn leave(&self, conversation: ConversationId, user: UserId) -> Result<()> {
        self.deadline(async { conversations::leave(&mut self.client().await?, conversation, user).await }).await
    }

    async fn conversation(&self, conversation: ConversationId, viewer: UserId) -> Result<Option<Conversation>> {
        self.deadline(async { conversations::conversation_for(&self.client().await?, conversation, viewer).await })
            .await
    }

    async fn conversations(&self, viewer: UserId) -> Result<Vec<Conversation>> {
        self.deadline(async { conversations::conversations_of(&self.client().await?, viewer).await }).await
    }

    async fn members(&self, conversation: ConversationId) -> Result<Vec<UserId>> {
        self.deadline(async { conversations::members_of(&self.client().await?, conversation).await }).await
    }

    async fn direct_peers(&self, user: UserId) -> Result<Vec<UserId>> {
        self.deadline(async {
            let c = self.client().await?;
            let sql = "SELECT direct_peer FROM user_conversations WHERE user_id = $1 AND direct_peer IS NOT NULL \
                       ORDER BY conversation_id";
            query(&c, sql, &[&user]).await?.iter().map(|r| Ok(r.try_get(0)?)).collect()
        })
        .await
    }

    async fn append(&self, message: NewMessage) -> Result<Appended> {
        self.deadline(self.batcher.append(message)).await
    }

    async fn messages(
        &self,
        conversation: ConversationId,
        range: SeqRange,
        limit: usize,
    ) -> Result<Vec<Arc<StoredMessage>>> {
        self.deadline(async { page(&self.client().await?, conversation, range, limit).await }).await
    }

    async fn history(
        &self,
        conversation: ConversationId,
        reader: UserId,
        range: SeqRange,
        limit: usize,
    ) -> Result<Option<Vec<Arc<StoredMessage>>>> {
        self.deadline(async {
            let c = self.client().await?;
            // Both statements go out at once (tokio-postgres pipelines them):
            // one round trip.
            let key: [&(dyn ToSql + Sync); 2] = [&conversation, &reader];
            let (member, messages) =
                tokio::try_join!(query_opt(&c, append::IS_MEMBER, &key), page(&c, conversation, range, limit))?;
            Ok(member.map(|_| messages))
        })
        .await
    }

    async fn cursors(&self, user: UserId, device: DeviceId) -> Result<Vec<Cursor>> {
        self.deadline(async { cursors::cursors_of(&self.client().await?, user, device).await }).await
    }

    async fn cursor(&self, conversation: ConversationId, user: UserId, device: DeviceId) -> Result<Option<Cursor>> {
        self.deadline(async { cursors::cursor(&self.client().await?, conversation, user, device).await }).await
    }

    async fn ack(&self, user: UserId, device: DeviceId, acks: Vec<Ack>) -> Result<Vec<(ConversationId, u64)>> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        self.deadline(self.acks.ack(DeviceAcks { user, device, acks })).await
    }

    async fn read(&self, conversation: ConversationId, user: UserId, seq: u64) -> Result<Option<u64>> {
        self.deadline(async { cursors::read(&self.client().await?, conversation, user, seq).await }).await
    }
}
