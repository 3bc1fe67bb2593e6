//! Point reads, run on the calling thread.
//!
//! A few reads are made for every device that connects, and for every HTTP
//! request, by key, in small tables that stay in the operating system's
//! cache: a token's device (unless the server's token cache has it), the
//! device's cursors as it connects, its user's direct peers when the user's
//! presence changes, and the cursor of a conversation new to a connected
//! device. Each takes a few microseconds. Handed to a reader thread
//! ([`super::pool`]), each would cost two thread wakeups, one each way,
//! which cost more than the read: while 19,000 devices connected, the
//! server spent about a third less CPU with these reads made where they
//! were asked (see BENCHMARKS.md, "What each change bought").
//!
//! So [`ReadPool::read_here`] runs a read on the calling thread, with a
//! read-only connection that the thread opens at its first point read and
//! keeps. It is for point reads only: a read that scans (a page of history,
//! a listing), and a device's cursors read again to resync (which many
//! connections may need at once, when the server is already behind), go to
//! the reader threads, so that they never hold a runtime's thread for long.
//! A point read that meets a lock or an I/O error, or whose thread cannot
//! open or use a connection, is run again on a reader thread, which waits
//! for locks; so it never waits for a lock on the caller's thread. An
//! inline read counts against its task's budget, so a task that makes many
//! still gives its thread to others, as a read of a socket would.
//!
//! What it costs: a thread that makes point reads keeps a connection (two
//! open files, the database and its WAL; a map of the database; a small
//! page cache) until it ends, or until its next point read after the store
//! is dropped; a point read of pages that are not cached waits for the disk
//! on the caller's thread; and the cursors and the direct peers are one row
//! per conversation of the user, so they hold the thread longer for a user
//! in many: for a user in 1,000 conversations (100,000 messages), with the
//! pages cached, about 0.5–0.9 ms for the cursors and 0.3 ms for the peers.

use super::pool::{open, ReadPool};
use crate::{Result, StoreError};
use rusqlite::Connection;
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

thread_local! {
    /// This thread's point-read connections, one per store it read from,
    /// each with the key of its store's pool.
    static HERE: RefCell<Vec<(Weak<()>, Connection)>> = const { RefCell::new(Vec::new()) };
}

impl ReadPool {
    /// Runs the point read `f` on the calling thread (see the module notes);
    /// on a reader thread if it fails there with [`StoreError::Unavailable`].
    pub(crate) async fn read_here<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Clone + Send + 'static,
    {
        let done = match self.try_here(f.clone()) {
            Err(StoreError::Unavailable(_)) => return self.read(f).await,
            done => done,
        };
        tokio::task::consume_budget().await;
        done
    }

    /// Runs `f` with this thread's connection to the database, opening it
    /// first if needed. A read that panics is an error, and the connection
    /// is let go, as a reader thread's would be. Without a connection here
    /// (it cannot be opened, or the thread is ending), the read is
    /// [`StoreError::Unavailable`], and so goes to a reader thread.
    fn try_here<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let unavailable = |why: &str| StoreError::Unavailable(format!("no point-read connection here: {why}"));
        HERE.try_with(|here| {
            let Ok(mut here) = here.try_borrow_mut() else { return Err(unavailable("in use")) };
            // Connections of stores since dropped are let go.
            here.retain(|(key, _)| key.strong_count() > 0);
            let mine = Arc::downgrade(&self.key);
            let at = match here.iter().position(|(key, _)| key.ptr_eq(&mine)) {
                Some(at) => at,
                None => {
                    let conn = open(&self.path).map_err(|e| unavailable(&e.to_string()))?;
                    // Never wait for a lock here: the reader threads do.
                    conn.busy_timeout(std::time::Duration::ZERO).map_err(|e| unavailable(&e.to_string()))?;
                    here.push((mine, conn));
                    here.len() - 1
                }
            };
            match std::panic::catch_unwind(AssertUnwindSafe(|| f(&here[at].1))) {
                Ok(done) => done,
                Err(_) => {
                    here.swap_remove(at);
                    Err(StoreError::Internal("a point read panicked".into()))
                }
            }
        })
        .unwrap_or_else(|_| Err(unavailable("the thread is ending")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A database in `dir` whose table `t` holds one row, `x`.
    fn table_of(dir: &Path, x: i64) -> PathBuf {
        let path = dir.join("point.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        conn.execute("INSERT INTO t VALUES (?1)", [x]).unwrap();
        path
    }

    /// Through the statement cache, as the store's reads are.
    fn x(c: &Connection) -> Result<i64> {
        Ok(c.prepare_cached("SELECT x FROM t")?.query_row([], |r| r.get(0))?)
    }

    fn connections_here() -> usize {
        HERE.with(|h| h.borrow().len())
    }

    #[tokio::test]
    async fn a_point_read_runs_on_the_calling_thread_and_sees_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = table_of(dir.path(), 7);
        let pool = ReadPool::new(path.clone()).unwrap();
        let caller = std::thread::current().id();
        let (value, thread) = pool.read_here(|c| Ok((x(c)?, std::thread::current().id()))).await.unwrap();
        assert_eq!((value, thread), (7, caller));
        // The thread keeps its connection; a commit made since is seen.
        Connection::open(&path).unwrap().execute("UPDATE t SET x = 8", []).unwrap();
        assert_eq!(pool.read_here(x).await.unwrap(), 8);
        assert_eq!(connections_here(), 1);
    }

    #[tokio::test]
    async fn a_point_read_never_waits_for_a_lock_here() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ReadPool::new(table_of(dir.path(), 7)).unwrap();
        let here = |c: &Connection| Ok(c.query_row("PRAGMA busy_timeout", [], |r| r.get::<_, i64>(0))?);
        assert_eq!(pool.read_here(here).await.unwrap(), 0);
        // The reader threads do wait.
        assert!(pool.read(here).await.unwrap() > 0);
    }

    #[tokio::test]
    async fn a_point_read_that_is_unavailable_here_runs_again_on_a_reader_thread() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ReadPool::new(table_of(dir.path(), 7)).unwrap();
        let tries = Arc::new(AtomicUsize::new(0));
        let read = {
            let tries = Arc::clone(&tries);
            move |c: &Connection| {
                if tries.fetch_add(1, Ordering::Relaxed) == 0 {
                    return Err(StoreError::Unavailable("database is locked".into()));
                }
                Ok((x(c)?, std::thread::current().name().map(str::to_owned)))
            }
        };
        let (value, thread) = pool.read_here(read).await.unwrap();
        assert_eq!(value, 7);
        assert!(thread.as_deref().is_some_and(|n| n.starts_with("banter-sqlite-read")), "{thread:?}");
        assert_eq!(tries.load(Ordering::Relaxed), 2);
        // Other failures are the caller's, without a second try.
        let tries = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&tries);
        let failed = pool
            .read_here(move |_| -> Result<()> {
                counted.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::NotFound)
            })
            .await;
        assert!(matches!(failed, Err(StoreError::NotFound)), "{failed:?}");
        assert_eq!(tries.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_point_read_that_panics_is_an_error_and_the_next_one_opens_a_new_connection() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ReadPool::new(table_of(dir.path(), 7)).unwrap();
        assert_eq!(pool.read_here(x).await.unwrap(), 7);
        let failed = pool.read_here(|_| -> Result<()> { panic!("a point read that panics") }).await;
        assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
        assert_eq!(connections_here(), 0);
        assert_eq!(pool.read_here(x).await.unwrap(), 7);
        assert_eq!(connections_here(), 1);
    }

    #[tokio::test]
    async fn each_store_has_its_own_connection_on_a_thread_and_a_dropped_ones_is_let_go() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = ReadPool::new(table_of(a_dir.path(), 7)).unwrap();
        let b = ReadPool::new(table_of(b_dir.path(), 8)).unwrap();
        assert_eq!(a.read_here(x).await.unwrap(), 7);
        assert_eq!(b.read_here(x).await.unwrap(), 8);
        assert_eq!(a.read_here(x).await.unwrap(), 7);
        assert_eq!(connections_here(), 2);
        drop(a);
        assert_eq!(b.read_here(x).await.unwrap(), 8);
        assert_eq!(connections_here(), 1);
    }
}
