//! The `group` scenario: G groups of M members; in each, the creator sends
//! and every other member receives, verifies and acknowledges. With M above
//! the server's fan-out threshold the messages go through its asynchronous
//! queue; below it they are fanned out on the send path.
//!
//! Deliveries are counted per receiving device, so a group of M members
//! turns each message into M − 1 acknowledged deliveries.

use super::direct::{connect, receive, send, Pair};
use super::report::{distribution, histogram, Percentiles, Report, Timeline};
use super::{server, setup, BenchArgs};
use banter_proto::http::{ConversationKind, ConversationView, CreateConversation};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
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
        let body = CreateConversation {
            kind: ConversationKind::Group,
            title: Some("bench".into()),
            members: g[1..].iter().map(|a| a.user_id.clone()).collect(),
        };
        let c: ConversationView = http
            .post(format!("{base}/v1/conversations"))
            .bearer_auth(&g[0].token)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        conversations.push(c.conversation_id);
    }
    let ws_url = format!("{}/v1/ws", base.replacen("http", "ws", 1));
    eprintln!("opening {} connections", groups * members);
    let sockets: Vec<_> = stream::iter(users.iter().map(|u| connect(&ws_url, &u.token)))
        .buffered(CONNECT_CONCURRENCY)
        .try_collect()
        .await?;
    let epoch = Instant::now();
    let start = Instant::now() + Duration::from_millis(100);
    let stop_at = start + Duration::from_secs(args.duration);
    let drain_until = stop_at + Duration::from_secs(args.drain);
    let delivered = Arc::new(AtomicU64::new(0));
    let pairs: Vec<Arc<Pair>> = (0..groups).map(|_| Arc::default()).collect();
    let interval = args.rate.map(|r| Duration::from_secs_f64(groups as f64 / r.max(1) as f64));
    let cpu_before = server_pid.and_then(server::cpu_seconds);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let g = i / members;
        let (pair, conv) = (Arc::clone(&pairs[g]), conversations[g].clone());
        if i % members == 0 {
            senders.push(tokio::spawn(send(ws, conv, pair, epoch, start, stop_at, interval, args.inflight)));
        } else {
            receivers.push((
                g,
                tokio::spawn(receive(ws, conv, pair, epoch, start, stop_at, drain_until, Arc::clone(&delivered))),
            ));
        }
    }
    eprintln!("sending for {} s", args.duration);
    let mut send_to_sent = histogram();
    let (mut confirmed, mut errors, mut acked_in_window) = (vec![0u64; groups], 0, 0);
    for (g, t) in senders.into_iter().enumerate() {
        let s = t.await??;
        confirmed[g] = s.confirmed;
        errors += s.errors;
        acked_in_window += s.in_window;
        send_to_sent.add(&s.send_to_sent)?;
    }
    let mut latency = histogram();
    let mut timeline = Timeline::new(start);
    let (mut received, mut in_window, mut duplicates, mut reordered, mut lost) = (0, 0, 0, 0, 0);
    for (g, t) in receivers {
        let r = t.await??;
        received += r.received;
        in_window += r.in_window;
        duplicates += r.duplicates;
        reordered += r.reordered;
        lost += confirmed[g].saturating_sub(r.received);
        latency.add(&r.latency)?;
        timeline.merge(&r.timeline);
    }
    let secs = args.duration as f64;
    Ok(Report {
        scenario: args.scenario,
        pairs: groups,
        duration_s: secs,
        rate: args.rate,
        websocket_connections: groups * members,
        sent_acknowledged: confirmed.iter().sum(),
        send_errors: errors,
        delivered: received,
        lost,
        duplicates,
        reordered,
        throughput_rps: in_window as f64 / secs,
        acked_sends_per_s: acked_in_window as f64 / secs,
        message_delivery_latency_ms: Percentiles::of(&latency),
        send_to_sent_ms: Percentiles::of(&send_to_sent),
        server_rss_bytes: server_pid.and_then(server::rss_bytes),
        server_cpu_seconds: server_pid.and_then(server::cpu_seconds).zip(cpu_before).map(|(a, b)| a - b),
        timeline: timeline.seconds(),
        latency_distribution: distribution(&latency),
    })
}
