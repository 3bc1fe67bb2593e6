//! The PostgreSQL schema and its versioned migrations.
//!
//! Every node migrates at start-up. The migrations run on a connection of
//! their own, under a session-level advisory lock, so nodes starting together
//! take turns: the first applies what is missing, the others find it applied.
//! Each migration runs in a transaction together with the row that records it
//! in `schema_migrations`, so a migration is applied entirely or not at all.
//!
//! Why the tables look as they do (partition keys, the side tables for
//! usernames, tokens and the conversations of a user) is explained in the
//! module documentation of [`crate::postgres`].

use std::collections::HashSet;
use tokio_postgres::Client;

/// One step of the schema.
struct Migration {
    /// Recorded in `schema_migrations`; ascending, never reused.
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Key of the advisory lock held while migrating: "banter" in ASCII, an
/// arbitrary constant that no other code of this database uses.
const MIGRATION_LOCK: i64 = 0x6261_6e74_6572;

/// Migrations, applied in order.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial schema",
    sql: r#"
-- Distributed by user_id. Usernames are unique through `usernames`: a unique
-- index on users (username) would not be led by the partition key, and a
-- table distributed by user_id cannot enforce it.
CREATE TABLE users (
    user_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL,
    password_hash text NOT NULL,
    created_at    bigint NOT NULL
);
-- Distributed by username: the name is both the key looked up and the one kept unique.
CREATE TABLE usernames (
    username text PRIMARY KEY,
    user_id  bigint NOT NULL
);
-- Distributed by user_id.
CREATE TABLE devices (
    user_id    bigint NOT NULL,
    device_id  bigint GENERATED ALWAYS AS IDENTITY,
    name       text NOT NULL,
    token_hash bytea NOT NULL,
    created_at bigint NOT NULL,
    revoked    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, device_id)
);
-- Revocation names the device alone. Identity values are unique already, and
-- a unique index not led by user_id could not be distributed, so it is not unique.
CREATE INDEX devices_by_id ON devices (device_id);
-- Distributed by token_hash. Only live devices have a row: revocation deletes it.
CREATE TABLE device_tokens (
    token_hash bytea PRIMARY KEY,
    user_id    bigint NOT NULL,
    device_id  bigint NOT NULL
);
-- Distributed by conversation_id, like everything of a conversation. Its row
-- is the seq counter: appends lock it, so seqs are assigned one transaction
-- at a time per conversation. Updates of the counter touch no indexed column,
-- and the free space left in each page lets them stay on the page (HOT).
CREATE TABLE conversations (
    conversation_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            smallint NOT NULL, -- 0 direct, 1 group
    title           text,
    created_at      bigint NOT NULL,
    last_seq        bigint NOT NULL DEFAULT 0,
    last_activity   bigint NOT NULL,
    member_count    bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 70);
-- Distributed by conversation_id.
CREATE TABLE members (
    conversation_id bigint NOT NULL,
    user_id         bigint NOT NULL,
    joined_seq      bigint NOT NULL,
    delivered_seq   bigint NOT NULL,
    read_seq        bigint NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) WITH (fillfactor = 80);
-- Distributed by user_id: the conversations of a user, written with `members`.
-- A direct conversation names the other user, and the unique key keeps one
-- direct conversation per pair (NULLs, for groups, are distinct).
CREATE TABLE user_conversations (
    user_id         bigint NOT NULL,
    conversation_id bigint NOT NULL,
    direct_peer     bigint,
    PRIMARY KEY (user_id, conversation_id),
    UNIQUE (user_id, direct_peer)
);
-- Distributed by conversation_id, and hash-partitioned by it on a single
-- server too (16 partitions). The second unique key is the permanent
-- idempotency record.
CREATE TABLE messages (
    conversation_id bigint NOT NULL,
    seq             bigint NOT NULL,
    message_id      bigint NOT NULL,
    sender_id       bigint NOT NULL,
    sender_device   bigint NOT NULL,
    client_msg_id   text NOT NULL,
    ts              bigint NOT NULL,
    content         text NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    UNIQUE (conversation_id, sender_id, client_msg_id)
) PARTITION BY HASH (conversation_id);
DO $$
BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format('CREATE TABLE messages_p%s PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER %s)', i, i);
    END LOOP;
END
$$;
-- Distributed by conversation_id.
CREATE TABLE cursors (
    conversation_id bigint NOT NULL,
    device_id       bigint NOT NULL,
    acked_seq       bigint NOT NULL,
    PRIMARY KEY (conversation_id, device_id)
) WITH (fillfactor = 80);
"#,
}];

/// Brings the database up to the newest schema, waiting for any other node
/// migrating it at the same time.
pub(super) async fn migrate(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    // Waiting for the lock and running a migration may take longer than the
    // statement timeout of ordinary work.
    client.batch_execute("SET statement_timeout = 0").await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let applied = apply_missing(client).await;
    // Closing the connection would release the lock too; this is for tidiness.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    applied?;
    unlocked?;
    Ok(())
}

async fn apply_missing(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let applied: HashSet<i32> =
        client.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql).await?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[&m.version, &m.name]).await?;
        tx.commit().await?;
        tracing::info!(version = m.version, name = m.name, "applied PostgreSQL migration");
    }
    let newest_known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(newer) = applied.iter().copied().filter(|&v| v > newest_known).max() {
        // A newer node migrated first, as in a rolling upgrade. Migrations are
        // written to keep older nodes working, so this one carries on.
        tracing::warn!(version = newer, newest_known, "the database schema is newer than this node");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_ascend() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }
}
