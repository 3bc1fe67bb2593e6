//! The asynchronous fan-out queue for groups above the sync threshold.
//!
//! A bounded queue of jobs, each one stored message to push to every member
//! device, drained by a worker task. The sender's `sent` goes out before the
//! job runs, so it does not wait on delivery to a large group. The queue is
//! bounded twice: in jobs, and in pushes waiting (members summed over the
//! jobs), since one message to 10,000 members is 10,000 pushes. When either
//! bound is reached, new sends to large groups wait for room (backpressure)
//! instead of the queue growing, so a sender cannot run ahead of delivery by
//! more than [`FANOUT_PUSHES`].

use crate::hub::{Push, Stored};
use crate::state::AppState;
use banter_store::UserId;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Capacity of the fan-out queue, in jobs.
pub const FANOUT_QUEUE: usize = 1_024;
/// Capacity of the fan-out queue, in pushes: member users of the queued jobs.
pub const FANOUT_PUSHES: usize = 200_000;

/// One stored message to push to every member device.
#[derive(Debug)]
pub struct Job {
    pub members: Arc<[UserId]>,
    pub message: Arc<Stored>,
}

/// A queued job, holding its share of [`FANOUT_PUSHES`] until it has run.
#[derive(Debug)]
struct Queued {
    job: Job,
    _pushes: OwnedSemaphorePermit,
}

/// The queue's sending side; the receiver is taken by [`Fanout::run`].
#[derive(Debug)]
pub struct Fanout {
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    pushes: Arc<Semaphore>,
}

impl Default for Fanout {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(FANOUT_QUEUE);
        Fanout { tx, rx: Mutex::new(Some(rx)), pushes: Arc::new(Semaphore::new(FANOUT_PUSHES)) }
    }
}

impl Fanout {
    /// Queues a job, waiting while the queue is full.
    pub async fn enqueue(&self, job: Job) {
        metrics::gauge!("fanout_queue_depth").set((FANOUT_QUEUE - self.tx.capacity()) as f64);
        // A group larger than the whole bound takes all of it.
        let n = job.members.len().clamp(1, FANOUT_PUSHES) as u32;
        let Ok(pushes) = Arc::clone(&self.pushes).acquire_many_owned(n).await else { return };
        let _ = self.tx.send(Queued { job, _pushes: pushes }).await;
    }

    /// The worker: pushes each queued message to every member device.
    pub async fn run(state: Arc<AppState>) {
        let Some(mut rx) = state.fanout.rx.lock().expect("fanout lock").take() else { return };
        loop {
            let queued = tokio::select! {
                job = rx.recv() => match job { Some(j) => j, None => return },
                _ = state.shutdown.cancelled() => return,
            };
            metrics::gauge!("fanout_queue_depth").set(rx.len() as f64);
            push_message(&state, &queued.job.members, &queued.job.message);
            drop(queued);
            tokio::task::yield_now().await;
        }
    }
}

/// Pushes one stored message to every member device.
pub fn push_message(state: &AppState, members: &[UserId], message: &Arc<Stored>) {
    state.hub.push_users(members, |_, _| Some(Push::Message(Arc::clone(message))));
}
