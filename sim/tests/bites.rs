//! Proof the checker bites: the simulator runs against deliberately broken variants of the
//! engine (the `sabotage` feature) and must catch each within a bounded number of seeds.
//!
//! `FlipBeforeSync` and `SkipPointerSyncDir` are proven in `crash_points.rs` instead, where
//! the exhaustive crash points of the flip plan alone expose them; in the whole engine each
//! is masked by the steps around the flip. Every new version is opened by SQLite for its
//! checks before the flip, and SQLite syncs it then; and every flip (a restore's, an
//! import's) is followed, before it is acknowledged, by the manifest that lists its undo
//! snapshot, whose plan syncs the same directory the pointer is in.

#![allow(clippy::panic)]

use sila_sqlite::sabotage::{self, Sabotage};
use sila_sqlite_sim::world::{run_seed, Profile};

/// Seeds tried per flaw before the test gives up.
const SEEDS_MAX: u64 = 400;
/// Operations per seed.
const OPS: usize = 60;

fn first_failing_seed(flaw: Sabotage) -> Option<(u64, String)> {
    first_failing_seed_in(flaw, Profile::CrashHeavy)
}

fn first_failing_seed_in(flaw: Sabotage, profile: Profile) -> Option<(u64, String)> {
    sabotage::set(Some(flaw));
    let mut found = None;
    for seed in 0..SEEDS_MAX {
        let outcome = run_seed(seed, profile, OPS);
        if let Some(v) = outcome.violation {
            found = Some((seed, v.what));
            break;
        }
    }
    sabotage::set(None);
    found
}

#[test]
fn a_gc_that_deletes_a_snapshot_still_listed_is_caught() {
    let found = first_failing_seed(Sabotage::GcIgnoresSnapshots);
    assert!(found.is_some(), "no violation in {SEEDS_MAX} seeds");
    println!("caught at {found:?}");
}

#[test]
fn a_broker_that_acknowledges_before_commit_is_caught() {
    let found = first_failing_seed(Sabotage::AckBeforeCommit);
    assert!(found.is_some(), "no violation in {SEEDS_MAX} seeds");
    println!("caught at {found:?}");
}

#[test]
fn a_compaction_that_copies_before_taking_the_writer_is_caught() {
    let found = first_failing_seed(Sabotage::CompactionCopiesBeforeTheWriter);
    assert!(found.is_some(), "no violation in {SEEDS_MAX} seeds");
    println!("caught at {found:?}");
}

/// With no flaw on, the same seeds pass: the violations above come from the flaws.
#[test]
fn the_same_seeds_pass_without_a_flaw() {
    for seed in 0..40 {
        let outcome = run_seed(seed, Profile::CrashHeavy, OPS);
        assert!(outcome.violation.is_none(), "seed {seed}: {:?}", outcome.violation);
    }
}

#[test]
fn an_export_renamed_into_place_unsynced_is_caught() {
    let found = first_failing_seed_in(Sabotage::ExportSkipsSync, Profile::Exports);
    assert!(found.is_some(), "no violation in {SEEDS_MAX} seeds");
    println!("caught at {found:?}");
}

#[test]
fn an_export_directory_never_made_durable_is_caught() {
    let found = first_failing_seed_in(Sabotage::ExportDirNotDurable, Profile::Exports);
    assert!(found.is_some(), "no violation in {SEEDS_MAX} seeds");
    println!("caught at {found:?}");
}

#[test]
fn a_failed_fsync_in_a_checkpoint_that_goes_unnoticed_is_caught() {
    let found = first_failing_seed_in(Sabotage::FaultLatchBlind, Profile::SqliteSync);
    assert!(found.is_some(), "no violation in {SEEDS_MAX} seeds");
    println!("caught at {found:?}");
}

/// Same seed, same trace.
#[test]
fn an_acknowledged_snapshot_that_is_not_durable_is_caught() {
    let found = first_failing_seed(Sabotage::SnapshotManifestNotDurable);
    let Some((seed, what)) = found else {
        panic!("a snapshot acknowledged before its manifest is durable must be caught (no violation in {SEEDS_MAX} seeds)")
    };
    assert!(what.contains("acknowledged snapshot"), "seed {seed}: {what}");
}

#[test]
fn a_failure_path_that_leaks_a_reservation_is_caught_at_once() {
    let found = first_failing_seed_in(Sabotage::SnapshotFailureLeaksReservation, Profile::IoErrors);
    let Some((seed, what)) = found else {
        panic!("a leaked reservation must be caught (no violation in {SEEDS_MAX} seeds)")
    };
    assert!(what.contains("between operations"), "seed {seed}: {what}");
}

#[test]
fn a_group_where_one_failure_fails_the_neighbours_is_caught() {
    let found = first_failing_seed_in(Sabotage::GroupFailureSpreads, Profile::Faultless);
    let Some((seed, what)) = found else {
        panic!("a failure spreading through a group must be caught (no violation in {SEEDS_MAX} seeds)")
    };
    assert!(what.contains("did not break"), "seed {seed}: {what}");
}

#[test]
fn a_deferred_violation_checked_only_at_the_group_commit_is_caught() {
    let found = first_failing_seed_in(Sabotage::DeferredChecksAtGroupCommit, Profile::Faultless);
    let Some((seed, what)) = found else {
        panic!("a deferred violation failing its group must be caught (no violation in {SEEDS_MAX} seeds)")
    };
    assert!(what.contains("deferred") || what.contains("did not break"), "seed {seed}: {what}");
}

#[test]
fn a_committed_write_answered_cancelled_is_caught() {
    let found = first_failing_seed_in(Sabotage::CancelledAfterCommit, Profile::Faultless);
    let Some((seed, what)) = found else {
        panic!("a committed write reported cancelled must be caught (no violation in {SEEDS_MAX} seeds)")
    };
    assert!(what.contains("CANCELLED") || what.contains("extra"), "seed {seed}: {what}");
}

#[test]
fn a_restore_that_skips_the_checksum_is_caught() {
    let found = first_failing_seed_in(Sabotage::RestoreSkipsChecksum, Profile::Eio);
    let Some((seed, what)) = found else {
        panic!("a restore of a rotted snapshot must be caught (no violation in {SEEDS_MAX} seeds)")
    };
    // Caught either as the rotted snapshot itself or as the corrupt database restored from it.
    assert!(what.contains("rotted") || what.contains("integrity_check"), "seed {seed}: {what}");
}

#[test]
fn a_group_abort_that_answers_without_rerunning_is_caught() {
    let found = first_failing_seed_in(Sabotage::GroupAbortSkipsRerun, Profile::Quota);
    let Some((seed, what)) = found else {
        panic!("requests answered without being committed must be caught (no violation in {SEEDS_MAX} seeds)")
    };
    assert!(!what.is_empty(), "seed {seed}");
}

#[test]
fn a_migration_acknowledged_but_never_committed_is_caught() {
    let found = first_failing_seed(Sabotage::MigrationNeverCommits);
    let Some((seed, what)) = found else {
        panic!("a lost migration must be caught (no violation in {SEEDS_MAX} seeds)")
    };
    assert!(!what.is_empty(), "seed {seed}");
    println!("caught at seed {seed}: {what}");
}

#[test]
fn a_seed_replays_the_same_trace() {
    for profile in Profile::ALL {
        let a = run_seed(7, profile, OPS);
        let b = run_seed(7, profile, OPS);
        assert_eq!(a.trace, b.trace, "{profile:?}");
        assert_eq!(a.trace_hash, b.trace_hash);
    }
}

#[test]
fn an_audit_record_not_synced_before_the_acknowledgement_is_caught() {
    let found = first_failing_seed(Sabotage::AuditRecordNotDurable);
    let Some((seed, what)) = found else {
        panic!("an acknowledged operation whose audit record is not durable must be caught (no violation in {SEEDS_MAX} seeds)")
    };
    assert!(what.contains("audit trail"), "seed {seed}: {what}");
}
