//! Server configuration. The binary fills it from flags and `BANTER_*`
//! variables (flag > environment > default); tests build it directly.

use crate::priority::DeliveryPriority;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `banter serve` can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the HTTP and WebSocket listener.
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Snowflake node id (0–1023), unique per node of a deployment.
    pub node_id: u16,
    /// How long a pushed message may stay unacknowledged before it is pushed again.
    pub ack_timeout: Duration,
    /// A connection silent for longer than this is closed with 4003.
    pub presence_timeout: Duration,
    /// How long a user with no connection stays online, so a quick reconnect does not flap.
    pub presence_grace: Duration,
    /// Groups up to this many members are fanned out on the send path; larger ones through the queue.
    pub fanout_sync_threshold: u64,
    /// Most pushes of the fan-out queue made or waiting and not yet handled
    /// by connections; beyond it, large groups' messages wait in the store.
    pub fanout_max_pushes: usize,
    /// Most unacknowledged messages in flight to one device.
    pub delivery_window: u32,
    /// Largest accepted WebSocket frame, in bytes; larger ones close the connection with 1009.
    pub max_frame_bytes: usize,
    /// Sustained frames per second allowed per connection.
    pub rate_limit_per_sec: u32,
    /// Burst of frames allowed per connection above the sustained rate.
    pub rate_limit_burst: u32,
    /// Most WebSocket connections held at once; more are refused with 503.
    pub max_connections: usize,
    /// `true` for `synchronous=FULL` (fsync each commit); `false` for `NORMAL`.
    pub sync_full: bool,
    /// Memory cost of the argon2 password hash, in KiB.
    pub argon2_memory_kib: u32,
    /// Serve the web client from this directory instead of the copy built into the binary.
    pub web_dir: Option<PathBuf>,
    /// Whether the threads that deliver give way to the send path ([`crate::priority`]).
    pub delivery_priority: DeliveryPriority,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            data_dir: PathBuf::from("banter-data"),
            node_id: 0,
            ack_timeout: Duration::from_millis(5_000),
            presence_timeout: Duration::from_millis(60_000),
            presence_grace: Duration::from_millis(2_000),
            fanout_sync_threshold: 500,
            fanout_max_pushes: crate::fanout::FANOUT_PUSHES,
            delivery_window: 256,
            max_frame_bytes: banter_proto::limits::DEFAULT_MAX_FRAME_BYTES,
            rate_limit_per_sec: 1_000,
            rate_limit_burst: 5_000,
            max_connections: 100_000,
            sync_full: true,
            argon2_memory_kib: 19 * 1024,
            web_dir: None,
            delivery_priority: DeliveryPriority::Normal,
        }
    }
}

impl Config {
    /// The interval clients are told to heartbeat at: a third of the presence timeout.
    pub fn heartbeat_interval(&self) -> Duration {
        self.presence_timeout / 3
    }

    /// How long clients may hold their acks in conversations that keep no
    /// receipts (above the fan-out threshold): a tenth of the ack timeout,
    /// so a held ack comes long before the message would be pushed again.
    pub fn lazy_ack(&self) -> Duration {
        self.ack_timeout / 10
    }
}
