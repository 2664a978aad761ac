//! A database's write queue and who leads it: the protocol of group commit, without the
//! SQLite work it schedules.
//!
//! Every write is queued. Whoever queues into an idle writer becomes the *leader*
//! ([`WriteQueue::submit`] says so) and runs turns until the queue is empty: each turn
//! ([`WriteQueue::next_turn`]) takes either a batch of groupable jobs (up to a maximum), one
//! job that runs alone, or — when a [gate](super::Gate) is at the front — hands the writer and
//! leadership to the gate's caller, who ends the turn itself. After a turn
//! ([`WriteQueue::end_turn`]) the leader either steps down (nothing queued) or keeps leading
//! and hands the next turn on. The writer connection stays here between turns.
//!
//! Invariants: at most one leader at a time; `leading` is false only when the queue is empty
//! (no job is ever stranded without a leader); jobs run in queue order, and a gate runs only
//! after every job queued before it ran.
//!
//! Built on [`crate::sync`]: the loom models in `sim/tests/loom_broker.rs` run this type
//! itself with jobs of their own, the broker runs it with [`super::WriteJob`].

use crate::sync::{lock, Mutex};
use std::collections::VecDeque;

/// How the leader schedules a queued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobClass {
    /// Committed in a group with the groupable jobs queued behind it.
    Groupable,
    /// Runs in a turn of its own (a whole transaction).
    Alone,
    /// A caller's exclusive turn: the leader opens the gate and hands leadership over.
    Gate,
}

/// A job of a [`WriteQueue`].
pub trait QueuedWrite {
    /// How the leader schedules it.
    fn class(&self) -> JobClass;
    /// For a [`JobClass::Gate`]: opens the gate; true if its caller now has the writer (false
    /// if the caller gave up, and the job is skipped). Called with the queue locked.
    fn open_gate(&self) -> bool;
}

struct State<J, C> {
    jobs: VecDeque<J>,
    leading: bool,
    conn: Option<C>,
}

/// A database's write queue (see the module docs). `C` is the writer connection kept between
/// turns.
pub struct WriteQueue<J, C> {
    state: Mutex<State<J, C>>,
}

impl<J, C> Default for WriteQueue<J, C> {
    fn default() -> Self {
        WriteQueue { state: Mutex::new(State { jobs: VecDeque::new(), leading: false, conn: None }) }
    }
}

/// A refused [`WriteQueue::submit`]: the queue held `len` jobs, its bound.
pub struct QueueFull<J> {
    /// The job, given back.
    pub job: J,
    /// Jobs queued when it was refused.
    pub len: usize,
}

impl<J: QueuedWrite, C> WriteQueue<J, C> {
    /// Queues `job` unless `max` jobs are queued already. `Ok(true)`: the writer was idle and
    /// the caller is now the leader, and must run turns ([`Self::next_turn`]) until the queue
    /// steps it down.
    pub fn submit(&self, job: J, max: usize) -> Result<bool, QueueFull<J>> {
        let mut s = lock(&self.state);
        if crate::sabotage::active(crate::sabotage::Sabotage::GateJumpsTheQueue)
            && job.class() == JobClass::Gate
        {
            // Broken on purpose: the gate opens at once, beside whatever is queued or running.
            return Ok(!job.open_gate());
        }
        if s.jobs.len() >= max {
            return Err(QueueFull { len: s.jobs.len(), job });
        }
        s.jobs.push_back(job);
        let lead = !s.leading;
        s.leading = true;
        Ok(lead)
    }

    /// The leader's next turn: `Some((jobs, connection))` with up to `batch_max` groupable
    /// jobs or one job that runs alone, and the writer connection kept from the last turn.
    /// `None` when the leader's work is over: the queue was empty (it stepped down) or a gate
    /// at the front took the writer (its caller leads now). Abandoned gates are skipped.
    pub fn next_turn(&self, batch_max: usize) -> Option<(Vec<J>, Option<C>)> {
        debug_assert!(lock(&self.state).leading, "a turn taken by a caller that does not lead");
        let mut s = lock(&self.state);
        // Bounded by the queue length: every pass pops one job or returns.
        loop {
            match s.jobs.front().map(QueuedWrite::class) {
                None => {
                    s.leading = false;
                    return None;
                }
                Some(JobClass::Gate) => {
                    if let Some(gate) = s.jobs.pop_front() {
                        if gate.open_gate() {
                            // Leadership now belongs to the gate's caller.
                            return None;
                        }
                    }
                }
                Some(_) => break,
            }
        }
        let mut batch = Vec::new();
        while batch.len() < batch_max.max(1) {
            match s.jobs.front().map(QueuedWrite::class) {
                Some(JobClass::Groupable) => {}
                Some(JobClass::Alone) if batch.is_empty() => {
                    batch.extend(s.jobs.pop_front());
                    break;
                }
                _ => break,
            }
            batch.extend(s.jobs.pop_front());
        }
        debug_assert!(!batch.is_empty(), "a turn with nothing to run");
        Some((batch, s.conn.take()))
    }

    /// After a turn (or a gate's exclusive turn): steps the leader down if nothing is queued.
    /// True if work is queued: the caller still leads and must hand the next turn on.
    pub fn end_turn(&self) -> bool {
        let mut s = lock(&self.state);
        if s.jobs.is_empty()
            || crate::sabotage::active(crate::sabotage::Sabotage::QueueStepsDownWithWorkQueued)
        {
            s.leading = false;
        }
        s.leading
    }

    /// Steps the leader down with work queued: only when the database is gone (its broker
    /// closed), and nobody will run the queue again.
    pub fn abandon(&self) {
        lock(&self.state).leading = false;
    }

    /// Keeps the writer connection for the next turn.
    pub fn keep_conn(&self, conn: C) {
        lock(&self.state).conn = Some(conn);
    }

    /// Takes the writer connection kept between turns (a gate's caller, who holds the writer).
    pub fn take_conn(&self) -> Option<C> {
        lock(&self.state).conn.take()
    }

    /// Takes the kept writer connection only if nobody leads (to close it while idle).
    pub fn take_idle_conn(&self) -> Option<C> {
        let mut s = lock(&self.state);
        if s.leading {
            None
        } else {
            s.conn.take()
        }
    }

    /// Whether nothing is queued, nobody leads and no connection is kept.
    pub fn is_idle_and_closed(&self) -> bool {
        let s = lock(&self.state);
        s.jobs.is_empty() && !s.leading && s.conn.is_none()
    }

    /// Whether a writer connection is open or in use (kept, or taken by the leader).
    pub fn writer_busy_or_open(&self) -> bool {
        let s = lock(&self.state);
        s.conn.is_some() || s.leading
    }

    /// Jobs queued now, and whether someone leads (for the end-state checks of the models).
    pub fn snapshot(&self) -> (usize, bool) {
        let s = lock(&self.state);
        (s.jobs.len(), s.leading)
    }
}
