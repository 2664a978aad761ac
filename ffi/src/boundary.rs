//! The edge between C and Rust: the panic boundary, the calling thread's last error, and the
//! checked conversions of every pointer argument.
//!
//! Every exported function body runs inside [`guard`] (or [`guard_value`]): a panic becomes
//! [`sila_status::SILA_PANIC`], never an unwind into C. A function that returns a
//! `sila_status` records its outcome as the calling thread's last error (cleared on success),
//! which `sila_last_error_*` read back. Pointer arguments go through [`handle`], [`str_arg`],
//! [`cstr_arg`] and [`path_arg`], which refuse NULL and non-UTF-8 with
//! `SILA_INVALID_ARGUMENT` before anything happens; out-params are written with [`write_out`]
//! at the very end, only on success.

use crate::status::{sila_status, status_of};
use sila_sqlite::{Error, ErrorCode};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// The result type inside the boundary.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Pass as a string length to mean "up to the first NUL byte" (`SIZE_MAX`; the header
/// defines it in `cbindgen.toml`, since cbindgen cannot print `usize::MAX`).
pub(crate) const SILA_NUL_TERMINATED: usize = usize::MAX;

/// The last failure of a status-returning call on one thread.
pub(crate) struct LastError {
    pub(crate) status: sila_status,
    pub(crate) sqlite_code: i32,
    pub(crate) message: CString,
    /// Milliseconds until a retry may succeed; -1 when the error says nothing about it.
    pub(crate) retry_after_ms: i64,
}

thread_local! {
    /// `None` after a success (or before any call).
    static LAST_ERROR: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

/// A C string from a Rust string: interior NUL bytes (which a C reader would stop at) become
/// U+FFFD so the whole message stays readable.
pub(crate) fn c_string(text: &str) -> CString {
    let cleaned = if text.contains('\0') { text.replace('\0', "\u{fffd}") } else { text.to_string() };
    CString::new(cleaned).unwrap_or_default()
}

fn record(outcome: Option<&Error>) {
    let value = outcome.map(|e| LastError {
        status: status_of(e.code()),
        sqlite_code: e.sqlite_code().unwrap_or(0),
        message: c_string(e.message()),
        retry_after_ms: e.retry_after().map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    });
    // `try_with` fails only while the thread is being torn down; there is nobody to tell then.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = value;
        }
    });
}

/// Runs `f` with the thread's last error (read-only).
pub(crate) fn with_last_error<T>(f: impl FnOnce(Option<&LastError>) -> T) -> Option<T> {
    LAST_ERROR.try_with(|slot| slot.try_borrow().ok().map(|s| f(s.as_ref()))).ok().flatten()
}

/// The error a caught panic becomes.
fn panic_error(payload: &(dyn std::any::Any + Send)) -> Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string());
    Error::new(ErrorCode::Panic, format!("a panic was caught at the C boundary (this is a bug): {what}"))
}

/// The panic boundary of every status-returning function: runs `f`, records its outcome as
/// the thread's last error and returns its status. A panic becomes `SILA_PANIC`.
pub(crate) fn guard(f: impl FnOnce() -> Result<()>) -> sila_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            record(None);
            sila_status::SILA_OK
        }
        Ok(Err(e)) => {
            record(Some(&e));
            status_of(e.code())
        }
        Err(payload) => {
            record(Some(&panic_error(payload.as_ref())));
            sila_status::SILA_PANIC
        }
    }
}

/// The panic boundary of a function that returns a plain value: `fallback` on panic. It does
/// not touch the last error (only status-returning functions do).
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The error for a NULL pointer argument.
pub(crate) fn null_arg(name: &str) -> Error {
    Error::new(ErrorCode::InvalidArgument, format!("argument `{name}` is NULL"))
}

/// Borrows the object behind a handle argument, refusing NULL.
///
/// # Safety
/// `ptr` is NULL or points to a live `T` that stays valid, and is not mutated except through
/// its own synchronisation, for `'a`.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: the caller guarantees `ptr` is NULL or valid for `'a`; `as_ref` checks NULL.
    unsafe { ptr.as_ref() }.ok_or_else(|| null_arg(name))
}

/// Borrows the object behind an exclusive handle argument, refusing NULL.
///
/// # Safety
/// `ptr` is NULL or points to a live `T` that no other thread uses during `'a`.
pub(crate) unsafe fn handle_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: the caller guarantees `ptr` is NULL or valid and unaliased for `'a`.
    unsafe { ptr.as_mut() }.ok_or_else(|| null_arg(name))
}

/// The bytes of a (pointer, length) argument; `SILA_NUL_TERMINATED` reads up to the first
/// NUL.
///
/// # Safety
/// `ptr` is NULL, or points to `len` readable bytes (or to a NUL-terminated string when `len`
/// is `SILA_NUL_TERMINATED`) that stay unchanged for `'a`.
pub(crate) unsafe fn bytes_arg<'a>(ptr: *const c_char, len: usize, name: &str) -> Result<&'a [u8]> {
    if ptr.is_null() {
        return Err(null_arg(name));
    }
    if len == SILA_NUL_TERMINATED {
        // SAFETY: non-NULL and NUL-terminated by the caller's contract.
        return Ok(unsafe { CStr::from_ptr(ptr) }.to_bytes());
    }
    if isize::try_from(len).is_err() {
        return Err(Error::new(
            ErrorCode::InvalidArgument,
            format!("argument `{name}`: length {len} is larger than any object can be"),
        ));
    }
    // SAFETY: non-NULL, `len` readable bytes by the caller's contract, `len <= isize::MAX`.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

fn utf8<'a>(bytes: &'a [u8], name: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            ErrorCode::InvalidArgument,
            format!("argument `{name}` is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        )
    })
}

/// A UTF-8 (pointer, length) string argument.
///
/// # Safety
/// As [`bytes_arg`].
pub(crate) unsafe fn str_arg<'a>(ptr: *const c_char, len: usize, name: &str) -> Result<&'a str> {
    // SAFETY: forwarded contract.
    utf8(unsafe { bytes_arg(ptr, len, name) }?, name)
}

/// A UTF-8 NUL-terminated string argument.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string unchanged for `'a`.
pub(crate) unsafe fn cstr_arg<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    // SAFETY: forwarded contract.
    unsafe { str_arg(ptr, SILA_NUL_TERMINATED, name) }
}

/// An optional UTF-8 NUL-terminated string argument: NULL is `None`.
///
/// # Safety
/// As [`cstr_arg`].
pub(crate) unsafe fn opt_cstr_arg<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { cstr_arg(ptr, name) }.map(Some)
}

/// A NUL-terminated file system path: any bytes but NUL (Linux paths need not be UTF-8).
///
/// # Safety
/// As [`cstr_arg`].
pub(crate) unsafe fn path_arg(ptr: *const c_char, name: &str) -> Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: forwarded contract.
    let bytes = unsafe { bytes_arg(ptr, SILA_NUL_TERMINATED, name) }?;
    if bytes.is_empty() {
        return Err(Error::new(ErrorCode::InvalidArgument, format!("argument `{name}` is an empty path")));
    }
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

/// Checks an out-param is not NULL (done before any work, so a NULL out-param changes
/// nothing).
pub(crate) fn out_arg<T>(ptr: *mut T, name: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(null_arg(name));
    }
    Ok(())
}

/// Writes an out-param (checked non-NULL by [`out_arg`] beforehand).
///
/// # Safety
/// `ptr` is NULL or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(ptr: *mut T, value: T) {
    if !ptr.is_null() {
        // SAFETY: non-NULL and writable by the caller's contract; `write` does not drop the
        // (possibly uninitialised) old value.
        unsafe { ptr.write(value) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_status_and_message() {
        let status = guard(|| -> Result<()> {
            #[allow(clippy::panic)]
            {
                panic!("boom {}", 7)
            }
        });
        assert_eq!(status, sila_status::SILA_PANIC);
        let message = with_last_error(|e| e.map(|e| e.message.to_string_lossy().into_owned()));
        let message = message.flatten().unwrap_or_default();
        assert!(message.contains("boom 7"), "{message}");
        assert_eq!(guard_value(5, || -> i32 { std::panic::panic_any(1u8) }), 5);
        assert_eq!(guard(|| Ok(())), sila_status::SILA_OK);
        assert!(with_last_error(|e| e.is_none()).unwrap_or(false));
    }

    #[test]
    fn strings_are_checked() {
        let bad = [0x61u8, 0xff, 0x62];
        // SAFETY: a live local buffer of 3 bytes.
        let err = unsafe { str_arg(bad.as_ptr().cast(), 3, "sql") }.err().map(|e| e.code());
        assert_eq!(err, Some(ErrorCode::InvalidArgument));
        // SAFETY: NULL is allowed and refused.
        let err = unsafe { cstr_arg(std::ptr::null(), "app_id") }.err().map(|e| e.message().to_string());
        assert_eq!(err.as_deref(), Some("argument `app_id` is NULL"));
        let nul = c_string("a\0b");
        assert_eq!(nul.to_str().ok(), Some("a\u{fffd}b"));
    }
}
