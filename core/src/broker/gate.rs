//! Where a blocking caller waits for the writer: its [`Gate`] sits in the write queue
//! ([`super::WriteJob::Gate`]) and the leader opens it when it reaches it, handing over the
//! writer and leadership to the caller's thread. A caller that gives up first abandons the
//! gate, and the leader skips it. Built on [`crate::sync`], so the loom models in
//! `sim/tests/loom_broker.rs` run this type itself.

use crate::sync::{lock, time_left, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Where a blocking transaction waits for the writer (see the module docs).
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    opened: Condvar,
}

/// The states of a [`Gate`].
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    /// Queued behind other writes.
    #[default]
    Waiting,
    /// The leader reached it and handed over the writer.
    Open,
    /// The caller gave up; the leader skips it.
    Abandoned,
}

impl Gate {
    /// Called by the leader: opens the gate if its caller still waits. False if abandoned.
    pub fn open(&self) -> bool {
        let mut s = lock(&self.state);
        if *s == GateState::Waiting {
            *s = GateState::Open;
            self.opened.notify_all();
            true
        } else {
            false
        }
    }

    /// Called by the caller: waits up to `timeout` for the gate to open. On timeout the gate
    /// is abandoned (unless it opened at the last moment) and false is returned.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now().checked_add(timeout);
        let mut s = lock(&self.state);
        // Bounded by the deadline: each pass waits for what is left of it.
        while *s == GateState::Waiting {
            let Some(left) = time_left(deadline) else { break };
            s = match self.opened.wait_timeout(s, left) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Self::settle(s)
    }

    /// Gives up at once, as a wait whose timeout fired does: true if the gate opened
    /// meanwhile (the caller has the writer), else it is abandoned.
    pub fn give_up(&self) -> bool {
        Self::settle(lock(&self.state))
    }

    /// The end of a wait: open stays open; anything else is abandoned.
    fn settle(mut s: MutexGuard<'_, GateState>) -> bool {
        if *s == GateState::Open {
            return true;
        }
        *s = GateState::Abandoned;
        false
    }
}
