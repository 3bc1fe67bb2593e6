//! The newest messages of recently read conversations, kept in memory.
//!
//! The message table is in append order, so that a commit's writes stay on
//! a few pages however many conversations are active; the price is that the
//! newest 50 messages of a conversation sit on up to 50 different pages,
//! and a page of history costs as many B-tree descents. The page a client
//! asks for first, and again and again, is that newest one. So the store
//! keeps the tail of each conversation read lately: filled by the read that
//! missed, extended by the writer after each commit, and bounded in bytes,
//! least recently read first out.
//!
//! A tail always ends at the newest committed message, with no gap, so a
//! page served from it is the page the table would give:
//!
//! - The writer extends tails only after its commit succeeded
//!   ([`Tails::appended`]), before it answers anyone, in seq order.
//! - A read that misses marks the conversation as being filled *before* it
//!   starts its read ([`Tails::lookup`]); a commit to that conversation in
//!   between marks the fill stale, and the rows read are then not kept
//!   ([`Tails::fill`]). So a tail never misses a message committed while it
//!   was being read.
//! - A message that does not follow the tail's last one drops the tail.
//!
//! Only the SQLite store has tails: its single writer sees every commit. In
//! a cluster, every node writes to PostgreSQL, so no node could keep one.

use crate::{ConversationId, SeqRange, StoredMessage};
use hashlink::LruCache;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most messages kept of one conversation: a full default page of history
/// (50, and one more that tells whether there is more) with room to grow.
pub const TAIL_LEN: usize = 64;
/// Independent parts of the cache, each under its own lock.
const SHARDS: usize = 16;

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
    /// Read the table; with a ticket, give the rows read to [`Tails::fill`].
    Miss(Option<Fill>),
}

/// The right to keep the rows of one read as a conversation's tail
/// ([`Fill::keep`]); dropped unused (the read failed), it gives the
/// conversation back to the next read.
#[derive(Debug)]
pub struct Fill {
    tails: Arc<Tails>,
    conversation: ConversationId,
    id: u64,
    kept: bool,
}

#[derive(Debug)]
struct Shard {
    entries: LruCache<ConversationId, Entry>,
    bytes: usize,
}

#[derive(Debug)]
enum Entry {
    /// A read is filling it; `stale` once a commit touched the conversation meanwhile.
    Filling {
        id: u64,
        stale: bool,
    },
    Ready(Tail),
}

#[derive(Debug)]
struct Tail {
    /// Consecutive seqs, ending at the conversation's newest.
    messages: VecDeque<Arc<StoredMessage>>,
    bytes: usize,
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
    /// its tail; unless a commit touched the conversation meanwhile.
    pub fn keep(mut self, rows: &[Arc<StoredMessage>], limit: usize) {
        self.kept = true;
        self.tails.keep(&self, rows, limit);
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if !self.kept {
            self.tails.abandon(self);
        }
    }
}

/// Memory a message holds in a tail.
fn cost(m: &StoredMessage) -> usize {
    // The message itself, its two counters, its slot and its two strings.
    std::mem::size_of::<StoredMessage>() + 16 + 8 + m.content.len() + m.client_msg_id.len()
}

impl Tails {
    /// Tails holding at most about `max_bytes` of messages.
    pub fn new(max_bytes: usize) -> Tails {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { entries: LruCache::new_unbounded(), bytes: 0 })).collect();
        Tails { shards, shard_bytes: max_bytes / SHARDS, next_fill: AtomicU64::new(1) }
    }

    fn shard(&self, conversation: ConversationId) -> std::sync::MutexGuard<'_, Shard> {
        let i = (conversation as u64 % SHARDS as u64) as usize;
        // A panic while holding a shard leaves nothing half-done that a reader could see.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The page `range` asks for, from the tail; a miss on the newest page
    /// of a conversation not yet kept comes with a [`Fill`].
    pub fn lookup(self: &Arc<Self>, conversation: ConversationId, range: SeqRange, limit: usize) -> Lookup {
        if self.shard_bytes == 0 {
            return Lookup::Miss(None);
        }
        let mut shard = self.shard(conversation);
        let newest = matches!(range, SeqRange::Before(u64::MAX));
        let outcome = match shard.entries.get(&conversation) {
            Some(Entry::Ready(tail)) => match tail.page(range, limit) {
                Some(page) => Lookup::Hit(page),
                None => Lookup::Miss(None),
            },
            Some(Entry::Filling { .. }) => Lookup::Miss(None),
            None if newest && limit <= TAIL_LEN => {
                let id = self.next_fill.fetch_add(1, Ordering::Relaxed);
                shard.entries.insert(conversation, Entry::Filling { id, stale: false });
                Lookup::Miss(Some(Fill { tails: Arc::clone(self), conversation, id, kept: false }))
            }
            None => Lookup::Miss(None),
        };
        drop(shard);
        let hit = matches!(outcome, Lookup::Hit(_));
        metrics::counter!("history_cache_lookups_total", "outcome" => if hit { "hit" } else { "miss" }).increment(1);
        outcome
    }

    /// Keeps `rows`, the newest page read for `fill` (ascending, asked for
    /// with `limit`), as the conversation's tail, unless a commit touched the
    /// conversation meanwhile.
    fn keep(&self, fill: &Fill, rows: &[Arc<StoredMessage>], limit: usize) {
        let mut shard = self.shard(fill.conversation);
        match shard.entries.get(&fill.conversation) {
            Some(Entry::Filling { id, stale: false }) if *id == fill.id => {}
            Some(Entry::Filling { id, .. }) if *id == fill.id => {
                shard.entries.remove(&fill.conversation);
                return;
            }
            _ => return,
        }
        // Fewer rows than asked for: the page reaches the first message, and
        // the tail holds the whole conversation.
        debug_assert!(rows.len() <= limit);
        let keep = &rows[rows.len().saturating_sub(TAIL_LEN)..];
        let tail = Tail { messages: keep.iter().cloned().collect(), bytes: keep.iter().map(|m| cost(m)).sum() };
        shard.bytes += tail.bytes;
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
                Entry::Filling { stale, .. } => *stale = true,
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
        // The next read fills it again.
        filled(&tails, 11, 51);
        assert_eq!(hit(&tails, SeqRange::Before(u64::MAX), 2), Some(vec![10, 11]));
    }

    #[test]
    fn the_least_recently_read_tail_goes_first_when_full() {
        // Room for about two tails of 51 (each shard has a sixteenth).
        let one = 51 * cost(&message(1, 1));
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

    #[test]
    fn a_cache_of_no_bytes_keeps_nothing() {
        let tails = Arc::new(Tails::new(0));
        assert!(matches!(tails.lookup(1, SeqRange::Before(u64::MAX), 51), Lookup::Miss(None)));
        tails.appended(&[message(1, 1)]);
    }
}
