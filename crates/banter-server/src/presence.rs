//! Presence: online while any device is connected, offline after a grace
//! period with none, published to subscribers and to direct-conversation peers.
//!
//! The state lives in one map guarded by a std mutex (never held across an
//! await). A disconnect that leaves a user with no connection starts one
//! grace timer task; a reconnect within the grace bumps the user's generation,
//! which makes the timer a no-op.
//!
//! In cluster mode a user's connections may be on other nodes: each node
//! also keeps which other nodes hold one (from their `Connected`,
//! `Disconnected` and `Snapshot` events, and forgetting a node that stops
//! beating), and decides online and offline itself, with the same grace, for
//! the subscribers connected to it.

use crate::cluster::NodeId;
use crate::hub::Push;
use crate::state::AppState;
use banter_proto::frame::PresenceStatus;
use banter_proto::http::PresenceView;
use banter_proto::ServerFrame;
use banter_store::{DeviceId, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct UserState {
    /// Connections to this node.
    connections: u32,
    /// Other nodes with at least one connection of the user.
    nodes: Vec<NodeId>,
    online: bool,
    last_seen: Option<i64>,
    generation: u64,
}

impl UserState {
    fn connected_anywhere(&self) -> bool {
        self.connections > 0 || !self.nodes.is_empty()
    }
}

/// The presence service.
#[derive(Debug, Default)]
pub struct Presence {
    users: Mutex<HashMap<UserId, UserState>>,
    /// Watched user → subscribed devices (user, device).
    subscribers: Mutex<HashMap<UserId, HashSet<(UserId, DeviceId)>>>,
}

impl Presence {
    /// The presence of `user` now.
    pub fn view(&self, user: UserId) -> PresenceView {
        let users = self.users.lock().expect("presence lock");
        let (status, last_seen) = match users.get(&user) {
            Some(s) if s.online => (PresenceStatus::Online, Some(crate::clock::now_ms())),
            Some(s) => (PresenceStatus::Offline, s.last_seen),
            None => (PresenceStatus::Offline, None),
        };
        PresenceView { user_id: user.to_string(), status, last_seen }
    }

    /// A device of `user` connected to this node.
    pub fn connected(state: &Arc<AppState>, user: UserId) {
        Presence::up(state, user, |s| s.connections += 1);
    }

    /// A device of `user` disconnected from this node.
    pub fn disconnected(state: &Arc<AppState>, user: UserId) {
        Presence::down(state, user, |s| s.connections = s.connections.saturating_sub(1));
    }

    /// Node `node` has a connection of `user`.
    pub fn remote_up(state: &Arc<AppState>, user: UserId, node: NodeId) {
        Presence::up(state, user, |s| {
            if !s.nodes.contains(&node) {
                s.nodes.push(node);
            }
        });
    }

    /// Node `node` has no connection of `user` left.
    pub fn remote_down(state: &Arc<AppState>, user: UserId, node: NodeId) {
        Presence::down(state, user, |s| s.nodes.retain(|&n| n != node));
    }

    /// Node `node` is gone: none of its connections count any more.
    pub fn node_gone(state: &Arc<AppState>, node: NodeId) {
        let users: Vec<UserId> = {
            let users = state.presence.users.lock().expect("presence lock");
            users.iter().filter(|(_, s)| s.nodes.contains(&node)).map(|(u, _)| *u).collect()
        };
        for user in users {
            Presence::remote_down(state, user, node);
        }
    }

    /// Node `node` says which users it holds: the `first` part replaces what
    /// was known of it, later parts add.
    pub fn remote_snapshot(state: &Arc<AppState>, node: NodeId, first: bool, held: &[UserId]) {
        if first {
            let held: HashSet<UserId> = held.iter().copied().collect();
            let gone: Vec<UserId> = {
                let users = state.presence.users.lock().expect("presence lock");
                users.iter().filter(|(u, s)| s.nodes.contains(&node) && !held.contains(u)).map(|(u, _)| *u).collect()
            };
            for user in gone {
                Presence::remote_down(state, user, node);
            }
        }
        for &user in held {
            Presence::remote_up(state, user, node);
        }
    }

    /// Applies a change that adds a connection; publishes if the user came online.
    fn up(state: &Arc<AppState>, user: UserId, change: impl FnOnce(&mut UserState)) {
        let became_online = {
            let mut users = state.presence.users.lock().expect("presence lock");
            let s = users.entry(user).or_default();
            change(s);
            s.generation += 1;
            s.last_seen = Some(crate::clock::now_ms());
            !std::mem::replace(&mut s.online, true)
        };
        if became_online {
            Presence::publish(state, user);
        }
    }

    /// Applies a change that removes a connection; starts the grace period
    /// if the user has none left anywhere.
    fn down(state: &Arc<AppState>, user: UserId, change: impl FnOnce(&mut UserState)) {
        let generation = {
            let mut users = state.presence.users.lock().expect("presence lock");
            let Some(s) = users.get_mut(&user) else { return };
            let before = s.connected_anywhere();
            change(s);
            s.last_seen = Some(crate::clock::now_ms());
            if !before || s.connected_anywhere() {
                return;
            }
            s.generation += 1;
            s.generation
        };
        let grace = state.config.presence_grace;
        let st = Arc::clone(state);
        state.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = st.shutdown.cancelled() => return,
            }
            let went_offline = {
                let mut users = st.presence.users.lock().expect("presence lock");
                match users.get_mut(&user) {
                    Some(s) if s.generation == generation && !s.connected_anywhere() && s.online => {
                        s.online = false;
                        true
                    }
                    _ => false,
                }
            };
            if went_offline {
                Presence::publish(&st, user);
            }
        });
    }

    /// Subscribes a device to `users`; returns how many it now follows, or
    /// `None` if that would pass `limit` (nothing is changed then).
    pub fn subscribe(
        &self,
        subscriber: (UserId, DeviceId),
        users: &[UserId],
        current: &mut HashSet<UserId>,
        limit: usize,
    ) -> Option<usize> {
        let new: Vec<UserId> =
            users.iter().copied().filter(|u| !current.contains(u)).collect::<HashSet<_>>().into_iter().collect();
        if current.len() + new.len() > limit {
            return None;
        }
        let mut subs = self.subscribers.lock().expect("presence lock");
        for u in new {
            subs.entry(u).or_default().insert(subscriber);
            current.insert(u);
        }
        Some(current.len())
    }

    /// Removes a device's subscriptions to `users`.
    pub fn unsubscribe(&self, subscriber: (UserId, DeviceId), users: impl IntoIterator<Item = UserId>) {
        let mut subs = self.subscribers.lock().expect("presence lock");
        for u in users {
            if let Some(set) = subs.get_mut(&u) {
                set.remove(&subscriber);
                if set.is_empty() {
                    subs.remove(&u);
                }
            }
        }
    }

    /// Sends the current presence of `user` to its subscribers and to the
    /// live devices of its direct-conversation peers.
    fn publish(state: &Arc<AppState>, user: UserId) {
        let frame = crate::hub::frame(ServerFrame::Presence(state.presence.view(user)).to_json());
        let subscribed: Vec<(UserId, DeviceId)> = state
            .presence
            .subscribers
            .lock()
            .expect("presence lock")
            .get(&user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let st = Arc::clone(state);
        state.tasks.spawn(async move {
            let peers = st.store.direct_peers(user).await.unwrap_or_default();
            // A device both subscribed and a direct peer gets the frame once.
            let explicit: HashSet<(UserId, DeviceId)> = subscribed.iter().copied().collect();
            for (u, d) in &subscribed {
                st.hub.push_device(*u, *d, Push::Event(frame.clone()));
            }
            st.hub.push_users(&peers, |u, d| (!explicit.contains(&(u, d))).then(|| Push::Event(frame.clone())));
        });
    }
}
