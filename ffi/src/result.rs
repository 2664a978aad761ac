//! `sila_result`: the outcome of a query or an exec, readable as JSON or cell by cell; and the
//! JSON strings the other operations hand out (`sila_string_free`).
//!
//! A result is immutable once built, so a `const sila_result *` may be read from many threads
//! at once. Text cells are stored with a trailing NUL so hosts get C strings without copying;
//! the JSON form is built on first request and cached.

use crate::boundary::{c_string, guard, guard_value, handle, out_arg, write_out, Result};
use crate::status::sila_status;
use sila_sqlite::{Error, ErrorCode, ExecResult, Rows, Value};
use std::ffi::{c_char, CString};
use std::sync::OnceLock;

/// The storage class of a cell. The numbers are SQLite's (`SQLITE_INTEGER` … `SQLITE_NULL`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum sila_type {
    /// A 64-bit signed integer.
    SILA_TYPE_INTEGER = 1,
    /// An IEEE-754 double (may be infinite).
    SILA_TYPE_REAL = 2,
    /// UTF-8 text.
    SILA_TYPE_TEXT = 3,
    /// Bytes.
    SILA_TYPE_BLOB = 4,
    /// SQL NULL.
    SILA_TYPE_NULL = 5,
}

enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    /// The UTF-8 bytes followed by one NUL (not counted in the length handed out).
    Text(Box<[u8]>),
    Blob(Box<[u8]>),
}

impl Cell {
    fn from_value(value: Value) -> Cell {
        match value {
            Value::Null => Cell::Null,
            Value::Integer(i) => Cell::Integer(i),
            Value::Real(f) => Cell::Real(f),
            Value::Text(s) => {
                let mut bytes = s.into_bytes();
                bytes.push(0);
                Cell::Text(bytes.into_boxed_slice())
            }
            Value::Blob(b) => Cell::Blob(b.into_boxed_slice()),
        }
    }

    fn text_bytes(bytes: &[u8]) -> &[u8] {
        bytes.split_last().map(|(_, text)| text).unwrap_or_default()
    }

    fn to_value(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Integer(i) => Value::Integer(*i),
            Cell::Real(f) => Value::Real(*f),
            Cell::Text(t) => Value::Text(String::from_utf8_lossy(Cell::text_bytes(t)).into_owned()),
            Cell::Blob(b) => Value::Blob(b.to_vec()),
        }
    }

    fn kind(&self) -> sila_type {
        match self {
            Cell::Null => sila_type::SILA_TYPE_NULL,
            Cell::Integer(_) => sila_type::SILA_TYPE_INTEGER,
            Cell::Real(_) => sila_type::SILA_TYPE_REAL,
            Cell::Text(_) => sila_type::SILA_TYPE_TEXT,
            Cell::Blob(_) => sila_type::SILA_TYPE_BLOB,
        }
    }
}

/// The outcome of a query (columns and rows) or an exec (changes, last insert rowid, and the
/// rows the statement returned: `INSERT … RETURNING`, or a SELECT).
/// Opaque; free with `sila_result_free`. Immutable: a `const sila_result *` may be read from
/// many threads at once.
pub struct sila_result {
    is_query: bool,
    columns: Vec<CString>,
    /// Row-major cells, `columns.len()` per row.
    cells: Vec<Cell>,
    rows: usize,
    changes: u64,
    last_insert_rowid: i64,
    statements: u64,
    json: OnceLock<CString>,
}

impl sila_result {
    pub(crate) fn from_rows(rows: Rows) -> sila_result {
        sila_result::build(true, rows, 0, 0, 0)
    }

    pub(crate) fn from_exec(exec: ExecResult) -> sila_result {
        sila_result::build(false, exec.rows, exec.changes, exec.last_insert_rowid, exec.statements)
    }

    fn build(
        is_query: bool,
        rows: Rows,
        changes: u64,
        last_insert_rowid: i64,
        statements: u64,
    ) -> sila_result {
        let columns: Vec<CString> = rows.columns.iter().map(|c| c_string(c)).collect();
        let count = rows.rows.len();
        let cells = rows.rows.into_iter().flat_map(|row| row.into_iter().map(Cell::from_value)).collect();
        sila_result {
            is_query,
            columns,
            cells,
            rows: count,
            changes,
            last_insert_rowid,
            statements,
            json: OnceLock::new(),
        }
    }

    fn rows(&self) -> Rows {
        let columns: Vec<String> = self.columns.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        let width = columns.len().max(1);
        let rows: Vec<Vec<Value>> = if columns.is_empty() {
            Vec::new()
        } else {
            self.cells.chunks(width).map(|row| row.iter().map(Cell::to_value).collect()).collect()
        };
        Rows { columns, rows }
    }

    fn json(&self) -> &CString {
        self.json.get_or_init(|| {
            let value = if self.is_query {
                self.rows().to_json()
            } else {
                ExecResult {
                    changes: self.changes,
                    last_insert_rowid: self.last_insert_rowid,
                    rows: self.rows(),
                    statements: self.statements,
                }
                .to_json()
            };
            c_string(&value.to_string())
        })
    }

    fn cell(&self, row: usize, column: usize) -> Result<&Cell> {
        let width = self.columns.len();
        if row >= self.rows || column >= width {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                format!(
                    "cell ({row}, {column}) is out of range: the result has {} rows of {width} columns",
                    self.rows
                ),
            ));
        }
        self.cells
            .get(row.saturating_mul(width).saturating_add(column))
            .ok_or_else(|| Error::new(ErrorCode::Internal, "result cells out of step with its shape"))
    }
}

fn wrong_type(row: usize, column: usize, cell: &Cell, wanted: &str) -> Error {
    Error::new(
        ErrorCode::InvalidArgument,
        format!("cell ({row}, {column}) is {:?}, not {wanted}", cell.kind()),
    )
}

/// Frees a result. NULL is allowed and does nothing. Freeing twice is undefined behaviour.
///
/// # Safety
/// `result` is NULL or a result from this library not yet freed, used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn sila_result_free(result: *mut sila_result) {
    guard_value((), || {
        if !result.is_null() {
            // SAFETY: a non-NULL result was made by `Box::into_raw` and is freed once.
            drop(unsafe { Box::from_raw(result) });
        }
    })
}

/// The result as compact JSON, UTF-8 and NUL-terminated: a query gives
/// `{"columns":["id",…],"rows":[[1,"a",null,1.5,{"$blob":"<base64>"}],…]}`, an exec gives
/// `{"changes":1,"columns":[…],"last_insert_rowid":7,"rows":[…],"statements":1}` (the columns
/// and rows it returned, empty for a statement without RETURNING). Non-finite reals are
/// `{"$real":"Infinity"}`.
///
/// `*json_out` and `*json_len_out` (bytes, without the NUL) are written on success. The text
/// is owned by the result and valid until `sila_result_free`. Thread-safe on a const result.
///
/// # Safety
/// `result` is NULL or a live result; the out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_result_json(
    result: *const sila_result,
    json_out: *mut *const c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or a live result (caller's contract).
        let result = unsafe { handle(result, "result") }?;
        out_arg(json_out, "json_out")?;
        out_arg(json_len_out, "json_len_out")?;
        let json = result.json();
        // SAFETY: both out-pointers were checked non-NULL and are writable.
        unsafe {
            write_out(json_out, json.as_ptr());
            write_out(json_len_out, json.as_bytes().len());
        }
        Ok(())
    })
}

/// Number of result columns (0 for an exec result or NULL).
///
/// # Safety
/// `result` is NULL or a live result.
#[no_mangle]
pub unsafe extern "C" fn sila_result_column_count(result: *const sila_result) -> usize {
    // SAFETY: NULL or a live result (caller's contract).
    guard_value(0, || unsafe { result.as_ref() }.map_or(0, |r| r.columns.len()))
}

/// Number of result rows (0 for an exec result or NULL).
///
/// # Safety
/// `result` is NULL or a live result.
#[no_mangle]
pub unsafe extern "C" fn sila_result_row_count(result: *const sila_result) -> usize {
    // SAFETY: NULL or a live result (caller's contract).
    guard_value(0, || unsafe { result.as_ref() }.map_or(0, |r| r.rows))
}

/// Rows changed by an exec (0 for a query result or NULL).
///
/// # Safety
/// `result` is NULL or a live result.
#[no_mangle]
pub unsafe extern "C" fn sila_result_changes(result: *const sila_result) -> u64 {
    // SAFETY: NULL or a live result (caller's contract).
    guard_value(0, || unsafe { result.as_ref() }.map_or(0, |r| r.changes))
}

/// The connection's last inserted rowid after an exec (0 for a query result or NULL).
///
/// # Safety
/// `result` is NULL or a live result.
#[no_mangle]
pub unsafe extern "C" fn sila_result_last_insert_rowid(result: *const sila_result) -> i64 {
    // SAFETY: NULL or a live result (caller's contract).
    guard_value(0, || unsafe { result.as_ref() }.map_or(0, |r| r.last_insert_rowid))
}

/// The name of column `column` (0-based), NUL-terminated UTF-8, owned by the result and valid
/// until `sila_result_free`. `SILA_INVALID_ARGUMENT` when out of range.
///
/// # Safety
/// `result` is NULL or a live result; `name_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_result_column_name(
    result: *const sila_result,
    column: usize,
    name_out: *mut *const c_char,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or a live result (caller's contract).
        let result = unsafe { handle(result, "result") }?;
        out_arg(name_out, "name_out")?;
        let name = result.columns.get(column).ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidArgument,
                format!("column {column} is out of range: the result has {} columns", result.columns.len()),
            )
        })?;
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(name_out, name.as_ptr()) };
        Ok(())
    })
}

/// The storage class of the cell at (`row`, `column`), 0-based.
///
/// # Safety
/// `result` is NULL or a live result; `type_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_result_type(
    result: *const sila_result,
    row: usize,
    column: usize,
    type_out: *mut sila_type,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or a live result (caller's contract).
        let result = unsafe { handle(result, "result") }?;
        out_arg(type_out, "type_out")?;
        let kind = result.cell(row, column)?.kind();
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(type_out, kind) };
        Ok(())
    })
}

/// The INTEGER cell at (`row`, `column`). Any other storage class (NULL included) is
/// `SILA_INVALID_ARGUMENT`, and `*value_out` is left alone.
///
/// # Safety
/// `result` is NULL or a live result; `value_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_result_int64(
    result: *const sila_result,
    row: usize,
    column: usize,
    value_out: *mut i64,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or a live result (caller's contract).
        let result = unsafe { handle(result, "result") }?;
        out_arg(value_out, "value_out")?;
        let value = match result.cell(row, column)? {
            Cell::Integer(i) => *i,
            other => return Err(wrong_type(row, column, other, "SILA_TYPE_INTEGER")),
        };
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(value_out, value) };
        Ok(())
    })
}

/// The REAL cell at (`row`, `column`); an INTEGER cell is converted to double. Anything else
/// is `SILA_INVALID_ARGUMENT`.
///
/// # Safety
/// `result` is NULL or a live result; `value_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_result_double(
    result: *const sila_result,
    row: usize,
    column: usize,
    value_out: *mut f64,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or a live result (caller's contract).
        let result = unsafe { handle(result, "result") }?;
        out_arg(value_out, "value_out")?;
        let value = match result.cell(row, column)? {
            Cell::Real(f) => *f,
            #[allow(clippy::cast_precision_loss)]
            Cell::Integer(i) => *i as f64,
            other => return Err(wrong_type(row, column, other, "SILA_TYPE_REAL")),
        };
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(value_out, value) };
        Ok(())
    })
}

/// The TEXT cell at (`row`, `column`): UTF-8, NUL-terminated (the text itself may hold NUL
/// bytes; `*len_out` is the full length without the terminator). Owned by the result, valid
/// until `sila_result_free`. Anything but TEXT is `SILA_INVALID_ARGUMENT`.
///
/// # Safety
/// `result` is NULL or a live result; the out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_result_text(
    result: *const sila_result,
    row: usize,
    column: usize,
    text_out: *mut *const c_char,
    len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or a live result (caller's contract).
        let result = unsafe { handle(result, "result") }?;
        out_arg(text_out, "text_out")?;
        out_arg(len_out, "len_out")?;
        let bytes = match result.cell(row, column)? {
            Cell::Text(t) => t,
            other => return Err(wrong_type(row, column, other, "SILA_TYPE_TEXT")),
        };
        let len = Cell::text_bytes(bytes).len();
        // SAFETY: checked non-NULL and writable.
        unsafe {
            write_out(text_out, bytes.as_ptr().cast::<c_char>());
            write_out(len_out, len);
        }
        Ok(())
    })
}

/// The BLOB cell at (`row`, `column`): `*len_out` bytes at `*data_out` (never NULL, even for
/// an empty blob), owned by the result and valid until `sila_result_free`. Anything but BLOB
/// is `SILA_INVALID_ARGUMENT`.
///
/// # Safety
/// `result` is NULL or a live result; the out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_result_blob(
    result: *const sila_result,
    row: usize,
    column: usize,
    data_out: *mut *const u8,
    len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or a live result (caller's contract).
        let result = unsafe { handle(result, "result") }?;
        out_arg(data_out, "data_out")?;
        out_arg(len_out, "len_out")?;
        let bytes = match result.cell(row, column)? {
            Cell::Blob(b) => b,
            other => return Err(wrong_type(row, column, other, "SILA_TYPE_BLOB")),
        };
        // SAFETY: checked non-NULL and writable. An empty boxed slice has a dangling but
        // non-NULL, aligned pointer, which is valid for reads of zero bytes.
        unsafe {
            write_out(data_out, bytes.as_ptr());
            write_out(len_out, bytes.len());
        }
        Ok(())
    })
}

/// Hands a JSON document to C as an owned, NUL-terminated string (freed by
/// `sila_string_free`), writing both out-params. Out-params may be NULL when the caller does
/// not want the document.
///
/// # Safety
/// The out-pointers are NULL or writable.
pub(crate) unsafe fn give_json(value: &serde_json::Value, json_out: *mut *mut c_char, len_out: *mut usize) {
    if json_out.is_null() {
        return;
    }
    let text = c_string(&value.to_string());
    let len = text.as_bytes().len();
    // SAFETY: `json_out` non-NULL and writable (caller's contract); `len_out` NULL or writable.
    unsafe {
        write_out(json_out, text.into_raw());
        write_out(len_out, len);
    }
}

/// Hands `text` to the caller through `text_out` (NUL-terminated, freed with
/// `sila_string_free`) and its length in bytes through `len_out` (NULL: not wanted).
///
/// # Safety
/// `text_out` non-NULL and writable; `len_out` NULL or writable.
pub(crate) unsafe fn give_text(text: &str, text_out: *mut *mut c_char, len_out: *mut usize) {
    let text = c_string(text);
    let len = text.as_bytes().len();
    // SAFETY: `text_out` non-NULL and writable (caller's contract); `len_out` NULL or writable.
    unsafe {
        write_out(text_out, text.into_raw());
        write_out(len_out, len);
    }
}

/// Frees a string this library returned through a `char **json_out` parameter. NULL is
/// allowed and does nothing. Freeing twice, or freeing any other pointer, is undefined.
///
/// # Safety
/// `s` is NULL or a string from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn sila_string_free(s: *mut c_char) {
    guard_value((), || {
        if !s.is_null() {
            // SAFETY: made by `CString::into_raw` in `give_json` and freed once.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_matches_the_engine_encoding() {
        let rows = Rows {
            columns: vec!["a".into(), "b".into()],
            rows: vec![
                vec![Value::Integer(1), Value::Text("x\0y".into())],
                vec![Value::Blob(b"hi!".to_vec()), Value::Real(f64::INFINITY)],
            ],
        };
        let expected = rows.to_json().to_string();
        let result = sila_result::from_rows(rows);
        assert_eq!(result.json().to_str().ok(), Some(expected.as_str()));
        assert!(matches!(result.cell(0, 1), Ok(Cell::Text(t)) if Cell::text_bytes(t) == b"x\0y"));
        assert!(result.cell(2, 0).is_err() && result.cell(0, 2).is_err());
        let exec = sila_result::from_exec(ExecResult {
            changes: 2,
            last_insert_rowid: 9,
            statements: 1,
            ..Default::default()
        });
        assert_eq!(
            exec.json().to_str().ok(),
            Some(r#"{"changes":2,"columns":[],"last_insert_rowid":9,"rows":[],"statements":1}"#)
        );
        let returning = ExecResult {
            changes: 1,
            last_insert_rowid: 4,
            rows: Rows { columns: vec!["id".into()], rows: vec![vec![Value::Integer(4)]] },
            statements: 1,
        };
        let exec = sila_result::from_exec(returning);
        assert_eq!(
            exec.json().to_str().ok(),
            Some(r#"{"changes":1,"columns":["id"],"last_insert_rowid":4,"rows":[[4]],"statements":1}"#)
        );
        assert!(matches!(exec.cell(0, 0), Ok(Cell::Integer(4))));
    }
}
