//! Running statements under limits: deadlines, cancellation, and result caps.
//!
//! [`query`] and [`execute`] run exactly one statement through the connection's prepared
//! statement cache; [`execute_script`] runs a parameterless script of any number of
//! statements. All of them install the request's [`StopCheck`] as the progress handler for
//! their duration and check it before they start and between rows. [`query`] and [`execute`]
//! count the size of the result as they step ([`result_bytes`]) and stop at the first row that
//! would break a cap, so a result is never built past its limits (a single oversized value is
//! refused before it is copied).
//!
//! SQLite decides what a statement is: [`query`] refuses a statement `sqlite3_stmt_readonly`
//! says writes ([`ErrorCode::WriteInQuery`], naming exec); [`execute`] runs any statement and
//! returns its rows (`INSERT … RETURNING`, or a SELECT), its changes and the rowid.
//!
//! Every stepping loop ends: `query` and `execute` at `rows_max + 1` rows or the byte cap, a
//! script's statements at the request's deadline.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rusqlite::types::ValueRef;
use rusqlite::{CachedStatement, Connection};

use super::errors::map_error;
use super::policy::LENGTH_BYTES_MAX;
use super::stop::{ProgressGuard, StopCheck};
use super::value::{ExecResult, Rows, Value};
use crate::{Error, ErrorCode, Result};

/// Default [`QueryLimits::rows_max`].
pub const QUERY_ROWS_MAX_DEFAULT: u64 = 100_000;
/// Default [`QueryLimits::bytes_max`]: 32 MiB, twice `SQLITE_LIMIT_LENGTH` (the largest value
/// or row an app may store), so whatever an app may store it can read back, with its column
/// names, under the default caps.
pub const QUERY_BYTES_MAX_DEFAULT: u64 = 2 * LENGTH_BYTES_MAX as u64;

/// Caps on one query's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// The most rows a result may hold; exactly `rows_max` rows is allowed.
    pub rows_max: u64,
    /// The most bytes the result may hold in memory, counted as [`result_bytes`] does: the
    /// column names' bytes, and per cell its text or blob bytes, 8 for a number, 0 for NULL.
    /// Exactly `bytes_max` is allowed. (Counted on the values, not on a JSON encoding: JSON of
    /// a text full of control characters is six times its size, and a cap on that would make
    /// values an app may store unreadable.)
    pub bytes_max: u64,
}

/// What [`QueryLimits::bytes_max`] counts for a result: column names plus every cell.
pub fn result_bytes(rows: &Rows) -> u64 {
    let names: usize = rows.columns.iter().map(String::len).sum();
    let cells: usize = rows.rows.iter().flatten().map(Value::size_bytes).sum();
    to_u64(names.saturating_add(cells))
}

impl Default for QueryLimits {
    fn default() -> QueryLimits {
        QueryLimits { rows_max: QUERY_ROWS_MAX_DEFAULT, bytes_max: QUERY_BYTES_MAX_DEFAULT }
    }
}

/// Runs one statement with positional `params` and returns its rows, within `limits` and
/// `stop`.
///
/// Errors: [`ErrorCode::ResultTooLarge`] naming the cap that was hit,
/// [`ErrorCode::Timeout`] / [`ErrorCode::Cancelled`] from `stop`,
/// [`ErrorCode::InvalidArgument`] for a parameter count mismatch or SQL that holds more or
/// less than one statement, and whatever [`super::map_error`] gives for SQLite's errors.
pub fn query(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    limits: &QueryLimits,
    stop: &StopCheck,
) -> Result<Rows> {
    stop.check()?;
    super::confine::clear_refusal();
    // Declared before the statement so it drops after it: the handler covers preparation
    // (which may load the schema) and every step.
    let _guard = ProgressGuard::install(conn, stop);
    let mut stmt = prepare_one(conn, sql, "query", stop)?;
    refuse_writes(&stmt)?;
    bind(&mut stmt, params, stop)?;
    collect_rows(&mut stmt, limits, stop)
}

/// Steps `stmt` to its end and collects its rows under `limits`, checking `stop` between
/// rows. The column names are read after the first step: that step may have prepared the
/// statement again (the schema changed since it was cached, an ALTER TABLE … DROP COLUMN
/// say), and then its columns are the new ones.
fn collect_rows(stmt: &mut CachedStatement<'_>, limits: &QueryLimits, stop: &StopCheck) -> Result<Rows> {
    let mut columns = column_names(stmt)?;
    let mut collector = Collector::new(columns.len(), names_len(&columns), limits);
    collector.check_bytes()?;
    let mut rows = stmt.raw_query();
    let mut first = true;
    loop {
        let row = match rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => return Err(map_error(e, Some(stop))),
        };
        if std::mem::take(&mut first) {
            let now = column_names(row.as_ref())?;
            if now != columns {
                columns = now;
                collector = Collector::new(columns.len(), names_len(&columns), limits);
                collector.check_bytes()?;
            }
        }
        collector.start_row()?;
        for index in 0..columns.len() {
            let value = row.get_ref(index).map_err(|e| map_error(e, Some(stop)))?;
            collector.push(value)?;
        }
        collector.finish_row();
        between_rows(stop, collector.rows.len())?;
    }
    drop(rows);
    if first {
        // No row: the names of the statement as it ran.
        columns = column_names(stmt)?;
    }
    Ok(Rows { columns, rows: collector.rows })
}

/// Rows between two readings of the clock while a query's rows are collected.
///
/// The token is checked after every row. The deadline needs no clock read per row: the
/// progress handler keeps counting the statement's virtual-machine instructions across
/// steps, and copying a row out is bounded by the result caps.
pub const ROWS_PER_CLOCK_CHECK: usize = 64;

fn between_rows(stop: &StopCheck, rows_done: usize) -> Result<()> {
    if rows_done.is_multiple_of(ROWS_PER_CLOCK_CHECK) {
        stop.check()
    } else {
        stop.check_cancel()
    }
}

/// The first column of the first row of one statement, or `None` when it returns no row
/// (or no column). Only that row is stepped to: what follows is never computed.
///
/// Limits as for [`query`], applied to the one-row result: `rows_max` of 0 refuses any row;
/// `bytes_max` is compared with the compact JSON size of `{"columns":[name],"rows":[[value]]}`,
/// the document [`query`] would have built for that row alone.
pub fn query_first(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    limits: &QueryLimits,
    stop: &StopCheck,
) -> Result<Option<Value>> {
    stop.check()?;
    super::confine::clear_refusal();
    let _guard = ProgressGuard::install(conn, stop);
    let mut stmt = prepare_one(conn, sql, "query", stop)?;
    refuse_writes(&stmt)?;
    bind(&mut stmt, params, stop)?;
    if stmt.column_count() == 0 {
        // Stepped to the end like `query`, so a statement without columns still runs whole.
        let mut rows = stmt.raw_query();
        while rows.next().map_err(|e| map_error(e, Some(stop)))?.is_some() {
            stop.check_cancel()?;
        }
        return Ok(None);
    }
    let base_len = catch_unwind(AssertUnwindSafe(|| stmt.column_name(0).map(str::len)))
        .map_err(|_| Error::corrupt("a result column name is not valid UTF-8"))?
        .map_err(|e| map_error(e, Some(stop)))?;
    let mut collector = Collector::new(1, base_len, limits);
    collector.check_bytes()?;
    let mut rows = stmt.raw_query();
    let row = match rows.next() {
        Ok(Some(row)) => row,
        Ok(None) => return Ok(None),
        Err(e) => return Err(map_error(e, Some(stop))),
    };
    collector.count_row_start()?;
    let value = row.get_ref(0).map_err(|e| map_error(e, Some(stop)))?;
    collector.take(value).map(Some)
}

/// Runs exactly one statement with positional `params` and reports its changes, the rowid
/// and the rows it returned (`INSERT … RETURNING`, a SELECT), under `limits` like a query's.
///
/// SQL that continues after the first statement (other than whitespace and comments) is
/// refused with [`ErrorCode::InvalidArgument`]: `exec` runs one statement; scripts go through
/// [`execute_script`].
pub fn execute(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    limits: &QueryLimits,
    stop: &StopCheck,
) -> Result<ExecResult> {
    stop.check()?;
    super::confine::clear_refusal();
    let _guard = ProgressGuard::install(conn, stop);
    let mut stmt = prepare_one(conn, sql, "exec", stop)?;
    bind(&mut stmt, params, stop)?;
    let total_changes_before = conn.total_changes();
    let rows = collect_rows(&mut stmt, limits, stop)?;
    // `sqlite3_changes` keeps the count of the last INSERT/UPDATE/DELETE, even when this
    // statement was DDL; the total moves only when this statement changed rows.
    let changes = if conn.total_changes() == total_changes_before { 0 } else { conn.changes() };
    Ok(ExecResult { changes, last_insert_rowid: conn.last_insert_rowid(), rows, statements: 1 })
}

/// What SQLite says about one statement, without running it ([`describe`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatementInfo {
    /// Whether SQLite says it writes (`sqlite3_stmt_readonly` is false and it is no EXPLAIN):
    /// run it with exec; a query refuses it with [`ErrorCode::WriteInQuery`].
    pub writes: bool,
    /// Its result columns; empty for a statement that returns none.
    pub columns: Vec<String>,
    /// Its parameters by position (the first is `?1`): the name as written (`:id`, `@id`,
    /// `$id`, `?3`), or `None` for a bare `?`. Parameters are bound by position.
    pub parameters: Vec<Option<String>>,
}

/// Prepares exactly one statement and reports what SQLite says about it; nothing runs.
///
/// The statement is prepared outside the statement cache: it is prepared in the caller's
/// policy scope, which may allow what the connection's usual requests may not (a reader
/// describing a write), and a cached copy would be reused past the authorizer.
pub fn describe(conn: &Connection, sql: &str, stop: &StopCheck) -> Result<StatementInfo> {
    stop.check()?;
    super::confine::clear_refusal();
    let _guard = ProgressGuard::install(conn, stop);
    if sql.trim_start().starts_with(INTERNAL_MARK.trim_end()) {
        return Err(Error::new(
            ErrorCode::PolicyDenied,
            "SQL that begins with the engine's own marker comment is refused",
        ));
    }
    let prepared = match conn.prepare(sql) {
        Err(e) if stale_schema_suspect(conn, &e) => {
            refresh_schema(conn);
            conn.prepare(sql)
        }
        other => other,
    };
    let stmt = prepared.map_err(|e| match e {
        rusqlite::Error::MultipleStatement => Error::invalid_argument(
            "a prepared statement holds exactly one statement, but the SQL continues after the first one",
        ),
        rusqlite::Error::Empty => Error::invalid_argument("the SQL holds no statement"),
        other => map_error(other, Some(stop)),
    })?;
    let columns = if stmt.column_count() == 0 {
        Vec::new()
    } else {
        catch_unwind(AssertUnwindSafe(|| stmt.column_names().map(str::to_owned).collect()))
            .map_err(|_| Error::corrupt("a result column name is not valid UTF-8"))?
    };
    let parameters =
        (1..=stmt.parameter_count()).map(|i| stmt.parameter_name(i).map(str::to_owned)).collect();
    Ok(StatementInfo { writes: !stmt.readonly() && stmt.is_explain() == 0, columns, parameters })
}

/// Runs a parameterless script of any number of statements, in order, within `stop`; rows
/// the statements return are stepped through and discarded. The first error stops the script
/// and is returned with the statement's number (from 1) and its line and column in the
/// script; earlier statements stay applied, so callers run scripts inside a savepoint or
/// transaction (the broker does) to make them atomic. A script with no statement is
/// [`ErrorCode::InvalidArgument`].
pub fn execute_script(conn: &Connection, sql: &str, stop: &StopCheck) -> Result<ExecResult> {
    stop.check()?;
    super::confine::clear_refusal();
    let _guard = ProgressGuard::install(conn, stop);
    let mut result = ExecResult::default();
    let mut offset = 0;
    // Each turn consumes at least one byte of the script (SQLite's tail moves forward, or the
    // loop ends), so the loop is bounded by the script's length.
    while offset < sql.len() {
        let rest = sql.get(offset..).unwrap_or_default();
        let number = result.statements + 1;
        let start = offset + leading_blank_len(rest);
        let at = |e: Error| {
            let (line, column) = line_and_column(sql, start);
            e.context(format_args!("statement {number} of the script (line {line}, column {column})"))
        };
        let (stmt, consumed) = raw::prepare(conn, rest).map_err(|e| at(map_error(e, Some(stop))))?;
        if consumed == 0 {
            break;
        }
        offset += consumed;
        let Some(stmt) = stmt else { continue };
        let before = conn.total_changes();
        stmt.run(conn, stop).map_err(at)?;
        if conn.total_changes() != before {
            result.changes = result.changes.saturating_add(conn.changes());
        }
        result.statements = number;
    }
    if result.statements == 0 {
        return Err(Error::invalid_argument("the script holds no statement"));
    }
    result.last_insert_rowid = conn.last_insert_rowid();
    Ok(result)
}

/// Bytes of whitespace and comments at the start of `sql` (where a statement's first token
/// begins, for error positions).
fn leading_blank_len(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut i = 0;
    // Bounded: every turn moves `i` forward or returns.
    loop {
        match bytes.get(i..) {
            Some([c, ..]) if c.is_ascii_whitespace() => i += 1,
            Some([b'-', b'-', ..]) => {
                i += bytes
                    .get(i..)
                    .and_then(|r| r.iter().position(|&c| c == b'\n'))
                    .unwrap_or(bytes.len() - i);
            }
            Some([b'/', b'*', ..]) => {
                let body = bytes.get(i + 2..).unwrap_or_default();
                i += 2 + body.windows(2).position(|w| w == b"*/").map_or(body.len(), |p| p + 2);
            }
            _ => return i.min(sql.len()),
        }
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The statements of a script, prepared one at a time with SQLite's own tokenizer: rusqlite's
/// batch API does not say where a statement ends, and an error must say where it is.
mod raw {
    use std::os::raw::{c_char, c_int};

    use rusqlite::{ffi, Connection};

    use crate::sqlite::errors::map_error;
    use crate::sqlite::stop::StopCheck;
    use crate::Result;

    /// One prepared statement, finalized when dropped.
    pub(super) struct Stmt(*mut ffi::sqlite3_stmt);

    impl Drop for Stmt {
        fn drop(&mut self) {
            // SAFETY: `self.0` came from a successful sqlite3_prepare_v3 and is finalized
            // exactly once, here.
            #[allow(unsafe_code)]
            unsafe {
                ffi::sqlite3_finalize(self.0);
            }
        }
    }

    fn failure(conn: &Connection, rc: c_int) -> rusqlite::Error {
        // SAFETY: `conn.handle()` is the live sqlite3* of `conn`; sqlite3_errmsg returns a
        // NUL-terminated string owned by SQLite, valid until the next call on the connection,
        // and copied out before anything else runs on it.
        #[allow(unsafe_code)]
        let (code, message) = unsafe {
            let msg = ffi::sqlite3_errmsg(conn.handle());
            let text = if msg.is_null() {
                None
            } else {
                Some(std::ffi::CStr::from_ptr(msg).to_string_lossy().into_owned())
            };
            (ffi::sqlite3_extended_errcode(conn.handle()), text)
        };
        let code = if code == ffi::SQLITE_OK { rc } else { code };
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), message)
    }

    /// Prepares the first statement of `sql`: the statement (`None` for one that is only
    /// whitespace, comments or `;`) and how many bytes of `sql` it took.
    pub(super) fn prepare(
        conn: &Connection,
        sql: &str,
    ) -> std::result::Result<(Option<Stmt>, usize), rusqlite::Error> {
        let len = c_int::try_from(sql.len()).map_err(|_| {
            rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_TOOBIG),
                Some("the script is too long".into()),
            )
        })?;
        let mut stmt: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
        let mut tail: *const c_char = std::ptr::null();
        let start = sql.as_ptr().cast::<c_char>();
        // SAFETY: `start` and `len` describe the live UTF-8 bytes of `sql` (SQLite reads at
        // most `len` bytes, no terminator needed); `stmt` and `tail` are out-params on this
        // frame. SQLite sets `tail` to a point inside those bytes (or their end).
        #[allow(unsafe_code)]
        let rc = unsafe { ffi::sqlite3_prepare_v3(conn.handle(), start, len, 0, &mut stmt, &mut tail) };
        if rc != ffi::SQLITE_OK {
            if !stmt.is_null() {
                drop(Stmt(stmt));
            }
            return Err(failure(conn, rc));
        }
        let consumed = if tail.is_null() {
            sql.len()
        } else {
            // SAFETY: both pointers are into (or one past) the same allocation, `sql`'s bytes.
            #[allow(unsafe_code)]
            let d = unsafe { tail.offset_from(start) };
            usize::try_from(d).unwrap_or(sql.len()).min(sql.len())
        };
        Ok(((!stmt.is_null()).then_some(Stmt(stmt)), consumed))
    }

    impl Stmt {
        /// Steps the statement to its end, discarding rows; `stop` is checked between rows.
        pub(super) fn run(&self, conn: &Connection, stop: &StopCheck) -> Result<()> {
            // Bounded by the statement: every SQLITE_ROW is a row of a finite result or the
            // deadline ends it (the progress handler interrupts the step).
            loop {
                // SAFETY: `self.0` is a live prepared statement of `conn`, used on this
                // thread only while `conn` is borrowed.
                #[allow(unsafe_code)]
                let rc = unsafe { ffi::sqlite3_step(self.0) };
                match rc {
                    ffi::SQLITE_ROW => stop.check()?,
                    ffi::SQLITE_DONE => return Ok(()),
                    _ => return Err(map_error(failure(conn, rc), Some(stop))),
                }
            }
        }
    }
}

/// The comment every statement of the engine's own that sits in a connection's statement cache
/// begins with. SQLite's authorizer runs when a statement is prepared, not when a cached one is
/// reused, so app SQL with the same text as a cached statement of the engine would run it past
/// the policy; app SQL that begins with this mark is refused instead ([`prepare_one`]).
pub const INTERNAL_MARK: &str = "/* sila internal */ ";

/// Prepares (or takes from the cache) exactly one statement; `what` names the operation in
/// errors.
fn prepare_one<'c>(
    conn: &'c Connection,
    sql: &str,
    what: &str,
    stop: &StopCheck,
) -> Result<CachedStatement<'c>> {
    if sql.trim_start().starts_with(INTERNAL_MARK.trim_end()) {
        return Err(Error::new(
            ErrorCode::PolicyDenied,
            format!("`{what}` refuses SQL that begins with the engine's own marker comment"),
        ));
    }
    let prepared = match conn.prepare_cached(sql) {
        Err(e) if stale_schema_suspect(conn, &e) => {
            refresh_schema(conn);
            conn.prepare_cached(sql)
        }
        other => other,
    };
    prepared.map_err(|e| match e {
        rusqlite::Error::MultipleStatement => Error::invalid_argument(format!(
            "`{what}` runs exactly one statement, but the SQL continues after the first one; \
             run scripts with execute_script"
        )),
        rusqlite::Error::Empty => {
            Error::invalid_argument(format!("`{what}` needs one statement, but the SQL holds none"))
        }
        other => map_error(other, Some(stop)),
    })
}

/// Whether a failed prepare may have failed on a stale copy of the schema: a plain SQL error
/// (not a refusal) on a connection outside a transaction. SQLite checks the schema cookie
/// when a statement runs, not when it is prepared, and only some prepare errors make it look
/// again: a reader that has not run anything since another connection's DDL still has the old
/// schema, and refuses an INSERT into a view whose INSTEAD OF trigger is new, an ON CONFLICT
/// target whose index is new, or an ALTER … RENAME to a name just dropped.
fn stale_schema_suspect(conn: &Connection, e: &rusqlite::Error) -> bool {
    let code = match e {
        rusqlite::Error::SqliteFailure(f, _) | rusqlite::Error::SqlInputError { error: f, .. } => {
            f.extended_code
        }
        _ => return false,
    };
    code & 0xff == rusqlite::ffi::SQLITE_ERROR && conn.is_autocommit()
}

/// Brings the connection's copy of the schema up to date: a statement that reads the schema
/// table makes SQLite compare the schema cookie and reload a stale schema before it runs.
fn refresh_schema(conn: &Connection) {
    let _ = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()));
}

/// Refuses a statement SQLite says writes (`sqlite3_stmt_readonly`) unless it is an EXPLAIN
/// (`sqlite3_stmt_isexplain`: it only describes the statement): a query runs on a reader.
///
/// One exception: SQLite counts `PRAGMA journal_mode` among the writers even without an
/// argument (its opcode may change the mode). A statement whose one result column is
/// `journal_mode` is let through: the authorizer has already refused any change of the mode
/// (it accepts only the value in force), and the reader's `query_only` stops anything else
/// that would answer under that name.
fn refuse_writes(stmt: &CachedStatement<'_>) -> Result<()> {
    if stmt.readonly() || stmt.is_explain() > 0 {
        return Ok(());
    }
    if stmt.column_count() == 1 && stmt.column_name(0).is_ok_and(|c| c == "journal_mode") {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::WriteInQuery,
        "query runs statements that only read, and SQLite says this one writes (an INSERT, UPDATE or \
         DELETE, also with RETURNING; DDL; a PRAGMA that sets something): run it with exec, which \
         returns its rows, changes and last_insert_rowid",
    ))
}

fn bind(stmt: &mut CachedStatement<'_>, params: &[Value], stop: &StopCheck) -> Result<()> {
    let expected = stmt.parameter_count();
    if expected != params.len() {
        return Err(Error::invalid_argument(format!(
            "statement expects {expected} parameters, got {}",
            params.len()
        )));
    }
    for (index, param) in params.iter().enumerate() {
        stmt.raw_bind_parameter(index + 1, param).map_err(|e| map_error(e, Some(stop)))?;
    }
    Ok(())
}

fn column_names(stmt: &rusqlite::Statement<'_>) -> Result<Vec<String>> {
    // rusqlite panics on a column name that is not UTF-8 (possible with a crafted schema);
    // turn that into an error instead of unwinding through the caller.
    catch_unwind(AssertUnwindSafe(|| stmt.column_names().map(str::to_owned).collect()))
        .map_err(|_| Error::corrupt("a result column name is not valid UTF-8"))
}

fn names_len(columns: &[String]) -> usize {
    columns.iter().map(String::len).sum()
}

/// Accumulates rows while keeping the exact [`result_bytes`] of what it holds.
struct Collector<'l> {
    limits: &'l QueryLimits,
    column_count: usize,
    bytes: u64,
    rows: Vec<Vec<Value>>,
    row: Vec<Value>,
}

impl<'l> Collector<'l> {
    fn new(column_count: usize, names_bytes: usize, limits: &'l QueryLimits) -> Collector<'l> {
        Collector { limits, column_count, bytes: to_u64(names_bytes), rows: Vec::new(), row: Vec::new() }
    }

    fn start_row(&mut self) -> Result<()> {
        self.count_row_start()?;
        self.row = Vec::with_capacity(self.column_count);
        Ok(())
    }

    /// The row cap, checked before a new row is taken.
    fn count_row_start(&mut self) -> Result<()> {
        if to_u64(self.rows.len()) >= self.limits.rows_max {
            return Err(Error::new(
                ErrorCode::ResultTooLarge,
                format!("result exceeds rows_max of {} rows", self.limits.rows_max),
            ));
        }
        Ok(())
    }

    fn push(&mut self, value: ValueRef<'_>) -> Result<()> {
        let value = self.take(value)?;
        self.row.push(value);
        Ok(())
    }

    /// Adds the size of `value`, then copies it out. Sized before it is copied, so an
    /// oversized value is never materialized.
    fn take(&mut self, value: ValueRef<'_>) -> Result<Value> {
        self.add_bytes(value_ref_bytes(value))?;
        Ok(Value::from(value))
    }

    fn finish_row(&mut self) {
        self.rows.push(std::mem::take(&mut self.row));
    }

    fn add_bytes(&mut self, bytes: usize) -> Result<()> {
        self.bytes = self.bytes.saturating_add(to_u64(bytes));
        self.check_bytes()
    }

    fn check_bytes(&self) -> Result<()> {
        if self.bytes > self.limits.bytes_max {
            return Err(Error::new(
                ErrorCode::ResultTooLarge,
                format!(
                    "result exceeds bytes_max of {} bytes (column names, and text and blob bytes, 8 per number)",
                    self.limits.bytes_max
                ),
            ));
        }
        Ok(())
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// [`Value::size_bytes`] of the value this reference converts to, without copying it.
fn value_ref_bytes(value: ValueRef<'_>) -> usize {
    match value {
        ValueRef::Null => 0,
        ValueRef::Integer(_) | ValueRef::Real(_) => 8,
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sqlite::open::tests::TempDir;
    use crate::sqlite::{open_connection, CancelToken, ConnectionOptions};

    const COUNT_FOREVER: &str =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";

    fn stop() -> StopCheck {
        StopCheck::with_timeout(Duration::from_secs(60), CancelToken::new())
    }

    fn conn_with_rows(n: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)").unwrap();
        for i in 1..=n {
            conn.execute("INSERT INTO t(id, name, data) VALUES (?1, 'n' || ?1, x'00ff')", [i]).unwrap();
        }
        conn
    }

    #[test]
    fn query_returns_rows_and_binds_params() {
        let conn = conn_with_rows(3);
        let rows = query(
            &conn,
            "SELECT id, name, data, 1.5 AS r, NULL AS z FROM t WHERE id >= ?1 ORDER BY id",
            &[Value::Integer(2)],
            &QueryLimits::default(),
            &stop(),
        )
        .unwrap();
        assert_eq!(rows.columns, ["id", "name", "data", "r", "z"]);
        assert_eq!(
            rows.rows,
            vec![
                vec![
                    Value::Integer(2),
                    Value::Text("n2".into()),
                    Value::Blob(vec![0, 255]),
                    Value::Real(1.5),
                    Value::Null
                ],
                vec![
                    Value::Integer(3),
                    Value::Text("n3".into()),
                    Value::Blob(vec![0, 255]),
                    Value::Real(1.5),
                    Value::Null
                ],
            ]
        );
        // Named parameters bind by position too.
        let rows = query(
            &conn,
            "SELECT name FROM t WHERE id = :id",
            &[Value::Integer(1)],
            &QueryLimits::default(),
            &stop(),
        )
        .unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Text("n1".into())]]);
    }

    #[test]
    fn row_cap_boundary() {
        let conn = conn_with_rows(10);
        let limits = QueryLimits { rows_max: 10, ..Default::default() };
        let rows = query(&conn, "SELECT id FROM t", &[], &limits, &stop()).unwrap();
        assert_eq!(rows.rows.len(), 10);
        let limits = QueryLimits { rows_max: 9, ..Default::default() };
        let err = query(&conn, "SELECT id FROM t", &[], &limits, &stop()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResultTooLarge);
        assert_eq!(err.message(), "result exceeds rows_max of 9 rows");
        // The cap stops stepping: an endless query with a small cap returns at once.
        let limits = QueryLimits { rows_max: 5, ..Default::default() };
        let err = query(
            &conn,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c",
            &[],
            &limits,
            &stop(),
        )
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResultTooLarge);
    }

    #[test]
    fn byte_cap_boundary_is_the_exact_result_size() {
        let conn = conn_with_rows(20);
        let sql = "SELECT id, name, data, 0.25 AS r, NULL AS z FROM t ORDER BY id";
        let all = query(&conn, sql, &[], &QueryLimits::default(), &stop()).unwrap();
        let exact = result_bytes(&all);
        // Names "id","name","data","r","z" (12) + per row 8 + len("nN") + 2 + 8 + 0.
        let names = 12;
        let per_row = |i: u64| 8 + 1 + i.to_string().len() as u64 + 2 + 8;
        assert_eq!(exact, names + (1..=20).map(per_row).sum::<u64>());
        let limits = QueryLimits { bytes_max: exact, ..Default::default() };
        assert_eq!(query(&conn, sql, &[], &limits, &stop()).unwrap(), all);
        let limits = QueryLimits { bytes_max: exact - 1, ..Default::default() };
        let err = query(&conn, sql, &[], &limits, &stop()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResultTooLarge);
        assert!(
            err.message().starts_with(&format!("result exceeds bytes_max of {} bytes", exact - 1)),
            "{err}"
        );
        // Even an empty result has its column names.
        let limits = QueryLimits { bytes_max: 2, ..Default::default() };
        assert!(query(&conn, "SELECT id FROM t WHERE 0", &[], &limits, &stop()).unwrap().rows.is_empty());
        let limits = QueryLimits { bytes_max: 1, ..Default::default() };
        assert_eq!(
            query(&conn, "SELECT id FROM t WHERE 0", &[], &limits, &stop()).unwrap_err().code(),
            ErrorCode::ResultTooLarge
        );
    }

    /// Whatever an app may store it can read back under the default caps: the largest value
    /// SQLite accepts (`SQLITE_LIMIT_LENGTH`), as a blob and as a text that would be six times
    /// its size in JSON.
    #[test]
    fn the_largest_storable_value_reads_back_under_the_default_caps() {
        let conn = Connection::open_in_memory().unwrap();
        super::super::policy::harden(&conn).unwrap();
        conn.execute_batch("CREATE TABLE big(b BLOB, t TEXT)").unwrap();
        let max = usize::try_from(LENGTH_BYTES_MAX).unwrap();
        // A row is limited too: one value per row, the rest of the row's room for its header.
        let blob = Value::Blob(vec![0xab; max - 64]);
        let text = Value::Text("\u{1}".repeat(max - 64));
        let limits = QueryLimits::default();
        execute(&conn, "INSERT INTO big(b) VALUES (?1)", std::slice::from_ref(&blob), &limits, &stop())
            .unwrap();
        execute(&conn, "INSERT INTO big(t) VALUES (?1)", std::slice::from_ref(&text), &limits, &stop())
            .unwrap();
        let err = execute(
            &conn,
            "INSERT INTO big(b) VALUES (zeroblob(?1))",
            &[Value::Integer(i64::from(LENGTH_BYTES_MAX) + 1)],
            &limits,
            &stop(),
        )
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "past the write cap: {err}");
        assert_eq!(
            query_first(&conn, "SELECT b FROM big WHERE b IS NOT NULL", &[], &limits, &stop()).unwrap(),
            Some(blob)
        );
        let rows = query(&conn, "SELECT t FROM big WHERE t IS NOT NULL", &[], &limits, &stop()).unwrap();
        assert_eq!(rows.rows, vec![vec![text]]);
    }

    #[test]
    fn query_first_returns_the_first_value_and_steps_no_further() {
        let conn = conn_with_rows(3);
        let limits = QueryLimits::default();
        let first = |sql: &str, params: &[Value]| query_first(&conn, sql, params, &limits, &stop());
        assert_eq!(
            first("SELECT name, id FROM t ORDER BY id DESC", &[]).unwrap(),
            Some(Value::Text("n3".into()))
        );
        assert_eq!(
            first("SELECT id FROM t WHERE id = ?1", &[Value::Integer(2)]).unwrap(),
            Some(Value::Integer(2))
        );
        assert_eq!(first("SELECT id FROM t WHERE 0", &[]).unwrap(), None);
        assert_eq!(first("SELECT NULL", &[]).unwrap(), Some(Value::Null));
        // Rows after the first are never computed: an endless query answers at once, and a
        // rows_max smaller than the whole result does not matter.
        let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c";
        assert_eq!(first(endless, &[]).unwrap(), Some(Value::Integer(1)));
        let one = QueryLimits { rows_max: 1, ..Default::default() };
        assert_eq!(
            query_first(&conn, "SELECT id FROM t", &[], &one, &stop()).unwrap(),
            Some(Value::Integer(1))
        );
        let none = QueryLimits { rows_max: 0, ..Default::default() };
        let err = query_first(&conn, "SELECT id FROM t", &[], &none, &stop()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResultTooLarge);
        assert_eq!(query_first(&conn, "SELECT id FROM t WHERE 0", &[], &none, &stop()).unwrap(), None);
        // Bad input: as for `query`.
        assert_eq!(
            first("SELECT id FROM t WHERE id = ?1", &[]).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
        assert_eq!(first("SELECT 1; SELECT 2", &[]).unwrap_err().code(), ErrorCode::InvalidArgument);
        let cancelled = stop();
        cancelled.cancel_token().cancel();
        let err = query_first(&conn, "SELECT 1", &[], &limits, &cancelled).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Cancelled);
    }

    #[test]
    fn query_first_byte_cap_is_the_one_row_size_at_the_byte() {
        let conn = conn_with_rows(2);
        let sql = "SELECT name AS \"nä\\me\" FROM t ORDER BY id";
        let exact = "nä\\me".len() as u64 + 2;
        let at = QueryLimits { bytes_max: exact, ..Default::default() };
        assert_eq!(query_first(&conn, sql, &[], &at, &stop()).unwrap(), Some(Value::Text("n1".into())));
        let under = QueryLimits { bytes_max: exact - 1, ..Default::default() };
        let err = query_first(&conn, sql, &[], &under, &stop()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResultTooLarge);
        assert!(
            err.message().starts_with(&format!("result exceeds bytes_max of {} bytes", exact - 1)),
            "{err}"
        );
    }

    #[test]
    fn deadline_between_rows_is_read_every_rows_per_clock_check_rows() {
        // A deadline that has passed is noticed between rows only at a multiple of
        // ROWS_PER_CLOCK_CHECK (elsewhere the progress handler watches it).
        let conn = conn_with_rows(200);
        let live = StopCheck::with_timeout(Duration::from_secs(60), CancelToken::new());
        assert!(between_rows(&live, ROWS_PER_CLOCK_CHECK).is_ok());
        let past = StopCheck::with_timeout(Duration::ZERO, CancelToken::new());
        assert!(between_rows(&past, ROWS_PER_CLOCK_CHECK - 1).is_ok(), "no clock read");
        assert_eq!(between_rows(&past, ROWS_PER_CLOCK_CHECK).unwrap_err().code(), ErrorCode::Timeout);
        // Cancellation is seen after every row.
        let cancelled = StopCheck::with_timeout(Duration::from_secs(60), CancelToken::new());
        cancelled.cancel_token().cancel();
        assert_eq!(between_rows(&cancelled, 1).unwrap_err().code(), ErrorCode::Cancelled);
        let rows = query(&conn, "SELECT id FROM t", &[], &QueryLimits::default(), &live).unwrap();
        assert_eq!(rows.rows.len(), 200);
    }

    #[test]
    fn oversized_single_value_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        let limits = QueryLimits { bytes_max: 1000, ..Default::default() };
        let err = query(&conn, "SELECT zeroblob(1000000)", &[], &limits, &stop()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResultTooLarge);
    }

    #[test]
    fn timeout_fires_promptly() {
        let conn = Connection::open_in_memory().unwrap();
        let check = StopCheck::with_timeout(Duration::from_millis(50), CancelToken::new());
        let err = query(&conn, COUNT_FOREVER, &[], &QueryLimits::default(), &check).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
        assert!(err.message().contains("statement timeout of 50 ms exceeded"), "{err}");
        assert_eq!(err.sqlite_code(), Some(rusqlite::ffi::SQLITE_INTERRUPT));
        // The handler is gone: the connection works normally afterwards.
        let rows = query(&conn, "SELECT 1", &[], &QueryLimits::default(), &stop()).unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);
    }

    #[test]
    fn cancel_from_another_thread() {
        let conn = Connection::open_in_memory().unwrap();
        let token = CancelToken::new();
        let check = StopCheck::with_timeout(Duration::from_secs(600), token.clone());
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            token.cancel();
        });
        let err = query(&conn, COUNT_FOREVER, &[], &QueryLimits::default(), &check).unwrap_err();
        canceller.join().unwrap();
        assert_eq!(err.code(), ErrorCode::Cancelled, "{err}");
    }

    #[test]
    fn pre_cancelled_or_expired_never_starts() {
        let conn = conn_with_rows(1);
        let token = CancelToken::new();
        token.cancel();
        let check = StopCheck::with_timeout(Duration::from_secs(60), token);
        let err = execute(&conn, "DELETE FROM t", &[], &QueryLimits::default(), &check).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Cancelled);
        let expired = StopCheck::with_timeout(Duration::ZERO, CancelToken::new());
        assert_eq!(execute_script(&conn, "DELETE FROM t", &expired).unwrap_err().code(), ErrorCode::Timeout);
        let n: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1, "nothing ran");
    }

    #[test]
    fn batch_timeout_maps_to_timeout() {
        let conn = Connection::open_in_memory().unwrap();
        let check = StopCheck::with_timeout(Duration::from_millis(50), CancelToken::new());
        let err = execute_script(&conn, &format!("CREATE TABLE x(a); {COUNT_FOREVER};"), &check).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    }

    #[test]
    fn execute_reports_changes_and_rowid() {
        let conn = conn_with_rows(3);
        let res = execute(
            &conn,
            "UPDATE t SET name = ?1 WHERE id <= ?2",
            &[Value::Text("x".into()), Value::Integer(2)],
            &QueryLimits::default(),
            &stop(),
        )
        .unwrap();
        assert_eq!(res.changes, 2);
        let res = execute(&conn, "INSERT INTO t(name) VALUES ('new')", &[], &QueryLimits::default(), &stop())
            .unwrap();
        assert_eq!(res, ExecResult { changes: 1, last_insert_rowid: 4, statements: 1, ..Default::default() });
        // DDL changes no rows, whatever the previous statement did.
        let res = execute(&conn, "CREATE TABLE other(x)", &[], &QueryLimits::default(), &stop()).unwrap();
        assert_eq!(res.changes, 0);
        // RETURNING rows come back with the changes.
        let res = execute(
            &conn,
            "INSERT INTO t(name) VALUES ('r'), ('s') RETURNING id, name AS n",
            &[],
            &QueryLimits::default(),
            &stop(),
        )
        .unwrap();
        assert_eq!((res.changes, res.last_insert_rowid), (2, 6));
        assert_eq!(res.rows.columns, ["id", "n"]);
        assert_eq!(
            res.rows.rows,
            vec![
                vec![Value::Integer(5), Value::Text("r".into())],
                vec![Value::Integer(6), Value::Text("s".into())]
            ]
        );
        // Under the caps of a query: a RETURNING past rows_max fails (the caller rolls back).
        let one = QueryLimits { rows_max: 1, ..Default::default() };
        let err = execute(&conn, "UPDATE t SET name = name RETURNING id", &[], &one, &stop()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResultTooLarge);
        // A SELECT given to exec returns its rows and changes nothing.
        let res =
            execute(&conn, "SELECT count(*) AS n FROM t", &[], &QueryLimits::default(), &stop()).unwrap();
        assert_eq!((res.changes, res.rows.rows.clone()), (0, vec![vec![Value::Integer(6)]]));
        // Trailing whitespace and comments are fine.
        execute(
            &conn,
            "DELETE FROM t WHERE id = 5; -- done\n /* really */ ",
            &[],
            &QueryLimits::default(),
            &stop(),
        )
        .unwrap();
    }

    #[test]
    fn execute_runs_exactly_one_statement() {
        let conn = conn_with_rows(1);
        let err = execute(&conn, "DELETE FROM t; DELETE FROM t", &[], &QueryLimits::default(), &stop())
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.message().contains("`exec` runs exactly one statement"), "{err}");
        let n: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1, "nothing ran");
        let err = execute(&conn, "  -- nothing\n", &[], &QueryLimits::default(), &stop()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        let err = query(&conn, "SELECT 1; SELECT 2", &[], &QueryLimits::default(), &stop()).unwrap_err();
        assert!(err.message().contains("`query` runs exactly one statement"), "{err}");
    }

    #[test]
    fn query_refuses_what_sqlite_says_writes() {
        let conn = conn_with_rows(1);
        let limits = QueryLimits::default();
        for sql in [
            "INSERT INTO t(name) VALUES ('x') RETURNING id",
            "UPDATE t SET name = 'y'",
            "DELETE FROM t RETURNING *",
            "CREATE TABLE u(x)",
            "PRAGMA user_version = 3",
            "WITH x AS (SELECT 1) INSERT INTO t(name) SELECT 'z' FROM x",
        ] {
            let err = query(&conn, sql, &[], &limits, &stop()).unwrap_err();
            assert_eq!(err.code(), ErrorCode::WriteInQuery, "{sql}: {err}");
            assert!(err.message().contains("run it with exec"), "{err}");
            let err = query_first(&conn, sql, &[], &limits, &stop()).unwrap_err();
            assert_eq!(err.code(), ErrorCode::WriteInQuery, "{sql}: {err}");
        }
        let n = query_first(&conn, "SELECT count(*) FROM t", &[], &limits, &stop()).unwrap();
        assert_eq!(n, Some(Value::Integer(1)), "nothing ran");
        // Reading PRAGMAs, EXPLAIN and CTEs that read are queries.
        for sql in [
            "PRAGMA user_version",
            "PRAGMA journal_mode",
            "EXPLAIN INSERT INTO t(name) VALUES (1)",
            "EXPLAIN QUERY PLAN DELETE FROM t",
            "WITH c AS (SELECT 1) SELECT * FROM c",
        ] {
            query(&conn, sql, &[], &limits, &stop()).unwrap();
        }
    }

    #[test]
    fn scripts_run_every_statement_and_say_where_one_failed() {
        let conn = Connection::open_in_memory().unwrap();
        let script = "-- schema\nCREATE TABLE a(x INTEGER PRIMARY KEY, y TEXT);;\n\
                      /* seed */ INSERT INTO a(y) VALUES ('p'), ('q');\n\
                      SELECT * FROM a;\nUPDATE a SET y = 'r' WHERE x = 1;   ";
        let res = execute_script(&conn, script, &stop()).unwrap();
        assert_eq!((res.statements, res.changes, res.last_insert_rowid), (4, 3, 2));
        assert!(res.rows.columns.is_empty(), "a script's rows are discarded");
        let bad =
            "INSERT INTO a(y) VALUES ('s');\n  INSERT INTO a(x) VALUES (1);\nINSERT INTO a(y) VALUES ('t')";
        let err = execute_script(&conn, bad, &stop()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Sqlite);
        assert_eq!(err.sqlite_code(), Some(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY));
        assert!(err.message().starts_with("statement 2 of the script (line 2, column 3): "), "{err}");
        assert!(err.message().contains("UNIQUE constraint failed"), "{err}");
        let n: i64 = conn.query_row("SELECT count(*) FROM a", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3, "the first statement ran and the third did not (atomicity is the caller's)");
        let err = execute_script(&conn, "SELECT 1;\nSELEC 2", &stop()).unwrap_err();
        assert!(err.message().starts_with("statement 2 of the script (line 2, column 1): "), "{err}");
        assert!(err.message().contains("syntax error"), "{err}");
        for empty in ["", "  ;; -- nothing\n", "/* only */"] {
            assert_eq!(execute_script(&conn, empty, &stop()).unwrap_err().code(), ErrorCode::InvalidArgument);
        }
        assert_eq!(line_and_column("ab\ncdé\nf", 7), (2, 4));
        assert_eq!(leading_blank_len(" -- a\n /* b */ x"), 15);
        assert_eq!(leading_blank_len("/* open"), 7);
    }

    #[test]
    fn parameter_count_mismatch() {
        let conn = conn_with_rows(1);
        let err =
            query(&conn, "SELECT ?1, ?2", &[Value::Null], &QueryLimits::default(), &stop()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(err.message(), "statement expects 2 parameters, got 1");
        let err = execute(&conn, "DELETE FROM t", &[Value::Integer(1)], &QueryLimits::default(), &stop())
            .unwrap_err();
        assert_eq!(err.message(), "statement expects 0 parameters, got 1");
        // A failed bind leaves nothing behind in the cached statement.
        let rows = query(
            &conn,
            "SELECT ?1, ?2",
            &[Value::Integer(1), Value::Integer(2)],
            &QueryLimits::default(),
            &stop(),
        )
        .unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Integer(1), Value::Integer(2)]]);
    }

    #[test]
    fn syntax_error_keeps_sqlite_message() {
        let conn = Connection::open_in_memory().unwrap();
        let err = query(&conn, "SELEC 1", &[], &QueryLimits::default(), &stop()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Sqlite);
        assert_eq!(err.sqlite_code(), Some(1));
        assert!(err.message().contains("near \"SELEC\": syntax error"), "{err}");
        let err = execute(&conn, "INSERT INTO missing VALUES (1)", &[], &QueryLimits::default(), &stop())
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Sqlite);
        assert!(err.message().contains("no such table: missing"), "{err}");
    }

    #[test]
    fn constraint_violation_has_extended_code() {
        let conn = conn_with_rows(1);
        let err = execute(&conn, "INSERT INTO t(id) VALUES (1)", &[], &QueryLimits::default(), &stop())
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Sqlite);
        assert_eq!(err.sqlite_code(), Some(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY));
    }

    #[test]
    fn full_database_is_quota_exceeded_and_connection_survives() {
        let dir = TempDir::new("full");
        let opts = ConnectionOptions { max_page_count: Some(8), ..Default::default() };
        let conn = open_connection(&dir.0.join("db.sqlite"), &opts).unwrap();
        execute(&conn, "CREATE TABLE big(v BLOB)", &[], &QueryLimits::default(), &stop()).unwrap();
        let blob = Value::Blob(vec![7; 4096]);
        let mut last = None;
        for _ in 0..64 {
            if let Err(e) = execute(
                &conn,
                "INSERT INTO big VALUES (?1)",
                std::slice::from_ref(&blob),
                &QueryLimits::default(),
                &stop(),
            ) {
                last = Some(e);
                break;
            }
        }
        let err = last.expect("the size limit must be hit within 64 inserts of 4 KiB into 8 pages");
        assert_eq!(err.code(), ErrorCode::QuotaExceeded, "{err}");
        assert_eq!(err.sqlite_code(), Some(rusqlite::ffi::SQLITE_FULL));
        assert!(err.message().contains("max_page_count"), "{err}");
        // Still usable: reads work, and a delete frees room for a small write.
        let before = query(&conn, "SELECT count(*) FROM big", &[], &QueryLimits::default(), &stop()).unwrap();
        assert!(matches!(before.rows[0][0], Value::Integer(n) if n >= 1));
        execute(&conn, "DELETE FROM big", &[], &QueryLimits::default(), &stop()).unwrap();
        execute(&conn, "INSERT INTO big VALUES (x'01')", &[], &QueryLimits::default(), &stop()).unwrap();
        assert!(conn.is_autocommit(), "no transaction left open");
    }
}
