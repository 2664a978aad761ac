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

use crate::api::Database;
use crate::sqlite::{self, StopCheck};
use crate::store::record::{validate_label, SnapshotEntry};
use crate::store::{layout, NewSnapshot, NewVersion, Retention};
use crate::vfs::{self, OpenMode, Vfs};
use crate::{Error, ErrorCode, Result};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Functions a trigger or view in an imported database may not call.
pub const IMPORT_DENIED_FUNCTIONS: [&str; 6] =
    ["load_extension", "fts3_tokenizer", "readfile", "writefile", "edit", "sqlite_offset"];

/// Options of [`Database::restore`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Restore even if the snapshot's schema version differs from the current one.
    pub allow_schema_change: bool,
}

/// Options of [`Database::import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Tables the imported database must have (the optional expected-schema check).
    pub expected_tables: Vec<String>,
}

/// What an import checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The new live file.
    pub file: Uuid,
    /// Its size in bytes.
    pub size: u64,
    /// The checks that passed, in order.
    pub checks: Vec<&'static str>,
}

/// How [`Database::export_as`], [`Database::export_to_path_as`] and [`Database::backup_as`]
/// write their file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExportFormat {
    /// A plain `.sqlite` file (rollback-journal mode) that the stock `sqlite3` shell opens.
    #[default]
    Sqlite,
    /// The same file, gzip-compressed (`.sqlite.gz`, one gzip member, DEFLATE level 6).
    /// [`Database::import`] takes such files as they are.
    SqliteGzip,
}

impl ExportFormat {
    /// The file name suffix: `.sqlite` or `.sqlite.gz`.
    pub fn suffix(self) -> &'static str {
        match self {
            ExportFormat::Sqlite => ".sqlite",
            ExportFormat::SqliteGzip => ".sqlite.gz",
        }
    }
}

/// The two bytes every gzip member starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a [`vfs::VfsFile`] from the start, for decoders that want [`std::io::Read`]. It keeps
/// the file's own read error, so the caller can tell it from the decoder's complaints about
/// the data (both arrive as an [`std::io::Error`]).
struct VfsReader<'a> {
    file: &'a dyn vfs::VfsFile,
    offset: u64,
    failed: Option<vfs::VfsError>,
}

impl std::io::Read for VfsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.file.read_at(buf, self.offset) {
            Ok(n) => {
                self.offset += n as u64;
                Ok(n)
            }
            Err(e) => {
                let err = std::io::Error::other(e.to_string());
                self.failed = Some(e);
                Err(err)
            }
        }
    }
}

/// Compresses `from` into the new file `to` with gzip; returns the compressed size.
fn gzip_file(fs: &dyn Vfs, from: &Path, to: &Path) -> Result<u64> {
    use std::io::Write as _;
    let src = fs.open(from, OpenMode::Read)?;
    let dst = fs.open(to, OpenMode::CreateNew)?;
    let len = src.len()?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut buf = vec![0u8; vfs::COPY_CHUNK_BYTES];
    let (mut read, mut written) = (0u64, 0u64);
    while read < len {
        let n = vfs::read_full(src.as_ref(), &mut buf, read)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else { break };
        encoder.write_all(chunk).map_err(|e| Error::internal(format!("gzip: {e}")))?;
        read += n as u64;
        let out = std::mem::take(encoder.get_mut());
        vfs::write_all_at(dst.as_ref(), &out, written)?;
        written += out.len() as u64;
    }
    let tail = encoder.finish().map_err(|e| Error::internal(format!("gzip: {e}")))?;
    vfs::write_all_at(dst.as_ref(), &tail, written)?;
    Ok(written + tail.len() as u64)
}

/// Decompresses the gzip file `from` into the new file `to`, refusing (before writing past
/// it) output larger than `max_bytes`. Returns the decompressed size. A damaged or truncated
/// gzip stream is `Corrupt` naming the `gzip` check; a failed read of `from` is the
/// filesystem's error (`Io`), which says nothing about the data, marked as outside the
/// workspace (it does not poison the database).
fn gunzip_file(fs: &dyn Vfs, from: &Path, to: &Path, max_bytes: u64) -> Result<u64> {
    use std::io::Read as _;
    let src = fs.open(from, OpenMode::Read).map_err(|e| Error::from(e).outside_workspace())?;
    let dst = fs.open(to, OpenMode::CreateNew)?;
    let reader = VfsReader { file: src.as_ref(), offset: 0, failed: None };
    let mut decoder = flate2::read::MultiGzDecoder::new(reader);
    let mut buf = vec![0u8; vfs::COPY_CHUNK_BYTES];
    let mut written = 0u64;
    // Each round writes at least one byte or ends, and the cap bounds the bytes.
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                return Err(match decoder.get_mut().failed.take() {
                    Some(read) => {
                        Error::from(read).context("reading the compressed import source").outside_workspace()
                    }
                    None => Error::corrupt(format!(
                        "import check 'gzip' failed: the compressed source is damaged or truncated ({e})"
                    )),
                })
            }
        };
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else { break };
        if written + n as u64 > max_bytes {
            return Err(Error::quota_exceeded(crate::QuotaDetail {
                limit_name: "maxSizeMB of the database (decompressed import)".into(),
                limit_bytes: max_bytes,
                used_bytes: 0,
                requested_bytes: written + n as u64,
            }));
        }
        vfs::write_all_at(dst.as_ref(), chunk, written)?;
        written += n as u64;
    }
    Ok(written)
}

/// The size a gzip file says its content has (its ISIZE trailer: the size modulo 2^32), or
/// `None` when the file is too short to have one.
fn gzip_stated_size(fs: &dyn Vfs, path: &Path, len: u64) -> Result<Option<u64>> {
    if len < 18 {
        return Ok(None);
    }
    let mut trailer = [0u8; 4];
    let n = fs
        .open(path, OpenMode::Read)
        .and_then(|f| vfs::read_full(f.as_ref(), &mut trailer, len - 4))
        .map_err(|e| Error::from(e).outside_workspace())?;
    Ok((n == 4).then(|| u64::from(u32::from_le_bytes(trailer))))
}

/// Creates an export or backup directory and makes it durable in its parent.
fn create_export_dir(fs: &dyn Vfs, dir: &Path) -> Result<()> {
    if crate::sabotage::active(crate::sabotage::Sabotage::ExportDirNotDurable) {
        return Ok(vfs::create_dir_all(fs, dir)?);
    }
    Ok(vfs::create_dir_all_durable(fs, dir)?)
}

/// What a flip installed and what it replaced.
#[derive(Debug)]
struct Installed {
    /// The new live file.
    file: Uuid,
    /// The file it replaced.
    replaced: Uuid,
    /// The replaced version's schema version.
    replaced_schema: u64,
    /// Whether the flip's TRUNCATE checkpoint folded the replaced file's whole WAL into it,
    /// so the file alone holds its last state.
    replaced_folded: bool,
    /// A lease keeping the replaced file from GC, when the caller asked to keep it.
    replaced_lease: Option<crate::store::LeaseId>,
    /// The replaced file's version (generation) in the broker.
    replaced_generation: u64,
    /// [`DbShared::commits`](crate::broker::DbShared) when the flip folded the WAL into the
    /// replaced file: with the writer held, its last commit.
    replaced_commits: u64,
}

/// What [`Database::with_pinned_live`] ran while the live file was frozen.
struct Pinned<T> {
    /// What the function returned.
    value: T,
    /// The pinned file's version (generation).
    generation: u64,
    /// Commits on the writer when it was pinned ([`Installed::replaced_commits`]).
    commits: u64,
}

/// One migration step, as the host SDK gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStep {
    /// Version before the step.
    pub from: u64,
    /// Version after it.
    pub to: u64,
    /// SQL that moves `from` → `to`.
    pub up: String,
    /// SQL that moves `to` → `from`.
    pub down: String,
}

/// A migration: the version the app wants and the steps to get there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationPlan {
    /// The target version.
    pub current_version: u64,
    /// The steps.
    pub steps: Vec<MigrationStep>,
}

/// Most steps a migration plan may have.
pub const MIGRATION_STEPS_MAX: usize = 1000;

/// What a migration did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Version before.
    pub from: u64,
    /// Version after.
    pub to: u64,
    /// The steps applied, as (from, to) pairs in order (downgrades have from > to).
    pub applied: Vec<(u64, u64)>,
    /// The automatic snapshot taken before (none for a dry run or a no-op).
    pub snapshot: Option<Uuid>,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
}

impl MigrationPlan {
    /// Parses the host SDK's JSON shape `{"currentVersion":2,"steps":[{"from":0,"to":1,"up":"…","down":"…"}]}`.
    pub fn from_json(text: &str) -> Result<MigrationPlan> {
        let bad = |why: &str| Error::invalid_argument(format!("migration plan: {why}"));
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(&format!("invalid JSON: {e}")))?;
        let current_version = v
            .get("currentVersion")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| bad("currentVersion must be a whole number"))?;
        let steps_v =
            v.get("steps").and_then(|x| x.as_array()).ok_or_else(|| bad("steps must be an array"))?;
        let mut steps = Vec::new();
        for (i, s) in steps_v.iter().enumerate() {
            let num = |k: &str| {
                s.get(k)
                    .and_then(|x| x.as_u64())
                    .ok_or_else(|| bad(&format!("steps[{i}].{k} must be a whole number")))
            };
            let text = |k: &str| {
                s.get(k)
                    .and_then(|x| x.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| bad(&format!("steps[{i}].{k} must be a string")))
            };
            let down = match s.get("down") {
                None => String::new(),
                Some(_) => text("down")?,
            };
            steps.push(MigrationStep { from: num("from")?, to: num("to")?, up: text("up")?, down });
        }
        Ok(MigrationPlan { current_version, steps })
    }

    /// Checks the chain before anything is touched: bounded size, no duplicate or backward
    /// steps, and a path from `from` to the target. Returns the steps to apply, in order,
    /// with `true` for up and `false` for down.
    pub fn path(&self, from: u64) -> Result<Vec<(&MigrationStep, bool)>> {
        let fail =
            |why: String| Error::new(ErrorCode::MigrationFailed, format!("invalid migration chain: {why}"));
        if self.steps.len() > MIGRATION_STEPS_MAX {
            return Err(fail(format!("{} steps, the limit is {MIGRATION_STEPS_MAX}", self.steps.len())));
        }
        for (i, s) in self.steps.iter().enumerate() {
            if s.to <= s.from {
                return Err(fail(format!(
                    "step {i} goes from {} to {}: steps must go up (cycle)",
                    s.from, s.to
                )));
            }
            if self.steps.iter().take(i).any(|o| o.from == s.from) {
                return Err(fail(format!("two steps start at version {} (duplicate)", s.from)));
            }
            if self.steps.iter().take(i).any(|o| o.to == s.to) {
                return Err(fail(format!("two steps end at version {} (duplicate)", s.to)));
            }
        }
        let target = self.current_version;
        let mut path = Vec::new();
        let mut at = from;
        // Each iteration moves `at` strictly toward the target, so the loop ends within
        // steps.len() + 1 iterations; the bound is a guard.
        for _ in 0..=self.steps.len() {
            if at == target {
                return Ok(path);
            }
            if at < target {
                let step = self.steps.iter().find(|s| s.from == at).ok_or_else(|| {
                    fail(format!("no step starts at version {at} (gap on the way to {target})"))
                })?;
                if step.to > target {
                    return Err(fail(format!(
                        "step {}→{} overshoots the target {target}",
                        step.from, step.to
                    )));
                }
                path.push((step, true));
                at = step.to;
            } else {
                let step = self.steps.iter().find(|s| s.to == at).ok_or_else(|| {
                    fail(format!("no step ends at version {at}, so it cannot be downgraded"))
                })?;
                if step.from < target {
                    return Err(fail(format!(
                        "downgrade step {}→{} overshoots the target {target}",
                        step.to, step.from
                    )));
                }
                path.push((step, false));
                at = step.from;
            }
        }
        Err(fail("the chain does not reach the target".into()))
    }
}

/// CRC-32C of a step's SQL, as recorded in `_sila_meta`.
pub fn step_checksum(sql: &str) -> String {
    format!("{:08x}", crc32c::crc32c(sql.as_bytes()))
}

const META_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sila_meta (\
    version INTEGER NOT NULL, applied_at INTEGER NOT NULL, step_from INTEGER NOT NULL, \
    step_to INTEGER NOT NULL, direction TEXT NOT NULL, checksum TEXT NOT NULL)";

/// The schema version recorded in `_sila_meta` (0 when the table does not exist).
pub fn read_schema_version(conn: &Connection) -> Result<u64> {
    let exists: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '_sila_meta'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sqlite::map_error(e, None))?;
    if exists == 0 {
        return Ok(0);
    }
    let v: Option<i64> = conn
        .query_row("SELECT version FROM _sila_meta ORDER BY rowid DESC LIMIT 1", [], |r| r.get(0))
        .map_err(|e| sqlite::map_error(e, None))
        .or_else(|e| if e.code() == ErrorCode::Sqlite { Ok(None) } else { Err(e) })?;
    Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
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

/// Checks a database file that is about to become live: header, page size, WAL mode file
/// without its WAL, integrity with cell_size_check, denied functions in the schema, expected
/// tables; then sets WAL mode. Returns the names of the checks passed. Every failure names
/// the check.
fn check_candidate(
    vfs: &dyn Vfs,
    vfs_name: Option<&str>,
    path: &Path,
    source_wal: Option<&Path>,
    options: &ImportOptions,
) -> Result<Vec<&'static str>> {
    let fail = |check: &str, code: ErrorCode, why: String| {
        Error::new(code, format!("import check '{check}' failed: {why}"))
    };
    let mut passed = Vec::new();
    let mut header = [0u8; 100];
    let n = vfs::read_full(vfs.open(path, OpenMode::Read)?.as_ref(), &mut header, 0)?;
    if n < 100 || header.get(..16) != Some(b"SQLite format 3\0".as_slice()) {
        return Err(fail(
            "header",
            ErrorCode::Corrupt,
            "not a SQLite 3 database (or encrypted, or truncated)".into(),
        ));
    }
    passed.push("header");
    let raw = u32::from(u16::from_be_bytes([header[16], header[17]]));
    let page_size = if raw == 1 { 65_536 } else { raw };
    if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(fail("page_size", ErrorCode::Corrupt, format!("page size {raw} is invalid")));
    }
    let len = vfs.file_len(path)?.unwrap_or(0);
    if !len.is_multiple_of(u64::from(page_size)) {
        return Err(fail(
            "page_size",
            ErrorCode::Corrupt,
            format!("{len} bytes is not a whole number of {page_size}-byte pages (truncated?)"),
        ));
    }
    passed.push("page_size");
    let wal_mode = header[18] == 2 || header[19] == 2;
    if wal_mode {
        if let Some(wal) = source_wal {
            if vfs.file_len(wal).map_err(|e| Error::from(e).outside_workspace())?.unwrap_or(0) > 0 {
                return Err(fail(
                    "wal",
                    ErrorCode::InvalidArgument,
                    format!("the source is in WAL mode and {} holds commits not in the main file; checkpoint it first", wal.display()),
                ));
            }
        }
    }
    passed.push("wal");
    let conn = open_plain(vfs_name, path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| fail("open", ErrorCode::Corrupt, e.message().to_string()))?;
    let pragma = |sql: &str| -> std::result::Result<Vec<String>, Error> {
        let mut stmt = conn.prepare(sql).map_err(|e| sqlite::map_error(e, None))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(|e| sqlite::map_error(e, None))?;
        let mut out = Vec::new();
        for r in rows.take(100) {
            out.push(r.map_err(|e| sqlite::map_error(e, None))?);
        }
        Ok(out)
    };
    conn.execute_batch("PRAGMA trusted_schema=OFF; PRAGMA cell_size_check=ON")
        .map_err(|e| fail("open", ErrorCode::Corrupt, sqlite::map_error(e, None).message().to_string()))?;
    let integrity = pragma("PRAGMA integrity_check")
        .map_err(|e| fail("integrity_check", ErrorCode::Corrupt, e.message().to_string()))?;
    if integrity != ["ok"] {
        return Err(fail("integrity_check", ErrorCode::Corrupt, integrity.join("; ")));
    }
    passed.push("integrity_check");
    passed.push("cell_size_check");
    let mut stmt = conn
        .prepare("SELECT type, name, lower(coalesce(sql, '')) FROM sqlite_schema WHERE type IN ('trigger', 'view')")
        .map_err(|e| fail("schema", ErrorCode::Corrupt, sqlite::map_error(e, None).message().to_string()))?;
    let objects = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
        .map_err(|e| fail("schema", ErrorCode::Corrupt, sqlite::map_error(e, None).message().to_string()))?;
    for o in objects {
        let (kind, name, sql) = o.map_err(|e| {
            fail("schema", ErrorCode::Corrupt, sqlite::map_error(e, None).message().to_string())
        })?;
        if let Some(f) = IMPORT_DENIED_FUNCTIONS.iter().find(|f| sql.contains(*f)) {
            return Err(fail(
                "schema",
                ErrorCode::PolicyDenied,
                format!("{kind} {name:?} calls {f}(), which the policy denies"),
            ));
        }
    }
    drop(stmt);
    passed.push("schema");
    for table in &options.expected_tables {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .map_err(|e| sqlite::map_error(e, None))?;
        if n == 0 {
            return Err(fail(
                "expected_schema",
                ErrorCode::InvalidArgument,
                format!("table {table:?} is missing"),
            ));
        }
    }
    passed.push("expected_schema");
    drop(conn);
    set_wal_mode(vfs_name, path)
        .map_err(|e| fail("journal_mode", ErrorCode::Corrupt, e.message().to_string()))?;
    passed.push("journal_mode");
    Ok(passed)
}

/// Switches a closed database file to WAL mode. The switch leaves an empty WAL, and closing
/// the only connection removes it: the file is self-contained when it is synced and flipped.
fn set_wal_mode(vfs_name: Option<&str>, path: &Path) -> Result<()> {
    let conn = open_plain(vfs_name, path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let mode = sqlite::open::set_journal_mode(&conn, "WAL")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::corrupt(format!("could not switch to WAL (got {mode})")));
    }
    conn.close().map_err(|(_, e)| sqlite::map_error(e, None).context("closing the candidate"))
}

impl Database {
    fn key(&self) -> crate::store::DbKey {
        self.db.config().key.clone()
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

    /// Brings the store's view of the live file sizes up to date (the quota ledger).
    fn refresh_sizes(&self) -> Result<(u64, u64)> {
        let key = self.key();
        let (db_bytes, wal_bytes) = self.db.sizes();
        let file = self.ws.with_store(|s| s.pointer(&key).map(|p| p.file))?;
        let name = layout::db_file_name(file);
        self.ws.with_store(|s| {
            s.set_file_size(&key, &name, db_bytes)?;
            s.set_file_size(&key, &format!("{name}-wal"), wal_bytes)
        })?;
        Ok((db_bytes, wal_bytes))
    }

    /// The schema version recorded by migrations (0 before the first).
    pub fn schema_version(&self) -> Result<u64> {
        let stop = self.ws.broker().stop_after(self.ws.broker().options().statement_timeout);
        self.db.with_reader_conn(&stop, read_schema_version)
    }

    /// The snapshots of this database, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        let key = self.key();
        self.ws.with_store(|s| s.manifest(&key).map(|m| m.snapshots.clone()))
    }

    /// Takes a consistent point-in-time snapshot while the database stays live. The snapshot
    /// is immutable (`snapshots/<uuid>.sqlite`, read-only on disk) and listed in the manifest
    /// once durable. Refused with `QuotaExceeded` before any IO when it would not fit.
    pub fn snapshot(&self, label: &str) -> Result<SnapshotEntry> {
        self.db.check_writable()?;
        let result = self.snapshot_inner(label);
        self.fail_stop(result)
    }

    fn snapshot_inner(&self, label: &str) -> Result<SnapshotEntry> {
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
                self.ws.abort_op(op);
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
    fn list_snapshot(&self, op: crate::store::OpId, id: Uuid, info: NewSnapshot) -> Result<SnapshotEntry> {
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
    fn copy_live(&self, dest: &Path) -> Result<(u32, u64)> {
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
    fn pinned_copy(&self, stop: &StopCheck, dest: &Path) -> Result<Option<(u32, u64)>> {
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
    fn with_pinned_live<T>(
        &self,
        stop: &StopCheck,
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<Option<Pinned<T>>> {
        self.db.with_versioned_reader(stop, |reader, version| {
            let _pin = self.db.pin();
            let live = self.exclusive(|writer| {
                let row = crate::broker::internal_int_row(writer, "PRAGMA wal_checkpoint(PASSIVE)")?;
                self.db.metrics.record_checkpoint();
                // (busy, frames in the WAL, frames checkpointed); -1s when not in WAL mode.
                let complete = matches!(row.as_slice(), [0, log, done] if *log >= 0 && log == done);
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
    fn pinned_undo_sum(&self) -> Result<Option<Pinned<(u32, u64)>>> {
        let stop = self.ws.broker().stop_after(self.ws.broker().options().transaction_timeout);
        let fs = self.fs();
        self.with_pinned_live(&stop, |live| Ok(vfs::checksum_file_with(fs, live, to_rollback_header)?))
    }

    /// Removes a snapshot from the manifest; GC deletes its file later.
    pub fn drop_snapshot(&self, id: Uuid) -> Result<()> {
        self.db.check_writable()?;
        let result = self.drop_snapshot_inner(id);
        self.fail_stop(result)
    }

    fn drop_snapshot_inner(&self, id: Uuid) -> Result<()> {
        let key = self.key();
        let plan = self.ws.with_store(|s| s.plan_drop_snapshots(&key, &[id]))?;
        self.ws.run_plan(&plan)
    }

    /// Applies a retention policy; returns the snapshots it dropped (GC deletes their files).
    pub fn apply_retention(&self, policy: Retention) -> Result<Vec<Uuid>> {
        self.db.check_writable()?;
        let result = self.apply_retention_inner(policy);
        self.fail_stop(result)
    }

    fn apply_retention_inner(&self, policy: Retention) -> Result<Vec<Uuid>> {
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

    /// Restores a snapshot: takes an undo snapshot of the current state (its id is returned:
    /// restoring it reverses this restore), copies the snapshot to a new file and flips.
    /// An unknown or dropped snapshot is `NotFound`; a different schema version is refused
    /// unless `options.allow_schema_change`; a snapshot whose checksum no longer matches is
    /// `Corrupt`. Nothing changes on any refusal. If the flip committed but the undo
    /// snapshot could not be kept, the error says the restore took effect, and the database
    /// is poisoned until the workspace is reopened (the caller re-reads what it holds).
    pub fn restore(&self, id: Uuid, options: RestoreOptions) -> Result<Uuid> {
        self.db.check_writable()?;
        let result = self.restore_inner(id, options);
        self.fail_stop(result)
    }

    fn restore_inner(&self, id: Uuid, options: RestoreOptions) -> Result<Uuid> {
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
        let undo_label = format!("undo of restore of {id}");
        validate_label(&undo_label)?;
        // The undo snapshot is made after the flip, where a refusal could no longer leave the
        // database as it was: make sure now that the manifest has room for it. (It is the
        // replaced file renamed, so it adds no bytes.)
        self.ws.with_store(|s| s.check_room_for_snapshot(&key, 0))?;
        let label = format!("restore of {id}");
        // The undo snapshot will be the replaced file, and recording it means reading it for
        // its checksum. Where the executor allows a helper thread, that read runs now, on the
        // pinned live file, while this thread copies the snapshot; it counts only if nothing
        // was committed between the pin and the flip (see `keep_replaced`), else the file is
        // read again after the flip. A failed early read is not this restore's error: the
        // read after the flip does the same work and reports what it finds.
        let helper = self.ws.broker().executor().allows_helper_threads();
        let (installed, early_sum) = std::thread::scope(|scope| {
            let summing = helper.then(|| scope.spawn(|| self.pinned_undo_sum()));
            let mut early_sum = None;
            let installed = self.install_new_version(
                entry.size,
                &label,
                true,
                |dest| self.copy_snapshot_for_restore(&entry, &snap_path, dest),
                || {
                    // Joined before the flip: the pin must end before its checkpoint.
                    early_sum = summing.and_then(|h| h.join().ok()).and_then(|r| r.ok()).flatten();
                },
            );
            (installed, early_sum)
        });
        let installed = installed?;
        // The undo snapshot is the replaced file itself, kept after the flip. The flip was
        // the commit point: if keeping the undo fails, the restore has taken effect but the
        // caller gets an error, so the database is poisoned (fail-stop) until a reopen, and no
        // work runs on a state the caller was told may not exist.
        let undo = self.keep_replaced(&installed, &undo_label, early_sum).map_err(|e| {
            let e = e.context(format_args!(
                "snapshot {id} was restored, but keeping the replaced version as its undo snapshot \
                 failed; the restore took effect and the database refuses work until the workspace \
                 is reopened"
            ));
            self.db.poison(e.message());
            e
        })?;
        Ok(undo.id)
    }

    /// Fills `dest` with the snapshot's bytes for a restore, verifying its checksum.
    fn copy_snapshot_for_restore(&self, entry: &SnapshotEntry, snap_path: &Path, dest: &Path) -> Result<()> {
        // The checksum is verified on the bytes copied, so what becomes live is exactly what
        // the snapshot recorded: a consistent copy the engine itself took from a live
        // database. That is why a restore runs no integrity_check (seconds on a large file);
        // it only switches the copy back to WAL.
        let ((crc, size), cloned) =
            clone_or_copy(self.fs(), snap_path, dest, false).map_err(|e| e.context("copy snapshot"))?;
        if cloned {
            self.db.metrics.record_reflink();
        }
        if crc != entry.crc32c || size != entry.size {
            return Err(Error::corrupt(format!(
                "snapshot {} fails its checksum ({crc:08x}/{size} bytes on disk, {:08x}/{} in the manifest)",
                entry.id, entry.crc32c, entry.size
            )));
        }
        set_wal_mode(self.vfs_name(), dest)
    }

    /// Imports a database file: copies it into the workspace (the caller's file is never
    /// opened in place), checks the copy (header, page size, WAL, integrity with
    /// cell_size_check, schema, expected tables, size against the quota), sets WAL mode and
    /// flips. On any failure nothing changes and the error names the failed check.
    pub fn import(&self, source: &Path, options: ImportOptions) -> Result<ImportReport> {
        self.db.check_writable()?;
        let result = self.import_inner(source, options);
        self.fail_stop(result)
    }

    fn import_inner(&self, source: &Path, options: ImportOptions) -> Result<ImportReport> {
        self.refuse_read_only()?;
        // The caller's file failing to read is `Io`, but it says nothing about the workspace:
        // such errors are marked so that they do not poison the database.
        let outside = |e: vfs::VfsError| Error::from(e).outside_workspace();
        let source_len = self.fs().file_len(source).map_err(outside)?.ok_or_else(|| {
            Error::new(ErrorCode::NotFound, format!("import source {} does not exist", source.display()))
        })?;
        let mut wal = source.as_os_str().to_os_string();
        wal.push("-wal");
        let source_wal = PathBuf::from(wal);
        let mut magic = [0u8; 2];
        self.fs()
            .open(source, OpenMode::Read)
            .and_then(|f| vfs::read_full(f.as_ref(), &mut magic, 0))
            .map_err(outside)?;
        let gzip = magic == GZIP_MAGIC;
        let max_bytes = self.ws.with_store(|s| s.max_size_bytes(&self.key()))?;
        // A compressed source reserves what its trailer states, at most the size cap: the
        // trailer of a damaged file may say anything, and decompression stops at the cap.
        let expected = match gzip {
            true => gzip_stated_size(self.fs(), source, source_len)?.unwrap_or(source_len).min(max_bytes),
            false => source_len,
        };
        let mut checks = Vec::new();
        let label = format!("import of {}", file_label(source));
        let installed = self.install_new_version(
            expected,
            &label,
            false,
            |dest| {
                if gzip {
                    gunzip_file(self.fs(), source, dest, max_bytes)?;
                } else {
                    vfs::copy_file(self.fs(), source, dest).map_err(|e| {
                        // Reads are of the source, writes of the new file in the workspace.
                        let from_source = e.path == source;
                        let err = Error::from(e).context("copy the import source");
                        if from_source {
                            err.outside_workspace()
                        } else {
                            err
                        }
                    })?;
                }
                // A compressed source carries no WAL beside it.
                let wal = (!gzip).then_some(source_wal.as_path());
                checks = check_candidate(self.fs(), self.vfs_name(), dest, wal, &options)?;
                if gzip {
                    checks.insert(0, "gzip");
                }
                Ok(())
            },
            || (),
        )?;
        let size = self.db.sizes().0;
        Ok(ImportReport { file: installed.file, size, checks })
    }

    /// Writes a consistent copy of the live database to a host path (for operators and the
    /// CLI; apps use [`Database::export`]). The file opens in the stock `sqlite3` shell.
    /// Returns its size.
    pub fn export_to_path(&self, dest: &Path) -> Result<u64> {
        self.export_to_path_as(dest, ExportFormat::Sqlite)
    }

    /// [`Database::export_to_path`] in the given format (`dest` is used as given).
    pub fn export_to_path_as(&self, dest: &Path, format: ExportFormat) -> Result<u64> {
        self.db.check_writable()?;
        let result = self.export_to_path_inner(dest, format);
        self.fail_stop(result)
    }

    /// Writes the export under a temporary name beside `dest` (see
    /// [`crate::Workspace::hold_partial`]), syncs it, renames it to `dest` and syncs the
    /// directory: a file under the final name is always complete, and a failed export leaves
    /// none (nor its temporaries; GC removes those a crash left).
    fn export_to_path_inner(&self, dest: &Path, format: ExportFormat) -> Result<u64> {
        let refuse_existing = || -> Result<()> {
            if self.fs().exists(dest)? {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!("{} already exists", dest.display()),
                ));
            }
            Ok(())
        };
        refuse_existing()?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // What an earlier export to the same destination left when it crashed (GC sweeps the
        // workspace's areas, not a host directory).
        self.ws.remove_leftover_partials_of(dest)?;
        let temp = self.ws.hold_partial(dest);
        let written = self.write_export(temp.path(), dest, format).and_then(|size| {
            // The first check was before the copy: a file may have appeared since. The rename
            // refuses it atomically instead of replacing it.
            self.fs().rename_noreplace(temp.path(), dest).map_err(|e| match e.kind {
                vfs::VfsErrorKind::AlreadyExists => Error::new(
                    ErrorCode::AlreadyExists,
                    format!("{} already exists (it appeared while the export was written)", dest.display()),
                ),
                _ => Error::from(e),
            })?;
            Ok(size)
        });
        let size = written.map_err(|e| e.context("export"))?;
        if let Err(e) = self.fs().sync_dir(dir) {
            // The rename may not last; take it back rather than leave a file the error disowns.
            let _ = self.fs().remove_file(dest);
            return Err(Error::from(e).context("export"));
        }
        Ok(size)
    }

    /// Writes a consistent copy of the live database in `format` into the new file `to` and
    /// syncs it; returns its size. `dest` names the temporaries beside it.
    fn write_export(&self, to: &Path, dest: &Path, format: ExportFormat) -> Result<u64> {
        match format {
            ExportFormat::Sqlite => {
                self.copy_live(to)?;
            }
            ExportFormat::SqliteGzip => {
                let plain = self.ws.hold_partial(dest);
                self.copy_live(plain.path())?;
                gzip_file(self.fs(), plain.path(), to)?;
            }
        }
        let file = self.fs().open(to, OpenMode::ReadWrite)?;
        if !crate::sabotage::active(crate::sabotage::Sabotage::ExportSkipsSync) {
            file.sync()?;
        }
        Ok(file.len()?)
    }

    /// Exports into the app's own export area under a validated name
    /// (`apps/<app>/exports/<name>.sqlite`); apps never name host paths. Returns the path.
    pub fn export(&self, name: &str) -> Result<PathBuf> {
        self.export_as(name, ExportFormat::Sqlite)
    }

    /// [`Database::export`] in the given format (`<name>.sqlite` or `<name>.sqlite.gz`).
    pub fn export_as(&self, name: &str, format: ExportFormat) -> Result<PathBuf> {
        let name = crate::names::DbName::new(name)?;
        let key = self.key();
        let dir = self.ws.driver().abs(&layout::exports_dir(key.app));
        // Durable before the export is: an export reported done must survive a crash.
        create_export_dir(self.fs(), &dir)?;
        let dest = dir.join(format!("{}{}", name.as_str(), format.suffix()));
        self.export_to_path_as(&dest, format)?;
        Ok(dest)
    }

    /// Writes an online backup into the workspace's backup area
    /// (`backups/<app_uuid>/<db>/<uuid>.sqlite`) and keeps the newest `keep_last` backups of
    /// this database. Returns the backup's id and path.
    pub fn backup(&self, keep_last: usize) -> Result<(Uuid, PathBuf)> {
        self.backup_as(keep_last, ExportFormat::Sqlite)
    }

    /// [`Database::backup`] in the given format (`<uuid>.sqlite` or `<uuid>.sqlite.gz`); the
    /// `keep_last` newest backups of either format are kept.
    pub fn backup_as(&self, keep_last: usize, format: ExportFormat) -> Result<(Uuid, PathBuf)> {
        self.db.check_writable()?;
        let result = self.backup_inner(keep_last, format);
        self.fail_stop(result)
    }

    fn backup_inner(&self, keep_last: usize, format: ExportFormat) -> Result<(Uuid, PathBuf)> {
        let key = self.key();
        let dir = self.ws.driver().abs(&layout::backups_dir(key.app, &key.db));
        create_export_dir(self.fs(), &dir)?;
        let id = self.ws.new_uuid();
        let dest = dir.join(format!("{}{}", id.hyphenated(), format.suffix()));
        self.export_to_path_as(&dest, format)?;
        // The workspace's UUID v7 names sort in the order they were made (store::ids);
        // compressed and plain backups count alike. Only complete backups have such a name:
        // temporaries (`.partial`) never count. The backup just made is always kept, even if
        // a clock stepped back across a restart makes an older name sort after it.
        let own = dest.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut names: Vec<String> = self
            .fs()
            .list_dir(&dir)?
            .into_iter()
            .map(|e| e.name)
            .filter(|n| {
                let plain = n.strip_suffix(".gz").unwrap_or(n);
                matches!(layout::classify(plain), layout::FileKind::Database(_)) && Some(n) != own.as_ref()
            })
            .collect();
        names.sort();
        let excess = names.len().saturating_sub(keep_last.max(1) - 1);
        for old in names.iter().take(excess) {
            self.fs().remove_file(&dir.join(old))?;
        }
        self.fs().sync_dir(&dir)?;
        Ok((id, dest))
    }

    /// Makes a new live file with `write` (which fills the given path and checks it), then
    /// flips to it under the exclusive writer. With `keep_replaced`, the replaced file is
    /// leased for the caller (see [`Installed::replaced_lease`]), which must release it.
    /// `before_flip` runs once the new file is written and synced, just before the writer is
    /// taken (not at all when writing it failed).
    fn install_new_version(
        &self,
        expected_bytes: u64,
        label: &str,
        keep_replaced: bool,
        write: impl FnOnce(&Path) -> Result<()>,
        before_flip: impl FnOnce(),
    ) -> Result<Installed> {
        validate_label(label)?;
        let label = label.to_string();
        let key = self.key();
        self.refresh_sizes()?;
        let file = self.ws.new_uuid();
        let op = self.ws.with_store(|s| s.begin_new_file(&key, file, expected_bytes))?;
        let dest = self.ws.driver().abs(&layout::db_file(key.app, &key.db, file));
        if let Err(e) = write(&dest) {
            self.ws.abort_op(op);
            return Err(e);
        }
        // The candidate was checked and closed; from here on it is only synced and flipped.
        // Synced here, before the writer is taken: the flip's own sync of it is then cheap,
        // and writers do not wait for the new file to reach the disk.
        let synced = self.fs().open(&dest, OpenMode::ReadWrite).and_then(|f| {
            f.sync()?;
            f.len()
        });
        let size = match synced {
            Ok(len) => len,
            Err(e) => {
                self.ws.abort_op(op);
                return Err(e.into());
            }
        };
        let schema = match open_plain(self.vfs_name(), &dest, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| read_schema_version(&c))
        {
            Ok(v) => v,
            Err(e) => {
                self.ws.abort_op(op);
                return Err(e.context("reading the new version's schema version"));
            }
        };
        before_flip();
        let ws = self.ws.clone();
        let db = self.db.clone();
        let flipped = self.exclusive(|conn| {
            // Quiesce: every queued write before us is committed; fold the WAL into the old
            // file so nothing is orphaned. (busy, log, checkpointed) = (0, 0, 0) when the WAL
            // was folded whole and truncated; a reader still on the WAL makes it partial.
            let folded = match crate::broker::internal_int_row(conn, "PRAGMA wal_checkpoint(TRUNCATE)") {
                Ok(row) => {
                    db.metrics.record_checkpoint();
                    row == [0, 0, 0]
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
            Ok(installed) => Ok(installed),
            Err(e) => {
                // A failure before plan_flip leaves the operation open: abandon it. After it,
                // the store already aborted or poisoned it; aborting again is a no-op.
                self.ws.abort_op(op);
                Err(e.context("flipping to the new version"))
            }
        }
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
    fn keep_replaced(
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

    fn keep_replaced_inner(
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
    fn adopt_replaced(
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

    /// Runs a migration: validates the chain, checks free disk space, takes an automatic
    /// snapshot, then runs every step in one transaction holding the writer, records each in
    /// `_sila_meta` (version, applied_at, direction, checksum), checks foreign keys, and
    /// commits. Any failure rolls everything back (the snapshot stays as a safety net) and the
    /// error names the failing step and SQLite's message. A step edited after it was applied
    /// is refused. `dry_run` runs the migration on a private copy and changes nothing.
    pub fn migrate(&self, plan: &MigrationPlan, dry_run: bool) -> Result<MigrationReport> {
        self.db.check_writable()?;
        let result = self.migrate_inner(plan, dry_run);
        self.fail_stop(result)
    }

    fn migrate_inner(&self, plan: &MigrationPlan, dry_run: bool) -> Result<MigrationReport> {
        self.refuse_read_only()?;
        let from = self.schema_version()?;
        let path = plan.path(from)?;
        let applied: Vec<(u64, u64)> =
            path.iter().map(|(s, up)| if *up { (s.from, s.to) } else { (s.to, s.from) }).collect();
        self.check_applied_checksums(plan)?;
        if path.is_empty() {
            return Ok(MigrationReport { from, to: from, applied, snapshot: None, dry_run });
        }
        let (db_bytes, wal_bytes) = self.refresh_sizes()?;
        self.check_free_space(2 * (db_bytes + wal_bytes))?;
        let now = self.ws.now_ms();
        if dry_run {
            let tmp = self.ws.root().join(crate::workspace::TMP_DIR);
            vfs::create_dir_all(self.fs(), &tmp)?;
            let copy = tmp.join(format!("dry-run-{}.sqlite", self.ws.new_uuid()));
            let stop = self.ws.broker().stop_after(self.ws.broker().options().transaction_timeout);
            let result = self
                .db
                .with_reader_conn(&stop, |conn| backup_to(self.vfs_name(), conn, &copy))
                .and_then(|()| {
                    let conn = self.db.open_side_connection(&copy)?;
                    crate::broker::run_internal(&conn, "BEGIN IMMEDIATE")?;
                    let r = apply_steps(&conn, &path, now);
                    let _ = crate::broker::run_internal(&conn, "ROLLBACK");
                    r
                });
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = copy.as_os_str().to_os_string();
                p.push(suffix);
                let _ = self.fs().remove_file(&PathBuf::from(p));
            }
            result?;
            return Ok(MigrationReport {
                from,
                to: plan.current_version,
                applied,
                snapshot: None,
                dry_run: true,
            });
        }
        let snapshot = self.snapshot(&format!("before migration {from} to {}", plan.current_version))?;
        let options = self.ws.broker().options().clone();
        let db = self.db.clone();
        self.exclusive(|conn| {
            let deadline = db.deadline_after(options.transaction_timeout);
            db.run_transaction(conn, deadline, |conn| apply_steps(conn, &path, now))
        })?;
        Ok(MigrationReport {
            from,
            to: plan.current_version,
            applied,
            snapshot: Some(snapshot.id),
            dry_run: false,
        })
    }

    /// Refuses with `QuotaExceeded` when the filesystem holding the database has less than
    /// `needed` bytes free (skipped when the filesystem cannot tell).
    fn check_free_space(&self, needed: u64) -> Result<()> {
        let path = self.db.path();
        let dir = path.parent().unwrap_or(&path);
        if let Some(free) = self.fs().free_bytes(dir)? {
            if free < needed {
                return Err(Error::quota_exceeded(crate::QuotaDetail {
                    limit_name: "free disk space for the migration (2 x database size)".into(),
                    limit_bytes: free,
                    used_bytes: 0,
                    requested_bytes: needed,
                }));
            }
        }
        Ok(())
    }

    /// Refuses a plan whose steps differ from what `_sila_meta` recorded when they ran.
    fn check_applied_checksums(&self, plan: &MigrationPlan) -> Result<()> {
        let stop = self.ws.broker().stop_after(self.ws.broker().options().statement_timeout);
        let history: Vec<(u64, u64, String)> = self.db.with_reader_conn(&stop, |conn| {
            let exists: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema WHERE name = '_sila_meta'", [], |r| r.get(0))
                .map_err(|e| sqlite::map_error(e, None))?;
            if exists == 0 {
                return Ok(Vec::new());
            }
            let mut stmt = conn
                .prepare("SELECT step_from, step_to, checksum FROM _sila_meta WHERE direction = 'up'")
                .map_err(|e| sqlite::map_error(e, None))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
                .map_err(|e| sqlite::map_error(e, None))?;
            let mut out = Vec::new();
            for r in rows.take(MIGRATION_STEPS_MAX * 4) {
                let (f, t, c) = r.map_err(|e| sqlite::map_error(e, None))?;
                out.push((u64::try_from(f).unwrap_or(0), u64::try_from(t).unwrap_or(0), c));
            }
            Ok(out)
        })?;
        for step in &plan.steps {
            if let Some((_, _, recorded)) =
                history.iter().rev().find(|(f, t, _)| *f == step.from && *t == step.to)
            {
                let now = step_checksum(&step.up);
                if *recorded != now {
                    return Err(Error::new(
                        ErrorCode::MigrationFailed,
                        format!(
                            "step {}→{} was edited after it was applied (checksum {recorded} then, {now} now); \
                             add a new step instead",
                            step.from, step.to
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn file_label(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.chars().filter(|c| (' '..='~').contains(c)).take(64).collect()
}

/// Runs the steps on `conn` (inside the caller's transaction) and records them.
fn apply_steps(conn: &Connection, path: &[(&MigrationStep, bool)], now_ms: u64) -> Result<()> {
    super::broker::run_internal(conn, META_TABLE)?;
    for (i, (step, up)) in path.iter().enumerate() {
        let (sql, from, to) =
            if *up { (&step.up, step.from, step.to) } else { (&step.down, step.to, step.from) };
        let stop = StopCheck::with_timeout(std::time::Duration::from_secs(3600), Default::default());
        sqlite::execute_batch(conn, sql, &stop).map_err(|e| {
            Error::new(
                ErrorCode::MigrationFailed,
                format!(
                    "migration step {} of {} ({from}→{to}) failed: {}; rolled back",
                    i + 1,
                    path.len(),
                    e.message()
                ),
            )
        })?;
        conn.execute(
            "INSERT INTO _sila_meta (version, applied_at, step_from, step_to, direction, checksum) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                i64::try_from(to).unwrap_or(i64::MAX),
                i64::try_from(now_ms).unwrap_or(i64::MAX),
                i64::try_from(step.from).unwrap_or(i64::MAX),
                i64::try_from(step.to).unwrap_or(i64::MAX),
                if *up { "up" } else { "down" },
                step_checksum(if *up { &step.up } else { &step.down }),
            ],
        )
        .map_err(|e| sqlite::map_error(e, None))?;
    }
    let mut stmt = conn.prepare("PRAGMA foreign_key_check").map_err(|e| sqlite::map_error(e, None))?;
    let mut rows = stmt.query([]).map_err(|e| sqlite::map_error(e, None))?;
    if let Some(row) = rows.next().map_err(|e| sqlite::map_error(e, None))? {
        let table: String = row.get(0).unwrap_or_default();
        return Err(Error::new(
            ErrorCode::MigrationFailed,
            format!("migration leaves a foreign key violation in table {table:?}; rolled back"),
        ));
    }
    Ok(())
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
        let running = ws.hold_partial(&done.with_file_name("running.sqlite"));
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
