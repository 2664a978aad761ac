//! Mapping rusqlite / SQLite errors onto [`crate::Error`].
//!
//! The mapping goes by SQLite's primary result code; the extended code is always attached with
//! [`Error::with_sqlite_code`] and SQLite's own message text is always kept, so nothing SQLite
//! said is lost. Errors rusqlite raises itself (no SQLite code) become
//! [`ErrorCode::InvalidArgument`] when the caller's input caused them and
//! [`ErrorCode::Internal`] otherwise.

use rusqlite::ffi;

use super::stop::{StopCheck, StopReason};
use crate::{Error, ErrorCode};

/// Converts a rusqlite error into the crate's error.
///
/// `stop` is the [`StopCheck`] that was installed while the failing statement ran, if any: it
/// tells whether an `SQLITE_INTERRUPT` was a deadline ([`ErrorCode::Timeout`]) or a cancel
/// ([`ErrorCode::Cancelled`]). An interrupt no check explains (someone called
/// `sqlite3_interrupt`) is reported as [`ErrorCode::Cancelled`].
///
/// | SQLite primary code        | [`ErrorCode`]        |
/// |----------------------------|----------------------|
/// | `SQLITE_FULL`              | `QuotaExceeded`, or `DiskFull` when the VFS saw `ENOSPC` |
/// | `SQLITE_BUSY`, `_LOCKED`   | `Busy`               |
/// | `SQLITE_READONLY`          | `ReadOnly`           |
/// | `SQLITE_CORRUPT`, `_NOTADB`| `Corrupt`            |
/// | `SQLITE_IOERR`, `_CANTOPEN`| `Io`                 |
/// | `SQLITE_AUTH`              | `PolicyDenied`       |
/// | `SQLITE_INTERRUPT`         | `Timeout` / `Cancelled` |
/// | `SQLITE_TOOBIG`            | `InvalidArgument`    |
/// | anything else              | `Sqlite`             |
///
/// Refusals of the security policy are `PolicyDenied` whatever the code SQLite used, with the
/// policy's reason as the message: an authorizer denial ([`super::policy`]), a path the
/// confinement VFS refused ([`super::confine`]), and SQLite's own refusals caused by the
/// policy's settings (VACUUM inside the request's transaction, a side-effect function in a
/// view or trigger under `trusted_schema=OFF`).
pub fn map_error(err: rusqlite::Error, stop: Option<&StopCheck>) -> Error {
    match err {
        rusqlite::Error::SqliteFailure(code, message) => {
            let text = message.unwrap_or_else(|| code.to_string());
            map_sqlite(code.extended_code, &text, stop)
        }
        rusqlite::Error::SqlInputError { error, msg, offset, .. } => {
            let text = format!("{msg} (at byte {offset} of the SQL)");
            map_sqlite(error.extended_code, &text, stop)
        }
        rusqlite::Error::InvalidParameterCount(given, expected) => {
            Error::invalid_argument(format!("statement expects {expected} parameters, got {given}"))
        }
        rusqlite::Error::MultipleStatement => Error::invalid_argument(
            "the SQL holds more than one statement, but a single statement was expected; \
             run scripts with execute_batch",
        ),
        rusqlite::Error::Empty => {
            Error::invalid_argument("the SQL holds no statement (only whitespace or comments)")
        }
        rusqlite::Error::NulError(e) => Error::invalid_argument(format!("the SQL contains a NUL byte: {e}")),
        rusqlite::Error::InvalidPath(path) => {
            Error::invalid_argument(format!("database path {} is not valid UTF-8", path.display()))
        }
        err @ (rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidParameterName(_)
        | rusqlite::Error::ExecuteReturnedResults
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::ToSqlConversionFailure(_)
        | rusqlite::Error::InvalidColumnIndex(_)
        | rusqlite::Error::InvalidColumnName(_)
        | rusqlite::Error::InvalidColumnType(..)) => Error::invalid_argument(err.to_string()),
        err => Error::internal(format!("unexpected rusqlite error: {err}")),
    }
}

/// Maps one SQLite (extended) result code and its message.
fn map_sqlite(extended: i32, text: &str, stop: Option<&StopCheck>) -> Error {
    let primary = extended & 0xff;
    // A refusal by the authorizer ([`super::policy`]): SQLite reports SQLITE_AUTH ("not
    // authorized") for most actions but SQLITE_ERROR ("not authorized to use function: …") for
    // function calls. The authorizer left the reason on this thread; the slot is emptied on
    // every error, so a reason never outlives the statement it explains.
    let denial = super::policy::take_denial();
    let refusal = super::confine::take_refusal();
    // What the engine's VFS saw fail on this thread ([`super::vfs`]): the operation, the kind
    // of file, and whether the disk was full.
    let io = super::vfs::take_io_note();
    if primary == ffi::SQLITE_AUTH || text.contains("not authorized") {
        if let Some(reason) = denial {
            return Error::new(ErrorCode::PolicyDenied, reason).with_sqlite_code(extended);
        }
    }
    // Refusals SQLite makes itself because of the policy's settings (VACUUM in a transaction,
    // side-effect functions in views and triggers under trusted_schema=OFF).
    if primary == ffi::SQLITE_ERROR {
        if let Some(reason) = super::policy::explain_refusal(text) {
            return Error::new(ErrorCode::PolicyDenied, reason).with_sqlite_code(extended);
        }
    }
    let mut fault = None;
    let (code, message) = match primary {
        ffi::SQLITE_FULL => match (refusal, io) {
            // The VFS refused to grow a temp file past its cap and said which.
            (Some(reason), _) => (ErrorCode::QuotaExceeded, reason),
            (None, Some(note)) if note.disk_full => (
                ErrorCode::DiskFull,
                format!(
                    "the disk holding the workspace is full ({} of a {} found no room: {}); \
                     nothing was written; free space and retry",
                    note.op.with_article(),
                    note.file.as_str(),
                    note.detail
                ),
            ),
            (None, _) => (
                ErrorCode::QuotaExceeded,
                format!(
                    "database reached its size limit (the manifest's maxSizeMB, as SQLite's \
                     max_page_count): nothing was written; delete rows and compact, or raise \
                     maxSizeMB ({text})"
                ),
            ),
        },
        ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => (ErrorCode::Busy, format!("database is busy: {text}")),
        ffi::SQLITE_READONLY => (ErrorCode::ReadOnly, format!("database is read-only: {text}")),
        ffi::SQLITE_CORRUPT | ffi::SQLITE_NOTADB => {
            (ErrorCode::Corrupt, format!("database file is corrupt or not a database: {text}"))
        }
        // The confinement VFS ([`super::confine`]) left a reason on this thread when it refused
        // a path: that is a policy refusal, not an IO failure.
        ffi::SQLITE_IOERR | ffi::SQLITE_CANTOPEN => match (refusal, io) {
            (Some(reason), _) => (ErrorCode::PolicyDenied, reason),
            (None, Some(note)) => {
                let message = format!(
                    "{} of a {} failed ({}): {text}",
                    note.op.with_article(),
                    note.file.as_str(),
                    note.detail
                );
                fault = Some(crate::fault::Fault {
                    op: note.op,
                    file: note.file,
                    detail: note.detail,
                    dir: None,
                });
                (ErrorCode::Io, message)
            }
            (None, None) => (ErrorCode::Io, format!("database IO failed: {text}")),
        },
        ffi::SQLITE_AUTH => {
            (ErrorCode::PolicyDenied, format!("statement denied by the security policy: {text}"))
        }
        ffi::SQLITE_INTERRUPT => {
            let reason = stop.and_then(StopCheck::fired).unwrap_or(StopReason::Cancelled);
            let base = match stop {
                Some(check) => check.error(reason),
                None => Error::new(ErrorCode::Cancelled, "statement interrupted"),
            };
            (base.code(), format!("{}: {text}", base.message()))
        }
        ffi::SQLITE_TOOBIG => (
            ErrorCode::InvalidArgument,
            format!("a string, blob or statement exceeds SQLite's length limit: {text}"),
        ),
        _ => (ErrorCode::Sqlite, text.to_owned()),
    };
    let err = Error::new(code, message).with_sqlite_code(extended);
    match fault {
        Some(fault) => err.with_fault(fault),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sqlite::CancelToken;

    fn failure(extended: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(extended), Some("sqlite said this".into()))
    }

    #[test]
    fn primary_codes_map_and_keep_sqlite_text_and_code() {
        let cases = [
            (ffi::SQLITE_FULL, ErrorCode::QuotaExceeded),
            (ffi::SQLITE_BUSY, ErrorCode::Busy),
            (ffi::SQLITE_BUSY_SNAPSHOT, ErrorCode::Busy),
            (ffi::SQLITE_LOCKED, ErrorCode::Busy),
            (ffi::SQLITE_READONLY, ErrorCode::ReadOnly),
            (ffi::SQLITE_CORRUPT, ErrorCode::Corrupt),
            (ffi::SQLITE_NOTADB, ErrorCode::Corrupt),
            (ffi::SQLITE_IOERR_FSYNC, ErrorCode::Io),
            (ffi::SQLITE_CANTOPEN, ErrorCode::Io),
            (ffi::SQLITE_AUTH, ErrorCode::PolicyDenied),
            (ffi::SQLITE_TOOBIG, ErrorCode::InvalidArgument),
            (ffi::SQLITE_CONSTRAINT_UNIQUE, ErrorCode::Sqlite),
            (ffi::SQLITE_ERROR, ErrorCode::Sqlite),
            (ffi::SQLITE_INTERRUPT, ErrorCode::Cancelled),
        ];
        for (extended, expected) in cases {
            let err = map_error(failure(extended), None);
            assert_eq!(err.code(), expected, "extended code {extended}");
            assert_eq!(err.sqlite_code(), Some(extended));
            assert!(err.message().contains("sqlite said this"), "{err}");
        }
        let full = map_error(failure(ffi::SQLITE_FULL), None);
        assert!(full.message().contains("max_page_count"), "{full}");
        let toobig = map_error(failure(ffi::SQLITE_TOOBIG), None);
        assert!(toobig.message().contains("length limit"), "{toobig}");
    }

    #[test]
    fn interrupt_maps_by_what_fired() {
        let timed_out = StopCheck::with_timeout(Duration::ZERO, CancelToken::new());
        assert!(timed_out.check().is_err());
        let err = map_error(failure(ffi::SQLITE_INTERRUPT), Some(&timed_out));
        assert_eq!(err.code(), ErrorCode::Timeout);
        assert!(err.message().contains("statement timeout of"), "{err}");

        let cancelled = StopCheck::with_timeout(Duration::from_secs(60), CancelToken::new());
        cancelled.cancel_token().cancel();
        assert!(cancelled.check().is_err());
        assert_eq!(map_error(failure(ffi::SQLITE_INTERRUPT), Some(&cancelled)).code(), ErrorCode::Cancelled);
    }

    #[test]
    fn rusqlite_own_errors() {
        let err = map_error(rusqlite::Error::InvalidParameterCount(1, 2), None);
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(err.message(), "statement expects 2 parameters, got 1");
        assert_eq!(err.sqlite_code(), None);
        assert_eq!(map_error(rusqlite::Error::MultipleStatement, None).code(), ErrorCode::InvalidArgument);
        assert_eq!(map_error(rusqlite::Error::Empty, None).code(), ErrorCode::InvalidArgument);
        assert_eq!(map_error(rusqlite::Error::UnwindingPanic, None).code(), ErrorCode::Internal);
        assert_eq!(map_error(rusqlite::Error::SqliteSingleThreadedMode, None).code(), ErrorCode::Internal);
    }
}
