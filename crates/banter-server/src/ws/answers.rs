//! The answer path: sends are read, stored and answered (`sent` or an
//! error) on a small runtime of their own, apart from the runtime that runs
//! the connections and delivers messages.
//!
//! A message to a large group wakes one connection task per member. Were a
//! sender's frames read, and its `sent` written, by its own connection task,
//! both would wait in the run queue behind all of those, and a sender to a
//! group of 10,000 would hear back only after 10,000 other tasks had run.
//! Instead each connection's reader ([`super::reader`]) runs on the answer
//! runtime and owns the connection's [`Answers`]: its pipelined sends, whose
//! answers it writes through the connection's shared write half. So a
//! `sent` waits for its commit and not for delivery work.
//!
//! Answers of one connection keep the order its sends arrived in, and a
//! connection has at most [`MAX_PENDING_SENDS`] sends in flight; past that
//! its reader stops reading.

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
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// Sends of one connection being stored at once; past it the connection stops reading.
pub const MAX_PENDING_SENDS: usize = 256;
/// Threads of the answer runtime.
pub const ANSWER_THREADS: usize = 2;

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

/// The sends of one connection being stored, answered in the order they arrived.
pub(super) struct Answers {
    sends: FuturesOrdered<BoxFuture<'static, SendResult>>,
    sink: Arc<Mutex<Sink>>,
    control: Arc<Control>,
    /// Cleared when a write failed: the rest are stored but not answered.
    writable: bool,
    out: Vec<Message>,
}

impl Answers {
    pub(super) fn new(sink: Arc<Mutex<Sink>>, control: Arc<Control>) -> Answers {
        Answers { sends: FuturesOrdered::new(), sink, control, writable: true, out: Vec::new() }
    }

    /// Whether another send may be taken now.
    pub(super) fn has_room(&self) -> bool {
        self.sends.len() < MAX_PENDING_SENDS
    }

    /// Whether any send is being stored.
    pub(super) fn busy(&self) -> bool {
        !self.sends.is_empty()
    }

    /// Takes a send; the caller checks [`Answers::has_room`] first.
    pub(super) fn push(&mut self, send: BoxFuture<'static, SendResult>) {
        self.sends.push_back(send);
    }

    /// The next send stored (or failed), in arrival order; pending while none is.
    pub(super) async fn next(&mut self) -> Option<SendResult> {
        self.sends.next().await
    }

    /// Writes the answer to `done`, and to every later send already finished
    /// (those of one commit finish together), in one write.
    pub(super) async fn answer(&mut self, done: SendResult) {
        self.out.push(answer_frame(done));
        while let Some(Some(done)) = self.sends.next().now_or_never() {
            self.out.push(answer_frame(done));
        }
        if !self.writable {
            self.out.clear();
            return;
        }
        // Boxed: kept inline, this future would sit in every reader's state
        // for the connection's whole life, idle or not.
        match Box::pin(write_all(&self.sink, &mut self.out)).await {
            Ok(()) => {}
            Err(Unwritten::Failed) => self.writable = false,
            Err(Unwritten::Stalled) => {
                self.writable = false;
                self.control.close(close::SLOW_CONSUMER);
            }
        }
    }

    /// Answers every send taken, waiting up to `limit`, so that a closing
    /// connection leaves no committed message without its `sent`.
    pub(super) async fn finish(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            while let Some(done) = self.sends.next().await {
                self.answer(done).await;
            }
        })
        .await;
    }
}

fn answer_frame((client_msg_id, _conversation, result): SendResult) -> Message {
    match result {
        Ok(m) => frame(&views::sent_frame(&m)),
        Err(e) => error_frame(e.code, e.message, Some(client_msg_id)),
    }
}
