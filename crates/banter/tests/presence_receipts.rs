//! Presence with heartbeats, timeout and grace; typing; receipts; conversation events.

mod common;

use common::{Seen, Server};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn subscribe_answers_at_once_then_sends_changes_after_the_grace() {
    let s = Server::start(&["--presence-grace-ms", "300"]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let mut wa = s.connect(&a).await;
    wa.send(json!({"type": "presence_subscribe", "user_ids": [b.id]})).await;
    let p = wa.expect("presence").await;
    assert_eq!((p["user_id"].as_str(), p["status"].as_str()), (Some(b.id.as_str()), Some("offline")));
    assert!(p["last_seen"].is_null());
    let wb = s.connect(&b).await;
    let p = wa.expect("presence").await;
    assert_eq!(p["status"], "online");
    // A quick reconnect within the grace does not flap.
    wb.close().await;
    let wb = s.connect(&b).await;
    wa.expect_no("presence", Duration::from_millis(600)).await;
    // A real disconnect: offline once the grace has passed.
    wb.close().await;
    let p = wa.expect("presence").await;
    assert_eq!(p["status"], "offline");
    assert!(p["last_seen"].as_i64().unwrap() > 0);
    let (st, body) = s.http().get(&format!("/v1/presence?user_ids={},{}", a.id, b.id), Some(&a.token)).await;
    assert_eq!(st, 200);
    assert_eq!(body["presence"][0]["status"], "online");
    assert_eq!(body["presence"][1]["status"], "offline");
}

#[tokio::test]
async fn direct_peers_are_subscribed_automatically() {
    let s = Server::start(&["--presence-grace-ms", "100"]).await;
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    // No presence frame at connect for automatic subscriptions.
    wa.expect_no("presence", Duration::from_millis(200)).await;
    let wc = s.connect(&c).await; // not a peer: nothing
    let wb = s.connect(&b).await;
    let p = wa.expect("presence").await;
    assert_eq!((p["user_id"].as_str(), p["status"].as_str()), (Some(b.id.as_str()), Some("online")));
    wb.close().await;
    let p = wa.expect("presence").await;
    assert_eq!((p["user_id"].as_str(), p["status"].as_str()), (Some(b.id.as_str()), Some("offline")));
    wc.close().await;
    wa.expect_no("presence", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn silent_connection_is_closed_with_4003_and_heartbeats_keep_it() {
    let s = Server::start(&["--presence-timeout-ms", "600", "--presence-grace-ms", "100"]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    wa.expect("presence").await; // bob online
                                 // Alice heartbeats; Bob stays silent.
    let beat = tokio::spawn(async move {
        let mut frames = Vec::new();
        for _ in 0..10 {
            wa.send(json!({"type": "heartbeat"})).await;
            while let Some(Seen::Frame(v)) = wa.next_within(Duration::from_millis(150)).await {
                frames.push(v);
            }
        }
        frames
    });
    assert_eq!(wb.expect_close().await, Some(4003));
    let frames = beat.await.unwrap();
    assert_eq!(frames.iter().filter(|f| f["type"] == "heartbeat_ack").count(), 10);
    assert!(frames.iter().all(|f| f["server_time"].is_i64() || f["type"] != "heartbeat_ack"));
    assert!(
        frames.iter().any(|f| f["type"] == "presence" && f["user_id"] == b.id.as_str() && f["status"] == "offline"),
        "{frames:?}"
    );
}

#[tokio::test]
async fn typing_goes_to_the_other_members_only() {
    let s = Server::start(&[]).await;
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let conv = s.group(&a, &[&b, &c]).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    let mut wc = s.connect(&c).await;
    wa.send(json!({"type": "typing", "conversation_id": conv})).await;
    for w in [&mut wb, &mut wc] {
        let t = w.expect("typing").await;
        assert_eq!((t["conversation_id"].as_str(), t["user_id"].as_str()), (Some(conv.as_str()), Some(a.id.as_str())));
    }
    wa.expect_no("typing", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn delivered_and_read_receipts() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let b2 = s.login("bob").await;
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    let mut wb2 = s.connect(&b2).await;
    wa.send_text_message(&conv, "c1", "one").await;
    wa.send_text_message(&conv, "c2", "two").await;
    wb.expect("message").await;
    wb.expect("message").await;
    wb.ack(&conv, 2).await;
    let r = wa.expect("receipt").await;
    assert_eq!(r, json!({"type": "receipt", "conversation_id": conv, "user_id": b.id, "kind": "delivered", "seq": 2}));
    // Another device acking less does not lower it, and sends nothing.
    wb2.expect("message").await;
    wb2.ack(&conv, 1).await;
    wa.expect_no("receipt", Duration::from_millis(300)).await;
    wb.send(json!({"type": "read", "conversation_id": conv, "seq": 2})).await;
    let r = wa.expect("receipt").await;
    assert_eq!((r["kind"].as_str(), r["seq"].as_u64()), (Some("read"), Some(2)));
    // Read state is per user and shows in the conversation object.
    let (_, c) = s.http().get(&format!("/v1/conversations/{conv}"), Some(&b2.token)).await;
    assert_eq!((c["read_seq"].as_u64(), c["last_seq"].as_u64()), (Some(2), Some(2)));
    let (_, c) = s.http().get(&format!("/v1/conversations/{conv}"), Some(&a.token)).await;
    assert_eq!(c["read_seq"], 0);
}

#[tokio::test]
async fn members_hear_about_conversations_they_join() {
    let s = Server::start(&[]).await;
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    let mut wc = s.connect(&c).await;
    let conv = s.direct(&a, &b).await;
    let e = wb.expect("conversation").await;
    assert_eq!(e["conversation"]["conversation_id"], conv.as_str());
    assert_eq!(e["conversation"]["kind"], "direct");
    // The creator does not get an event for its own action.
    wa.expect_no("conversation", Duration::from_millis(200)).await;
    // The existing direct conversation is answered with 200.
    let (st, again) =
        s.http().post("/v1/conversations", Some(&b.token), json!({"kind": "direct", "members": [a.id]})).await;
    assert_eq!((st, again["conversation_id"].as_str()), (200, Some(conv.as_str())));

    let group = s.group(&a, &[&b]).await;
    let e = wb.expect("conversation").await;
    assert_eq!(
        (e["conversation"]["conversation_id"].as_str(), e["conversation"]["title"].as_str()),
        (Some(group.as_str()), Some("g"))
    );
    let sent = wa.send_text_message(&group, "g1", "before carol").await;
    assert_eq!(sent["seq"], 1);
    let (st, _) =
        s.http().post(&format!("/v1/conversations/{group}/members"), Some(&b.token), json!({"user_ids": [c.id]})).await;
    assert_eq!(st, 200);
    let e = wc.expect("conversation").await;
    assert_eq!(e["conversation"]["member_count"], 3);
    // Carol starts at the seq of her arrival: she is pushed only what comes after.
    wa.send_text_message(&group, "g2", "after carol").await;
    let m = wc.expect("message").await;
    assert_eq!(m["seq"], 2);
    // But the history is open to her.
    assert_eq!(s.history(&c, &group).await.len(), 2);
    // Leaving: 204, then 404 for the conversation, and no more pushes.
    let (st, _) = s.http().delete(&format!("/v1/conversations/{group}/members/me"), Some(&c.token)).await;
    assert_eq!(st, 204);
    let (st, _) = s.http().get(&format!("/v1/conversations/{group}"), Some(&c.token)).await;
    assert_eq!(st, 404);
    wa.send_text_message(&group, "g3", "after carol left").await;
    wc.expect_no("message", Duration::from_millis(300)).await;
    let (_, list) = s.http().get("/v1/conversations", Some(&a.token)).await;
    let ids: Vec<&str> =
        list["conversations"].as_array().unwrap().iter().map(|c| c["conversation_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![group.as_str(), conv.as_str()], "most recent activity first");
    while let Some(Seen::Frame(_)) = wb.next_within(Duration::from_millis(10)).await {}
}
