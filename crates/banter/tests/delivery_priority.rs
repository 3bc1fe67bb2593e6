//! The server's threads, read from `/proc`: which are in Linux's
//! `SCHED_IDLE` class with `--delivery-priority`, and how many workers the
//! main runtime runs (`--worker-threads`); and that accounts, conversations
//! (HTTP) and messages (WebSocket) still work with each.

#![cfg(target_os = "linux")]

mod common;

use common::Server;
use std::collections::BTreeMap;

/// Linux's number for `SCHED_IDLE`.
const SCHED_IDLE: u32 = 5;

/// Each thread name of process `pid` with the scheduling policies its threads have.
fn policies(pid: u32) -> BTreeMap<String, Vec<u32>> {
    let mut by_name: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads") {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else { continue };
        // `pid (comm) state …`: the name may hold spaces, so fields are counted after its `)`.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_owned();
        // Field 41 of proc_pid_stat(5) is the policy; the fields after `)` start at field 3.
        let policy = stat[close + 1..].split_whitespace().nth(41 - 3).and_then(|f| f.parse().ok()).unwrap();
        by_name.entry(name).or_default().push(policy);
    }
    by_name
}

/// A group above the fan-out threshold: every member gets the message.
async fn a_large_group_message_arrives(s: &Server) {
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let conv = s.group(&a, &[&b, &c]).await;
    let (mut wa, mut wb, mut wc) = (s.connect(&a).await, s.connect(&b).await, s.connect(&c).await);
    let sent = wa.send_text_message(&conv, "m1", "hello").await;
    for ws in [&mut wb, &mut wc] {
        assert_eq!(ws.expect("message").await["message_id"], sent["message_id"]);
    }
}

#[tokio::test]
async fn low_puts_the_delivering_threads_in_the_idle_class_and_no_other() {
    let s = Server::start(&["--delivery-priority", "low", "--fanout-sync-threshold", "2"]).await;
    a_large_group_message_arrives(&s).await;
    let threads = policies(s.pid());
    // The main runtime's workers run the connections and read the quiet connections' acks.
    let p = &threads["tokio-rt-worker"];
    assert!(p.iter().all(|&p| p == SCHED_IDLE), "tokio-rt-worker: {p:?}");
    // The send path (sending lane, writer) and everything else stay in the normal class.
    for (name, p) in &threads {
        if name != "tokio-rt-worker" {
            assert!(p.iter().all(|&p| p != SCHED_IDLE), "{name}: {p:?}");
        }
    }
    // The front runtime, which owns the sockets' events and HTTP, is among them.
    for normal in ["banter-front", "banter-answers", "banter-sqlite-w"] {
        assert!(threads.contains_key(normal), "{normal}: {threads:?}");
    }
}

#[tokio::test]
async fn by_default_no_thread_is_in_the_idle_class() {
    let s = Server::start(&["--fanout-sync-threshold", "2"]).await;
    a_large_group_message_arrives(&s).await;
    let threads = policies(s.pid());
    for (name, p) in &threads {
        assert!(p.iter().all(|&p| p != SCHED_IDLE), "{name}: {p:?}");
    }
    // Without `low` there is no front runtime: the main runtime accepts and serves.
    assert!(!threads.contains_key("banter-front"), "{threads:?}");
}

/// The main runtime's workers: threads named `tokio-rt-worker` before any
/// request (the password hashing's blocking threads, named alike, start
/// with the first account).
fn main_workers(pid: u32) -> usize {
    policies(pid).get("tokio-rt-worker").map_or(0, Vec::len)
}

#[tokio::test]
async fn the_main_runtime_runs_as_many_workers_as_asked_and_one_core_fewer_by_default() {
    let s = Server::start(&["--worker-threads", "3", "--fanout-sync-threshold", "2"]).await;
    assert_eq!(main_workers(s.pid()), 3);
    a_large_group_message_arrives(&s).await;
    // The default is the server's own rule (unit-tested in `threads.rs`); this checks it is applied.
    let s = Server::start(&["--fanout-sync-threshold", "2"]).await;
    assert_eq!(main_workers(s.pid()), banter_server::threads::main_workers());
    a_large_group_message_arrives(&s).await;
}
