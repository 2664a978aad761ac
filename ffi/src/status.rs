//! `sila_status`: the result code of every fallible C function, and the thread's last error.
//!
//! The numbers are those of `sila_sqlite::ErrorCode` (0 is success): stable, never reused,
//! new codes appended. A test pins every number and name against the Rust type.

use crate::boundary::{guard_value, with_last_error};
use sila_sqlite::ErrorCode;
use std::ffi::{c_char, CStr};

/// The outcome of a call. `SILA_OK` is 0; every other value is the stable number of the
/// matching `sila_sqlite::ErrorCode`. Values are never renumbered or reused; new ones are
/// appended, so a host should treat an unknown non-zero value as a failure.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum sila_status {
    /// Success.
    SILA_OK = 0,
    /// An app, database, snapshot or file that does not exist.
    SILA_NOT_FOUND = 1,
    /// A logical name, app id or database name that breaks the naming grammar.
    SILA_INVALID_NAME = 2,
    /// A malformed or out-of-range argument: a NULL pointer, a string that is not UTF-8,
    /// invalid JSON, an index out of range, a handle used after it was closed.
    SILA_INVALID_ARGUMENT = 3,
    /// A capability manifest that does not validate; the message names the field.
    SILA_INVALID_MANIFEST = 4,
    /// The app's manifest does not grant what was asked.
    SILA_CAPABILITY_DENIED = 5,
    /// The security policy refuses the statement or operation.
    SILA_POLICY_DENIED = 6,
    /// The operation would exceed a storage quota; nothing was written.
    SILA_QUOTA_EXCEEDED = 7,
    /// A statement or transaction ran past its deadline and was stopped (for
    /// `sila_request_wait`: the request is still running).
    SILA_TIMEOUT = 8,
    /// The request was cancelled by its caller.
    SILA_CANCELLED = 9,
    /// A result exceeded its row or byte cap.
    SILA_RESULT_TOO_LARGE = 10,
    /// The database or a limited resource is busy; retrying later may succeed.
    SILA_BUSY = 11,
    /// A write was attempted on a read-only database.
    SILA_READ_ONLY = 12,
    /// A record or database file failed its checksum, format or integrity check.
    SILA_CORRUPT = 13,
    /// The operating system reported an IO failure.
    SILA_IO = 14,
    /// A previous fsync failed; the database refuses all work until it is reopened.
    SILA_POISONED = 15,
    /// A migration step failed and the database was rolled back.
    SILA_MIGRATION_FAILED = 16,
    /// Another process (or handle) holds the workspace lock.
    SILA_WORKSPACE_LOCKED = 17,
    /// The thing to create already exists.
    SILA_ALREADY_EXISTS = 18,
    /// SQLite reported an error with no more specific code (syntax error, constraint
    /// violation…); `sila_last_error_sqlite_code` gives SQLite's extended result code.
    SILA_SQLITE = 19,
    /// A per-minute budget is spent; the message says when it refills.
    SILA_BUDGET_EXCEEDED = 20,
    /// A panic was caught at the C boundary (a bug in sila-sqlite); nothing unwound into C.
    SILA_PANIC = 21,
    /// An internal invariant was violated (a bug in sila-sqlite).
    SILA_INTERNAL = 22,
    /// The filesystem holding the workspace is full: nothing was written; free space and
    /// retry. (The app's own quota is `SILA_QUOTA_EXCEEDED`.)
    SILA_DISK_FULL = 23,
    /// A query was given a statement that writes (SQLite says so): nothing ran; run it with
    /// `sila_db_exec`, which returns its rows too.
    SILA_WRITE_IN_QUERY = 24,
}

/// The status of an error code. Codes added to the Rust type after this list map to
/// `SILA_INTERNAL` until they are added here (a test fails until then).
pub(crate) fn status_of(code: ErrorCode) -> sila_status {
    match code {
        ErrorCode::NotFound => sila_status::SILA_NOT_FOUND,
        ErrorCode::InvalidName => sila_status::SILA_INVALID_NAME,
        ErrorCode::InvalidArgument => sila_status::SILA_INVALID_ARGUMENT,
        ErrorCode::InvalidManifest => sila_status::SILA_INVALID_MANIFEST,
        ErrorCode::CapabilityDenied => sila_status::SILA_CAPABILITY_DENIED,
        ErrorCode::PolicyDenied => sila_status::SILA_POLICY_DENIED,
        ErrorCode::QuotaExceeded => sila_status::SILA_QUOTA_EXCEEDED,
        ErrorCode::Timeout => sila_status::SILA_TIMEOUT,
        ErrorCode::Cancelled => sila_status::SILA_CANCELLED,
        ErrorCode::ResultTooLarge => sila_status::SILA_RESULT_TOO_LARGE,
        ErrorCode::Busy => sila_status::SILA_BUSY,
        ErrorCode::ReadOnly => sila_status::SILA_READ_ONLY,
        ErrorCode::Corrupt => sila_status::SILA_CORRUPT,
        ErrorCode::Io => sila_status::SILA_IO,
        ErrorCode::Poisoned => sila_status::SILA_POISONED,
        ErrorCode::MigrationFailed => sila_status::SILA_MIGRATION_FAILED,
        ErrorCode::WorkspaceLocked => sila_status::SILA_WORKSPACE_LOCKED,
        ErrorCode::AlreadyExists => sila_status::SILA_ALREADY_EXISTS,
        ErrorCode::Sqlite => sila_status::SILA_SQLITE,
        ErrorCode::BudgetExceeded => sila_status::SILA_BUDGET_EXCEEDED,
        ErrorCode::Panic => sila_status::SILA_PANIC,
        ErrorCode::Internal => sila_status::SILA_INTERNAL,
        ErrorCode::DiskFull => sila_status::SILA_DISK_FULL,
        ErrorCode::WriteInQuery => sila_status::SILA_WRITE_IN_QUERY,
        _ => sila_status::SILA_INTERNAL,
    }
}

fn name_of(status: u32) -> &'static CStr {
    match status {
        0 => c"OK",
        1 => c"NOT_FOUND",
        2 => c"INVALID_NAME",
        3 => c"INVALID_ARGUMENT",
        4 => c"INVALID_MANIFEST",
        5 => c"CAPABILITY_DENIED",
        6 => c"POLICY_DENIED",
        7 => c"QUOTA_EXCEEDED",
        8 => c"TIMEOUT",
        9 => c"CANCELLED",
        10 => c"RESULT_TOO_LARGE",
        11 => c"BUSY",
        12 => c"READ_ONLY",
        13 => c"CORRUPT",
        14 => c"IO",
        15 => c"POISONED",
        16 => c"MIGRATION_FAILED",
        17 => c"WORKSPACE_LOCKED",
        18 => c"ALREADY_EXISTS",
        19 => c"SQLITE",
        20 => c"BUDGET_EXCEEDED",
        21 => c"PANIC",
        22 => c"INTERNAL",
        23 => c"DISK_FULL",
        24 => c"WRITE_IN_QUERY",
        _ => c"UNKNOWN",
    }
}

/// The stable upper-snake-case name of a status ("OK", "NOT_FOUND", "QUOTA_EXCEEDED"…), the
/// same names the CLI prints; "UNKNOWN" for a value this library does not know.
///
/// The string is static: never free it. Thread-safe. Does not change the last error.
#[no_mangle]
pub extern "C" fn sila_status_name(status: u32) -> *const c_char {
    guard_value(c"UNKNOWN".as_ptr(), || name_of(status).as_ptr())
}

/// The status of the last status-returning `sila_*` call made by the calling thread:
/// `SILA_OK` when it succeeded.
///
/// Every function that returns a `sila_status` sets this (clearing it on success); the
/// `sila_last_error_*` functions, `sila_status_name`, the version functions, the `*_free`
/// functions and the plain getters (`sila_result_row_count`…) leave it alone.
#[no_mangle]
pub extern "C" fn sila_last_error_status() -> sila_status {
    guard_value(sila_status::SILA_PANIC, || {
        with_last_error(|e| e.map(|e| e.status)).flatten().unwrap_or(sila_status::SILA_OK)
    })
}

/// SQLite's extended result code of the calling thread's last error (for example 2067,
/// SQLITE_CONSTRAINT_UNIQUE), or 0 when the error did not come from SQLite or there is none.
#[no_mangle]
pub extern "C" fn sila_last_error_sqlite_code() -> i32 {
    guard_value(0, || with_last_error(|e| e.map(|e| e.sqlite_code)).flatten().unwrap_or(0))
}

/// For the calling thread's last error, when it is a refusal that passes with time
/// (`SILA_BUDGET_EXCEEDED`): the milliseconds until the same request would be admitted. -1 when
/// the error says nothing about retrying, or there is none.
#[no_mangle]
pub extern "C" fn sila_last_error_retry_after_ms() -> i64 {
    guard_value(-1, || with_last_error(|e| e.map(|e| e.retry_after_ms)).flatten().unwrap_or(-1))
}

/// The message of the calling thread's last error, UTF-8 and NUL-terminated; "" when the
/// last call succeeded. Never NULL.
///
/// Ownership: the library's. The pointer stays valid until the calling thread makes its
/// next status-returning `sila_*` call (or exits); copy it to keep it
/// (`sila_last_error_message_copy`).
#[no_mangle]
pub extern "C" fn sila_last_error_message() -> *const c_char {
    guard_value(c"".as_ptr(), || {
        with_last_error(|e| e.map(|e| e.message.as_ptr())).flatten().unwrap_or(c"".as_ptr())
    })
}

/// Copies the calling thread's last error message into `buf` (at most `buf_len - 1` bytes
/// and a NUL terminator, cut at a byte boundary like `snprintf`) and returns the message's
/// full length in bytes, without the terminator. With `buf` NULL or `buf_len` 0 it writes
/// nothing and only returns the length, so a host can size its buffer first.
///
/// # Safety
/// `buf` is NULL or points to `buf_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn sila_last_error_message_copy(buf: *mut c_char, buf_len: usize) -> usize {
    guard_value(0, || {
        let message: Vec<u8> =
            with_last_error(|e| e.map(|e| e.message.as_bytes().to_vec())).flatten().unwrap_or_default();
        if !buf.is_null() && buf_len > 0 {
            let n = message.len().min(buf_len - 1);
            // SAFETY: `buf` is non-NULL with `buf_len` writable bytes (caller's contract) and
            // `n + 1 <= buf_len`; `message` is a separate allocation, so they do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n);
                buf.add(n).write(0);
            }
        }
        message.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_match_the_rust_error_codes() {
        for code in ErrorCode::ALL {
            let status = status_of(code);
            assert_eq!(status as u32, code.as_u32(), "{code:?}");
            assert_eq!(name_of(status as u32).to_str().ok(), Some(code.name()));
            assert_eq!(format!("{status:?}"), format!("SILA_{}", code.name()));
        }
        assert_eq!(sila_status::SILA_OK as u32, 0);
        assert_eq!(name_of(0).to_str().ok(), Some("OK"));
        let past_end = u32::try_from(ErrorCode::ALL.len() + 1).unwrap_or(u32::MAX);
        assert_eq!(name_of(past_end).to_str().ok(), Some("UNKNOWN"));
    }
}
