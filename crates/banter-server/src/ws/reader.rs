//! The read half of a connection, run on a reader lane: the sending lane's
//! runtime, or the main runtime for a connection that has not sent lately.
//!
//! After the `welcome`, a reader task takes the socket's read half. It
//! applies the rate limit, parses every frame, and stores and answers each
//! `send` itself ([`super::answers`]); every other frame, and every error it
//! answers, goes to the connection task through the connection's push
//! queue, in the order it came. So a send is read, stored and answered
//! without waiting for a turn on the runtime that delivers messages, however
//! many connections a large group just woke there (but for a device's first
//! send after a quiet spell, which is read on the main runtime).
//!
//! The reader is one loop over four events: a stop from its connection, a
//! send stored, room in the push queue for what waits to go there, and the
//! next frame, read only when nothing waits to go to the connection and
//! fewer than [`super::answers::MAX_PENDING_SENDS`] sends are in flight. The
//! connection task stops its reader when it closes and gets the read half
//! back, for the closing handshake.
//!
//! A reader starts on the quiet lane and moves to the sending lane with the
//! first `send` it reads; after [`QUIET_AFTER`] without one it moves back
//! with the next frame it reads ([`super::answers::Lane`]). A move ends the
//! task and starts another with the same state on the other lane, between
//! two frames, so frames are still read, and sends stored, in order.

use super::answers::{Answers, Lane};
use super::connection::{is_too_big, Sink, Stream, MAX_BAD_FRAMES, SEND_DRAIN_TIMEOUT};
use super::held::Offered;
use super::rate::RateLimit;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::hub::{Control, Push};
use crate::messaging::{self, SendRequest};
use crate::state::AppState;
use crate::views::parse_id;
use axum::extract::ws::Message;
use banter_proto::frame::FrameRef;
use banter_proto::{close, ClientFrame, ErrorCode, ServerFrame};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Mutex};
use tokio::time::Instant;

/// A reader on the sending lane that has read no `send` for this long moves
/// back to the quiet lane with the next frame it reads.
pub const QUIET_AFTER: Duration = Duration::from_secs(2);

/// How a reader is told to stop: with where to give the read half back.
type Stop = oneshot::Receiver<oneshot::Sender<Stream>>;

/// The connection task's handle on its reader.
pub(super) struct Reader {
    stop: oneshot::Sender<oneshot::Sender<Stream>>,
}

impl Reader {
    /// Starts the reader of an authenticated connection, on the quiet lane.
    pub(super) fn start(
        state: &Arc<AppState>,
        auth: Auth,
        stream: Stream,
        sink: Arc<Mutex<Sink>>,
        control: Arc<Control>,
    ) -> Reader {
        let (stop, stopped) = oneshot::channel();
        let r = ReadLoop {
            state: Arc::clone(state),
            auth,
            answers: Answers::new(sink, Arc::clone(&control)),
            control,
            rate: RateLimit::new(state.config.rate_limit_per_sec, state.config.rate_limit_burst),
            bad_frames: 0,
            waiting: VecDeque::new(),
            ended: false,
            lane: Lane::Quiet,
            last_send: Instant::now(),
            move_to: None,
        };
        r.start(stream, stopped);
        Reader { stop }
    }

    /// Stops reading, waits (up to [`SEND_DRAIN_TIMEOUT`]) for the sends
    /// already read to be answered, and gives the read half back. `None` if
    /// the reader is gone (it panicked, or its runtime shut down).
    pub(super) async fn stop(self) -> Option<Stream> {
        let (give, back) = oneshot::channel();
        self.stop.send(give).ok()?;
        back.await.ok()
    }
}

struct ReadLoop {
    state: Arc<AppState>,
    auth: Auth,
    control: Arc<Control>,
    answers: Answers,
    rate: RateLimit,
    bad_frames: u32,
    /// Pushes waiting for room in the connection's push queue (at most two).
    waiting: VecDeque<Push>,
    /// The socket ended or must close: read no more.
    ended: bool,
    /// The lane this reader runs on.
    lane: Lane,
    /// When it last read a `send`.
    last_send: Instant,
    /// The lane to move to, between this frame and the next.
    move_to: Option<Lane>,
}

/// What a frame from the client comes to.
enum Outcome {
    /// Nothing more for the connection task to do.
    Done,
    /// Hand this to the connection task.
    Forward(Push),
    /// Hand these to the connection task, then stop reading.
    Last(Option<Push>, Push),
}

impl ReadLoop {
    /// Runs this reader as a task of its lane.
    fn start(self, stream: Stream, stop: Stop) {
        let state = Arc::clone(&self.state);
        state.readers.spawn(self.lane, self.run(stream, stop));
    }

    /// Reads until stopped, or until it moves to the other lane.
    ///
    /// An `async` block rather than an `async fn`: the block uses what it
    /// captures in place, where an `async fn` would keep its arguments twice
    /// (as given and as bound), in every reader's task.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self, mut stream: Stream, mut stop: Stop) -> impl std::future::Future<Output = ()> + Send {
        async move {
            let give_back = loop {
                let reading = !self.ended && self.waiting.is_empty() && self.answers.has_room();
                tokio::select! {
                    biased;
                    give_back = &mut stop => break give_back.ok(),
                    Some(done) = self.answers.next(), if self.answers.busy() => self.answers.answer(done).await,
                    moved = std::future::poll_fn(|cx| self.control.pushes.poll_push(cx, &mut self.waiting)),
                        if !self.waiting.is_empty() => if moved.is_err() {
                        // The connection is gone: nothing more to read for.
                        break None;
                    },
                    next = stream.next(), if reading => {
                        let outcome = match next {
                            Some(Ok(msg)) => self.on_message(msg),
                            Some(Err(e)) if is_too_big(&e) => Outcome::Last(None, Push::Close(close::TOO_BIG)),
                            Some(Err(_)) | None => Outcome::Last(None, Push::Gone),
                        };
                        match outcome {
                            Outcome::Done => {}
                            Outcome::Forward(p) => self.waiting.push_back(p),
                            Outcome::Last(p, end) => {
                                self.waiting.extend(p);
                                self.waiting.push_back(end);
                                self.ended = true;
                            }
                        }
                    }
                }
                if let Some(lane) = self.move_to.take() {
                    self.lane = lane;
                    let sending = &self.state.meters.sending;
                    match lane {
                        Lane::Sending => sending.increment(1.0),
                        Lane::Quiet => sending.decrement(1.0),
                    }
                    return self.start(stream, stop);
                }
            };
            if self.lane == Lane::Sending {
                self.state.meters.sending.decrement(1.0);
            }
            // Boxed, like the write in `Answers::answer`, to keep every reader's state small.
            Box::pin(self.answers.finish(SEND_DRAIN_TIMEOUT)).await;
            if let Some(give_back) = give_back {
                let _ = give_back.send(stream);
            }
        }
    }

    /// Notes a frame read at `now`, and whether it was a `send`, for the lane choice.
    fn on_lane(&mut self, now: Instant, send: bool) {
        match (self.lane, send) {
            (Lane::Quiet, true) => self.move_to = Some(Lane::Sending),
            (Lane::Sending, false) if now - self.last_send >= QUIET_AFTER && !self.answers.busy() => {
                self.move_to = Some(Lane::Quiet)
            }
            _ => {}
        }
        if send {
            self.last_send = now;
        }
    }

    fn on_message(&mut self, msg: Message) -> Outcome {
        self.control.touch();
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => return self.bad_frame("binary frames are not supported".into(), None),
            Message::Close(_) => return Outcome::Last(None, Push::Close(close::NORMAL)),
            Message::Ping(_) | Message::Pong(_) => return Outcome::Done,
        };
        let now = Instant::now();
        if !self.rate.allow(now) {
            let reference = FrameRef::of(&text);
            return error(ErrorCode::RateLimited, "too many frames; slow down".into(), reference);
        }
        let parsed = match ClientFrame::parse(&text) {
            Ok(f) => f,
            Err(e) => return self.bad_frame(format!("bad frame: {e}"), FrameRef::of(&text)),
        };
        self.bad_frames = 0;
        self.on_lane(now, matches!(parsed, ClientFrame::Send { .. }));
        match parsed {
            ClientFrame::Send { client_msg_id, conversation_id, content } => {
                let Some(conversation) = parse_id(&conversation_id) else {
                    let e = ApiError::not_found();
                    return error(e.code, e.message, Some(client_msg_id));
                };
                let state = Arc::clone(&self.state);
                let req = SendRequest {
                    sender: self.auth.user_id,
                    device: self.auth.device_id,
                    conversation_id: conversation,
                    client_msg_id: client_msg_id.clone(),
                    content,
                    exclude_origin: true,
                };
                // Unconstrained, so that its first poll always reaches the
                // store's queue (or waits in line for room there): were
                // tokio's cooperative budget to send it back first, the
                // sends in flight would poll a later send before it, and the
                // two would get their seqs in the wrong order.
                self.answers.push(Box::pin(tokio::task::unconstrained(async move {
                    let result = messaging::send(&state, req).await;
                    (client_msg_id, conversation, result)
                })));
                Outcome::Done
            }
            // Held for the connection task, which is woken only if it wants acks now (`held.rs`).
            // One not held (a bad id, or too many conversations held) goes as any frame.
            ClientFrame::Ack { conversation_id, seq } => {
                match parse_id(&conversation_id).map(|c| self.control.held.offer(c, seq)) {
                    Some(Offered::Held) => Outcome::Done,
                    Some(Offered::Wake) => Outcome::Forward(Push::Acks),
                    Some(Offered::Full) | None => {
                        Outcome::Forward(Push::Client(Box::new(ClientFrame::Ack { conversation_id, seq })))
                    }
                }
            }
            other => Outcome::Forward(Push::Client(Box::new(other))),
        }
    }

    fn bad_frame(&mut self, message: String, reference: Option<String>) -> Outcome {
        self.bad_frames += 1;
        let answer = error_push(ErrorCode::InvalidFrame, message, reference);
        if self.bad_frames >= MAX_BAD_FRAMES {
            return Outcome::Last(Some(answer), Push::Close(close::POLICY));
        }
        Outcome::Forward(answer)
    }
}

/// An error frame for the connection task to write.
fn error(code: ErrorCode, message: String, reference: Option<String>) -> Outcome {
    Outcome::Forward(error_push(code, message, reference))
}

fn error_push(code: ErrorCode, message: String, reference: Option<String>) -> Push {
    Push::Event(crate::hub::frame(ServerFrame::Error { code, message, reference }.to_json()))
}
