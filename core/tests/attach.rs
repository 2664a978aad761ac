//! ATTACH of an app's own databases by logical name, through the public API: read-only,
//! the same on every pooled connection, following the attached database across flips, and
//! refused in every other form.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::attach::ATTACHMENTS_MAX;
use sila_sqlite::versions::RestoreOptions;
use sila_sqlite::{Database, ErrorCode, Value, Workspace, WorkspaceOptions};

mod support;
use support::TempDir;

const APP: &str = "com.example.attach";
const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"tier":"premium","dbs":[
    {"name":"main","maxSizeMB":4},{"name":"shared","maxSizeMB":4},{"name":"ro","maxSizeMB":4,"readOnly":true},
    {"name":"d3","maxSizeMB":4},{"name":"d4","maxSizeMB":4},{"name":"d5","maxSizeMB":4}]}}}"#;
const OTHER: &str = "com.example.other";
const OTHER_MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"shared","maxSizeMB":4}]}}}"#;

fn setup(name: &str) -> (TempDir, Workspace, Database, Database) {
    let dir = TempDir::new(name);
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default()).unwrap();
    ws.register_app(APP, MANIFEST).unwrap();
    ws.register_app(OTHER, OTHER_MANIFEST).unwrap();
    let app = ws.open_app(APP).unwrap();
    let main = app.open("main").unwrap();
    let shared = app.open("shared").unwrap();
    main.exec("CREATE TABLE mine (v TEXT)", &[]).unwrap();
    shared.exec("CREATE TABLE t (v TEXT)", &[]).unwrap();
    shared.exec("INSERT INTO t VALUES ('a'), ('b')", &[]).unwrap();
    (dir, ws, main, shared)
}

fn int(db: &Database, sql: &str) -> i64 {
    match db.query_value(sql, &[]).unwrap() {
        Some(Value::Integer(n)) => n,
        other => panic!("{sql}: {other:?}"),
    }
}

fn refused(db: &Database, sql: &str, params: &[Value]) -> sila_sqlite::Error {
    let e = db.exec(sql, params).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PolicyDenied, "{sql}: {e}");
    e
}

#[test]
fn an_attached_database_is_read_on_every_connection_and_never_written() {
    let (_d, _ws, main, shared) = setup("read");
    main.exec("ATTACH 'sila://db/shared' AS s", &[]).unwrap();
    // Concurrent reads land on different pooled connections; every one sees the attachment.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let main = main.clone();
            std::thread::spawn(move || {
                (0..20).map(|_| int(&main, "SELECT count(*) FROM s.t")).collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().iter().all(|n| *n == 2));
    }
    // Reads into a write, and inside a transaction, use the writer's attachment.
    main.exec("INSERT INTO mine SELECT v FROM s.t", &[]).unwrap();
    assert_eq!(int(&main, "SELECT count(*) FROM mine"), 2);
    let n = main.transaction(|tx| tx.query_value("SELECT count(*) FROM s.t", &[])).unwrap();
    assert_eq!(n, Some(Value::Integer(2)));
    // Never written through this handle: writes go through the database's own writer.
    for sql in ["INSERT INTO s.t VALUES ('x')", "DELETE FROM s.t", "CREATE TABLE s.u (x)", "DROP TABLE s.t"] {
        let e = main.exec(sql, &[]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ReadOnly, "{sql}: {e}");
    }
    assert_eq!(int(&shared, "SELECT count(*) FROM t"), 2);
    // New commits of the attached database are seen.
    shared.exec("INSERT INTO t VALUES ('c')", &[]).unwrap();
    assert_eq!(int(&main, "SELECT count(*) FROM s.t"), 3);
    // DETACH removes it from every connection.
    main.exec("DETACH s", &[]).unwrap();
    for _ in 0..4 {
        let e = main.query("SELECT count(*) FROM s.t", &[]).unwrap_err();
        assert!(e.message().contains("no such table"), "{e}");
    }
    assert_eq!(main.stats().metrics.error_count(ErrorCode::ReadOnly), 4);
}

#[test]
fn an_attachment_follows_the_attached_database_across_a_restore() {
    let (_d, _ws, main, shared) = setup("flip");
    let snap = shared.snapshot("two rows").unwrap();
    shared.exec("INSERT INTO t VALUES ('c'), ('d')", &[]).unwrap();
    main.exec("ATTACH ? AS s", &[Value::Text("sila://db/shared".into())]).unwrap();
    assert_eq!(int(&main, "SELECT count(*) FROM s.t"), 4);
    shared.restore(snap.id, RestoreOptions::default()).unwrap();
    // Every connection re-attaches the new live file before its next request.
    for _ in 0..6 {
        assert_eq!(int(&main, "SELECT count(*) FROM s.t"), 2);
    }
    main.exec("INSERT INTO mine SELECT v FROM s.t", &[]).unwrap();
    assert_eq!(int(&main, "SELECT count(*) FROM mine"), 2);
}

#[test]
fn at_most_attachments_max_databases_are_attached() {
    let (_d, _ws, main, _shared) = setup("max");
    let names = ["shared", "ro", "d3", "d4", "d5"];
    assert_eq!(ATTACHMENTS_MAX, 4);
    for (i, name) in names.iter().take(ATTACHMENTS_MAX).enumerate() {
        main.exec(&format!("ATTACH 'sila://db/{name}' AS a{i}"), &[]).unwrap();
    }
    let e = refused(&main, "ATTACH 'sila://db/d5' AS a9", &[]);
    assert!(e.message().contains("ATTACHMENTS_MAX"), "{e}");
    // A read-only database of the manifest attaches like any other (attachments are read-only).
    assert_eq!(int(&main, "SELECT count(*) FROM a1.sqlite_schema"), 0);
    main.exec("DETACH a0", &[]).unwrap();
    main.exec("ATTACH 'sila://db/d5' AS a9", &[]).unwrap();
    assert_eq!(int(&main, "SELECT count(*) FROM a9.sqlite_schema"), 0);
}

#[test]
fn every_other_attach_or_detach_is_refused_and_counted() {
    let (dir, ws, main, _shared) = setup("refuse");
    let outside = dir.0.join("outside.sqlite").display().to_string();
    let before = main.stats().metrics.error_count(ErrorCode::PolicyDenied);
    let cases: Vec<(String, Vec<Value>, &str)> = vec![
        ("ATTACH 'sila://db/main' AS me".into(), vec![], "itself"),
        ("ATTACH 'sila://db/nope' AS n".into(), vec![], "not in this app's manifest"),
        (format!("ATTACH 'sila://app/{OTHER}/db/shared' AS o"), vec![], "ATTACH is refused"),
        (format!("ATTACH '{outside}' AS o"), vec![], "ATTACH is refused"),
        ("ATTACH ? AS o".into(), vec![Value::Text(outside.clone())], "ATTACH is refused"),
        ("ATTACH ? AS o".into(), vec![Value::Integer(7)], "not a text value"),
        ("ATTACH 'sila://db/shared' AS temp".into(), vec![], "main and temp"),
        ("DETACH s".into(), vec![], "is not attached"),
        ("DETACH main".into(), vec![], "main and temp"),
    ];
    for (sql, params, needle) in &cases {
        let e = refused(&main, sql, params);
        assert!(e.message().contains(needle), "{sql}: {e}");
        assert!(!e.message().contains("outside.sqlite"), "never echoes a path: {e}");
    }
    main.exec("ATTACH 'sila://db/shared' AS s", &[]).unwrap();
    let e = refused(&main, "ATTACH 'sila://db/d3' AS s", &[]);
    assert!(e.message().contains("attached already"), "{e}");
    // Not inside a transaction, and not through a query either when it is malformed.
    let e = main.transaction(|tx| tx.exec("ATTACH 'sila://db/d3' AS x", &[])).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PolicyDenied);
    assert!(e.message().contains("inside a transaction"), "{e}");
    let e = main.query("ATTACH 'sila://db/d3' AS", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PolicyDenied);
    // The non-blocking forms answer at once.
    let e = main.submit_exec("DETACH nope", vec![]).wait().unwrap_err();
    assert_eq!(e.code(), ErrorCode::PolicyDenied);
    assert_eq!(main.stats().metrics.error_count(ErrorCode::PolicyDenied), before + cases.len() as u64 + 4);
    // Nothing was created outside, and the other app's database is untouched.
    assert!(!std::path::Path::new(&outside).exists());
    let other = ws.open_app(OTHER).unwrap().open("shared").unwrap();
    assert_eq!(int(&other, "SELECT count(*) FROM sqlite_schema"), 0);
}

#[test]
fn concurrent_attaches_under_one_name_keep_exactly_one() {
    let (_d, _ws, main, _shared) = setup("race");
    let threads: Vec<_> = ["shared", "d3", "d4", "d5"]
        .into_iter()
        .map(|name| {
            let main = main.clone();
            std::thread::spawn(move || main.exec(&format!("ATTACH 'sila://db/{name}' AS x"), &[]).is_ok())
        })
        .collect();
    let won = threads.into_iter().map(|t| t.join().unwrap()).filter(|ok| *ok).count();
    assert_eq!(won, 1, "one ATTACH takes the name, the others are refused");
    main.query("SELECT count(*) FROM x.sqlite_schema", &[]).unwrap();
    main.exec("DETACH x", &[]).unwrap();
    let e = main.exec("DETACH x", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PolicyDenied, "detached once: {e}");
}
