//! The `store` scenario: the embedded store alone, without network, appending
//! messages spread over N active conversations from many concurrent callers.
//! It shows what group commit buys and whether the write cost stays flat as
//! the number of active conversations grows.

use banter_store::sqlite::{SqliteStore, Synchronous};
use banter_store::{ConversationId, NewMessage, Store, UserId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Concurrent appenders.
const APPENDERS: usize = 1024;

/// Figures of a store run.
#[derive(Debug, serde::Serialize)]
pub struct StoreReport {
    pub conversations: usize,
    pub messages: u64,
    pub seconds: f64,
    pub messages_per_s: f64,
    pub synchronous: String,
    /// Messages found stored afterwards, with gap-free seqs in every conversation.
    pub verified: u64,
}

pub async fn run(conversations: usize, messages: u64, sync: &str) -> anyhow::Result<StoreReport> {
    let dir = tempfile::tempdir()?;
    let mode = if sync == "normal" { Synchronous::Normal } else { Synchronous::Full };
    let store = Arc::new(SqliteStore::open(dir.path(), mode)?);
    let a = store.create_user("store_bench_a", "x").await?;
    let b = store.create_user("store_bench_b", "x").await?;
    let ids = create_conversations(&store, a.id, b.id, conversations).await?;
    eprintln!("appending {messages} messages from {APPENDERS} concurrent callers");
    let started = Instant::now();
    append_spread(&store, a.id, &ids, messages).await?;
    let seconds = started.elapsed().as_secs_f64();
    // Every append is there, and seqs are gap-free: last_seq equals the count.
    let mut verified = 0;
    for &id in ids.iter() {
        let conv = store.conversation(id, a.id).await?.ok_or_else(|| anyhow::anyhow!("conversation {id} vanished"))?;
        let stored = store.messages(id, banter_store::SeqRange::After(0), usize::MAX).await?;
        anyhow::ensure!(stored.iter().zip(1..).all(|(m, s)| m.seq == s), "seq gap in conversation {id}");
        anyhow::ensure!(
            stored.len() as u64 == conv.last_seq,
            "conversation {id}: {} stored, last seq {}",
            stored.len(),
            conv.last_seq
        );
        verified += stored.len() as u64;
    }
    anyhow::ensure!(verified == messages, "{verified} of {messages} messages found");
    let report = StoreReport {
        conversations,
        messages,
        seconds,
        messages_per_s: messages as f64 / seconds,
        synchronous: sync.to_owned(),
        verified,
    };
    println!(
        "store: {} messages over {} active conversations in {:.2} s: {:.0} messages/s (synchronous={})",
        messages, conversations, seconds, report.messages_per_s, sync
    );
    Ok(report)
}

/// Creates `n` groups of `author` and `member`.
pub(super) async fn create_conversations(
    store: &Arc<SqliteStore>,
    author: UserId,
    member: UserId,
    n: usize,
) -> anyhow::Result<Vec<ConversationId>> {
    eprintln!("creating {n} conversations");
    let mut ids = Vec::with_capacity(n);
    let mut pending = Vec::new();
    for _ in 0..n {
        let s = Arc::clone(store);
        pending.push(tokio::spawn(async move { s.create_group(author, None, &[member]).await }));
        if pending.len() == 4096 {
            for p in pending.drain(..) {
                ids.push(p.await??.id);
            }
        }
    }
    for p in pending {
        ids.push(p.await??.id);
    }
    Ok(ids)
}

/// Appends `messages` messages by `author`, spread evenly over `ids`, from
/// many concurrent callers.
pub(super) async fn append_spread(
    store: &Arc<SqliteStore>,
    author: UserId,
    ids: &[ConversationId],
    messages: u64,
) -> anyhow::Result<()> {
    let ids: Arc<[ConversationId]> = ids.into();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..APPENDERS {
        let (store, ids, next) = (Arc::clone(store), Arc::clone(&ids), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= messages {
                    return Ok::<_, banter_store::StoreError>(());
                }
                // A multiplicative hash spreads consecutive messages over all
                // conversations, so a batch does not touch neighbouring rows.
                let conv = ids[(n.wrapping_mul(2_654_435_761) % ids.len() as u64) as usize];
                store
                    .append(NewMessage {
                        conversation_id: conv,
                        sender_id: author,
                        sender_device: 1,
                        client_msg_id: n.to_string(),
                        content: r#"{"type":"text","text":"a message of typical length, about sixty bytes"}"#
                            .to_owned(),
                        message_id: n as i64,
                        ts: 0,
                    })
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
