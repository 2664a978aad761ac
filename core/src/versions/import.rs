//! Import: copy the caller's file in (plain or gzip), check it, flip, and keep the replaced
//! version as an undo snapshot (as a restore does).

use super::*;

/// Functions a trigger or view in an imported database may not call.
pub const IMPORT_DENIED_FUNCTIONS: [&str; 6] =
    ["load_extension", "fts3_tokenizer", "readfile", "writefile", "edit", "sqlite_offset"];

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
    /// The undo snapshot: the version the import replaced, as a restore keeps it.
    pub undo: Uuid,
}

/// Checks a database file that is about to become live: header, page size, WAL mode file
/// without its WAL, integrity with cell_size_check, denied functions in the schema, expected
/// tables; then sets WAL mode. Returns the names of the checks passed. Every failure names
/// the check.
pub(super) fn check_candidate(
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

impl Database {
    /// Imports a database file: copies it into the workspace (the caller's file is never
    /// opened in place), checks the copy (header, page size, WAL, integrity with
    /// cell_size_check, schema, expected tables, size against the quota), sets WAL mode and
    /// flips. On any failure nothing changes and the error names the failed check.
    pub fn import(&self, source: &Path, options: ImportOptions) -> Result<ImportReport> {
        self.operation(
            "import",
            || self.import_inner(source, options),
            |r| Some(r.size),
            |r| {
                Some(serde_json::json!({
                    "file": r.file.to_string(),
                    "bytes": r.size,
                    "checks": r.checks,
                    "undo": r.undo.to_string(),
                }))
            },
        )
    }

    pub(super) fn import_inner(&self, source: &Path, options: ImportOptions) -> Result<ImportReport> {
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
        let undo_label = format!("undo of {label}");
        // No early checksum of the live file: it checkpoints the live file, and a refused
        // import leaves the database directory exactly as it was.
        let (installed, undo) = self.install_keeping_undo(expected, &label, &undo_label, false, |dest| {
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
        })?;
        let size = self.db.sizes().0;
        Ok(ImportReport { file: installed.file, size, checks, undo: undo.id })
    }
}
