//! Groups on both sides of the fan-out threshold.

mod common;

use common::Server;
use serde_json::json;
use std::time::Duration;

/// Users `user0`..`user{n-1}` and their group, created by `user0`.
async fn group_of(s: &Server, n: usize) -> (Vec<common::User>, String) {
    let mut users = Vec::new();
    for i in 0..n {
        users.push(s.user(&format!("user{i}")).await);
    }
    let refs: Vec<&common::User> = users[1..].iter().collect();
    let conv = s.group(&users[0], &refs).await;
    (users, conv)
}

async fn group_delivery(threshold: &str) {
    let s = Server::start(&["--fanout-sync-threshold", threshold]).await;
    let (users, conv) = group_of(&s, 6).await;
    let second = s.login("user3").await;
    let mut sockets = Vec::new();
    for u in users.iter().chain(std::iter::once(&second)) {
        sockets.push(s.connect(u).await);
    }
    // Three members send from devices of their own, which get `sent` and not the message.
    let mut senders = Vec::new();
    for u in &users[..3] {
        senders.push(s.connect(&s.login(&u.name).await).await);
    }
    for i in 1..=30u64 {
        senders[(i % 3) as usize]
            .send(json!({"type": "send", "client_msg_id": format!("m{i}"), "conversation_id": conv,
                         "content": {"type": "text", "text": format!("{i}")}}))
            .await;
    }
    // A sending device gets a `sent` for each of its own, and everyone else's messages in seq order.
    for (j, w) in senders.iter_mut().enumerate() {
        let (mut sent, mut seqs) = (0, Vec::new());
        while let Some(common::Seen::Frame(v)) = w.next_within(Duration::from_millis(300)).await {
            match v["type"].as_str() {
                Some("sent") => sent += 1,
                Some("message") => {
                    let i: u64 = v["client_msg_id"].as_str().unwrap()[1..].parse().unwrap();
                    assert_ne!((i % 3) as usize, j, "own message came back: {v}");
                    seqs.push(v["seq"].as_u64().unwrap());
                }
                _ => {}
            }
        }
        assert_eq!((sent, seqs.len()), (10, 20), "sender {j}");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
    // Every other device of every member gets every message, once, in seq order.
    for (k, ws) in sockets.iter_mut().enumerate() {
        let mut seqs = Vec::new();
        let expected: Vec<u64> = (1..=30u64).collect();
        while seqs.len() < expected.len() {
            let m = ws.expect("message").await;
            seqs.push(m["seq"].as_u64().unwrap());
        }
        assert_eq!(seqs, expected, "device {k}");
        ws.ack(&conv, 30).await;
        ws.expect_no("message", Duration::from_millis(100)).await;
    }
    let (_, c) = s.http().get(&format!("/v1/conversations/{conv}"), Some(&users[0].token)).await;
    assert_eq!(c["member_count"], 6);
    assert_eq!(c["members"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn small_group_is_fanned_out_on_the_send_path() {
    group_delivery("500").await;
}

#[tokio::test]
async fn large_group_goes_through_the_fanout_queue() {
    group_delivery("3").await;
}

#[tokio::test]
async fn no_receipts_or_typing_above_the_threshold() {
    let s = Server::start(&["--fanout-sync-threshold", "2"]).await;
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let conv = s.group(&a, &[&b, &c]).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    wa.send_text_message(&conv, "m1", "hi").await;
    wb.expect("message").await;
    wb.ack(&conv, 1).await;
    wb.send(json!({"type": "typing", "conversation_id": conv})).await;
    wb.send(json!({"type": "read", "conversation_id": conv, "seq": 1})).await;
    wa.expect_no("receipt", Duration::from_millis(400)).await;
    wa.expect_no("typing", Duration::from_millis(100)).await;
}

/// Above the threshold a device's acks may wait for its connection's next
/// turn (no sender waits for a receipt); they must still count before the
/// ack timeout decides anything, and when the connection ends.
#[tokio::test]
async fn large_group_acks_count_when_nothing_else_happens() {
    let s = Server::start(&["--fanout-sync-threshold", "2", "--ack-timeout-ms", "300"]).await;
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let conv = s.group(&a, &[&b, &c]).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    wa.send_text_message(&conv, "m1", "one").await;
    assert_eq!(wb.expect("message").await["seq"], 1);
    wb.ack(&conv, 1).await;
    // Well past the ack timeout, with nothing else to wake the connection:
    // not pushed again, nor even counted as timed out.
    wb.expect_no("message", Duration::from_millis(1_000)).await;
    assert_eq!(s.metric("delivery_retries_total").await, Some(0.0));
    wa.send_text_message(&conv, "m2", "two").await;
    assert_eq!(wb.expect("message").await["seq"], 2);
    wb.ack(&conv, 2).await;
    wb.close().await;
    // The ack was stored when the connection ended (once it has ended, which
    // the count of connections tells): the next one starts after it.
    s.wait_for_connections(1).await;
    let mut again = s.connect(&b).await;
    again.expect_no("message", Duration::from_millis(500)).await;
    wa.send_text_message(&conv, "m3", "three").await;
    assert_eq!(again.expect("message").await["seq"], 3);
}

#[tokio::test]
async fn a_large_group_past_the_fanout_bound_is_delivered_from_the_store_in_order() {
    // Room for a single push: while one message's pushes are unhandled,
    // the next ones find no room, and the fan-out reads them back.
    let s = Server::start(&["--fanout-sync-threshold", "2", "--fanout-max-pushes", "1"]).await;
    let (users, conv) = group_of(&s, 4).await;
    let second = s.login("user2").await;
    let mut sockets = Vec::new();
    for u in users[1..].iter().chain(std::iter::once(&second)) {
        sockets.push(s.connect(u).await);
    }
    let mut sender = s.connect(&users[0]).await;
    const N: u64 = 60;
    for i in 1..=N {
        sender
            .send(json!({"type": "send", "client_msg_id": format!("m{i}"), "conversation_id": conv,
                         "content": {"type": "text", "text": format!("{i}")}}))
            .await;
    }
    for i in 1..=N {
        let sent = sender.expect("sent").await;
        assert_eq!(sent["client_msg_id"], format!("m{i}"));
        assert_eq!(sent["seq"], i);
    }
    for (k, ws) in sockets.iter_mut().enumerate() {
        let mut seqs = Vec::new();
        while seqs.len() < N as usize {
            let m = ws.expect("message").await;
            seqs.push(m["seq"].as_u64().unwrap());
            // Acks come as messages do, so the window never decides the order.
            ws.ack(&conv, *seqs.last().unwrap()).await;
        }
        assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "device {k}");
    }
    for ws in &mut sockets {
        ws.expect_no("message", Duration::from_millis(200)).await;
    }
    let from_store = s.metric("fanout_from_store_total").await.unwrap_or(0.0);
    assert!(from_store > 0.0, "no message was read back by the fan-out; the bound was never reached");
    // Caught up, the conversation takes the queue again.
    s.wait_for_gauge("fanout_conversations_behind", 0).await;
    sender
        .send(json!({"type": "send", "client_msg_id": "last", "conversation_id": conv,
                     "content": {"type": "text", "text": "last"}}))
        .await;
    assert_eq!(sender.expect("sent").await["seq"], N + 1);
    for ws in &mut sockets {
        assert_eq!(ws.expect("message").await["seq"], N + 1);
    }
}
