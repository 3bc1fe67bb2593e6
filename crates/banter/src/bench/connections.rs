//! The `connections` scenario: open N authenticated connections, hold them
//! idle with heartbeats, and report how fast they were established and what
//! each one costs the server in memory.
//!
//! Connections come from several loopback source addresses (127.0.0.1 to
//! 127.0.0.8), so ephemeral ports never cap a run, and the bench raises its
//! own open-file limit first. One process can hold only as many sockets as
//! its open-file limit allows, which the run reports.

use super::server;
use super::setup;
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
    /// The bench process's open-file limit (soft, hard) after raising it.
    pub bench_open_file_limit: (u64, u64),
    pub server_rss_before_bytes: Option<u64>,
    pub server_rss_after_bytes: Option<u64>,
    /// Server memory per connection: RSS growth over the connections established.
    pub server_bytes_per_connection: Option<f64>,
}

/// Raises this process's open-file limit as far as allowed; returns (soft, hard).
pub fn raise_open_files() -> (u64, u64) {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((0, 0))
}

async fn server_rss(http: &reqwest::Client, base: &str, pid: Option<u32>) -> Option<u64> {
    if let Some(pid) = pid {
        return server::rss_bytes(pid);
    }
    let text = http.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

pub async fn run(base: &str, n: usize, hold: u64, pid: Option<u32>) -> anyhow::Result<ConnectionsReport> {
    let limit = raise_open_files();
    let http = reqwest::Client::new();
    let users = setup::accounts(&http, base, &setup::run_prefix(), n.div_ceil(DEVICES_PER_USER)).await?;
    eprintln!("logging in {n} devices");
    let tokens: Vec<String> = stream::iter(0..n)
        .map(|i| setup::login_again(&http, base, &users[i / DEVICES_PER_USER]))
        .buffered(32)
        .try_collect()
        .await?;
    let target: SocketAddr = base.trim_start_matches("http://").parse()?;
    let ws_url = format!("ws://{target}/v1/ws");
    let rss_before = server_rss(&http, base, pid).await;
    eprintln!("opening {n} connections");
    let started = Instant::now();
    let opened: Vec<_> = stream::iter(tokens.into_iter().enumerate())
        .map(|(i, token)| open(target, ws_url.clone(), token, i))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let establish_seconds = started.elapsed().as_secs_f64();
    let mut sockets = Vec::with_capacity(n);
    let mut first_error = None;
    for o in opened {
        match o {
            Ok(ws) => sockets.push(ws),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let established = sockets.len();
    if let Some(e) = first_error {
        eprintln!("{} connections failed; first error: {e:#} (open-file limit {:?})", n - established, limit);
    }
    eprintln!("{established} connections established in {establish_seconds:.2} s; holding for {hold} s");
    // Hold them idle, each heartbeating on its own schedule.
    let deadline = Instant::now() + Duration::from_secs(hold);
    let holders: Vec<_> = sockets.into_iter().map(|ws| tokio::spawn(idle(ws, deadline))).collect();
    let mut still_open = Vec::with_capacity(established);
    for h in holders {
        if let Ok(Some(ws)) = h.await {
            still_open.push(ws);
        }
    }
    let held = still_open.len();
    // Measured while the connections are still open.
    let rss_after = server_rss(&http, base, pid).await;
    drop(still_open);
    let per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) if established > 0 => Some((a as f64 - b as f64) / established as f64),
        _ => None,
    };
    let report = ConnectionsReport {
        requested: n,
        established,
        establish_seconds,
        establish_per_s: established as f64 / establish_seconds,
        held_seconds: hold,
        held,
        bench_open_file_limit: limit,
        server_rss_before_bytes: rss_before,
        server_rss_after_bytes: rss_after,
        server_bytes_per_connection: per_connection,
    };
    println!(
        "connections: {} of {} established in {:.2} s ({:.0}/s); {} held for {} s; server {} per connection",
        established,
        n,
        establish_seconds,
        report.establish_per_s,
        held,
        hold,
        per_connection.map_or("?".to_owned(), |b| format!("{:.0} bytes", b))
    );
    Ok(report)
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
