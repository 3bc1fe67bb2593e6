//! Which conversations' acknowledgements may wait, and for how long.
//!
//! A group above the server's fan-out threshold keeps no receipts: nobody
//! waits for its acks, which only move the device's cursor and make room in
//! its window. The `welcome` gives the threshold (`receipts_up_to`) and how
//! long such an ack may be held (`lazy_ack_ms`); conversations' member counts
//! come from the conversation list and from `conversation` frames. An ack
//! of such a group is held that long, unless a quarter of the window has
//! gathered unacknowledged, so the server never stops pushing for want of
//! one. Every other ack goes after the session's own short delay. This is
//! pure logic; the driver asks it how long each ack may wait.

use banter_proto::frame::keeps_receipts;
use std::collections::HashSet;
use std::time::Duration;

/// The window assumed when the welcome gives none: the protocol's smallest.
const MIN_WINDOW: u64 = 64;

/// What the session knows about holding acks.
#[derive(Debug, Default)]
pub(crate) struct LazyAcks {
    /// Conversations of more members keep no receipts; `None` if the server did not say.
    receipts_up_to: Option<u64>,
    /// How long their acks may be held; `None` if the server did not say.
    hold: Option<Duration>,
    /// Messages held unacknowledged before the ack goes at once (a quarter of the window).
    most_held: u64,
    /// Conversations known to be above the threshold.
    large: HashSet<String>,
    /// Messages of large conversations whose ack is held since the last flush.
    held: u64,
}

impl LazyAcks {
    /// Takes the parameters of a new connection's `welcome`.
    pub(crate) fn connected(&mut self, receipts_up_to: Option<u64>, lazy_ack_ms: Option<u64>, window: Option<u64>) {
        self.receipts_up_to = receipts_up_to;
        self.hold = lazy_ack_ms.filter(|&ms| ms > 0).map(Duration::from_millis);
        self.most_held = (window.unwrap_or(MIN_WINDOW).max(MIN_WINDOW) / 4).max(1);
        self.held = 0;
    }

    /// Whether member counts are worth fetching: the server lets acks wait.
    pub(crate) fn enabled(&self) -> bool {
        self.receipts_up_to.is_some() && self.hold.is_some()
    }

    /// Records the member count of a conversation.
    pub(crate) fn learn(&mut self, conversation_id: &str, member_count: u64) {
        if self.receipts_up_to.is_some_and(|n| !keeps_receipts(member_count, n)) {
            self.large.insert(conversation_id.to_owned());
        } else {
            self.large.remove(conversation_id);
        }
    }

    /// How long an ack of `conversation_id`, of which `taken` more messages
    /// were just handed to the application, may wait: `eager` unless the
    /// conversation keeps no receipts; `force` (the server pushed again a
    /// message the device holds) never waits long.
    pub(crate) fn delay(&mut self, conversation_id: &str, force: bool, taken: u64, eager: Duration) -> Duration {
        let Some(hold) = self.hold.filter(|_| !force && self.large.contains(conversation_id)) else {
            return eager;
        };
        self.held += taken;
        if self.held >= self.most_held {
            eager
        } else {
            hold.max(eager)
        }
    }

    /// The gathered acks were sent; `waiting` are the conversations with
    /// messages the application has not taken yet, which those acks could
    /// not cover. While a large one is among them the count stands, so its
    /// ack goes at once when the application takes them.
    pub(crate) fn flushed<'a>(&mut self, mut waiting: impl Iterator<Item = &'a String>) {
        if !waiting.any(|c| self.large.contains(c)) {
            self.held = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EAGER: Duration = Duration::from_millis(10);

    fn lazy() -> LazyAcks {
        let mut l = LazyAcks::default();
        l.connected(Some(500), Some(400), Some(256));
        l.learn("big", 501);
        l.learn("small", 500);
        l
    }

    #[test]
    fn only_groups_above_the_threshold_wait() {
        let mut l = lazy();
        assert!(l.enabled());
        assert_eq!(l.delay("big", false, 1, EAGER), Duration::from_millis(400));
        assert_eq!(l.delay("small", false, 1, EAGER), EAGER);
        assert_eq!(l.delay("unknown", false, 1, EAGER), EAGER);
        // A retried message is acked again at once.
        assert_eq!(l.delay("big", true, 1, EAGER), EAGER);
    }

    #[test]
    fn a_quarter_of_the_window_held_acks_at_once() {
        let mut l = lazy();
        for _ in 0..63 {
            assert_eq!(l.delay("big", false, 1, EAGER), Duration::from_millis(400));
        }
        // Looking again at what was taken counts no new message.
        assert_eq!(l.delay("big", false, 0, EAGER), Duration::from_millis(400));
        assert_eq!(l.delay("big", false, 1, EAGER), EAGER);
        // The ack could not cover a message the application had not taken:
        // when it takes it, its ack goes at once.
        let waiting = ["big".to_owned()];
        l.flushed(waiting.iter());
        assert_eq!(l.delay("big", false, 0, EAGER), EAGER);
        l.flushed(std::iter::empty());
        assert_eq!(l.delay("big", false, 1, EAGER), Duration::from_millis(400));
    }

    #[test]
    fn a_group_that_shrinks_or_a_server_that_does_not_say_waits_for_nothing() {
        let mut l = lazy();
        l.learn("big", 3);
        assert_eq!(l.delay("big", false, 1, EAGER), EAGER);
        let mut silent = LazyAcks::default();
        silent.connected(None, None, None);
        silent.learn("big", 10_000);
        assert!(!silent.enabled());
        assert_eq!(silent.delay("big", false, 1, EAGER), EAGER);
    }
}
