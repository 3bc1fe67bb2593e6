//! The `history` scenario: a store of `--messages` messages over
//! `--conversations` conversations, then the newest 50 of a random
//! conversation over HTTP, again and again: first one request at a time,
//! which is the latency one reader sees, then [`LOADED`] at a time, which is
//! what the server answers when busy. Every page is checked: the newest
//! messages of that conversation, ascending, with no gap.

use super::report::{histogram, Percentiles};
use super::server::Spawned;
use super::store::{append_spread, create_conversations};
use banter_proto::http::{CreateSession, SessionView};
use banter_store::sqlite::{SqliteStore, Synchronous};
use banter_store::Store;
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// Most requests made in each phase (fewer for small stores).
const MAX_REQUESTS: u64 = 20_000;
/// Requests in flight at once in the loaded phase.
const LOADED: usize = 8;
/// Messages asked for per page.
const PAGE: usize = 50;

/// Figures of a history run.
#[derive(Debug, Serialize)]
pub struct HistoryReport {
    pub messages: u64,
    pub conversations: usize,
    /// One request at a time.
    pub single: Phase,
    /// [`LOADED`] requests at a time.
    pub loaded: Phase,
}

/// Figures of one phase of requests.
#[derive(Debug, Serialize)]
pub struct Phase {
    /// Requests in flight at once.
    pub concurrency: usize,
    pub requests: u64,
    pub requests_per_s: f64,
    pub latency_ms: Percentiles,
    /// Pages that held exactly the newest messages, in order.
    pub verified: u64,
    /// Reads the server answered from its history cache, and reads it did
    /// not (from its `/metrics`; absent when it does not say).
    pub cache_hits: Option<u64>,
    pub cache_misses: Option<u64>,
}

impl HistoryReport {
    /// Pages checked and pages that were wrong, over both phases.
    pub fn pages(&self) -> (u64, u64) {
        let requests = self.single.requests + self.loaded.requests;
        (requests, requests - self.single.verified - self.loaded.verified)
    }
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
    let http = reqwest::Client::new();
    let session: SessionView = http
        .post(format!("{}/v1/sessions", server.base))
        .json(&CreateSession { username: "history_a".into(), password: password.into(), device_name: None })
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    // Conversation ids of the groups created above are 1..=conversations.
    let requests = (messages / 2).clamp(100, MAX_REQUESTS);
    let reader = Reader { http, base: server.base.clone(), token: session.token, conversations: conversations as u64 };
    eprintln!("reading the newest {PAGE} of random conversations, {requests} times one at a time");
    let single = reader.phase(requests, 1, 0).await?;
    eprintln!("again, {LOADED} at a time");
    let loaded = reader.phase(requests, LOADED, requests).await?;
    server.stop().await;
    let report = HistoryReport { messages, conversations, single, loaded };
    for p in [&report.single, &report.loaded] {
        let l = &p.latency_ms;
        let cache = match (p.cache_hits, p.cache_misses) {
            (Some(h), Some(m)) => format!("; server history cache: {h} hits, {m} misses"),
            _ => String::new(),
        };
        println!(
            "history: newest {PAGE} of {conversations} conversations holding {messages} messages, {} at a time: {:.0} requests/s; p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms; {} of {} pages verified{cache}",
            p.concurrency, p.requests_per_s, l.p50, l.p99, l.p999, p.verified, p.requests
        );
    }
    Ok(report)
}

/// The parts of a page of history that its check reads (the rest of each
/// message is skipped, not copied).
#[derive(Deserialize)]
struct PageSeqs {
    messages: Vec<Seq>,
    has_more: bool,
}

#[derive(Deserialize)]
struct Seq {
    seq: u64,
}

/// Reads pages of history over HTTP.
struct Reader {
    http: reqwest::Client,
    base: String,
    token: String,
    conversations: u64,
}

impl Reader {
    /// Makes `requests` requests, `concurrency` at a time, over conversations
    /// picked from request number `first` on.
    async fn phase(&self, requests: u64, concurrency: usize, first: u64) -> anyhow::Result<Phase> {
        let cache_before = self.cache_lookups().await;
        let started = Instant::now();
        let results: Vec<anyhow::Result<(u64, bool)>> =
            stream::iter(first..first + requests).map(|i| self.page(i)).buffer_unordered(concurrency).collect().await;
        let seconds = started.elapsed().as_secs_f64();
        let mut h = histogram();
        let mut verified = 0;
        for r in results {
            let (micros, intact) = r?;
            h.record(micros.max(1))?;
            verified += u64::from(intact);
        }
        let cache = match (cache_before, self.cache_lookups().await) {
            (Some((h0, m0)), Some((h1, m1))) => (Some(h1 - h0), Some(m1 - m0)),
            _ => (None, None),
        };
        Ok(Phase {
            concurrency,
            requests,
            requests_per_s: requests as f64 / seconds,
            latency_ms: Percentiles::of(&h),
            verified,
            cache_hits: cache.0,
            cache_misses: cache.1,
        })
    }

    /// The server's history cache lookups so far: (hits, misses).
    async fn cache_lookups(&self) -> Option<(u64, u64)> {
        let text = self.http.get(format!("{}/metrics", self.base)).send().await.ok()?.text().await.ok()?;
        let count = |outcome: &str| {
            let prefix = format!("history_cache_lookups_total{{outcome=\"{outcome}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map_or(Some(0.0), |v| v.trim().parse::<f64>().ok())
        };
        Some((count("hit")? as u64, count("miss")? as u64))
    }

    /// The newest page of the `i`-th pick: its latency in µs and whether it was intact.
    async fn page(&self, i: u64) -> anyhow::Result<(u64, bool)> {
        let conv = i.wrapping_mul(2_654_435_761) % self.conversations + 1;
        let t = Instant::now();
        let body = self
            .http
            .get(format!("{}/v1/conversations/{conv}/messages?limit={PAGE}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        // The whole answer is in: the latency is the server's and the
        // network's. Checking it is the simulator's own work, not timed.
        let micros = t.elapsed().as_micros() as u64;
        let page: PageSeqs = serde_json::from_slice(&body)?;
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        let intact =
            !seqs.is_empty() && seqs.windows(2).all(|w| w[1] == w[0] + 1) && (seqs.len() == PAGE || !page.has_more);
        Ok((micros, intact))
    }
}
