//! Crashes, reopens and the invariants checked after each (DESIGN.md): recovered data is an
//! acknowledged state, the ledger equals the disk, every pointer and listed snapshot is
//! reachable, exports and backups are whole.

use super::*;

impl World {
    /// Closes the workspace cleanly (checkpoints) and opens it again.
    pub(super) fn reopen_clean(&mut self) -> Result<(), String> {
        self.boot()?;
        let db =
            self.ws()?.open_app(APP).map_err(|e| e.to_string())?.open("main").map_err(|e| e.to_string())?;
        self.db = Some(db);
        self.clear_fault_state();
        Ok(())
    }

    /// After a reopen or recovery: nothing is poisoned, and the seed's faults are back on.
    pub(super) fn clear_fault_state(&mut self) {
        self.poisoned_by_fault = false;
        self.sync_failure_armed = false;
        self.sync_failures_base = self.fs.stats().sync_failures;
        self.fs.set_faults(self.faults);
    }

    /// Whether this seed's disk may fail calls or rot bits (then a reopen may fail cleanly).
    pub(super) fn call_errors(&self) -> bool {
        self.faults.call_errors_on()
    }

    /// A reopen failed with a clean typed error on a failing disk. The operator replaces the
    /// failing hardware ([`MemFs::repair`]) and reopens with call faults off; the data must
    /// then be what it was: nothing acknowledged lost (or, if a sync failed, one allowed
    /// state), every invariant holding — a failed open must not have destroyed anything.
    ///
    /// `base` is the failed-sync count when the reopen began (a reopen that succeeded before
    /// its read failed has already moved [`World::sync_failures_base`] past a sync that failed
    /// while it closed the engine).
    pub(super) fn recover_quietly(&mut self, why: &str, base: u64) -> Result<String, String> {
        let fired = self.fs.stats().sync_failures > base;
        self.shutdown();
        self.fs.repair();
        self.fs.set_faults(self.faults.quiet());
        // A power cut the workload armed may fire here too: a clean typed error then is the
        // crash's, and the caller's crash check takes over from what this one observed.
        let cut = |w: &World, e: &str| w.fs.is_dead() && is_typed(e);
        if let Err(e) = self.boot() {
            if cut(self, &e) {
                return Ok(format!("{why}; power cut during the reopen on a repaired disk: {e}"));
            }
            return Err(format!("{why}; reopen on a repaired disk failed: {e}"));
        }
        // After a fault the engine's close writes nothing: the reopen on the repaired disk
        // (no crash) is no durable point either (`shutdown` noted the fault). Nor after a
        // failed sync: the disk's cache still holds what was never synced (the WAL of commits
        // acknowledged before the fault, at NORMAL), and a later crash may take it back.
        let settle = if fired || self.fault_unsettled { Settle::NotDurable } else { Settle::Clean };
        let verdict = match self.check_invariants_or_quarantine(settle) {
            Ok(verdict) => verdict,
            Err(e) if cut(self, &e) => {
                return Ok(format!("{why}; power cut while checking the repaired disk: {e}"))
            }
            Err(e) => return Err(e),
        };
        self.clear_fault_state();
        self.fault_unsettled = false;
        Ok(format!("{why}; repaired and reopened: {verdict}"))
    }

    /// The power went out: boot on the durable image and check every invariant. With some
    /// probability the power fails again during recovery; then recovery runs once more and
    /// must land on the same state.
    pub fn crash_and_check(&mut self) -> Result<String, String> {
        self.crashes += 1;
        self.shutdown();
        // The crash leaves the durable image: whatever a fault left unsynced is gone now.
        self.fault_unsettled = false;
        let image = self.fs.durable_image();
        // Recovery runs on a disk whose crash-time faults stay on (a crash during recovery
        // tears and drops its writes too) but whose calls do not fail: the invariants are
        // checked on a healthy disk. A seed with a failing disk first tries to recover on
        // it, which must end in a clean typed error or a correct recovery.
        image.set_faults(self.faults.quiet());
        let mut notes = String::new();
        // Power loss during recovery, then recovery again.
        if self.rng.random_bool(0.3) {
            let again = image.durable_image();
            again.cut_power_after(self.rng.random_range(0..4u64));
            self.fs = again;
            let _ = self.boot();
            self.shutdown();
            let image2 = self.fs.durable_image();
            image2.set_faults(self.faults.quiet());
            self.fs = image2;
        } else {
            self.fs = image;
        }
        if self.call_errors() && self.rng.random_bool(0.5) {
            let mut failing = self.faults;
            failing.fail_sync_after = None;
            self.fs.set_faults(failing);
            match self.boot() {
                Ok(()) => notes.push_str("recovered on the failing disk; "),
                Err(e) if is_typed(&e) => notes.push_str(&format!("recovery on the failing disk: {e}; ")),
                Err(e) => {
                    return Err(format!("recovery on a failing disk failed without a typed error: {e}"))
                }
            }
            self.shutdown();
            self.fs.set_faults(self.faults.quiet());
        }
        // Latent sector errors survive the crash; the checks run on repaired hardware.
        self.fs.repair();
        if self.lying {
            return self.check_after_lying_crash(notes);
        }
        self.boot().map_err(|e| format!("recovery failed: {e}"))?;
        self.check_audit()?;
        let verdict = self.check_invariants_or_quarantine(Settle::AfterCrash)?;
        if self.finished.is_some() {
            return Ok(format!("{notes}{verdict}"));
        }
        // Idempotent: recover the recovered disk again; the state must not change.
        let rows = self.read_rows()?;
        self.shutdown();
        self.fs = self.fs.durable_image();
        self.boot().map_err(|e| format!("second recovery failed: {e}"))?;
        let again = self.read_rows()?;
        if again != rows {
            return Err("recovery is not idempotent: a second recovery changed the data".into());
        }
        self.clear_fault_state();
        Ok(format!("{notes}recovered {} rows{}", rows.len(), verdict))
    }

    /// After recovery: every acknowledged snapshot is named by a successful record of the
    /// audit trail (the engine syncs an operation's record before it acknowledges it). The
    /// trail is read on the healthy disk the checks run on; a damaged line would hide a
    /// record, and nothing rots the trail's files, so none may be damaged.
    pub(super) fn check_audit(&self) -> Result<(), String> {
        let Some(ws) = self.ws.as_ref() else { return Ok(()) };
        let read = ws.audit(&AuditQuery::default()).map_err(|e| format!("reading the audit trail: {e}"))?;
        if read.damaged > 0 {
            return Err(format!("the audit trail has {} damaged line(s) after recovery", read.damaged));
        }
        let mut named = BTreeSet::new();
        for r in read.records.iter().filter(|r| r.error.is_none()) {
            if let Some(detail) = r.detail.as_object() {
                named.extend(detail.values().filter_map(|v| v.as_str()).map(str::to_string));
            }
        }
        match self.audit_expected.iter().find(|id| !named.contains(&id.to_string())) {
            Some(id) => Err(format!(
                "acknowledged snapshot {} has no record in the audit trail after the crash ({} records)",
                short(*id),
                read.records.len()
            )),
            None => Ok(()),
        }
    }

    /// After a crash on a lying disk (profile `lying`): nothing acknowledged can be asked for,
    /// since the disk threw away what it said was durable. What must hold: recovery either
    /// refuses with a typed error or boots; the database either refuses with a typed error or
    /// passes `integrity_check` and reads back rows whose values are the ones written with
    /// their keys; GC leaves exactly what is reachable. The
    /// workload then goes on from whatever state recovery found. Anything the lies made
    /// unreadable ends the seed with that verdict.
    pub(super) fn check_after_lying_crash(&mut self, mut notes: String) -> Result<String, String> {
        let end = |w: &mut World, why: String| -> Result<String, String> {
            if !is_typed(&why) && !why.contains("integrity_check") && !why.contains("holds") {
                return Err(format!("on a lying disk, an error without a type: {why}"));
            }
            let verdict = format!("lying disk: {why}");
            w.finished = Some(verdict.clone());
            Ok(verdict)
        };
        if let Err(e) = self.boot() {
            return end(self, format!("recovery refused: {e}"));
        }
        let ws = self.ws()?.clone();
        let report = ws.recovery_report().clone();
        if !report.damaged.is_empty() {
            return end(self, format!("error[CORRUPT]: recovery reported damage in {:?}", report.damaged));
        }
        let db = match ws.open_app(APP).and_then(|a| a.open("main")) {
            Ok(db) => db,
            Err(e) => return end(self, format!("opening the database: {e}")),
        };
        match db.query_value("PRAGMA integrity_check", &[]) {
            Ok(Some(Value::Text(ok))) if ok == "ok" => {}
            Ok(other) => return end(self, format!("integrity_check after recovery: {other:?}")),
            Err(e) => return end(self, format!("integrity_check: {e}")),
        }
        self.db = Some(db);
        let rows = match self.read_rows() {
            Ok(rows) => rows,
            Err(e) => return end(self, e),
        };
        self.model.rows = rows;
        self.model.barrier();
        self.model.in_flight.clear();
        // Snapshots and exports may be gone or changed: the model keeps the snapshots still
        // listed (a restore verifies each one's checksum) and forgets the exports.
        let key = ws.db_key(APP, "main").map_err(|e| e.to_string())?;
        let listed: BTreeSet<Uuid> = ws
            .with_store(|s| s.manifest(&key).map(|m| m.snapshots.iter().map(|x| x.id).collect()))
            .map_err(|e| e.to_string())?;
        for id in &listed {
            let snap = Path::new(ROOT).join(layout::snapshot_file(key.app, &key.db, *id));
            if self.rotted_after_seal(*id, &snap) {
                self.rot_maybe_undone.insert(*id);
            }
        }
        self.model.snapshot_order.retain(|id| listed.contains(id));
        self.model.snapshots.retain(|id, _| listed.contains(id));
        self.model.snapshots_maybe_gone.clear();
        self.model.exports.clear();
        self.model.backups_must.clear();
        // (No ledger check: the engine sizes a live file from what SQLite reports, and after a
        // lie SQLite's header may count pages the disk threw away; the ledger then counts more
        // than the disk holds, never less.)
        ws.gc().map_err(|e| format!("GC after recovery: {e}"))?;
        self.check_reachable(&ws, &key)?;
        self.check_side_app(&ws, false)?;
        self.check_nothing_retired(&ws)?;
        self.clear_fault_state();
        notes.push_str("recovered on a lying disk");
        Ok(notes)
    }

    pub(super) fn read_rows(&mut self) -> Result<BTreeSet<i64>, String> {
        if self.db.is_none() {
            let db = self
                .ws()?
                .open_app(APP)
                .map_err(|e| e.to_string())?
                .open("main")
                .map_err(|e| e.to_string())?;
            self.db = Some(db);
        }
        let rows = self
            .db()?
            .query("SELECT k, v FROM kv ORDER BY k", &[])
            .map_err(|e| format!("read after recovery: {e}"))?;
        let keys = model::keys_of(&rows).map_err(|e| format!("after recovery: {e}"))?;
        Ok(model::with_schema(keys, db_schema(self.db()?)?))
    }

    /// Checks every invariant on a freshly booted workspace. `strict`: nothing crashed, so
    /// the data must be the last acknowledged state up to keys of failed operations;
    /// otherwise any state the history allows after a loss of unsynced data. A database
    /// recovery reports damaged is accepted only where a checksummed record rotted, and then
    /// it must refuse work with a typed error (quarantine); the seed ends there.
    pub(super) fn check_invariants_or_quarantine(&mut self, settle: Settle) -> Result<String, String> {
        let ws = self.ws()?.clone();
        let report = ws.recovery_report().clone();
        let main_dir = self.main_app.map(layout::app_dir);
        let (main, side): (Vec<_>, Vec<_>) = report
            .damaged
            .iter()
            .cloned()
            .partition(|(p, _)| main_dir.as_ref().is_none_or(|d| p.starts_with(d)));
        if !side.is_empty() {
            // The second app's records rotted: it is out of the workload from now on.
            self.explained_by_rot(&side)?;
            self.side.quarantined.extend(side.into_iter().map(|(p, _)| p));
        }
        if !main.is_empty() {
            return self.quarantine(&ws, &main);
        }
        // Every app recovery loaded is one the workspace lists.
        if report.apps != ws.apps().len() {
            return Err(format!(
                "recovery reports {} apps, the workspace lists {}",
                report.apps,
                ws.apps().len()
            ));
        }
        // 1. The pointer names a file that passes integrity_check.
        let db = ws.open_app(APP).map_err(|e| e.to_string())?.open("main").map_err(|e| e.to_string())?;
        let ok =
            db.query_value("PRAGMA integrity_check", &[]).map_err(|e| format!("integrity_check: {e}"))?;
        if ok != Some(Value::Text("ok".into())) {
            return Err(format!("integrity_check after recovery: {ok:?}"));
        }
        self.db = Some(db);
        // 2, 3. Acknowledged data, all-or-nothing.
        let rows = self.read_rows()?;
        self.settle(rows, settle)?;
        // 4. Snapshots in the manifest exist with their checksums, unless their bits rotted:
        // then a restore must refuse them (the workload's restores check that).
        let key = ws.db_key(APP, "main").map_err(|e| e.to_string())?;
        let entries =
            ws.with_store(|s| s.manifest(&key).map(|m| m.snapshots.clone())).map_err(|e| e.to_string())?;
        let rotted = self.fs.rotted();
        let mut notes = String::new();
        let fs: &dyn Vfs = &self.fs;
        for s in &entries {
            let path = Path::new(ROOT).join(layout::snapshot_file(key.app, &key.db, s.id));
            match vfs::checksum_file(fs, &path) {
                Ok((crc, size)) if crc == s.crc32c && size == s.size => {}
                Ok(_) if rotted.contains(&path) => {
                    notes.push_str(&format!(", snapshot {} rotted", short(s.id)))
                }
                other => return Err(format!("snapshot {} fails its checksum: {other:?}", s.id)),
            }
        }
        // Every acknowledged snapshot survives (a snapshot, a restore's undo, a migration's
        // safety net), unless a failed retention may have dropped it. Snapshots on disk the
        // model never saw acknowledged have unknown content; the workload never restores them.
        self.check_dropped_stay_dropped(&ws)?;
        let on_disk: BTreeSet<Uuid> = entries.iter().map(|s| s.id).collect();
        if let Some(lost) = self
            .model
            .snapshot_order
            .iter()
            .find(|id| !on_disk.contains(id) && !self.model.snapshots_maybe_gone.contains(id))
        {
            return Err(format!("acknowledged snapshot {} is gone after recovery", short(*lost)));
        }
        self.model.snapshots_maybe_gone.clear();
        self.model.snapshot_order.retain(|id| on_disk.contains(id));
        self.model.snapshots.retain(|id, _| on_disk.contains(id));
        // 6. Ledger equals disk; 5. one GC pass leaves exactly the reachable set.
        self.check_ledger(&ws, &key)?;
        ws.gc().map_err(|e| format!("GC after recovery: {e}"))?;
        self.check_reachable(&ws, &key)?;
        self.check_exports(&key)?;
        // 7. The second app is as its acknowledged changes left it, and GC took what they
        // dropped.
        self.check_side_app(&ws, true)?;
        self.check_nothing_retired(&ws)?;
        Ok(notes)
    }

    /// Recovery reported damage. Legitimate only where bit rot hit a record of the damaged
    /// directory (the engine refuses to guess, as DESIGN.md asks): then the database must
    /// refuse work with a typed error, and the seed ends as quarantined.
    pub(super) fn quarantine(
        &mut self,
        ws: &Workspace,
        damaged: &[(PathBuf, sila_sqlite::Error)],
    ) -> Result<String, String> {
        self.explained_by_rot(damaged)?;
        match ws
            .open_app(APP)
            .and_then(|app| app.open("main"))
            .and_then(|db| db.query("SELECT k FROM kv", &[]))
        {
            Ok(_) => Err(format!("recovery reported damage {damaged:?}, yet the database serves reads")),
            Err(e) => {
                let verdict = format!("quarantined after bit rot in a record: {}", e.code());
                self.finished = Some(verdict.clone());
                Ok(verdict)
            }
        }
    }

    /// Every damaged directory holds a record whose bits rotted, and the error is `Corrupt`.
    fn explained_by_rot(&self, damaged: &[(PathBuf, sila_sqlite::Error)]) -> Result<(), String> {
        let rotted = self.fs.rotted();
        for (dir, e) in damaged {
            let abs = Path::new(ROOT).join(dir);
            let explained = rotted.iter().any(|r| {
                r.starts_with(&abs) && rot_filter(r, false) && !r.to_string_lossy().contains("/snapshots/")
            });
            if !explained || e.code() != ErrorCode::Corrupt {
                return Err(format!(
                    "recovery reported damage no fault explains: {damaged:?} (rotted: {rotted:?})"
                ));
            }
        }
        Ok(())
    }

    /// Checks that `rows` is a state the acknowledged history allows after a loss of
    /// unsynced data (FULL: the last acknowledged state or an unanswered operation's; NORMAL:
    /// any state since the last durable point), then makes it the model's durable state.
    pub(super) fn adopt(&mut self, rows: BTreeSet<i64>, when: &str) -> Result<(), String> {
        if !self.model.allows(&rows) {
            let last = self.model.rows.len();
            let extra: Vec<i64> = rows.difference(&self.model.rows).copied().collect();
            let missing: Vec<i64> = self.model.rows.difference(&rows).copied().collect();
            return Err(format!(
                "{when}: {} rows, which is no acknowledged state (model has {last}; {} states allowed; durability {}; \
                 extra {extra:?}, missing {missing:?}, maybe {:?})",
                rows.len(),
                self.model.history.len(),
                if self.full { "FULL" } else { "NORMAL" },
                self.model.maybe
            ));
        }
        self.model.rows = rows;
        self.model.barrier();
        self.model.in_flight.clear();
        Ok(())
    }

    pub(super) fn data_files(&self, dir: &Path) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (sub, prefix) in
            [(dir.to_path_buf(), String::new()), (dir.join(layout::SNAPSHOTS_DIR), "snapshots/".to_string())]
        {
            for e in self.fs.list_dir(&sub).unwrap_or_default() {
                let rel = format!("{prefix}{}", e.name);
                if e.is_dir
                    || matches!(layout::classify(&rel), FileKind::Record | FileKind::Temp | FileKind::Unknown)
                {
                    continue;
                }
                let size = self.fs.file_len(&sub.join(&e.name)).ok().flatten().unwrap_or(0);
                out.push((rel, size));
            }
        }
        out
    }

    /// Invariant 10 after recovery and GC: every acknowledged export, and every backup that
    /// must exist, is there with its rows; every file under a final name in the export and
    /// backup areas is a whole database (with its rows, if known); no temporary is left.
    pub(super) fn check_exports(&self, key: &sila_sqlite::store::DbKey) -> Result<(), String> {
        let backups = Path::new(ROOT).join(layout::backups_dir(key.app, &key.db));
        for (path, (rows, gzip)) in &self.model.exports {
            let must = path.parent() != Some(backups.as_path()) || self.model.backups_must.contains(path);
            if !must && self.fs.read(path).is_none() {
                continue;
            }
            let found = export_rows(&self.fs, path, *gzip, self.seed)
                .map_err(|e| format!("acknowledged export {} after recovery: {e}", path.display()))?;
            if &found != rows {
                return Err(format!(
                    "export {} changed: {} rows, {} when made",
                    path.display(),
                    found.len(),
                    rows.len()
                ));
            }
        }
        let exports = Path::new(ROOT).join(layout::exports_dir(key.app));
        for dir in [exports, backups] {
            for path in final_files(&self.fs, &dir) {
                if is_partial(&path) {
                    return Err(format!("after GC a temporary remains: {}", path.display()));
                }
                if !self.model.exports.contains_key(&path) {
                    let gzip = path.extension().is_some_and(|e| e == "gz");
                    export_rows(&self.fs, &path, gzip, self.seed).map_err(|e| {
                        format!("{} is under a final name but not whole: {e}", path.display())
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Invariants that hold between any two operations, not only after a boot: no operation
    /// of the store left open, no lease, no busy mark, no reserved bytes. A failure path that
    /// leaks any of them is caught at the step that leaked it; and the ledger, as the API
    /// reports it (sized afresh), equals the files on disk.
    pub(super) fn check_between_operations(&self) -> Result<(), String> {
        let Some(ws) = self.ws.as_ref() else { return Ok(()) };
        let held = ws.with_store(|s| s.held());
        if held.ops != 0 || held.leases != 0 || !held.busy.is_empty() {
            return Err(format!(
                "between operations the store still holds {} operations, {} leases, busy {:?}",
                held.ops, held.leases, held.busy
            ));
        }
        self.check_dropped_stay_dropped(ws)?;
        let ledger = ws.ledger(APP).map_err(|e| e.to_string())?;
        if ledger.in_flight_bytes != 0 {
            return Err(format!("between operations {} bytes are still reserved", ledger.in_flight_bytes));
        }
        // With no lease and no GC running, all garbage is GC's to take: what a quota
        // refusal says GC would free is all of it.
        if ledger.collectable_bytes != ledger.garbage_bytes {
            return Err(format!(
                "between operations, with no lease, {} of {} garbage bytes are collectable",
                ledger.collectable_bytes, ledger.garbage_bytes
            ));
        }
        self.check_files_between_operations(ws, &ledger)
    }

    /// Between operations, on the disk as the store knows it: the pointer names a database
    /// file that exists; every file of the database's directory is in the ledger with its
    /// size on disk (the live file and its side files too, which SQLite changes without
    /// telling the store: reading the ledger sizes them), and every file in the ledger is on
    /// disk; no temporary record is left.
    /// The files are compared only while the disk failed no call since the workspace opened
    /// (a cleanup that failed is recovery's to finish). Skipped while the store refuses the
    /// database (poisoned, quarantined).
    pub(super) fn check_files_between_operations(
        &self,
        ws: &Workspace,
        ledger: &sila_sqlite::store::Ledger,
    ) -> Result<(), String> {
        let Ok(key) = ws.db_key(APP, "main") else { return Ok(()) };
        let Ok((live, files)) = ws.with_store(|s| {
            s.pointer(&key).map(|p| p.file).and_then(|live| Ok((live, s.files(&key)?.clone())))
        }) else {
            return Ok(());
        };
        let dir = Path::new(ROOT).join(layout::db_dir(key.app, &key.db));
        let disk: BTreeMap<String, u64> = self.data_files(&dir).into_iter().collect();
        let live_name = layout::db_file_name(live);
        if !disk.contains_key(&live_name) {
            return Err(format!("between operations the pointer names {live_name}, which is not on disk"));
        }
        // After a failed disk call the workspace stops changing the disk (fail-stop) and a
        // failed operation's cleanup waits for the recovery scan of the next open, which
        // counts what is there: until then the ledger may name what is not on disk and miss
        // what is.
        if self.failed_calls() != self.failed_calls_at_boot {
            return Ok(());
        }
        for (name, size) in &disk {
            match files.get(name) {
                Some(counted) if counted == size => {}
                counted => {
                    return Err(format!(
                        "between operations {name} has {size} bytes on disk and {counted:?} in the ledger"
                    ))
                }
            }
        }
        // And the app's totals are the sum of its files (its one database): what quota
        // refusals are decided on.
        let on_disk: u64 = disk.values().sum();
        if ledger.used_bytes() != on_disk {
            return Err(format!(
                "between operations the ledger counts {} bytes in use ({ledger:?}), the files on disk hold {on_disk}",
                ledger.used_bytes()
            ));
        }
        // Records (pointer, manifest) are rewritten whole and counted apart from data files.
        let data =
            |n: &str| !matches!(layout::classify(n), FileKind::Record | FileKind::Temp | FileKind::Unknown);
        if let Some(name) = files.keys().find(|n| data(n) && !disk.contains_key(*n)) {
            return Err(format!("between operations the ledger counts {name}, which is not on disk"));
        }
        for sub in [dir.clone(), dir.join(layout::SNAPSHOTS_DIR)] {
            for e in self.fs.list_dir(&sub).unwrap_or_default() {
                // By the name, not the engine's `classify`: a check must not share the code
                // it checks (cargo-mutants broke `classify` and this check went blind).
                if e.name.ends_with(layout::TMP_SUFFIX) {
                    return Err(format!("between operations a temporary {} is left", e.name));
                }
            }
        }
        Ok(())
    }

    /// Right after an acknowledged flip (restore, import, compaction): the pointer records the
    /// new file's schema version and size as they are (the flip sealed the file first).
    pub(super) fn check_pointer_after_flip(&self) -> Result<(), String> {
        let ws = self.ws()?;
        let key = ws.db_key(APP, "main").map_err(|e| e.to_string())?;
        // A database poisoned since (a read the disk failed) is refused by the store.
        let Ok(pointer) = ws.with_store(|s| s.pointer(&key).cloned()) else { return Ok(()) };
        // The schema version the model holds (its schema key), when no failed operation
        // left it uncertain.
        let certain = !self.model.maybe.iter().any(|k| *k < 0) && self.model.in_doubt.is_empty();
        let schema_keys: Vec<i64> = self.model.rows.iter().copied().filter(|k| *k < 0).collect();
        if let ([k], true) = (schema_keys.as_slice(), certain) {
            let schema = u64::try_from(k - model::SCHEMA_KEY_BASE).unwrap_or(u64::MAX);
            if pointer.schema != schema {
                let path = Path::new(ROOT).join(layout::db_file(key.app, &key.db, pointer.file));
                let in_file = ops::export_rows(&self.fs, &path, false, self.seed).map(|rows| {
                    rows.iter()
                        .copied()
                        .filter(|k| *k < 0)
                        .map(|k| k - model::SCHEMA_KEY_BASE)
                        .collect::<Vec<_>>()
                });
                return Err(format!(
                    "after a flip the pointer records schema {}, the model holds {schema} (the file: {in_file:?})",
                    pointer.schema
                ));
            }
        }
        let path = Path::new(ROOT).join(layout::db_file(key.app, &key.db, pointer.file));
        let len = self.fs.file_len(&path).ok().flatten();
        if len != Some(pointer.size) {
            return Err(format!(
                "after a flip the pointer records {} bytes, the file holds {len:?}",
                pointer.size
            ));
        }
        Ok(())
    }

    /// The disk's failed calls so far (EIO, failed syncs, full disk).
    pub(super) fn failed_calls(&self) -> u64 {
        let stats = self.fs.stats();
        stats.io_errors + stats.sync_failures + stats.no_space
    }

    pub(super) fn check_ledger(&self, ws: &Workspace, key: &sila_sqlite::store::DbKey) -> Result<(), String> {
        let dir = Path::new(ROOT).join(layout::db_dir(key.app, &key.db));
        let disk: u64 = self.data_files(&dir).iter().map(|(_, s)| *s).sum();
        let ledger = ws.ledger(APP).map_err(|e| e.to_string())?;
        let counted = ledger.live_bytes + ledger.snapshot_bytes + ledger.garbage_bytes;
        // The live WAL and SHM move under SQLite between the recovery scan and now, so only a
        // mismatch on another file is a violation.
        if counted != disk && ledger.in_flight_bytes == 0 {
            let files = ws.with_store(|s| s.files(key).cloned()).map_err(|e| e.to_string())?;
            let disk_files = self.data_files(&dir);
            let mismatched: Vec<String> = disk_files
                .iter()
                .filter(|(n, s)| files.get(n) != Some(s))
                .map(|(n, s)| format!("{n}: disk {s}, ledger {:?}", files.get(n)))
                .collect();
            if !mismatched.iter().all(|m| m.contains("-wal") || m.contains("-shm")) {
                return Err(format!("ledger {counted} bytes, disk {disk} bytes: {mismatched:?}"));
            }
        }
        Ok(())
    }

    pub(super) fn check_reachable(
        &self,
        ws: &Workspace,
        key: &sila_sqlite::store::DbKey,
    ) -> Result<(), String> {
        let dir = Path::new(ROOT).join(layout::db_dir(key.app, &key.db));
        let pointer = ws.with_store(|s| s.pointer(key).map(|p| p.file)).map_err(|e| e.to_string())?;
        let snaps: BTreeSet<Uuid> = ws
            .with_store(|s| s.manifest(key).map(|m| m.snapshots.iter().map(|x| x.id).collect()))
            .map_err(|e| e.to_string())?;
        for (rel, _) in self.data_files(&dir) {
            let reachable = match layout::classify(&rel) {
                FileKind::Database(id) | FileKind::Side(id) => id == pointer,
                FileKind::Snapshot(id) => snaps.contains(&id),
                _ => true,
            };
            if !reachable {
                return Err(format!("after GC, unreachable {rel} remains"));
            }
        }
        Ok(())
    }
}

/// The files directly in `dir` on the simulated disk (none if it does not exist), sorted,
/// read through the harness's view of the disk (no IO call of the engine's kind).
pub(super) fn final_files(fs: &MemFs, dir: &Path) -> Vec<PathBuf> {
    fs.files().into_keys().filter(|p| p.parent() == Some(dir)).collect()
}

pub(super) fn is_partial(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| layout::partial_of(n).is_some())
}

pub(super) fn db_schema(db: &Database) -> Result<u64, String> {
    db.schema_version().map_err(|e| format!("schema version after recovery: {e}"))
}

impl World {
    /// Settles the model on the rows a reopen (or a recovery) shows, as `settle` says.
    pub(super) fn settle(&mut self, rows: BTreeSet<i64>, settle: Settle) -> Result<(), String> {
        match settle {
            Settle::Clean => {
                let current = self.model.rows.len();
                if !self.model.allows_without_crash(&rows) {
                    let extra: Vec<i64> = rows.difference(&self.model.rows).copied().collect();
                    let missing: Vec<i64> = self.model.rows.difference(&rows).copied().collect();
                    return Err(format!(
                        "reopen: {} rows, but {current} were acknowledged and nothing crashed \
                         (extra {extra:?}, missing {missing:?}; keys below 0 are schema versions)",
                        rows.len()
                    ));
                }
                self.model.rows = rows;
                self.model.barrier();
                self.model.in_flight.clear();
            }
            Settle::NotDurable => {
                if !self.model.allows(&rows) {
                    return Err(format!(
                        "reopen after a fault: {} rows, which is no acknowledged state",
                        rows.len()
                    ));
                }
                // No durable point, with FULL too: the reopen shows what the disk's cache
                // holds, which a crash may still take back (a flip whose directory sync
                // failed), and nothing here was acknowledged. Every state since the last
                // durable point stays possible.
                self.model.rows = rows.clone();
                self.model.history.push(rows);
                self.model.in_flight.clear();
            }
            Settle::AfterCrash => self.adopt(rows, "recovery")?,
        }
        Ok(())
    }
}

/// How a reopen settles the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settle {
    /// A clean reopen: nothing acknowledged may be missing, and what it shows is durable.
    Clean,
    /// A reopen after the engine's fault, without a crash: what it shows must be an
    /// acknowledged state, but may still be unsynced (the close wrote nothing).
    NotDurable,
    /// After a crash (or a failed sync that dropped pending data): a state since the last
    /// durable point, now durable.
    AfterCrash,
}
