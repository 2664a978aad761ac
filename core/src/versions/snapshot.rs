//! Snapshots: the pinned copy of the live file (or the backup API when a reader keeps the
//! WAL from folding), listing and dropping snapshots, retention.

use super::*;

impl Database {
    /// The snapshots of this database, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        let key = self.key();
        self.ws.with_store(|s| s.manifest(&key).map(|m| m.snapshots.clone()))
    }

    /// Takes a consistent point-in-time snapshot while the database stays live. The snapshot
    /// is immutable (`snapshots/<uuid>.sqlite`, read-only on disk) and listed in the manifest
    /// once durable. Refused with `QuotaExceeded` before any IO when it would not fit.
    pub fn snapshot(&self, label: &str) -> Result<SnapshotEntry> {
        self.operation(
            "snapshot",
            || self.snapshot_inner(label),
            |s| Some(s.size),
            |s| Some(snapshot_detail(s)),
        )
    }

    pub(super) fn snapshot_inner(&self, label: &str) -> Result<SnapshotEntry> {
        validate_label(label)?;
        let key = self.key();
        let (db_bytes, wal_bytes) = self.refresh_sizes()?;
        let id = self.ws.new_uuid();
        let op = self.ws.with_store(|s| s.begin_snapshot(&key, id, db_bytes + wal_bytes))?;
        let abs = self.ws.driver().abs(&layout::snapshot_file(key.app, &key.db, id));
        let copied = self.copy_live(&abs).and_then(|(crc, size)| {
            let conn = open_plain(self.vfs_name(), &abs, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let schema = read_schema_version(&conn)?;
            drop(conn);
            self.fs().set_read_only(&abs, true)?;
            Ok((crc, size, schema))
        });
        let (crc, size, schema) = match copied {
            Ok(x) => x,
            Err(e) => {
                let _ = self.fs().set_read_only(&abs, false);
                if !crate::sabotage::active(crate::sabotage::Sabotage::SnapshotFailureLeaksReservation) {
                    self.ws.abort_op(op);
                }
                return Err(e.context("snapshot"));
            }
        };
        let now_ms = self.ws.now_ms();
        let info = NewSnapshot { size, crc32c: crc, schema, label: label.to_string(), now_ms };
        self.list_snapshot(op, id, info)
    }

    /// Lists the written, sealed snapshot `id` of operation `op` in the manifest (the store's
    /// plan: sync it, sync its directory, commit the manifest) and returns its entry. Nothing
    /// is listed, and the operation is abandoned, once the workspace has a fault.
    pub(super) fn list_snapshot(
        &self,
        op: crate::store::OpId,
        id: Uuid,
        info: NewSnapshot,
    ) -> Result<SnapshotEntry> {
        let plan = match self
            .refuse_after_fault()
            .and_then(|()| self.ws.with_store(|s| s.plan_add_snapshot(op, info)))
        {
            Ok(p) => p,
            Err(e) => {
                self.ws.abort_op(op);
                return Err(e);
            }
        };
        self.ws.run_plan(&plan)?;
        let key = self.key();
        self.ws.with_store(|s| {
            s.manifest(&key)?
                .snapshots
                .iter()
                .find(|x| x.id == id)
                .cloned()
                .ok_or_else(|| Error::internal(format!("snapshot {id} vanished from the manifest")))
        })
    }

    /// Copies the live file to the new file `dest` as a self-contained rollback-journal
    /// database and returns the CRC-32C and size of the copy.
    ///
    /// With the writer held (queued writes finish first), a PASSIVE checkpoint folds the WAL
    /// into the main file; when it folded everything, a pooled reader begins a read
    /// transaction before the writer is released. With the WAL fully backfilled SQLite gives
    /// that reader read-mark 0: it reads the main file only, and while it holds that mark no
    /// checkpoint can write the main file (backfilling needs read-mark 0 exclusively). Writers
    /// resume at once and append to the WAL; the main file stays frozen until the read ends,
    /// so a byte copy of it is the committed state at the moment of the checkpoint. Writers
    /// stall only for that checkpoint (the WAL since the last one, normally at most
    /// `wal_checkpoint_bytes`).
    ///
    /// When the checkpoint could not fold everything (a reader is still on an older state in
    /// the WAL) or the reader is not on the live file, the online backup API copies from a
    /// reader instead (no stall, slower). `snapshots_by_copy` and `snapshots_by_backup` in the
    /// metrics count which path ran.
    pub(super) fn copy_live(&self, dest: &Path) -> Result<(u32, u64)> {
        let stop = self.ws.broker().stop_after(self.ws.broker().options().transaction_timeout);
        let fs = self.fs();
        // A read-only database has no writer to checkpoint with: straight to the backup API.
        let pinned = if self.read_only { Ok(None) } else { self.pinned_copy(&stop, dest) }?;
        if let Some(copied) = pinned {
            self.db.metrics.record_snapshot_copy(true);
            return Ok(copied);
        }
        self.db.with_reader_conn(&stop, |conn| backup_to(self.vfs_name(), conn, dest))?;
        self.db.metrics.record_snapshot_copy(false);
        Ok(vfs::checksum_file(fs, dest)?)
    }

    /// The fast path of [`Database::copy_live`]: `None` when the WAL could not be folded
    /// whole (or the reader was not on the live file), and nothing was written.
    pub(super) fn pinned_copy(&self, stop: &StopCheck, dest: &Path) -> Result<Option<(u32, u64)>> {
        let fs = self.fs();
        let pinned = self.with_pinned_live(stop, |live| {
            clone_or_copy(fs, live, dest, true).map_err(|e| e.context("copying the pinned live file"))
        })?;
        let Some(Pinned { value: (copied, cloned), .. }) = pinned else { return Ok(None) };
        if cloned {
            self.db.metrics.record_reflink();
        }
        Ok(Some(copied))
    }

    /// Freezes the live file and runs `f` on its path: under the writer, a PASSIVE checkpoint
    /// folds the whole WAL into the file, then a pooled reader begins a read at read-mark 0,
    /// which no checkpoint can pass, so nothing writes to the file until the read ends
    /// (writers go on appending to the WAL; [`DbShared::pin`](crate::broker::DbShared) keeps
    /// the broker's own checkpoints passive meanwhile). `None`, without running `f`, when the
    /// WAL could not be folded whole (a reader held it back) or the reader was not on the
    /// live file.
    pub(super) fn with_pinned_live<T>(
        &self,
        stop: &StopCheck,
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<Option<Pinned<T>>> {
        self.db.with_versioned_reader(stop, |reader, version| {
            let _pin = self.db.pin();
            let live = self.exclusive(|writer| {
                let row = self.db.checkpoint_on(writer, &["PASSIVE"])?.pop().unwrap_or_default();
                // (busy, frames in the WAL, frames checkpointed); -1s when not in WAL mode.
                let complete = crate::broker::checkpoint_complete(&row);
                if !complete || version != self.db.current_version() {
                    return Ok(None);
                }
                if let Err(e) =
                    crate::broker::run_internal(reader, "BEGIN; SELECT count(*) FROM sqlite_schema")
                {
                    // Never hand a reader back to the pool inside a transaction.
                    let _ = crate::broker::run_internal(reader, "ROLLBACK");
                    return Err(e);
                }
                Ok(Some((self.db.path(), self.db.commits())))
            })?;
            let Some((live, commits)) = live else { return Ok(None) };
            let done = f(&live);
            // Ends the read; the reader goes back to the pool with no transaction open.
            let ended = crate::broker::run_internal(reader, "ROLLBACK");
            let value = done?;
            ended.map_err(|e| e.context("ending the read that pinned the live file"))?;
            Ok(Some(Pinned { value, generation: version, commits }))
        })
    }

    /// The checksum and size the undo snapshot of a restore will have if nothing is written
    /// to the database before the flip: the live file's, pinned, as [`to_rollback_header`]
    /// rewrites it. `None` when the file could not be pinned.
    pub(super) fn pinned_undo_sum(&self) -> Result<Option<Pinned<(u32, u64)>>> {
        let stop = self.ws.broker().stop_after(self.ws.broker().options().transaction_timeout);
        let fs = self.fs();
        self.with_pinned_live(&stop, |live| Ok(vfs::checksum_file_with(fs, live, to_rollback_header)?))
    }

    /// Removes a snapshot from the manifest; GC deletes its file later.
    pub fn drop_snapshot(&self, id: Uuid) -> Result<()> {
        self.operation(
            "drop_snapshot",
            || self.drop_snapshot_inner(id),
            |_| None,
            |()| Some(serde_json::json!({"snapshot": id.to_string()})),
        )
    }

    pub(super) fn drop_snapshot_inner(&self, id: Uuid) -> Result<()> {
        let key = self.key();
        let plan = self.ws.with_store(|s| s.plan_drop_snapshots(&key, &[id]))?;
        self.ws.run_plan(&plan)
    }

    /// Applies a retention policy; returns the snapshots it dropped (GC deletes their files).
    pub fn apply_retention(&self, policy: Retention) -> Result<Vec<Uuid>> {
        self.operation(
            "retention",
            || self.apply_retention_inner(policy),
            |_| None,
            |dropped| {
                let ids: Vec<String> = dropped.iter().map(Uuid::to_string).collect();
                (!ids.is_empty()).then(|| serde_json::json!({"dropped": ids}))
            },
        )
    }

    pub(super) fn apply_retention_inner(&self, policy: Retention) -> Result<Vec<Uuid>> {
        let key = self.key();
        let now = self.ws.now_ms();
        let victims = self.ws.with_store(|s| s.retention_victims(&key, policy, now))?;
        if victims.is_empty() {
            return Ok(victims);
        }
        let plan = self.ws.with_store(|s| s.plan_drop_snapshots(&key, &victims))?;
        self.ws.run_plan(&plan)?;
        Ok(victims)
    }
}

/// A snapshot as the audit trail records it.
pub(super) fn snapshot_detail(s: &SnapshotEntry) -> serde_json::Value {
    serde_json::json!({
        "snapshot": s.id.to_string(),
        "bytes": s.size,
        "crc32c": format!("{:08x}", s.crc32c),
        "schema": s.schema,
        "label": s.label,
    })
}
