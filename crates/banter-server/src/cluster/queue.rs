//! The large-group fan-out queue in cluster mode: a JetStream stream with
//! work-queue retention and one durable pull consumer that the workers of
//! every node share. A job is the `message` event of one stored message; the
//! worker that takes it pushes to its own devices and announces it to every
//! other node, then acknowledges it. A job taken by a node that dies before
//! acknowledging is redelivered to another worker after [`ACK_WAIT`].

use super::event::{Envelope, Event};
use super::{deliver, BusError, NodeId, QUEUE_PUBLISH_TIMEOUT};
use crate::hub::Stored;
use crate::state::AppState;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Most jobs the stream holds; a send to a large group fails over to a
/// direct push when the stream is full.
pub const QUEUE_MAX_JOBS: i64 = 100_000;
/// A taken job not acknowledged within this time goes to another worker.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// Jobs taken and not yet acknowledged, across all workers.
const MAX_ACK_PENDING: i64 = 1_024;

#[derive(Debug)]
pub(super) struct Queue {
    js: jetstream::Context,
    subject: String,
    consumer: consumer::PullConsumer,
}

impl Queue {
    /// Creates the stream and the shared consumer if they do not exist.
    pub(super) async fn open(client: &async_nats::Client, prefix: &str) -> Result<Queue, BusError> {
        let js = jetstream::new(client.clone());
        let subject = format!("{prefix}.fanout");
        let name = format!("{}_fanout", prefix.replace(['.', '*', '>', ' '], "_"));
        let stream = js
            .get_or_create_stream(stream::Config {
                name,
                subjects: vec![subject.clone()],
                retention: stream::RetentionPolicy::WorkQueue,
                max_messages: QUEUE_MAX_JOBS,
                discard: stream::DiscardPolicy::New,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::JetStream(e.to_string()))?;
        let consumer = stream
            .get_or_create_consumer(
                "workers",
                consumer::pull::Config {
                    durable_name: Some("workers".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BusError::JetStream(e.to_string()))?;
        Ok(Queue { js, subject, consumer })
    }

    /// Queues a fan-out job and waits until JetStream has stored it.
    pub(super) async fn enqueue(&self, node: NodeId, m: &Stored) -> Result<(), String> {
        let job = Envelope { from: node, event: deliver::message_event(m) }.encode(m.frame.as_bytes());
        let stored = tokio::time::timeout(QUEUE_PUBLISH_TIMEOUT, async {
            self.js
                .publish(self.subject.clone(), job)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        match stored {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("timed out".into()),
        }
    }
}

/// A worker: takes jobs until shutdown, reconnecting to the consumer after errors.
pub(super) async fn work(state: Arc<AppState>) {
    let Some(cluster) = state.cluster.clone() else { return };
    while !state.shutdown.is_cancelled() {
        let mut jobs = match cluster.queue.consumer.messages().await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "fan-out queue: cannot take jobs");
                pause(&state).await;
                continue;
            }
        };
        loop {
            let job = tokio::select! {
                job = jobs.next() => job,
                _ = state.shutdown.cancelled() => return,
            };
            let job = match job {
                Some(Ok(job)) => job,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "fan-out queue: bad delivery");
                    continue;
                }
                None => break,
            };
            match Envelope::decode(&job.payload) {
                Ok((Envelope { event: event @ Event::Message { .. }, .. }, frame)) => {
                    super::node::push_stored(&state, &event, &frame).await;
                    cluster.publish(event, &frame);
                }
                Ok(_) => tracing::warn!("fan-out queue: a job that is not a message"),
                Err(e) => tracing::warn!(error = %e, "fan-out queue: unreadable job"),
            }
            if let Err(e) = job.ack().await {
                tracing::warn!(error = %e, "fan-out queue: ack failed; the job may run twice");
            }
        }
        pause(&state).await;
    }
}

async fn pause(state: &AppState) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        _ = state.shutdown.cancelled() => {}
    }
}
