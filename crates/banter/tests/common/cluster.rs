//! What cluster tests stand on: a fresh PostgreSQL database and a private
//! prefix on NATS per test (dropped at the end), or a NATS server or a
//! PostgreSQL server of the test's own that it can stop and start.

use super::Server;
use std::net::TcpListener;
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

    /// The database's URL.
    pub fn db_url(&self) -> String {
        let admin = admin_url();
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin);
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
            let mut args = self.node_args(id, &self.db_url());
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

/// A PostgreSQL server of a test's own (initdb in a temporary directory, on
/// a free port), so the test can stop and start it without touching the
/// machine's. As root it runs as the `postgres` user, since PostgreSQL
/// refuses to run as root.
pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

fn pg_bin(tool: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path().join("bin"))).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    versions.pop().map(|bin| bin.join(tool)).unwrap_or_else(|| PathBuf::from(tool))
}

fn as_postgres(tool: &str) -> Command {
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false);
    if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(tool));
        c
    } else {
        Command::new(pg_bin(tool))
    }
}

impl PgServer {
    pub fn start() -> PgServer {
        let dir = tempfile::tempdir().unwrap();
        let _ = Command::new("chown").arg("postgres").arg(dir.path()).status();
        let status = as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb (PostgreSQL's server package must be installed; see scripts/services)");
        assert!(status.success(), "initdb failed");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = PgServer { port, dir, running: false };
        s.restart();
        s
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Starts it (again), and waits until it accepts connections.
    pub fn restart(&mut self) {
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.dir.path().display());
        let log = self.dir.path().join("log");
        assert!(self.pg_ctl(&["-o", &options, "-l", log.to_str().unwrap(), "-w", "start"]), "pg_ctl start failed");
        self.running = true;
    }

    /// Stops it the way an operator would (fast shutdown: sessions are ended).
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.running, false) {
            self.pg_ctl(&["-m", "fast", "-w", "stop"]);
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
