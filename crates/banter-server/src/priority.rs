//! How the threads that deliver give way to the threads that store.
//!
//! Every message costs the server two kinds of work: the send path (its
//! frame read and its `sent` written on the sending lane, its commit on the
//! store's writer) and delivery (a write to every member device, by the
//! connection tasks on the main runtime, and the members' acks, read there
//! too, by the readers of the quiet lane). A message to a large group makes
//! ten thousand deliveries of one send, and while they run, a thread of the
//! send path that wakes (a frame arrived, a commit's sync completed) waits
//! for a core like any other: up to a time slice, at each of its hops.
//!
//! With [`DeliveryPriority::Low`] the threads that deliver run under
//! Linux's `SCHED_IDLE` class, so a waking thread of the send path takes a
//! core from them at once. A send's `sent` then no longer waits behind the
//! delivery work of other messages; delivery gets every cycle the send path
//! leaves. The sockets' events and HTTP move to a front runtime of normal
//! priority ([`crate::front`]), since an idle-class runtime would otherwise
//! be the one to notice that a send arrived.
//!
//! What it does not cover: a reader moves to the sending lane with the first
//! `send` it reads, and back after two quiet seconds, so the first send of a
//! device that sends now and then is read on the quiet lane (the main
//! runtime), in the idle class, and gains nothing. A thread of the send
//! path can wait for a lock an idle-class thread holds: the socket's write
//! half, shared with the connection task, and the fan-out queue's, shared
//! with its worker; each is held for one write or a few operations. On PostgreSQL the store's
//! connections are tasks of the main runtime, so a send's commit yields to
//! delivery with the rest of it: the flag is made for the embedded store,
//! whose commits run on a thread of their own.
//!
//! The price: `SCHED_IDLE` threads also give way to every other thread of
//! normal priority in their CPU cgroup, so where other busy processes share
//! Banter's cgroup, delivery is held back by them; and under a load the
//! cores cannot carry, sends are taken faster than they are delivered.
//! Hence it is a choice (`--delivery-priority`), for a machine or container
//! that runs Banter alone; the default leaves every thread at normal
//! priority.
//!
//! Threads inherit their class, and an unprivileged thread cannot leave
//! `SCHED_IDLE`: a thread or runtime started from a delivery thread would
//! stay in it. The store's threads, the sending lane and the front runtime
//! are started from the main thread, before the first connection.

use std::sync::atomic::{AtomicBool, Ordering};

/// The scheduling priority of the threads that deliver (see the module notes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeliveryPriority {
    /// Every thread at normal priority.
    #[default]
    Normal,
    /// The main runtime's workers (connections, and the quiet lane's readers) under `SCHED_IDLE` (Linux).
    Low,
}

/// Set once a thread could not be lowered, so the warning is logged once.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Puts the calling thread at the priority of delivery work: a thread-start
/// hook of the runtimes that deliver. A failure (another system, or a
/// policy that forbids it) is logged once and leaves the thread as it was.
pub fn enter_delivery_thread(priority: DeliveryPriority) {
    if priority == DeliveryPriority::Normal {
        return;
    }
    if let Err(e) = lower_this_thread() {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "delivery threads stay at normal priority");
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_this_thread() -> Result<(), String> {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
        ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    match set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        Ok(()) => Ok(()),
        // The class is set before the nice value; a nice value that cannot
        // be set (the process runs above 0) leaves the thread in the class,
        // where nice values do not count.
        Err(e) if in_idle_class() => {
            tracing::debug!(error = ?e, "nice value of a delivery thread left as it was");
            Ok(())
        }
        Err(e) => Err(format!("{e:?}")),
    }
}

/// Whether the calling thread is in `SCHED_IDLE`.
#[cfg(target_os = "linux")]
fn in_idle_class() -> bool {
    use thread_priority::{thread_schedule_policy, NormalThreadSchedulePolicy, ThreadSchedulePolicy};
    matches!(thread_schedule_policy(), Ok(ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)))
}

#[cfg(not(target_os = "linux"))]
fn lower_this_thread() -> Result<(), String> {
    Err("SCHED_IDLE is Linux's".into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_thread_at_low_priority_runs_in_the_idle_class_and_others_do_not() {
        let lowered = std::thread::spawn(|| {
            enter_delivery_thread(DeliveryPriority::Low);
            in_idle_class()
        });
        let normal = std::thread::spawn(|| {
            enter_delivery_thread(DeliveryPriority::Normal);
            in_idle_class()
        });
        assert!(lowered.join().unwrap());
        assert!(!normal.join().unwrap());
        // The test's own thread was not touched.
        assert!(!in_idle_class());
    }
}
