//! The push queue of one connection: what the hub, the fan-out and the
//! connection's reader hand to its task.
//!
//! It holds at most [`PUSH_QUEUE`] pushes. The hub never waits on it: a full
//! queue refuses the push ([`Refused::Full`]), and the hub marks the
//! connection lagged so it reads the store instead. Only the connection's
//! reader waits for room ([`PushQueue::poll_push`]), since what it hands on
//! (a client's frames) cannot be read again.
//!
//! It lives inside the connection's shared [`crate::hub::Control`], so it
//! costs no allocation of its own, and its buffer is allocated only when
//! pushes arrive and freed when it empties after a burst: an idle
//! connection holds none. (A tokio channel allocated its first block of
//! slots up front, about a kilobyte per connection, and touched more cache
//! lines per push.)

use crate::hub::Push;
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll};

/// Capacity of each connection's push queue.
pub const PUSH_QUEUE: usize = 512;
/// A buffer that held more than this many pushes is freed when it empties.
const KEEP_CAPACITY: usize = 32;

/// Why a push was not queued; the push is handed back.
#[derive(Debug)]
pub enum Refused {
    /// The queue holds [`PUSH_QUEUE`] pushes.
    Full(Push),
    /// The connection task is gone.
    Closed(Push),
}

/// A bounded queue of pushes into one connection task.
#[derive(Debug, Default)]
pub struct PushQueue {
    inner: Mutex<Inner>,
    /// The connection task, woken when a push arrives.
    task: AtomicWaker,
    /// The reader, woken when room is made for what it waits to push.
    room: AtomicWaker,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Push>,
    /// The connection task is gone: refuse everything.
    closed: bool,
    /// The reader waits for room.
    room_wanted: bool,
}

impl PushQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("push queue lock")
    }

    /// Queues `push` unless the queue is full or closed; never waits.
    pub fn try_push(&self, push: Push) -> Result<(), Refused> {
        {
            let mut inner = self.lock();
            if inner.closed {
                return Err(Refused::Closed(push));
            }
            if inner.items.len() >= PUSH_QUEUE {
                return Err(Refused::Full(push));
            }
            inner.items.push_back(push);
        }
        self.task.wake();
        Ok(())
    }

    /// For the reader: moves pushes from the front of `waiting` into the
    /// queue while there is room. Ready once at least one moved, or with
    /// `Err` once the connection task is gone; pending while the queue is full.
    pub fn poll_push(&self, cx: &mut Context<'_>, waiting: &mut VecDeque<Push>) -> Poll<Result<(), ()>> {
        {
            let mut inner = self.lock();
            if inner.closed {
                return Poll::Ready(Err(()));
            }
            let room = PUSH_QUEUE.saturating_sub(inner.items.len()).min(waiting.len());
            if room == 0 {
                // Registered under the lock: a pop after it sees `room_wanted`.
                self.room.register(cx.waker());
                inner.room_wanted = true;
                return Poll::Pending;
            }
            inner.items.extend(waiting.drain(..room));
        }
        self.task.wake();
        Poll::Ready(Ok(()))
    }

    /// For the connection task: the next push, or pending (woken by the next push).
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Push> {
        match self.pop(Some(cx)) {
            Some(p) => Poll::Ready(p),
            None => Poll::Pending,
        }
    }

    /// For the connection task: the next push, if one is queued.
    pub fn try_next(&self) -> Option<Push> {
        self.pop(None)
    }

    fn pop(&self, cx: Option<&mut Context<'_>>) -> Option<Push> {
        let (push, wake_room) = {
            let mut inner = self.lock();
            let Some(push) = inner.items.pop_front() else {
                // Registered under the lock: a push after it wakes the task.
                if let Some(cx) = cx {
                    self.task.register(cx.waker());
                }
                return None;
            };
            if inner.items.is_empty() && inner.items.capacity() > KEEP_CAPACITY {
                inner.items = VecDeque::new();
            }
            (push, std::mem::take(&mut inner.room_wanted))
        };
        if wake_room {
            self.room.wake();
        }
        Some(push)
    }

    /// The connection task is gone: drops what is queued (giving back the
    /// fan-out room it holds), refuses what comes, and wakes a waiting reader.
    pub fn close(&self) {
        let dropped = {
            let mut inner = self.lock();
            inner.closed = true;
            std::mem::take(&mut inner.items)
        };
        drop(dropped);
        self.room.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker_ref;

    fn left(n: i64) -> Push {
        Push::Left(n)
    }

    fn id(p: Push) -> i64 {
        match p {
            Push::Left(n) => n,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn pushes_come_out_in_order_and_the_bound_holds() {
        let q = PushQueue::default();
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(q.poll_next(&mut cx).is_pending());
        for i in 0..PUSH_QUEUE as i64 {
            q.try_push(left(i)).unwrap();
        }
        assert!(matches!(q.try_push(left(9_999)), Err(Refused::Full(_))));
        // The reader waits for room rather than being refused.
        let mut waiting: VecDeque<Push> = [left(1_000), left(1_001)].into();
        assert!(q.poll_push(&mut cx, &mut waiting).is_pending());
        assert_eq!(waiting.len(), 2);
        assert_eq!(id(q.try_next().unwrap()), 0);
        // One slot was made: one of the two moves.
        assert_eq!(q.poll_push(&mut cx, &mut waiting), Poll::Ready(Ok(())));
        assert_eq!(waiting.len(), 1);
        let mut seen = Vec::new();
        while let Some(p) = q.try_next() {
            seen.push(id(p));
        }
        let expected: Vec<i64> = (1..PUSH_QUEUE as i64).chain([1_000]).collect();
        assert_eq!(seen, expected);
        // Drained after a burst: the buffer is given back.
        assert_eq!(q.lock().items.capacity(), 0);
    }

    #[test]
    fn a_closed_queue_refuses_and_releases_a_waiting_reader() {
        let q = PushQueue::default();
        let mut cx = Context::from_waker(noop_waker_ref());
        for i in 0..PUSH_QUEUE as i64 {
            q.try_push(left(i)).unwrap();
        }
        let mut waiting: VecDeque<Push> = [left(1)].into();
        assert!(q.poll_push(&mut cx, &mut waiting).is_pending());
        q.close();
        assert_eq!(q.poll_push(&mut cx, &mut waiting), Poll::Ready(Err(())));
        assert!(matches!(q.try_push(left(2)), Err(Refused::Closed(_))));
        assert!(q.try_next().is_none());
    }

    #[test]
    fn a_push_wakes_the_task_and_a_pop_wakes_the_reader() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (task, reader) = (Arc::new(Count(AtomicUsize::new(0))), Arc::new(Count(AtomicUsize::new(0))));
        let (task_waker, reader_waker) = (Arc::clone(&task).into(), Arc::clone(&reader).into());
        let q = PushQueue::default();
        assert!(q.poll_next(&mut Context::from_waker(&task_waker)).is_pending());
        q.try_push(left(1)).unwrap();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        for i in 1..PUSH_QUEUE as i64 {
            q.try_push(left(i)).unwrap();
        }
        let mut waiting: VecDeque<Push> = [left(7)].into();
        assert!(q.poll_push(&mut Context::from_waker(&reader_waker), &mut waiting).is_pending());
        assert_eq!(reader.0.load(Ordering::SeqCst), 0);
        q.try_next().unwrap();
        assert_eq!(reader.0.load(Ordering::SeqCst), 1);
    }
}
