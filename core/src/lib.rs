//! sila-sqlite: an embedded, multi-tenant SQLite engine for the Sila host runtime.
//!
//! Every sandboxed sub-app gets its own SQLite databases, addressed only by logical names
//! (`sila://db/<name>`), stored in a workspace where every new version of a database is a new
//! UUID-named file and a checksummed `current` pointer flips atomically.
//!
//! Layers, top to bottom (arrows point down only):
//!
//! * [`workspace`] — `Workspace` / app registry / database handles (the API).
//! * `broker` — per-database writer queue and reader pool.
//! * [`sqlite`] — connection setup, value conversion, statement execution with limits.
//! * [`store`] — the sans-IO state machine: records, plans, leases, quota ledger, recovery.
//! * [`driver`] — runs the store's plans on a [`vfs::Vfs`].
//! * [`vfs`] — the only door to the operating system's files.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod driver;
pub mod error;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod redact;
pub mod sqlite;
pub mod store;
pub mod vfs;
pub mod workspace;

pub use error::{Error, ErrorCode, QuotaDetail, Result};

/// The UUID type used throughout the API.
pub use uuid;
