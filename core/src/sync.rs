//! The synchronisation primitives of the protocols loom checks: `std::sync` normally,
//! `loom::sync` when the crate is built with `--cfg loom`. The types built on them
//! ([`crate::broker::Slots`]) are the production types; `sim/tests/loom_broker.rs` runs them
//! under loom's exhaustive scheduler, so the model and production are the same code.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

/// Locks `m`; a lock poisoned by a panic elsewhere is still used (the data it guards is
/// plain counters and queues, valid at every point a panic could leave them).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What is left of a wait until `deadline` (`None` for a deadline too far to represent: an
/// hour at a time); `None` once it passed.
#[cfg(not(loom))]
pub(crate) fn time_left(deadline: Option<std::time::Instant>) -> Option<std::time::Duration> {
    match deadline {
        None => Some(std::time::Duration::from_secs(3600)),
        Some(d) => d.checked_duration_since(std::time::Instant::now()).filter(|left| !left.is_zero()),
    }
}

/// Under loom a wait ends only when it is woken: loom models no time, and real time passing
/// while loom explores must not change what a model does (a timeout is modelled explicitly,
/// e.g. [`crate::broker::Gate::give_up`]).
#[cfg(loom)]
pub(crate) fn time_left(_deadline: Option<std::time::Instant>) -> Option<std::time::Duration> {
    Some(std::time::Duration::from_secs(3600))
}
