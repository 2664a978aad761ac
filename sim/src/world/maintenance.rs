//! Maintenance operations: a checkpoint on demand, a compaction (`VACUUM INTO` a new
//! version, flipped to with the writer held), and a call of the scheduled upkeep
//! (`Workspace::maintain`: integrity check, `PRAGMA optimize`, GC).
//!
//! What the model expects: neither changes the rows. A compaction's copy holds every write
//! acknowledged before it (writes submitted while it runs wait for it, then land on the new
//! file), so clients acknowledged at any time must all be there; acknowledged, its flip
//! synced the new file, and a complete checkpoint synced the database file: every write
//! acknowledged before is durable from then on (when no failed write is in doubt). Failed,
//! either leaves the rows as they were; after a failed sync nothing may be acknowledged. The
//! upkeep's integrity check must find nothing wrong on a disk that keeps its contract: the
//! live file is never damaged by any fault it injects.

use super::*;

impl World {
    /// [`Op::Compact`].
    pub(super) fn op_compact(&mut self) -> Result<String, String> {
        let compacted = self.blocking(clients::StopIn::NewVersion, |db| db.compact())?;
        // Clients acknowledged while it ran are in the copy: they count before its flip.
        self.settle_clients(clients::Stage::During);
        match compacted {
            Ok(report) => {
                if self.poisoned_by_fault {
                    return Err("fail-stop broken: compaction acknowledged after an fsync failure".into());
                }
                self.durable_if_certain();
                Ok(format!("compacted {} -> {} bytes", report.before_bytes, report.after_bytes))
            }
            Err(e) => self.failure("a compaction", &e),
        }
    }

    /// [`Op::Checkpoint`].
    pub(super) fn op_checkpoint(&mut self) -> Result<String, String> {
        match self.db()?.checkpoint() {
            Ok(report) => {
                if self.poisoned_by_fault {
                    return Err("fail-stop broken: checkpoint acknowledged after an fsync failure".into());
                }
                if report.complete {
                    self.durable_if_certain();
                }
                Ok(format!(
                    "checkpointed {}/{} frames{}",
                    report.checkpointed_frames,
                    report.wal_frames,
                    if report.complete { "" } else { " (partial)" }
                ))
            }
            Err(e) => self.failure("a checkpoint", &e),
        }
    }

    /// [`Op::Maintain`].
    pub(super) fn op_maintain(&mut self) -> Result<String, String> {
        let options = sila_sqlite::maintenance::MaintenanceOptions {
            budget: std::time::Duration::ZERO,
            full_check_every: 1,
            retention: None,
            gc: true,
        };
        match self.ws()?.maintain(&options) {
            Ok(report) => {
                let mut text = String::from("maintained");
                for d in &report.databases {
                    if !d.problems.is_empty() && !self.lying {
                        return Err(format!("the upkeep found the live database damaged: {:?}", d.problems));
                    }
                    text.push_str(&format!(
                        " {} ({} problems{})",
                        d.db,
                        d.problems.len(),
                        d.error.as_deref().map(|e| format!(", {e}")).unwrap_or_default()
                    ));
                }
                Ok(text)
            }
            Err(e) => self.failure("the upkeep", &e),
        }
    }

    /// Every acknowledged write was just made durable: the model keeps only the last state,
    /// unless a failed write may or may not have taken effect (then the disk holds one of
    /// the states the model allows, and it stays as it is).
    fn durable_if_certain(&mut self) {
        if self.model.maybe.is_empty() && self.model.in_doubt.is_empty() {
            self.model.barrier();
        }
    }
}
