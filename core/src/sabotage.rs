//! Deliberately broken variants of the engine, to prove the simulator's checker bites.
//!
//! With the `sabotage` cargo feature (the simulation crate turns it on), a thread may switch
//! on one flaw at a time; every check below reads a thread-local flag, so other threads —
//! and every build without the feature — run the real protocol. Without the feature,
//! [`active`] is a constant `false` and the checks compile away.

/// A flaw the simulator must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// The flip renames the pointer but never syncs its directory.
    SkipPointerSyncDir,
    /// The flip makes the pointer durable before the new file's data is synced.
    FlipBeforeSync,
    /// GC treats snapshot files as garbage even while the manifest lists them.
    GcIgnoresSnapshots,
    /// The broker answers writes before it has committed them.
    AckBeforeCommit,
    /// An export or backup is renamed into place without syncing its data first.
    ExportSkipsSync,
    /// A new export or backup directory is created but not made durable in its parent.
    ExportDirNotDurable,
    /// The workspace's fault latch never records a failure: a failed fsync (of a main file
    /// in a checkpoint, say) goes unnoticed and writes go on being acknowledged.
    FaultLatchBlind,
    /// A snapshot is acknowledged before the manifest that lists it is durable (the
    /// directory of the renamed manifest is never synced).
    SnapshotManifestNotDurable,
    /// A snapshot whose copy failed leaves its store operation open: its byte reservation and
    /// the database's busy mark leak.
    SnapshotFailureLeaksReservation,
    /// One failing request of a group commit fails its neighbours too (their writes commit,
    /// they are told they failed): a request's outcome depends on its group.
    GroupFailureSpreads,
    /// A restore makes the snapshot's copy live without verifying its checksum.
    RestoreSkipsChecksum,
    /// When SQLite rolls back a whole group (SQLITE_FULL…), the requests not yet run are
    /// answered as committed instead of being run again.
    GroupAbortSkipsRerun,
    /// A migration is reported done, but its transaction is rolled back.
    MigrationNeverCommits,
    /// A request's deferred foreign keys are not checked at its own end, so a violation
    /// surfaces at the group's COMMIT and fails every request of the group.
    DeferredChecksAtGroupCommit,
    /// A write whose caller cancelled it after it committed (while its commit or the
    /// checkpoint after it ran) is answered `CANCELLED`: the caller is told nothing changed.
    CancelledAfterCommit,
    /// A compaction copies the live file before it takes the writer, as a restore does:
    /// writes acknowledged between the copy and the flip are lost.
    CompactionCopiesBeforeTheWriter,
    /// The write queue's leader steps down after a turn even when work is queued: the jobs
    /// left are stranded with nobody to run them (caught by the loom models).
    QueueStepsDownWithWorkQueued,
    /// An exclusive turn's gate opens as soon as it is queued, beside the batch running or
    /// queued ahead of it (caught by the loom models).
    GateJumpsTheQueue,
    /// A reader about to be opened reads the live version with the pool unlocked and is
    /// counted out on it only afterwards: a flip in between releases the old file's lease
    /// while the reader opens it (caught by the loom models).
    ReaderCountedAfterVersionRead,
    /// A returning reader reads the live generation before it locks the pool: a flip in
    /// between makes it pool a connection of the old file and never release that file's
    /// lease (caught by the loom models).
    ReturnReadsGenerationEarly,
    /// An operation's audit record is appended but not synced before the operation is
    /// acknowledged: a crash can take the record of an acknowledged operation.
    AuditRecordNotDurable,
}

#[cfg(feature = "sabotage")]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Sabotage>> = const { std::cell::Cell::new(None) };
}

/// Switches a flaw on (or all off with `None`) for the calling thread.
#[cfg(feature = "sabotage")]
pub fn set(flaw: Option<Sabotage>) {
    ACTIVE.with(|a| a.set(flaw));
}

/// The flaw on for the calling thread (a harness that runs an operation on a thread of its
/// own passes it on with [`set`]).
#[cfg(feature = "sabotage")]
pub fn current() -> Option<Sabotage> {
    ACTIVE.with(|a| a.get())
}

/// Whether `flaw` is on for the calling thread.
#[cfg(feature = "sabotage")]
pub fn active(flaw: Sabotage) -> bool {
    ACTIVE.with(|a| a.get() == Some(flaw))
}

/// Whether `flaw` is on: never, in a build without the `sabotage` feature.
#[cfg(not(feature = "sabotage"))]
pub fn active(_flaw: Sabotage) -> bool {
    false
}
