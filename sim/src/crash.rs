//! Exhaustive crash points for the store's plans.
//!
//! For one operation (register, flip, snapshot add, snapshot drop, retention, GC), this runs
//! the operation's plan on a [`MemFs`] and, for every prefix of the plan, takes the durable
//! image a power cut at that point would leave. On each image it runs recovery and checks
//! the invariants of DESIGN.md that apply to the workspace layer:
//!
//! * recovery succeeds and reports no damage; the pointer names an existing file;
//! * the operation took effect whole or not at all, and whole if it was acknowledged;
//! * every data file on disk is reachable or listed as an orphan;
//! * the quota ledger equals the bytes on disk;
//! * a crash at any step of recovery, then recovery again, gives the same state, and a
//!   second recovery plans nothing (idempotent);
//! * after one GC pass the disk holds exactly the reachable set.
//!
//! The checker is itself tested against a filesystem that lies (`sync_dir` does nothing):
//! it must report violations, or it proves nothing.

use crate::memfs::{Faults, MemFs};
use sila_sqlite::driver::Driver;
use sila_sqlite::store::layout::{self, FileKind};
use sila_sqlite::store::{DbKey, NewSnapshot, NewVersion, Plan, Store};
use sila_sqlite::uuid::Uuid;
use sila_sqlite::vfs::{self, Vfs};
use sila_sqlite::workspace::{Clock, Workspace, WorkspaceOptions};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The workspace root inside the simulated filesystem.
pub const ROOT: &str = "/ws";
/// The app every scenario registers.
pub const APP: &str = "com.example.notes";
/// Its manifest: two databases, so plans touch more than one directory.
pub const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics","maxSizeMB":1},{"name":"cache","maxSizeMB":1}],"tier":"standard"}}}"#;

/// A clock that stands still, so UUIDs and records are the same on every run.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
}

/// An operation whose crash points are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Register an app (creates its databases).
    Register,
    /// Flip `analytics` to a new file.
    Flip,
    /// Add a snapshot of `analytics`.
    AddSnapshot,
    /// Drop a snapshot of `analytics`.
    DropSnapshot,
    /// Apply keep-last-1 retention to `analytics` (which has two snapshots).
    Retention,
    /// Collect the garbage of an earlier flip and snapshot drop.
    Gc,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 6] = [
        Operation::Register,
        Operation::Flip,
        Operation::AddSnapshot,
        Operation::DropSnapshot,
        Operation::Retention,
        Operation::Gc,
    ];
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The operation.
    pub op: Operation,
    /// How many plan steps had run when the power went out.
    pub crash_after: usize,
    /// What broke.
    pub what: String,
}

/// The logical state of a workspace, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    apps: Vec<String>,
    /// Per database: pointer file, pointer generation, snapshot ids.
    dbs: Vec<(String, Uuid, u64, Vec<Uuid>)>,
}

/// UUID seeds: setup, the operation under test and the checks each draw their own stream, so
/// no two of them mint the same UUID, while every run of one of them mints the same ones.
const SEED_SETUP: u64 = 7;
const SEED_OPERATION: u64 = 8;
const SEED_CHECK: u64 = 9;

fn open_seeded(fs: &MemFs, seed: u64) -> Result<Workspace, String> {
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let options = WorkspaceOptions {
        uuid_seed: Some(seed),
        clock: Arc::new(FixedClock(1_700_000_000_000)),
        // No worker threads: nothing here submits work, and each check opens many workspaces.
        executor: Some(Arc::new(sila_sqlite::broker::executor::Stepper::new(16))),
        ..WorkspaceOptions::default()
    };
    Workspace::open_with(vfs, PathBuf::from(ROOT), options).map_err(|e| format!("open failed: {e}"))
}

fn open(fs: &MemFs) -> Result<Workspace, String> {
    open_seeded(fs, SEED_CHECK)
}

fn key(ws: &Workspace, db: &str) -> Result<DbKey, String> {
    ws.db_key(APP, db).map_err(|e| e.to_string())
}

fn fingerprint(ws: &Workspace) -> Fingerprint {
    ws.with_store(|s| {
        let apps = s.apps().iter().map(|a| a.app_id.as_str().to_string()).collect();
        let mut dbs = Vec::new();
        for k in s.db_keys() {
            let (file, generation) =
                s.pointer(&k).map(|p| (p.file, p.generation)).unwrap_or((Uuid::nil(), 0));
            let snaps =
                s.manifest(&k).map(|m| m.snapshots.iter().map(|x| x.id).collect()).unwrap_or_default();
            dbs.push((k.db.as_str().to_string(), file, generation, snaps));
        }
        Fingerprint { apps, dbs }
    })
}

/// Writes a stand-in database or snapshot file (unsynced), as a copy would.
/// The content every stand-in file gets, so a check can tell it from lost data.
fn blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn write_blob(ws: &Workspace, rel: &Path, len: usize) -> Result<(), String> {
    let path = ws.driver().abs(rel);
    let bytes = blob(len);
    vfs::write_file(ws.driver().vfs().as_ref(), &path, &bytes).map(|_| ()).map_err(|e| e.to_string())
}

fn add_snapshot(ws: &Workspace, k: &DbKey) -> Result<(Uuid, Plan), String> {
    let id = ws.new_uuid();
    let op = ws.with_store(|s| s.begin_snapshot(k, id, 512)).map_err(|e| e.to_string())?;
    write_blob(ws, &layout::snapshot_file(k.app, &k.db, id), 512)?;
    let snap = NewSnapshot { size: 512, crc32c: 1, schema: 0, label: "s".into(), now_ms: ws.now_ms() };
    let plan = ws.with_store(|s| s.plan_add_snapshot(op, snap)).map_err(|e| e.to_string())?;
    Ok((id, plan))
}

fn flip(ws: &Workspace, k: &DbKey) -> Result<(Uuid, Plan), String> {
    let file = ws.new_uuid();
    let op = ws.with_store(|s| s.begin_new_file(k, file, 1024)).map_err(|e| e.to_string())?;
    write_blob(ws, &layout::db_file(k.app, &k.db, file), 1024)?;
    let v = NewVersion { size: 1024, schema: 0, label: "flip".into(), now_ms: ws.now_ms() };
    let plan = ws.with_store(|s| s.plan_flip(op, v)).map_err(|e| e.to_string())?;
    Ok((file, plan))
}

fn run_all(ws: &Workspace, plan: &Plan) -> Result<(), String> {
    ws.driver().run(plan).map_err(|f| f.to_error().to_string())?;
    ws.with_store(|s| s.complete(plan.op)).map_err(|e| e.to_string())
}

/// Builds the state before `op` on a fresh filesystem. Faults are off during setup.
fn setup(op: Operation) -> Result<MemFs, String> {
    let fs = MemFs::new();
    fs.create_dir(Path::new(ROOT)).map_err(|e| e.to_string())?;
    fs.sync_dir(Path::new("/")).map_err(|e| e.to_string())?;
    if op == Operation::Register {
        return Ok(fs);
    }
    let ws = open_seeded(&fs, SEED_SETUP)?;
    ws.register_app(APP, MANIFEST).map_err(|e| e.to_string())?;
    let k = key(&ws, "analytics")?;
    match op {
        Operation::DropSnapshot => run_all(&ws, &add_snapshot(&ws, &k)?.1)?,
        Operation::Retention => {
            run_all(&ws, &add_snapshot(&ws, &k)?.1)?;
            run_all(&ws, &add_snapshot(&ws, &k)?.1)?;
        }
        Operation::Gc => {
            let (id, plan) = add_snapshot(&ws, &k)?;
            run_all(&ws, &plan)?;
            run_all(&ws, &flip(&ws, &k)?.1)?;
            let drop = ws.with_store(|s| s.plan_drop_snapshots(&k, &[id])).map_err(|e| e.to_string())?;
            run_all(&ws, &drop)?;
        }
        _ => {}
    }
    Ok(fs)
}

/// What an operation must look like once acknowledged, and what it may look like before.
struct Expect {
    before: Fingerprint,
    after: Fingerprint,
    /// Files the operation must have removed once acknowledged (GC).
    removed: Vec<PathBuf>,
}

/// Plans the operation on an open workspace over the setup state.
fn prepare(ws: &Workspace, op: Operation) -> Result<Plan, String> {
    match op {
        Operation::Register => {
            // Registration is planned through the store, exactly as `register_app` does.
            let manifest = sila_sqlite::manifest::Manifest::parse(MANIFEST).map_err(|e| e.to_string())?;
            let app_id = sila_sqlite::names::AppId::new(APP).map_err(|e| e.to_string())?;
            let app_uuid = ws.new_uuid();
            let files: Vec<Uuid> = manifest.dbs.iter().map(|_| ws.new_uuid()).collect();
            let now = ws.now_ms();
            ws.with_store(|s| s.plan_register_app(app_id, manifest, app_uuid, &files, now))
                .map_err(|e| e.to_string())
        }
        Operation::Flip => Ok(flip(ws, &key(ws, "analytics")?)?.1),
        Operation::AddSnapshot => Ok(add_snapshot(ws, &key(ws, "analytics")?)?.1),
        Operation::DropSnapshot => {
            let k = key(ws, "analytics")?;
            let ids = ws
                .with_store(|s| s.manifest(&k).map(|m| m.snapshots.iter().map(|x| x.id).collect::<Vec<_>>()));
            let ids = ids.map_err(|e| e.to_string())?;
            ws.with_store(|s| s.plan_drop_snapshots(&k, &ids)).map_err(|e| e.to_string())
        }
        Operation::Retention => {
            let k = key(ws, "analytics")?;
            let policy = sila_sqlite::store::Retention { keep_last: Some(1), max_age_ms: None };
            let now = ws.now_ms();
            ws.with_store(|s| s.plan_retention(&k, policy, now))
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "retention planned nothing".to_string())
        }
        Operation::Gc => Ok(ws.with_store(|s| s.plan_gc()).0),
    }
}

/// Runs `op` with `faults` active during the operation (not during setup), crashing after
/// every prefix of its plan, and returns every violation found.
pub fn check_operation(op: Operation, faults: Faults) -> Vec<Violation> {
    match check_operation_inner(op, faults) {
        Ok(v) => v,
        Err(what) => vec![Violation { op, crash_after: 0, what: format!("harness: {what}") }],
    }
}

fn check_operation_inner(op: Operation, faults: Faults) -> Result<Vec<Violation>, String> {
    let base = setup(op)?;
    // The expected states: run the whole operation once on a copy, faults off.
    let expect = {
        let fs = base.durable_image();
        let ws = open_seeded(&fs, SEED_OPERATION)?;
        let before = fingerprint(&ws);
        let plan = prepare(&ws, op)?;
        let removed: Vec<PathBuf> = if op == Operation::Gc {
            plan.steps
                .iter()
                .filter_map(|s| match s {
                    sila_sqlite::store::Step::RemoveFile(p) => Some(p.clone()),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        run_all(&ws, &plan)?;
        Expect { before, after: fingerprint(&ws), removed }
    };
    if expect.before == expect.after && op != Operation::Gc {
        return Err(format!("{op:?} changed nothing; the scenario is wrong"));
    }
    let mut violations = Vec::new();
    let steps = {
        let fs = base.durable_image();
        let ws = open_seeded(&fs, SEED_OPERATION)?;
        prepare(&ws, op)?.steps.len()
    };
    for k in 0..=steps {
        let fs = base.durable_image();
        let ws = open_seeded(&fs, SEED_OPERATION)?;
        let plan = prepare(&ws, op)?;
        fs.set_faults(faults);
        for step in plan.steps.iter().take(k) {
            ws.driver().run_step(step).map_err(|e| format!("step {step} failed: {e}"))?;
        }
        let acked = k == plan.steps.len();
        if acked {
            ws.with_store(|s| s.complete(plan.op)).map_err(|e| e.to_string())?;
        }
        let image = fs.durable_image();
        drop(ws);
        for what in check_image(&image, &expect, acked) {
            violations.push(Violation { op, crash_after: k, what });
        }
    }
    Ok(violations)
}

/// Every invariant on one crash image.
fn check_image(image: &MemFs, expect: &Expect, acked: bool) -> Vec<String> {
    let mut out = Vec::new();
    let ws = match open(&image.durable_image()) {
        Ok(ws) => ws,
        Err(e) => return vec![format!("recovery failed: {e}")],
    };
    let report = ws.recovery_report().clone();
    if !report.damaged.is_empty() {
        out.push(format!("recovery reported damage: {:?}", report.damaged));
    }
    let state = fingerprint(&ws);
    // Every file a pointer or manifest names holds what was written: a version is never
    // made reachable before its data is durable.
    out.extend(check_reachable_content(&ws, image));
    if acked && state != expect.after {
        out.push(format!("acknowledged operation lost: expected {:?}, recovered {:?}", expect.after, state));
    }
    if !acked && state != expect.before && state != expect.after {
        out.push(format!("half-applied operation: recovered {state:?}"));
    }
    if acked {
        for path in &expect.removed {
            if image.read(Path::new(ROOT).join(path)).is_some() {
                out.push(format!("acknowledged GC left {}", path.display()));
            }
        }
    }
    out.extend(check_files(&ws, &report));
    out.extend(check_recovery_idempotent(image, &state));
    out.extend(check_gc_completes(&ws));
    out
}

/// Files the flip and snapshot scenarios wrote (1024- and 512-byte stand-ins) hold their
/// content whenever a pointer or manifest names them.
fn check_reachable_content(ws: &Workspace, image: &MemFs) -> Vec<String> {
    let mut out = Vec::new();
    ws.with_store(|s| {
        for k in s.db_keys() {
            let mut named = Vec::new();
            if let Ok(p) = s.pointer(&k) {
                if p.size > 0 {
                    named.push((layout::db_file(k.app, &k.db, p.file), p.size));
                }
            }
            if let Ok(m) = s.manifest(&k) {
                named.extend(m.snapshots.iter().map(|x| (layout::snapshot_file(k.app, &k.db, x.id), x.size)));
            }
            for (rel, size) in named {
                let want = blob(usize::try_from(size).unwrap_or(0));
                if image.read(Path::new(ROOT).join(&rel)) != Some(want) {
                    out.push(format!(
                        "{} is reachable but does not hold the data written to it",
                        rel.display()
                    ));
                }
            }
        }
    });
    out
}

/// Every data file is reachable or an orphan; the ledger equals the bytes on disk.
fn check_files(ws: &Workspace, report: &sila_sqlite::store::RecoveryReport) -> Vec<String> {
    let mut out = Vec::new();
    let fs = ws.driver().vfs().clone();
    ws.with_store(|s| {
        for app in s.apps() {
            let mut disk_bytes = 0u64;
            for k in s.db_keys().into_iter().filter(|k| k.app == app.app_uuid) {
                let dir = layout::db_dir(k.app, &k.db);
                let listed = list_data_files(fs.as_ref(), &ws.driver().abs(&dir));
                let pointer = s.pointer(&k).map(|p| p.file).ok();
                let snaps: BTreeSet<Uuid> =
                    s.manifest(&k).map(|m| m.snapshots.iter().map(|x| x.id).collect()).unwrap_or_default();
                for (rel, size) in listed {
                    disk_bytes += size;
                    let reachable = match layout::classify(&rel) {
                        FileKind::Database(id) | FileKind::Side(id) => Some(id) == pointer,
                        FileKind::Snapshot(id) => snaps.contains(&id),
                        _ => true,
                    };
                    if !reachable && !report.orphans.contains(&dir.join(&rel)) {
                        out.push(format!(
                            "{} is neither reachable nor listed as an orphan",
                            dir.join(&rel).display()
                        ));
                    }
                }
            }
            match s.ledger(app.app_uuid) {
                Ok(l) => {
                    let counted = l.live_bytes + l.snapshot_bytes + l.garbage_bytes;
                    if counted != disk_bytes || l.in_flight_bytes != 0 {
                        out.push(format!("ledger {l:?} does not match {disk_bytes} bytes on disk"));
                    }
                }
                Err(e) => out.push(format!("ledger: {e}")),
            }
        }
    });
    out
}

/// Data files (database, side and snapshot files) under a db directory, relative to it.
fn list_data_files(fs: &dyn Vfs, dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (sub, prefix) in
        [(dir.to_path_buf(), String::new()), (dir.join(layout::SNAPSHOTS_DIR), "snapshots/".into())]
    {
        for e in fs.list_dir(&sub).unwrap_or_default() {
            let rel = format!("{prefix}{}", e.name);
            if e.is_dir
                || matches!(layout::classify(&rel), FileKind::Record | FileKind::Temp | FileKind::Unknown)
            {
                continue;
            }
            let size = fs.file_len(&sub.join(&e.name)).ok().flatten().unwrap_or(0);
            out.push((rel, size));
        }
    }
    out
}

/// A crash at every step of recovery, then recovery again, gives the same state; and
/// recovery of a recovered disk plans nothing.
fn check_recovery_idempotent(image: &MemFs, state: &Fingerprint) -> Vec<String> {
    let mut out = Vec::new();
    let plan_len = {
        let fs = image.durable_image();
        let driver = Driver::new(Arc::new(fs.clone()), PathBuf::from(ROOT));
        match driver.scan() {
            Ok(scan) => Store::recover(&scan).2.steps.len(),
            Err(e) => return vec![format!("scan failed: {e}")],
        }
    };
    for j in 0..=plan_len {
        let fs = image.durable_image();
        let driver = Driver::new(Arc::new(fs.clone()), PathBuf::from(ROOT));
        let Ok(scan) = driver.scan() else { continue };
        let (_, _, plan) = Store::recover(&scan);
        for step in plan.steps.iter().take(j) {
            if let Err(e) = driver.run_step(step) {
                out.push(format!("recovery step {step} failed: {e}"));
            }
        }
        match open(&fs.durable_image()) {
            Ok(ws) => {
                if fingerprint(&ws) != *state {
                    out.push(format!("crash after {j} recovery steps changed the recovered state"));
                }
                if j == plan_len {
                    let again = Driver::new(Arc::new(fs.durable_image()), PathBuf::from(ROOT));
                    if let Ok(scan) = again.scan() {
                        let (_, _, p) = Store::recover(&scan);
                        if !p.steps.is_empty() {
                            out.push(format!(
                                "recovery is not idempotent: second run plans\n{}",
                                p.transcript()
                            ));
                        }
                    }
                }
            }
            Err(e) => out.push(format!("recovery after a crash during recovery failed: {e}")),
        }
    }
    out
}

/// After one GC pass, the data files on disk are exactly the reachable set.
fn check_gc_completes(ws: &Workspace) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(e) = ws.gc() {
        return vec![format!("GC failed: {e}")];
    }
    let fs = ws.driver().vfs().clone();
    ws.with_store(|s| {
        for k in s.db_keys() {
            let dir = layout::db_dir(k.app, &k.db);
            let pointer = s.pointer(&k).map(|p| p.file).ok();
            let snaps: BTreeSet<Uuid> =
                s.manifest(&k).map(|m| m.snapshots.iter().map(|x| x.id).collect()).unwrap_or_default();
            for (rel, _) in list_data_files(fs.as_ref(), &ws.driver().abs(&dir)) {
                let reachable = match layout::classify(&rel) {
                    FileKind::Database(id) | FileKind::Side(id) => Some(id) == pointer,
                    FileKind::Snapshot(id) => snaps.contains(&id),
                    _ => true,
                };
                if !reachable {
                    out.push(format!("after GC, unreachable {} remains", dir.join(&rel).display()));
                }
            }
            // GC safety: nothing reachable was deleted.
            let live = pointer.map(|f| dir.join(layout::db_file_name(f)));
            let listed = snaps.iter().map(|id| layout::snapshot_file(k.app, &k.db, *id));
            for rel in live.into_iter().chain(listed) {
                if !fs.exists(&ws.driver().abs(&rel)).unwrap_or(false) {
                    out.push(format!("GC deleted {}, which is still referenced", rel.display()));
                }
            }
            if s.collectable(&k).map(|c| !c.is_empty()).unwrap_or(false) {
                out.push(format!("after GC, {} still has collectable files", dir.display()));
            }
        }
    });
    out
}
