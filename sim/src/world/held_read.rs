//! A read held open across another operation: a query on a thread of its own is stopped by
//! the disk's read hook ([`crate::memfs::IoHook`]) in the middle of reading the live file or
//! its WAL; while it is stopped, the simulation runs the operation (a write, a snapshot, a
//! restore or import that flips the database to a new file, a migration, retention) and then
//! GC; then the read goes on.
//!
//! What the model expects: GC leaves the file the read is on where it is (a flip retired it,
//! but the reader's lease keeps it); the read returns a whole state, the one before the
//! operation or (when it was stopped before its read transaction began, and a flip made it
//! retry on the new file) the one after, up to keys of failed operations. Exactly one thread
//! runs at any time, so a seed replays the same interleaving.

use super::clients::{Handoff, Phase, HANDOFF_TIMEOUT};
use super::*;
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;

/// Reads of the query's thread the hook lets pass before it stops one (drawn below this).
const STOP_AT_READS: u64 = 3;

impl World {
    /// [`Op::HeldRead`]: runs `inner` while a read is stopped in the middle (module docs).
    pub(super) fn op_held_read(&mut self, inner: &Op, seed: u64, full: bool) -> Result<String, String> {
        let Ok(db) = self.db().cloned() else { return self.apply_inner(inner, full) };
        let stop_at = ChaCha8Rng::seed_from_u64(seed).random_range(0..STOP_AT_READS);
        let before = self.model.rows.clone();
        let handoff = Arc::new(Handoff::new());
        let reader: Arc<OnceLock<ThreadId>> = Arc::new(OnceLock::new());
        let reads = Arc::new(AtomicU64::new(0));
        let stopped_on: Arc<Mutex<Option<PathBuf>>> = Arc::new(Mutex::new(None));
        let hook = {
            let (handoff, reader, reads, stopped_on) =
                (handoff.clone(), reader.clone(), reads.clone(), stopped_on.clone());
            crate::memfs::IoHook(Arc::new(move |path: &Path| {
                if reader.get() != Some(&std::thread::current().id()) {
                    return;
                }
                if reads.fetch_add(1, Ordering::SeqCst) != stop_at {
                    return;
                }
                *stopped_on.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.to_path_buf());
                handoff.set(Phase::Stopped);
                // Bounded: a simulation that never resumes is reported by its own timeout.
                let _ = handoff.wait_while(|p| p == Phase::Stopped);
            }))
        };
        self.fs.set_read_hook(Some(hook));
        let thread = {
            let (handoff, reader) = (handoff.clone(), reader.clone());
            let flaw = sila_sqlite::sabotage::current();
            std::thread::Builder::new()
                .name("sim-held-read".into())
                .spawn(move || {
                    sila_sqlite::sabotage::set(flaw);
                    let _ = reader.set(std::thread::current().id());
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        db.query("SELECT k, v FROM kv ORDER BY k", &[])
                    }));
                    handoff.set(Phase::Done);
                    result
                })
                .map_err(|e| format!("harness: cannot start the read's thread: {e}"))?
        };
        let first = handoff.wait_while(|p| p == Phase::Running);
        let held = first == Some(Phase::Stopped);
        let mut notes = Vec::new();
        let mut result = Ok(String::new());
        if held {
            result = self.apply_inner(inner, full);
            if result.is_ok() && !self.fs.is_dead() {
                match self.run_gc_under_read(&stopped_on) {
                    Ok(note) => notes.push(note),
                    Err(e) => result = Err(e),
                }
            }
            // Resumed even when a check failed: the read's thread must end.
            handoff.set(Phase::Resumed);
        }
        let finished = first.is_some() && handoff.wait_while(|p| p != Phase::Done).is_some();
        self.fs.set_read_hook(None);
        if !finished {
            return Err(format!(
                "a read held across {inner:?} never finished: no progress for {} s of real time",
                HANDOFF_TIMEOUT.as_secs()
            ));
        }
        let read = match thread.join() {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) | Err(panic) => std::panic::resume_unwind(panic),
        };
        if !held {
            // The read ended before its stop: the operation runs after it, as usual.
            result = self.apply_inner(inner, full);
        }
        let text = result?;
        let at = stopped_on.lock().unwrap_or_else(|p| p.into_inner()).take();
        notes.push(self.check_held_read(read, &before, at.is_some())?);
        Ok(match at {
            Some(path) => format!(
                "{text}; read held at read {stop_at} of {} ({})",
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                notes.join(", ")
            ),
            None => format!("{text}; read ended before its stop ({})", notes.join(", ")),
        })
    }

    /// GC while the read is stopped: it must leave the file the read is on. (The operation
    /// itself may have moved it: a restore keeps the file it replaced as its undo snapshot,
    /// renamed into `snapshots/` when nothing of it was left in its WAL. The reader's handle
    /// follows the rename.)
    fn run_gc_under_read(&mut self, stopped_on: &Mutex<Option<PathBuf>>) -> Result<String, String> {
        let path = stopped_on.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let there = |w: &World| path.as_ref().is_some_and(|p| matches!(w.fs.file_len(p), Ok(Some(_))));
        let before = there(self);
        let note = match self.ws()?.gc() {
            Ok(summary) => format!("gc removed {} files", summary.files.len()),
            Err(e) if is_typed(&e.to_string()) => return Ok(format!("gc error {}", e.code())),
            Err(e) => return Err(format!("GC under a held read failed without a typed error: {e}")),
        };
        if before && !there(self) {
            let shown = path.map(|p| p.display().to_string()).unwrap_or_default();
            return Err(format!("GC removed {shown} while a read was in the middle of it"));
        }
        Ok(note)
    }

    /// The held read's answer: a whole state, before the operation or (if it began its read
    /// after the operation) after it, up to keys of failed operations.
    fn check_held_read(
        &self,
        read: sila_sqlite::Result<sila_sqlite::Rows>,
        before: &BTreeSet<i64>,
        held: bool,
    ) -> Result<String, String> {
        let rows = match read {
            // The disk failed, or (BUSY) a flip came between each of its tries: nothing read.
            Err(e) if ops::is_fault_code(e.code()) => return Ok(format!("read error {}", e.code())),
            Err(e) => return Err(format!("a held read failed with {e}")),
            Ok(rows) => rows,
        };
        // A seed that ended (an import of rotted bits) keeps no model to compare with.
        if self.finished.is_some() || !self.model.in_doubt.is_empty() {
            return Ok(format!("read {} rows", rows.rows.len()));
        }
        let got = model::keys_of(&rows)?;
        let real = |s: &BTreeSet<i64>| -> BTreeSet<i64> { s.iter().copied().filter(|k| *k >= 0).collect() };
        let maybe = &self.model.maybe;
        let matches =
            |state: &BTreeSet<i64>| real(state).symmetric_difference(&got).all(|k| maybe.contains(k));
        let after = &self.model.rows;
        if matches(before) || (held && matches(after)) {
            return Ok(format!("read {} rows", got.len()));
        }
        let before = real(before);
        let extra: Vec<&i64> = got.difference(&before).collect();
        let missing: Vec<&i64> = before.difference(&got).collect();
        Err(format!(
            "a held read saw no whole state: against the state before the operation, extra {extra:?}, missing {missing:?}"
        ))
    }
}
