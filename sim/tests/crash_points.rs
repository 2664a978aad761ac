//! Exhaustive crash points of the store's plans on the in-memory crash-model filesystem.

use sila_sqlite_sim::crash::{check_operation, Operation};
use sila_sqlite_sim::memfs::Faults;

#[test]
fn every_crash_point_of_every_plan_recovers_to_a_valid_state() {
    for op in Operation::ALL {
        let violations = check_operation(op, Faults::default());
        assert!(violations.is_empty(), "{op:?}: {violations:#?}");
    }
}

/// A checker that cannot fail is no checker: with a filesystem whose `sync_dir` does
/// nothing, renames and unlinks never become durable, and every operation must be caught.
#[test]
fn the_checker_catches_a_filesystem_that_drops_sync_dir() {
    for op in Operation::ALL {
        let faults = Faults { lie_sync_dir: true, ..Faults::default() };
        let violations = check_operation(op, faults);
        assert!(!violations.is_empty(), "{op:?}: a lying sync_dir went unnoticed");
        assert!(
            violations.iter().all(|v| !v.what.starts_with("harness:")),
            "{op:?}: the harness itself failed: {violations:#?}"
        );
        assert!(
            violations.iter().any(|v| v.what.contains("acknowledged")),
            "{op:?}: expected an acknowledged operation to be lost: {violations:#?}"
        );
    }
}

/// With file syncs that lie, the pointer written to a temp name is renamed into place empty.
#[test]
fn the_checker_catches_a_filesystem_that_drops_file_sync() {
    let faults = Faults { lie_sync: true, ..Faults::default() };
    let violations = check_operation(Operation::Flip, faults);
    assert!(
        violations.iter().any(|v| v.what.contains("damage") || v.what.contains("lost")),
        "{violations:#?}"
    );
}

/// Broken flip and GC protocols (the `sabotage` feature) must be caught at some crash point.
#[test]
fn the_checker_catches_broken_flip_and_gc_protocols() {
    use sila_sqlite::sabotage::{self, Sabotage};
    let cases = [
        (Sabotage::SkipPointerSyncDir, Operation::Flip),
        (Sabotage::FlipBeforeSync, Operation::Flip),
        (Sabotage::GcIgnoresSnapshots, Operation::AddSnapshot),
    ];
    for (flaw, op) in cases {
        sabotage::set(Some(flaw));
        let violations = check_operation(op, Faults::default());
        sabotage::set(None);
        assert!(!violations.is_empty(), "{flaw:?} on {op:?} went unnoticed");
        assert!(violations.iter().all(|v| !v.what.starts_with("harness:")), "{flaw:?}: {violations:#?}");
    }
}
