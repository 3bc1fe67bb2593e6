//! The answer path: sends are stored and answered (`sent` or an error) on a
//! small runtime of their own, apart from the runtime that runs the
//! connections.
//!
//! A message to a large group wakes one connection task per member. Were a
//! sender's `sent` written by its own connection task, it would wait in the
//! run queue behind all of those, and a sender to a group of 10,000 would
//! hear back only after 10,000 other tasks had run. Here each connection
//! that sends has an answer task on the answer runtime, which owns its
//! pipelined sends and writes their answers through the connection's shared
//! write half, so a `sent` waits for its commit and not for delivery work.
//!
//! Answers of one connection keep the order its sends arrived in. A
//! connection has at most [`MAX_PENDING_SENDS`] sends in flight: each holds a
//! permit, given back once it is answered.

use super::connection::{error_frame, frame, write_all, SendResult, Sink, Unwritten};
use crate::hub::Control;
use crate::views;
use axum::extract::ws::Message;
use banter_proto::close;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Sends of one connection being stored at once; past it the connection stops reading.
pub const MAX_PENDING_SENDS: usize = 256;
/// Threads of the answer runtime.
pub const ANSWER_THREADS: usize = 1;

/// The runtime that stores and answers sends.
pub struct AnswerRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl AnswerRuntime {
    pub fn new() -> std::io::Result<AnswerRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(ANSWER_THREADS)
            .thread_name("banter-answers")
            .enable_all()
            .build()?;
        Ok(AnswerRuntime { runtime: Some(runtime) })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("present until dropped").handle()
    }

    /// Runs `future` on the answer runtime.
    pub(super) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle().spawn(future)
    }
}

impl Drop for AnswerRuntime {
    fn drop(&mut self) {
        // Dropped from async code too, where waiting for its threads would block.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for AnswerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerRuntime")
    }
}

/// A send on its way to the answer task, with its in-flight permit.
struct Pending {
    send: BoxFuture<'static, SendResult>,
    _permit: OwnedSemaphorePermit,
}

/// One connection's end of its answer task.
pub(super) struct Answers {
    permits: Arc<Semaphore>,
    task: Option<(mpsc::UnboundedSender<Pending>, JoinHandle<()>)>,
}

impl Answers {
    pub(super) fn new() -> Answers {
        Answers { permits: Arc::new(Semaphore::new(MAX_PENDING_SENDS)), task: None }
    }

    /// Whether another send may be taken now.
    pub(super) fn has_room(&self) -> bool {
        self.permits.available_permits() > 0
    }

    /// Resolves once a send has been answered, when none could be taken.
    pub(super) async fn room(&self) {
        if let Ok(p) = self.permits.acquire().await {
            drop(p);
        }
    }

    /// Hands a send to the answer task, starting the task with the first
    /// send. Returns `false`, and drops the send, when [`MAX_PENDING_SENDS`]
    /// are in flight already (the connection reads only with room, so it
    /// never comes to that).
    pub(super) fn submit(
        &mut self,
        runtime: &AnswerRuntime,
        sink: &Arc<Mutex<Sink>>,
        control: &Arc<Control>,
        send: BoxFuture<'static, SendResult>,
    ) -> bool {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else { return false };
        let (tx, _) = self.task.get_or_insert_with(|| {
            // Unbounded, yet never longer than the permits allow.
            let (tx, rx) = mpsc::unbounded_channel();
            let task = runtime.spawn(answer(rx, Arc::clone(sink), Arc::clone(control)));
            (tx, task)
        });
        tx.send(Pending { send, _permit: permit }).is_ok()
    }

    /// Waits, up to `limit`, for every send handed over to be answered.
    pub(super) async fn finish(&mut self, limit: Duration) {
        if let Some((tx, task)) = self.task.take() {
            drop(tx);
            let _ = tokio::time::timeout(limit, task).await;
        }
    }
}

/// The answer task of one connection: stores its sends in order and writes
/// each one's answer, those finished together in one write.
async fn answer(mut rx: mpsc::UnboundedReceiver<Pending>, sink: Arc<Mutex<Sink>>, control: Arc<Control>) {
    let mut sends = FuturesOrdered::new();
    let mut open = true;
    let mut writable = true;
    let mut out = Vec::new();
    while open || !sends.is_empty() {
        tokio::select! {
            biased;
            Some(done) = sends.next(), if !sends.is_empty() => {
                out.push(answer_frame(done));
                while let Some(Some(done)) = sends.next().now_or_never() {
                    out.push(answer_frame(done));
                }
                if writable {
                    match write_all(&sink, &mut out).await {
                        Ok(()) => {}
                        Err(Unwritten::Failed) => writable = false,
                        Err(Unwritten::Stalled) => {
                            writable = false;
                            control.close(close::SLOW_CONSUMER);
                        }
                    }
                }
                out.clear();
            }
            next = rx.recv(), if open => match next {
                Some(Pending { send, _permit }) => sends.push_back(send.map(move |r| (r, _permit))),
                None => open = false,
            },
        }
    }
}

fn answer_frame(((client_msg_id, _conversation, result), _permit): (SendResult, OwnedSemaphorePermit)) -> Message {
    match result {
        Ok(m) => frame(&views::sent_frame(&m)),
        Err(e) => error_frame(e.code, e.message, Some(client_msg_id)),
    }
}
