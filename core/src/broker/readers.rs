//! A database's reader connections as a protocol, without SQLite: which readers are idle,
//! how many are open, how many are out on each file generation, and the leases that keep a
//! retired file alive until its last reader returns.
//!
//! A flip ([`ReaderPool::retire`]) makes a new generation live. Idle readers of the old one
//! are handed back to be closed; if readers of the old generation are still out, the old
//! file's lease is kept until the last of them comes back ([`ReaderPool::give_back`]), then
//! released so GC may remove the file. Two rules make that hold under any interleaving
//! (each found by the loom model of the reader leases when it was broken):
//!
//! * a reader about to be opened is counted out on the generation it will open, read under
//!   the pool's lock, before the lock is released ([`ReaderPool::checkout`]): a flip then
//!   sees it and keeps the lease;
//! * a returning reader compares its generation with the live one read under the pool's
//!   lock: a flip bumps the generation before it takes this lock, so either the flip sees
//!   the reader out or the return sees the flip.
//!
//! Built on [`crate::sync`]: `sim/tests/loom_broker.rs` runs this type itself; the broker
//! runs it with its SQLite connections.

use crate::sabotage::{self, Sabotage};
use crate::sync::{lock, Condvar, Mutex};
use std::time::Duration;

/// A connection the pool holds.
pub trait Pooled {
    /// The generation of the file it was opened on.
    fn generation(&self) -> u64;
    /// The thread that used it last (a thread gets its own idle reader back first).
    fn last_thread(&self) -> u64;
    /// Records the thread that checked it out.
    fn set_last_thread(&mut self, thread: u64);
}

/// What [`ReaderPool::checkout`] gives.
pub enum Checkout<C, V> {
    /// An idle reader, counted out on its generation.
    Idle(C),
    /// Room for one more reader: the caller opens it on this version (its generation is
    /// counted out already), and calls [`ReaderPool::open_failed`] if that fails.
    Open(V),
}

/// What a returned reader leaves the caller to do, outside the pool's lock.
pub struct Returned<C, L> {
    /// A reader of a retired generation, to close.
    pub close: Option<C>,
    /// The retired file's lease, to release: its last reader came back.
    pub release: Option<L>,
}

struct State<C, L> {
    idle: Vec<C>,
    open: usize,
    out: OutCounts,
    retired: Vec<(u64, L)>,
    /// Threads waiting for a reader to come back (a return wakes someone only if needed).
    waiters: usize,
}

/// A database's reader connections (see the module docs). `L` is a lease on a file.
pub struct ReaderPool<C, L> {
    state: Mutex<State<C, L>>,
    returned: Condvar,
}

impl<C, L> Default for ReaderPool<C, L> {
    fn default() -> Self {
        ReaderPool {
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                out: OutCounts::default(),
                retired: Vec::new(),
                waiters: 0,
            }),
            returned: Condvar::new(),
        }
    }
}

impl<C: Pooled, L> ReaderPool<C, L> {
    /// Checks a reader out for thread `me`: its own idle reader, else the most recently
    /// returned one, else room to open one (fewer than `max` open) on `version()`, which
    /// returns the live version and its generation and is called with the pool locked.
    /// Otherwise waits for a reader to come back, as long as `wait` says each time; `wait`
    /// returns an error to give up (deadline, cancellation). Each pass either takes, opens or
    /// waits, so the loop ends when `wait` does.
    pub fn checkout<V, E>(
        &self,
        me: u64,
        max: usize,
        mut version: impl FnMut() -> (u64, V),
        mut wait: impl FnMut() -> Result<Duration, E>,
    ) -> Result<Checkout<C, V>, E> {
        let mut s = lock(&self.state);
        loop {
            let mine = s.idle.iter().rposition(|t| t.last_thread() == me);
            let taken = match mine {
                Some(i) => Some(s.idle.swap_remove(i)),
                None => s.idle.pop(),
            };
            if let Some(mut t) = taken {
                s.out.add(t.generation());
                t.set_last_thread(me);
                return Ok(Checkout::Idle(t));
            }
            if s.open < max {
                s.open += 1;
                if sabotage::active(Sabotage::ReaderCountedAfterVersionRead) {
                    // Broken on purpose: the version is read with the pool unlocked and the
                    // reader counted afterwards; a flip in between releases the old file's
                    // lease while this reader is about to open it.
                    drop(s);
                    let (generation, v) = version();
                    lock(&self.state).out.add(generation);
                    return Ok(Checkout::Open(v));
                }
                let (generation, v) = version();
                s.out.add(generation);
                return Ok(Checkout::Open(v));
            }
            let left = wait()?;
            s.waiters += 1;
            s = match self.returned.wait_timeout(s, left) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
            s.waiters -= 1;
        }
    }

    /// A reader [`Checkout::Open`] promised could not be opened on `generation`: its count
    /// is undone, and the lease of a retired file it was the last reader of is returned for
    /// release.
    pub fn open_failed(&self, generation: u64) -> Option<L> {
        let (waiters, lease) = {
            let mut s = lock(&self.state);
            s.open = s.open.saturating_sub(1);
            let left = s.out.remove_one(generation);
            let lease = if left == Some(0) { take_retired(&mut s.retired, generation) } else { None };
            (s.waiters, lease)
        };
        if waiters > 0 {
            self.returned.notify_one();
        }
        lease
    }

    /// Puts a reader back. One of the live generation (`current()`, read with the pool
    /// locked) is pooled; one of a retired generation is handed back to be closed, and if it
    /// was that generation's last reader, so is the retired file's lease.
    pub fn give_back(&self, reader: C, current: impl Fn() -> u64) -> Returned<C, L> {
        let early = sabotage::active(Sabotage::ReturnReadsGenerationEarly).then(&current);
        let (returned, waiters) = {
            let mut s = lock(&self.state);
            let current = match early {
                // Broken on purpose: read before the lock, so a flip in between is missed.
                Some(g) => g,
                None => current(),
            };
            let g = reader.generation();
            let left = s.out.remove_one(g);
            debug_assert!(left.is_some(), "a reader of generation {g} returned but was never counted out");
            let returned = if g == current {
                s.idle.push(reader);
                Returned { close: None, release: None }
            } else {
                s.open = s.open.saturating_sub(1);
                let release = if left.unwrap_or(0) == 0 { take_retired(&mut s.retired, g) } else { None };
                Returned { close: Some(reader), release }
            };
            (returned, s.waiters)
        };
        if waiters > 0 {
            self.returned.notify_one();
        }
        returned
    }

    /// A flip made generation `old` no longer live (the caller bumped the generation before
    /// calling). Returns the idle readers (all of `old`) to close, and `lease` back if no
    /// reader of `old` is out; otherwise the pool keeps it until the last one returns.
    pub fn retire(&self, old: u64, lease: L) -> (Vec<C>, Option<L>) {
        let mut s = lock(&self.state);
        let idle: Vec<C> = s.idle.drain(..).collect();
        s.open = s.open.saturating_sub(idle.len());
        if s.out.get(old) > 0 {
            s.retired.push((old, lease));
            (idle, None)
        } else {
            (idle, Some(lease))
        }
    }

    /// Takes one idle reader out of the pool, to close it.
    pub fn take_idle(&self) -> Option<C> {
        let mut s = lock(&self.state);
        let c = s.idle.pop();
        if c.is_some() {
            s.open = s.open.saturating_sub(1);
        }
        c
    }

    /// Readers open (idle or out, or being opened).
    pub fn open(&self) -> usize {
        lock(&self.state).open
    }

    /// Whether no reader is counted out and no retired lease is held (for end-state checks).
    pub fn is_settled(&self) -> bool {
        let s = lock(&self.state);
        s.out.is_empty() && s.retired.is_empty()
    }
}

/// Checked-out readers per file generation. Rarely more than two generations are out (the
/// live one and one retired by a flip), so a short vector beats a hash map inside the reader
/// lock, which every read takes twice.
#[derive(Debug, Default)]
struct OutCounts(Vec<(u64, usize)>);

impl OutCounts {
    /// Counts one more reader out on `generation`.
    fn add(&mut self, generation: u64) {
        match self.0.iter_mut().find(|(g, _)| *g == generation) {
            Some((_, n)) => *n += 1,
            None => self.0.push((generation, 1)),
        }
    }

    /// Counts one reader of `generation` back; returns how many are still out on it (`None`
    /// if none was counted). A generation at zero is forgotten.
    fn remove_one(&mut self, generation: u64) -> Option<usize> {
        let i = self.0.iter().position(|(g, _)| *g == generation)?;
        let left = self.0.get_mut(i).map(|(_, n)| {
            *n = n.saturating_sub(1);
            *n
        })?;
        if left == 0 {
            self.0.swap_remove(i);
        }
        Some(left)
    }

    /// Readers out on `generation`.
    fn get(&self, generation: u64) -> usize {
        self.0.iter().find(|(g, _)| *g == generation).map_or(0, |(_, n)| *n)
    }

    /// Whether no reader is out on any generation.
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Removes and returns the lease kept for retired generation `g`.
fn take_retired<L>(retired: &mut Vec<(u64, L)>, g: u64) -> Option<L> {
    let i = retired.iter().position(|(rg, _)| *rg == g)?;
    Some(retired.remove(i).1)
}

#[cfg(test)]
mod tests {
    use super::OutCounts;

    #[test]
    fn out_counts_track_readers_per_generation_and_forget_zeros() {
        let mut out = OutCounts::default();
        assert_eq!(out.remove_one(7), None, "nothing was counted");
        out.add(7);
        out.add(7);
        out.add(8);
        assert_eq!((out.get(7), out.get(8), out.get(9)), (2, 1, 0));
        assert_eq!(out.remove_one(7), Some(1));
        assert_eq!(out.remove_one(8), Some(0));
        assert_eq!(out.get(8), 0);
        assert_eq!(out.remove_one(8), None, "a generation at zero is forgotten");
        assert_eq!(out.remove_one(7), Some(0));
        assert!(out.0.is_empty());
    }
}
