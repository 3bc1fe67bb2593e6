//! The single writer thread and its group commit.
//!
//! Every write is a job sent to one thread that owns the only writable
//! connection. The thread takes whatever jobs are waiting (up to
//! [`MAX_BATCH`]), runs each inside its own savepoint of one transaction,
//! commits once (one fsync for the whole batch), and only then answers each
//! job. So concurrent sends share a commit, and no answer leaves before its
//! data is durable. The batch grows with the load by itself: while one commit
//! is being synced, the next batch gathers in the channel.
//!
//! Jobs come in two classes. Cursor writes (acks) are *bulk*: there can be
//! one per connected device every few milliseconds, and each can wait.
//! Everything else, appends above all, is *urgent*. Each batch runs every
//! urgent job waiting, then bulk jobs only for [`BULK_BUDGET`], leaving the
//! rest for the next batch, and stops running bulk jobs as soon as an urgent
//! one comes, which joins the batch; so a send waits behind one bulk job and
//! a commit at most, never behind the cursor writes of ten thousand devices,
//! while those still drain at full speed when nothing else is waiting.

use super::tails::Tails;
use crate::{ConversationId, Result, StoreError, StoredMessage, UserId};
use rusqlite::{params, Connection};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most jobs in one transaction.
pub(crate) const MAX_BATCH: usize = 4096;
/// Capacity of the job channel; senders wait when it is full. The writer
/// also holds at most this many jobs taken from it and not yet run.
pub(crate) const QUEUE_CAPACITY: usize = 16 * 1024;
/// Longest a batch spends running bulk jobs, so urgent ones wait at most
/// about this (and a commit) behind them.
pub(crate) const BULK_BUDGET: Duration = Duration::from_millis(2);

/// Most conversations whose last seq is cached; past it the cache is emptied.
const MAX_CACHED_SEQS: usize = 1 << 20;

thread_local! {
    /// The last seq of each recently written conversation, as of the
    /// transaction in progress. It exists only on the writer thread, so the
    /// send path needs no `UPDATE` of a per-conversation row: that row would
    /// scatter every batch over as many pages as there are active conversations.
    static LAST_SEQ: RefCell<HashMap<ConversationId, i64>> = RefCell::new(HashMap::new());
    /// Memberships the writer has seen, as of the transaction in progress:
    /// every send and every ack with receipts checks one, and only this
    /// thread writes `members`, so a membership it has read stays true
    /// until it removes it itself ([`forget_member`]) or a commit fails.
    static MEMBERS: RefCell<HashSet<(ConversationId, UserId)>> = RefCell::new(HashSet::new());
    /// Messages appended in the transaction in progress, in seq order: they
    /// extend the cached tails once it commits ([`record_appended`]).
    static APPENDED: RefCell<Vec<Arc<StoredMessage>>> = const { RefCell::new(Vec::new()) };
    /// Conversations a member left in the transaction in progress: their
    /// tails are dropped once it commits ([`record_left`]).
    static LEFT: RefCell<Vec<ConversationId>> = const { RefCell::new(Vec::new()) };
    /// Whether the store keeps tails at all (else nothing is recorded).
    static FEED_TAILS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records a message appended in the transaction in progress, for the tails.
pub(crate) fn record_appended(message: &Arc<StoredMessage>) {
    if FEED_TAILS.get() {
        APPENDED.with(|a| a.borrow_mut().push(Arc::clone(message)));
    }
}

/// Records a leave of `conversation` in the transaction in progress, for the tails.
pub(crate) fn record_left(conversation: ConversationId) {
    if FEED_TAILS.get() {
        LEFT.with(|l| l.borrow_mut().push(conversation));
    }
}

/// Most memberships [`is_member`] keeps; past it the set is emptied.
const MAX_CACHED_MEMBERS: usize = 1 << 20;

/// Whether `user` is a member of `conversation`, inside the writer's transaction.
pub(crate) fn is_member(conn: &Connection, conversation: ConversationId, user: UserId) -> Result<bool> {
    if MEMBERS.with(|m| m.borrow().contains(&(conversation, user))) {
        return Ok(true);
    }
    let member = conn.prepare_cached(super::IS_MEMBER)?.exists(params![conversation, user])?;
    if member {
        MEMBERS.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= MAX_CACHED_MEMBERS {
                m.clear();
            }
            m.insert((conversation, user));
        });
    }
    Ok(member)
}

/// Called by every write that deletes a membership, before it is committed.
pub(crate) fn forget_member(conversation: ConversationId, user: UserId) {
    MEMBERS.with(|m| m.borrow_mut().remove(&(conversation, user)));
}

/// The last seq of a conversation, inside the writer's transaction.
pub(crate) fn last_seq(conn: &Connection, conversation: ConversationId) -> Result<i64> {
    if let Some(seq) = LAST_SEQ.with(|m| m.borrow().get(&conversation).copied()) {
        return Ok(seq);
    }
    let seq = super::stored_last_seq(conn, conversation)?;
    LAST_SEQ.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= MAX_CACHED_SEQS {
            m.clear();
        }
        m.insert(conversation, seq);
    });
    Ok(seq)
}

/// Records a seq just stored in the transaction in progress.
pub(crate) fn set_last_seq(conversation: ConversationId, seq: i64) {
    LAST_SEQ.with(|m| m.borrow_mut().insert(conversation, seq));
}

/// Called once the batch's fate is known: `None` if it committed.
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// A unit of work run inside the batch transaction.
pub(crate) type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;

/// A job as queued, with its class.
struct Queued {
    job: Job,
    bulk: bool,
}

/// The handle through which async code submits writes.
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Queued>,
}

impl Writer {
    /// Starts the writer thread on `conn`; it extends `tails` after each commit.
    pub(crate) fn start(conn: Connection, tails: Arc<Tails>) -> (Writer, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let handle = std::thread::Builder::new()
            .name("banter-sqlite-writer".into())
            .spawn(move || {
                FEED_TAILS.set(tails.enabled());
                run(conn, rx, &tails)
            })
            .expect("spawn the writer thread");
        (Writer { tx }, handle)
    }

    /// Runs `f` in the next batch, inside a savepoint so that a failure undoes
    /// its writes alone, and answers after the batch commits.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(false, move |conn| in_savepoint(conn, f)).await
    }

    /// Like [`Writer::write`] without the savepoint, for the hot path: only
    /// for jobs that can fail only before their first write, or whose writes
    /// are idempotent (a later failure of the batch undoes them anyway).
    pub(crate) async fn write_unguarded<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(false, f).await
    }

    /// Like [`Writer::write_unguarded`], for bulk jobs (see the module notes).
    pub(crate) async fn write_bulk<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(true, f).await
    }

    async fn submit<T, F>(&self, bulk: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = f(conn);
            Box::new(move |commit_error| {
                let result = match commit_error {
                    Some(e) => Err(StoreError::Unavailable(e.to_string())),
                    None => outcome,
                };
                let _ = reply.send(result);
            })
        });
        self.tx.send(Queued { job, bulk }).await.map_err(|_| StoreError::Unavailable("store is shut down".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("store writer stopped".into()))?
    }
}

/// Runs `f` so that its writes vanish if it fails, without touching the rest of the batch.
pub(crate) fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    run_cached(conn, "SAVEPOINT job")?;
    let appended = APPENDED.with(|a| a.borrow().len());
    let left = LEFT.with(|l| l.borrow().len());
    let outcome = f(conn);
    if outcome.is_err() {
        run_cached(conn, "ROLLBACK TO job")?;
        // What it appended, and any leave, is undone too.
        APPENDED.with(|a| a.borrow_mut().truncate(appended));
        LEFT.with(|l| l.borrow_mut().truncate(left));
    }
    run_cached(conn, "RELEASE job")?;
    outcome
}

/// Runs a statement through the statement cache, so the hot path never re-parses SQL.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Jobs taken from the channel and not yet run, by class.
#[derive(Default)]
struct Pending {
    urgent: VecDeque<Job>,
    bulk: VecDeque<Job>,
}

impl Pending {
    fn push(&mut self, q: Queued) {
        if q.bulk {
            self.bulk.push_back(q.job)
        } else {
            self.urgent.push_back(q.job)
        }
    }

    fn len(&self) -> usize {
        self.urgent.len() + self.bulk.len()
    }

    fn is_empty(&self) -> bool {
        self.urgent.is_empty() && self.bulk.is_empty()
    }
}

/// Takes the jobs waiting in the channel, while fewer than [`QUEUE_CAPACITY`] are held.
fn take_waiting(rx: &mut mpsc::Receiver<Queued>, pending: &mut Pending) {
    while pending.len() < QUEUE_CAPACITY {
        match rx.try_recv() {
            Ok(q) => pending.push(q),
            Err(_) => break,
        }
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Queued>, tails: &Tails) {
    let mut pending = Pending::default();
    let mut completions: Vec<Completion> = Vec::with_capacity(MAX_BATCH);
    loop {
        if pending.is_empty() {
            match rx.blocking_recv() {
                Some(q) => pending.push(q),
                None => break,
            }
        }
        take_waiting(&mut rx, &mut pending);
        let started = Instant::now();
        let failure = match run_cached(&conn, "BEGIN IMMEDIATE") {
            Ok(()) => {
                let take = pending.urgent.len().min(MAX_BATCH);
                completions.extend(pending.urgent.drain(..take).map(|job| job(&conn)));
                while completions.len() < MAX_BATCH && started.elapsed() < BULK_BUDGET {
                    let Some(job) = pending.bulk.pop_front() else { break };
                    completions.push(job(&conn));
                    // An urgent job that came meanwhile ends the bulk work and
                    // joins this commit, rather than waiting for all of it.
                    take_waiting(&mut rx, &mut pending);
                    if !pending.urgent.is_empty() {
                        break;
                    }
                }
                let take = pending.urgent.len().min(MAX_BATCH - completions.len());
                completions.extend(pending.urgent.drain(..take).map(|job| job(&conn)));
                match run_cached(&conn, "COMMIT") {
                    Ok(()) => {
                        // Durable now, and nobody answered yet.
                        APPENDED.with(|a| tails.appended(a.borrow_mut().drain(..).as_slice()));
                        LEFT.with(|l| {
                            tails.left(&l.borrow());
                            l.borrow_mut().clear();
                        });
                        None
                    }
                    Err(e) => {
                        let _ = conn.execute_batch("ROLLBACK");
                        // Seqs of the lost batch were never stored, nor
                        // the memberships it added.
                        LAST_SEQ.with(|m| m.borrow_mut().clear());
                        MEMBERS.with(|m| m.borrow_mut().clear());
                        APPENDED.with(|a| a.borrow_mut().clear());
                        LEFT.with(|l| l.borrow_mut().clear());
                        Some(StoreError::from(e))
                    }
                }
            }
            Err(e) => {
                // Nothing ran. Dropping the jobs drops their reply channels,
                // which their callers see as `Unavailable`.
                pending = Pending::default();
                Some(StoreError::from(e))
            }
        };
        let size = completions.len();
        if let Some(e) = &failure {
            tracing::error!(error = %e, jobs = size, "store commit failed");
        }
        metrics::histogram!("store_commit_batch_size").record(size as f64);
        metrics::histogram!("store_commit_latency_ms").record(started.elapsed().as_secs_f64() * 1e3);
        for done in completions.drain(..) {
            done(failure.as_ref());
        }
    }
    tracing::debug!("store writer stopped");
}
