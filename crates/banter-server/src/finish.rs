//! A future that, dropped once under way, runs to its end on a task of its own.
//!
//! A send is stored, then pushed. Were the future doing both dropped between
//! the two (an HTTP client that hangs up while its message is being
//! committed: the server drops the request's handler), the store would still
//! commit the message, but nobody would push it: the devices online would
//! see it only with the next message of its conversation, or on their next
//! connection. Wrapped in [`Finish`], what is left of it is handed to the
//! runtime instead, so a stored message is pushed. One never polled has done
//! nothing, and is dropped as it is. While the caller stays, it costs one
//! allocation and nothing else: the future is polled where it is, not on a
//! task.
//!
//! Each dropped future finishes on a task of its own, so several dropped
//! together are no longer kept in order. A WebSocket connection's sends must
//! reach the store's queue in the order they were read; a closing
//! connection's reader therefore hands the sends that outlast its drain
//! timeout on together, to one task (`ws/answers.rs`), and they are never
//! dropped one by one but when the runtime itself shuts down.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future that finishes on the runtime if dropped after its first poll.
pub struct Finish<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    inner: Option<Pin<Box<F>>>,
    started: bool,
}

impl<F: Future + Send + 'static> Finish<F>
where
    F::Output: Send + 'static,
{
    pub fn new(future: F) -> Finish<F> {
        Finish { inner: Some(Box::pin(future)), started: false }
    }
}

impl<F: Future + Send + 'static> Future for Finish<F>
where
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let inner = this.inner.as_mut().expect("Finish polled after it completed");
        this.started = true;
        let output = std::task::ready!(inner.as_mut().poll(cx));
        this.inner = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for Finish<F>
where
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        let Some(rest) = self.inner.take().filter(|_| self.started) else { return };
        // Outside a runtime (or in one shutting down) there is nowhere to
        // finish it; the store's own answer is then all there is.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn(rest));
        }
    }
}

impl<F: Future + Send + 'static> std::fmt::Debug for Finish<F>
where
    F::Output: Send + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finish").field("done", &self.inner.is_none()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Finish;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// A future that waits for `go`, then records that it ran to its end.
    async fn two_steps(go: oneshot::Receiver<()>, ended: Arc<AtomicBool>) -> u32 {
        let _ = go.await;
        ended.store(true, Ordering::SeqCst);
        7
    }

    #[tokio::test]
    async fn awaited_it_gives_the_output_in_place() {
        let ended = Arc::new(AtomicBool::new(false));
        let (go, wait) = oneshot::channel();
        go.send(()).unwrap();
        assert_eq!(Finish::new(two_steps(wait, Arc::clone(&ended))).await, 7);
        assert!(ended.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn dropped_half_way_it_still_runs_to_its_end() {
        let ended = Arc::new(AtomicBool::new(false));
        let (go, wait) = oneshot::channel();
        let mut finish = Box::pin(Finish::new(two_steps(wait, Arc::clone(&ended))));
        // Polled once, so it is under way and waiting, then given up.
        assert!(tokio::time::timeout(Duration::from_millis(10), &mut finish).await.is_err());
        drop(finish);
        go.send(()).unwrap();
        for _ in 0..1_000 {
            if ended.load(Ordering::SeqCst) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the dropped future never finished");
    }

    #[tokio::test]
    async fn dropped_before_its_first_poll_it_never_runs() {
        let ended = Arc::new(AtomicBool::new(false));
        let (go, wait) = oneshot::channel();
        drop(Finish::new(two_steps(wait, Arc::clone(&ended))));
        // The receiver went with the future: nothing waits for `go`.
        assert!(go.send(()).is_err());
        tokio::task::yield_now().await;
        assert!(!ended.load(Ordering::SeqCst));
    }
}
