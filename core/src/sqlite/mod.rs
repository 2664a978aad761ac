//! The SQLite layer: connection setup, values, and statement execution under limits.
//!
//! What this module owns, and who calls it (the broker, one connection per thread at a time):
//!
//! * [`open_connection`] — opens a database file with the security and performance pragmas of
//!   the design; [`optimize_on_close`] is the whole ANALYZE policy (see [`open`]).
//! * [`Value`], [`Rows`], [`ExecResult`] — SQLite values and results, and their JSON encoding
//!   (blobs as `{"$blob":"<base64>"}`, non-finite reals as `{"$real":"Infinity"}`; see
//!   [`value`]).
//! * [`query`], [`execute`], [`execute_script`] — run statements (a query refuses what
//!   SQLite says writes) under a [`StopCheck`] (deadline + [`CancelToken`]) and, for rows,
//!   [`QueryLimits`] on rows and JSON bytes.
//! * [`policy`], [`pragma`] — what app SQL may do, by [`policy::Scope`].
//! * [`map_error`] — the one mapping from rusqlite/SQLite errors to [`crate::Error`].
//!
//! Invariant: while one of these functions runs, this module owns the connection's progress
//! handler; nothing else installs one.

pub mod confine;
pub mod errors;
pub mod exec;
pub mod open;
pub mod policy;
pub mod pragma;
pub mod stop;
pub mod value;
pub mod vfs;

pub use errors::map_error;
pub use exec::{
    describe, execute, execute_script, query, query_first, QueryLimits, StatementInfo,
    QUERY_BYTES_MAX_DEFAULT, QUERY_ROWS_MAX_DEFAULT,
};
pub use open::{open_connection, optimize_on_close, ConnectionOptions, Synchronous};
pub use stop::{CancelToken, StopCheck, StopReason, PROGRESS_HANDLER_OPS};
pub use value::{ExecResult, Rows, Value};
