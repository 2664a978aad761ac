//! Recovery on open, through the public API on the real filesystem: damaged records are
//! quarantined (reported, refused, never modified) while the rest of the workspace opens;
//! temp files are removed; orphans are listed, collected by GC and accounted in the ledger;
//! registrations that never committed are removed only when they hold no data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::store::Health;
use sila_sqlite::uuid::Uuid;
use sila_sqlite::workspace::{AppInfo, Workspace, WorkspaceOptions};
use sila_sqlite::ErrorCode;
use sila_sqlite_tests::{
    file_size, names, tree, write_pattern, TempDir, OTHER_MANIFEST, SPEC_MANIFEST, TWO_DB_MANIFEST,
};
use std::path::{Path, PathBuf};

const APP: &str = "com.example.notes";
const OTHER: &str = "org.other";

fn open(dir: &Path) -> Workspace {
    Workspace::open(dir, WorkspaceOptions::default()).unwrap()
}

/// A workspace holding two apps: `APP` (databases `analytics` and `cache`) and `OTHER`
/// (database `notes`). The workspace is closed again.
struct Fixture {
    tmp: TempDir,
    app: AppInfo,
}

impl Fixture {
    fn new(label: &str) -> Fixture {
        let tmp = TempDir::new(label);
        let ws = open(tmp.path());
        let app = ws.register_app(APP, TWO_DB_MANIFEST).unwrap();
        ws.register_app(OTHER, OTHER_MANIFEST).unwrap();
        Fixture { tmp, app }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// `apps/<uuid>/db/<db>`, relative to the workspace root (as reports name it).
    fn db_rel(&self, db: &str) -> PathBuf {
        Path::new("apps").join(self.app.app_uuid.hyphenated().to_string()).join("db").join(db)
    }

    fn db_dir(&self, db: &str) -> PathBuf {
        self.root().join(self.db_rel(db))
    }
}

fn pointer_code(ws: &Workspace, app: &str, db: &str) -> Result<(), ErrorCode> {
    let key = ws.db_key(app, db).unwrap();
    ws.with_store(|s| s.pointer(&key).map(|_| ()).map_err(|e| e.code()))
}

/// Opens the fixture's workspace with `analytics/<file>` damaged and checks the quarantine:
/// the workspace opens, the report names exactly that database as Corrupt (with a message
/// containing `fragment`), requests to it are refused, every other database works, and
/// neither recovery nor GC changed a byte on disk.
fn assert_quarantined(fx: &Fixture, file: &str, fragment: &str) {
    let before = tree(fx.root());
    let ws = open(fx.root());
    assert_eq!(tree(fx.root()), before, "recovery modified the disk");

    let report = ws.recovery_report();
    assert_eq!(report.damaged.len(), 1, "{:?}", report.damaged);
    let (path, err) = &report.damaged[0];
    assert_eq!(path, &fx.db_rel("analytics"));
    assert_eq!(err.code(), ErrorCode::Corrupt);
    assert!(err.message().contains(file), "the error names the record: {err}");
    assert!(err.message().contains(fragment), "expected {fragment:?} in: {err}");
    assert_eq!((report.apps, report.databases_ok), (2, 2));

    let key = ws.db_key(APP, "analytics").unwrap();
    assert_eq!(ws.with_store(|s| s.pointer(&key).map(|_| ()).map_err(|e| e.code())), Err(ErrorCode::Corrupt));
    assert_eq!(
        ws.with_store(|s| s.manifest(&key).map(|_| ()).map_err(|e| e.code())),
        Err(ErrorCode::Corrupt)
    );
    assert!(matches!(ws.with_store(|s| s.health(&key)), Ok(Health::Damaged(_))));
    assert_eq!(pointer_code(&ws, APP, "cache"), Ok(()));
    assert_eq!(pointer_code(&ws, OTHER, "notes"), Ok(()));

    // GC must not judge a database whose records it cannot trust: its live file stays.
    let summary = ws.gc().unwrap();
    assert!(summary.files.is_empty(), "{summary:?}");
    assert_eq!(tree(fx.root()), before, "GC modified the disk");
}

#[test]
fn a_flipped_bit_in_current_quarantines_that_database_only() {
    let fx = Fixture::new("flip-current");
    let path = fx.db_dir("analytics").join("current");
    let good = std::fs::read(&path).unwrap();
    // First byte, the middle (inside the file UUID), a checksum digit, the final line feed.
    for (byte, bit) in [(0, 0), (good.len() / 2, 3), (good.len() - 3, 1), (good.len() - 1, 7)] {
        let mut bad = good.clone();
        bad[byte] ^= 1 << bit;
        std::fs::write(&path, &bad).unwrap();
        assert_quarantined(&fx, "current", "");
        // Put the original back: the same database opens healthy, so the flip was the cause.
        std::fs::write(&path, &good).unwrap();
        let ws = open(fx.root());
        assert!(ws.recovery_report().damaged.is_empty(), "byte {byte} bit {bit}");
        assert_eq!(pointer_code(&ws, APP, "analytics"), Ok(()));
    }
}

#[test]
fn a_truncated_manifest_quarantines_that_database_only() {
    let fx = Fixture::new("truncate-manifest");
    let path = fx.db_dir("analytics").join("manifest");
    let good = std::fs::read(&path).unwrap();
    for len in [0, 1, good.len() / 2, good.len() - 1] {
        std::fs::write(&path, &good[..len]).unwrap();
        assert_quarantined(&fx, "manifest", "");
    }
    std::fs::write(&path, &good).unwrap();
    assert!(open(fx.root()).recovery_report().damaged.is_empty());
}

#[test]
fn an_unknown_pointer_version_is_reported_not_guessed() {
    let fx = Fixture::new("version-current");
    let path = fx.db_dir("analytics").join("current");
    let text = std::fs::read_to_string(&path).unwrap();
    // Change the version and re-seal the checksum, so only the version is wrong.
    let body = text.replacen("sila-current 1\n", "sila-current 2\n", 1);
    let body = &body[..body.len() - "crc32c 01234567\n".len()];
    let resealed = format!("{body}crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()));
    std::fs::write(&path, resealed).unwrap();
    assert_quarantined(&fx, "current", "format version 2 is not supported");
}

#[test]
fn a_damaged_app_record_quarantines_that_app_only() {
    let fx = Fixture::new("flip-app-record");
    let app_dir = fx.root().join("apps").join(fx.app.app_uuid.hyphenated().to_string());
    let path = app_dir.join("app.json");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    let before = tree(fx.root());
    let ws = open(fx.root());
    let report = ws.recovery_report();
    assert_eq!(report.damaged.len(), 1, "{:?}", report.damaged);
    assert_eq!(report.damaged[0].0, Path::new("apps").join(fx.app.app_uuid.hyphenated().to_string()));
    assert_eq!(report.damaged[0].1.code(), ErrorCode::Corrupt);
    assert_eq!(report.apps, 1);
    assert_eq!(ws.apps().iter().map(|a| a.app_id.as_str()).collect::<Vec<_>>(), vec![OTHER]);
    assert_eq!(pointer_code(&ws, OTHER, "notes"), Ok(()));
    ws.gc().unwrap();
    assert_eq!(tree(fx.root()), before, "a damaged app's directory is never touched");
}

#[test]
fn recovery_removes_temps_lists_orphans_and_gc_frees_them_with_an_exact_ledger() {
    let fx = Fixture::new("orphans");
    let dir = fx.db_dir("analytics");
    let live = {
        let ws = open(fx.root());
        let key = ws.db_key(APP, "analytics").unwrap();
        ws.with_store(|s| s.pointer(&key).unwrap().file)
    };
    let live_name = format!("{}.sqlite", live.hyphenated());
    // The live database and its WAL hold data; a flip that crashed left a pointer temp file;
    // an older version and its WAL are orphans; an operator dropped a file of their own.
    write_pattern(&dir.join(&live_name), 8192);
    write_pattern(&dir.join(format!("{live_name}-wal")), 4096);
    write_pattern(&dir.join("current.tmp"), 200);
    let orphan = Uuid::from_u128(0x0192_f0c4_8a6e_7c3d_9b1a_2f4e_5d6c_7b8a);
    let orphan_name = format!("{}.sqlite", orphan.hyphenated());
    write_pattern(&dir.join(&orphan_name), 12_345);
    write_pattern(&dir.join(format!("{orphan_name}-wal")), 100);
    write_pattern(&dir.join("notes.txt"), 10);

    let ws = open(fx.root());
    let report = ws.recovery_report().clone();
    let rel = fx.db_rel("analytics");
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(report.temps_removed, vec![rel.join("current.tmp")]);
    assert!(!dir.join("current.tmp").exists(), "recovery removes the temp file");
    assert_eq!(report.orphans, vec![rel.join(&orphan_name), rel.join(format!("{orphan_name}-wal"))]);
    assert_eq!(report.unknown, vec![rel.join("notes.txt")]);

    // The ledger counts data files, from their sizes on disk.
    let live_bytes = file_size(&dir.join(&live_name)) + file_size(&dir.join(format!("{live_name}-wal")));
    let garbage_bytes =
        file_size(&dir.join(&orphan_name)) + file_size(&dir.join(format!("{orphan_name}-wal")));
    let ledger = ws.ledger(APP).unwrap();
    assert_eq!(ledger.live_bytes, live_bytes);
    assert_eq!(ledger.garbage_bytes, garbage_bytes);
    assert_eq!((ledger.snapshot_bytes, ledger.in_flight_bytes), (0, 0));
    assert_eq!(ledger.used_bytes(), 8192 + 4096 + 12_345 + 100);

    let summary = ws.gc().unwrap();
    assert_eq!(summary.files, report.orphans);
    assert_eq!(summary.bytes, garbage_bytes);
    assert!(!dir.join(&orphan_name).exists() && !dir.join(format!("{orphan_name}-wal")).exists());
    assert!(dir.join(&live_name).exists() && dir.join("notes.txt").exists(), "GC removed a kept file");
    let ledger = ws.ledger(APP).unwrap();
    assert_eq!((ledger.live_bytes, ledger.garbage_bytes), (live_bytes, 0));

    let again = ws.gc().unwrap();
    assert!(again.files.is_empty() && again.bytes == 0, "a second GC frees nothing: {again:?}");

    // Recovery again finds nothing to do and changes nothing.
    drop(ws);
    let before = tree(fx.root());
    let ws = open(fx.root());
    let report = ws.recovery_report();
    assert!(report.temps_removed.is_empty() && report.orphans.is_empty(), "{report:?}");
    assert_eq!(tree(fx.root()), before);
    assert_eq!(ws.ledger(APP).unwrap().used_bytes(), live_bytes);
}

#[test]
fn an_uncommitted_registration_is_removed_only_when_it_holds_no_data() {
    // Without data: a registration that crashed before its app.json rename is removed.
    let tmp = TempDir::new("uncommitted-empty");
    let app = open(tmp.path()).register_app(APP, SPEC_MANIFEST).unwrap();
    let rel = Path::new("apps").join(app.app_uuid.hyphenated().to_string());
    std::fs::remove_file(tmp.path().join(&rel).join("app.json")).unwrap();
    let ws = open(tmp.path());
    assert_eq!(ws.recovery_report().incomplete_apps_removed, vec![rel.clone()]);
    assert!(ws.recovery_report().damaged.is_empty());
    assert!(names(&tmp.path().join("apps")).is_empty(), "the app directory is gone");
    assert!(ws.apps().is_empty());
    drop(ws);

    // With data: the same shape, but a database file is not empty. It is left alone.
    let tmp = TempDir::new("uncommitted-data");
    let ws = open(tmp.path());
    let app = ws.register_app(APP, SPEC_MANIFEST).unwrap();
    let key = ws.db_key(APP, "analytics").unwrap();
    let live = ws.with_store(|s| s.current_file_path(&key)).unwrap();
    drop(ws);
    write_pattern(&tmp.path().join(live), 4096);
    let rel = Path::new("apps").join(app.app_uuid.hyphenated().to_string());
    std::fs::remove_file(tmp.path().join(&rel).join("app.json")).unwrap();
    let before = tree(tmp.path());
    let ws = open(tmp.path());
    let report = ws.recovery_report();
    assert!(report.incomplete_apps_removed.is_empty());
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].0, rel);
    assert_eq!(report.damaged[0].1.code(), ErrorCode::Corrupt);
    assert!(ws.apps().is_empty());
    assert_eq!(tree(tmp.path()), before, "data without an app record is left for an operator");
}
