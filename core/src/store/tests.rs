//! Store unit tests: no IO. Plan transcripts are pinned with insta; a seeded random sequence
//! of operations runs against a small reference model, checking the ledger, the references
//! and the GC set after every step.

use super::*;
use crate::manifest::{Manifest, MIB};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics","maxSizeMB":1}],"tier":"standard"}}}"#;

fn u(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// A store with one app (uuid 1) and one database "analytics" (file uuid 2), registered.
fn registered() -> (Store, DbKey) {
    let mut store = Store::new();
    let manifest = Manifest::parse(MANIFEST).unwrap();
    let plan = store.plan_register_app(AppId::new("com.x").unwrap(), manifest, u(1), &[u(2)], 1000).unwrap();
    store.complete(plan.op).unwrap();
    (store, DbKey { app: u(1), db: DbName::new("analytics").unwrap() })
}

fn version(size: u64, label: &str) -> NewVersion {
    NewVersion { size, schema: 0, label: label.into(), now_ms: 2000 }
}

fn snap(size: u64, now_ms: u64) -> NewSnapshot {
    NewSnapshot { size, crc32c: 0xabcd, schema: 0, label: "s".into(), now_ms }
}

#[test]
fn transcript_register() {
    let mut store = Store::new();
    let manifest = Manifest::parse(MANIFEST).unwrap();
    let plan = store.plan_register_app(AppId::new("com.x").unwrap(), manifest, u(1), &[u(2)], 1000).unwrap();
    insta::assert_snapshot!("register", plan.transcript());
}

#[test]
fn transcript_flip() {
    let (mut store, key) = registered();
    let op = store.begin_new_file(&key, u(3), 4096).unwrap();
    let plan = store.plan_flip(op, version(4096, "restore")).unwrap();
    insta::assert_snapshot!("flip", plan.transcript());
    store.complete(plan.op).unwrap();
    assert_eq!(store.pointer(&key).unwrap().file, u(3));
    assert_eq!(store.pointer(&key).unwrap().generation, 2);
    // The old file is garbage now, and only now.
    assert_eq!(store.collectable(&key).unwrap(), vec![layout::db_file_name(u(2))]);
}

#[test]
fn transcript_snapshot_add_and_drop() {
    let (mut store, key) = registered();
    let op = store.begin_snapshot(&key, u(4), 100).unwrap();
    let plan = store.plan_add_snapshot(op, snap(100, 3000)).unwrap();
    insta::assert_snapshot!("add_snapshot", plan.transcript());
    store.complete(plan.op).unwrap();
    assert_eq!(store.manifest(&key).unwrap().snapshots.len(), 1);
    let plan = store.plan_drop_snapshots(&key, &[u(4)]).unwrap();
    insta::assert_snapshot!("drop_snapshot", plan.transcript());
    // Until the drop completes, the snapshot is still referenced.
    assert!(store.collectable(&key).unwrap().is_empty());
    store.complete(plan.op).unwrap();
    assert_eq!(store.collectable(&key).unwrap(), vec![layout::snapshot_rel(u(4))]);
}

#[test]
fn transcript_gc_and_retention() {
    let (mut store, key) = registered();
    for (i, t) in [(10u128, 1000u64), (11, 2000), (12, 3000)] {
        let op = store.begin_snapshot(&key, u(i), 10).unwrap();
        let plan = store.plan_add_snapshot(op, snap(10, t)).unwrap();
        store.complete(plan.op).unwrap();
    }
    let policy = Retention { keep_last: Some(2), max_age_ms: None };
    assert_eq!(store.retention_victims(&key, policy, 3000).unwrap(), vec![u(10)]);
    let policy = Retention { keep_last: Some(5), max_age_ms: Some(1500) };
    assert_eq!(store.retention_victims(&key, policy, 3000).unwrap(), vec![u(10)]);
    let policy = Retention { keep_last: Some(1), max_age_ms: Some(1500) };
    assert_eq!(store.retention_victims(&key, policy, 3000).unwrap(), vec![u(10), u(11)]);
    let plan = store.plan_retention(&key, policy, 3000).unwrap().unwrap();
    insta::assert_snapshot!("retention", plan.transcript());
    store.complete(plan.op).unwrap();
    assert!(store.plan_retention(&key, policy, 3000).unwrap().is_none(), "policy already holds");
    let (plan, summary) = store.plan_gc();
    insta::assert_snapshot!("gc", plan.transcript());
    assert_eq!(summary.bytes, 20);
    store.complete(plan.op).unwrap();
    let (plan, summary) = store.plan_gc();
    assert!(plan.steps.is_empty() && summary.files.is_empty(), "second GC finds nothing");
}

#[test]
fn leases_and_in_flight_files_are_never_collected() {
    let (mut store, key) = registered();
    let lease = store.acquire_lease(&key, u(2)).unwrap();
    let op = store.begin_new_file(&key, u(3), 10).unwrap();
    let plan = store.plan_flip(op, version(10, "x")).unwrap();
    store.complete(plan.op).unwrap();
    // The old file is unreferenced but leased.
    let (plan, summary) = store.plan_gc();
    assert!(plan.steps.is_empty());
    assert_eq!(summary.kept_leased.len(), 1);
    // A file of an operation in flight is not even garbage.
    let op = store.begin_new_file(&key, u(5), 10).unwrap();
    store.set_file_size(&key, &layout::db_file_name(u(5)), 7).unwrap();
    let (plan, _) = store.plan_gc();
    assert!(plan.steps.is_empty());
    store.complete(plan.op).unwrap();
    store.abort(op);
    store.release_lease(lease);
    let (plan, summary) = store.plan_gc();
    assert_eq!(summary.files, vec![layout::db_file(u(1), &key.db, u(2))]);
    store.complete(plan.op).unwrap();
}

#[test]
fn a_quota_refusal_says_where_the_bytes_are_and_whether_gc_would_free_enough() {
    let (mut store, key) = registered();
    // A 2 MiB snapshot, then dropped: its file is garbage until GC removes it.
    let op = store.begin_snapshot(&key, u(4), 2 * MIB).unwrap();
    let plan = store.plan_add_snapshot(op, snap(2 * MIB, 1)).unwrap();
    store.complete(plan.op).unwrap();
    let plan = store.plan_drop_snapshots(&key, &[u(4)]).unwrap();
    store.complete(plan.op).unwrap();
    let ledger = store.ledger(u(1)).unwrap();
    assert_eq!(
        (ledger.garbage_bytes, ledger.collectable_bytes, ledger.snapshot_bytes),
        (2 * MIB, 2 * MIB, 0)
    );

    // The app quota is 3 MiB: another 2 MiB snapshot does not fit, but would after GC.
    let err = store.begin_snapshot(&key, u(5), 2 * MIB).unwrap_err();
    let usage = err.quota().and_then(|q| q.usage).unwrap();
    assert_eq!((usage.garbage_bytes, usage.collectable_bytes), (2 * MIB, 2 * MIB));
    assert!(err.message().contains("garbage awaiting GC 2097152"), "{err}");
    assert!(err.message().contains("enough: run GC"), "{err}");

    // A reader still leasing the garbage: GC could not free it now, and the message says so.
    let lease = store.acquire_lease(&key, u(4)).unwrap();
    let err = store.begin_snapshot(&key, u(5), 2 * MIB).unwrap_err();
    assert_eq!(err.quota().and_then(|q| q.usage).map(|u| u.collectable_bytes), Some(0));
    assert!(err.message().contains("not the"), "{err}");
    store.release_lease(lease);

    // After GC the same snapshot fits. A limit other than the app quota carries no usage.
    let (plan, _) = store.plan_gc();
    store.complete(plan.op).unwrap();
    let op = store.begin_snapshot(&key, u(5), 2 * MIB).unwrap();
    store.abort(op);
    let err = store.begin_new_file(&key, u(6), 2 * MIB).unwrap_err();
    assert_eq!(err.quota().map(|q| q.usage), Some(None), "{err}");
}

#[test]
fn quota_is_refused_before_any_io_with_the_numbers() {
    let (mut store, key) = registered();
    // maxSizeMB 1: a 2 MiB new version is over the database's limit.
    let err = store.begin_new_file(&key, u(3), 2 * MIB).unwrap_err();
    assert_eq!(err.code(), ErrorCode::QuotaExceeded);
    let q = err.quota().unwrap();
    assert_eq!((q.limit_bytes, q.requested_bytes), (MIB, 2 * MIB));
    // The app quota is 3 x 1 MiB. Fill it with snapshots up to the byte.
    let op = store.begin_snapshot(&key, u(4), 3 * MIB).unwrap();
    let plan = store.plan_add_snapshot(op, snap(3 * MIB, 1)).unwrap();
    store.complete(plan.op).unwrap();
    assert_eq!(store.ledger(u(1)).unwrap().used_bytes(), 3 * MIB);
    let err = store.begin_snapshot(&key, u(5), 1).unwrap_err();
    assert_eq!(err.code(), ErrorCode::QuotaExceeded);
    assert!(err.message().contains(&(3 * MIB).to_string()), "{err}");
    // Nothing was reserved by the refusals.
    assert_eq!(store.ledger(u(1)).unwrap().in_flight_bytes, 0);
    assert!(store.begin_snapshot(&key, u(5), 0).is_ok(), "exactly at the quota is allowed");
}

#[test]
fn one_version_operation_per_database() {
    let (mut store, key) = registered();
    let op = store.begin_snapshot(&key, u(4), 1).unwrap();
    assert_eq!(store.begin_new_file(&key, u(5), 1).unwrap_err().code(), ErrorCode::Busy);
    assert_eq!(store.plan_drop_snapshots(&key, &[]).unwrap_err().code(), ErrorCode::Busy);
    store.abort(op);
    assert!(store.begin_new_file(&key, u(5), 1).is_ok());
}

#[test]
fn poison_refuses_everything() {
    let (mut store, key) = registered();
    let op = store.begin_new_file(&key, u(3), 1).unwrap();
    let plan = store.plan_flip(op, version(1, "x")).unwrap();
    let cleanup = store.fail(plan.op, true, "sync current.tmp");
    assert!(cleanup.steps.is_empty(), "a poisoned operation is left to recovery");
    assert_eq!(store.pointer(&key).unwrap_err().code(), ErrorCode::Poisoned);
    assert_eq!(store.begin_snapshot(&key, u(4), 1).unwrap_err().code(), ErrorCode::Poisoned);
}

#[test]
fn unknown_snapshot_drop_changes_nothing() {
    let (mut store, key) = registered();
    let before = store.manifest(&key).unwrap().clone();
    assert_eq!(store.plan_drop_snapshots(&key, &[u(99)]).unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(store.manifest(&key).unwrap(), &before);
    assert!(store.begin_snapshot(&key, u(4), 1).is_ok(), "no busy mark was left behind");
}

fn scan_of(files: &BTreeMap<String, Vec<u8>>) -> Scan {
    let mut apps: BTreeMap<String, AppScan> = BTreeMap::new();
    for (path, bytes) in files {
        let Some(rest) = path.strip_prefix("apps/") else { continue };
        let Some((app, rel)) = rest.split_once('/') else { continue };
        let entry = apps
            .entry(app.to_string())
            .or_insert_with(|| AppScan { dir_name: app.into(), ..AppScan::default() });
        let name = rel.rsplit('/').next().unwrap();
        let record = ["app.json", "current", "manifest"].contains(&name);
        entry.files.push(ScannedFile {
            rel: rel.into(),
            size: bytes.len() as u64,
            content: record.then(|| bytes.clone()),
        });
        let parts: Vec<&str> = rel.split('/').collect();
        for i in 1..parts.len() {
            let d = parts[..i].join("/");
            if !entry.dirs.contains(&d) {
                entry.dirs.push(d);
            }
        }
    }
    Scan { apps: apps.into_values().collect() }
}

/// Applies a plan to a map of file contents (a toy disk with no crash model).
fn apply(disk: &mut BTreeMap<String, Vec<u8>>, plan: &Plan) {
    for step in &plan.steps {
        match step {
            Step::WriteFile { path, bytes } => {
                disk.insert(path.display().to_string(), bytes.clone());
            }
            Step::Rename { from, to } => {
                let v = disk.remove(&from.display().to_string()).unwrap();
                disk.insert(to.display().to_string(), v);
            }
            Step::RemoveFile(p) => {
                disk.remove(&p.display().to_string());
            }
            _ => {}
        }
    }
}

#[test]
fn recovery_rebuilds_the_same_store_and_removes_temps() {
    let (mut store, key) = registered();
    let mut disk = BTreeMap::new();
    let manifest = Manifest::parse(MANIFEST).unwrap();
    let plan =
        Store::new().plan_register_app(AppId::new("com.x").unwrap(), manifest, u(1), &[u(2)], 1000).unwrap();
    apply(&mut disk, &plan);
    let op = store.begin_snapshot(&key, u(4), 3).unwrap();
    disk.insert(layout::snapshot_file(u(1), &key.db, u(4)).display().to_string(), vec![1, 2, 3]);
    let plan = store.plan_add_snapshot(op, snap(3, 5)).unwrap();
    apply(&mut disk, &plan);
    store.complete(plan.op).unwrap();
    // An interrupted flip left a temp pointer and an orphan file.
    disk.insert(layout::current_tmp(u(1), &key.db).display().to_string(), b"partial".to_vec());
    disk.insert(layout::db_file(u(1), &key.db, u(9)).display().to_string(), vec![0; 10]);

    let (recovered, report, plan) = Store::recover(&scan_of(&disk));
    insta::assert_snapshot!("recovery", plan.transcript());
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(report.temps_removed, vec![layout::current_tmp(u(1), &key.db)]);
    assert_eq!(report.orphans, vec![layout::db_file(u(1), &key.db, u(9))]);
    assert_eq!(recovered.pointer(&key).unwrap(), store.pointer(&key).unwrap());
    assert_eq!(recovered.manifest(&key).unwrap(), store.manifest(&key).unwrap());
    apply(&mut disk, &plan);
    // Idempotent: recovering the recovered state plans nothing and loads the same.
    let (again, report2, plan2) = Store::recover(&scan_of(&disk));
    assert!(plan2.steps.is_empty(), "{}", plan2.transcript());
    assert_eq!(report2.orphans, report.orphans);
    assert_eq!(again.pointer(&key).unwrap(), recovered.pointer(&key).unwrap());
}

#[test]
fn recovery_reports_damage_without_guessing() {
    let mut disk = BTreeMap::new();
    let manifest = Manifest::parse(MANIFEST).unwrap();
    let plan =
        Store::new().plan_register_app(AppId::new("com.x").unwrap(), manifest, u(1), &[u(2)], 1000).unwrap();
    apply(&mut disk, &plan);
    let key = DbKey { app: u(1), db: DbName::new("analytics").unwrap() };
    let cur = layout::current(u(1), &key.db).display().to_string();
    disk.get_mut(&cur).unwrap()[20] ^= 0x10;
    let (store, report, plan) = Store::recover(&scan_of(&disk));
    assert_eq!(report.damaged.len(), 1);
    assert!(report.damaged[0].1.message().contains("checksum mismatch"), "{:?}", report.damaged);
    assert_eq!(store.pointer(&key).unwrap_err().code(), ErrorCode::Corrupt);
    assert!(plan.steps.is_empty(), "damaged data is never removed");
    let (plan, _) = store.clone().plan_gc();
    assert!(plan.steps.is_empty(), "GC never touches a damaged database");
}

#[test]
fn incomplete_registration_is_removed_but_data_is_not() {
    let mut disk = BTreeMap::new();
    let manifest = Manifest::parse(MANIFEST).unwrap();
    let plan =
        Store::new().plan_register_app(AppId::new("com.x").unwrap(), manifest, u(1), &[u(2)], 1000).unwrap();
    apply(&mut disk, &plan);
    disk.remove(&layout::app_record(u(1)).display().to_string());
    let (store, report, plan) = Store::recover(&scan_of(&disk));
    assert_eq!(report.incomplete_apps_removed.len(), 1);
    assert!(store.apps().is_empty());
    assert!(plan.steps.iter().any(|s| matches!(s, Step::RemoveDir(p) if p == &layout::app_dir(u(1)))));
    // The same directory holding a non-empty database is left for an operator.
    disk.insert(
        layout::db_file(u(1), &DbName::new("analytics").unwrap(), u(2)).display().to_string(),
        vec![1],
    );
    let (_, report, plan) = Store::recover(&scan_of(&disk));
    assert!(report.incomplete_apps_removed.is_empty());
    assert_eq!(report.damaged.len(), 1);
    assert!(plan.steps.is_empty());
}

/// The reference model of one database for the random test.
#[derive(Default)]
struct Model {
    current: u128,
    snapshots: Vec<u128>,
    /// Files on the toy disk, relative to the db dir, with sizes.
    files: BTreeMap<String, u64>,
    leases: Vec<(LeaseId, u128)>,
}

impl Model {
    fn referenced(&self, name: &str) -> bool {
        match layout::classify(name) {
            FileKind::Database(id) | FileKind::Side(id) => id == u(self.current),
            FileKind::Snapshot(id) => self.snapshots.iter().any(|s| u(*s) == id),
            _ => true,
        }
    }
    fn leased(&self, name: &str) -> bool {
        self.leases.iter().any(|(_, f)| match layout::classify(name) {
            FileKind::Database(id) | FileKind::Side(id) | FileKind::Snapshot(id) => id == u(*f),
            _ => false,
        })
    }
}

#[test]
fn random_operations_match_the_model() {
    for seed in 0..40u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut store, key) = registered();
        let mut model = Model { current: 2, ..Model::default() };
        model.files.insert(layout::db_file_name(u(2)), 0);
        let mut next_uuid = 100u128;
        for step in 0..200 {
            let ctx = format!("seed {seed} step {step}");
            match rng.random_range(0..8u32) {
                0 => {
                    next_uuid += 1;
                    let size = rng.random_range(0..1000u64);
                    let op = store.begin_new_file(&key, u(next_uuid), size).unwrap();
                    let plan = store.plan_flip(op, version(size, "v")).unwrap();
                    if rng.random_bool(0.8) {
                        store.complete(plan.op).unwrap();
                        model.current = next_uuid;
                        model.files.insert(layout::db_file_name(u(next_uuid)), size);
                    } else {
                        store.abort(plan.op);
                    }
                }
                1 => {
                    next_uuid += 1;
                    let size = rng.random_range(0..1000u64);
                    let op = store.begin_snapshot(&key, u(next_uuid), size).unwrap();
                    let plan = store.plan_add_snapshot(op, snap(size, step)).unwrap();
                    if rng.random_bool(0.8) {
                        store.complete(plan.op).unwrap();
                        model.snapshots.push(next_uuid);
                        model.files.insert(layout::snapshot_rel(u(next_uuid)), size);
                    } else {
                        store.abort(plan.op);
                    }
                }
                2 if !model.snapshots.is_empty() => {
                    let victim = model.snapshots[rng.random_range(0..model.snapshots.len())];
                    let plan = store.plan_drop_snapshots(&key, &[u(victim)]).unwrap();
                    store.complete(plan.op).unwrap();
                    model.snapshots.retain(|s| *s != victim);
                }
                3 => {
                    let keep = rng.random_range(0..4usize);
                    if let Some(plan) = store
                        .plan_retention(&key, Retention { keep_last: Some(keep), max_age_ms: None }, step)
                        .unwrap()
                    {
                        store.complete(plan.op).unwrap();
                    }
                    let excess = model.snapshots.len().saturating_sub(keep);
                    model.snapshots.drain(..excess);
                }
                4 => {
                    let (plan, summary) = store.plan_gc();
                    let expected: Vec<String> = model
                        .files
                        .keys()
                        .filter(|f| !model.referenced(f) && !model.leased(f))
                        .cloned()
                        .collect();
                    let mut got: Vec<String> = summary
                        .files
                        .iter()
                        .map(|p| p.strip_prefix(layout::db_dir(u(1), &key.db)).unwrap().display().to_string())
                        .collect();
                    got.sort();
                    assert_eq!(got, expected, "{ctx}: GC set");
                    store.complete(plan.op).unwrap();
                    for f in expected {
                        model.files.remove(&f);
                    }
                }
                5 => {
                    let candidates: Vec<u128> =
                        std::iter::once(model.current).chain(model.snapshots.iter().copied()).collect();
                    let file = candidates[rng.random_range(0..candidates.len())];
                    let lease = store.acquire_lease(&key, u(file)).unwrap();
                    model.leases.push((lease, file));
                }
                6 if !model.leases.is_empty() => {
                    let (lease, _) = model.leases.remove(rng.random_range(0..model.leases.len()));
                    store.release_lease(lease);
                }
                _ => {
                    let wal = format!("{}-wal", layout::db_file_name(u(model.current)));
                    let size = rng.next_u64() % 5000;
                    store.set_file_size(&key, &wal, size).unwrap();
                    model.files.insert(wal, size);
                }
            }
            // Check the ledger against the model after every step.
            let ledger = store.ledger(u(1)).unwrap();
            let mut live = 0;
            let mut snaps = 0;
            let mut garbage = 0;
            for (f, size) in &model.files {
                if !model.referenced(f) {
                    garbage += size;
                } else if matches!(layout::classify(f), FileKind::Snapshot(_)) {
                    snaps += size;
                } else {
                    live += size;
                }
            }
            assert_eq!(
                (ledger.live_bytes, ledger.snapshot_bytes, ledger.garbage_bytes, ledger.in_flight_bytes),
                (live, snaps, garbage, 0),
                "{ctx}: ledger"
            );
            assert_eq!(store.pointer(&key).unwrap().file, u(model.current), "{ctx}");
            let ids: Vec<Uuid> = store.manifest(&key).unwrap().snapshots.iter().map(|s| s.id).collect();
            assert_eq!(ids, model.snapshots.iter().map(|s| u(*s)).collect::<Vec<_>>(), "{ctx}");
        }
    }
}

const TWO_DBS: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics","maxSizeMB":2},{"name":"events","maxSizeMB":1}],"tier":"standard"}}}"#;
const EVENTS_ONLY: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"events","maxSizeMB":1}],"tier":"standard"}}}"#;

#[test]
fn transcript_update_then_unregister_and_gc_of_what_they_retired() {
    let (mut store, key) = registered();
    store.set_file_size(&key, &layout::db_file_name(u(2)), 4096).unwrap();
    let plan = store.plan_update_app(u(1), Manifest::parse(TWO_DBS).unwrap(), &[u(5)], 3000).unwrap();
    insta::assert_snapshot!("update_app", plan.transcript());
    // While it runs, the app's databases are busy, and a second change is refused.
    assert!(store.held().busy.contains(&key));
    assert_eq!(store.plan_unregister_app(u(1)).map(|p| p.op).unwrap_err().code(), ErrorCode::Busy);
    store.complete(plan.op).unwrap();
    assert_eq!(store.max_size_bytes(&key).unwrap(), 2 * MIB);
    let events = DbKey { app: u(1), db: DbName::new("events").unwrap() };
    assert_eq!(store.pointer(&events).unwrap().file, u(5));

    // Dropping "analytics" retires its directory with its bytes; the ledger forgets them.
    let plan = store.plan_update_app(u(1), Manifest::parse(EVENTS_ONLY).unwrap(), &[], 4000).unwrap();
    store.complete(plan.op).unwrap();
    assert_eq!(store.retired(), vec![(layout::db_dir(u(1), &key.db), 4096)]);
    assert_eq!(store.ledger(u(1)).unwrap().used_bytes(), 0);
    // Adding it back before GC is refused: its old directory is still there.
    let back = store.plan_update_app(u(1), Manifest::parse(TWO_DBS).unwrap(), &[u(6)], 5000);
    assert_eq!(back.map(|p| p.op).unwrap_err().code(), ErrorCode::Busy);

    let plan = store.plan_unregister_app(u(1)).unwrap();
    insta::assert_snapshot!("unregister_app", plan.transcript());
    store.complete(plan.op).unwrap();
    assert!(store.apps().is_empty());
    assert_eq!(store.retired(), vec![(layout::app_dir(u(1)), 4096)]);

    let (plan, summary) = store.plan_gc();
    insta::assert_snapshot!("gc_retired", plan.transcript());
    assert_eq!(summary.bytes, 4096);
    store.complete(plan.op).unwrap();
    assert!(store.retired().is_empty());
    assert_eq!(store.held(), Held::default());
}

#[test]
fn an_update_that_does_not_fit_is_refused_and_marks_nothing() {
    let (mut store, key) = registered();
    store.set_file_size(&key, &layout::db_file_name(u(2)), 3 * MIB).unwrap();
    // Both databases fit their maxSizeMB, but 3 MB is over analytics' new 2 MB.
    let err = store.plan_update_app(u(1), Manifest::parse(TWO_DBS).unwrap(), &[u(5)], 3000).unwrap_err();
    assert_eq!(err.code(), ErrorCode::QuotaExceeded, "{err}");
    assert_eq!(store.held(), Held::default());
    // One file UUID per added database.
    let err = store.plan_update_app(u(1), Manifest::parse(TWO_DBS).unwrap(), &[], 3000).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    assert_eq!(store.plan_unregister_app(u(9)).map(|p| p.op).unwrap_err().code(), ErrorCode::NotFound);
}

#[test]
fn recovery_retires_unlisted_database_directories_and_unregistered_apps() {
    let (store, _) = registered();
    let record = store.app(u(1)).unwrap().clone();
    let file =
        |rel: &str, size: u64, content: Option<Vec<u8>>| ScannedFile { rel: rel.into(), size, content };
    let kept = AppScan {
        dir_name: u(1).hyphenated().to_string(),
        files: vec![
            file("app.json", 0, Some(record.encode())),
            file("db/ghost/current", 7, Some(b"partial".to_vec())),
            file("db/ghost/x.sqlite", 100, None),
        ],
        dirs: vec!["db".into(), "db/ghost".into(), "db/ghost/snapshots".into()],
    };
    let gone = AppScan {
        dir_name: u(8).hyphenated().to_string(),
        files: vec![file("app.json.removed", 0, None), file("db/a/y.sqlite", 50, None)],
        dirs: vec!["db".into(), "db/a".into()],
    };
    let (mut recovered, report, plan) = Store::recover(&Scan { apps: vec![kept, gone] });
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    assert_eq!(
        report.retired,
        vec![layout::db_dir(u(1), &DbName::new("ghost").unwrap()), layout::app_dir(u(8))]
    );
    // (The listed database has no records in this scan: damaged, and no business of GC.)
    assert!(report.unknown.is_empty() && report.damaged.len() == 1, "{report:?}");
    let (plan, summary) = recovered.plan_gc();
    assert_eq!(summary.bytes, 157);
    assert_eq!(plan.steps.iter().filter(|s| matches!(s, Step::RemoveTree(_))).count(), 2);
}
