//! Maintenance of the live file: a checkpoint on demand, and compaction (SQLite's
//! `VACUUM INTO` a new version, flipped to with the writer held, so the file shrinks to what
//! it holds without losing a write).

use super::flip::Fill;
use super::*;

/// `PRAGMA auto_vacuum`'s answer for incremental mode.
const AUTO_VACUUM_INCREMENTAL: i64 = 2;

/// What [`Database::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    /// Bytes of the live file and its WAL before.
    pub before_bytes: u64,
    /// Bytes of the new live file.
    pub after_bytes: u64,
}

/// What [`Database::check_integrity`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Whether it was SQLite's full `integrity_check` (else `quick_check`).
    pub full: bool,
    /// What SQLite reported, at most [`INTEGRITY_PROBLEMS_MAX`] lines; empty when the
    /// database is sound.
    pub problems: Vec<String>,
}

/// Problems an integrity check reports at most (SQLite stops looking after as many).
pub const INTEGRITY_PROBLEMS_MAX: u32 = 20;

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
    /// wal_checkpoint(PASSIVE)`, which reports the frames, then `TRUNCATE`), with the writer held: queued writes commit first, later
    /// ones wait for the checkpoint. A reader on an older state keeps what it reads in the
    /// WAL (`complete` is false). A failed write or sync poisons the database (fail-stop),
    /// as any failed checkpoint does.
    pub fn checkpoint(&self) -> Result<CheckpointReport> {
        self.operation("checkpoint", || self.checkpoint_inner(), |_| None, |_| None)
    }

    fn checkpoint_inner(&self) -> Result<CheckpointReport> {
        self.refuse_read_only()?;
        // A successful TRUNCATE answers with the WAL as it left it, (0, 0, 0): the frames it
        // held are what a PASSIVE checkpoint just before reports (it also does the copying,
        // which TRUNCATE then need not redo). With the writer held, no frame comes between.
        let rows = self.exclusive(|writer| self.db.checkpoint_on(writer, &["PASSIVE", "TRUNCATE"]))?;
        let (passive, truncate) = match rows.as_slice() {
            [passive, truncate] => (passive.clone(), truncate.clone()),
            _ => return Err(Error::internal("a checkpoint answered no row per mode")),
        };
        // (busy, frames in the WAL, frames checkpointed); -1s when not in WAL mode.
        let frames = |i: usize| passive.get(i).and_then(|n| u64::try_from(*n).ok()).unwrap_or(0);
        let report = CheckpointReport {
            wal_frames: frames(1),
            checkpointed_frames: frames(2),
            complete: crate::broker::checkpoint_complete(&truncate),
        };
        self.refresh_sizes()?;
        Ok(report)
    }

    /// Checks the live database with SQLite's `quick_check` (or the full `integrity_check`,
    /// which also checks index contents, when `full`), on a reader: writes go on. A database
    /// found damaged is marked: every later request is refused (`POISONED`, naming the
    /// check) until the workspace is reopened, when the operator restores its last good
    /// snapshot (`docs/operations.md`). Returns what SQLite found. A page the check could
    /// not read (an IO error) is not a finding: the check fails with `Io` and marks nothing.
    pub fn check_integrity(&self, full: bool) -> Result<IntegrityReport> {
        // Only a check that found something is recorded (upkeep runs one per database per pass).
        self.operation(
            "check_integrity",
            || self.check_integrity_inner(full),
            |_| None,
            |r| (!r.problems.is_empty()).then(|| serde_json::json!({"full": r.full, "problems": r.problems})),
        )
    }

    fn check_integrity_inner(&self, full: bool) -> Result<IntegrityReport> {
        let pragma = if full { "integrity_check" } else { "quick_check" };
        let sql = format!("PRAGMA {pragma}({INTEGRITY_PROBLEMS_MAX})");
        let stop = self.ws.broker().stop_after(self.ws.broker().options().transaction_timeout);
        let checked = self.db.with_reader_conn(&stop, |conn| {
            crate::broker::as_internal(|| {
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .map_err(|e| sqlite::map_error(e, None).context(format_args!("PRAGMA {pragma}")))
        });
        let problems: Vec<String> = match checked {
            Ok(lines) => lines.into_iter().filter(|l| l != "ok").collect(),
            // Damage bad enough that SQLite refuses to walk the file is a finding too.
            Err(e) if e.code() == ErrorCode::Corrupt => vec![e.message().to_string()],
            Err(e) => return Err(e),
        };
        // SQLite reports a page it could not read as a finding ("unable to get the page.
        // error code=266"), and the entries it then missed as more. A read that failed
        // says nothing about the content: the check proves nothing either way.
        if let Some(line) = problems.iter().find(|l| unreadable_page(l)) {
            return Err(Error::new(
                ErrorCode::Io,
                format!("PRAGMA {pragma} could not read the file, so it proves nothing; retry it ({line})"),
            ));
        }
        if !problems.is_empty() {
            let first = problems.first().map(String::as_str).unwrap_or_default();
            self.db.poison(&format!(
                "{pragma} found the database damaged ({} problem(s), first: {first}); restore its last good snapshot",
                problems.len()
            ));
        }
        Ok(IntegrityReport { full, problems })
    }

    /// Runs `PRAGMA optimize` on the writer (SQLite re-analyzes what changed enough to
    /// matter; bounded by `analysis_limit`). Writes wait for it.
    pub fn optimize(&self) -> Result<()> {
        self.operation(
            "optimize",
            || {
                self.refuse_read_only()?;
                self.exclusive(|writer| {
                    crate::broker::as_internal(|| sqlite::open::optimize_on_close(writer))
                })
            },
            |_| None,
            |()| None,
        )
    }

    /// Gives back up to `pages_max` of the free pages deletes left in a database in
    /// incremental auto-vacuum mode (manifest `incrementalVacuum`), then checkpoints so the
    /// file itself shrinks; returns the pages freed (0 for a database in another mode, or
    /// with none free). No copy is made, unlike [`Database::compact`]: the pages at the end
    /// of the file move into the free ones, under the writer, in one transaction.
    pub fn incremental_vacuum(&self, pages_max: u64) -> Result<u64> {
        self.operation(
            "incremental_vacuum",
            || self.incremental_vacuum_inner(pages_max),
            |_| None,
            |n| (*n > 0).then(|| serde_json::json!({"pages_freed": n})),
        )
    }

    fn incremental_vacuum_inner(&self, pages_max: u64) -> Result<u64> {
        self.refuse_read_only()?;
        let freed = self.exclusive(|writer| {
            let read = |pragma: &str| -> Result<i64> {
                crate::broker::as_internal(|| writer.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0)))
                    .map_err(|e| sqlite::map_error(e, None).context(format_args!("PRAGMA {pragma}")))
            };
            if read("auto_vacuum")? != AUTO_VACUUM_INCREMENTAL {
                return Ok(0);
            }
            let free = u64::try_from(read("freelist_count")?).unwrap_or(0);
            let pages = free.min(pages_max);
            if pages == 0 {
                return Ok(0);
            }
            // One row per page freed: every row must be stepped through, or only the first
            // page moves.
            crate::broker::as_internal(|| -> rusqlite::Result<()> {
                let mut stmt = writer.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
                let mut rows = stmt.query([])?;
                while rows.next()?.is_some() {}
                Ok(())
            })
            .map_err(|e| sqlite::map_error(e, None).context("PRAGMA incremental_vacuum"))?;
            let left = u64::try_from(read("freelist_count")?).unwrap_or(0);
            // The pages left the database in the WAL; a checkpoint takes them off the file.
            self.db.checkpoint_on(writer, &["TRUNCATE"])?;
            Ok(free.saturating_sub(left))
        })?;
        self.refresh_sizes()?;
        Ok(freed)
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
        self.operation(
            "compact",
            || self.compact_inner(),
            |r| Some(r.after_bytes),
            |r| Some(serde_json::json!({"before_bytes": r.before_bytes, "after_bytes": r.after_bytes})),
        )
    }

    pub(super) fn compact_inner(&self) -> Result<CompactReport> {
        self.refuse_read_only()?;
        let key = self.key();
        let (db_bytes, wal_bytes) = self.refresh_sizes()?;
        let before_bytes = db_bytes.saturating_add(wal_bytes);
        let headroom = before_bytes.min(self.ws.with_store(|s| s.max_size_bytes(&key))?);
        self.check_free_space(headroom)?;
        let (vfs_name, live) = (self.vfs_name(), self.db.path());
        let incremental = self.db.config().connection.incremental_vacuum;
        let copy = |dest: &Path| {
            vacuum_into(vfs_name, &live, dest, incremental)?;
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
/// With `incremental`, the copy is in incremental auto-vacuum mode (`VACUUM INTO` takes the
/// mode the connection asks for; asking again on a file already in it would be a write,
/// which this read-only connection may not make).
fn vacuum_into(vfs_name: Option<&str>, live: &Path, dest: &Path, incremental: bool) -> Result<()> {
    let dest_name = dest
        .to_str()
        .ok_or_else(|| Error::internal(format!("the compaction target {} is not UTF-8", dest.display())))?;
    let conn = open_plain(vfs_name, live, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .map_err(|e| sqlite::map_error(e, None).context("reading the auto_vacuum mode"))?;
    if incremental && mode != AUTO_VACUUM_INCREMENTAL {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(|e| sqlite::map_error(e, None).context("asking for incremental auto-vacuum"))?;
    }
    conn.execute("VACUUM INTO ?1", [dest_name])
        .map_err(|e| sqlite::map_error(e, None).context("compacting the database (VACUUM INTO)"))?;
    conn.close().map_err(|(_, e)| sqlite::map_error(e, None).context("closing the compaction's reader"))
}

/// Whether an integrity-check line is SQLite failing to read a page (an IO error, out of
/// memory, an interrupt, a lock) rather than finding one damaged. SQLite words it
/// "... error code=N" with N its result code.
fn unreadable_page(line: &str) -> bool {
    let Some((_, code)) = line.rsplit_once("error code=") else { return false };
    let digits: String = code.chars().take_while(char::is_ascii_digit).collect();
    let Ok(code) = digits.parse::<i32>() else { return false };
    matches!(
        code & 0xff,
        rusqlite::ffi::SQLITE_IOERR
            | rusqlite::ffi::SQLITE_NOMEM
            | rusqlite::ffi::SQLITE_INTERRUPT
            | rusqlite::ffi::SQLITE_BUSY
            | rusqlite::ffi::SQLITE_LOCKED
    )
}

#[cfg(test)]
mod tests {
    use super::unreadable_page;

    #[test]
    fn a_page_that_could_not_be_read_is_not_damage() {
        assert!(unreadable_page("Tree 2 page 2: unable to get the page. error code=266"));
        assert!(unreadable_page(
            "*** in database main ***\nTree 2 page 2: unable to get the page. error code=10"
        ));
        assert!(unreadable_page("Tree 3 page 7: unable to get the page. error code=7"));
        // SQLITE_CORRUPT (11) is damage.
        assert!(!unreadable_page("Tree 2 page 2: unable to get the page. error code=11"));
        assert!(!unreadable_page("wrong # of entries in index kv_v0"));
        assert!(!unreadable_page("error code="));
    }
}
