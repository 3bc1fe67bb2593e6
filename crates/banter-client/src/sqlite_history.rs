//! A [`LocalHistory`] in an SQLite file, so a client that restarts neither
//! shows a message twice nor loses its place in a conversation.
//!
//! It stores whole messages, which makes it a usable local message store as
//! well: [`SqliteHistory::messages`] reads a conversation back in seq order.

use crate::{ClientError, LocalHistory};
use banter_proto::frame::MessageView;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::value::RawValue;
use std::path::Path;

/// The schema, created when missing.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    message_id      TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    sender_id       TEXT NOT NULL,
    client_msg_id   TEXT NOT NULL,
    ts              INTEGER NOT NULL,
    content         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, seq);
CREATE TABLE IF NOT EXISTS cursors (
    conversation_id TEXT PRIMARY KEY,
    contiguous      INTEGER NOT NULL
);
";

/// A local history kept in an SQLite database.
#[derive(Debug)]
pub struct SqliteHistory {
    /// The open database; a session uses it from one task only.
    conn: Connection,
}

impl SqliteHistory {
    /// Opens (or creates) the history database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let conn = Connection::open(path)?;
        // WAL with `synchronous=NORMAL` keeps each insert cheap; a crash can
        // lose only the last messages, which the server then delivers again
        // because they were not yet acknowledged.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    /// A history held in memory only, mostly for tests.
    pub fn open_in_memory() -> Result<Self, ClientError> {
        Self::init(Connection::open_in_memory()?)
    }

    /// Creates the tables if they are missing.
    fn init(conn: Connection) -> Result<Self, ClientError> {
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteHistory { conn })
    }

    /// Up to `limit` held messages of a conversation with a seq above `after`, ascending.
    pub fn messages(&self, conversation_id: &str, after: u64, limit: usize) -> Result<Vec<MessageView>, ClientError> {
        let mut statement = self.conn.prepare_cached(
            "SELECT message_id, seq, sender_id, client_msg_id, ts, content FROM messages
             WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(params![conversation_id, to_sql_seq(after)?, limit], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, String>(5)?,
            ))
        })?;
        let mut messages = Vec::new();
        for row in rows {
            let (message_id, seq, sender_id, client_msg_id, ts, content) = row?;
            let content = RawValue::from_string(content)
                .map_err(|e| ClientError::History(format!("stored content of {message_id}: {e}")))?;
            messages.push(MessageView {
                conversation_id: conversation_id.to_owned(),
                message_id,
                seq: from_sql_seq(seq)?,
                sender_id,
                client_msg_id,
                ts,
                content,
            });
        }
        Ok(messages)
    }
}

impl LocalHistory for SqliteHistory {
    fn contains(&self, message_id: &str) -> Result<bool, ClientError> {
        let mut statement = self.conn.prepare_cached("SELECT 1 FROM messages WHERE message_id = ?1")?;
        Ok(statement.exists(params![message_id])?)
    }

    fn insert(&mut self, message: &MessageView) -> Result<(), ClientError> {
        let mut statement = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO messages (message_id, conversation_id, seq, sender_id, client_msg_id, ts, content)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        statement.execute(params![
            message.message_id,
            message.conversation_id,
            to_sql_seq(message.seq)?,
            message.sender_id,
            message.client_msg_id,
            message.ts,
            message.content.get(),
        ])?;
        Ok(())
    }

    fn contiguous(&self, conversation_id: &str) -> Result<Option<u64>, ClientError> {
        let mut statement = self.conn.prepare_cached("SELECT contiguous FROM cursors WHERE conversation_id = ?1")?;
        let seq: Option<i64> = statement.query_row(params![conversation_id], |row| row.get(0)).optional()?;
        seq.map(from_sql_seq).transpose()
    }

    fn set_contiguous(&mut self, conversation_id: &str, seq: u64) -> Result<(), ClientError> {
        let mut statement = self.conn.prepare_cached(
            "INSERT INTO cursors (conversation_id, contiguous) VALUES (?1, ?2)
             ON CONFLICT (conversation_id) DO UPDATE SET contiguous = max(contiguous, excluded.contiguous)",
        )?;
        statement.execute(params![conversation_id, to_sql_seq(seq)?])?;
        Ok(())
    }
}

/// A seq as SQLite stores it.
fn to_sql_seq(seq: u64) -> Result<i64, ClientError> {
    i64::try_from(seq).map_err(|_| ClientError::History(format!("seq {seq} does not fit in SQLite")))
}

/// A seq read back from SQLite.
fn from_sql_seq(seq: i64) -> Result<u64, ClientError> {
    u64::try_from(seq).map_err(|_| ClientError::History(format!("negative seq {seq} in the history")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::{check_rules, message};

    #[test]
    fn sqlite_history_follows_the_rules() {
        check_rules(&mut SqliteHistory::open_in_memory().unwrap());
    }

    #[test]
    fn sqlite_history_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("banter-history-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.db");
        {
            let mut history = SqliteHistory::open(&path).unwrap();
            history.set_contiguous("a", 2).unwrap();
            history.insert(&message("a", 3)).unwrap();
            history.insert(&message("a", 4)).unwrap();
            history.set_contiguous("a", 4).unwrap();
        }
        let history = SqliteHistory::open(&path).unwrap();
        assert_eq!(history.contiguous("a").unwrap(), Some(4));
        assert!(history.is_duplicate(&message("a", 3)).unwrap());
        let stored = history.messages("a", 0, 10).unwrap();
        assert_eq!(stored.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(stored[0].content.get(), message("a", 3).content.get());
        drop(history);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
