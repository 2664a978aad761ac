//! Restore: copy (or clone) a snapshot, verify its checksum, flip, and keep the replaced file
//! as the undo snapshot.

use super::flip::Installed;
use super::*;

/// Options of [`Database::restore`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Restore even if the snapshot's schema version differs from the current one.
    pub allow_schema_change: bool,
}

impl Database {
    /// Restores a snapshot: takes an undo snapshot of the current state (its id is returned:
    /// restoring it reverses this restore), copies the snapshot to a new file and flips.
    /// An unknown or dropped snapshot is `NotFound`; a different schema version is refused
    /// unless `options.allow_schema_change`; a snapshot whose checksum no longer matches is
    /// `Corrupt`. Nothing changes on any refusal. If the flip committed but the undo
    /// snapshot could not be kept, the error says the restore took effect, and the database
    /// is poisoned until the workspace is reopened (the caller re-reads what it holds).
    pub fn restore(&self, id: Uuid, options: RestoreOptions) -> Result<Uuid> {
        self.operation(
            "restore",
            || self.restore_inner(id, options),
            |_| None,
            |undo| Some(serde_json::json!({"snapshot": id.to_string(), "undo": undo.to_string()})),
        )
    }

    pub(super) fn restore_inner(&self, id: Uuid, options: RestoreOptions) -> Result<Uuid> {
        self.refuse_read_only()?;
        let key = self.key();
        let entry = self.snapshots()?.into_iter().find(|s| s.id == id).ok_or_else(|| {
            Error::new(ErrorCode::NotFound, format!("snapshot {id} does not exist (never taken, or dropped)"))
        })?;
        let current_schema = self.schema_version()?;
        if entry.schema != current_schema && !options.allow_schema_change {
            return Err(Error::invalid_argument(format!(
                "snapshot {id} has schema version {} and the database has {current_schema}; \
                 pass allow_schema_change to restore it anyway",
                entry.schema
            )));
        }
        let snap_path = self.ws.driver().abs(&layout::snapshot_file(key.app, &key.db, id));
        match self.fs().file_len(&snap_path)? {
            Some(size) if size == entry.size => {}
            other => {
                return Err(Error::corrupt(format!(
                    "snapshot {id} is {} on disk and {} bytes in the manifest",
                    other.map_or("missing".to_string(), |n| format!("{n} bytes")),
                    entry.size
                )))
            }
        }
        let label = format!("restore of {id}");
        let undo_label = format!("undo of restore of {id}");
        let (_, undo) = self.install_keeping_undo(entry.size, &label, &undo_label, true, |dest| {
            self.copy_snapshot_for_restore(&entry, &snap_path, dest)
        })?;
        Ok(undo.id)
    }

    /// Installs a new version (filled by `write`, of about `expected_bytes`) and keeps the
    /// version it replaced as an undo snapshot labelled `undo_label`: what a restore and an
    /// import do. Returns the flip and the undo snapshot. `early_sum`: checksum the live file
    /// on a helper thread while `write` runs (it checkpoints the live file first, so only an
    /// operation whose refusals may touch the live file asks for it).
    pub(super) fn install_keeping_undo(
        &self,
        expected_bytes: u64,
        label: &str,
        undo_label: &str,
        early_sum: bool,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<(Installed, SnapshotEntry)> {
        let key = self.key();
        validate_label(undo_label)?;
        // The undo snapshot is made after the flip, where a refusal could no longer leave the
        // database as it was: make sure now that the manifest has room for it. (It is the
        // replaced file renamed, so it adds no bytes.)
        self.ws.with_store(|s| s.check_room_for_snapshot(&key, 0))?;
        // The undo snapshot will be the replaced file, and recording it means reading it for
        // its checksum. Where the executor allows a helper thread, that read runs now, on the
        // pinned live file, while this thread writes the new version; it counts only if
        // nothing was committed between the pin and the flip (see `keep_replaced`), else the
        // file is read again after the flip. A failed early read is not this operation's
        // error: the read after the flip does the same work and reports what it finds.
        let helper = early_sum && self.ws.broker().executor().allows_helper_threads();
        let (installed, early_sum) = std::thread::scope(|scope| {
            let summing = helper.then(|| scope.spawn(|| self.pinned_undo_sum()));
            let mut early_sum = None;
            let installed = self.install_new_version(expected_bytes, label, true, write, || {
                // Joined before the flip: the pin must end before its checkpoint.
                early_sum = summing.and_then(|h| h.join().ok()).and_then(|r| r.ok()).flatten();
            });
            (installed, early_sum)
        });
        let installed = installed?;
        // The undo snapshot is the replaced file itself, kept after the flip. The flip was
        // the commit point: if keeping the undo fails, the operation has taken effect but the
        // caller gets an error, so the database is poisoned (fail-stop) until a reopen, and no
        // work runs on a state the caller was told may not exist.
        let undo = self.keep_replaced(&installed, undo_label, early_sum).map_err(|e| {
            let e = e.context(format_args!(
                "the {label} took effect, but keeping the replaced version as its undo snapshot \
                 failed; the database refuses work until the workspace is reopened"
            ));
            self.db.poison(e.message());
            e
        })?;
        Ok((installed, undo))
    }

    /// Fills `dest` with the snapshot's bytes for a restore, verifying its checksum.
    pub(super) fn copy_snapshot_for_restore(
        &self,
        entry: &SnapshotEntry,
        snap_path: &Path,
        dest: &Path,
    ) -> Result<()> {
        // The checksum is verified on the bytes copied, so what becomes live is exactly what
        // the snapshot recorded: a consistent copy the engine itself took from a live
        // database. That is why a restore runs no integrity_check (seconds on a large file);
        // it only switches the copy back to WAL.
        let ((crc, size), cloned) =
            clone_or_copy(self.fs(), snap_path, dest, false).map_err(|e| e.context("copy snapshot"))?;
        if cloned {
            self.db.metrics.record_reflink();
        }
        let verify = !crate::sabotage::active(crate::sabotage::Sabotage::RestoreSkipsChecksum);
        if verify && (crc != entry.crc32c || size != entry.size) {
            return Err(Error::corrupt(format!(
                "snapshot {} fails its checksum ({crc:08x}/{size} bytes on disk, {:08x}/{} in the manifest)",
                entry.id, entry.crc32c, entry.size
            )));
        }
        set_wal_mode(self.vfs_name(), dest)
    }
}
