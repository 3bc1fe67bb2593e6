//! The live progress bar of a run: elapsed seconds of sending, deliveries
//! in the last second, and the delivery-latency p99 of the last second and
//! of the run so far.
//!
//! It draws on stderr and only when stderr is a terminal, so logs of tests
//! and CI stay clean. Receivers feed it through [`Recent`], one per pair; the
//! bar drains them once a second.

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Delivery latencies recorded since the progress bar last read them.
///
/// A receiver records into it on every delivery. The lock is only contended
/// once a second, by the progress bar, so recording stays cheap. The
/// histogram is coarse (two significant digits, up to one minute) because it
/// only feeds the live display: the report's figures come from the
/// receivers' own histograms.
#[derive(Debug, Default)]
pub struct Recent(Mutex<Option<Histogram<u64>>>);

impl Recent {
    /// Records one delivery latency in microseconds.
    pub fn record(&self, latency_us: u64) {
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        h.get_or_insert_with(coarse).saturating_record(latency_us.max(1));
    }

    /// Moves what was recorded into `into` and starts afresh.
    fn drain_into(&self, into: &mut Histogram<u64>) {
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = h.as_mut() {
            let _ = into.add(&*h);
            h.reset();
        }
    }
}

/// A histogram for the live display: 1 µs to 1 min, two significant digits.
fn coarse() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid histogram bounds")
}

/// A progress bar being drawn; [`Progress::finish`] removes it.
pub struct Progress {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts drawing for a run that sends from `start` for `duration_s`
    /// seconds, counting `delivered` and reading latencies from `recent`.
    pub fn start(
        label: &str,
        start: Instant,
        duration_s: u64,
        delivered: Arc<AtomicU64>,
        recent: Vec<Arc<Recent>>,
    ) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(duration_s), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3}/{len} s  {msg}")
                .expect("valid progress template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_owned());
        let task = tokio::spawn({
            let bar = bar.clone();
            async move {
                let mut total = coarse();
                let mut last_count = 0;
                let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let mut second = coarse();
                    for r in &recent {
                        r.drain_into(&mut second);
                    }
                    let _ = total.add(&second);
                    let count = delivered.load(Ordering::Relaxed);
                    let elapsed = start.elapsed().as_secs();
                    let phase = if elapsed > duration_s { "draining  " } else { "" };
                    bar.set_position(elapsed.min(duration_s));
                    bar.set_message(format!(
                        "{phase}{:>8} delivered/s   p99 {} ms (so far {} ms)",
                        count - last_count,
                        p99_ms(&second),
                        p99_ms(&total),
                    ));
                    last_count = count;
                }
            }
        });
        Progress { bar, task }
    }

    /// Stops drawing and clears the bar, so the report that follows stands alone.
    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// The p99 of `h` in ms, or a dash when it holds nothing.
fn p99_ms(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        "-".to_owned()
    } else {
        format!("{:.2}", h.value_at_quantile(0.99) as f64 / 1000.0)
    }
}
