//! The realtime session handle: connect, send, read receipts, typing, presence, close.
//!
//! [`Session::connect`] opens the first connection itself, so a bad token or
//! an unreachable server is reported at once; then a background task (see
//! `driver.rs`) owns the WebSocket, reconnects with backoff, replays the
//! outbox and hands out [`Event`]s. The [`Session`] handle only talks to that
//! task through bounded queues, so it is cheap to clone and share between tasks.
//! When every handle is dropped the task closes the connection and ends.

use crate::connection::{self, OpenError};
use crate::driver::{Command, Driver};
use crate::event::Consumed;
use crate::outbox::OutboxEntry;
use crate::{ClientError, Events, HttpClient, LocalHistory, MemoryHistory};
use banter_proto::frame::{validate_content, ContentError};
use banter_proto::limits;
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};

/// How many handle calls may wait for the session's task at once.
const COMMAND_QUEUE: usize = 256;

/// Settings of a realtime session. `SessionOptions::default()` suits most clients.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The ceiling of the first reconnection delay (default 100 ms).
    pub initial_backoff: Duration,
    /// The largest reconnection delay (default 10 s).
    pub max_backoff: Duration,
    /// How long opening a connection, up to `welcome`, may take (default 10 s).
    pub connect_timeout: Duration,
    /// Most unconfirmed sends queued; [`Session::send`] waits while the outbox is full (default 10,000).
    pub outbox_capacity: usize,
    /// Most sends on the wire without their `sent` yet (default 256).
    pub send_window: usize,
    /// Capacity of the event queue (default 1,024).
    pub event_capacity: usize,
    /// How long acknowledgements are gathered before one cumulative `ack` per
    /// conversation is sent (default 10 ms).
    pub ack_delay: Duration,
    /// Messages per history request when a gap is filled (default 200, the server's maximum).
    pub history_page_size: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            outbox_capacity: 10_000,
            send_window: 256,
            event_capacity: 1024,
            ack_delay: Duration::from_millis(10),
            history_page_size: limits::HISTORY_MAX_LIMIT,
        }
    }
}

/// How a session ended, once it has.
#[derive(Debug, Clone)]
pub(crate) struct CloseInfo {
    /// The close code that ended it.
    pub(crate) code: u16,
    /// Why it ended.
    pub(crate) reason: String,
}

/// A handle on a realtime session. Clones share the same session.
#[derive(Debug, Clone)]
pub struct Session {
    /// State shared by every clone of the handle.
    shared: Arc<Shared>,
}

/// What the handles of one session share.
#[derive(Debug)]
struct Shared {
    /// Requests to the session's task.
    commands: mpsc::Sender<Command>,
    /// One permit per free outbox slot; each queued send holds one until it is answered.
    outbox_slots: Arc<Semaphore>,
    /// The number of permits `outbox_slots` started with.
    outbox_capacity: usize,
    /// Set to `true` to ask the task to close the session.
    shutdown: watch::Sender<bool>,
    /// Set by the task when the session is over.
    ended: watch::Receiver<Option<CloseInfo>>,
    /// The server's frame limit, from the latest `welcome`.
    max_frame_bytes: Arc<AtomicUsize>,
    /// The user of the session.
    user_id: String,
    /// The device of the session.
    device_id: String,
}

impl Session {
    /// Connects with `http`'s token and a [`MemoryHistory`].
    ///
    /// Fails at once if the server cannot be reached or refuses the token;
    /// after that, connection losses are retried in the background.
    pub async fn connect(http: HttpClient, options: SessionOptions) -> Result<(Session, Events), ClientError> {
        Self::connect_with_history(http, options, MemoryHistory::new()).await
    }

    /// Connects with `http`'s token, deduplicating against `history`
    /// (a [`crate::SqliteHistory`] keeps that knowledge across restarts).
    pub async fn connect_with_history(
        http: HttpClient,
        options: SessionOptions,
        history: impl LocalHistory + 'static,
    ) -> Result<(Session, Events), ClientError> {
        let token =
            http.token().ok_or_else(|| ClientError::InvalidInput("the HTTP client has no token".into()))?.to_owned();
        let url = http.ws_url();
        let (ws, welcome) = match connection::open(&url, &token, options.connect_timeout).await {
            Ok(opened) => opened,
            Err(OpenError::Fatal { code, reason }) => return Err(ClientError::Closed { code, reason }),
            Err(OpenError::Retry(e)) => return Err(ClientError::WebSocket(e)),
        };

        let outbox_capacity = options.outbox_capacity.clamp(1, u32::MAX as usize);
        let outbox_slots = Arc::new(Semaphore::new(outbox_capacity));
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(options.event_capacity.max(1));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (ended_tx, ended_rx) = watch::channel(None);
        let max_frame_bytes =
            Arc::new(AtomicUsize::new(welcome.max_frame_bytes.unwrap_or(limits::DEFAULT_MAX_FRAME_BYTES)));

        let shared = Shared {
            commands: commands_tx,
            outbox_slots: outbox_slots.clone(),
            outbox_capacity,
            shutdown: shutdown_tx,
            ended: ended_rx,
            max_frame_bytes: max_frame_bytes.clone(),
            user_id: welcome.user_id.clone(),
            device_id: welcome.device_id.clone(),
        };
        let consumed = Arc::new(Consumed::default());
        let driver = Driver::new(crate::driver::Parts {
            http,
            url,
            token,
            options,
            history: Box::new(history),
            commands: commands_rx,
            events: events_tx,
            shutdown: shutdown_rx,
            ended: ended_tx,
            outbox_slots,
            max_frame_bytes,
            consumed: consumed.clone(),
        });
        tokio::spawn(driver.run(ws, welcome));
        Ok((Session { shared: Arc::new(shared) }, Events::new(events_rx, consumed)))
    }

    /// The user this session acts for.
    pub fn user_id(&self) -> &str {
        &self.shared.user_id
    }

    /// The device this session is.
    pub fn device_id(&self) -> &str {
        &self.shared.device_id
    }

    /// Queues a message with a fresh `client_msg_id` and returns that id.
    ///
    /// `content` is any serializable value, typically a `serde_json::Value`
    /// or a `Box<RawValue>`, and must be an object with a string `"type"`.
    /// The call returns once the message is queued; [`crate::Event::Sent`]
    /// reports when the server has stored it.
    pub async fn send(&self, conversation_id: &str, content: impl Serialize) -> Result<String, ClientError> {
        let client_msg_id = crate::new_client_msg_id();
        self.send_with_id(conversation_id, &client_msg_id, content).await?;
        Ok(client_msg_id)
    }

    /// Queues a `{"type":"text","text":…}` message and returns its `client_msg_id`.
    pub async fn send_text(&self, conversation_id: &str, text: &str) -> Result<String, ClientError> {
        self.send(conversation_id, serde_json::json!({ "type": "text", "text": text })).await
    }

    /// Queues a message with the caller's `client_msg_id`.
    ///
    /// Sending the same id to the same conversation again stores nothing new;
    /// this is how an application retries a send across restarts. Waits while
    /// the outbox is full.
    pub async fn send_with_id(
        &self,
        conversation_id: &str,
        client_msg_id: &str,
        content: impl Serialize,
    ) -> Result<(), ClientError> {
        self.check_open()?;
        if !limits::valid_client_msg_id(client_msg_id) {
            return Err(ClientError::InvalidInput(format!(
                "client_msg_id must have 1 to {} characters",
                limits::MAX_CLIENT_MSG_ID_CHARS
            )));
        }
        let content: Box<RawValue> = serde_json::value::to_raw_value(&content)
            .map_err(|e| ClientError::InvalidInput(format!("content does not serialize: {e}")))?;
        validate_content(&content).map_err(|e| {
            ClientError::InvalidInput(match e {
                ContentError::Invalid => {
                    "content must be an object with a string \"type\" (and a non-empty \"text\" for text)".into()
                }
                ContentError::TooLarge => format!("a text may have at most {} bytes", limits::MAX_TEXT_BYTES),
            })
        })?;

        let permit = self.shared.outbox_slots.clone().acquire_owned().await.map_err(|_| self.closed_error())?;
        let entry = OutboxEntry::new(conversation_id.to_owned(), client_msg_id.to_owned(), content, Some(permit));
        let limit = self.shared.max_frame_bytes.load(Ordering::Relaxed);
        if entry.frame_len() > limit {
            return Err(ClientError::InvalidInput(format!(
                "the send frame has {} bytes; the server accepts at most {limit}",
                entry.frame_len()
            )));
        }
        self.command(Command::Send(entry)).await
    }

    /// Tells the other members that the user has read the conversation up to `seq`.
    /// Sent when the session next has a connection, if it has none now.
    pub async fn read(&self, conversation_id: &str, seq: u64) -> Result<(), ClientError> {
        self.command(Command::Read { conversation_id: conversation_id.to_owned(), seq }).await
    }

    /// Tells the other members that the user is typing. Dropped while disconnected.
    pub async fn typing(&self, conversation_id: &str) -> Result<(), ClientError> {
        self.command(Command::Typing { conversation_id: conversation_id.to_owned() }).await
    }

    /// Follows the presence of these users, on this connection and every later one.
    pub async fn presence_subscribe<S: AsRef<str>>(&self, user_ids: &[S]) -> Result<(), ClientError> {
        let user_ids = user_ids.iter().map(|u| u.as_ref().to_owned()).collect();
        self.command(Command::PresenceSubscribe { user_ids }).await
    }

    /// How many sends are queued and not yet answered by the server.
    pub fn outbox_len(&self) -> usize {
        self.shared.outbox_capacity - self.shared.outbox_slots.available_permits()
    }

    /// Waits until every send queued so far has been answered (stored or refused).
    pub async fn flush(&self) -> Result<(), ClientError> {
        let all = self.shared.outbox_capacity as u32;
        let permits = self.shared.outbox_slots.acquire_many(all).await.map_err(|_| self.closed_error())?;
        drop(permits);
        Ok(())
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.shared.ended.borrow().is_some()
    }

    /// Closes the session: pending acknowledgements are sent, the connection
    /// is closed with 1000, and the event stream ends with [`crate::Event::Closed`].
    /// Unconfirmed sends are dropped; resend them with the same
    /// `client_msg_id` in a later session. Returns once the session is over.
    pub async fn close(&self) {
        self.shared.shutdown.send_replace(true);
        let mut ended = self.shared.ended.clone();
        let _ = ended.wait_for(Option::is_some).await;
    }

    /// Hands a command to the session's task.
    async fn command(&self, command: Command) -> Result<(), ClientError> {
        self.check_open()?;
        self.shared.commands.send(command).await.map_err(|_| self.closed_error())
    }

    /// Fails if the session is over.
    fn check_open(&self) -> Result<(), ClientError> {
        if self.is_closed() || *self.shared.shutdown.borrow() {
            return Err(self.closed_error());
        }
        Ok(())
    }

    /// The error for calls made after the session ended.
    fn closed_error(&self) -> ClientError {
        match &*self.shared.ended.borrow() {
            Some(info) => ClientError::Closed { code: info.code, reason: info.reason.clone() },
            None => ClientError::Closed { code: banter_proto::close::NORMAL, reason: "session closed".into() },
        }
    }
}
