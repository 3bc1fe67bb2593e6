//! The cursor writes of every connection on this node, coalesced and stored
//! together.
//!
//! Devices ack cumulatively, often many times a second. A connection only
//! records the highest acked seq per conversation here ([`AckBuffer::add`]);
//! one task ([`AckBuffer::run`]) stores what gathered, at most every
//! [`ACK_FLUSH_INTERVAL`], up to [`ACK_BATCH`] devices per store call, and
//! then sends the `delivered` receipts whose position rose. So an ack costs
//! its connection a map insert instead of a write of its own and a wakeup
//! when it is done, and the store sees one job per batch instead of one per
//! device.
//!
//! A lost ack only means a redelivery, which clients drop by `message_id`,
//! so cursors may trail the acks by the interval and a write. A connection
//! that ends stores its own acks still here and waits for a write of them
//! in progress ([`AckBuffer::store_device`]), so the device's next
//! connection starts from them.
//!
//! The buffer is bounded by what it coalesces: one entry per device and
//! conversation with an ack not yet stored.

use crate::cluster::deliver;
use crate::maps::{FastMap, FastSet};
use crate::state::AppState;
use banter_proto::frame::ReceiptKind;
use banter_store::{Ack, ConversationId, DeviceAcks, DeviceId, UserId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, Instant};

/// Acks are stored at most this often; those arriving in between join the next write.
pub const ACK_FLUSH_INTERVAL: Duration = Duration::from_millis(25);
/// Most devices whose acks go to the store in one call.
pub const ACK_BATCH: usize = 256;
/// After a failed write, the next waits this long.
const RETRY_AFTER: Duration = Duration::from_millis(500);

type Device = (UserId, DeviceId);

/// What the buffer's lock guards.
#[derive(Debug, Default)]
struct Pending {
    /// Acks not yet stored, by device, coalesced per conversation.
    acks: FastMap<Device, FastMap<ConversationId, Ack>>,
    /// The devices whose acks the flush in progress took.
    flushing: FastSet<Device>,
}

/// The node's acks not yet stored.
#[derive(Debug)]
pub struct AckBuffer {
    pending: Mutex<Pending>,
    /// Wakes the flush task when the buffer stops being empty.
    wake: Notify,
    /// Flushes that took acks out of the buffer, and flushes whose writes
    /// are done (stored or given back), so an ending connection can wait for
    /// one that holds its acks.
    taken: AtomicU64,
    finished: watch::Sender<u64>,
}

impl Default for AckBuffer {
    fn default() -> Self {
        AckBuffer {
            pending: Mutex::default(),
            wake: Notify::new(),
            taken: AtomicU64::new(0),
            finished: watch::Sender::new(0),
        }
    }
}

impl AckBuffer {
    /// Records a device's cumulative ack; the highest per conversation wins.
    pub fn add(&self, user: UserId, device: DeviceId, ack: Ack) {
        let was_empty = {
            let mut pending = self.pending.lock().expect("ack buffer lock");
            let was_empty = pending.acks.is_empty();
            merge(pending.acks.entry((user, device)).or_default(), ack);
            was_empty
        };
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// The flush task: stores what gathers until shutdown, then what is left.
    pub async fn run(state: Arc<AppState>) {
        let acks = &state.acks;
        let mut next = Instant::now();
        loop {
            tokio::select! {
                _ = acks.wake.notified() => {}
                _ = state.shutdown.cancelled() => break,
            }
            // Let acks gather for what is left of the interval.
            tokio::select! {
                _ = sleep_until(next) => {}
                _ = state.shutdown.cancelled() => break,
            }
            next = Instant::now() + ACK_FLUSH_INTERVAL;
            if !acks.flush(&state).await {
                next += RETRY_AFTER;
                // What was given back is waiting: come round again.
                acks.wake.notify_one();
            }
        }
        acks.flush(&state).await;
    }

    /// Stores everything in the buffer, then sends the receipts it earned.
    /// Returns `false` if a device's write failed (its acks are back in the buffer).
    async fn flush(&self, state: &AppState) -> bool {
        let taken = {
            let mut pending = self.pending.lock().expect("ack buffer lock");
            if pending.acks.is_empty() {
                return true;
            }
            // Counted and named under the lock, so `store_device` sees
            // either its acks still here or this flush holding them.
            self.taken.fetch_add(1, Ordering::AcqRel);
            let room = FastMap::with_capacity_and_hasher(pending.acks.len(), Default::default());
            let taken = std::mem::replace(&mut pending.acks, room);
            pending.flushing = taken.keys().copied().collect();
            taken
        };
        let mut devices: Vec<DeviceAcks> = taken
            .into_iter()
            .map(|((user, device), acks)| DeviceAcks { user, device, acks: acks.into_values().collect() })
            .collect();
        let mut rose_by = Vec::new();
        let mut ok = true;
        while !devices.is_empty() {
            let rest = devices.split_off(devices.len().min(ACK_BATCH));
            let batch = std::mem::replace(&mut devices, rest);
            // Cloned: a device whose write fails goes back into the buffer.
            let results = state.store.ack_many(batch.clone()).await;
            let mut failed = Vec::new();
            for (d, result) in batch.into_iter().zip(results) {
                match result {
                    Ok(rose) => rose_by.push((d.user, rose)),
                    Err(e) => {
                        if failed.is_empty() {
                            tracing::warn!(error = %e, "storing acks failed; retrying");
                        }
                        failed.push(d);
                    }
                }
            }
            if !failed.is_empty() {
                self.give_back(failed);
                ok = false;
            }
        }
        self.pending.lock().expect("ack buffer lock").flushing.clear();
        self.finished.send_modify(|n| *n += 1);
        for (user, rose) in rose_by {
            delivered(state, user, rose).await;
        }
        ok
    }

    /// Puts acks whose write failed back, merged with any that came since,
    /// and wakes the flush task to try them again.
    fn give_back(&self, devices: Vec<DeviceAcks>) {
        {
            let mut pending = self.pending.lock().expect("ack buffer lock");
            for d in devices {
                let entry = pending.acks.entry((d.user, d.device)).or_default();
                for ack in d.acks {
                    merge(entry, ack);
                }
            }
        }
        self.wake.notify_one();
    }

    /// Stores a device's acks still in the buffer, and waits for a flush in
    /// progress that holds some of them (storing them itself if that flush
    /// failed): called when its connection ends.
    pub async fn store_device(&self, state: &AppState, user: UserId, device: DeviceId) {
        let (mine, flush) = {
            let mut pending = self.pending.lock().expect("ack buffer lock");
            let flush = pending.flushing.contains(&(user, device)).then(|| self.taken.load(Ordering::Acquire));
            (pending.acks.remove(&(user, device)), flush)
        };
        if let Some(acks) = mine {
            self.store_now(state, user, device, acks).await;
        }
        if let Some(flush) = flush {
            let _ = self.finished.subscribe().wait_for(|&n| n >= flush).await;
            // Given back if that flush failed to store them.
            let again = self.pending.lock().expect("ack buffer lock").acks.remove(&(user, device));
            if let Some(acks) = again {
                self.store_now(state, user, device, acks).await;
            }
        }
    }

    /// Stores one device's acks at once; on failure they go back to the flush task.
    async fn store_now(&self, state: &AppState, user: UserId, device: DeviceId, acks: FastMap<ConversationId, Ack>) {
        let acks: Vec<Ack> = acks.into_values().collect();
        match state.store.ack(user, device, acks.clone()).await {
            Ok(rose) => delivered(state, user, rose).await,
            Err(_) => self.give_back(vec![DeviceAcks { user, device, acks }]),
        }
    }
}

/// The `delivered` receipts of `user` for the conversations where its delivered seq rose.
async fn delivered(state: &AppState, user: UserId, rose: Vec<(ConversationId, u64)>) {
    for (conversation, seq) in rose {
        deliver::receipt(state, user, conversation, ReceiptKind::Delivered, seq).await;
    }
}

/// Keeps the higher of two acks of one conversation.
fn merge(acks: &mut FastMap<ConversationId, Ack>, ack: Ack) {
    acks.entry(ack.conversation_id).and_modify(|a| a.seq = a.seq.max(ack.seq)).or_insert(ack);
}
