//! The `reconnect-storm` scenario: N connected devices drop at once, miss a
//! few messages, and all come back at once. How long until every one of
//! them has caught up, with nothing lost?
//!
//! The devices belong to users of one group (many devices per user), so
//! every device has the same messages to catch up on. The sender posts them
//! over HTTP while every device is away.

use super::connections::{open, raise_open_files, Ws};
use super::report::{histogram, progress_curve, Percentiles};
use super::setup;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use futures_util::SinkExt;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Devices per user.
const DEVICES_PER_USER: usize = 100;
/// Connections opened at once, first and again after the drop.
const CONNECT_CONCURRENCY: usize = 1024;
/// Messages each device misses while away.
const MISSED: u64 = 5;

/// Figures of a reconnect storm.
#[derive(Debug, Serialize)]
pub struct StormReport {
    pub clients: usize,
    pub missed_per_client: u64,
    /// From the first reconnect to the last device holding everything it missed.
    pub all_caught_up_seconds: f64,
    /// Per device: reconnect start to holding everything.
    pub catch_up_ms: Percentiles,
    pub caught_up: usize,
    pub lost: u64,
    pub reordered: u64,
    /// `(seconds since the reconnection began, devices caught up by then)`,
    /// at most [`super::report::PROGRESS_POINTS`] points.
    pub progress: Vec<(f64, u64)>,
}

pub async fn run(base: &str, n: usize) -> anyhow::Result<StormReport> {
    raise_open_files();
    let http = reqwest::Client::new();
    let users = n.div_ceil(DEVICES_PER_USER);
    let accounts = setup::accounts(&http, base, &setup::run_prefix(), users + 1).await?;
    let (sender, members) = accounts.split_first().expect("at least two accounts");
    let conv = setup::group(&http, base, sender, members).await?;
    eprintln!("logging in {n} devices");
    let tokens: Vec<String> = stream::iter(0..n)
        .map(|i| setup::login_again(&http, base, &members[i / DEVICES_PER_USER]))
        .buffered(32)
        .try_collect()
        .await?;
    let target: SocketAddr = base.trim_start_matches("http://").parse()?;
    let url = format!("ws://{target}/v1/ws");
    eprintln!("connecting {n} devices");
    let first: Vec<Ws> = stream::iter(tokens.iter().cloned().enumerate())
        .map(|(i, t)| open(target, url.clone(), t, i))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await?;
    eprintln!("dropping all {n} at once; {MISSED} messages arrive meanwhile");
    drop(first);
    for i in 0..MISSED {
        let content = serde_json::value::RawValue::from_string(format!(r#"{{"type":"text","text":"storm {i}"}}"#))?;
        let msg = banter_proto::http::PostMessage { client_msg_id: format!("storm-{i}"), content };
        http.post(format!("{base}/v1/conversations/{conv}/messages"))
            .bearer_auth(&sender.token)
            .json(&msg)
            .send()
            .await?
            .error_for_status()?;
    }
    eprintln!("reconnecting {n} devices at once");
    let started = Instant::now();
    let results: Vec<anyhow::Result<CatchUp>> = stream::iter(tokens.into_iter().enumerate())
        .map(|(i, t)| catch_up(target, url.clone(), t, i, conv.clone(), started))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let all = started.elapsed().as_secs_f64();
    let mut h = histogram();
    let (mut caught_up, mut lost, mut reordered) = (0, 0, 0);
    let mut first_error = None;
    let mut done_at = Vec::with_capacity(n);
    for r in results {
        match r {
            Ok(c) => {
                let _ = h.record(c.micros.max(1));
                if c.received == MISSED {
                    done_at.push(c.micros);
                }
                lost += MISSED - c.received;
                reordered += c.reordered;
                if c.received == MISSED {
                    caught_up += 1;
                }
            }
            Err(e) => {
                lost += MISSED;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("some devices failed; first error: {e:#}");
    }
    let report = StormReport {
        clients: n,
        missed_per_client: MISSED,
        all_caught_up_seconds: all,
        catch_up_ms: Percentiles::of(&h),
        caught_up,
        lost,
        reordered,
        progress: progress_curve(done_at),
    };
    println!(
        "reconnect-storm: {} of {} devices caught up in {:.2} s (per device p50 {:.1} ms, p99 {:.1} ms); lost {} reordered {}",
        caught_up, n, all, report.catch_up_ms.p50, report.catch_up_ms.p99, lost, reordered
    );
    Ok(report)
}

struct CatchUp {
    micros: u64,
    received: u64,
    reordered: u64,
}

/// Reconnects one device and waits until it holds every missed message.
async fn catch_up(
    target: SocketAddr,
    url: String,
    token: String,
    i: usize,
    conv: String,
    started: Instant,
) -> anyhow::Result<CatchUp> {
    let mut ws = open(target, url, token, i).await?;
    let (mut last, mut received, mut reordered) = (0u64, 0u64, 0u64);
    while received < MISSED {
        let text = match tokio::time::timeout(Duration::from_secs(60), ws.next()).await? {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            other => anyhow::bail!("connection ended: {other:?}"),
        };
        let Some(m) = banter_proto::frame::MessageHead::parse(&text) else { continue };
        if m.seq <= last {
            continue;
        }
        if m.seq != last + 1 {
            reordered += 1;
        }
        last = m.seq;
        received += 1;
    }
    let micros = started.elapsed().as_micros() as u64;
    ws.send(Message::text(format!(r#"{{"type":"ack","conversation_id":"{conv}","seq":{last}}}"#))).await?;
    let _ = ws.close(None).await;
    Ok(CatchUp { micros, received, reordered })
}

impl super::ProgressRun for StormReport {
    const TITLE: &'static str = "reconnect-storm";
    const AXES: (&'static str, &'static str) = ("seconds since the devices began to reconnect", "devices caught up");

    fn lead(&self) -> String {
        format!(
            "{} connected devices dropped at once and came back; {} messages arrived meanwhile. All caught up in {:.2} s.",
            self.clients, self.missed_per_client, self.all_caught_up_seconds
        )
    }

    fn progress(&self) -> &[(f64, u64)] {
        &self.progress
    }
}
