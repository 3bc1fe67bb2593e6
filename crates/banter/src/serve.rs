//! `banter serve`: flags and `BANTER_*` variables into a [`Config`], the
//! store, the listener, signals.

use anyhow::Context;
use banter_server::cluster::{BusConfig, Cluster};
use banter_server::priority::DeliveryPriority;
use banter_server::Config;
use banter_store::postgres::PgStore;
use banter_store::sqlite::{SqliteStore, Synchronous};
use banter_store::Store;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How SQLite syncs commits.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SyncMode {
    /// fsync every commit: nothing acknowledged is lost, even on power loss.
    Full,
    /// No fsync per commit: survives a crash of the process, not of the machine.
    Normal,
}

/// Flags of `banter serve`. Each is also read from `BANTER_<NAME>`; a flag wins over the variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "BANTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "BANTER_DATA_DIR", default_value = "./banter-data")]
    pub data_dir: PathBuf,
    /// The store: `sqlite` (embedded, in --data-dir) or a `postgres://` URL shared by every node of a cluster.
    #[arg(long, env = "BANTER_STORE", default_value = "sqlite")]
    pub store: String,
    /// The bus between the nodes of a cluster: a `nats://` URL (NATS with JetStream). Needs a postgres store.
    #[arg(long, env = "BANTER_BUS")]
    pub bus: Option<String>,
    /// Prefix of the subjects, stream and consumer this deployment uses on the bus.
    #[arg(long, env = "BANTER_BUS_PREFIX", default_value = "banter", value_parser = parse_prefix)]
    pub bus_prefix: String,
    /// Node id (0-1023) for Snowflake message ids.
    #[arg(long, env = "BANTER_NODE_ID", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1023))]
    pub node_id: u16,
    /// Push an unacknowledged message again after this many ms.
    #[arg(long, env = "BANTER_ACK_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub ack_timeout_ms: u64,
    /// Close a connection silent for longer than this many ms (4003).
    #[arg(long, env = "BANTER_PRESENCE_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub presence_timeout_ms: u64,
    /// A user with no connection turns offline after this many ms.
    #[arg(long, env = "BANTER_PRESENCE_GRACE_MS", default_value_t = 2_000)]
    pub presence_grace_ms: u64,
    /// Groups up to this many members are fanned out on the send path.
    #[arg(long, env = "BANTER_FANOUT_SYNC_THRESHOLD", default_value_t = 500)]
    pub fanout_sync_threshold: u64,
    /// Most pushes of the large-group fan-out in flight to connections; past it, messages wait
    /// in the store and the fan-out reads them back.
    #[arg(long, env = "BANTER_FANOUT_MAX_PUSHES", default_value_t = banter_server::fanout::FANOUT_PUSHES as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub fanout_max_pushes: u32,
    /// Most unacknowledged messages in flight per device (at least 64).
    #[arg(long, env = "BANTER_DELIVERY_WINDOW", default_value_t = 256, value_parser = clap::value_parser!(u32).range(64..=65536))]
    pub delivery_window: u32,
    /// Largest WebSocket frame in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "BANTER_MAX_FRAME_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1024..=16_777_216))]
    pub max_frame_bytes: u64,
    /// Frames per second allowed per connection (sustained).
    #[arg(long, env = "BANTER_RATE_LIMIT_PER_SEC", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_per_sec: u32,
    /// Frames allowed in a burst per connection.
    #[arg(long, env = "BANTER_RATE_LIMIT_BURST", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,
    /// Most WebSocket connections held at once.
    #[arg(long, env = "BANTER_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// SQLite durability: `full` fsyncs every commit (default); `normal` does not.
    #[arg(long, env = "BANTER_SQLITE_SYNCHRONOUS", value_enum, default_value_t = SyncMode::Full)]
    pub sqlite_synchronous: SyncMode,
    /// MiB of recent messages the embedded store keeps in memory for history and catch-up
    /// reads (the newest messages of the conversations read lately); 0 keeps none.
    #[arg(long, env = "BANTER_HISTORY_CACHE_MIB", default_value_t = (banter_store::sqlite::DEFAULT_HISTORY_CACHE_BYTES >> 20) as u32,
          value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub history_cache_mib: u32,
    /// Memory cost of password hashing (argon2id), KiB.
    #[arg(long, env = "BANTER_ARGON2_MEMORY_KIB", default_value_t = 19_456, value_parser = clap::value_parser!(u32).range(8..))]
    pub argon2_memory_kib: u32,
    /// Serve the web client from this directory instead of the copy built into the binary.
    #[arg(long, env = "BANTER_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// `normal` (the default) or `low`: the threads that deliver (connections, acks) give way
    /// to those that store and answer sends (Linux `SCHED_IDLE`); for a machine or container
    /// that runs Banter alone.
    #[arg(long, env = "BANTER_DELIVERY_PRIORITY", default_value = "normal",
          value_parser = PossibleValuesParser::new(["normal", "low"]).map(|p| match p.as_str() {
              "low" => DeliveryPriority::Low,
              _ => DeliveryPriority::Normal,
          }))]
    pub delivery_priority: DeliveryPriority,
    /// Workers of the main runtime, which runs the connections and HTTP and delivers messages
    /// [default: one per core but one, at least one].
    #[arg(long, env = "BANTER_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

impl ServeArgs {
    /// The store, for the log: never the password of a postgres URL.
    fn store_label(&self) -> &str {
        if self.store == "sqlite" {
            "sqlite"
        } else {
            "postgres"
        }
    }

    fn config(&self) -> Config {
        Config {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            node_id: self.node_id,
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            presence_timeout: Duration::from_millis(self.presence_timeout_ms),
            presence_grace: Duration::from_millis(self.presence_grace_ms),
            fanout_sync_threshold: self.fanout_sync_threshold,
            fanout_max_pushes: self.fanout_max_pushes as usize,
            delivery_window: self.delivery_window,
            max_frame_bytes: self.max_frame_bytes as usize,
            rate_limit_per_sec: self.rate_limit_per_sec,
            rate_limit_burst: self.rate_limit_burst,
            max_connections: self.max_connections,
            sync_full: matches!(self.sqlite_synchronous, SyncMode::Full),
            argon2_memory_kib: self.argon2_memory_kib,
            web_dir: self.web_dir.clone(),
            delivery_priority: self.delivery_priority,
        }
    }
}

/// A bus prefix is one or more NATS subject tokens of letters, digits, `-` and `_`.
fn parse_prefix(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.split('.').all(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("letters, digits, '-' and '_', in dot-separated parts".into())
    }
}

/// Opens the store the flags name.
async fn open_store(args: &ServeArgs, config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if args.store == "sqlite" {
        let sync = if config.sync_full { Synchronous::Full } else { Synchronous::Normal };
        let cache = (args.history_cache_mib as usize) << 20;
        let store = SqliteStore::open_with(&config.data_dir, sync, cache).context("opening the store")?;
        return Ok(Arc::new(store));
    }
    if args.store.starts_with("postgres://") || args.store.starts_with("postgresql://") {
        let store = PgStore::connect(&args.store).await.context("connecting to PostgreSQL")?;
        return Ok(Arc::new(store));
    }
    anyhow::bail!("--store must be `sqlite` or a postgres:// URL")
}

/// Runs the server until SIGTERM or SIGINT, then drains and returns.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config();
    // Every connection is a file: take all the open files this process may have.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        tracing::info!(open_files = soft, "open-file limit");
    }
    if args.bus.is_some() && args.store == "sqlite" {
        anyhow::bail!("a cluster (--bus) needs a store the nodes share: --store postgres://...");
    }
    let store = open_store(&args, &config).await?;
    let cluster = match &args.bus {
        Some(url) => {
            let bus = BusConfig { url: url.clone(), prefix: args.bus_prefix.clone() };
            Some(Cluster::connect(&bus, config.node_id).await.context("joining the cluster")?)
        }
        None => None,
    };
    let listener = listen(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let state = banter_server::state(config, store, cluster, banter_server::install_metrics())
        .context("starting the sending lane")?;
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(%addr, store = %args.store_label(), node = args.node_id, workers, "banter listening");
    // Scripts and tests read the bound address (useful with port 0) from this line.
    println!("banter listening on http://{addr}");
    let token = state.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    banter_server::run(state, listener).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Connections the kernel holds for `accept` (it caps this at
/// `net.core.somaxconn`). A reconnect storm arrives at once: past the queue,
/// connection attempts are dropped and their clients try again only a
/// second or more later, so the queue is as long as the kernel allows
/// rather than tokio's default of 1,024.
const LISTEN_BACKLOG: u32 = 65_535;

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
