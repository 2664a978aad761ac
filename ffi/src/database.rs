//! `sila_database`: queries and writes with JSON parameters, and the versions operations
//! (snapshot, restore, backup, import, export, migrate, retention) of one database.
//!
//! A database handle holds a [`DbSlot`]: the open `Database` and its `Workspace`, emptied when
//! the workspace is closed, so every later call answers "closed" instead of touching a
//! workspace that is shutting down.

use crate::boundary::{
    cstr_arg, guard, guard_value, handle, opt_cstr_arg, out_arg, path_arg, str_arg, write_out, Result,
};
use crate::result::{give_json, sila_result};
use crate::status::sila_status;
use crate::workspace::WsShared;
use serde_json::json;
use sila_sqlite::store::record::SnapshotEntry;
use sila_sqlite::store::Retention;
use sila_sqlite::uuid::Uuid;
use sila_sqlite::versions::{ExportFormat, ImportOptions, MigrationPlan, RestoreOptions};
use sila_sqlite::{Database, Error, ErrorCode, Value, Workspace};
use std::ffi::c_char;
use std::sync::{Arc, RwLock};

/// Most parameters one statement may take (SQLite's own default limit is 32766).
pub(crate) const PARAMS_MAX: usize = 32_766;

/// The open database behind a handle; `None` once its workspace was closed.
pub(crate) struct DbSlot {
    open: RwLock<Option<(Database, Workspace)>>,
}

impl DbSlot {
    pub(crate) fn close(&self) {
        self.open.write().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// The open database and its workspace, or `InvalidArgument` once the workspace closed.
    pub(crate) fn get(&self) -> Result<(Database, Workspace)> {
        self.open.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| {
            Error::new(ErrorCode::InvalidArgument, "the workspace of this database handle was closed")
        })
    }
}

/// An open database of an app. Opaque; made by `sila_workspace_open_database`, released by
/// `sila_database_free`.
///
/// Thread-safety: every function taking a `const sila_database *` may be called from many
/// threads at once on one handle (reads run in parallel on the reader pool; writes are
/// group-committed); only `sila_database_free` takes it exclusively.
pub struct sila_database {
    slot: Arc<DbSlot>,
    pub(crate) ws: Arc<WsShared>,
    /// The app's UUID: the executor's fairness key for callbacks this handle dispatches.
    pub(crate) app_uuid: Uuid,
}

impl sila_database {
    pub(crate) fn new(
        ws_shared: &Arc<WsShared>,
        ws: Workspace,
        db: Database,
        app_uuid: Uuid,
    ) -> sila_database {
        let slot = Arc::new(DbSlot { open: RwLock::new(Some((db, ws))) });
        ws_shared.adopt_database(&slot);
        sila_database { slot, ws: ws_shared.clone(), app_uuid }
    }

    /// The open database and its workspace, or `InvalidArgument` once the workspace closed.
    pub(crate) fn get(&self) -> Result<(Database, Workspace)> {
        self.slot.get()
    }

    /// What a statement prepared on this handle keeps: closing the workspace empties it.
    pub(crate) fn slot(&self) -> Arc<DbSlot> {
        self.slot.clone()
    }
}

/// Parses statement parameters: a JSON array whose items map to SQLite values as the engine
/// documents (`null`, booleans as 1/0, integers, finite numbers, strings,
/// `{"$blob":"<base64>"}`, `{"$real":"Infinity"}`). NULL means no parameters.
///
/// # Safety
/// `ptr` is NULL or valid for `len` bytes (or NUL-terminated with `SILA_NUL_TERMINATED`).
pub(crate) unsafe fn params_arg(ptr: *const c_char, len: usize) -> Result<Vec<Value>> {
    if ptr.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: forwarded contract.
    let text = unsafe { str_arg(ptr, len, "params_json") }?;
    let bad = |why: String| Error::new(ErrorCode::InvalidArgument, format!("params_json: {why}"));
    let parsed: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let items = parsed.as_array().ok_or_else(|| bad("must be a JSON array of values".into()))?;
    if items.len() > PARAMS_MAX {
        return Err(bad(format!("{} parameters; the limit is {PARAMS_MAX}", items.len())));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| Value::from_json(v).map_err(|e| bad(format!("item {i}: {}", e.message()))))
        .collect()
}

/// Runs one statement that reads and returns its rows, blocking the calling thread. SQLite
/// decides what reads: a statement it says writes (INSERT/UPDATE/DELETE, also with
/// RETURNING; DDL; a PRAGMA that sets) is `SILA_WRITE_IN_QUERY` and nothing runs; give it to
/// `sila_database_exec`, which returns its rows too.
///
/// `sql` is UTF-8 of `sql_len` bytes (or `SILA_NUL_TERMINATED`) holding exactly one
/// statement. `params_json` is NULL (no parameters) or a JSON array of positional
/// parameters, `params_json_len` bytes long (or `SILA_NUL_TERMINATED`), e.g.
/// `[1, "text", null, 2.5, {"$blob":"aGkh"}]`. On success `*result_out` is a new result the
/// caller owns (`sila_result_free`). Errors: `SILA_INVALID_ARGUMENT` for bad UTF-8 or JSON
/// (nothing runs), `SILA_TIMEOUT`, `SILA_RESULT_TOO_LARGE`, `SILA_POLICY_DENIED`,
/// `SILA_SQLITE` (see `sila_last_error_sqlite_code`)… Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; strings are NULL or valid as described; `result_out` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_query(
    database: *const sila_database,
    sql: *const c_char,
    sql_len: usize,
    params_json: *const c_char,
    params_json_len: usize,
    result_out: *mut *mut sila_result,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (database, sql, params) = unsafe {
            (
                handle(database, "database")?,
                str_arg(sql, sql_len, "sql")?,
                params_arg(params_json, params_json_len)?,
            )
        };
        out_arg(result_out, "result_out")?;
        let (db, _) = database.get()?;
        let rows = db.query(sql, &params)?;
        let result = Box::into_raw(Box::new(sila_result::from_rows(rows)));
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(result_out, result) };
        Ok(())
    })
}

/// Runs one statement on the writer (usually one that writes: INSERT, UPDATE, DELETE, DDL, a
/// PRAGMA that sets), blocking until its group commit is durable. Arguments as
/// `sila_database_query`. On success, if `result_out` is not NULL, it receives a result whose
/// `sila_result_changes` / `sila_result_last_insert_rowid` tell what happened and whose rows
/// are the ones the statement returned (`INSERT … RETURNING`). BEGIN, COMMIT and ROLLBACK in
/// SQL are `SILA_POLICY_DENIED` (use `sila_database_begin`); SAVEPOINT nests. A read-only
/// database is `SILA_READ_ONLY`. Thread-safe on a const database.
///
/// # Safety
/// As `sila_database_query`; `result_out` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn sila_database_exec(
    database: *const sila_database,
    sql: *const c_char,
    sql_len: usize,
    params_json: *const c_char,
    params_json_len: usize,
    result_out: *mut *mut sila_result,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (database, sql, params) = unsafe {
            (
                handle(database, "database")?,
                str_arg(sql, sql_len, "sql")?,
                params_arg(params_json, params_json_len)?,
            )
        };
        let (db, _) = database.get()?;
        let exec = db.exec(sql, &params)?;
        if !result_out.is_null() {
            let result = Box::into_raw(Box::new(sila_result::from_exec(exec)));
            // SAFETY: non-NULL and writable (caller's contract).
            unsafe { write_out(result_out, result) };
        }
        Ok(())
    })
}

/// Runs a script: any number of statements without parameters, as one atomic request on the
/// writer (all of them are applied, or none), blocking until it is durable. `sql` as for
/// `sila_database_query`. On success, if `result_out` is not NULL, it receives a result whose
/// `sila_result_changes` is the sum over the statements (rows they return are discarded). An
/// error's message (`sila_last_error_message`) names the statement's number and its line and
/// column in the script. A script with no statement is `SILA_INVALID_ARGUMENT`. Thread-safe on
/// a const database.
///
/// # Safety
/// As `sila_database_query`; `result_out` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn sila_database_execute_script(
    database: *const sila_database,
    sql: *const c_char,
    sql_len: usize,
    result_out: *mut *mut sila_result,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (database, sql) = unsafe { (handle(database, "database")?, str_arg(sql, sql_len, "sql")?) };
        let (db, _) = database.get()?;
        let exec = db.execute_script(sql)?;
        if !result_out.is_null() {
            let result = Box::into_raw(Box::new(sila_result::from_exec(exec)));
            // SAFETY: non-NULL and writable (caller's contract).
            unsafe { write_out(result_out, result) };
        }
        Ok(())
    })
}

/// Frees a database handle. NULL is allowed and does nothing; freeing a handle whose
/// workspace was closed is safe. Requests and transactions started through it keep running
/// (their handles stay valid). Freeing twice is undefined. Exclusive.
///
/// # Safety
/// `database` is NULL or a live handle used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn sila_database_free(database: *mut sila_database) {
    guard_value((), || {
        if !database.is_null() {
            // SAFETY: made by `Box::into_raw` in `sila_workspace_open_database`, freed once.
            drop(unsafe { Box::from_raw(database) });
        }
    })
}

/// Runs `f` on the open database and hands its JSON answer to the caller's out-params.
///
/// # Safety
/// `database` is NULL or live; the out-pointers are NULL or writable.
unsafe fn with_db_json(
    database: *const sila_database,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
    f: impl FnOnce(&Database) -> Result<serde_json::Value>,
) -> Result<()> {
    // SAFETY: NULL or live (caller's contract).
    let database = unsafe { handle(database, "database") }?;
    let (db, _) = database.get()?;
    let doc = f(&db)?;
    // SAFETY: NULL or writable (caller's contract).
    unsafe { give_json(&doc, json_out, json_len_out) };
    Ok(())
}

/// Statistics of this database as JSON: `{"app","db","db_bytes","wal_bytes","connections",
/// "metrics":{"queries","execs","errors":{…},"latency_us_p50",…}}` in `*json_out` (free with
/// `sila_string_free`). Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_stats(
    database: *const sila_database,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        out_arg(json_out, "json_out")?;
        // SAFETY: forwarded contract.
        unsafe { with_db_json(database, json_out, json_len_out, |db| Ok(db.stats().to_json())) }
    })
}

fn snapshot_json(s: &SnapshotEntry) -> serde_json::Value {
    json!({
        "id": s.id.hyphenated().to_string(),
        "size": s.size,
        "crc32c": s.crc32c,
        "schema": s.schema,
        "created_ms": s.created_ms,
        "label": s.label,
    })
}

fn parse_uuid(text: &str, name: &str) -> Result<sila_sqlite::uuid::Uuid> {
    sila_sqlite::uuid::Uuid::parse_str(text)
        .map_err(|e| Error::new(ErrorCode::InvalidArgument, format!("argument `{name}` is not a UUID: {e}")))
}

/// Takes a consistent snapshot while the database stays live, labelled `label` (printable
/// text). If `json_out` is not NULL it receives the snapshot
/// `{"id","size","crc32c","schema","created_ms","label"}` (free with `sila_string_free`).
/// `SILA_QUOTA_EXCEEDED` before any IO when it would not fit. Thread-safe on a const
/// database.
///
/// # Safety
/// `database` is NULL or live; `label` NULL or NUL-terminated; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_snapshot(
    database: *const sila_database,
    label: *const c_char,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let label = unsafe { cstr_arg(label, "label") }?;
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| Ok(snapshot_json(&db.snapshot(label)?)))
        }
    })
}

/// Lists this database's snapshots, oldest first, as a JSON array of snapshot objects (see
/// `sila_database_snapshot`) in `*json_out` (free with `sila_string_free`). Thread-safe on a
/// const database.
///
/// # Safety
/// `database` is NULL or live; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_snapshots(
    database: *const sila_database,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        out_arg(json_out, "json_out")?;
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                Ok(serde_json::Value::Array(db.snapshots()?.iter().map(snapshot_json).collect()))
            })
        }
    })
}

/// Removes snapshot `snapshot_id` (a UUID string) from the manifest; `sila_workspace_gc`
/// deletes its file later. Unknown id: `SILA_NOT_FOUND`. Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; `snapshot_id` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sila_database_drop_snapshot(
    database: *const sila_database,
    snapshot_id: *const c_char,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let id = parse_uuid(unsafe { cstr_arg(snapshot_id, "snapshot_id") }?, "snapshot_id")?;
        // SAFETY: forwarded contract; no JSON out.
        unsafe {
            with_db_json(database, std::ptr::null_mut(), std::ptr::null_mut(), |db| {
                db.drop_snapshot(id)?;
                Ok(serde_json::Value::Null)
            })
        }
    })
}

/// Folds the WAL into the database file and truncates it, with the writer held (queued
/// writes commit first). If `json_out` is not NULL it receives
/// `{"wal_frames","checkpointed_frames","complete"}`; `complete` is false when a reader
/// still reads an older state from the WAL. A failed write or sync is `SILA_IO` and poisons
/// the database. Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_checkpoint(
    database: *const sila_database,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                let r = db.checkpoint()?;
                Ok(json!({
                    "wal_frames": r.wal_frames,
                    "checkpointed_frames": r.checkpointed_frames,
                    "complete": r.complete,
                }))
            })
        }
    })
}

/// Rewrites the database into a new compact file (SQLite's VACUUM INTO) and flips to it;
/// writes wait for the copy, reads do not, and no acknowledged write is lost. If `json_out`
/// is not NULL it receives `{"before_bytes","after_bytes"}`; the replaced file is freed by
/// `sila_workspace_gc`. `SILA_QUOTA_EXCEEDED` before any IO when the app's quota or the
/// disk has no room for a copy of the live size. Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_compact(
    database: *const sila_database,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                let r = db.compact()?;
                Ok(json!({ "before_bytes": r.before_bytes, "after_bytes": r.after_bytes }))
            })
        }
    })
}

/// Applies a retention policy: keep at most `keep_last` snapshots (0: no count limit) and drop
/// those older than `max_age_ms` (0: no age limit). If `json_out` is not NULL it receives the
/// JSON array of dropped snapshot ids. Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_apply_retention(
    database: *const sila_database,
    keep_last: u32,
    max_age_ms: u64,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        let policy = Retention {
            keep_last: (keep_last > 0).then_some(keep_last as usize),
            max_age_ms: (max_age_ms > 0).then_some(max_age_ms),
        };
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                let dropped = db.apply_retention(policy)?;
                Ok(json!(dropped.iter().map(|u| u.hyphenated().to_string()).collect::<Vec<_>>()))
            })
        }
    })
}

/// `sila_database_restore` flag: restore even if the snapshot's schema version differs.
pub const SILA_RESTORE_ALLOW_SCHEMA_CHANGE: u32 = 1;

/// Restores snapshot `snapshot_id`: takes an undo snapshot of the current state, copies the
/// snapshot to a new file and flips to it. `flags` is 0 or `SILA_RESTORE_ALLOW_SCHEMA_CHANGE`.
/// If `json_out` is not NULL it receives `{"undo_snapshot":"<uuid>"}` (restoring that undoes
/// this restore). Unknown id: `SILA_NOT_FOUND`; nothing changes on any refusal. Thread-safe
/// on a const database.
///
/// # Safety
/// `database` is NULL or live; `snapshot_id` NULL or NUL-terminated; out-pointers NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_restore(
    database: *const sila_database,
    snapshot_id: *const c_char,
    flags: u32,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let id = parse_uuid(unsafe { cstr_arg(snapshot_id, "snapshot_id") }?, "snapshot_id")?;
        if flags & !SILA_RESTORE_ALLOW_SCHEMA_CHANGE != 0 {
            return Err(Error::new(ErrorCode::InvalidArgument, format!("unknown restore flags {flags:#x}")));
        }
        let options = RestoreOptions { allow_schema_change: flags & SILA_RESTORE_ALLOW_SCHEMA_CHANGE != 0 };
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                let undo = db.restore(id, options)?;
                Ok(json!({ "undo_snapshot": undo.hyphenated().to_string() }))
            })
        }
    })
}

/// Writes an online backup into the workspace's backup area and keeps the newest
/// `keep_last` backups of this database (at least 1). If `json_out` is not NULL it receives
/// `{"id":"<uuid>","path":"<absolute path>"}`. Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_backup(
    database: *const sila_database,
    keep_last: u32,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                let (id, path) = db.backup(keep_last as usize)?;
                Ok(json!({ "id": id.hyphenated().to_string(), "path": path.to_string_lossy() }))
            })
        }
    })
}

/// [`sila_database_backup`], gzip-compressed: `<uuid>.sqlite.gz`. `sila_database_import`
/// takes such a file as it is. Backups of both formats count towards `keep_last`.
///
/// # Safety
/// `database` is NULL or live; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_backup_gzip(
    database: *const sila_database,
    keep_last: u32,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                let (id, path) = db.backup_as(keep_last as usize, ExportFormat::SqliteGzip)?;
                Ok(json!({ "id": id.hyphenated().to_string(), "path": path.to_string_lossy() }))
            })
        }
    })
}

/// Imports the SQLite file at `source_path` (NUL-terminated, any bytes but NUL): copies it in
/// (the host's file is never opened in place), checks the copy (header, page size, WAL,
/// integrity, schema, size against the quota) and flips to it, keeping the replaced version
/// as an undo snapshot (as a restore does). `options_json` is NULL or
/// `{"expected_tables":["t",…]}` (NUL-terminated). If `json_out` is not NULL it receives
/// `{"file":"<uuid>","size":N,"checks":[…],"undo":"<snapshot uuid>"}`. On any failure
/// nothing changes and the message names the failed check. Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; strings NULL or NUL-terminated; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_import(
    database: *const sila_database,
    source_path: *const c_char,
    options_json: *const c_char,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let (source, options) =
            unsafe { (path_arg(source_path, "source_path")?, opt_cstr_arg(options_json, "options_json")?) };
        let options = match options {
            None => ImportOptions::default(),
            Some(text) => import_options(text)?,
        };
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                let report = db.import(&source, options)?;
                Ok(json!({
                    "file": report.file.hyphenated().to_string(),
                    "size": report.size,
                    "checks": report.checks,
                    "undo": report.undo.hyphenated().to_string(),
                }))
            })
        }
    })
}

fn import_options(text: &str) -> Result<ImportOptions> {
    let bad = |why: &str| Error::new(ErrorCode::InvalidArgument, format!("options_json: {why}"));
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(&format!("not valid JSON: {e}")))?;
    let map = v.as_object().ok_or_else(|| bad("must be a JSON object"))?;
    if let Some(key) = map.keys().find(|k| k.as_str() != "expected_tables") {
        return Err(bad(&format!("unknown key {key:?} (known: expected_tables)")));
    }
    let mut options = ImportOptions::default();
    if let Some(tables) = map.get("expected_tables") {
        let tables = tables.as_array().ok_or_else(|| bad("expected_tables must be an array of strings"))?;
        for t in tables {
            let name = t.as_str().ok_or_else(|| bad("expected_tables must be an array of strings"))?;
            options.expected_tables.push(name.to_string());
        }
    }
    Ok(options)
}

/// Exports a consistent copy of the database into the app's own export area under `name`
/// (a database-name-like identifier: `apps/<app>/exports/<name>.sqlite`). If `json_out` is not
/// NULL it receives `{"path":"<absolute path>"}`. An existing export of that name is
/// `SILA_ALREADY_EXISTS`. Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; `name` NULL or NUL-terminated; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_export(
    database: *const sila_database,
    name: *const c_char,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let name = unsafe { cstr_arg(name, "name") }?;
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                Ok(json!({ "path": db.export(name)?.to_string_lossy() }))
            })
        }
    })
}

/// [`sila_database_export`], gzip-compressed: `apps/<app>/exports/<name>.sqlite.gz`.
/// `sila_database_import` takes such a file as it is.
///
/// # Safety
/// `database` is NULL or live; `name` NULL or NUL-terminated; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_export_gzip(
    database: *const sila_database,
    name: *const c_char,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let name = unsafe { cstr_arg(name, "name") }?;
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                Ok(json!({ "path": db.export_as(name, ExportFormat::SqliteGzip)?.to_string_lossy() }))
            })
        }
    })
}

/// Writes a consistent copy of the database to the host path `dest_path` (operators' tool;
/// the file opens in the stock `sqlite3` shell). An existing file is `SILA_ALREADY_EXISTS`.
/// If `json_out` is not NULL it receives `{"bytes":N}`. Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; `dest_path` NULL or NUL-terminated; out-pointers NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_export_to_path(
    database: *const sila_database,
    dest_path: *const c_char,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let dest = unsafe { path_arg(dest_path, "dest_path") }?;
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                Ok(json!({ "bytes": db.export_to_path(&dest)? }))
            })
        }
    })
}

/// Runs a migration plan given as the host SDK's JSON
/// `{"currentVersion":2,"steps":[{"from":0,"to":1,"up":"…","down":"…"}…]}` (`plan_json_len`
/// bytes or `SILA_NUL_TERMINATED`): validates the chain, takes an automatic snapshot, runs
/// the steps in one transaction and records them in `_sila_meta`; any failure rolls back
/// (`SILA_MIGRATION_FAILED` naming the step). With `dry_run` true it runs on a private copy
/// and changes nothing. If `json_out` is not NULL it receives
/// `{"from":0,"to":2,"applied":[[0,1],[1,2]],"snapshot":"<uuid>"|null,"dry_run":false}`.
/// Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; `plan_json` NULL or valid as described; out-pointers NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_migrate(
    database: *const sila_database,
    plan_json: *const c_char,
    plan_json_len: usize,
    dry_run: bool,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or valid (caller's contract).
        let plan = MigrationPlan::from_json(unsafe { str_arg(plan_json, plan_json_len, "plan_json") }?)?;
        // SAFETY: forwarded contract.
        unsafe {
            with_db_json(database, json_out, json_len_out, |db| {
                let r = db.migrate(&plan, dry_run)?;
                Ok(json!({
                    "from": r.from,
                    "to": r.to,
                    "applied": r.applied.iter().map(|(f, t)| json!([f, t])).collect::<Vec<_>>(),
                    "snapshot": r.snapshot.map(|u| u.hyphenated().to_string()),
                    "dry_run": r.dry_run,
                }))
            })
        }
    })
}

/// The schema version recorded by migrations (0 before the first) in `*version_out`.
/// Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; `version_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_schema_version(
    database: *const sila_database,
    version_out: *mut u64,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let database = unsafe { handle(database, "database") }?;
        out_arg(version_out, "version_out")?;
        let version = database.get()?.0.schema_version()?;
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(version_out, version) };
        Ok(())
    })
}
