//! The contract of [`Store`], as one suite every backend runs.
//!
//! A backend's test file implements [`Backend`] and invokes
//! `conformance_tests!(expression building the backend)`, which declares one
//! `#[tokio::test]` per function here, so no backend can skip a case.

use banter_store::{
    Ack, ConversationId, DeviceAcks, DeviceId, Kind, NewMessage, SeqRange, Store, StoreError, UserId,
    MEMBERS_LISTED_UP_TO,
};
use std::future::Future;
use std::sync::Arc;

/// Where a test's data lives.
pub trait Backend {
    /// A store on this backend's data. Opening again (after dropping the
    /// first) is a restart: the same data, a new store.
    fn open(&self) -> impl Future<Output = Arc<dyn Store>> + Send;
}

/// Declares every conformance test for the backend that `$backend` builds.
macro_rules! conformance_tests {
    ($backend:expr) => {
        conformance_tests!(@each $backend;
            concurrent_appends_get_gap_free_seqs_per_conversation,
            concurrent_retries_and_refused_sends_leave_no_gaps,
            a_retried_client_msg_id_returns_the_original,
            seqs_and_cursors_survive_a_reopen,
            new_devices_and_new_members_start_at_the_current_seq,
            usernames_are_unique_and_users_are_found,
            revoked_devices_stop_authenticating,
            a_direct_conversation_is_created_once_per_pair,
            groups_refuse_what_does_not_apply,
            leaving_removes_membership_and_cursors,
            one_who_left_can_neither_send_nor_acknowledge,
            conversations_are_listed_by_latest_activity,
            member_lists_stop_at_the_limit,
            acks_move_cursors_forward_and_report_receipts,
            acks_of_many_devices_are_stored_together,
            reads_rise_and_are_capped,
            messages_are_paged_in_both_directions,
            history_is_read_by_members_only,
            pages_read_while_a_conversation_grows_hold_every_acknowledged_message,
            a_member_who_left_reads_no_more_however_often_read_before,
        );
    };
    (@each $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = $backend;
                conformance::$name(&backend).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;

/// A text message from `sender`'s device 1.
pub fn message(conversation: ConversationId, sender: UserId, client_msg_id: &str, id: i64) -> NewMessage {
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

fn ack(conversation: ConversationId, seq: u64) -> Ack {
    Ack { conversation_id: conversation, seq, receipts: true }
}

async fn seqs(store: &dyn Store, conversation: ConversationId) -> Vec<u64> {
    store.messages(conversation, SeqRange::After(0), 10_000).await.unwrap().iter().map(|m| m.seq).collect()
}

pub async fn concurrent_appends_get_gap_free_seqs_per_conversation(backend: &impl Backend) {
    let store = backend.open().await;
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
        assert_eq!(seqs(&*store, conv).await, (1..=n).collect::<Vec<u64>>());
        assert_eq!(store.conversation(conv, b.id).await.unwrap().unwrap().last_seq, n);
    }
}

pub async fn concurrent_retries_and_refused_sends_leave_no_gaps(backend: &impl Backend) {
    let store = backend.open().await;
    let a = store.create_user("alice", "h").await.unwrap();
    let b = store.create_user("bob", "h").await.unwrap();
    let outsider = store.create_user("mallory", "h").await.unwrap();
    let group = store.create_group(a.id, None, &[b.id]).await.unwrap().id;
    let mut tasks = Vec::new();
    for i in 0..90i64 {
        let s = Arc::clone(&store);
        // A third are retries of one message, a third are new, a third are refused.
        let m = match i % 3 {
            0 => message(group, a.id, "retried", 1000 + i),
            1 => message(group, b.id, &format!("new{i}"), 1000 + i),
            _ => message(group, outsider.id, &format!("refused{i}"), 1000 + i),
        };
        tasks.push(tokio::spawn(async move { (i, s.append(m).await) }));
    }
    let mut retried = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(appended)) if i % 3 == 0 => retried.push(appended),
            (i, Ok(appended)) => assert!(i % 3 == 1 && !appended.duplicate),
            (i, Err(e)) => assert!(i % 3 == 2 && matches!(e, StoreError::NotFound), "{e}"),
        }
    }
    assert_eq!(retried.iter().filter(|a| !a.duplicate).count(), 1);
    assert!(retried.iter().all(|a| a.message == retried[0].message));
    assert_eq!(seqs(&*store, group).await, (1..=31).collect::<Vec<u64>>());
}

pub async fn a_retried_client_msg_id_returns_the_original(backend: &impl Backend) {
    let store = backend.open().await;
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
    // A non-member cannot append, nor can anyone to a conversation that does not exist.
    let c = store.create_user("carol", "h").await.unwrap();
    assert!(matches!(store.append(message(conv.id, c.id, "x", 13)).await, Err(StoreError::NotFound)));
    assert!(matches!(store.append(message(conv.id + 1000, a.id, "x", 14)).await, Err(StoreError::NotFound)));
}

pub async fn seqs_and_cursors_survive_a_reopen(backend: &impl Backend) {
    let (a, b, conv, device) = {
        let store = backend.open().await;
        let a = store.create_user("alice", "h").await.unwrap();
        let b = store.create_user("bob", "h").await.unwrap();
        let device = store.create_device(b.id, "phone", [7; 32]).await.unwrap();
        let conv = store.create_direct(a.id, b.id).await.unwrap().0.id;
        for i in 0..5 {
            store.append(message(conv, a.id, &format!("m{i}"), i + 1)).await.unwrap();
        }
        assert_eq!(store.ack(b.id, device, vec![ack(conv, 3)]).await.unwrap(), vec![(conv, 3)]);
        (a, b, conv, device)
    };
    let store = backend.open().await;
    let next = store.append(message(conv, a.id, "after", 99)).await.unwrap();
    assert_eq!(next.message.seq, 6);
    let cursor = store.cursor(conv, b.id, device).await.unwrap().unwrap();
    assert_eq!((cursor.acked_seq, cursor.last_seq), (3, 6));
    // Cursors never move back, and are capped at the last seq.
    assert_eq!(store.ack(b.id, device, vec![ack(conv, 2)]).await.unwrap(), vec![]);
    assert_eq!(store.ack(b.id, device, vec![ack(conv, 100)]).await.unwrap(), vec![(conv, 6)]);
    assert_eq!(store.cursor(conv, b.id, device).await.unwrap().unwrap().acked_seq, 6);
    assert_eq!(store.device_by_token([7; 32]).await.unwrap().unwrap().id, device);
    assert!(store.append(message(conv, a.id, "m0", 1)).await.unwrap().duplicate);
}

pub async fn new_devices_and_new_members_start_at_the_current_seq(backend: &impl Backend) {
    let store = backend.open().await;
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
    let carol = store.cursor(group, c.id, carol_device).await.unwrap().unwrap();
    assert_eq!((carol.acked_seq, carol.last_seq, carol.member_count), (4, 4, 3));
    let cursors = store.cursors(c.id, carol_device).await.unwrap();
    assert_eq!(cursors.iter().map(|k| (k.conversation_id, k.acked_seq)).collect::<Vec<_>>(), vec![(group, 4)]);
    // Members, counts, and leaving.
    assert_eq!(store.members(group).await.unwrap(), vec![a.id, b.id, c.id]);
    store.leave(group, c.id).await.unwrap();
    assert!(store.conversation(group, c.id).await.unwrap().is_none());
    assert_eq!(store.conversation(group, a.id).await.unwrap().unwrap().member_count, 2);
    assert!(matches!(store.add_members(group, c.id, &[c.id]).await, Err(StoreError::NotFound)));
}

pub async fn usernames_are_unique_and_users_are_found(backend: &impl Backend) {
    let store = backend.open().await;
    let a = store.create_user("alice", "h1").await.unwrap();
    assert!(matches!(store.create_user("alice", "h2").await, Err(StoreError::UsernameTaken)));
    // Names are compared exactly.
    let upper = store.create_user("Alice", "h3").await.unwrap();
    assert_ne!(upper.id, a.id);
    assert_eq!(store.user_credentials("alice").await.unwrap(), Some((a.clone(), "h1".to_owned())));
    assert_eq!(store.user_by_name("Alice").await.unwrap(), Some(upper.clone()));
    assert_eq!(store.user(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.user_by_name("bob").await.unwrap(), None);
    assert_eq!(store.user_credentials("bob").await.unwrap(), None);
    assert_eq!(store.user(a.id.max(upper.id) + 1000).await.unwrap(), None);
}

pub async fn revoked_devices_stop_authenticating(backend: &impl Backend) {
    let store = backend.open().await;
    let a = store.create_user("alice", "h").await.unwrap();
    let phone = store.create_device(a.id, "phone", [1; 32]).await.unwrap();
    let laptop = store.create_device(a.id, "laptop", [2; 32]).await.unwrap();
    assert_ne!(phone, laptop);
    let found = store.device_by_token([1; 32]).await.unwrap().unwrap();
    assert_eq!((found.id, found.user_id), (phone, a.id));
    store.revoke_device(phone).await.unwrap();
    assert_eq!(store.device_by_token([1; 32]).await.unwrap(), None);
    assert_eq!(store.device_by_token([2; 32]).await.unwrap().map(|d| d.id), Some(laptop));
    assert_eq!(store.device_by_token([3; 32]).await.unwrap(), None);
    // Revoking twice, or a device that never existed, is no error.
    store.revoke_device(phone).await.unwrap();
    store.revoke_device(laptop + 1000).await.unwrap();
}

pub async fn a_direct_conversation_is_created_once_per_pair(backend: &impl Backend) {
    let store = backend.open().await;
    let a = store.create_user("alice", "h").await.unwrap();
    let b = store.create_user("bob", "h").await.unwrap();
    let c = store.create_user("carol", "h").await.unwrap();
    let (conv, created) = store.create_direct(a.id, b.id).await.unwrap();
    assert!(created);
    assert_eq!((conv.kind, conv.title.as_deref(), conv.member_count, conv.last_seq), (Kind::Direct, None, 2, 0));
    assert_eq!(conv.members, Some(vec![a.id, b.id]));
    assert_eq!(conv.last_activity, conv.created_at);
    let (again, created) = store.create_direct(b.id, a.id).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, conv.id);
    // Created concurrently, it is still one conversation.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = Arc::clone(&store);
            let (x, y) = if i % 2 == 0 { (a.id, c.id) } else { (c.id, a.id) };
            tokio::spawn(async move { s.create_direct(x, y).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|(_, created)| *created).count(), 1);
    assert!(outcomes.iter().all(|(conv, _)| conv.id == outcomes[0].0.id));
    assert!(matches!(store.create_direct(a.id, a.id).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.create_direct(a.id, c.id.max(b.id) + 1000).await, Err(StoreError::NotFound)));
    // Peers are the users of direct conversations only.
    store.create_group(b.id, None, &[c.id]).await.unwrap();
    let mut peers = store.direct_peers(a.id).await.unwrap();
    peers.sort_unstable();
    assert_eq!(peers, vec![b.id, c.id]);
    assert_eq!(store.direct_peers(b.id).await.unwrap(), vec![a.id]);
    assert!(store.conversation(conv.id, c.id).await.unwrap().is_none());
}

pub async fn groups_refuse_what_does_not_apply(backend: &impl Backend) {
    let store = backend.open().await;
    let a = store.create_user("alice", "h").await.unwrap();
    let b = store.create_user("bob", "h").await.unwrap();
    let c = store.create_user("carol", "h").await.unwrap();
    let unknown = c.id + 1000;
    let direct = store.create_direct(a.id, b.id).await.unwrap().0.id;
    assert!(matches!(store.add_members(direct, a.id, &[c.id]).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.leave(direct, a.id).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.create_group(a.id, None, &[b.id, unknown]).await, Err(StoreError::NotFound)));
    // The creator is a member once, however often listed.
    let group = store.create_group(a.id, Some("title"), &[b.id, a.id, b.id]).await.unwrap();
    assert_eq!((group.kind, group.title.as_deref(), group.member_count), (Kind::Group, Some("title"), 2));
    assert_eq!(group.members, Some(vec![a.id, b.id]));
    assert!(matches!(store.add_members(group.id, c.id, &[c.id]).await, Err(StoreError::NotFound)));
    assert!(matches!(store.add_members(group.id, a.id, &[unknown]).await, Err(StoreError::NotFound)));
    assert!(matches!(store.add_members(group.id + 1000, a.id, &[c.id]).await, Err(StoreError::NotFound)));
    assert!(matches!(store.leave(group.id, c.id).await, Err(StoreError::NotFound)));
    assert!(store.conversation(group.id + 1000, a.id).await.unwrap().is_none());
    assert_eq!(store.add_members(group.id, a.id, &[c.id, c.id]).await.unwrap(), vec![c.id]);
    assert_eq!(store.add_members(group.id, a.id, &[c.id]).await.unwrap(), vec![]);
    assert_eq!(store.conversation(group.id, c.id).await.unwrap().unwrap().member_count, 3);
}

/// Alice, Bob with a phone (its token hash `token`), and a group of the two.
async fn alice_bob_and_a_group(store: &dyn Store, token: u8) -> (UserId, UserId, DeviceId, ConversationId) {
    let a = store.create_user("alice", "h").await.unwrap().id;
    let b = store.create_user("bob", "h").await.unwrap().id;
    let device = store.create_device(b, "phone", [token; 32]).await.unwrap();
    let group = store.create_group(a, None, &[b]).await.unwrap().id;
    (a, b, device, group)
}

pub async fn leaving_removes_membership_and_cursors(backend: &impl Backend) {
    let store = backend.open().await;
    let (a, b, device, group) = alice_bob_and_a_group(&*store, 5).await;
    let other = store.create_group(a, None, &[b]).await.unwrap().id;
    for i in 0..3 {
        store.append(message(group, a, &format!("m{i}"), i + 1)).await.unwrap();
    }
    assert_eq!(store.ack(b, device, vec![ack(group, 2)]).await.unwrap(), vec![(group, 2)]);
    store.leave(group, b).await.unwrap();
    assert_eq!(store.cursor(group, b, device).await.unwrap(), None);
    let cursors = store.cursors(b, device).await.unwrap();
    assert_eq!(cursors.iter().map(|k| k.conversation_id).collect::<Vec<_>>(), vec![other]);
    assert_eq!(store.members(group).await.unwrap(), vec![a]);
    assert_eq!(store.conversations(b).await.unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), vec![other]);
    assert!(matches!(store.leave(group, b).await, Err(StoreError::NotFound)));
    // Back in, the device starts at the current seq, not where it was.
    store.append(message(group, a, "m3", 4)).await.unwrap();
    assert_eq!(store.add_members(group, a, &[b]).await.unwrap(), vec![b]);
    let cursor = store.cursor(group, b, device).await.unwrap().unwrap();
    assert_eq!((cursor.acked_seq, cursor.last_seq, cursor.member_count), (4, 4, 2));
}

/// A member who has sent and acknowledged (so a backend that remembers
/// memberships has seen this one) is refused both once gone, and may send
/// again once back.
pub async fn one_who_left_can_neither_send_nor_acknowledge(backend: &impl Backend) {
    let store = backend.open().await;
    let (a, b, device, group) = alice_bob_and_a_group(&*store, 6).await;
    store.append(message(group, b, "b1", 1)).await.unwrap();
    store.append(message(group, a, "a1", 2)).await.unwrap();
    assert_eq!(store.ack(b, device, vec![ack(group, 1)]).await.unwrap(), vec![(group, 1)]);
    store.leave(group, b).await.unwrap();
    assert!(matches!(store.append(message(group, b, "b2", 3)).await, Err(StoreError::NotFound)));
    assert_eq!(store.ack(b, device, vec![ack(group, 2)]).await.unwrap(), vec![]);
    assert!(matches!(store.read(group, b, 2).await, Err(StoreError::NotFound)));
    assert_eq!(seqs(&*store, group).await, vec![1, 2]);
    store.add_members(group, a, &[b]).await.unwrap();
    assert_eq!(store.append(message(group, b, "b3", 4)).await.unwrap().message.seq, 3);
}

pub async fn conversations_are_listed_by_latest_activity(backend: &impl Backend) {
    let store = backend.open().await;
    let a = store.create_user("alice", "h").await.unwrap();
    let b = store.create_user("bob", "h").await.unwrap();
    let c = store.create_user("carol", "h").await.unwrap();
    let g1 = store.create_group(a.id, Some("one"), &[b.id]).await.unwrap();
    let g2 = store.create_group(a.id, Some("two"), &[b.id]).await.unwrap();
    let g3 = store.create_group(a.id, Some("three"), &[]).await.unwrap();
    // Same activity (their creation) sorts the newer conversation first.
    let ids = |list: Vec<banter_store::Conversation>| list.iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(ids(store.conversations(a.id).await.unwrap()), vec![g3.id, g2.id, g1.id]);
    let later = g3.created_at + 60_000;
    let mut m = message(g1.id, b.id, "x", 1);
    m.ts = later;
    store.append(m).await.unwrap();
    let listed = store.conversations(a.id).await.unwrap();
    assert_eq!(ids(listed.clone()), vec![g1.id, g3.id, g2.id]);
    assert_eq!((listed[0].last_activity, listed[0].last_seq), (later, 1));
    assert_eq!(listed[0].members, Some(vec![a.id, b.id]));
    assert_eq!(ids(store.conversations(b.id).await.unwrap()), vec![g1.id, g2.id]);
    assert!(store.conversations(c.id).await.unwrap().is_empty());
    // Read seqs are the viewer's.
    assert_eq!(store.read(g1.id, b.id, 1).await.unwrap(), Some(1));
    assert_eq!(store.conversations(b.id).await.unwrap()[0].read_seq, 1);
    assert_eq!(store.conversations(a.id).await.unwrap()[0].read_seq, 0);
}

pub async fn member_lists_stop_at_the_limit(backend: &impl Backend) {
    let store = backend.open().await;
    let tasks: Vec<_> = (0..=MEMBERS_LISTED_UP_TO)
        .map(|i| {
            let s = Arc::clone(&store);
            tokio::spawn(async move { s.create_user(&format!("user{i}"), "h").await.unwrap().id })
        })
        .collect();
    let mut users = Vec::new();
    for t in tasks {
        users.push(t.await.unwrap());
    }
    let (creator, last) = (users[0], users[users.len() - 1]);
    let rest = &users[1..users.len() - 1];
    let group = store.create_group(creator, None, rest).await.unwrap();
    assert_eq!(group.member_count, MEMBERS_LISTED_UP_TO);
    assert_eq!(group.members.map(|m| m.len() as u64), Some(MEMBERS_LISTED_UP_TO));
    store.add_members(group.id, creator, &[last]).await.unwrap();
    let group = store.conversation(group.id, last).await.unwrap().unwrap();
    assert_eq!((group.member_count, group.members), (MEMBERS_LISTED_UP_TO + 1, None));
    assert_eq!(store.conversations(creator).await.unwrap()[0].members, None);
    assert_eq!(store.members(group.id).await.unwrap().len() as u64, MEMBERS_LISTED_UP_TO + 1);
}

/// Alice, and the users and devices whose acks the ack tests follow: Bob
/// with a phone and a laptop, Carol with a phone.
struct Acking {
    a: banter_store::User,
    b: banter_store::User,
    c: banter_store::User,
    phone: banter_store::DeviceId,
    laptop: banter_store::DeviceId,
    carol: banter_store::DeviceId,
}

async fn acking(store: &Arc<dyn Store>) -> Acking {
    let a = store.create_user("alice", "h").await.unwrap();
    let b = store.create_user("bob", "h").await.unwrap();
    let c = store.create_user("carol", "h").await.unwrap();
    let phone = store.create_device(b.id, "phone", [1; 32]).await.unwrap();
    let laptop = store.create_device(b.id, "laptop", [2; 32]).await.unwrap();
    let carol = store.create_device(c.id, "phone", [3; 32]).await.unwrap();
    Acking { a, b, c, phone, laptop, carol }
}

pub async fn acks_move_cursors_forward_and_report_receipts(backend: &impl Backend) {
    let store = backend.open().await;
    let Acking { a, b, c, phone, laptop, carol } = acking(&store).await;
    let g1 = store.create_group(a.id, None, &[b.id]).await.unwrap().id;
    let g2 = store.create_group(a.id, None, &[b.id]).await.unwrap().id;
    let g3 = store.create_group(a.id, None, &[b.id]).await.unwrap().id;
    for (conv, n) in [(g1, 5), (g2, 2), (g3, 3)] {
        for i in 0..n {
            store.append(message(conv, a.id, &format!("m{i}"), i + 1)).await.unwrap();
        }
    }
    // Answered in the order given.
    assert_eq!(store.ack(b.id, phone, vec![ack(g2, 1), ack(g1, 3)]).await.unwrap(), vec![(g2, 1), (g1, 3)]);
    assert_eq!(store.ack(b.id, phone, vec![ack(g1, 2)]).await.unwrap(), vec![]);
    assert_eq!(store.cursor(g1, b.id, phone).await.unwrap().unwrap().acked_seq, 3);
    assert_eq!(store.ack(b.id, phone, vec![ack(g2, 100)]).await.unwrap(), vec![(g2, 2)]);
    // Without receipts, only the cursor moves (capped too).
    let quiet = Ack { conversation_id: g1, seq: 99, receipts: false };
    assert_eq!(store.ack(b.id, phone, vec![quiet]).await.unwrap(), vec![]);
    assert_eq!(store.cursor(g1, b.id, phone).await.unwrap().unwrap().acked_seq, 5);
    assert_eq!(store.ack(b.id, phone, vec![ack(g1, 5)]).await.unwrap(), vec![(g1, 5)]);
    // The delivered seq is the user's; each device has its own cursor.
    assert_eq!(store.ack(b.id, laptop, vec![ack(g1, 4)]).await.unwrap(), vec![]);
    assert_eq!(store.cursor(g1, b.id, laptop).await.unwrap().unwrap().acked_seq, 4);
    // Several acks of one conversation in one call apply in turn.
    assert_eq!(store.ack(b.id, phone, vec![ack(g3, 2), ack(g3, 1), ack(g3, 3)]).await.unwrap(), vec![(g3, 2), (g3, 3)]);
    // Receipts in a conversation the user is not in are skipped.
    assert_eq!(store.ack(c.id, carol, vec![ack(g1, 3), ack(g1 + 1000, 1)]).await.unwrap(), vec![]);
    assert_eq!(store.cursor(g1, c.id, carol).await.unwrap(), None);
    assert_eq!(store.ack(b.id, phone, vec![]).await.unwrap(), vec![]);
    let cursors = store.cursors(b.id, phone).await.unwrap();
    let mut positions: Vec<_> = cursors.iter().map(|k| (k.conversation_id, k.acked_seq, k.last_seq)).collect();
    positions.sort_unstable();
    assert_eq!(positions, vec![(g1, 5, 5), (g2, 2, 2), (g3, 3, 3)]);
}

pub async fn acks_of_many_devices_are_stored_together(backend: &impl Backend) {
    let store = backend.open().await;
    let Acking { a, b, c, phone, laptop, carol } = acking(&store).await;
    let g = store.create_group(a.id, None, &[b.id, c.id]).await.unwrap().id;
    let direct = store.create_direct(a.id, b.id).await.unwrap().0.id;
    for i in 0..4 {
        store.append(message(g, a.id, &format!("g{i}"), i + 1)).await.unwrap();
        store.append(message(direct, a.id, &format!("d{i}"), i + 11)).await.unwrap();
    }
    let devices = vec![
        DeviceAcks { user: b.id, device: phone, acks: vec![ack(g, 3), ack(direct, 99)] },
        // Carol is not in the direct conversation: that ack is skipped, hers in the group stands.
        DeviceAcks { user: c.id, device: carol, acks: vec![ack(direct, 2), ack(g, 1)] },
        DeviceAcks { user: b.id, device: laptop, acks: vec![] },
    ];
    // One answer per device, in the order given, each as `ack` would give it.
    let rose: Vec<_> = store.ack_many(devices).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(rose, vec![vec![(g, 3), (direct, 4)], vec![(g, 1)], vec![]]);
    // Bob's delivered seq rose through his phone: his laptop moves only its cursor.
    let laptop_acks = vec![DeviceAcks { user: b.id, device: laptop, acks: vec![ack(g, 2)] }];
    assert_eq!(store.ack_many(laptop_acks).await.pop().unwrap().unwrap(), vec![]);
    let acked = |conv, user, device| {
        let store = Arc::clone(&store);
        async move { store.cursor(conv, user, device).await.unwrap().map(|k| k.acked_seq) }
    };
    assert_eq!(acked(g, b.id, phone).await, Some(3));
    assert_eq!(acked(direct, b.id, phone).await, Some(4));
    assert_eq!(acked(g, b.id, laptop).await, Some(2));
    assert_eq!(acked(g, c.id, carol).await, Some(1));
    assert_eq!(acked(direct, c.id, carol).await, None);
    // Nothing at all is a valid call.
    assert!(store.ack_many(vec![]).await.is_empty());
}

pub async fn reads_rise_and_are_capped(backend: &impl Backend) {
    let store = backend.open().await;
    let a = store.create_user("alice", "h").await.unwrap();
    let b = store.create_user("bob", "h").await.unwrap();
    let c = store.create_user("carol", "h").await.unwrap();
    let group = store.create_group(a.id, None, &[b.id]).await.unwrap().id;
    for i in 0..3 {
        store.append(message(group, a.id, &format!("m{i}"), i + 1)).await.unwrap();
    }
    assert_eq!(store.read(group, b.id, 2).await.unwrap(), Some(2));
    assert_eq!(store.read(group, b.id, 1).await.unwrap(), None);
    assert_eq!(store.read(group, b.id, u64::MAX).await.unwrap(), Some(3));
    assert_eq!(store.read(group, b.id, 3).await.unwrap(), None);
    assert_eq!(store.conversation(group, b.id).await.unwrap().unwrap().read_seq, 3);
    assert_eq!(store.conversation(group, a.id).await.unwrap().unwrap().read_seq, 0);
    assert!(matches!(store.read(group, c.id, 1).await, Err(StoreError::NotFound)));
    assert!(matches!(store.read(group + 1000, b.id, 1).await, Err(StoreError::NotFound)));
}

pub async fn messages_are_paged_in_both_directions(backend: &impl Backend) {
    let store = backend.open().await;
    let a = store.create_user("alice", "h").await.unwrap();
    let b = store.create_user("bob", "h").await.unwrap();
    let group = store.create_group(a.id, None, &[b.id]).await.unwrap().id;
    let other = store.create_group(b.id, None, &[a.id]).await.unwrap().id;
    let mut sent = message(group, b.id, "first", 500);
    sent.sender_device = 42;
    sent.content = r#"{"type":"text","text":"héllo \"there\""}"#.to_owned();
    store.append(sent.clone()).await.unwrap();
    for i in 2..=10 {
        store.append(message(group, a.id, &format!("m{i}"), i)).await.unwrap();
        store.append(message(other, a.id, &format!("m{i}"), 100 + i)).await.unwrap();
    }
    let page = |range, limit| {
        let store = Arc::clone(&store);
        async move { store.messages(group, range, limit).await.unwrap().iter().map(|m| m.seq).collect::<Vec<_>>() }
    };
    assert_eq!(page(SeqRange::After(0), 3).await, vec![1, 2, 3]);
    assert_eq!(page(SeqRange::After(8), 10).await, vec![9, 10]);
    assert_eq!(page(SeqRange::After(10), 10).await, Vec::<u64>::new());
    assert_eq!(page(SeqRange::Before(u64::MAX), 3).await, vec![8, 9, 10]);
    assert_eq!(page(SeqRange::Before(4), 10).await, vec![1, 2, 3]);
    assert_eq!(page(SeqRange::Before(1), 10).await, Vec::<u64>::new());
    let first = &store.messages(group, SeqRange::After(0), 1).await.unwrap()[0];
    assert_eq!(
        (first.conversation_id, first.seq, first.message_id, first.sender_id, first.sender_device),
        (group, 1, 500, b.id, 42)
    );
    assert_eq!((first.client_msg_id.as_str(), first.ts, first.content.as_str()), ("first", 500, sent.content.as_str()));
}

pub async fn history_is_read_by_members_only(backend: &impl Backend) {
    let store = backend.open().await;
    let (a, b, _, group) = alice_bob_and_a_group(&*store, 7).await;
    let c = store.create_user("carol", "h").await.unwrap().id;
    let empty = store.create_group(a, None, &[c]).await.unwrap().id;
    for i in 1..=3 {
        store.append(message(group, a, &format!("m{i}"), i)).await.unwrap();
    }
    let history = |conversation, reader, range, limit| {
        let store = Arc::clone(&store);
        async move {
            let page = store.history(conversation, reader, range, limit).await.unwrap();
            page.map(|p| p.iter().map(|m| m.seq).collect::<Vec<_>>())
        }
    };
    assert_eq!(history(group, b, SeqRange::Before(u64::MAX), 2).await, Some(vec![2, 3]));
    assert_eq!(history(group, b, SeqRange::After(0), 10).await, Some(vec![1, 2, 3]));
    assert_eq!(history(empty, c, SeqRange::Before(u64::MAX), 10).await, Some(vec![]));
    assert_eq!(history(group, c, SeqRange::Before(u64::MAX), 10).await, None);
    assert_eq!(history(ConversationId::MAX, b, SeqRange::After(0), 10).await, None);
    store.leave(group, b).await.unwrap();
    assert_eq!(history(group, b, SeqRange::After(0), 10).await, None);
}

/// Readers of the newest page, and of the pages after a seq, while messages
/// are appended one after another: every page is consecutive, and holds
/// every message whose append had returned before the read began. (The
/// SQLite store answers these from the tails it keeps in memory, which
/// commits extend while reads fill them.)
pub async fn pages_read_while_a_conversation_grows_hold_every_acknowledged_message(backend: &impl Backend) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const START: u64 = 30;
    const APPENDS: u64 = 300;
    let store = backend.open().await;
    let (a, b, _, group) = alice_bob_and_a_group(&*store, 9).await;
    for i in 1..=START {
        store.append(message(group, a, &format!("s{i}"), i as i64)).await.unwrap();
    }
    let acked = Arc::new(AtomicU64::new(START));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..3u64 {
        let (store, acked, done) = (Arc::clone(&store), Arc::clone(&acked), Arc::clone(&done));
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(Ordering::SeqCst) {
                let floor = acked.load(Ordering::SeqCst);
                let (range, limit) = match (reads + r) % 3 {
                    0 | 1 => (SeqRange::Before(u64::MAX), 51),
                    _ => (SeqRange::After(floor.saturating_sub(5)), 50),
                };
                let page: Vec<u64> =
                    store.history(group, b, range, limit).await.unwrap().unwrap().iter().map(|m| m.seq).collect();
                let last = *page.last().expect("never empty");
                assert!(last >= floor, "{range:?}: page ends at {last}, but {floor} was acknowledged before the read");
                assert!(page.windows(2).all(|w| w[1] == w[0] + 1), "{range:?}: a gap in {page:?}");
                if let SeqRange::Before(_) = range {
                    assert_eq!(page.len() as u64, last.min(51), "{range:?}: {page:?}");
                } else {
                    assert_eq!(page[0], floor.saturating_sub(5) + 1, "{range:?}: {page:?}");
                }
                reads += 1;
            }
            reads
        }));
    }
    for i in START + 1..=START + APPENDS {
        let appended = store.append(message(group, a, &format!("m{i}"), i as i64)).await.unwrap();
        assert_eq!(appended.message.seq, i);
        acked.store(i, Ordering::SeqCst);
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    let newest = store.history(group, b, SeqRange::Before(u64::MAX), 51).await.unwrap().unwrap();
    let last = START + APPENDS;
    assert_eq!(newest.iter().map(|m| m.seq).collect::<Vec<_>>(), (last - 50..=last).collect::<Vec<_>>());
    assert_eq!(newest.last().unwrap().client_msg_id, format!("m{last}"));
}

/// A member who reads a conversation again and again, then leaves, and
/// joins again, while other readers of it keep reading: a read made wholly
/// after a leave returned (and before the next join began) is refused, and
/// one made wholly after a join returned (and before the next leave began)
/// is answered. (The SQLite store answers known readers from memory without
/// looking at the table; a leave must end that.)
pub async fn a_member_who_left_reads_no_more_however_often_read_before(backend: &impl Backend) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    // Counts the reader's changes: `step % 4` is 0 a member, 1 leaving, 2 left, 3 joining.
    const MEMBER: u64 = 0;
    const LEFT: u64 = 2;
    let store = backend.open().await;
    let (a, b, _, group) = alice_bob_and_a_group(&*store, 11).await;
    for i in 1..=60 {
        store.append(message(group, a, &format!("m{i}"), i)).await.unwrap();
    }
    let step = Arc::new(AtomicU64::new(MEMBER));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..3u64 {
        let (store, step, done) = (Arc::clone(&store), Arc::clone(&step), Arc::clone(&done));
        readers.push(tokio::spawn(async move {
            let (mut pages, mut refused) = (0u32, 0u32);
            while !done.load(Ordering::SeqCst) {
                let before = step.load(Ordering::SeqCst);
                let range = if r == 2 { SeqRange::After(10) } else { SeqRange::Before(u64::MAX) };
                let page = store.history(group, b, range, 50).await.unwrap();
                let still = step.load(Ordering::SeqCst) == before;
                match (still, before % 4, page) {
                    (true, LEFT, Some(p)) => panic!("a page of {} messages after the leave returned", p.len()),
                    (true, MEMBER, None) => panic!("refused after the join returned"),
                    (_, _, Some(_)) => pages += 1,
                    (_, _, None) => refused += 1,
                }
                // Another member keeps the conversation's cache in use.
                assert!(store.history(group, a, SeqRange::Before(u64::MAX), 50).await.unwrap().is_some());
            }
            (pages, refused)
        }));
    }
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        step.fetch_add(1, Ordering::SeqCst);
        store.leave(group, b).await.unwrap();
        step.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        step.fetch_add(1, Ordering::SeqCst);
        assert_eq!(store.add_members(group, a, &[b]).await.unwrap(), vec![b]);
        step.fetch_add(1, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    let (mut pages, mut refused) = (0, 0);
    for r in readers {
        let (p, n) = r.await.unwrap();
        pages += p;
        refused += n;
    }
    assert!(pages > 0 && refused > 0, "{pages} pages, {refused} refusals: the readers exercised too little");
}
