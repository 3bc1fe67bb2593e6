//! Ack batching: the acks of every device of this node share transactions.
//!
//! The server stores the acks of many devices every few milliseconds (a
//! node's ack buffer calls `ack_many`, which calls `ack` per device, and a
//! closing connection calls `ack` for its own); one transaction (and one WAL
//! flush) per device would make acks, not messages, the load on PostgreSQL.
//! Instead `ack` calls go into one bounded
//! queue, and one task stores whatever is waiting (up to [`MAX_ACK_BATCH`]
//! devices) in one transaction on a connection of its own, then answers each
//! caller. While one batch commits, the next gathers.

use super::cursors;
use crate::{ConversationId, DeviceAcks, Result, StoreError};
use deadpool_postgres::Pool;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most devices' acks stored in one transaction.
pub const MAX_ACK_BATCH: usize = 512;
/// Devices' acks that may wait for a batch before `ack` waits.
const ACK_QUEUE: usize = 8_192;

type Rose = Vec<(ConversationId, u64)>;

struct Job {
    acks: DeviceAcks,
    reply: oneshot::Sender<Result<Rose>>,
}

/// The handle through which `ack` submits a device's acks.
#[derive(Debug, Clone)]
pub(super) struct AckLane {
    queue: mpsc::Sender<Job>,
}

impl AckLane {
    /// Starts the lane's task on the current tokio runtime; batches take at most `deadline`.
    pub(super) fn start(pool: Pool, deadline: Duration) -> AckLane {
        let (queue, rx) = mpsc::channel(ACK_QUEUE);
        tokio::spawn(run(pool, rx, deadline));
        AckLane { queue }
    }

    /// Stores one device's acks in a coming batch; answers after it commits.
    pub(super) async fn ack(&self, acks: DeviceAcks) -> Result<Rose> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { acks, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the store is shut down".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the store stopped before storing the acks".into()))?
    }
}

async fn run(pool: Pool, mut queue: mpsc::Receiver<Job>, deadline: Duration) {
    let mut jobs = Vec::with_capacity(MAX_ACK_BATCH);
    while queue.recv_many(&mut jobs, MAX_ACK_BATCH).await > 0 {
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let (devices, replies): (Vec<DeviceAcks>, Vec<_>) = jobs.drain(..).map(|j| (j.acks, j.reply)).unzip();
        let stored = tokio::time::timeout(deadline, async {
            let mut client = pool.get().await?;
            cursors::ack(&mut client, &devices).await
        })
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("PostgreSQL did not store the acks in time".into())));
        match stored {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, devices = devices.len(), "storing a batch of acks failed");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
