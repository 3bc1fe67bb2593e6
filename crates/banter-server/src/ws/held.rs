//! Acks that a connection's reader holds for its connection task.
//!
//! An `ack` is read on a reader lane, but the delivery state it changes
//! belongs to the connection task. Forwarding every ack would wake that task
//! once per ack: in a large group, once per message per member, a wakeup
//! and a loop turn that change nothing the device is waiting for. So the
//! reader leaves each ack here, coalesced per conversation, and wakes the
//! task at once unless the ack can wait: it is for a conversation the task
//! named *lazy* (a group above the fan-out threshold, which keeps no
//! receipts; [`HeldAcks::set_lazy`]) and the task does not want acks now
//! ([`HeldAcks::set_wanted`]: it wants them while a conversation waits for
//! room in the delivery window, or a message of a conversation that keeps
//! receipts is unacknowledged). An ack that can wait is applied the next
//! time the task runs for any reason, at the latest when its ack-timeout
//! timer fires, before it decides that anything timed out; a connection
//! that ends applies the held acks before it stores its cursors. Any other
//! ack, one for a conversation the task does not know included, wakes it,
//! so its answer is as prompt as a frame's.
//!
//! At most [`HELD_ACKS`] conversations are held, and as many named lazy; an
//! ack for one more is forwarded to the task as a frame, as any other.

use banter_store::ConversationId;
use std::sync::Mutex;

/// Most conversations whose acks are held at once, and most named lazy.
pub const HELD_ACKS: usize = 16;

/// The held acks of one connection, shared by its reader and its task.
#[derive(Debug, Default)]
pub struct HeldAcks {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    acks: Vec<(ConversationId, u64)>,
    /// Conversations whose acks may wait for the task's next turn.
    lazy: Vec<ConversationId>,
    /// The task wants every ack at once.
    wanted: bool,
    /// A wakeup is on its way to the task for the acks held.
    woken: bool,
}

/// What became of an offered ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Held; the task applies it when it next runs.
    Held,
    /// Held, and the task must apply it now: wake it.
    Wake,
    /// Not held (too many conversations held): forward it.
    Full,
}

impl HeldAcks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("held acks lock")
    }

    /// Holds a cumulative ack (the reader's side).
    pub fn offer(&self, conversation: ConversationId, seq: u64) -> Offered {
        let mut inner = self.lock();
        if let Some(held) = inner.acks.iter_mut().find(|(c, _)| *c == conversation) {
            held.1 = held.1.max(seq);
        } else if inner.acks.len() >= HELD_ACKS {
            return Offered::Full;
        } else {
            inner.acks.push((conversation, seq));
        }
        let urgent = inner.wanted || !inner.lazy.contains(&conversation);
        if urgent && !inner.woken {
            inner.woken = true;
            Offered::Wake
        } else {
            Offered::Held
        }
    }

    /// Names the conversations whose acks may wait (the task's side; at
    /// most [`HELD_ACKS`] are taken).
    pub fn set_lazy(&self, conversations: impl Iterator<Item = ConversationId>) {
        let mut inner = self.lock();
        inner.lazy.clear();
        inner.lazy.extend(conversations.take(HELD_ACKS));
    }

    /// Says whether the task wants every ack at once (the task's side,
    /// before it waits). Returns `true` if it does and acks are held that no
    /// wakeup is on its way for: the task must apply them without waiting.
    pub fn set_wanted(&self, wanted: bool) -> bool {
        let mut inner = self.lock();
        inner.wanted = wanted;
        wanted && !inner.woken && !inner.acks.is_empty()
    }

    /// Takes every held ack into `into`, which must be empty; the two
    /// buffers trade places, so neither allocates again.
    pub fn take(&self, into: &mut Vec<(ConversationId, u64)>) {
        debug_assert!(into.is_empty());
        let mut inner = self.lock();
        std::mem::swap(&mut inner.acks, into);
        inner.woken = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_of_unknown_or_eager_conversations_wake_once() {
        let held = HeldAcks::default();
        assert_eq!(held.offer(1, 5), Offered::Wake);
        // A wakeup is on its way: more acks join it.
        assert_eq!(held.offer(1, 3), Offered::Held);
        assert_eq!(held.offer(2, 1), Offered::Held);
        let mut taken = Vec::new();
        held.take(&mut taken);
        assert_eq!(taken, vec![(1, 5), (2, 1)]);
        taken.clear();
        assert_eq!(held.offer(1, 6), Offered::Wake);
    }

    #[test]
    fn lazy_acks_wait_until_wanted() {
        let held = HeldAcks::default();
        held.set_lazy([7].into_iter());
        assert!(!held.set_wanted(false));
        assert_eq!(held.offer(7, 1), Offered::Held);
        // Another conversation's ack is urgent and takes the lazy one along.
        assert_eq!(held.offer(8, 1), Offered::Wake);
        let mut taken = Vec::new();
        held.take(&mut taken);
        assert_eq!(taken.len(), 2);
        taken.clear();
        assert_eq!(held.offer(7, 2), Offered::Held);
        // The task now wants acks: no wakeup comes for the one held, so it is told.
        assert!(held.set_wanted(true));
        assert_eq!(held.offer(7, 3), Offered::Wake);
        assert!(!held.set_wanted(true));
    }

    #[test]
    fn bounded_in_conversations() {
        let held = HeldAcks::default();
        for c in 0..HELD_ACKS as i64 {
            assert_ne!(held.offer(c, 1), Offered::Full);
        }
        assert_eq!(held.offer(HELD_ACKS as i64, 1), Offered::Full);
        // A conversation already held still coalesces.
        assert_eq!(held.offer(0, 2), Offered::Held);
        held.set_lazy(0..100);
        let mut taken = Vec::new();
        held.take(&mut taken);
        assert_eq!(taken.len(), HELD_ACKS);
    }
}
