//! The open-loop schedule, and the thread that keeps it.
//!
//! At a fixed `--rate` the run's sends are one sequence: send `i` falls at
//! `start + i / rate` and belongs to sender `i % senders`, so each sender
//! sends every `senders / rate` seconds and the senders take turns rather
//! than sending in lockstep. Sends are released on whole [`TICK`]s: every
//! send that falls within a tick is due at its end, and is stamped with
//! that time, so whatever delays it from then on counts as delivery
//! latency.
//!
//! A sender sleeping on tokio's timer would wake late by design: that timer
//! counts whole milliseconds, rounds each deadline up to the next one, and
//! its driver's wait rounds up again, so sends went out about a millisecond
//! after they were due, and that lateness was measured as the server's. The
//! [`Clock`] thread sleeps to each tick on the operating system's timer
//! instead (tens of microseconds of slack) and wakes the senders whose sends
//! are due.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The open-loop schedule's step: the sends that fall within one are released together at its end.
const TICK: Duration = Duration::from_millis(1);

/// When each send of an open-loop run is due, and whose it is.
pub(super) struct Schedule {
    start: Instant,
    stop_at: Instant,
    /// Nanoseconds between one send of the run and the next.
    spacing_ns: f64,
    senders: u64,
}

impl Schedule {
    /// `rate` sends a second in all, from `start` until `stop_at`, taken in
    /// turn by `senders` senders.
    pub(super) fn new(start: Instant, stop_at: Instant, rate: u64, senders: usize) -> Schedule {
        Schedule { start, stop_at, spacing_ns: 1e9 / rate.max(1) as f64, senders: senders.max(1) as u64 }
    }

    /// When the run's send `i` is due: the end of the tick it falls in
    /// (computed from `start` each time, so rounding never accumulates).
    fn at(&self, i: u64) -> Instant {
        let tick = TICK.as_nanos() as u64;
        let falls = (i as f64 * self.spacing_ns) as u64;
        self.start + Duration::from_nanos(falls.div_ceil(tick) * tick)
    }
}

/// The thread that wakes each sender when its next send is due.
pub(super) struct Clock {
    schedule: Arc<Schedule>,
    wakes: Arc<[Notify]>,
}

impl Clock {
    /// Starts the thread; it ends by itself when the schedule does.
    pub(super) fn start(schedule: Schedule) -> std::io::Result<Clock> {
        let schedule = Arc::new(schedule);
        let wakes: Arc<[Notify]> = (0..schedule.senders).map(|_| Notify::new()).collect();
        let (s, w) = (Arc::clone(&schedule), Arc::clone(&wakes));
        std::thread::Builder::new().name("bench-clock".into()).spawn(move || keep(&s, &w))?;
        Ok(Clock { schedule, wakes })
    }

    /// Sender `sender`'s place in the schedule.
    pub(super) fn slot(&self, sender: usize) -> Slot {
        Slot { schedule: Arc::clone(&self.schedule), wakes: Arc::clone(&self.wakes), sender: sender as u64, taken: 0 }
    }
}

/// Sleeps to each due time in turn and wakes the sender of each send due
/// then. A sender that is busy when woken keeps the wake-up (`Notify`
/// stores one) and takes every send that has come due by the time it looks.
fn keep(schedule: &Schedule, wakes: &[Notify]) {
    let mut i = 0u64;
    loop {
        let at = schedule.at(i);
        if at >= schedule.stop_at {
            return;
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
            continue;
        }
        wakes[(i % schedule.senders) as usize].notify_one();
        i += 1;
    }
}

/// One sender's sends in a [`Schedule`].
pub(super) struct Slot {
    schedule: Arc<Schedule>,
    wakes: Arc<[Notify]>,
    sender: u64,
    /// Sends this sender has taken.
    taken: u64,
}

impl Slot {
    /// When this sender's next send is due, or `None` when it has none left.
    pub(super) fn next(&self) -> Option<Instant> {
        let at = self.schedule.at(self.taken * self.schedule.senders + self.sender);
        (at < self.schedule.stop_at).then_some(at)
    }

    /// Takes the next send if it is due by `now`; returns its due time.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<Instant> {
        let at = self.next().filter(|&at| at <= now)?;
        self.taken += 1;
        Some(at)
    }

    /// Waits until the clock says a send of this sender's is due.
    pub(super) async fn due(&self) {
        self.wakes[self.sender as usize].notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sender `sender`'s slot in a schedule of `rate` sends a second over
    /// `senders`, stopping `run` after `start`; no clock thread runs.
    fn slot(start: Instant, run: Duration, rate: u64, senders: usize, sender: u64) -> Slot {
        let schedule = Arc::new(Schedule::new(start, start + run, rate, senders));
        let wakes: Arc<[Notify]> = (0..senders).map(|_| Notify::new()).collect();
        Slot { schedule, wakes, sender, taken: 0 }
    }

    #[test]
    fn senders_take_the_run_s_sends_in_turn() {
        let start = Instant::now();
        let mut slot = slot(start, Duration::from_secs(1), 1000, 4, 2);
        // Sender 2 owns sends 2, 6, 10, …: 2 ms, 6 ms, 10 ms after the start.
        assert_eq!(slot.next(), Some(start + Duration::from_millis(2)));
        assert_eq!(slot.take_due(start + Duration::from_millis(1)), None);
        let late = start + Duration::from_millis(7);
        assert_eq!(slot.take_due(late), Some(start + Duration::from_millis(2)));
        assert_eq!(slot.take_due(late), Some(start + Duration::from_millis(6)));
        assert_eq!(slot.take_due(late), None);
        assert_eq!(slot.next(), Some(start + Duration::from_millis(10)));
    }

    #[test]
    fn sends_within_a_tick_are_due_at_its_end() {
        let start = Instant::now();
        // 3,000/s from one sender: sends fall at 0, 1/3 and 2/3 of a millisecond, then 1 ms.
        let mut slot = slot(start, Duration::from_secs(1), 3000, 1, 0);
        let end = start + Duration::from_secs(1);
        let due: Vec<Duration> = (0..5).map(|_| slot.take_due(end).unwrap() - start).collect();
        let ms = Duration::from_millis;
        assert_eq!(due, [ms(0), ms(1), ms(1), ms(1), ms(2)]);
    }

    #[test]
    fn a_schedule_ends_at_its_stop() {
        let start = Instant::now();
        let mut slot = slot(start, Duration::from_millis(10), 1000, 4, 3);
        let end = start + Duration::from_secs(1);
        // Sends 3 and 7 are before the stop at 10 ms; send 11 is not.
        assert!(slot.take_due(end).is_some());
        assert!(slot.take_due(end).is_some());
        assert_eq!(slot.take_due(end), None);
        assert_eq!(slot.next(), None);
    }
}
