//! Test harness: runs the real `banter` binary on an ephemeral port with a
//! temporary data directory, and speaks raw HTTP and WebSocket frames to it.

#![allow(dead_code)]

pub mod cluster;
pub mod proxy;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// How long any single expectation waits before failing the test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server process.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Server {
    /// Starts a server with test-friendly defaults plus `extra` flags.
    pub async fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = extra.iter().map(|s| s.to_string()).collect();
        let mut s = Server { child: None, addr: "127.0.0.1:0".parse().unwrap(), dir, args };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_banter"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--argon2-memory-kib")
            .arg("64")
            .args(&self.args)
            .env("BANTER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start banter");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read listening line");
        let addr = line.trim().rsplit("http://").next().expect("address").parse().expect("socket address");
        self.addr = addr;
        self.child = Some(child);
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Starts the server again on the same data directory (after a kill or a stop).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn();
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill");
            c.wait().expect("wait");
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        c.wait().expect("wait")
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn http(&self) -> Http {
        Http { base: self.base(), client: reqwest::Client::new() }
    }

    /// Registers `name` and logs in one device.
    pub async fn user(&self, name: &str) -> User {
        let http = self.http();
        let (status, body) = http.post("/v1/users", None, json!({"username": name, "password": "password123"})).await;
        assert_eq!(status, 201, "register {name}: {body}");
        self.login(name).await
    }

    /// Logs in another device of an existing user.
    pub async fn login(&self, name: &str) -> User {
        let (status, body) =
            self.http().post("/v1/sessions", None, json!({"username": name, "password": "password123"})).await;
        assert_eq!(status, 201, "login {name}: {body}");
        User {
            id: body["user_id"].as_str().unwrap().to_owned(),
            device: body["device_id"].as_str().unwrap().to_owned(),
            token: body["token"].as_str().unwrap().to_owned(),
            name: name.to_owned(),
        }
    }

    /// Opens a WebSocket and completes the hello.
    pub async fn connect(&self, user: &User) -> Ws {
        let mut ws = Ws::open(self.addr).await;
        ws.send(json!({"type": "hello", "token": user.token})).await;
        let welcome = ws.expect("welcome").await;
        assert_eq!(welcome["user_id"], user.id.as_str());
        assert_eq!(welcome["device_id"], user.device.as_str());
        ws
    }

    /// Waits until the server counts `n` open WebSocket connections
    /// (`websocket_connections` in `/metrics`), which it does once a closed
    /// connection's task has finished.
    pub async fn wait_for_connections(&self, n: u64) {
        self.wait_for_gauge("websocket_connections", n).await;
    }

    /// The value of the unlabelled metric `name` in `/metrics`, if present.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.base())).await.unwrap().text().await.unwrap();
        let prefix = format!("{name} ");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok())
    }

    /// Waits until the gauge `name` in `/metrics` reads `n`.
    pub async fn wait_for_gauge(&self, name: &str, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.metric(name).await;
            if value == Some(n as f64) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name} stayed at {value:?}, not {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates (or finds) the direct conversation of `a` and `b`.
    pub async fn direct(&self, a: &User, b: &User) -> String {
        let (status, body) =
            self.http().post("/v1/conversations", Some(&a.token), json!({"kind": "direct", "members": [b.id]})).await;
        assert!(status == 201 || status == 200, "{body}");
        body["conversation_id"].as_str().unwrap().to_owned()
    }

    /// Creates a group of `creator` and `members`.
    pub async fn group(&self, creator: &User, members: &[&User]) -> String {
        let ids: Vec<&str> = members.iter().map(|u| u.id.as_str()).collect();
        let (status, body) = self
            .http()
            .post("/v1/conversations", Some(&creator.token), json!({"kind": "group", "title": "g", "members": ids}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["conversation_id"].as_str().unwrap().to_owned()
    }

    /// The whole history of a conversation, ascending.
    pub async fn history(&self, user: &User, conversation: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let (status, page) = self
                .http()
                .get(&format!("/v1/conversations/{conversation}/messages?after={after}&limit=200"), Some(&user.token))
                .await;
            assert_eq!(status, 200, "{page}");
            let msgs = page["messages"].as_array().unwrap().clone();
            if let Some(last) = msgs.last() {
                after = last["seq"].as_u64().unwrap();
            }
            all.extend(msgs);
            if !page["has_more"].as_bool().unwrap() {
                return all;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A logged-in device.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub device: String,
    pub token: String,
    pub name: String,
}

/// Raw HTTP with JSON bodies.
pub struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body)).await
    }
    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{}", self.base, path)).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.body(body.to_owned()).send().await.expect("http request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, token, None).await
    }
}

type Stream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket speaking JSON frames.
pub struct Ws {
    stream: Stream,
}

/// What `next` saw.
#[derive(Debug)]
pub enum Seen {
    Frame(Value),
    Closed(Option<u16>),
}

impl Ws {
    pub async fn open(addr: SocketAddr) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/v1/ws"), None, true)
            .await
            .expect("ws connect");
        Ws { stream }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, t: &str) {
        self.try_send_text(t).await.expect("ws send");
    }

    /// Sends a text frame; an error when the connection is gone.
    pub async fn try_send_text(&mut self, t: &str) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.stream.send(Message::text(t)).await
    }

    /// The next frame or close, within `wait`; `None` on timeout.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()?;
            return Some(match msg {
                Some(Ok(Message::Text(t))) => Seen::Frame(serde_json::from_str(&t).expect("server frames are JSON")),
                Some(Ok(Message::Close(f))) => Seen::Closed(f.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Seen::Closed(None),
            });
        }
    }

    /// The next frame; panics on close or timeout.
    pub async fn next(&mut self) -> Value {
        match self.next_within(WAIT).await {
            Some(Seen::Frame(v)) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Skips frames until one of type `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Skips frames until one of type `kind`, waiting up to `wait` in all.
    pub async fn expect_within(&mut self, kind: &str, wait: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(Seen::Frame(v)) if v["type"] == kind => return v,
                Some(Seen::Frame(_)) => continue,
                other => panic!("expected {kind}, got {other:?}"),
            }
        }
    }

    /// Skips frames until the connection closes; returns the close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next_within(WAIT).await {
                Some(Seen::Frame(_)) => continue,
                Some(Seen::Closed(code)) => return code,
                None => panic!("connection did not close"),
            }
        }
    }

    /// Asserts that no frame of type `kind` arrives within `wait`.
    pub async fn expect_no(&mut self, kind: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                None => return,
                Some(Seen::Frame(v)) if v["type"] == kind => panic!("unexpected {kind}: {v}"),
                Some(Seen::Frame(_)) => continue,
                Some(Seen::Closed(c)) => panic!("closed ({c:?}) while waiting"),
            }
        }
    }

    /// Sends a text message and waits for its `sent`.
    pub async fn send_text_message(&mut self, conversation: &str, client_msg_id: &str, text: &str) -> Value {
        self.send(json!({"type": "send", "client_msg_id": client_msg_id, "conversation_id": conversation,
                         "content": {"type": "text", "text": text}}))
            .await;
        let sent = self.expect("sent").await;
        assert_eq!(sent["client_msg_id"], client_msg_id);
        sent
    }

    /// Sends messages `c{i}`/`m{i}` for each `i` of `ids`, each waiting for its `sent`.
    pub async fn send_numbered(&mut self, conversation: &str, ids: std::ops::RangeInclusive<u64>) {
        for i in ids {
            self.send_text_message(conversation, &format!("c{i}"), &format!("m{i}")).await;
        }
    }

    /// Expects the next messages to carry exactly these seqs, in order.
    pub async fn expect_seqs(&mut self, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            assert_eq!(self.expect("message").await["seq"], seq);
        }
    }

    pub async fn ack(&mut self, conversation: &str, seq: u64) {
        self.send(json!({"type": "ack", "conversation_id": conversation, "seq": seq})).await;
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
