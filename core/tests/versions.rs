//! Versions through the public API: snapshot, restore with undo, import with validation,
//! export, backup, migrations, retention and GC. Every refusal leaves the database as it was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::store::Retention;
use sila_sqlite::versions::{ImportOptions, MigrationPlan, MigrationStep, RestoreOptions};
use sila_sqlite::{Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

mod support;
use support::{Call, FaultyFs, TempDir};

const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":2}],"tier":"standard"}}}"#;

/// A 64 MiB database (192 MiB of app quota), for tests whose space depends on how far a
/// concurrent writer gets.
const ROOMY_MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":64}],"tier":"standard"}}}"#;

fn setup(name: &str) -> (TempDir, Workspace, Database) {
    setup_with(name, MANIFEST)
}

fn setup_with(name: &str, manifest: &str) -> (TempDir, Workspace, Database) {
    let dir = TempDir::new(name);
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.notes", manifest).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    (dir, ws, db)
}

fn count(db: &Database) -> i64 {
    match db.query_value("SELECT count(*) FROM notes", &[]).unwrap() {
        Some(Value::Integer(n)) => n,
        other => panic!("{other:?}"),
    }
}

fn insert(db: &Database, n: i64) {
    for i in 0..n {
        db.exec("INSERT INTO notes(body) VALUES (?)", &[Value::Text(format!("note {i}"))]).unwrap();
    }
}

/// The files of the database's directory, with sizes (to prove a refusal changed nothing).
fn db_files(ws: &Workspace) -> Vec<(String, u64)> {
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let dir = ws.root().join(sila_sqlite::store::layout::db_dir(key.app, &key.db));
    let mut out = Vec::new();
    for sub in [dir.clone(), dir.join("snapshots")] {
        for e in std::fs::read_dir(&sub).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                let name = e.file_name().to_string_lossy().into_owned();
                // The live WAL and SHM change with any read; compare the rest.
                if !name.ends_with("-wal") && !name.ends_with("-shm") {
                    out.push((name, e.metadata().unwrap().len()));
                }
            }
        }
    }
    out.sort();
    out
}

fn make_sqlite(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn snapshot_and_restore_with_undo() {
    let (_d, ws, db) = setup("restore");
    insert(&db, 10);
    let snap = db.snapshot("ten notes").unwrap();
    assert_eq!(snap.label, "ten notes");
    assert!(snap.size > 0);
    insert(&db, 5);
    let listed = db.snapshots().unwrap();
    assert_eq!(listed, vec![snap.clone()]);
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let snap_file = ws.root().join(sila_sqlite::store::layout::snapshot_file(key.app, &key.db, snap.id));
    assert!(
        std::fs::metadata(&snap_file).unwrap().permissions().readonly(),
        "snapshots are read-only on disk"
    );

    let undo = db.restore(snap.id, RestoreOptions::default()).unwrap();
    assert_eq!(count(&db), 10, "restored to the snapshot");
    db.exec("INSERT INTO notes(body) VALUES ('after restore')", &[]).unwrap();
    assert_eq!(count(&db), 11);
    // The undo snapshot reverses the restore.
    db.restore(undo, RestoreOptions::default()).unwrap();
    assert_eq!(count(&db), 15);
    // Each replaced version became an undo snapshot, and the WAL SQLite removed as its last
    // connection closed is not counted: nothing is garbage.
    let before = ws.ledger("com.example.notes").unwrap();
    assert_eq!(before.garbage_bytes, 0, "{before:?}");
    let freed = ws.gc().unwrap();
    assert_eq!((freed.bytes, freed.files.len()), (0, 0), "{freed:?}");
    // A dropped snapshot is garbage; GC frees it and the ledger follows.
    db.drop_snapshot(snap.id).unwrap();
    let freed = ws.gc().unwrap();
    assert_eq!(freed.bytes, snap.size, "{freed:?}");
    let after = ws.ledger("com.example.notes").unwrap();
    assert_eq!(after.garbage_bytes, 0);
    assert_eq!(after.used_bytes(), before.used_bytes() - snap.size);
    assert_eq!(count(&db), 15, "GC never touches the live file");
}

/// Usage is current without a reopen or an operation: the ledger counts the live file and
/// its side files as they are on disk when it is read, as writes grow the WAL.
#[test]
fn ledger_follows_the_live_files_as_sqlite_changes_them() {
    let (_d, ws, db) = setup("ledger-live");
    let on_disk = |ws: &Workspace| -> u64 {
        let key = ws.db_key("com.example.notes", "main").unwrap();
        let dir = ws.root().join(sila_sqlite::store::layout::db_dir(key.app, &key.db));
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().contains(".sqlite"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let before = ws.ledger("com.example.notes").unwrap();
    assert_eq!(before.live_bytes, on_disk(&ws), "{before:?}");
    db.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
         INSERT INTO notes(body) SELECT hex(randomblob(200)) FROM n",
        &[],
    )
    .unwrap();
    let after = ws.ledger("com.example.notes").unwrap();
    assert!(after.live_bytes > before.live_bytes + 200 * 400, "{before:?} -> {after:?}");
    assert_eq!(after.live_bytes, on_disk(&ws), "{after:?}");
    assert!(after.side_bytes > 0, "the WAL holds the new rows: {after:?}");
}

#[test]
fn restore_refusals_change_nothing() {
    let (_d, ws, db) = setup("restore-refuse");
    insert(&db, 3);
    let snap = db.snapshot("s").unwrap();
    db.drop_snapshot(snap.id).unwrap();
    ws.gc().unwrap();
    // Taken after the snapshot: a snapshot checkpoints the WAL into the live file.
    let before = db_files(&ws);
    let e = db.restore(sila_sqlite::uuid::Uuid::from_u128(42), RestoreOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    let e = db.restore(snap.id, RestoreOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "a dropped snapshot cannot be restored");
    ws.gc().unwrap();
    assert_eq!(db_files(&ws), before);
    assert_eq!(count(&db), 3);

    // A snapshot of another schema version needs the caller's consent.
    let snap = db.snapshot("v0").unwrap();
    let plan = MigrationPlan {
        current_version: 1,
        steps: vec![MigrationStep {
            from: 0,
            to: 1,
            up: "ALTER TABLE notes ADD COLUMN tag TEXT".into(),
            down: "".into(),
        }],
    };
    db.migrate(&plan, false).unwrap();
    let e = db.restore(snap.id, RestoreOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.message().contains("allow_schema_change"), "{e}");
    assert_eq!(db.schema_version().unwrap(), 1);
    db.restore(snap.id, RestoreOptions { allow_schema_change: true }).unwrap();
    assert_eq!(db.schema_version().unwrap(), 0);
}

#[test]
fn import_accepts_a_good_file_and_names_the_failed_check_otherwise() {
    let (dir, ws, db) = setup("import");
    insert(&db, 2);
    let good = dir.0.join("good.sqlite");
    make_sqlite(&good, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('imported');");
    let before_source = std::fs::read(&good).unwrap();

    type Case = (&'static str, Box<dyn Fn(&Path)>, ErrorCode, &'static str);
    let cases: Vec<Case> = vec![
        (
            "random",
            Box::new(|p: &Path| std::fs::write(p, vec![0x5a; 8192]).unwrap()),
            ErrorCode::Corrupt,
            "header",
        ),
        (
            "truncated",
            Box::new(|p: &Path| {
                let bytes = std::fs::read(p.with_file_name("good.sqlite")).unwrap();
                std::fs::write(p, &bytes[..bytes.len() - 100]).unwrap();
            }),
            ErrorCode::Corrupt,
            "page_size",
        ),
        (
            "corrupt-page",
            Box::new(|p: &Path| {
                let mut bytes = std::fs::read(p.with_file_name("good.sqlite")).unwrap();
                // Trash the b-tree page of the table (page 2).
                for b in &mut bytes[4096..4096 + 64] {
                    *b = 0xff;
                }
                std::fs::write(p, bytes).unwrap();
            }),
            ErrorCode::Corrupt,
            "integrity_check",
        ),
        (
            "malicious",
            Box::new(|p: &Path| {
                make_sqlite(
                    p,
                    "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); \
                     CREATE TRIGGER evil AFTER INSERT ON notes BEGIN SELECT load_extension('/tmp/x.so'); END;",
                )
            }),
            ErrorCode::PolicyDenied,
            "schema",
        ),
        (
            "wal-without-checkpoint",
            Box::new(|p: &Path| {
                let conn = rusqlite::Connection::open(p).unwrap();
                conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE notes(x); INSERT INTO notes VALUES (1);").unwrap();
                // Copy the files while the WAL still holds the commits.
                let copy = p.with_extension("copy");
                std::fs::copy(p, &copy).unwrap();
                let mut wal = p.as_os_str().to_os_string();
                wal.push("-wal");
                let mut wal_copy = copy.as_os_str().to_os_string();
                wal_copy.push("-wal");
                std::fs::copy(&wal, &wal_copy).unwrap();
                drop(conn);
                std::fs::rename(&copy, p).unwrap();
                std::fs::rename(&wal_copy, &wal).unwrap();
            }),
            ErrorCode::InvalidArgument,
            "wal",
        ),
        (
            "big",
            Box::new(|p: &Path| {
                make_sqlite(p, "CREATE TABLE notes(x); INSERT INTO notes VALUES (zeroblob(3000000));")
            }),
            ErrorCode::QuotaExceeded,
            "",
        ),
    ];
    for (name, make, code, check) in cases {
        let path = dir.0.join(format!("{name}.sqlite"));
        make(&path);
        let before = db_files(&ws);
        let e = db.import(&path, ImportOptions::default()).unwrap_err();
        assert_eq!(e.code(), code, "{name}: {e}");
        assert!(e.message().contains(&format!("'{check}'")) || check.is_empty(), "{name}: {e}");
        assert_eq!(db_files(&ws), before, "{name}: the refusal changed the database directory");
        assert_eq!(count(&db), 2, "{name}");
    }
    let e = db.import(&dir.0.join("missing.sqlite"), ImportOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    let e = db.import(&good, ImportOptions { expected_tables: vec!["users".into()] }).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.message().contains("'expected_schema'"), "{e}");

    let report = db.import(&good, ImportOptions { expected_tables: vec!["notes".into()] }).unwrap();
    assert!(report.checks.contains(&"integrity_check") && report.checks.contains(&"journal_mode"));
    assert_eq!(db.query_value("SELECT body FROM notes", &[]).unwrap(), Some(Value::Text("imported".into())));
    assert_eq!(std::fs::read(&good).unwrap(), before_source, "the source file is never modified");
    db.exec("INSERT INTO notes(body) VALUES ('writable')", &[]).unwrap();
    assert_eq!(db.query_value("PRAGMA journal_mode", &[]).unwrap(), Some(Value::Text("wal".into())));

    // The import kept what it replaced: restoring its undo snapshot brings the two rows back.
    let undo = db.snapshots().unwrap().into_iter().find(|s| s.id == report.undo).unwrap();
    assert!(undo.label.starts_with("undo of import of"), "{}", undo.label);
    db.restore(report.undo, RestoreOptions { allow_schema_change: true }).unwrap();
    assert_eq!(count(&db), 2, "the undo snapshot holds the data the import replaced");
}

#[test]
fn export_and_backup_make_standalone_files() {
    let (dir, ws, db) = setup("export");
    insert(&db, 7);
    let dest = dir.0.join("out.sqlite");
    db.export_to_path(&dest).unwrap();
    let conn = rusqlite::Connection::open(&dest).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 7);
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    assert_eq!(db.export_to_path(&dest).unwrap_err().code(), ErrorCode::AlreadyExists);
    // Apps export only into their own area, by name.
    let path = db.export("monthly").unwrap();
    let key = ws.db_key("com.example.notes", "main").unwrap();
    assert!(path.starts_with(ws.root().join(sila_sqlite::store::layout::app_dir(key.app))));
    assert_eq!(db.export("../../etc/x").unwrap_err().code(), ErrorCode::InvalidName);
    assert_eq!(db.export("/tmp/x").unwrap_err().code(), ErrorCode::InvalidName);
    // Backups keep the newest N.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(db.backup(2).unwrap());
    }
    let backup_dir = ids[3].1.parent().unwrap().to_path_buf();
    let left = std::fs::read_dir(&backup_dir).unwrap().count();
    assert_eq!(left, 2);
    assert!(ids[3].1.exists() && ids[2].1.exists() && !ids[0].1.exists());
}

fn five_steps(bad_step: Option<usize>) -> MigrationPlan {
    let ups = [
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT)",
        "ALTER TABLE notes ADD COLUMN tag_id INTEGER REFERENCES tags(id)",
        "CREATE INDEX idx_notes_tag ON notes(tag_id)",
        "INSERT INTO tags(name) VALUES ('inbox')",
        "CREATE TABLE archive (id INTEGER PRIMARY KEY)",
    ];
    let downs = [
        "DROP TABLE tags",
        "ALTER TABLE notes DROP COLUMN tag_id",
        "DROP INDEX idx_notes_tag",
        "DELETE FROM tags",
        "DROP TABLE archive",
    ];
    let steps = (0..5)
        .map(|i| MigrationStep {
            from: i as u64,
            to: i as u64 + 1,
            up: if Some(i) == bad_step { "CREATE TABLE broken (".to_string() } else { ups[i].to_string() },
            down: downs[i].to_string(),
        })
        .collect();
    MigrationPlan { current_version: 5, steps }
}

fn tables(db: &Database) -> Vec<Value> {
    db.query("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name", &[])
        .unwrap()
        .rows
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect()
}

#[test]
fn migrations_validate_roll_back_and_record() {
    let (_d, ws, db) = setup("migrate");
    insert(&db, 3);
    let before = tables(&db);
    let snaps_before = db.snapshots().unwrap().len();
    // Broken chains are refused before anything is touched (not even a snapshot).
    let mut gap = five_steps(None);
    gap.steps.remove(2);
    let mut dup = five_steps(None);
    dup.steps.push(MigrationStep { from: 1, to: 2, up: "SELECT 1".into(), down: "".into() });
    let mut cycle = five_steps(None);
    cycle.steps.push(MigrationStep { from: 7, to: 6, up: "SELECT 1".into(), down: "".into() });
    for (name, plan, word) in
        [("gap", gap, "gap"), ("duplicate", dup, "duplicate"), ("cycle", cycle, "cycle")]
    {
        let e = db.migrate(&plan, false).unwrap_err();
        assert_eq!(e.code(), ErrorCode::MigrationFailed, "{name}");
        assert!(e.message().contains(word), "{name}: {e}");
    }
    assert_eq!(db.snapshots().unwrap().len(), snaps_before);

    // Failing SQL in step 3 of 5: everything rolls back, the error names the step.
    let e = db.migrate(&five_steps(Some(2)), false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MigrationFailed);
    assert!(e.message().contains("step 3 of 5 (2→3)") && e.message().contains("incomplete input"), "{e}");
    assert_eq!(tables(&db), before);
    assert_eq!(db.schema_version().unwrap(), 0);

    // A dry run reports and changes nothing.
    let report = db.migrate(&five_steps(None), true).unwrap();
    assert!(report.dry_run && report.applied.len() == 5);
    assert_eq!(tables(&db), before);
    assert_eq!(db.schema_version().unwrap(), 0);

    // The real run: auto-snapshot, all steps, recorded.
    let report = db.migrate(&five_steps(None), false).unwrap();
    assert_eq!((report.from, report.to), (0, 5));
    assert!(report.snapshot.is_some());
    assert_eq!(db.schema_version().unwrap(), 5);
    assert_eq!(count(&db), 3);
    let history =
        db.query("SELECT version, direction, checksum FROM _sila_meta ORDER BY rowid", &[]).unwrap();
    assert_eq!(history.rows.len(), 5);

    // A step edited after it was applied is detected.
    let mut edited = five_steps(None);
    edited.steps[0].up = "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL)".into();
    let e = db.migrate(&edited, false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MigrationFailed);
    assert!(e.message().contains("edited after it was applied"), "{e}");

    // Downgrade through the down steps.
    let mut down = five_steps(None);
    down.current_version = 3;
    let report = db.migrate(&down, false).unwrap();
    assert_eq!(report.applied, vec![(5, 4), (4, 3)]);
    assert_eq!(db.schema_version().unwrap(), 3);
    assert!(!tables(&db).contains(&Value::Text("archive".into())));
    let _ = ws;
}

#[test]
fn a_migration_that_violates_a_foreign_key_is_rolled_back() {
    let (_d, _ws, db) = setup("fk");
    insert(&db, 1);
    let plan = MigrationPlan {
        current_version: 2,
        steps: vec![
            MigrationStep {
                from: 0,
                to: 1,
                up: "CREATE TABLE parent (id INTEGER PRIMARY KEY)".into(),
                down: "".into(),
            },
            MigrationStep {
                from: 1,
                to: 2,
                up: "CREATE TABLE child (p INTEGER REFERENCES parent(id)); INSERT INTO child VALUES (99)"
                    .into(),
                down: "".into(),
            },
        ],
    };
    let e = db.migrate(&plan, false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MigrationFailed, "{e}");
    assert!(e.message().contains("FOREIGN KEY") || e.message().contains("foreign key"), "{e}");
    assert_eq!(db.schema_version().unwrap(), 0);
    assert!(!tables(&db).contains(&Value::Text("parent".into())));
}

#[test]
fn plan_json_has_the_sdk_shape() {
    let plan = MigrationPlan::from_json(
        r#"{"currentVersion":2,"steps":[{"from":0,"to":1,"up":"CREATE TABLE a(x)","down":"DROP TABLE a"},{"from":1,"to":2,"up":"CREATE INDEX i ON a(x)","down":"DROP INDEX i"}]}"#,
    )
    .unwrap();
    assert_eq!(plan.current_version, 2);
    assert_eq!(plan.steps[1].down, "DROP INDEX i");
    assert_eq!(MigrationPlan::from_json("{}").unwrap_err().code(), ErrorCode::InvalidArgument);
}

#[test]
fn retention_drops_old_snapshots_and_gc_frees_them() {
    let (_d, ws, db) = setup("retention");
    insert(&db, 5);
    let a = db.snapshot("a").unwrap();
    let b = db.snapshot("b").unwrap();
    let c = db.snapshot("c").unwrap();
    let dropped = db.apply_retention(Retention { keep_last: Some(1), max_age_ms: None }).unwrap();
    assert_eq!(dropped, vec![a.id, b.id]);
    assert_eq!(db.snapshots().unwrap(), vec![c]);
    let freed = ws.gc().unwrap();
    assert_eq!(freed.bytes, a.size + b.size);
    assert!(db.apply_retention(Retention { keep_last: Some(1), max_age_ms: None }).unwrap().is_empty());
}

#[test]
fn snapshot_over_quota_is_refused_before_any_io() {
    let (_d, ws, db) = setup("snapquota");
    // maxSizeMB 2, storage factor 3: 6 MiB for the app. Fill the database near 2 MiB.
    db.exec("CREATE TABLE big (b BLOB)", &[]).unwrap();
    for _ in 0..9 {
        db.exec("INSERT INTO big VALUES (zeroblob(200000))", &[]).unwrap();
    }
    let mut taken = 0;
    let err = loop {
        match db.snapshot("fill") {
            Ok(_) => taken += 1,
            Err(e) => break e,
        }
        assert!(taken < 10, "the quota never refused");
    };
    assert_eq!(err.code(), ErrorCode::QuotaExceeded, "{err}");
    let q = err.quota().unwrap();
    let ledger = ws.ledger("com.example.notes").unwrap();
    assert_eq!(q.limit_bytes, ledger.quota_bytes);
    assert_eq!(ledger.in_flight_bytes, 0, "the refusal reserved nothing");
    assert_eq!(db.snapshots().unwrap().len(), taken);
}

/// The ids in a snapshot file, read with plain rusqlite (no sila, no WAL): it must open as a
/// self-contained file and pass integrity_check.
fn snapshot_ids(ws: &Workspace, id: sila_sqlite::uuid::Uuid) -> Vec<i64> {
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let path = ws.root().join(sila_sqlite::store::layout::snapshot_file(key.app, &key.db, id));
    let conn =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete", "a snapshot is a rollback-journal file");
    let mut stmt = conn.prepare("SELECT id FROM notes ORDER BY id").unwrap();
    let ids = stmt.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect();
    drop(stmt);
    drop(conn);
    let mut wal = path.into_os_string();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "reading a snapshot leaves no WAL beside it");
    ids
}

#[test]
fn snapshots_under_concurrent_writes_are_consistent_prefixes() {
    // Room for the WAL the writer grows (up to the 4 MiB checkpoint threshold) at every
    // snapshot, however fast it runs (see the restore test below).
    let (_d, ws, db) = setup_with("snapshot-concurrent", ROOMY_MANIFEST);
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, acked, stop) = (db.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            for id in 1..=20_000i64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                db.exec("INSERT INTO notes(id, body) VALUES (?1, 'x')", &[Value::Integer(id)]).unwrap();
                acked.store(id, Ordering::SeqCst);
            }
        })
    };
    let mut taken = Vec::new();
    for _ in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(15));
        let before = acked.load(Ordering::SeqCst);
        let snap = db.snapshot("live").unwrap();
        let after = acked.load(Ordering::SeqCst);
        taken.push((snap.id, before, after));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    for (id, before, after) in &taken {
        let ids = snapshot_ids(&ws, *id);
        let n = ids.len() as i64;
        assert_eq!(ids, (1..=n).collect::<Vec<_>>(), "a snapshot holds a gap-free prefix of the commits");
        assert!(n >= *before && n <= *after + 1, "snapshot of {n} rows taken between {before} and {after}");
    }
    let m = db.stats().metrics;
    assert_eq!(
        m.snapshots_by_copy,
        taken.len() as u64,
        "with no reader behind, every snapshot is a file copy"
    );
    assert_eq!(m.snapshots_by_backup, 0);
    // The live database kept every write and is still whole.
    assert_eq!(count(&db), acked.load(Ordering::SeqCst));
}

#[test]
fn a_restore_keeps_the_replaced_file_as_its_undo_without_copying() {
    let (_d, ws, db) = setup("restore-adopt");
    insert(&db, 4);
    let snap = db.snapshot("four").unwrap();
    insert(&db, 3);
    let undo = db.restore(snap.id, RestoreOptions::default()).unwrap();
    assert_eq!(count(&db), 4);
    // The undo is a self-contained, read-only rollback-journal file with the 7 rows.
    assert_eq!(snapshot_ids(&ws, undo), (1..=7).collect::<Vec<_>>());
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let undo_file = ws.root().join(sila_sqlite::store::layout::snapshot_file(key.app, &key.db, undo));
    assert!(std::fs::metadata(&undo_file).unwrap().permissions().readonly());
    // It was the replaced file, renamed: the database directory holds only the new live file.
    let db_dir = ws.root().join(sila_sqlite::store::layout::db_dir(key.app, &key.db));
    let live: Vec<String> = std::fs::read_dir(&db_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sqlite"))
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    let m = db.stats().metrics;
    assert_eq!((m.snapshots_by_copy, m.snapshots_by_backup), (2, 0), "one snapshot, one kept file");
    // Nothing was written during the restore: the undo's checksum was taken on a second
    // thread while the snapshot was copied, not by reading the file again after the flip.
    assert_eq!(m.undo_sums_while_copying, 1);
    // GC has nothing of the replaced version left to free but its side files, and the ledger
    // agrees with the disk.
    ws.gc().unwrap();
    let ledger = ws.ledger("com.example.notes").unwrap();
    assert_eq!(ledger.garbage_bytes, 0);
    let on_disk: u64 = db_files(&ws).iter().filter(|(n, _)| n.ends_with(".sqlite")).map(|(_, s)| s).sum();
    assert_eq!(ledger.live_bytes + ledger.snapshot_bytes, on_disk, "{ledger:?}");
    // Undoing the restore brings all 7 rows back; its own undo is the 4-row version.
    // (The restore verifies the undo's checksum on the bytes it copies: a wrong early
    // checksum would fail here as CORRUPT.)
    let redo = db.restore(undo, RestoreOptions::default()).unwrap();
    assert_eq!(count(&db), 7);
    assert_eq!(snapshot_ids(&ws, redo), (1..=4).collect::<Vec<_>>());
    assert_eq!(db.stats().metrics.undo_sums_while_copying, 2);
}

#[test]
fn restores_under_concurrent_writes_lose_no_acknowledged_write_and_their_undos_verify() {
    // Each restore reserves room for the live file and its WAL, which the writer grows up to
    // the checkpoint threshold (4 MiB) however fast it runs: a 64 MiB database (192 MiB of
    // quota) leaves room for that at every restore on any machine.
    let (_d, ws, db) = setup_with("restore-concurrent", ROOMY_MANIFEST);
    insert(&db, 50);
    let base = db.snapshot("base").unwrap();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, acked, stop) = (db.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            // At most 20,000 rows (a few hundred KiB a copy): base, five undos and the live
            // file fit the app's 6 MiB however fast the writer is.
            for id in 1_000..=21_000i64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                db.exec("INSERT INTO notes(id, body) VALUES (?1, 'w')", &[Value::Integer(id)]).unwrap();
                acked.store(id, Ordering::SeqCst);
            }
        })
    };
    let mut undos = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        undos.push(db.restore(base.id, RestoreOptions::default()).unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let last = acked.load(Ordering::SeqCst);
    // Every acknowledged write is in the live file or in one of the undo snapshots (a restore
    // replaces what was written before it, and its undo keeps that).
    let mut seen: std::collections::BTreeSet<i64> =
        snapshot_ids(&ws, base.id).into_iter().filter(|id| *id >= 1_000).collect();
    for undo in &undos {
        seen.extend(snapshot_ids(&ws, *undo).into_iter().filter(|id| *id >= 1_000));
    }
    let live = db.query("SELECT id FROM notes WHERE id >= 1000", &[]).unwrap();
    for row in live.rows {
        if let Some(Value::Integer(id)) = row.first() {
            seen.insert(*id);
        }
    }
    let missing: Vec<i64> = (1_000..=last).filter(|id| !seen.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    // Each undo restores: its recorded checksum matches its bytes, whichever way it was taken.
    // Each restore's own undo is dropped and collected, so the space needed does not depend on
    // how many rows the writer got in (the machine's speed).
    for undo in undos {
        let redo = db.restore(undo, RestoreOptions::default()).unwrap();
        db.drop_snapshot(redo).unwrap();
        ws.gc().unwrap();
    }
}

fn gunzip(path: &Path) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn compressed_exports_and_backups_open_after_gunzip_and_import_as_they_are() {
    use sila_sqlite::versions::ExportFormat;
    let (dir, _ws, db) = setup("gzip");
    insert(&db, 50);
    let path = db.export_as("mine", ExportFormat::SqliteGzip).unwrap();
    assert!(path.to_string_lossy().ends_with("/exports/mine.sqlite.gz"), "{}", path.display());
    let plain = gunzip(&path);
    assert!(plain.len() as u64 > std::fs::metadata(&path).unwrap().len(), "it is compressed");
    let unpacked = dir.0.join("unpacked.sqlite");
    std::fs::write(&unpacked, &plain).unwrap();
    let conn = rusqlite::Connection::open(&unpacked).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0)).unwrap();
    assert_eq!((ok.as_str(), n), ("ok", 50));
    drop(conn);
    let exports = path.parent().unwrap();
    let names: Vec<String> = std::fs::read_dir(exports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["mine.sqlite.gz".to_string()], "no partial file is left behind");

    // Import takes the compressed file as it is.
    insert(&db, 5);
    let report = db.import(&path, ImportOptions::default()).unwrap();
    assert_eq!(report.checks.first(), Some(&"gzip"));
    assert_eq!(count(&db), 50);

    // Backups: the newest `keep_last` are kept, compressed or not.
    for _ in 0..3 {
        db.backup_as(2, ExportFormat::SqliteGzip).unwrap();
    }
    let (_, last) = db.backup(2).unwrap();
    let backups: Vec<String> = std::fs::read_dir(last.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(backups.len(), 2, "{backups:?}");
    assert_eq!(backups.iter().filter(|n| n.ends_with(".sqlite.gz")).count(), 1, "{backups:?}");
}

#[test]
fn a_damaged_or_oversized_compressed_import_changes_nothing() {
    use sila_sqlite::versions::ExportFormat;
    let (dir, ws, db) = setup("gzip-bad");
    insert(&db, 3);
    let good = std::fs::read(db.export_as("good", ExportFormat::SqliteGzip).unwrap()).unwrap();
    let before = db_files(&ws);

    let truncated = dir.0.join("truncated.sqlite.gz");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let e = db.import(&truncated, ImportOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    assert!(e.message().contains("'gzip'"), "{e}");

    // 3 MiB of zeros compress to a few KiB; the database allows 2 MiB.
    let bomb = dir.0.join("bomb.sqlite.gz");
    std::fs::write(&bomb, gzip(&vec![0u8; 3 << 20])).unwrap();
    let e = db.import(&bomb, ImportOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");

    // Compressed garbage passes gzip and fails the SQLite header check.
    let junk = dir.0.join("junk.sqlite.gz");
    std::fs::write(&junk, gzip(&[0x5a; 8192])).unwrap();
    let e = db.import(&junk, ImportOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    assert!(e.message().contains("'header'"), "{e}");

    ws.gc().unwrap();
    assert_eq!(db_files(&ws), before);
    assert_eq!(count(&db), 3);
}

/// Snapshot and restore on a filesystem with reflinks (XFS, Btrfs) clone instead of copying.
/// Set `SILA_REFLINK_DIR` to a directory on such a filesystem (`.ci/run` mounts an XFS image
/// when it can) to run it there; elsewhere the same calls must fall back to copies cleanly.
#[test]
fn snapshot_and_restore_clone_where_the_filesystem_can_and_copy_elsewhere() {
    let reflink_dir = std::env::var_os("SILA_REFLINK_DIR").map(PathBuf::from);
    let dir = match &reflink_dir {
        Some(d) => {
            let dir = d.join(format!("sila-reflink-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        None => TempDir::new("reflink"),
    };
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    insert(&db, 20);
    let snap = db.snapshot("twenty").unwrap();
    insert(&db, 5);
    assert_eq!(snapshot_ids(&ws, snap.id), (1..=20).collect::<Vec<_>>());
    db.restore(snap.id, RestoreOptions::default()).unwrap();
    assert_eq!(count(&db), 20);
    db.exec("INSERT INTO notes(body) VALUES ('after')", &[]).unwrap();
    assert_eq!(snapshot_ids(&ws, snap.id), (1..=20).collect::<Vec<_>>(), "the clone's writes never reach it");
    let reflinks = db.stats().metrics.reflinks;
    match reflink_dir {
        Some(d) => assert_eq!(reflinks, 2, "snapshot and restore both cloned on {}", d.display()),
        None => println!("note: SILA_REFLINK_DIR unset; {reflinks} reflinks on the default temp dir"),
    }
}

/// A file whose reads see a zeroed SQLite header.
struct ZeroedHeader(Box<dyn sila_sqlite::vfs::VfsFile>);

impl sila_sqlite::vfs::VfsFile for ZeroedHeader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> sila_sqlite::vfs::VfsResult<usize> {
        let n = self.0.read_at(buf, offset)?;
        for (i, byte) in buf.iter_mut().take(n).enumerate() {
            if offset + (i as u64) < 16 {
                *byte = 0;
            }
        }
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> sila_sqlite::vfs::VfsResult<usize> {
        self.0.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> sila_sqlite::vfs::VfsResult<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> sila_sqlite::vfs::VfsResult<u64> {
        self.0.len()
    }
    fn sync(&self) -> sila_sqlite::vfs::VfsResult<()> {
        self.0.sync()
    }
}

/// The flip is a restore's commit point: when keeping the undo fails after it (here with a
/// non-IO error), the restore has taken effect though the caller got an error, so the
/// database must refuse work until a reopen instead of serving a state it reported failed.
#[test]
fn a_restore_whose_undo_fails_after_the_flip_poisons_the_database() {
    let dir = TempDir::new("restore-undo-fails");
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    // Once armed, reads of a snapshot opened for writing (only a restore's adoption of the
    // replaced file as its undo does that) see a zeroed SQLite header.
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on = armed.clone();
    let vfs = std::sync::Arc::new(FaultyFs::wrapping(move |path, mode, file| {
        let in_snapshots = path.parent().and_then(Path::file_name).is_some_and(|d| d == "snapshots");
        if in_snapshots && mode == sila_sqlite::vfs::OpenMode::ReadWrite && on.load(Ordering::SeqCst) {
            return Box::new(ZeroedHeader(file));
        }
        file
    }));
    let ws = Workspace::open_with(vfs.clone(), root.clone(), WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    insert(&db, 4);
    let snap = db.snapshot("four").unwrap();
    insert(&db, 3);
    armed.store(true, Ordering::SeqCst);
    let err = db.restore(snap.id, RestoreOptions::default()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Corrupt, "{err}");
    let refused = db.query("SELECT count(*) FROM notes", &[]).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Poisoned, "{refused}");
    assert!(err.message().contains("took effect"), "{err}");
    assert_eq!(db.exec("INSERT INTO notes(body) VALUES ('x')", &[]).unwrap_err().code(), ErrorCode::Poisoned);
    // The store knows too: it refuses the database's plans, and its health says why.
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let health = ws.with_store(|s| s.health(&key)).unwrap();
    assert!(
        matches!(&health, sila_sqlite::store::Health::Poisoned(why) if why.contains("took effect")),
        "{health:?}"
    );
    drop(db);
    drop(ws);
    let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    assert_eq!(count(&db), 4, "the restore took effect at its flip");
}

/// Whether a path lies in an export area or the backup area.
fn in_export_or_backup_area(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "exports" || c.as_os_str() == "backups")
}

fn is_partial(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    sila_sqlite::store::layout::partial_of(&name).is_some()
}

/// Every file below `dir`, recursively, sorted.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The files of the export area and the backup area.
fn export_and_backup_files(ws: &Workspace) -> Vec<PathBuf> {
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let mut out = files_below(&ws.root().join(sila_sqlite::store::layout::exports_dir(key.app)));
    out.extend(files_below(&ws.root().join("backups")));
    out
}

/// Asserts that an export or backup file is a complete database of `notes` rows.
fn assert_complete(path: &Path, notes: i64) {
    let plain = if path.to_string_lossy().ends_with(".gz") {
        let unpacked = path.with_extension("check");
        std::fs::write(&unpacked, gunzip(path)).unwrap();
        unpacked
    } else {
        path.to_path_buf()
    };
    let read = || -> rusqlite::Result<(String, i64)> {
        let conn = rusqlite::Connection::open_with_flags(&plain, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        let n: i64 = conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))?;
        Ok((ok, n))
    };
    let len = std::fs::metadata(path).unwrap().len();
    match read() {
        Ok((ok, n)) => assert_eq!((ok.as_str(), n), ("ok", notes), "{} is complete", path.display()),
        Err(e) => panic!("{} ({len} bytes) is not a complete database: {e}", path.display()),
    }
    if plain != path {
        std::fs::remove_file(plain).unwrap();
    }
}

/// Runs `op` (an export or a backup) once per call it makes into the export and backup areas,
/// failing that call, or with `crash`, that call and every later one (as a machine that stops
/// there: no cleanup reaches the disk). Then it reopens the workspace on the real filesystem
/// and checks what is left: every file under a final name is complete, and GC removes every
/// temporary and reports it. With `strict`, a failed `op` must have left no file at all.
fn check_every_fault_point(
    name: &str,
    crash: bool,
    strict: bool,
    op: impl Fn(&Database) -> sila_sqlite::Result<PathBuf>,
) {
    const NOTES: i64 = 40;
    let dir = TempDir::new(name);
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    {
        let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
        ws.register_app("com.example.notes", MANIFEST).unwrap();
        let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
        db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
        insert(&db, NOTES);
    }
    for fault_at in 1..200usize {
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, on) = (calls.clone(), armed.clone());
        let rule = move |call: &Call<'_>| {
            // Recovery's scan on open lists the export area too; only the operation counts.
            if !on.load(Ordering::SeqCst) || !in_export_or_backup_area(call.path) {
                return false;
            }
            let mut seen = seen.lock().unwrap();
            seen.push(format!("{} {} @{}", call.op, call.path.display(), call.offset));
            seen.len() == fault_at || (crash && seen.len() > fault_at)
        };
        let vfs = std::sync::Arc::new(FaultyFs::failing(rule));
        let result = {
            let ws = Workspace::open_with(vfs, root.clone(), WorkspaceOptions::default()).unwrap();
            let before = export_and_backup_files(&ws);
            let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
            armed.store(true, Ordering::SeqCst);
            let result = op(&db);
            armed.store(false, Ordering::SeqCst);
            if strict && result.is_err() {
                assert_eq!(
                    export_and_backup_files(&ws),
                    before,
                    "a failed operation leaves nothing (fault at {fault_at})"
                );
            }
            result
        };
        let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
        let (partials, complete): (Vec<PathBuf>, Vec<PathBuf>) =
            export_and_backup_files(&ws).into_iter().partition(|p| is_partial(p));
        for path in &complete {
            assert_complete(path, NOTES);
        }
        let freed = ws.gc().unwrap();
        let freed_partials: Vec<PathBuf> =
            freed.files.iter().filter(|p| is_partial(p)).map(|p| ws.root().join(p)).collect();
        let mut sorted = freed_partials.clone();
        sorted.sort();
        assert_eq!(sorted, partials, "GC removes and reports every temporary (fault at {fault_at})");
        assert!(export_and_backup_files(&ws).iter().all(|p| !is_partial(p)));
        let calls = calls.lock().unwrap();
        if let Ok(path) = &result {
            assert!(complete.contains(path), "{}", path.display());
            let Some(faulted) = calls.get(fault_at - 1) else { return };
            // Only the best-effort removal of a temporary may fail unseen (GC removed it).
            assert!(faulted.starts_with("remove_file") && faulted.contains(".partial"), "{calls:#?}");
        }
        // The next run exports anew under the same name (a crash after the rename may have
        // left the complete file).
        for path in complete.iter().filter(|p| p.to_string_lossy().contains("/exports/")) {
            std::fs::remove_file(path).unwrap();
        }
    }
    panic!("{name}: the operation never completed");
}

#[test]
fn an_export_failing_at_any_step_leaves_no_file_behind() {
    use sila_sqlite::versions::ExportFormat;
    for format in [ExportFormat::Sqlite, ExportFormat::SqliteGzip] {
        check_every_fault_point("export-fault", false, true, |db| db.export_as("faulty", format));
    }
}

/// Without the temporary name, a crash left a truncated file under the final name (and a
/// truncated newest backup could push a good one out of retention).
#[test]
fn a_crash_at_any_step_of_an_export_or_backup_leaves_only_complete_files_and_gc_removes_the_rest() {
    use sila_sqlite::versions::ExportFormat;
    for format in [ExportFormat::Sqlite, ExportFormat::SqliteGzip] {
        check_every_fault_point("export-crash", true, false, |db| db.export_as("crashed", format));
        check_every_fault_point("backup-crash", true, false, |db| db.backup_as(2, format).map(|(_, p)| p));
    }
}

#[test]
fn gc_removes_leftover_temporaries_of_exports_and_backups_and_nothing_else() {
    use sila_sqlite::versions::ExportFormat;
    let (_d, ws, db) = setup("partial-leftovers");
    insert(&db, 5);
    let export = db.export_as("monthly", ExportFormat::SqliteGzip).unwrap();
    let refused = db.export_as("monthly", ExportFormat::SqliteGzip).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::AlreadyExists, "{refused}");
    assert_eq!(export_and_backup_files(&ws), vec![export.clone()], "a refused export creates nothing");
    let (_, backup) = db.backup(1).unwrap();
    let exports = export.parent().unwrap();
    let backups = backup.parent().unwrap();
    // What a crash leaves: temporaries of both areas, and a journal SQLite kept beside one.
    let id = "01890000-0000-7000-8000-000000000000";
    let leftovers = [
        exports.join(format!("monthly.sqlite.gz.{id}.partial")),
        exports.join(format!("weekly.sqlite.{id}.partial")),
        exports.join(format!("weekly.sqlite.{id}.partial-journal")),
        backups.join(format!("{id}.sqlite.{id}.partial")),
    ];
    for (i, path) in leftovers.iter().enumerate() {
        std::fs::write(path, vec![7u8; 100 * (i + 1)]).unwrap();
    }
    // Retention counts complete backups only: the temporary neither counts nor is dropped.
    let (_, newest) = db.backup(1).unwrap();
    assert!(!backup.exists() && newest.exists() && leftovers[3].exists());
    let complete: Vec<(PathBuf, Vec<u8>)> = [export.clone(), newest.clone()]
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();

    let freed = ws.gc().unwrap();
    for path in &leftovers {
        assert!(!path.exists(), "{} is removed", path.display());
        assert!(freed.files.contains(&path.strip_prefix(ws.root()).unwrap().to_path_buf()), "{freed:?}");
    }
    assert!(freed.bytes >= 1000, "{freed:?}");
    for (path, bytes) in &complete {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{} is untouched", path.display());
    }
    assert_eq!(export_and_backup_files(&ws), vec![export, newest]);
    assert_eq!(ws.gc().unwrap().files, Vec::<PathBuf>::new(), "nothing left to free");
}

/// A source that cannot be read is the filesystem's failure (`IO`), not a damaged file: only
/// bad gzip data is `CORRUPT` naming the 'gzip' check (see
/// `a_damaged_or_oversized_compressed_import_changes_nothing`). And it is the caller's file
/// that failed, not the workspace's: the database is not poisoned, keeps serving reads and
/// writes at once, and is exactly as before.
#[test]
fn a_read_error_in_an_import_source_is_io_and_leaves_the_database_serving() {
    let dir = TempDir::new("source-unreadable");
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    // Noise compresses badly: the decoder must read well past its first buffer to finish.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    let compressed = dir.0.join("unreadable.sqlite.gz");
    std::fs::write(&compressed, gzip(&noise)).unwrap();
    let compressed_len = std::fs::metadata(&compressed).unwrap().len();
    assert!(compressed_len > 128 * 1024, "{compressed_len}");
    // A valid database larger than one copy chunk (1 MiB), so the copy reads it in several
    // calls, and under the manifest's 2 MB cap.
    let plain = dir.0.join("unreadable.sqlite");
    make_sqlite(
        &plain,
        "PRAGMA page_size=4096; CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3500) \
         INSERT INTO notes(body) SELECT hex(randomblob(200)) FROM n;",
    );
    let plain_len = std::fs::metadata(&plain).unwrap().len();
    assert!(plain_len > 1024 * 1024 && plain_len < 2_000_000, "{plain_len}");
    let (gz, pl) = (compressed.clone(), plain.clone());
    // The first bytes (the magic) and the gzip size trailer read fine; the bodies do not.
    let rule = move |call: &Call<'_>| {
        call.op == "read"
            && ((call.path == gz && call.offset > 0 && call.offset + 4 < compressed_len)
                || (call.path == pl && call.offset > 0))
    };
    let vfs = std::sync::Arc::new(FaultyFs::failing(rule));
    let ws = Workspace::open_with(vfs, root.clone(), WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    insert(&db, 3);
    for (source, what) in [(&compressed, "compressed"), (&plain, "plain")] {
        let e = db.import(source, ImportOptions::default()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Io, "{what}: {e}");
        assert!(!e.message().contains("'gzip'"), "{what}: the data was never judged: {e}");
        assert!(e.message().contains("injected failure"), "{what}: the filesystem's error is kept: {e}");
        assert_eq!(count(&db), 3, "{what}: nothing was imported and reads go on");
    }
    insert(&db, 1);
    assert_eq!(count(&db), 4, "writes go on");
    drop(db);
    drop(ws);
    let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    assert_eq!(count(&db), 4, "only the app's own write changed the database");
}

/// Writes a valid database of exactly `pages` pages of 4096 bytes: one row whose blob spills
/// into overflow pages, one page per 4092 bytes of it.
fn database_of_pages(path: &Path, pages: i64) {
    let mut blob = (pages - 3) * 4092;
    for _ in 0..16 {
        let _ = std::fs::remove_file(path);
        make_sqlite(
            path,
            &format!(
                "PRAGMA page_size=4096; CREATE TABLE notes (id INTEGER PRIMARY KEY, body BLOB); \
                 INSERT INTO notes(body) VALUES (zeroblob({blob}));"
            ),
        );
        let conn = rusqlite::Connection::open(path).unwrap();
        let have: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        if have == pages {
            return;
        }
        blob += (pages - have) * 4092;
    }
    panic!("no database of {pages} pages");
}

/// The zip-bomb guard at its boundary through import: a database exactly as large as the
/// size cap decompresses and imports; the same bytes and one more are refused by the guard.
#[test]
fn a_compressed_import_exactly_at_the_size_cap_is_accepted_and_one_byte_more_is_refused() {
    let (dir, _ws, db) = setup("gzip-cap");
    let cap: u64 = 2 << 20; // MANIFEST's maxSizeMB
    let plain = dir.0.join("at-cap.sqlite");
    database_of_pages(&plain, (cap / 4096) as i64);
    let mut bytes = std::fs::read(&plain).unwrap();
    assert_eq!(bytes.len() as u64, cap);

    let over = dir.0.join("over-cap.sqlite.gz");
    bytes.push(0);
    std::fs::write(&over, gzip(&bytes)).unwrap();
    let e = db.import(&over, ImportOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
    assert_eq!(e.quota().map(|q| q.limit_bytes), Some(cap), "{e}");
    assert!(e.message().contains("decompressed import"), "the guard refused it: {e}");
    assert_eq!(count(&db), 0);

    let at = dir.0.join("at-cap.sqlite.gz");
    bytes.pop();
    std::fs::write(&at, gzip(&bytes)).unwrap();
    let report = db.import(&at, ImportOptions::default()).unwrap();
    assert_eq!(report.checks.first(), Some(&"gzip"));
    assert_eq!(report.size, cap);
    assert_eq!(count(&db), 1);
}

/// The destination is checked before the copy; a file that appears at it while the export is
/// written (another process, an operator) is not overwritten: the rename refuses it.
#[test]
fn an_export_never_overwrites_a_file_that_appeared_while_it_was_written() {
    use sila_sqlite::versions::ExportFormat;
    let dir = TempDir::new("export-race");
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let out = dir.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for format in [ExportFormat::Sqlite, ExportFormat::SqliteGzip] {
        let dest = out.join(format!("race{}", format.suffix()));
        let theirs = dest.clone();
        // Opening the export's temporary (it is, to sync it, after the copy) makes someone
        // else's file appear under the final name.
        let vfs = std::sync::Arc::new(FaultyFs::wrapping(move |path, _mode, file| {
            if is_partial(path) && path.parent() == theirs.parent() && !theirs.exists() {
                std::fs::write(&theirs, b"someone else's file").unwrap();
            }
            file
        }));
        let ws = Workspace::open_with(vfs, root.clone(), WorkspaceOptions::default()).unwrap();
        if ws.open_app("com.example.notes").is_err() {
            ws.register_app("com.example.notes", MANIFEST).unwrap();
        }
        let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
        db.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
        insert(&db, 2);
        let e = db.export_to_path_as(&dest, format).unwrap_err();
        assert_eq!(e.code(), ErrorCode::AlreadyExists, "{format:?}: {e}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"someone else's file", "{format:?}: not overwritten");
        let left: Vec<_> = files_below(&out).into_iter().filter(|p| is_partial(p)).collect();
        assert!(left.is_empty(), "{format:?}: temporaries left: {left:?}");
        // Not an IO failure of the workspace: the database goes on.
        insert(&db, 1);
    }
}

/// A failed sync of an export's file in a directory the host named outside the workspace
/// (a failing USB stick, say) fails the export, and nothing else: the workspace's files are
/// not the ones that failed, so the database goes on taking writes without a reopen.
#[test]
fn a_failed_sync_outside_the_workspace_fails_the_export_only() {
    let dir = TempDir::new("export-outside-sync");
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let out = dir.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let out = out.canonicalize().unwrap();
    let failing = out.clone();
    let vfs = std::sync::Arc::new(FaultyFs::failing(move |call| {
        call.op == "sync" && call.path.parent() == Some(failing.as_path())
    }));
    let ws = Workspace::open_with(vfs, root.clone(), WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    insert(&db, 2);
    let e = db.export_to_path(&out.join("x.sqlite")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Io, "{e}");
    assert!(files_below(&out).is_empty(), "nothing is left in the host's directory");
    insert(&db, 1);
    assert_eq!(count(&db), 3);
    // An export into the workspace's own area still works.
    db.export("inside").unwrap();
}

/// A wall clock the test sets (deadlines keep the process's monotonic time).
struct SetClock(std::sync::atomic::AtomicU64);

impl sila_sqlite::clock::Clock for SetClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Backup retention keeps the newest backups in the order they were made, even when they are
/// made in the same millisecond (UUID v7 names then sorted by their random bits) or the
/// clock steps back; and the backup just made is never the one retention removes.
#[test]
fn backup_retention_follows_the_order_of_making_whatever_the_clock_does() {
    let dir = TempDir::new("backup-clock");
    let root = dir.0.join("ws");
    let t0 = 1_800_000_000_000u64;
    let open = |at: u64| {
        let clock = std::sync::Arc::new(SetClock(std::sync::atomic::AtomicU64::new(at)));
        let options = WorkspaceOptions { clock: clock.clone(), ..WorkspaceOptions::default() };
        (Workspace::open(&root, options).unwrap(), clock)
    };
    let (ws, clock) = open(t0);
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    // Ten backups in one millisecond, then ten after the clock stepped back a day; keep 3.
    let mut made = Vec::new();
    for i in 0..20 {
        if i == 10 {
            clock.0.store(t0 - 86_400_000, Ordering::SeqCst);
        }
        insert(&db, 1);
        let (_, path) = db.backup(3).unwrap();
        assert!(path.exists(), "backup {i} exists when it is returned");
        made.push(path);
    }
    let kept = |dir: &Path| -> Vec<PathBuf> { files_below(dir) };
    let backups = made[0].parent().unwrap().to_path_buf();
    assert_eq!(kept(&backups), made[17..].to_vec(), "the three made last");
    assert_complete(&made[19], 20);
    drop(db);
    drop(ws);
    // A restart with the clock a week back: the new backup's name sorts before the others.
    let (ws, _clock) = open(t0 - 7 * 86_400_000);
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    let (_, path) = db.backup(1).unwrap();
    assert_eq!(kept(&backups), vec![path.clone()], "keep_last 1 keeps the backup just made");
    assert_complete(&path, 20);
}

/// An export to a host path that a crash cut short leaves its temporary beside the
/// destination, where GC never looks; the next export to that destination removes it, and
/// nothing else in the directory.
#[test]
fn an_export_to_a_host_path_removes_the_leftovers_of_an_earlier_one_to_the_same_name() {
    let (dir, _ws, db) = setup("host-leftovers");
    insert(&db, 3);
    let out = dir.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let dest = out.join("nightly.sqlite");
    let id = "01890000-0000-7000-8000-000000000000";
    let leftovers = [
        out.join(format!("nightly.sqlite.{id}.partial")),
        out.join(format!("nightly.sqlite.{id}.partial-journal")),
    ];
    let others = [
        out.join(format!("weekly.sqlite.{id}.partial")),
        out.join(format!("nightly.sqlite.gz.{id}.partial")),
        out.join("nightly.sqlite.notes.partial"),
        out.join("notes.txt"),
    ];
    for path in leftovers.iter().chain(&others) {
        std::fs::write(path, b"left behind").unwrap();
    }
    db.export_to_path(&dest).unwrap();
    assert_complete(&dest, 3);
    let mut expected: Vec<PathBuf> = others.to_vec();
    expected.push(dest.clone());
    expected.sort();
    assert_eq!(files_below(&out), expected, "only the leftovers of nightly.sqlite are gone");
}

/// The engine's tables are the engine's (issue 15, item 8): an app reads `_sila_meta` but
/// cannot write, alter, drop, index or trigger it, in any case of its name, through exec, a
/// transaction, a migration step or a trigger of its own; the engine's migrations still record
/// themselves there.
#[test]
fn apps_read_the_engine_tables_but_never_change_them() {
    let (_d, _ws, db) = setup("reserved");
    let plan = MigrationPlan {
        current_version: 1,
        steps: vec![MigrationStep {
            from: 0,
            to: 1,
            up: "CREATE TABLE tags (x)".into(),
            down: "DROP TABLE tags".into(),
        }],
    };
    db.migrate(&plan, false).unwrap();
    let meta = || db.query("SELECT version, direction FROM _sila_meta", &[]).unwrap().rows;
    assert_eq!(meta(), vec![vec![Value::Integer(1), Value::Text("up".into())]], "reading is allowed");
    for sql in [
        "INSERT INTO _sila_meta (version, applied_at, step_from, step_to, direction, checksum) VALUES (9, 0, 0, 9, 'up', 'x')",
        "UPDATE _sila_meta SET version = 9",
        "DELETE FROM _sila_meta",
        "DROP TABLE _sila_meta",
        "ALTER TABLE _sila_meta ADD COLUMN y",
        "ALTER TABLE _sila_meta RENAME TO mine",
        "CREATE INDEX i ON _sila_meta(version)",
        "CREATE TRIGGER tr AFTER INSERT ON _sila_meta BEGIN SELECT 1; END",
        "UPDATE _SILA_META SET version = 9",
        "CREATE TABLE _sila_other (x)",
        "CREATE VIEW _sila_view AS SELECT 1",
    ] {
        let e = db.exec(sql, &[]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PolicyDenied, "{sql}: {e}");
        assert!(e.message().contains("belongs to the engine"), "{sql}: {e}");
        let e = db.transaction(|tx| tx.exec(sql, &[])).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PolicyDenied, "{sql} in a transaction: {e}");
    }
    // A trigger of the app's own that would write the engine's table cannot fire.
    db.exec("CREATE TRIGGER sneaky AFTER INSERT ON notes BEGIN DELETE FROM _sila_meta; END", &[]).ok();
    let e = db.exec("INSERT INTO notes(body) VALUES ('x')", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PolicyDenied, "{e}");
    db.exec("DROP TRIGGER IF EXISTS sneaky", &[]).unwrap();
    // A migration step that writes it fails as a migration, and changes nothing.
    let bad = MigrationPlan {
        current_version: 2,
        steps: vec![
            plan.steps[0].clone(),
            MigrationStep { from: 1, to: 2, up: "DELETE FROM _sila_meta".into(), down: String::new() },
        ],
    };
    let e = db.migrate(&bad, false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MigrationFailed, "{e}");
    assert_eq!(meta(), vec![vec![Value::Integer(1), Value::Text("up".into())]]);
    assert_eq!(db.schema_version().unwrap(), 1);
}

/// SQLite's table-rebuild procedure (foreign keys off, new table, copy, drop, rename) works as
/// a migration step: its children survive the DROP instead of cascading away, a step that
/// leaves a violation fails the migration, and foreign keys are enforced again afterwards.
/// Outside a migration, turning foreign keys off (which SQLite would silently ignore inside
/// the request's transaction) is refused; setting them on, as they are, succeeds.
#[test]
fn the_table_rebuild_procedure_works_in_a_migration_and_nowhere_else() {
    let (_d, _ws, db) = setup("rebuild");
    let schema = [
        "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
        "CREATE TABLE child (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id) ON DELETE CASCADE)",
        "INSERT INTO parent(id) VALUES (1), (2)",
        "INSERT INTO child(id, pid) VALUES (10, 1), (20, 2)",
    ];
    for sql in schema {
        db.exec(sql, &[]).unwrap();
    }
    let e = db.exec("PRAGMA foreign_keys = OFF", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PolicyDenied, "{e}");
    assert!(e.message().contains("migration"), "{e}");
    db.exec("PRAGMA foreign_keys = ON", &[]).unwrap();
    let rebuild = "PRAGMA foreign_keys=OFF;
        CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT);
        INSERT INTO parent_new(id) SELECT id FROM parent;
        DROP TABLE parent;
        ALTER TABLE parent_new RENAME TO parent;
        PRAGMA foreign_key_check;
        PRAGMA foreign_keys=ON;";
    let plan = MigrationPlan {
        current_version: 1,
        steps: vec![MigrationStep { from: 0, to: 1, up: rebuild.into(), down: String::new() }],
    };
    db.migrate(&plan, true).unwrap();
    db.migrate(&plan, false).unwrap();
    let children = db.query_value("SELECT count(*) FROM child", &[]).unwrap();
    assert_eq!(children, Some(Value::Integer(2)), "the DROP of the rebuild cascaded");
    assert_eq!(db.query("SELECT name FROM parent", &[]).unwrap().rows.len(), 2);
    // Foreign keys are on again.
    let e = db.exec("INSERT INTO child(id, pid) VALUES (30, 99)", &[]).unwrap_err();
    assert_eq!(e.sqlite_code(), Some(787), "{e}");
    // A step that leaves a violation fails the migration and changes nothing.
    let orphaning = MigrationPlan {
        current_version: 2,
        steps: vec![
            plan.steps[0].clone(),
            MigrationStep {
                from: 1,
                to: 2,
                up: "DELETE FROM parent WHERE id = 1".into(),
                down: String::new(),
            },
        ],
    };
    let e = db.migrate(&orphaning, false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MigrationFailed, "{e}");
    assert!(e.message().contains("foreign key violation"), "{e}");
    assert_eq!(db.query_value("SELECT count(*) FROM parent", &[]).unwrap(), Some(Value::Integer(2)));
    assert_eq!(db.schema_version().unwrap(), 1);
}
