//! A call run on a thread of its own that the disk stops in the middle: the disk's IO hooks
//! ([`crate::memfs::IoHook`]) count the thread's reads and/or writes of the files a filter
//! picks, and block it at a seeded one. While it is stopped the simulation does other work
//! (clients, another operation, a cancellation), then lets it go on. Exactly one thread runs
//! at any time, so a seed replays the same interleaving. Used by `clients.rs` (an operation
//! stopped at a write of the file it makes), `held_read.rs` (a read stopped in the middle)
//! and `cancel.rs` (a write stopped, then cancelled).

use crate::memfs::{IoHook, MemFs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

/// Real time the simulation waits for the thread to stop or to finish. The call runs on the
/// simulated disk and clock, so only a deadlock between it and the simulation comes near
/// this.
pub(super) const HANDOFF_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Stopped,
    Resumed,
    Done,
}

/// The baton between the simulation and the thread.
struct Handoff {
    phase: Mutex<Phase>,
    changed: Condvar,
}

impl Handoff {
    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
        self.changed.notify_all();
    }

    /// Waits while `busy` holds for the phase; `None` when [`HANDOFF_TIMEOUT`] passed.
    fn wait_while(&self, busy: impl Fn(Phase) -> bool) -> Option<Phase> {
        let guard = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, timeout) = self
            .changed
            .wait_timeout_while(guard, HANDOFF_TIMEOUT, |p| busy(*p))
            .unwrap_or_else(|p| p.into_inner());
        (!timeout.timed_out()).then_some(*guard)
    }
}

/// Which IO of the thread stops it.
pub(super) struct StopAt {
    /// Count reads.
    pub reads: bool,
    /// Count writes.
    pub writes: bool,
    /// Stop at this one of the counted calls (0: the first).
    pub at: u64,
    /// Which files count (by the path a handle was opened with).
    pub counts: Box<dyn Fn(&Path) -> bool + Send + Sync>,
}

/// A call on its own thread, stopped at an IO call or already finished.
pub(super) struct Paused<T> {
    handoff: Arc<Handoff>,
    thread: JoinHandle<std::thread::Result<T>>,
    stopped_on: Option<PathBuf>,
}

/// Starts `call` on a thread named `name` with the disk's hooks set to stop it as `stop`
/// says, and returns once it stopped or finished. A deliberate flaw
/// ([`sila_sqlite::sabotage`]) of the calling thread is the new thread's too.
pub(super) fn pause<T: Send + 'static>(
    fs: &MemFs,
    name: &str,
    stop: StopAt,
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<Paused<T>, String> {
    let handoff = Arc::new(Handoff { phase: Mutex::new(Phase::Running), changed: Condvar::new() });
    let me: Arc<OnceLock<ThreadId>> = Arc::new(OnceLock::new());
    let seen = Arc::new(AtomicU64::new(0));
    let stopped_on: Arc<Mutex<Option<PathBuf>>> = Arc::new(Mutex::new(None));
    let counts = Arc::new(stop.counts);
    let hook = {
        let (handoff, me, stopped_on) = (handoff.clone(), me.clone(), stopped_on.clone());
        IoHook(Arc::new(move |path: &Path| {
            if me.get() != Some(&std::thread::current().id()) || !counts(path) {
                return;
            }
            if seen.fetch_add(1, Ordering::SeqCst) != stop.at {
                return;
            }
            *stopped_on.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.to_path_buf());
            handoff.set(Phase::Stopped);
            // Bounded: a simulation that never resumes is reported by its own timeout.
            let _ = handoff.wait_while(|p| p == Phase::Stopped);
        }))
    };
    if stop.reads {
        fs.set_read_hook(Some(hook.clone()));
    }
    if stop.writes {
        fs.set_write_hook(Some(hook));
    }
    let thread = {
        let (handoff, me) = (handoff.clone(), me.clone());
        let flaw = sila_sqlite::sabotage::current();
        std::thread::Builder::new().name(name.into()).spawn(move || {
            sila_sqlite::sabotage::set(flaw);
            let _ = me.set(std::thread::current().id());
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
            handoff.set(Phase::Done);
            result
        })
    };
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            clear_hooks(fs);
            return Err(format!("harness: cannot start the {name} thread: {e}"));
        }
    };
    if handoff.wait_while(|p| p == Phase::Running).is_none() {
        clear_hooks(fs);
        return Err(format!(
            "the {name} thread made no progress for {} s of real time",
            HANDOFF_TIMEOUT.as_secs()
        ));
    }
    let stopped_on = stopped_on.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Paused { handoff, thread, stopped_on })
}

fn clear_hooks(fs: &MemFs) {
    fs.set_read_hook(None);
    fs.set_write_hook(None);
}

impl<T> Paused<T> {
    /// The file the thread is stopped at an IO call of; `None` when it finished first.
    pub(super) fn stopped_on(&self) -> Option<&Path> {
        self.stopped_on.as_deref()
    }

    /// Lets the thread go on, waits for its end, removes the hooks and returns what the call
    /// returned (a panic in it is raised here).
    pub(super) fn finish(self, fs: &MemFs) -> Result<T, String> {
        if self.stopped_on.is_some() {
            self.handoff.set(Phase::Resumed);
        }
        let finished = self.handoff.wait_while(|p| p != Phase::Done).is_some();
        clear_hooks(fs);
        if !finished {
            // The thread is stuck (and leaked): only a deadlock gets here.
            return Err(format!(
                "a stopped call and the simulation deadlocked: no progress for {} s of real time",
                HANDOFF_TIMEOUT.as_secs()
            ));
        }
        match self.thread.join() {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(panic)) | Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
