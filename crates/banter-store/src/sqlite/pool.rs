//! Read-only connections, each owned by a reader thread of its own, so that
//! a read never holds a thread of the async runtime (the point reads of
//! `point.rs` excepted, which are made where they are asked and come here
//! only when they cannot be). WAL lets them read while the writer commits.
//!
//! Reads are jobs on one queue that [`READERS`] threads take from. A thread
//! that finds more work waiting takes it without sleeping, so a burst of
//! reads (thousands of devices connecting, each reading its cursors) costs a
//! thread wakeup per idle thread, not one per read, as a blocking task per
//! read would. Each connection is opened once and kept, with its prepared
//! statements, so a read neither opens a connection nor parses its SQL again.
//!
//! The queue is bounded: at most [`READ_QUEUE`] reads are queued or running,
//! and more wait for room, in the order they asked.
//!
//! A thread that finds the queue empty sleeps at once on a condition
//! variable. A channel that spins and yields before it sleeps (as
//! crossbeam's does) made every idle reader of a burst call `sched_yield`
//! a few times on its way to sleep: with eight readers on two cores, a
//! fifth of the server's time while thousands of devices connected.

use crate::{Result, StoreError};
use rusqlite::{Connection, OpenFlags};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::{oneshot, Semaphore};

/// Read connections, and so reads running at once.
pub(crate) const READERS: usize = 8;
/// Reads queued or running at once; more wait for room.
pub(crate) const READ_QUEUE: usize = 4_096;
/// How much of the database file each read connection maps into memory
/// (SQLite's `mmap_size`; SQLite caps it at 2 GiB on Linux). A page read
/// through the map is the operating system's cached page itself, where a
/// page read with `pread` is copied into the connection's own page cache
/// first: for a reader that visits pages at random (history, cursors), the
/// copy, its system call and the page cache were about a third of the read.
pub(crate) const READ_MAP_BYTES: i64 = 1 << 31;

/// One read: runs on a reader thread with its connection (or the error that
/// kept it from opening one).
type Job = Box<dyn FnOnce(Result<&Connection>) + Send>;

/// The reads waiting for a reader thread. Its length is bounded by the
/// pool's permits ([`READ_QUEUE`]), taken before a read is queued.
#[derive(Default)]
struct Queue {
    state: Mutex<Waiting>,
    /// Signalled once per read queued, and to every thread at the end.
    ready: Condvar,
}

#[derive(Default)]
struct Waiting {
    jobs: VecDeque<Job>,
    /// Set when the pool is dropped: the threads end once the queue is empty.
    closed: bool,
}

impl Queue {
    fn push(&self, job: Job) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).jobs.push_back(job);
        self.ready.notify_one();
    }

    /// The next read, waiting for one; `None` once the pool is dropped.
    fn pop(&self) -> Option<Job> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(crate) struct ReadPool {
    queue: Arc<Queue>,
    /// One permit per read queued or running, so the queue holds at most [`READ_QUEUE`].
    room: Arc<Semaphore>,
    /// The database, for the connections of point reads ([`super::point`]).
    pub(super) path: Arc<Path>,
    /// Tells this pool's point-read connections from other pools' on the
    /// same thread; once it is dropped, each thread lets its connection go
    /// at its next point read, or when it ends.
    pub(super) key: Arc<()>,
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl ReadPool {
    /// Starts the reader threads; they end when the pool is dropped.
    pub(crate) fn new(path: PathBuf) -> Result<ReadPool> {
        let queue = Arc::new(Queue::default());
        let path: Arc<Path> = path.into();
        for i in 0..READERS {
            let queue = Arc::clone(&queue);
            let path = Arc::clone(&path);
            std::thread::Builder::new()
                .name(format!("banter-sqlite-read-{i}"))
                .spawn(move || serve(&path, &queue))
                .map_err(|e| StoreError::Unavailable(format!("no reader thread: {e}")))?;
        }
        Ok(ReadPool { queue, room: Arc::new(Semaphore::new(READ_QUEUE)), path, key: Arc::new(()) })
    }

    /// Runs `f` on a read connection, on a reader thread.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.room).acquire_owned().await.map_err(|e| StoreError::Internal(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // Room is given back once the read has run, even if its caller gave up.
            let _permit = permit;
            let _ = tx.send(conn.and_then(f));
        });
        self.queue.push(job);
        rx.await.map_err(|_| StoreError::Internal("a reader thread ended mid-read".into()))?
    }
}

/// A reader thread: runs jobs until the pool is dropped. The connection is
/// opened at the first job, and again after a failure to open it or a read
/// that panicked (its caller gets an error; the thread goes on).
fn serve(path: &Path, queue: &Queue) {
    let mut conn: Option<Connection> = None;
    while let Some(job) = queue.pop() {
        if conn.is_none() {
            match open(path) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    job(Err(e));
                    continue;
                }
            }
        }
        let read = AssertUnwindSafe(|| job(Ok(conn.as_ref().expect("opened above"))));
        if std::panic::catch_unwind(read).is_err() {
            conn = None;
        }
    }
}

pub(super) fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    super::keep_plans(&conn)?;
    conn.pragma_update(None, "mmap_size", READ_MAP_BYTES)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in `dir` whose table `t` holds one row, 7.
    fn table_of_seven(dir: &Path) -> PathBuf {
        let path = dir.join("pool.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7);")
            .unwrap();
        path
    }

    #[tokio::test]
    async fn a_read_that_panics_is_an_error_and_the_readers_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = table_of_seven(dir.path());
        let pool = ReadPool::new(path).unwrap();
        // More panics than threads: were a panic to end its thread, none would be left.
        for _ in 0..READERS + 1 {
            let failed = pool.read(|_| -> Result<()> { panic!("a read that panics") }).await;
            assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
        }
        let x = pool.read(|c| Ok(c.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0))?)).await.unwrap();
        assert_eq!(x, 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_read_of_a_burst_larger_than_the_threads_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = table_of_seven(dir.path());
        let pool = Arc::new(ReadPool::new(path).unwrap());
        let reads = (0..READERS as i64 * 50).map(|i| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.read(move |c| Ok(c.query_row("SELECT x + ?1 FROM t", [i], |r| r.get::<_, i64>(0))?)).await
            })
        });
        let answers = futures_util::future::join_all(reads).await;
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap().unwrap(), 7 + i as i64);
        }
    }

    #[test]
    fn the_threads_end_when_the_pool_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ReadPool::new(dir.path().join("pool.db")).unwrap();
        let queue = Arc::downgrade(&pool.queue);
        drop(pool);
        // Each thread holds the queue until it ends.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while queue.strong_count() > 0 {
            assert!(std::time::Instant::now() < deadline, "reader threads still running");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
