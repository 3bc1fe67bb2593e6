//! A database created for one test and dropped after it.
//!
//! The server is the one `BANTER_TEST_POSTGRES` names (an admin connection
//! string; by default `postgres://postgres@127.0.0.1:5432/postgres`). A test
//! that cannot reach it fails: PostgreSQL is part of the test environment.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Numbers the databases of this test process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty database, dropped (with its connections) when this is dropped.
pub struct TestDb {
    name: String,
    admin: Config,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let url = std::env::var("BANTER_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let admin: Config = url.parse().expect("BANTER_TEST_POSTGRES is a PostgreSQL connection string");
        let name = format!("banter_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let client = connect(&admin).await;
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
        TestDb { name, admin }
    }

    /// The connection string of the test database.
    pub fn url(&self) -> String {
        let (host, port) = self.host_and_port();
        self.url_to(&host, port)
    }

    /// The connection string of the test database, through `addr` (a proxy).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        self.url_to(&addr.ip().to_string(), addr.port())
    }

    /// Where the server listens, for a proxy in front of it.
    pub fn server_addr(&self) -> SocketAddr {
        let (host, port) = self.host_and_port();
        let host = if host == "localhost" { "127.0.0.1".to_owned() } else { host };
        format!("{host}:{port}").parse().expect("BANTER_TEST_POSTGRES names an IP address or localhost")
    }

    /// A connection of its own to the test database, outside any store.
    pub async fn client(&self) -> Client {
        let mut config = self.admin.clone();
        config.dbname(&self.name);
        connect(&config).await
    }

    /// The name of the test database.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn host_and_port(&self) -> (String, u16) {
        let host = match self.admin.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            _ => panic!("BANTER_TEST_POSTGRES must name a TCP host"),
        };
        (host, self.admin.get_ports().first().copied().unwrap_or(5432))
    }

    /// A key=value connection string, which needs no URL escaping.
    fn url_to(&self, host: &str, port: u16) -> String {
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut url = format!("host={} port={port} dbname={}", quote(host), quote(&self.name));
        if let Some(user) = self.admin.get_user() {
            url.push_str(&format!(" user={}", quote(user)));
        }
        if let Some(password) = self.admin.get_password() {
            url.push_str(&format!(" password={}", quote(&String::from_utf8_lossy(password))));
        }
        url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Dropping needs async I/O, and `drop` may run inside a runtime (or
        // while a test panics), so it runs on a thread and runtime of its own.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let (client, connection) = admin.connect(NoTls).await?;
                tokio::spawn(connection);
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop test database {}: the dropping thread panicked", self.name),
        }
    }
}

async fn connect(config: &Config) -> Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be reachable for these tests (set BANTER_TEST_POSTGRES): {e}"));
    tokio::spawn(connection);
    client
}
