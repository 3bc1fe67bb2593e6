//! `AppState`: the services every handler and connection shares.

use crate::config::Config;
use crate::fanout::Fanout;
use crate::hub::Hub;
use crate::ids::Snowflake;
use crate::members::Members;
use crate::presence::Presence;
use banter_store::Store;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared state, behind an `Arc`.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    pub members: Members,
    pub presence: Presence,
    pub ids: Snowflake,
    pub fanout: Fanout,
    /// This node's end of the bus, in cluster mode.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Tokens resolved by this node.
    pub tokens: crate::auth::TokenCache,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
    /// Owns every connection task and background task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Live WebSocket connections.
    pub connections: AtomicUsize,
    /// The runtimes of the connections' readers, which store and answer sends
    /// apart from the connections' runtime (`ws/answers.rs`).
    pub readers: crate::ws::answers::Lanes,
    /// With `--delivery-priority low`, the runtime of the listener, HTTP and
    /// the sockets' events (`front.rs`); `None` otherwise.
    pub front: Option<crate::front::Front>,
    /// Acks of every connection, waiting to be stored together.
    pub acks: crate::acks::AckBuffer,
    /// The hot paths' metric handles.
    pub meters: crate::meters::Meters,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}
