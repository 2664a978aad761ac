//! The sans-IO store: what exists in the workspace, what is referenced, who may delete what.
//!
//! The store holds the engine's view of every app and database — pointer records, snapshot
//! manifests, the files on disk and their sizes, leases, operations in flight and the quota
//! ledger — and turns requests into [`Plan`]s of IO steps. It performs no IO, reads no
//! clock and draws no randomness: times and UUIDs are arguments.
//!
//! # Methods, by role
//!
//! * **Inputs**: [`Store::recover`] (a [`Scan`] of the disk), [`Store::set_file_size`]
//!   (a live database grew), [`Store::acquire_lease`] / [`Store::release_lease`].
//! * **Plans**: `begin_*` reserve quota and mark files in flight *before any IO*;
//!   `plan_*` return the [`Plan`] to run.
//! * **Completions**: after the driver ran every step of a plan, [`Store::complete`] applies
//!   its effect; after a failure, [`Store::abort`] (failure before the commit step, not a
//!   sync) or [`Store::poison`] (a sync failed, or the outcome is unknown).
//! * **Getters**: pointers, manifests, ledgers, garbage sets.
//!
//! # Drive loop
//!
//! 1. Call a `begin_*` / `plan_*` method. An error means nothing happened.
//! 2. Run the plan's steps in order with the driver.
//! 3. All ran: call `complete(op)`; only then acknowledge the caller.
//!    A step failed: `abort(op)` if [`Plan::failure_is_after_commit`] is false and the step
//!    is not a sync; otherwise `poison(db)` — the database refuses work until recovery.
//!
//! # Invariants
//!
//! * A file is *reachable* while the pointer, a manifest entry, a lease or an operation in
//!   flight names it. [`Store::plan_gc`] only removes files that are not reachable, and a
//!   file stops being reachable only in `complete` — after the record that unreferences it
//!   was renamed into place *and* its directory synced. So GC never runs ahead of durability.
//! * One operation that rewrites a record runs per database at a time (others get `Busy`).
//! * Usage per app = bytes of every tracked file + reservations of operations in flight;
//!   a `begin_*` that would take usage over the quota is refused with `QuotaExceeded`.

pub mod ids;
pub mod layout;
mod lifecycle;
pub mod plan;
pub mod record;

use crate::manifest::Manifest;
use crate::names::{AppId, DbName};
use crate::sabotage::{self, Sabotage};
use crate::{Error, ErrorCode, QuotaDetail, Result};
use layout::FileKind;
use lifecycle::Retired;
pub use plan::{Plan, Step};
use record::{AppRecord, ManifestRecord, PointerRecord, SnapshotEntry};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use uuid::Uuid;

/// Identifies one operation in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Identifies one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub u64);

/// Names one database of one app.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DbKey {
    /// The app's directory UUID.
    pub app: Uuid,
    /// The database.
    pub db: DbName,
}

/// The state of one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Usable.
    Ok,
    /// Its records could not be verified at recovery; every request gets this error.
    Damaged(Error),
    /// A sync failed or an operation's outcome is unknown; refuses work until recovery.
    Poisoned(String),
}

/// Quota usage of one app, by class, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ledger {
    /// Live database files and their WAL/SHM.
    pub live_bytes: u64,
    /// Of `live_bytes`, the side files (WAL, SHM, journal).
    pub side_bytes: u64,
    /// Snapshot files listed in manifests.
    pub snapshot_bytes: u64,
    /// Reserved for operations in flight, plus files they already wrote.
    pub in_flight_bytes: u64,
    /// Unreferenced files waiting for GC (including leased old versions).
    pub garbage_bytes: u64,
    /// Of `garbage_bytes`, what GC may remove now (not leased, not being removed).
    pub collectable_bytes: u64,
    /// The app's storage quota.
    pub quota_bytes: u64,
}

impl Ledger {
    /// Everything counted against the quota.
    pub fn used_bytes(&self) -> u64 {
        self.live_bytes + self.snapshot_bytes + self.in_flight_bytes + self.garbage_bytes
    }

    /// As JSON, the one shape the CLI and the C ABI print: every class, `used_bytes` and
    /// `quota_bytes`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "live_bytes": self.live_bytes,
            "side_bytes": self.side_bytes,
            "snapshot_bytes": self.snapshot_bytes,
            "in_flight_bytes": self.in_flight_bytes,
            "garbage_bytes": self.garbage_bytes,
            "collectable_bytes": self.collectable_bytes,
            "used_bytes": self.used_bytes(),
            "quota_bytes": self.quota_bytes,
        })
    }
}

/// Work in progress the store holds (see [`Store::held`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Operations begun and not yet completed, aborted or failed.
    pub ops: usize,
    /// Leases on files (readers of an old version).
    pub leases: usize,
    /// Databases an operation has marked busy.
    pub busy: Vec<DbKey>,
}

/// What the driver read from disk for recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Every app directory under `apps/`.
    pub apps: Vec<AppScan>,
}

/// One app directory as found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppScan {
    /// The directory's name (a UUID if it is ours).
    pub dir_name: String,
    /// Every file below the app directory: path relative to it, size, and content for files
    /// named `app.json`, `current` or `manifest` (read in full; they are small).
    pub files: Vec<ScannedFile>,
    /// Every directory below the app directory, relative to it.
    pub dirs: Vec<String>,
}

/// A file found by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedFile {
    /// Path relative to the app directory, with `/` separators.
    pub rel: String,
    /// Size in bytes.
    pub size: u64,
    /// Content, for record files.
    pub content: Option<Vec<u8>>,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Apps loaded.
    pub apps: usize,
    /// Databases loaded and usable.
    pub databases_ok: usize,
    /// Databases or apps whose records failed verification: path and the error.
    pub damaged: Vec<(PathBuf, Error)>,
    /// Temp files the recovery plan removes.
    pub temps_removed: Vec<PathBuf>,
    /// Directories of registrations that never committed, which the plan removes.
    pub incomplete_apps_removed: Vec<PathBuf>,
    /// Unreferenced database and snapshot files, left for GC.
    pub orphans: Vec<PathBuf>,
    /// Files the engine does not recognise; never touched.
    pub unknown: Vec<PathBuf>,
    /// Directories of removed databases and unregistered apps, left for GC.
    pub retired: Vec<PathBuf>,
}

/// A snapshot retention policy. Both limits apply when both are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most this many snapshots (the newest).
    pub keep_last: Option<usize>,
    /// Drop snapshots older than this many milliseconds.
    pub max_age_ms: Option<u64>,
}

/// What a GC plan will free ([`crate::Workspace::gc`] adds the export and backup
/// temporaries it removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSummary {
    /// Files the plan removes (workspace-relative).
    pub files: Vec<PathBuf>,
    /// Bytes they hold.
    pub bytes: u64,
    /// Garbage kept because a lease or operation still references it.
    pub kept_leased: Vec<PathBuf>,
}

/// Facts about a new database file the caller wrote, for [`Store::plan_flip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVersion {
    /// Its size in bytes.
    pub size: u64,
    /// Its schema version.
    pub schema: u64,
    /// Why it exists.
    pub label: String,
    /// Unix milliseconds now.
    pub now_ms: u64,
}

/// Facts about a snapshot file the caller wrote, for [`Store::plan_add_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnapshot {
    /// Its size in bytes.
    pub size: u64,
    /// CRC-32C of its content.
    pub crc32c: u32,
    /// Its schema version.
    pub schema: u64,
    /// The caller's label.
    pub label: String,
    /// Unix milliseconds now.
    pub now_ms: u64,
}

#[derive(Debug, Clone)]
struct DbState {
    health: Health,
    pointer: PointerRecord,
    manifest: ManifestRecord,
    /// Files under the db directory, relative to it, with their sizes.
    files: BTreeMap<String, u64>,
    /// The operation rewriting a record of this database, if any.
    busy: Option<OpId>,
    max_size_bytes: u64,
    read_only: bool,
}

#[derive(Debug, Clone)]
struct AppState {
    record: AppRecord,
    dbs: BTreeMap<DbName, DbState>,
}

#[derive(Debug, Clone)]
enum OpKind {
    Register {
        record: AppRecord,
        dbs: Vec<(DbName, Uuid)>,
    },
    UpdateApp {
        record: AppRecord,
        added: Vec<(DbName, Uuid)>,
        removed: Vec<DbName>,
    },
    Unregister {
        app: Uuid,
    },
    /// Syncs only (see `plan_confirm_app`): no state changes.
    Confirm,
    NewFile {
        key: DbKey,
        file: Uuid,
        reserved: u64,
        pointer: Option<PointerRecord>,
    },
    AddSnapshot {
        key: DbKey,
        id: Uuid,
        reserved: u64,
        manifest: Option<ManifestRecord>,
    },
    DropSnapshots {
        key: DbKey,
        manifest: ManifestRecord,
    },
    Gc {
        removals: Vec<(DbKey, String)>,
        retired: Vec<PathBuf>,
    },
    Recovery,
}

/// The store. See the module docs for the drive loop and invariants.
#[derive(Debug, Clone, Default)]
pub struct Store {
    apps: BTreeMap<Uuid, AppState>,
    by_id: BTreeMap<AppId, Uuid>,
    ops: BTreeMap<OpId, OpKind>,
    leases: BTreeMap<LeaseId, (DbKey, Uuid)>,
    gc_pending: BTreeSet<(DbKey, String)>,
    /// Directories no record lists any more, by root (see [`lifecycle`]).
    retired: BTreeMap<PathBuf, Retired>,
    /// Retired directories a GC plan is removing.
    retired_pending: BTreeSet<PathBuf>,
    next_id: u64,
}

fn side_names(file: Uuid) -> Vec<String> {
    let base = layout::db_file_name(file);
    layout::SIDE_SUFFIXES.iter().map(|s| format!("{base}{s}")).collect()
}

impl Store {
    /// An empty store (a new workspace).
    pub fn new() -> Store {
        Store::default()
    }

    fn next_op(&mut self, kind: OpKind) -> OpId {
        self.next_id += 1;
        let id = OpId(self.next_id);
        self.ops.insert(id, kind);
        id
    }

    // ----- getters -----------------------------------------------------------------------

    /// What the store holds for work in progress: operations in flight, leases, and the
    /// databases marked busy by an operation. All zero and empty when nothing runs: a failed
    /// operation that left one behind leaked it.
    pub fn held(&self) -> Held {
        let busy = self
            .apps
            .iter()
            .flat_map(|(app, a)| {
                a.dbs
                    .iter()
                    .filter(|(_, d)| d.busy.is_some())
                    .map(|(db, _)| DbKey { app: *app, db: db.clone() })
            })
            .collect();
        Held { ops: self.ops.len(), leases: self.leases.len(), busy }
    }

    /// The app directory UUID for an app id.
    pub fn app_uuid(&self, app_id: &AppId) -> Option<Uuid> {
        self.by_id.get(app_id).copied()
    }

    /// The app record.
    pub fn app(&self, app: Uuid) -> Option<&AppRecord> {
        self.apps.get(&app).map(|a| &a.record)
    }

    /// Every registered app, by app id.
    pub fn apps(&self) -> Vec<&AppRecord> {
        self.by_id.values().filter_map(|u| self.apps.get(u)).map(|a| &a.record).collect()
    }

    /// Every database key.
    pub fn db_keys(&self) -> Vec<DbKey> {
        let mut out = Vec::new();
        for (app, state) in &self.apps {
            for db in state.dbs.keys() {
                out.push(DbKey { app: *app, db: db.clone() });
            }
        }
        out
    }

    fn db(&self, key: &DbKey) -> Result<&DbState> {
        self.apps.get(&key.app).and_then(|a| a.dbs.get(&key.db)).ok_or_else(|| {
            Error::new(
                ErrorCode::NotFound,
                format!("database {:?} of app {} is not registered", key.db.as_str(), key.app),
            )
        })
    }

    fn db_mut(&mut self, key: &DbKey) -> Result<&mut DbState> {
        self.apps.get_mut(&key.app).and_then(|a| a.dbs.get_mut(&key.db)).ok_or_else(|| {
            Error::new(
                ErrorCode::NotFound,
                format!("database {:?} of app {} is not registered", key.db.as_str(), key.app),
            )
        })
    }

    fn usable(&self, key: &DbKey) -> Result<&DbState> {
        let db = self.db(key)?;
        match &db.health {
            Health::Ok => Ok(db),
            Health::Damaged(e) => Err(e.clone()),
            Health::Poisoned(why) => Err(Error::new(
                ErrorCode::Poisoned,
                format!(
                    "database {:?} is poisoned ({why}); reopen the workspace to recover it",
                    key.db.as_str()
                ),
            )),
        }
    }

    /// The health of a database.
    pub fn health(&self, key: &DbKey) -> Result<Health> {
        Ok(self.db(key)?.health.clone())
    }

    /// Whether the database is read-only for its app.
    pub fn read_only(&self, key: &DbKey) -> Result<bool> {
        Ok(self.db(key)?.read_only)
    }

    /// The most bytes the live database may hold.
    pub fn max_size_bytes(&self, key: &DbKey) -> Result<u64> {
        Ok(self.db(key)?.max_size_bytes)
    }

    /// The pointer record of a usable database.
    pub fn pointer(&self, key: &DbKey) -> Result<&PointerRecord> {
        Ok(&self.usable(key)?.pointer)
    }

    /// The snapshot manifest of a usable database.
    pub fn manifest(&self, key: &DbKey) -> Result<&ManifestRecord> {
        Ok(&self.usable(key)?.manifest)
    }

    /// The files the store believes are in a db directory (relative to it) with sizes.
    pub fn files(&self, key: &DbKey) -> Result<&BTreeMap<String, u64>> {
        Ok(&self.db(key)?.files)
    }

    /// The workspace-relative path of the live database file.
    pub fn current_file_path(&self, key: &DbKey) -> Result<PathBuf> {
        let pointer = self.pointer(key)?;
        Ok(layout::db_file(key.app, &key.db, pointer.file))
    }

    fn in_flight_files(&self, key: &DbKey) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for op in self.ops.values() {
            match op {
                OpKind::NewFile { key: k, file, .. } if k == key => {
                    out.insert(layout::db_file_name(*file));
                    out.extend(side_names(*file));
                }
                OpKind::AddSnapshot { key: k, id, .. } if k == key => {
                    out.insert(layout::snapshot_rel(*id));
                }
                _ => {}
            }
        }
        out
    }

    fn leased_files(&self, key: &DbKey) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (k, file) in self.leases.values() {
            if k == key {
                out.insert(layout::db_file_name(*file));
                out.extend(side_names(*file));
                out.insert(layout::snapshot_rel(*file));
            }
        }
        out
    }

    /// Files of a database that nothing references (pointer, manifest): garbage, whether or
    /// not a lease still holds them. Relative to the db directory.
    fn unreferenced(&self, key: &DbKey, db: &DbState) -> Vec<String> {
        let in_flight = self.in_flight_files(key);
        let mut out = Vec::new();
        for name in db.files.keys() {
            let referenced = match layout::classify(name) {
                FileKind::Record | FileKind::Temp | FileKind::Unknown => true,
                FileKind::Database(id) | FileKind::Side(id) => id == db.pointer.file,
                FileKind::Snapshot(id) => {
                    !sabotage::active(Sabotage::GcIgnoresSnapshots)
                        && db.manifest.snapshots.iter().any(|s| s.id == id)
                }
            };
            if !referenced && !in_flight.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }

    /// The quota ledger of an app.
    pub fn ledger(&self, app: Uuid) -> Result<Ledger> {
        self.ledger_where(app, |_| true)
    }

    /// The quota ledger of an app over the databases `include` accepts.
    fn ledger_where(&self, app: Uuid, include: impl Fn(&DbName) -> bool) -> Result<Ledger> {
        let state = self
            .apps
            .get(&app)
            .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("app {app} is not registered")))?;
        let mut ledger =
            Ledger { quota_bytes: state.record.manifest.storage_quota_bytes(), ..Ledger::default() };
        for (name, db) in state.dbs.iter().filter(|(name, _)| include(name)) {
            let key = DbKey { app, db: name.clone() };
            let in_flight = self.in_flight_files(&key);
            let garbage: BTreeSet<String> = self.unreferenced(&key, db).into_iter().collect();
            let collectable: BTreeSet<String> =
                self.collectable(&key).unwrap_or_default().into_iter().collect();
            for (file, size) in &db.files {
                if garbage.contains(file) {
                    ledger.garbage_bytes += size;
                    if collectable.contains(file) {
                        ledger.collectable_bytes += size;
                    }
                } else if in_flight.contains(file) {
                    ledger.in_flight_bytes += size;
                } else {
                    match layout::classify(file) {
                        FileKind::Database(_) => ledger.live_bytes += size,
                        FileKind::Side(_) => {
                            ledger.live_bytes += size;
                            ledger.side_bytes += size;
                        }
                        FileKind::Snapshot(_) => ledger.snapshot_bytes += size,
                        // Records and temp files are metadata of a few hundred bytes; the
                        // ledger counts data files only (documented in docs/design.md).
                        FileKind::Record | FileKind::Temp | FileKind::Unknown => {}
                    }
                }
            }
        }
        for op in self.ops.values() {
            match op {
                OpKind::NewFile { key, reserved, .. } | OpKind::AddSnapshot { key, reserved, .. }
                    if key.app == app =>
                {
                    ledger.in_flight_bytes += reserved;
                }
                _ => {}
            }
        }
        Ok(ledger)
    }

    /// Garbage of a database that GC may remove now (unreferenced, unleased, not being
    /// removed by another GC plan), relative to the db directory.
    pub fn collectable(&self, key: &DbKey) -> Result<Vec<String>> {
        let db = self.db(key)?;
        let leased = self.leased_files(key);
        Ok(self
            .unreferenced(key, db)
            .into_iter()
            .filter(|f| !leased.contains(f) && !self.gc_pending.contains(&(key.clone(), f.clone())))
            .collect())
    }

    // ----- inputs ------------------------------------------------------------------------

    /// Records the current size of a file of a database (a live database or its WAL grew).
    pub fn set_file_size(&mut self, key: &DbKey, rel: &str, size: u64) -> Result<()> {
        let db = self.db_mut(key)?;
        if layout::classify(rel) == FileKind::Unknown {
            return Err(Error::internal(format!("set_file_size of unrecognised file {rel:?}")));
        }
        db.files.insert(rel.to_string(), size);
        Ok(())
    }

    /// Records that a side file (WAL, SHM) vanished, for example after a checkpoint.
    pub fn forget_file(&mut self, key: &DbKey, rel: &str) -> Result<()> {
        self.db_mut(key)?.files.remove(rel);
        Ok(())
    }

    /// Takes a lease on a file (a database or snapshot UUID) of a database: GC keeps it
    /// until the lease is released, even once nothing else references it.
    pub fn acquire_lease(&mut self, key: &DbKey, file: Uuid) -> Result<LeaseId> {
        self.db(key)?;
        self.next_id += 1;
        let id = LeaseId(self.next_id);
        self.leases.insert(id, (key.clone(), file));
        Ok(id)
    }

    /// Releases a lease; returns the database and file it was on (`None` when it was
    /// released already: releasing twice is harmless).
    pub fn release_lease(&mut self, lease: LeaseId) -> Option<(DbKey, Uuid)> {
        self.leases.remove(&lease)
    }

    /// Marks a database poisoned: every later request is refused until recovery.
    pub fn poison(&mut self, key: &DbKey, why: &str) {
        if let Ok(db) = self.db_mut(key) {
            db.health = Health::Poisoned(why.to_string());
        }
    }

    // ----- flip --------------------------------------------------------------------------

    /// Reserves quota for a new version of a database and protects its file from GC, before
    /// the caller writes `<file>.sqlite` (see [`layout::db_file`]). Refused with
    /// `QuotaExceeded` (nothing reserved) if `expected_bytes` exceeds the database's size
    /// limit or the app's quota.
    pub fn begin_new_file(&mut self, key: &DbKey, file: Uuid, expected_bytes: u64) -> Result<OpId> {
        let db = self.usable(key)?;
        if let Some(op) = db.busy {
            return Err(busy(key, op));
        }
        if expected_bytes > db.max_size_bytes {
            return Err(Error::quota_exceeded(QuotaDetail {
                usage: None,
                limit_name: format!("maxSizeMB of database {:?}", key.db.as_str()),
                limit_bytes: db.max_size_bytes,
                used_bytes: 0,
                requested_bytes: expected_bytes,
            }));
        }
        self.check_quota(key.app, expected_bytes)?;
        let op =
            self.next_op(OpKind::NewFile { key: key.clone(), file, reserved: expected_bytes, pointer: None });
        self.db_mut(key)?.busy = Some(op);
        Ok(op)
    }

    fn check_quota(&self, app: Uuid, requested: u64) -> Result<()> {
        let ledger = self.ledger(app)?;
        if ledger.used_bytes().saturating_add(requested) > ledger.quota_bytes {
            return Err(Error::quota_exceeded(QuotaDetail {
                limit_name: "app storage quota (storage_factor x sum of maxSizeMB)".into(),
                limit_bytes: ledger.quota_bytes,
                used_bytes: ledger.used_bytes(),
                requested_bytes: requested,
                usage: Some(ledger),
            }));
        }
        Ok(())
    }

    /// Plans the flip to the file reserved by `begin_new_file`, which the caller has written
    /// (not necessarily synced). Steps, in DESIGN.md's order: sync the new file, sync its
    /// directory, write the pointer to a temp name, sync it, rename it over `current`
    /// (commit), sync the directory.
    pub fn plan_flip(&mut self, op: OpId, version: NewVersion) -> Result<Plan> {
        record::validate_label(&version.label)?;
        let Some(OpKind::NewFile { key, file, .. }) = self.ops.get(&op).cloned() else {
            return Err(Error::internal(format!("plan_flip of unknown operation {op:?}")));
        };
        let db = self.usable(&key)?;
        if version.size > db.max_size_bytes {
            return Err(Error::quota_exceeded(QuotaDetail {
                usage: None,
                limit_name: format!("maxSizeMB of database {:?}", key.db.as_str()),
                limit_bytes: db.max_size_bytes,
                used_bytes: 0,
                requested_bytes: version.size,
            }));
        }
        let pointer = PointerRecord {
            generation: db.pointer.generation + 1,
            file,
            size: version.size,
            schema: version.schema,
            created_ms: version.now_ms,
            label: version.label,
        };
        let dir = layout::db_dir(key.app, &key.db);
        let tmp = layout::current_tmp(key.app, &key.db);
        let rename = Step::Rename { from: tmp.clone(), to: layout::current(key.app, &key.db) };
        let mut steps = vec![
            Step::SyncFile(layout::db_file(key.app, &key.db, file)),
            Step::SyncDir(dir.clone()),
            Step::WriteFile { path: tmp.clone(), bytes: pointer.encode() },
            Step::SyncFile(tmp.clone()),
            rename.clone(),
            Step::SyncDir(dir.clone()),
        ];
        let mut commit_step = 4;
        if sabotage::active(Sabotage::SkipPointerSyncDir) {
            steps.pop();
        }
        if sabotage::active(Sabotage::FlipBeforeSync) {
            steps = vec![
                Step::WriteFile { path: tmp.clone(), bytes: pointer.encode() },
                Step::SyncFile(tmp),
                rename,
                Step::SyncDir(dir),
                Step::SyncFile(layout::db_file(key.app, &key.db, file)),
            ];
            commit_step = 2;
        }
        if let Some(OpKind::NewFile { pointer: p, .. }) = self.ops.get_mut(&op) {
            *p = Some(pointer);
        }
        if let Ok(db) = self.db_mut(&key) {
            db.files.insert(layout::db_file_name(file), version.size);
        }
        Ok(Plan { op, steps, commit_step: Some(commit_step) })
    }

    // ----- snapshots ---------------------------------------------------------------------

    /// Reserves quota for a snapshot and protects its file from GC, before the caller writes
    /// `snapshots/<id>.sqlite`.
    pub fn begin_snapshot(&mut self, key: &DbKey, id: Uuid, expected_bytes: u64) -> Result<OpId> {
        let db = self.usable(key)?;
        if let Some(op) = db.busy {
            return Err(busy(key, op));
        }
        self.check_room_for_snapshot(key, expected_bytes)?;
        let op = self.next_op(OpKind::AddSnapshot {
            key: key.clone(),
            id,
            reserved: expected_bytes,
            manifest: None,
        });
        self.db_mut(key)?.busy = Some(op);
        Ok(op)
    }

    /// Whether one more snapshot of `expected_bytes` fits: `QuotaExceeded` when the manifest
    /// lists [`record::SNAPSHOTS_MAX`] already or the app's quota would be passed. Changes
    /// nothing (a restore asks before it flips, since its undo snapshot comes after).
    pub fn check_room_for_snapshot(&self, key: &DbKey, expected_bytes: u64) -> Result<()> {
        let db = self.usable(key)?;
        if db.manifest.snapshots.len() >= record::SNAPSHOTS_MAX {
            return Err(Error::quota_exceeded(QuotaDetail {
                usage: None,
                limit_name: "SNAPSHOTS_MAX snapshots per database".into(),
                limit_bytes: record::SNAPSHOTS_MAX as u64,
                used_bytes: db.manifest.snapshots.len() as u64,
                requested_bytes: 1,
            }));
        }
        self.check_quota(key.app, expected_bytes)
    }

    /// Plans the manifest update that lists a written snapshot: sync the snapshot file, sync
    /// the snapshot directory, write the manifest to a temp name, sync, rename (commit),
    /// sync the db directory.
    pub fn plan_add_snapshot(&mut self, op: OpId, snap: NewSnapshot) -> Result<Plan> {
        record::validate_label(&snap.label)?;
        let Some(OpKind::AddSnapshot { key, id, .. }) = self.ops.get(&op).cloned() else {
            return Err(Error::internal(format!("plan_add_snapshot of unknown operation {op:?}")));
        };
        let db = self.usable(&key)?;
        let mut manifest = db.manifest.clone();
        manifest.generation += 1;
        manifest.snapshots.push(SnapshotEntry {
            id,
            size: snap.size,
            crc32c: snap.crc32c,
            schema: snap.schema,
            created_ms: snap.now_ms,
            label: snap.label,
        });
        let mut steps = vec![
            Step::SyncFile(layout::snapshot_file(key.app, &key.db, id)),
            Step::SyncDir(layout::snapshots_dir(key.app, &key.db)),
        ];
        let commit = steps.len() + 2;
        steps.extend(manifest_steps(&key, &manifest));
        if sabotage::active(Sabotage::SnapshotManifestNotDurable) {
            // Broken on purpose: the rename of the manifest is never made durable.
            steps.pop();
        }
        if let Some(OpKind::AddSnapshot { manifest: m, .. }) = self.ops.get_mut(&op) {
            *m = Some(manifest);
        }
        if let Ok(db) = self.db_mut(&key) {
            db.files.insert(layout::snapshot_rel(id), snap.size);
        }
        Ok(Plan { op, steps, commit_step: Some(commit) })
    }

    /// Plans removing snapshots from the manifest. Their files become garbage once the plan
    /// completes; GC deletes them later. Unknown ids are `NotFound` and nothing changes.
    pub fn plan_drop_snapshots(&mut self, key: &DbKey, ids: &[Uuid]) -> Result<Plan> {
        let db = self.usable(key)?;
        if let Some(op) = db.busy {
            return Err(busy(key, op));
        }
        for id in ids {
            if !db.manifest.snapshots.iter().any(|s| s.id == *id) {
                return Err(Error::new(
                    ErrorCode::NotFound,
                    format!("snapshot {id} is not in the manifest of database {:?}", key.db.as_str()),
                ));
            }
        }
        let mut manifest = db.manifest.clone();
        manifest.generation += 1;
        manifest.snapshots.retain(|s| !ids.contains(&s.id));
        let steps = manifest_steps(key, &manifest);
        let op = self.next_op(OpKind::DropSnapshots { key: key.clone(), manifest });
        self.db_mut(key)?.busy = Some(op);
        Ok(Plan { op, steps, commit_step: Some(2) })
    }

    /// The snapshots a retention policy drops now, oldest first.
    pub fn retention_victims(&self, key: &DbKey, policy: Retention, now_ms: u64) -> Result<Vec<Uuid>> {
        let db = self.usable(key)?;
        let snaps = &db.manifest.snapshots;
        let mut victims = BTreeSet::new();
        if let Some(keep) = policy.keep_last {
            let excess = snaps.len().saturating_sub(keep);
            victims.extend(snaps.iter().take(excess).map(|s| s.id));
        }
        if let Some(age) = policy.max_age_ms {
            victims.extend(snaps.iter().filter(|s| now_ms.saturating_sub(s.created_ms) > age).map(|s| s.id));
        }
        Ok(snaps.iter().map(|s| s.id).filter(|id| victims.contains(id)).collect())
    }

    /// Plans applying a retention policy: a manifest rewrite dropping the victims, or `None`
    /// when the policy drops nothing.
    pub fn plan_retention(&mut self, key: &DbKey, policy: Retention, now_ms: u64) -> Result<Option<Plan>> {
        let victims = self.retention_victims(key, policy, now_ms)?;
        if victims.is_empty() {
            return Ok(None);
        }
        self.plan_drop_snapshots(key, &victims).map(Some)
    }

    // ----- GC ----------------------------------------------------------------------------

    /// Plans removing every collectable file of every database, then syncing the directories
    /// touched. Files stay accounted until `complete`.
    pub fn plan_gc(&mut self) -> (Plan, GcSummary) {
        let mut summary = GcSummary::default();
        let mut removals = Vec::new();
        let mut steps = Vec::new();
        let mut dirs = BTreeSet::new();
        for key in self.db_keys() {
            let Ok(db) = self.db(&key) else { continue };
            if db.health != Health::Ok {
                // A poisoned or damaged database's view of its files is not trusted.
                continue;
            }
            let leased = self.leased_files(&key);
            for name in self.unreferenced(&key, db) {
                let path = layout::db_dir(key.app, &key.db).join(&name);
                if leased.contains(&name) {
                    summary.kept_leased.push(path);
                    continue;
                }
                if self.gc_pending.contains(&(key.clone(), name.clone())) {
                    continue;
                }
                summary.bytes += db.files.get(&name).copied().unwrap_or(0);
                if let Some(parent) = path.parent() {
                    dirs.insert(parent.to_path_buf());
                }
                steps.push(Step::RemoveFile(path.clone()));
                summary.files.push(path);
                removals.push((key.clone(), name));
            }
        }
        steps.extend(dirs.into_iter().map(Step::SyncDir));
        for r in &removals {
            self.gc_pending.insert(r.clone());
        }
        let retired = self.plan_gc_retired(&mut summary, &mut steps);
        let op = self.next_op(OpKind::Gc { removals, retired });
        (Plan { op, steps, commit_step: None }, summary)
    }

    // ----- completion --------------------------------------------------------------------

    /// Applies a plan whose every step ran. Call it only then.
    pub fn complete(&mut self, op: OpId) -> Result<()> {
        let kind =
            self.ops.remove(&op).ok_or_else(|| Error::internal(format!("complete of unknown {op:?}")))?;
        match kind {
            OpKind::Register { record, dbs } => {
                let states = dbs
                    .into_iter()
                    .map(|(name, file)| {
                        let db = lifecycle::new_db_state(record.manifest.db(&name), file, record.created_ms);
                        (name, db)
                    })
                    .collect();
                self.by_id.insert(record.app_id.clone(), record.app_uuid);
                self.apps.insert(record.app_uuid, AppState { record, dbs: states });
            }
            OpKind::UpdateApp { record, added, removed } => self.complete_update(record, added, removed),
            OpKind::Unregister { app } => self.complete_unregister(app),
            OpKind::NewFile { key, pointer, .. } => {
                let pointer =
                    pointer.ok_or_else(|| Error::internal("complete of a flip that was never planned"))?;
                let db = self.db_mut(&key)?;
                db.pointer = pointer;
                db.busy = None;
            }
            OpKind::AddSnapshot { key, manifest, .. } => {
                let manifest = manifest
                    .ok_or_else(|| Error::internal("complete of a snapshot that was never planned"))?;
                let db = self.db_mut(&key)?;
                db.manifest = manifest;
                db.busy = None;
            }
            OpKind::DropSnapshots { key, manifest } => {
                let db = self.db_mut(&key)?;
                db.manifest = manifest;
                db.busy = None;
            }
            OpKind::Gc { removals, retired } => {
                for (key, name) in removals {
                    self.gc_pending.remove(&(key.clone(), name.clone()));
                    if let Ok(db) = self.db_mut(&key) {
                        db.files.remove(&name);
                    }
                }
                for root in retired {
                    self.retired_pending.remove(&root);
                    self.retired.remove(&root);
                }
            }
            OpKind::Recovery | OpKind::Confirm => {}
        }
        Ok(())
    }

    /// Abandons an operation whose plan failed before its commit step (and not at a sync):
    /// releases its reservation and returns a best-effort cleanup plan for files it wrote.
    /// The cleanup plan's op needs no completion.
    pub fn abort(&mut self, op: OpId) -> Plan {
        let kind = self.ops.remove(&op);
        let mut steps = Vec::new();
        match kind {
            Some(OpKind::NewFile { key, file, .. }) => {
                let dir = layout::db_dir(key.app, &key.db);
                steps.push(Step::RemoveFile(layout::current_tmp(key.app, &key.db)));
                steps.push(Step::RemoveFile(layout::db_file(key.app, &key.db, file)));
                for side in side_names(file) {
                    steps.push(Step::RemoveFile(dir.join(side)));
                }
                steps.push(Step::SyncDir(dir));
                if let Ok(db) = self.db_mut(&key) {
                    db.busy = None;
                    db.files.remove(&layout::db_file_name(file));
                    for side in side_names(file) {
                        db.files.remove(&side);
                    }
                }
            }
            Some(OpKind::AddSnapshot { key, id, .. }) => {
                steps.push(Step::RemoveFile(layout::manifest_tmp(key.app, &key.db)));
                steps.push(Step::RemoveFile(layout::snapshot_file(key.app, &key.db, id)));
                steps.push(Step::SyncDir(layout::snapshots_dir(key.app, &key.db)));
                if let Ok(db) = self.db_mut(&key) {
                    db.busy = None;
                    db.files.remove(&layout::snapshot_rel(id));
                }
            }
            Some(OpKind::DropSnapshots { key, .. }) => {
                steps.push(Step::RemoveFile(layout::manifest_tmp(key.app, &key.db)));
                if let Ok(db) = self.db_mut(&key) {
                    db.busy = None;
                }
            }
            Some(OpKind::Gc { removals, retired }) => {
                // Files a failed GC did not remove stay garbage; the next pass retries them.
                for r in removals {
                    self.gc_pending.remove(&r);
                }
                for root in retired {
                    self.retired_pending.remove(&root);
                }
            }
            Some(OpKind::UpdateApp { record, added, .. }) => {
                steps.extend(self.abort_update(record.app_uuid, &added));
            }
            Some(OpKind::Unregister { app }) => self.clear_app_busy(app),
            Some(OpKind::Register { .. }) | Some(OpKind::Recovery) | Some(OpKind::Confirm) | None => {}
        }
        self.next_id += 1;
        Plan { op: OpId(self.next_id), steps, commit_step: None }
    }

    /// Handles a failed plan: with `poison` false (failure before the commit step, not at a
    /// sync) this is [`Store::abort`]; with `poison` true every database the operation
    /// touched is poisoned, the operation is dropped without cleanup (recovery decides what
    /// is on disk), and the returned plan is empty.
    pub fn fail(&mut self, op: OpId, poison: bool, why: &str) -> Plan {
        if !poison {
            return self.abort(op);
        }
        let keys: Vec<DbKey> = match self.ops.remove(&op) {
            Some(OpKind::NewFile { key, .. })
            | Some(OpKind::AddSnapshot { key, .. })
            | Some(OpKind::DropSnapshots { key, .. }) => vec![key],
            Some(OpKind::Gc { removals, retired }) => {
                for r in &removals {
                    self.gc_pending.remove(r);
                }
                for root in &retired {
                    self.retired_pending.remove(root);
                }
                removals.into_iter().map(|(k, _)| k).collect()
            }
            Some(OpKind::UpdateApp { record, .. }) => {
                self.fail_app_op(record.app_uuid, why);
                Vec::new()
            }
            Some(OpKind::Unregister { app }) => {
                self.fail_app_op(app, why);
                Vec::new()
            }
            Some(OpKind::Register { .. }) | Some(OpKind::Recovery) | Some(OpKind::Confirm) | None => {
                Vec::new()
            }
        };
        for key in keys {
            self.poison(&key, why);
            if let Ok(db) = self.db_mut(&key) {
                db.busy = None;
            }
        }
        self.next_id += 1;
        Plan { op: OpId(self.next_id), steps: Vec::new(), commit_step: None }
    }

    // ----- recovery ----------------------------------------------------------------------

    /// Builds the store from a scan of the disk. Verifies every app record, pointer and
    /// manifest; damaged ones are reported and their databases refuse work; nothing is
    /// guessed. Returns the plan that removes temp files and never-committed registrations
    /// (run it, then `complete` its op). Orphans are left for GC. Running recovery on the
    /// state its own plan leaves gives the same store and an empty plan (idempotent).
    pub fn recover(scan: &Scan) -> (Store, RecoveryReport, Plan) {
        let mut store = Store::new();
        let mut report = RecoveryReport::default();
        let mut steps = Vec::new();
        let mut removed_app_dirs = false;
        for app in &scan.apps {
            let app_path = layout::apps_dir().join(&app.dir_name);
            let record_file = app.files.iter().find(|f| f.rel == layout::APP_RECORD);
            let Some(record_file) = record_file else {
                if let Some(retired) = lifecycle::retired_app(app) {
                    report.retired.push(app_path);
                    store.retired.insert(retired.root(), retired);
                } else if let Some(plan) = incomplete_app_removal(app, &app_path) {
                    steps.extend(plan);
                    removed_app_dirs = true;
                    report.incomplete_apps_removed.push(app_path);
                } else {
                    report.damaged.push((
                        app_path,
                        Error::corrupt(
                            "app directory has no app.json but holds data; left untouched for an operator",
                        ),
                    ));
                }
                continue;
            };
            let what = app_path.join(layout::APP_RECORD).display().to_string();
            let record = match AppRecord::decode(record_file.content.as_deref().unwrap_or(&[]), &what) {
                Ok(r) => r,
                Err(e) => {
                    report.damaged.push((app_path, e));
                    continue;
                }
            };
            if record.app_uuid.hyphenated().to_string() != app.dir_name {
                report.damaged.push((
                    app_path,
                    Error::corrupt(format!("{what}: appUuid does not match its directory")),
                ));
                continue;
            }
            if store.by_id.contains_key(&record.app_id) {
                report.damaged.push((app_path, Error::corrupt(format!("{what}: app id registered twice"))));
                continue;
            }
            for f in &app.files {
                if f.rel == format!("{}{}", layout::APP_RECORD, layout::TMP_SUFFIX) {
                    let path = app_path.join(&f.rel);
                    steps.push(Step::RemoveFile(path.clone()));
                    steps.push(Step::SyncDir(app_path.clone()));
                    report.temps_removed.push(path);
                }
            }
            let mut dbs = BTreeMap::new();
            for spec in &record.manifest.dbs {
                let key = DbKey { app: record.app_uuid, db: spec.name.clone() };
                let state =
                    recover_db(app, &key, spec.max_size_bytes, spec.read_only, &mut report, &mut steps);
                if state.health == Health::Ok {
                    report.databases_ok += 1;
                }
                dbs.insert(spec.name.clone(), state);
            }
            // A database directory the record does not list was removed, or added by an
            // update that never committed: garbage.
            let retired = lifecycle::retired_dbs(app, &record);
            // Files outside any database directory are not ours to judge.
            for f in &app.files {
                let in_db = |name: &DbName| f.rel.starts_with(&format!("db/{}/", name.as_str()));
                let known = f.rel == layout::APP_RECORD
                    || f.rel == format!("{}{}", layout::APP_RECORD, layout::TMP_SUFFIX)
                    || record.manifest.dbs.iter().any(|d| in_db(&d.name))
                    || retired.iter().any(|r| r.db.as_ref().is_some_and(in_db));
                if !known {
                    report.unknown.push(app_path.join(&f.rel));
                }
            }
            for r in retired {
                report.retired.push(r.root());
                store.retired.insert(r.root(), r);
            }
            report.apps += 1;
            store.by_id.insert(record.app_id.clone(), record.app_uuid);
            store.apps.insert(record.app_uuid, AppState { record, dbs });
        }
        if removed_app_dirs {
            steps.push(Step::SyncDir(layout::apps_dir()));
        }
        for key in store.db_keys() {
            if let Ok(db) = store.db(&key) {
                if db.health == Health::Ok {
                    for name in store.unreferenced(&key, db) {
                        report.orphans.push(layout::db_dir(key.app, &key.db).join(name));
                    }
                }
            }
        }
        let op = store.next_op(OpKind::Recovery);
        (store, report, Plan { op, steps, commit_step: None })
    }
}

fn busy(key: &DbKey, op: OpId) -> Error {
    Error::new(
        ErrorCode::Busy,
        format!(
            "database {:?} has another version operation in flight ({op:?}); retry when it finishes",
            key.db.as_str()
        ),
    )
}

/// Steps that replace a manifest: temp write, sync, rename (index 2, the commit), sync_dir.
fn manifest_steps(key: &DbKey, manifest: &ManifestRecord) -> Vec<Step> {
    let tmp = layout::manifest_tmp(key.app, &key.db);
    vec![
        Step::WriteFile { path: tmp.clone(), bytes: manifest.encode() },
        Step::SyncFile(tmp.clone()),
        Step::Rename { from: tmp, to: layout::manifest(key.app, &key.db) },
        Step::SyncDir(layout::db_dir(key.app, &key.db)),
    ]
}

/// Steps removing a registration that never committed, if it holds no data: every database
/// file is empty and there are no snapshots. Files first, then directories deepest first.
fn incomplete_app_removal(app: &AppScan, app_path: &std::path::Path) -> Option<Vec<Step>> {
    for f in &app.files {
        let in_db = f.rel.split('/').nth(2).map(layout::classify);
        let holds_data = match in_db {
            Some(FileKind::Database(_)) | Some(FileKind::Side(_)) => f.size > 0,
            _ => f.rel.contains("/snapshots/"),
        };
        if holds_data {
            return None;
        }
    }
    let mut steps: Vec<Step> = app.files.iter().map(|f| Step::RemoveFile(app_path.join(&f.rel))).collect();
    let mut dirs: Vec<&String> = app.dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    steps.extend(dirs.into_iter().map(|d| Step::RemoveDir(app_path.join(d))));
    steps.push(Step::RemoveDir(app_path.to_path_buf()));
    Some(steps)
}

fn recover_db(
    app: &AppScan,
    key: &DbKey,
    max_size_bytes: u64,
    read_only: bool,
    report: &mut RecoveryReport,
    steps: &mut Vec<Step>,
) -> DbState {
    let prefix = format!("db/{}/", key.db.as_str());
    let dir = layout::db_dir(key.app, &key.db);
    let mut files = BTreeMap::new();
    let mut current = None;
    let mut manifest = None;
    for f in &app.files {
        let Some(rel) = f.rel.strip_prefix(&prefix) else { continue };
        match layout::classify(rel) {
            FileKind::Temp => {
                steps.push(Step::RemoveFile(dir.join(rel)));
                steps.push(Step::SyncDir(dir.clone()));
                report.temps_removed.push(dir.join(rel));
                continue;
            }
            FileKind::Unknown => {
                report.unknown.push(dir.join(rel));
                continue;
            }
            FileKind::Record if rel == layout::CURRENT => current = f.content.as_deref(),
            FileKind::Record => manifest = f.content.as_deref(),
            _ => {}
        }
        files.insert(rel.to_string(), f.size);
    }
    let damaged = |e: Error| DbState {
        health: Health::Damaged(e),
        pointer: PointerRecord {
            generation: 0,
            file: Uuid::nil(),
            size: 0,
            schema: 0,
            created_ms: 0,
            label: String::new(),
        },
        manifest: ManifestRecord::default(),
        files: files.clone(),
        busy: None,
        max_size_bytes,
        read_only,
    };
    let check = || -> Result<(PointerRecord, ManifestRecord)> {
        let cur_path = dir.join(layout::CURRENT).display().to_string();
        let pointer = match current {
            Some(bytes) => PointerRecord::decode(bytes, &cur_path)?,
            None => return Err(Error::corrupt(format!("{cur_path}: pointer record is missing"))),
        };
        if !files.contains_key(&layout::db_file_name(pointer.file)) {
            return Err(Error::corrupt(format!(
                "{cur_path}: names {} which does not exist",
                layout::db_file_name(pointer.file)
            )));
        }
        let man_path = dir.join(layout::MANIFEST).display().to_string();
        let manifest = match manifest {
            Some(bytes) => ManifestRecord::decode(bytes, &man_path)?,
            None => return Err(Error::corrupt(format!("{man_path}: manifest record is missing"))),
        };
        for s in &manifest.snapshots {
            match files.get(&layout::snapshot_rel(s.id)) {
                Some(size) if *size == s.size => {}
                Some(size) => {
                    return Err(Error::corrupt(format!(
                        "{man_path}: snapshot {} is {size} bytes on disk, the manifest says {}",
                        s.id, s.size
                    )))
                }
                None => return Err(Error::corrupt(format!("{man_path}: snapshot {} is missing", s.id))),
            }
        }
        Ok((pointer, manifest))
    };
    match check() {
        Ok((pointer, manifest)) => {
            DbState { health: Health::Ok, pointer, manifest, files, busy: None, max_size_bytes, read_only }
        }
        Err(e) => {
            report.damaged.push((dir, e.clone()));
            damaged(e)
        }
    }
}

#[cfg(test)]
mod tests;
