//! Sending, receiving, acknowledging: ordering, idempotency, retries,
//! cursors across reconnects, devices, flow control and history.

mod common;

use common::{Seen, Server};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test]
async fn send_is_stored_pushed_and_acknowledged() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    let sent = wa.send_text_message(&conv, "c1", "hello").await;
    assert_eq!(sent["seq"], 1);
    assert_eq!(sent["conversation_id"], conv.as_str());
    assert!(sent["message_id"].as_str().unwrap().parse::<u64>().is_ok());
    assert!(sent["ts"].as_i64().unwrap() > 1_600_000_000_000);
    let m = wb.expect("message").await;
    for key in ["conversation_id", "message_id", "seq", "sender_id", "client_msg_id", "ts"] {
        assert_eq!(m[key], if key == "sender_id" { json!(a.id) } else { sent[key].clone() }, "{key}");
    }
    assert_eq!(m["content"], json!({"type": "text", "text": "hello"}));
    // The sender's own device gets `sent`, not the message.
    wa.expect_no("message", Duration::from_millis(300)).await;
    // Seqs follow the order one connection sent in.
    for i in 2..=20 {
        wa.send(json!({"type": "send", "client_msg_id": format!("c{i}"), "conversation_id": conv,
                       "content": {"type": "text", "text": format!("m{i}")}}))
            .await;
    }
    for i in 2..=20u64 {
        let sent = wa.expect("sent").await;
        assert_eq!(
            (sent["client_msg_id"].as_str().unwrap(), sent["seq"].as_u64().unwrap()),
            (format!("c{i}").as_str(), i)
        );
        let m = wb.expect("message").await;
        assert_eq!(m["seq"], i);
        assert_eq!(m["content"]["text"], format!("m{i}"));
    }
    wb.ack(&conv, 20).await;
    // Acked: a reconnect pushes nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    wb.close().await;
    let mut wb = s.connect(&b).await;
    wb.expect_no("message", Duration::from_millis(500)).await;
}

/// A send under way when its HTTP client hangs up (the server drops the
/// request's handler then) is still stored and pushed (`finish.rs`). The
/// test depends on that drop: should the server stop dropping handlers, it
/// would pass without testing anything; without `Finish` it fails.
#[tokio::test]
async fn a_message_whose_http_sender_hung_up_while_it_was_stored_is_still_pushed() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wb = s.connect(&b).await;
    // Hold the database's write lock from outside, so that the server's
    // commit waits (its busy timeout is 5 s) while the sender hangs up.
    let db = rusqlite::Connection::open(s.dir.path().join("banter.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let body = json!({"client_msg_id": "hung-up", "content": {"type": "text", "text": "still here"}}).to_string();
    let request = format!(
        "POST /v1/conversations/{conv}/messages HTTP/1.1\r\nHost: banter\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        a.token,
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes()).await.unwrap();
    // Time for the request to reach the store's queue (a few milliseconds
    // on an idle machine), then the client goes, and the server sees it go.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.execute_batch("ROLLBACK").unwrap();
    let m = wb.expect("message").await;
    assert_eq!(m["client_msg_id"], "hung-up");
    assert_eq!(m["content"]["text"], "still here");
    assert_eq!(s.history(&b, &conv).await.len(), 1);
}

/// A reader moves to the sending lane with its first `send`, and back after
/// a quiet spell (`ws/answers.rs`); sends pipelined across both moves are
/// all stored and answered in the order they were written.
#[tokio::test]
async fn sends_keep_their_order_while_the_reader_changes_lanes() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    s.wait_for_gauge("readers_sending", 0).await;
    let send = |i: u64| {
        json!({"type": "send", "client_msg_id": format!("c{i}"), "conversation_id": conv,
               "content": {"type": "text", "text": format!("m{i}")}})
    };
    for i in 1..=10 {
        wa.send(send(i)).await;
    }
    s.wait_for_gauge("readers_sending", 1).await;
    // Quiet for longer than the reader waits before it moves back; a
    // heartbeat moves it, and the sends right behind it move it again.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    wa.send(json!({"type": "heartbeat"})).await;
    for i in 11..=20 {
        wa.send(send(i)).await;
    }
    for i in 1..=20u64 {
        let sent = wa.expect("sent").await;
        assert_eq!(
            (sent["client_msg_id"].as_str().unwrap(), sent["seq"].as_u64().unwrap()),
            (format!("c{i}").as_str(), i)
        );
        assert_eq!(wb.expect("message").await["seq"], i);
    }
    s.wait_for_gauge("readers_sending", 1).await;
    // A connection that ends leaves the lane.
    wa.close().await;
    s.wait_for_gauge("readers_sending", 0).await;
}

#[tokio::test]
async fn sends_past_the_in_flight_limit_are_all_answered_in_order() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    // More than twice the sends one connection may have in flight, without
    // waiting: the server stops reading at the limit and carries on as
    // answers go out.
    let n = 2 * banter_server::ws::answers::MAX_PENDING_SENDS as u64 + 100;
    for i in 1..=n {
        wa.send(json!({"type": "send", "client_msg_id": format!("p{i}"), "conversation_id": conv,
                       "content": {"type": "text", "text": format!("m{i}")}}))
            .await;
    }
    for i in 1..=n {
        let sent = wa.expect("sent").await;
        assert_eq!(
            (sent["client_msg_id"].as_str().unwrap(), sent["seq"].as_u64().unwrap()),
            (format!("p{i}").as_str(), i)
        );
    }
    assert_eq!(s.history(&b, &conv).await.len() as u64, n);
}

#[tokio::test]
async fn retried_client_msg_id_stores_nothing_new() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    let first = wa.send_text_message(&conv, "same", "original").await;
    // Same id on the same connection, with other content.
    let again = wa.send_text_message(&conv, "same", "changed").await;
    assert_eq!(first, again);
    // Same id from another device of the sender, and over HTTP.
    let a2 = s.login("alice").await;
    let mut wa2 = s.connect(&a2).await;
    let third = wa2.send_text_message(&conv, "same", "third").await;
    assert_eq!(first["message_id"], third["message_id"]);
    let (status, http) = s
        .http()
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&a.token),
            json!({"client_msg_id": "same", "content": {"type": "text", "text": "x"}}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!((http["message_id"].clone(), http["seq"].clone()), (first["message_id"].clone(), first["seq"].clone()));
    assert_eq!(http["content"]["text"], "original");
    let m = wb.expect("message").await;
    assert_eq!(m["content"]["text"], "original");
    wb.expect_no("message", Duration::from_millis(400)).await;
    assert_eq!(s.history(&b, &conv).await.len(), 1);
}

#[tokio::test]
async fn unacknowledged_messages_are_pushed_again() {
    let s = Server::start(&["--ack-timeout-ms", "300"]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    wa.send_text_message(&conv, "c1", "one").await;
    wa.send_text_message(&conv, "c2", "two").await;
    let m1 = wb.expect("message").await;
    let m2 = wb.expect("message").await;
    wb.ack(&conv, 1).await;
    // No ack for seq 2: it comes again, same message_id, and keeps coming until acked.
    let r1 = wb.expect("message").await;
    assert_eq!((r1["seq"].clone(), r1["message_id"].clone()), (m2["seq"].clone(), m2["message_id"].clone()));
    let r2 = wb.expect("message").await;
    assert_eq!(r2["message_id"], m2["message_id"]);
    assert_ne!(m1["message_id"], m2["message_id"]);
    wb.ack(&conv, 2).await;
    // Drain what was already in flight, then silence.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Some(Seen::Frame(_)) = wb.next_within(Duration::from_millis(50)).await {}
    wb.expect_no("message", Duration::from_millis(900)).await;
}

#[tokio::test]
async fn backlog_follows_cursors_across_reconnects_and_devices() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let b2 = s.login("bob").await;
    let mut wa = s.connect(&a).await;
    wa.send_numbered(&conv, 1..=5).await;
    // Device 1 receives all five in order, acks three.
    let mut wb = s.connect(&b).await;
    wb.expect_seqs(1..=5).await;
    wb.ack(&conv, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    wb.close().await;
    // Reconnecting pushes only what lies above the cursor.
    let mut wb = s.connect(&b).await;
    assert_eq!(wb.expect("message").await["seq"], 4);
    assert_eq!(wb.expect("message").await["seq"], 5);
    wb.ack(&conv, 5).await;
    // Device 2 has its own cursor: it gets all five.
    let mut wb2 = s.connect(&b2).await;
    wb2.expect_seqs(1..=5).await;
    // A device created now starts at the current last_seq.
    let b3 = s.login("bob").await;
    let mut wb3 = s.connect(&b3).await;
    wb3.expect_no("message", Duration::from_millis(400)).await;
    wa.send_text_message(&conv, "c6", "m6").await;
    assert_eq!(wb3.expect("message").await["seq"], 6);
    assert_eq!(wb.expect("message").await["seq"], 6);
}

#[tokio::test]
async fn an_ack_sent_just_before_closing_is_stored() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    wa.send_numbered(&conv, 1..=3).await;
    let mut wb = s.connect(&b).await;
    wb.expect_seqs(1..=3).await;
    // Acks are stored in batches, at most every 25 ms: the first starts an
    // interval, the second waits in it, and its connection closes at once.
    // Waiting or not, it is stored before the connection is done.
    wb.ack(&conv, 1).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    wb.ack(&conv, 2).await;
    wb.close().await;
    s.wait_for_connections(1).await;
    let mut wb = s.connect(&b).await;
    assert_eq!(wb.expect("message").await["seq"], 3);
}

#[tokio::test]
async fn second_connection_of_a_device_replaces_the_first_with_4002() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut first = s.connect(&b).await;
    let mut second = s.connect(&b).await;
    assert_eq!(first.expect_close().await, Some(4002));
    let mut wa = s.connect(&a).await;
    wa.send_text_message(&conv, "c1", "hi").await;
    assert_eq!(second.expect("message").await["seq"], 1);
}

/// A connection replaced while its sends are in flight stops reading, and
/// answers every send it read before it closes: each message stored from it
/// got its `sent` there, and none was answered without being stored.
#[tokio::test]
async fn a_replaced_connection_answers_every_send_it_stored_before_closing() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut first = s.connect(&a).await;
    for i in 1..=1_000 {
        first
            .send(json!({"type": "send", "client_msg_id": format!("c{i}"), "conversation_id": conv,
                         "content": {"type": "text", "text": "x"}}))
            .await;
    }
    let _second = s.connect(&a).await;
    let mut answered = HashSet::new();
    loop {
        match first.next_within(common::WAIT).await {
            Some(Seen::Frame(v)) if v["type"] == "sent" => {
                assert!(answered.insert(v["client_msg_id"].as_str().unwrap().to_owned()), "answered twice: {v}");
            }
            Some(Seen::Frame(v)) => assert_ne!(v["type"], "error", "{v}"),
            Some(Seen::Closed(code)) => {
                assert_eq!(code, Some(4002));
                break;
            }
            None => panic!("the replaced connection did not close"),
        }
    }
    let stored: HashSet<String> =
        s.history(&a, &conv).await.iter().map(|m| m["client_msg_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(stored, answered);
}

#[tokio::test]
async fn http_send_reaches_every_device_including_the_senders() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    let (status, m) = s
        .http()
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&a.token),
            json!({"client_msg_id": "h1", "content": {"type": "text", "text": "via http"}}),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    assert_eq!(m["seq"], 1);
    assert_eq!(wa.expect("message").await["message_id"], m["message_id"]);
    assert_eq!(wb.expect("message").await["message_id"], m["message_id"]);
}

#[tokio::test]
async fn slow_device_gets_at_most_the_window_in_flight() {
    let s = Server::start(&["--delivery-window", "64"]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    for i in 1..=150 {
        wa.send(json!({"type": "send", "client_msg_id": format!("c{i}"), "conversation_id": conv, "content": {"type": "text", "text": "x"}})).await;
    }
    for _ in 1..=150 {
        wa.expect("sent").await;
    }
    let mut wb = s.connect(&b).await;
    let welcome_window = 64;
    let mut got = Vec::new();
    while let Some(Seen::Frame(v)) = wb.next_within(Duration::from_millis(500)).await {
        if v["type"] == "message" {
            got.push(v["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(got, (1..=welcome_window).collect::<Vec<u64>>());
    // Each ack opens the window again.
    wb.ack(&conv, 64).await;
    wb.expect_seqs(65..=128).await;
    wb.ack(&conv, 128).await;
    wb.expect_seqs(129..=150).await;
}

#[tokio::test]
async fn history_pages_before_and_after() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    wa.send_numbered(&conv, 1..=60).await;
    let http = s.http();
    let seqs =
        |v: &Value| v["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect::<Vec<_>>();
    let (st, page) = http.get(&format!("/v1/conversations/{conv}/messages"), Some(&b.token)).await;
    assert_eq!(st, 200);
    assert_eq!(seqs(&page), (11..=60).collect::<Vec<_>>());
    assert_eq!(page["has_more"], true);
    let (_, page) = http.get(&format!("/v1/conversations/{conv}/messages?before=11&limit=20"), Some(&b.token)).await;
    assert_eq!(seqs(&page), (1..=10).collect::<Vec<_>>());
    assert_eq!(page["has_more"], false);
    let (_, page) = http.get(&format!("/v1/conversations/{conv}/messages?after=55&limit=3"), Some(&b.token)).await;
    assert_eq!(seqs(&page), vec![56, 57, 58]);
    assert_eq!(page["has_more"], true);
    let (_, page) = http.get(&format!("/v1/conversations/{conv}/messages?after=0&limit=1000"), Some(&b.token)).await;
    assert_eq!(seqs(&page).len(), 60);
    let (st, body) = http.get(&format!("/v1/conversations/{conv}/messages?limit=abc"), Some(&b.token)).await;
    assert_eq!((st, body["error"]["code"].as_str()), (400, Some("invalid_request")));
    // Not a member, or no such conversation: the same 404.
    let c = s.user("carol").await;
    let (st, body) = http.get(&format!("/v1/conversations/{conv}/messages"), Some(&c.token)).await;
    assert_eq!((st, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (st, _) = http.get("/v1/conversations/424242/messages", Some(&c.token)).await;
    assert_eq!(st, 404);
    let (st, _) = http.get(&format!("/v1/conversations/{conv}"), Some(&c.token)).await;
    assert_eq!(st, 404);
}
