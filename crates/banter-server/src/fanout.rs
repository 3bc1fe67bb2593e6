//! The asynchronous fan-out queue for groups above the sync threshold.
//!
//! A bounded queue of jobs, each one stored message to push to every member
//! device, drained by a worker task. The sender's `sent` goes out before the
//! job runs, so it never waits on delivery to a large group; when the queue
//! is full, new sends wait for room (backpressure) instead of the queue growing.

use crate::hub::Push;
use crate::state::AppState;
use axum::extract::ws::Utf8Bytes;
use banter_store::{ConversationId, DeviceId, UserId};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Capacity of the fan-out queue, in jobs.
pub const FANOUT_QUEUE: usize = 1_024;

/// One stored message to push to every member device.
#[derive(Debug)]
pub struct Job {
    pub members: Arc<[UserId]>,
    pub conversation_id: ConversationId,
    pub seq: u64,
    pub ts: i64,
    pub frame: Utf8Bytes,
    /// The sending device, which gets `sent` instead of the message.
    pub origin: Option<DeviceId>,
}

/// The queue's sending side; the receiver is taken by [`Fanout::run`].
#[derive(Debug)]
pub struct Fanout {
    tx: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
}

impl Default for Fanout {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(FANOUT_QUEUE);
        Fanout { tx, rx: Mutex::new(Some(rx)) }
    }
}

impl Fanout {
    /// Queues a job, waiting while the queue is full.
    pub async fn enqueue(&self, job: Job) {
        metrics::gauge!("fanout_queue_depth").set((FANOUT_QUEUE - self.tx.capacity()) as f64);
        let _ = self.tx.send(job).await;
    }

    /// The worker: pushes each queued message to every member device.
    pub async fn run(state: Arc<AppState>) {
        let Some(mut rx) = state.fanout.rx.lock().expect("fanout lock").take() else { return };
        loop {
            let job = tokio::select! {
                job = rx.recv() => match job { Some(j) => j, None => return },
                _ = state.shutdown.cancelled() => return,
            };
            metrics::gauge!("fanout_queue_depth").set(rx.len() as f64);
            push_message(&state, &job.members, job.conversation_id, (job.seq, job.ts), &job.frame, job.origin);
            tokio::task::yield_now().await;
        }
    }
}

/// Pushes one stored message to every member device (the origin device gets a
/// position-only hint so its delivery state skips its own message).
pub fn push_message(
    state: &AppState,
    members: &[UserId],
    conversation_id: ConversationId,
    (seq, ts): (u64, i64),
    frame: &Utf8Bytes,
    origin: Option<DeviceId>,
) {
    state.hub.push_users(members, |_, device| {
        Some(Push::Message { conversation_id, seq, ts, frame: frame.clone(), own: origin == Some(device) })
    });
}
