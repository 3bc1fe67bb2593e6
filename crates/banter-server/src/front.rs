//! The front runtime, with `--delivery-priority low` only.
//!
//! A tokio socket reports its readiness to the runtime it was registered
//! on, the one that accepted it, whichever runtime polls it. With `low` the
//! main runtime's workers are in the idle class ([`crate::priority`]), so a
//! frame arriving for a reader on the sending lane would be noticed only
//! when an idle-class worker next looked for events: the send path would
//! still wait for delivery threads to get a core. Instead, with `low`, the
//! listener, the HTTP requests and every socket's events belong to this
//! runtime, of normal priority, whose threads are mostly parked waiting for
//! events and so wake as soon as one comes; each WebSocket's connection
//! task is handed to the main runtime, where delivery runs. With `normal`
//! there is no front runtime and everything runs where it always has.

use crate::priority::DeliveryPriority;
use crate::side_runtime::SideRuntime;
use tokio::runtime::Handle;

/// Threads of the front runtime.
pub const FRONT_THREADS: usize = 2;

/// The front runtime, and the main runtime's handle for the connection tasks.
#[derive(Debug)]
pub struct Front {
    runtime: SideRuntime,
    delivery: Handle,
}

impl Front {
    /// The front for `priority`: `None` for `normal`. Called on the main
    /// runtime, whose handle it keeps for the connection tasks.
    pub fn new(priority: DeliveryPriority) -> std::io::Result<Option<Front>> {
        if priority == DeliveryPriority::Normal {
            return Ok(None);
        }
        let runtime = SideRuntime::new("banter-front", FRONT_THREADS, DeliveryPriority::Normal)?;
        Ok(Some(Front { runtime, delivery: Handle::current() }))
    }

    /// The front runtime, where the listener and HTTP run.
    pub fn handle(&self) -> &Handle {
        self.runtime.handle()
    }

    /// The main runtime, where connection tasks run.
    pub fn delivery(&self) -> &Handle {
        &self.delivery
    }
}
