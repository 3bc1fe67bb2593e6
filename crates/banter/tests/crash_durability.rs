//! Durability before acknowledgement: SIGKILL while sends are in flight loses
//! nothing that got `sent`; SIGTERM drains and exits 0.

mod common;

use common::{Seen, Server, Ws};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn sigkill_loses_nothing_that_was_acknowledged_with_sent() {
    let mut s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut senders = Vec::new();
    for _ in 0..4 {
        let dev = s.login("alice").await;
        senders.push(s.connect(&dev).await);
    }
    // Four connections send as fast as they can; the server is killed mid-stream.
    let mut tasks = Vec::new();
    for (k, mut ws) in senders.into_iter().enumerate() {
        let conv = conv.clone();
        tasks.push(tokio::spawn(async move {
            let mut confirmed: HashMap<String, (String, u64)> = HashMap::new();
            for i in 0..100_000 {
                let id = format!("d{k}-{i}");
                let frame = json!({"type": "send", "client_msg_id": id, "conversation_id": conv,
                                   "content": {"type": "text", "text": "x"}});
                if ws.try_send_text(&frame.to_string()).await.is_err() {
                    break;
                }
                // Read whatever confirmations are ready without stalling the stream.
                while let Some(Seen::Frame(v)) =
                    ws.next_within(Duration::from_millis(if i % 16 == 0 { 5 } else { 0 })).await
                {
                    if v["type"] == "sent" {
                        confirmed.insert(
                            v["client_msg_id"].as_str().unwrap().to_owned(),
                            (v["message_id"].as_str().unwrap().to_owned(), v["seq"].as_u64().unwrap()),
                        );
                    }
                }
                if confirmed.len() > 50_000 {
                    break;
                }
            }
            confirmed
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.kill();
    let mut confirmed = HashMap::new();
    for t in tasks {
        confirmed.extend(t.await.expect("sender task"));
    }
    s.restart().await;
    let history = s.history(&b, &conv).await;
    let by_id: HashMap<&str, (&str, u64)> = history
        .iter()
        .map(|m| {
            (m["client_msg_id"].as_str().unwrap(), (m["message_id"].as_str().unwrap(), m["seq"].as_u64().unwrap()))
        })
        .collect();
    assert!(!confirmed.is_empty(), "nothing was confirmed before the kill");
    for (id, (mid, seq)) in &confirmed {
        assert_eq!(by_id.get(id.as_str()), Some(&(mid.as_str(), *seq)), "{id} was sent but is missing or changed");
    }
    // No seq gaps, no reuse.
    for (i, m) in history.iter().enumerate() {
        assert_eq!(m["seq"].as_u64().unwrap(), i as u64 + 1);
    }
    eprintln!("confirmed {} of {} stored", confirmed.len(), history.len());
    // The restarted server keeps assigning from where it was.
    let mut ws = s.connect(&a).await;
    let sent = ws.send_text_message(&conv, "after-restart", "hi").await;
    assert_eq!(sent["seq"].as_u64().unwrap(), history.len() as u64 + 1);
}

#[tokio::test]
async fn sigterm_closes_connections_with_1001_and_exits_zero() {
    let mut s = Server::start(&[]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.direct(&a, &b).await;
    let mut wa = s.connect(&a).await;
    let mut wb = s.connect(&b).await;
    wa.send_text_message(&conv, "c1", "before stop").await;
    wb.expect("message").await;
    let started = std::time::Instant::now();
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(wa.expect_close().await, Some(1001));
    assert_eq!(wb.expect_close().await, Some(1001));
    // Everything is there after a restart.
    s.restart().await;
    assert_eq!(s.history(&b, &conv).await.len(), 1);
    let _ = Ws::open(s.addr).await;
}
