//! Handles on the metrics that the hot paths move, looked up once when the
//! server starts, so a send, a push or an ack does no registry lookup.
//! `install_metrics` (in the crate root) describes them.

use crate::latency::LatencyHistogram;
use metrics::{Counter, Gauge};

/// The hot paths' metrics.
pub struct Meters {
    /// `messages_sent_total`: messages stored, duplicates excluded.
    pub sent: Counter,
    /// `messages_delivered_total`: messages acknowledged by devices.
    pub delivered: Counter,
    /// `delivery_retries_total`: conversations rewound after an ack timeout.
    pub retries: Counter,
    /// `delivery_inflight_messages`: pushed and not yet acknowledged.
    pub inflight: Gauge,
    /// `delivery_backlog_messages`: stored, waiting to stream to devices that are behind.
    pub backlog: Gauge,
    /// `message_delivery_latency_ms`: stored → pushed; rendered by `/metrics`
    /// itself, not by the recorder (`latency.rs`).
    pub latency: LatencyHistogram,
    /// `readers_sending`: connections whose reader is on the sending lane.
    pub sending: Gauge,
}

impl Meters {
    /// Looks the handles up in the installed recorder (no-ops if there is none).
    pub fn new() -> Meters {
        Meters {
            sent: metrics::counter!("messages_sent_total"),
            delivered: metrics::counter!("messages_delivered_total"),
            retries: metrics::counter!("delivery_retries_total"),
            inflight: metrics::gauge!("delivery_inflight_messages"),
            backlog: metrics::gauge!("delivery_backlog_messages"),
            latency: LatencyHistogram::default(),
            sending: metrics::gauge!("readers_sending"),
        }
    }

    /// Records stored → pushed latency of a message stored at `ts`, pushed at
    /// `now_ms` (read once for the frames written together).
    pub fn record_latency(&self, ts: i64, now_ms: i64) {
        self.latency.record((now_ms - ts).max(0) as u64);
    }

    /// Appends to `/metrics` what the recorder does not render.
    pub fn render(&self, out: &mut String) {
        self.latency.render(
            "message_delivery_latency_ms",
            "Time from a message being stored to its push to a device, ms",
            out,
        );
    }
}

impl Default for Meters {
    fn default() -> Self {
        Meters::new()
    }
}

impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters").finish_non_exhaustive()
    }
}
