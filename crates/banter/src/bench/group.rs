//! The `group` scenario: G groups of M members; in each, the creator sends
//! and every other member receives, verifies and acknowledges. With M above
//! the server's fan-out threshold the messages go through its asynchronous
//! queue; below it they are fanned out on the send path.
//!
//! Deliveries are counted per receiving device, so a group of M members
//! turns each message into M − 1 acknowledged deliveries.

use super::clock::{Clock, Schedule};
use super::direct::{connect, connect_with_hints, receive, send, Pace, Pair, SenderStats, Tally};
use super::report::{Latencies, Report};
use super::{server, setup, BenchArgs};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Connections opened at once.
const CONNECT_CONCURRENCY: usize = 128;

pub async fn run(base: &str, args: &BenchArgs, server_pid: Option<u32>) -> anyhow::Result<Report> {
    let (groups, members) = (args.groups, args.members.max(2));
    let http = reqwest::Client::new();
    eprintln!("setting up {} users in {groups} groups of {members}", groups * members);
    let users = setup::accounts(&http, base, &setup::run_prefix(), groups * members).await?;
    let mut conversations = Vec::with_capacity(groups);
    for g in users.chunks(members) {
        conversations.push(setup::group(&http, base, &g[0], &g[1..]).await?);
    }
    let ws_url = format!("{}/v1/ws", base.replacen("http", "ws", 1));
    eprintln!("opening {} connections", groups * members);
    // The senders (each group's creator) run on a thread of their own.
    let mut senders =
        SenderThread::connect(ws_url.clone(), users.chunks(members).map(|g| g[0].token.clone()).collect())?;
    let receiving = users.chunks(members).enumerate().flat_map(|(g, m)| m[1..].iter().map(move |u| (g, u)));
    let sockets: Vec<_> = stream::iter(receiving.map(|(g, u)| {
        let url = &ws_url;
        async move { connect_with_hints(url, &u.token).await.map(|(ws, hints)| (g, ws, hints)) }
    }))
    .buffered(CONNECT_CONCURRENCY)
    .try_collect()
    .await?;
    senders.ready().await?;
    let plan = Plan::new(args, conversations.clone(), members)?;
    let (epoch, start, stop_at, drain_until) = (plan.epoch, plan.start, plan.stop_at, plan.drain_until);
    let pairs = plan.pairs.clone();
    let delivered = Arc::new(AtomicU64::new(0));
    let cpu_before = server::CpuMark::now(server_pid);
    let plan_pace = plan.pace;
    let sent = senders.run(plan);
    // Acks of a group that keeps no receipts may wait, as the welcome says.
    let lazy = sockets.first().and_then(|(_, _, hints)| hints.lazy_for(members)).filter(|_| !args.eager_acks);
    if let Some(wait) = lazy {
        eprintln!("receivers hold their acks up to {} ms (the welcome's lazy_ack_ms)", wait.as_millis());
    }
    let latencies = Latencies::new(start);
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|(g, ws, _)| {
            let (pair, conv) = (Arc::clone(&pairs[g]), conversations[g].clone());
            let latencies = Arc::clone(&latencies);
            let task =
                receive(ws, conv, pair, epoch, latencies, stop_at, drain_until, Arc::clone(&delivered), None, lazy);
            (g, tokio::spawn(task))
        })
        .collect();
    if let Some(p) = plan_pace {
        eprintln!("each sender stays at most {} messages ahead of its receivers", p.ahead);
    }
    eprintln!("sending for {} s", args.duration);
    let mut tally = Tally::new(latencies);
    let mut confirmed = Vec::with_capacity(groups);
    for stats in sent.await?? {
        confirmed.push(tally.sender(stats)?);
    }
    for (g, t) in receivers {
        tally.receiver(t.await??, confirmed[g])?;
    }
    let mut report = tally.report(args, groups, groups * members, server_pid, cpu_before);
    report.lazy_ack_ms = lazy.map(|wait| wait.as_millis() as u64);
    report.ahead = plan_pace.map(|p| p.ahead);
    Ok(report)
}

/// When and how the senders send.
pub(super) struct Plan {
    pub(super) conversations: Vec<String>,
    pub(super) pairs: Vec<Arc<Pair>>,
    pub(super) epoch: Instant,
    pub(super) start: Instant,
    pub(super) stop_at: Instant,
    /// How long receivers wait for what is still on its way after `stop_at`.
    pub(super) drain_until: Instant,
    /// Open loop: the clock that wakes each group's sender.
    pub(super) clock: Option<Clock>,
    pub(super) inflight: usize,
    pub(super) pace: Option<Pace>,
}

impl Plan {
    /// The plan of a run of `args` over `conversations`, groups of `members`,
    /// sending from [`super::LEAD`] from now; each group's [`Pair`] is new.
    pub(super) fn new(args: &BenchArgs, conversations: Vec<String>, members: usize) -> anyhow::Result<Plan> {
        let groups = conversations.len();
        let epoch = Instant::now();
        let start = Instant::now() + super::LEAD;
        let stop_at = start + Duration::from_secs(args.duration);
        Ok(Plan {
            conversations,
            pairs: (0..groups).map(|_| Arc::default()).collect(),
            epoch,
            start,
            stop_at,
            drain_until: stop_at + Duration::from_secs(args.drain),
            clock: args.rate.map(|r| Clock::start(Schedule::new(start, stop_at, r, groups))).transpose()?,
            inflight: args.inflight,
            // Closed loop only: an open-loop sender keeps its schedule.
            pace: args.rate.is_none().then_some(Pace { receivers: members as u64 - 1, ahead: args.ahead }),
        })
    }
}

/// The senders, on a thread and runtime of their own: sharing a runtime with
/// thousands of busy receiver tasks, a sender would read its `sent` only
/// when its turn in that queue came, and its send→`sent` time would measure
/// this process instead of the server. A real sender is a device of its own.
pub(super) struct SenderThread {
    ready: oneshot::Receiver<anyhow::Result<()>>,
    plan: oneshot::Sender<Plan>,
    done: oneshot::Receiver<anyhow::Result<Vec<SenderStats>>>,
}

impl SenderThread {
    /// Starts the thread, which connects one sender per token.
    pub(super) fn connect(url: String, tokens: Vec<String>) -> anyhow::Result<SenderThread> {
        let (ready_tx, ready) = oneshot::channel();
        let (plan, plan_rx) = oneshot::channel::<Plan>();
        let (done_tx, done) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("bench-senders".into()).spawn(move || {
            runtime.block_on(async move {
                let mut sockets = Vec::with_capacity(tokens.len());
                for token in &tokens {
                    match connect(&url, token).await {
                        Ok(ws) => sockets.push(ws),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let Ok(p) = plan_rx.await else { return };
                let tasks: Vec<_> = sockets
                    .into_iter()
                    .enumerate()
                    .map(|(g, ws)| {
                        let (pair, conv) = (Arc::clone(&p.pairs[g]), p.conversations[g].clone());
                        tokio::spawn(send(
                            ws,
                            conv,
                            pair,
                            p.epoch,
                            p.start,
                            p.stop_at,
                            p.clock.as_ref().map(|c| c.slot(g)),
                            p.inflight,
                            p.pace,
                            None,
                        ))
                    })
                    .collect();
                let mut stats = Vec::with_capacity(tasks.len());
                for t in tasks {
                    match t.await.map_err(anyhow::Error::from).and_then(|r| r) {
                        Ok(s) => stats.push(s),
                        Err(e) => {
                            let _ = done_tx.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = done_tx.send(Ok(stats));
            })
        })?;
        Ok(SenderThread { ready, plan, done })
    }

    /// Waits until every sender is connected.
    pub(super) async fn ready(&mut self) -> anyhow::Result<()> {
        (&mut self.ready).await.map_err(|_| anyhow::anyhow!("sender thread ended"))?
    }

    /// Starts sending; the result is every sender's figures, in group order.
    pub(super) fn run(self, plan: Plan) -> oneshot::Receiver<anyhow::Result<Vec<SenderStats>>> {
        let _ = self.plan.send(plan);
        self.done
    }
}
