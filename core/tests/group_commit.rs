//! Group commit is invisible (DESIGN.md invariant 11): a request's outcome never depends on
//! what else was in its group. Random groups mixing requests that succeed with requests that
//! fail (immediate and deferred foreign keys, `PRAGMA defer_foreign_keys`, UNIQUE and CHECK
//! constraints, RAISE in a trigger, a runtime error, a multi-row insert failing half-way, a
//! script whose second statement fails) run
//! as one group on a deterministic executor; the same requests run one by one, in the same
//! order, each in its own transaction, on plain SQLite (rusqlite, same version, foreign keys
//! on). Every outcome (changes, or SQLite's extended code) and the final contents must be
//! equal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sila_sqlite::broker::executor::{Executor, Stepper};
use sila_sqlite::{Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::sync::Arc;
use support::TempDir;

const APP: &str = "com.example.group";
const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":8}],"tier":"standard"}}}"#;
const SCHEMA: [&str; 6] = [
    "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
    "CREATE TABLE child (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)",
    "CREATE TABLE imm (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id))",
    "CREATE TABLE t (x INTEGER CHECK (x >= 0))",
    "CREATE TABLE t2 (x INTEGER)",
    "CREATE TRIGGER t2_no_13 BEFORE INSERT ON t2 WHEN NEW.x = 13 BEGIN SELECT RAISE(ABORT, 'thirteen'); END",
];
/// Groups tried.
const GROUPS: usize = 150;
/// Largest group.
const GROUP_MAX: usize = 8;

/// One request: SQL and parameters.
type Request = (String, Vec<Value>);

fn request(rng: &mut ChaCha8Rng) -> Request {
    let id = Value::Integer(rng.random_range(1..40i64));
    match rng.random_range(0..10u32) {
        0 => ("INSERT INTO parent(id) VALUES (?)".into(), vec![id]),
        1 => ("INSERT INTO child(pid) VALUES (?)".into(), vec![id]),
        2 => ("INSERT INTO imm(pid) VALUES (?)".into(), vec![id]),
        3 => ("INSERT INTO t(x) VALUES (?)".into(), vec![Value::Integer(rng.random_range(-2..5i64))]),
        4 => ("INSERT INTO t2(x) VALUES (?)".into(), vec![Value::Integer(rng.random_range(12..15i64))]),
        5 => ("INSERT INTO t(x) VALUES (abs(-9223372036854775807 - 1))".into(), vec![]),
        6 => {
            ("INSERT INTO t(x) VALUES (1), (2), (?)".into(), vec![Value::Integer(rng.random_range(-1..2i64))])
        }
        7 => ("DELETE FROM parent WHERE id = ?".into(), vec![id]),
        8 => {
            // A script: atomic as a whole, its second statement sometimes failing.
            let (a, b) = (rng.random_range(0..5i64), rng.random_range(12..15i64));
            (format!("{SCRIPT}INSERT INTO t(x) VALUES ({a});\nINSERT INTO t2(x) VALUES ({b});"), vec![])
        }
        _ => ("PRAGMA defer_foreign_keys = ON".into(), vec![]),
    }
}

/// The first line of a request that is a script (`execute_script`).
const SCRIPT: &str = "-- script\n";

/// What a request's answer says, comparable with plain SQLite: changes, or SQLite's extended
/// result code.
fn outcome(r: sila_sqlite::Result<sila_sqlite::ExecResult>) -> Result<u64, Option<i32>> {
    r.map(|x| x.changes).map_err(|e| {
        assert_eq!(e.code(), ErrorCode::Sqlite, "a constraint or runtime error is SQLITE: {e}");
        e.sqlite_code()
    })
}

/// The same request on plain SQLite, alone in its own (autocommit) transaction.
fn alone(conn: &rusqlite::Connection, sql: &str, params: &[Value]) -> Result<u64, Option<i32>> {
    if sql.starts_with(SCRIPT) {
        // A script alone: all of it in one transaction, or none of it.
        let before = conn.total_changes();
        conn.execute_batch("BEGIN").unwrap();
        return match conn.execute_batch(sql) {
            Ok(()) => {
                conn.execute_batch("COMMIT").unwrap();
                Ok(conn.total_changes() - before)
            }
            Err(e) => {
                conn.execute_batch("ROLLBACK").unwrap();
                Err(e.sqlite_error().map(|f| f.extended_code))
            }
        };
    }
    let params: Vec<rusqlite::types::Value> = params
        .iter()
        .map(|v| match v {
            Value::Integer(i) => rusqlite::types::Value::Integer(*i),
            other => panic!("unused in this test: {other:?}"),
        })
        .collect();
    let mut stmt = conn.prepare(sql).unwrap();
    let result = stmt.execute(rusqlite::params_from_iter(params.iter()));
    result.map(|n| n as u64).map_err(|e| e.sqlite_error().map(|f| f.extended_code))
}

const TABLES: [&str; 5] = ["parent", "child", "imm", "t", "t2"];

fn contents(db: &Database) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| {
            let rows = db.query(&format!("SELECT * FROM {t} ORDER BY rowid"), &[]).unwrap();
            let rows: Vec<Vec<i64>> = rows
                .rows
                .iter()
                .map(|r| r.iter().map(|v| if let Value::Integer(i) = v { *i } else { -1 }).collect())
                .collect();
            format!("{t}: {rows:?}")
        })
        .collect()
}

fn raw_contents(conn: &rusqlite::Connection) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {t} ORDER BY rowid")).unwrap();
            let n = stmt.column_count();
            let rows: Vec<Vec<i64>> = stmt
                .query_map([], |r| {
                    (0..n).map(|i| r.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(-1))).collect()
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            format!("{t}: {rows:?}")
        })
        .collect()
}

fn open(dir: &std::path::Path, executor: Option<Arc<dyn Executor>>) -> (Workspace, Database) {
    let options = WorkspaceOptions { executor, ..WorkspaceOptions::default() };
    let ws = Workspace::open(dir, options).unwrap();
    ws.register_app(APP, MANIFEST).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    for sql in SCHEMA {
        db.exec(sql, &[]).unwrap();
    }
    (ws, db)
}

#[test]
fn every_request_of_a_group_gets_the_outcome_it_would_have_alone() {
    let dir = TempDir::new("group-commit");
    let stepper = Arc::new(Stepper::new(4096));
    let (_ws_g, grouped) = open(&dir.0.join("grouped"), Some(stepper.clone() as Arc<dyn Executor>));
    let raw = rusqlite::Connection::open(dir.0.join("raw.sqlite")).unwrap();
    raw.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    for sql in SCHEMA {
        raw.execute_batch(sql).unwrap();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let (mut failures, mut deferred, mut failed_scripts) = (0usize, 0usize, 0usize);
    for g in 0..GROUPS {
        let n = rng.random_range(2..=GROUP_MAX);
        let requests: Vec<Request> = (0..n).map(|_| request(&mut rng)).collect();
        let pending: Vec<_> = requests
            .iter()
            .map(|(sql, p)| {
                if sql.starts_with(SCRIPT) {
                    grouped.submit_script(sql)
                } else {
                    grouped.submit_exec(sql, p.clone())
                }
            })
            .collect();
        stepper.run_until_idle(100_000, || 0);
        for (i, ((sql, params), p)) in requests.iter().zip(pending).enumerate() {
            let mut got = outcome(p.try_take().expect("every request is answered"));
            let mut want = alone(&raw, sql, params);
            if sql.starts_with("PRAGMA") {
                // SQLite's changes() after a PRAGMA still counts the statement before it; the
                // engine answers 0. Only the outcome is compared.
                got = got.map(|_| 0);
                want = want.map(|_| 0);
            }
            assert_eq!(got, want, "group {g}, request {i}: {sql} {params:?}\n  group: {requests:?}");
            if want.is_err() {
                failures += 1;
            }
            if want == Err(Some(787)) {
                deferred += 1;
            }
            if sql.starts_with(SCRIPT) && want.is_err() {
                failed_scripts += 1;
            }
        }
        assert_eq!(contents(&grouped), raw_contents(&raw), "after group {g}: {requests:?}");
    }
    // The mix really mixed: failing requests and deferred violations among them.
    assert!(failures > GROUPS, "{failures} failing requests");
    assert!(deferred > 10, "{deferred} deferred foreign key violations");
    assert!(failed_scripts > 10, "{failed_scripts} scripts failing half-way");
}
