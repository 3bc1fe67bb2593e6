//! Accounts, sessions, users and logout over HTTP.

mod common;

use common::{Seen, Server};
use serde_json::json;

#[tokio::test]
async fn register_validates_and_rejects_duplicates() {
    let s = Server::start(&[]).await;
    let http = s.http();
    for (name, pw) in [("ab", "password123"), ("Alice", "password123"), ("al ice", "password123"), ("alice", "short")] {
        let (status, body) = http.post("/v1/users", None, json!({"username": name, "password": pw})).await;
        assert_eq!(status, 400, "{name}/{pw}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
    }
    let (status, body) = http.post_raw("/v1/users", None, "{not json").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")));
    let (status, body) =
        http.post("/v1/users", None, json!({"username": "alice.b-c_9", "password": "password123"})).await;
    assert_eq!(status, 201);
    assert_eq!(body["username"], "alice.b-c_9");
    assert!(body["user_id"].is_string());
    let (status, body) =
        http.post("/v1/users", None, json!({"username": "alice.b-c_9", "password": "other-password"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("username_taken")));
}

#[tokio::test]
async fn login_and_user_lookup() {
    let s = Server::start(&[]).await;
    let http = s.http();
    let alice = s.user("alice").await;
    let (status, body) =
        http.post("/v1/sessions", None, json!({"username": "alice", "password": "wrong-password"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")));
    let (status, body) =
        http.post("/v1/sessions", None, json!({"username": "nobody", "password": "password123"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")));

    let (status, body) = http.get(&format!("/v1/users/{}", alice.id), Some(&alice.token)).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"user_id": alice.id, "username": "alice"}));
    let (status, body) = http.get("/v1/users?username=alice", Some(&alice.token)).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some(alice.id.as_str())));
    let (status, _) = http.get("/v1/users?username=nobody", Some(&alice.token)).await;
    assert_eq!(status, 404);
    let (status, _) = http.get("/v1/users/999999", Some(&alice.token)).await;
    assert_eq!(status, 404);
    let (status, body) = http.get(&format!("/v1/users/{}", alice.id), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = http.get(&format!("/v1/users/{}", alice.id), Some("not-a-token")).await;
    assert_eq!(status, 401);
    // Two sessions are two devices.
    let second = s.login("alice").await;
    assert_ne!(second.device, alice.device);
    assert_ne!(second.token, alice.token);
}

#[tokio::test]
async fn logout_revokes_token_and_closes_connection_with_4001() {
    let s = Server::start(&[]).await;
    let alice = s.user("alice").await;
    let other = s.login("alice").await;
    let mut ws = s.connect(&alice).await;
    let mut ws_other = s.connect(&other).await;
    let (status, _) = s.http().delete("/v1/sessions/current", Some(&alice.token)).await;
    assert_eq!(status, 204);
    assert_eq!(ws.expect_close().await, Some(4001));
    let (status, _) = s.http().get("/v1/conversations", Some(&alice.token)).await;
    assert_eq!(status, 401);
    // The other device is untouched.
    ws_other.send(json!({"type": "heartbeat"})).await;
    ws_other.expect("heartbeat_ack").await;
    // The revoked token cannot open a connection.
    let mut again = common::Ws::open(s.addr).await;
    again.send(json!({"type": "hello", "token": alice.token})).await;
    let err = again.next().await;
    assert_eq!(err["code"], "unauthorized");
    assert!(matches!(again.next_within(common::WAIT).await, Some(Seen::Closed(Some(4001)))));
}

#[tokio::test]
async fn health_and_metrics() {
    let s = Server::start(&[]).await;
    let (status, body) = s.http().get("/healthz", None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let text = reqwest::get(format!("{}/metrics", s.base())).await.unwrap().text().await.unwrap();
    for name in [
        "websocket_connections",
        "messages_sent_total",
        "messages_delivered_total",
        "delivery_inflight_messages",
        "delivery_backlog_messages",
        "fanout_queue_depth",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    // The latency histogram appears once a message has been pushed.
    let a = s.user("alice").await;
    let b = s.user("bob").await;
    let conv = s.direct(&a, &b).await;
    let mut wb = s.connect(&b).await;
    let mut wa = s.connect(&a).await;
    wa.send_text_message(&conv, "m1", "hi").await;
    wb.expect("message").await;
    let text = reqwest::get(format!("{}/metrics", s.base())).await.unwrap().text().await.unwrap();
    let value = |prefix: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {text}"));
        line[prefix.len()..].trim().parse().unwrap()
    };
    let pushed = value("message_delivery_latency_ms_count");
    assert!(pushed >= 1, "{text}");
    assert_eq!(value("message_delivery_latency_ms_bucket{le=\"+Inf\"}"), pushed, "{text}");
    assert!(text.contains("# TYPE message_delivery_latency_ms histogram"), "{text}");
    assert!(text.contains("websocket_connections 2"), "{text}");
}
