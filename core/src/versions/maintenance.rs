//! Maintenance of the live file: a checkpoint on demand, and compaction (SQLite's
//! `VACUUM INTO` a new version, flipped to with the writer held, so the file shrinks to what
//! it holds without losing a write).

use super::flip::Fill;
use super::*;

/// What [`Database::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    /// Bytes of the live file and its WAL before.
    pub before_bytes: u64,
    /// Bytes of the new live file.
    pub after_bytes: u64,
}

/// What [`Database::checkpoint`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Frames the WAL held.
    pub wal_frames: u64,
    /// Frames copied into the database file.
    pub checkpointed_frames: u64,
    /// Whether the whole WAL was folded into the file and the WAL truncated to zero bytes.
    /// `false` when a reader still reads an older state from it; the rest is folded by a
    /// later checkpoint.
    pub complete: bool,
}

impl Database {
    /// Folds the WAL into the database file and truncates it (`PRAGMA
    /// wal_checkpoint(TRUNCATE)`), with the writer held: queued writes commit first, later
    /// ones wait for the checkpoint. A reader on an older state keeps what it reads in the
    /// WAL (`complete` is false). A failed write or sync poisons the database (fail-stop),
    /// as any failed checkpoint does.
    pub fn checkpoint(&self) -> Result<CheckpointReport> {
        self.operation("checkpoint", || self.checkpoint_inner(), |_| None)
    }

    fn checkpoint_inner(&self) -> Result<CheckpointReport> {
        self.refuse_read_only()?;
        let row = self.exclusive(|writer| {
            crate::broker::internal_int_row(writer, "PRAGMA wal_checkpoint(TRUNCATE)")
                .inspect(|_| self.db.metrics.record_checkpoint())
                .inspect_err(|_| self.db.metrics.record_checkpoint_failed())
        })?;
        // (busy, frames in the WAL, frames checkpointed); -1s when not in WAL mode.
        let frames = |i: usize| row.get(i).and_then(|n| u64::try_from(*n).ok()).unwrap_or(0);
        let report = CheckpointReport {
            wal_frames: frames(1),
            checkpointed_frames: frames(2),
            complete: row.first() == Some(&0),
        };
        self.refresh_sizes()?;
        Ok(report)
    }

    /// Rewrites the database into a new, compact file and flips to it: the free pages
    /// deletes left behind go back to the quota (once GC removes the replaced file).
    ///
    /// The copy (SQLite's `VACUUM INTO`, one pass, no journal) is made with the writer held,
    /// so it holds every acknowledged write and none can fall between the copy and the flip:
    /// writes wait for the whole compaction, reads do not. The new file is reserved in the
    /// app's quota at the live size (at most the database's `maxSizeMB`) and must fit on the
    /// disk; without that headroom the operation is refused with `QuotaExceeded` before any
    /// IO. The replaced file is garbage until GC, and no undo snapshot is kept: the content
    /// did not change.
    pub fn compact(&self) -> Result<CompactReport> {
        self.operation("compact", || self.compact_inner(), |r| Some(r.after_bytes))
    }

    pub(super) fn compact_inner(&self) -> Result<CompactReport> {
        self.refuse_read_only()?;
        let key = self.key();
        let (db_bytes, wal_bytes) = self.refresh_sizes()?;
        let before_bytes = db_bytes.saturating_add(wal_bytes);
        let headroom = before_bytes.min(self.ws.with_store(|s| s.max_size_bytes(&key))?);
        self.check_free_space(headroom)?;
        let (vfs_name, live) = (self.vfs_name(), self.db.path());
        let copy = |dest: &Path| {
            vacuum_into(vfs_name, &live, dest)?;
            set_wal_mode(vfs_name, dest)
        };
        let installed = if crate::sabotage::active(crate::sabotage::Sabotage::CompactionCopiesBeforeTheWriter)
        {
            self.install_new_version(headroom, "compaction", false, copy, || {})?
        } else {
            let fill: Fill<fn(&Path) -> Result<()>, _> =
                Fill::UnderWriter(|_: &Connection, dest: &Path| copy(dest));
            self.install_filled(headroom, "compaction", false, fill, || {})?
        };
        let name = layout::db_file_name(installed.file);
        let after_bytes =
            self.ws.with_store(|s| s.files(&key).map(|f| f.get(&name).copied().unwrap_or(0)))?;
        Ok(CompactReport { before_bytes, after_bytes })
    }
}

/// Writes a compact copy of the live file at `live` to `dest` with `VACUUM INTO`, through
/// the engine's VFS (outside the app's policy: the engine chose the statement). The caller
/// holds the writer; the connection reads the last commit, sharing the writer's wal-index.
fn vacuum_into(vfs_name: Option<&str>, live: &Path, dest: &Path) -> Result<()> {
    let dest_name = dest
        .to_str()
        .ok_or_else(|| Error::internal(format!("the compaction target {} is not UTF-8", dest.display())))?;
    let conn = open_plain(vfs_name, live, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.execute("VACUUM INTO ?1", [dest_name])
        .map_err(|e| sqlite::map_error(e, None).context("compacting the database (VACUUM INTO)"))?;
    conn.close().map_err(|(_, e)| sqlite::map_error(e, None).context("closing the compaction's reader"))
}
