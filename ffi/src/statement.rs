//! `sila_statement`: a statement with typed parameters, for C hosts that would rather not
//! write numbers and bytes as JSON.
//!
//! `sila_database_prepare` asks SQLite about the statement once (its parameters, their names,
//! whether it writes); the host binds int64, double, text, blob or NULL by position or by
//! name, then runs it with `sila_statement_query` or `sila_statement_exec` as many times as it
//! likes, rebinding in between. Values travel as they are: a double is the same 64 bits in
//! SQLite, an int64 is never a JSON number. Unbound parameters are NULL, as in SQLite.
//!
//! The statement is held as its SQL and its bound values; each run goes through the same
//! broker path as `sila_database_query` / `sila_database_exec` (reader pool, group commit,
//! caps, policy), so nothing here is a second way into SQLite.

use crate::boundary::{
    bytes_arg, cstr_arg, guard, guard_value, handle, handle_mut, out_arg, str_arg, write_out, Result,
};
use crate::database::{sila_database, DbSlot};
use crate::result::sila_result;
use crate::status::sila_status;
use sila_sqlite::{Error, ErrorCode, Value};
use std::ffi::{c_char, c_void};
use std::sync::Arc;

/// A prepared statement with its bound values. Opaque; made by `sila_database_prepare`,
/// released by `sila_statement_free`.
///
/// Thread-safety: the bind functions take it exclusively; `sila_statement_query` and
/// `sila_statement_exec` take a const pointer and may run on many threads at once when no
/// thread binds.
pub struct sila_statement {
    /// The database handle's slot: emptied when the workspace closes, so later runs answer
    /// "closed" (a statement never keeps a closed workspace alive).
    slot: Arc<DbSlot>,
    sql: String,
    names: Vec<Option<String>>,
    writes: bool,
    values: Vec<Value>,
}

impl sila_statement {
    fn slot(&mut self, index: usize) -> Result<&mut Value> {
        let count = self.values.len();
        if index == 0 {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                "parameter index 0: parameters are numbered from 1",
            ));
        }
        self.values.get_mut(index - 1).ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidArgument,
                format!("parameter index {index} is out of range: the statement has {count} parameters"),
            )
        })
    }

    fn bind(&mut self, index: usize, value: Value) -> Result<()> {
        *self.slot(index)? = value;
        Ok(())
    }
}

/// Prepares one statement for typed binds. `sql` as for `sila_database_query` (exactly one
/// statement). SQLite checks it now: a syntax error, an unknown table or a statement the
/// policy refuses fails here (`SILA_SQLITE`, `SILA_POLICY_DENIED`…). On success
/// `*statement_out` is a new statement the caller owns (`sila_statement_free`), every
/// parameter NULL. Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; `sql` as described; `statement_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_prepare(
    database: *const sila_database,
    sql: *const c_char,
    sql_len: usize,
    statement_out: *mut *mut sila_statement,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (database, sql) = unsafe { (handle(database, "database")?, str_arg(sql, sql_len, "sql")?) };
        out_arg(statement_out, "statement_out")?;
        let (db, _) = database.get()?;
        let info = db.describe(sql)?;
        let statement = sila_statement {
            slot: database.slot(),
            sql: sql.to_string(),
            values: vec![Value::Null; info.parameters.len()],
            names: info.parameters,
            writes: info.writes,
        };
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(statement_out, Box::into_raw(Box::new(statement))) };
        Ok(())
    })
}

/// The number of parameters (the highest `?NNN`); 0 for NULL.
///
/// # Safety
/// `statement` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_parameter_count(statement: *const sila_statement) -> usize {
    guard_value(0, || {
        // SAFETY: NULL or live (caller's contract).
        unsafe { statement.as_ref() }.map_or(0, |s| s.values.len())
    })
}

/// Whether SQLite says the statement writes (run it with `sila_statement_exec`;
/// `sila_statement_query` refuses it with `SILA_WRITE_IN_QUERY`). False for NULL.
///
/// # Safety
/// `statement` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_writes(statement: *const sila_statement) -> bool {
    guard_value(false, || {
        // SAFETY: NULL or live (caller's contract).
        unsafe { statement.as_ref() }.is_some_and(|s| s.writes)
    })
}

/// The position (from 1) of the parameter named `name`, written as in the SQL with its
/// prefix (`":id"`, `"@id"`, `"$id"`, `"?3"`), in `*index_out`. A name the statement does not
/// have is `SILA_NOT_FOUND`.
///
/// # Safety
/// `statement` is NULL or live; `name` is NULL or a NUL-terminated string; `index_out` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_parameter_index(
    statement: *const sila_statement,
    name: *const c_char,
    index_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (statement, name) = unsafe { (handle(statement, "statement")?, cstr_arg(name, "name")?) };
        out_arg(index_out, "index_out")?;
        let position = statement.names.iter().position(|n| n.as_deref() == Some(name)).ok_or_else(|| {
            Error::new(ErrorCode::NotFound, format!("the statement has no parameter named {name}"))
        })?;
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(index_out, position + 1) };
        Ok(())
    })
}

/// Binds NULL to parameter `index` (from 1). Exclusive.
///
/// # Safety
/// `statement` is NULL or live and used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_bind_null(
    statement: *mut sila_statement,
    index: usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live and exclusive (caller's contract).
        unsafe { handle_mut(statement, "statement") }?.bind(index, Value::Null)
    })
}

/// Binds a 64-bit integer to parameter `index` (from 1). Exclusive.
///
/// # Safety
/// As `sila_statement_bind_null`.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_bind_int64(
    statement: *mut sila_statement,
    index: usize,
    value: i64,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live and exclusive (caller's contract).
        unsafe { handle_mut(statement, "statement") }?.bind(index, Value::Integer(value))
    })
}

/// Binds a double to parameter `index` (from 1), bit for bit; infinities are kept, and NaN is
/// stored by SQLite as NULL. Exclusive.
///
/// # Safety
/// As `sila_statement_bind_null`.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_bind_double(
    statement: *mut sila_statement,
    index: usize,
    value: f64,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live and exclusive (caller's contract).
        unsafe { handle_mut(statement, "statement") }?.bind(index, Value::Real(value))
    })
}

/// Binds UTF-8 text of `len` bytes (or `SILA_NUL_TERMINATED`) to parameter `index` (from 1);
/// the text is copied. Text that is not UTF-8 is `SILA_INVALID_ARGUMENT` (bind it as a blob).
/// Exclusive.
///
/// # Safety
/// As `sila_statement_bind_null`; `text` is NULL or valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_bind_text(
    statement: *mut sila_statement,
    index: usize,
    text: *const c_char,
    len: usize,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (statement, text) = unsafe { (handle_mut(statement, "statement")?, str_arg(text, len, "text")?) };
        statement.bind(index, Value::Text(text.to_string()))
    })
}

/// Binds `len` bytes to parameter `index` (from 1); the bytes are copied. `data` may be NULL
/// only when `len` is 0 (an empty blob). Exclusive.
///
/// # Safety
/// As `sila_statement_bind_null`; `data` is NULL or valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_bind_blob(
    statement: *mut sila_statement,
    index: usize,
    data: *const c_void,
    len: usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live and exclusive (caller's contract).
        let statement = unsafe { handle_mut(statement, "statement") }?;
        let bytes = if data.is_null() && len == 0 {
            Vec::new()
        } else if len == crate::boundary::SILA_NUL_TERMINATED {
            return Err(Error::new(ErrorCode::InvalidArgument, "a blob's length must be given"));
        } else {
            // SAFETY: `data` is valid for `len` bytes (caller's contract); NULL is refused.
            unsafe { bytes_arg(data.cast::<c_char>(), len, "data") }?.to_vec()
        };
        statement.bind(index, Value::Blob(bytes))
    })
}

/// Sets every parameter back to NULL. Exclusive.
///
/// # Safety
/// As `sila_statement_bind_null`.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_clear_bindings(statement: *mut sila_statement) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live and exclusive (caller's contract).
        let statement = unsafe { handle_mut(statement, "statement") }?;
        statement.values.iter_mut().for_each(|v| *v = Value::Null);
        Ok(())
    })
}

/// Runs the statement as a query with its bound values; as `sila_database_query`
/// (`SILA_WRITE_IN_QUERY` for a statement that writes). `*result_out` receives the rows.
///
/// # Safety
/// `statement` is NULL or live; `result_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_query(
    statement: *const sila_statement,
    result_out: *mut *mut sila_result,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let statement = unsafe { handle(statement, "statement") }?;
        out_arg(result_out, "result_out")?;
        let (db, _) = statement.slot.get()?;
        let rows = db.query(&statement.sql, &statement.values)?;
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(result_out, Box::into_raw(Box::new(sila_result::from_rows(rows)))) };
        Ok(())
    })
}

/// Runs the statement on the writer with its bound values; as `sila_database_exec`
/// (`result_out` may be NULL; it receives changes, the rowid and any RETURNING rows).
///
/// # Safety
/// `statement` is NULL or live; `result_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_exec(
    statement: *const sila_statement,
    result_out: *mut *mut sila_result,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let statement = unsafe { handle(statement, "statement") }?;
        let (db, _) = statement.slot.get()?;
        let exec = db.exec(&statement.sql, &statement.values)?;
        if !result_out.is_null() {
            // SAFETY: non-NULL and writable (caller's contract).
            unsafe { write_out(result_out, Box::into_raw(Box::new(sila_result::from_exec(exec)))) };
        }
        Ok(())
    })
}

/// Frees a statement. NULL is allowed and does nothing. Freeing twice is undefined.
///
/// # Safety
/// `statement` is NULL or a live statement used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn sila_statement_free(statement: *mut sila_statement) {
    guard_value((), || {
        if !statement.is_null() {
            // SAFETY: made by `Box::into_raw` in `sila_database_prepare`, freed once.
            drop(unsafe { Box::from_raw(statement) });
        }
    })
}
