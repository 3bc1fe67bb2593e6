//! The `connections` scenario: open N authenticated connections, hold them
//! idle with heartbeats, and report how fast they were established and what
//! each one costs the server in memory.
//!
//! Connections come from several loopback source addresses (127.0.0.1 to
//! 127.0.0.8), so ephemeral ports never cap a run, and the bench raises its
//! own open-file limit first. One process can hold only as many sockets as
//! its open-file limit allows, which the run reports: past that, worker
//! processes of the bench hold them (`workers.rs`). With several `--url`s
//! (the nodes of a cluster) the connections are spread over the nodes.

use super::server;
use super::setup;
use super::workers::{self, Workers};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use futures_util::SinkExt;
use nix::sys::socket::{setsockopt, sockopt};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Connections opened at once while establishing.
const CONNECT_CONCURRENCY: usize = 256;
/// Devices per bench user (each connection is one device).
const DEVICES_PER_USER: usize = 100;
/// Loopback source addresses used in turn.
const SOURCE_ADDRESSES: u8 = 8;

/// Figures of a connections run.
#[derive(Debug, Serialize)]
pub struct ConnectionsReport {
    pub requested: usize,
    pub established: usize,
    pub establish_seconds: f64,
    pub establish_per_s: f64,
    /// Seconds the connections were held idle with heartbeats.
    pub held_seconds: u64,
    /// Connections still open at the end of the hold.
    pub held: usize,
    /// Processes of the bench that held them (see `workers.rs`).
    pub processes: usize,
    /// The open-file limit (soft, hard) of each process holding connections, after raising it.
    pub bench_open_file_limit: (u64, u64),
    pub server_rss_before_bytes: Option<u64>,
    pub server_rss_after_bytes: Option<u64>,
    /// Server memory per connection: RSS growth over the connections established.
    pub server_bytes_per_connection: Option<f64>,
    /// `(seconds since opening began, connections established by then)`,
    /// at most [`super::report::PROGRESS_POINTS`] points; with several
    /// processes, each counts from its own start, which they share within
    /// the time it takes to tell them to go.
    pub progress: Vec<(f64, u64)>,
}

/// Raises this process's open-file limit as far as allowed; returns (soft, hard).
pub fn raise_open_files() -> (u64, u64) {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((0, 0))
}

/// The servers' resident memory together: from /proc for a spawned server,
/// otherwise the sum of every node's `process_resident_memory_bytes`.
async fn server_rss(http: &reqwest::Client, bases: &[String], pid: Option<u32>) -> Option<u64> {
    if let Some(pid) = pid {
        return server::rss_bytes(pid);
    }
    let mut total = 0;
    for base in bases {
        let text = http.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()?;
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())? as u64;
    }
    Some(total)
}

/// What a run measured, in one process or over several.
struct Measured {
    processes: usize,
    /// Open-file limit (soft, hard) of the processes holding the connections.
    limit: (u64, u64),
    established: usize,
    establish_seconds: f64,
    held: usize,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    /// When each connection was established, µs since its process began opening.
    done_micros: Vec<u64>,
}

/// Runs the scenario: connection `i` goes to node `i % bases.len()`. With
/// `processes` unset, as many processes hold them as their open-file limit
/// needs; one process holds them in this one, more in worker processes.
pub async fn run(
    bases: &[String],
    n: usize,
    hold: u64,
    pid: Option<u32>,
    processes: Option<usize>,
) -> anyhow::Result<ConnectionsReport> {
    let limit = raise_open_files();
    let processes = processes.unwrap_or_else(|| n.div_ceil(workers::per_process(limit.0))).clamp(1, n.max(1));
    let http = reqwest::Client::new();
    let base = &bases[0];
    let users = setup::accounts(&http, base, &setup::run_prefix(), n.div_ceil(DEVICES_PER_USER)).await?;
    eprintln!("logging in {n} devices");
    let tokens: Vec<String> = stream::iter(0..n)
        .map(|i| setup::login_again(&http, base, &users[i / DEVICES_PER_USER]))
        .buffered(32)
        .try_collect()
        .await?;
    let m = if processes == 1 {
        let rss_before = server_rss(&http, bases, pid).await;
        eprintln!("opening {n} connections");
        let started = Instant::now();
        let OpenedAll { sockets, failed, first_error, done_micros } =
            open_all(bases, tokens.into_iter().enumerate().collect()).await?;
        let establish_seconds = started.elapsed().as_secs_f64();
        let established = sockets.len();
        report_opened(established, failed, first_error.map(|e| format!("{e:#}")), limit, establish_seconds, hold);
        let still_open = hold_open(sockets, Instant::now() + Duration::from_secs(hold)).await;
        // Measured while the connections are still open.
        let rss_after = server_rss(&http, bases, pid).await;
        let held = still_open.len();
        drop(still_open);
        Measured { processes, limit, established, establish_seconds, held, rss_before, rss_after, done_micros }
    } else {
        let mut shares: Vec<Vec<(usize, String)>> = vec![Vec::new(); processes];
        for (i, token) in tokens.into_iter().enumerate() {
            shares[i % processes].push((i, token));
        }
        eprintln!("starting {processes} worker processes");
        let mut workers = Workers::start(bases, hold, shares).await?;
        let rss_before = server_rss(&http, bases, pid).await;
        eprintln!("opening {n} connections from {processes} processes");
        let started = Instant::now();
        let opened = workers.open().await?;
        let establish_seconds = started.elapsed().as_secs_f64();
        let established = opened.iter().map(|o| o.established).sum();
        let failed = opened.iter().map(|o| o.failed).sum();
        let limit = opened.first().map_or(limit, |o| o.open_file_limit);
        let done_micros = opened.iter().flat_map(|o| o.done_micros.iter().copied()).collect();
        let first_error = opened.into_iter().find_map(|o| o.first_error);
        report_opened(established, failed, first_error, limit, establish_seconds, hold);
        let held = workers.held().await?;
        let rss_after = server_rss(&http, bases, pid).await;
        workers.finish().await;
        Measured { processes, limit, established, establish_seconds, held, rss_before, rss_after, done_micros }
    };
    Ok(ConnectionsReport::new(n, hold, m))
}

fn report_opened(
    established: usize,
    failed: usize,
    first_error: Option<String>,
    limit: (u64, u64),
    establish_seconds: f64,
    hold: u64,
) {
    if let Some(e) = first_error {
        eprintln!("{failed} connections failed; first error: {e} (open-file limit {limit:?})");
    }
    eprintln!("{established} connections established in {establish_seconds:.2} s; holding for {hold} s");
}

impl ConnectionsReport {
    fn new(requested: usize, hold: u64, m: Measured) -> ConnectionsReport {
        let per_connection = match (m.rss_before, m.rss_after) {
            (Some(b), Some(a)) if m.established > 0 => Some((a as f64 - b as f64) / m.established as f64),
            _ => None,
        };
        let report = ConnectionsReport {
            requested,
            established: m.established,
            establish_seconds: m.establish_seconds,
            establish_per_s: m.established as f64 / m.establish_seconds,
            held_seconds: hold,
            held: m.held,
            processes: m.processes,
            bench_open_file_limit: m.limit,
            server_rss_before_bytes: m.rss_before,
            server_rss_after_bytes: m.rss_after,
            server_bytes_per_connection: per_connection,
            progress: super::report::progress_curve(m.done_micros),
        };
        println!(
            "connections: {} of {} established in {:.2} s ({:.0}/s) by {} process{}; {} held for {} s; server {} per connection",
            report.established,
            requested,
            report.establish_seconds,
            report.establish_per_s,
            m.processes,
            if m.processes == 1 { "" } else { "es" },
            report.held,
            hold,
            per_connection.map_or("?".to_owned(), |b| format!("{:.0} bytes", b))
        );
        report
    }
}

/// The connections of a share that opened, and what became of the rest.
pub(super) struct OpenedAll {
    pub(super) sockets: Vec<Ws>,
    pub(super) failed: usize,
    pub(super) first_error: Option<anyhow::Error>,
    /// When each open one was established, µs since opening began.
    pub(super) done_micros: Vec<u64>,
}

/// Opens the connections of `share` (`(index, token)`), connection `i` to
/// node `i % bases.len()` from the `i`-th source address.
pub(super) async fn open_all(bases: &[String], share: Vec<(usize, String)>) -> anyhow::Result<OpenedAll> {
    let started = Instant::now();
    let targets = bases
        .iter()
        .map(|b| Ok(b.trim_start_matches("http://").parse::<SocketAddr>()?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opened: Vec<_> = stream::iter(share)
        .map(|(i, token)| {
            let target = targets[i % targets.len()];
            let opening = open(target, format!("ws://{target}/v1/ws"), token, i);
            async move { opening.await.map(|ws| (ws, started.elapsed().as_micros() as u64)) }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut sockets = Vec::with_capacity(opened.len());
    let mut done_micros = Vec::with_capacity(opened.len());
    let (mut failed, mut first_error) = (0, None);
    for o in opened {
        match o {
            Ok((ws, at)) => {
                sockets.push(ws);
                done_micros.push(at);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    Ok(OpenedAll { sockets, failed, first_error, done_micros })
}

/// Holds connections idle until `deadline`, each heartbeating on its own
/// schedule; gives back those that stayed open.
pub(super) async fn hold_open(sockets: Vec<Ws>, deadline: Instant) -> Vec<Ws> {
    let holders: Vec<_> = sockets.into_iter().map(|ws| tokio::spawn(idle(ws, deadline))).collect();
    let mut still_open = Vec::with_capacity(holders.len());
    for h in holders {
        if let Ok(Some(ws)) = h.await {
            still_open.push(ws);
        }
    }
    still_open
}

pub(super) type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens one connection from the `i`-th source address and completes the hello.
pub(super) async fn open(target: SocketAddr, url: String, token: String, i: usize) -> anyhow::Result<Ws> {
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCE_ADDRESSES as usize) as u8));
    let socket = TcpSocket::new_v4()?;
    // Without this the kernel picks the port at `bind`, searching for one no
    // other socket has bound, a search that grows with the sockets open (in
    // a reconnect storm it took all of the simulator's CPU for seconds);
    // with it, the port is picked at `connect`, for the whole address pair.
    setsockopt(&socket, sockopt::IpBindAddressNoPort, &true)?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(target).await?;
    tcp.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await?;
    ws.send(Message::text(format!(r#"{{"type":"hello","token":"{token}"}}"#))).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains(r#""welcome""#) => return Ok(ws),
            Some(Ok(_)) => continue,
            other => anyhow::bail!("no welcome: {other:?}"),
        }
    }
}

/// Keeps a connection open until `deadline`, heartbeating; gives it back if it stayed open.
async fn idle(mut ws: Ws, deadline: Instant) -> Option<Ws> {
    // Heartbeats well inside the default presence timeout.
    let mut beat = tokio::time::interval(Duration::from_secs(15));
    beat.tick().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = beat.tick() => {
                if ws.send(Message::text(r#"{"type":"heartbeat"}"#)).await.is_err() {
                    return None;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(_)) => {}
                _ => return None,
            },
        }
    }
    Some(ws)
}

impl super::ProgressRun for ConnectionsReport {
    const TITLE: &'static str = "connections";
    const AXES: (&'static str, &'static str) = ("seconds since opening began", "connections established");

    fn lead(&self) -> String {
        format!(
            "{} authenticated connections opened at once by {} process(es), {:.0} a second, then held {} s with heartbeats.",
            self.established, self.processes, self.establish_per_s, self.held_seconds
        )
    }

    fn progress(&self) -> &[(f64, u64)] {
        &self.progress
    }
}
