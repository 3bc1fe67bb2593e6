//! Append batching: the sends of one node share transactions.
//!
//! `append` calls go into one of a few lanes, chosen by conversation, so all
//! messages of a conversation sent through this node take the same lane. Each
//! lane is a bounded queue and a task that takes whatever is waiting (up to
//! `max_batch` messages), stores it in one transaction ([`super::append`]) on
//! a pooled connection, and answers each caller after the commit. While one
//! batch commits, the next gathers in the queue, so batches grow with the load.
//!
//! A lane has one batch in flight, which keeps the messages of a conversation
//! in the order this node received them; lanes run side by side on their own
//! connections. A full queue makes `append` wait, and the caller's deadline
//! bounds that wait. A message whose caller has given up before its batch
//! starts is dropped unstored.
//!
//! The lane tasks end when the last clone of the store is dropped (their
//! queues close), after finishing the batch in hand.

use super::append;
use crate::{Appended, NewMessage, Result, StoreError};
use deadpool_postgres::Pool;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A message waiting for its batch, with the way back to its caller.
struct Job {
    message: NewMessage,
    reply: oneshot::Sender<Result<Appended>>,
}

/// How the lanes are sized.
#[derive(Debug, Clone, Copy)]
pub(super) struct LaneSizes {
    pub(super) lanes: usize,
    pub(super) queue: usize,
    pub(super) max_batch: usize,
    /// How long one batch may take, connection wait included.
    pub(super) deadline: Duration,
}

/// The handle through which `append` submits messages.
#[derive(Debug, Clone)]
pub(super) struct Batcher {
    lanes: Vec<mpsc::Sender<Job>>,
}

impl Batcher {
    /// Starts the lane tasks on the current tokio runtime.
    pub(super) fn start(pool: Pool, sizes: LaneSizes) -> Batcher {
        let lanes = (0..sizes.lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(sizes.queue.max(1));
                tokio::spawn(run_lane(pool.clone(), rx, sizes));
                tx
            })
            .collect();
        Batcher { lanes }
    }

    /// Stores `message` in a coming batch; answers after that batch commits.
    pub(super) async fn append(&self, message: NewMessage) -> Result<Appended> {
        let lane = message.conversation_id.rem_euclid(self.lanes.len() as i64) as usize;
        let (reply, answer) = oneshot::channel();
        self.lanes[lane]
            .send(Job { message, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the store is shut down".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the store stopped before storing the message".into()))?
    }
}

async fn run_lane(pool: Pool, mut queue: mpsc::Receiver<Job>, sizes: LaneSizes) {
    let mut jobs = Vec::with_capacity(sizes.max_batch);
    while queue.recv_many(&mut jobs, sizes.max_batch.max(1)).await > 0 {
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let (messages, replies): (Vec<NewMessage>, Vec<_>) = jobs.drain(..).map(|j| (j.message, j.reply)).unzip();
        let size = messages.len();
        let started = Instant::now();
        let outcome = match tokio::time::timeout(sizes.deadline, commit(&pool, messages)).await {
            Ok(outcome) => outcome,
            // The transaction, if it began, is rolled back as it is dropped,
            // unless its commit had already reached the server: then the
            // messages are stored though their callers hear otherwise, and a
            // retry with the same `client_msg_id` finds them.
            Err(_) => Err(StoreError::Unavailable("PostgreSQL did not store the batch in time".into())),
        };
        metrics::histogram!("store_commit_batch_size").record(size as f64);
        metrics::histogram!("store_commit_latency_ms").record(started.elapsed().as_secs_f64() * 1e3);
        match outcome {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, messages = size, "storing a batch of messages failed");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
    tracing::debug!("store append lane stopped");
}

async fn commit(pool: &Pool, messages: Vec<NewMessage>) -> Result<Vec<Result<Appended>>> {
    let mut client = pool.get().await?;
    append::store_batch(&mut client, messages).await
}
