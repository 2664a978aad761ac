//! The operations of a workload, one function each: run against the engine, settle the
//! model by the answer.

use super::*;

/// Mixed into the stream that decides whether a power cut waits for unsynced changes.
const DIRTY_CUT_SALT: u64 = 0x4449_5254_595f_4355;
/// Mutating IO calls a power cut waits at most for unsynced changes on enough files.
const DIRTY_CUT_PATIENCE: u64 = 3000;

/// Mixed into a group's order seed for the stream that may add a request breaking a
/// deferred foreign key.
const DEFERRED_SALT: u64 = 0x4445_4645_5252_4544;

/// Whether `e` is SQLite's constraint error (any extended code of SQLITE_CONSTRAINT).
fn is_constraint(e: &sila_sqlite::Error) -> bool {
    e.code() == ErrorCode::Sqlite && e.sqlite_code().is_some_and(|c| c & 0xff == 19)
}

/// Error codes that say the disk, the engine's state or a resource stopped an operation,
/// rather than the operation's own SQL.
pub(super) fn is_fault_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Io
            | ErrorCode::Poisoned
            | ErrorCode::DiskFull
            | ErrorCode::QuotaExceeded
            | ErrorCode::Busy
            | ErrorCode::Timeout
            | ErrorCode::Cancelled
            | ErrorCode::Corrupt
    )
}

impl World {
    /// Runs `op` against the engine and the model (one function per operation below).
    pub(super) fn apply_inner(&mut self, op: &Op, full: bool) -> Result<String, String> {
        match op {
            Op::Insert(k) => self.op_insert(k, full),
            Op::GroupInsert(keys, order_seed) => self.op_group_insert(keys, order_seed, full),
            Op::Transaction(keys, fail) => self.op_transaction(keys, fail, full),
            Op::Delete(k) => self.op_delete(k, full),
            Op::Query => self.op_query(),
            Op::Snapshot => self.op_snapshot(),
            Op::Restore(n) => self.op_restore(n).and_then(|text| self.after_flip(text)),
            Op::Import(n, gzip) => self.op_import(n, gzip).and_then(|text| self.after_flip(text)),
            Op::Migrate => self.op_migrate(full),
            Op::RetentionGc => self.op_retention_gc(),
            Op::Reopen => self.op_reopen(),
            Op::Cancel => self.op_cancel(),
            Op::Export(backup, gzip) => self.op_export(backup, gzip),
            Op::DropSnapshot(n) => self.op_drop_snapshot(*n),
            Op::RetentionAge(age_ms) => self.op_retention_age(*age_ms),
            Op::ExportTo => self.op_export_to(),
            Op::CheckIntegrity(full) => self.op_check_integrity(*full),
            Op::MigrateEdited => self.op_migrate_edited(),
            Op::Compact => self.op_compact().and_then(|text| self.after_flip(text)),
            Op::Checkpoint => self.op_checkpoint(),
            Op::Maintain => self.op_maintain(),
            Op::AppChange(seed) => self.op_app_change(*seed),
            Op::CutPower(n) => self.op_cut_power(n),
            Op::FailSync(n) => self.op_fail_sync(n),
            Op::HeldRead(inner, seed) => self.op_held_read(inner, *seed, full),
            Op::CancelMidWrite(inner, seed) => self.op_cancel_mid_write(inner, *seed, full),
            Op::WithClients(inner, clients) => {
                self.clients = Some(clients.clone());
                let result = self.apply_inner(inner, full);
                // Clients of an operation that never reached the engine did not run.
                self.clients = None;
                self.settle_clients(clients::Stage::After);
                if let Ok(text) = &result {
                    if let Err(e) = self.check_late_read() {
                        let clients = self.client_outcome.as_ref().map(|o| o.to_string()).unwrap_or_default();
                        return Err(format!("{e} (the operation: {text}; {clients})"));
                    }
                }
                let outcome = self.client_outcome.take();
                result.map(|text| match outcome {
                    Some(o) => format!("{text}; {o}"),
                    None => format!("{text}; no clients ran"),
                })
            }
        }
    }

    /// [`Op::Insert`].
    pub(super) fn op_insert(&mut self, k: &i64, full: bool) -> Result<String, String> {
        let mut next = self.model.rows.clone();
        next.insert(*k);
        self.model.in_flight = vec![next.clone()];
        let r = self
            .db()?
            .exec("INSERT INTO kv (k, v) VALUES (?, ?)", &[Value::Integer(*k), model::value_of(*k)]);
        self.settle_write(r.map(|_| ()), next, full, self.poisoned_by_fault)
    }

    /// [`Op::GroupInsert`].
    pub(super) fn op_group_insert(
        &mut self,
        keys: &[i64],
        order_seed: &u64,
        full: bool,
    ) -> Result<String, String> {
        let db = self.db()?.clone();
        // Sometimes a request that breaks a deferred foreign key too: SQLite finds it only
        // when its transaction ends, and it must fail alone, at its own end, not at the
        // group's commit (drawn from a stream of its own: every seed's operations stay).
        let mut side = ChaCha8Rng::seed_from_u64(*order_seed ^ DEFERRED_SALT);
        let deferred_at = match side.random_bool(0.25) {
            true => self.ensure_deferred_table(&db)?.then(|| side.random_range(0..=keys.len())),
            false => None,
        };
        let mut all = self.model.rows.clone();
        all.extend(keys.iter().copied());
        self.model.in_flight = vec![all];
        // Submitted in queue order, the orphan (if any) among the keys at its place.
        let mut pending = Vec::with_capacity(keys.len() + 1);
        for i in 0..=keys.len() {
            if deferred_at == Some(i) {
                // No key of kv is negative: this row's parent never exists.
                pending.push(db.submit_exec("INSERT INTO kv_ref (k) VALUES (-1)", vec![]));
            }
            if let Some(k) = keys.get(i) {
                pending.push(db.submit_exec(
                    "INSERT INTO kv (k, v) VALUES (?, ?)",
                    vec![Value::Integer(*k), model::value_of(*k)],
                ));
            }
        }
        let orphan = deferred_at;
        let mut order = ChaCha8Rng::seed_from_u64(*order_seed);
        self.stepper.run_until_idle(10_000, || order.random_range(0..64usize));
        if let Some(at) = orphan {
            let p = pending.remove(at);
            match p.try_take() {
                Some(Ok(_)) => return Err("a request breaking a deferred foreign key was acknowledged".into()),
                Some(Err(e)) if is_constraint(&e) || self.refused_by_disk(e.code()) => {}
                Some(Err(e)) => {
                    return Err(format!(
                        "a request breaking a deferred foreign key failed with {} instead of a constraint error: {e}",
                        e.code().name()
                    ))
                }
                None => return Err("a group-committed write was never answered after the stepper went idle".into()),
            }
        }
        let mut acked = Vec::new();
        let mut failures = Vec::new();
        for (k, p) in keys.iter().zip(pending) {
            // A key certainly present must be refused with a constraint error (or a fault's);
            // any other key must not be, whatever its neighbours did.
            let m = &self.model;
            let present =
                m.rows.contains(k) && !m.maybe.contains(k) && m.in_doubt.iter().all(|s| s.contains(k));
            let absent =
                !m.rows.contains(k) && !m.maybe.contains(k) && m.in_doubt.iter().all(|s| !s.contains(k));
            match p.try_take() {
                Some(Ok(_)) if present => return Err(format!("key {k} was inserted twice")),
                Some(Ok(_)) => acked.push(*k),
                Some(Err(e)) => {
                    let constraint = is_constraint(&e);
                    if present && !(constraint || self.refused_by_disk(e.code())) {
                        return Err(format!(
                            "a duplicate key {k} failed with {} instead of a constraint error: {e}",
                            e.code().name()
                        ));
                    }
                    if absent && constraint {
                        return Err(format!("key {k} failed with a constraint error it did not break: {e}"));
                    }
                    failures.push(e.code().name())
                }
                None => {
                    return Err(
                        "a group-committed write was never answered after the stepper went idle".into()
                    )
                }
            }
        }
        if !acked.is_empty() && self.poisoned_by_fault {
            return Err(format!(
                "fail-stop broken: {} writes acknowledged after an fsync failure",
                acked.len()
            ));
        }
        let mut next = self.model.rows.clone();
        next.extend(acked.iter().copied());
        self.model.maybe.extend(keys.iter().filter(|k| !acked.contains(k)));
        // Every request of a group either commits with it or fails alone; after a
        // power cut the whole group may have committed unanswered.
        self.model.in_flight.push(next.clone());
        if !acked.is_empty() {
            self.model.commit(next, full);
        }
        let with = if orphan.is_some() { " (and a deferred orphan, refused)" } else { "" };
        Ok(format!("acked {:?} failed {:?}{with}", acked, failures))
    }

    /// Makes sure the table whose rows must have a parent in `kv` (checked when a transaction
    /// ends) exists: a restore or import may have brought back a version from before it.
    /// False when the disk refused (no deferred request then).
    fn ensure_deferred_table(&mut self, db: &Database) -> Result<bool, String> {
        let made = db.exec(
            "CREATE TABLE IF NOT EXISTS kv_ref (k INTEGER PRIMARY KEY REFERENCES kv(k) DEFERRABLE INITIALLY DEFERRED)",
            &[],
        );
        match made {
            Ok(_) if self.poisoned_by_fault => {
                Err("fail-stop broken: a CREATE TABLE acknowledged after an fsync failure".into())
            }
            Ok(_) => Ok(true),
            Err(e) if self.refused_by_disk(e.code()) => Ok(false),
            Err(e) => Err(format!("creating the deferred-constraint table failed: {e}")),
        }
    }

    /// [`Op::Transaction`].
    pub(super) fn op_transaction(&mut self, keys: &[i64], fail: &bool, full: bool) -> Result<String, String> {
        let mut next = self.model.rows.clone();
        next.extend(keys.iter().copied());
        self.model.in_flight = if *fail { Vec::new() } else { vec![next.clone()] };
        let keys2 = keys.to_vec();
        let fail = *fail;
        let r = self.db()?.transaction(|tx| {
            for k in &keys2 {
                tx.exec("INSERT INTO kv (k, v) VALUES (?, ?)", &[Value::Integer(*k), model::value_of(*k)])?;
            }
            if fail {
                return Err(sila_sqlite::Error::new(ErrorCode::InvalidArgument, "the body fails on purpose"));
            }
            Ok(())
        });
        if fail {
            match r {
                Err(e) if e.code() == ErrorCode::InvalidArgument => Ok("rolled back as asked".into()),
                Err(e) => Ok(format!("error {}", e.code())),
                Ok(()) => Err("a transaction whose body failed was committed".into()),
            }
        } else {
            self.settle_write(r, next, full, self.poisoned_by_fault)
        }
    }

    /// [`Op::Delete`].
    pub(super) fn op_delete(&mut self, k: &i64, full: bool) -> Result<String, String> {
        let mut next = self.model.rows.clone();
        next.remove(k);
        self.model.in_flight = vec![next.clone()];
        let r = self.db()?.exec("DELETE FROM kv WHERE k = ?", &[Value::Integer(*k)]).map(|_| ());
        self.settle_write(r, next, full, self.poisoned_by_fault)
    }

    /// [`Op::Query`].
    pub(super) fn op_query(&mut self) -> Result<String, String> {
        match self.db()?.query("SELECT k, v FROM kv ORDER BY k", &[]) {
            Ok(rows) => {
                let schema = match self.db()?.schema_version() {
                    Ok(v) => v,
                    // A read the disk failed is a typed error, as for the query itself.
                    Err(e) => return Ok(format!("error {} reading the schema version", e.code())),
                };
                let got = model::with_schema(model::keys_of(&rows)?, schema);
                if got != self.model.rows {
                    let extra: Vec<&i64> = got.difference(&self.model.rows).collect();
                    let missing: Vec<&i64> = self.model.rows.difference(&got).collect();
                    return Err(format!(
                        "live read differs from the model: got {} rows, model {} (extra {extra:?}, missing {missing:?})",
                        got.len(),
                        self.model.rows.len()
                    ));
                }
                Ok(format!("{} rows", got.len()))
            }
            Err(e) => self.failure("a query", &e),
        }
    }

    /// [`Op::Snapshot`].
    pub(super) fn op_snapshot(&mut self) -> Result<String, String> {
        let label = format!("s{}", self.trace.len());
        // Clients writing while it copies come after its content: they settle after it.
        match self.blocking(clients::StopIn::Snapshot, move |db| db.snapshot(&label))? {
            Ok(s) => {
                if self.poisoned_by_fault {
                    return Err("fail-stop broken: snapshot acknowledged after an fsync failure".into());
                }
                self.acknowledge_snapshot(s.id, self.model.rows.clone());
                Ok(format!("snapshot {}", short(s.id)))
            }
            Err(e) => self.failure("a snapshot", &e),
        }
    }

    /// [`Op::Restore`].
    pub(super) fn op_restore(&mut self, n: &usize) -> Result<String, String> {
        if self.model.snapshot_order.is_empty() {
            return Ok("no snapshot".into());
        }
        let Some(id) = self.model.snapshot_order.get(n % self.model.snapshot_order.len()).copied() else {
            return Ok("no snapshot".into());
        };
        let target = self.model.snapshots.get(&id).cloned().unwrap_or_default();
        self.model.in_flight = vec![target.clone()];
        let key = self.ws()?.db_key(APP, "main").map_err(|e| e.to_string())?;
        let snap = Path::new(ROOT).join(layout::snapshot_file(key.app, &key.db, id));
        let rotted_after_seal = self.rotted_after_seal(id, &snap);
        let rotted = rotted_after_seal && !self.rot_maybe_undone.contains(&id);
        let rotted_before_seal = !rotted_after_seal && self.fs.rotted().contains(&snap);
        let restored = self.blocking(clients::StopIn::NewVersion, move |db| {
            db.restore(id, RestoreOptions { allow_schema_change: true })
        })?;
        // Clients acknowledged while it prepared the new version wrote before its flip.
        self.settle_clients(clients::Stage::During);
        match restored {
            Ok(undo) => {
                if self.poisoned_by_fault {
                    return Err("fail-stop broken: restore acknowledged after an fsync failure".into());
                }
                if rotted {
                    return Err(format!("a restore accepted snapshot {} whose bits rotted", short(id)));
                }
                self.acknowledge_snapshot(undo, self.model.rows.clone());
                if rotted_before_seal {
                    // The engine summed the file with the rotted bit in it (see
                    // `rotted_after_seal`): nothing could tell, and what is live now is no
                    // state the model knows. The seed ends here.
                    let verdict = format!("restored {}, whose bits rotted before it was sealed", short(id));
                    self.finished = Some(verdict.clone());
                    return Ok(verdict);
                }
                self.model.rows = target;
                self.model.barrier();
                Ok(format!("restored {} (undo {})", short(id), short(undo)))
            }
            Err(e) => {
                // Past the flip the restore took effect although it failed (its undo
                // snapshot could not be kept); the engine then refuses all work until
                // a reopen, which shows one state or the other.
                self.model.in_doubt.push(target);
                if e.code() == ErrorCode::NotFound && self.model.snapshots_maybe_gone.contains(&id) {
                    // A retention that failed may have dropped it.
                    return Ok("error NOT_FOUND (a failed retention may have dropped it)".into());
                }
                self.failure("a restore", &e)
            }
        }
    }

    /// [`Op::Import`].
    pub(super) fn op_import(&mut self, n: &usize, gzip: &bool) -> Result<String, String> {
        let Some(id) = self.model.snapshot_order.get(n % self.model.snapshot_order.len().max(1)).copied()
        else {
            return Ok("no snapshot".into());
        };
        let target = self.model.snapshots.get(&id).cloned().unwrap_or_default();
        let key = self.ws()?.db_key(APP, "main").map_err(|e| e.to_string())?;
        let snap = Path::new(ROOT).join(layout::snapshot_file(key.app, &key.db, id));
        if self.fs.rotted().contains(&snap) {
            // The harness imports the snapshot's file as an app would import any file: one
            // whose bits rotted may pass every check with a wrong value in it, and the model
            // could not tell what the import should hold.
            return Ok("no import source: its bits rotted".into());
        }
        let source = if *gzip {
            match self.write_gzip_copy(&snap) {
                Ok(path) => path,
                // The harness's own copy could not be written (a full or failing disk):
                // nothing was asked of the engine.
                Err(why) => return Ok(format!("no import source: {why}")),
            }
        } else {
            snap.clone()
        };
        self.model.in_flight = vec![target.clone()];
        let from = source.clone();
        let imported =
            self.blocking(clients::StopIn::NewVersion, move |db| db.import(&from, ImportOptions::default()))?;
        self.settle_clients(clients::Stage::During);
        if *gzip {
            // The harness's copy is not the engine's business once imported.
            let _ = self.fs.remove_file(&source);
        }
        match imported {
            Ok(report) => {
                if self.poisoned_by_fault {
                    return Err("fail-stop broken: import acknowledged after an fsync failure".into());
                }
                if *gzip && report.checks.first() != Some(&"gzip") {
                    return Err(format!("a gzip import did not report its gzip check: {:?}", report.checks));
                }
                if self.fs.rotted().contains(&snap) {
                    // A bit of the source rotted while it was read for the import: the engine
                    // was handed a damaged file (an imported file has no checksum of ours),
                    // and what it now holds is no state the model knows. The seed ends here.
                    let verdict = "imported a file whose bits rotted while it was read".to_string();
                    self.finished = Some(verdict.clone());
                    return Ok(verdict);
                }
                self.acknowledge_snapshot(report.undo, self.model.rows.clone());
                self.model.rows = target;
                self.model.barrier();
                let how = if *gzip { " (gzip)" } else { "" };
                Ok(format!("imported {}{how} (undo {})", short(id), short(report.undo)))
            }
            Err(e) => {
                if self.fs.rotted().contains(&snap) {
                    // A bit of the source rotted while the import read it, and the import
                    // may have flipped before it failed: the state it leaves is none the
                    // model knows (as for an import that succeeded). The seed ends here.
                    let verdict = format!(
                        "error {} from an import of a file whose bits rotted while it was read",
                        e.code()
                    );
                    self.finished = Some(verdict.clone());
                    return Ok(verdict);
                }
                // As for a restore: an error after the flip leaves the database
                // poisoned with the import in effect; a reopen shows one state or the
                // other.
                self.model.in_doubt.push(target);
                if e.code() == ErrorCode::NotFound && self.model.snapshots_maybe_gone.contains(&id) {
                    return Ok("error NOT_FOUND (a failed retention may have dropped its source)".into());
                }
                self.failure("an import", &e)
            }
        }
    }

    /// [`Op::Migrate`].
    pub(super) fn op_migrate(&mut self, full: bool) -> Result<String, String> {
        // The version the model holds (its schema key); unknown while a failed operation may
        // have changed it.
        let schema_keys: Vec<i64> = self.model.rows.iter().copied().filter(|k| *k < 0).collect();
        let certain = !self.model.maybe.iter().any(|k| *k < 0) && self.model.in_doubt.is_empty();
        let from = schema_keys.first().map_or(0, |k| u64::try_from(k - model::SCHEMA_KEY_BASE).unwrap_or(0));
        let to = from + 1;
        let steps = (0..to)
            .map(|v| MigrationStep {
                from: v,
                to: v + 1,
                up: format!("CREATE INDEX IF NOT EXISTS kv_v{v} ON kv(v)"),
                down: format!("DROP INDEX IF EXISTS kv_v{v}"),
            })
            .collect();
        let plan = MigrationPlan { current_version: to, steps };
        let before = self.model.rows.clone();
        let mut next: BTreeSet<i64> = before.iter().copied().filter(|k| *k >= 0).collect();
        next = model::with_schema(next, to);
        self.model.in_flight = vec![next.clone()];
        let poisoned = self.poisoned_by_fault;
        let r = self.db()?.migrate(&plan, false);
        let text = match &r {
            Ok(report) => {
                if let Some(s) = report.snapshot {
                    self.acknowledge_snapshot(s, before);
                }
                if report.to != to || (certain && report.from != from) {
                    return Err(format!(
                        "migrated {} -> {}, the model expected {from} -> {to}",
                        report.from, report.to
                    ));
                }
                format!("migrated {} -> {}", report.from, report.to)
            }
            Err(e) => format!("error {}", e.code()),
        };
        // A migration is a write of the schema version: acknowledged, it must last as the
        // tier makes writes last; failed, either version may show.
        self.settle_write(r.map(|_| ()), next, full, poisoned).map(|_| text)
    }

    /// [`Op::RetentionGc`].
    pub(super) fn op_retention_gc(&mut self) -> Result<String, String> {
        let policy = Retention { keep_last: Some(1), max_age_ms: None };
        match self.db()?.apply_retention(policy) {
            Ok(dropped) => {
                self.forget_dropped(&dropped);
                let gc = self.ws()?.gc().map(|g| g.files.len()).map_err(|e| e.code().name().to_string());
                Ok(format!("dropped {} gc {:?}", dropped.len(), gc))
            }
            Err(e) => {
                // It may have dropped any of them before it failed.
                self.model.snapshots_maybe_gone.extend(self.model.snapshot_order.iter().copied());
                self.failure("retention", &e)
            }
        }
    }

    /// [`Op::Reopen`].
    pub(super) fn op_reopen(&mut self) -> Result<String, String> {
        let base = self.sync_failures_base;
        // The engine stopped at a fault (a failed sync, or a write the disk failed with
        // EIO): its close then writes nothing, so the reopen is no durable point.
        let faulted = self.ws.as_ref().is_some_and(|ws| ws.fault().is_some()) || self.fault_unsettled;
        match self.reopen_clean() {
            Ok(()) => {
                // A reopen shows the durable state: everything acknowledged, plus
                // whatever failed operations took effect whole (a commit SQLite
                // reported failed after its commit frame reached the WAL is replayed
                // now). If a sync failed since the last reopen (its pending data was
                // dropped), or the close's checkpoint lost its fsync, it is like a crash.
                let fired = self.fs.stats().sync_failures > base || faulted;
                let rows = match self.read_rows() {
                    Ok(rows) => rows,
                    Err(e) if self.fs.is_dead() => return Ok(format!("power cut after reopen: {e}")),
                    Err(e) if self.call_errors() && is_typed(&e) => {
                        return self.recover_quietly(&format!("read after reopen failed cleanly: {e}"), base);
                    }
                    Err(e) => return Err(e),
                };
                self.settle(rows, if fired { Settle::NotDurable } else { Settle::Clean })?;
                self.fault_unsettled = false;
                Ok(if fired { "reopened after a failed fsync at close".into() } else { "reopened".into() })
            }
            Err(e) if self.fs.is_dead() => Ok(format!("power cut during reopen: {e}")),
            Err(e) if self.call_errors() && is_typed(&e) => {
                self.recover_quietly(&format!("reopen failed cleanly: {e}"), base)
            }
            Err(e) => Err(format!("reopen failed with the power on: {e}")),
        }
    }

    /// [`Op::Cancel`].
    pub(super) fn op_cancel(&mut self) -> Result<String, String> {
        let p = self.db()?.submit_query("SELECT count(*) FROM kv", vec![]);
        p.cancel();
        self.stepper.run_until_idle(1000, || 0);
        match p.try_take() {
            Some(Err(e)) if e.code() == ErrorCode::Cancelled => Ok("cancelled".into()),
            Some(Err(e)) if e.code() == ErrorCode::Poisoned => Ok("poisoned".into()),
            Some(Err(e)) if self.fs.is_dead() => Ok(format!("power cut: {}", e.code())),
            Some(other) => Err(format!("a cancelled query answered {other:?}")),
            None => Err("a cancelled query was never answered".into()),
        }
    }

    /// [`Op::Export`].
    pub(super) fn op_export(&mut self, backup: &bool, gzip: &bool) -> Result<String, String> {
        let format = if *gzip { ExportFormat::SqliteGzip } else { ExportFormat::Sqlite };
        let n = self.exports_made;
        self.exports_made += 1;
        let made = if *backup {
            self.db()?.backup_as(BACKUPS_KEPT, format).map(|(_, path)| path)
        } else {
            self.db()?.export_as(&format!("e{n}"), format)
        };
        let path = match made {
            Ok(path) => path,
            Err(e) => {
                if *backup {
                    self.model.backups_must.clear();
                }
                return self.failure(if *backup { "a backup" } else { "an export" }, &e);
            }
        };
        if self.poisoned_by_fault {
            return Err("fail-stop broken: an export was acknowledged after an fsync failure".into());
        }
        let rows = self.acknowledged_export(&path, *gzip)?;
        let count = rows.len();
        self.model.exports.insert(path.clone(), (rows, *gzip));
        if *backup {
            self.settle_backups(&path)?;
        }
        let what = if *backup { "backup" } else { "export" };
        Ok(format!("exported {count} rows ({what}{})", if *gzip { ", gzip" } else { "" }))
    }

    /// [`Op::CutPower`].
    pub(super) fn op_cut_power(&mut self, n: &u64) -> Result<String, String> {
        // A cut still waiting for unsynced changes is not re-armed: that wait is the point.
        if self.fs.power_cut_waits() {
            return Ok("a power cut is already armed".into());
        }
        // Half the cuts wait for unsynced changes on one or two files (at most
        // `DIRTY_CUT_PATIENCE` calls), so crash images that lose and reorder changes across
        // files are common, not rare. Drawn from a stream of its own: the operations a seed
        // draws stay what they were.
        let mut side = ChaCha8Rng::seed_from_u64(self.seed ^ DIRTY_CUT_SALT ^ n ^ (self.crashes << 16));
        match side.random_range(0..4u32) {
            0 => {
                self.fs.cut_power_when_dirty(*n, 2, DIRTY_CUT_PATIENCE);
                Ok(format!("power cut armed after {n} IO calls, with unsynced changes on 2 files"))
            }
            1 => {
                self.fs.cut_power_when_dirty(*n, 1, DIRTY_CUT_PATIENCE);
                Ok(format!("power cut armed after {n} IO calls, with unsynced changes"))
            }
            _ => {
                self.fs.cut_power_after(*n);
                Ok(format!("power cut armed after {n} IO calls"))
            }
        }
    }

    /// [`Op::FailSync`].
    pub(super) fn op_fail_sync(&mut self, n: &u64) -> Result<String, String> {
        if self.sync_failure_armed {
            return Ok("an fsync failure is already armed".into());
        }
        let mut faults = self.fs.faults();
        faults.fail_sync_after = Some(*n);
        self.fs.set_faults(faults);
        self.sync_failure_armed = true;
        Ok(format!("fsync failure armed after {n} syncs"))
    }
}

impl World {
    /// The rows of an export just acknowledged at `path`: it must be a whole database holding
    /// a state the model allows now.
    pub(super) fn acknowledged_export(&self, path: &Path, gzip: bool) -> Result<BTreeSet<i64>, String> {
        let rows = export_rows(&self.fs, path, gzip, self.seed)
            .map_err(|e| format!("acknowledged export {} is not whole: {e}", path.display()))?;
        if !self.model.allows_without_crash(&rows) {
            return Err(format!(
                "export {} holds {} rows, not an acknowledged state ({} rows)",
                path.display(),
                rows.len(),
                self.model.rows.len()
            ));
        }
        Ok(rows)
    }

    /// Writes a gzip copy of `file` (as the disk holds it now) under `/import` and returns its
    /// path. Not synced: the import reads it at once, and a sync here could draw an injected
    /// fsync failure that belongs to no engine operation.
    pub(super) fn write_gzip_copy(&self, file: &Path) -> Result<PathBuf, String> {
        use std::io::Write as _;
        let bytes = self.fs.read(file).ok_or_else(|| format!("{} is missing", file.display()))?;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&bytes).map_err(|e| e.to_string())?;
        let zipped = encoder.finish().map_err(|e| e.to_string())?;
        let dir = Path::new("/import");
        let fs: &dyn Vfs = &self.fs;
        vfs::create_dir_all(fs, dir).map_err(|e| e.to_string())?;
        let path =
            dir.join(format!("{}.sqlite.gz", short(Uuid::from_u64_pair(self.seed, self.trace.len() as u64))));
        vfs::write_file(fs, &path, &zipped).map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// Whether a write's error is a refusal the disk explains: a fault's code, or, on a lying
    /// disk, READ_ONLY (a write it threw away may leave the database header claiming a newer
    /// file format, which SQLite then opens read-only; `integrity_check` does not look there).
    pub(super) fn refused_by_disk(&self, code: ErrorCode) -> bool {
        (is_fault_code(code) && (code != ErrorCode::QuotaExceeded || self.quota_reachable()))
            || (self.lying && code == ErrorCode::ReadOnly)
    }

    /// After a restore, import or compaction (without clients, which [`Op::WithClients`]
    /// runs through here too): if it was acknowledged, the pointer must record the new
    /// file as it is. Not where every commit checkpoints (the file grows right after).
    fn after_flip(&self, text: String) -> Result<String, String> {
        let flipped = ["restored ", "imported ", "compacted "].iter().any(|p| text.starts_with(p));
        // (A seed that ended holds a state the model does not know.)
        let known = self.finished.is_none() && !self.fs.is_dead();
        let clients = self.clients.is_some() || self.client_outcome.is_some();
        if flipped && known && !clients && !self.checkpoint_every_commit {
            self.check_pointer_after_flip()?;
        }
        Ok(text)
    }

    /// The trace's text for an operation (not a write of rows) that failed, once the failure
    /// is one the engine may give: BUSY, TIMEOUT, CANCELLED at any time, QUOTA_EXCEEDED
    /// where the workload can fill the quota;
    /// a fault's code (IO, DISK_FULL, POISONED, CORRUPT), NOT_FOUND (a file the disk lost),
    /// SQLITE or READ_ONLY only once the disk failed a call, lost power, rotted a bit or lied
    /// since the workspace opened ([`World::write_failure`] has the rest). Any other code,
    /// or a fault's code on a disk that did nothing wrong, is the engine failing by itself:
    /// a violation (an operation that always fails would otherwise pass every check; an
    /// export whose rename fails NOT_FOUND did, found by cargo-mutants; docs/mutants.md).
    pub(super) fn failure(&self, what: &str, e: &sila_sqlite::Error) -> Result<String, String> {
        let code = e.code();
        let text = self.write_failure(what, e)?;
        let by_fault = matches!(code, ErrorCode::NotFound | ErrorCode::Sqlite | ErrorCode::ReadOnly);
        let anytime = matches!(
            code,
            ErrorCode::QuotaExceeded | ErrorCode::Busy | ErrorCode::Timeout | ErrorCode::Cancelled
        );
        if anytime || self.refused_by_disk(code) || (by_fault && self.faulted()) {
            return Ok(text);
        }
        Err(format!("{what} failed with {code}, which no fault explains: {e}"))
    }

    /// The trace's text for a failure whose code the caller checks itself (a write of rows
    /// may fail with a constraint, say), once the failure is one the disk explains. A fault's
    /// code (IO, DISK_FULL, POISONED) or CORRUPT with no failed disk call since the workspace
    /// opened, no lost power, no rotted bit and no lying disk is the engine failing by
    /// itself: a violation.
    pub(super) fn write_failure(&self, what: &str, e: &sila_sqlite::Error) -> Result<String, String> {
        let code = e.code();
        if code == ErrorCode::QuotaExceeded && !self.quota_reachable() {
            return Err(format!("{what} was refused for quota, which this workload cannot reach: {e}"));
        }
        // A restore or import that took effect but could not keep its undo snapshot (over
        // quota, say) leaves the database refusing work until a reopen.
        let poisoned_by_design = code == ErrorCode::Poisoned && !self.model.in_doubt.is_empty();
        let fault_code =
            matches!(code, ErrorCode::Io | ErrorCode::DiskFull | ErrorCode::Poisoned | ErrorCode::Corrupt);
        if fault_code && !self.faulted() && !poisoned_by_design {
            return Err(format!(
                "{what} failed with {code} though the disk failed no call and no bit rotted: {e}"
            ));
        }
        Ok(format!("error {code}"))
    }

    /// Whether the workload can reach the database's size limit or the app's quota: only
    /// in the `quota` profile (1 MB, 6 KiB values). Elsewhere the database may hold 4 MB and
    /// the app 12 MB, and sixty operations of small values with their snapshots stay far
    /// below (a quota refusal there is a ledger that counts wrong).
    pub(super) fn quota_reachable(&self) -> bool {
        self.quota_mb == 1
    }

    /// Whether the disk failed a call, lost power, rotted a bit or lied since the workspace
    /// opened.
    fn faulted(&self) -> bool {
        self.failed_calls() != self.failed_calls_at_boot
            || self.fs.is_dead()
            || !self.fs.rotted().is_empty()
            || self.lying
    }

    /// Takes an acknowledged snapshot into the model with the rows it holds, noting how many
    /// bits had rotted on the disk by then.
    pub(super) fn acknowledge_snapshot(&mut self, id: Uuid, rows: BTreeSet<i64>) {
        self.model.snapshots.insert(id, rows);
        self.model.snapshot_order.push(id);
        self.audit_expected.push(id);
        self.rot_marks.insert(id, self.fs.rotted().len());
    }

    /// Whether a bit of snapshot `id`'s file (at `path`) rotted after the engine sealed it,
    /// so that its recorded checksum no longer matches. Normally no bit of a snapshot can rot
    /// before (the disk rots only files marked read-only, which the engine does after the
    /// checksum), but a lying disk may bring back the read-only mark of a file whose rename
    /// into `snapshots/` it lost; adopted again later, that file rots while it is summed.
    pub(super) fn rotted_after_seal(&self, id: Uuid, path: &Path) -> bool {
        let mark = self.rot_marks.get(&id).copied().unwrap_or(0);
        self.fs.rotted().get(mark..).is_some_and(|later| later.iter().any(|r| r == path))
    }

    /// After a write: acknowledged, the model moves; failed, the failure must be one the
    /// disk explains, and the keys it touched may or may not be there.
    pub(super) fn settle_write(
        &mut self,
        r: sila_sqlite::Result<()>,
        next: BTreeSet<i64>,
        full: bool,
        poisoned_before: bool,
    ) -> Result<String, String> {
        match r {
            Ok(()) => {
                if poisoned_before {
                    return Err("fail-stop broken: a write was acknowledged after an fsync failure".into());
                }
                self.model.commit(next, full);
                Ok("acked".into())
            }
            Err(e) => {
                let touched: Vec<i64> = next.symmetric_difference(&self.model.rows).copied().collect();
                self.model.maybe.extend(touched);
                self.write_failure("a write", &e)
            }
        }
    }

    /// After an acknowledged backup at `new`: the backup directory holds at most
    /// [`BACKUPS_KEPT`] complete backups, `new` among them, and every known backup that
    /// retention removed is older (sorts before) every one kept. The listing is what must
    /// exist from now on.
    pub(super) fn settle_backups(&mut self, new: &Path) -> Result<(), String> {
        let dir = new.parent().ok_or("a backup has no directory")?.to_path_buf();
        let listed: BTreeSet<PathBuf> =
            final_files(&self.fs, &dir).into_iter().filter(|p| !is_partial(p)).collect();
        if listed.len() > BACKUPS_KEPT || !listed.contains(new) {
            return Err(format!("after a backup with keep_last {BACKUPS_KEPT} the backups are {listed:?}"));
        }
        let removed: Vec<PathBuf> = self
            .model
            .exports
            .keys()
            .filter(|p| p.parent() == Some(dir.as_path()) && !listed.contains(*p))
            .cloned()
            .collect();
        if let (Some(newest_removed), Some(oldest_kept)) = (removed.iter().max(), listed.iter().min()) {
            if newest_removed > oldest_kept {
                return Err(format!(
                    "retention removed {} but kept the older {}",
                    newest_removed.display(),
                    oldest_kept.display()
                ));
            }
        }
        for p in &removed {
            self.model.exports.remove(p);
        }
        self.model.backups_must = listed;
        Ok(())
    }
}

/// Counter for the scratch files of [`export_rows`].
pub(super) static SCRATCH: AtomicU64 = AtomicU64::new(0);

/// Opens the export at `path` on the simulated disk with stock SQLite (through a scratch file
/// on the real disk, gunzipped first when `gzip`) and returns its keys, after
/// `integrity_check` passes.
pub(super) fn export_rows(fs: &MemFs, path: &Path, gzip: bool, seed: u64) -> Result<BTreeSet<i64>, String> {
    use std::io::Read as _;
    let bytes = fs.read(path).ok_or("missing")?;
    let plain = if gzip {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| format!("gunzip: {e}"))?;
        out
    } else {
        bytes
    };
    let n = SCRATCH.fetch_add(1, Ordering::SeqCst);
    let scratch =
        std::env::temp_dir().join(format!("sila-sim-export-{}-{seed}-{n}.sqlite", std::process::id()));
    std::fs::write(&scratch, &plain).map_err(|e| format!("scratch file: {e}"))?;
    let read = || -> rusqlite::Result<(String, sila_sqlite::Rows, u64)> {
        let conn =
            rusqlite::Connection::open_with_flags(&scratch, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        let mut stmt = conn.prepare("SELECT k, v FROM kv ORDER BY k")?;
        let rows = stmt
            .query_map([], |r| Ok(vec![Value::from(r.get_ref(0)?), Value::from(r.get_ref(1)?)]))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let schema = sila_sqlite::versions::read_schema_version(&conn).unwrap_or(u64::MAX);
        Ok((ok, sila_sqlite::Rows { columns: vec!["k".into(), "v".into()], rows }, schema))
    };
    let result = read();
    let _ = std::fs::remove_file(&scratch);
    match result {
        Ok((ok, rows, schema)) if ok == "ok" => model::keys_of(&rows)
            .map(|k| model::with_schema(k, schema))
            .map_err(|e| format!("in the export: {e}")),
        Ok((ok, _, _)) => Err(format!("integrity_check: {ok}")),
        Err(e) => Err(format!("{} bytes do not open as the exported database: {e}", plain.len())),
    }
}
