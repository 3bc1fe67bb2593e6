//! The Banter server as a library: [`run`] serves HTTP and WebSocket on one
//! listener until its shutdown token is cancelled, then drains.
//!
//! Map of the crate (see ARCHITECTURE.md for the whole picture):
//! - [`http`]: thin handlers of the HTTP API; [`ws`]: the realtime gateway.
//! - [`messaging`]: the send path; [`fanout`]: the queue for large groups.
//! - [`hub`]: live connections of this node; [`presence`]: online/offline.
//! - [`acks`]: the cursor writes of every connection, coalesced and stored together.
//! - [`members`]: the member-list cache; [`ids`]: Snowflake message ids.
//! - [`cluster`]: cluster mode, where nodes share a store and talk over NATS.
//! - [`error`]: the one error type, mapped to the wire catalogue.

pub mod acks;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fanout;
pub mod finish;
pub mod front;
pub mod http;
pub mod hub;
pub mod ids;
pub mod latency;
pub mod maps;
pub mod members;
pub mod messaging;
pub mod meters;
pub mod presence;
pub mod priority;
pub mod push_room;
pub mod pushes;
pub mod side_runtime;
pub mod state;
pub mod threads;
pub mod views;
pub mod ws;

pub use config::Config;

use banter_store::Store;
use state::AppState;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for connections and commits to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// How often the recorder folds its histograms' samples into their buckets.
/// A scrape of `/metrics` does it too; until one of them does, the recorder
/// holds every sample in memory, so a server nobody scrapes would grow.
pub const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Builds the shared state on `store`, in cluster mode when a `cluster` is
/// given. Called on the main runtime, whose handle the quiet lane keeps;
/// fails only if it is not, or if the sending lane's threads cannot start.
pub fn state(
    config: Config,
    store: Arc<dyn Store>,
    cluster: Option<cluster::Cluster>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> std::io::Result<Arc<AppState>> {
    let max_pushes = config.fanout_max_pushes;
    let delivery_priority = config.delivery_priority;
    Ok(Arc::new(AppState {
        ids: ids::Snowflake::new(config.node_id),
        config,
        store,
        hub: Default::default(),
        members: Default::default(),
        presence: Default::default(),
        fanout: fanout::Fanout::new(max_pushes),
        cluster: cluster.map(Arc::new),
        tokens: Default::default(),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        connections: AtomicUsize::new(0),
        readers: ws::answers::Lanes::new()?,
        front: front::Front::new(delivery_priority)?,
        meters: meters::Meters::new(),
        acks: Default::default(),
        metrics,
    }))
}

/// Installs the Prometheus recorder (once per process) and describes the metrics.
pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    let ms = latency::BUCKETS_MS;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Suffix("_ms".into()), &ms)
        .ok()?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("store_commit_batch_size".into()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0],
        )
        .ok()?
        .install_recorder()
        .ok()?;
    metrics::describe_gauge!("websocket_connections", "Open WebSocket connections");
    metrics::describe_counter!("messages_sent_total", "Messages stored (duplicates excluded)");
    metrics::describe_counter!("messages_delivered_total", "Messages acknowledged by devices");
    metrics::describe_counter!("delivery_retries_total", "Conversations rewound after an ack timeout");
    metrics::describe_counter!("push_dropped_total", "Pushes dropped because a connection's queue was full");
    metrics::describe_gauge!("fanout_queue_depth", "Jobs waiting in the large-group fan-out queue");
    metrics::describe_gauge!(
        "fanout_conversations_behind",
        "Large groups whose newest messages found no room in the fan-out queue and are read back from the store"
    );
    metrics::describe_counter!(
        "fanout_from_store_total",
        "Messages of large groups that the fan-out read back from the store, the queue having had no room"
    );
    metrics::describe_gauge!("delivery_inflight_messages", "Messages pushed to devices and not yet acknowledged");
    metrics::describe_gauge!(
        "delivery_backlog_messages",
        "Stored messages waiting to stream to devices that are behind"
    );
    metrics::describe_gauge!(
        "readers_sending",
        "Connections whose reader is on the sending lane: it read a send, and no frame since that came 2 s or more after the last one"
    );
    metrics::gauge!("readers_sending").set(0.0);
    metrics::gauge!("delivery_inflight_messages").set(0.0);
    metrics::gauge!("delivery_backlog_messages").set(0.0);
    metrics::gauge!("fanout_queue_depth").set(0.0);
    metrics::gauge!("fanout_conversations_behind").set(0.0);
    metrics::counter!("fanout_from_store_total").absolute(0);
    metrics::describe_counter!("cluster_events_dropped_total", "Bus events not published (outbox full or bus down)");
    metrics::describe_gauge!("cluster_bus_connected", "1 while the bus (NATS) is connected, in cluster mode");
    metrics::describe_gauge!("cluster_nodes", "Nodes this node hears from, itself included, in cluster mode");
    metrics::describe_histogram!("store_commit_batch_size", "Jobs per store commit");
    metrics::describe_histogram!("store_commit_latency_ms", "Duration of one store commit, ms");
    metrics::describe_counter!(
        "history_cache_lookups_total",
        "Pages of messages read by the embedded store, by outcome: hit (from the recent messages in memory) or miss"
    );
    metrics::gauge!("websocket_connections").set(0.0);
    metrics::counter!("messages_sent_total").absolute(0);
    metrics::counter!("messages_delivered_total").absolute(0);
    Some(handle)
}

/// Runs the recorder's upkeep every [`METRICS_UPKEEP_INTERVAL`] until shutdown.
async fn metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Accepts and serves HTTP and WebSocket upgrades until `shutdown` is cancelled.
async fn serve_http(listener: TcpListener, app: axum::Router, shutdown: CancellationToken) -> std::io::Result<()> {
    // Frames are small and latency matters: no Nagle delay.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // Made into a service once: served as a plain `Router`, axum would copy
    // the whole route table for every TCP connection, every WebSocket included.
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Serves until `state.shutdown` is cancelled; then stops accepting, closes
/// every connection with 1001, waits for in-flight work, and returns.
pub async fn run(state: Arc<AppState>, listener: TcpListener) -> std::io::Result<()> {
    let worker = state.tasks.spawn(fanout::Fanout::run(Arc::clone(&state)));
    state.tasks.spawn(acks::AckBuffer::run(Arc::clone(&state)));
    if let Some(handle) = state.metrics.clone() {
        state.tasks.spawn(metrics_upkeep(handle, state.shutdown.clone()));
    }
    // Every connection closes with 1001 when shutdown begins; one registered
    // after this sweep sees the token itself (`ws::connection`).
    let sweep = Arc::clone(&state);
    state.tasks.spawn(async move {
        sweep.shutdown.cancelled().await;
        sweep.hub.close_all(banter_proto::close::GOING_AWAY);
    });
    cluster::node::start(&state);
    let app = http::router(Arc::clone(&state));
    let shutdown = state.shutdown.clone();
    let served = match &state.front {
        // The listener is registered again on the front runtime, which then
        // owns every socket it accepts (`front.rs`).
        Some(front) => {
            let listener = listener.into_std()?;
            let serving = front.handle().spawn(async move {
                let listener = TcpListener::from_std(listener)?;
                serve_http(listener, app, shutdown).await
            });
            serving.await.map_err(std::io::Error::other)?
        }
        None => serve_http(listener, app, shutdown).await,
    };
    // The listener is closed; the sweep above closes every connection with 1001.
    state.tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, state.tasks.wait()).await.is_err() {
        tracing::warn!("some connections did not finish within the shutdown grace");
    }
    worker.abort();
    served
}
