//! The `offline` scenario: one device stays offline while K messages
//! accumulate, then connects; how fast does its backlog drain?
//!
//! The sender pipelines its sends (as `direct` does in closed loop). The
//! receiver then connects and acknowledges every 64 messages, as a real
//! client would, and the clock runs from its connect until it holds the
//! K-th message. Every seq is checked on the way.

use super::direct::connect;
use super::setup;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Sends awaiting `sent` while the backlog is built.
const SEND_WINDOW: u64 = 256;
/// Messages between the receiver's acks.
const ACK_EVERY: u64 = 64;
/// The drain's progress is recorded at most this often.
const PROGRESS_STEP: Duration = Duration::from_millis(5);

/// Figures of an offline run.
#[derive(Debug, Serialize)]
pub struct OfflineReport {
    pub backlog: u64,
    /// Acknowledged sends per second while the backlog was built.
    pub build_messages_per_s: f64,
    /// From the receiver's connect to holding the whole backlog.
    pub drain_seconds: f64,
    pub drain_messages_per_s: f64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// `(seconds since the receiver connected, messages held by then)`,
    /// every [`PROGRESS_STEP`] or less often.
    pub progress: Vec<(f64, u64)>,
}

pub async fn run(base: &str, backlog: u64) -> anyhow::Result<OfflineReport> {
    let http = reqwest::Client::new();
    let users = setup::accounts(&http, base, &setup::run_prefix(), 2).await?;
    let conv = setup::direct(&http, base, &users[0], &users[1]).await?;
    let ws_url = format!("{}/v1/ws", base.replacen("http", "ws", 1));

    eprintln!("building a backlog of {backlog} messages");
    let mut sender = connect(&ws_url, &users[0].token).await?;
    let started = Instant::now();
    let (mut sent, mut confirmed) = (0u64, 0u64);
    while confirmed < backlog {
        while sent < backlog && sent - confirmed < SEND_WINDOW {
            sent += 1;
            let frame = format!(
                r#"{{"type":"send","client_msg_id":"{sent}","conversation_id":"{conv}","content":{{"type":"text","text":"backlog {sent}"}}}}"#
            );
            sender.feed(Message::text(frame)).await?;
        }
        sender.flush().await?;
        match tokio::time::timeout(Duration::from_secs(30), sender.next()).await? {
            Some(Ok(Message::Text(t))) if t.contains(r#""type":"sent""#) => confirmed += 1,
            Some(Ok(Message::Text(t))) if t.contains(r#""type":"error""#) => anyhow::bail!("send refused: {t}"),
            Some(Ok(_)) => {}
            other => anyhow::bail!("sender connection ended: {other:?}"),
        }
    }
    let build = started.elapsed().as_secs_f64();
    let _ = sender.close(None).await;

    eprintln!("receiver connecting");
    let started = Instant::now();
    let mut receiver = connect(&ws_url, &users[1].token).await?;
    let (mut last, mut acked, mut delivered, mut duplicates, mut reordered) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut progress = Vec::new();
    let mut next_step = started + PROGRESS_STEP;
    while last < backlog {
        let text = match tokio::time::timeout(Duration::from_secs(30), receiver.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            Ok(_) | Err(_) => break,
        };
        let Some(m) = banter_proto::frame::MessageHead::parse(&text) else { continue };
        if m.seq <= last {
            duplicates += 1;
            continue;
        }
        if m.seq != last + 1 {
            reordered += 1;
        }
        last = m.seq;
        delivered += 1;
        let now = Instant::now();
        if now >= next_step || last == backlog {
            progress.push((now.duration_since(started).as_secs_f64(), delivered));
            next_step = now + PROGRESS_STEP;
        }
        if last - acked >= ACK_EVERY || last == backlog {
            receiver
                .send(Message::text(format!(r#"{{"type":"ack","conversation_id":"{conv}","seq":{last}}}"#)))
                .await?;
            acked = last;
        }
    }
    let drain = started.elapsed().as_secs_f64();
    let _ = receiver.close(None).await;
    let report = OfflineReport {
        backlog,
        build_messages_per_s: backlog as f64 / build,
        drain_seconds: drain,
        drain_messages_per_s: delivered as f64 / drain,
        delivered,
        lost: backlog.saturating_sub(delivered),
        duplicates,
        reordered,
        progress,
    };
    println!(
        "offline: backlog {} built at {:.0}/s; drained in {:.3} s = {:.0} messages/s; lost {} duplicates {} reordered {}",
        backlog, report.build_messages_per_s, drain, report.drain_messages_per_s, report.lost, duplicates, reordered
    );
    Ok(report)
}

impl super::ProgressRun for OfflineReport {
    const TITLE: &'static str = "offline";
    const AXES: (&'static str, &'static str) = ("seconds since the device connected", "messages received");

    fn lead(&self) -> String {
        format!(
            "One device offline while {} messages were stored, then connecting: its backlog drained at {:.0} messages/s.",
            self.backlog, self.drain_messages_per_s
        )
    }

    fn progress(&self) -> &[(f64, u64)] {
        &self.progress
    }
}
