//! The asynchronous fan-out for groups above the sync threshold.
//!
//! A bounded queue of jobs, each one stored message to push to every member
//! device, drained by a worker task. Offering a job never waits, so a
//! sender's `sent` waits on the store alone, whatever the size of the group
//! and however far its delivery is behind.
//!
//! The queue is bounded twice: in jobs ([`FANOUT_QUEUE`]), and in pushes
//! (`--fanout-max-pushes`, [`FANOUT_PUSHES`] by default), since one message
//! to 10,000 members is 10,000 pushes. A job takes room for a push per
//! member when it is queued; the pushes the worker makes keep it until each
//! connection has handled its push (or the push was dropped); a connection
//! gives back the units of the pushes it handled in one turn of its loop
//! together, since every give-back takes the room's lock. So the bound
//! covers the jobs waiting and the pushes waiting in connections' channels.
//! The worker makes all of one message's pushes before it waits for the
//! room they need beyond what the job brought, which units given back pay
//! before any job may take them ([`PushRoom`]); so the pushes outstanding
//! can pass the bound by one message's devices (a group larger than the
//! bound still goes out).
//!
//! A message that finds no room is not held in memory: its conversation is
//! marked behind, with the range of seqs the queue did not take (one entry
//! per conversation, [`Behind`]), and every later message of that
//! conversation joins the range instead of the queue, so its messages still
//! go out in order. Once the worker has taken every job queued before the
//! conversation fell behind (`Behind::after_jobs`), it reads the range from
//! the store a page at a time
//! ([`CATCH_UP_PAGE`]), serializes each message once and pushes it like a
//! queued one, waiting for room as it goes; once it has caught up, the
//! conversation's messages take the queue again. A retried send (pushed
//! again in case its first attempt never was) goes out only if the queue
//! has room; it never starts or widens a range. Conversations behind take
//! turns, a page each; one whose page cannot be read gives its turn away,
//! and no page is read for [`CATCH_UP_RETRY`]. The store is the truth, so
//! the backlog lives there, and the sender is held back only by the store.

use crate::hub::{MessagePush, Push, Stored};
use crate::maps::FastMap;
use crate::push_room::PushRoom;
use crate::state::AppState;
use banter_store::{ConversationId, SeqRange, UserId};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Capacity of the fan-out queue, in jobs.
pub const FANOUT_QUEUE: usize = 1_024;
/// Capacity of the fan-out queue, in pushes made and not yet handled, by
/// default (`--fanout-max-pushes`).
pub const FANOUT_PUSHES: usize = 200_000;
/// Messages of a conversation that is behind read from the store at once.
pub const CATCH_UP_PAGE: usize = 64;
/// Wait before reading the store again after a read failed.
pub const CATCH_UP_RETRY: Duration = Duration::from_millis(500);

/// One stored message to push to every member device.
#[derive(Debug)]
pub struct Job {
    pub members: Arc<[UserId]>,
    pub message: Arc<Stored>,
    /// A retried send answered with its earlier message, pushed again in
    /// case the first attempt never was: it goes out only if the queue has
    /// room, and never starts or widens a range behind, since it was most
    /// likely pushed long ago and devices catch up on a gap by themselves.
    pub retry: bool,
}

/// A queued job, with the room it took.
#[derive(Debug)]
struct Queued {
    job: Job,
    room: usize,
}

/// The seqs of a conversation that the queue did not take: stored, not yet pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Behind {
    from: u64,
    up_to: u64,
    /// Jobs queued in all when the conversation fell behind: its range goes
    /// out only once the worker has taken that many, so none of its queued
    /// messages comes after the range.
    after_jobs: u64,
}

/// The conversations that are behind, taken in turn.
#[derive(Debug, Default)]
struct BehindSet {
    ranges: FastMap<ConversationId, Behind>,
    /// Each conversation of `ranges` once; the worker serves the front and
    /// moves it to the back while it stays behind, so none starves another.
    turns: VecDeque<ConversationId>,
    /// Jobs queued since the start, counted under the same lock as the ranges.
    queued: u64,
}

/// The queue's sending side; the receiver is taken by [`Fanout::run`].
#[derive(Debug)]
pub struct Fanout {
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    /// Room for pushes: one unit per member of a queued job, then per push made until it is handled.
    room: Arc<PushRoom>,
    /// The room's size.
    max_pushes: usize,
    /// Conversations whose messages found no room, pushed from the store by the worker.
    behind: Mutex<BehindSet>,
    /// Wakes the worker when a conversation falls behind.
    fell_behind: Notify,
}

impl Fanout {
    /// A queue whose pushes in flight are bounded by `max_pushes`
    /// (`Config::fanout_max_pushes`, [`FANOUT_PUSHES`] by default).
    pub fn new(max_pushes: usize) -> Fanout {
        let (tx, rx) = mpsc::channel(FANOUT_QUEUE);
        let max_pushes = max_pushes.max(1);
        Fanout {
            tx,
            rx: Mutex::new(Some(rx)),
            room: Arc::new(PushRoom::new(max_pushes)),
            max_pushes,
            behind: Mutex::default(),
            fell_behind: Notify::new(),
        }
    }

    /// Queues a job, or, when the queue has no room for it, adds its message
    /// to its conversation's range to push from the store. Never waits.
    pub fn offer(&self, job: Job) {
        let (conversation, seq) = (job.message.conversation_id, job.message.seq);
        // Held while queueing, so a conversation leaves the map only when no
        // message of it can be on its way into the queue instead.
        let mut behind = self.behind.lock().expect("fanout lock");
        if let Some(range) = behind.ranges.get_mut(&conversation) {
            // A new seq below the range is one stored in the same commit and
            // offered late (sends stored together are offered in any order).
            if !job.retry {
                range.from = range.from.min(seq);
                range.up_to = range.up_to.max(seq);
            }
            return;
        }
        let retry = job.retry;
        // A group larger than the whole bound takes all of it; the worker takes the rest.
        let room = job.members.len().clamp(1, self.max_pushes);
        let queued = self.room.try_take(room)
            && match self.tx.try_send(Queued { job, room }) {
                Ok(()) => true,
                Err(_) => {
                    self.room.give_back(room);
                    false
                }
            };
        metrics::gauge!("fanout_queue_depth").set((FANOUT_QUEUE - self.tx.capacity()) as f64);
        if queued {
            behind.queued += 1;
        } else if !retry {
            let after_jobs = behind.queued;
            behind.ranges.insert(conversation, Behind { from: seq, up_to: seq, after_jobs });
            behind.turns.push_back(conversation);
            metrics::gauge!("fanout_conversations_behind").set(behind.ranges.len() as f64);
            drop(behind);
            self.fell_behind.notify_one();
        }
    }

    /// Gives back `units` of room, taken over from handled pushes ([`MessagePush::handle`]).
    pub fn give_back(&self, units: usize) {
        self.room.give_back(units);
    }

    /// The conversation whose turn it is among those behind, if any, once
    /// the worker has taken `taken` jobs: `None` while jobs queued before
    /// it fell behind are still to be taken.
    fn next_behind(&self, taken: u64) -> Option<(ConversationId, Behind)> {
        let behind = self.behind.lock().expect("fanout lock");
        let conversation = *behind.turns.front()?;
        let range = *behind.ranges.get(&conversation)?;
        (range.after_jobs <= taken).then_some((conversation, range))
    }

    /// Moves the conversation at the front of the turns to the back (its
    /// page could not be read), so it does not hold up the others.
    fn skip_turn(&self) {
        let mut behind = self.behind.lock().expect("fanout lock");
        if let Some(c) = behind.turns.pop_front() {
            behind.turns.push_back(c);
        }
    }

    /// Records that `range` of `conversation`, the front of the turns, was
    /// pushed up to `pushed`; the conversation takes the queue again once
    /// nothing is left, and otherwise waits for its next turn.
    fn caught_up(&self, conversation: ConversationId, range: Behind, pushed: Option<u64>) {
        let mut behind = self.behind.lock().expect("fanout lock");
        let BehindSet { ranges, turns, .. } = &mut *behind;
        let done = ranges.get_mut(&conversation).is_none_or(|now| {
            match pushed {
                // A message below the range that arrived meanwhile (sends
                // stored together may be offered in either order) stays in it.
                Some(seq) if now.from == range.from => now.from = seq + 1,
                Some(_) => {}
                // Nothing stored from there on (the conversation was deleted): stop.
                None => now.from = now.up_to + 1,
            }
            now.from > now.up_to
        });
        // Only the worker takes turns, so the front is still this conversation.
        turns.pop_front();
        if done {
            ranges.remove(&conversation);
        } else {
            turns.push_back(conversation);
        }
        metrics::gauge!("fanout_conversations_behind").set(ranges.len() as f64);
    }

    /// The worker: pushes each queued message to every member device, and
    /// the messages of conversations that are behind from the store.
    pub async fn run(state: Arc<AppState>) {
        let Some(mut rx) = state.fanout.rx.lock().expect("fanout lock").take() else { return };
        let fanout = &state.fanout;
        // Jobs taken from the queue, against which ranges wait (`Behind::after_jobs`).
        let mut taken: u64 = 0;
        // After a failed read of the store, no range is read until then.
        let mut paused_until: Option<tokio::time::Instant> = None;
        while !state.shutdown.is_cancelled() {
            // The jobs queued now go first.
            for _ in 0..rx.len() {
                let Ok(Queued { job, room }) = rx.try_recv() else { break };
                taken += 1;
                if !push_job(&state, job, room).await {
                    return;
                }
            }
            metrics::gauge!("fanout_queue_depth").set(rx.len() as f64);
            if paused_until.is_some_and(|t| t <= tokio::time::Instant::now()) {
                paused_until = None;
            }
            if paused_until.is_none() {
                if let Some((conversation, range)) = fanout.next_behind(taken) {
                    match catch_up(&state, conversation, range).await {
                        CatchUp::Pushed => {}
                        CatchUp::Failed => {
                            fanout.skip_turn();
                            paused_until = Some(tokio::time::Instant::now() + CATCH_UP_RETRY);
                        }
                        CatchUp::ShuttingDown => return,
                    }
                    continue;
                }
            }
            let pause = async {
                match paused_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                queued = rx.recv() => match queued {
                    Some(Queued { job, room }) => {
                        taken += 1;
                        if !push_job(&state, job, room).await {
                            return;
                        }
                    }
                    None => return,
                },
                _ = fanout.fell_behind.notified() => {}
                _ = pause => {}
                _ = state.shutdown.cancelled() => return,
            }
        }
    }
}

/// Pushes one job, which took `taken` units of room when it was queued.
/// Returns `false` when the server is shutting down.
async fn push_job(state: &AppState, job: Job, taken: usize) -> bool {
    let room = &state.fanout.room;
    // The job's message is usually its own: it takes the room without a copy.
    let mut stored = Arc::unwrap_or_clone(job.message);
    stored.room = Some(Arc::clone(room));
    let message = Arc::new(stored);
    // Each push made holds one unit from now on: what the job took beyond
    // them (members not connected) is freed, and what more devices need is
    // taken from the free units or, short of those, waited for.
    room.claim();
    let made = push_message(state, &job.members, &message);
    tokio::select! {
        () = room.settle(taken, made) => {}
        _ = state.shutdown.cancelled() => return false,
    }
    tokio::task::yield_now().await;
    true
}

/// What became of one page of a conversation that is behind.
enum CatchUp {
    Pushed,
    /// The store could not be read; the range is left as it was.
    Failed,
    ShuttingDown,
}

/// Pushes the next page of a conversation that is behind, read from the store.
async fn catch_up(state: &AppState, conversation: ConversationId, range: Behind) -> CatchUp {
    let want = ((range.up_to - range.from + 1) as usize).min(CATCH_UP_PAGE);
    let read = async {
        let page = state.store.messages(conversation, SeqRange::After(range.from - 1), want).await?;
        let members = state.members.get(state.store.as_ref(), conversation).await?;
        Ok::<_, banter_store::StoreError>((page, members))
    };
    let (page, members) = match read.await {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(error = %e, conversation, "fan-out could not read a conversation that is behind; retrying");
            return CatchUp::Failed;
        }
    };
    metrics::counter!("fanout_from_store_total").increment(page.len() as u64);
    for m in &page {
        let job = Job { members: Arc::clone(&members), message: Arc::new(Stored::new(m)), retry: false };
        if !push_job(state, job, 0).await {
            return CatchUp::ShuttingDown;
        }
    }
    state.fanout.caught_up(conversation, range, page.last().map(|m| m.seq));
    CatchUp::Pushed
}

/// Pushes one stored message to every member device; returns how many pushes were made.
pub fn push_message(state: &AppState, members: &[UserId], message: &Arc<Stored>) -> usize {
    state.hub.push_users(members, |_, _| Some(Push::Message(MessagePush::new(Arc::clone(message)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(conversation: ConversationId, seq: u64, members: usize) -> Job {
        Job { retry: false, ..retried(conversation, seq, members) }
    }

    /// A job of a retried send.
    fn retried(conversation: ConversationId, seq: u64, members: usize) -> Job {
        let message = Stored {
            conversation_id: conversation,
            seq,
            ts: 0,
            frame: String::from("{}").into(),
            origin: None,
            room: None,
        };
        Job { members: (1..=members as UserId).collect(), message: Arc::new(message), retry: true }
    }

    fn range(fanout: &Fanout, conversation: ConversationId) -> Option<(u64, u64)> {
        fanout.behind.lock().unwrap().ranges.get(&conversation).map(|r| (r.from, r.up_to))
    }

    #[test]
    fn a_message_without_room_marks_its_conversation_behind_and_later_ones_follow() {
        let fanout = Fanout::new(3);
        fanout.offer(job(7, 1, 3));
        assert_eq!(range(&fanout, 7), None, "the first took the room and was queued");
        fanout.offer(job(7, 2, 3));
        fanout.offer(job(7, 4, 3));
        // Offered out of order (stored together), seq 3 still joins the range.
        fanout.offer(job(7, 3, 3));
        assert_eq!(range(&fanout, 7), Some((2, 4)));
        // Room given back does not take a conversation that is behind out of order.
        fanout.give_back(3);
        fanout.offer(job(7, 5, 3));
        assert_eq!(range(&fanout, 7), Some((2, 5)));
        // Another conversation finds the room and is queued.
        fanout.offer(job(8, 1, 3));
        assert_eq!(range(&fanout, 8), None);
        let mut rx = fanout.rx.lock().unwrap().take().unwrap();
        let queued: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|q| (q.job.message.conversation_id, q.job.message.seq))
            .collect();
        assert_eq!(queued, [(7, 1), (8, 1)]);
    }

    #[test]
    fn a_conversation_takes_the_queue_again_once_caught_up() {
        let fanout = Fanout::new(1);
        fanout.offer(job(7, 1, 2));
        fanout.offer(job(7, 2, 2));
        fanout.offer(job(7, 3, 2));
        let (c, r) = fanout.next_behind(u64::MAX).unwrap();
        assert_eq!((c, r.from, r.up_to), (7, 2, 3));
        fanout.caught_up(c, r, Some(2));
        assert_eq!(range(&fanout, 7), Some((3, 3)), "one left");
        let (c, r) = fanout.next_behind(u64::MAX).unwrap();
        fanout.caught_up(c, r, Some(3));
        assert_eq!(range(&fanout, 7), None);
        assert!(fanout.next_behind(u64::MAX).is_none());
        fanout.give_back(1);
        fanout.offer(job(7, 4, 1));
        assert_eq!(range(&fanout, 7), None, "queued again");
    }

    #[test]
    fn a_message_below_the_range_offered_during_a_catch_up_is_not_skipped() {
        let fanout = Fanout::new(1);
        fanout.offer(job(7, 1, 1));
        fanout.offer(job(7, 3, 1));
        let (c, r) = fanout.next_behind(u64::MAX).unwrap();
        // While the worker pushes 3, seq 2 (stored in the same commit) is offered.
        fanout.offer(job(7, 2, 1));
        fanout.caught_up(c, r, Some(3));
        assert_eq!(range(&fanout, 7), Some((2, 3)), "2 is pushed next, 3 again (a hint a device passes over)");
    }

    #[test]
    fn conversations_behind_take_turns_and_a_deleted_one_is_dropped() {
        let fanout = Fanout::new(1);
        fanout.offer(job(1, 1, 1));
        fanout.offer(job(7, 1, 1));
        fanout.offer(job(7, 2, 1));
        fanout.offer(job(8, 1, 1));
        let (c, r) = fanout.next_behind(u64::MAX).unwrap();
        assert_eq!(c, 7);
        fanout.caught_up(c, r, Some(1));
        assert_eq!(fanout.next_behind(u64::MAX).unwrap().0, 8, "7 is still behind but waits for its turn");
        let (c, r) = fanout.next_behind(u64::MAX).unwrap();
        // Nothing stored from there on: the conversation is gone.
        fanout.caught_up(c, r, None);
        assert_eq!(range(&fanout, 8), None);
        assert_eq!(fanout.next_behind(u64::MAX).unwrap().0, 7);
    }

    #[test]
    fn a_range_waits_for_the_jobs_queued_before_it() {
        let fanout = Fanout::new(2);
        fanout.offer(job(7, 1, 1));
        fanout.offer(job(8, 1, 1));
        // No room left: 7's seq 2 falls behind after two jobs were queued.
        fanout.offer(job(7, 2, 1));
        assert!(fanout.next_behind(0).is_none());
        assert!(fanout.next_behind(1).is_none(), "7's seq 1 may be the job not taken yet");
        assert_eq!(fanout.next_behind(2).map(|(c, r)| (c, r.from)), Some((7, 2)));
    }

    #[test]
    fn a_retried_send_does_not_widen_a_range() {
        let fanout = Fanout::new(1);
        fanout.offer(job(7, 1, 1));
        fanout.offer(job(7, 1_000, 1));
        // A retry of seq 2 is answered with its old message and offered again.
        fanout.offer(retried(7, 2, 1));
        assert_eq!(range(&fanout, 7), Some((1_000, 1_000)));
    }

    #[test]
    fn a_conversation_whose_page_cannot_be_read_gives_its_turn_away() {
        let fanout = Fanout::new(1);
        fanout.offer(job(1, 1, 1));
        fanout.offer(job(7, 1, 1));
        fanout.offer(job(8, 1, 1));
        assert_eq!(fanout.next_behind(u64::MAX).unwrap().0, 7);
        fanout.skip_turn();
        assert_eq!(fanout.next_behind(u64::MAX).unwrap().0, 8);
        assert_eq!(range(&fanout, 7), Some((1, 1)), "its range is kept");
    }

    #[test]
    fn a_retried_send_that_finds_no_room_starts_no_range() {
        let fanout = Fanout::new(1);
        fanout.offer(job(7, 9_999, 1));
        // The queue is full when seq 5 is retried.
        fanout.offer(retried(7, 5, 1));
        assert_eq!(range(&fanout, 7), None);
        fanout.offer(job(7, 10_000, 1));
        assert_eq!(range(&fanout, 7), Some((10_000, 10_000)), "not 5 to 10,000 all over again");
    }
}
