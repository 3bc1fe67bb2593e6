//! The one way the server pushes: to the devices connected here, and, in
//! cluster mode, to every other node, which pushes to its own devices.

use super::Event;
use crate::fanout::{push_message, Job};
use crate::hub::{Frame, Push, Stored};
use crate::state::AppState;
use banter_proto::frame::{keeps_receipts, ReceiptKind};
use banter_proto::ServerFrame;
use banter_store::{ConversationId, DeviceId, UserId};
use std::sync::Arc;

/// A stored message, to every device of `members`: on the send path up to
/// the fan-out threshold, through the fan-out queue above it (JetStream's in
/// cluster mode, so any node's worker takes it even if this node dies).
///
/// Offering to this node's fan-out queue never waits. JetStream's path is
/// boxed: it is taken only for large groups, and inline it would make the
/// future of every send several times larger.
/// `retry` says the message was stored earlier and is pushed again for a
/// retried send.
pub async fn message(state: &AppState, members: Arc<[UserId]>, message: Arc<Stored>, retry: bool) {
    let large = members.len() as u64 > state.config.fanout_sync_threshold;
    match &state.cluster {
        None if large => state.fanout.offer(Job { members, message, retry }),
        None => {
            push_message(state, &members, &message);
        }
        Some(cluster) => {
            if large {
                match Box::pin(cluster.queue.enqueue(cluster.node, &message)).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "fan-out queue unavailable; pushing directly"),
                }
            }
            push_message(state, &members, &message);
            cluster.publish(message_event(&message), message.frame.as_bytes());
        }
    }
}

/// A stored message whose members could not be read: every connection here
/// re-reads its position from the store (retrying while the store fails),
/// and the other nodes are told as usual, to look the members up themselves.
pub fn message_unrouted(state: &AppState, message: &Stored) {
    state.hub.resync_all();
    if let Some(cluster) = &state.cluster {
        cluster.publish(message_event(message), message.frame.as_bytes());
    }
}

/// The bus event announcing a stored message.
pub(super) fn message_event(m: &Stored) -> Event {
    Event::Message { conversation_id: m.conversation_id, seq: m.seq, ts: m.ts, origin: m.origin }
}

/// An ephemeral frame to every device of `users`.
pub fn frame(state: &AppState, users: &[UserId], frame: Frame) {
    if let Some(cluster) = &state.cluster {
        cluster.publish(Event::Frame { users: users.to_vec() }, frame.as_bytes());
    }
    state.hub.push_users(users, |_, _| Some(Push::Event(Arc::clone(&frame))));
}

/// `user` left `conversation`: its devices stop delivering it.
pub fn left(state: &AppState, user: UserId, conversation: ConversationId) {
    if let Some(cluster) = &state.cluster {
        cluster.publish(Event::Left { user, conversation_id: conversation }, &[]);
    }
    state.hub.push_users(&[user], |_, _| Some(Push::Left(conversation)));
}

/// The members of `conversation` changed: every node forgets its cached list.
pub fn members_changed(state: &AppState, conversation: ConversationId) {
    if let Some(cluster) = &state.cluster {
        cluster.publish(Event::MembersChanged { conversation_id: conversation }, &[]);
    }
    state.members.invalidate(conversation);
}

/// A device logged out: its token stops working on every node and its
/// connection, wherever it is, closes with 4001.
pub fn logged_out(state: &AppState, user: UserId, device: DeviceId) {
    if let Some(cluster) = &state.cluster {
        cluster.publish(Event::LoggedOut { user, device }, &[]);
    }
    state.tokens.forget_device(device);
    state.hub.close_device(user, device, banter_proto::close::UNAUTHORIZED);
}

/// A device connected here at `at` (ms): its older connection on another node closes with 4002.
pub fn connected(state: &AppState, user: UserId, device: DeviceId, at: i64) {
    if let Some(cluster) = &state.cluster {
        cluster.publish(Event::Connected { user, device, at }, &[]);
    }
}

/// The user's last connection to this node closed.
pub fn disconnected(state: &AppState, user: UserId) {
    if let Some(cluster) = &state.cluster {
        cluster.publish(Event::Disconnected { user }, &[]);
    }
}

/// A receipt of `user` (delivered or read up to `seq`) to the other members
/// of a conversation, unless it is a group above the fan-out threshold, where
/// no receipts are kept.
pub async fn receipt(state: &AppState, user: UserId, conversation: ConversationId, kind: ReceiptKind, seq: u64) {
    let Ok(members) = state.members.get(state.store.as_ref(), conversation).await else { return };
    if !keeps_receipts(members.len() as u64, state.config.fanout_sync_threshold) {
        return;
    }
    let receipt = crate::hub::frame(
        ServerFrame::Receipt { conversation_id: conversation.to_string(), user_id: user.to_string(), kind, seq }
            .to_json(),
    );
    let others: Vec<UserId> = members.iter().copied().filter(|&u| u != user).collect();
    frame(state, &others, receipt);
}
