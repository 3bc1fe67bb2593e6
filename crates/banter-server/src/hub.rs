//! The hub: which devices of which users are connected here, and the one way
//! to push something to them.
//!
//! Each live connection registers a [`Link`]: its shared [`Control`], with a
//! bounded queue into its task ([`crate::pushes`]) and a way to close it.
//! Pushes never wait: when a connection's queue is full, a message hint is
//! dropped and the connection is flagged `lagged`, so it re-reads its
//! position from the store instead of the server buffering without bound.
//! The store is the truth; pushes are only hints.

use crate::maps::FastMap;
use axum::extract::ws::Utf8Bytes;
use banter_store::{ConversationId, DeviceId, UserId};
use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

/// A serialized frame, shared by every connection it is pushed to.
pub type Frame = Arc<Utf8Bytes>;

/// Serializes nothing more: wraps a frame's JSON for sharing.
pub fn frame(json: String) -> Frame {
    Arc::new(Utf8Bytes::from(json))
}

/// A stored message as pushed: one allocation shared by all its recipients.
#[derive(Debug, Clone)]
pub struct Stored {
    pub conversation_id: ConversationId,
    pub seq: u64,
    /// When it was stored, for the delivery-latency metric.
    pub ts: i64,
    /// The `message` frame, serialized once.
    pub frame: Utf8Bytes,
    /// The device that sent it over WebSocket, which gets `sent` and not the message.
    pub origin: Option<DeviceId>,
    /// The room of the fan-out queue, for a message pushed by it: each push
    /// gives its share back once handled (see [`MessagePush`]).
    pub room: Option<Arc<crate::push_room::PushRoom>>,
}

impl Stored {
    /// A stored message as pushed, its frame serialized once. The device
    /// that sent it over WebSocket (`sender_device`, 0 over HTTP) is its origin.
    pub fn new(m: &banter_store::StoredMessage) -> Stored {
        Stored {
            conversation_id: m.conversation_id,
            seq: m.seq,
            ts: m.ts,
            frame: crate::views::message_frame(m).into(),
            origin: (m.sender_device != 0).then_some(m.sender_device),
            room: None,
        }
    }
}

/// A stored message pushed to one connection. A push of the fan-out queue
/// holds one unit of the queue's room (`--fanout-max-pushes`)
/// until the connection has handled it or it is dropped, so the queue's
/// bound covers the pushes waiting in connections' channels too. Dropped,
/// it gives its unit back; a connection that handles it takes the unit
/// over instead ([`MessagePush::handle`]) and gives back the units of a
/// whole turn at once, since each give-back takes the room's lock.
#[derive(Debug)]
pub struct MessagePush(Option<Arc<Stored>>);

impl MessagePush {
    pub fn new(message: Arc<Stored>) -> MessagePush {
        MessagePush(Some(message))
    }

    /// The message, and whether it holds a unit of the fan-out room, which
    /// the caller now owes the room ([`crate::fanout::Fanout::give_back`]).
    pub fn handle(mut self) -> (Arc<Stored>, bool) {
        let message = self.0.take().expect("a push holds its message until handled");
        let owes = message.room.is_some();
        (message, owes)
    }
}

impl Drop for MessagePush {
    fn drop(&mut self) {
        if let Some(room) = self.0.as_ref().and_then(|m| m.room.as_ref()) {
            room.give_back(1);
        }
    }
}

/// Something for one connection to do. Kept to two words, the size of a
/// slot in a connection's push queue.
#[derive(Debug)]
pub enum Push {
    /// A message was stored: send its frame if it is next in line.
    Message(MessagePush),
    /// An ephemeral frame (typing, receipt, presence, conversation): send it as is.
    Event(Frame),
    /// The user left a conversation: stop delivering it.
    Left(ConversationId),
    /// Pushes may have been missed (the bus reconnected): re-read positions from the store.
    Resync,
    /// A frame from the client, parsed by the connection's reader (`ws/reader.rs`).
    Client(Box<banter_proto::ClientFrame>),
    /// The reader holds acks ([`Control::held`]) and the connection wants them now.
    Acks,
    /// The reader saw the client close, a frame over the limit, or too many
    /// bad frames: close with this code.
    Close(u16),
    /// The socket failed or ended.
    Gone,
}

/// Shared between a connection and the hub.
#[derive(Debug, Default)]
pub struct Control {
    /// A message hint was dropped; the connection must resync from the store.
    pub lagged: AtomicBool,
    /// Close code requested by someone else (replacement, logout); 0 if none.
    pub close_code: AtomicU16,
    /// Wakes the connection when `close_code` is set. A waker, not a
    /// `Notify`: the connection polls it on every turn of its loop, and
    /// registering again costs an atomic, where a fresh `Notified` locks the
    /// wait list twice.
    closed: AtomicWaker,
    /// When the client last sent a frame, in ms on [`crate::clock::mono_ms`].
    pub last_frame: AtomicU64,
    /// Acks the reader holds for the connection task (`ws/held.rs`).
    pub held: crate::ws::held::HeldAcks,
    /// Pushes into the connection task.
    pub pushes: crate::pushes::PushQueue,
}

impl Control {
    /// Records that the client sent a frame now.
    pub fn touch(&self) {
        self.last_frame.store(crate::clock::mono_ms(), Ordering::Relaxed);
    }

    /// How long since the client last sent a frame.
    pub fn idle(&self) -> std::time::Duration {
        let last = self.last_frame.load(Ordering::Relaxed);
        std::time::Duration::from_millis(crate::clock::mono_ms().saturating_sub(last))
    }

    /// Asks the connection to close with `code`.
    pub fn close(&self, code: u16) {
        self.close_code.store(code, Ordering::Release);
        self.closed.wake();
    }

    /// Queues `push` without waiting; a dropped message hint marks the connection lagged.
    fn push(&self, push: Push) {
        if let Err(crate::pushes::Refused::Full(p)) = self.pushes.try_push(push) {
            if matches!(p, Push::Message(_) | Push::Left(_) | Push::Resync) {
                self.lagged.store(true, Ordering::Release);
            }
            metrics::counter!("push_dropped_total").increment(1);
        }
    }

    /// Ready with the close code once [`Control::close`] was called.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<u16> {
        // Registered before the code is read, so a close in between still wakes.
        self.closed.register(cx.waker());
        match self.close_code.load(Ordering::Acquire) {
            0 => Poll::Pending,
            code => Poll::Ready(code),
        }
    }
}

/// A registered live connection.
#[derive(Debug, Clone)]
pub struct Link {
    pub conn_id: u64,
    pub device_id: DeviceId,
    /// When it connected (ms since the epoch), to tell which of two connections of a device is newer.
    pub since: i64,
    pub control: Arc<Control>,
}

/// Users of one [`Hub::push_users`] call above which their links are all
/// looked up before the first push.
const GATHER_ABOVE: usize = 64;

/// The registry of live connections of this node.
#[derive(Debug, Default)]
pub struct Hub {
    users: RwLock<FastMap<UserId, Vec<Link>>>,
    next_conn: AtomicU64,
}

impl Hub {
    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers `link` for `user`; an older connection of the same device is
    /// unregistered and returned, to be closed with 4002. `announce` runs
    /// under the registry's lock, so announcements (which must not block)
    /// leave in the order of the changes they describe.
    pub fn register(&self, user: UserId, link: Link, announce: impl FnOnce()) -> Option<Link> {
        let mut users = self.users.write().expect("hub lock");
        let links = users.entry(user).or_default();
        let old = links.iter().position(|l| l.device_id == link.device_id).map(|i| links.swap_remove(i));
        links.push(link);
        announce();
        old
    }

    /// Unregisters a connection; `last_gone` runs, under the registry's lock,
    /// if the user has no connection left.
    pub fn unregister(&self, user: UserId, conn_id: u64, last_gone: impl FnOnce()) {
        let mut users = self.users.write().expect("hub lock");
        let Some(links) = users.get_mut(&user) else { return };
        links.retain(|l| l.conn_id != conn_id);
        if links.is_empty() {
            users.remove(&user);
            last_gone();
        }
    }

    /// Pushes to every device of every user in `users`; `make` builds the push
    /// for one device (it returns `None` to skip that device).
    pub fn push_users(&self, users: &[UserId], mut make: impl FnMut(UserId, DeviceId) -> Option<Push>) -> usize {
        let map = self.users.read().expect("hub lock");
        let targets = users
            .iter()
            .filter_map(|u| map.get(u).map(|links| (*u, links)))
            .flat_map(|(u, links)| links.iter().map(move |l| (u, l.device_id, &*l.control)));
        let mut pushed = 0;
        let mut push = |(user, device, control): (UserId, DeviceId, &Control)| {
            if let Some(p) = make(user, device) {
                control.push(p);
                pushed += 1;
            }
        };
        if users.len() <= GATHER_ABOVE {
            targets.for_each(&mut push);
        } else {
            // A large group: each push is a few cache misses (the user's
            // entry, the link, its push queue). Looked up first, with no
            // atomic operation between one lookup and the next (each push
            // takes a lock, which waits for every load before it), the
            // processor overlaps the lookups' misses.
            targets.collect::<Vec<_>>().into_iter().for_each(&mut push);
        }
        pushed
    }

    /// Pushes to one device, if connected.
    pub fn push_device(&self, user: UserId, device: DeviceId, push: Push) {
        let map = self.users.read().expect("hub lock");
        if let Some(link) = map.get(&user).and_then(|l| l.iter().find(|l| l.device_id == device)) {
            link.control.push(push);
        }
    }

    /// Closes the device's connection with `code`, if it has one.
    pub fn close_device(&self, user: UserId, device: DeviceId, code: u16) {
        let map = self.users.read().expect("hub lock");
        if let Some(link) = map.get(&user).and_then(|l| l.iter().find(|l| l.device_id == device)) {
            link.control.close(code);
        }
    }

    /// Closes this node's connection of the device if it is older than one
    /// made at `newer` = (ms, node) on another node; ties go to the higher node id.
    pub fn close_older(&self, user: UserId, device: DeviceId, newer: (i64, u16), this_node: u16, code: u16) {
        let map = self.users.read().expect("hub lock");
        if let Some(link) = map.get(&user).and_then(|l| l.iter().find(|l| l.device_id == device)) {
            if (link.since, this_node) < newer {
                link.control.close(code);
            }
        }
    }

    /// Runs `f` on the users with at least one connection here, under the
    /// registry's lock (so what `f` announces is not overtaken by a change).
    pub fn with_users<T>(&self, f: impl FnOnce(&mut dyn Iterator<Item = UserId>) -> T) -> T {
        let users = self.users.read().expect("hub lock");
        f(&mut users.keys().copied())
    }

    /// Asks every connection to re-read its position from the store.
    pub fn resync_all(&self) {
        for links in self.users.read().expect("hub lock").values() {
            for l in links {
                l.control.push(Push::Resync);
            }
        }
    }

    /// Asks every connection to close with `code` (shutdown).
    pub fn close_all(&self, code: u16) {
        for links in self.users.read().expect("hub lock").values() {
            for l in links {
                l.control.close(code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a connection's queue holds: the conversations of its `Left` pushes.
    fn left(control: &Control) -> Vec<ConversationId> {
        std::iter::from_fn(|| control.pushes.try_next())
            .map(|p| match p {
                Push::Left(c) => c,
                other => panic!("unexpected push {other:?}"),
            })
            .collect()
    }

    #[test]
    fn pushes_reach_every_chosen_device_of_small_and_large_lists() {
        for users in [3, GATHER_ABOVE + 100] {
            let hub = Hub::default();
            // Every user has two devices, 1 and 2; user 0 is not connected.
            let mut controls = Vec::new();
            for user in 1..users as UserId {
                for device in [1, 2] {
                    let control = Arc::new(Control::default());
                    let link = Link {
                        conn_id: hub.next_conn_id(),
                        device_id: device,
                        since: 0,
                        control: Arc::clone(&control),
                    };
                    assert!(hub.register(user, link, || {}).is_none());
                    controls.push((user, device, control));
                }
            }
            let all: Vec<UserId> = (0..users as UserId).collect();
            // Device 2 of every third user is skipped.
            let pushed = hub.push_users(&all, |u, d| (d == 1 || u % 3 != 0).then_some(Push::Left(7)));
            let mut expected = 0;
            for (user, device, control) in &controls {
                let want = if *device == 1 || user % 3 != 0 { vec![7] } else { vec![] };
                expected += want.len();
                assert_eq!(left(control), want, "{users} users: user {user}, device {device}");
            }
            assert_eq!(pushed, expected);
        }
    }
}
