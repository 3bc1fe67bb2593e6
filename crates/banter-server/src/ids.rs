//! Snowflake-style message ids: 41 bits of milliseconds since
//! [`EPOCH_MS`], 10 bits of node id, 12 bits of a per-millisecond counter.
//!
//! Ids are monotonic per node even when the wall clock steps back: the
//! generator never goes below the last millisecond it used, and borrows the
//! next millisecond when a counter runs out.

use std::sync::atomic::{AtomicU64, Ordering};

/// 2024-01-01T00:00:00Z, in ms since the Unix epoch.
pub const EPOCH_MS: u64 = 1_704_067_200_000;
const NODE_BITS: u32 = 10;
const COUNTER_BITS: u32 = 12;
/// Largest node id.
pub const MAX_NODE_ID: u16 = (1 << NODE_BITS) - 1;

/// Generates ids for one node.
#[derive(Debug)]
pub struct Snowflake {
    node: u64,
    /// `(ms since EPOCH_MS) << COUNTER_BITS | counter` of the last id issued.
    last: AtomicU64,
}

impl Snowflake {
    pub fn new(node: u16) -> Snowflake {
        assert!(node <= MAX_NODE_ID, "node id above {MAX_NODE_ID}");
        Snowflake { node: node as u64, last: AtomicU64::new(0) }
    }

    /// The next id, given the wall clock in ms since the Unix epoch.
    pub fn next_at(&self, now_ms: u64) -> i64 {
        let now = now_ms.saturating_sub(EPOCH_MS) << COUNTER_BITS;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            // Never step back; within one millisecond, count up (which rolls
            // into the next millisecond when the counter is exhausted).
            let next = if now > prev { now } else { prev + 1 };
            match self.last.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    let ms = next >> COUNTER_BITS;
                    let counter = next & ((1 << COUNTER_BITS) - 1);
                    return ((ms << (NODE_BITS + COUNTER_BITS)) | (self.node << COUNTER_BITS) | counter) as i64;
                }
                Err(actual) => prev = actual,
            }
        }
    }

    /// The next id by the system clock.
    pub fn next(&self) -> i64 {
        self.next_at(crate::clock::now_ms() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_when_clock_steps_back() {
        let g = Snowflake::new(7);
        let a = g.next_at(EPOCH_MS + 10_000);
        let b = g.next_at(EPOCH_MS + 5_000);
        let c = g.next_at(EPOCH_MS + 10_000);
        assert!(a < b && b < c);
        assert_eq!((a >> COUNTER_BITS) & MAX_NODE_ID as i64, 7);
    }

    #[test]
    fn counter_overflow_borrows_next_ms() {
        let g = Snowflake::new(1);
        let mut prev = 0;
        for _ in 0..10_000 {
            let id = g.next_at(EPOCH_MS + 1);
            assert!(id > prev);
            prev = id;
        }
    }

    #[test]
    fn ids_encode_time() {
        let g = Snowflake::new(3);
        let id = g.next_at(EPOCH_MS + 123_456) as u64;
        assert_eq!(id >> (NODE_BITS + COUNTER_BITS), 123_456);
    }
}
