//! The newest messages of recently read conversations, kept in memory.
//!
//! The message table is in append order, so that a commit's writes stay on
//! a few pages however many conversations are active; the price is that the
//! newest 50 messages of a conversation sit on up to 50 different pages,
//! and a page of history costs as many B-tree descents. The page a client
//! asks for first, and again and again, is that newest one. So the store
//! keeps the tail of each conversation read lately: filled by the read of
//! its newest page that missed, extended by the writer after each commit,
//! at most [`TAIL_LEN`] messages long, and bounded in bytes over all
//! conversations, least recently read first out.
//!
//! A tail is consecutive seqs ending at the newest message whose append has
//! returned, so a page served from it holds every message acknowledged
//! before the read began, as the table's page would:
//!
//! - The writer extends tails after its commit succeeded and before it
//!   answers anyone ([`Tails::appended`]), in seq order. (Between the two, a
//!   read of the table may already see a message that a tail does not yet
//!   hold; nobody has been told of it.)
//! - A read that misses the newest page marks the conversation as being
//!   filled *before* it starts its read ([`Tails::lookup`]); commits to that
//!   conversation meanwhile record their seqs in the mark, and the rows read
//!   are kept only if they reach the highest of them ([`Fill::keep`]). So a
//!   tail never misses a message committed while it was being read.
//! - A message that does not follow the tail's last one drops the tail.
//!
//! A tail also remembers a few users who read it and were found members
//! ([`Tails::lookup_for`], [`Tails::known`]), so that their next reads need
//! no look at the table at all. Members only ever stop being members by
//! leaving, and a leave drops the conversation's whole entry after its
//! commit and before it is answered ([`Tails::left`]). A reader is recorded
//! only into the entry that was there before its membership was read
//! ([`Mark`]), and entries are never reused, so a member who has left, and
//! been told so, is never served from a tail again.
//!
//! Messages are never changed or deleted once stored, so a message held is
//! never out of date. Only the SQLite store has tails: its single writer
//! sees every commit. In a cluster, every node writes to PostgreSQL, so no
//! node could keep one.

use crate::{ConversationId, SeqRange, StoredMessage, UserId};
use hashlink::LruCache;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most messages kept of one conversation: a full default page of history
/// (50, and one more that tells whether there is more) with room to grow.
pub const TAIL_LEN: usize = 64;
/// Most readers a tail remembers as members; past it the longest known is forgotten.
pub const KNOWN_READERS: usize = 16;
/// Independent parts of the cache, each under its own lock.
const SHARDS: usize = 16;
/// Memory a tail holds besides its messages: its entry in the map and the
/// order of use, its ring of message slots, allocated whole, and at most
/// the readers it knows.
const ENTRY_COST: usize = std::mem::size_of::<Entry>()
    + std::mem::size_of::<ConversationId>()
    + 4 * std::mem::size_of::<usize>()
    + (TAIL_LEN + 1) * std::mem::size_of::<Arc<StoredMessage>>()
    + KNOWN_READERS * std::mem::size_of::<UserId>();

/// The tails of recently read conversations (see the module notes).
#[derive(Debug)]
pub struct Tails {
    shards: Vec<Mutex<Shard>>,
    /// Bytes each shard may hold.
    shard_bytes: usize,
    next_fill: AtomicU64,
}

/// What [`Tails::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// The page, ascending.
    Hit(Vec<Arc<StoredMessage>>),
    /// Read the table; with a ticket, give the rows read to [`Fill::keep`].
    Miss(Option<Fill>),
}

/// What [`Tails::lookup_for`] found for a reader.
#[derive(Debug)]
pub enum ForReader {
    /// The reader is a known member and the tail holds the page (ascending).
    Known(Vec<Arc<StoredMessage>>),
    /// Check the reader's membership in the table first. If a member: take
    /// the page from the [`Lookup`], and give the [`Mark`] to [`Tails::known`].
    Check(Lookup, Option<Mark>),
}

/// The conversation's entry as it was before a reader's membership was
/// read: only that entry may record the reader ([`Tails::known`]).
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    conversation: ConversationId,
    id: u64,
}

/// The right to keep the rows of one read as a conversation's tail
/// ([`Fill::keep`]); dropped unused (the read failed), it gives the
/// conversation back to the next read.
#[derive(Debug)]
pub struct Fill {
    tails: Arc<Tails>,
    conversation: ConversationId,
    id: u64,
    done: bool,
}

#[derive(Debug)]
struct Shard {
    entries: LruCache<ConversationId, Entry>,
    bytes: usize,
}

#[derive(Debug)]
enum Entry {
    /// A read is filling it; `appended` is the highest seq committed to the
    /// conversation since (0: none).
    Filling {
        id: u64,
        appended: u64,
    },
    Ready(Tail),
}

#[derive(Debug)]
struct Tail {
    /// The id of the fill that made it (no two entries share one).
    id: u64,
    /// Consecutive seqs, ending at the conversation's newest.
    messages: VecDeque<Arc<StoredMessage>>,
    /// Memory held, [`ENTRY_COST`] included.
    bytes: usize,
    /// Users found members since the entry was made, oldest first.
    readers: Vec<UserId>,
}

impl Tail {
    /// Whether the tail holds the conversation from its first message.
    fn complete(&self) -> bool {
        self.messages.front().is_none_or(|m| m.seq == 1)
    }

    /// The page `range` asks for, if the tail holds all of it.
    fn page(&self, range: SeqRange, limit: usize) -> Option<Vec<Arc<StoredMessage>>> {
        let first = self.messages.front().map_or(1, |m| m.seq);
        let after_last = self.messages.back().map_or(1, |m| m.seq + 1);
        let (from, to) = match range {
            SeqRange::Before(before) => {
                let end = before.min(after_last);
                let start = end.saturating_sub(limit as u64).max(1);
                (start, end)
            }
            SeqRange::After(after) => {
                let start = after.saturating_add(1).max(1);
                (start, start.saturating_add(limit as u64).min(after_last))
            }
        };
        if from >= to {
            return (from < first || self.complete() || from >= after_last).then(Vec::new);
        }
        if from < first {
            return None;
        }
        let skip = (from - first) as usize;
        Some(self.messages.iter().skip(skip).take((to - from) as usize).cloned().collect())
    }
}

impl Fill {
    /// Keeps `rows`, the newest page of the conversation read after the
    /// lookup that gave this ticket (ascending, asked for with `limit`), as
    /// its tail; unless a commit the read did not see touched the
    /// conversation meanwhile.
    pub fn keep(mut self, rows: &[Arc<StoredMessage>], limit: usize) {
        self.tails.keep(&self, rows, limit);
        self.done = true;
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if !self.done {
            self.tails.abandon(self);
        }
    }
}

/// Counts a lookup in `history_cache_lookups_total`.
fn count(hit: bool) {
    metrics::counter!("history_cache_lookups_total", "outcome" => if hit { "hit" } else { "miss" }).increment(1);
}

impl Entry {
    fn id(&self) -> u64 {
        match self {
            Entry::Filling { id, .. } => *id,
            Entry::Ready(tail) => tail.id,
        }
    }
}

/// Memory a message holds in a tail: itself, its two counters and its strings.
fn cost(m: &StoredMessage) -> usize {
    std::mem::size_of::<StoredMessage>() + 16 + m.content.len() + m.client_msg_id.len()
}

impl Tails {
    /// Tails holding at most about `max_bytes` of messages.
    pub fn new(max_bytes: usize) -> Tails {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { entries: LruCache::new_unbounded(), bytes: 0 })).collect();
        Tails { shards, shard_bytes: max_bytes / SHARDS, next_fill: AtomicU64::new(1) }
    }

    /// Whether any tail may be kept.
    pub fn enabled(&self) -> bool {
        self.shard_bytes > 0
    }

    fn shard(&self, conversation: ConversationId) -> std::sync::MutexGuard<'_, Shard> {
        let i = (conversation as u64 % SHARDS as u64) as usize;
        // A panic while holding a shard leaves nothing half-done that a reader could see.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The page `range` asks for, from the tail. A miss on the newest page,
    /// of a conversation without a tail or with one too short for it, comes
    /// with a [`Fill`].
    pub fn lookup(self: &Arc<Self>, conversation: ConversationId, range: SeqRange, limit: usize) -> Lookup {
        let outcome = self.find(conversation, range, limit);
        count(matches!(outcome, Lookup::Hit(_)));
        outcome
    }

    /// The page `range` asks for on behalf of `reader`: straight from the
    /// tail if the reader is known to be a member; else what [`Tails::lookup`]
    /// finds, with a [`Mark`] that records the reader once found a member.
    pub fn lookup_for(
        self: &Arc<Self>,
        conversation: ConversationId,
        reader: UserId,
        range: SeqRange,
        limit: usize,
    ) -> ForReader {
        if self.shard_bytes == 0 {
            return ForReader::Check(self.lookup(conversation, range, limit), None);
        }
        let mut shard = self.shard(conversation);
        let known = match shard.entries.get(&conversation) {
            Some(Entry::Ready(tail)) if tail.readers.contains(&reader) => tail.page(range, limit),
            _ => None,
        };
        if let Some(page) = known {
            drop(shard);
            count(true);
            return ForReader::Known(page);
        }
        let outcome = self.find_in(&mut shard, conversation, range, limit);
        // After `find_in`, which may have made the entry a reader's check
        // will find again: the mark is taken before the check reads anything.
        let mark = shard.entries.peek(&conversation).map(|e| Mark { conversation, id: e.id() });
        drop(shard);
        count(matches!(outcome, Lookup::Hit(_)));
        ForReader::Check(outcome, mark)
    }

    /// Records `reader`, found a member after `mark` was taken, in the
    /// conversation's tail; unless the entry marked is gone (a leave, an
    /// eviction or a refill came between).
    pub fn known(&self, mark: Mark, reader: UserId) {
        let mut shard = self.shard(mark.conversation);
        let Some(Entry::Ready(tail)) = shard.entries.peek_mut(&mark.conversation) else { return };
        if tail.id != mark.id || tail.readers.contains(&reader) {
            return;
        }
        if tail.readers.len() == KNOWN_READERS {
            tail.readers.remove(0);
        }
        tail.readers.push(reader);
    }

    /// Forgets everything of conversations that a member has just left: the
    /// writer calls it after the leave commits and before it answers.
    pub fn left(&self, conversations: &[ConversationId]) {
        for &conversation in conversations {
            let mut shard = self.shard(conversation);
            if let Some(Entry::Ready(tail)) = shard.entries.remove(&conversation) {
                shard.bytes -= tail.bytes;
            }
        }
    }

    fn find(self: &Arc<Self>, conversation: ConversationId, range: SeqRange, limit: usize) -> Lookup {
        if self.shard_bytes == 0 {
            return Lookup::Miss(None);
        }
        let mut shard = self.shard(conversation);
        self.find_in(&mut shard, conversation, range, limit)
    }

    fn find_in(
        self: &Arc<Self>,
        shard: &mut Shard,
        conversation: ConversationId,
        range: SeqRange,
        limit: usize,
    ) -> Lookup {
        match shard.entries.get(&conversation) {
            Some(Entry::Ready(tail)) => {
                if let Some(page) = tail.page(range, limit) {
                    return Lookup::Hit(page);
                }
            }
            Some(Entry::Filling { .. }) => return Lookup::Miss(None),
            None => {}
        }
        // Only the newest page fills a tail, and only a page that fits in one.
        if range != SeqRange::Before(u64::MAX) || !(1..=TAIL_LEN).contains(&limit) {
            return Lookup::Miss(None);
        }
        let id = self.next_fill.fetch_add(1, Ordering::Relaxed);
        if let Some(Entry::Ready(short)) = shard.entries.insert(conversation, Entry::Filling { id, appended: 0 }) {
            shard.bytes -= short.bytes;
        }
        Lookup::Miss(Some(Fill { tails: Arc::clone(self), conversation, id, done: false }))
    }

    /// Keeps `rows` for `fill` (see [`Fill::keep`]).
    fn keep(&self, fill: &Fill, rows: &[Arc<StoredMessage>], limit: usize) {
        let mut shard = self.shard(fill.conversation);
        let Some(Entry::Filling { id, appended }) = shard.entries.peek(&fill.conversation) else { return };
        if *id != fill.id {
            return;
        }
        let newest = rows.last().map_or(0, |m| m.seq);
        // A page shorter than asked for must reach the first message.
        let whole = rows.len() == limit || rows.first().is_none_or(|m| m.seq == 1);
        if newest < *appended || rows.len() > limit || !whole {
            shard.entries.remove(&fill.conversation);
            return;
        }
        let kept = &rows[rows.len().saturating_sub(TAIL_LEN)..];
        let mut messages = VecDeque::with_capacity(TAIL_LEN + 1);
        messages.extend(kept.iter().cloned());
        let bytes = ENTRY_COST + kept.iter().map(|m| cost(m)).sum::<usize>();
        shard.bytes += bytes;
        let tail = Tail { id: fill.id, messages, bytes, readers: Vec::new() };
        shard.entries.insert(fill.conversation, Entry::Ready(tail));
        self.evict(&mut shard);
    }

    /// Forgets a fill that kept nothing.
    fn abandon(&self, fill: &Fill) {
        let mut shard = self.shard(fill.conversation);
        if matches!(shard.entries.peek(&fill.conversation), Some(Entry::Filling { id, .. }) if *id == fill.id) {
            shard.entries.remove(&fill.conversation);
        }
    }

    /// Extends the tails with messages just committed, in the order of their seqs.
    pub fn appended<'a>(&self, messages: impl IntoIterator<Item = &'a Arc<StoredMessage>>) {
        if self.shard_bytes == 0 {
            return;
        }
        for m in messages {
            let mut shard = self.shard(m.conversation_id);
            let shard = &mut *shard;
            // `peek_mut`: a write is not a read, and does not make a tail recent.
            let Some(entry) = shard.entries.peek_mut(&m.conversation_id) else { continue };
            match entry {
                Entry::Filling { appended, .. } => *appended = (*appended).max(m.seq),
                Entry::Ready(tail) => {
                    let last = tail.messages.back().map_or(0, |l| l.seq);
                    if m.seq <= last {
                        continue;
                    }
                    if m.seq != last + 1 {
                        let gone = tail.bytes;
                        shard.entries.remove(&m.conversation_id);
                        shard.bytes -= gone;
                        continue;
                    }
                    let added = cost(m);
                    tail.messages.push_back(Arc::clone(m));
                    tail.bytes += added;
                    shard.bytes += added;
                    if tail.messages.len() > TAIL_LEN {
                        let old = tail.messages.pop_front().expect("longer than TAIL_LEN");
                        let removed = cost(&old);
                        tail.bytes -= removed;
                        shard.bytes -= removed;
                    }
                }
            }
            self.evict(shard);
        }
    }

    /// Drops the least recently read tails until the shard is within its bytes.
    fn evict(&self, shard: &mut Shard) {
        while shard.bytes > self.shard_bytes {
            match shard.entries.remove_lru() {
                Some((_, Entry::Ready(tail))) => shard.bytes -= tail.bytes,
                // A fill in progress holds nothing; it will find itself gone.
                Some((_, Entry::Filling { .. })) => {}
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(conversation: ConversationId, seq: u64) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            conversation_id: conversation,
            seq,
            message_id: seq as i64,
            sender_id: 1,
            sender_device: 1,
            client_msg_id: format!("c{seq}"),
            ts: 0,
            content: "\"x\"".into(),
        })
    }

    fn seqs(page: &[Arc<StoredMessage>]) -> Vec<u64> {
        page.iter().map(|m| m.seq).collect()
    }

    /// Fills conversation 1 with the page of its newest `limit` of `last` messages.
    fn filled(tails: &Arc<Tails>, last: u64, limit: usize) {
        let Lookup::Miss(Some(fill)) = tails.lookup(1, SeqRange::Before(u64::MAX), limit) else {
            panic!("a first read of the newest page gets a ticket")
        };
        let rows: Vec<_> = (last.saturating_sub(limit as u64) + 1..=last).map(|s| message(1, s)).collect();
        fill.keep(&rows, limit);
    }

    fn hit(tails: &Arc<Tails>, range: SeqRange, limit: usize) -> Option<Vec<u64>> {
        match tails.lookup(1, range, limit) {
            Lookup::Hit(page) => Some(seqs(&page)),
            Lookup::Miss(_) => None,
        }
    }

    #[test]
    fn a_filled_tail_answers_the_pages_it_holds_and_no_other() {
        let tails = Arc::new(Tails::new(1 << 20));
        filled(&tails, 100, 51);
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), 51), Some((50..=100).collect()));
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), 10), Some((91..=100).collect()));
        assert_eq!(hit(&tails, SeqRange::Before(95), 5), Some((90..=94).collect()));
        assert_eq!(hit(&tails, SeqRange::After(97), 50), Some(vec![98, 99, 100]));
        assert_eq!(hit(&tails, SeqRange::After(100), 50), Some(vec![]));
        // Older than the tail: the table answers.
        assert_eq!(hit(&tails, SeqRange::Before(60), 20), None);
        assert_eq!(hit(&tails, SeqRange::After(10), 50), None);
    }

    #[test]
    fn a_short_conversation_is_held_whole() {
        let tails = Arc::new(Tails::new(1 << 20));
        filled(&tails, 7, 51);
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), 51), Some((1..=7).collect()));
        assert_eq!(hit(&tails, SeqRange::After(0), 3), Some(vec![1, 2, 3]));
        assert_eq!(hit(&tails, SeqRange::Before(3), 50), Some(vec![1, 2]));
        let empty = Arc::new(Tails::new(1 << 20));
        filled(&empty, 0, 51);
        assert_eq!(hit(&empty, SeqRange::Before(u64::MAX), 51), Some(vec![]));
    }

    #[test]
    fn commits_extend_a_tail_in_order_and_a_gap_drops_it() {
        let tails = Arc::new(Tails::new(1 << 20));
        filled(&tails, 100, 51);
        tails.appended(&[message(1, 101), message(1, 102), message(2, 5)]);
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), 3), Some(vec![100, 101, 102]));
        // Held at TAIL_LEN: the oldest go.
        let more: Vec<_> = (103..=200).map(|s| message(1, s)).collect();
        tails.appended(&more);
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), TAIL_LEN), Some((137..=200).collect()));
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), TAIL_LEN + 1), None);
        // A message already held changes nothing; one past a gap drops the tail.
        tails.appended(&[message(1, 150)]);
        assert!(hit(&tails, SeqRange::Before(u64::MAX), 1).is_some());
        tails.appended(&[message(1, 202)]);
        assert!(matches!(tails.lookup(1, SeqRange::Before(u64::MAX), 51), Lookup::Miss(Some(_))));
    }

    #[test]
    fn a_commit_during_a_fill_keeps_its_rows_out() {
        let tails = Arc::new(Tails::new(1 << 20));
        let Lookup::Miss(Some(fill)) = tails.lookup(1, SeqRange::Before(u64::MAX), 51) else { panic!() };
        // A second reader meanwhile reads the table, without a ticket.
        assert!(matches!(tails.lookup(1, SeqRange::Before(u64::MAX), 51), Lookup::Miss(None)));
        tails.appended(&[message(1, 11)]);
        let rows: Vec<_> = (1..=10).map(|s| message(1, s)).collect();
        fill.keep(&rows, 51);
        assert!(hit(&tails, SeqRange::Before(u64::MAX), 51).is_none());
        // The next read fills it again; a commit its read saw does not stop it.
        let Lookup::Miss(Some(fill)) = tails.lookup(1, SeqRange::Before(u64::MAX), 51) else { panic!() };
        let rows: Vec<_> = (1..=12).map(|s| message(1, s)).collect();
        tails.appended(&[message(1, 12)]);
        fill.keep(&rows, 51);
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), 2), Some(vec![11, 12]));
    }

    #[test]
    fn a_tail_too_short_for_the_newest_page_is_filled_again() {
        let tails = Arc::new(Tails::new(1 << 20));
        filled(&tails, 100, 3);
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), 3), Some(vec![98, 99, 100]));
        filled(&tails, 100, 51);
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), 51), Some((50..=100).collect()));
        audit(&tails);
    }

    #[test]
    fn only_a_newest_page_that_fits_gets_a_ticket() {
        let tails = Arc::new(Tails::new(1 << 20));
        for (range, limit) in [
            (SeqRange::Before(u64::MAX), 0),
            (SeqRange::Before(u64::MAX), TAIL_LEN + 1),
            (SeqRange::Before(10), 5),
            (SeqRange::After(0), 5),
        ] {
            assert!(matches!(tails.lookup(1, range, limit), Lookup::Miss(None)), "{range:?} {limit}");
        }
    }

    #[test]
    fn an_old_ticket_keeps_nothing_once_its_mark_is_gone() {
        let tails = Arc::new(Tails::new(1 << 20));
        let Lookup::Miss(Some(old)) = tails.lookup(1, SeqRange::Before(u64::MAX), 51) else { panic!() };
        // Its mark goes (as when evicted), and a newer read marks the conversation.
        tails.abandon(&old);
        let Lookup::Miss(Some(new)) = tails.lookup(1, SeqRange::Before(u64::MAX), 51) else { panic!() };
        tails.appended(&[message(1, 6)]);
        old.keep(&(1..=5).map(|s| message(1, s)).collect::<Vec<_>>(), 51);
        assert!(hit(&tails, SeqRange::Before(u64::MAX), 51).is_none());
        new.keep(&(1..=6).map(|s| message(1, s)).collect::<Vec<_>>(), 51);
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), 51), Some((1..=6).collect()));
    }

    #[test]
    fn the_least_recently_read_tail_goes_first_when_full() {
        // Room for about two tails of 51 (each shard has a sixteenth).
        let one = ENTRY_COST + 51 * cost(&message(1, 1));
        let tails = Arc::new(Tails::new(SHARDS * (2 * one + one / 2)));
        // Conversations 1, 17 and 33 share a shard.
        for c in [1, 17] {
            let Lookup::Miss(Some(fill)) = tails.lookup(c, SeqRange::Before(u64::MAX), 51) else { panic!() };
            let rows: Vec<_> = (50..=100).map(|s| message(c, s)).collect();
            fill.keep(&rows, 51);
        }
        assert!(matches!(tails.lookup(1, SeqRange::Before(u64::MAX), 51), Lookup::Hit(_)));
        let Lookup::Miss(Some(fill)) = tails.lookup(33, SeqRange::Before(u64::MAX), 51) else { panic!() };
        let rows: Vec<_> = (50..=100).map(|s| message(33, s)).collect();
        fill.keep(&rows, 51);
        assert!(matches!(tails.lookup(1, SeqRange::Before(u64::MAX), 51), Lookup::Hit(_)));
        assert!(matches!(tails.lookup(33, SeqRange::Before(u64::MAX), 51), Lookup::Hit(_)));
        assert!(matches!(tails.lookup(17, SeqRange::Before(u64::MAX), 51), Lookup::Miss(_)));
    }

    #[test]
    fn a_fill_dropped_unused_lets_the_next_read_fill() {
        let tails = Arc::new(Tails::new(1 << 20));
        let Lookup::Miss(Some(fill)) = tails.lookup(1, SeqRange::Before(u64::MAX), 51) else { panic!() };
        // The read failed.
        drop(fill);
        filled(&tails, 3, 51);
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), 51), Some(vec![1, 2, 3]));
    }

    /// Reads the newest page of conversation 1 as `reader`, the way the
    /// store does: a known reader straight from the tail; else, a member
    /// after the check, from the lookup or the "table" (1..=last), recording
    /// the reader. Gives the page and whether it came without a check.
    fn read_as(tails: &Arc<Tails>, reader: UserId, last: u64, member: bool) -> Option<(Vec<u64>, bool)> {
        let range = SeqRange::Before(u64::MAX);
        match tails.lookup_for(1, reader, range, 51) {
            ForReader::Known(page) => Some((seqs(&page), true)),
            ForReader::Check(lookup, mark) => {
                if !member {
                    return None;
                }
                let page = match lookup {
                    Lookup::Hit(page) => page,
                    Lookup::Miss(fill) => {
                        let rows: Vec<_> = table_page(last, range, 51).into_iter().map(|s| message(1, s)).collect();
                        if let Some(fill) = fill {
                            fill.keep(&rows, 51);
                        }
                        rows
                    }
                };
                if let Some(mark) = mark {
                    tails.known(mark, reader);
                }
                Some((seqs(&page), false))
            }
        }
    }

    #[test]
    fn a_reader_found_a_member_reads_without_a_check_until_someone_leaves() {
        let tails = Arc::new(Tails::new(1 << 20));
        // The first read fills the tail and records its reader.
        assert_eq!(read_as(&tails, 7, 3, true), Some((vec![1, 2, 3], false)));
        assert_eq!(read_as(&tails, 7, 3, true), Some((vec![1, 2, 3], true)));
        // Another reader is checked once.
        assert_eq!(read_as(&tails, 8, 3, false), None);
        assert_eq!(read_as(&tails, 8, 3, true), Some((vec![1, 2, 3], false)));
        assert_eq!(read_as(&tails, 8, 3, true), Some((vec![1, 2, 3], true)));
        tails.appended(&[message(1, 4)]);
        assert_eq!(read_as(&tails, 7, 4, true), Some((vec![1, 2, 3, 4], true)));
        // A leave of anyone forgets every reader, and the tail with them.
        tails.left(&[1]);
        assert!(matches!(tails.lookup(1, SeqRange::Before(u64::MAX), 10), Lookup::Miss(Some(_))));
        assert_eq!(read_as(&tails, 7, 4, false), None);
        assert_eq!(read_as(&tails, 8, 4, true), Some((vec![1, 2, 3, 4], false)));
        assert_eq!(read_as(&tails, 8, 4, true), Some((vec![1, 2, 3, 4], true)));
        assert_eq!(read_as(&tails, 7, 4, false), None);
    }

    #[test]
    fn a_check_that_raced_a_leave_records_nobody() {
        let tails = Arc::new(Tails::new(1 << 20));
        filled(&tails, 3, 51);
        // The check read "member", then the leave committed and dropped the entry.
        let ForReader::Check(_, Some(mark)) = tails.lookup_for(1, 7, SeqRange::Before(u64::MAX), 51) else {
            panic!("an unknown reader is checked, with a mark")
        };
        tails.left(&[1]);
        // A new tail is filled before the check ends: it is not the entry marked.
        filled(&tails, 3, 51);
        tails.known(mark, 7);
        assert!(matches!(tails.lookup_for(1, 7, SeqRange::Before(u64::MAX), 51), ForReader::Check(Lookup::Hit(_), _)));
        // A leave during a fill: the fill keeps nothing, and its reader is not recorded.
        tails.left(&[1]);
        let ForReader::Check(Lookup::Miss(Some(fill)), Some(mark)) =
            tails.lookup_for(1, 7, SeqRange::Before(u64::MAX), 51)
        else {
            panic!("a first read fills, with a mark")
        };
        tails.left(&[1]);
        fill.keep(&[message(1, 1), message(1, 2), message(1, 3)], 51);
        tails.known(mark, 7);
        assert!(matches!(tails.lookup_for(1, 7, SeqRange::Before(u64::MAX), 51), ForReader::Check(Lookup::Miss(_), _)));
    }

    #[test]
    fn a_tail_remembers_its_latest_readers_only() {
        let tails = Arc::new(Tails::new(1 << 20));
        let newest: Vec<u64> = (50..=100).collect();
        for reader in 0..=KNOWN_READERS as UserId {
            assert_eq!(read_as(&tails, reader, 100, true), Some((newest.clone(), false)));
        }
        assert_eq!(read_as(&tails, 0, 100, true), Some((newest.clone(), false)));
        assert_eq!(read_as(&tails, KNOWN_READERS as UserId, 100, true), Some((newest, true)));
        // Known, but older than the tail: the check and the table answer.
        assert!(matches!(tails.lookup_for(1, 0, SeqRange::Before(10), 5), ForReader::Check(Lookup::Miss(None), _)));
        assert!(matches!(tails.lookup_for(1, 0, SeqRange::Before(60), 5), ForReader::Known(_)));
    }

    /// Checks what every shard holds: consecutive tails within [`TAIL_LEN`],
    /// bytes that add up, and no shard over its share.
    fn audit(tails: &Tails) {
        for shard in &tails.shards {
            let shard = shard.lock().unwrap();
            let mut sum = 0;
            for (_, entry) in shard.entries.iter() {
                if let Entry::Ready(tail) = entry {
                    assert!(tail.messages.len() <= TAIL_LEN);
                    assert!(tail.messages.iter().zip(tail.messages.iter().skip(1)).all(|(a, b)| b.seq == a.seq + 1));
                    assert_eq!(tail.bytes, ENTRY_COST + tail.messages.iter().map(|m| cost(m)).sum::<usize>());
                    sum += tail.bytes;
                }
            }
            assert_eq!(shard.bytes, sum);
            assert!(shard.bytes <= tails.shard_bytes);
        }
    }

    /// A small deterministic generator, so a failure can be replayed.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// The table's page of a conversation whose messages are 1..=last.
    fn table_page(last: u64, range: SeqRange, limit: usize) -> Vec<u64> {
        let all = 1..=last;
        match range {
            SeqRange::Before(b) => {
                let below: Vec<u64> = all.filter(|s| *s < b).collect();
                below[below.len().saturating_sub(limit)..].to_vec()
            }
            SeqRange::After(a) => all.filter(|s| *s > a).take(limit).collect(),
        }
    }

    /// A fill in flight: its ticket, conversation index, limit, and the rows its read saw.
    type PendingFill = (Fill, usize, usize, Option<Vec<Arc<StoredMessage>>>);

    /// A reader's check in flight: its conversation index, limit, what the
    /// lookup found, its mark, and (once read) its membership and the rows.
    struct PendingCheck {
        c: usize,
        limit: usize,
        lookup: Lookup,
        mark: Option<Mark>,
        read: Option<(bool, Vec<Arc<StoredMessage>>)>,
    }

    /// Random commits, reads, fills that read and keep at any moment, fills
    /// abandoned, a reader who leaves and joins again while its checks are in
    /// flight, and a budget of a few tails per shard: every hit is the
    /// table's page as of some moment between the last commit extended into
    /// the tails and the last commit made, a reader served without a check
    /// is a member or has a leave not yet answered, and the books always balance.
    #[test]
    fn random_interleavings_serve_only_the_tables_pages() {
        const CONVERSATIONS: [ConversationId; 5] = [1, 17, 33, 2, 18];
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let budget = SHARDS * (2 * ENTRY_COST + 90 * cost(&message(1, 1)));
            let tails = Arc::new(Tails::new(budget));
            // Per conversation: last committed, last extended into the tails.
            let mut committed = [0u64; 5];
            let mut extended = [0u64; 5];
            let mut fills: Vec<PendingFill> = Vec::new();
            // The reader's membership per conversation, and leaves committed
            // whose tails the writer has not dropped yet (not yet answered).
            let mut member = [true; 5];
            let mut leaving = [false; 5];
            let mut checks: Vec<PendingCheck> = Vec::new();
            let (mut hits, mut kept, mut known, mut leaves) = (0, 0, 0, 0);
            const READER: UserId = 9;
            let valid = |c: usize, extended: &[u64; 5], committed: &[u64; 5], range, limit, got: &[u64]| {
                (extended[c]..=committed[c]).any(|last| table_page(last, range, limit) == got)
            };
            for _ in 0..6_000 {
                let c = rng.below(5) as usize;
                let conversation = CONVERSATIONS[c];
                match rng.below(15) {
                    // A commit (its tails extended later, as the writer does).
                    0 | 1 => committed[c] += 1 + rng.below(3),
                    2 => {
                        let batch: Vec<_> =
                            (extended[c] + 1..=committed[c]).map(|s| message(conversation, s)).collect();
                        tails.appended(&batch);
                        extended[c] = committed[c];
                    }
                    3..=5 => {
                        let limit = [0, 1, 5, 51, 51, 64, 65][rng.below(7) as usize];
                        let range = match rng.below(4) {
                            0 | 1 => SeqRange::Before(u64::MAX),
                            2 => SeqRange::Before(rng.below(committed[c] + 3)),
                            _ => SeqRange::After(rng.below(committed[c] + 3)),
                        };
                        match tails.lookup(conversation, range, limit) {
                            Lookup::Hit(page) => {
                                let got = seqs(&page);
                                assert!(
                                    (extended[c]..=committed[c]).any(|last| table_page(last, range, limit) == got),
                                    "seed {seed}: {range:?} limit {limit} of {conversation} gave {got:?}; \
                                     extended {}, committed {}",
                                    extended[c],
                                    committed[c]
                                );
                                hits += 1;
                            }
                            Lookup::Miss(Some(fill)) => fills.push((fill, c, limit, None)),
                            Lookup::Miss(None) => {}
                        }
                    }
                    // A fill's read of the table, then later its keep, or its failure.
                    6 | 7 if !fills.is_empty() => {
                        let i = rng.below(fills.len() as u64) as usize;
                        let (_, fc, limit, read) = &mut fills[i];
                        if read.is_none() {
                            let conversation = CONVERSATIONS[*fc];
                            let page = table_page(committed[*fc], SeqRange::Before(u64::MAX), *limit);
                            *read = Some(page.into_iter().map(|s| message(conversation, s)).collect());
                        } else {
                            let (fill, _, limit, read) = fills.swap_remove(i);
                            fill.keep(&read.expect("read"), limit);
                            kept += 1;
                        }
                    }
                    8 if !fills.is_empty() => drop(fills.swap_remove(rng.below(fills.len() as u64) as usize)),
                    // The reader leaves (committed; answered once the writer drops the tail).
                    9 if member[c] && !leaving[c] && rng.below(4) == 0 => {
                        member[c] = false;
                        leaving[c] = true;
                        leaves += 1;
                    }
                    10 if leaving[c] => {
                        tails.left(&[conversation]);
                        leaving[c] = false;
                    }
                    11 if !member[c] && !leaving[c] => member[c] = true,
                    12 => {
                        let limit = [1, 5, 51, 64][rng.below(4) as usize];
                        let range = match rng.below(3) {
                            0 | 1 => SeqRange::Before(u64::MAX),
                            _ => SeqRange::After(rng.below(committed[c] + 3)),
                        };
                        match tails.lookup_for(conversation, READER, range, limit) {
                            ForReader::Known(page) => {
                                assert!(
                                    member[c] || leaving[c],
                                    "seed {seed}: a reader who has left was served from the tail"
                                );
                                let got = seqs(&page);
                                assert!(valid(c, &extended, &committed, range, limit, &got), "seed {seed}: {got:?}");
                                known += 1;
                            }
                            ForReader::Check(lookup, mark) => {
                                if let Lookup::Hit(page) = &lookup {
                                    let got = seqs(page);
                                    assert!(
                                        valid(c, &extended, &committed, range, limit, &got),
                                        "seed {seed}: {got:?}"
                                    );
                                }
                                checks.push(PendingCheck { c, limit, lookup, mark, read: None });
                            }
                        }
                    }
                    // A check's read of the membership (and the table), then later its end.
                    13 | 14 if !checks.is_empty() => {
                        let i = rng.below(checks.len() as u64) as usize;
                        let check = &mut checks[i];
                        if check.read.is_none() {
                            let conversation = CONVERSATIONS[check.c];
                            let page = table_page(committed[check.c], SeqRange::Before(u64::MAX), check.limit);
                            let rows = page.into_iter().map(|s| message(conversation, s)).collect();
                            check.read = Some((member[check.c], rows));
                        } else {
                            let check = checks.swap_remove(i);
                            let (was_member, rows) = check.read.expect("read");
                            if was_member {
                                if let Lookup::Miss(Some(fill)) = check.lookup {
                                    fill.keep(&rows, check.limit);
                                }
                                if let Some(mark) = check.mark {
                                    tails.known(mark, READER);
                                }
                            }
                        }
                    }
                    _ => {}
                }
                audit(&tails);
            }
            assert!(
                hits > 100 && kept > 50 && known > 20 && leaves > 20,
                "seed {seed}: {hits} hits, {kept} fills kept, {known} known reads, {leaves} leaves: \
                 the test exercised too little"
            );
        }
    }

    #[test]
    fn a_cache_of_no_bytes_keeps_nothing() {
        let tails = Arc::new(Tails::new(0));
        assert!(matches!(tails.lookup(1, SeqRange::Before(u64::MAX), 51), Lookup::Miss(None)));
        tails.appended(&[message(1, 1)]);
    }
}
