//! The `direct` scenario: P pairs, each a sender and a receiver in their own
//! direct conversation.
//!
//! Each text carries the microsecond (on the bench's monotonic clock) at
//! which it was sent, or scheduled to be sent in open loop, so the receiver
//! measures delivery latency without trusting any other clock and without
//! coordinated omission. Receivers check every seq: a skipped seq counts as
//! reordered, a repeated one as a duplicate; after sending stops each
//! receiver waits until it holds everything its sender got `sent` for.

use super::clock::{Clock, Schedule, Slot};
use super::progress::{Progress, Recent};
use super::report::{distribution, histogram, Latencies, Percentiles, Report, Samples};
use super::{server, setup, BenchArgs};
use banter_proto::frame::{content_text, keeps_receipts, MessageHead};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How often an idle receiver checks whether its sender has finished. Kept
/// long enough that thousands of idle receivers cost the simulator little.
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// Messages a receiver takes before it acknowledges, when more keep coming.
const ACK_EVERY: u64 = 64;

/// What a sender and its receiver share.
#[derive(Default)]
pub(super) struct Pair {
    /// Set when the sender has its last `sent`.
    pub(super) done: AtomicBool,
    /// Sends answered with `sent`.
    pub(super) confirmed: AtomicU64,
    /// The receiver's latest delivery latencies, for the live progress bar.
    pub(super) recent: Arc<Recent>,
    /// New messages taken by the receivers, all of them together.
    pub(super) received: AtomicU64,
}

/// A closed-loop sender's bound on how far it may run ahead of its receivers.
#[derive(Clone, Copy)]
pub(super) struct Pace {
    /// Receivers sharing the sender's [`Pair`].
    pub(super) receivers: u64,
    /// Messages the sender may be ahead of what they received on average.
    pub(super) ahead: u64,
}

/// How often a sender held back by its [`Pace`] looks again.
const PACE_POLL: Duration = Duration::from_millis(1);

pub(super) struct SenderStats {
    pub(super) confirmed: u64,
    pub(super) errors: u64,
    pub(super) in_window: u64,
    pub(super) send_to_sent: Histogram<u64>,
    /// Open loop: how late each send was written after it was due.
    pub(super) lag: Histogram<u64>,
}

/// Until the clock says the slot's next send is due; never without a slot.
async fn due(slot: Option<&Slot>) {
    match slot {
        Some(s) if s.next().is_some() => s.due().await,
        _ => std::future::pending().await,
    }
}

pub(super) struct ReceiverStats {
    pub(super) samples: Samples,
    pub(super) received: u64,
    pub(super) in_window: u64,
    pub(super) duplicates: u64,
    pub(super) reordered: u64,
}

/// The sum of a run's senders and receivers, turned into its [`Report`].
pub(super) struct Tally {
    send_to_sent: Histogram<u64>,
    lag: Histogram<u64>,
    /// Where the receivers' latencies were folded.
    latencies: Arc<Latencies>,
    confirmed: u64,
    errors: u64,
    acked_in_window: u64,
    received: u64,
    in_window: u64,
    duplicates: u64,
    reordered: u64,
    lost: u64,
}

impl Tally {
    pub(super) fn new(latencies: Arc<Latencies>) -> Tally {
        Tally {
            send_to_sent: histogram(),
            lag: histogram(),
            latencies,
            confirmed: 0,
            errors: 0,
            acked_in_window: 0,
            received: 0,
            in_window: 0,
            duplicates: 0,
            reordered: 0,
            lost: 0,
        }
    }

    /// Adds a sender; returns how many of its sends were confirmed.
    pub(super) fn sender(&mut self, s: SenderStats) -> anyhow::Result<u64> {
        self.confirmed += s.confirmed;
        self.errors += s.errors;
        self.acked_in_window += s.in_window;
        self.send_to_sent.add(&s.send_to_sent)?;
        self.lag.add(&s.lag)?;
        Ok(s.confirmed)
    }

    /// Adds a receiver whose sender had `expected` sends confirmed.
    pub(super) fn receiver(&mut self, r: ReceiverStats, expected: u64) -> anyhow::Result<()> {
        self.received += r.received;
        self.in_window += r.in_window;
        self.duplicates += r.duplicates;
        self.reordered += r.reordered;
        self.lost += expected.saturating_sub(r.received);
        drop(r.samples);
        Ok(())
    }

    pub(super) fn report(
        self,
        args: &BenchArgs,
        senders: usize,
        connections: usize,
        pid: Option<u32>,
        cpu_before: server::CpuMark,
    ) -> Report {
        let secs = args.duration as f64;
        let (server_cpu_seconds, simulator_cpu_seconds) = cpu_before.since(pid);
        let (latency, timeline) = self.latencies.take();
        Report {
            scenario: args.scenario,
            pairs: senders,
            duration_s: secs,
            rate: args.rate,
            websocket_connections: connections,
            sent_acknowledged: self.confirmed,
            send_errors: self.errors,
            delivered: self.received,
            lost: self.lost,
            duplicates: self.duplicates,
            reordered: self.reordered,
            throughput_rps: self.in_window as f64 / secs,
            acked_sends_per_s: self.acked_in_window as f64 / secs,
            message_delivery_latency_ms: Percentiles::of(&latency),
            send_to_sent_ms: Percentiles::of(&self.send_to_sent),
            send_lag_ms: args.rate.map(|_| Percentiles::of(&self.lag)),
            lazy_ack_ms: None,
            ahead: None,
            server_rss_bytes: pid.and_then(server::rss_bytes),
            server_cpu_seconds,
            simulator_cpu_seconds,
            timeline: timeline.seconds(),
            latency_distribution: distribution(&latency),
        }
    }
}

/// Where a device connects again when its connection drops (`--reconnect`):
/// the next node of the list, as a client behind a load balancer would.
#[derive(Debug, Clone)]
pub(super) struct Redial {
    urls: Arc<[String]>,
    token: String,
    next: usize,
}

/// How many times a device tries the nodes in turn before giving up.
const REDIAL_ROUNDS: usize = 50;

impl Redial {
    pub(super) fn new(urls: Arc<[String]>, token: &str, first: usize) -> Redial {
        Redial { urls, token: token.to_owned(), next: first + 1 }
    }

    /// Connects to the next node that answers.
    async fn dial(&mut self) -> anyhow::Result<Ws> {
        for attempt in 0..self.urls.len() * REDIAL_ROUNDS {
            let url = &self.urls[self.next % self.urls.len()];
            self.next += 1;
            match connect(url, &self.token).await {
                Ok(ws) => return Ok(ws),
                Err(_) => tokio::time::sleep(Duration::from_millis(20 * (attempt as u64 + 1).min(10))).await,
            }
        }
        anyhow::bail!("no node took the connection back")
    }
}

/// Most bytes a simulated device reads from its socket at once. tungstenite
/// zeroes this much of its read buffer before every read, so its default of
/// 128 KiB would cost the simulator a 128 KiB `memset` per read (at 16 KiB
/// the `memset` was still 7.8% of the simulator's CPU in open loop).
const READ_BUFFER: usize = 4 * 1024;

/// Opens a WebSocket and completes the hello.
pub(super) async fn connect(url: &str, token: &str) -> anyhow::Result<Ws> {
    Ok(connect_with_hints(url, token).await?.0)
}

/// What a `welcome` tells a client about acknowledging (both extensions of the protocol).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AckHints {
    /// Conversations of more members keep no receipts.
    pub receipts_up_to: Option<u64>,
    /// How long a client may hold its ack of a message in such a conversation.
    pub lazy_ack: Option<Duration>,
}

impl AckHints {
    /// How long to hold acks in a conversation of `members` members, if at all.
    pub fn lazy_for(&self, members: usize) -> Option<Duration> {
        self.lazy_ack.filter(|_| self.receipts_up_to.is_some_and(|n| !keeps_receipts(members as u64, n)))
    }
}

/// Opens a connection, says hello, and reads the `welcome`'s ack hints.
pub(super) async fn connect_with_hints(url: &str, token: &str) -> anyhow::Result<(Ws, AckHints)> {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    ws.send(Message::text(json!({"type": "hello", "token": token}).to_string())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"welcome\"") => {
                let w: serde_json::Value = serde_json::from_str(&t)?;
                let hints = AckHints {
                    receipts_up_to: w["receipts_up_to"].as_u64(),
                    lazy_ack: w["lazy_ack_ms"].as_u64().map(Duration::from_millis),
                };
                return Ok((ws, hints));
            }
            Some(Ok(_)) => continue,
            other => anyhow::bail!("no welcome: {other:?}"),
        }
    }
}

/// Runs the direct scenario against one server, or the nodes of a cluster:
/// pair `p` sends through node `p` and receives through node `p + 1`.
pub async fn run(bases: &[String], args: &BenchArgs, server_pid: Option<u32>) -> anyhow::Result<Report> {
    let base = bases[0].as_str();
    let http = reqwest::Client::new();
    let prefix = setup::run_prefix();
    eprintln!("setting up {} users and {} conversations", args.pairs * 2, args.pairs);
    let users = setup::accounts(&http, base, &prefix, args.pairs * 2).await?;
    let mut conversations = Vec::with_capacity(args.pairs);
    for p in 0..args.pairs {
        conversations.push(setup::direct(&http, base, &users[2 * p], &users[2 * p + 1]).await?);
    }
    let ws_urls: Vec<String> = bases.iter().map(|b| format!("{}/v1/ws", b.replacen("http", "ws", 1))).collect();
    let node = |i: usize| ws_urls[i % ws_urls.len()].as_str();
    let epoch = Instant::now();
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let pairs: Vec<Arc<Pair>> = (0..args.pairs).map(|_| Arc::default()).collect();
    for p in 0..args.pairs {
        receivers.push(connect(node(p + 1), &users[2 * p + 1].token).await?);
        senders.push(connect(node(p), &users[2 * p].token).await?);
    }
    eprintln!("{} connections open; sending for {} s", args.pairs * 2, args.duration);
    let cpu_before = server::CpuMark::now(server_pid);
    let start = Instant::now() + super::LEAD;
    let stop_at = start + Duration::from_secs(args.duration);
    let drain_until = stop_at + Duration::from_secs(args.drain);
    let delivered = Arc::new(AtomicU64::new(0));
    let clock = args.rate.map(|r| Clock::start(Schedule::new(start, stop_at, r, args.pairs))).transpose()?;
    let mut recv_tasks = Vec::new();
    let mut send_tasks = Vec::new();
    let urls: Arc<[String]> = ws_urls.clone().into();
    let redial = |i: usize, token: &str| args.reconnect.then(|| Redial::new(Arc::clone(&urls), token, i));
    let latencies = Latencies::new(start);
    for (p, ws) in receivers.into_iter().enumerate() {
        let (pair, conv, delivered) = (Arc::clone(&pairs[p]), conversations[p].clone(), Arc::clone(&delivered));
        let again = redial(p + 1, &users[2 * p + 1].token);
        // Direct conversations keep receipts: their acks go at once.
        recv_tasks.push(tokio::spawn(receive(
            ws,
            conv,
            pair,
            epoch,
            Arc::clone(&latencies),
            stop_at,
            drain_until,
            delivered,
            again,
            None,
        )));
    }
    for (p, ws) in senders.into_iter().enumerate() {
        let (pair, conv) = (Arc::clone(&pairs[p]), conversations[p].clone());
        let again = redial(p, &users[2 * p].token);
        send_tasks.push(tokio::spawn(send(
            ws,
            conv,
            pair,
            epoch,
            start,
            stop_at,
            clock.as_ref().map(|c| c.slot(p)),
            args.inflight,
            None,
            again,
        )));
    }
    let recent = pairs.iter().map(|p| Arc::clone(&p.recent)).collect();
    let progress = Progress::start("direct", start, args.duration, Arc::clone(&delivered), recent);
    let mut tally = Tally::new(latencies);
    let mut confirmed = Vec::with_capacity(args.pairs);
    for t in send_tasks {
        confirmed.push(tally.sender(t.await??)?);
    }
    for (p, t) in recv_tasks.into_iter().enumerate() {
        tally.receiver(t.await??, confirmed[p])?;
    }
    progress.finish();
    Ok(tally.report(args, args.pairs, args.pairs * 2, server_pid, cpu_before))
}

/// The next item of `frames`, or `None` if none came for [`IDLE_CHECK`].
/// `idle` is the caller's one timer, pushed later each time (one
/// compare-and-swap while it is armed), where a fresh timeout per wait
/// would register a timer and take it out again.
pub(super) async fn next_or_idle<S: futures_util::Stream + Unpin>(
    frames: &mut S,
    idle: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Option<Option<S::Item>> {
    next_or_idle_until(frames, idle, None).await
}

/// [`next_or_idle`], but waiting no later than `until` either.
pub(super) async fn next_or_idle_until<S: futures_util::Stream + Unpin>(
    frames: &mut S,
    mut idle: std::pin::Pin<&mut tokio::time::Sleep>,
    until: Option<Instant>,
) -> Option<Option<S::Item>> {
    let check = Instant::now() + IDLE_CHECK;
    idle.as_mut().reset(until.map_or(check, |u| u.min(check)));
    tokio::select! {
        f = frames.next() => Some(f),
        _ = idle => None,
    }
}

/// A timer for [`next_or_idle`].
pub(super) fn idle_timer() -> tokio::time::Sleep {
    tokio::time::sleep(IDLE_CHECK)
}

pub(super) fn micros(epoch: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(epoch).as_micros() as u64
}

pub(super) fn send_frame(conv: &str, n: u64, stamp: u64) -> Message {
    Message::text(format!(
        r#"{{"type":"send","client_msg_id":"{n}","conversation_id":"{conv}","content":{{"type":"text","text":"{stamp}"}}}}"#
    ))
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    mut ws: Ws,
    conv: String,
    pair: Arc<Pair>,
    epoch: Instant,
    start: Instant,
    stop_at: Instant,
    mut slot: Option<Slot>,
    inflight: usize,
    pace: Option<Pace>,
    mut redial: Option<Redial>,
) -> anyhow::Result<SenderStats> {
    let mut stats = SenderStats { confirmed: 0, errors: 0, in_window: 0, send_to_sent: histogram(), lag: histogram() };
    // Sends awaiting `sent`, in order: (client_msg_id, stamp, when written).
    let mut pending: VecDeque<(u64, u64, Instant)> = VecDeque::new();
    let mut n: u64 = 0;
    // Nothing goes before the window opens: what the receivers count in it,
    // divided by its length, is the throughput, so a send made earlier
    // would be counted in a window it was not sent in.
    tokio::time::sleep_until(start).await;
    // One timer for the task's life, moved rather than made anew each turn.
    let timer = tokio::time::sleep_until(start);
    tokio::pin!(timer);
    loop {
        let now = Instant::now();
        let sending = now < stop_at;
        let before = pending.len();
        match slot.as_mut() {
            // Open loop: send every message whose time has come, stamped with
            // its due time; how late this task is counts as latency.
            Some(slot) if sending => {
                while let Some(due) = slot.take_due(now) {
                    n += 1;
                    pending.push_back((n, micros(epoch, due), now));
                    stats.lag.record(micros(due, now).max(1))?;
                }
            }
            // Closed loop: keep `inflight` sends awaiting `sent`, and no more
            // than the pace allows beyond what the receivers have.
            None if sending => {
                let allowed =
                    pace.map_or(u64::MAX, |p| p.ahead + pair.received.load(Ordering::Relaxed) / p.receivers.max(1));
                // Sends answered with an error were never stored, nor received.
                while pending.len() < inflight && n - stats.errors < allowed {
                    n += 1;
                    let t = Instant::now();
                    pending.push_back((n, micros(epoch, t), t));
                }
            }
            _ => {}
        }
        let written = write_sends(&mut ws, &conv, pending.range(before..)).await;
        if !sending && pending.is_empty() {
            break;
        }
        // In open loop the clock wakes the task for its next send.
        let wake = if sending && slot.is_some() {
            stop_at
        } else if sending && pace.is_some() && pending.len() < inflight {
            (now + PACE_POLL).min(stop_at)
        } else {
            stop_at.max(now) + Duration::from_secs(30)
        };
        if timer.deadline() != wake || timer.is_elapsed() {
            timer.as_mut().reset(wake);
        }
        let frame = match written {
            Ok(()) => tokio::select! {
                f = ws.next() => f,
                _ = &mut timer => {
                    if !sending { break; }
                    continue;
                }
                _ = due(slot.as_ref()) => continue,
            },
            Err(_) => None,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => match redial.as_mut() {
                // A new connection, then every unconfirmed send again, with
                // its `client_msg_id`: the server stores none of them twice.
                Some(r) => {
                    ws = r.dial().await?;
                    let _ = write_sends(&mut ws, &conv, pending.iter()).await;
                    continue;
                }
                None => break,
            },
        };
        let at = Instant::now();
        if text.contains(r#""type":"sent""#) {
            stats.confirmed += 1;
            if at < stop_at {
                stats.in_window += 1;
            }
            if let Some((_, _, t)) = pending.pop_front() {
                stats.send_to_sent.record(micros(t, at).max(1))?;
            }
        } else if text.contains(r#""type":"error""#) {
            stats.errors += 1;
            pending.pop_front();
        }
    }
    pair.confirmed.store(stats.confirmed, Ordering::Release);
    pair.done.store(true, Ordering::Release);
    Ok(stats)
}

/// Writes `send` frames (feed each, flush once).
async fn write_sends<'a>(
    ws: &mut Ws,
    conv: &str,
    sends: impl Iterator<Item = &'a (u64, u64, Instant)>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for &(n, stamp, _) in sends {
        ws.feed(send_frame(conv, n, stamp)).await?;
    }
    ws.flush().await
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn receive(
    mut ws: Ws,
    conv: String,
    pair: Arc<Pair>,
    epoch: Instant,
    latencies: Arc<Latencies>,
    stop_at: Instant,
    drain_until: Instant,
    delivered: Arc<AtomicU64>,
    mut redial: Option<Redial>,
    lazy_ack: Option<Duration>,
) -> anyhow::Result<ReceiverStats> {
    let mut stats =
        ReceiverStats { samples: Samples::new(&latencies), received: 0, in_window: 0, duplicates: 0, reordered: 0 };
    let mut last_seq = 0u64;
    let mut acked = 0u64;
    // When the oldest message not yet acknowledged arrived.
    let mut unacked_since: Option<Instant> = None;
    let idle = idle_timer();
    tokio::pin!(idle);
    loop {
        if pair.done.load(Ordering::Acquire) && stats.received >= pair.confirmed.load(Ordering::Acquire) {
            break;
        }
        // Acknowledge when the socket has nothing more ready (in a
        // conversation whose acks may wait, once the oldest unacknowledged
        // message has waited `lazy_ack`), or every ACK_EVERY messages.
        let ready = ws.next().now_or_never();
        let frame = match ready {
            Some(f) => f,
            None => {
                let due = lazy_ack.zip(unacked_since).map(|(wait, since)| since + wait);
                if last_seq > acked && due.is_none_or(|d| Instant::now() >= d) {
                    let ack = ws.send(Message::text(format!(
                        r#"{{"type":"ack","conversation_id":"{conv}","seq":{last_seq}}}"#
                    )));
                    if ack.await.is_ok() {
                        acked = last_seq;
                        unacked_since = None;
                    }
                }
                let until = if last_seq > acked { due } else { None };
                // Idle: wake now and then only to see whether the sender is
                // done, or when a held ack is due.
                match next_or_idle_until(&mut ws, idle.as_mut(), until).await {
                    Some(f) => f,
                    None if Instant::now() > drain_until => break,
                    None => continue,
                }
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => match redial.as_mut() {
                // The new connection streams from the stored cursor: what
                // arrives again counts as a duplicate, never as lost.
                Some(r) => {
                    ws = r.dial().await?;
                    acked = 0;
                    unacked_since = None;
                    continue;
                }
                None => break,
            },
        };
        let now = Instant::now();
        let Some(m) = MessageHead::parse(&text) else { continue };
        if m.seq <= last_seq {
            stats.duplicates += 1;
            continue;
        }
        if m.seq != last_seq + 1 {
            stats.reordered += 1;
        }
        last_seq = m.seq;
        unacked_since.get_or_insert(now);
        stats.received += 1;
        delivered.fetch_add(1, Ordering::Relaxed);
        pair.received.fetch_add(1, Ordering::Relaxed);
        if now < stop_at {
            stats.in_window += 1;
        }
        let stamp: Option<u64> = content_text(m.content).and_then(|t| t.parse().ok());
        if let Some(sent_at) = stamp {
            let latency = micros(epoch, now).saturating_sub(sent_at).max(1);
            stats.samples.record(now, latency);
            pair.recent.record(latency);
        }
        if last_seq - acked >= ACK_EVERY {
            let ack =
                ws.send(Message::text(format!(r#"{{"type":"ack","conversation_id":"{conv}","seq":{last_seq}}}"#)));
            if ack.await.is_ok() {
                acked = last_seq;
                unacked_since = None;
            }
        }
    }
    if last_seq > acked {
        let _ =
            ws.send(Message::text(format!(r#"{{"type":"ack","conversation_id":"{conv}","seq":{last_seq}}}"#))).await;
    }
    let _ = ws.close(None).await;
    Ok(stats)
}
