//! A cache of conversation members, so the send path does not read the
//! member list from the store for every message. Every membership change
//! invalidates the entry (in cluster mode, on every node).
//!
//! Concurrent misses of one conversation share one read of the store: a
//! burst of sends to a conversation not cached yet costs one query, not one
//! per send. An entry is read again after [`MEMBERS_TTL`], so a lost
//! invalidation (a bus event dropped in cluster mode) heals by itself.

use banter_store::{ConversationId, Store, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Most conversations whose member lists are cached; past it the cache is emptied.
const MAX_CACHED: usize = 50_000;
/// How long a member list is used before it is read again.
pub const MEMBERS_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Slot {
    list: OnceCell<Arc<[UserId]>>,
    /// When the list was asked for first; the slot is replaced after the TTL.
    born: Option<Instant>,
}

type Entry = Arc<Slot>;

#[derive(Debug, Default)]
pub struct Members {
    cache: Mutex<HashMap<ConversationId, Entry>>,
}

impl Members {
    /// Members of `conversation`, from the cache or the store.
    pub async fn get(&self, store: &dyn Store, conversation: ConversationId) -> banter_store::Result<Arc<[UserId]>> {
        let now = Instant::now();
        let entry = {
            let mut cache = self.cache.lock().expect("members lock");
            match cache.get(&conversation) {
                Some(slot) if slot.born.is_some_and(|b| now.duration_since(b) < MEMBERS_TTL) => {
                    if let Some(list) = slot.list.get() {
                        return Ok(Arc::clone(list));
                    }
                    Arc::clone(slot)
                }
                _ => {
                    if cache.len() >= MAX_CACHED {
                        cache.clear();
                    }
                    let slot = Arc::new(Slot { list: OnceCell::new(), born: Some(now) });
                    cache.insert(conversation, Arc::clone(&slot));
                    slot
                }
            }
        };
        // A failed read leaves the cell empty; the next caller tries again.
        let list = entry.list.get_or_try_init(|| async { store.members(conversation).await.map(Arc::from) }).await?;
        Ok(Arc::clone(list))
    }

    /// Forgets every list (the bus reconnected: invalidations may have been missed).
    pub fn clear(&self) {
        self.cache.lock().expect("members lock").clear();
    }

    /// Forgets the members of `conversation` after a change.
    pub fn invalidate(&self, conversation: ConversationId) {
        self.cache.lock().expect("members lock").remove(&conversation);
    }
}
