//! Opening a connection with the security and performance pragmas of the design.
//!
//! Every connection the engine opens goes through [`open_connection`], so the defaults of the
//! security model hold for all of them: WAL (writers), `synchronous` per tier,
//! `temp_store=FILE` (see below), a capped page cache, `busy_timeout`, `mmap_size=0`,
//! `trusted_schema=OFF`, `SQLITE_DBCONFIG_DEFENSIVE`, foreign keys on, double-quoted string
//! literals off in DML, extension loading off, and `max_page_count` from the quota.
//!
//! ANALYZE policy (measured by `sila-bench --only analyze`): the bundled SQLite is built with
//! STAT4. Once `sqlite_stat4` holds samples, a cached equality lookup on an indexed column
//! re-prepares on *every* run (measured: 1.00 re-prepares per run, p50 3.7 µs → 7.6 µs), and
//! any ANALYZE rewrites `sqlite_stat*`, which expires every prepared statement. So the engine
//! never runs a plain ANALYZE, and [`optimize_on_close`] runs `PRAGMA optimize=0x10002` under
//! `PRAGMA analysis_limit=400` when the writer closes: it analyzes only tables whose statistics
//! are missing or stale, and with an analysis limit SQLite writes `sqlite_stat1` only, no
//! STAT4 samples, so new connections do not re-prepare (measured: 0.00 per run). Apps cannot
//! run ANALYZE with arguments that would write STAT4 samples beyond this (see the policy).
//!
//! Temporary storage: `temp_store=FILE`, deliberately not MEMORY. With MEMORY, SQLite keeps
//! temporary b-trees (DISTINCT, GROUP BY, materialized subqueries) in an in-memory pager that
//! never spills and gives its sorter no spill threshold, so one `SELECT DISTINCT` over a large
//! table can take any amount of the host's memory. With FILE, both use the page cache (capped
//! by `cache_size`) and spill the rest to anonymous temp files, which the confinement VFS
//! ([`super::vfs::TempLimits`]) caps per file and per workspace: temp memory and temp
//! disk are both bounded. Small sorts never touch the disk (they fit the cache).

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::errors::map_error;
use crate::{Error, ErrorCode, Result};

/// SQLite's `synchronous` setting for WAL databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `synchronous=NORMAL`: a power loss may drop the last commits but never corrupts.
    #[default]
    Normal,
    /// `synchronous=FULL`: every acknowledged commit survives a power loss.
    Full,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// How [`open_connection`] configures a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// `PRAGMA synchronous`.
    pub synchronous: Synchronous,
    /// The page cache cap in KiB, applied as `PRAGMA cache_size=-N`.
    pub cache_size_kib: u32,
    /// `PRAGMA max_page_count` (the database size limit in pages), if any. SQLite never sets it
    /// below the current page count, so an already larger database stays readable.
    pub max_page_count: Option<u32>,
    /// How long a statement waits for a lock before failing with `Busy`, in milliseconds.
    pub busy_timeout_ms: u32,
    /// Opens read-only, never creates the file, and leaves the journal mode alone.
    pub read_only: bool,
    /// A reader that opens read-write (a read-only connection cannot create the WAL index)
    /// but refuses writes from its first statement on (`PRAGMA query_only`) and leaves the
    /// journal mode alone: a file it opens in rollback mode is read in rollback mode. A
    /// reader may open a version a flip just retired and sealed as a snapshot (its header set
    /// to rollback mode); switching that file to WAL would rewrite a sealed file.
    pub query_only: bool,
    /// How many prepared statements the connection keeps for `prepare_cached`.
    pub statement_cache_capacity: usize,
    /// `PRAGMA auto_vacuum=INCREMENTAL` before the journal mode is set: a new file is made
    /// in incremental auto-vacuum mode (SQLite takes the mode only before the first page is
    /// written; an existing file keeps its mode).
    pub incremental_vacuum: bool,
    /// The registered SQLite VFS to open through (`None`: SQLite's default). The simulation
    /// names its bridge VFS here so SQLite's IO runs on the simulated disk.
    pub vfs: Option<String>,
}

impl Default for ConnectionOptions {
    fn default() -> ConnectionOptions {
        ConnectionOptions {
            synchronous: Synchronous::Normal,
            cache_size_kib: 8192,
            max_page_count: None,
            busy_timeout_ms: 5000,
            read_only: false,
            query_only: false,
            statement_cache_capacity: 64,
            incremental_vacuum: false,
            vfs: None,
        }
    }
}

/// Runs `PRAGMA journal_mode=<mode>` and returns the mode SQLite reports.
///
/// The statement is stepped to its end. SQLite returns the new mode as a row *before* the
/// switch commits (and syncs the header change), so reading the row and dropping the
/// statement — what `query_row` and `pragma_update_and_check` do — loses an error of that
/// commit: a failed fsync there would go unnoticed while the file's unsynced pages are gone
/// (found by the simulation's fsync-failure profile).
pub fn set_journal_mode(conn: &Connection, mode: &str) -> Result<String> {
    let sql_err = |e| map_error(e, None);
    let mut stmt = conn.prepare(&format!("PRAGMA journal_mode={mode}")).map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let reported: String = match rows.next().map_err(sql_err)? {
        Some(row) => row.get(0).map_err(sql_err)?,
        None => return Err(Error::internal("PRAGMA journal_mode returned no row")),
    };
    // One row, then SQLITE_DONE (where the switch commits); the bound only guards the loop.
    for _ in 0..4 {
        if rows.next().map_err(sql_err)?.is_none() {
            return Ok(reported);
        }
    }
    Err(Error::internal("PRAGMA journal_mode returned more than one row"))
}

/// Opens the SQLite database at `path` and applies `opts` and the security defaults.
///
/// Writers (neither `read_only` nor `query_only`) create the file if needed and switch it to
/// WAL; the call fails unless SQLite confirms `wal`. No URI filenames are accepted and a symbolic link as the
/// final path component is refused. The connection is opened without SQLite's mutex: one
/// thread at a time must use it (rusqlite's `Connection` is `Send`, not `Sync`).
pub fn open_connection(path: &Path, opts: &ConnectionOptions) -> Result<Connection> {
    let access = if opts.read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    };
    let flags = access | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let opened = match &opts.vfs {
        Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs.as_str()),
        None => Connection::open_with_flags(path, flags),
    };
    let kind = crate::fault::FileKind::of_path(path).as_str();
    let conn = opened.map_err(|e| {
        map_error(e, None).without_path(path, kind).context(format_args!("opening the {kind}"))
    })?;
    configure(&conn, opts)
        .map_err(|e| e.without_path(path, kind).context(format_args!("configuring the {kind}")))?;
    Ok(conn)
}

fn configure(conn: &Connection, opts: &ConnectionOptions) -> Result<()> {
    let sql_err = |e| map_error(e, None);
    // Connection-level hardening first, so nothing below runs without it: run-time limits,
    // defensive mode, untrusted schema, no extension loading, no file-creating ATTACH,
    // `mmap_size=0` (see `super::policy`).
    super::policy::harden(conn)?;
    // "text" in DML is an identifier, never a string literal, so redacted SQL in logs never
    // keeps a literal that SQLite would have read as a string.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false).map_err(sql_err)?;
    if opts.query_only {
        conn.pragma_update(None, "query_only", "ON").map_err(sql_err)?;
    }
    conn.busy_timeout(Duration::from_millis(u64::from(opts.busy_timeout_ms))).map_err(sql_err)?;
    if !opts.read_only && !opts.query_only {
        if opts.incremental_vacuum {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(sql_err)?;
        }
        let mode = set_journal_mode(conn, "WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::new(
                ErrorCode::Io,
                format!("SQLite refused journal_mode=WAL and reports journal_mode={mode}"),
            ));
        }
    }
    // One batch for the settings that have no C API (one prepare each all the same, but no
    // SQL built per setting). `harden` already set mmap_size and trusted_schema.
    conn.execute_batch(&format!(
        "PRAGMA synchronous={}; PRAGMA temp_store=FILE; PRAGMA cache_size=-{}",
        opts.synchronous.pragma_value(),
        opts.cache_size_kib
    ))
    .map_err(sql_err)?;
    if let Some(pages) = opts.max_page_count {
        let _: i64 = conn
            .pragma_update_and_check(None, "max_page_count", i64::from(pages), |row| row.get(0))
            .map_err(sql_err)?;
    }
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FKEY, true).map_err(sql_err)?;
    conn.set_prepared_statement_cache_capacity(opts.statement_cache_capacity);
    Ok(())
}

/// Runs `PRAGMA optimize=0x10002` under `PRAGMA analysis_limit=400` (see the module doc for
/// why this is the only ANALYZE the engine does). Call it on the writer just before closing.
pub fn optimize_on_close(conn: &Connection) -> Result<()> {
    conn.execute_batch("PRAGMA analysis_limit=400; PRAGMA optimize=0x10002")
        .map_err(|e| map_error(e, None).context("PRAGMA optimize"))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("sila-sqlite-{tag}-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pragma_i64(conn: &Connection, name: &str) -> i64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn writer_gets_the_security_defaults() {
        let dir = TempDir::new("open");
        let path = dir.0.join("a.sqlite");
        let opts = ConnectionOptions {
            max_page_count: Some(500),
            synchronous: Synchronous::Full,
            ..Default::default()
        };
        let conn = open_connection(&path, &opts).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(pragma_i64(&conn, "synchronous"), 2, "FULL");
        assert_eq!(pragma_i64(&conn, "temp_store"), 1, "FILE: spills are capped by the confinement VFS");
        assert_eq!(pragma_i64(&conn, "cache_size"), -8192);
        assert_eq!(pragma_i64(&conn, "busy_timeout"), 5000);
        assert_eq!(pragma_i64(&conn, "max_page_count"), 500);
        assert_eq!(pragma_i64(&conn, "mmap_size"), 0);
        assert_eq!(pragma_i64(&conn, "journal_size_limit"), crate::sqlite::policy::JOURNAL_SIZE_LIMIT_BYTES);
        for (limit, value) in crate::sqlite::policy::LIMITS {
            assert_eq!(conn.limit(limit).unwrap(), value, "{limit:?}");
        }
        assert_eq!(pragma_i64(&conn, "trusted_schema"), 0);
        assert_eq!(pragma_i64(&conn, "foreign_keys"), 1);
        assert!(conn.db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE).unwrap());
        assert!(!conn.db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML).unwrap());
        // Defensive mode ignores writable_schema, so the schema cannot be edited by hand.
        conn.execute_batch("PRAGMA writable_schema=ON").unwrap();
        assert_eq!(pragma_i64(&conn, "writable_schema"), 0);
        // Double-quoted strings are identifiers only.
        let err = conn.execute_batch("SELECT \"no such column\"").unwrap_err();
        assert!(err.to_string().contains("no such column"), "{err}");
        optimize_on_close(&conn).unwrap();
    }

    /// The close-time optimize leaves no STAT4 samples (which would make cached lookups
    /// re-prepare on every run) but does write stat1.
    #[test]
    fn optimize_on_close_writes_stat1_but_no_stat4_samples() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, tag TEXT); CREATE INDEX t_tag ON t(tag);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 5000)
             INSERT INTO t(tag) SELECT 'tag' || (x % 50) FROM c;
             SELECT * FROM t WHERE tag = 'tag1';",
        )
        .unwrap();
        optimize_on_close(&conn).unwrap();
        let stat1: i64 = conn.query_row("SELECT count(*) FROM sqlite_stat1", [], |r| r.get(0)).unwrap();
        assert!(stat1 > 0, "optimize analyzed the never-analyzed table");
        let stat4: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_stat4'", [], |r| r.get(0))
            .unwrap();
        let samples: i64 = if stat4 == 0 {
            0
        } else {
            conn.query_row("SELECT count(*) FROM sqlite_stat4", [], |r| r.get(0)).unwrap()
        };
        assert_eq!(samples, 0, "no STAT4 samples");
    }

    #[test]
    fn reader_never_creates_and_cannot_write() {
        let dir = TempDir::new("reader");
        let path = dir.0.join("missing.sqlite");
        let reader_opts = ConnectionOptions { read_only: true, ..Default::default() };
        let err = open_connection(&path, &reader_opts).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Io, "{err}");
        assert!(!path.exists());

        let writer = open_connection(&path, &ConnectionOptions::default()).unwrap();
        writer.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)").unwrap();
        let reader = open_connection(&path, &reader_opts).unwrap();
        let n: i64 = reader.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        let err = map_error(reader.execute_batch("INSERT INTO t VALUES (2)").unwrap_err(), None);
        assert_eq!(err.code(), ErrorCode::ReadOnly, "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_database_is_refused() {
        let dir = TempDir::new("symlink");
        let real = dir.0.join("real.sqlite");
        drop(open_connection(&real, &ConnectionOptions::default()).unwrap());
        let link = dir.0.join("link.sqlite");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(open_connection(&link, &ConnectionOptions::default()).is_err());
    }
}
