//! The flip of every new version: quiesce the writer, checkpoint, commit the pointer, point
//! the broker at the new file; then keep the replaced file as an undo snapshot.

use super::*;

/// What a flip installed and what it replaced.
#[derive(Debug)]
pub(super) struct Installed {
    /// The new live file.
    pub(super) file: Uuid,
    /// The file it replaced.
    pub(super) replaced: Uuid,
    /// The replaced version's schema version.
    pub(super) replaced_schema: u64,
    /// Whether the flip's TRUNCATE checkpoint folded the replaced file's whole WAL into it,
    /// so the file alone holds its last state.
    pub(super) replaced_folded: bool,
    /// A lease keeping the replaced file from GC, when the caller asked to keep it.
    pub(super) replaced_lease: Option<crate::store::LeaseId>,
    /// The replaced file's version (generation) in the broker.
    pub(super) replaced_generation: u64,
    /// [`DbShared::commits`](crate::broker::DbShared) when the flip folded the WAL into the
    /// replaced file: with the writer held, its last commit.
    pub(super) replaced_commits: u64,
}

/// When a flip's new file is written.
pub(super) enum Fill<B, U> {
    /// Before the writer is taken (a restore's copy, an import): writes go on meanwhile, and
    /// the new version replaces them on purpose.
    Before(B),
    /// With the writer held, given its connection, so that no commit falls between the
    /// copy and the flip (a compaction: the new file must hold every acknowledged write).
    /// Writes wait for the whole copy.
    UnderWriter(U),
}

/// Switches a closed database file to WAL mode. The switch leaves an empty WAL, and closing
/// the only connection removes it: the file is self-contained when it is synced and flipped.
pub(super) fn set_wal_mode(vfs_name: Option<&str>, path: &Path) -> Result<()> {
    let conn = open_plain(vfs_name, path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let mode = sqlite::open::set_journal_mode(&conn, "WAL")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::corrupt(format!("could not switch to WAL (got {mode})")));
    }
    conn.close().map_err(|(_, e)| sqlite::map_error(e, None).context("closing the candidate"))
}

impl Database {
    /// Makes a new live file with `write` (which fills the given path and checks it), then
    /// flips to it under the exclusive writer. With `keep_replaced`, the replaced file is
    /// leased for the caller (see [`Installed::replaced_lease`]), which must release it.
    /// `before_flip` runs once the new file is written and synced, just before the writer is
    /// taken (not at all when writing it failed).
    pub(super) fn install_new_version(
        &self,
        expected_bytes: u64,
        label: &str,
        keep_replaced: bool,
        write: impl FnOnce(&Path) -> Result<()>,
        before_flip: impl FnOnce(),
    ) -> Result<Installed> {
        let fill: Fill<_, fn(&Connection, &Path) -> Result<()>> = Fill::Before(write);
        self.install_filled(expected_bytes, label, keep_replaced, fill, before_flip)
    }

    /// [`Database::install_new_version`] with the choice of when the new file is written
    /// (see [`Fill`]).
    pub(super) fn install_filled<B, U>(
        &self,
        expected_bytes: u64,
        label: &str,
        keep_replaced: bool,
        fill: Fill<B, U>,
        before_flip: impl FnOnce(),
    ) -> Result<Installed>
    where
        B: FnOnce(&Path) -> Result<()>,
        U: FnOnce(&Connection, &Path) -> Result<()>,
    {
        validate_label(label)?;
        let label = label.to_string();
        let key = self.key();
        self.refresh_sizes()?;
        let file = self.ws.new_uuid();
        let op = self.ws.with_store(|s| s.begin_new_file(&key, file, expected_bytes))?;
        let dest = self.ws.driver().abs(&layout::db_file(key.app, &key.db, file));
        // A file filled before the writer is taken is sealed now; one filled under the
        // writer, in the flip's critical section below.
        let (sealed, under_writer) = match fill {
            Fill::Before(write) => match write(&dest).and_then(|()| self.seal_candidate(&dest)) {
                Ok(sealed) => (Some(sealed), None),
                Err(e) => {
                    self.ws.abort_op(op);
                    return Err(e);
                }
            },
            Fill::UnderWriter(write) => (None, Some(write)),
        };
        before_flip();
        let ws = self.ws.clone();
        let db = self.db.clone();
        let flipped = self.exclusive(|conn| {
            let (size, schema) = match (sealed, under_writer) {
                (Some(sealed), _) => sealed,
                (None, Some(write)) => write(conn, &dest).and_then(|()| self.seal_candidate(&dest))?,
                (None, None) => return Err(Error::internal("a flip without a new file")),
            };
            // Quiesce: every queued write before us is committed; fold the WAL into the old
            // file so nothing is orphaned. (busy, log, checkpointed) = (0, 0, 0) when the WAL
            // was folded whole and truncated; a reader still on the WAL makes it partial.
            // No checkpoint result is dropped: an IO failure stops the flip before its commit
            // (a failed sync or write is also the workspace's fault); anything else (the WAL
            // was busy) leaves the WAL unfolded, which the undo snapshot then copies around.
            let folded = match db.checkpoint_on(conn, &["TRUNCATE"]) {
                Ok(rows) => rows.first().is_some_and(|row| row.as_slice() == [0, 0, 0]),
                Err(e) if matches!(e.code(), ErrorCode::Io | ErrorCode::DiskFull | ErrorCode::Poisoned) => {
                    return Err(e.context("checkpointing the replaced file before the flip"));
                }
                Err(_) => false,
            };
            // Under the writer: no commit can follow before the switch.
            let (replaced_generation, replaced_commits) = (db.current_version(), db.commits());
            // The lease on the old file is taken before the flip: from the moment the pointer
            // moves, GC may otherwise see the old file unreferenced while readers still use it.
            let (old, old_schema) = ws.with_store(|s| s.pointer(&key).map(|p| (p.file, p.schema)))?;
            let lease = ws.with_store(|s| s.acquire_lease(&key, old))?;
            let kept = if keep_replaced {
                match ws.with_store(|s| s.acquire_lease(&key, old)) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        ws.with_store(|s| s.release_lease(lease));
                        return Err(e);
                    }
                }
            } else {
                None
            };
            let version = NewVersion { size, schema, label: label.clone(), now_ms: ws.now_ms() };
            let flipped = self
                .refuse_after_fault()
                .and_then(|()| ws.with_store(|s| s.plan_flip(op, version)))
                .and_then(|plan| ws.run_plan(&plan));
            if let Err(e) = flipped {
                ws.with_store(|s| {
                    s.release_lease(lease);
                    if let Some(k) = kept {
                        s.release_lease(k);
                    }
                });
                return Err(e);
            }
            db.switch_file(dest.clone(), lease);
            Ok(Installed {
                file,
                replaced: old,
                replaced_schema: old_schema,
                replaced_folded: folded,
                replaced_lease: kept,
                replaced_generation,
                replaced_commits,
            })
        });
        match flipped {
            Ok(installed) => {
                self.ws.refresh_replaced_file_sizes(&self.key(), installed.replaced);
                Ok(installed)
            }
            Err(e) => {
                // A failure before plan_flip leaves the operation open: abandon it. After it,
                // the store already aborted or poisoned it; aborting again is a no-op.
                self.ws.abort_op(op);
                Err(e.context("flipping to the new version"))
            }
        }
    }

    /// Syncs a written, checked and closed candidate and reads its size and schema version.
    /// (Synced before the flip's critical section when it can be: the flip's own sync of it
    /// is then cheap.)
    fn seal_candidate(&self, dest: &Path) -> Result<(u64, u64)> {
        let size = self.fs().open(dest, OpenMode::ReadWrite).and_then(|f| {
            f.sync()?;
            f.len()
        })?;
        let schema = open_plain(self.vfs_name(), dest, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| read_schema_version(&c))
            .map_err(|e| e.context("reading the new version's schema version"))?;
        Ok((size, schema))
    }

    /// Makes the file a flip just replaced into a snapshot (the undo of a restore), without
    /// copying it when it can: the replaced file is the state at the flip, frozen (its writer
    /// is gone, and readers still on it only read).
    ///
    /// When the flip's checkpoint folded the whole WAL into it, the file is renamed into
    /// `snapshots/`, its header's format bytes are set to rollback journal (readers still on
    /// it check those bytes only when a read begins, and a retired reader begins none), it is
    /// checksummed, made read-only and listed. Otherwise (a reader held the checkpoint back,
    /// so commits are still in its WAL) its whole state is copied out through SQLite's backup
    /// API instead. Releases the lease the flip took for it.
    ///
    /// `early_sum` is the checksum of the file taken while it was pinned before the flip
    /// ([`Database::pinned_undo_sum`]); it is used instead of reading the file again when it
    /// is of the replaced version, nothing was committed between the pin and the flip (the
    /// pin's checkpoint had folded the whole WAL, so the flip's checkpoint wrote nothing), and
    /// the size still matches.
    pub(super) fn keep_replaced(
        &self,
        installed: &Installed,
        label: &str,
        early_sum: Option<Pinned<(u32, u64)>>,
    ) -> Result<SnapshotEntry> {
        let early_sum = early_sum
            .filter(|p| {
                p.generation == installed.replaced_generation && p.commits == installed.replaced_commits
            })
            .map(|p| p.value);
        let result = self.keep_replaced_inner(installed, label, early_sum);
        if let Some(lease) = installed.replaced_lease {
            self.ws.with_store(|s| s.release_lease(lease));
        }
        result
    }

    pub(super) fn keep_replaced_inner(
        &self,
        installed: &Installed,
        label: &str,
        early_sum: Option<(u32, u64)>,
    ) -> Result<SnapshotEntry> {
        let key = self.key();
        let fs = self.fs();
        let old_path = self.ws.driver().abs(&layout::db_file(key.app, &key.db, installed.replaced));
        let id = self.ws.new_uuid();
        let undo_path = self.ws.driver().abs(&layout::snapshot_file(key.app, &key.db, id));
        let old_size = fs.file_len(&old_path)?.ok_or_else(|| {
            Error::internal(format!("the replaced file {} vanished under its lease", old_path.display()))
        })?;
        // Renaming adds no bytes; a copy needs room for one.
        let reserve = if installed.replaced_folded { 0 } else { old_size };
        let op = self.ws.with_store(|s| s.begin_snapshot(&key, id, reserve))?;
        let made = if installed.replaced_folded {
            self.adopt_replaced(&old_path, &undo_path, installed.replaced, early_sum)
        } else {
            open_plain(self.vfs_name(), &old_path, OpenFlags::SQLITE_OPEN_READ_WRITE)
                .and_then(|conn| backup_to(self.vfs_name(), &conn, &undo_path))
                .and_then(|()| {
                    self.db.metrics.record_snapshot_copy(false);
                    Ok(vfs::checksum_file(fs, &undo_path)?)
                })
        };
        let made = made.and_then(|sum| {
            fs.set_read_only(&undo_path, true)?;
            Ok(sum)
        });
        let (crc, size) = match made {
            Ok(x) => x,
            Err(e) => {
                let _ = fs.set_read_only(&undo_path, false);
                self.ws.abort_op(op);
                return Err(e);
            }
        };
        let info = NewSnapshot {
            size,
            crc32c: crc,
            schema: installed.replaced_schema,
            label: label.to_string(),
            now_ms: self.ws.now_ms(),
        };
        self.list_snapshot(op, id, info)
    }

    /// Renames a replaced, fully checkpointed live file to `undo_path`, rewrites its header to
    /// rollback journal and returns its checksum and size (`early_sum` when given and the
    /// size agrees, see [`Database::keep_replaced`]).
    pub(super) fn adopt_replaced(
        &self,
        old_path: &Path,
        undo_path: &Path,
        old: Uuid,
        early_sum: Option<(u32, u64)>,
    ) -> Result<(u32, u64)> {
        let fs = self.fs();
        let key = self.key();
        fs.rename(old_path, undo_path)?;
        // The store no longer counts it as the replaced version's garbage; the snapshot plan
        // lists it under its new name (GC removes the old name's -wal and -shm as usual).
        self.ws.with_store(|s| s.forget_file(&key, &layout::db_file_name(old)))?;
        let file = fs.open(undo_path, OpenMode::ReadWrite)?;
        let mut header = [0u8; 20];
        let n = vfs::read_full(file.as_ref(), &mut header, 0)?;
        if n < header.len() || header.get(..16) != Some(b"SQLite format 3\0".as_slice()) {
            return Err(Error::corrupt(format!(
                "the replaced file {} has no SQLite header",
                old_path.display()
            )));
        }
        to_rollback_header(0, &mut header);
        vfs::write_all_at(file.as_ref(), header.get(18..20).unwrap_or_default(), 18)?;
        drop(file);
        self.db.metrics.record_snapshot_copy(true);
        match early_sum {
            Some((crc, size)) if fs.file_len(undo_path)? == Some(size) => {
                self.db.metrics.record_undo_sum_while_copying();
                Ok((crc, size))
            }
            _ => Ok(vfs::checksum_file(fs, undo_path)?),
        }
    }
}
