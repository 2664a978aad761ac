//! sila-sqlite: an embedded, multi-tenant SQLite engine for the Sila host runtime.
//!
//! Every sandboxed sub-app gets its own SQLite databases, addressed only by logical names
//! (`sila://db/<name>`), stored in a workspace where every new version of a database is a new
//! UUID-named file and a checksummed `current` pointer flips atomically.
//!
//! Layers, top to bottom (arrows point down only):
//!
//! * [`workspace`] — `Workspace` / app registry / database handles (the API).
//! * [`api`] — `App` / `Database` / `Tx` handles: query, exec, transaction.
//! * [`broker`] — per-database writer queue with group commit, reader pool, executors.
//! * [`sqlite`] — connection setup, value conversion, statement execution with limits.
//! * [`store`] — the sans-IO state machine: records, plans, leases, quota ledger, recovery.
//! * [`driver`] — runs the store's plans on a [`vfs::Vfs`].
//! * [`vfs`] — the only door to the operating system's files.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod api;
pub mod attach;
pub mod audit;
pub mod broker;
pub mod clock;
pub mod driver;
pub mod error;
pub mod fault;
pub mod maintenance;
pub mod manifest;
pub mod metrics;
pub mod names;
mod prometheus;
pub mod redact;
pub mod sabotage;
pub mod sqlite;
pub mod store;
mod sync;
mod trace;
pub mod versions;
pub mod vfs;
pub mod workspace;

pub use api::{App, Database, DbStats, Tx};
pub use audit::{AuditLimits, AuditQuery, AuditRead, AuditRecord};
pub use broker::pending::Pending;
pub use broker::BrokerOptions;
pub use error::{Error, ErrorCode, QuotaDetail, Result};
pub use sqlite::{CancelToken, ExecResult, Rows, StatementInfo, Value};
pub use workspace::{AppInfo, Workspace, WorkspaceOptions};

/// The UUID type used throughout the API.
pub use uuid;
