//! Per-device delivery state: the ordered outbox with a bounded in-flight
//! window and retry after the ack timeout.
//!
//! This is pure logic, owned by one connection task, with no I/O: the task
//! asks it what to send and tells it what was sent and acknowledged.
//!
//! For every conversation it tracks three positions: `acked` (the device's
//! cursor), `pushed` (the highest seq sent, in order) and `known_last` (the
//! highest seq known to be stored). Live pushes that are next in line go out
//! at once; anything else (a gap, a full window, a retry) makes the
//! conversation *behind*, and the task then streams it from the store in
//! window-sized pages. Invariants: per conversation `acked <= pushed`, frames
//! go out in ascending seq from `pushed + 1`, and the number of pushed but
//! unacknowledged messages never exceeds the window.
//!
//! Retries need no timer per message: `inflight` is a queue in send order, so
//! its front is always the next deadline, and one timer per connection suffices.
//! A timed-out conversation is rewound to its cursor and streamed again.

use crate::maps::FastMap;
use banter_proto::frame::keeps_receipts;
use banter_store::{ConversationId, Cursor};
use std::collections::VecDeque;
use tokio::time::{Duration, Instant};

/// Most messages fetched from the store in one page.
pub const FETCH_PAGE: usize = 256;

#[derive(Debug, Clone)]
struct Conv {
    acked: u64,
    pushed: u64,
    known_last: u64,
    /// Whether it keeps receipts (at most `receipts_up_to` members): its
    /// senders wait for `delivered`, so its acks are wanted at once.
    receipts: bool,
    /// When the conversation was last rewound; older in-flight entries are stale.
    rewound_at: Option<Instant>,
    /// Whether it is in `behind`.
    queued: bool,
}

#[derive(Debug, Clone, Copy)]
struct Inflight {
    conversation: ConversationId,
    seq: u64,
    at: Instant,
}

/// What to do with a live message push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Send the frame now; it has been recorded as pushed.
    Send,
    /// Nothing to send now (already sent, or queued to stream from the store).
    Skip,
    /// The conversation is unknown to this device; load its cursor.
    Unknown,
}

/// Delivery state of one connected device.
#[derive(Debug)]
pub struct Delivery {
    window: usize,
    ack_timeout: Duration,
    /// Conversations of at most this many members keep receipts.
    receipts_up_to: u64,
    convs: FastMap<ConversationId, Conv>,
    inflight: VecDeque<Inflight>,
    unacked: usize,
    /// The part of `unacked` in conversations that keep receipts.
    unacked_receipted: usize,
    /// Moves whenever the set of conversations that keep no receipts changes.
    lazy_version: u64,
    behind: VecDeque<ConversationId>,
}

impl Delivery {
    /// `receipts_up_to`: conversations of at most this many members keep
    /// receipts (the fan-out threshold).
    pub fn new(window: usize, ack_timeout: Duration, receipts_up_to: u64) -> Delivery {
        Delivery {
            window,
            ack_timeout,
            receipts_up_to,
            convs: FastMap::default(),
            inflight: VecDeque::new(),
            unacked: 0,
            unacked_receipted: 0,
            lazy_version: 0,
            behind: VecDeque::new(),
        }
    }

    /// The conversations that keep no receipts: their acks can wait.
    pub fn lazy(&self) -> impl Iterator<Item = ConversationId> + '_ {
        self.convs.iter().filter(|(_, c)| !c.receipts).map(|(&id, _)| id)
    }

    /// Changes whenever [`Delivery::lazy`] does.
    pub fn lazy_version(&self) -> u64 {
        self.lazy_version
    }

    /// Whether acks should reach this state as soon as they are read: a
    /// conversation waits for window room, or a message of a conversation
    /// that keeps receipts is unacknowledged. Otherwise they can wait until
    /// the connection next runs (see `ws/held.rs`).
    pub fn wants_acks(&self) -> bool {
        self.unacked_receipted > 0 || !self.behind.is_empty() || self.unacked >= self.window
    }

    /// Pushed but unacknowledged messages.
    pub fn unacked(&self) -> usize {
        self.unacked
    }

    /// Stored messages known but not yet pushed, over the conversations that
    /// are behind (streaming from the store).
    pub fn backlog(&self) -> u64 {
        self.behind.iter().filter_map(|id| self.convs.get(id)).map(|c| c.known_last.saturating_sub(c.pushed)).sum()
    }

    /// Whether a conversation keeps receipts (it has at most the threshold
    /// given to [`Delivery::new`] members); an unknown one is taken to.
    pub fn keeps_receipts(&self, conversation: ConversationId) -> bool {
        self.convs.get(&conversation).is_none_or(|c| c.receipts)
    }

    /// Adds a conversation from its stored cursor, or refreshes a known one.
    pub fn track(&mut self, cursor: Cursor) {
        let receipts = keeps_receipts(cursor.member_count, self.receipts_up_to);
        if !receipts && !self.convs.contains_key(&cursor.conversation_id) {
            self.lazy_version += 1;
        }
        let c = self.convs.entry(cursor.conversation_id).or_insert(Conv {
            acked: cursor.acked_seq,
            pushed: cursor.acked_seq,
            known_last: cursor.acked_seq,
            receipts,
            rewound_at: None,
            queued: false,
        });
        if c.receipts != receipts {
            // Crossed the threshold: its unacked messages change sides.
            let n = (c.pushed - c.acked) as usize;
            if receipts {
                self.unacked_receipted += n;
            } else {
                self.unacked_receipted -= n;
            }
            c.receipts = receipts;
            self.lazy_version += 1;
        }
        c.known_last = c.known_last.max(cursor.last_seq);
        if c.pushed < c.known_last && !c.queued {
            c.queued = true;
            self.behind.push_back(cursor.conversation_id);
        }
    }

    /// Forgets a conversation the user left.
    pub fn forget(&mut self, conversation: ConversationId) {
        if let Some(c) = self.convs.remove(&conversation) {
            self.unacked -= (c.pushed - c.acked) as usize;
            if c.receipts {
                self.unacked_receipted -= (c.pushed - c.acked) as usize;
            } else {
                self.lazy_version += 1;
            }
        }
        self.behind.retain(|&id| id != conversation);
    }

    /// Conversations tracked.
    pub fn conversations(&self) -> impl Iterator<Item = ConversationId> + '_ {
        self.convs.keys().copied()
    }

    /// A message `seq` of `conversation` was stored. `own` marks the device
    /// that sent it (it holds the message already and gets no frame).
    pub fn on_live(&mut self, conversation: ConversationId, seq: u64, own: bool, now: Instant) -> Live {
        let Some(c) = self.convs.get_mut(&conversation) else { return Live::Unknown };
        c.known_last = c.known_last.max(seq);
        if seq <= c.pushed {
            return Live::Skip;
        }
        if seq == c.pushed + 1 && !c.queued {
            if own {
                self.record_own(conversation, seq, now);
                return Live::Skip;
            }
            if self.unacked < self.window {
                c.pushed = seq;
                self.unacked += 1;
                self.unacked_receipted += usize::from(c.receipts);
                self.inflight.push_back(Inflight { conversation, seq, at: now });
                return Live::Send;
            }
        }
        if !c.queued {
            c.queued = true;
            self.behind.push_back(conversation);
        }
        Live::Skip
    }

    /// A cumulative ack; returns the seq to store as the new cursor if it rose.
    pub fn on_ack(&mut self, conversation: ConversationId, seq: u64) -> Option<u64> {
        let c = self.convs.get_mut(&conversation)?;
        let seq = seq.min(c.pushed.max(c.known_last));
        if seq <= c.acked {
            return None;
        }
        let n = (seq.min(c.pushed) - c.acked) as usize;
        self.unacked -= n;
        if c.receipts {
            self.unacked_receipted -= n;
        }
        c.acked = seq;
        c.pushed = c.pushed.max(seq);
        self.trim();
        Some(seq)
    }

    /// Whether the device knows `conversation`.
    pub fn knows(&self, conversation: ConversationId) -> bool {
        self.convs.contains_key(&conversation)
    }

    /// The next page to stream from the store: `(conversation, after_seq, limit)`.
    pub fn next_fetch(&mut self) -> Option<(ConversationId, u64, usize)> {
        while let Some(&id) = self.behind.front() {
            let Some(c) = self.convs.get_mut(&id) else {
                self.behind.pop_front();
                continue;
            };
            if c.pushed >= c.known_last {
                c.queued = false;
                self.behind.pop_front();
                continue;
            }
            if self.unacked >= self.window {
                return None;
            }
            let room = (self.window - self.unacked).min(FETCH_PAGE);
            return Some((id, c.pushed, room));
        }
        None
    }

    /// The device's own message `seq` is next in line: it holds it already,
    /// so it is passed over without a frame.
    fn record_own(&mut self, conversation: ConversationId, seq: u64, now: Instant) {
        let Some(c) = self.convs.get_mut(&conversation) else { return };
        c.pushed = seq;
        if c.acked + 1 == seq {
            // Nothing before it is outstanding: the position moves on.
            c.acked = seq;
        } else {
            // Covered by the next cumulative ack; until then it holds a window slot.
            self.unacked += 1;
            self.unacked_receipted += usize::from(c.receipts);
            self.inflight.push_back(Inflight { conversation, seq, at: now });
        }
    }

    /// Records that `seq` of `conversation`, fetched from the store, is next
    /// in line. Returns `true` if its frame must be sent, `false` if it is not
    /// next in line or is the device's own (`own`), which is passed over.
    pub fn record_fetched(&mut self, conversation: ConversationId, seq: u64, own: bool, now: Instant) -> bool {
        let Some(c) = self.convs.get_mut(&conversation) else { return false };
        if seq != c.pushed + 1 {
            return false;
        }
        if own {
            self.record_own(conversation, seq, now);
            return false;
        }
        let c = self.convs.get_mut(&conversation).expect("present");
        c.pushed = seq;
        c.known_last = c.known_last.max(seq);
        self.unacked += 1;
        self.unacked_receipted += usize::from(c.receipts);
        self.inflight.push_back(Inflight { conversation, seq, at: now });
        true
    }

    /// A page came back shorter than asked: the store holds nothing further.
    /// Moves the conversation to the back of the queue, for fairness.
    pub fn fetched(&mut self, conversation: ConversationId, exhausted: bool) {
        if let Some(c) = self.convs.get_mut(&conversation) {
            if exhausted {
                c.known_last = c.pushed;
            }
        }
        if self.behind.front() == Some(&conversation) {
            self.behind.pop_front();
            if let Some(c) = self.convs.get_mut(&conversation) {
                if c.pushed < c.known_last {
                    self.behind.push_back(conversation);
                } else {
                    c.queued = false;
                }
            }
        }
    }

    /// When the oldest in-flight message times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.inflight.front().map(|f| f.at + self.ack_timeout)
    }

    /// Handles timeouts at `now`: every conversation with a message unacked
    /// past the timeout is rewound to its cursor, to be streamed again.
    /// Returns how many conversations were rewound.
    pub fn on_timer(&mut self, now: Instant) -> usize {
        let mut rewound = 0;
        while let Some(f) = self.inflight.front().copied() {
            if f.at + self.ack_timeout > now {
                break;
            }
            self.inflight.pop_front();
            let Some(c) = self.convs.get_mut(&f.conversation) else { continue };
            let stale = f.seq <= c.acked || f.seq > c.pushed || c.rewound_at.is_some_and(|r| f.at < r);
            if stale {
                continue;
            }
            self.unacked -= (c.pushed - c.acked) as usize;
            if c.receipts {
                self.unacked_receipted -= (c.pushed - c.acked) as usize;
            }
            c.pushed = c.acked;
            c.rewound_at = Some(now);
            if !c.queued {
                c.queued = true;
                self.behind.push_back(f.conversation);
            }
            rewound += 1;
        }
        rewound
    }

    /// Drops acknowledged entries from the front, and compacts the queue when
    /// stale entries pile up behind an outstanding one, so it stays within a
    /// small multiple of the window.
    fn trim(&mut self) {
        while let Some(f) = self.inflight.front() {
            match self.convs.get(&f.conversation) {
                Some(c) if f.seq > c.acked && f.seq <= c.pushed => break,
                _ => {
                    self.inflight.pop_front();
                }
            }
        }
        if self.inflight.len() > 4 * self.window.max(16) {
            let convs = &self.convs;
            self.inflight.retain(|f| {
                convs
                    .get(&f.conversation)
                    .is_some_and(|c| f.seq > c.acked && f.seq <= c.pushed && c.rewound_at.is_none_or(|r| f.at >= r))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(id: ConversationId, acked: u64, last: u64) -> Cursor {
        Cursor { conversation_id: id, acked_seq: acked, last_seq: last, member_count: 2 }
    }

    #[test]
    fn live_in_order_then_ack() {
        let now = Instant::now();
        let mut d = Delivery::new(4, Duration::from_secs(1), 500);
        d.track(cursor(1, 0, 0));
        assert_eq!(d.on_live(1, 1, false, now), Live::Send);
        assert_eq!(d.on_live(1, 2, false, now), Live::Send);
        assert_eq!(d.unacked(), 2);
        assert_eq!(d.on_ack(1, 2), Some(2));
        assert_eq!(d.unacked(), 0);
        assert_eq!(d.on_ack(1, 1), None);
        assert_eq!(d.on_live(2, 1, false, now), Live::Unknown);
    }

    #[test]
    fn gap_and_full_window_stream_from_store() {
        let now = Instant::now();
        let mut d = Delivery::new(2, Duration::from_secs(1), 500);
        d.track(cursor(1, 0, 0));
        assert_eq!(d.on_live(1, 1, false, now), Live::Send);
        assert_eq!(d.on_live(1, 2, false, now), Live::Send);
        // Window full: the third waits for the store.
        assert_eq!(d.on_live(1, 3, false, now), Live::Skip);
        assert_eq!(d.next_fetch(), None);
        d.on_ack(1, 1);
        assert_eq!(d.next_fetch(), Some((1, 2, 1)));
        assert!(d.record_fetched(1, 3, false, now));
        d.fetched(1, false);
        assert_eq!(d.next_fetch(), None);
        assert_eq!(d.unacked(), 2);
    }

    #[test]
    fn backlog_is_paged() {
        let now = Instant::now();
        let mut d = Delivery::new(64, Duration::from_secs(1), 500);
        d.track(cursor(7, 10, 1_000));
        assert_eq!(d.next_fetch(), Some((7, 10, 64)));
        for s in 11..=74 {
            assert!(d.record_fetched(7, s, false, now));
        }
        d.fetched(7, false);
        assert_eq!(d.next_fetch(), None);
        d.on_ack(7, 74);
        assert_eq!(d.next_fetch(), Some((7, 74, 64)));
    }

    #[test]
    fn timeout_rewinds_to_cursor_once() {
        let t0 = Instant::now();
        let mut d = Delivery::new(8, Duration::from_secs(1), 500);
        d.track(cursor(1, 0, 0));
        for s in 1..=3 {
            assert_eq!(d.on_live(1, s, false, t0), Live::Send);
        }
        d.on_ack(1, 1);
        assert_eq!(d.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(d.on_timer(t0 + Duration::from_millis(500)), 0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(d.on_timer(t1), 1);
        assert_eq!(d.unacked(), 0);
        assert_eq!(d.next_fetch(), Some((1, 1, 8)));
        assert!(d.record_fetched(1, 2, false, t1));
        assert!(d.record_fetched(1, 3, false, t1));
        d.fetched(1, true);
        // The old entries are stale now; only the resent ones count.
        assert_eq!(d.on_timer(t1 + Duration::from_millis(999)), 0);
        assert_eq!(d.on_timer(t1 + Duration::from_secs(1)), 1);
    }

    #[test]
    fn own_messages_advance_without_frames() {
        let now = Instant::now();
        let mut d = Delivery::new(8, Duration::from_secs(1), 500);
        d.track(cursor(1, 0, 0));
        assert_eq!(d.on_live(1, 1, true, now), Live::Skip);
        assert_eq!(d.unacked(), 0);
        assert_eq!(d.on_live(1, 2, false, now), Live::Send);
        assert_eq!(d.on_live(1, 3, true, now), Live::Skip);
        assert_eq!(d.unacked(), 2);
        assert_eq!(d.on_ack(1, 3), Some(3));
        assert_eq!(d.unacked(), 0);
    }

    #[test]
    fn acks_are_wanted_for_receipts_or_window_room() {
        let now = Instant::now();
        let mut d = Delivery::new(2, Duration::from_secs(1), 500);
        d.track(Cursor { conversation_id: 1, acked_seq: 0, last_seq: 0, member_count: 10_000 });
        d.track(cursor(2, 0, 0));
        assert!(!d.wants_acks());
        // A large group's message, with room left in the window: its ack can wait.
        assert_eq!(d.on_live(1, 1, false, now), Live::Send);
        assert!(!d.wants_acks());
        // The window is full: acks make room.
        assert_eq!(d.on_live(1, 2, false, now), Live::Send);
        assert!(d.wants_acks());
        d.on_ack(1, 2);
        assert!(!d.wants_acks());
        // A direct message: its sender waits for the receipt.
        assert_eq!(d.on_live(2, 1, false, now), Live::Send);
        assert!(d.wants_acks());
        d.on_ack(2, 1);
        assert!(!d.wants_acks());
        // A conversation that grows past the threshold takes its unacked messages along.
        assert_eq!(d.on_live(2, 2, false, now), Live::Send);
        let before = d.lazy_version();
        d.track(Cursor { conversation_id: 2, acked_seq: 0, last_seq: 2, member_count: 501 });
        assert!(!d.wants_acks());
        assert_ne!(d.lazy_version(), before);
        let mut lazy: Vec<_> = d.lazy().collect();
        lazy.sort();
        assert_eq!(lazy, vec![1, 2]);
        d.forget(2);
        assert_eq!(d.unacked(), 0);
    }

    #[test]
    fn inflight_queue_stays_bounded() {
        let now = Instant::now();
        let mut d = Delivery::new(4, Duration::from_secs(60), 500);
        d.track(cursor(1, 0, 0));
        d.track(cursor(2, 0, 0));
        // Conversation 1 keeps one message outstanding at the front.
        assert_eq!(d.on_live(1, 1, false, now), Live::Send);
        for s in 1..=10_000 {
            assert_eq!(d.on_live(2, s, false, now), Live::Send);
            d.on_ack(2, s);
        }
        assert!(d.inflight.len() <= 4 * 16 + 1);
        assert_eq!(d.unacked(), 1);
    }
}
