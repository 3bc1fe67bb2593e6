//! One WebSocket connection: the hello, then a task that owns the device's
//! delivery state, its acks and its timers, and writes its frames.
//!
//! The socket's read half goes to a reader on a reader lane
//! ([`super::reader`]), which stores and answers sends itself
//! ([`super::answers`]) and hands everything else to this task, through its
//! push queue. Every branch of the loop only changes state and queues frames in
//! `out`; one place ([`Connection::flush`]) writes them, feeding all and
//! flushing once, under a stall timeout so a client that stops reading
//! cannot pin the task. Nothing here waits on another connection.

mod commands;

use super::delivery::{Delivery, Live};
use super::reader::Reader;
use crate::auth::{authenticate, Auth};
use crate::cluster::deliver;
use crate::error::ApiError;
use crate::hub::{Control, Link, Push};
use crate::maps::FastSet;
use crate::presence::Presence;
use crate::state::AppState;
use crate::views;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use banter_proto::{close, ClientFrame, ErrorCode, ServerFrame};
use banter_store::{ConversationId, SeqRange, StoredMessage, UserId};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::{sleep_until, Instant, Sleep};

/// Time a client has to send its `hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Consecutive bad frames after which the connection is closed with 1008.
pub(super) const MAX_BAD_FRAMES: u32 = 32;
/// A write that makes no progress for this long closes the connection with 4004.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for a connection's sends to be stored and answered.
pub(super) const SEND_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most pushes taken from the channel before the loop writes.
const PUSH_BATCH: usize = 128;
/// After a failed read of the store, a connection reads again after a
/// random wait up to this, doubled after each failure in a row up to
/// [`STORE_RETRY_MAX`], so that connections do not all retry at once.
const STORE_RETRY: Duration = Duration::from_millis(500);
const STORE_RETRY_MAX: Duration = Duration::from_secs(10);
/// Most store pages streamed per loop turn, so other events are not starved.
const PAGES_PER_TURN: usize = 4;

pub(super) type Sink = SplitSink<WebSocket, Message>;
pub(super) type Stream = SplitStream<WebSocket>;
pub(super) type SendResult = (String, ConversationId, Result<Arc<StoredMessage>, ApiError>);

/// Runs a connection from the upgrade to the close.
///
/// The socket is split before the future is made, and the session is boxed:
/// the future of an `async fn` keeps room for its arguments for its whole
/// life, and this one lives in the task of every connection, rounded up to an
/// allocation size class. Split and boxed, the task holds two small halves
/// and a pointer, and the session one allocation of its own size.
pub(super) fn run(state: Arc<AppState>, socket: WebSocket) -> impl std::future::Future<Output = ()> + Send {
    let (mut sink, mut stream) = socket.split();
    async move {
        state.connections.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("websocket_connections").increment(1.0);
        // The hello is boxed, and so are the handling of a client frame and the
        // closing handshake below: kept inline, each would sit in every
        // connection's state for its whole life.
        if let Some(auth) = Box::pin(hello(&state, &mut sink, &mut stream)).await {
            Box::pin(session(&state, auth, sink, stream)).await;
        }
        state.connections.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("websocket_connections").decrement(1.0);
    }
}

pub(super) fn frame(f: &ServerFrame) -> Message {
    Message::Text(f.to_json().into())
}

pub(super) fn error_frame(code: ErrorCode, message: impl Into<String>, reference: Option<String>) -> Message {
    frame(&ServerFrame::Error { code, message: message.into(), reference })
}

/// How long the closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends a close frame, then reads until the client answers it, so that the
/// socket is not torn down with unread data (which would reset the
/// connection and lose the close frame on the way to the client).
async fn close_with(sink: &mut Sink, stream: &mut Stream, code: u16, reason: &'static str) {
    let msg = Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if sink.send(msg).await.is_err() {
            return;
        }
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
        let _ = sink.close().await;
    })
    .await;
}

/// What arrived first on a new connection.
enum First {
    Text(Utf8Bytes),
    /// Not a text frame, or nothing within [`HELLO_TIMEOUT`].
    Bad,
    /// A frame over the limit.
    TooBig,
    /// The connection went away.
    Gone,
}

/// Waits for a valid `hello`; anything else is answered `unauthorized` and closed with 4001.
async fn hello(state: &Arc<AppState>, sink: &mut Sink, stream: &mut Stream) -> Option<Auth> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            return match stream.next().await {
                Some(Ok(Message::Text(t))) => First::Text(t),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(_)) => First::Bad,
                Some(Err(e)) if is_too_big(&e) => First::TooBig,
                Some(Err(_)) | None => First::Gone,
            };
        }
    })
    .await
    .unwrap_or(First::Bad);
    let token = match first {
        First::Text(text) => match ClientFrame::parse(&text) {
            Ok(ClientFrame::Hello { token }) => Some(token),
            _ => None,
        },
        First::Bad => None,
        First::TooBig => {
            close_with(sink, stream, close::TOO_BIG, "frame too large").await;
            return None;
        }
        First::Gone => return None,
    };
    let auth = match token {
        Some(t) => authenticate(state, &t).await.ok(),
        None => None,
    };
    if auth.is_none() {
        let _ = sink
            .send(error_frame(
                ErrorCode::Unauthorized,
                "the first frame must be a hello with a valid token",
                Some("hello".into()),
            ))
            .await;
        close_with(sink, stream, close::UNAUTHORIZED, "unauthorized").await;
    }
    auth
}

pub(super) fn is_too_big(e: &axum::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        if let Some(tungstenite::Error::Capacity(_)) = err.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        src = err.source();
    }
    false
}

/// The reason sent with a close `code` that is not chosen where it is set.
fn close_reason(code: u16) -> &'static str {
    match code {
        close::REPLACED => "replaced by a new connection",
        close::SLOW_CONSUMER => "not reading",
        close::NORMAL => "bye",
        close::TOO_BIG => "frame too large",
        close::POLICY => "too many bad frames",
        close::GOING_AWAY => "server shutting down",
        _ => "logged out",
    }
}

/// Why frames were not written.
pub(super) enum Unwritten {
    /// The socket failed.
    Failed,
    /// No progress for [`WRITE_STALL_TIMEOUT`]: the client is not reading.
    Stalled,
}

/// Writes `out` (emptying it), feeding each frame and flushing once, under
/// [`WRITE_STALL_TIMEOUT`] so a client that stops reading cannot pin the caller.
pub(super) async fn write_all(sink: &Mutex<Sink>, out: &mut Vec<Message>) -> Result<(), Unwritten> {
    let written = tokio::time::timeout(WRITE_STALL_TIMEOUT, async {
        let mut sink = sink.lock().await;
        for m in out.drain(..) {
            sink.feed(m).await?;
        }
        sink.flush().await
    })
    .await;
    out.clear();
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Unwritten::Failed),
        Err(_) => Err(Unwritten::Stalled),
    }
}

/// The time, read once for a batch of pushes.
#[derive(Clone, Copy)]
struct Now {
    at: Instant,
    /// Wall-clock milliseconds, to compare with a message's `ts`.
    ms: i64,
}

/// State of an authenticated connection.
struct Connection {
    state: Arc<AppState>,
    auth: Auth,
    conn_id: u64,
    control: Arc<Control>,
    /// The write half, shared with the reader, which writes the answers to sends.
    sink: Arc<Mutex<Sink>>,
    delivery: Delivery,
    /// Frames queued for the next write.
    out: Vec<Message>,
    /// Acks taken from the reader ([`Control::held`]), being applied.
    held: Vec<(ConversationId, u64)>,
    /// The [`Delivery::lazy_version`] last told to the reader.
    lazy_published: u64,
    /// Reads the socket, on a reader lane; taken when the connection ends.
    reader: Option<Reader>,
    /// Conversations seen in pushes but not yet tracked.
    unknown: FastSet<ConversationId>,
    /// Users this device follows for presence.
    subscriptions: HashSet<UserId>,
    idle_deadline: Instant,
    /// Streaming from the store was cut short this turn; continue next turn.
    more_to_stream: bool,
    /// Reading the store failed: when to try again (the connection is lagged until then).
    store_retry_at: Option<Instant>,
    /// Failed reads of the store in a row.
    store_failures: u32,
    close: Option<(u16, &'static str)>,
    /// The socket failed or ended: go without a closing handshake.
    gone: bool,
    /// The cursors were read once: later reads are resyncs.
    synced: bool,
    /// This connection's share of the `delivery_inflight_messages` and
    /// `delivery_backlog_messages` gauges, as last reported.
    reported: (u64, u64),
    /// Units of the fan-out room taken over from the pushes of this turn,
    /// given back together at its end (and when the connection is dropped).
    room_owed: usize,
}

impl Connection {
    /// Gives the fan-out room taken over from handled pushes back.
    fn give_back_room(&mut self) {
        self.state.fanout.give_back(std::mem::take(&mut self.room_owed));
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Whatever way the connection ends, no unit of the room is lost.
        self.give_back_room();
    }
}

/// Registers the device and runs its connection until it closes.
///
/// Everything up to the first write happens before the future is made, so
/// that the future, which every connection keeps for its whole life, holds
/// the connection once instead of also the pieces it was built from.
fn session(
    state: &Arc<AppState>,
    auth: Auth,
    sink: Sink,
    stream: Stream,
) -> impl std::future::Future<Output = ()> + Send {
    let control = Arc::new(Control::default());
    let conn_id = state.hub.next_conn_id();
    let since = crate::clock::now_ms();
    let link = Link { conn_id, device_id: auth.device_id, since, control: Arc::clone(&control) };
    let announce = || deliver::connected(state, auth.user_id, auth.device_id, since);
    if let Some(old) = state.hub.register(auth.user_id, link, announce) {
        old.control.close(close::REPLACED);
    }
    Presence::connected(state, auth.user_id);
    // Registered after shutdown began, it missed the closing of every connection.
    if state.shutdown.is_cancelled() {
        control.close(close::GOING_AWAY);
    }
    let now = Instant::now();
    let mut c = Connection {
        state: Arc::clone(state),
        auth,
        conn_id,
        control,
        sink: Arc::new(Mutex::new(sink)),
        delivery: Delivery::new(
            state.config.delivery_window as usize,
            state.config.ack_timeout,
            state.config.fanout_sync_threshold,
        ),
        held: Vec::new(),
        lazy_published: 0,
        out: Vec::new(),
        reader: None,
        unknown: FastSet::default(),
        subscriptions: HashSet::new(),
        idle_deadline: now + state.config.presence_timeout,
        more_to_stream: false,
        store_retry_at: None,
        store_failures: 0,
        close: None,
        gone: false,
        synced: false,
        reported: (0, 0),
        room_owed: 0,
    };
    c.out.push(frame(&ServerFrame::Welcome {
        user_id: auth.user_id.to_string(),
        device_id: auth.device_id.to_string(),
        heartbeat_interval_ms: state.config.heartbeat_interval().as_millis() as u64,
        ack_timeout_ms: state.config.ack_timeout.as_millis() as u64,
        server_time: crate::clock::now_ms(),
        window: state.config.delivery_window,
        max_frame_bytes: state.config.max_frame_bytes,
        receipts_up_to: state.config.fanout_sync_threshold,
        lazy_ack_ms: state.config.lazy_ack().as_millis() as u64,
    }));
    async move {
        // The welcome goes out before any answer the reader writes.
        if !c.flush().await {
            c.gone = true;
        }
        // `out` allocates again only when something is pushed: an idle
        // connection keeps no frame buffer.
        c.out = Vec::new();
        c.control.touch();
        c.reader = Some(Reader::start(&c.state, c.auth, stream, Arc::clone(&c.sink), Arc::clone(&c.control)));
        // Only now the backlog: every conversation above its cursor is behind.
        c.control.lagged.store(true, Ordering::Release);
        c.run().await;
        // Boxed, so that what only the end needs takes no room in every
        // connection's future while it runs.
        Box::pin(c.end()).await;
    }
}

impl Connection {
    /// Ends the connection: stops the reader (the sends it read are stored and
    /// answered first), stores the last acks, leaves the hub and presence,
    /// and closes with the code chosen, if the socket still works.
    async fn end(mut self) {
        let stream = match self.reader.take() {
            Some(reader) => reader.stop().await,
            None => None,
        };
        let (user, device) = (self.auth.user_id, self.auth.device_id);
        // The reader has stopped: what it held is all there is.
        self.apply_held_acks().await;
        // Its acks still buffered are stored before the device can connect again.
        let _ = tokio::time::timeout(SEND_DRAIN_TIMEOUT, self.state.acks.store_device(&self.state, user, device)).await;
        self.unreport_gauges();
        let state = &self.state;
        state.presence.unsubscribe((user, device), self.subscriptions.drain());
        state.hub.unregister(user, self.conn_id, || deliver::disconnected(state, user));
        // Nothing reaches the task any more: what is queued is dropped, giving back its fan-out room.
        self.control.pushes.close();
        Presence::disconnected(state, user);
        if let (Some((code, reason)), Some(mut stream), false) = (self.close, stream, self.gone) {
            let mut sink = self.sink.lock().await;
            Box::pin(close_with(&mut sink, &mut stream, code, reason)).await;
        }
    }
}

impl Connection {
    async fn run(&mut self) {
        let mut timer: std::pin::Pin<Box<Sleep>> = Box::pin(sleep_until(self.idle_deadline));
        let mut timer_at = self.idle_deadline;
        let control = Arc::clone(&self.control);
        while self.close.is_none() && !self.gone {
            // First the acks the reader held, so the window's room is known.
            self.apply_held_acks().await;
            if self.store_retry_at.is_none_or(|at| at <= Instant::now()) {
                self.store_retry_at = None;
                if let Err(e) = self.stream_from_store().await {
                    tracing::warn!(error = %e.message, "delivery from store failed; retrying");
                    // Start over from the stored cursors once the store answers again.
                    self.control.lagged.store(true, Ordering::Release);
                    self.more_to_stream = false;
                    self.store_failures = self.store_failures.saturating_add(1);
                    let ceiling =
                        STORE_RETRY.saturating_mul(1 << (self.store_failures.min(6) - 1)).min(STORE_RETRY_MAX);
                    self.store_retry_at = Some(Instant::now() + ceiling.mul_f64(rand::random_range(0.5..=1.0)));
                } else {
                    self.store_failures = 0;
                }
            }
            if !self.flush().await {
                return;
            }
            let mut want = self.delivery.next_deadline().map_or(self.idle_deadline, |d| d.min(self.idle_deadline));
            if let Some(at) = self.store_retry_at {
                want = want.min(at);
            }
            if want != timer_at {
                timer.as_mut().reset(want);
                timer_at = want;
            }
            let held_waiting = self.publish_ack_wishes();
            tokio::select! {
                biased;
                // Shutdown comes this way too (`crate::run` closes every
                // connection with 1001); stopping the reader (after the loop)
                // answers the sends already read.
                code = std::future::poll_fn(|cx| control.poll_closed(cx)) => {
                    self.close = Some((code, close_reason(code)));
                }
                push = std::future::poll_fn(|cx| control.pushes.poll_next(cx)) => {
                    // One reading of the clocks for the whole batch: pushes
                    // taken together are written together.
                    let now = Now { at: Instant::now(), ms: crate::clock::now_ms() };
                    self.on_push(push, now).await;
                    for _ in 0..PUSH_BATCH {
                        match control.pushes.try_next() {
                            Some(p) => self.on_push(p, now).await,
                            None => break,
                        }
                    }
                    self.give_back_room();
                }
                _ = &mut timer => {
                    // Nothing timed out that a held ack covers.
                    self.apply_held_acks().await;
                    self.on_timer();
                }
                _ = std::future::ready(()), if self.more_to_stream || held_waiting => {}
            }
            self.report_gauges();
        }
        self.flush().await;
    }

    /// Moves the shared gauges by this connection's change since the last report.
    fn report_gauges(&mut self) {
        let now = (self.delivery.unacked() as u64, self.delivery.backlog());
        if now != self.reported {
            self.state.meters.inflight.increment(now.0 as f64 - self.reported.0 as f64);
            self.state.meters.backlog.increment(now.1 as f64 - self.reported.1 as f64);
            self.reported = now;
        }
    }

    /// Takes this connection's share out of the shared gauges when it closes.
    fn unreport_gauges(&mut self) {
        self.state.meters.inflight.decrement(self.reported.0 as f64);
        self.state.meters.backlog.decrement(self.reported.1 as f64);
        self.reported = (0, 0);
    }

    /// Writes the queued frames.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        match write_all(&self.sink, &mut self.out).await {
            Ok(()) => true,
            Err(Unwritten::Failed) => false,
            Err(Unwritten::Stalled) => {
                self.close = Some((close::SLOW_CONSUMER, "not reading"));
                false
            }
        }
    }

    async fn on_push(&mut self, push: Push, now: Now) {
        match push {
            Push::Message(m) => {
                let (m, owes) = m.handle();
                self.room_owed += usize::from(owes);
                let own = m.origin == Some(self.auth.device_id);
                match self.delivery.on_live(m.conversation_id, m.seq, own, now.at) {
                    Live::Send => {
                        self.state.meters.record_latency(m.ts, now.ms);
                        self.out.push(Message::Text(m.frame.clone()));
                    }
                    Live::Skip => {}
                    Live::Unknown => {
                        self.unknown.insert(m.conversation_id);
                    }
                }
            }
            Push::Event(frame) => self.out.push(Message::Text((*frame).clone())),
            Push::Left(conversation) => self.delivery.forget(conversation),
            Push::Resync => self.control.lagged.store(true, Ordering::Release),
            // Applied at the top of the next turn.
            Push::Acks => {}
            Push::Client(f) => {
                if let Err((e, reference)) = Box::pin(self.on_frame(*f)).await {
                    self.out.push(error_frame(e.code, e.message, Some(reference)));
                }
            }
            Push::Close(code) => {
                if self.close.is_none() {
                    self.close = Some((code, close_reason(code)));
                }
            }
            Push::Gone => self.gone = true,
        }
    }

    /// Streams pages of stored messages to conversations that are behind.
    async fn stream_from_store(&mut self) -> Result<(), ApiError> {
        let store = Arc::clone(&self.state.store);
        if self.control.lagged.swap(false, Ordering::AcqRel) {
            let (user, device) = (self.auth.user_id, self.auth.device_id);
            // The read as the device connects may be made on this thread; a
            // resync, which many connections may need at once, is not.
            let cursors = if self.synced {
                store.cursors(user, device).await?
            } else {
                store.cursors_on_connect(user, device).await?
            };
            self.synced = true;
            let current: HashSet<ConversationId> = cursors.iter().map(|c| c.conversation_id).collect();
            let gone: Vec<ConversationId> = self.delivery.conversations().filter(|c| !current.contains(c)).collect();
            for c in gone {
                self.delivery.forget(c);
            }
            for c in cursors {
                self.delivery.track(c);
            }
        }
        for conversation in std::mem::take(&mut self.unknown) {
            if let Some(c) = store.cursor(conversation, self.auth.user_id, self.auth.device_id).await? {
                self.delivery.track(c);
            }
        }
        self.more_to_stream = false;
        for _ in 0..PAGES_PER_TURN {
            let Some((conversation, after, limit)) = self.delivery.next_fetch() else { return Ok(()) };
            let page = store.messages(conversation, SeqRange::After(after), limit).await?;
            let (now, now_ms) = (Instant::now(), crate::clock::now_ms());
            for m in &page {
                if self.delivery.record_fetched(conversation, m.seq, m.sender_device == self.auth.device_id, now) {
                    self.state.meters.record_latency(m.ts, now_ms);
                    self.out.push(Message::Text(views::message_frame(m).into()));
                }
            }
            self.delivery.fetched(conversation, page.len() < limit);
        }
        self.more_to_stream = true;
        Ok(())
    }

    /// Applies the acks the reader held; one that fails is answered with an error, as a frame would be.
    async fn apply_held_acks(&mut self) {
        self.control.held.take(&mut self.held);
        for i in 0..self.held.len() {
            let (conversation, seq) = self.held[i];
            if let Err(e) = self.on_ack(conversation, seq).await {
                self.out.push(error_frame(e.code, e.message, Some("ack".into())));
            }
        }
        self.held.clear();
    }

    /// Tells the reader which acks may wait and whether any is wanted now
    /// (`ws/held.rs`). Returns `true` if acks are held that no wakeup will
    /// come for, which must be applied without waiting.
    fn publish_ack_wishes(&mut self) -> bool {
        if self.delivery.lazy_version() != self.lazy_published {
            self.lazy_published = self.delivery.lazy_version();
            self.control.held.set_lazy(self.delivery.lazy());
        }
        self.control.held.set_wanted(self.delivery.wants_acks())
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if now >= self.idle_deadline {
            let idle = self.control.idle();
            let timeout = self.state.config.presence_timeout;
            if idle >= timeout {
                self.close = Some((close::HEARTBEAT_TIMEOUT, "heartbeat timeout"));
                return;
            }
            self.idle_deadline = now + (timeout - idle);
        }
        let rewound = self.delivery.on_timer(now);
        if rewound > 0 {
            self.state.meters.retries.increment(rewound as u64);
        }
    }
}
