//! The one error type of sila-sqlite.
//!
//! Every failure a host can see is an [`Error`]: a stable [`ErrorCode`] (the same numbers the C
//! ABI returns and the CLI prints by name), a message a person can act on, the SQLite extended
//! result code where SQLite produced the error, and, for quota refusals, the numbers involved.
//!
//! Codes are never renumbered or reused; new codes are appended.

use crate::fault::Fault;
use std::fmt;

/// Stable error codes shared by the Rust API, the C ABI and the CLI.
///
/// The numeric values are part of the public contract: they never change and are never reused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum ErrorCode {
    /// An app, database, snapshot or file that does not exist.
    NotFound = 1,
    /// A logical name, app id or database name that breaks the naming grammar.
    InvalidName = 2,
    /// An argument that is malformed or out of range (other than a name or a manifest).
    InvalidArgument = 3,
    /// A capability manifest that does not validate; the message names the field.
    InvalidManifest = 4,
    /// The app's manifest does not grant what was asked (for example a database it does not list).
    CapabilityDenied = 5,
    /// The security policy refuses the statement or operation (authorizer, pragma allowlist…).
    PolicyDenied = 6,
    /// The operation would exceed a storage quota; nothing was written.
    QuotaExceeded = 7,
    /// A statement or transaction ran past its deadline and was stopped.
    Timeout = 8,
    /// The request was cancelled by its caller.
    Cancelled = 9,
    /// A result exceeded its row or byte cap.
    ResultTooLarge = 10,
    /// The database or a limited resource is busy; retrying later may succeed.
    Busy = 11,
    /// A write was attempted on a read-only database.
    ReadOnly = 12,
    /// A record or database file failed its checksum, format or integrity check.
    Corrupt = 13,
    /// The operating system reported an IO failure.
    Io = 14,
    /// A previous fsync failed; the database refuses all work until it is reopened.
    Poisoned = 15,
    /// A migration step failed and the database was rolled back.
    MigrationFailed = 16,
    /// Another process (or handle) holds the workspace lock.
    WorkspaceLocked = 17,
    /// The thing to create already exists.
    AlreadyExists = 18,
    /// SQLite reported an error that has no more specific code (syntax errors, constraint
    /// violations…); `sqlite_code` holds SQLite's extended result code.
    Sqlite = 19,
    /// A per-minute budget is spent; the message says when it refills.
    BudgetExceeded = 20,
    /// A panic was caught at an API boundary.
    Panic = 21,
    /// An internal invariant was violated; this is a bug in sila-sqlite.
    Internal = 22,
    /// The filesystem holding the workspace is full (`ENOSPC`): nothing was written, the
    /// statement or operation was rolled back. Distinct from [`ErrorCode::QuotaExceeded`] (the
    /// app's own quota): here the device is out of room for everyone.
    DiskFull = 23,
    /// `query` was given a statement that writes (SQLite's `sqlite3_stmt_readonly` says so:
    /// INSERT/UPDATE/DELETE with or without RETURNING, DDL, a PRAGMA that sets): nothing ran.
    /// Run it with exec, which returns its rows too.
    WriteInQuery = 24,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::NotFound,
        ErrorCode::InvalidName,
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidManifest,
        ErrorCode::CapabilityDenied,
        ErrorCode::PolicyDenied,
        ErrorCode::QuotaExceeded,
        ErrorCode::Timeout,
        ErrorCode::Cancelled,
        ErrorCode::ResultTooLarge,
        ErrorCode::Busy,
        ErrorCode::ReadOnly,
        ErrorCode::Corrupt,
        ErrorCode::Io,
        ErrorCode::Poisoned,
        ErrorCode::MigrationFailed,
        ErrorCode::WorkspaceLocked,
        ErrorCode::AlreadyExists,
        ErrorCode::Sqlite,
        ErrorCode::BudgetExceeded,
        ErrorCode::Panic,
        ErrorCode::Internal,
        ErrorCode::DiskFull,
        ErrorCode::WriteInQuery,
    ];

    /// The stable numeric value.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The stable upper-snake-case name, as the CLI prints it (`error[QUOTA_EXCEEDED]: …`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidName => "INVALID_NAME",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::InvalidManifest => "INVALID_MANIFEST",
            ErrorCode::CapabilityDenied => "CAPABILITY_DENIED",
            ErrorCode::PolicyDenied => "POLICY_DENIED",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::ResultTooLarge => "RESULT_TOO_LARGE",
            ErrorCode::Busy => "BUSY",
            ErrorCode::ReadOnly => "READ_ONLY",
            ErrorCode::Corrupt => "CORRUPT",
            ErrorCode::Io => "IO",
            ErrorCode::Poisoned => "POISONED",
            ErrorCode::MigrationFailed => "MIGRATION_FAILED",
            ErrorCode::WorkspaceLocked => "WORKSPACE_LOCKED",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::Sqlite => "SQLITE",
            ErrorCode::BudgetExceeded => "BUDGET_EXCEEDED",
            ErrorCode::Panic => "PANIC",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::DiskFull => "DISK_FULL",
            ErrorCode::WriteInQuery => "WRITE_IN_QUERY",
        }
    }

    /// The code with this numeric value, if any.
    pub fn from_u32(value: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_u32() == value)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The numbers behind a [`ErrorCode::QuotaExceeded`] refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaDetail {
    /// The name of the limit, as it appears in options or the manifest.
    pub limit_name: String,
    /// The limit in bytes.
    pub limit_bytes: u64,
    /// Bytes already accounted against the limit.
    pub used_bytes: u64,
    /// Bytes the refused operation asked for.
    pub requested_bytes: u64,
    /// Where the bytes in use are (the app's ledger at the time), for a refusal by the app's
    /// storage quota (`None` for other limits).
    pub usage: Option<crate::store::Ledger>,
}

/// The error type of every fallible sila-sqlite operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    message: String,
    sqlite_code: Option<i32>,
    quota: Option<Box<QuotaDetail>>,
    /// The failure was in a file the caller handed in (an import source), not in the
    /// workspace: it says nothing about the database's own files, so it never poisons one.
    outside_workspace: bool,
    /// The workspace fault behind a [`ErrorCode::Poisoned`] or [`ErrorCode::Io`] error.
    fault: Option<Box<Fault>>,
    /// How long until the refused request may succeed (a budget that refills).
    retry_after: Option<std::time::Duration>,
}

impl Error {
    /// A new error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            sqlite_code: None,
            quota: None,
            outside_workspace: false,
            fault: None,
            retry_after: None,
        }
    }

    /// A [`ErrorCode::QuotaExceeded`] error whose message names the limit and the numbers.
    pub fn quota_exceeded(detail: QuotaDetail) -> Error {
        let mut message = format!(
            "quota exceeded: {} is {} bytes, {} bytes are in use and the operation needs {} more",
            detail.limit_name, detail.limit_bytes, detail.used_bytes, detail.requested_bytes
        );
        if let Some(u) = &detail.usage {
            let short =
                detail.used_bytes.saturating_add(detail.requested_bytes).saturating_sub(detail.limit_bytes);
            message.push_str(&format!(
                "; in use: live databases {} (WAL and other side files {}), snapshots {}, operations in \
                 flight {}, garbage awaiting GC {}",
                u.live_bytes, u.side_bytes, u.snapshot_bytes, u.in_flight_bytes, u.garbage_bytes
            ));
            if u.collectable_bytes >= short {
                message.push_str(&format!(
                    "; GC would free {} bytes now, enough: run GC (Workspace::gc, `sila-sqlite gc`) and retry",
                    u.collectable_bytes
                ));
            } else {
                message.push_str(&format!(
                    "; GC would free {} bytes now, not the {short} needed: drop snapshots, delete data, \
                     or raise the quota",
                    u.collectable_bytes
                ));
            }
        }
        Error {
            code: ErrorCode::QuotaExceeded,
            message,
            sqlite_code: None,
            quota: Some(Box::new(detail)),
            outside_workspace: false,
            fault: None,
            retry_after: None,
        }
    }

    /// Attaches SQLite's extended result code.
    pub fn with_sqlite_code(mut self, code: i32) -> Error {
        self.sqlite_code = Some(code);
        self
    }

    /// Says when the refused request may be retried with success in view.
    pub fn with_retry_after(mut self, after: std::time::Duration) -> Error {
        self.retry_after = Some(after);
        self
    }

    /// For a refusal that passes with time ([`ErrorCode::BudgetExceeded`]): how long until
    /// the same request would be admitted, if nothing else is spent meanwhile.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    /// Prefixes the message with context (what was being done when the error happened).
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Replaces every occurrence of `path` in the message with `what` (errors apps see name
    /// the kind of file, never the workspace's layout).
    pub(crate) fn without_path(mut self, path: &std::path::Path, what: &str) -> Error {
        let text = path.to_string_lossy();
        if !text.is_empty() {
            self.message = self.message.replace(text.as_ref(), what);
        }
        self
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// SQLite's extended result code, where SQLite produced the error.
    pub fn sqlite_code(&self) -> Option<i32> {
        self.sqlite_code
    }

    /// The numbers behind a quota refusal.
    pub fn quota(&self) -> Option<&QuotaDetail> {
        self.quota.as_deref()
    }

    /// The IO fault behind the error: which operation failed on what kind of file (see
    /// [`crate::fault`]). Set on every error a workspace fault causes.
    pub fn fault(&self) -> Option<&Fault> {
        self.fault.as_deref()
    }

    /// Attaches the fault behind the error.
    pub(crate) fn with_fault(mut self, fault: Fault) -> Error {
        self.fault = Some(Box::new(fault));
        self
    }

    /// Marks the error as a failure of a file outside the workspace (see `outside_workspace`).
    pub(crate) fn outside_workspace(mut self) -> Error {
        self.outside_workspace = true;
        self
    }

    /// Whether the error is a failure of a file outside the workspace.
    pub(crate) fn is_outside_workspace(&self) -> bool {
        self.outside_workspace
    }

    pub(crate) fn io(what: impl fmt::Display, err: &std::io::Error) -> Error {
        Error::new(ErrorCode::Io, format!("{what}: {err}"))
    }

    pub(crate) fn internal(what: impl Into<String>) -> Error {
        Error::new(ErrorCode::Internal, what)
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Error {
        Error::new(ErrorCode::Corrupt, what)
    }

    pub(crate) fn invalid_argument(what: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidArgument, what)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error[{}]: {}", self.code.name(), self.message)?;
        if let Some(code) = self.sqlite_code {
            write!(f, " (sqlite code {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_round_trip() {
        // The numbers are a contract with C hosts: pin a few explicitly.
        assert_eq!(ErrorCode::NotFound.as_u32(), 1);
        assert_eq!(ErrorCode::QuotaExceeded.as_u32(), 7);
        assert_eq!(ErrorCode::Poisoned.as_u32(), 15);
        assert_eq!(ErrorCode::Internal.as_u32(), 22);
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.as_u32() as usize, i + 1, "codes are dense and ordered");
            assert_eq!(ErrorCode::from_u32(code.as_u32()), Some(*code));
        }
        assert_eq!(ErrorCode::from_u32(0), None);
        assert_eq!(ErrorCode::DiskFull.as_u32(), 23);
        assert_eq!(ErrorCode::WriteInQuery.as_u32(), 24);
        assert_eq!(ErrorCode::from_u32(25), None);
    }

    #[test]
    fn quota_message_names_limit_and_numbers() {
        let err = Error::quota_exceeded(QuotaDetail {
            usage: None,
            limit_name: "app storage quota".into(),
            limit_bytes: 100,
            used_bytes: 90,
            requested_bytes: 20,
        });
        assert_eq!(err.code(), ErrorCode::QuotaExceeded);
        let text = err.to_string();
        assert!(text.starts_with("error[QUOTA_EXCEEDED]: "), "{text}");
        assert!(text.contains("app storage quota") && text.contains("100") && text.contains("90"));
        assert_eq!(err.quota().map(|q| q.requested_bytes), Some(20));
    }
}
