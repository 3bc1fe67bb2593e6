//! Drives a [`Session`] against a scripted stand-in for the server: a raw
//! WebSocket endpoint whose frames the test writes by hand, and a history
//! endpoint that serves a fixed conversation. It checks the session's own
//! behaviour (ordering, deduplication, acknowledgements, gap fills, outbox
//! replay, reconnection, terminal close codes) independently of the real
//! server, whose integration tests live with the server.

use banter_client::{Event, Events, HttpClient, Session, SessionOptions};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The server side of one WebSocket connection.
type ServerWs = WebSocketStream<TcpStream>;

/// How long any single expectation may take.
const PATIENCE: Duration = Duration::from_secs(5);

/// A `message` frame body of conversation `c1`.
fn message(seq: u64) -> Value {
    json!({
        "conversation_id": "c1", "message_id": format!("m{seq}"), "seq": seq, "sender_id": "bob",
        "client_msg_id": format!("b{seq}"), "ts": 1000 + seq, "content": {"type": "text", "text": format!("n{seq}")}
    })
}

/// Starts the stand-in: WebSocket connections are handed to the test in
/// order; history requests are answered from `message(1..=history_last)`.
async fn start(history_last: u64) -> (String, mpsc::Receiver<ServerWs>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 12];
            let n = stream.peek(&mut head).await.unwrap();
            if head[..n].starts_with(b"GET /v1/ws") {
                let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                let _ = tx.send(ws).await;
            } else {
                tokio::spawn(serve_history(stream, history_last));
            }
        }
    });
    (base, rx)
}

/// Answers one `GET /v1/conversations/c1/messages?after=N&limit=L`.
async fn serve_history(mut stream: TcpStream, last: u64) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request).lines().next().unwrap().to_owned();
    let path = line.split(' ').nth(1).unwrap();
    if path == "/v1/conversations" {
        // The session asks for its conversations' sizes when acks may wait.
        return answer(&mut stream, &json!({"conversations": [group_c1(3)]}).to_string()).await;
    }
    assert!(path.starts_with("/v1/conversations/c1/messages?"), "unexpected request {line}");
    let url = url::Url::parse(&format!("http://x{path}")).unwrap();
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.parse::<u64>().unwrap());
    let (after, limit) = (param("after").unwrap(), param("limit").unwrap());
    let upto = last.min(after + limit);
    let messages: Vec<Value> = (after + 1..=upto).map(message).collect();
    let body = json!({"messages": messages, "has_more": upto < last}).to_string();
    answer(&mut stream, &body).await;
}

/// Writes a 200 answer with a JSON `body`.
async fn answer(stream: &mut TcpStream, body: &str) {
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await.unwrap();
}

/// The next frame the client sent, skipping heartbeats.
async fn next_frame(ws: &mut ServerWs) -> Value {
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next()).await.expect("a frame in time").unwrap().unwrap();
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["type"] != "heartbeat" {
                return value;
            }
        }
    }
}

/// Accepts the next connection and completes its `hello`/`welcome`.
async fn accept(connections: &mut mpsc::Receiver<ServerWs>) -> ServerWs {
    accept_with(connections, json!({})).await
}

/// [`accept`], with `extra` fields in the `welcome` (or other values for its own).
async fn accept_with(connections: &mut mpsc::Receiver<ServerWs>, extra: Value) -> ServerWs {
    let mut ws = tokio::time::timeout(PATIENCE, connections.recv()).await.expect("a connection in time").unwrap();
    let hello = next_frame(&mut ws).await;
    assert_eq!(hello, json!({"type": "hello", "token": "t0k"}));
    let mut welcome = json!({"type": "welcome", "user_id": "alice", "device_id": "d1", "heartbeat_interval_ms": 20_000,
        "ack_timeout_ms": 5000, "server_time": 1, "window": 256, "max_frame_bytes": 65536});
    for (k, v) in extra.as_object().unwrap() {
        welcome[k] = v.clone();
    }
    push(&mut ws, welcome).await;
    ws
}

/// The conversation object of group `c1` with `members` members.
fn group_c1(members: u64) -> Value {
    json!({"conversation_id": "c1", "kind": "group", "member_count": members, "last_seq": 0, "read_seq": 0,
        "created_at": 1})
}

/// Sends one frame to the client.
async fn push(ws: &mut ServerWs, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// Pushes message `seq` to the client.
async fn push_message(ws: &mut ServerWs, seq: u64) {
    let mut frame = message(seq);
    frame["type"] = json!("message");
    push(ws, frame).await;
}

/// Reads acknowledgements of `c1` until one covers `seq`; they must rise.
async fn wait_for_ack(ws: &mut ServerWs, seq: u64) {
    let mut last = 0;
    while last < seq {
        let ack = next_frame(ws).await;
        assert_eq!((ack["type"].as_str(), ack["conversation_id"].as_str()), (Some("ack"), Some("c1")), "got {ack}");
        let acked = ack["seq"].as_u64().unwrap();
        assert!(acked > last && acked <= seq, "ack {acked} after {last}");
        last = acked;
    }
}

/// The next event of the session.
async fn next_event(events: &mut Events) -> Event {
    tokio::time::timeout(PATIENCE, events.recv()).await.expect("an event in time").expect("the session is open")
}

/// The seq of the next event, which must be a message.
async fn next_message_seq(events: &mut Events) -> u64 {
    match next_event(events).await {
        Event::Message(m) => m.seq,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn acks_of_a_group_that_keeps_no_receipts_wait() {
    let (base, mut connections) = start(0).await;
    let http = HttpClient::new(&base).unwrap().with_token("t0k");
    let connecting = tokio::spawn(Session::connect(http, SessionOptions::default()));
    // Groups above 2 members keep no receipts; their acks may wait a minute; the window is 64.
    let mut ws = accept_with(&mut connections, json!({"window": 64, "receipts_up_to": 2, "lazy_ack_ms": 60_000})).await;
    let (_session, mut events) = connecting.await.unwrap().unwrap();
    assert!(matches!(next_event(&mut events).await, Event::Connected { .. }));
    push(&mut ws, json!({"type": "conversation", "conversation": group_c1(3)})).await;
    assert!(matches!(next_event(&mut events).await, Event::Conversation(_)));

    // Well past the session's own 10 ms, the first message is not acknowledged ...
    push_message(&mut ws, 1).await;
    assert_eq!(next_message_seq(&mut events).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... nor the next ones, until a quarter of the window is held: then one ack covers them.
    for seq in 2..=16 {
        push_message(&mut ws, seq).await;
        assert_eq!(next_message_seq(&mut events).await, seq);
    }
    let first = next_frame(&mut ws).await;
    assert_eq!((first["type"].as_str(), first["conversation_id"].as_str()), (Some("ack"), Some("c1")), "{first}");
    // 16, or 15 should the ack have gone before the application took the last one.
    let first = first["seq"].as_u64().unwrap();
    assert!(first >= 15, "the first ack, of {first}, did not wait");
    if first < 16 {
        assert_eq!(next_frame(&mut ws).await, json!({"type": "ack", "conversation_id": "c1", "seq": 16}));
    }

    // Once the group has only two members, its acks go at once again.
    push(&mut ws, json!({"type": "conversation", "conversation": group_c1(2)})).await;
    assert!(matches!(next_event(&mut events).await, Event::Conversation(_)));
    push_message(&mut ws, 17).await;
    assert_eq!(next_message_seq(&mut events).await, 17);
    assert_eq!(next_frame(&mut ws).await, json!({"type": "ack", "conversation_id": "c1", "seq": 17}));
}

#[tokio::test]
async fn session_orders_dedups_acks_fills_gaps_and_replays_its_outbox() {
    let (base, mut connections) = start(5).await;
    let http = HttpClient::new(&base).unwrap().with_token("t0k");
    let options = SessionOptions { initial_backoff: Duration::from_millis(10), ..SessionOptions::default() };
    let connecting = tokio::spawn(Session::connect(http, options));
    let mut ws = accept(&mut connections).await;
    let (session, mut events) = connecting.await.unwrap().unwrap();
    assert_eq!((session.user_id(), session.device_id()), ("alice", "d1"));
    assert!(matches!(next_event(&mut events).await, Event::Connected { .. }));

    // The first message sets the baseline; the two are acknowledged together.
    push_message(&mut ws, 1).await;
    push_message(&mut ws, 2).await;
    assert_eq!(next_message_seq(&mut events).await, 1);
    assert_eq!(next_message_seq(&mut events).await, 2);
    assert_eq!(next_frame(&mut ws).await, json!({"type": "ack", "conversation_id": "c1", "seq": 2}));

    // A repeat is dropped, and the acknowledgement is repeated.
    push_message(&mut ws, 2).await;
    assert_eq!(next_frame(&mut ws).await, json!({"type": "ack", "conversation_id": "c1", "seq": 2}));

    // A gap is filled from the history endpoint, in order.
    push_message(&mut ws, 5).await;
    for seq in 3..=5 {
        assert_eq!(next_message_seq(&mut events).await, seq);
    }
    assert_eq!(next_frame(&mut ws).await, json!({"type": "ack", "conversation_id": "c1", "seq": 5}));

    // A send lost with its connection is replayed with the same id after the reconnect.
    let client_msg_id = session.send_text("c1", "hi").await.unwrap();
    let send = next_frame(&mut ws).await;
    assert_eq!(send["type"], "send");
    assert_eq!(send["client_msg_id"], client_msg_id.as_str());
    assert_eq!(send["content"], json!({"type": "text", "text": "hi"}));
    drop(ws);
    assert!(matches!(next_event(&mut events).await, Event::Disconnected { code: None, .. }));
    let mut ws = accept(&mut connections).await;
    assert!(matches!(next_event(&mut events).await, Event::Connected { .. }));
    let replay = next_frame(&mut ws).await;
    assert_eq!(replay, send);
    assert_eq!(session.outbox_len(), 1);
    push(
        &mut ws,
        json!({"type": "sent", "client_msg_id": client_msg_id, "conversation_id": "c1",
        "message_id": "m6", "seq": 6, "ts": 1006}),
    )
    .await;
    match next_event(&mut events).await {
        Event::Sent { client_msg_id: id, seq, .. } => assert_eq!((id, seq), (client_msg_id.clone(), 6)),
        other => panic!("expected sent, got {other:?}"),
    }
    session.flush().await.unwrap();
    assert_eq!(session.outbox_len(), 0);
    // The own message continues the run: the next push is no gap.
    push_message(&mut ws, 7).await;
    assert_eq!(next_message_seq(&mut events).await, 7);
    wait_for_ack(&mut ws, 7).await;

    // A refused send is reported and forgotten.
    let refused = session.send_with_id("c1", "x1", json!({"type": "image", "url": "u"})).await;
    refused.unwrap();
    assert_eq!(next_frame(&mut ws).await["client_msg_id"], "x1");
    push(&mut ws, json!({"type": "error", "code": "not_found", "message": "no such conversation", "ref": "x1"})).await;
    match next_event(&mut events).await {
        Event::SendFailed { client_msg_id, code, .. } => {
            assert_eq!((client_msg_id.as_str(), code), ("x1", banter_client::proto::ErrorCode::NotFound));
        }
        other => panic!("expected a failed send, got {other:?}"),
    }

    // Replaced by another connection of the device: the session ends.
    let close = CloseFrame { code: CloseCode::from(4002), reason: "replaced".into() };
    ws.send(Message::Close(Some(close))).await.unwrap();
    assert!(matches!(next_event(&mut events).await, Event::Disconnected { code: Some(4002), .. }));
    assert!(matches!(next_event(&mut events).await, Event::Closed { code: 4002, .. }));
    assert!(events.recv().await.is_none());
    assert!(session.is_closed());
    assert!(matches!(
        session.send_text("c1", "late").await,
        Err(banter_client::ClientError::Closed { code: 4002, .. })
    ));
    assert!(tokio::time::timeout(Duration::from_millis(300), connections.recv()).await.is_err(), "no reconnection");
}

#[tokio::test]
async fn close_flushes_acks_and_ends_cleanly() {
    let (base, mut connections) = start(0).await;
    let http = HttpClient::new(&base).unwrap().with_token("t0k");
    let connecting = tokio::spawn(Session::connect(http, SessionOptions::default()));
    let mut ws = accept(&mut connections).await;
    let (session, mut events) = connecting.await.unwrap().unwrap();
    assert!(matches!(next_event(&mut events).await, Event::Connected { .. }));

    // Outbox and read receipts given while connected go out at once.
    session.read("c1", 3).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, json!({"type": "read", "conversation_id": "c1", "seq": 3}));
    session.presence_subscribe(&["bob"]).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, json!({"type": "presence_subscribe", "user_ids": ["bob"]}));

    push_message(&mut ws, 9).await;
    assert_eq!(next_message_seq(&mut events).await, 9);
    let closing = tokio::spawn({
        let session = session.clone();
        async move { session.close().await }
    });
    // The acknowledgement comes before the close, even if its batch was still open.
    assert_eq!(next_frame(&mut ws).await, json!({"type": "ack", "conversation_id": "c1", "seq": 9}));
    let frame = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(frame, Message::Close(Some(ref f)) if f.code == CloseCode::Normal), "got {frame:?}");
    drop(ws);
    tokio::time::timeout(PATIENCE, closing).await.unwrap().unwrap();
    assert!(matches!(next_event(&mut events).await, Event::Closed { code: 1000, .. }));
    assert!(events.recv().await.is_none());
}

#[tokio::test]
async fn a_refused_token_fails_the_connect() {
    let (base, mut connections) = start(0).await;
    let http = HttpClient::new(&base).unwrap().with_token("t0k");
    let connecting = tokio::spawn(Session::connect(http, SessionOptions::default()));
    let mut ws = tokio::time::timeout(PATIENCE, connections.recv()).await.unwrap().unwrap();
    next_frame(&mut ws).await;
    push(&mut ws, json!({"type": "error", "code": "unauthorized", "message": "bad token"})).await;
    let close = CloseFrame { code: CloseCode::from(4001), reason: "unauthorized".into() };
    let _ = ws.send(Message::Close(Some(close))).await;
    match connecting.await.unwrap() {
        Err(banter_client::ClientError::Closed { code, .. }) => assert_eq!(code, 4001),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn only_messages_the_application_took_are_acknowledged() {
    let (base, mut connections) = start(0).await;
    let http = HttpClient::new(&base).unwrap().with_token("t0k");
    let connecting = tokio::spawn(Session::connect(http, SessionOptions::default()));
    let mut ws = accept(&mut connections).await;
    let (session, mut events) = connecting.await.unwrap().unwrap();
    assert!(matches!(next_event(&mut events).await, Event::Connected { .. }));

    // Nothing is acknowledged while the message waits in the event queue.
    push_message(&mut ws, 3).await;
    let quiet = tokio::time::timeout(Duration::from_millis(200), next_frame(&mut ws)).await;
    assert!(quiet.is_err(), "acknowledged before the application took it: {quiet:?}");
    assert_eq!(next_message_seq(&mut events).await, 3);
    assert_eq!(next_frame(&mut ws).await, json!({"type": "ack", "conversation_id": "c1", "seq": 3}));

    // Closing acknowledges what was taken and not what is still queued.
    push_message(&mut ws, 4).await;
    push_message(&mut ws, 5).await;
    assert_eq!(next_message_seq(&mut events).await, 4);
    let closing = tokio::spawn({
        let session = session.clone();
        async move { session.close().await }
    });
    assert_eq!(next_frame(&mut ws).await, json!({"type": "ack", "conversation_id": "c1", "seq": 4}));
    let frame = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(frame, Message::Close(_)), "got {frame:?}");
    drop(ws);
    tokio::time::timeout(PATIENCE, closing).await.unwrap().unwrap();
}
