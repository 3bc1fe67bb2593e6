//! The SQLite schema and its versioned migrations.
//!
//! Messages live in a rowid table, so rows are appended in commit order and a
//! batch of inserts touches the end of the table whatever the number of
//! active conversations; the `(conversation_id, seq)` index keeps reads of one
//! conversation cheap. A table clustered by `(conversation_id, seq)` would
//! instead scatter each batch over as many pages as there are active
//! conversations (see BENCHMARKS.md).

use rusqlite::Connection;

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE users (
    user_id       INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE devices (
    device_id   INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    token_hash  BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_by_user ON devices (user_id);
CREATE TABLE conversations (
    conversation_id INTEGER PRIMARY KEY,
    kind            INTEGER NOT NULL,
    title           TEXT,
    direct_key      TEXT UNIQUE,
    created_at      INTEGER NOT NULL,
    member_count    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE members (
    conversation_id INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    joined_seq      INTEGER NOT NULL,
    delivered_seq   INTEGER NOT NULL,
    read_seq        INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id, conversation_id);
CREATE TABLE messages (
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    message_id      INTEGER NOT NULL,
    sender_id       INTEGER NOT NULL,
    sender_device   INTEGER NOT NULL,
    client_msg_id   TEXT NOT NULL,
    ts              INTEGER NOT NULL,
    content         TEXT NOT NULL
);
CREATE UNIQUE INDEX messages_by_seq ON messages (conversation_id, seq);
CREATE UNIQUE INDEX messages_by_client_id ON messages (conversation_id, sender_id, client_msg_id);
CREATE TABLE cursors (
    conversation_id INTEGER NOT NULL,
    device_id       INTEGER NOT NULL,
    acked_seq       INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, device_id)
) WITHOUT ROWID;
"#];

/// Brings the database up to the newest schema.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}
