//! A read held open across another operation: a query on a thread of its own
//! ([`super::paused`]) is stopped by the disk's read hook in the middle of reading the live file or
//! its WAL; while it is stopped, the simulation runs the operation (a write, a snapshot, a
//! restore or import that flips the database to a new file, a migration, retention) and then
//! GC; then the read goes on.
//!
//! What the model expects: GC leaves the file the read is on where it is (a flip retired it,
//! but the reader's lease keeps it); the read returns a whole state, the one before the
//! operation or (when it was stopped before its read transaction began, and a flip made it
//! retry on the new file) the one after, up to keys of failed operations. Exactly one thread
//! runs at any time, so a seed replays the same interleaving.

use super::paused::{self, StopAt};
use super::*;

/// Reads of the query's thread the hook lets pass before it stops one (drawn below this).
const STOP_AT_READS: u64 = 3;

impl World {
    /// [`Op::HeldRead`]: runs `inner` while a read is stopped in the middle (module docs).
    pub(super) fn op_held_read(&mut self, inner: &Op, seed: u64, full: bool) -> Result<String, String> {
        let Ok(db) = self.db().cloned() else { return self.apply_inner(inner, full) };
        let stop_at = ChaCha8Rng::seed_from_u64(seed).random_range(0..STOP_AT_READS);
        let before = self.model.rows.clone();
        let stop = StopAt { reads: true, writes: false, at: stop_at, counts: Box::new(|_: &Path| true) };
        let paused = paused::pause(&self.fs, "sim-held-read", stop, move || {
            db.query("SELECT k, v FROM kv ORDER BY k", &[])
        })?;
        let stopped_on = paused.stopped_on().map(Path::to_path_buf);
        let mut notes = Vec::new();
        let result = match &stopped_on {
            Some(path) => {
                let r = self.apply_inner(inner, full);
                // The operation's answer came here: the GC below (and a sync it fails, of its
                // audit record say) is after it, as the clients' requests after an operation.
                if self.op_end_sync_failures.is_none() {
                    self.op_end_sync_failures = Some(self.fs.stats().sync_failures);
                }
                match r {
                    Ok(text) if !self.fs.is_dead() => self.run_gc_under_read(path).map(|note| {
                        notes.push(note);
                        text
                    }),
                    other => other,
                }
            }
            None => Ok(String::new()),
        };
        // The read goes on even when a check failed: its thread must end.
        let read = paused.finish(&self.fs)?;
        let text = match stopped_on {
            Some(_) => result?,
            // The read ended before its stop: the operation runs after it, as usual.
            None => self.apply_inner(inner, full)?,
        };
        notes.push(self.check_held_read(read, &before, stopped_on.is_some())?);
        Ok(match stopped_on {
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
    fn run_gc_under_read(&mut self, path: &Path) -> Result<String, String> {
        let there = |w: &World| matches!(w.fs.file_len(path), Ok(Some(_)));
        let before = there(self);
        let note = match self.ws()?.gc() {
            Ok(summary) => format!("gc removed {} files", summary.files.len()),
            Err(e) if is_typed(&e.to_string()) => return Ok(format!("gc error {}", e.code())),
            Err(e) => return Err(format!("GC under a held read failed without a typed error: {e}")),
        };
        if before && !there(self) {
            return Err(format!("GC removed {} while a read was in the middle of it", path.display()));
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
