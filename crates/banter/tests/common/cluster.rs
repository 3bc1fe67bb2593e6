//! What cluster tests stand on: a fresh PostgreSQL database and a private
//! prefix on NATS per test (dropped at the end), or a NATS server of the
//! test's own that it can stop and start.

use super::Server;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The PostgreSQL server tests create their databases on.
fn admin_url() -> String {
    std::env::var("BANTER_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The shared NATS server (with JetStream).
fn shared_nats() -> String {
    std::env::var("BANTER_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn unique(kind: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("banter_{kind}_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A database and a bus prefix of one test.
pub struct Backing {
    pub db_name: String,
    pub nats_url: String,
    pub prefix: String,
    pub nats: Option<NatsServer>,
}

impl Backing {
    /// A fresh database and a fresh prefix on the shared NATS.
    pub async fn shared() -> Backing {
        Backing::new(shared_nats(), None).await
    }

    /// A fresh database and a NATS server of this test's own.
    pub async fn own_nats() -> Backing {
        let nats = NatsServer::start();
        Backing::new(nats.url(), Some(nats)).await
    }

    async fn new(nats_url: String, nats: Option<NatsServer>) -> Backing {
        let db_name = unique("db");
        let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL must run for cluster tests (see scripts/services)");
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE {db_name}")).await.expect("create database");
        Backing { db_name, nats_url, prefix: unique("t").replace('_', "-"), nats }
    }

    /// The database's URL, reached directly or through `via` (a proxy).
    pub fn db_url(&self, via: Option<SocketAddr>) -> String {
        let admin = admin_url();
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin);
        let base = match via {
            Some(addr) => {
                let user =
                    base.split("://").nth(1).and_then(|r| r.split_once('@')).map(|(u, _)| u).unwrap_or("postgres");
                format!("postgres://{user}@{addr}")
            }
            None => base,
        };
        format!("{base}/{}", self.db_name)
    }

    /// Flags that make a server node `node` of this test's cluster.
    pub fn node_args(&self, node: u16, db_url: &str) -> Vec<String> {
        ["--store", db_url, "--bus", &self.nats_url, "--bus-prefix", &self.prefix, "--node-id", &node.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Starts `n` nodes (ids 1..=n) with `extra` flags.
    pub async fn nodes(&self, n: u16, extra: &[&str]) -> Vec<Server> {
        let mut nodes = Vec::new();
        for id in 1..=n {
            let mut args = self.node_args(id, &self.db_url(None));
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(Server::start(&args).await);
        }
        nodes
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        let (db, nats, stream) = (self.db_name.clone(), self.nats_url.clone(), format!("{}_fanout", self.prefix));
        let own_nats = self.nats.is_some();
        // Drop runs outside any runtime the test may still be driving.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
                }
                if !own_nats {
                    if let Ok(Ok(client)) =
                        tokio::time::timeout(Duration::from_secs(2), async_nats::connect(nats)).await
                    {
                        let _ = async_nats::jetstream::new(client).delete_stream(stream.replace('.', "_")).await;
                    }
                }
            });
        })
        .join();
    }
}

/// A nats-server process with JetStream, on a port and a store directory of its own.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn nats_binary() -> PathBuf {
    let candidates = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"];
    candidates.iter().map(PathBuf::from).find(|p| p.exists()).unwrap_or_else(|| PathBuf::from("nats-server"))
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = NatsServer { child: None, port, dir: tempfile::tempdir().unwrap() };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and store.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let child = Command::new(nats_binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (see scripts/services)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("nats-server did not start");
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
