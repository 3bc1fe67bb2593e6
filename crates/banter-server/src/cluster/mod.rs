//! Cluster mode: nodes that share one store and tell each other, over NATS,
//! what their own connections need to know.
//!
//! The store stays the truth; the bus carries hints. Every node subscribes
//! to one broadcast subject and pushes what it hears to its own devices, the
//! same way it pushes what happens locally (see [`deliver`]). What a bus can
//! lose is repaired from the store: a device that sees a seq gap reads the
//! store, and when a node reconnects to NATS or falls behind as a slow
//! consumer, every connection of that node re-reads its position.
//!
//! - [`event`]: what nodes say to each other and how it is encoded.
//! - [`deliver`]: the one way the rest of the server pushes, here and elsewhere.
//! - [`node`]: the tasks of a node: publisher, subscriber, beats, liveness.
//! - [`queue`]: the large-group fan-out queue as a JetStream work queue.

pub mod deliver;
pub mod event;
pub mod node;
mod queue;

pub use event::{Envelope, Event, NodeId};

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often a node says it is alive.
pub const BEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long is taken for dead: its users'
/// connections count as closed (and the presence grace applies).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// Events waiting to be published; past it an event is dropped and counted
/// (devices that miss a message catch up from the store).
pub const OUTBOX: usize = 16_384;
/// How long a send waits for JetStream to take a large-group fan-out job
/// before it pushes the message itself.
pub const QUEUE_PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the bus is and which names this deployment uses on it.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `nats://host:port`, or several separated by commas.
    pub url: String,
    /// Prefix of every subject, stream and consumer, so deployments can share a NATS.
    pub prefix: String,
}

/// Why the bus could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("connecting to NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
    #[error("setting up JetStream: {0}")]
    JetStream(String),
}

/// This node's end of the bus.
#[derive(Debug)]
pub struct Cluster {
    node: NodeId,
    client: async_nats::Client,
    events_subject: String,
    queue: queue::Queue,
    outbox: mpsc::Sender<Bytes>,
    taken: Mutex<Option<Taken>>,
    connected: AtomicBool,
    /// Events may have been lost (slow consumer, subscription ended): repair at the next beat.
    missed: AtomicBool,
    /// When each other node was last heard from.
    peers: Mutex<HashMap<NodeId, Instant>>,
}

/// Receivers handed to the node's tasks when they start.
#[derive(Debug)]
struct Taken {
    outbox: mpsc::Receiver<Bytes>,
    connection_events: mpsc::Receiver<async_nats::Event>,
}

impl Cluster {
    /// Connects to NATS and sets up the fan-out stream. Tasks start with [`node::start`].
    pub async fn connect(config: &BusConfig, node: NodeId) -> Result<Cluster, BusError> {
        let (events_tx, connection_events) = mpsc::channel(64);
        let client = async_nats::ConnectOptions::new()
            .name(format!("banter-node-{node}"))
            .connection_timeout(Duration::from_secs(3))
            .subscription_capacity(OUTBOX)
            .event_callback(move |e| {
                // Only connection state changes and slow-consumer reports; dropping
                // one when the channel is full loses nothing the next one won't say.
                let _ = events_tx.try_send(e);
                async {}
            })
            .connect(config.url.as_str())
            .await
            .map_err(|source| BusError::Connect { url: config.url.clone(), source })?;
        let queue = queue::Queue::open(&client, &config.prefix).await?;
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        Ok(Cluster {
            node,
            client,
            events_subject: format!("{}.events", config.prefix),
            queue,
            outbox,
            taken: Mutex::new(Some(Taken { outbox: outbox_rx, connection_events })),
            connected: AtomicBool::new(true),
            missed: AtomicBool::new(false),
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Whether the bus is connected right now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Queues an event for every other node. Never waits: when the outbox is
    /// full the event is dropped and counted, and the store repairs the miss.
    pub fn publish(&self, event: Event, payload: &[u8]) {
        let bytes = Envelope { from: self.node, event }.encode(payload);
        if self.outbox.try_send(bytes).is_err() {
            metrics::counter!("cluster_events_dropped_total").increment(1);
        }
    }
}
