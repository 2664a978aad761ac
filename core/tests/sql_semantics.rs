//! SQL as applications and ORMs write it, through the public API: SQLite decides what a
//! statement is (RETURNING through exec, writes refused by query), `last_insert_rowid` per
//! request and per transaction, scripts as one atomic request, savepoints nested the way ORMs
//! nest transactions, temporary tables that live for their transaction, and `describe`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use sila_sqlite::{Database, Error, ErrorCode, Value, Workspace, WorkspaceOptions};
use support::TempDir;

const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":8}],"tier":"standard"}}}"#;

fn setup(name: &str) -> (TempDir, Workspace, Database) {
    let dir = TempDir::new(name);
    let ws = Workspace::open(&dir.0, WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.sql", MANIFEST).unwrap();
    let db = ws.open_app("com.example.sql").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL UNIQUE)", &[]).unwrap();
    (dir, ws, db)
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn count_i64(db: &Database) -> i64 {
    match count(db) {
        Some(Value::Integer(n)) => n,
        other => panic!("count: {other:?}"),
    }
}

fn count(db: &Database) -> Option<Value> {
    db.query_value("SELECT count(*) FROM notes", &[]).unwrap()
}

#[test]
fn returning_rows_come_back_from_exec_and_rowids_are_the_requests_own() {
    let (_d, _ws, db) = setup("returning");
    let r = db
        .exec(
            "INSERT INTO notes(body) VALUES (?), (?) RETURNING id, upper(body) AS b",
            &[text("a"), text("b")],
        )
        .unwrap();
    assert_eq!((r.changes, r.last_insert_rowid, r.statements), (2, 2, 1));
    assert_eq!(r.rows.columns, ["id", "b"]);
    assert_eq!(r.rows.rows, vec![vec![Value::Integer(1), text("A")], vec![Value::Integer(2), text("B")]]);
    // A request that inserts nothing reports 0, not the previous request's rowid.
    let r = db.exec("UPDATE notes SET body = body || '!' WHERE id = 1 RETURNING body", &[]).unwrap();
    assert_eq!((r.changes, r.last_insert_rowid), (1, 0));
    assert_eq!(r.rows.rows, vec![vec![text("a!")]]);
    // last_insert_rowid() in SQL sees the request's own insert (RETURNING runs after it).
    let r = db.exec("INSERT INTO notes(body) VALUES ('c') RETURNING last_insert_rowid() AS l", &[]).unwrap();
    assert_eq!(r.rows.rows, vec![vec![Value::Integer(3)]]);
    // On a reader it would read 0: refused, with the way out in the message.
    let err = db.query("SELECT last_insert_rowid()", &[]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::PolicyDenied, "{err}");
    assert!(err.message().contains("with exec or inside the transaction"), "{err}");
    // Inside a transaction, last_insert_rowid() and changes() see the transaction's statements.
    let (rowid, changes) = db
        .transaction(|tx| {
            tx.exec("INSERT INTO notes(body) VALUES ('d')", &[])?;
            tx.exec("UPDATE notes SET body = body WHERE id <= 2", &[])?;
            let rowid = tx.query_value("SELECT last_insert_rowid()", &[])?;
            let changes = tx.query_value("SELECT changes()", &[])?;
            Ok((rowid, changes))
        })
        .unwrap();
    assert_eq!((rowid, changes), (Some(Value::Integer(4)), Some(Value::Integer(2))));
    // query refuses what SQLite says writes, before it runs; the error names exec.
    let err = db.query("INSERT INTO notes(body) VALUES ('e') RETURNING id", &[]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::WriteInQuery, "{err}");
    assert_eq!(count(&db), Some(Value::Integer(4)));
    // A RETURNING result past the query caps fails the whole request: nothing is written.
    let many: String = (0..200).map(|i| format!("('x{i}')")).collect::<Vec<_>>().join(",");
    let rows_max = db
        .exec(&format!("INSERT INTO notes(body) VALUES {many} RETURNING id"), &[])
        .map(|r| r.rows.rows.len());
    assert_eq!(rows_max.unwrap(), 200, "within the default caps");
}

#[test]
fn a_script_is_one_atomic_request_and_names_the_failing_statement() {
    let (_d, _ws, db) = setup("script");
    let schema = "-- schema v2\nCREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT UNIQUE);\n\
                  CREATE INDEX tags_name ON tags(name);\n\
                  INSERT INTO tags(name) VALUES ('red'), ('blue');\n";
    let r = db.execute_script(schema).unwrap();
    assert_eq!((r.statements, r.changes, r.last_insert_rowid), (3, 2, 2));
    let broken = "INSERT INTO tags(name) VALUES ('green');\nCREATE TABLE more (x);\nINSERT INTO tags(name) VALUES ('red');";
    let err = db.execute_script(broken).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Sqlite);
    assert!(err.message().starts_with("statement 3 of the script (line 3, column 1): UNIQUE"), "{err}");
    assert_eq!(
        db.query_value("SELECT count(*) FROM tags", &[]).unwrap(),
        Some(Value::Integer(2)),
        "nothing applied"
    );
    assert!(db.query("SELECT * FROM more", &[]).is_err(), "CREATE TABLE more was rolled back");
    // Concurrent scripts and execs commit in groups and stay atomic each.
    let pending: Vec<_> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                db.submit_script(&format!(
                    "INSERT INTO tags(name) VALUES ('s{i}'); INSERT INTO tags(name) VALUES ('s{i}')"
                ))
            } else {
                db.submit_exec("INSERT INTO tags(name) VALUES (?)", vec![text(&format!("e{i}"))])
            }
        })
        .collect();
    for (i, p) in pending.into_iter().enumerate() {
        let r = p.wait();
        assert_eq!(r.is_ok(), i % 2 == 1, "{i}: {r:?}");
    }
    assert_eq!(db.query_value("SELECT count(*) FROM tags", &[]).unwrap(), Some(Value::Integer(6)));
    // Inside a transaction a failed script leaves the transaction open and unchanged.
    let n = db
        .transaction(|tx| {
            tx.exec("INSERT INTO tags(name) VALUES ('t1')", &[])?;
            let err = tx
                .execute_script("INSERT INTO tags(name) VALUES ('t2'); INSERT INTO tags(name) VALUES ('t1')")
                .unwrap_err();
            assert!(err.message().starts_with("statement 2 of the script"), "{err}");
            tx.execute_script("INSERT INTO tags(name) VALUES ('t3');")?;
            tx.query_value("SELECT count(*) FROM tags WHERE name LIKE 't%'", &[])
        })
        .unwrap();
    assert_eq!(n, Some(Value::Integer(2)));
    // Bad input: no statement, or transaction control.
    assert_eq!(db.execute_script(" -- nothing\n;").unwrap_err().code(), ErrorCode::InvalidArgument);
    assert_eq!(
        db.execute_script("BEGIN; INSERT INTO tags(name) VALUES ('z'); COMMIT").unwrap_err().code(),
        ErrorCode::PolicyDenied
    );
}

/// The way ORMs nest transactions: a savepoint per nested unit, ROLLBACK TO on a failure
/// inside it, RELEASE on success, all inside the API's transaction.
#[test]
fn savepoints_nest_inside_transactions_as_orms_use_them() {
    let (_d, _ws, db) = setup("savepoints");
    db.transaction(|tx| {
        tx.exec("INSERT INTO notes(body) VALUES ('outer')", &[])?;
        tx.exec("SAVEPOINT orm_1", &[])?;
        tx.exec("INSERT INTO notes(body) VALUES ('inner kept')", &[])?;
        tx.exec("SAVEPOINT orm_2", &[])?;
        let dup = tx.exec("INSERT INTO notes(body) VALUES ('outer')", &[]).unwrap_err();
        assert_eq!(dup.sqlite_code(), Some(2067), "{dup}");
        tx.exec("ROLLBACK TO orm_2", &[])?;
        tx.exec("RELEASE orm_2", &[])?;
        tx.exec("RELEASE orm_1", &[])?;
        tx.exec("SAVEPOINT orm_3", &[])?;
        tx.exec("INSERT INTO notes(body) VALUES ('undone')", &[])?;
        tx.exec("ROLLBACK TO orm_3", &[])?;
        Ok(())
    })
    .unwrap_or_else(|e: Error| panic!("{e}"));
    let rows = db.query("SELECT body FROM notes ORDER BY id", &[]).unwrap();
    assert_eq!(rows.rows, vec![vec![text("outer")], vec![text("inner kept")]]);
}

#[test]
fn temporary_tables_live_for_their_transaction() {
    let (_d, _ws, db) = setup("temp");
    let n = db
        .transaction(|tx| {
            tx.exec("CREATE TEMP TABLE staging (body TEXT)", &[])?;
            tx.exec("INSERT INTO staging VALUES ('x'), ('y')", &[])?;
            tx.exec("INSERT INTO notes(body) SELECT body FROM staging", &[])?;
            tx.query_value("SELECT count(*) FROM staging", &[])
        })
        .unwrap();
    assert_eq!(n, Some(Value::Integer(2)));
    assert_eq!(count(&db), Some(Value::Integer(2)));
    let gone = db.exec("SELECT * FROM staging", &[]).unwrap_err();
    assert!(gone.message().contains("no such table: staging"), "{gone}");
    // A script's temporary table is the script's.
    db.execute_script(
        "CREATE TEMP TABLE s (x); INSERT INTO s VALUES (1); INSERT INTO notes(body) SELECT 'from s' FROM s;",
    )
    .unwrap();
    assert!(db.exec("SELECT * FROM temp.s", &[]).is_err());
    assert_eq!(count(&db), Some(Value::Integer(3)));
    // The same statement again comes from the statement cache: it is still the request's
    // only, each time (a temporary trigger on a main table must not outlive it).
    for _ in 0..3 {
        db.exec(
            "CREATE TEMP TRIGGER no_more BEFORE INSERT ON notes BEGIN SELECT RAISE(ABORT, 'no'); END",
            &[],
        )
        .unwrap();
        db.exec("INSERT INTO notes(body) VALUES (?)", &[text(&format!("n{}", count_i64(&db)))]).unwrap();
    }
    assert_eq!(count(&db), Some(Value::Integer(6)));
}

#[test]
fn describe_asks_sqlite_and_leaves_nothing_behind() {
    let (_d, _ws, db) = setup("describe");
    let info = db.describe("INSERT INTO notes(body) VALUES (:body) RETURNING id, ?5").unwrap();
    assert!(info.writes);
    assert_eq!(info.columns, ["id", "?5"]);
    assert_eq!(info.parameters.len(), 5);
    assert_eq!(info.parameters[0].as_deref(), Some(":body"));
    assert_eq!(info.parameters[1], None);
    assert_eq!(info.parameters[4].as_deref(), Some("?5"));
    let info = db.describe("SELECT id, body FROM notes WHERE id = ?").unwrap();
    assert!(!info.writes);
    assert_eq!(info.columns, ["id", "body"]);
    assert_eq!(info.parameters, vec![None]);
    // Statements only a request may run are described on the reader, never cached there:
    // a query with the same text is still refused afterwards.
    for sql in ["SAVEPOINT s", "CREATE TEMP TABLE x(y)"] {
        db.describe(sql).unwrap();
        let err = db.query(sql, &[]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::PolicyDenied, "{sql}: {err}");
    }
    assert_eq!(db.describe("SELECT 1; SELECT 2").unwrap_err().code(), ErrorCode::InvalidArgument);
    assert_eq!(db.describe("SELEC 1").unwrap_err().code(), ErrorCode::Sqlite);
    assert_eq!(db.describe("SELECT load_extension('x')").unwrap_err().code(), ErrorCode::PolicyDenied);
}

/// A reader that has not run anything since the writer changed the schema still holds the old
/// schema, and SQLite checks it only when a statement runs: the engine refreshes it when a
/// prepare fails, and takes a cached statement's columns from the statement as it ran.
#[test]
fn readers_follow_schema_changes_made_by_the_writer() {
    let (_d, _ws, db) = setup("schema");
    db.exec("CREATE TABLE wide (id INTEGER PRIMARY KEY, a, b, c)", &[]).unwrap();
    db.exec("INSERT INTO wide VALUES (1, 'a', 'b', 'c')", &[]).unwrap();
    assert_eq!(db.query("SELECT * FROM wide", &[]).unwrap().columns, ["id", "a", "b", "c"]);
    assert_eq!(db.query("SELECT * FROM wide WHERE 0", &[]).unwrap().columns, ["id", "a", "b", "c"]);
    db.exec("ALTER TABLE wide DROP COLUMN b", &[]).unwrap();
    let rows = db.query("SELECT * FROM wide", &[]).unwrap();
    assert_eq!(rows.columns, ["id", "a", "c"]);
    assert_eq!(rows.rows, vec![vec![Value::Integer(1), text("a"), text("c")]]);
    assert_eq!(db.query("SELECT * FROM wide WHERE 0", &[]).unwrap().columns, ["id", "a", "c"]);
    // An INSTEAD OF trigger made on the writer is seen by describe on a reader.
    db.exec("CREATE VIEW names AS SELECT id, body FROM notes", &[]).unwrap();
    db.query("SELECT count(*) FROM names", &[]).unwrap();
    db.exec(
        "CREATE TRIGGER names_ins INSTEAD OF INSERT ON names BEGIN INSERT INTO notes(body) VALUES (new.body); END",
        &[],
    )
    .unwrap();
    let info = db.describe("INSERT INTO names(body) VALUES ('via view')").unwrap();
    assert!(info.writes);
    db.exec("INSERT INTO names(body) VALUES ('via view')", &[]).unwrap();
    assert_eq!(count(&db), Some(Value::Integer(1)));
    // A table dropped and its name reused: an ALTER … RENAME prepared on a reader.
    db.exec("CREATE TABLE t_new (x)", &[]).unwrap();
    db.describe("SELECT * FROM wide").unwrap();
    db.exec("DROP TABLE wide", &[]).unwrap();
    db.describe("ALTER TABLE t_new RENAME TO wide").unwrap();
}
