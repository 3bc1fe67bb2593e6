//! The answer path: sends are read, stored and answered (`sent` or an
//! error) on a small runtime of its own (the sending lane, [`Lanes`]),
//! apart from the runtime that runs the connections and delivers messages.
//!
//! A message to a large group wakes one connection task per member. Were a
//! sender's frames read, and its `sent` written, by its own connection task,
//! both would wait in the run queue behind all of those, and a sender to a
//! group of 10,000 would hear back only after 10,000 other tasks had run.
//! Instead each connection's reader ([`super::reader`]) owns the
//! connection's [`Answers`]: its pipelined sends, whose answers it writes
//! through the connection's shared write half; and a reader that sends runs
//! on the sending lane. So a `sent` waits for its commit and not for
//! delivery work.
//!
//! Answers of one connection keep the order its sends arrived in, and a
//! connection has at most [`MAX_PENDING_SENDS`] sends in flight; past that
//! its reader stops reading.

use super::connection::{error_frame, frame, write_all, SendResult, Sink, Unwritten};
use crate::hub::Control;
use crate::priority::DeliveryPriority;
use crate::side_runtime::SideRuntime;
use crate::views;
use axum::extract::ws::Message;
use banter_proto::close;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::Mutex;

/// Sends of one connection being stored at once; past it the connection stops reading.
pub const MAX_PENDING_SENDS: usize = 256;
/// Which runtime a connection's reader runs on.
///
/// Readers start on the quiet lane and move to the sending lane when they
/// read a `send`; one that has read no `send` for [`super::reader::QUIET_AFTER`]
/// moves back. So the readers that store and answer sends do not queue
/// behind the readers of a large group's members, whose acks for one message
/// wake 10,000 of them at once.
///
/// The quiet lane is the main runtime itself, where the connection tasks
/// run and where the sockets report that they can be read: a quiet reader
/// is polled by the thread that saw its frame arrive, with no hand-off to
/// another thread, and its acks are applied on the runtime of the
/// connection task that wants them. (It was a runtime of its own. On two
/// cores, moving it here took a sender's `sent` p99 in a group of 10,000
/// from 21 to 13 ms at 10 messages/s and from 32 to 14 ms as fast as
/// `sent` allows, direct throughput staying within the noise, and devices
/// that send every 5 s beside that group's load heard `sent` sooner too;
/// BENCHMARKS.md, "What each change bought".)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Readers of connections that have not sent lately (mostly acks), on the main runtime.
    Quiet,
    /// Readers of connections that send, on the sending lane's runtime.
    Sending,
}

/// Where the readers of each lane run.
#[derive(Debug)]
pub struct Lanes {
    /// The main runtime.
    quiet: Handle,
    sending: SideRuntime,
}

impl Lanes {
    /// The two lanes: the quiet one on the main runtime, whose handle this
    /// takes (so it is called on that runtime), and so at the priority of
    /// delivery ([`crate::priority`]); the sending one on threads of its
    /// own, at normal priority.
    pub fn new() -> std::io::Result<Lanes> {
        let quiet = Handle::try_current().map_err(std::io::Error::other)?;
        let threads = crate::threads::lane_threads();
        Ok(Lanes { quiet, sending: SideRuntime::new("banter-answers", threads, DeliveryPriority::Normal)? })
    }

    /// Runs `future` on the runtime of `lane`.
    pub(super) fn spawn<F>(&self, lane: Lane, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let runtime = match lane {
            Lane::Quiet => &self.quiet,
            Lane::Sending => self.sending.handle(),
        };
        // The task is not joined (its end is signalled by the reader itself).
        drop(runtime.spawn(future));
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
    /// connection leaves no committed message without its `sent`. Sends
    /// still unfinished then go on, unanswered, on a task of their own that
    /// polls them together as the reader did, so they reach the store's
    /// queue in the order they were read (each finishing on a task of its
    /// own, as [`crate::finish::Finish`] would make them, they could not be
    /// kept in order), and a message stored is pushed.
    pub(super) async fn finish(&mut self, limit: Duration) {
        let answered = tokio::time::timeout(limit, async {
            while let Some(done) = self.sends.next().await {
                self.answer(done).await;
            }
        })
        .await;
        if answered.is_err() && !self.sends.is_empty() {
            let mut rest = std::mem::take(&mut self.sends);
            drop(tokio::spawn(async move { while rest.next().await.is_some() {} }));
        }
    }
}

fn answer_frame((client_msg_id, _conversation, result): SendResult) -> Message {
    match result {
        Ok(m) => frame(&views::sent_frame(&m)),
        Err(e) => error_frame(e.code, e.message, Some(client_msg_id)),
    }
}
