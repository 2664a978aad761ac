//! Whole-engine simulation: one seed, one workload, crashes at any IO step.
//!
//! A [`World`] is a simulated machine: a [`MemFs`] disk, SQLite running on it through the
//! engine's own SQLite VFS (the production code, over the simulated disk), a workspace whose
//! broker runs on a deterministic [`Stepper`], and a clock that only moves when the simulation
//! says so. A seeded workload drives the public API —
//! exec, group-committed writes, transactions, queries, snapshots, restores, migrations,
//! checkpoints, compactions, GC, clean reopens, cancellations — and keeps a reference model of what was acknowledged.
//!
//! At a seeded IO step the power is cut ([`MemFs::cut_power_after`]); the machine boots on
//! the durable image, recovers (sometimes losing power again during recovery, then
//! recovering again), and every invariant of DESIGN.md is checked:
//!
//! 1. `current` parses and names a file that passes `integrity_check`;
//! 2. acknowledged commits survive with FULL; with NORMAL the data is one state the
//!    acknowledged history passed through (never a mix);
//! 3. operations are all-or-nothing (the recovered rows are a whole model state);
//! 4. every snapshot in the manifest exists with its size and checksum;
//! 5. after one GC pass the disk holds exactly the reachable set;
//! 6. the quota ledger equals the bytes on disk;
//! 7. after an fsync failure nothing is acknowledged until reopen (fail-stop);
//! 8. recovery is idempotent (a crash during recovery changes nothing);
//! 9. with faults off every operation succeeds, and a seed replays the same trace;
//! 10. (profile `exports`) every export and backup is complete when it is acknowledged and
//!     still there, whole, after any later crash; after GC no temporary is left in the
//!     export and backup areas; backup retention keeps the newest backups;
//! 11. a second app's registration, updates and unregistration are what their
//!     acknowledgements said after any crash, and GC leaves nothing they dropped;
//! 12. an operation fails only with a code the disk's faults explain (or BUSY, TIMEOUT,
//!     CANCELLED; QUOTA_EXCEEDED in the `quota` profile); a snapshot whose drop was
//!     acknowledged never returns;
//!     (profile `versions`) retention by age drops exactly the snapshots older than the age,
//!     an export to a host path is whole, an integrity check finds nothing, a migration plan
//!     that edits an applied step is refused.
//!
//! Where things are: this file holds the machine (boot, setup, drawing and applying
//! operations, [`run_seed`]); `profile.rs` the fault profiles; `model.rs` the reference model;
//! `ops.rs` one function per operation (`maintenance.rs` checkpoints and compactions,
//! `lifecycle.rs` the second app's changes, `versions.rs` the operations only the
//! `versions` profile draws);
//! `clients.rs` requests that run while a snapshot, restore, import or compaction is in the
//! middle of its work; `check.rs` crashes, reopens and the invariants.

mod cancel;
mod check;
mod clients;
mod held_read;
mod lifecycle;
mod maintenance;
mod model;
mod ops;
mod paused;
mod profile;
mod versions;

use check::{final_files, is_partial, Settle};
pub use clients::Clients;
use model::Model;
use ops::export_rows;
use profile::describe;
pub use profile::{FaultTally, Profile};

use crate::memfs::{Faults, LatencySink, MemFs, FAILED_SYNCS_KEPT};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sila_sqlite::broker::executor::{Executor, Stepper};
use sila_sqlite::store::layout::{self, FileKind};
use sila_sqlite::store::Retention;
use sila_sqlite::uuid::Uuid;
use sila_sqlite::versions::{ExportFormat, ImportOptions, MigrationPlan, MigrationStep, RestoreOptions};
use sila_sqlite::vfs::{self, Vfs};
use sila_sqlite::workspace::Clock;
use sila_sqlite::{AuditQuery, BrokerOptions, Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The workspace root on the simulated disk.
pub const ROOT: &str = "/ws";
/// The `keep_last` of the workload's backups.
pub const BACKUPS_KEPT: usize = 2;
/// The app every world registers.
pub const APP: &str = "com.example.sim";
/// Work units the deterministic executor holds.
pub const STEPPER_QUEUE_MAX: usize = 4096;

/// Mixed into a seed for the disk's own fault generator.
const DISK_SALT: u64 = 0x4449_534b_5f52_4e47;

/// Files bit rot may touch in the whole-engine simulation: only those the engine checksums
/// (pointer, manifest and app records; snapshots, whose CRC-32C is in the manifest).
/// SQLite database and WAL pages carry no checksum, so rot there could surface as wrong
/// rows that no layer can detect; the simulation does not pretend otherwise. A snapshot is
/// checksummed only once it is sealed (`read_only`: the engine marks it after computing its
/// CRC-32C); a bit that rots before would be checksummed with the file (the undo snapshot
/// of a restore is the replaced live file, renamed into `snapshots/` and then read whole).
pub fn rot_filter(path: &Path, read_only: bool) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let in_snapshots = path.parent().and_then(Path::file_name).is_some_and(|d| d == layout::SNAPSHOTS_DIR);
    name == layout::CURRENT
        || name == layout::MANIFEST
        || name == layout::APP_RECORD
        || (in_snapshots && read_only && name.ends_with(".sqlite"))
}

/// A clock that moves only when the simulation advances it.
#[derive(Debug, Default)]
pub struct SimClock(AtomicU64);

impl SimClock {
    /// Moves time forward.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        1_800_000_000_000 + self.0.load(Ordering::SeqCst)
    }

    /// The engine's deadlines, budgets and idle periods run on simulated time too, so a seed
    /// times out the same statements on every run, whatever the machine's speed.
    fn monotonic(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.load(Ordering::SeqCst))
    }

    /// SQLite's busy handler must not block the single-threaded stepper, nor move time.
    fn sleep(&self, _duration: std::time::Duration) {
        std::thread::yield_now();
    }
}

/// One operation of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert one row with `exec`.
    Insert(i64),
    /// Submit several inserts at once and step the executor in a seeded order (group commit).
    GroupInsert(Vec<i64>, u64),
    /// Insert several rows in one transaction; `fail` makes the body return an error.
    Transaction(Vec<i64>, bool),
    /// Delete one row.
    Delete(i64),
    /// Count rows and compare with the model.
    Query,
    /// Take a snapshot.
    Snapshot,
    /// Restore the n-th known snapshot (modulo the count).
    Restore(usize),
    /// Import the n-th known snapshot's file as the database's new version, gzip-compressed
    /// first when the flag is set.
    Import(usize, bool),
    /// Migrate to the next schema version (adds an index).
    Migrate,
    /// Drop all but the newest snapshot, then GC.
    RetentionGc,
    /// Close the workspace cleanly and open it again.
    Reopen,
    /// Submit a query and cancel it before it runs.
    Cancel,
    /// Cut the power after this many more mutating IO calls.
    CutPower(u64),
    /// Fail the n-th next fsync (fail-stop check).
    FailSync(u64),
    /// A snapshot, restore or import with clients that insert (and read) while it is in the
    /// middle of its work (see `clients.rs`).
    WithClients(Box<Op>, Clients),
    /// An operation run while a read is stopped in the middle of the live file, then GC;
    /// the number seeds where the read stops (see `held_read.rs`).
    HeldRead(Box<Op>, u64),
    /// An insert, or a transaction that does not fail, run as one multi-row insert and
    /// cancelled in the middle; the number seeds where (see `cancel.rs`).
    CancelMidWrite(Box<Op>, u64),
    /// Compact the database (`VACUUM INTO` a new version and flip; see `maintenance.rs`).
    Compact,
    /// Checkpoint the WAL into the database file and truncate it.
    Checkpoint,
    /// One call of the workspace's scheduled upkeep (integrity check, optimize, GC).
    Maintain,
    /// The next step of a second app's lifecycle (register, update, unregister); the
    /// number picks between the possible steps (see `lifecycle.rs`).
    AppChange(u64),
    /// Export into the app's export area (`false`) or back up into the backup area
    /// (`true`), gzip-compressed when the second flag is set (profile `exports` only).
    Export(bool, bool),
    /// Drop the n-th known snapshot (modulo the count; profile `versions` only, as the four
    /// below; see `versions.rs`).
    DropSnapshot(usize),
    /// Apply retention by age: drop the snapshots older than this many milliseconds.
    RetentionAge(u64),
    /// Export to a path outside the workspace, as a host names one.
    ExportTo,
    /// Check the database's integrity (`true`: SQLite's full check).
    CheckIntegrity(bool),
    /// Migrate with a plan whose last applied step was edited since: refused.
    MigrateEdited,
}

/// An invariant that broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which operation (index) was running or had just run.
    pub op_index: usize,
    /// What broke.
    pub what: String,
}

/// What one seed did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The profile.
    pub profile: Profile,
    /// Operations run.
    pub ops: Vec<Op>,
    /// A readable trace of operations and their results.
    pub trace: Vec<String>,
    /// Hash of the trace (same seed, same hash).
    pub trace_hash: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// The disk's counters at the end (faults that fired, across crashes).
    pub disk: crate::memfs::MemStats,
    /// Power cuts the seed went through (crashes and the final one).
    pub crashes: u64,
    /// Requests and operations refused with QUOTA_EXCEEDED (the app's quota was reached).
    pub quota_refusals: u64,
}

/// A simulated machine.
pub struct World {
    seed: u64,
    /// The database's `maxSizeMB` (1 in the `quota` profile, where it fills).
    quota_mb: u64,
    /// The database asks for incremental auto-vacuum (profile `versions`): upkeep moves
    /// pages into the free ones deletes left, under crashes like any write.
    incremental_vacuum: bool,
    /// The disk lies (profile `lying`): after a crash, consistency and typed errors are
    /// checked, not durability.
    lying: bool,
    /// Keys are drawn above this: [`model::BIG_KEYS`] in the `quota` profile, whose values
    /// are large.
    key_base: i64,
    rng: ChaCha8Rng,
    fs: MemFs,
    clock: Arc<SimClock>,
    stepper: Arc<Stepper>,
    ws: Option<Workspace>,
    db: Option<Database>,
    full: bool,
    model: Model,
    trace: Vec<String>,
    boots: u64,
    /// A sync failed (injected): nothing may be acknowledged until reopen.
    poisoned_by_fault: bool,
    /// A one-shot sync failure ([`Op::FailSync`]) is armed and has not been cleared.
    sync_failure_armed: bool,
    /// The disk's failed-sync count at the last reopen or recovery.
    sync_failures_base: u64,
    /// The faults this seed runs with between setup and the end (off during setup and while
    /// the invariants are checked after a crash).
    faults: Faults,
    /// Set when the seed ends early for a legitimate reason (a quarantined database).
    finished: Option<String>,
    /// Exports made so far (each gets a new name).
    exports_made: u64,
    /// Checkpoint after every commit (`wal_checkpoint_bytes` = 1), so that the main file is
    /// synced inside the commit path (profile `sqlite-sync`).
    checkpoint_every_commit: bool,
    /// Power cuts so far.
    crashes: u64,
    /// A workspace shut down since the last settle had a fault: its close wrote nothing, so
    /// the next reopen (without a crash) is no durable point.
    fault_unsettled: bool,
    /// The clients of the operation being applied ([`Op::WithClients`]), until it runs them.
    clients: Option<Clients>,
    /// What they got, until the operation settles the model with it.
    client_outcome: Option<clients::ClientOutcome>,
    /// Operations drawn so far (seeds the side stream that gives some of them clients).
    draws: u64,
    /// Client keys used so far.
    client_keys_made: i64,
    /// The disk's failed syncs when an operation with clients ended, before the clients'
    /// requests held up behind it ran.
    op_end_sync_failures: Option<u64>,
    /// The disk's failed calls (EIO, failed syncs, full disk) when the workspace last opened:
    /// a temporary file may be left only by an operation that met one.
    failed_calls_at_boot: u64,
    /// For each acknowledged snapshot, how many bits had rotted on the disk when it was
    /// acknowledged ([`MemFs::rotted`]): a bit of its file that rotted before is in the
    /// checksum the engine recorded (see [`World::rotted_after_seal`]).
    rot_marks: BTreeMap<Uuid, usize>,
    /// Every snapshot acknowledged so far (a snapshot's, a restore's or an import's undo, a
    /// migration's safety net): each must be named by a record of the audit trail after any
    /// crash ([`World::check_audit`]), even once retention or a restore dropped it.
    audit_expected: Vec<Uuid>,
    /// Snapshots with a rotted bit when a lying disk crashed: the crash may have written the
    /// bytes it still owed over the rot (a lie leaves a sealed file with pending writes), so
    /// a restore may find them sound or not; the engine's checksum decides.
    rot_maybe_undone: BTreeSet<Uuid>,
    /// The second app's lifecycle ([`Op::AppChange`]).
    side: lifecycle::SideApp,
    /// The directory UUID of the app the workload runs on, once registered.
    main_app: Option<Uuid>,
}

fn manifest(full: bool, max_mb: u64, incremental_vacuum: bool) -> String {
    let tier = if full { "premium" } else { "standard" };
    // Only when asked for: the other profiles' records stay byte for byte what they were.
    let vacuum = if incremental_vacuum { r#","incrementalVacuum":true"# } else { "" };
    format!(
        r#"{{"capabilities":{{"sqlite":{{"enabled":true,"dbs":[{{"name":"main","maxSizeMB":{max_mb}{vacuum}}}],"tier":"{tier}"}}}}}}"#
    )
}

impl World {
    /// A new machine for `seed`: an empty disk, nothing registered.
    pub fn new(seed: u64) -> Result<World, String> {
        let fs = MemFs::new();
        fs.create_dir(Path::new(ROOT)).map_err(|e| e.to_string())?;
        fs.create_dir(Path::new(versions::EXPORT_TO_DIR)).map_err(|e| e.to_string())?;
        fs.sync_dir(Path::new("/")).map_err(|e| e.to_string())?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let full = rng.random_bool(0.5);
        fs.set_seed(seed ^ DISK_SALT);
        fs.set_rot_filter(Some(rot_filter));
        Ok(World {
            seed,
            quota_mb: 4,
            incremental_vacuum: false,
            key_base: 0,
            lying: false,
            rng,
            fs,
            clock: Arc::new(SimClock::default()),
            stepper: Arc::new(Stepper::new(STEPPER_QUEUE_MAX)),
            ws: None,
            db: None,
            full,
            model: Model::default(),
            trace: Vec::new(),
            boots: 0,
            poisoned_by_fault: false,
            sync_failure_armed: false,
            sync_failures_base: 0,
            faults: Faults::default(),
            finished: None,
            exports_made: 0,
            checkpoint_every_commit: false,
            crashes: 0,
            fault_unsettled: false,
            clients: None,
            client_outcome: None,
            draws: 0,
            client_keys_made: 0,
            op_end_sync_failures: None,
            failed_calls_at_boot: 0,
            rot_marks: BTreeMap::new(),
            audit_expected: Vec::new(),
            rot_maybe_undone: BTreeSet::new(),
            side: lifecycle::SideApp::default(),
            main_app: None,
        })
    }

    fn log(&mut self, line: String) {
        self.trace.push(line);
    }

    /// Boots on the current disk: opens the workspace (recovery), whose SQLite VFS runs
    /// SQLite's IO on the same simulated disk.
    fn boot(&mut self) -> Result<(), String> {
        self.shutdown();
        self.boots += 1;
        self.failed_calls_at_boot = self.failed_calls();
        let vfs: Arc<dyn Vfs> = Arc::new(self.fs.clone());
        // A closed workspace shuts its executor down; every boot gets a fresh one.
        self.stepper = Arc::new(Stepper::new(STEPPER_QUEUE_MAX));
        let broker = BrokerOptions {
            statement_timeout: std::time::Duration::from_secs(3600),
            transaction_timeout: std::time::Duration::from_secs(3600),
            max_concurrent_requests_per_app: 1024,
            wal_checkpoint_bytes: if self.checkpoint_every_commit {
                1
            } else {
                BrokerOptions::default().wal_checkpoint_bytes
            },
            ..BrokerOptions::default()
        };
        let options = WorkspaceOptions {
            uuid_seed: Some(self.seed.wrapping_mul(1_000_003).wrapping_add(self.boots)),
            clock: self.clock.clone(),
            broker,
            executor: Some(self.stepper.clone() as Arc<dyn Executor>),
            create_if_missing: true,
            audit: Default::default(),
        };
        let ws = Workspace::open_with(vfs, PathBuf::from(ROOT), options).map_err(|e| e.to_string())?;
        self.ws = Some(ws);
        Ok(())
    }

    /// Drops the engine (its connections close and its SQLite VFS is unregistered). Also run
    /// when the world is dropped.
    fn shutdown(&mut self) {
        self.db = None;
        if self.ws.as_ref().is_some_and(|ws| ws.fault().is_some()) {
            self.fault_unsettled = true;
        }
        self.ws = None;
    }

    fn ws(&self) -> Result<&Workspace, String> {
        self.ws.as_ref().ok_or_else(|| "no workspace".to_string())
    }

    fn db(&self) -> Result<&Database, String> {
        self.db.as_ref().ok_or_else(|| "no database".to_string())
    }

    /// Registers the app and creates the table (faults off).
    pub fn setup(&mut self) -> Result<(), String> {
        self.boot()?;
        let full = self.full;
        let ws = self.ws()?.clone();
        let text = manifest(full, self.quota_mb, self.incremental_vacuum);
        let info = ws.register_app(APP, &text).map_err(|e| e.to_string())?;
        self.main_app = Some(info.app_uuid);
        let db = ws.open_app(APP).map_err(|e| e.to_string())?.open("main").map_err(|e| e.to_string())?;
        // `v` has no declared type, so it keeps the storage class it was written with.
        db.exec("CREATE TABLE kv (k INTEGER PRIMARY KEY, v NOT NULL)", &[]).map_err(|e| e.to_string())?;
        drop(ws);
        self.db = Some(db);
        // A clean close and reopen checkpoints the table into the database file: with
        // synchronous=NORMAL it is durable only from here on.
        self.reopen_clean()?;
        self.model.rows = model::with_schema(BTreeSet::new(), 0);
        self.model.barrier();
        self.log(format!("setup tier={} ", if full { "premium(FULL)" } else { "standard(NORMAL)" }));
        Ok(())
    }

    /// Draws the next operation: [`World::draw_one`]; for some snapshots, restores and
    /// imports, clients that run while it is in the middle of its work; for some other
    /// writes and version operations, a read held open across them. Those are drawn from
    /// streams of their own, so the operations of every seed stay what they were.
    pub fn draw(&mut self, profile: Profile, next_key: &mut i64) -> Op {
        let mut op = self.draw_one(profile, next_key);
        self.draws += 1;
        // Some queries become maintenance (a read changes nothing the rest relies on).
        let mut side = ChaCha8Rng::seed_from_u64(self.seed ^ MAINTENANCE_SALT ^ self.draws);
        if op == Op::Query && side.random_bool(0.4) {
            op = match side.random_range(0..3u32) {
                0 => Op::Compact,
                1 => Op::Checkpoint,
                _ => Op::Maintain,
            };
        }
        // Some cancellations become a step of a second app's lifecycle.
        let mut side = ChaCha8Rng::seed_from_u64(self.seed ^ APP_CHANGE_SALT ^ self.draws);
        if op == Op::Cancel && side.random_bool(0.5) {
            return Op::AppChange(side.next_u64());
        }
        let mut side = ChaCha8Rng::seed_from_u64(self.seed ^ CLIENTS_SALT ^ self.draws);
        let eligible = matches!(op, Op::Snapshot | Op::Restore(_) | Op::Import(..) | Op::Compact);
        if !eligible || !side.random_bool(0.3) {
            let mut side = ChaCha8Rng::seed_from_u64(self.seed ^ HELD_READ_SALT ^ self.draws);
            let holdable = matches!(
                op,
                Op::Insert(_)
                    | Op::Delete(_)
                    | Op::Snapshot
                    | Op::Restore(_)
                    | Op::Import(..)
                    | Op::Migrate
                    | Op::RetentionGc
                    | Op::Compact
            );
            if holdable && side.random_bool(0.12) {
                return Op::HeldRead(Box::new(op), side.next_u64());
            }
            let mut side = ChaCha8Rng::seed_from_u64(self.seed ^ CANCEL_SALT ^ self.draws);
            let cancellable = matches!(op, Op::Insert(_) | Op::Transaction(_, false));
            if cancellable && side.random_bool(0.15) {
                return Op::CancelMidWrite(Box::new(op), side.next_u64());
            }
            return op;
        }
        let n = side.random_range(1..3i64);
        let first = self.key_base + clients::CLIENT_KEYS + self.client_keys_made + 1;
        self.client_keys_made += n;
        Op::WithClients(Box::new(op), Clients { keys: (first..first + n).collect(), seed: side.next_u64() })
    }

    /// Draws the next operation of the workload.
    fn draw_one(&mut self, profile: Profile, next_key: &mut i64) -> Op {
        let roll = self.rng.random_range(0..100u32);
        let mut key = || {
            *next_key += 1;
            *next_key
        };
        let fault_roll = self.rng.random_range(0..100u32);
        match profile {
            _ if profile.cuts_power() && fault_roll < 6 => {
                return Op::CutPower(self.rng.random_range(0..60u64));
            }
            Profile::IoErrors | Profile::Eio | Profile::Exports | Profile::SqliteSync | Profile::Versions
                if fault_roll < 9 =>
            {
                return Op::FailSync(self.rng.random_range(0..6u64))
            }
            _ => {}
        }
        if profile == Profile::Exports && self.rng.random_bool(0.2) {
            return Op::Export(self.rng.random_bool(0.5), self.rng.random_bool(0.5));
        }
        if profile == Profile::Versions && self.rng.random_bool(0.5) {
            return self.draw_version_op();
        }
        match roll {
            0..=24 => Op::Insert(key()),
            25..=39 => {
                let n = self.rng.random_range(2..6usize);
                let mut keys: Vec<i64> = (0..n).map(|_| key()).collect();
                let order_seed = self.rng.next_u64();
                // Sometimes an older key too: if it is still there, that request must fail
                // alone with a constraint error while its neighbours commit. Drawn from a
                // stream of its own, so the operations of every seed stay what they were
                // before this was added (the regression corpus keeps its meaning).
                let mut side = ChaCha8Rng::seed_from_u64(order_seed ^ OLD_KEY_SALT);
                if side.random_bool(0.3) && *next_key > self.key_base + n as i64 {
                    let old = side.random_range(self.key_base + 1..=*next_key - n as i64);
                    let at = side.random_range(0..=keys.len());
                    keys.insert(at, old);
                }
                Op::GroupInsert(keys, order_seed)
            }
            40..=52 => {
                let n = self.rng.random_range(1..4usize);
                let fail = self.rng.random_bool(0.2);
                Op::Transaction((0..n).map(|_| key()).collect(), fail)
            }
            53..=59 => {
                Op::Delete(self.rng.random_range(self.key_base + 1..=(*next_key).max(self.key_base + 1)))
            }
            60..=67 => Op::Query,
            68..=76 => Op::Snapshot,
            77..=80 => Op::Restore(self.rng.random_range(0..8usize)),
            81..=82 => Op::Import(self.rng.random_range(0..8usize), self.rng.random_bool(0.5)),
            83..=85 => Op::Migrate,
            86..=90 => Op::RetentionGc,
            91..=94 => Op::Reopen,
            _ => Op::Cancel,
        }
    }

    /// An operation of the `versions` profile: the version operations of the common
    /// workload drawn often, and those only this profile draws.
    fn draw_version_op(&mut self) -> Op {
        match self.rng.random_range(0..100u32) {
            0..=19 => Op::Snapshot,
            20..=29 => Op::Restore(self.rng.random_range(0..8usize)),
            30..=37 => Op::Import(self.rng.random_range(0..8usize), self.rng.random_bool(0.5)),
            38..=45 => Op::Migrate,
            46..=51 => Op::MigrateEdited,
            52..=61 => Op::DropSnapshot(self.rng.random_range(0..8usize)),
            62..=69 => Op::RetentionAge(self.rng.random_range(0..20_000u64)),
            70..=77 => Op::ExportTo,
            78..=83 => Op::CheckIntegrity(self.rng.random_bool(0.5)),
            84..=89 => Op::Maintain,
            90..=92 => Op::Compact,
            93..=96 => Op::RetentionGc,
            _ => Op::Reopen,
        }
    }

    /// Runs one operation against the engine and the model. Engine errors are expected while
    /// the power is off or after an injected fault; they must then be clean typed errors.
    pub fn apply(&mut self, op: &Op) -> Result<String, String> {
        if self.fs.is_dead() {
            return Ok("skipped: power is off".into());
        }
        let full = self.full;
        let failures_before = self.fs.stats().sync_failures;
        let result = self.apply_inner(op, full);
        // Fail-stop: if a sync failed during this operation, the operation itself must not
        // have been acknowledged, and nothing is until a reopen or crash.
        // A reopen starts a new fail-stop window (it resets the base itself).
        let reopened = matches!(op, Op::Reopen) && result.is_ok();
        // With clients, only failures before the operation's own end bear on its answer (the
        // clients' answers after it are checked where they arrive).
        let failures_in_op = self.op_end_sync_failures.take().unwrap_or(self.fs.stats().sync_failures);
        // A failed sync of a file outside the workspace (an export's destination) says
        // nothing about the workspace's files: the operation fails, nothing else does.
        let new_failures = self.fs.stats().sync_failures.saturating_sub(failures_before);
        let all_outside = usize::try_from(new_failures).is_ok_and(|n| n <= FAILED_SYNCS_KEPT)
            && self
                .fs
                .failed_syncs(new_failures as usize)
                .iter()
                .all(|p| p.starts_with(versions::EXPORT_TO_DIR));
        if new_failures > 0 && !all_outside && !self.poisoned_by_fault && !self.fs.is_dead() && !reopened {
            self.poisoned_by_fault = true;
            if let Ok(text) = &result {
                if failures_in_op > failures_before && is_ack(text) {
                    return Err(format!(
                        "fail-stop broken: {op:?} was acknowledged although an fsync failed during it"
                    ));
                }
            }
        }
        result
    }
}

/// Whether an error text is one of the engine's typed errors (`error[CODE]: …`).
fn is_typed(text: &str) -> bool {
    text.contains("error[") && text.contains("]: ")
}

/// Whether a trace line says the operation was acknowledged.
fn is_ack(text: &str) -> bool {
    text == "acked"
        || text.starts_with("exported ")
        || text.starts_with("snapshot ")
        || text.starts_with("restored ")
        || text.starts_with("migrated ")
        || text.starts_with("app ")
        || text.starts_with("retention dropped ")
        || (text.starts_with("acked [") && !text.starts_with("acked []"))
}

fn short(id: Uuid) -> String {
    id.simple().to_string().chars().skip(20).collect()
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Mixed into the seed of the stream that gives operations clients.
const CLIENTS_SALT: u64 = 0x434c_4945_4e54_5353;

/// Mixed into the seed of the stream that holds a read open across operations.
const HELD_READ_SALT: u64 = 0x4845_4c44_5245_4144;

/// Mixed into the seed of the stream that cancels writes in the middle.
const CANCEL_SALT: u64 = 0x4341_4e43_454c_4d49;

/// Mixed into the seed of the stream that turns some queries into maintenance.
const MAINTENANCE_SALT: u64 = 0x4d41_494e_5441_494e;

/// Mixed into the seed of the stream that turns some cancellations into app changes.
const APP_CHANGE_SALT: u64 = 0x4150_505f_4348_4e47;

/// Mixed into a group's order seed for the stream that may add an older key to it.
const OLD_KEY_SALT: u64 = 0x4f4c_445f_4b45_5953;

/// Runs one seed of one profile: setup, then `ops_max` operations; whenever the power goes
/// out, crash, recover and check. Returns the outcome with its trace. The same seed number
/// draws a different workload under each profile ([`Profile::salt`]).
pub fn run_seed(seed: u64, profile: Profile, ops_max: usize) -> Outcome {
    let mut ops = Vec::new();
    let mut violation = None;
    let mut trace = Vec::new();
    let (mut disk, mut crashes) = (crate::memfs::MemStats::default(), 0);
    // Every stream of the world (operations, disk faults, UUIDs, the fault swarm) comes
    // from the seed mixed with the profile.
    let world_seed = seed ^ profile.salt();
    match World::new(world_seed) {
        Err(e) => violation = Some(Violation { op_index: 0, what: format!("harness: {e}") }),
        Ok(mut world) => {
            world.checkpoint_every_commit = profile == Profile::SqliteSync;
            if profile == Profile::Quota {
                world.quota_mb = 1;
                world.key_base = model::BIG_KEYS;
            }
            world.lying = profile == Profile::Lying;
            world.incremental_vacuum = profile == Profile::Versions;
            if let Err(e) = world.setup() {
                violation = Some(Violation { op_index: 0, what: format!("setup failed: {e}") });
            }
            let mut faults = profile.swarm(world_seed);
            if profile == Profile::Enospc {
                let used: u64 = world.fs.files().values().map(|v| v.len() as u64).sum();
                let room = world.rng.random_range(64 * 1024..2 * 1024 * 1024u64);
                faults.capacity_bytes = Some(used + room);
                world.log(format!("disk capacity {} bytes", used + room));
            }
            world.log(format!("faults {}", describe(&faults)));
            world.faults = faults;
            world.clear_fault_state();
            let clock = world.clock.clone();
            world.fs.set_latency_sink(Some(LatencySink(Arc::new(move |ms| clock.advance(ms)))));
            let mut next_key = world.key_base;
            for i in 0..ops_max {
                if violation.is_some() || world.finished.is_some() {
                    break;
                }
                world.clock.advance(1000);
                let op = world.draw(profile, &mut next_key);
                ops.push(op.clone());
                let result = world.apply(&op);
                match result {
                    Ok(text) => world.log(format!("{i:4} {op:?} -> {text}")),
                    Err(what) => {
                        world.log(format!("{i:4} {op:?} -> VIOLATION {what}"));
                        violation = Some(Violation { op_index: i, what });
                        break;
                    }
                }
                if profile == Profile::Faultless && world.trace.last().is_some_and(|l| l.contains("-> error"))
                {
                    let what = format!("with faults off, an operation failed: {:?}", world.trace.last());
                    violation = Some(Violation { op_index: i, what });
                    break;
                }
                if !world.fs.is_dead() && world.finished.is_none() {
                    if let Err(what) = world.check_between_operations() {
                        world.log(format!("     invariants -> VIOLATION {what}"));
                        violation = Some(Violation { op_index: i, what });
                        break;
                    }
                }
                // A seed that ended (the state is none the model knows) checks no crash either.
                if world.fs.is_dead() && world.finished.is_none() {
                    match world.crash_and_check() {
                        Ok(text) => world.log(format!("     crash -> {text}")),
                        Err(what) => {
                            world.log(format!("     crash -> VIOLATION {what}"));
                            violation = Some(Violation { op_index: i, what });
                        }
                    }
                }
            }
            if violation.is_none() && world.finished.is_none() {
                // A final crash at the end checks durability of everything acknowledged.
                world.fs.cut_power_after(0);
                if let Err(what) = world.crash_and_check() {
                    world.log(format!("final crash -> VIOLATION {what}"));
                    violation = Some(Violation { op_index: ops.len(), what });
                }
            }
            trace = std::mem::take(&mut world.trace);
            disk = world.fs.stats();
            crashes = world.crashes;
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    trace.hash(&mut h);
    let quota_refusals = trace.iter().map(|l| l.matches("QUOTA_EXCEEDED").count() as u64).sum();
    Outcome { seed, profile, ops, trace, trace_hash: h.finish(), violation, disk, crashes, quota_refusals }
}
