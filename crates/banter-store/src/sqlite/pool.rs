//! Read-only connections, used on tokio's blocking threads so that SQLite
//! never blocks the async runtime. WAL lets them read while the writer commits.

use crate::Result;
use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Idle read connections kept open.
const MAX_IDLE: usize = 8;

#[derive(Debug)]
pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf) -> Arc<ReadPool> {
        Arc::new(ReadPool { path, idle: Mutex::new(Vec::new()) })
    }

    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `f` on a read connection on a blocking thread.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let taken = pool.idle.lock().expect("pool lock").pop();
            let conn = match taken {
                Some(c) => c,
                None => pool.open()?,
            };
            let out = f(&conn);
            let mut idle = pool.idle.lock().expect("pool lock");
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|e| crate::StoreError::Internal(e.to_string()))?
    }
}
