//! The PostgreSQL store: the store contract (`conformance`), several nodes
//! on one database, migrations, and what happens when PostgreSQL goes away.
//! Each test has a database of its own (`pg_support::TestDb`).
#![cfg(feature = "postgres")]

mod conformance;
mod pg_support;

use banter_store::postgres::{PgOptions, PgStore};
use banter_store::{Ack, NewMessage, SeqRange, Store, StoreError};
use conformance::{conformance_tests, Backend};
use pg_support::{Proxy, TestDb};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A test database; each `open` connects a new store (a node restarting).
struct Postgres {
    db: TestDb,
}

impl Postgres {
    async fn new() -> Postgres {
        Postgres { db: TestDb::create().await }
    }
}

impl Backend for Postgres {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(PgStore::connect(&self.db.url()).await.expect("connect to the test database"))
    }
}

conformance_tests!(Postgres::new().await);

/// How long a failing operation may take: the operation deadline (3 s) and some slack.
const PROMPTLY: Duration = Duration::from_millis(4_500);

fn message(conversation: i64, sender: i64, client_msg_id: &str, id: i64) -> NewMessage {
    NewMessage {
        conversation_id: conversation,
        sender_id: sender,
        sender_device: 0,
        client_msg_id: client_msg_id.to_owned(),
        content: r#"{"type":"text","text":"x"}"#.to_owned(),
        message_id: id,
        ts: id,
    }
}

/// Runs `op` and checks that it ends promptly.
async fn timed<T>(what: &str, op: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), op).await.unwrap_or_else(|_| panic!("{what} hung"));
    assert!(started.elapsed() < PROMPTLY, "{what} took {:?}", started.elapsed());
    outcome
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, outcome: Result<T, StoreError>) {
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "{what}: {outcome:?}");
}

/// Retries `append` until it succeeds, as a client would; panics after `within`.
async fn append_eventually(store: &PgStore, m: NewMessage, within: Duration) -> banter_store::Appended {
    let started = Instant::now();
    loop {
        match timed("append", store.append(m.clone())).await {
            Ok(appended) => return appended,
            Err(StoreError::Unavailable(e)) if started.elapsed() < within => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    }
}

async fn assert_gap_free(store: &PgStore, conversation: i64, n: u64) {
    let seqs: Vec<u64> =
        store.messages(conversation, SeqRange::After(0), 100_000).await.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_appending_to_the_same_conversations_leave_no_gaps() {
    const PER_NODE: i64 = 300;
    let db = TestDb::create().await;
    let nodes: Vec<Arc<PgStore>> = vec![
        Arc::new(PgStore::connect(&db.url()).await.unwrap()),
        Arc::new(PgStore::connect(&db.url()).await.unwrap()),
        Arc::new(PgStore::connect(&db.url()).await.unwrap()),
    ];
    let mut users = Vec::new();
    for name in ["ann", "ben", "cat"] {
        users.push(nodes[0].create_user(name, "h").await.unwrap().id);
    }
    let mut conversations = Vec::new();
    for _ in 0..4 {
        conversations.push(nodes[1].create_group(users[0], None, &users[1..]).await.unwrap().id);
    }
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..PER_NODE {
            let (node, conversation) = (Arc::clone(node), conversations[i as usize % conversations.len()]);
            let m = message(conversation, users[n], &format!("n{n}-{i}"), n as i64 * 1_000_000 + i);
            tasks.push(tokio::spawn(async move { node.append(m).await }));
        }
    }
    let mut stored = Vec::new();
    for t in tasks {
        let appended = t.await.unwrap().unwrap();
        assert!(!appended.duplicate);
        stored.push(appended.message);
    }
    // Every node's retry of every tenth message, sent through the next node, is a duplicate.
    for original in stored.iter().step_by(10) {
        let node = &nodes[(original.sender_id as usize) % nodes.len()];
        let retry = message(original.conversation_id, original.sender_id, &original.client_msg_id, -1);
        let again = node.append(retry).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(&again.message, original);
    }
    let mut total = 0;
    for &conversation in &conversations {
        let messages = nodes[2].messages(conversation, SeqRange::After(0), 100_000).await.unwrap();
        let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=messages.len() as u64).collect::<Vec<_>>(), "seqs of {conversation}");
        let keys: HashSet<_> = messages.iter().map(|m| (m.sender_id, m.client_msg_id.clone())).collect();
        assert_eq!(keys.len(), messages.len());
        let last_seq = nodes[0].conversation(conversation, users[0]).await.unwrap().unwrap().last_seq;
        assert_eq!(last_seq, messages.len() as u64);
        total += messages.len();
    }
    assert_eq!(total, 3 * PER_NODE as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_when_nodes_start_together_and_again() {
    let db = TestDb::create().await;
    let url = db.url();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::connect(&url).await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().expect("every node starts");
    }
    let again = PgStore::connect(&url).await.expect("a restart finds the schema migrated");
    again.create_user("alice", "h").await.unwrap();
    let client = db.client().await;
    let row = client.query_one("SELECT count(*), max(version) FROM schema_migrations", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i32>(1)), (1, 1));
    let partitions: i64 = client
        .query_one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'messages'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitions, 16);
}

#[tokio::test]
async fn connecting_to_nothing_fails_promptly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let outcome = timed("connect", PgStore::connect(&format!("host=127.0.0.1 port={port} user=postgres"))).await;
    assert_unavailable("connect", outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_answers_unavailable_and_comes_back() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(db.server_addr()).await;
    let store = PgStore::connect(&db.url_via(proxy.addr())).await.unwrap();
    let a = store.create_user("alice", "h").await.unwrap();
    let device = store.create_device(a.id, "phone", [1; 32]).await.unwrap();
    let group = store.create_group(a.id, None, &[]).await.unwrap().id;
    store.append(message(group, a.id, "before", 1)).await.unwrap();
    assert!(store.healthy().await);

    proxy.cut();
    assert_unavailable("append", timed("append", store.append(message(group, a.id, "during", 2))).await);
    assert_unavailable("messages", timed("messages", store.messages(group, SeqRange::After(0), 10)).await);
    assert_unavailable("create_user", timed("create_user", store.create_user("bob", "h")).await);
    assert_unavailable("conversations", timed("conversations", store.conversations(a.id)).await);
    let acks = vec![Ack { conversation_id: group, seq: 1, receipts: true }];
    assert_unavailable("ack", timed("ack", store.ack(a.id, device, acks)).await);
    assert!(!timed("healthy", store.healthy()).await);

    proxy.restore().await;
    append_eventually(&store, message(group, a.id, "after", 3), Duration::from_secs(10)).await;
    assert!(store.healthy().await);
    // The message refused while the database was away took no seq.
    assert_gap_free(&store, group, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_times_out_instead_of_hanging() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(db.server_addr()).await;
    let store = PgStore::connect(&db.url_via(proxy.addr())).await.unwrap();
    let a = store.create_user("alice", "h").await.unwrap();
    let group = store.create_group(a.id, None, &[]).await.unwrap().id;
    store.append(message(group, a.id, "before", 1)).await.unwrap();

    proxy.stall();
    // Several at once, so that connections stall in every state.
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(
                async move { timed("append", store.append(message(group, a.id, &format!("s{i}"), 10 + i))).await },
            )
        })
        .collect();
    assert_unavailable("user", timed("user", store.user(a.id)).await);
    assert!(!timed("healthy", store.healthy()).await);
    for send in sends {
        assert_unavailable("append", send.await.unwrap());
    }

    proxy.restore().await;
    append_eventually(&store, message(group, a.id, "after", 99), Duration::from_secs(15)).await;
    // A send that timed out may still have been committed (its client would
    // retry it); whatever was stored has no gap.
    let stored = store.messages(group, SeqRange::After(0), 100).await.unwrap();
    assert_gap_free(&store, group, stored.len() as u64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_replaced() {
    let db = TestDb::create().await;
    let store = PgStore::connect(&db.url()).await.unwrap();
    let a = store.create_user("alice", "h").await.unwrap();
    let group = store.create_group(a.id, None, &[]).await.unwrap().id;
    // Open several pooled connections.
    let warm: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.append(message(group, a.id, &format!("warm{i}"), i)).await })
        })
        .collect();
    for w in warm {
        w.await.unwrap().unwrap();
    }
    let admin = db.client().await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db.name()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed > 0);
    let mut stored = 8;
    for i in 0..20 {
        match timed("append", store.append(message(group, a.id, &format!("after{i}"), 100 + i))).await {
            Ok(_) => stored += 1,
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("append after the kill: {e}"),
        }
        match timed("user", store.user(a.id)).await {
            Ok(user) => assert_eq!(user.map(|u| u.id), Some(a.id)),
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("read after the kill: {e}"),
        }
    }
    assert!(stored >= 8 + 15, "most operations after the kill should succeed: {stored}");
    assert!(store.healthy().await);
    assert_gap_free(&store, group, stored).await;
}

#[tokio::test]
async fn options_bound_the_pool_and_the_batch() {
    let db = TestDb::create().await;
    let options = PgOptions { pool_size: 2, append_lanes: 1, max_batch: 3, lane_queue: 4, ..PgOptions::default() };
    let store = Arc::new(PgStore::connect_with(&db.url(), options).await.unwrap());
    let a = store.create_user("alice", "h").await.unwrap();
    let group = store.create_group(a.id, None, &[]).await.unwrap().id;
    let sends: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.append(message(group, a.id, &format!("m{i}"), i)).await })
        })
        .collect();
    for send in sends {
        send.await.unwrap().unwrap();
    }
    assert_gap_free(&store, group, 50).await;
    let client = db.client().await;
    let connections: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'banter'",
            &[&db.name()],
        )
        .await
        .unwrap()
        .get(0);
    // The pool, plus one connection per append lane, plus the ack lane's.
    assert!(connections <= 2 + 1 + 1, "{connections} connections");
}
