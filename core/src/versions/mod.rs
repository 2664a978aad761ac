//! Versions of a database: snapshot, restore (with undo), import, export, backup, migrations,
//! retention.
//!
//! Everything that makes a new version of a database goes through the flip of DESIGN.md:
//! reserve quota and mark the new file in flight (store), write the file, check it, take the
//! writer exclusively (queued writes finish first), checkpoint the old file (TRUNCATE), run
//! the store's flip plan (sync file, sync dir, pointer temp + sync + rename + sync dir),
//! point the broker at the new file, release the writer. Readers already running finish on
//! the old file under a lease. Any failure before the commit step removes the new file and
//! leaves the database exactly as it was.
//!
//! Snapshot copies are plain file copies of the live file, pinned by a read transaction
//! (see [`Database::copy_live`]): the writer stalls for one PASSIVE checkpoint only, and the
//! copy costs what a file copy costs. When the WAL cannot be checkpointed completely first (a
//! reader still reads an older state from it), SQLite's online backup API copies from a
//! pooled reader instead. Either way the copy is a self-contained rollback-journal file, made
//! read-only on disk.
//!
//! Where things are: [`flip`] (the flip and the undo snapshot it keeps), [`snapshot`]
//! (snapshots and retention), [`restore`], [`import`], [`export`] (exports and backups),
//! [`migrate`], [`maintenance`] (checkpoints and compaction), [`gzip`]; this file holds what
//! they share.

mod export;
mod flip;
mod gzip;
mod import;
mod maintenance;
mod migrate;
mod restore;
mod snapshot;

pub use export::ExportFormat;
use flip::set_wal_mode;
use gzip::{gunzip_file, gzip_file, gzip_stated_size, GZIP_MAGIC};
pub use import::{ImportOptions, ImportReport, IMPORT_DENIED_FUNCTIONS};
pub use maintenance::{CheckpointReport, CompactReport, IntegrityReport, INTEGRITY_PROBLEMS_MAX};
pub use migrate::{
    read_schema_version, step_checksum, MigrationPlan, MigrationReport, MigrationStep, MIGRATION_STEPS_MAX,
};
pub use restore::RestoreOptions;

use crate::api::Database;
use crate::sqlite::{self, StopCheck};
use crate::store::record::{validate_label, SnapshotEntry};
use crate::store::{layout, NewSnapshot, NewVersion, Retention};
use crate::vfs::{self, OpenMode, Vfs};
use crate::{Error, ErrorCode, Result};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// What [`Database::with_pinned_live`] ran while the live file was frozen.
struct Pinned<T> {
    /// What the function returned.
    value: T,
    /// The pinned file's version (generation).
    generation: u64,
    /// Commits on the writer when it was pinned ([`Installed::replaced_commits`]).
    commits: u64,
}

/// Opens a plain (unpooled) connection through the workspace's SQLite VFS.
fn open_plain(vfs_name: Option<&str>, path: &Path, flags: OpenFlags) -> Result<Connection> {
    let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match vfs_name {
        Some(name) => Connection::open_with_flags_and_vfs(path, flags, name),
        None => Connection::open_with_flags(path, flags),
    };
    let kind = crate::fault::FileKind::of_path(path).as_str();
    conn.map_err(|e| {
        sqlite::map_error(e, None).without_path(path, kind).context(format_args!("opening the {kind}"))
    })
}

/// Copies the database behind `src` into a new file at `dest` with the online backup API in
/// one step (one consistent read), then makes `dest` a self-contained rollback-journal file.
fn backup_to(vfs_name: Option<&str>, src: &Connection, dest: &Path) -> Result<()> {
    let mut out =
        open_plain(vfs_name, dest, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
    {
        let backup = rusqlite::backup::Backup::new(src, &mut out).map_err(|e| sqlite::map_error(e, None))?;
        // One step of all pages: the source read transaction spans the whole copy.
        match backup.step(-1).map_err(|e| sqlite::map_error(e, None))? {
            rusqlite::backup::StepResult::Done => {}
            other => {
                return Err(Error::new(ErrorCode::Busy, format!("online backup did not finish: {other:?}")))
            }
        }
    }
    let mode = sqlite::open::set_journal_mode(&out, "DELETE")?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(Error::internal(format!("snapshot copy stayed in journal mode {mode}")));
    }
    out.close().map_err(|(_, e)| sqlite::map_error(e, None))
}

/// Rewrites the format bytes (18 and 19) of a database header from WAL (2) to rollback
/// journal (1), in the first chunk of a copy: what `PRAGMA journal_mode=DELETE` writes, so the
/// copy opens as one self-contained file with no `-wal` or `-shm` beside it.
fn to_rollback_header(offset: u64, chunk: &mut [u8]) {
    if offset != 0 {
        return;
    }
    if let Some(format) = chunk.get_mut(18..20) {
        for byte in format.iter_mut().filter(|b| **b == 2) {
            *byte = 1;
        }
    }
}

/// Copies `from` to the new file `to` as a reflink clone when the filesystem can (O(1)), else
/// byte by byte; with `to_rollback`, the copy's header is rewritten to rollback journal
/// ([`to_rollback_header`]). Returns the CRC-32C and size of the copy, and whether it was a
/// clone. A clone's checksum is computed from `from` (with the same header rewrite), which
/// the caller keeps from changing: a pinned live file or an immutable snapshot.
fn clone_or_copy(fs: &dyn Vfs, from: &Path, to: &Path, to_rollback: bool) -> Result<((u32, u64), bool)> {
    let edit = |offset: u64, chunk: &mut [u8]| {
        if to_rollback {
            to_rollback_header(offset, chunk);
        }
    };
    if !fs.clone_file(from, to)? {
        return Ok((vfs::copy_file_with(fs, from, to, edit)?, false));
    }
    if to_rollback {
        let file = fs.open(to, OpenMode::ReadWrite)?;
        let mut header = [0u8; 20];
        if vfs::read_full(file.as_ref(), &mut header, 0)? == header.len() {
            to_rollback_header(0, &mut header);
            vfs::write_all_at(file.as_ref(), header.get(18..20).unwrap_or_default(), 18)?;
        }
    }
    Ok((vfs::checksum_file_with(fs, from, edit)?, true))
}

impl Database {
    fn key(&self) -> crate::store::DbKey {
        self.db.config().key.clone()
    }

    /// Runs an operation in its `operation` span ([`crate::trace`]): refused up front while
    /// the database takes no writes, with the fail-stop check of [`Self::fail_stop`] after;
    /// `bytes` says what the result wrote, when it says; `detail` is the operation's record
    /// in the audit trail (`None`: not recorded), written before it is acknowledged
    /// ([`Workspace::audited`]).
    fn operation<T>(
        &self,
        op: &'static str,
        run: impl FnOnce() -> Result<T>,
        bytes: impl FnOnce(&T) -> Option<u64>,
        detail: impl FnOnce(&T) -> Option<serde_json::Value>,
    ) -> Result<T> {
        let config = self.db.config();
        let span = crate::trace::operation(&config.app_id, config.key.db.as_str(), op);
        let clock = self.db.clock().clone();
        crate::trace::traced(
            span,
            clock.as_ref(),
            || {
                let mut done = false;
                let result = self.ws.audited(
                    op,
                    &config.app_id,
                    config.key.db.as_str(),
                    || {
                        self.db.check_writable()?;
                        let result = self.fail_stop(run());
                        done = result.is_ok();
                        result
                    },
                    detail,
                );
                if let (true, Err(e)) = (done, &result) {
                    // The operation changed the database, but its record could not be
                    // written, so it is not acknowledged: its outcome is unknown to the
                    // caller, as after any failed sync, and the database is refused until
                    // the workspace is reopened.
                    self.db
                        .poison(&format!("the audit record of {op} could not be written: {}", e.message()));
                }
                result
            },
            bytes,
        )
    }

    /// Fail-stop: an IO failure in any operation on this database (a failed fsync above all)
    /// poisons it until the workspace is reopened.
    fn fail_stop<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.db.poison_on_io(e);
        }
        self.db.fail_stop_window()?;
        result
    }

    /// Refuses to commit (flip a pointer, list a snapshot) once the workspace has a fault:
    /// the failed file's unsynced pages may be gone even if the call that synced it reported
    /// nothing (SQLite reports some commit errors only to a caller that looks), so nothing
    /// written during the operation is trusted.
    fn refuse_after_fault(&self) -> Result<()> {
        self.db.fail_stop_window()
    }

    fn fs(&self) -> &dyn Vfs {
        self.ws.driver().vfs().as_ref()
    }

    fn vfs_name(&self) -> Option<&str> {
        Some(self.ws.sqlite_vfs().engine_name())
    }

    fn refuse_read_only(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::new(
                ErrorCode::ReadOnly,
                format!("database {:?} is read-only for this app", self.db.config().key.db.as_str()),
            ));
        }
        Ok(())
    }

    /// Brings the quota ledger up to date with the live files of every database of the app
    /// (an operation is charged against all of them), and returns the sizes of this
    /// database's file and WAL.
    fn refresh_sizes(&self) -> Result<(u64, u64)> {
        let key = self.key();
        self.ws.refresh_live_sizes(key.app);
        self.ws.with_store(|s| {
            let name = layout::db_file_name(s.pointer(&key)?.file);
            let files = s.files(&key)?;
            let size = |rel: &str| files.get(rel).copied().unwrap_or(0);
            Ok((size(&name), size(&format!("{name}-wal"))))
        })
    }

    /// The schema version recorded by migrations (0 before the first).
    pub fn schema_version(&self) -> Result<u64> {
        let stop = self.ws.broker().stop_after(self.ws.broker().options().statement_timeout);
        self.db.with_reader_conn(&stop, read_schema_version)
    }
}

fn file_label(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.chars().filter(|c| (' '..='~').contains(c)).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::open::tests::TempDir;
    use crate::{Value, Workspace, WorkspaceOptions};

    const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":2}],"tier":"standard"}}}"#;

    fn count(db: &Database) -> Result<Option<Value>> {
        db.query_value("SELECT count(*) FROM t", &[])
    }

    #[test]
    fn header_rewrite_touches_only_the_format_bytes_of_the_first_chunk() {
        let mut first = vec![2u8; 100];
        to_rollback_header(0, &mut first);
        assert_eq!(first.get(18..20), Some([1u8, 1].as_slice()));
        assert!(first.iter().enumerate().all(|(i, b)| (18..20).contains(&i) || *b == 2));
        let mut later = vec![2u8; 100];
        to_rollback_header(COPY_CHUNK, &mut later);
        assert!(later.iter().all(|b| *b == 2), "only the header is rewritten");
        let mut short = vec![2u8; 10];
        to_rollback_header(0, &mut short);
        assert!(short.iter().all(|b| *b == 2), "a chunk too short for a header is left alone");
    }

    const COPY_CHUNK: u64 = vfs::COPY_CHUNK_BYTES as u64;

    /// The zip-bomb guard is exact: output of `max_bytes` bytes passes whole, one byte more
    /// is refused naming the cap, before anything past the cap is written. Caps around the
    /// decoder's chunk size put the last byte at either side of a chunk boundary.
    #[test]
    fn gunzip_accepts_exactly_the_cap_and_refuses_one_byte_more() -> Result<()> {
        use std::io::Write as _;
        let dir = TempDir::new("versions-gunzip-cap");
        let fs = vfs::RealFs::new();
        let gzip_of = |len: u64, name: &str| -> PathBuf {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&bytes).unwrap();
            let path = dir.0.join(name);
            std::fs::write(&path, enc.finish().unwrap()).unwrap();
            path
        };
        for cap in [1, COPY_CHUNK - 1, COPY_CHUNK, 2 * COPY_CHUNK + 1] {
            let exact = gzip_of(cap, &format!("exact-{cap}.gz"));
            let out = dir.0.join(format!("exact-{cap}.out"));
            assert_eq!(gunzip_file(&fs, &exact, &out, cap)?, cap);
            assert_eq!(std::fs::metadata(&out).unwrap().len(), cap);

            let over = gzip_of(cap + 1, &format!("over-{cap}.gz"));
            let out = dir.0.join(format!("over-{cap}.out"));
            let e = gunzip_file(&fs, &over, &out, cap).unwrap_err();
            assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
            assert_eq!(e.quota().map(|q| q.limit_bytes), Some(cap), "{e}");
            assert!(e.message().contains(&format!("is {cap} bytes")), "{e}");
            assert!(std::fs::metadata(&out).unwrap().len() <= cap, "nothing past the cap is written");
        }
        Ok(())
    }

    /// GC leaves the temporaries of an export still running alone (and the journal SQLite
    /// keeps beside one); once the export lets go, what is left is garbage.
    #[test]
    fn gc_leaves_the_temporaries_of_a_running_export_alone() -> Result<()> {
        let dir = TempDir::new("versions-partial-held");
        let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default())?;
        ws.register_app("com.example.t", MANIFEST)?;
        let db = ws.open_app("com.example.t")?.open("main")?;
        let done = db.export("done")?;
        let running = ws.hold_partial(&done.with_file_name("running.sqlite"))?;
        let mut journal = running.path().as_os_str().to_os_string();
        journal.push("-journal");
        let journal = PathBuf::from(journal);
        std::fs::write(running.path(), b"half a database").unwrap();
        std::fs::write(&journal, b"a journal").unwrap();

        assert_eq!(ws.gc()?.files, Vec::<PathBuf>::new());
        assert!(running.path().exists() && journal.exists());
        let temp = running.path().to_path_buf();
        drop(running);
        assert!(!temp.exists(), "letting go removes the temporary");
        let freed = ws.gc()?;
        assert_eq!(freed.files.len(), 1, "{freed:?}");
        assert!(!journal.exists() && done.exists());
        Ok(())
    }

    /// A reader still on an older state in the WAL stops the checkpoint from folding
    /// everything, so the snapshot is copied by the online backup API; it still holds every
    /// acknowledged commit, and the reader's view is untouched.
    #[test]
    fn a_reader_behind_in_the_wal_makes_a_snapshot_use_the_backup_api() -> Result<()> {
        let dir = TempDir::new("versions-fallback");
        let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default())?;
        ws.register_app("com.example.t", MANIFEST)?;
        let db = ws.open_app("com.example.t")?.open("main")?;
        db.exec("CREATE TABLE t (x INTEGER)", &[])?;
        db.exec("INSERT INTO t VALUES (1)", &[])?;
        let stop = StopCheck::with_timeout(std::time::Duration::from_secs(10), Default::default());
        let (snap, seen) = db.db.with_reader_conn(&stop, |reader| {
            crate::broker::run_internal(reader, "BEGIN; SELECT count(*) FROM t")?;
            db.exec("INSERT INTO t VALUES (2)", &[])?;
            let snap = db.snapshot("behind");
            let seen: i64 = reader
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .map_err(|e| sqlite::map_error(e, None))?;
            crate::broker::run_internal(reader, "ROLLBACK")?;
            Ok((snap?, seen))
        })?;
        assert_eq!(seen, 1, "the old reader's view did not move");
        let m = db.stats().metrics;
        assert_eq!((m.snapshots_by_copy, m.snapshots_by_backup), (0, 1));
        db.exec("INSERT INTO t VALUES (3)", &[])?;
        db.restore(snap.id, RestoreOptions::default())?;
        assert_eq!(count(&db)?, Some(Value::Integer(2)), "the snapshot holds both commits");
        // With the reader gone, the restore's undo was the replaced file itself.
        assert_eq!(db.stats().metrics.snapshots_by_copy, 1);
        Ok(())
    }

    /// A reader still on the WAL when a restore flips keeps the TRUNCATE checkpoint from
    /// folding the replaced file's WAL, so the replaced file alone is not its last state: the
    /// undo snapshot is then copied out through SQLite, and still holds every commit.
    #[test]
    fn a_reader_on_the_wal_at_a_restore_makes_the_undo_a_copy() -> Result<()> {
        let dir = TempDir::new("versions-undo-copy");
        let broker = crate::BrokerOptions { busy_timeout_ms: 50, ..Default::default() };
        let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions { broker, ..Default::default() })?;
        ws.register_app("com.example.t", MANIFEST)?;
        let db = ws.open_app("com.example.t")?.open("main")?;
        db.exec("CREATE TABLE t (x INTEGER)", &[])?;
        let snap = db.snapshot("empty")?;
        db.exec("INSERT INTO t VALUES (1)", &[])?;
        let stop = StopCheck::with_timeout(std::time::Duration::from_secs(10), Default::default());
        let undo = db.db.with_reader_conn(&stop, |reader| {
            crate::broker::run_internal(reader, "BEGIN; SELECT count(*) FROM t")?;
            db.exec("INSERT INTO t VALUES (2)", &[])?;
            let undo = db.restore(snap.id, RestoreOptions::default());
            crate::broker::run_internal(reader, "ROLLBACK")?;
            undo
        })?;
        assert_eq!(count(&db)?, Some(Value::Integer(0)), "restored to the empty snapshot");
        let m = db.stats().metrics;
        assert_eq!((m.snapshots_by_copy, m.snapshots_by_backup), (1, 1), "the undo was copied: {m:?}");
        db.restore(undo, RestoreOptions::default())?;
        assert_eq!(count(&db)?, Some(Value::Integer(2)), "the undo holds both commits");
        Ok(())
    }
}
