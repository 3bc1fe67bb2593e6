//! A cache of conversation members, so the send path does not read the
//! member list from the store for every message. Every membership change
//! invalidates the entry (in cluster mode, on every node).
//!
//! Concurrent misses of one conversation share one read of the store: a
//! burst of sends to a conversation not cached yet costs one query, not one
//! per send.

use banter_store::{ConversationId, Store, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Most conversations whose member lists are cached; past it the cache is emptied.
const MAX_CACHED: usize = 50_000;

type Entry = Arc<OnceCell<Arc<[UserId]>>>;

#[derive(Debug, Default)]
pub struct Members {
    cache: Mutex<HashMap<ConversationId, Entry>>,
}

impl Members {
    /// Members of `conversation`, from the cache or the store.
    pub async fn get(&self, store: &dyn Store, conversation: ConversationId) -> banter_store::Result<Arc<[UserId]>> {
        let entry = {
            let mut cache = self.cache.lock().expect("members lock");
            if let Some(list) = cache.get(&conversation).and_then(|e| e.get()) {
                return Ok(Arc::clone(list));
            }
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            Arc::clone(cache.entry(conversation).or_default())
        };
        // A failed read leaves the cell empty; the next caller tries again.
        let list = entry.get_or_try_init(|| async { store.members(conversation).await.map(Arc::from) }).await?;
        Ok(Arc::clone(list))
    }

    /// Forgets the members of `conversation` after a change.
    pub fn invalidate(&self, conversation: ConversationId) {
        self.cache.lock().expect("members lock").remove(&conversation);
    }
}
