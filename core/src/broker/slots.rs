//! An app's concurrency slots: how many of its requests are in flight, and the bounded wait
//! for one to free up when all are taken.
//!
//! Taking a slot is one atomic add on the fast path; giving one back is two atomic
//! read-modify-writes on the same cache line (the count, then the waiter count). Only a request that finds every slot taken locks the
//! mutex and waits on the condition variable, at most `admission_wait`; a release wakes one
//! waiter. No wake-up is lost: a waiter counts itself (under the mutex) before it looks at
//! the slots, and a release reads the waiter count (with a read-modify-write) after it gave
//! its slot back, so either the waiter sees the slot or the release sees the waiter, and then
//! takes the mutex, which it gets only once the waiter waits. The type is built on [`crate::sync`], so loom checks
//! this code itself (`sim/tests/loom_broker.rs`).

use crate::sync::{lock, time_left, AtomicUsize, Condvar, Mutex, Ordering};
use std::time::Duration;

/// Compare-and-swap attempts of one look at the slots in the slow path before it waits again
/// (each failure means another thread changed the count meanwhile).
const CAS_TRIES_MAX: usize = 64;

/// The concurrency slots of one app (see the module docs).
#[derive(Debug, Default)]
pub struct Slots {
    in_flight: AtomicUsize,
    /// Threads in the slow path of [`Slots::take`].
    waiters: AtomicUsize,
    waiting: Mutex<()>,
    freed: Condvar,
}

impl Slots {
    /// Slots taken now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Takes a slot when fewer than `max` are taken, waiting at most `wait` for one to be
    /// given back. `Err` holds the count in flight when the wait ended without a slot.
    pub fn take(&self, max: usize, wait: Duration) -> Result<(), usize> {
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        if before < max {
            return Ok(());
        }
        // Over the limit: give the slot back (waking a waiter this add may have turned away).
        self.release();
        if wait.is_zero() {
            return Err(before);
        }
        self.take_waiting(max, wait)
    }

    /// The slow path of [`Slots::take`].
    fn take_waiting(&self, max: usize, wait: Duration) -> Result<(), usize> {
        let deadline = std::time::Instant::now().checked_add(wait);
        let mut guard = lock(&self.waiting);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let outcome = loop {
            if self.take_below(max) {
                break Ok(());
            }
            let Some(left) = time_left(deadline) else { break Err(self.in_flight()) };
            guard = match self.freed.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        outcome
    }

    /// Takes a slot only if fewer than `max` are taken (never over the limit, not even for a
    /// moment, so a failure has nothing to give back).
    fn take_below(&self, max: usize) -> bool {
        let mut current = self.in_flight.load(Ordering::SeqCst);
        for _ in 0..CAS_TRIES_MAX {
            if current >= max {
                return false;
            }
            match self.in_flight.compare_exchange(current, current + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
        false
    }

    /// Gives a slot back and wakes one waiter, if any.
    pub fn release(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(before > 0, "a slot was given back that was never taken");
        // Read-modify-write, not a load: the waiter count's changes are totally ordered, so
        // either this comes first and the waiter's own add on it synchronises with it (and
        // then sees the slot given back above), or it comes after and sees the waiter. A plain
        // load would need sequential consistency between two variables, which loom does not
        // model (it found the lost wake-up this closes).
        if self.waiters.fetch_add(0, Ordering::SeqCst) > 0 {
            let _guard = lock(&self.waiting);
            self.freed.notify_one();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_slot_at_the_limit_is_refused_and_the_one_below_taken() {
        let slots = Slots::default();
        for n in 0..3 {
            assert_eq!(slots.take(3, Duration::ZERO), Ok(()), "slot {n} of 3");
        }
        assert_eq!(slots.take(3, Duration::ZERO), Err(3), "the fourth of 3");
        assert_eq!(slots.in_flight(), 3, "a refusal gives its slot back");
        slots.release();
        assert_eq!(slots.take(3, Duration::ZERO), Ok(()));
    }

    #[test]
    fn a_refusal_waits_at_least_its_wait() {
        let slots = Slots::default();
        assert_eq!(slots.take(1, Duration::ZERO), Ok(()));
        let started = std::time::Instant::now();
        assert_eq!(slots.take(1, Duration::from_millis(30)), Err(1));
        assert!(started.elapsed() >= Duration::from_millis(30), "{:?}", started.elapsed());
    }

    #[test]
    fn a_waiter_gets_the_slot_given_back() {
        let slots = Arc::new(Slots::default());
        assert_eq!(slots.take(1, Duration::ZERO), Ok(()));
        let waiter = {
            let slots = slots.clone();
            // An hour: the test ends when the slot comes back, whenever that is.
            std::thread::spawn(move || slots.take(1, Duration::from_secs(3600)))
        };
        slots.release();
        assert_eq!(waiter.join().ok(), Some(Ok(())));
        assert_eq!(slots.in_flight(), 1);
    }
}
