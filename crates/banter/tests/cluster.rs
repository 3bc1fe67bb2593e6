//! Cluster mode: three nodes on one PostgreSQL database and one NATS, with
//! the contract unchanged whichever node a client reaches, and the failures
//! a cluster must survive: a node killed, NATS restarted, PostgreSQL stopped.

mod common;

use banter_client::{Event, HttpClient, Session, SessionOptions};
use common::cluster::{Backing, PgServer};
use common::proxy::Proxy;
use common::{Server, User};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_across_three_nodes() {
    let backing = Backing::shared().await;
    let n = backing.nodes(3, &[]).await;
    let alice = n[0].user("alice").await;
    let bob1 = n[1].user("bob").await;
    let bob2 = n[2].login("bob").await;
    let conv = n[0].direct(&alice, &bob1).await;
    let mut wa = n[0].connect(&alice).await;
    let mut wb1 = n[1].connect(&bob1).await;
    let mut wb2 = n[2].connect(&bob2).await;

    // Sender on node 1, the recipient's two devices on nodes 2 and 3.
    for i in 1..=20 {
        let sent = wa.send_text_message(&conv, &format!("c{i}"), &format!("hello {i}")).await;
        assert_eq!(sent["seq"], i);
    }
    for ws in [&mut wb1, &mut wb2] {
        for i in 1..=20u64 {
            let m = ws.expect("message").await;
            assert_eq!(
                (m["seq"].as_u64(), m["content"]["text"].as_str()),
                (Some(i), Some(format!("hello {i}").as_str()))
            );
        }
        ws.ack(&conv, 20).await;
    }
    let r = wa.expect("receipt").await;
    assert_eq!(
        (r["kind"].as_str(), r["seq"].as_u64(), r["user_id"].as_str()),
        (Some("delivered"), Some(20), Some(bob1.id.as_str()))
    );

    // Typing and read receipts cross nodes.
    wb2.send(json!({"type": "typing", "conversation_id": conv})).await;
    assert_eq!(wa.expect("typing").await["user_id"], bob1.id.as_str());
    wb1.send(json!({"type": "read", "conversation_id": conv, "seq": 20})).await;
    let r = wa.expect("receipt").await;
    assert_eq!((r["kind"].as_str(), r["seq"].as_u64()), (Some("read"), Some(20)));

    // A retry through another node is the same message, not a new one.
    let first = &n[0].history(&alice, &conv).await[0];
    let (status, again) = n[2]
        .http()
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&alice.token),
            json!({"client_msg_id": "c1", "content": {"type": "text", "text": "hello 1"}}),
        )
        .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!((&again["message_id"], &again["seq"]), (&first["message_id"], &first["seq"]));

    // Every node serves the same history.
    let reference = n[0].history(&alice, &conv).await;
    assert_eq!(reference.len(), 20);
    assert_eq!(n[1].history(&bob1, &conv).await, reference);
    assert_eq!(n[2].history(&bob2, &conv).await, reference);

    // A group made on node 1 is announced to a member connected to node 3, and its messages arrive.
    let group = n[0].group(&alice, &[&bob1]).await;
    let c = wb2.expect("conversation").await;
    assert_eq!(c["conversation"]["conversation_id"], group.as_str());
    wa.send_text_message(&group, "g1", "to the group").await;
    let m = wb2.expect("message").await;
    assert_eq!((m["conversation_id"].as_str(), m["seq"].as_u64()), (Some(group.as_str()), Some(1)));

    // Logging out on node 1 closes the device's connection on node 3 with 4001,
    // and its token stops working on every node.
    let (status, _) = n[0].http().delete("/v1/sessions/current", Some(&bob2.token)).await;
    assert_eq!(status, 204);
    assert_eq!(wb2.expect_close().await, Some(4001));
    for node in &n {
        let (status, _) = node.http().get("/v1/conversations", Some(&bob2.token)).await;
        assert_eq!(status, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_connecting_to_another_node_replaces_its_old_connection() {
    let backing = Backing::shared().await;
    let n = backing.nodes(2, &[]).await;
    let alice = n[0].user("alice").await;
    let bob = n[0].user("bob").await;
    let conv = n[0].direct(&alice, &bob).await;
    let mut old = n[0].connect(&bob).await;
    let mut new = n[1].connect(&bob).await;
    assert_eq!(old.expect_close().await, Some(4002));
    // The new connection is the one that gets messages.
    let mut wa = n[0].connect(&alice).await;
    wa.send_text_message(&conv, "after", "still here").await;
    assert_eq!(new.expect("message").await["content"]["text"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide_with_its_grace_and_a_dead_node_turns_its_users_offline() {
    let backing = Backing::shared().await;
    let mut n = backing.nodes(3, &["--presence-grace-ms", "300"]).await;
    let alice = n[0].user("alice").await;
    let bob = n[1].user("bob").await;
    let mut wa = n[0].connect(&alice).await;
    wa.send(json!({"type": "presence_subscribe", "user_ids": [bob.id]})).await;
    assert_eq!(wa.expect("presence").await["status"], "offline");

    // Online while connected to any node.
    let wb = n[1].connect(&bob).await;
    assert_eq!(wa.expect("presence").await["status"], "online");
    let (_, body) = n[2].http().get(&format!("/v1/presence?user_ids={}", bob.id), Some(&alice.token)).await;
    assert_eq!(body["presence"][0]["status"], "online", "node 3 knows bob is on node 2");
    // Moving from node 2 to node 3 within the grace does not flap.
    wb.close().await;
    let _wb = n[2].connect(&bob).await;
    wa.expect_no("presence", Duration::from_millis(900)).await;

    // Node 3 dies with bob's only connection: offline once the node is missed and the grace has passed.
    n[2].kill();
    let p = wa.expect_within("presence", Duration::from_secs(15)).await;
    assert_eq!(p["status"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_groups_fan_out_through_the_jetstream_queue_to_every_node() {
    let backing = Backing::shared().await;
    let n = backing.nodes(3, &["--fanout-sync-threshold", "2"]).await;
    let mut users = Vec::new();
    for (i, name) in ["ann", "ben", "cat", "dan", "eve"].iter().enumerate() {
        users.push(n[i % 3].user(name).await);
    }
    let others: Vec<&User> = users[1..].iter().collect();
    let group = n[0].group(&users[0], &others).await;
    let mut sockets = Vec::new();
    for (i, u) in users.iter().enumerate() {
        sockets.push(n[i % 3].connect(u).await);
    }
    for i in 1..=10 {
        sockets[0].send_text_message(&group, &format!("g{i}"), &format!("big {i}")).await;
    }
    for ws in &mut sockets[1..] {
        for i in 1..=10u64 {
            let m = ws.expect("message").await;
            assert_eq!(
                (m["seq"].as_u64(), m["content"]["text"].as_str()),
                (Some(i), Some(format!("big {i}").as_str()))
            );
        }
    }
}

fn options() -> SessionOptions {
    SessionOptions {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        ..Default::default()
    }
}

/// Sends `count` messages from `sender` while `disturb` runs, then checks
/// that every send was confirmed once with gap-free seqs and that every
/// receiving device got every message exactly once, in order.
async fn send_through(
    sender_via: &Proxy,
    receivers_via: &Proxy,
    sender: &User,
    receivers: &[&User],
    conv: &str,
    count: usize,
    disturb: impl std::future::Future<Output = ()>,
) {
    let connect = |via: &Proxy, token: String| {
        let base = via.base();
        async move {
            let http = HttpClient::new(&base).unwrap().with_token(&token);
            Session::connect(http, options()).await.expect("connect")
        }
    };
    let (alice, mut sent_events) = connect(sender_via, sender.token.clone()).await;
    let mut collectors = Vec::new();
    for r in receivers {
        let (session, mut events) = connect(receivers_via, r.token.clone()).await;
        collectors.push(tokio::spawn(async move {
            let _keep = session;
            let mut got = Vec::new();
            while got.len() < count {
                match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
                    Ok(Some(Event::Message(m))) => got.push((m.seq, m.client_msg_id.clone())),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            got
        }));
    }
    let sending = async {
        for i in 0..count {
            alice.send_text(conv, &format!("m{i}")).await.expect("queue send");
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::join!(sending, disturb);
    let mut sent: HashMap<String, u64> = HashMap::new();
    while sent.len() < count {
        match tokio::time::timeout(Duration::from_secs(60), sent_events.recv()).await.expect("every send confirmed") {
            Some(Event::Sent { client_msg_id, seq, .. }) => {
                assert!(sent.insert(client_msg_id, seq).is_none(), "a send was confirmed twice");
            }
            Some(Event::SendFailed { code, message, .. }) => panic!("send failed: {code} {message}"),
            Some(_) => {}
            None => panic!("the sender's session ended"),
        }
    }
    let mut seqs: Vec<u64> = sent.values().copied().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=count as u64).collect::<Vec<_>>(), "seqs are gap-free");
    for c in collectors {
        let got = c.await.unwrap();
        let want: Vec<(u64, String)> = {
            let mut w: Vec<(u64, String)> = sent.iter().map(|(id, seq)| (*seq, id.clone())).collect();
            w.sort_unstable();
            w
        };
        assert_eq!(got.len(), count, "a device lost messages");
        assert_eq!(got, want, "a device got messages out of order or twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_run_loses_nothing_acknowledged() {
    let backing = Backing::shared().await;
    let mut n = backing.nodes(3, &["--ack-timeout-ms", "500"]).await;
    let alice = n[0].user("alice").await;
    let bob1 = n[0].user("bob").await;
    let bob2 = n[0].login("bob").await;
    let conv = n[0].direct(&alice, &bob1).await;
    let balancer = Proxy::balance(n.iter().map(|s| s.addr).collect()).await;
    let victim = &mut n[1];
    send_through(&balancer, &balancer, &alice, &[&bob1, &bob2], &conv, 300, async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        victim.kill();
    })
    .await;
    let history = n[0].history(&alice, &conv).await;
    assert_eq!(history.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_run_loses_nothing_and_nodes_reconnect() {
    let mut backing = Backing::own_nats().await;
    let n = backing.nodes(2, &["--ack-timeout-ms", "500"]).await;
    let alice = n[0].user("alice").await;
    let bob1 = n[1].user("bob").await;
    let bob2 = n[1].login("bob").await;
    let conv = n[0].direct(&alice, &bob1).await;
    // The sender on node 1, the receivers on node 2: every push crosses NATS.
    let to_sender = Proxy::start(n[0].addr).await;
    let to_receivers = Proxy::start(n[1].addr).await;
    let nats = backing.nats.as_mut().unwrap();
    let disturb = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        nats.kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        nats.restart();
    };
    send_through(&to_sender, &to_receivers, &alice, &[&bob1, &bob2], &conv, 200, disturb).await;
    // After the restart, pushes cross the bus again without any repair.
    let mut wa = n[0].connect(&alice).await;
    let mut wb = n[1].connect(&n[1].login("bob").await).await;
    wa.send_text_message(&conv, "after-restart", "live again").await;
    let m = wb.expect_within("message", Duration::from_secs(20)).await;
    assert_eq!(m["content"]["text"], "live again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_answers_unavailable_then_the_node_recovers_by_itself() {
    // A PostgreSQL of this test's own, which it stops and starts.
    let mut pg = PgServer::start();
    let backing = Backing::shared().await;
    let args = backing.node_args(1, &pg.url());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Server::start(&args).await;
    let (alice, bob) = (node.user("alice").await, node.user("bob").await);
    let conv = node.direct(&alice, &bob).await;
    let mut wa = node.connect(&alice).await;
    let mut wb = node.connect(&bob).await;
    wa.send_text_message(&conv, "before", "stored").await;
    assert_eq!(wb.expect("message").await["seq"], 1);

    // PostgreSQL stopped: a clear error, not a hang; /healthz says so.
    pg.stop();
    wa.send(json!({"type": "send", "client_msg_id": "during", "conversation_id": conv,
                   "content": {"type": "text", "text": "not now"}}))
        .await;
    let e = wa.expect_within("error", Duration::from_secs(15)).await;
    assert_eq!((e["code"].as_str(), e["ref"].as_str()), (Some("unavailable"), Some("during")));
    let (status, body) = node.http().get("/healthz", None).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = node
        .http()
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&alice.token),
            json!({"client_msg_id": "http-during", "content": {"type": "text", "text": "not now"}}),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")));

    // Started again: the node recovers by itself, the same send succeeds and is delivered.
    pg.restart();
    let mut healthy = false;
    for _ in 0..100 {
        if node.http().get("/healthz", None).await.0 == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "the node did not recover");
    let sent = wa.send_text_message(&conv, "during", "now").await;
    assert_eq!(sent["seq"], 2);
    let m = wb.expect_within("message", Duration::from_secs(15)).await;
    assert_eq!((m["seq"].as_u64(), m["content"]["text"].as_str()), (Some(2), Some("now")));
    assert_eq!(node.history(&alice, &conv).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_a_bench_run_shows_nothing_lost_or_reordered() {
    let backing = Backing::shared().await;
    let mut n = backing.nodes(3, &["--ack-timeout-ms", "500", "--rate-limit-per-sec", "100000"]).await;
    let urls: Vec<String> = n.iter().map(Server::base).collect();
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("bench.json");
    // Pair p sends through node p and receives through node p + 1, so the
    // node killed below holds senders and receivers alike.
    let mut bench = tokio::process::Command::new(env!("CARGO_BIN_EXE_banter"))
        .args(["bench", "--url", &urls.join(","), "--pairs", "12", "--duration", "4", "--inflight", "4", "--reconnect"])
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the bench");
    let mut stderr = tokio::io::BufReader::new(bench.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        use tokio::io::AsyncBufReadExt;
        assert!(stderr.read_line(&mut line).await.unwrap() > 0, "the bench ended before sending");
        if line.contains("sending for") {
            break;
        }
    }
    tokio::spawn(async move { tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    n[1].kill();
    let status = tokio::time::timeout(Duration::from_secs(120), bench.wait()).await.expect("bench finished").unwrap();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(status.success(), "the bench failed its verification: {report}");
    assert_eq!((report["lost"].as_u64(), report["reordered"].as_u64()), (Some(0), Some(0)), "{report}");
    assert!(report["delivered"].as_u64().unwrap() > 0);
    assert_eq!(report["delivered"], report["sent_acknowledged"]);
}
