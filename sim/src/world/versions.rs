//! The version operations the `versions` profile draws besides the common workload: dropping
//! one snapshot, retention by age, an export to a path the host names, an integrity check
//! on demand, and a migration whose applied step was edited since.
//!
//! What the model expects:
//! - a dropped snapshot is gone from the manifest once the drop is acknowledged, and never
//!   comes back, after any crash (checked between operations and after recovery); a failed
//!   drop may have dropped it or not;
//! - retention by age drops exactly the snapshots older than the age when it ran, oldest
//!   first, and keeps the rest;
//! - an acknowledged export to a path is a whole copy of an acknowledged state, of the size
//!   it reported, there after any crash;
//! - an integrity check finds nothing wrong on a disk that keeps its contract (no fault this
//!   harness injects damages a live database file);
//! - a migration plan that edits an applied step is refused with MIGRATION_FAILED and
//!   changes nothing.

use super::*;

/// The directory of [`Op::ExportTo`]'s files: outside the workspace, as a host would name.
pub(super) const EXPORT_TO_DIR: &str = "/out";

impl World {
    /// [`Op::DropSnapshot`].
    pub(super) fn op_drop_snapshot(&mut self, n: usize) -> Result<String, String> {
        let Some(id) = self.model.snapshot_order.get(n % self.model.snapshot_order.len().max(1)).copied()
        else {
            return Ok("no snapshot".into());
        };
        match self.db()?.drop_snapshot(id) {
            Ok(()) => {
                if self.poisoned_by_fault {
                    return Err("fail-stop broken: a drop acknowledged after an fsync failure".into());
                }
                self.forget_dropped(&[id]);
                Ok(format!("snapshot dropped {}", short(id)))
            }
            Err(e) => {
                let maybe_gone_already = self.model.snapshots_maybe_gone.contains(&id);
                // It may have been dropped before it failed.
                self.model.snapshots_maybe_gone.insert(id);
                if e.code() == ErrorCode::NotFound && maybe_gone_already {
                    return Ok("error NOT_FOUND (a failed operation may have dropped it)".into());
                }
                self.failure("a drop", &e)
            }
        }
    }

    /// Takes acknowledged drops into the model: gone, and never to come back.
    pub(super) fn forget_dropped(&mut self, ids: &[Uuid]) {
        for id in ids {
            self.model.snapshots.remove(id);
            self.model.snapshot_order.retain(|x| x != id);
            self.model.dropped.insert(*id);
        }
    }

    /// [`Op::RetentionAge`]: drops the snapshots older than `age_ms`; checks the victims
    /// against the ages the manifest lists (each snapshot's time of creation).
    pub(super) fn op_retention_age(&mut self, age_ms: u64) -> Result<String, String> {
        let db = self.db()?.clone();
        let listed = match db.snapshots() {
            Ok(listed) => listed,
            Err(e) => return self.failure("a snapshot listing", &e),
        };
        let before = self.clock.now_ms();
        let policy = Retention { keep_last: None, max_age_ms: Some(age_ms) };
        let result = db.apply_retention(policy);
        let after = self.clock.now_ms();
        match result {
            Ok(dropped) => {
                if self.poisoned_by_fault {
                    return Err("fail-stop broken: retention acknowledged after an fsync failure".into());
                }
                // The policy ran at some time in [before, after] (the disk's latency moves
                // the clock while it works).
                for s in &listed {
                    let age_then = (before.saturating_sub(s.created_ms), after.saturating_sub(s.created_ms));
                    let was_dropped = dropped.contains(&s.id);
                    if was_dropped && age_then.1 <= age_ms {
                        return Err(format!(
                            "retention by age {age_ms} ms dropped {}, {} ms old",
                            short(s.id),
                            age_then.1
                        ));
                    }
                    if !was_dropped && age_then.0 > age_ms {
                        return Err(format!(
                            "retention by age {age_ms} ms kept {}, {} ms old",
                            short(s.id),
                            age_then.0
                        ));
                    }
                }
                let order: Vec<Uuid> =
                    listed.iter().map(|s| s.id).filter(|id| dropped.contains(id)).collect();
                if order != dropped {
                    return Err(format!("retention dropped {dropped:?}, not oldest first ({order:?})"));
                }
                self.forget_dropped(&dropped);
                Ok(format!("retention dropped {} older than {age_ms} ms", dropped.len()))
            }
            Err(e) => {
                self.model.snapshots_maybe_gone.extend(self.model.snapshot_order.iter().copied());
                self.failure("retention by age", &e)
            }
        }
    }

    /// [`Op::ExportTo`]: an export to a path outside the workspace.
    pub(super) fn op_export_to(&mut self) -> Result<String, String> {
        // The directory is the harness's, made with the disk (durable before any fault).
        let dir = Path::new(EXPORT_TO_DIR);
        let n = self.exports_made;
        self.exports_made += 1;
        let path = dir.join(format!("x{n}.sqlite"));
        let size = match self.db()?.export_to_path(&path) {
            Ok(size) => size,
            Err(e) => return self.failure("an export to a path", &e),
        };
        if self.poisoned_by_fault {
            return Err("fail-stop broken: an export was acknowledged after an fsync failure".into());
        }
        let on_disk = self.fs.file_len(&path).ok().flatten();
        if on_disk != Some(size) {
            return Err(format!(
                "export {} reported {size} bytes, the disk holds {on_disk:?}",
                path.display()
            ));
        }
        let rows = self.acknowledged_export(&path, false)?;
        self.model.exports.insert(path.clone(), (rows.clone(), false));
        Ok(format!("exported {} rows to {}", rows.len(), path.display()))
    }

    /// [`Op::CheckIntegrity`].
    pub(super) fn op_check_integrity(&mut self, full: bool) -> Result<String, String> {
        match self.db()?.check_integrity(full) {
            Ok(report) if report.problems.is_empty() => Ok(format!("sound (full {full})")),
            Ok(report) if self.lying => {
                // A lying disk may damage the live file; the database now refuses work.
                let verdict = format!("damage found on a lying disk: {:?}", report.problems.first());
                self.finished = Some(verdict.clone());
                Ok(verdict)
            }
            Ok(report) => {
                Err(format!("an integrity check found damage no fault explains: {:?}", report.problems))
            }
            Err(e) => self.failure("an integrity check", &e),
        }
    }

    /// [`Op::MigrateEdited`]: the plan to the version the database is at, with its last
    /// applied step's SQL changed. Refused, it changes nothing; at version 0 there is no
    /// applied step to edit.
    pub(super) fn op_migrate_edited(&mut self) -> Result<String, String> {
        let schema_keys: Vec<i64> = self.model.rows.iter().copied().filter(|k| *k < 0).collect();
        let certain = !self.model.maybe.iter().any(|k| *k < 0) && self.model.in_doubt.is_empty();
        let at = schema_keys.first().map_or(0, |k| u64::try_from(k - model::SCHEMA_KEY_BASE).unwrap_or(0));
        if at == 0 || !certain {
            return Ok("no applied step to edit".into());
        }
        let steps = (0..at)
            .map(|v| MigrationStep {
                from: v,
                to: v + 1,
                up: if v + 1 == at {
                    format!("CREATE INDEX IF NOT EXISTS kv_v{v}_edited ON kv(v)")
                } else {
                    format!("CREATE INDEX IF NOT EXISTS kv_v{v} ON kv(v)")
                },
                down: format!("DROP INDEX IF EXISTS kv_v{v}"),
            })
            .collect();
        let plan = MigrationPlan { current_version: at, steps };
        match self.db()?.migrate(&plan, false) {
            Ok(report) => Err(format!("a plan with an edited step was applied: {report:?}")),
            Err(e) if e.code() == ErrorCode::MigrationFailed => Ok("refused: a step was edited".into()),
            Err(e) => self.failure("a migration with an edited step", &e),
        }
    }

    /// No snapshot whose drop was acknowledged is in the manifest (on a disk that keeps its
    /// contract).
    pub(super) fn check_dropped_stay_dropped(&self, ws: &Workspace) -> Result<(), String> {
        if self.lying || self.model.dropped.is_empty() {
            return Ok(());
        }
        let Ok(key) = ws.db_key(APP, "main") else { return Ok(()) };
        let Ok(listed) = ws.with_store(|s| s.manifest(&key).map(|m| m.snapshots.clone())) else {
            return Ok(());
        };
        match listed.iter().find(|s| self.model.dropped.contains(&s.id)) {
            Some(s) => {
                Err(format!("snapshot {} is in the manifest after its drop was acknowledged", short(s.id)))
            }
            None => Ok(()),
        }
    }
}
