//! The background task of a realtime session.
//!
//! One task owns the WebSocket, the outbox, the ordering state and the local
//! history, so none of them needs a lock. Its life is a loop of connections:
//! while connected it reads frames, writes commands, coalesces acknowledgements
//! and sends heartbeats; when the connection is lost it waits a backoff delay
//! and opens another, still taking commands so sends keep queuing. Gap fills
//! run as child tasks that report pages back through a bounded queue, so a
//! slow history request never stalls the socket.

use crate::backoff::Backoff;
use crate::connection::{self, is_terminal, OpenError, Welcome, WsStream};
use crate::event::Consumed;
use crate::lazy::LazyAcks;
use crate::outbox::{Outbox, OutboxEntry};
use crate::sequencer::{Accepted, FillRequest, Origin, Sequencer};
use crate::session::{CloseInfo, SessionOptions};
use crate::{Event, HttpClient, LocalHistory};
use banter_proto::frame::MessageView;
use banter_proto::{close, ClientFrame, ErrorCode, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use url::Url;

/// A connection that stayed up this long resets the backoff; shorter ones
/// keep raising it, so a server that accepts and drops at once is not hammered.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// How long a refused send (`rate_limited`, `unavailable`) waits before the outbox is replayed.
const RESEND_AFTER_REFUSAL: Duration = Duration::from_secs(1);
/// A connection with no frame from the server for this many heartbeat intervals is given up.
const IDLE_HEARTBEATS: u32 = 3;
/// How long a closing connection waits for the server's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Capacity of the queue that gap fills report through.
const FILL_QUEUE: usize = 16;
/// The reason reported when the application closes the session.
const CLOSED_BY_APPLICATION: &str = "closed by the application";
/// The reason reported when the application dropped every session handle.
const EVERY_HANDLE_DROPPED: &str = "every session handle was dropped";

/// A request from a [`crate::Session`] handle.
#[derive(Debug)]
pub(crate) enum Command {
    /// Queue a send.
    Send(OutboxEntry),
    /// Send a read receipt.
    Read { conversation_id: String, seq: u64 },
    /// Send a typing notice.
    Typing { conversation_id: String },
    /// Follow these users' presence.
    PresenceSubscribe { user_ids: Vec<String> },
}

/// What a gap fill reports.
#[derive(Debug)]
enum FillReport {
    /// A page of fetched messages, ascending.
    Page { messages: Vec<MessageView> },
    /// The fill is over: it fetched up to `until`, or all there was when `exhausted`.
    Done { conversation_id: String, until: u64, exhausted: bool },
}

/// How a connection ended.
#[derive(Debug)]
enum Ended {
    /// The connection was lost; reconnect.
    Lost { code: Option<u16>, reason: String },
    /// The server ended the session for good.
    Terminal(CloseInfo),
    /// The application closed the session or dropped every handle.
    Shutdown(String),
}

/// Everything [`Driver::new`] is built from.
pub(crate) struct Parts {
    pub(crate) http: HttpClient,
    pub(crate) url: Url,
    pub(crate) token: String,
    pub(crate) options: SessionOptions,
    pub(crate) history: Box<dyn LocalHistory>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) ended: watch::Sender<Option<CloseInfo>>,
    pub(crate) outbox_slots: Arc<Semaphore>,
    pub(crate) max_frame_bytes: Arc<AtomicUsize>,
    pub(crate) consumed: Arc<Consumed>,
}

/// Acknowledgements waiting to be sent.
#[derive(Debug, Default)]
struct Acks {
    /// Conversations whose contiguous seq should be acknowledged, and whether
    /// even an unchanged seq must be (the server retried a message it holds).
    dirty: HashMap<String, bool>,
    /// When the gathered acknowledgements are due.
    due: Option<Instant>,
    /// The seq last acknowledged per conversation on the current connection.
    acked: HashMap<String, u64>,
}

/// The state of a realtime session's task.
pub(crate) struct Driver {
    /// The HTTP client, for gap fills.
    http: HttpClient,
    /// The realtime endpoint.
    url: Url,
    /// The token said in each `hello`.
    token: String,
    /// The session's settings.
    options: SessionOptions,
    /// What the client already holds.
    history: Box<dyn LocalHistory>,
    /// Ordering and gap state per conversation.
    sequencer: Sequencer,
    /// Sends not yet answered.
    outbox: Outbox,
    /// Requests from the handles.
    commands: mpsc::Receiver<Command>,
    /// Events to the application.
    events: mpsc::Sender<Event>,
    /// Whether the application still reads events.
    events_open: bool,
    /// Becomes `true` when the application closes the session.
    shutdown: watch::Receiver<bool>,
    /// Tells the handles that the session is over.
    ended: watch::Sender<Option<CloseInfo>>,
    /// The outbox slots, closed when the session ends so waiting senders fail.
    outbox_slots: Arc<Semaphore>,
    /// The server's frame limit, shared with the handles.
    max_frame_bytes: Arc<AtomicUsize>,
    /// The highest seq per conversation the application took from its events.
    consumed: Arc<Consumed>,
    /// Seqs of messages handed to the event queue and not yet known to be
    /// taken, per conversation, ascending; acknowledgements stop below the first.
    unconsumed: HashMap<String, VecDeque<u64>>,
    /// Where gap fills report, and its receiving end.
    fills_tx: mpsc::Sender<FillReport>,
    fills_rx: mpsc::Receiver<FillReport>,
    /// The running gap fills, aborted when the task ends.
    fills: JoinSet<()>,
    /// The user of the session, from the latest `welcome`.
    user_id: String,
    /// Users whose presence is followed, subscribed again on every connection.
    presence: BTreeSet<String>,
    /// Read receipts given while disconnected, highest seq per conversation.
    reads: HashMap<String, u64>,
    /// Acknowledgements waiting to be sent.
    acks: Acks,
    /// Which conversations' acks may wait (groups above the fan-out threshold).
    lazy: LazyAcks,
    /// Where a fetch of the conversations' member counts reports, and its receiving end.
    sizes_tx: mpsc::Sender<Vec<(String, u64)>>,
    sizes_rx: mpsc::Receiver<Vec<(String, u64)>>,
    /// When refused sends are replayed.
    resend_at: Option<Instant>,
    /// The reconnection schedule.
    backoff: Backoff,
}

impl Driver {
    /// A task ready to run.
    pub(crate) fn new(parts: Parts) -> Self {
        let (fills_tx, fills_rx) = mpsc::channel(FILL_QUEUE);
        let (sizes_tx, sizes_rx) = mpsc::channel(1);
        let backoff = Backoff::new(parts.options.initial_backoff, parts.options.max_backoff);
        Driver {
            http: parts.http,
            url: parts.url,
            token: parts.token,
            options: parts.options,
            history: parts.history,
            sequencer: Sequencer::new(),
            outbox: Outbox::new(),
            commands: parts.commands,
            events: parts.events,
            events_open: true,
            shutdown: parts.shutdown,
            ended: parts.ended,
            outbox_slots: parts.outbox_slots,
            max_frame_bytes: parts.max_frame_bytes,
            consumed: parts.consumed,
            unconsumed: HashMap::new(),
            fills_tx,
            fills_rx,
            fills: JoinSet::new(),
            user_id: String::new(),
            presence: BTreeSet::new(),
            reads: HashMap::new(),
            acks: Acks::default(),
            lazy: LazyAcks::default(),
            sizes_tx,
            sizes_rx,
            resend_at: None,
            backoff,
        }
    }

    /// Runs the session from its first, already opened connection to its end.
    pub(crate) async fn run(mut self, ws: WsStream, welcome: Welcome) {
        let mut next = Some((ws, welcome));
        let info = loop {
            let (ws, welcome) = match next.take() {
                Some(opened) => opened,
                None => match self.reconnect().await {
                    Ok(opened) => opened,
                    Err(info) => break info,
                },
            };
            let started = Instant::now();
            let ended = self.connected(ws, welcome).await;
            if started.elapsed() >= STABLE_CONNECTION {
                self.backoff.reset();
            }
            match ended {
                Ended::Lost { code, reason } => {
                    tracing::info!(?code, %reason, "connection lost; reconnecting");
                    self.emit(Event::Disconnected { code, reason }).await;
                }
                Ended::Terminal(info) => {
                    tracing::warn!(code = info.code, reason = %info.reason, "session ended by the server");
                    self.emit(Event::Disconnected { code: Some(info.code), reason: info.reason.clone() }).await;
                    break info;
                }
                Ended::Shutdown(reason) => break CloseInfo { code: close::NORMAL, reason },
            }
        };
        self.finish(info).await;
    }

    /// Marks the session as over and says so to the handles and the application.
    async fn finish(mut self, info: CloseInfo) {
        self.fills.abort_all();
        self.outbox_slots.close();
        self.ended.send_replace(Some(info.clone()));
        self.emit(Event::Closed { code: info.code, reason: info.reason }).await;
    }

    /// Waits out the backoff and opens a new connection, again and again until
    /// one works, the server refuses the session, or the application closes it.
    async fn reconnect(&mut self) -> Result<(WsStream, Welcome), CloseInfo> {
        loop {
            let delay = self.backoff.next_delay(&mut rand::rng());
            tracing::debug!(?delay, attempt = self.backoff.attempt(), "waiting before reconnecting");
            self.offline_until(tokio::time::sleep(delay)).await?;
            let (url, token, timeout) = (self.url.clone(), self.token.clone(), self.options.connect_timeout);
            match self.offline_until(async move { connection::open(&url, &token, timeout).await }).await? {
                Ok(opened) => return Ok(opened),
                Err(OpenError::Fatal { code, reason }) => {
                    tracing::warn!(code, %reason, "session refused by the server");
                    return Err(CloseInfo { code, reason });
                }
                Err(OpenError::Retry(e)) => tracing::debug!(error = %e, "reconnection failed"),
            }
        }
    }

    /// Drives `future` to its end while disconnected, meanwhile queuing
    /// commands and taking in gap fills. Fails when the application closes the session.
    async fn offline_until<F: Future>(&mut self, future: F) -> Result<F::Output, CloseInfo> {
        tokio::pin!(future);
        let closed = |reason: &str| CloseInfo { code: close::NORMAL, reason: reason.to_owned() };
        loop {
            tokio::select! {
                output = &mut future => return Ok(output),
                _ = shutdown_requested(&mut self.shutdown) => return Err(closed(CLOSED_BY_APPLICATION)),
                command = self.commands.recv() => match command {
                    Some(command) => self.queue(command),
                    None => return Err(closed(EVERY_HANDLE_DROPPED)),
                },
                Some(report) = self.fills_rx.recv() => self.on_fill(report).await,
            }
        }
    }

    /// Serves one connection until it ends.
    async fn connected(&mut self, mut ws: WsStream, welcome: Welcome) -> Ended {
        tracing::debug!(user_id = %welcome.user_id, device_id = %welcome.device_id, "connected");
        self.user_id = welcome.user_id.clone();
        if let Some(limit) = welcome.max_frame_bytes {
            self.max_frame_bytes.store(limit, Ordering::Relaxed);
        }
        self.lazy.connected(welcome.receipts_up_to, welcome.lazy_ack_ms, welcome.window);
        if self.lazy.enabled() {
            self.spawn_sizes();
        }
        let heartbeat_every = welcome.heartbeat_interval();
        let idle_limit = heartbeat_every * IDLE_HEARTBEATS;
        self.emit(Event::Connected { user_id: welcome.user_id, device_id: welcome.device_id }).await;

        if let Err(ended) = self.resume(&mut ws).await {
            return ended;
        }
        let mut heartbeat = tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();

        loop {
            let result = tokio::select! {
                _ = shutdown_requested(&mut self.shutdown) => {
                    return self.close(ws, CLOSED_BY_APPLICATION).await;
                }
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        last_heard = Instant::now();
                        self.on_frame(text.as_str(), &mut ws).await
                    }
                    Some(Ok(Message::Close(frame))) => return closed_by_server(frame),
                    Some(Ok(_)) => {
                        last_heard = Instant::now();
                        Ok(())
                    }
                    Some(Err(e)) => return Ended::Lost { code: None, reason: e.to_string() },
                    None => return Ended::Lost { code: None, reason: "connection closed".into() },
                },
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command, &mut ws).await,
                    None => return self.close(ws, EVERY_HANDLE_DROPPED).await,
                },
                Some(report) = self.fills_rx.recv() => {
                    self.on_fill(report).await;
                    Ok(())
                }
                Some(sizes) = self.sizes_rx.recv() => {
                    for (conversation_id, member_count) in sizes {
                        self.lazy.learn(&conversation_id, member_count);
                    }
                    Ok(())
                }
                _ = self.consumed.notify.notified() => {
                    self.acknowledge_consumed();
                    Ok(())
                }
                _ = sleep_until(self.acks.due), if self.acks.due.is_some() => self.flush_acks(&mut ws).await,
                _ = sleep_until(self.resend_at), if self.resend_at.is_some() => {
                    self.resend_at = None;
                    self.outbox.rewind();
                    self.pump(&mut ws).await
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > idle_limit {
                        return Ended::Lost { code: None, reason: format!("nothing heard for {idle_limit:?}") };
                    }
                    write(&mut ws, &ClientFrame::Heartbeat).await
                }
            };
            if let Err(ended) = result {
                return ended;
            }
        }
    }

    /// Restores the session's state on a new connection: presence
    /// subscriptions, read receipts given offline, pending acknowledgements
    /// and the outbox, in that order.
    async fn resume(&mut self, ws: &mut WsStream) -> Result<(), Ended> {
        let users: Vec<String> = self.presence.iter().cloned().collect();
        for chunk in users.chunks(banter_proto::limits::MAX_PRESENCE_SUBSCRIPTIONS) {
            feed(ws, &ClientFrame::PresenceSubscribe { user_ids: chunk.to_vec() }).await?;
        }
        for (conversation_id, seq) in std::mem::take(&mut self.reads) {
            feed(ws, &ClientFrame::Read { conversation_id, seq }).await?;
        }
        self.acks.acked.clear();
        self.acknowledge_consumed();
        if !self.acks.dirty.is_empty() {
            self.acks.due = Some(Instant::now());
        }
        self.resend_at = None;
        self.outbox.rewind();
        self.pump(ws).await?;
        ws.flush().await.map_err(lost)
    }

    /// Closes the connection at the application's request, after sending the
    /// acknowledgements still gathered.
    async fn close(&mut self, mut ws: WsStream, reason: &str) -> Ended {
        let _ = self.flush_acks(&mut ws).await;
        let frame = CloseFrame { code: CloseCode::Normal, reason: Utf8Bytes::from_static("") };
        if ws.close(Some(frame)).await.is_ok() {
            // Wait briefly for the server's close frame, so the closing handshake completes.
            let _ = tokio::time::timeout(CLOSE_GRACE, async { while ws.next().await.is_some() {} }).await;
        }
        Ended::Shutdown(reason.to_owned())
    }

    /// Handles one command while connected.
    async fn on_command(&mut self, command: Command, ws: &mut WsStream) -> Result<(), Ended> {
        match command {
            Command::Send(entry) => {
                if self.outbox.push(entry).is_ok() {
                    self.pump(ws).await?;
                }
            }
            Command::Read { conversation_id, seq } => write(ws, &ClientFrame::Read { conversation_id, seq }).await?,
            Command::Typing { conversation_id } => write(ws, &ClientFrame::Typing { conversation_id }).await?,
            Command::PresenceSubscribe { user_ids } => {
                self.presence.extend(user_ids.iter().cloned());
                write(ws, &ClientFrame::PresenceSubscribe { user_ids }).await?;
            }
        }
        Ok(())
    }

    /// Handles one command while disconnected: what must survive is kept for
    /// the next connection, typing notices are dropped.
    fn queue(&mut self, command: Command) {
        match command {
            Command::Send(entry) => {
                // A second send with a queued id is answered by the first one.
                let _ = self.outbox.push(entry);
            }
            Command::Read { conversation_id, seq } => {
                let highest = self.reads.entry(conversation_id).or_insert(seq);
                *highest = (*highest).max(seq);
            }
            Command::Typing { .. } => {}
            Command::PresenceSubscribe { user_ids } => self.presence.extend(user_ids),
        }
    }

    /// Writes outbox entries until the send window is full.
    async fn pump(&mut self, ws: &mut WsStream) -> Result<(), Ended> {
        let mut wrote = false;
        while let Some(entry) = self.outbox.next_to_write(self.options.send_window.max(1)) {
            let frame = entry.frame.clone();
            ws.feed(Message::Text(frame)).await.map_err(lost)?;
            wrote = true;
        }
        if wrote {
            ws.flush().await.map_err(lost)?;
        }
        Ok(())
    }

    /// Handles one frame from the server.
    async fn on_frame(&mut self, text: &str, ws: &mut WsStream) -> Result<(), Ended> {
        let frame = match ServerFrame::parse(text) {
            Ok(frame) => frame,
            Err(e) => {
                // Newer servers may send frames this client does not know.
                tracing::debug!(error = %e, "ignoring a frame that does not parse");
                return Ok(());
            }
        };
        match frame {
            ServerFrame::Message(message) => self.take_in(message, Origin::Pushed).await,
            ServerFrame::Sent { client_msg_id, conversation_id, message_id, seq, ts } => {
                let Some(entry) = self.outbox.confirm(&conversation_id, &client_msg_id) else {
                    // The answer to a replayed send that was already confirmed.
                    return Ok(());
                };
                let own = MessageView {
                    conversation_id: conversation_id.clone(),
                    message_id: message_id.clone(),
                    seq,
                    sender_id: self.user_id.clone(),
                    client_msg_id: client_msg_id.clone(),
                    ts,
                    content: entry.content,
                };
                self.take_in(own, Origin::Own).await;
                self.emit(Event::Sent { client_msg_id, conversation_id, message_id, seq, ts }).await;
                self.pump(ws).await?;
            }
            ServerFrame::Error { code, message, reference } => {
                let refused_send = reference.as_deref().is_some_and(|r| self.outbox.find_in_flight(r).is_some());
                match (refused_send, reference) {
                    (true, _) if matches!(code, ErrorCode::RateLimited | ErrorCode::Unavailable) => {
                        // Refused for now, not for good: keep the send and replay the outbox shortly.
                        tracing::debug!(%code, "send refused for now; replaying the outbox soon");
                        self.resend_at.get_or_insert_with(|| Instant::now() + RESEND_AFTER_REFUSAL);
                    }
                    (true, Some(reference)) => {
                        if let Some(entry) = self.outbox.fail(&reference) {
                            let OutboxEntry { client_msg_id, conversation_id, .. } = entry;
                            self.emit(Event::SendFailed { client_msg_id, conversation_id, code, message }).await;
                            self.pump(ws).await?;
                        }
                    }
                    (_, reference) => self.emit(Event::Error { code, message, reference }).await,
                }
            }
            ServerFrame::Receipt { conversation_id, user_id, kind, seq } => {
                self.emit(Event::Receipt { conversation_id, user_id, kind, seq }).await;
            }
            ServerFrame::Typing { conversation_id, user_id } => {
                self.emit(Event::Typing { conversation_id, user_id }).await;
            }
            ServerFrame::Presence(presence) => self.emit(Event::Presence(presence)).await,
            ServerFrame::Conversation { conversation } => {
                self.lazy.learn(&conversation.conversation_id, conversation.member_count);
                self.emit(Event::Conversation(conversation)).await
            }
            ServerFrame::HeartbeatAck { .. } | ServerFrame::Welcome { .. } => {}
        }
        Ok(())
    }

    /// Feeds a message to the sequencer and acts on the outcome.
    async fn take_in(&mut self, message: MessageView, origin: Origin) {
        let conversation_id = message.conversation_id.clone();
        match self.sequencer.accept(&mut *self.history, message, origin) {
            Ok(accepted) => self.apply(&conversation_id, accepted).await,
            Err(e) => {
                tracing::error!(error = %e, %conversation_id, "local history failed; the message stays unacknowledged")
            }
        }
    }

    /// Takes in what a gap fill reports.
    async fn on_fill(&mut self, report: FillReport) {
        match report {
            FillReport::Page { messages } => {
                for message in messages {
                    self.take_in(message, Origin::Fetched).await;
                }
            }
            FillReport::Done { conversation_id, until, exhausted } => {
                let accepted = self.sequencer.fill_done(&mut *self.history, &conversation_id, until, exhausted);
                self.apply(&conversation_id, accepted).await;
            }
        }
    }

    /// Delivers what the sequencer released, schedules the acknowledgement
    /// and starts a gap fill if one is needed.
    async fn apply(&mut self, conversation_id: &str, accepted: Accepted) {
        let Accepted { deliver, advanced, duplicate, fill, error } = accepted;
        if let Some(e) = error {
            tracing::error!(error = %e, conversation_id, "local history failed; those messages stay unacknowledged");
        }
        let taken = deliver.len() as u64;
        for message in deliver {
            self.deliver(message).await;
        }
        if advanced || duplicate {
            self.schedule_ack(conversation_id, duplicate, taken);
        }
        if let Some(request) = fill {
            self.spawn_fill(request);
        }
    }

    /// Hands a new message to the application and remembers it until it is taken.
    async fn deliver(&mut self, message: MessageView) {
        if self.events_open {
            self.unconsumed.entry(message.conversation_id.clone()).or_default().push_back(message.seq);
        }
        self.emit(Event::Message(message)).await;
        if !self.events_open {
            // Nobody reads events any more: there is nothing to wait for.
            self.unconsumed.clear();
        }
    }

    /// Gathers an acknowledgement of a conversation into the current batch;
    /// `force` repeats it even if the seq was already acknowledged; `taken`
    /// messages of it were just handed to the application.
    fn schedule_ack(&mut self, conversation_id: &str, force: bool, taken: u64) {
        match self.acks.dirty.get_mut(conversation_id) {
            Some(forced) => *forced |= force,
            None => {
                self.acks.dirty.insert(conversation_id.to_owned(), force);
            }
        }
        // A group that keeps no receipts may wait longer; the earliest due time wins.
        let due = Instant::now() + self.lazy.delay(conversation_id, force, taken, self.options.ack_delay);
        self.acks.due = Some(self.acks.due.map_or(due, |d| d.min(due)));
    }

    /// Schedules acknowledgements for the conversations whose messages the
    /// application has taken since the last look.
    fn acknowledge_consumed(&mut self) {
        let waiting: Vec<String> = self.unconsumed.keys().cloned().collect();
        for conversation_id in waiting {
            self.schedule_ack(&conversation_id, false, 0);
        }
    }

    /// The seq to acknowledge for a conversation: its contiguous seq, but
    /// below the first message the application has not taken yet.
    fn ack_seq(&mut self, conversation_id: &str) -> Option<u64> {
        let contiguous = self.sequencer.contiguous(conversation_id)?;
        let mut seq = contiguous;
        if let Some(queue) = self.unconsumed.get_mut(conversation_id) {
            let taken = self.consumed.highest(conversation_id).unwrap_or(0);
            while queue.front().is_some_and(|&s| s <= taken) {
                queue.pop_front();
            }
            match queue.front() {
                Some(&first) => seq = seq.min(first - 1),
                None => {
                    self.unconsumed.remove(conversation_id);
                }
            }
        }
        Some(seq).filter(|&seq| self.sequencer.ackable(conversation_id, seq))
    }

    /// Sends one cumulative `ack` per conversation gathered since the last flush.
    async fn flush_acks(&mut self, ws: &mut WsStream) -> Result<(), Ended> {
        self.acks.due = None;
        let mut wrote = false;
        for (conversation_id, force) in std::mem::take(&mut self.acks.dirty) {
            let Some(seq) = self.ack_seq(&conversation_id) else {
                continue;
            };
            let previous = self.acks.acked.get(&conversation_id).copied();
            if !force && previous.is_some_and(|p| p >= seq) {
                continue;
            }
            self.acks.acked.insert(conversation_id.clone(), seq);
            feed(ws, &ClientFrame::Ack { conversation_id, seq }).await?;
            wrote = true;
        }
        self.lazy.flushed(self.unconsumed.keys());
        if wrote {
            ws.flush().await.map_err(lost)?;
        }
        Ok(())
    }

    /// Starts fetching the member counts of the user's conversations, so
    /// that acks of groups that keep no receipts may wait. A failed fetch
    /// only means those acks go promptly, as any other.
    fn spawn_sizes(&mut self) {
        let (http, sizes) = (self.http.clone(), self.sizes_tx.clone());
        self.fills.spawn(async move {
            match http.conversations().await {
                Ok(list) => {
                    let counts = list.into_iter().map(|c| (c.conversation_id, c.member_count)).collect();
                    let _ = sizes.send(counts).await;
                }
                Err(e) => tracing::debug!(error = %e, "conversation sizes not fetched; acks go promptly"),
            }
        });
    }

    /// Starts fetching a gap from the history endpoint.
    fn spawn_fill(&mut self, request: FillRequest) {
        while self.fills.try_join_next().is_some() {}
        let FillRequest { conversation_id, after, until } = &request;
        tracing::debug!(%conversation_id, after, until, "filling a gap");
        let http = self.http.clone();
        let page_size = self.options.history_page_size.clamp(1, banter_proto::limits::HISTORY_MAX_LIMIT);
        self.fills.spawn(fill(http, request, page_size, self.fills_tx.clone()));
    }

    /// Hands an event to the application, unless it stopped reading or the
    /// session is closing and the queue is full.
    async fn emit(&mut self, event: Event) {
        if !self.events_open {
            return;
        }
        tokio::select! {
            biased;
            sent = self.events.send(event) => self.events_open = sent.is_ok(),
            _ = shutdown_requested(&mut self.shutdown) => {}
        }
    }
}

/// Fetches the messages of `request.conversation_id` above `request.after`,
/// page by page, until `request.until` is covered or the history has no more.
/// Transient failures are retried with backoff; others end the fill as exhausted.
async fn fill(http: HttpClient, request: FillRequest, page_size: usize, reports: mpsc::Sender<FillReport>) {
    let FillRequest { conversation_id, mut after, until } = request;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let exhausted = loop {
        match http.history_after(&conversation_id, after, page_size).await {
            Ok(page) => {
                backoff.reset();
                let last = page.messages.last().map(|m| m.seq);
                if !page.messages.is_empty()
                    && reports.send(FillReport::Page { messages: page.messages }).await.is_err()
                {
                    return;
                }
                match last {
                    Some(last) if last >= until => break false,
                    Some(last) if page.has_more && last > after => after = last,
                    _ => break true,
                }
            }
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay(&mut rand::rng());
                tracing::warn!(error = %e, %conversation_id, ?delay, "gap fill failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, %conversation_id, "gap fill refused; skipping the gap");
                break true;
            }
        }
    };
    let _ = reports.send(FillReport::Done { conversation_id, until, exhausted }).await;
}

/// Resolves once the application asked to close the session or dropped every handle.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|closing| *closing).await;
}

/// Sleeps until `deadline`; the callers only poll it when there is one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How a close frame from the server ends the connection.
fn closed_by_server(frame: Option<CloseFrame>) -> Ended {
    let (code, reason) = match frame {
        Some(frame) => (Some(u16::from(frame.code)), frame.reason.to_string()),
        None => (None, String::from("closed by the server")),
    };
    match code {
        Some(code) if is_terminal(code) => Ended::Terminal(CloseInfo { code, reason }),
        _ => Ended::Lost { code, reason },
    }
}

/// A write failure ends the connection.
fn lost(e: tokio_tungstenite::tungstenite::Error) -> Ended {
    Ended::Lost { code: None, reason: e.to_string() }
}

/// Serializes a client frame.
fn text(frame: &ClientFrame) -> Message {
    Message::text(serde_json::to_string(frame).expect("client frames always serialize"))
}

/// Writes one frame and flushes it.
async fn write(ws: &mut WsStream, frame: &ClientFrame) -> Result<(), Ended> {
    ws.send(text(frame)).await.map_err(lost)
}

/// Queues one frame without flushing.
async fn feed(ws: &mut WsStream, frame: &ClientFrame) -> Result<(), Ended> {
    ws.feed(text(frame)).await.map_err(lost)
}
