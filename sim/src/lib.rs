//! sila-sqlite-sim: the deterministic simulation harness of sila-sqlite.
//!
//! * [`memfs`] — an in-memory [`sila_sqlite::vfs::Vfs`] that models exactly what survives a
//!   power cut (unsynced data and unsynced directory entries are lost), with fault knobs.
//! * [`crash`] — exhaustive crash points of the store's plans, checked against DESIGN.md's
//!   invariants after recovery.

pub mod crash;
pub mod memfs;
pub mod world;
