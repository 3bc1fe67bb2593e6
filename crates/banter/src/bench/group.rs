//! The `group` scenario: G groups of M members; in each, the creator sends
//! and every other member receives, verifies and acknowledges. With M above
//! the server's fan-out threshold the messages go through its asynchronous
//! queue; below it they are fanned out on the send path.
//!
//! Deliveries are counted per receiving device, so a group of M members
//! turns each message into M − 1 acknowledged deliveries.

use super::direct::{connect, receive, send, Pair, Tally};
use super::report::Report;
use super::{server, setup, BenchArgs};
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
        conversations.push(setup::group(&http, base, &g[0], &g[1..]).await?);
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
            senders.push(tokio::spawn(send(ws, conv, pair, epoch, start, stop_at, interval, args.inflight, None)));
        } else {
            receivers.push((
                g,
                tokio::spawn(receive(ws, conv, pair, epoch, start, stop_at, drain_until, Arc::clone(&delivered), None)),
            ));
        }
    }
    eprintln!("sending for {} s", args.duration);
    let mut tally = Tally::new();
    let mut confirmed = Vec::with_capacity(groups);
    for t in senders {
        confirmed.push(tally.sender(t.await??)?);
    }
    for (g, t) in receivers {
        tally.receiver(t.await??, confirmed[g])?;
    }
    Ok(tally.report(args, groups, groups * members, server_pid, cpu_before))
}
