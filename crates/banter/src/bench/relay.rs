//! The `--baseline-relay` measurement: the `direct` or `group` load sent through a
//! minimal WebSocket relay instead of Banter, so a report can say how close
//! Banter comes to what the machine allows.
//!
//! The relay does the least a chat server must do. It takes WebSocket frames
//! in and writes them out to the other side, with no storage, no sequence
//! numbers and no delivery acknowledgements. A client sends
//! `{"type":"hello","token":"<pair>:<s|r>"}` to say which pair it belongs to
//! and whether it sends or receives, and gets `{"type":"welcome"}`. Every
//! text frame from the sender of pair i goes verbatim to the receiver of
//! pair i, and the sender gets a tiny `{"type":"sent"}` for it. Senders are
//! therefore the same as in the real run: closed loop on `sent` with
//! `--inflight` sends awaiting it, or open loop at `--rate`, with the same
//! frames stamped with the same microsecond clock.
//!
//! The direct relay runs inside the bench process, on 127.0.0.1 with a
//! free port. Server and simulator share the machine, as they do in the
//! real run. Its sockets take the server's buffer sizes
//! (`banter_server::ws`), and its receivers read each frame's stamp with
//! one borrowed parse as the real receivers do, so the two runs differ in
//! what the server does alone.
//!
//! The `group` load goes through the same relay code ([`run_group`]):
//! group g's creator says `g:s` and every other member `g:r`, and each text
//! frame of the creator goes to every member's queue. There the relay
//! writes `sent` before it fans the frame out, as Banter answers a send to a
//! large group before its fan-out. It runs as a process of its own
//! (`banter bench --relay-serve`), as the server does, since its sockets and
//! the simulator's would not fit under one process's open-file limit at
//! 10,000 members, with the senders' connections on a runtime of one
//! thread, as Banter reads sends on a lane of its own; so the relay's
//! send→`sent` is the floor of what the machine allows under that delivery
//! load, and its delivery figures what a fan-out that stores nothing and
//! waits for no ack achieves.

use super::clock::{Clock, Schedule};
use super::direct::{connect, idle_timer, micros, next_or_idle, send, Pair, SenderStats};
use super::progress::Progress;
use super::report::{distribution, histogram, Latencies, Percentiles, Samples, Second};
use super::BenchArgs;
use banter_proto::frame::content_text;
use banter_server::ws::{READ_BUFFER, WRITE_BUFFER};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Frames the relay holds for a receiver before the sender has to wait.
const QUEUE: usize = 1024;

/// The relay's answer to every forwarded frame.
const SENT: &str = r#"{"type":"sent"}"#;

/// What the relay run measured, reported next to the real run.
#[derive(Debug, Serialize)]
pub struct RelayResult {
    /// Pairs (`direct`) or groups (`group`).
    pub pairs: usize,
    /// Members of each group; null for `direct`.
    pub members: Option<usize>,
    pub duration_s: f64,
    /// Target total rate (open loop), or null when sending as fast as `sent` allows.
    pub rate: Option<u64>,
    /// Sends answered with `sent`.
    pub sent_acknowledged: u64,
    /// Frames that reached the receiving side.
    pub delivered: u64,
    /// Deliveries per second while sending.
    pub throughput_rps: f64,
    /// `sent` answers per second while sending.
    pub acked_sends_per_s: f64,
    /// Send (or scheduled send, open loop) → receipt at the other side.
    pub message_delivery_latency_ms: Percentiles,
    /// Open loop: how late the simulator wrote each send after it was due; null in closed loop.
    pub send_lag_ms: Option<Percentiles>,
    /// Send written → its `sent` read, at the sender.
    pub send_to_sent_ms: Percentiles,
    /// Deliveries and latency percentiles per second.
    pub timeline: Vec<Second>,
    /// The whole delivery-latency distribution: `(percentile, ms)` points.
    pub latency_distribution: Vec<(f64, f64)>,
}

impl RelayResult {
    /// Prints the relay's figures and how the real run compares, under the real run's table.
    pub fn print(&self, ratio: f64) {
        let l = &self.message_delivery_latency_ms;
        println!(
            "relay baseline      {:.0} delivered/s   latency ms p50 {:.3}  p99 {:.3}  p99.9 {:.3}",
            self.throughput_rps, l.p50, l.p99, l.p999
        );
        let s = &self.send_to_sent_ms;
        println!("relay send→sent ms  p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}", s.p50, s.p99, s.p999, s.max);
        if let Some(g) = &self.send_lag_ms {
            println!("relay send lag ms   p50 {:.3}  p99 {:.3}  p99.9 {:.3}", g.p50, g.p99, g.p999);
        }
        println!("ratio_to_relay      {ratio:.3} (throughput of this run / relay throughput)");
    }
}

/// Runs the `direct` load of `args` through an in-process relay.
pub async fn run(args: &BenchArgs) -> anyhow::Result<RelayResult> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/", listener.local_addr()?);
    let relay = tokio::spawn(serve(listener, None));
    eprintln!("relay baseline: {} pairs through a plain WebSocket relay", args.pairs);
    let epoch = Instant::now();
    let pairs: Vec<Arc<Pair>> = (0..args.pairs).map(|_| Arc::default()).collect();
    let mut receivers = Vec::with_capacity(args.pairs);
    let mut senders = Vec::with_capacity(args.pairs);
    for p in 0..args.pairs {
        receivers.push(connect(&url, &format!("{p}:r")).await?);
        senders.push(connect(&url, &format!("{p}:s")).await?);
    }
    let start = Instant::now() + super::LEAD;
    let stop_at = start + Duration::from_secs(args.duration);
    let drain_until = stop_at + Duration::from_secs(args.drain);
    let delivered = Arc::new(AtomicU64::new(0));
    let clock = args.rate.map(|r| Clock::start(Schedule::new(start, stop_at, r, args.pairs))).transpose()?;
    let mut recv_tasks = Vec::new();
    let latencies = Latencies::new(start);
    for (p, ws) in receivers.into_iter().enumerate() {
        let (pair, delivered) = (Arc::clone(&pairs[p]), Arc::clone(&delivered));
        let latencies = Arc::clone(&latencies);
        recv_tasks.push(tokio::spawn(receive(ws, pair, epoch, latencies, stop_at, drain_until, delivered)));
    }
    let mut send_tasks = Vec::new();
    for (p, ws) in senders.into_iter().enumerate() {
        let conv = conversation(p);
        let pair = Arc::clone(&pairs[p]);
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
            None,
        )));
    }
    let recent = pairs.iter().map(|p| Arc::clone(&p.recent)).collect();
    let progress = Progress::start("relay ", start, args.duration, Arc::clone(&delivered), recent);
    let mut senders = Vec::with_capacity(send_tasks.len());
    for t in send_tasks {
        senders.push(t.await??);
    }
    let result = tally(args, args.pairs, None, senders, recv_tasks, &latencies).await;
    progress.finish();
    relay.abort();
    result
}

/// Runs the `group` load of `args` through a relay process of its own (see the module notes).
pub async fn run_group(args: &BenchArgs) -> anyhow::Result<RelayResult> {
    let (groups, members) = (args.groups, args.members.max(2));
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["bench", "--relay-serve"])
        // The relay ends when this input closes: with this process, however it ends.
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let url = tokio::time::timeout(RELAY_START, super::server::listening_address(&mut child))
        .await
        .map_err(|_| anyhow::anyhow!("relay process did not listen within {RELAY_START:?}"))??;
    eprintln!("relay baseline: {groups} groups of {members} through a plain WebSocket relay");
    let result = run_group_through(args, &url, groups, members).await;
    let _ = child.kill().await;
    result
}

/// How long the relay process may take to say where it listens.
const RELAY_START: Duration = Duration::from_secs(10);

/// The relay process of [`run_group`] (`banter bench --relay-serve`): its
/// senders' connections on a runtime of one thread, the rest on the
/// process's runtime; prints its URL, then serves until its input closes.
pub async fn serve_process() -> anyhow::Result<()> {
    // One socket per member: as many as the process may open.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let sending = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("relay-sends")
        .enable_all()
        .build()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("relay listening on ws://{}/", listener.local_addr()?);
    let (mut input, mut discard) = (tokio::io::stdin(), tokio::io::sink());
    tokio::select! {
        () = serve(listener, Some(sending.handle().clone())) => {}
        _ = tokio::io::copy(&mut input, &mut discard) => {}
    }
    sending.shutdown_background();
    Ok(())
}

/// The conversation id the senders of pair or group `i` put in their frames: the relay
/// ignores it, and one as long as a server's keeps the frames the same size.
fn conversation(i: usize) -> String {
    format!("{}", 300_000_000_000_000_000 + i as u64)
}

/// The group load through the relay at `url`: the senders on a thread of their own, as in [`super::group`].
async fn run_group_through(args: &BenchArgs, url: &str, groups: usize, members: usize) -> anyhow::Result<RelayResult> {
    let mut senders =
        super::group::SenderThread::connect(url.to_owned(), (0..groups).map(|g| format!("{g}:s")).collect())?;
    let mut sockets = Vec::with_capacity(groups * (members - 1));
    for g in 0..groups {
        for _ in 1..members {
            sockets.push((g, connect(url, &format!("{g}:r")).await?));
        }
    }
    senders.ready().await?;
    let conversations = (0..groups).map(conversation).collect();
    let plan = super::group::Plan::new(args, conversations, members)?;
    let (epoch, start, stop_at, drain_until) = (plan.epoch, plan.start, plan.stop_at, plan.drain_until);
    let pairs = plan.pairs.clone();
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Latencies::new(start);
    let sent = senders.run(plan);
    let recv_tasks: Vec<_> = sockets
        .into_iter()
        .map(|(g, ws)| {
            let (pair, delivered, latencies) = (Arc::clone(&pairs[g]), Arc::clone(&delivered), Arc::clone(&latencies));
            tokio::spawn(receive(ws, pair, epoch, latencies, stop_at, drain_until, delivered))
        })
        .collect();
    let recent = pairs.iter().map(|p| Arc::clone(&p.recent)).collect();
    let progress = Progress::start("relay ", start, args.duration, Arc::clone(&delivered), recent);
    let stats = sent.await??;
    let result = tally(args, groups, Some(members), stats, recv_tasks, &latencies).await;
    progress.finish();
    result
}

/// The relay run's figures, once every sender and receiver is done.
async fn tally(
    args: &BenchArgs,
    pairs: usize,
    members: Option<usize>,
    senders: Vec<SenderStats>,
    receivers: Vec<tokio::task::JoinHandle<anyhow::Result<Received>>>,
    latencies: &Latencies,
) -> anyhow::Result<RelayResult> {
    let (mut confirmed, mut acked_in_window, mut lag, mut send_to_sent) = (0, 0, histogram(), histogram());
    for s in senders {
        confirmed += s.confirmed;
        acked_in_window += s.in_window;
        lag.add(&s.lag)?;
        send_to_sent.add(&s.send_to_sent)?;
    }
    let (mut received, mut in_window) = (0, 0);
    for t in receivers {
        let r = t.await??;
        received += r.received;
        in_window += r.in_window;
        drop(r.samples);
    }
    let (latency, timeline) = latencies.take();
    let secs = args.duration as f64;
    Ok(RelayResult {
        pairs,
        members,
        duration_s: secs,
        rate: args.rate,
        sent_acknowledged: confirmed,
        delivered: received,
        throughput_rps: in_window as f64 / secs,
        acked_sends_per_s: acked_in_window as f64 / secs,
        message_delivery_latency_ms: Percentiles::of(&latency),
        send_lag_ms: args.rate.map(|_| Percentiles::of(&lag)),
        send_to_sent_ms: Percentiles::of(&send_to_sent),
        timeline: timeline.seconds(),
        latency_distribution: distribution(&latency),
    })
}

/// The relay's queues to the receivers of one pair or group; each receiver
/// adds its own when it connects, and a sender takes the list again only
/// when it has grown.
type Room = Arc<Mutex<Vec<mpsc::Sender<Utf8Bytes>>>>;

/// Every pair's or group's room, by its index.
type Rooms = Arc<Mutex<HashMap<usize, Room>>>;

/// Accepts relay connections until aborted; aborting it also ends every
/// connection. With `sending`, the relay serves groups (see the module
/// notes): senders' connections run on that runtime, and each sender's
/// frames are fanned out by a task of this one.
async fn serve(listener: TcpListener, sending: Option<tokio::runtime::Handle>) {
    let rooms: Rooms = Arc::default();
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, say: the clients that could not connect fail the run.
            Err(e) => {
                eprintln!("relay: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(stream, Arc::clone(&rooms), sending.clone()));
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

/// One relay connection: the hello, then forwarding (a sender) or delivering (a receiver).
async fn connection(stream: TcpStream, rooms: Rooms, sending: Option<tokio::runtime::Handle>) -> anyhow::Result<()> {
    // tungstenite's default read buffer (128 KiB) is zeroed before every
    // read: in open loop, one read per frame, that `memset` was a quarter of
    // the relay's CPU.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER).write_buffer_size(WRITE_BUFFER);
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let hello = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => break t,
            Some(Ok(_)) => continue,
            _ => return Ok(()),
        }
    };
    let (id, sender) = parse_hello(&hello).ok_or_else(|| anyhow::anyhow!("bad relay hello: {hello}"))?;
    ws.send(Message::text(r#"{"type":"welcome"}"#)).await?;
    let room = Arc::clone(rooms.lock().unwrap_or_else(PoisonError::into_inner).entry(id).or_default());
    if !sender {
        let (tx, rx) = mpsc::channel(QUEUE);
        room.lock().unwrap_or_else(PoisonError::into_inner).push(tx);
        return deliver(ws, rx).await;
    }
    match sending {
        Some(lane) => {
            // The fan-out runs here, so the sender's thread only reads and answers.
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(fan_out(rx, room));
            // Ends with the runtime, like the connections of `serve`.
            drop(lane.spawn(forward(ws, Forward::AnswerFirst(tx))));
        }
        None => forward(ws, Forward::ToPair(room)).await?,
    }
    Ok(())
}

/// The pair or group index and whether the client is its sender, from `{"token":"<index>:<s|r>"}`.
fn parse_hello(text: &str) -> Option<(usize, bool)> {
    let hello: serde_json::Value = serde_json::from_str(text).ok()?;
    let (pair, role) = hello["token"].as_str()?.split_once(':')?;
    Some((pair.parse().ok()?, role == "s"))
}

/// Where a sender's frames go, and when it hears `sent`.
enum Forward {
    /// To its pair's one receiver, then `sent` (the direct relay).
    ToPair(Room),
    /// `sent` first, then to its group's fan-out task (the group relay).
    AnswerFirst(mpsc::Sender<Utf8Bytes>),
}

/// Forwards a sender's text frames and answers each with `sent`.
async fn forward<S>(mut ws: WebSocketStream<S>, to: Forward) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut receiver: Option<mpsc::Sender<Utf8Bytes>> = None;
    let mut next = ws.next().await;
    loop {
        match next {
            Some(Ok(Message::Text(t))) => match &to {
                Forward::ToPair(room) => {
                    if receiver.is_none() {
                        receiver = room.lock().unwrap_or_else(PoisonError::into_inner).first().cloned();
                    }
                    let r =
                        receiver.as_ref().ok_or_else(|| anyhow::anyhow!("a pair's sender came before its receiver"))?;
                    r.send(t).await?;
                    ws.feed(Message::text(SENT)).await?;
                }
                Forward::AnswerFirst(group) => {
                    ws.send(Message::text(SENT)).await?;
                    group.send(t).await?;
                }
            },
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
            Some(Ok(_)) => {}
        }
        // Answers go out together when no further frame is waiting, as a server batches its writes.
        next = match ws.next().now_or_never() {
            Some(frame) => frame,
            None => {
                ws.flush().await?;
                ws.next().await
            }
        };
    }
}

/// Hands each of a group sender's frames, in order, to every receiver in its room.
async fn fan_out(mut frames: mpsc::Receiver<Utf8Bytes>, room: Room) {
    let mut to: Vec<mpsc::Sender<Utf8Bytes>> = Vec::new();
    while let Some(t) = frames.recv().await {
        {
            let now = room.lock().unwrap_or_else(PoisonError::into_inner);
            if now.len() != to.len() {
                to.clone_from(&now);
            }
        }
        for member in &to {
            // A receiver gone is passed over; the others still get the frame.
            let _ = member.send(t.clone()).await;
        }
    }
}

/// Writes a receiver's queued frames to it, flushing when the queue is empty.
async fn deliver<S>(mut ws: WebSocketStream<S>, mut rx: mpsc::Receiver<Utf8Bytes>) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            queued = rx.recv() => {
                let Some(text) = queued else { return Ok(()) };
                ws.feed(Message::Text(text)).await?;
                while let Ok(text) = rx.try_recv() {
                    ws.feed(Message::Text(text)).await?;
                }
                ws.flush().await?;
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// A forwarded `send` frame, of which a relay receiver reads only the content.
#[derive(Deserialize)]
struct Forwarded<'a> {
    #[serde(borrow)]
    content: &'a RawValue,
}

impl Forwarded<'_> {
    /// The send's stamp: its text content, a number of microseconds.
    fn stamp(text: &str) -> Option<u64> {
        let frame: Forwarded<'_> = serde_json::from_str(text).ok()?;
        content_text(frame.content)?.parse().ok()
    }
}

/// What a relay receiver counted.
struct Received {
    samples: Samples,
    received: u64,
    in_window: u64,
}

/// A relay receiver: parses each frame as the real receiver does, and takes
/// the latency from the stamp in its text. It stops once it holds everything
/// its sender got `sent` for, or when the drain time is over.
async fn receive<S>(
    mut ws: WebSocketStream<S>,
    pair: Arc<Pair>,
    epoch: Instant,
    latencies: Arc<Latencies>,
    stop_at: Instant,
    drain_until: Instant,
    delivered: Arc<AtomicU64>,
) -> anyhow::Result<Received>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut stats = Received { samples: Samples::new(&latencies), received: 0, in_window: 0 };
    let idle = idle_timer();
    tokio::pin!(idle);
    loop {
        if pair.done.load(Ordering::Acquire) && stats.received >= pair.confirmed.load(Ordering::Acquire) {
            break;
        }
        let frame = match ws.next().now_or_never() {
            Some(f) => f,
            None => match next_or_idle(&mut ws, idle.as_mut()).await {
                Some(f) => f,
                None if Instant::now() > drain_until => break,
                None => continue,
            },
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => break,
        };
        let now = Instant::now();
        let Some(sent_at) = Forwarded::stamp(&text) else { continue };
        stats.received += 1;
        pair.received.fetch_add(1, Ordering::Relaxed);
        delivered.fetch_add(1, Ordering::Relaxed);
        if now < stop_at {
            stats.in_window += 1;
        }
        let latency = micros(epoch, now).saturating_sub(sent_at).max(1);
        stats.samples.record(now, latency);
        pair.recent.record(latency);
    }
    let _ = ws.close(None).await;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_reads_the_stamp_of_a_forwarded_send() {
        let frame = super::super::direct::send_frame("c1", 7, 123_456);
        assert_eq!(Forwarded::stamp(frame.to_text().unwrap()), Some(123_456));
        assert_eq!(Forwarded::stamp(r#"{"type":"sent"}"#), None);
        assert_eq!(Forwarded::stamp(r#"{"content":{"type":"image","url":"x"}}"#), None);
    }
}
