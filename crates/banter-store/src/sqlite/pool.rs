//! Read-only connections, used on tokio's blocking threads so that SQLite
//! never blocks the async runtime. WAL lets them read while the writer commits.
//!
//! At most [`READERS`] reads run at once; more wait for a connection. Each
//! connection is opened once and kept, with its prepared statements, so a
//! burst of reads (thousands of devices connecting) neither opens a
//! connection per read nor parses its SQL again.

use crate::Result;
use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Read connections, and so reads running at once.
pub(crate) const READERS: usize = 8;

#[derive(Debug)]
pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf) -> Arc<ReadPool> {
        Arc::new(ReadPool {
            path,
            idle: Mutex::new(Vec::with_capacity(READERS)),
            permits: Arc::new(Semaphore::new(READERS)),
        })
    }

    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        super::keep_plans(&conn)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `f` on a read connection on a blocking thread.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit =
            Arc::clone(&self.permits).acquire_owned().await.map_err(|e| crate::StoreError::Internal(e.to_string()))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            // The permit lives as long as the read, even if its caller gives
            // up; holding it, there is an idle connection unless fewer than
            // READERS have been opened yet.
            let _permit = permit;
            let taken = pool.idle.lock().expect("pool lock").pop();
            let conn = match taken {
                Some(c) => c,
                None => pool.open()?,
            };
            let out = f(&conn);
            pool.idle.lock().expect("pool lock").push(conn);
            out
        })
        .await
        .map_err(|e| crate::StoreError::Internal(e.to_string()))?
    }
}
