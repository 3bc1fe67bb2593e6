//! A runtime the server keeps beside its main one: the sending lane
//! (`ws/answers.rs`) and, with `--delivery-priority low`, the front
//! (`front.rs`). Each is built with its threads' name and priority, and
//! dropped without waiting for its threads, since the server drops it from
//! async code, where waiting would block.

use crate::priority::DeliveryPriority;
use tokio::runtime::{Handle, Runtime};

/// A multi-threaded runtime of its own, shut down in the background when dropped.
pub struct SideRuntime {
    name: &'static str,
    runtime: Option<Runtime>,
}

impl SideRuntime {
    /// `threads` threads named `name`, each put at `priority` as it starts ([`crate::priority`]).
    pub fn new(name: &'static str, threads: usize, priority: DeliveryPriority) -> std::io::Result<SideRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .on_thread_start(move || crate::priority::enter_delivery_thread(priority))
            .enable_all()
            .build()?;
        Ok(SideRuntime { name, runtime: Some(runtime) })
    }

    pub fn handle(&self) -> &Handle {
        self.runtime.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for SideRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SideRuntime").field(&self.name).finish()
    }
}
