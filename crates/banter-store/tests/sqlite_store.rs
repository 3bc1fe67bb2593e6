//! The SQLite store against its contract: seqs, idempotency, cursors,
//! membership, and what survives a reopen.

use banter_store::sqlite::{SqliteStore, Synchronous};
use banter_store::{Ack, NewMessage, SeqRange, Store, StoreError};

fn ack(conversation: i64, seq: u64) -> Vec<Ack> {
    vec![Ack { conversation_id: conversation, seq, receipts: true }]
}
use std::sync::Arc;

fn message(conversation: i64, sender: i64, client_msg_id: &str, id: i64) -> NewMessage {
    NewMessage {
        conversation_id: conversation,
        sender_id: sender,
        sender_device: 1,
        client_msg_id: client_msg_id.to_owned(),
        content: r#"{"type":"text","text":"x"}"#.to_owned(),
        message_id: id,
        ts: id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_gap_free_seqs_per_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), Synchronous::Normal).unwrap());
    let a = store.create_user("alice", "h").await.unwrap();
    let b = store.create_user("bob", "h").await.unwrap();
    let c1 = store.create_group(a.id, Some("one"), &[b.id]).await.unwrap().id;
    let c2 = store.create_group(a.id, Some("two"), &[b.id]).await.unwrap().id;
    let mut tasks = Vec::new();
    for i in 0..400i64 {
        let s = Arc::clone(&store);
        let conv = if i % 3 == 0 { c1 } else { c2 };
        tasks.push(tokio::spawn(async move { s.append(message(conv, a.id, &format!("m{i}"), i + 1)).await }));
    }
    for t in tasks {
        assert!(!t.await.unwrap().unwrap().duplicate);
    }
    for (conv, n) in [(c1, 134), (c2, 266)] {
        let all = store.messages(conv, SeqRange::After(0), 1000).await.unwrap();
        assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=n).collect::<Vec<u64>>());
        assert_eq!(store.conversation(conv, b.id).await.unwrap().unwrap().last_seq, n);
    }
}

#[tokio::test]
async fn a_retried_client_msg_id_returns_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Synchronous::Full).unwrap();
    let a = store.create_user("alice", "h").await.unwrap();
    let b = store.create_user("bob", "h").await.unwrap();
    let (conv, created) = store.create_direct(a.id, b.id).await.unwrap();
    assert!(created);
    let first = store.append(message(conv.id, a.id, "same", 10)).await.unwrap();
    let mut retry = message(conv.id, a.id, "same", 11);
    retry.content = r#"{"type":"text","text":"changed"}"#.to_owned();
    let again = store.append(retry).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, first.message);
    // The same id from another sender is another message.
    let other = store.append(message(conv.id, b.id, "same", 12)).await.unwrap();
    assert!(!other.duplicate);
    assert_eq!(other.message.seq, 2);
    // A non-member cannot append.
    let c = store.create_user("carol", "h").await.unwrap();
    assert!(matches!(store.append(message(conv.id, c.id, "x", 13)).await, Err(StoreError::NotFound)));
}

#[tokio::test]
async fn seqs_and_cursors_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, conv, device) = {
        let store = SqliteStore::open(dir.path(), Synchronous::Full).unwrap();
        let a = store.create_user("alice", "h").await.unwrap();
        let b = store.create_user("bob", "h").await.unwrap();
        let device = store.create_device(b.id, "phone", [7; 32]).await.unwrap();
        let conv = store.create_direct(a.id, b.id).await.unwrap().0.id;
        for i in 0..5 {
            store.append(message(conv, a.id, &format!("m{i}"), i + 1)).await.unwrap();
        }
        assert_eq!(store.ack(b.id, device, ack(conv, 3)).await.unwrap(), vec![(conv, 3)]);
        (a, b, conv, device)
    };
    let store = SqliteStore::open(dir.path(), Synchronous::Full).unwrap();
    let next = store.append(message(conv, a.id, "after", 99)).await.unwrap();
    assert_eq!(next.message.seq, 6);
    let cursor = store.cursor(conv, b.id, device).await.unwrap().unwrap();
    assert_eq!((cursor.acked_seq, cursor.last_seq), (3, 6));
    // Cursors never move back, and are capped at the last seq.
    assert_eq!(store.ack(b.id, device, ack(conv, 2)).await.unwrap(), vec![]);
    assert_eq!(store.ack(b.id, device, ack(conv, 100)).await.unwrap(), vec![(conv, 6)]);
    assert_eq!(store.cursor(conv, b.id, device).await.unwrap().unwrap().acked_seq, 6);
    assert_eq!(store.device_by_token([7; 32]).await.unwrap().unwrap().id, device);
}

#[tokio::test]
async fn new_devices_and_new_members_start_at_the_current_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Synchronous::Full).unwrap();
    let a = store.create_user("alice", "h").await.unwrap();
    let b = store.create_user("bob", "h").await.unwrap();
    let c = store.create_user("carol", "h").await.unwrap();
    let old_device = store.create_device(b.id, "old", [1; 32]).await.unwrap();
    let group = store.create_group(a.id, Some("g"), &[b.id]).await.unwrap().id;
    for i in 0..4 {
        store.append(message(group, a.id, &format!("m{i}"), i + 1)).await.unwrap();
    }
    let new_device = store.create_device(b.id, "new", [2; 32]).await.unwrap();
    assert_eq!(store.cursor(group, b.id, old_device).await.unwrap().unwrap().acked_seq, 0);
    assert_eq!(store.cursor(group, b.id, new_device).await.unwrap().unwrap().acked_seq, 4);
    let carol_device = store.create_device(c.id, "phone", [3; 32]).await.unwrap();
    assert_eq!(store.add_members(group, b.id, &[c.id, b.id]).await.unwrap(), vec![c.id]);
    assert_eq!(store.cursor(group, c.id, carol_device).await.unwrap().unwrap().acked_seq, 4);
    // Members, counts, and leaving.
    assert_eq!(store.members(group).await.unwrap(), vec![a.id, b.id, c.id]);
    store.leave(group, c.id).await.unwrap();
    assert!(store.conversation(group, c.id).await.unwrap().is_none());
    assert_eq!(store.conversation(group, a.id).await.unwrap().unwrap().member_count, 2);
    assert!(matches!(store.add_members(group, c.id, &[c.id]).await, Err(StoreError::NotFound)));
}
