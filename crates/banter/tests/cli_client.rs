//! The command-line client against the real server: register, log in, start
//! a conversation, send, listen (acknowledging) and read history.

mod common;

use common::Server;
use std::process::{Command, Output};

struct Cli<'a> {
    server: &'a Server,
    config: std::path::PathBuf,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_banter"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("BANTER_SERVER", self.server.base())
            .env("BANTER_PASSWORD", "password123")
            .output()
            .expect("run banter");
        assert!(out.status.success(), "banter {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8(self.run(args).stdout).unwrap().trim().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_from_the_command_line() {
    let s = Server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let alice = Cli { server: &s, config: dir.path().join("alice.json") };
    let bob = Cli { server: &s, config: dir.path().join("bob.json") };
    alice.run(&["register", "alice"]);
    bob.run(&["register", "bob"]);
    alice.run(&["login", "alice"]);
    bob.run(&["login", "bob"]);
    let conv = alice.stdout(&["dm", "bob"]);
    assert!(conv.parse::<u64>().is_ok(), "{conv}");
    let sent = alice.stdout(&["send", &conv, "hello from the shell"]);
    assert!(sent.starts_with("seq=1 "), "{sent}");
    alice.run(&["send", &conv, "second line"]);
    let listened = tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_banter"))
            .args(["listen", "--count", "2", "--json", "--config"])
            .arg(dir.path().join("bob.json"))
            .output()
            .unwrap();
        (out, dir)
    })
    .await
    .unwrap();
    let (out, dir) = listened;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[1]["content"]["text"], "second line");
    // What was acknowledged is not pushed again.
    let bob = Cli { server: &s, config: dir.path().join("bob.json") };
    let third = alice.stdout(&["send", &conv, "third"]);
    assert!(third.starts_with("seq=3 "), "{third}");
    let again = bob.stdout(&["listen", "--count", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(v["seq"], 3);
    let history = bob.stdout(&["history", &conv]);
    assert_eq!(history.lines().count(), 3, "{history}");
    let list = bob.stdout(&["conversations"]);
    assert!(list.contains("alice"), "{list}");
    bob.run(&["logout"]);
    let out = Command::new(env!("CARGO_BIN_EXE_banter"))
        .args(["conversations", "--config"])
        .arg(dir.path().join("bob.json"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "logged out, yet it worked");
}
