//! The fan-out queue's room for pushes (`--fanout-max-pushes`).
//!
//! A queued job takes a unit per member ([`PushRoom::try_take`]); the pushes
//! the worker then makes hold a unit each until a connection has handled
//! them ([`PushRoom::give_back`]). A job's pushes need more units than it
//! brought when its members have more than one device, or when the group is
//! larger than the whole room, and the worker cannot know how many before
//! it has made them. Those pushes start giving their units back at once, so
//! if the worker then waited for free units like any job, a job offered
//! meanwhile could take them and hold them until the worker, waiting, took
//! that job: never.
//!
//! So the worker claims: from [`PushRoom::claim`] on, units given back are
//! kept for it, and once it knows what its pushes hold
//! ([`PushRoom::settle`]) it keeps what it needs, takes what it lacks from
//! the free units like a job would, and owes the rest, which units given
//! back pay before any is free again. What it owes is never
//! more than its own pushes still out, so the claim is always paid, and
//! jobs offered meanwhile take only units that are truly free.

use std::sync::Mutex;
use tokio::sync::Notify;

/// Units of room, bounded by the size they were made with.
#[derive(Debug)]
pub struct PushRoom {
    units: Mutex<Units>,
    /// Wakes the worker when what it owes is paid.
    paid: Notify,
}

#[derive(Debug, Default)]
struct Units {
    /// Units nobody holds: what a job may take.
    free: usize,
    /// Set from [`PushRoom::claim`] to [`PushRoom::settle`].
    claiming: bool,
    /// Units given back while claiming, kept for the claim.
    kept: usize,
    /// Units the worker still waits for; given back, they pay this first.
    owed: usize,
}

impl PushRoom {
    pub fn new(size: usize) -> PushRoom {
        PushRoom { units: Mutex::new(Units { free: size, ..Units::default() }), paid: Notify::new() }
    }

    fn units(&self) -> std::sync::MutexGuard<'_, Units> {
        self.units.lock().expect("push room lock")
    }

    /// Takes `n` free units, or none if fewer are free. Never waits.
    pub fn try_take(&self, n: usize) -> bool {
        let mut units = self.units();
        let taken = units.free >= n;
        if taken {
            units.free -= n;
        }
        taken
    }

    /// Gives back `n` units: to the claim in progress, then to what the
    /// worker owes, and what is left becomes free.
    pub fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut units = self.units();
        if units.claiming {
            units.kept += n;
            return;
        }
        let pay = n.min(units.owed);
        units.owed -= pay;
        units.free += n - pay;
        if pay > 0 && units.owed == 0 {
            drop(units);
            self.paid.notify_one();
        }
    }

    /// Starts the worker's claim, before it makes a job's pushes: units
    /// given back from now on are kept for it.
    pub fn claim(&self) {
        self.units().claiming = true;
    }

    /// Ends the claim: the job brought `brought` units and its pushes hold
    /// `held`. What is kept beyond that becomes free; what is short is taken
    /// from the free units, the rest is owed, and this waits until it is paid.
    pub async fn settle(&self, brought: usize, held: usize) {
        {
            let mut units = self.units();
            units.claiming = false;
            let have = brought + std::mem::take(&mut units.kept);
            if have >= held {
                units.free += have - held;
                return;
            }
            let short = held - have;
            let free = short.min(units.free);
            units.free -= free;
            units.owed = short - free;
            if units.owed == 0 {
                return;
            }
        }
        loop {
            let paid = self.paid.notified();
            if self.units().owed == 0 {
                return;
            }
            paid.await;
        }
    }

    /// Free units now, for tests and metrics.
    pub fn free(&self) -> usize {
        self.units().free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A room of `size` with `taken` units held by jobs, the worker claiming.
    fn claiming(size: usize, taken: usize) -> PushRoom {
        let room = PushRoom::new(size);
        assert!(room.try_take(taken));
        room.claim();
        room
    }

    #[test]
    fn a_job_takes_only_what_is_free() {
        let room = PushRoom::new(3);
        assert!(room.try_take(2));
        assert!(!room.try_take(2), "one is left");
        room.give_back(1);
        assert!(room.try_take(2));
        assert_eq!(room.free(), 0);
    }

    #[tokio::test]
    async fn units_given_back_during_a_claim_are_kept_for_it_and_the_rest_freed() {
        let room = claiming(4, 4);
        // The job's first pushes are handled before the worker has counted them.
        room.give_back(3);
        assert!(!room.try_take(1), "kept for the claim, not free");
        // The job brought 4, its pushes hold 5: 7 in hand, 2 left over.
        room.settle(4, 5).await;
        assert_eq!(room.free(), 2);
    }

    #[tokio::test]
    async fn a_claim_short_of_units_takes_free_ones_before_it_owes() {
        let room = claiming(10, 4);
        // A message read back from the store brought none; its pushes hold 4.
        room.settle(0, 4).await;
        assert_eq!(room.free(), 2, "the worker waits for no push while units are free");
    }

    #[tokio::test]
    async fn what_the_worker_owes_is_paid_before_any_unit_is_free() {
        let room = Arc::new(claiming(2, 2));
        let settling = tokio::spawn({
            let room = Arc::clone(&room);
            // A group larger than the room: it brought 2, its pushes hold 6.
            async move { room.settle(2, 6).await }
        });
        tokio::task::yield_now().await;
        room.give_back(3);
        assert!(!room.try_take(1), "3 paid, 1 still owed");
        assert!(!settling.is_finished());
        room.give_back(2);
        settling.await.unwrap();
        assert_eq!(room.free(), 1);
        assert!(room.try_take(1));
    }
}
