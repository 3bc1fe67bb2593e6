//! The `history` scenario: a store of `--messages` messages over
//! `--conversations` conversations, then the newest 50 of a random
//! conversation over HTTP, again and again. Every page is checked: the
//! newest messages of that conversation, ascending, with no gap.

use super::report::{histogram, Percentiles};
use super::server::Spawned;
use super::store::{append_spread, create_conversations};
use banter_proto::http::{CreateSession, MessagePage, SessionView};
use banter_store::sqlite::{SqliteStore, Synchronous};
use banter_store::Store;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// Most requests made (fewer for small stores), and how many at once.
const MAX_REQUESTS: u64 = 20_000;
const CONCURRENCY: usize = 8;
/// Messages asked for per page.
const PAGE: usize = 50;

/// Figures of a history run.
#[derive(Debug, Serialize)]
pub struct HistoryReport {
    pub messages: u64,
    pub conversations: usize,
    pub requests: u64,
    pub requests_per_s: f64,
    pub latency_ms: Percentiles,
    /// Pages that held exactly the newest messages, in order.
    pub verified: u64,
}

pub async fn run(conversations: usize, messages: u64) -> anyhow::Result<HistoryReport> {
    let dir = tempfile::tempdir()?;
    let password = "bench-password";
    {
        // Filling is set-up, not measured: no fsync per commit here.
        let store = Arc::new(SqliteStore::open(dir.path(), Synchronous::Normal)?);
        let hash = banter_server::auth::hash_password(password.to_owned(), 64)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let a = store.create_user("history_a", &hash).await?;
        let b = store.create_user("history_b", "x").await?;
        let ids = create_conversations(&store, a.id, b.id, conversations).await?;
        eprintln!("storing {messages} messages");
        append_spread(&store, a.id, &ids, messages).await?;
    }
    let server = Spawned::start_in(dir, "full").await?;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let session: SessionView = http
        .post(format!("{base}/v1/sessions"))
        .json(&CreateSession { username: "history_a".into(), password: password.into(), device_name: None })
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    // Conversation ids of the groups created above are 1..=conversations.
    let requests = (messages / 2).clamp(100, MAX_REQUESTS);
    eprintln!("reading the newest {PAGE} of random conversations, {requests} times");
    let started = Instant::now();
    let results: Vec<anyhow::Result<(u64, bool)>> = stream::iter(0..requests)
        .map(|i| {
            let (http, base, token) = (http.clone(), base.clone(), session.token.clone());
            async move {
                let conv = i.wrapping_mul(2_654_435_761) % conversations as u64 + 1;
                let t = Instant::now();
                let page: MessagePage = http
                    .get(format!("{base}/v1/conversations/{conv}/messages?limit={PAGE}"))
                    .bearer_auth(token)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let micros = t.elapsed().as_micros() as u64;
                let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
                let intact = !seqs.is_empty()
                    && seqs.windows(2).all(|w| w[1] == w[0] + 1)
                    && (seqs.len() == PAGE || !page.has_more);
                Ok((micros, intact))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    server.stop().await;
    let mut h = histogram();
    let mut verified = 0;
    for r in results {
        let (micros, intact) = r?;
        h.record(micros.max(1))?;
        verified += u64::from(intact);
    }
    let report = HistoryReport {
        messages,
        conversations,
        requests,
        requests_per_s: requests as f64 / seconds,
        latency_ms: Percentiles::of(&h),
        verified,
    };
    let l = &report.latency_ms;
    println!(
        "history: newest {PAGE} of {conversations} conversations holding {messages} messages: {:.0} requests/s; p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms; {verified} of {requests} pages verified",
        report.requests_per_s, l.p50, l.p99, l.p999
    );
    Ok(report)
}
