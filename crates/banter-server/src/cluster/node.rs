//! The tasks of a node in cluster mode: the publisher, the subscriber that
//! applies other nodes' events here, beats and the liveness of other nodes,
//! the watcher of the NATS connection, and the fan-out worker.

use super::event::{Envelope, Event, NodeId};
use super::{queue, Cluster, Taken, BEAT, NODE_TIMEOUT};
use crate::fanout::push_message;
use crate::hub::{Push, Stored};
use crate::presence::Presence;
use crate::state::AppState;
use banter_proto::close;
use banter_store::UserId;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most users named in one snapshot message (NATS limits a message to 1 MiB by default).
const SNAPSHOT_CHUNK: usize = 20_000;
/// How long the publisher waits for the NATS client to take one event.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts the node's tasks on the server's task tracker; they end at shutdown.
pub fn start(state: &Arc<AppState>) {
    let Some(cluster) = &state.cluster else { return };
    let Some(Taken { outbox, connection_events }) = cluster.taken.lock().expect("cluster lock").take() else { return };
    state.tasks.spawn(publish(Arc::clone(state), outbox));
    state.tasks.spawn(subscribe(Arc::clone(state)));
    state.tasks.spawn(beat(Arc::clone(state)));
    state.tasks.spawn(watch(Arc::clone(state), connection_events));
    state.tasks.spawn(queue::work(Arc::clone(state)));
    cluster.publish(Event::Hello, &[]);
    announce_users(state, cluster);
}

/// Sends queued events, in order, on the one NATS connection. At shutdown
/// it keeps sending what the closing connections still publish (the
/// messages they confirm while draining), until they are gone or the grace
/// runs out, then flushes.
async fn publish(state: Arc<AppState>, mut outbox: tokio::sync::mpsc::Receiver<Bytes>) {
    let Some(cluster) = state.cluster.clone() else { return };
    let subject = async_nats::Subject::from(cluster.events_subject.as_str());
    loop {
        let bytes = tokio::select! {
            b = outbox.recv() => match b { Some(b) => b, None => return },
            _ = state.shutdown.cancelled() => break,
        };
        send(&cluster, &subject, bytes, PUBLISH_TIMEOUT).await;
    }
    let deadline = tokio::time::Instant::now() + crate::SHUTDOWN_GRACE - BEAT;
    loop {
        let idle = state.connections.load(Ordering::Acquire) == 0 && outbox.is_empty();
        if idle || tokio::time::Instant::now() >= deadline {
            break;
        }
        match tokio::time::timeout_at(deadline, outbox.recv()).await {
            Ok(Some(bytes)) => send(&cluster, &subject, bytes, PUBLISH_TIMEOUT).await,
            Ok(None) | Err(_) => break,
        }
    }
    let _ = tokio::time::timeout(PUBLISH_TIMEOUT, cluster.client.flush()).await;
}

/// Hands one event to the NATS client, which buffers while it reconnects;
/// gives up after `timeout` so that a long outage cannot stall the publisher.
async fn send(cluster: &Cluster, subject: &async_nats::Subject, bytes: Bytes, timeout: Duration) {
    match tokio::time::timeout(timeout, cluster.client.publish(subject.clone(), bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => metrics::counter!("cluster_events_dropped_total").increment(1),
    }
}

/// Applies every other node's events to this node, subscribing again if
/// the subscription ever ends.
async fn subscribe(state: Arc<AppState>) {
    let Some(cluster) = state.cluster.clone() else { return };
    while !state.shutdown.is_cancelled() {
        let mut events = match cluster.client.subscribe(cluster.events_subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "bus subscribe failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(BEAT) => {}
                    _ = state.shutdown.cancelled() => return,
                }
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                m = events.next() => match m { Some(m) => m, None => break },
                _ = state.shutdown.cancelled() => return,
            };
            match Envelope::decode(&message.payload) {
                Ok((envelope, _)) if envelope.from == cluster.node => {}
                Ok((envelope, payload)) => apply(&state, &cluster, envelope, payload).await,
                Err(e) => tracing::warn!(error = %e, "ignoring a bus message"),
            }
        }
        // Whatever was published meanwhile is repaired like after a reconnect.
        cluster.missed.store(true, Ordering::Release);
    }
}

/// What one event from node `from` changes here.
async fn apply(state: &Arc<AppState>, cluster: &Cluster, Envelope { from, event }: Envelope, payload: Bytes) {
    let new_peer = cluster.peers.lock().expect("cluster lock").insert(from, Instant::now()).is_none();
    if new_peer {
        tracing::info!(node = from, "node joined");
        // A node back after being taken for dead (or one whose hello was
        // missed): ask everyone, it included, which users they hold.
        if event != Event::Hello {
            cluster.publish(Event::Hello, &[]);
        }
    }
    match event {
        Event::Message { .. } => push_stored(state, &event, &payload).await,
        Event::Frame { users } => {
            let Ok(text) = String::from_utf8(payload.to_vec()) else { return };
            let frame = crate::hub::frame(text);
            state.hub.push_users(&users, |_, _| Some(Push::Event(Arc::clone(&frame))));
        }
        Event::Left { user, conversation_id } => {
            state.hub.push_users(&[user], |_, _| Some(Push::Left(conversation_id)));
        }
        Event::MembersChanged { conversation_id } => state.members.invalidate(conversation_id),
        Event::Connected { user, device, at } => {
            state.hub.close_older(user, device, (at, from), cluster.node, close::REPLACED);
            Presence::remote_up(state, user, from);
        }
        Event::Disconnected { user } => Presence::remote_down(state, user, from),
        Event::LoggedOut { user, device } => {
            state.tokens.forget_device(device);
            state.hub.close_device(user, device, close::UNAUTHORIZED);
        }
        Event::Beat => {}
        Event::Hello => announce_users(state, cluster),
        Event::Snapshot { first, users } => Presence::remote_snapshot(state, from, first, &users),
    }
}

/// Pushes a stored message announced on the bus to this node's devices of its members.
pub(super) async fn push_stored(state: &AppState, event: &Event, frame: &Bytes) {
    let Event::Message { conversation_id, seq, ts, origin } = *event else { return };
    let members = match state.members.get(state.store.as_ref(), conversation_id).await {
        Ok(m) => m,
        Err(e) => {
            // The store will have it when it is back; devices catch up then.
            tracing::warn!(error = %e, "members unavailable for a pushed message");
            state.hub.resync_all();
            return;
        }
    };
    let Ok(text) = String::from_utf8(frame.to_vec()) else { return };
    let message = Arc::new(Stored { conversation_id, seq, ts, frame: text.into(), origin, room: None });
    push_message(state, &members, &message);
}

/// Tells every node which users are connected here.
fn announce_users(state: &AppState, cluster: &Cluster) {
    state.hub.with_users(|users| {
        let mut first = true;
        loop {
            let chunk: Vec<UserId> = users.take(SNAPSHOT_CHUNK).collect();
            if chunk.is_empty() && !first {
                return;
            }
            cluster.publish(Event::Snapshot { first, users: chunk }, &[]);
            first = false;
        }
    });
}

/// Says this node is alive, takes nodes not heard from for too long for
/// dead, and repairs after the bus may have lost events (at most once a beat).
async fn beat(state: Arc<AppState>) {
    let Some(cluster) = state.cluster.clone() else { return };
    let mut every = tokio::time::interval(BEAT);
    let mut connects = cluster.client.statistics().connects.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        // The connection count tells a reconnect even if its event was dropped.
        let now_connects = cluster.client.statistics().connects.load(Ordering::Relaxed);
        let reconnected = std::mem::replace(&mut connects, now_connects) != now_connects;
        if reconnected | cluster.missed.swap(false, Ordering::AcqRel) {
            repair(&state, &cluster);
        }
        cluster.publish(Event::Beat, &[]);
        let dead: Vec<NodeId> = {
            let mut peers = cluster.peers.lock().expect("cluster lock");
            let dead = peers.iter().filter(|(_, at)| at.elapsed() > NODE_TIMEOUT).map(|(n, _)| *n).collect::<Vec<_>>();
            for n in &dead {
                peers.remove(n);
            }
            dead
        };
        for node in dead {
            tracing::warn!(node, "node silent; its connections count as closed");
            Presence::node_gone(&state, node);
        }
        metrics::gauge!("cluster_nodes").set((cluster.peers.lock().expect("cluster lock").len() + 1) as f64);
    }
}

/// After events may have been lost (a reconnect, a slow-consumer drop, a
/// subscription that ended): every connection re-reads its position from the
/// store, the member and token caches start over, and the node says hello
/// so that every node re-sends which users it holds.
fn repair(state: &AppState, cluster: &Cluster) {
    tracing::info!("bus events may have been missed; resyncing from the store");
    state.hub.resync_all();
    state.members.clear();
    state.tokens.clear();
    cluster.publish(Event::Hello, &[]);
    announce_users(state, cluster);
}

/// Follows the NATS connection for the metric and the log; the repair
/// itself runs from [`beat`], so a burst of reports costs one repair.
async fn watch(state: Arc<AppState>, mut events: tokio::sync::mpsc::Receiver<async_nats::Event>) {
    let Some(cluster) = state.cluster.clone() else { return };
    loop {
        let event = tokio::select! {
            e = events.recv() => match e { Some(e) => e, None => return },
            _ = state.shutdown.cancelled() => return,
        };
        match event {
            async_nats::Event::Connected => {
                if !cluster.connected.swap(true, Ordering::AcqRel) {
                    tracing::info!("bus reconnected");
                }
                metrics::gauge!("cluster_bus_connected").set(1.0);
            }
            async_nats::Event::Disconnected => {
                cluster.connected.store(false, Ordering::Release);
                metrics::gauge!("cluster_bus_connected").set(0.0);
                tracing::warn!("bus disconnected");
            }
            async_nats::Event::SlowConsumer(_) => {
                if !cluster.missed.swap(true, Ordering::AcqRel) {
                    tracing::warn!("bus events dropped (slow consumer)");
                }
            }
            other => tracing::info!(event = %other, "bus"),
        }
    }
}
