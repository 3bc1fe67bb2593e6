//! The SQLite store against the store contract (`conformance`): seqs,
//! idempotency, cursors, membership, and what survives a reopen.

mod conformance;

use banter_store::sqlite::{SqliteStore, Synchronous};
use banter_store::Store;
use conformance::{conformance_tests, Backend};
use std::sync::Arc;

/// A temporary data directory; each `open` opens the store in it anew.
struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Sqlite {
        Sqlite { dir: tempfile::tempdir().expect("a temporary directory") }
    }
}

impl Backend for Sqlite {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(self.dir.path(), Synchronous::Full).expect("open the SQLite store"))
    }
}

conformance_tests!(Sqlite::new());

/// An append queued behind thousands of cursor writes is stored before most
/// of them: acks are bulk jobs, which the writer runs only after every
/// waiting append, a few milliseconds' worth per commit. (Run one after the
/// other, the append would come back after all of them.)
#[tokio::test]
async fn appends_are_stored_before_acks_queued_ahead_of_them() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Enough cursor writes (jobs × conversations) to keep the writer busy
    // far longer than it takes to queue them all.
    const JOBS: u64 = 2_000;
    const CONVERSATIONS: usize = 50;
    let backend = Sqlite::new();
    let store = backend.open().await;
    let a = store.create_user("alice", "h").await.unwrap();
    let b = store.create_user("bob", "h").await.unwrap();
    let mut conversations = Vec::new();
    for i in 0..CONVERSATIONS {
        conversations.push(store.create_group(a.id, Some(&format!("g{i}")), &[b.id]).await.unwrap().id);
    }
    let acks: Vec<banter_store::Ack> =
        conversations.iter().map(|&c| banter_store::Ack { conversation_id: c, seq: 0, receipts: false }).collect();
    let (queued, stored) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for device in 1..=JOBS as i64 {
        let (store, acks) = (Arc::clone(&store), acks.clone());
        let (queued, stored) = (Arc::clone(&queued), Arc::clone(&stored));
        tasks.push(tokio::spawn(async move {
            // The write is queued in this same poll, before its first wait.
            queued.fetch_add(1, Ordering::SeqCst);
            store.ack(b.id, device, acks).await.unwrap();
            stored.fetch_add(1, Ordering::SeqCst);
        }));
    }
    // This runtime has one thread: once every task has counted itself,
    // every cursor write is in the writer's queue, ahead of the append.
    while queued.load(Ordering::SeqCst) < JOBS {
        tokio::task::yield_now().await;
    }
    let appended = store.append(conformance::message(conversations[0], a.id, "m", 1)).await.unwrap();
    assert_eq!(appended.message.seq, 1);
    let before = stored.load(Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(stored.load(Ordering::SeqCst), JOBS);
    assert!(before < JOBS / 2, "{before} of {JOBS} cursor writes queued ahead were stored before the append");
}

/// The store with room for little more than one tail of recent messages per
/// part of its cache, so that
/// reads keep evicting and filling them again while a conversation grows
/// (a tail of this test's 51 newest messages fits; one of 64 does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_stay_whole_when_the_history_cache_keeps_evicting() {
    struct Tiny(Sqlite);
    impl Backend for Tiny {
        async fn open(&self) -> Arc<dyn Store> {
            let store = SqliteStore::open_with(self.0.dir.path(), Synchronous::Full, 16 * 9 * 1024)
                .expect("open the SQLite store");
            Arc::new(store)
        }
    }
    conformance::pages_read_while_a_conversation_grows_hold_every_acknowledged_message(&Tiny(Sqlite::new())).await;
}
