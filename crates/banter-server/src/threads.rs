//! How many threads each of the server's runtimes runs.
//!
//! The server keeps two tokio runtimes: the main one, whose workers run
//! every connection task, the readers of connections that have not sent
//! lately, and HTTP requests, and so deliver every message
//! ([`main_workers`]); and the sending lane, which reads and answers sends
//! (`ws/answers.rs`, [`lane_threads`]). Beside them run the store's own
//! threads (on SQLite: one writer, eight readers, one checkpointer).
//!
//! Every runtime of several workers wakes a second worker each time a
//! sleeping one finds work, so that one of them keeps looking; on few cores
//! those wakeups cost more than the second worker brings. Both counts are
//! therefore below one per core. The figures behind them are in
//! BENCHMARKS.md ("What each change bought").

use std::num::NonZeroUsize;

/// The machine's cores as the process may use them, at least one.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Workers of the main runtime by default (`--worker-threads`): one per core
/// but one, at least one, so one core is left to the send path (the sending
/// lane and the store's writer).
///
/// On two cores, with the load simulator beside the server, one worker
/// rather than two took a sender's `sent` p99 in a group of 10,000 from
/// 52 to 16 ms at 10 messages/s and from 60 to 18 ms as fast as `sent`
/// allows, with deliveries per second the same within the noise, as were
/// direct throughput, open-loop latency, connection setup and the offline
/// drain; a reconnect storm of 15,000 devices, whose handshakes all run on
/// this runtime, took 5.22 s against 4.89 s (medians of ten runs each, the
/// machine full either way).
pub fn main_workers() -> usize {
    main_workers_for(cores())
}

fn main_workers_for(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// Threads of the sending lane's runtime: one for every two cores, at least one.
///
/// A lane's work comes in small pieces (a frame read, a `sent` written), so
/// a thread that wakes for one is often asleep again before the next; with
/// two threads, each wakeup could also wake the other to steal work, for
/// nothing. On two cores, one thread per lane (there were two lanes then)
/// took the server's CPU per direct message at 2,000 messages/s down by
/// about a tenth.
pub fn lane_threads() -> usize {
    lane_threads_for(cores())
}

fn lane_threads_for(cores: usize) -> usize {
    (cores / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_runtime_leaves_one_core_and_the_sending_lane_takes_one_per_two() {
        // (cores, main workers, sending-lane threads)
        for (cores, main, lane) in [(1, 1, 1), (2, 1, 1), (3, 2, 1), (4, 3, 2), (8, 7, 4), (64, 63, 32)] {
            assert_eq!(main_workers_for(cores), main, "{cores} cores");
            assert_eq!(lane_threads_for(cores), lane, "{cores} cores");
        }
    }
}
