//! The SDK against the real server while connections are cut at random:
//! every device ends with exactly the messages sent, once each, in seq order.

mod common;

use banter_client::{Event, HttpClient, Session, SessionOptions};
use common::proxy::Proxy;
use common::Server;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::Duration;

const MESSAGES: usize = 150;

fn options() -> SessionOptions {
    SessionOptions {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn session(proxy: &Proxy, token: &str) -> (Session, banter_client::Events) {
    let http = HttpClient::new(&proxy.base()).unwrap().with_token(token);
    Session::connect(http, options()).await.expect("connect")
}

/// Collects a device's messages until it holds `want` of them.
async fn collect(mut events: banter_client::Events, want: usize) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < want {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(Event::Message(m))) => got.push((m.seq, m.message_id)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    got
}

async fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let s = Server::start(&["--ack-timeout-ms", "300"]).await;
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let b2 = s.login("bob").await;
    let conv = s.direct(&a, &b).await;
    let proxies = [Proxy::start(s.addr).await, Proxy::start(s.addr).await, Proxy::start(s.addr).await];
    let (alice, mut alice_events) = session(&proxies[0], &a.token).await;
    let (_bob1, bob1_events) = session(&proxies[1], &b.token).await;
    let (_bob2, bob2_events) = session(&proxies[2], &b2.token).await;
    let receivers = [tokio::spawn(collect(bob1_events, MESSAGES)), tokio::spawn(collect(bob2_events, MESSAGES))];

    let mut cuts = 0;
    for i in 0..MESSAGES {
        alice.send_text(&conv, &format!("m{i}")).await.expect("queue send");
        if rng.random_bool(0.06) {
            proxies[rng.random_range(0..3)].sever();
            cuts += 1;
        }
        if rng.random_bool(0.3) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
        }
    }
    // Every send is confirmed exactly once, with seqs 1..=N.
    let mut sent: HashMap<String, u64> = HashMap::new();
    while sent.len() < MESSAGES {
        match tokio::time::timeout(Duration::from_secs(30), alice_events.recv()).await.expect("sent in time") {
            Some(Event::Sent { client_msg_id, seq, .. }) => {
                assert!(sent.insert(client_msg_id, seq).is_none(), "a send was confirmed twice");
            }
            Some(Event::SendFailed { code, message, .. }) => panic!("send failed: {code} {message}"),
            Some(_) => {}
            None => panic!("alice's session ended"),
        }
    }
    let mut seqs: Vec<u64> = sent.values().copied().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=MESSAGES as u64).collect::<Vec<_>>(), "seed {seed}: seqs not gap-free");
    let history = s.history(&b, &conv).await;
    assert_eq!(history.len(), MESSAGES, "seed {seed}: a retry created a duplicate");
    for (k, r) in receivers.into_iter().enumerate() {
        let got = r.await.unwrap();
        let got_seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(got_seqs, (1..=MESSAGES as u64).collect::<Vec<_>>(), "seed {seed}: device {k} after {cuts} cuts");
        for ((_, id), h) in got.iter().zip(&history) {
            assert_eq!(id, h["message_id"].as_str().unwrap());
        }
    }
    eprintln!("seed {seed}: {cuts} connections cut, every device whole");
    assert!(cuts > 0, "seed {seed} cut nothing; pick another");
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_gets_every_message_once_in_order_despite_drops() {
    for seed in [1, 2, 3] {
        run(seed).await;
    }
}
