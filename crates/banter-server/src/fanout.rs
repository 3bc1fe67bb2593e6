//! The asynchronous fan-out queue for groups above the sync threshold.
//!
//! A bounded queue of jobs, each one stored message to push to every member
//! device, drained by a worker task. The sender's `sent` goes out before the
//! job runs, so it never waits on delivery to a large group; when the queue
//! is full, new sends wait for room (backpressure) instead of the queue growing.

use crate::hub::{Push, Stored};
use crate::state::AppState;
use banter_store::UserId;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Capacity of the fan-out queue, in jobs.
pub const FANOUT_QUEUE: usize = 1_024;

/// One stored message to push to every member device.
#[derive(Debug)]
pub struct Job {
    pub members: Arc<[UserId]>,
    pub message: Arc<Stored>,
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
            push_message(&state, &job.members, &job.message);
            tokio::task::yield_now().await;
        }
    }
}

/// Pushes one stored message to every member device.
pub fn push_message(state: &AppState, members: &[UserId], message: &Arc<Stored>) {
    state.hub.push_users(members, |_, _| Some(Push::Message(Arc::clone(message))));
}
