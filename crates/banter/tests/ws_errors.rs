//! Bad input gets its error code, costs nothing, and leaves other connections alone.

mod common;

use common::{Seen, Server, Ws};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn hello_must_come_first_with_a_valid_token() {
    let s = Server::start(&[]).await;
    let mut ws = Ws::open(s.addr).await;
    ws.send(json!({"type": "hello", "token": "bogus"})).await;
    let e = ws.next().await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("unauthorized")));
    assert_eq!(ws.expect_close().await, Some(4001));

    let mut ws = Ws::open(s.addr).await;
    ws.send(json!({"type": "heartbeat"})).await;
    assert_eq!(ws.next().await["code"], "unauthorized");
    assert_eq!(ws.expect_close().await, Some(4001));

    let mut ws = Ws::open(s.addr).await;
    ws.send_text("not json").await;
    assert_eq!(ws.next().await["code"], "unauthorized");
    assert_eq!(ws.expect_close().await, Some(4001));
}

#[tokio::test]
async fn welcome_carries_the_session_parameters() {
    let s =
        Server::start(&["--ack-timeout-ms", "1234", "--presence-timeout-ms", "30000", "--fanout-sync-threshold", "40"])
            .await;
    let a = s.user("alice").await;
    let mut ws = Ws::open(s.addr).await;
    ws.send(json!({"type": "hello", "token": a.token})).await;
    let w = ws.expect("welcome").await;
    assert_eq!(w["ack_timeout_ms"], 1234);
    assert_eq!(w["heartbeat_interval_ms"], 10000);
    assert!(w["server_time"].as_i64().unwrap() > 0);
    assert_eq!(w["window"], 256);
    assert_eq!(w["max_frame_bytes"], 65536);
    assert_eq!(w["receipts_up_to"], 40);
    assert_eq!(w["lazy_ack_ms"], 123);
}

#[tokio::test]
async fn every_bad_frame_gets_its_code_and_the_connection_goes_on() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("{oops".into(), "invalid_frame", None),
        (json!({"type": "dance"}).to_string(), "invalid_frame", Some("dance")),
        (json!({"no_type": 1}).to_string(), "invalid_frame", None),
        (json!({"type": "ack", "conversation_id": conv, "seq": "one"}).to_string(), "invalid_frame", Some("ack")),
        (json!({"type": "send", "client_msg_id": "m1", "conversation_id": conv}).to_string(), "invalid_frame", Some("m1")),
        (json!({"type": "send", "client_msg_id": "", "conversation_id": conv, "content": {"type": "text", "text": "x"}}).to_string(), "invalid_frame", Some("")),
        (json!({"type": "send", "client_msg_id": "x".repeat(65), "conversation_id": conv, "content": {"type": "text", "text": "x"}}).to_string(), "invalid_frame", None),
        (json!({"type": "send", "client_msg_id": "m2", "conversation_id": "999999", "content": {"type": "text", "text": "x"}}).to_string(), "not_found", Some("m2")),
        (json!({"type": "send", "client_msg_id": "m3", "conversation_id": "abc", "content": {"type": "text", "text": "x"}}).to_string(), "not_found", Some("m3")),
        (json!({"type": "send", "client_msg_id": "m4", "conversation_id": conv, "content": {"type": "text", "text": ""}}).to_string(), "invalid_content", Some("m4")),
        (json!({"type": "send", "client_msg_id": "m5", "conversation_id": conv, "content": {"text": "no type"}}).to_string(), "invalid_content", Some("m5")),
        (json!({"type": "send", "client_msg_id": "m6", "conversation_id": conv, "content": "string"}).to_string(), "invalid_content", Some("m6")),
        (json!({"type": "send", "client_msg_id": "m7", "conversation_id": conv, "content": {"type": "text", "text": "x".repeat(16 * 1024 + 1)}}).to_string(), "too_large", Some("m7")),
        (json!({"type": "ack", "conversation_id": "999999", "seq": 1}).to_string(), "not_found", Some("ack")),
        (json!({"type": "read", "conversation_id": "999999", "seq": 1}).to_string(), "not_found", Some("read")),
        (json!({"type": "typing", "conversation_id": "999999"}).to_string(), "not_found", Some("typing")),
        (json!({"type": "presence_subscribe", "user_ids": ["x"]}).to_string(), "invalid_frame", Some("presence_subscribe")),
        (json!({"type": "hello", "token": a.token}).to_string(), "invalid_frame", Some("hello")),
    ];
    for (frame, code, reference) in &cases {
        wa.send_text(frame).await;
        let e = wa.expect("error").await;
        assert_eq!(e["code"], *code, "{frame}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(r) = reference {
            assert_eq!(e["ref"], *r, "{frame}: {e}");
        }
    }
    // A text of exactly 16 KiB is fine; other content types are relayed as given.
    wa.send_text_message(&conv, "ok1", &"y".repeat(16 * 1024)).await;
    wa.send(json!({"type": "send", "client_msg_id": "ok2", "conversation_id": conv,
                   "content": {"type": "ciphertext", "alg": "x", "body": [1, 2, 3]}}))
        .await;
    wa.expect("sent").await;
    assert_eq!(wb.expect("message").await["seq"], 1);
    let m = wb.expect("message").await;
    assert_eq!(m["content"], json!({"type": "ciphertext", "alg": "x", "body": [1, 2, 3]}));
    // Nothing bad was stored.
    assert_eq!(s.history(&b, &conv).await.len(), 2);
}

#[tokio::test]
async fn a_member_list_is_not_a_way_in() {
    let s = Server::start(&[]).await;
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let conv = s.direct(&a, &b).await;
    let mut wc = s.connect(&c).await;
    wc.send(json!({"type": "send", "client_msg_id": "x", "conversation_id": conv, "content": {"type": "text", "text": "intrude"}})).await;
    assert_eq!(wc.expect("error").await["code"], "not_found");
    let (st, body) = s
        .http()
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&c.token),
            json!({"client_msg_id": "y", "content": {"type": "text", "text": "x"}}),
        )
        .await;
    assert_eq!((st, body["error"]["code"].as_str()), (404, Some("not_found")));
    assert!(s.history(&a, &conv).await.is_empty());
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection_with_1009() {
    let s = Server::start(&["--max-frame-bytes", "4096"]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    wa.send_text(&format!("{{\"type\":\"heartbeat\",\"pad\":\"{}\"}}", "x".repeat(5000))).await;
    assert_eq!(wa.expect_close().await, Some(1009));
    // Before the hello too.
    let mut early = Ws::open(s.addr).await;
    early.send_text(&"y".repeat(5000)).await;
    assert_eq!(early.expect_close().await, Some(1009));
    // A content that would not fit in one frame is refused, over HTTP as well.
    let big = json!({"client_msg_id": "big", "content": {"type": "blob", "data": "z".repeat(4000)}});
    let (st, body) = s.http().post(&format!("/v1/conversations/{conv}/messages"), Some(&b.token), big).await;
    assert_eq!((st, body["error"]["code"].as_str()), (413, Some("too_large")));
    wb.send_text_message(&conv, "still", "fine").await;
}

#[tokio::test]
async fn a_stream_of_bad_frames_is_closed_with_1008() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    for _ in 0..40 {
        wa.send_text("garbage").await;
    }
    assert_eq!(wa.expect_close().await, Some(1008));
    wb.send_text_message(&conv, "ok", "unaffected").await;
}

#[tokio::test]
async fn frames_over_the_rate_limit_are_refused() {
    let s = Server::start(&["--rate-limit-per-sec", "5", "--rate-limit-burst", "10"]).await;
    let a = s.user("alice").await;
    let mut wa = s.connect(&a).await;
    for _ in 0..30 {
        wa.send(json!({"type": "heartbeat"})).await;
    }
    let (mut acks, mut limited) = (0, 0);
    while let Some(Seen::Frame(v)) = wa.next_within(Duration::from_millis(500)).await {
        match v["type"].as_str() {
            Some("heartbeat_ack") => acks += 1,
            Some("error") => {
                assert_eq!(v["code"], "rate_limited");
                assert_eq!(v["ref"], "heartbeat");
                limited += 1
            }
            _ => {}
        }
    }
    assert!((10..=12).contains(&acks), "acks {acks}");
    assert_eq!(acks + limited, 30);
    // The connection still works once the bucket refills.
    tokio::time::sleep(Duration::from_millis(400)).await;
    wa.send(json!({"type": "heartbeat"})).await;
    wa.expect("heartbeat_ack").await;
}

#[tokio::test]
async fn http_errors_use_the_catalogue() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let http = s.http();
    let (st, body) = http.post("/v1/conversations", Some(&a.token), json!({"kind": "direct", "members": [a.id]})).await;
    assert_eq!((st, body["error"]["code"].as_str()), (400, Some("invalid_request")));
    let (st, body) =
        http.post("/v1/conversations", Some(&a.token), json!({"kind": "direct", "members": [b.id, a.id]})).await;
    assert_eq!((st, body["error"]["code"].as_str()), (400, Some("invalid_request")));
    let (st, body) =
        http.post("/v1/conversations", Some(&a.token), json!({"kind": "direct", "members": ["424242"]})).await;
    assert_eq!((st, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (st, _) = http.post("/v1/conversations", Some(&a.token), json!({"kind": "circle", "members": []})).await;
    assert_eq!(st, 400);
    let conv = s.direct(&a, &b).await;
    let (st, body) =
        http.post(&format!("/v1/conversations/{conv}/members"), Some(&a.token), json!({"user_ids": [b.id]})).await;
    assert_eq!((st, body["error"]["code"].as_str()), (409, Some("conflict")));
    let (st, body) = http
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&a.token),
            json!({"client_msg_id": "m", "content": {"type": "text", "text": ""}}),
        )
        .await;
    assert_eq!((st, body["error"]["code"].as_str()), (400, Some("invalid_content")));
    let (st, body) = http.get("/v1/nowhere", Some(&a.token)).await;
    assert_eq!((st, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (st, body) = http.delete("/v1/users", Some(&a.token)).await;
    assert_eq!((st, body["error"]["code"].as_str()), (400, Some("invalid_request")));
    let (st, body) = http.get("/v1/ws", None).await;
    assert_eq!((st, body["error"]["code"].as_str()), (400, Some("invalid_request")));
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_unavailable() {
    let s = Server::start(&["--max-connections", "1"]).await;
    let a = s.user("alice").await;
    let mut first = s.connect(&a).await;
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/ws", s.base()))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    first.send(json!({"type": "heartbeat"})).await;
    first.expect("heartbeat_ack").await;
}
