//! `banter bench`: a load simulator that speaks the real protocol over real
//! WebSocket connections, verifies that every message arrived exactly as
//! sent, and reports `throughput_rps` and `message_delivery_latency_ms`.
//!
//! It drives a running server (`--url`) or starts its own on a temporary
//! data directory (`--spawn`).

mod clock;
mod connections;
mod direct;
mod group;
mod history;
mod html;
mod offline;
mod progress;
mod relay;
mod report;
mod server;
mod setup;
mod store;
mod storm;
mod workers;

use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Sending starts this long after the clients' tasks are spawned, so that
/// their own start-up (thousands of tasks spawned, their first allocations)
/// is over before the first scheduled send and is not measured as latency.
/// Without it the relay alone showed a p99.9 of 44-50 ms at 5,000/s with
/// 1,000 pairs, all of it in the first second; with it, 2.4-3.1 ms.
pub(crate) const LEAD: Duration = Duration::from_millis(500);
/// How many tasks a worker of the bench's runtime runs between looks at the
/// runtime's shared queue (tokio's default is 61). A task woken from outside
/// the runtime, as the open-loop clock wakes each sender (`clock.rs`), waits
/// there; with the default, a busy worker let it wait behind dozens of
/// receivers, and that wait counted as latency.
pub(crate) const GLOBAL_QUEUE_INTERVAL: u32 = 2;

/// Which load to run.
#[derive(Debug, Clone, Copy, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// P pairs, one sender and one receiver each, in a direct conversation.
    Direct,
    /// `--groups` groups of `--members`: the creator sends, every other member receives.
    Group,
    /// `--messages` stored over `--conversations`, then the newest 50 of random conversations over HTTP.
    History,
    /// The embedded store alone: appends spread over `--conversations` active conversations.
    Store,
    /// One device offline while `--messages` accumulate, then its backlog drains.
    Offline,
    /// Open `--connections` authenticated connections and hold them with heartbeats.
    Connections,
    /// `--connections` devices drop at once, miss messages, and all come back.
    ReconnectStorm,
}

/// Flags of `banter bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server to drive, e.g. http://127.0.0.1:8080. For the nodes of a cluster
    /// give several, comma-separated: the direct scenario then connects each
    /// pair's sender and receiver to different nodes, the connections
    /// scenario spreads its connections over them, and the others use the first.
    #[arg(long, conflicts_with = "spawn")]
    pub url: Option<String>,
    /// Start a server of this binary on a temporary data directory.
    #[arg(long)]
    pub spawn: bool,
    /// direct: a device whose connection drops connects again to the next
    /// --url and carries on, resending unconfirmed sends with their
    /// `client_msg_id` (for runs where a node is killed on purpose).
    #[arg(long)]
    pub reconnect: bool,
    /// The load to run.
    #[arg(long, value_enum, default_value_t = Scenario::Direct)]
    pub scenario: Scenario,
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Total messages per second, sent on a fixed schedule (open loop). Without it, each
    /// sender sends as fast as `sent` acknowledgements allow.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Closed loop: sends each sender keeps awaiting `sent`.
    #[arg(long, default_value_t = 32)]
    pub inflight: usize,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the run as a self-contained HTML page with charts (every scenario but store
    /// and history).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Direct and group scenarios: first send the same load through a plain WebSocket relay
    /// (in this process for direct, a process of its own for group), and report this run's
    /// throughput as a ratio of the relay's.
    #[arg(long)]
    pub baseline_relay: bool,
    /// With --spawn: the server's SQLite durability (`full` or `normal`).
    #[arg(long, default_value = "full")]
    pub sqlite_synchronous: String,
    /// Group scenario: number of groups.
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Group scenario: members per group, the sender included.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Connections scenario: connections to open (each is one device).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connections scenario: bench processes that hold the connections. By
    /// default as many as their open-file limit needs (one if it allows all).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub processes: Option<u64>,
    /// Run as a worker process of the connections scenario (started by the bench itself).
    #[arg(long, hide = true, requires = "url")]
    pub worker: bool,
    /// Run as the group scenario's relay process (started by the bench itself).
    #[arg(long, hide = true)]
    pub relay_serve: bool,
    /// Store scenario: active conversations.
    #[arg(long, default_value_t = 10_000)]
    pub conversations: usize,
    /// Store scenario: messages to append; offline scenario: the backlog.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Group scenario: receivers acknowledge as soon as nothing more is waiting, even in a
    /// group whose acks may wait (`lazy_ack_ms` of the welcome; see docs/protocol.md).
    #[arg(long)]
    pub eager_acks: bool,
    /// Group scenario, closed loop: a sender stays at most this many messages ahead of what
    /// its group's receivers have received on average. The server holds a sender back by
    /// the store alone, not by its group's delivery, so without a bound here a sender would
    /// run ahead by as much as the run is long.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub ahead: u64,
    /// Seconds to wait for outstanding deliveries after sending stops.
    #[arg(long, default_value_t = 15)]
    pub drain: u64,
}

/// Runs the bench; an error (and a non-zero exit) if anything was lost or reordered.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.report.is_some() && matches!(args.scenario, Scenario::Store | Scenario::History) {
        eprintln!("note: --report is ignored: the store and history scenarios write no page");
    }
    if args.baseline_relay && !matches!(args.scenario, Scenario::Direct | Scenario::Group) {
        eprintln!("note: --baseline-relay is ignored: it applies to the direct and group scenarios only");
    }
    if args.processes.is_some() && !matches!(args.scenario, Scenario::Connections) {
        eprintln!("note: --processes is ignored: it applies to the connections scenario only");
    }
    if args.eager_acks && !matches!(args.scenario, Scenario::Group) {
        eprintln!("note: --eager-acks is ignored: only the group scenario holds acks");
    }
    if args.relay_serve {
        return relay::serve_process().await;
    }
    if args.worker {
        return workers::run(&urls(args.url.as_deref().unwrap_or_default()), args.duration).await;
    }
    if let Scenario::History = args.scenario {
        let report = history::run(args.conversations, args.messages).await?;
        return finish(&args, &report);
    }
    if let Scenario::Store = args.scenario {
        let report = store::run(args.conversations, args.messages, &args.sqlite_synchronous).await?;
        return write_json(&args.json, &report);
    }
    let relay = match args.scenario {
        Scenario::Direct if args.baseline_relay => Some(relay::run(&args).await?),
        Scenario::Group if args.baseline_relay => Some(relay::run_group(&args).await?),
        _ => None,
    };
    let spawned = if args.spawn { Some(server::Spawned::start(&args.sqlite_synchronous).await?) } else { None };
    let bases: Vec<String> = match (&args.url, &spawned) {
        (Some(u), _) => urls(u),
        (None, Some(s)) => vec![s.base.clone()],
        (None, None) => anyhow::bail!("give --url URL or --spawn"),
    };
    let base = bases[0].clone();
    let pid = spawned.as_ref().map(|s| s.pid);
    let outcome = match args.scenario {
        Scenario::Offline => async { finish_progress(&args, &offline::run(&base, args.messages).await?) }.await,
        Scenario::Connections => {
            async {
                let processes = args.processes.map(|p| p as usize);
                finish_progress(
                    &args,
                    &connections::run(&bases, args.connections, args.duration, pid, processes).await?,
                )
            }
            .await
        }
        Scenario::ReconnectStorm => async { finish_progress(&args, &storm::run(&base, args.connections).await?) }.await,
        Scenario::Direct | Scenario::Group => {
            async {
                let result = match args.scenario {
                    Scenario::Group => group::run(&base, &args, pid).await?,
                    _ => direct::run(&bases, &args, pid).await?,
                };
                let outcome = report::Outcome::new(result, relay);
                outcome.print();
                if let Some(path) = &args.report {
                    html::write(path, &outcome)?;
                    eprintln!("report written to {}", path.display());
                }
                finish(&args, &outcome)
            }
            .await
        }
        Scenario::Store | Scenario::History => unreachable!("handled above"),
    };
    if let Some(s) = spawned {
        s.stop().await;
    }
    outcome
}

/// A run measured by how fast something completed (a backlog drained,
/// connections established, devices caught up): its `--report` page is
/// one chart of the count done over time.
pub trait ProgressRun: serde::Serialize {
    /// The scenario, as named on the command line.
    const TITLE: &'static str;
    /// What the chart's x and y axes show.
    const AXES: (&'static str, &'static str);
    /// One sentence on what ran and its main figure.
    fn lead(&self) -> String;
    /// `(seconds, count done by then)`.
    fn progress(&self) -> &[(f64, u64)];
}

/// Writes a progress run's `--report` page (if asked for) and JSON, then verifies.
fn finish_progress<R: ProgressRun + Verified>(args: &BenchArgs, run: &R) -> anyhow::Result<()> {
    let Some(path) = &args.report else { return finish(args, run) };
    let (x_desc, y_desc) = R::AXES;
    let figures = serde_json::to_value(run)?;
    let page =
        html::ProgressPage { title: R::TITLE, lead: run.lead(), x_desc, y_desc, points: run.progress(), figures };
    html::write_progress(path, &page)?;
    finish(args, run)
}

/// The servers of a comma-separated `--url`.
fn urls(list: &str) -> Vec<String> {
    list.split(',').map(|u| u.trim().trim_end_matches('/').to_owned()).collect()
}

/// What a scenario checked: the run fails (exits non-zero) when this does.
pub trait Verified {
    fn verify(&self) -> anyhow::Result<()>;
}

/// Checks that nothing was lost or reordered.
fn delivered_intact(lost: u64, reordered: u64) -> anyhow::Result<()> {
    anyhow::ensure!(lost == 0 && reordered == 0, "delivery verification failed: {lost} lost, {reordered} reordered");
    Ok(())
}

impl Verified for report::Outcome {
    fn verify(&self) -> anyhow::Result<()> {
        delivered_intact(self.report.lost, self.report.reordered)
    }
}

impl Verified for offline::OfflineReport {
    fn verify(&self) -> anyhow::Result<()> {
        delivered_intact(self.lost, self.reordered)
    }
}

impl Verified for storm::StormReport {
    fn verify(&self) -> anyhow::Result<()> {
        delivered_intact(self.lost, self.reordered)
    }
}

impl Verified for history::HistoryReport {
    fn verify(&self) -> anyhow::Result<()> {
        let (pages, wrong) = self.pages();
        anyhow::ensure!(wrong == 0, "{wrong} of {pages} history pages were wrong");
        Ok(())
    }
}

impl Verified for connections::ConnectionsReport {
    fn verify(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.held == self.requested, "{} of {} connections held", self.held, self.requested);
        Ok(())
    }
}

/// Writes the JSON, then verifies.
fn finish(args: &BenchArgs, report: &(impl serde::Serialize + Verified)) -> anyhow::Result<()> {
    write_json(&args.json, report)?;
    report.verify()
}

/// Writes a report as JSON when `--json` was given.
fn write_json(path: &Option<PathBuf>, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(report)?)?;
    }
    Ok(())
}
