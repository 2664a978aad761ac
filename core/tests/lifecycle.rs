//! An app's lifecycle through the public API: a manifest update (grow and shrink limits,
//! add and remove databases, change tier) and unregistration, what each refuses, and that
//! what they drop leaves through GC, after a reopen too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::{ErrorCode, Value, Workspace, WorkspaceOptions};
use std::path::{Path, PathBuf};

mod support;
use support::TempDir;

const APP: &str = "com.example.notes";

fn manifest(tier: &str, dbs: &[(&str, u64)]) -> String {
    let dbs: Vec<String> =
        dbs.iter().map(|(name, mb)| format!(r#"{{"name":"{name}","maxSizeMB":{mb}}}"#)).collect();
    format!(r#"{{"capabilities":{{"sqlite":{{"enabled":true,"dbs":[{}],"tier":"{tier}"}}}}}}"#, dbs.join(","))
}

fn open(dir: &Path) -> Workspace {
    Workspace::open(dir.join("ws"), WorkspaceOptions::default()).unwrap()
}

fn count(ws: &Workspace, db: &str) -> i64 {
    let db = ws.open_app(APP).unwrap().open(db).unwrap();
    match db.query_value("SELECT count(*) FROM t", &[]).unwrap() {
        Some(Value::Integer(n)) => n,
        other => panic!("{other:?}"),
    }
}

fn write_rows(ws: &Workspace, db: &str, n: i64) {
    let db = ws.open_app(APP).unwrap().open(db).unwrap();
    db.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB)", &[]).unwrap();
    for _ in 0..n {
        db.exec("INSERT INTO t(body) VALUES (randomblob(1024))", &[]).unwrap();
    }
}

fn app_dir(dir: &Path, ws: &Workspace) -> PathBuf {
    let uuid = ws.app_info(APP).unwrap().app_uuid;
    dir.join("ws").join("apps").join(uuid.hyphenated().to_string())
}

#[test]
fn an_update_adds_removes_and_resizes_databases_and_gc_takes_what_it_dropped() {
    let dir = TempDir::new("lifecycle-update");
    let ws = open(&dir.0);
    ws.register_app(APP, &manifest("standard", &[("main", 4), ("cache", 4)])).unwrap();
    write_rows(&ws, "main", 20);
    write_rows(&ws, "cache", 20);
    let app_dir = app_dir(&dir.0, &ws);
    assert!(app_dir.join("db/cache").is_dir());

    let info = ws.update_app(APP, &manifest("premium", &[("main", 16), ("archive", 8)])).unwrap();
    assert_eq!(info.manifest.dbs.len(), 2);
    // The kept database keeps its rows under the new limits; the new one is empty and usable.
    assert_eq!(count(&ws, "main"), 20);
    write_rows(&ws, "archive", 3);
    assert_eq!(count(&ws, "archive"), 3);
    // The removed one is out of reach at once, and its files go with the next GC.
    let refused = ws.open_app(APP).unwrap().open("cache").map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::CapabilityDenied, "{refused}");
    assert!(ws.ledger(APP).unwrap().quota_bytes >= 24 * 1024 * 1024);
    let gc = ws.gc().unwrap();
    assert!(gc.bytes >= 20 * 1024, "{gc:?}");
    assert!(!app_dir.join("db/cache").exists());
    assert!(app_dir.join("db/main").is_dir());

    // A database of a removed name can be added again, empty.
    ws.update_app(APP, &manifest("premium", &[("main", 16), ("archive", 8), ("cache", 4)])).unwrap();
    write_rows(&ws, "cache", 1);
    assert_eq!(count(&ws, "cache"), 1);

    // The same manifest again changes nothing.
    let same = ws.update_app(APP, &manifest("premium", &[("main", 16), ("archive", 8), ("cache", 4)]));
    assert_eq!(same.unwrap().manifest.dbs.len(), 3);

    // All of it is what a reopen finds.
    drop(ws);
    let ws = open(&dir.0);
    assert!(ws.recovery_report().retired.is_empty(), "{:?}", ws.recovery_report());
    assert_eq!((count(&ws, "main"), count(&ws, "archive"), count(&ws, "cache")), (20, 3, 1));
}

#[test]
fn an_update_that_would_not_fit_what_is_stored_is_refused_and_changes_nothing() {
    let dir = TempDir::new("lifecycle-shrink");
    let ws = open(&dir.0);
    ws.register_app(APP, &manifest("standard", &[("main", 4)])).unwrap();
    write_rows(&ws, "main", 1200);
    // maxSizeMB below what the database holds.
    let err = ws.update_app(APP, &manifest("standard", &[("main", 1)])).unwrap_err();
    assert_eq!(err.code(), ErrorCode::QuotaExceeded, "{err}");
    assert!(err.message().contains("maxSizeMB of database \"main\""), "{err}");
    // Each database fits, but the databases kept hold more than the new app quota
    // (3 x 2 MB: the live file and four snapshots of it).
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    for i in 0..4 {
        db.snapshot(&format!("s{i}")).unwrap();
    }
    drop(db);
    let err = ws.update_app(APP, &manifest("standard", &[("main", 2)])).unwrap_err();
    assert_eq!(err.code(), ErrorCode::QuotaExceeded, "{err}");
    assert!(err.quota().and_then(|q| q.usage).is_some_and(|u| u.snapshot_bytes > 0), "{err}");
    // A manifest that does not validate.
    let err = ws.update_app(APP, &manifest("gold", &[("main", 4)])).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidManifest, "{err}");
    // An app that is not registered.
    let err = ws.update_app("com.example.nobody", &manifest("standard", &[("main", 4)])).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    assert_eq!(ws.app_info(APP).unwrap().manifest.dbs[0].max_size_bytes, 4 * 1024 * 1024);
    assert_eq!(count(&ws, "main"), 1200);
}

#[test]
fn a_database_in_use_holds_back_a_change_of_its_limits_but_not_an_addition() {
    let dir = TempDir::new("lifecycle-busy");
    let ws = open(&dir.0);
    ws.register_app(APP, &manifest("standard", &[("main", 4)])).unwrap();
    write_rows(&ws, "main", 2);
    let handle = ws.open_app(APP).unwrap().open("main").unwrap();

    let err = ws.update_app(APP, &manifest("standard", &[("main", 8)])).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Busy, "{err}");
    let err = ws.unregister_app(APP).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Busy, "{err}");
    // Refused, the handle goes on working.
    handle.exec("INSERT INTO t(body) VALUES (x'00')", &[]).unwrap();

    // Adding a database touches no open one.
    ws.update_app(APP, &manifest("standard", &[("main", 4), ("extra", 4)])).unwrap();
    handle.exec("INSERT INTO t(body) VALUES (x'00')", &[]).unwrap();

    drop(handle);
    let info = ws.update_app(APP, &manifest("standard", &[("main", 8), ("extra", 4)])).unwrap();
    assert_eq!(info.manifest.dbs[0].max_size_bytes, 8 * 1024 * 1024);
    assert_eq!(count(&ws, "main"), 4);
}

#[test]
fn an_unregistered_app_is_gone_at_once_and_its_files_after_gc_even_across_a_reopen() {
    let dir = TempDir::new("lifecycle-unregister");
    let ws = open(&dir.0);
    ws.register_app(APP, &manifest("standard", &[("main", 4)])).unwrap();
    write_rows(&ws, "main", 10);
    let app_dir = app_dir(&dir.0, &ws);
    let stale = ws.open_app(APP).unwrap();

    ws.unregister_app(APP).unwrap();
    assert_eq!(ws.app_info(APP).unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(stale.open("main").map(|_| ()).unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(ws.unregister_app(APP).unwrap_err().code(), ErrorCode::NotFound);
    assert!(ws.apps().is_empty());

    // Not collected yet: a reopen finds the directory retired, and GC removes it.
    drop(stale);
    drop(ws);
    let ws = open(&dir.0);
    assert_eq!(ws.recovery_report().retired.len(), 1, "{:?}", ws.recovery_report());
    assert!(ws.apps().is_empty());
    let gc = ws.gc().unwrap();
    assert!(gc.bytes >= 10 * 1024, "{gc:?}");
    assert!(!app_dir.exists());

    // The id is free again, for a new, empty app.
    ws.register_app(APP, &manifest("standard", &[("main", 4)])).unwrap();
    write_rows(&ws, "main", 1);
    assert_eq!(count(&ws, "main"), 1);
    // Registered, used and unregistered again and again, apps leave no state in the broker.
    ws.unregister_app(APP).unwrap();
    for _ in 0..3 {
        ws.register_app(APP, &manifest("standard", &[("main", 4)])).unwrap();
        write_rows(&ws, "main", 1);
        assert_eq!(ws.broker().apps_held(), 1);
        ws.unregister_app(APP).unwrap();
        assert_eq!(ws.broker().apps_held(), 0);
    }
}

#[test]
fn a_database_directory_no_record_lists_is_retired_by_recovery() {
    let dir = TempDir::new("lifecycle-recovery");
    let ws = open(&dir.0);
    ws.register_app(APP, &manifest("standard", &[("main", 4)])).unwrap();
    write_rows(&ws, "main", 1);
    let app_dir = app_dir(&dir.0, &ws);
    drop(ws);
    // What an update that crashed before its commit leaves: an added database's directory.
    let ghost = app_dir.join("db/ghost");
    std::fs::create_dir_all(ghost.join("snapshots")).unwrap();
    std::fs::write(ghost.join("current"), b"half").unwrap();

    let ws = open(&dir.0);
    let report = ws.recovery_report().clone();
    assert_eq!(report.retired.len(), 1, "{report:?}");
    assert!(report.unknown.is_empty() && report.damaged.is_empty(), "{report:?}");
    ws.gc().unwrap();
    assert!(!ghost.exists());
    assert_eq!(count(&ws, "main"), 1);
}
