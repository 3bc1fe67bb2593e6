//! The asynchronous fan-out queue for groups above the sync threshold.
//!
//! A bounded queue of jobs, each one stored message to push to every member
//! device, drained by a worker task. The sender's `sent` goes out before the
//! job runs, so it does not wait on delivery to a large group.
//!
//! The queue is bounded twice: in jobs ([`FANOUT_QUEUE`]), and in pushes
//! ([`FANOUT_PUSHES`]), since one message to 10,000 members is 10,000 pushes.
//! A job takes room for a push per member when it is queued; the pushes the
//! worker makes keep it until each connection has handled its push (or the
//! push was dropped); a connection gives back the units of the pushes it
//! handled in one turn of its loop together, since every give-back takes the
//! semaphore's lock. So the bound covers the jobs waiting and the pushes
//! waiting in connections' channels, and when it is reached new sends to
//! large groups wait for room (backpressure): a sender cannot run ahead of
//! delivery by more than the bound.

use crate::hub::{MessagePush, Push, Stored};
use crate::state::AppState;
use banter_store::UserId;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Semaphore};

/// Capacity of the fan-out queue, in jobs.
pub const FANOUT_QUEUE: usize = 1_024;
/// Capacity of the fan-out queue, in pushes made and not yet handled.
pub const FANOUT_PUSHES: usize = 200_000;

/// One stored message to push to every member device.
#[derive(Debug)]
pub struct Job {
    pub members: Arc<[UserId]>,
    pub message: Arc<Stored>,
}

/// A queued job, with the room it took.
#[derive(Debug)]
struct Queued {
    job: Job,
    room: usize,
}

/// The queue's sending side; the receiver is taken by [`Fanout::run`].
#[derive(Debug)]
pub struct Fanout {
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    /// Room for pushes: one unit per member of a queued job, then per push made until it is handled.
    room: Arc<Semaphore>,
}

impl Default for Fanout {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(FANOUT_QUEUE);
        Fanout { tx, rx: Mutex::new(Some(rx)), room: Arc::new(Semaphore::new(FANOUT_PUSHES)) }
    }
}

impl Fanout {
    /// Queues a job, waiting while the queue is full.
    pub async fn enqueue(&self, job: Job) {
        metrics::gauge!("fanout_queue_depth").set((FANOUT_QUEUE - self.tx.capacity()) as f64);
        // A group larger than the whole bound takes all of it; the worker takes the rest.
        let room = job.members.len().clamp(1, FANOUT_PUSHES);
        match self.room.acquire_many(room as u32).await {
            Ok(p) => p.forget(),
            Err(_) => return,
        }
        let _ = self.tx.send(Queued { job, room }).await;
    }

    /// Gives back `units` of room, taken over from handled pushes ([`MessagePush::handle`]).
    pub fn give_back(&self, units: usize) {
        if units > 0 {
            self.room.add_permits(units);
        }
    }

    /// The worker: pushes each queued message to every member device.
    pub async fn run(state: Arc<AppState>) {
        let Some(mut rx) = state.fanout.rx.lock().expect("fanout lock").take() else { return };
        let room = Arc::clone(&state.fanout.room);
        loop {
            let Queued { job, room: taken } = tokio::select! {
                job = rx.recv() => match job { Some(j) => j, None => return },
                _ = state.shutdown.cancelled() => return,
            };
            metrics::gauge!("fanout_queue_depth").set(rx.len() as f64);
            let message = Arc::new(Stored { room: Some(Arc::clone(&room)), ..(*job.message).clone() });
            let made = push_message(&state, &job.members, &message);
            // Each push made holds one unit from now on: give back what the
            // job took beyond them (members not connected), or take what
            // more devices need, waiting while the bound is reached (in steps
            // of at most the bound, so a group larger than it still goes out).
            if made < taken {
                room.add_permits(taken - made);
            }
            let mut left = made.saturating_sub(taken);
            while left > 0 {
                let step = left.min(FANOUT_PUSHES);
                tokio::select! {
                    taken = room.acquire_many(step as u32) => match taken {
                        Ok(p) => p.forget(),
                        Err(_) => return,
                    },
                    _ = state.shutdown.cancelled() => return,
                }
                left -= step;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Pushes one stored message to every member device; returns how many pushes were made.
pub fn push_message(state: &AppState, members: &[UserId], message: &Arc<Stored>) -> usize {
    state.hub.push_users(members, |_, _| Some(Push::Message(MessagePush::new(Arc::clone(message)))))
}
