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
