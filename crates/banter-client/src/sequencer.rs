//! Per-conversation ordering: duplicates, baselines, gaps and hand-off in seq order.
//!
//! Every message a session learns of goes through [`Sequencer::accept`]:
//! pushed by the server, fetched from the history endpoint to fill a gap, or
//! confirmed by a `sent` for the session's own send. The sequencer holds
//! messages that arrive above the contiguous seq until the ones below them
//! are there, then hands the new ones out in seq order and moves the
//! contiguous seq of the [`LocalHistory`] forward. It does no I/O: when a
//! pushed message reveals a gap it answers a [`FillRequest`], and the session
//! fetches the missing range and feeds it back.
//!
//! Own messages never start a fill. The server pushes them to other devices
//! only, and a `sent` may overtake the push of a message stored just before
//! it, so a hole below an own message is usually only late.

use crate::{ClientError, LocalHistory};
use banter_proto::frame::MessageView;
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;

/// Most messages held out of order per conversation. Beyond it the highest
/// are dropped: they are not acknowledged, so the server pushes them again.
pub(crate) const MAX_PENDING: usize = 10_000;

/// How many own messages a conversation without a baseline may hold before
/// the lowest of them becomes the baseline. Until then a backlog push of an
/// older message may still arrive and take that role.
pub(crate) const OWN_BASELINE_AFTER: usize = 256;

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A `message` frame.
    Pushed,
    /// A page of the history endpoint, fetched to fill a gap.
    Fetched,
    /// The session's own message, confirmed by a `sent` frame.
    Own,
}

/// What to do with a message, given its conversation's contiguous seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The conversation has no baseline yet: this message sets it.
    Baseline,
    /// At or below the contiguous seq: already held.
    Duplicate,
    /// Exactly the next seq.
    Next,
    /// Above the next seq: these seqs are missing before it.
    Gap { missing: RangeInclusive<u64> },
}

/// Classifies a message with seq `seq` in a conversation whose contiguous seq is `contiguous`.
pub(crate) fn decide(contiguous: Option<u64>, seq: u64) -> Decision {
    match contiguous {
        None => Decision::Baseline,
        Some(c) if seq <= c => Decision::Duplicate,
        Some(c) if seq == c + 1 => Decision::Next,
        Some(c) => Decision::Gap { missing: c + 1..=seq - 1 },
    }
}

/// A range of a conversation to fetch from the history endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FillRequest {
    /// The conversation with the gap.
    pub(crate) conversation_id: String,
    /// Fetch messages with a seq above this one…
    pub(crate) after: u64,
    /// …up to this one at least.
    pub(crate) until: u64,
}

/// The outcome of feeding the sequencer.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    /// New messages to hand to the application, in seq order.
    pub(crate) deliver: Vec<MessageView>,
    /// Whether the contiguous seq moved forward.
    pub(crate) advanced: bool,
    /// Whether a message already held came again: the server retries what it
    /// believes unacknowledged, so the acknowledgement should be repeated.
    pub(crate) duplicate: bool,
    /// A gap to fill from the history endpoint.
    pub(crate) fill: Option<FillRequest>,
    /// A failure of the local history; the messages concerned stay held back
    /// unacknowledged, and the server will push them again.
    pub(crate) error: Option<ClientError>,
}

/// A message held above the contiguous seq.
#[derive(Debug)]
struct Pending {
    /// The message.
    message: MessageView,
    /// Whether the application still has to see it (false for own messages
    /// and for messages the history already held).
    emit: bool,
}

/// What the sequencer tracks for one conversation.
#[derive(Debug, Default)]
struct ConversationState {
    /// The contiguous seq, as read from the history and moved forward since.
    contiguous: Option<u64>,
    /// The baseline, when this session set it: the seq below the first
    /// message held, which the client does not hold itself.
    baseline: Option<u64>,
    /// Messages held above the contiguous seq, by seq.
    pending: BTreeMap<u64, Pending>,
    /// Whether a fill of this conversation is running.
    filling: bool,
}

/// The ordering state of every conversation a session has seen.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    /// Conversations by id, loaded from the history on first sight.
    conversations: HashMap<String, ConversationState>,
}

impl Sequencer {
    /// A sequencer that has seen nothing yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The contiguous seq of a conversation, if it has a baseline.
    pub(crate) fn contiguous(&self, conversation_id: &str) -> Option<u64> {
        self.conversations.get(conversation_id).and_then(|c| c.contiguous)
    }

    /// Whether `seq` may be acknowledged: it must lie above the baseline set
    /// by this session, since the baseline seq itself is not held.
    pub(crate) fn ackable(&self, conversation_id: &str, seq: u64) -> bool {
        let baseline = self.conversations.get(conversation_id).and_then(|c| c.baseline);
        seq > baseline.unwrap_or(0)
    }

    /// Takes in one message and answers what became deliverable.
    pub(crate) fn accept(
        &mut self,
        history: &mut dyn LocalHistory,
        message: MessageView,
        origin: Origin,
    ) -> Result<Accepted, ClientError> {
        let conversation_id = message.conversation_id.clone();
        let seq = message.seq;
        let state = self.state(history, &conversation_id)?;
        let mut out = Accepted::default();

        if decide(state.contiguous, seq) == Decision::Duplicate {
            out.duplicate = origin != Origin::Own;
            return Ok(out);
        }
        if state.pending.contains_key(&seq) {
            return Ok(out);
        }
        let held = match origin {
            Origin::Own => {
                history.insert(&message)?;
                true
            }
            Origin::Pushed | Origin::Fetched => history.contains(&message.message_id)?,
        };
        state.pending.insert(seq, Pending { message, emit: !held });

        if state.contiguous.is_none() {
            if origin == Origin::Own && state.pending.len() <= OWN_BASELINE_AFTER {
                return Ok(out);
            }
            // Pushes of one conversation arrive in ascending seq order, so
            // nothing older than the lowest held message is owed to this device.
            let lowest = *state.pending.keys().next().expect("just inserted");
            let baseline = lowest.saturating_sub(1);
            state.contiguous = Some(baseline);
            state.baseline = Some(baseline);
            if let Err(e) = history.set_contiguous(&conversation_id, baseline) {
                out.error = Some(e);
            }
        }
        drain(state, history, &conversation_id, &mut out);
        if origin == Origin::Pushed && !state.filling {
            out.fill = gap(state, &conversation_id);
        }
        trim(state);
        Ok(out)
    }

    /// Closes a fill of `conversation_id` that fetched everything up to
    /// `until`, or everything there was when `exhausted`. A hole the history
    /// could not fill is skipped, since the server has no message for it;
    /// a hole above `until`, opened by pushes during the fill, asks for another fill.
    pub(crate) fn fill_done(
        &mut self,
        history: &mut dyn LocalHistory,
        conversation_id: &str,
        until: u64,
        exhausted: bool,
    ) -> Accepted {
        let mut out = Accepted::default();
        let Some(state) = self.conversations.get_mut(conversation_id) else {
            return out;
        };
        state.filling = false;
        let (Some(contiguous), Some(&lowest)) = (state.contiguous, state.pending.keys().next()) else {
            return out;
        };
        if lowest > contiguous + 1 && (exhausted || lowest - 1 <= until) {
            tracing::warn!(
                conversation_id,
                from = contiguous + 1,
                to = lowest - 1,
                "history has no messages for a gap; skipping it"
            );
            state.contiguous = Some(lowest - 1);
            drain(state, history, conversation_id, &mut out);
            out.advanced = true;
        }
        out.fill = gap(state, conversation_id);
        out
    }

    /// The state of a conversation, read from the history on first sight.
    fn state(
        &mut self,
        history: &mut dyn LocalHistory,
        conversation_id: &str,
    ) -> Result<&mut ConversationState, ClientError> {
        if !self.conversations.contains_key(conversation_id) {
            let contiguous = history.contiguous(conversation_id)?;
            self.conversations
                .insert(conversation_id.to_owned(), ConversationState { contiguous, ..Default::default() });
        }
        Ok(self.conversations.get_mut(conversation_id).expect("inserted above"))
    }
}

/// Hands out the pending messages that continue the contiguous run and
/// records the new contiguous seq in the history.
fn drain(state: &mut ConversationState, history: &mut dyn LocalHistory, conversation_id: &str, out: &mut Accepted) {
    let Some(start) = state.contiguous else {
        return;
    };
    let mut contiguous = start;
    while let Some(entry) = state.pending.first_entry() {
        if *entry.key() != contiguous + 1 {
            break;
        }
        let pending = entry.remove();
        if pending.emit {
            if let Err(e) = history.insert(&pending.message) {
                state.pending.insert(pending.message.seq, pending);
                out.error = Some(e);
                break;
            }
            out.deliver.push(pending.message);
        }
        contiguous += 1;
    }
    if contiguous > start {
        state.contiguous = Some(contiguous);
        out.advanced = true;
        if let Err(e) = history.set_contiguous(conversation_id, contiguous) {
            out.error = Some(e);
        }
    }
}

/// The fill that the hole below the lowest pending message calls for, if any;
/// marks the conversation as filling when it answers one.
fn gap(state: &mut ConversationState, conversation_id: &str) -> Option<FillRequest> {
    let contiguous = state.contiguous?;
    let lowest = *state.pending.keys().next()?;
    match decide(Some(contiguous), lowest) {
        Decision::Gap { missing } => {
            state.filling = true;
            Some(FillRequest { conversation_id: conversation_id.to_owned(), after: contiguous, until: *missing.end() })
        }
        _ => None,
    }
}

/// Drops the highest pending messages beyond [`MAX_PENDING`].
fn trim(state: &mut ConversationState) {
    while state.pending.len() > MAX_PENDING {
        state.pending.pop_last();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::message;
    use crate::MemoryHistory;

    fn seqs(messages: &[MessageView]) -> Vec<u64> {
        messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, 7), Decision::Baseline);
        assert_eq!(decide(Some(5), 5), Decision::Duplicate);
        assert_eq!(decide(Some(5), 1), Decision::Duplicate);
        assert_eq!(decide(Some(5), 6), Decision::Next);
        assert_eq!(decide(Some(5), 7), Decision::Gap { missing: 6..=6 });
        assert_eq!(decide(Some(0), 10), Decision::Gap { missing: 1..=9 });
    }

    #[test]
    fn first_message_sets_the_baseline_without_backfill() {
        let mut history = MemoryHistory::new();
        let mut seq = Sequencer::new();
        let out = seq.accept(&mut history, message("a", 40), Origin::Pushed).unwrap();
        assert_eq!(seqs(&out.deliver), vec![40]);
        assert!(out.fill.is_none(), "older history is not backfilled");
        assert_eq!(history.contiguous("a").unwrap(), Some(40));
        assert!(seq.ackable("a", 40) && !seq.ackable("a", 39), "the baseline itself is not held");
        let out = seq.accept(&mut history, message("a", 41), Origin::Pushed).unwrap();
        assert_eq!(seqs(&out.deliver), vec![41]);
    }

    #[test]
    fn duplicates_are_dropped_and_ask_for_a_new_ack() {
        let mut history = MemoryHistory::new();
        let mut seq = Sequencer::new();
        seq.accept(&mut history, message("a", 1), Origin::Pushed).unwrap();
        let out = seq.accept(&mut history, message("a", 1), Origin::Pushed).unwrap();
        assert!(out.deliver.is_empty());
        assert!(out.duplicate);
        assert!(!out.advanced);
    }

    #[test]
    fn a_gap_asks_for_a_fill_and_the_fill_delivers_in_order() {
        let mut history = MemoryHistory::new();
        let mut seq = Sequencer::new();
        seq.accept(&mut history, message("a", 1), Origin::Pushed).unwrap();
        let out = seq.accept(&mut history, message("a", 4), Origin::Pushed).unwrap();
        assert!(out.deliver.is_empty(), "4 waits for 2 and 3");
        assert_eq!(out.fill, Some(FillRequest { conversation_id: "a".into(), after: 1, until: 3 }));

        let out = seq.accept(&mut history, message("a", 5), Origin::Pushed).unwrap();
        assert!(out.fill.is_none(), "one fill at a time");
        for s in 2..=5 {
            let out = seq.accept(&mut history, message("a", s), Origin::Fetched).unwrap();
            match s {
                2 => assert_eq!(seqs(&out.deliver), vec![2]),
                3 => assert_eq!(seqs(&out.deliver), vec![3, 4, 5]),
                _ => assert!(out.deliver.is_empty(), "already delivered"),
            }
        }
        let out = seq.fill_done(&mut history, "a", 3, false);
        assert!(out.fill.is_none() && out.deliver.is_empty());
        assert_eq!(history.contiguous("a").unwrap(), Some(5));
    }

    #[test]
    fn a_hole_the_history_cannot_fill_is_skipped() {
        let mut history = MemoryHistory::new();
        let mut seq = Sequencer::new();
        seq.accept(&mut history, message("a", 1), Origin::Pushed).unwrap();
        assert!(seq.accept(&mut history, message("a", 3), Origin::Pushed).unwrap().fill.is_some());
        let out = seq.fill_done(&mut history, "a", 2, true);
        assert_eq!(seqs(&out.deliver), vec![3]);
        assert_eq!(seq.contiguous("a"), Some(3));
    }

    #[test]
    fn pushes_during_a_fill_above_its_range_ask_for_another() {
        let mut history = MemoryHistory::new();
        let mut seq = Sequencer::new();
        seq.accept(&mut history, message("a", 1), Origin::Pushed).unwrap();
        seq.accept(&mut history, message("a", 3), Origin::Pushed).unwrap();
        seq.accept(&mut history, message("a", 6), Origin::Pushed).unwrap();
        let out = seq.accept(&mut history, message("a", 2), Origin::Fetched).unwrap();
        assert_eq!(seqs(&out.deliver), vec![2, 3]);
        let out = seq.fill_done(&mut history, "a", 2, false);
        assert_eq!(out.fill, Some(FillRequest { conversation_id: "a".into(), after: 3, until: 5 }));
    }

    #[test]
    fn own_messages_fill_the_run_silently_and_never_start_a_fill() {
        let mut history = MemoryHistory::new();
        let mut seq = Sequencer::new();
        seq.accept(&mut history, message("a", 1), Origin::Pushed).unwrap();
        let out = seq.accept(&mut history, message("a", 3), Origin::Own).unwrap();
        assert!(out.fill.is_none() && out.deliver.is_empty(), "the push of 2 is only late");
        let out = seq.accept(&mut history, message("a", 2), Origin::Pushed).unwrap();
        assert_eq!(seqs(&out.deliver), vec![2], "own message 3 is held but not handed out");
        assert_eq!(seq.contiguous("a"), Some(3));
        let out = seq.accept(&mut history, message("a", 3), Origin::Pushed).unwrap();
        assert!(out.deliver.is_empty(), "an own message coming back in a backlog is a duplicate");
    }

    #[test]
    fn own_messages_before_any_push_leave_the_baseline_to_the_backlog() {
        let mut history = MemoryHistory::new();
        let mut seq = Sequencer::new();
        seq.accept(&mut history, message("a", 7), Origin::Own).unwrap();
        assert_eq!(seq.contiguous("a"), None);
        let out = seq.accept(&mut history, message("a", 5), Origin::Pushed).unwrap();
        assert_eq!(seqs(&out.deliver), vec![5]);
        let out = seq.accept(&mut history, message("a", 6), Origin::Pushed).unwrap();
        assert_eq!(seqs(&out.deliver), vec![6]);
        assert_eq!(seq.contiguous("a"), Some(7));
    }

    #[test]
    fn many_own_messages_set_the_baseline_themselves() {
        let mut history = MemoryHistory::new();
        let mut seq = Sequencer::new();
        for s in 1..=(OWN_BASELINE_AFTER as u64 + 1) {
            seq.accept(&mut history, message("a", s + 100), Origin::Own).unwrap();
        }
        assert_eq!(seq.contiguous("a"), Some(OWN_BASELINE_AFTER as u64 + 101));
        assert_eq!(history.held_ids(), 0, "ids are pruned once the run is contiguous");
    }

    #[test]
    fn messages_the_history_already_holds_are_not_handed_out_again() {
        let mut history = MemoryHistory::new();
        history.set_contiguous("a", 1).unwrap();
        history.insert(&message("a", 3)).unwrap();
        let mut seq = Sequencer::new();
        let out = seq.accept(&mut history, message("a", 3), Origin::Pushed).unwrap();
        assert!(out.deliver.is_empty());
        let out = seq.accept(&mut history, message("a", 2), Origin::Fetched).unwrap();
        assert_eq!(seqs(&out.deliver), vec![2]);
        assert_eq!(seq.contiguous("a"), Some(3));
    }
}
