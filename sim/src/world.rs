//! Whole-engine simulation: one seed, one workload, crashes at any IO step.
//!
//! A [`World`] is a simulated machine: a [`MemFs`] disk, SQLite running on it through the
//! engine's own SQLite VFS (the production code, over the simulated disk), a workspace whose broker runs on a deterministic [`Stepper`], and a clock
//! that only moves when the simulation says so. A seeded workload drives the public API —
//! exec, group-committed writes, transactions, queries, snapshots, restores, migrations,
//! GC, clean reopens, cancellations — and keeps a reference model of what was acknowledged.
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
//!     export and backup areas; backup retention keeps the newest backups.

use crate::memfs::{Faults, LatencySink, MemFs};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sila_sqlite::broker::executor::{Executor, Stepper};
use sila_sqlite::store::layout::{self, FileKind};
use sila_sqlite::store::Retention;
use sila_sqlite::uuid::Uuid;
use sila_sqlite::versions::{ExportFormat, ImportOptions, MigrationPlan, MigrationStep, RestoreOptions};
use sila_sqlite::vfs::{self, Vfs};
use sila_sqlite::workspace::Clock;
use sila_sqlite::{BrokerOptions, Database, ErrorCode, Value, Workspace, WorkspaceOptions};
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

/// Fault profiles: which faults a seed may draw ("swarm": each seed turns some off).
///
/// | profile | faults a seed may draw |
/// |---|---|
/// | `faultless` | short reads and writes, slow IO (legal behaviour, not faults): every operation must succeed |
/// | `crash-heavy` | power cuts (also during recovery); at a crash pending writes applied, dropped, trashed or torn, any subset or a prefix; early write-back; dropped truncates; short and slow IO |
/// | `io-errors` | one-shot fsync failures (fail-stop), power cuts with crash fates, short and slow IO |
/// | `enospc` | a full disk, early write-back, power cuts with crash fates |
/// | `torn` | power cuts with every crash fate on at high rates, prefix-only crashes, write-back, dropped truncates |
/// | `eio` | one-shot and random fsync/`sync_dir` failures with crash fates, transient and persistent read/write EIO (bad inodes, latent sector errors), bit rot of checksummed files, short and slow IO, power cuts |
/// | `exports` | the `io-errors` faults, with exports and backups (plain and gzip) in the workload |
/// | `sqlite-sync` | one-shot fsync failures aimed at SQLite's own syncs (the main file, which WAL mode syncs only in checkpoints, or the WAL), with a checkpoint after every commit, and power cuts with crash fates |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// No faults, no crashes: every operation must succeed.
    Faultless,
    /// Power cuts at random IO steps, including during recovery.
    CrashHeavy,
    /// Failed fsyncs (fail-stop) and power cuts.
    IoErrors,
    /// A full disk and power cuts.
    Enospc,
    /// Power cuts where pending writes tear, turn to garbage and reorder.
    Torn,
    /// Read and write errors, bad sectors and bit rot.
    Eio,
    /// Failed fsyncs and power cuts, with exports and backups in the workload.
    Exports,
    /// Failed fsyncs of SQLite's main files (in post-commit checkpoints) or WALs, power cuts.
    SqliteSync,
}

impl Profile {
    /// Every profile: what `--profile all` (and CI) runs.
    pub const ALL: [Profile; 8] = [
        Profile::Faultless,
        Profile::CrashHeavy,
        Profile::IoErrors,
        Profile::Enospc,
        Profile::Torn,
        Profile::Eio,
        Profile::Exports,
        Profile::SqliteSync,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Faultless => "faultless",
            Profile::CrashHeavy => "crash-heavy",
            Profile::IoErrors => "io-errors",
            Profile::Enospc => "enospc",
            Profile::Torn => "torn",
            Profile::Eio => "eio",
            Profile::Exports => "exports",
            Profile::SqliteSync => "sqlite-sync",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the seed cuts the power at random IO steps.
    fn cuts_power(self) -> bool {
        self != Profile::Faultless
    }

    /// The faults one seed runs with: each family is on or off by a coin of the seed's own
    /// stream (swarm testing), with a seeded rate. Drawn from a stream separate from the
    /// workload's, so the operations of a seed do not depend on its faults.
    pub fn swarm(self, seed: u64) -> Faults {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SWARM_SALT);
        let mut on = |lo: u16, hi: u16| -> u16 {
            if rng.random_bool(0.5) {
                rng.random_range(lo..=hi)
            } else {
                0
            }
        };
        let mut f = Faults { short_io_bp: on(50, 2_000), slow_io_bp: on(10, 300), ..Faults::default() };
        let crash_fates = |f: &mut Faults, on: &mut dyn FnMut(u16, u16) -> u16, hard: bool| {
            let (lo, hi) = if hard { (2_000, 10_000) } else { (1, 10_000) };
            f.crash_keep_bp = on(lo, hi);
            f.crash_trash_bp = on(if hard { 500 } else { 50 }, 3_000);
            f.torn_bp = on(lo, hi);
            f.drop_truncate_bp = on(lo, hi);
            f.writeback_bp = on(10, 2_000);
        };
        match self {
            Profile::Faultless => {}
            Profile::CrashHeavy | Profile::Enospc => crash_fates(&mut f, &mut on, false),
            Profile::IoErrors | Profile::Exports => crash_fates(&mut f, &mut on, false),
            Profile::SqliteSync => {
                crash_fates(&mut f, &mut on, false);
                f.fail_sync_suffix = Some(if on(0, 1) == 1 { ".sqlite" } else { "-wal" });
            }
            Profile::Torn => {
                crash_fates(&mut f, &mut on, true);
                f.crash_prefix_only = on(0, 1) == 1;
            }
            Profile::Eio => {
                crash_fates(&mut f, &mut on, false);
                f.read_eio_bp = on(1, 40);
                f.write_eio_bp = on(1, 40);
                f.sync_eio_bp = on(2, 60);
                f.bad_inode_bp = on(1, 20);
                f.latent_sector_bp = on(1, 30);
                f.bitrot_bp = on(10, 2_000);
            }
        }
        if f.slow_io_bp > 0 {
            f.slow_io_ms_max = 20;
        }
        f
    }
}

/// Mixed into a seed for its fault stream.
const SWARM_SALT: u64 = 0x5741_524d_5f46_4c54;
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
    /// Export into the app's export area (`false`) or back up into the backup area
    /// (`true`), gzip-compressed when the second flag is set (profile `exports` only).
    Export(bool, bool),
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
}

/// The reference model: every state the data went through, and what is durable.
#[derive(Debug, Clone, Default)]
struct Model {
    /// The rows acknowledged so far (the current state).
    rows: BTreeSet<i64>,
    /// Every state since the last durable barrier, oldest first (the current one last).
    history: Vec<BTreeSet<i64>>,
    /// Snapshot id → the rows it holds.
    snapshots: BTreeMap<Uuid, BTreeSet<i64>>,
    /// Snapshots in manifest order.
    snapshot_order: Vec<Uuid>,
    /// Schema version.
    schema: u64,
    /// States an operation that did not answer (or failed) may still have produced.
    in_flight: Vec<BTreeSet<i64>>,
    /// Keys written by operations that failed since the last durable point: a failed
    /// operation may still have taken effect whole (SQLite can report a commit failed after
    /// its commit frame reached the WAL), so these keys may be present or not.
    maybe: BTreeSet<i64>,
    /// Acknowledged exports and backups: path → (its rows, gzip). An export must exist from
    /// its acknowledgement on; a backup may be removed by retention (see `backups_must`).
    exports: BTreeMap<PathBuf, (BTreeSet<i64>, bool)>,
    /// The backups that must exist: those listed after the last acknowledged backup. A backup
    /// that failed may have removed any of them (it removes the oldest names once its own file
    /// is complete), so a failure empties this set until the next acknowledged backup.
    backups_must: BTreeSet<PathBuf>,
    /// Whole states a failed operation may have committed past its commit point (a restore
    /// whose undo snapshot failed after the flip: the engine reports the error and poisons
    /// the database). They stay possible until the next acknowledged write, which proves
    /// the engine was not on one of them (it would have refused work), or a durable point.
    in_doubt: Vec<BTreeSet<i64>>,
}

impl Model {
    fn commit(&mut self, rows: BTreeSet<i64>, full: bool) {
        self.rows = rows;
        self.in_doubt.clear();
        if full {
            self.history = vec![self.rows.clone()];
        } else {
            self.history.push(self.rows.clone());
        }
    }

    fn barrier(&mut self) {
        self.history = vec![self.rows.clone()];
        self.maybe.clear();
        self.in_doubt.clear();
    }

    /// Whether `rows` is what a reopen without a crash may show: the last acknowledged state
    /// or the state of an operation that failed but took effect whole, up to keys of failed
    /// operations.
    fn allows_without_crash(&self, rows: &BTreeSet<i64>) -> bool {
        std::iter::once(&self.rows)
            .chain(self.in_flight.iter())
            .chain(self.in_doubt.iter())
            .any(|s| s.symmetric_difference(rows).all(|k| self.maybe.contains(k)))
    }

    /// Whether `rows` is a state the history allows, up to keys of failed operations.
    fn allows(&self, rows: &BTreeSet<i64>) -> bool {
        self.history
            .iter()
            .chain(self.in_flight.iter())
            .chain(self.in_doubt.iter())
            .any(|s| s.symmetric_difference(rows).all(|k| self.maybe.contains(k)))
    }
}

/// A simulated machine.
pub struct World {
    seed: u64,
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
}

fn manifest(full: bool) -> String {
    let tier = if full { "premium" } else { "standard" };
    format!(
        r#"{{"capabilities":{{"sqlite":{{"enabled":true,"dbs":[{{"name":"main","maxSizeMB":4}}],"tier":"{tier}"}}}}}}"#
    )
}

impl World {
    /// A new machine for `seed`: an empty disk, nothing registered.
    pub fn new(seed: u64) -> Result<World, String> {
        let fs = MemFs::new();
        fs.create_dir(Path::new(ROOT)).map_err(|e| e.to_string())?;
        fs.sync_dir(Path::new("/")).map_err(|e| e.to_string())?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let full = rng.random_bool(0.5);
        fs.set_seed(seed ^ DISK_SALT);
        fs.set_rot_filter(Some(rot_filter));
        Ok(World {
            seed,
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
        };
        let ws = Workspace::open_with(vfs, PathBuf::from(ROOT), options).map_err(|e| e.to_string())?;
        self.ws = Some(ws);
        Ok(())
    }

    /// Drops the engine (its connections close and its SQLite VFS is unregistered). Also run
    /// when the world is dropped.
    fn shutdown(&mut self) {
        self.db = None;
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
        ws.register_app(APP, &manifest(full)).map_err(|e| e.to_string())?;
        let db = ws.open_app(APP).map_err(|e| e.to_string())?.open("main").map_err(|e| e.to_string())?;
        db.exec("CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)", &[])
            .map_err(|e| e.to_string())?;
        drop(ws);
        self.db = Some(db);
        // A clean close and reopen checkpoints the table into the database file: with
        // synchronous=NORMAL it is durable only from here on.
        self.reopen_clean()?;
        self.model.barrier();
        self.log(format!("setup tier={} ", if full { "premium(FULL)" } else { "standard(NORMAL)" }));
        Ok(())
    }

    /// Draws the next operation.
    pub fn draw(&mut self, profile: Profile, next_key: &mut i64) -> Op {
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
            Profile::IoErrors | Profile::Eio | Profile::Exports | Profile::SqliteSync if fault_roll < 9 => {
                return Op::FailSync(self.rng.random_range(0..6u64))
            }
            _ => {}
        }
        if profile == Profile::Exports && self.rng.random_bool(0.2) {
            return Op::Export(self.rng.random_bool(0.5), self.rng.random_bool(0.5));
        }
        match roll {
            0..=24 => Op::Insert(key()),
            25..=39 => {
                let n = self.rng.random_range(2..6usize);
                Op::GroupInsert((0..n).map(|_| key()).collect(), self.rng.next_u64())
            }
            40..=52 => {
                let n = self.rng.random_range(1..4usize);
                let fail = self.rng.random_bool(0.2);
                Op::Transaction((0..n).map(|_| key()).collect(), fail)
            }
            53..=59 => Op::Delete(self.rng.random_range(1..=(*next_key).max(1))),
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
        if self.fs.stats().sync_failures > failures_before
            && !self.poisoned_by_fault
            && !self.fs.is_dead()
            && !reopened
        {
            self.poisoned_by_fault = true;
            if let Ok(text) = &result {
                if is_ack(text) {
                    return Err(format!(
                        "fail-stop broken: {op:?} was acknowledged although an fsync failed during it"
                    ));
                }
            }
        }
        result
    }

    fn apply_inner(&mut self, op: &Op, full: bool) -> Result<String, String> {
        let acked_while_poisoned = |w: &World| w.poisoned_by_fault;
        match op {
            Op::Insert(k) => {
                let mut next = self.model.rows.clone();
                next.insert(*k);
                self.model.in_flight = vec![next.clone()];
                let r = self
                    .db()?
                    .exec("INSERT INTO kv (k, v) VALUES (?, ?)", &[Value::Integer(*k), Value::Integer(*k)]);
                self.settle_write(r.map(|_| ()), next, full, acked_while_poisoned(self))
            }
            Op::GroupInsert(keys, order_seed) => {
                let db = self.db()?.clone();
                let mut all = self.model.rows.clone();
                all.extend(keys.iter().copied());
                self.model.in_flight = vec![all];
                let pending: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        db.submit_exec(
                            "INSERT INTO kv (k, v) VALUES (?, ?)",
                            vec![Value::Integer(*k), Value::Integer(*k)],
                        )
                    })
                    .collect();
                let mut order = ChaCha8Rng::seed_from_u64(*order_seed);
                self.stepper.run_until_idle(10_000, || order.random_range(0..64usize));
                let mut acked = Vec::new();
                let mut failures = Vec::new();
                for (k, p) in keys.iter().zip(pending) {
                    match p.try_take() {
                        Some(Ok(_)) => acked.push(*k),
                        Some(Err(e)) => failures.push(e.code().name()),
                        None => {
                            return Err(
                                "a group-committed write was never answered after the stepper went idle"
                                    .into(),
                            )
                        }
                    }
                }
                if !acked.is_empty() && self.poisoned_by_fault {
                    return Err(format!(
                        "fail-stop broken: {} writes acknowledged after an fsync failure",
                        acked.len()
                    ));
                }
                let mut next = self.model.rows.clone();
                next.extend(acked.iter().copied());
                self.model.maybe.extend(keys.iter().filter(|k| !acked.contains(k)));
                // Every request of a group either commits with it or fails alone; after a
                // power cut the whole group may have committed unanswered.
                self.model.in_flight.push(next.clone());
                if !acked.is_empty() {
                    self.model.commit(next, full);
                }
                Ok(format!("acked {:?} failed {:?}", acked, failures))
            }
            Op::Transaction(keys, fail) => {
                let mut next = self.model.rows.clone();
                next.extend(keys.iter().copied());
                self.model.in_flight = if *fail { Vec::new() } else { vec![next.clone()] };
                let keys2 = keys.clone();
                let fail = *fail;
                let r = self.db()?.transaction(|tx| {
                    for k in &keys2 {
                        tx.exec(
                            "INSERT INTO kv (k, v) VALUES (?, ?)",
                            &[Value::Integer(*k), Value::Integer(*k)],
                        )?;
                    }
                    if fail {
                        return Err(sila_sqlite::Error::new(
                            ErrorCode::InvalidArgument,
                            "the body fails on purpose",
                        ));
                    }
                    Ok(())
                });
                if fail {
                    match r {
                        Err(e) if e.code() == ErrorCode::InvalidArgument => Ok("rolled back as asked".into()),
                        Err(e) => Ok(format!("error {}", e.code())),
                        Ok(()) => Err("a transaction whose body failed was committed".into()),
                    }
                } else {
                    self.settle_write(r, next, full, acked_while_poisoned(self))
                }
            }
            Op::Delete(k) => {
                let mut next = self.model.rows.clone();
                next.remove(k);
                self.model.in_flight = vec![next.clone()];
                let r = self.db()?.exec("DELETE FROM kv WHERE k = ?", &[Value::Integer(*k)]).map(|_| ());
                self.settle_write(r, next, full, acked_while_poisoned(self))
            }
            Op::Query => match self.db()?.query("SELECT k FROM kv ORDER BY k", &[]) {
                Ok(rows) => {
                    let got: BTreeSet<i64> = rows
                        .rows
                        .iter()
                        .filter_map(|r| match r.first() {
                            Some(Value::Integer(k)) => Some(*k),
                            _ => None,
                        })
                        .collect();
                    if got != self.model.rows {
                        return Err(format!(
                            "live read differs from the model: got {} rows, model {}",
                            got.len(),
                            self.model.rows.len()
                        ));
                    }
                    Ok(format!("{} rows", got.len()))
                }
                Err(e) => Ok(format!("error {}", e.code())),
            },
            Op::Snapshot => {
                let label = format!("s{}", self.trace.len());
                match self.db()?.snapshot(&label) {
                    Ok(s) => {
                        if self.poisoned_by_fault {
                            return Err(
                                "fail-stop broken: snapshot acknowledged after an fsync failure".into()
                            );
                        }
                        self.model.snapshots.insert(s.id, self.model.rows.clone());
                        self.model.snapshot_order.push(s.id);
                        Ok(format!("snapshot {}", short(s.id)))
                    }
                    Err(e) => Ok(format!("error {}", e.code())),
                }
            }
            Op::Restore(n) => {
                if self.model.snapshot_order.is_empty() {
                    return Ok("no snapshot".into());
                }
                let Some(id) = self.model.snapshot_order.get(n % self.model.snapshot_order.len()).copied()
                else {
                    return Ok("no snapshot".into());
                };
                let target = self.model.snapshots.get(&id).cloned().unwrap_or_default();
                self.model.in_flight = vec![target.clone()];
                match self.db()?.restore(id, RestoreOptions { allow_schema_change: true }) {
                    Ok(undo) => {
                        if self.poisoned_by_fault {
                            return Err(
                                "fail-stop broken: restore acknowledged after an fsync failure".into()
                            );
                        }
                        self.model.snapshots.insert(undo, self.model.rows.clone());
                        self.model.snapshot_order.push(undo);
                        self.model.rows = target;
                        self.model.barrier();
                        Ok(format!("restored {} (undo {})", short(id), short(undo)))
                    }
                    Err(e) => {
                        // Past the flip the restore took effect although it failed (its undo
                        // snapshot could not be kept); the engine then refuses all work until
                        // a reopen, which shows one state or the other.
                        self.model.in_doubt.push(target);
                        Ok(format!("error {}", e.code()))
                    }
                }
            }
            Op::Import(n, gzip) => {
                let Some(id) =
                    self.model.snapshot_order.get(n % self.model.snapshot_order.len().max(1)).copied()
                else {
                    return Ok("no snapshot".into());
                };
                let target = self.model.snapshots.get(&id).cloned().unwrap_or_default();
                let key = self.ws()?.db_key(APP, "main").map_err(|e| e.to_string())?;
                let snap = Path::new(ROOT).join(layout::snapshot_file(key.app, &key.db, id));
                let source = if *gzip {
                    match self.write_gzip_copy(&snap) {
                        Ok(path) => path,
                        // The harness's own copy could not be written (a full or failing disk):
                        // nothing was asked of the engine.
                        Err(why) => return Ok(format!("no import source: {why}")),
                    }
                } else {
                    snap
                };
                self.model.in_flight = vec![target.clone()];
                let imported = self.db()?.import(&source, ImportOptions::default());
                if *gzip {
                    // The harness's copy is not the engine's business once imported.
                    let _ = self.fs.remove_file(&source);
                }
                match imported {
                    Ok(report) => {
                        if self.poisoned_by_fault {
                            return Err("fail-stop broken: import acknowledged after an fsync failure".into());
                        }
                        if *gzip && report.checks.first() != Some(&"gzip") {
                            return Err(format!(
                                "a gzip import did not report its gzip check: {:?}",
                                report.checks
                            ));
                        }
                        self.model.rows = target;
                        self.model.barrier();
                        Ok(format!("imported {}{}", short(id), if *gzip { " (gzip)" } else { "" }))
                    }
                    Err(e) => {
                        // As for a restore: an error after the flip leaves the database
                        // poisoned with the import in effect; a reopen shows one state or the
                        // other.
                        self.model.in_doubt.push(target);
                        Ok(format!("error {}", e.code()))
                    }
                }
            }
            Op::Migrate => {
                let to = self.model.schema + 1;
                let steps = (0..to)
                    .map(|v| MigrationStep {
                        from: v,
                        to: v + 1,
                        up: format!("CREATE INDEX IF NOT EXISTS kv_v{v} ON kv(v)"),
                        down: format!("DROP INDEX IF EXISTS kv_v{v}"),
                    })
                    .collect();
                let plan = MigrationPlan { current_version: to, steps };
                match self.db()?.migrate(&plan, false) {
                    Ok(report) => {
                        if self.poisoned_by_fault {
                            return Err(
                                "fail-stop broken: migration acknowledged after an fsync failure".into()
                            );
                        }
                        if let Some(s) = report.snapshot {
                            self.model.snapshots.insert(s, self.model.rows.clone());
                            self.model.snapshot_order.push(s);
                        }
                        self.model.schema = report.to;
                        Ok(format!("migrated {} -> {}", report.from, report.to))
                    }
                    Err(e) => Ok(format!("error {}", e.code())),
                }
            }
            Op::RetentionGc => {
                let policy = Retention { keep_last: Some(1), max_age_ms: None };
                match self.db()?.apply_retention(policy) {
                    Ok(dropped) => {
                        for d in &dropped {
                            self.model.snapshots.remove(d);
                            self.model.snapshot_order.retain(|x| x != d);
                        }
                        let gc =
                            self.ws()?.gc().map(|g| g.files.len()).map_err(|e| e.code().name().to_string());
                        Ok(format!("dropped {} gc {:?}", dropped.len(), gc))
                    }
                    Err(e) => Ok(format!("error {}", e.code())),
                }
            }
            Op::Reopen => {
                let base = self.sync_failures_base;
                // The engine stopped at a fault (a failed sync, or a write the disk failed with
                // EIO): its close then writes nothing, so the reopen is no durable point.
                let faulted = self.ws.as_ref().is_some_and(|ws| ws.fault().is_some());
                match self.reopen_clean() {
                    Ok(()) => {
                        // A reopen shows the durable state: everything acknowledged, plus
                        // whatever failed operations took effect whole (a commit SQLite
                        // reported failed after its commit frame reached the WAL is replayed
                        // now). If a sync failed since the last reopen (its pending data was
                        // dropped), or the close's checkpoint lost its fsync, it is like a crash.
                        let fired = self.fs.stats().sync_failures > base || faulted;
                        let rows = match self.read_rows() {
                            Ok(rows) => rows,
                            Err(e) if self.fs.is_dead() => return Ok(format!("power cut after reopen: {e}")),
                            Err(e) if self.call_errors() && is_typed(&e) => {
                                return self.recover_quietly(
                                    &format!("read after reopen failed cleanly: {e}"),
                                    base,
                                );
                            }
                            Err(e) => return Err(e),
                        };
                        let when = if fired { "reopen after a failed fsync" } else { "reopen" };
                        if fired {
                            // Not a durable point: the close after a fault writes nothing (no
                            // checkpoint), so what the reopen shows may still sit unsynced in
                            // the WAL, and a later crash may take it back to any state since
                            // the last durable point.
                            if !self.model.allows(&rows) {
                                return Err(format!(
                                    "{when}: {} rows, which is no acknowledged state",
                                    rows.len()
                                ));
                            }
                            self.model.commit(rows, self.full);
                            self.model.in_flight.clear();
                        } else {
                            // Without a crash nothing acknowledged may be missing: only keys of
                            // failed operations may differ from the last acknowledged state.
                            let current = self.model.rows.clone();
                            if !self.model.allows_without_crash(&rows) {
                                return Err(format!(
                                    "{when}: {} rows, but {} were acknowledged and nothing crashed",
                                    rows.len(),
                                    current.len()
                                ));
                            }
                            self.model.rows = rows;
                            self.model.barrier();
                            self.model.in_flight.clear();
                        }
                        Ok(if fired {
                            "reopened after a failed fsync at close".into()
                        } else {
                            "reopened".into()
                        })
                    }
                    Err(e) if self.fs.is_dead() => Ok(format!("power cut during reopen: {e}")),
                    Err(e) if self.call_errors() && is_typed(&e) => {
                        self.recover_quietly(&format!("reopen failed cleanly: {e}"), base)
                    }
                    Err(e) => Err(format!("reopen failed with the power on: {e}")),
                }
            }
            Op::Cancel => {
                let p = self.db()?.submit_query("SELECT count(*) FROM kv", vec![]);
                p.cancel();
                self.stepper.run_until_idle(1000, || 0);
                match p.try_take() {
                    Some(Err(e)) if e.code() == ErrorCode::Cancelled => Ok("cancelled".into()),
                    Some(Err(e)) if e.code() == ErrorCode::Poisoned => Ok("poisoned".into()),
                    Some(Err(e)) if self.fs.is_dead() => Ok(format!("power cut: {}", e.code())),
                    Some(other) => Err(format!("a cancelled query answered {other:?}")),
                    None => Err("a cancelled query was never answered".into()),
                }
            }
            Op::Export(backup, gzip) => {
                let format = if *gzip { ExportFormat::SqliteGzip } else { ExportFormat::Sqlite };
                let n = self.exports_made;
                self.exports_made += 1;
                let made = if *backup {
                    self.db()?.backup_as(BACKUPS_KEPT, format).map(|(_, path)| path)
                } else {
                    self.db()?.export_as(&format!("e{n}"), format)
                };
                let path = match made {
                    Ok(path) => path,
                    Err(e) => {
                        if *backup {
                            self.model.backups_must.clear();
                        }
                        return Ok(format!("error {}", e.code()));
                    }
                };
                if self.poisoned_by_fault {
                    return Err("fail-stop broken: an export was acknowledged after an fsync failure".into());
                }
                let rows = export_rows(&self.fs, &path, *gzip, self.seed)
                    .map_err(|e| format!("acknowledged export {} is not whole: {e}", path.display()))?;
                if !self.model.allows_without_crash(&rows) {
                    return Err(format!(
                        "export {} holds {} rows, not an acknowledged state ({} rows)",
                        path.display(),
                        rows.len(),
                        self.model.rows.len()
                    ));
                }
                let count = rows.len();
                self.model.exports.insert(path.clone(), (rows, *gzip));
                if *backup {
                    self.settle_backups(&path)?;
                }
                let what = if *backup { "backup" } else { "export" };
                Ok(format!("exported {count} rows ({what}{})", if *gzip { ", gzip" } else { "" }))
            }
            Op::CutPower(n) => {
                self.fs.cut_power_after(*n);
                Ok(format!("power cut armed after {n} IO calls"))
            }
            Op::FailSync(n) => {
                if self.sync_failure_armed {
                    return Ok("an fsync failure is already armed".into());
                }
                let mut faults = self.fs.faults();
                faults.fail_sync_after = Some(*n);
                self.fs.set_faults(faults);
                self.sync_failure_armed = true;
                Ok(format!("fsync failure armed after {n} syncs"))
            }
        }
    }

    /// After a write: acknowledged → the model moves; error → must be clean, model stays.
    /// Writes a gzip copy of `file` (as the disk holds it now) under `/import` and returns its
    /// path. Not synced: the import reads it at once, and a sync here could draw an injected
    /// fsync failure that belongs to no engine operation.
    fn write_gzip_copy(&self, file: &Path) -> Result<PathBuf, String> {
        use std::io::Write as _;
        let bytes = self.fs.read(file).ok_or_else(|| format!("{} is missing", file.display()))?;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&bytes).map_err(|e| e.to_string())?;
        let zipped = encoder.finish().map_err(|e| e.to_string())?;
        let dir = Path::new("/import");
        let fs: &dyn Vfs = &self.fs;
        vfs::create_dir_all(fs, dir).map_err(|e| e.to_string())?;
        let path =
            dir.join(format!("{}.sqlite.gz", short(Uuid::from_u64_pair(self.seed, self.trace.len() as u64))));
        vfs::write_file(fs, &path, &zipped).map_err(|e| e.to_string())?;
        Ok(path)
    }

    fn settle_write(
        &mut self,
        r: sila_sqlite::Result<()>,
        next: BTreeSet<i64>,
        full: bool,
        poisoned_before: bool,
    ) -> Result<String, String> {
        match r {
            Ok(()) => {
                if poisoned_before {
                    return Err("fail-stop broken: a write was acknowledged after an fsync failure".into());
                }
                self.model.commit(next, full);
                Ok("acked".into())
            }
            Err(e) => {
                let touched: Vec<i64> = next.symmetric_difference(&self.model.rows).copied().collect();
                self.model.maybe.extend(touched);
                Ok(format!("error {}", e.code()))
            }
        }
    }

    /// Closes the workspace cleanly (checkpoints) and opens it again.
    fn reopen_clean(&mut self) -> Result<(), String> {
        self.boot()?;
        let db =
            self.ws()?.open_app(APP).map_err(|e| e.to_string())?.open("main").map_err(|e| e.to_string())?;
        self.db = Some(db);
        self.clear_fault_state();
        Ok(())
    }

    /// After a reopen or recovery: nothing is poisoned, and the seed's faults are back on.
    fn clear_fault_state(&mut self) {
        self.poisoned_by_fault = false;
        self.sync_failure_armed = false;
        self.sync_failures_base = self.fs.stats().sync_failures;
        self.fs.set_faults(self.faults);
    }

    /// Whether this seed's disk may fail calls or rot bits (then a reopen may fail cleanly).
    fn call_errors(&self) -> bool {
        self.faults.call_errors_on()
    }

    /// A reopen failed with a clean typed error on a failing disk. The operator replaces the
    /// failing hardware ([`MemFs::repair`]) and reopens with call faults off; the data must
    /// then be what it was: nothing acknowledged lost (or, if a sync failed, one allowed
    /// state), every invariant holding — a failed open must not have destroyed anything.
    ///
    /// `base` is the failed-sync count when the reopen began (a reopen that succeeded before
    /// its read failed has already moved [`World::sync_failures_base`] past a sync that failed
    /// while it closed the engine).
    fn recover_quietly(&mut self, why: &str, base: u64) -> Result<String, String> {
        let fired = self.fs.stats().sync_failures > base;
        self.shutdown();
        self.fs.repair();
        self.fs.set_faults(self.faults.quiet());
        // A power cut the workload armed may fire here too: a clean typed error then is the
        // crash's, and the caller's crash check takes over from what this one observed.
        let cut = |w: &World, e: &str| w.fs.is_dead() && is_typed(e);
        if let Err(e) = self.boot() {
            if cut(self, &e) {
                return Ok(format!("{why}; power cut during the reopen on a repaired disk: {e}"));
            }
            return Err(format!("{why}; reopen on a repaired disk failed: {e}"));
        }
        let verdict = match self.check_invariants_or_quarantine(!fired) {
            Ok(verdict) => verdict,
            Err(e) if cut(self, &e) => {
                return Ok(format!("{why}; power cut while checking the repaired disk: {e}"))
            }
            Err(e) => return Err(e),
        };
        self.clear_fault_state();
        Ok(format!("{why}; repaired and reopened: {verdict}"))
    }

    /// The power went out: boot on the durable image and check every invariant. With some
    /// probability the power fails again during recovery; then recovery runs once more and
    /// must land on the same state.
    pub fn crash_and_check(&mut self) -> Result<String, String> {
        self.shutdown();
        let image = self.fs.durable_image();
        // Recovery runs on a disk whose crash-time faults stay on (a crash during recovery
        // tears and drops its writes too) but whose calls do not fail: the invariants are
        // checked on a healthy disk. A seed with a failing disk first tries to recover on
        // it, which must end in a clean typed error or a correct recovery.
        image.set_faults(self.faults.quiet());
        let mut notes = String::new();
        // Power loss during recovery, then recovery again.
        if self.rng.random_bool(0.3) {
            let again = image.durable_image();
            again.cut_power_after(self.rng.random_range(0..4u64));
            self.fs = again;
            let _ = self.boot();
            self.shutdown();
            let image2 = self.fs.durable_image();
            image2.set_faults(self.faults.quiet());
            self.fs = image2;
        } else {
            self.fs = image;
        }
        if self.call_errors() && self.rng.random_bool(0.5) {
            let mut failing = self.faults;
            failing.fail_sync_after = None;
            self.fs.set_faults(failing);
            match self.boot() {
                Ok(()) => notes.push_str("recovered on the failing disk; "),
                Err(e) if is_typed(&e) => notes.push_str(&format!("recovery on the failing disk: {e}; ")),
                Err(e) => {
                    return Err(format!("recovery on a failing disk failed without a typed error: {e}"))
                }
            }
            self.shutdown();
            self.fs.set_faults(self.faults.quiet());
        }
        // Latent sector errors survive the crash; the checks run on repaired hardware.
        self.fs.repair();
        self.boot().map_err(|e| format!("recovery failed: {e}"))?;
        let verdict = self.check_invariants_or_quarantine(false)?;
        if self.finished.is_some() {
            return Ok(format!("{notes}{verdict}"));
        }
        // Idempotent: recover the recovered disk again; the state must not change.
        let rows = self.read_rows()?;
        self.shutdown();
        self.fs = self.fs.durable_image();
        self.boot().map_err(|e| format!("second recovery failed: {e}"))?;
        let again = self.read_rows()?;
        if again != rows {
            return Err("recovery is not idempotent: a second recovery changed the data".into());
        }
        self.clear_fault_state();
        Ok(format!("{notes}recovered {} rows{}", rows.len(), verdict))
    }

    fn read_rows(&mut self) -> Result<BTreeSet<i64>, String> {
        if self.db.is_none() {
            let db = self
                .ws()?
                .open_app(APP)
                .map_err(|e| e.to_string())?
                .open("main")
                .map_err(|e| e.to_string())?;
            self.db = Some(db);
        }
        let rows = self
            .db()?
            .query("SELECT k FROM kv ORDER BY k", &[])
            .map_err(|e| format!("read after recovery: {e}"))?;
        Ok(rows
            .rows
            .iter()
            .filter_map(|r| match r.first() {
                Some(Value::Integer(k)) => Some(*k),
                _ => None,
            })
            .collect())
    }

    /// Checks every invariant on a freshly booted workspace. `strict`: nothing crashed, so
    /// the data must be the last acknowledged state up to keys of failed operations;
    /// otherwise any state the history allows after a loss of unsynced data. A database
    /// recovery reports damaged is accepted only where a checksummed record rotted, and then
    /// it must refuse work with a typed error (quarantine); the seed ends there.
    fn check_invariants_or_quarantine(&mut self, strict: bool) -> Result<String, String> {
        let ws = self.ws()?.clone();
        let report = ws.recovery_report().clone();
        if !report.damaged.is_empty() {
            return self.quarantine(&ws, &report.damaged);
        }
        // 1. The pointer names a file that passes integrity_check.
        let db = ws.open_app(APP).map_err(|e| e.to_string())?.open("main").map_err(|e| e.to_string())?;
        let ok =
            db.query_value("PRAGMA integrity_check", &[]).map_err(|e| format!("integrity_check: {e}"))?;
        if ok != Some(Value::Text("ok".into())) {
            return Err(format!("integrity_check after recovery: {ok:?}"));
        }
        self.db = Some(db);
        // 2, 3. Acknowledged data, all-or-nothing.
        let rows = self.read_rows()?;
        if strict {
            let current = self.model.rows.clone();
            if !self.model.allows_without_crash(&rows) {
                return Err(format!(
                    "reopen: {} rows, but {} were acknowledged and nothing crashed",
                    rows.len(),
                    current.len()
                ));
            }
            self.model.rows = rows;
            self.model.barrier();
            self.model.in_flight.clear();
        } else {
            self.adopt(rows, "recovery")?;
        }
        self.model.schema = db_schema(self.db()?)?;
        // 4. Snapshots in the manifest exist with their checksums, unless their bits rotted:
        // then a restore must refuse them (the workload's restores check that).
        let key = ws.db_key(APP, "main").map_err(|e| e.to_string())?;
        let entries =
            ws.with_store(|s| s.manifest(&key).map(|m| m.snapshots.clone())).map_err(|e| e.to_string())?;
        let rotted = self.fs.rotted();
        let mut notes = String::new();
        let fs: &dyn Vfs = &self.fs;
        for s in &entries {
            let path = Path::new(ROOT).join(layout::snapshot_file(key.app, &key.db, s.id));
            match vfs::checksum_file(fs, &path) {
                Ok((crc, size)) if crc == s.crc32c && size == s.size => {}
                Ok(_) if rotted.contains(&path) => {
                    notes.push_str(&format!(", snapshot {} rotted", short(s.id)))
                }
                other => return Err(format!("snapshot {} fails its checksum: {other:?}", s.id)),
            }
        }
        // The model forgets snapshots the crash undid (not acknowledged) and keeps the rest.
        // Snapshots on disk the model never saw acknowledged have unknown content; they are
        // simply never restored by the workload.
        let on_disk: BTreeSet<Uuid> = entries.iter().map(|s| s.id).collect();
        self.model.snapshot_order.retain(|id| on_disk.contains(id));
        self.model.snapshots.retain(|id, _| on_disk.contains(id));
        // 6. Ledger equals disk; 5. one GC pass leaves exactly the reachable set.
        self.check_ledger(&ws, &key)?;
        ws.gc().map_err(|e| format!("GC after recovery: {e}"))?;
        self.check_reachable(&ws, &key)?;
        self.check_exports(&key)?;
        Ok(notes)
    }

    /// Recovery reported damage. Legitimate only where bit rot hit a record of the damaged
    /// directory (the engine refuses to guess, as DESIGN.md asks): then the database must
    /// refuse work with a typed error, and the seed ends as quarantined.
    fn quarantine(
        &mut self,
        ws: &Workspace,
        damaged: &[(PathBuf, sila_sqlite::Error)],
    ) -> Result<String, String> {
        let rotted = self.fs.rotted();
        for (dir, e) in damaged {
            let abs = Path::new(ROOT).join(dir);
            let explained = rotted.iter().any(|r| {
                r.starts_with(&abs) && rot_filter(r, false) && !r.to_string_lossy().contains("/snapshots/")
            });
            if !explained || e.code() != ErrorCode::Corrupt {
                return Err(format!(
                    "recovery reported damage no fault explains: {damaged:?} (rotted: {rotted:?})"
                ));
            }
        }
        match ws
            .open_app(APP)
            .and_then(|app| app.open("main"))
            .and_then(|db| db.query("SELECT k FROM kv", &[]))
        {
            Ok(_) => Err(format!("recovery reported damage {damaged:?}, yet the database serves reads")),
            Err(e) => {
                let verdict = format!("quarantined after bit rot in a record: {}", e.code());
                self.finished = Some(verdict.clone());
                Ok(verdict)
            }
        }
    }

    /// Checks that `rows` is a state the acknowledged history allows after a loss of
    /// unsynced data (FULL: the last acknowledged state or an unanswered operation's; NORMAL:
    /// any state since the last durable point), then makes it the model's durable state.
    fn adopt(&mut self, rows: BTreeSet<i64>, when: &str) -> Result<(), String> {
        if !self.model.allows(&rows) {
            let last = self.model.rows.len();
            let extra: Vec<i64> = rows.difference(&self.model.rows).copied().collect();
            let missing: Vec<i64> = self.model.rows.difference(&rows).copied().collect();
            return Err(format!(
                "{when}: {} rows, which is no acknowledged state (model has {last}; {} states allowed; durability {}; \
                 extra {extra:?}, missing {missing:?}, maybe {:?})",
                rows.len(),
                self.model.history.len(),
                if self.full { "FULL" } else { "NORMAL" },
                self.model.maybe
            ));
        }
        self.model.rows = rows;
        self.model.barrier();
        self.model.in_flight.clear();
        Ok(())
    }

    fn data_files(&self, dir: &Path) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (sub, prefix) in
            [(dir.to_path_buf(), String::new()), (dir.join(layout::SNAPSHOTS_DIR), "snapshots/".to_string())]
        {
            for e in self.fs.list_dir(&sub).unwrap_or_default() {
                let rel = format!("{prefix}{}", e.name);
                if e.is_dir
                    || matches!(layout::classify(&rel), FileKind::Record | FileKind::Temp | FileKind::Unknown)
                {
                    continue;
                }
                let size = self.fs.file_len(&sub.join(&e.name)).ok().flatten().unwrap_or(0);
                out.push((rel, size));
            }
        }
        out
    }

    /// After an acknowledged backup at `new`: the backup directory holds at most
    /// [`BACKUPS_KEPT`] complete backups, `new` among them, and every known backup that
    /// retention removed is older (sorts before) every one kept. The listing is what must
    /// exist from now on.
    fn settle_backups(&mut self, new: &Path) -> Result<(), String> {
        let dir = new.parent().ok_or("a backup has no directory")?.to_path_buf();
        let listed: BTreeSet<PathBuf> =
            final_files(&self.fs, &dir).into_iter().filter(|p| !is_partial(p)).collect();
        if listed.len() > BACKUPS_KEPT || !listed.contains(new) {
            return Err(format!("after a backup with keep_last {BACKUPS_KEPT} the backups are {listed:?}"));
        }
        let removed: Vec<PathBuf> = self
            .model
            .exports
            .keys()
            .filter(|p| p.parent() == Some(dir.as_path()) && !listed.contains(*p))
            .cloned()
            .collect();
        if let (Some(newest_removed), Some(oldest_kept)) = (removed.iter().max(), listed.iter().min()) {
            if newest_removed > oldest_kept {
                return Err(format!(
                    "retention removed {} but kept the older {}",
                    newest_removed.display(),
                    oldest_kept.display()
                ));
            }
        }
        for p in &removed {
            self.model.exports.remove(p);
        }
        self.model.backups_must = listed;
        Ok(())
    }

    /// Invariant 10 after recovery and GC: every acknowledged export, and every backup that
    /// must exist, is there with its rows; every file under a final name in the export and
    /// backup areas is a whole database (with its rows, if known); no temporary is left.
    fn check_exports(&self, key: &sila_sqlite::store::DbKey) -> Result<(), String> {
        let backups = Path::new(ROOT).join(layout::backups_dir(key.app, &key.db));
        for (path, (rows, gzip)) in &self.model.exports {
            let must = path.parent() != Some(backups.as_path()) || self.model.backups_must.contains(path);
            if !must && self.fs.read(path).is_none() {
                continue;
            }
            let found = export_rows(&self.fs, path, *gzip, self.seed)
                .map_err(|e| format!("acknowledged export {} after recovery: {e}", path.display()))?;
            if &found != rows {
                return Err(format!(
                    "export {} changed: {} rows, {} when made",
                    path.display(),
                    found.len(),
                    rows.len()
                ));
            }
        }
        let exports = Path::new(ROOT).join(layout::exports_dir(key.app));
        for dir in [exports, backups] {
            for path in final_files(&self.fs, &dir) {
                if is_partial(&path) {
                    return Err(format!("after GC a temporary remains: {}", path.display()));
                }
                if !self.model.exports.contains_key(&path) {
                    let gzip = path.extension().is_some_and(|e| e == "gz");
                    export_rows(&self.fs, &path, gzip, self.seed).map_err(|e| {
                        format!("{} is under a final name but not whole: {e}", path.display())
                    })?;
                }
            }
        }
        Ok(())
    }

    fn check_ledger(&self, ws: &Workspace, key: &sila_sqlite::store::DbKey) -> Result<(), String> {
        let dir = Path::new(ROOT).join(layout::db_dir(key.app, &key.db));
        let disk: u64 = self.data_files(&dir).iter().map(|(_, s)| *s).sum();
        let ledger = ws.ledger(APP).map_err(|e| e.to_string())?;
        let counted = ledger.live_bytes + ledger.snapshot_bytes + ledger.garbage_bytes;
        // The live WAL and SHM move under SQLite between the recovery scan and now, so only a
        // mismatch on another file is a violation.
        if counted != disk && ledger.in_flight_bytes == 0 {
            let files = ws.with_store(|s| s.files(key).cloned()).map_err(|e| e.to_string())?;
            let disk_files = self.data_files(&dir);
            let mismatched: Vec<String> = disk_files
                .iter()
                .filter(|(n, s)| files.get(n) != Some(s))
                .map(|(n, s)| format!("{n}: disk {s}, ledger {:?}", files.get(n)))
                .collect();
            if !mismatched.iter().all(|m| m.contains("-wal") || m.contains("-shm")) {
                return Err(format!("ledger {counted} bytes, disk {disk} bytes: {mismatched:?}"));
            }
        }
        Ok(())
    }

    fn check_reachable(&self, ws: &Workspace, key: &sila_sqlite::store::DbKey) -> Result<(), String> {
        let dir = Path::new(ROOT).join(layout::db_dir(key.app, &key.db));
        let pointer = ws.with_store(|s| s.pointer(key).map(|p| p.file)).map_err(|e| e.to_string())?;
        let snaps: BTreeSet<Uuid> = ws
            .with_store(|s| s.manifest(key).map(|m| m.snapshots.iter().map(|x| x.id).collect()))
            .map_err(|e| e.to_string())?;
        for (rel, _) in self.data_files(&dir) {
            let reachable = match layout::classify(&rel) {
                FileKind::Database(id) | FileKind::Side(id) => id == pointer,
                FileKind::Snapshot(id) => snaps.contains(&id),
                _ => true,
            };
            if !reachable {
                return Err(format!("after GC, unreachable {rel} remains"));
            }
        }
        Ok(())
    }
}

/// The files directly in `dir` on the simulated disk (none if it does not exist), sorted,
/// read through the harness's view of the disk (no IO call of the engine's kind).
fn final_files(fs: &MemFs, dir: &Path) -> Vec<PathBuf> {
    fs.files().into_keys().filter(|p| p.parent() == Some(dir)).collect()
}

fn is_partial(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| layout::partial_of(n).is_some())
}

/// Counter for the scratch files of [`export_rows`].
static SCRATCH: AtomicU64 = AtomicU64::new(0);

/// Opens the export at `path` on the simulated disk with stock SQLite (through a scratch file
/// on the real disk, gunzipped first when `gzip`) and returns its keys, after
/// `integrity_check` passes.
fn export_rows(fs: &MemFs, path: &Path, gzip: bool, seed: u64) -> Result<BTreeSet<i64>, String> {
    use std::io::Read as _;
    let bytes = fs.read(path).ok_or("missing")?;
    let plain = if gzip {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| format!("gunzip: {e}"))?;
        out
    } else {
        bytes
    };
    let n = SCRATCH.fetch_add(1, Ordering::SeqCst);
    let scratch =
        std::env::temp_dir().join(format!("sila-sim-export-{}-{seed}-{n}.sqlite", std::process::id()));
    std::fs::write(&scratch, &plain).map_err(|e| format!("scratch file: {e}"))?;
    let read = || -> rusqlite::Result<(String, BTreeSet<i64>)> {
        let conn =
            rusqlite::Connection::open_with_flags(&scratch, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        let mut stmt = conn.prepare("SELECT k FROM kv ORDER BY k")?;
        let keys =
            stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<BTreeSet<i64>>>()?;
        Ok((ok, keys))
    };
    let result = read();
    let _ = std::fs::remove_file(&scratch);
    match result {
        Ok((ok, keys)) if ok == "ok" => Ok(keys),
        Ok((ok, _)) => Err(format!("integrity_check: {ok}")),
        Err(e) => Err(format!("{} bytes do not open as the exported database: {e}", plain.len())),
    }
}

fn db_schema(db: &Database) -> Result<u64, String> {
    db.schema_version().map_err(|e| format!("schema version after recovery: {e}"))
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
        || (text.starts_with("acked [") && !text.starts_with("acked []"))
}

/// The faults that are on, for the trace.
fn describe(f: &Faults) -> String {
    let rates = [
        ("keep", f.crash_keep_bp),
        ("trash", f.crash_trash_bp),
        ("torn", f.torn_bp),
        ("drop-truncate", f.drop_truncate_bp),
        ("writeback", f.writeback_bp),
        ("read-eio", f.read_eio_bp),
        ("write-eio", f.write_eio_bp),
        ("sync-eio", f.sync_eio_bp),
        ("bad-inode", f.bad_inode_bp),
        ("latent-sector", f.latent_sector_bp),
        ("short-io", f.short_io_bp),
        ("bitrot", f.bitrot_bp),
        ("slow-io", f.slow_io_bp),
    ];
    let mut out: Vec<String> =
        rates.iter().filter(|(_, bp)| *bp > 0).map(|(name, bp)| format!("{name}={bp}bp")).collect();
    if f.crash_prefix_only {
        out.push("prefix-only".into());
    }
    if let Some(cap) = f.capacity_bytes {
        out.push(format!("capacity={cap}B"));
    }
    if let Some(suffix) = f.fail_sync_suffix {
        out.push(format!("failed-syncs-only-on=*{suffix}"));
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(" ")
    }
}

fn short(id: Uuid) -> String {
    id.simple().to_string().chars().skip(20).collect()
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs one seed: setup, then `ops_max` operations; whenever the power goes out, crash,
/// recover and check. Returns the outcome with its trace.
pub fn run_seed(seed: u64, profile: Profile, ops_max: usize) -> Outcome {
    let mut ops = Vec::new();
    let mut violation = None;
    let mut trace = Vec::new();
    match World::new(seed) {
        Err(e) => violation = Some(Violation { op_index: 0, what: format!("harness: {e}") }),
        Ok(mut world) => {
            world.checkpoint_every_commit = profile == Profile::SqliteSync;
            if let Err(e) = world.setup() {
                violation = Some(Violation { op_index: 0, what: format!("setup failed: {e}") });
            }
            let mut faults = profile.swarm(seed);
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
            let mut next_key = 0i64;
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
                if world.fs.is_dead() {
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
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    trace.hash(&mut h);
    Outcome { seed, profile, ops, trace, trace_hash: h.finish(), violation }
}
