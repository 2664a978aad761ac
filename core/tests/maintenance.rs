//! Maintenance through the public API: compaction and checkpoints (the file shrinks, no
//! acknowledged write is lost, writes running meanwhile included, and a compaction without
//! headroom is refused before it changes anything), integrity checks, and the scheduled
//! `Workspace::maintain` (bounded, rotating, reporting a damaged database).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::maintenance::MaintenanceOptions;
use sila_sqlite::store::Retention;
use sila_sqlite::{Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::collections::BTreeSet;
use std::time::Duration;

mod support;
use support::TempDir;

const APP: &str = "com.example.notes";
const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":4}],"tier":"standard"}}}"#;

fn setup(name: &str) -> (TempDir, Workspace, Database) {
    let dir = TempDir::new(name);
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default()).unwrap();
    ws.register_app(APP, MANIFEST).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    (dir, ws, db)
}

/// Inserts `n` rows of about 1 KiB from id `first` on.
fn fill(db: &Database, first: i64, n: i64) {
    db.exec(
        "WITH RECURSIVE k(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1 + ?2 - 1) \
         INSERT INTO notes(id, body) SELECT i, hex(randomblob(512)) FROM k",
        &[Value::Integer(first), Value::Integer(n)],
    )
    .unwrap();
}

fn ids(db: &Database) -> BTreeSet<i64> {
    db.query("SELECT id FROM notes", &[])
        .unwrap()
        .rows
        .into_iter()
        .map(|r| match r.first() {
            Some(Value::Integer(i)) => *i,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn compaction_gives_back_what_deletes_freed_and_keeps_every_row() {
    let (_d, ws, db) = setup("compact-shrinks");
    fill(&db, 1, 1500);
    db.exec("DELETE FROM notes WHERE id > 100", &[]).unwrap();
    let kept = ids(&db);
    let report = db.compact().unwrap();
    assert!(report.after_bytes * 4 < report.before_bytes, "{report:?}");
    assert_eq!(ids(&db), kept);
    let check = db.query_value("PRAGMA quick_check", &[]).unwrap();
    assert_eq!(check, Some(Value::Text("ok".into())));
    // The replaced file is garbage until GC; then the ledger counts the compact file only.
    let before_gc = ws.ledger(APP).unwrap();
    assert!(before_gc.garbage_bytes >= report.before_bytes / 2, "{before_gc:?}");
    ws.gc().unwrap();
    let after = ws.ledger(APP).unwrap();
    assert_eq!(after.garbage_bytes, 0, "{after:?}");
    assert!(after.live_bytes < report.before_bytes / 2, "{after:?}");
    // The new file takes writes and survives a reopen.
    fill(&db, 5000, 10);
    drop(db);
    let root = ws.root().to_path_buf();
    drop(ws);
    let ws = Workspace::open(root, WorkspaceOptions::default()).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    assert_eq!(ids(&db).len(), kept.len() + 10);
}

#[test]
fn writes_during_a_compaction_are_all_kept() {
    let (_d, _ws, db) = setup("compact-writes");
    fill(&db, 1, 300);
    db.exec("DELETE FROM notes WHERE id % 2 = 0", &[]).unwrap();
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            for id in 10_000..10_200 {
                if db.exec("INSERT INTO notes(id, body) VALUES (?, 'w')", &[Value::Integer(id)]).is_ok() {
                    acked.push(id);
                }
            }
            acked
        })
    };
    for _ in 0..3 {
        db.compact().unwrap();
    }
    let acked = writer.join().unwrap();
    assert_eq!(acked.len(), 200, "no write is refused because of a compaction");
    let present = ids(&db);
    let lost: Vec<i64> = acked.iter().copied().filter(|id| !present.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost by compaction: {lost:?}");
}

#[test]
fn compaction_without_headroom_is_refused_and_changes_nothing() {
    let (_d, ws, db) = setup("compact-quota");
    // 4 MiB database, 12 MiB app quota: a 2.7 MiB file (its WAL folded and truncated) and
    // three snapshots of it leave less than the live size a compaction reserves.
    fill(&db, 1, 2000);
    let report = db.checkpoint().unwrap();
    assert!(report.complete && report.checkpointed_frames == report.wal_frames, "{report:?}");
    assert!(report.wal_frames > 0, "the frames the WAL held are reported: {report:?}");
    assert_eq!(ws.ledger(APP).unwrap().side_bytes, 0, "the WAL is truncated");
    for label in ["a", "b", "c"] {
        db.snapshot(label).unwrap();
    }
    let before = ws.ledger(APP).unwrap();
    let e = db.compact().unwrap_err();
    assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
    let q = e.quota().unwrap();
    assert_eq!(q.limit_bytes, before.quota_bytes);
    let after = ws.ledger(APP).unwrap();
    assert_eq!(after.in_flight_bytes, 0, "{after:?}");
    assert_eq!(after.used_bytes(), before.used_bytes(), "{before:?} -> {after:?}");
    assert_eq!(ids(&db).len(), 2000);
    // Dropping a snapshot and collecting it makes the room.
    let first = db.snapshots().unwrap()[0].id;
    db.drop_snapshot(first).unwrap();
    ws.gc().unwrap();
    db.compact().unwrap();
    assert_eq!(ids(&db).len(), 2000);
}

#[test]
fn a_read_only_database_is_not_compacted() {
    let dir = TempDir::new("compact-ro");
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default()).unwrap();
    ws.register_app(
        APP,
        r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"ref","maxSizeMB":1,"readOnly":true}],"tier":"standard"}}}"#,
    )
    .unwrap();
    let db = ws.open_app(APP).unwrap().open("ref").unwrap();
    assert_eq!(db.compact().unwrap_err().code(), ErrorCode::ReadOnly);
}

const TWO_DBS: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":1},{"name":"b","maxSizeMB":1}],"tier":"standard"}}}"#;

#[test]
fn maintain_works_through_every_database_in_budgeted_steps() {
    let dir = TempDir::new("maintain-rotate");
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default()).unwrap();
    ws.register_app(APP, TWO_DBS).unwrap();
    ws.register_app("com.example.other", MANIFEST).unwrap();
    let a = ws.open_app(APP).unwrap().open("a").unwrap();
    a.exec("CREATE TABLE t (x)", &[]).unwrap();
    for label in ["1", "2", "3"] {
        a.snapshot(label).unwrap();
    }
    // A zero budget still does one database per call, so every call makes progress.
    let options = MaintenanceOptions {
        budget: Duration::ZERO,
        full_check_every: 2,
        retention: Some(Retention { keep_last: Some(1), max_age_ms: None }),
        gc: true,
    };
    let mut seen = Vec::new();
    for call in 0..6 {
        let report = ws.maintain(&options).unwrap();
        assert_eq!(report.databases.len(), 1, "{report:?}");
        let d = &report.databases[0];
        assert_eq!(d.error, None, "{d:?}");
        assert!(d.problems.is_empty(), "{d:?}");
        // With a full check every second pass: pass 0 is quick, pass 1 full.
        assert_eq!((report.pass, d.full_check), (call / 3, call / 3 == 1), "call {call}: {report:?}");
        assert_eq!(report.remaining, 2 - (call as usize % 3));
        assert!(report.gc.is_some());
        seen.push((d.app_id.clone(), d.db.clone(), d.snapshots_dropped));
    }
    let order: Vec<(&str, &str)> = seen.iter().map(|(a, d, _)| (a.as_str(), d.as_str())).collect();
    assert_eq!(
        order[..3],
        [(APP, "a"), (APP, "b"), ("com.example.other", "main")],
        "sorted, each database once per pass"
    );
    assert_eq!(order[..3], order[3..]);
    assert_eq!(seen[0].2, 2, "retention kept the newest snapshot of a");
    assert_eq!(a.snapshots().unwrap().len(), 1);
    // A generous budget does a whole pass in one call.
    let all =
        ws.maintain(&MaintenanceOptions { budget: Duration::from_secs(3600), ..Default::default() }).unwrap();
    assert_eq!((all.databases.len(), all.remaining), (3, 0), "{all:?}");
}

#[test]
fn a_damaged_database_is_reported_and_refused_until_reopened() {
    let dir = TempDir::new("maintain-damaged");
    let root = dir.0.join("ws");
    let path = {
        let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
        ws.register_app(APP, MANIFEST).unwrap();
        let db = ws.open_app(APP).unwrap().open("main").unwrap();
        db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
        db.exec("CREATE INDEX notes_body ON notes(body)", &[]).unwrap();
        fill(&db, 1, 200);
        assert!(db.check_integrity(true).unwrap().problems.is_empty());
        support::live_file(&ws, APP, "main")
    };
    support::scribble_page(&path, 5);
    let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
    let report =
        ws.maintain(&MaintenanceOptions { full_check_every: 1, gc: false, ..Default::default() }).unwrap();
    let d = &report.databases[0];
    assert!(!d.problems.is_empty(), "{d:?}");
    assert!(d.full_check);
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    let e = db.query("SELECT count(*) FROM notes", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Poisoned, "{e}");
    assert!(e.message().contains("integrity_check found the database damaged"), "{e}");
}

fn pragma(db: &Database, name: &str) -> i64 {
    match db.query_value(&format!("PRAGMA {name}"), &[]).unwrap() {
        Some(Value::Integer(n)) => n,
        other => panic!("PRAGMA {name}: {other:?}"),
    }
}

/// A database whose manifest entry asks for `incrementalVacuum` is made in that mode; upkeep
/// gives its free pages back at most `INCREMENTAL_VACUUM_PAGES_MAX` a call (N), leaving the
/// rest (N+1 on) for the next, and the file shrinks without a compaction's copy.
#[test]
fn upkeep_gives_free_pages_back_a_bounded_step_at_a_time() {
    use sila_sqlite::maintenance::INCREMENTAL_VACUUM_PAGES_MAX;
    let dir = TempDir::new("incremental-vacuum");
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default()).unwrap();
    let manifest = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":32,"incrementalVacuum":true}],"tier":"standard"}}}"#;
    ws.register_app(APP, manifest).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    assert_eq!(pragma(&db, "auto_vacuum"), 2, "made in incremental mode");
    fill(&db, 1, 12_000);
    db.exec("DELETE FROM notes WHERE id > 100", &[]).unwrap();
    db.checkpoint().unwrap();
    let free = u64::try_from(pragma(&db, "freelist_count")).unwrap();
    assert!(free > INCREMENTAL_VACUUM_PAGES_MAX, "{free} free pages");
    let before = db.stats().db_bytes;
    let options = MaintenanceOptions { gc: false, ..Default::default() };
    let first = ws.maintain(&options).unwrap();
    assert_eq!(first.databases[0].pages_freed, INCREMENTAL_VACUUM_PAGES_MAX, "{first:?}");
    // (`PRAGMA optimize` before it may take a free page or two for its statistics.)
    let left = u64::try_from(pragma(&db, "freelist_count")).unwrap();
    assert!(left > 0 && left <= free - INCREMENTAL_VACUUM_PAGES_MAX, "{left} of {free} left");
    let after_one = db.stats().db_bytes;
    assert!(
        after_one <= before - INCREMENTAL_VACUUM_PAGES_MAX * 4096,
        "the file shrank: {before} -> {after_one}"
    );
    let mut calls = 1;
    while pragma(&db, "freelist_count") > 0 {
        let report = ws.maintain(&options).unwrap();
        assert!(report.databases[0].pages_freed <= INCREMENTAL_VACUUM_PAGES_MAX, "{report:?}");
        calls += 1;
        assert!(calls < 100, "every call frees pages");
    }
    assert_eq!(ws.maintain(&options).unwrap().databases[0].pages_freed, 0, "none left");
    assert_eq!(ids(&db).len(), 100, "no row was lost");
    assert_eq!(db.query_value("PRAGMA quick_check", &[]).unwrap(), Some(Value::Text("ok".into())));
    // The ledger follows the file.
    assert_eq!(ws.ledger(APP).unwrap().live_bytes, db.stats().db_bytes + db.stats().wal_bytes);
}

/// A database made before its manifest asked for `incrementalVacuum` takes the mode at its
/// next compaction; until then upkeep frees nothing (and fails nothing).
#[test]
fn incremental_vacuum_asked_for_later_takes_effect_at_the_next_compaction() {
    let (_dir, ws, db) = setup("incremental-later");
    fill(&db, 1, 1000);
    db.exec("DELETE FROM notes WHERE id > 10", &[]).unwrap();
    assert_eq!(pragma(&db, "auto_vacuum"), 0);
    assert_eq!(db.incremental_vacuum(100).unwrap(), 0, "not in the mode: nothing to do");
    let manifest = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":4,"incrementalVacuum":true}],"tier":"standard"}}}"#;
    drop(db);
    ws.update_app(APP, manifest).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    db.compact().unwrap();
    assert_eq!(pragma(&db, "auto_vacuum"), 2, "the compaction's copy is in the mode");
    fill(&db, 2000, 500);
    db.exec("DELETE FROM notes WHERE id >= 2000", &[]).unwrap();
    let free = u64::try_from(pragma(&db, "freelist_count")).unwrap();
    assert!(free > 1, "{free}");
    assert_eq!(db.incremental_vacuum(free - 1).unwrap(), free - 1, "at most the pages asked for");
    assert_eq!(db.incremental_vacuum(free).unwrap(), 1, "then the one left");
    assert_eq!(ids(&db).len(), 10);
}
