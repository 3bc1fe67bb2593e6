//! A cache of conversation members, so the send path does not read the
//! member list from the store for every message. Every membership change
//! made by this node invalidates the entry.

use banter_store::{ConversationId, Store, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most conversations whose member lists are cached; past it the cache is emptied.
const MAX_CACHED: usize = 50_000;

#[derive(Debug, Default)]
pub struct Members {
    cache: Mutex<HashMap<ConversationId, Arc<[UserId]>>>,
}

impl Members {
    /// Members of `conversation`, from the cache or the store.
    pub async fn get(&self, store: &dyn Store, conversation: ConversationId) -> banter_store::Result<Arc<[UserId]>> {
        if let Some(m) = self.cache.lock().expect("members lock").get(&conversation) {
            return Ok(Arc::clone(m));
        }
        let list: Arc<[UserId]> = store.members(conversation).await?.into();
        let mut cache = self.cache.lock().expect("members lock");
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(conversation, Arc::clone(&list));
        Ok(list)
    }

    /// Forgets the members of `conversation` after a change.
    pub fn invalidate(&self, conversation: ConversationId) {
        self.cache.lock().expect("members lock").remove(&conversation);
    }
}
