//! The broker through the public API: query, exec, transactions, group commit, limits,
//! non-blocking calls, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use sila_sqlite::{BrokerOptions, CancelToken, Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::TempDir;

const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics","maxSizeMB":1},{"name":"ro","readOnly":true}],"tier":"standard"}}}"#;
const FOREVER: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";

fn setup(name: &str, broker: BrokerOptions) -> (TempDir, Workspace, Database) {
    let dir = TempDir::new(name);
    let ws = Workspace::open(&dir.0, WorkspaceOptions { broker, ..WorkspaceOptions::default() }).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("sila://db/analytics").unwrap();
    db.exec("CREATE TABLE events (id TEXT PRIMARY KEY, user_id TEXT, ts INTEGER, data BLOB)", &[]).unwrap();
    (dir, ws, db)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

#[test]
fn exec_query_and_typed_values() {
    let (_d, _ws, db) = setup("basic", BrokerOptions::default());
    let r = db
        .exec(
            "INSERT INTO events VALUES (?, ?, ?, ?)",
            &[text("e1"), text("u1"), Value::Integer(5), Value::Blob(vec![1, 2])],
        )
        .unwrap();
    assert_eq!(r.changes, 1);
    assert_eq!(r.last_insert_rowid, 1);
    db.exec("INSERT INTO events VALUES ('e2', 'u1', 6, NULL)", &[]).unwrap();
    let rows = db
        .query("SELECT id, ts, data, 1.5 AS r FROM events WHERE user_id = ? ORDER BY ts", &[text("u1")])
        .unwrap();
    assert_eq!(rows.columns, vec!["id", "ts", "data", "r"]);
    assert_eq!(rows.rows[0], vec![text("e1"), Value::Integer(5), Value::Blob(vec![1, 2]), Value::Real(1.5)]);
    assert_eq!(rows.rows[1][2], Value::Null);
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(2)));
    assert_eq!(db.query_value("SELECT id FROM events WHERE ts = 99", &[]).unwrap(), None);
}

#[test]
fn bad_sql_gets_typed_errors_and_changes_nothing() {
    let (_d, ws, db) = setup("bad", BrokerOptions::default());
    let e = db.query("SELEC 1", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Sqlite);
    assert!(e.message().contains("syntax error"), "{e}");
    let e = db.exec("INSERT INTO events VALUES (?, ?, ?, ?)", &[text("x")]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert!(e.message().contains("expects 4 parameters, got 1"), "{e}");
    let e = db.exec("BEGIN", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PolicyDenied, "{e}");
    assert!(e.message().contains("transaction API"), "{e}");
    let e = db.exec("INSERT INTO events(id) VALUES ('a'); DELETE FROM events", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(0)));
    // Unknown app, a database not in the manifest, another app's database.
    assert_eq!(ws.open_app("nobody").unwrap_err().code(), ErrorCode::NotFound);
    let app = ws.open_app("com.example.notes").unwrap();
    assert_eq!(app.open("cache").unwrap_err().code(), ErrorCode::CapabilityDenied);
    assert_eq!(app.open("sila://app/other/db/analytics").unwrap_err().code(), ErrorCode::CapabilityDenied);
    assert_eq!(app.open("../analytics").unwrap_err().code(), ErrorCode::InvalidName);
    // A read-only database refuses writes, through exec and transactions.
    let ro = app.open("ro").unwrap();
    assert_eq!(ro.exec("CREATE TABLE t(x)", &[]).unwrap_err().code(), ErrorCode::ReadOnly);
    assert_eq!(ro.transaction(|_| Ok(())).unwrap_err().code(), ErrorCode::ReadOnly);
    assert_eq!(ro.query_value("SELECT 1", &[]).unwrap(), Some(Value::Integer(1)));
    // A query cannot write: SQLite says the statement writes, so nothing runs, and the error
    // names exec.
    let err = db.query("INSERT INTO events(id) VALUES ('q') RETURNING id", &[]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::WriteInQuery, "{err}");
    assert!(err.message().contains("exec"), "{err}");
}

/// SQL text is accepted up to `SQL_LENGTH_BYTES_MAX` bytes and refused one byte past it with
/// a typed error, through query and exec; nothing changes.
#[test]
fn sql_at_the_length_limit() {
    let (_d, _ws, db) = setup("sql-length", BrokerOptions::default());
    let limit = usize::try_from(sila_sqlite::sqlite::policy::SQL_LENGTH_BYTES_MAX).unwrap();
    let padded = |head: &str, len: usize| {
        let mut sql = format!("{head} -- ");
        sql.extend(std::iter::repeat_n('x', len - sql.len()));
        sql
    };
    assert_eq!(db.query_value(&padded("SELECT 42", limit), &[]).unwrap(), Some(Value::Integer(42)));
    let e = db.query(&padded("SELECT 42", limit + 1), &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{}", e.code());
    assert!(e.message().contains("length limit"), "{}", &e.message()[..200.min(e.message().len())]);
    let insert = "INSERT INTO events(id) VALUES ('long')";
    db.exec(&padded(insert, limit), &[]).unwrap();
    let e = db.exec(&padded(insert, limit + 1), &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{}", e.code());
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(1)));
}

#[test]
fn zeroblob_over_the_quota_is_quota_exceeded_and_the_database_stays_usable() {
    let (_d, _ws, db) = setup("quota", BrokerOptions::default());
    // maxSizeMB is 1: two megabytes cannot fit.
    let e = db.exec("INSERT INTO events(id, data) VALUES ('big', zeroblob(2000000))", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
    db.exec("INSERT INTO events(id) VALUES ('small')", &[]).unwrap();
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(1)));
    assert_eq!(db.query_value("PRAGMA quick_check", &[]).unwrap(), Some(text("ok")));
}

/// SQLITE_FULL rolls back SQLite's whole transaction: the requests grouped with the failing
/// one must still commit.
#[test]
fn a_group_survives_a_request_that_aborts_the_transaction() {
    let options = BrokerOptions { max_concurrent_requests_per_app: 256, ..BrokerOptions::default() };
    let (_d, _ws, db) = setup("abort", options);
    let mut pending = Vec::new();
    for i in 0..60 {
        let sql = if i % 20 == 10 {
            "INSERT INTO events(id, data) VALUES (?, zeroblob(2000000))"
        } else {
            "INSERT INTO events(id) VALUES (?)"
        };
        pending.push(db.submit_exec(sql, vec![Value::Text(format!("e{i}"))]));
    }
    for (i, p) in pending.into_iter().enumerate() {
        let r = p.wait();
        if i % 20 == 10 {
            assert_eq!(r.unwrap_err().code(), ErrorCode::QuotaExceeded, "request {i}");
        } else {
            assert_eq!(r.unwrap().changes, 1, "request {i}");
        }
    }
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(57)));
}

#[test]
fn transactions_commit_roll_back_and_survive_panics() {
    let (_d, _ws, db) = setup("tx", BrokerOptions::default());
    let n = db
        .transaction(|tx| {
            tx.exec("INSERT INTO events(id) VALUES ('a')", &[])?;
            tx.query_value("SELECT count(*) FROM events", &[])
        })
        .unwrap();
    assert_eq!(n, Some(Value::Integer(1)));
    let e = db
        .transaction(|tx| {
            tx.exec("INSERT INTO events(id) VALUES ('b')", &[])?;
            tx.exec("INSERT INTO events(id) VALUES ('a')", &[]) // duplicate key
        })
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Sqlite);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.transaction(|tx| {
            tx.exec("INSERT INTO events(id) VALUES ('c')", &[])?;
            panic!("host code panics mid-transaction");
            #[allow(unreachable_code)]
            Ok(())
        })
    }));
    assert!(panicked.is_err());
    let ids = db.query("SELECT id FROM events ORDER BY id", &[]).unwrap();
    assert_eq!(ids.rows, vec![vec![text("a")]], "b and c were rolled back");
    // The writer is usable after the panic.
    db.exec("INSERT INTO events(id) VALUES ('d')", &[]).unwrap();
}

#[test]
fn transaction_timeout_rolls_back() {
    let options =
        BrokerOptions { transaction_timeout: Duration::from_millis(200), ..BrokerOptions::default() };
    let (_d, _ws, db) = setup("txtimeout", options);
    let e = db
        .transaction(|tx| {
            tx.exec("INSERT INTO events(id) VALUES ('a')", &[])?;
            tx.query(FOREVER, &[])
        })
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert!(e.message().contains("transaction_timeout"), "{e}");
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(0)));
    // A body that returns Ok after the deadline is rolled back too.
    let e = db
        .transaction(|tx| {
            tx.exec("INSERT INTO events(id) VALUES ('b')", &[])?;
            let _ = tx.query(FOREVER, &[]);
            Ok(())
        })
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout);
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(0)));
}

#[test]
fn statement_timeout_and_cancellation() {
    let options = BrokerOptions { statement_timeout: Duration::from_millis(300), ..BrokerOptions::default() };
    let (_d, _ws, db) = setup("timeout", options);
    let e = db.query(FOREVER, &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    // (No bound on the wall time: a loaded machine may be slow; an endless statement whose
    // deadline did not fire would never return. deadlines_are_measured_on_the_workspace_clock
    // pins the deadline itself on a simulated clock.)
    let endless_insert =
        "INSERT INTO events(ts) SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c WHERE x < 0)";
    let e = db.exec(endless_insert, &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");

    let cancel = CancelToken::new();
    cancel.cancel();
    assert_eq!(db.query_with("SELECT 1", &[], &cancel).unwrap_err().code(), ErrorCode::Cancelled);
    let pending = db.submit_query(FOREVER, vec![]);
    pending.cancel();
    assert_eq!(pending.wait().unwrap_err().code(), ErrorCode::Cancelled);
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(0)));
}

#[test]
fn result_caps_at_the_boundary() {
    let mut options = BrokerOptions::default();
    options.query_limits.rows_max = 10;
    let (_d, _ws, db) = setup("caps", options);
    let ten = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 10) SELECT x FROM c";
    assert_eq!(db.query(ten, &[]).unwrap().rows.len(), 10);
    let eleven = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 11) SELECT x FROM c";
    let e = db.query(eleven, &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ResultTooLarge);
    assert!(e.message().contains("rows_max"), "{e}");
    // A 10-million-row result is refused without being built.
    let e = db.query(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 10000000) SELECT x FROM c",
        &[],
    );
    assert_eq!(e.unwrap_err().code(), ErrorCode::ResultTooLarge);
    // query_value computes the first row only: the cap is on what it returns.
    assert_eq!(db.query_value(eleven, &[]).unwrap(), Some(Value::Integer(1)));
    // Reads inside a transaction obey the same configured caps.
    db.transaction(|tx| {
        assert_eq!(tx.query(ten, &[])?.rows.len(), 10);
        assert_eq!(tx.query(eleven, &[]).unwrap_err().code(), ErrorCode::ResultTooLarge);
        assert_eq!(tx.query_value(eleven, &[])?, Some(Value::Integer(1)));
        Ok(())
    })
    .unwrap();
}

#[test]
fn concurrent_request_limit_per_app() {
    let options = BrokerOptions { max_concurrent_requests_per_app: 2, ..BrokerOptions::default() };
    let (_d, _ws, db) = setup("admission", options);
    let a = db.submit_query(FOREVER, vec![]);
    let b = db.submit_query(FOREVER, vec![]);
    let e = db.query("SELECT 1", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Busy);
    assert!(e.message().contains("max_concurrent_requests_per_app is 2"), "{e}");
    a.cancel();
    b.cancel();
    assert_eq!(a.wait().unwrap_err().code(), ErrorCode::Cancelled);
    assert_eq!(b.wait().unwrap_err().code(), ErrorCode::Cancelled);
    assert_eq!(db.query_value("SELECT 1", &[]).unwrap(), Some(Value::Integer(1)), "slots were released");
}

#[test]
fn a_request_waits_admission_wait_for_a_slot_then_is_busy() {
    let options = BrokerOptions {
        max_concurrent_requests_per_app: 2,
        admission_wait: Duration::from_millis(40),
        ..BrokerOptions::default()
    };
    let (_d, _ws, db) = setup("admission-wait", options);
    let a = db.submit_query(FOREVER, vec![]);
    // One of two slots taken: the second request is admitted.
    assert_eq!(db.query_value("SELECT 1", &[]).unwrap(), Some(Value::Integer(1)));
    let b = db.submit_query(FOREVER, vec![]);
    // Two of two: the third waits admission_wait (40 ms, at least), then is refused.
    let started = Instant::now();
    let e = db.query("SELECT 1", &[]).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(40), "{:?}", started.elapsed());
    assert_eq!(e.code(), ErrorCode::Busy);
    assert!(e.message().contains("admission_wait (40 ms)"), "{e}");
    // A slot given back while a request waits is its: an hour's wait ends when `a` ends.
    let options = BrokerOptions {
        max_concurrent_requests_per_app: 2,
        admission_wait: Duration::from_secs(3600),
        ..BrokerOptions::default()
    };
    let (_d2, _ws2, db2) = setup("admission-wait-2", options);
    let (c, d) = (db2.submit_query(FOREVER, vec![]), db2.submit_query(FOREVER, vec![]));
    let cancel_c = c.cancel_token();
    let waiter = std::thread::spawn(move || db2.query_value("SELECT 1", &[]));
    cancel_c.cancel();
    assert_eq!(waiter.join().unwrap().unwrap(), Some(Value::Integer(1)));
    for p in [a, b, c, d] {
        p.cancel();
        assert_eq!(p.wait().unwrap_err().code(), ErrorCode::Cancelled);
    }
}

#[test]
fn a_slot_is_free_again_before_its_request_is_answered() {
    // One slot and no wait: a client that submits the moment its last answer arrives must
    // never find the slot still taken, on the blocking and the non-blocking path.
    let options = BrokerOptions {
        max_concurrent_requests_per_app: 1,
        admission_wait: Duration::ZERO,
        ..BrokerOptions::default()
    };
    let (_d, _ws, db) = setup("admission-release", options);
    for i in 0..300 {
        db.submit_exec("INSERT INTO events(id) VALUES (?)", vec![Value::Text(format!("s{i}"))])
            .wait()
            .unwrap();
        db.exec("INSERT INTO events(id) VALUES (?)", &[Value::Text(format!("b{i}"))]).unwrap();
        db.submit_query("SELECT count(*) FROM events", vec![]).wait().unwrap();
        db.submit_transaction(|tx| tx.query("SELECT 1", &[]).map(|_| ())).wait().unwrap();
    }
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(600)));
}

#[test]
fn group_commit_isolates_a_failing_request() {
    let options = BrokerOptions { max_concurrent_requests_per_app: 256, ..BrokerOptions::default() };
    let (_d, _ws, db) = setup("group", options);
    db.exec("INSERT INTO events(id) VALUES ('dup')", &[]).unwrap();
    let mut pending = Vec::new();
    for i in 0..200 {
        let id = if i == 100 { "dup".to_string() } else { format!("e{i}") };
        pending.push(db.submit_exec(
            "INSERT INTO events(id, ts) VALUES (?, ?)",
            vec![Value::Text(id), Value::Integer(i)],
        ));
    }
    let results: Vec<_> = pending.into_iter().map(|p| p.wait()).collect();
    for (i, r) in results.iter().enumerate() {
        if i == 100 {
            assert_eq!(r.as_ref().unwrap_err().code(), ErrorCode::Sqlite, "the duplicate fails alone");
        } else {
            assert_eq!(r.as_ref().unwrap().changes, 1, "request {i}");
        }
    }
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(200)));
}

#[test]
fn concurrent_blocking_writers_and_readers() {
    let (_d, _ws, db) = setup("concurrent", BrokerOptions::default());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    db.exec(
                        "INSERT INTO events(id, ts) VALUES (?, ?)",
                        &[Value::Text(format!("{t}-{i}")), Value::Integer(i)],
                    )
                    .unwrap();
                    db.query("SELECT count(*) FROM events", &[]).unwrap();
                    if i % 10 == 0 {
                        db.transaction(|tx| {
                            tx.exec(
                                "UPDATE events SET ts = ts + 1 WHERE id = ?",
                                &[Value::Text(format!("{t}-{i}"))],
                            )
                        })
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(400)));
    let stats = db.stats();
    assert!(stats.metrics.execs >= 400, "{:?}", stats.metrics);
    assert!(stats.connections <= 5, "one writer and at most readers_max readers");
}

#[test]
fn non_blocking_calls_complete_through_callbacks_on_worker_threads() {
    let (_d, _ws, db) = setup("callbacks", BrokerOptions::default());
    let (tx, rx) = std::sync::mpsc::channel();
    // The callback runs on the worker that answers, or at registration if the answer is
    // already in; either way exactly once.
    db.submit_exec("INSERT INTO events(id) VALUES ('cb')", vec![]).on_complete(move |r| {
        tx.send(r.map(|x| x.changes)).unwrap();
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap(), 1);
    assert!(rx.recv_timeout(Duration::from_millis(10)).is_err(), "answered once");
    let p = db.submit_transaction(|tx| {
        tx.exec("INSERT INTO events(id) VALUES ('t')", &[])?;
        tx.query_value("SELECT count(*) FROM events", &[])
    });
    assert_eq!(p.wait().unwrap(), Some(Value::Integer(2)));
    let p = db.submit_query("SELECT id FROM events ORDER BY id", vec![]);
    assert_eq!(p.wait().unwrap().rows.len(), 2);
}

#[test]
fn metrics_and_slow_query_log() {
    let options =
        BrokerOptions { slow_query_threshold: Duration::from_millis(50), ..BrokerOptions::default() };
    let (_d, ws, db) = setup("metrics", options);
    db.exec("INSERT INTO events(id, user_id) VALUES ('a', 'secret-user')", &[]).unwrap();
    for _ in 0..10 {
        db.query("SELECT * FROM events WHERE user_id = 'secret-user'", &[]).unwrap();
    }
    let _ = db.query("SELEC", &[]);
    let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 3000000) SELECT count(*) FROM c WHERE x > 41";
    db.query(slow, &[]).unwrap();
    let m = db.stats().metrics;
    assert_eq!(m.queries, 12);
    assert_eq!(m.error_count(ErrorCode::Sqlite), 1);
    assert!(m.rows_read >= 11);
    assert!(m.latency_us_p50 > 0 && m.latency_us_p99 >= m.latency_us_p50);
    let entries = ws.broker().slow_log.entries();
    assert!(!entries.is_empty(), "the 3M-row count is slower than 50 ms");
    for e in &entries {
        assert!(!e.sql.contains("41") && !e.sql.contains("secret"), "SQL is redacted: {}", e.sql);
    }
    let all = ws.stats(None, None).unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].to_json()["metrics"]["queries"].as_u64() == Some(12));
}

/// Threads and file descriptors do not grow with the number of databases: a cap on open
/// connections closes idle ones of the least recently used databases.
#[test]
fn threads_and_descriptors_stay_bounded_across_many_databases() {
    let options = BrokerOptions { connections_max: 16, worker_threads: 2, ..BrokerOptions::default() };
    let dir = TempDir::new("many");
    let ws =
        Workspace::open(&dir.0, WorkspaceOptions { broker: options, ..WorkspaceOptions::default() }).unwrap();
    let manifest = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":1},{"name":"b","maxSizeMB":1},{"name":"c","maxSizeMB":1}]}}}"#;
    let count = |p: &str| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    let mut dbs = Vec::new();
    for i in 0..40 {
        let id = format!("app{i}");
        ws.register_app(&id, manifest).unwrap();
        let app = ws.open_app(&id).unwrap();
        for name in ["a", "b", "c"] {
            dbs.push(app.open(name).unwrap());
        }
    }
    let (threads_before, fds_before) = (count("/proc/self/task"), count("/proc/self/fd"));
    for (i, db) in dbs.iter().enumerate() {
        db.exec("CREATE TABLE t(x)", &[]).unwrap();
        db.exec("INSERT INTO t VALUES (?)", &[Value::Integer(i as i64)]).unwrap();
        assert_eq!(db.query_value("SELECT x FROM t", &[]).unwrap(), Some(Value::Integer(i as i64)));
        assert!(ws.broker().connections_open() <= 16);
    }
    let (threads_after, fds_after) = (count("/proc/self/task"), count("/proc/self/fd"));
    assert!(threads_after <= threads_before + 1, "threads grew from {threads_before} to {threads_after}");
    // 16 connections hold at most 3 descriptors each (db, wal, shm).
    assert!(fds_after <= fds_before + 16 * 3, "descriptors grew from {fds_before} to {fds_after}");
    // Every database kept its data through the evictions.
    for (i, db) in dbs.iter().enumerate() {
        assert_eq!(db.query_value("SELECT x FROM t", &[]).unwrap(), Some(Value::Integer(i as i64)));
    }
    let _ = Arc::new(());
}

/// Temporary objects live for the transaction (or request) that creates them, then are
/// dropped; the manifest's `tempObjects` relaxation keeps them on their connection. The
/// relaxation survives a reopen (it is part of the app record).
#[test]
fn manifest_policy_relaxations_apply_per_app() {
    let dir = TempDir::new("relax");
    let strict = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":1}]}}}"#;
    let relaxed = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":1}],"policy":{"tempObjects":true}}}}"#;
    let temp_table = |db: &Database| {
        db.transaction(|tx| {
            tx.exec("CREATE TEMP TABLE scratch (x)", &[])?;
            tx.exec("INSERT INTO scratch VALUES (1)", &[])?;
            tx.query_value("SELECT count(*) FROM scratch", &[])
        })
    };
    {
        let ws = Workspace::open(&dir.0, WorkspaceOptions::default()).unwrap();
        ws.register_app("strict.app", strict).unwrap();
        ws.register_app("relaxed.app", relaxed).unwrap();
        let s = ws.open_app("strict.app").unwrap().open("main").unwrap();
        assert_eq!(temp_table(&s).unwrap(), Some(Value::Integer(1)));
        let gone = s.exec("SELECT count(*) FROM temp.scratch", &[]).unwrap_err();
        assert!(gone.message().contains("no such table"), "{gone}");
        assert_eq!(temp_table(&s).unwrap(), Some(Value::Integer(1)), "dropped, so it can be made again");
        let in_query = s.query("CREATE TEMP TABLE q(x)", &[]).unwrap_err();
        assert_eq!(in_query.code(), ErrorCode::PolicyDenied, "{in_query}");
        // A rolled-back transaction takes its temporary objects with it.
        let r = s.transaction(|tx| {
            tx.exec("CREATE TEMP TABLE scratch (x)", &[])?;
            Err::<(), _>(sila_sqlite::Error::new(ErrorCode::InvalidArgument, "changed my mind"))
        });
        assert_eq!(r.unwrap_err().code(), ErrorCode::InvalidArgument);
        assert_eq!(temp_table(&s).unwrap(), Some(Value::Integer(1)));
        let r = ws.open_app("relaxed.app").unwrap().open("main").unwrap();
        assert_eq!(temp_table(&r).unwrap(), Some(Value::Integer(1)));
        let kept = r.exec("SELECT count(*) FROM temp.scratch", &[]).unwrap();
        assert_eq!(kept.rows.rows, vec![vec![Value::Integer(1)]], "kept on the writer connection");
    }
    let ws = Workspace::open(&dir.0, WorkspaceOptions::default()).unwrap();
    let r = ws.open_app("relaxed.app").unwrap().open("main").unwrap();
    assert_eq!(temp_table(&r).unwrap(), Some(Value::Integer(1)), "the relaxation survives a reopen");
}

/// When SQLite rolls a transaction back by itself (here a trigger's RAISE(ROLLBACK)), later
/// statements of the body must not run in autocommit and commit on their own.
#[test]
fn a_transaction_rolled_back_by_sqlite_runs_nothing_more() {
    let (_d, _ws, db) = setup("raise", BrokerOptions::default());
    db.exec(
        "CREATE TRIGGER no_bad BEFORE INSERT ON events WHEN NEW.id = 'bad' BEGIN SELECT RAISE(ROLLBACK, 'bad row'); END",
        &[],
    )
    .unwrap();
    let r = db.transaction(|tx| {
        tx.exec("INSERT INTO events(id) VALUES ('a')", &[])?;
        let _ = tx.exec("INSERT INTO events(id) VALUES ('bad')", &[]);
        // The body ignores the error and goes on.
        let _ = tx.exec("INSERT INTO events(id) VALUES ('c')", &[]);
        Ok(())
    });
    assert!(r.is_err(), "the transaction must not report success");
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(0)));
    db.exec("INSERT INTO events(id) VALUES ('d')", &[]).unwrap();
}

/// Closing idle databases never forgets one a handle still uses (a later open would get a
/// second writer queue for the same file); once the last handle is gone, it is forgotten.
#[test]
fn idle_close_keeps_databases_that_handles_still_use() {
    let (_d, ws, db) = setup("idle", BrokerOptions::default());
    db.exec("INSERT INTO events(id) VALUES ('a')", &[]).unwrap();
    assert_eq!(ws.broker().close_idle(Duration::ZERO), 0);
    assert_eq!(ws.broker().databases_active(), 1);
    assert_eq!(ws.broker().connections_open(), 0, "its idle connections were closed");
    assert_eq!(db.query_value("SELECT count(*) FROM events", &[]).unwrap(), Some(Value::Integer(1)));
    drop(db);
    assert_eq!(ws.broker().close_idle(Duration::ZERO), 1);
    assert_eq!(ws.broker().databases_active(), 0);
}

/// `write_queue_max`: with a deterministic executor nothing runs until it is stepped, so the
/// queue fills exactly; one request past the cap is refused with `Busy` and nothing else
/// is lost.
#[test]
fn write_queue_max_at_the_boundary() {
    use sila_sqlite::broker::executor::{Executor, Stepper};
    let dir = TempDir::new("wqueue");
    let stepper = Arc::new(Stepper::new(1024));
    let options = WorkspaceOptions {
        broker: BrokerOptions { write_queue_max: 3, ..BrokerOptions::default() },
        executor: Some(stepper.clone() as Arc<dyn Executor>),
        ..WorkspaceOptions::default()
    };
    let ws = Workspace::open(&dir.0, options).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("analytics").unwrap();
    db.exec("CREATE TABLE t (x INTEGER)", &[]).unwrap();
    let queued: Vec<_> =
        (0..3).map(|i| db.submit_exec("INSERT INTO t VALUES (?)", vec![Value::Integer(i)])).collect();
    let refused = db.submit_exec("INSERT INTO t VALUES (99)", vec![]);
    let e = refused.wait().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Busy);
    assert!(e.message().contains("write_queue_max is 3"), "{e}");
    stepper.run_until_idle(100, || 0);
    for p in queued {
        assert_eq!(p.try_take().unwrap().unwrap().changes, 1);
    }
    assert_eq!(db.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(3)));
}

/// A workspace with a deterministic executor: nothing runs on a worker until the test steps.
fn setup_stepped(
    name: &str,
    broker: BrokerOptions,
) -> (TempDir, Arc<sila_sqlite::broker::executor::Stepper>, Workspace, Database) {
    use sila_sqlite::broker::executor::{Executor, Stepper};
    let dir = TempDir::new(name);
    let stepper = Arc::new(Stepper::new(1024));
    let options = WorkspaceOptions {
        broker,
        executor: Some(stepper.clone() as Arc<dyn Executor>),
        ..WorkspaceOptions::default()
    };
    let ws = Workspace::open(&dir.0, options).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("analytics").unwrap();
    (dir, stepper, ws, db)
}

/// `group_commit_max_requests`: one leader turn (one step of the deterministic executor)
/// commits one batch and answers it. Exactly N queued writes are answered by one turn; with
/// N + 1 the last one is left for a second turn.
#[test]
fn group_commit_max_requests_at_the_boundary() {
    let options = BrokerOptions { group_commit_max_requests: 3, ..BrokerOptions::default() };
    let (_d, stepper, _ws, db) = setup_stepped("gcmax", options);
    db.exec("CREATE TABLE t (x INTEGER)", &[]).unwrap();
    let insert = |i: i64| db.submit_exec("INSERT INTO t VALUES (?)", vec![Value::Integer(i)]);

    // N: one turn answers all three, and no further turn is queued.
    let n: Vec<_> = (0..3).map(insert).collect();
    assert_eq!(stepper.pending(), 1, "the first write handed leadership to a worker");
    assert!(n.iter().all(|p| !p.is_ready()), "nothing runs before a step");
    assert!(stepper.step(0));
    for p in &n {
        assert_eq!(p.try_take().unwrap().unwrap().changes, 1);
    }
    assert_eq!(stepper.pending(), 0, "one batch held all three writes");

    // N + 1: the first turn takes three, the fourth waits for the next turn.
    let n_plus_1: Vec<_> = (3..7).map(insert).collect();
    assert!(stepper.step(0));
    for p in &n_plus_1[..3] {
        assert_eq!(p.try_take().unwrap().unwrap().changes, 1);
    }
    assert!(!n_plus_1[3].is_ready(), "the fourth write is not in a batch of three");
    assert_eq!(stepper.pending(), 1, "the leader handed the rest to another turn");
    assert!(stepper.step(0));
    assert_eq!(n_plus_1[3].try_take().unwrap().unwrap().changes, 1);
    assert_eq!(stepper.pending(), 0);
    assert_eq!(db.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(7)));
}

/// Polls `done` until it holds, for at most 10 s (the condition is set by other threads).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `readers_max`: N queries run at once, each on its own reader; query N + 1 waits for one
/// of them to come back and then reuses its connection instead of opening another.
#[test]
fn readers_max_at_the_boundary() {
    // Long enough that the endless queries are stopped only by their cancellation.
    let options = BrokerOptions {
        readers_max: 2,
        statement_timeout: Duration::from_secs(60),
        ..BrokerOptions::default()
    };
    let (_d, ws, db) = setup("readers", options);
    assert_eq!(db.stats().connections, 1, "the writer, from the setup's CREATE TABLE");
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let cancel = CancelToken::new();
            let (db, c) = (db.clone(), cancel.clone());
            (cancel, std::thread::spawn(move || db.query_with(FOREVER, &[], &c)))
        })
        .collect();
    // N: both endless queries hold a reader at the same time.
    wait_for("two readers", || db.stats().connections == 3);

    // N + 1: waits; no third reader is opened.
    let (tx, rx) = std::sync::mpsc::channel();
    let extra = {
        let db = db.clone();
        std::thread::spawn(move || tx.send(db.query_value("SELECT 42", &[])).unwrap())
    };
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "a third query got a reader");
    assert_eq!(db.stats().connections, 3);
    assert_eq!(ws.broker().connections_open(), 3);

    // A reader comes back: the waiting query runs on it.
    let mut holders = holders.into_iter();
    let (cancel, first) = holders.next().unwrap();
    cancel.cancel();
    assert_eq!(first.join().unwrap().unwrap_err().code(), ErrorCode::Cancelled);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(), Some(Value::Integer(42)));
    extra.join().unwrap();
    assert_eq!(db.stats().connections, 3, "the returned reader was reused");
    for (cancel, h) in holders {
        cancel.cancel();
        assert_eq!(h.join().unwrap().unwrap_err().code(), ErrorCode::Cancelled);
    }
}

/// `connections_max`: N connections open across databases; one more is refused with `Busy`
/// naming the cap while all N are in use (exec, query and transaction alike, nothing is
/// written), and once they are idle, the least recently used database's is closed to make
/// room.
#[test]
fn connections_max_at_the_boundary() {
    let dir = TempDir::new("connmax");
    let options = BrokerOptions { connections_max: 2, ..BrokerOptions::default() };
    // Least-recently-used order is kept on the workspace clock; this test moves it.
    let clock = Arc::new(SteppingClock { now: std::sync::atomic::AtomicU64::new(0), step_ms: 0 });
    let ws = Workspace::open(
        &dir.0,
        WorkspaceOptions { broker: options, clock: clock.clone(), ..WorkspaceOptions::default() },
    )
    .unwrap();
    let manifest = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":1},{"name":"b","maxSizeMB":1},{"name":"c","maxSizeMB":1}]}}}"#;
    ws.register_app("com.example.three", manifest).unwrap();
    let app = ws.open_app("com.example.three").unwrap();
    let (a, b, c) = (app.open("a").unwrap(), app.open("b").unwrap(), app.open("c").unwrap());
    let open = || ws.broker().connections_open();

    // A transaction holds its database's writer: nothing of `a` or `b` is idle inside both.
    let refused = a
        .transaction(|tx| {
            tx.exec("CREATE TABLE t (x INTEGER)", &[])?;
            assert_eq!(open(), 1);
            // Make `a` strictly older than `b` on the workspace clock.
            clock.now.fetch_add(10, Ordering::SeqCst);
            b.transaction(|tx| {
                tx.exec("CREATE TABLE t (x INTEGER)", &[])?;
                assert_eq!(open(), 2, "N connections open");
                let refused = [
                    c.exec("CREATE TABLE t (x INTEGER)", &[]).map(|_| ()),
                    c.query("SELECT 1", &[]).map(|_| ()),
                    c.transaction(|_| Ok(())),
                ];
                assert_eq!(open(), 2, "the refused requests opened nothing");
                Ok(refused)
            })
        })
        .unwrap();
    for r in refused {
        let e = r.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Busy, "{e}");
        assert!(e.message().contains("2 connections are open and busy; connections_max is 2"), "{e}");
    }
    assert_eq!((a.stats().connections, b.stats().connections, c.stats().connections), (1, 1, 0));

    // Both writers are idle now: the next connection closes the least recently used one (a's).
    c.exec("CREATE TABLE t (x INTEGER)", &[]).unwrap();
    assert_eq!(open(), 2);
    assert_eq!((a.stats().connections, b.stats().connections, c.stats().connections), (0, 1, 1));
    assert_eq!(c.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(0)));
    assert_eq!(a.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(0)));
    assert!(open() <= 2);
}

/// Frames in the WAL, from the -wal file's length (32-byte header, then frames of a 24-byte
/// header and a page). Exact only while the WAL has grown from empty without a restart.
fn wal_frames(db: &Database) -> u64 {
    let page = sila_sqlite::workspace::PAGE_SIZE_BYTES;
    db.stats().wal_bytes.saturating_sub(32) / (24 + page)
}

/// Commits one-row inserts until the WAL holds `frames` frames, asserting each commit added
/// exactly one frame and triggered no checkpoint. Returns the rows inserted.
fn grow_wal_to(db: &Database, frames: u64) -> i64 {
    db.exec("CREATE TABLE t (x INTEGER)", &[]).unwrap();
    let checkpoints = db.stats().metrics.checkpoints;
    let mut before = wal_frames(db);
    assert!(before < frames, "the setup left {before} frames");
    let mut rows = 0;
    while before < frames && rows < 2 * frames as i64 {
        db.exec("INSERT INTO t VALUES (?)", &[Value::Integer(rows)]).unwrap();
        rows += 1;
        let after = wal_frames(db);
        assert_eq!(db.stats().metrics.checkpoints, checkpoints, "no checkpoint at {after} frames");
        assert_eq!(after, before + 1, "a one-row insert appends one frame");
        before = after;
    }
    assert_eq!(before, frames);
    rows
}

/// `wal_checkpoint_bytes`: a commit that leaves the WAL at exactly the threshold does not
/// checkpoint; one page more does, PASSIVE (the -wal file keeps its length), and the WAL
/// restarts, so the next small commit does not checkpoint again.
#[test]
fn wal_checkpoint_bytes_at_the_boundary() {
    let frames = 16;
    let page = sila_sqlite::workspace::PAGE_SIZE_BYTES;
    // TRUNCATE out of the way, to see the PASSIVE threshold alone.
    let options = BrokerOptions {
        wal_checkpoint_bytes: frames * page,
        wal_truncate_bytes: u64::MAX,
        ..BrokerOptions::default()
    };
    let (_d, _ws, db) = setup("walcp", options);
    let rows = grow_wal_to(&db, frames);
    let checkpoints = db.stats().metrics.checkpoints;
    db.exec("INSERT INTO t VALUES (-1)", &[]).unwrap();
    assert_eq!(db.stats().metrics.checkpoints, checkpoints + 1, "one page over the threshold");
    assert_eq!(wal_frames(&db), frames + 1, "PASSIVE leaves the -wal file's length");
    db.exec("INSERT INTO t VALUES (-2)", &[]).unwrap();
    assert_eq!(db.stats().metrics.checkpoints, checkpoints + 1, "the WAL restarted after the checkpoint");
    assert_eq!(db.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(rows + 2)));
}

/// A tier's WAL threshold (`TierLimits::wal_checkpoint_kib`): a `basic` database folds its
/// WAL at 1 MiB though the broker's cap is 4 MiB: at exactly 1 MiB no checkpoint, one page
/// more checkpoints.
#[test]
fn a_basic_database_checkpoints_at_its_tiers_wal_threshold() {
    let page = sila_sqlite::workspace::PAGE_SIZE_BYTES;
    let limits = sila_sqlite::manifest::Tier::Basic.limits();
    let frames = limits.wal_checkpoint_kib * 1024 / page;
    assert!(frames * page < BrokerOptions::default().wal_checkpoint_bytes, "the tier's is the lower");
    let dir = TempDir::new("wal-tier");
    let ws = Workspace::open(&dir.0, WorkspaceOptions::default()).unwrap();
    let basic = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":8}],"tier":"basic"}}}"#;
    ws.register_app("com.example.basic", basic).unwrap();
    let db = ws.open_app("com.example.basic").unwrap().open("main").unwrap();
    let rows = grow_wal_to(&db, frames);
    let checkpoints = db.stats().metrics.checkpoints;
    db.exec("INSERT INTO t VALUES (-1)", &[]).unwrap();
    assert_eq!(db.stats().metrics.checkpoints, checkpoints + 1, "one page over the tier's threshold");
    assert_eq!(db.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(rows + 1)));
}

/// `wal_truncate_bytes`: a commit that leaves the WAL at exactly the threshold does not
/// checkpoint; one page more checkpoints with TRUNCATE, which empties the -wal file.
#[test]
fn wal_truncate_bytes_at_the_boundary() {
    let frames = 16;
    let page = sila_sqlite::workspace::PAGE_SIZE_BYTES;
    // PASSIVE out of the way, to see the TRUNCATE threshold alone.
    let options = BrokerOptions {
        wal_checkpoint_bytes: u64::MAX,
        wal_truncate_bytes: frames * page,
        ..BrokerOptions::default()
    };
    let (_d, _ws, db) = setup("waltrunc", options);
    grow_wal_to(&db, frames);
    assert!(db.stats().wal_bytes > 0);
    let checkpoints = db.stats().metrics.checkpoints;
    db.exec("INSERT INTO t VALUES (-1)", &[]).unwrap();
    assert_eq!(db.stats().metrics.checkpoints, checkpoints + 1, "one page over the threshold");
    assert_eq!(db.stats().wal_bytes, 0, "TRUNCATE empties the -wal file");
}

/// A clock for deadlines that the test moves: `step_ms` is added on every reading.
struct SteppingClock {
    now: std::sync::atomic::AtomicU64,
    step_ms: u64,
}

impl sila_sqlite::clock::Clock for SteppingClock {
    fn now_ms(&self) -> u64 {
        1_700_000_000_000
    }
    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.now.fetch_add(self.step_ms, Ordering::SeqCst))
    }
}

fn with_clock(name: &str, step_ms: u64, broker: BrokerOptions) -> (TempDir, Workspace, Database) {
    let dir = TempDir::new(name);
    let clock = Arc::new(SteppingClock { now: std::sync::atomic::AtomicU64::new(0), step_ms });
    let ws =
        Workspace::open(&dir.0, WorkspaceOptions { broker, clock, ..WorkspaceOptions::default() }).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("sila://db/analytics").unwrap();
    (dir, ws, db)
}

/// Statement and transaction deadlines are measured on the workspace's clock, not on the
/// machine's: with a stopped clock nothing times out however long it runs, and with a clock
/// that runs fast a short statement does, the same way on every run (what the simulation
/// relies on to replay seeds).
#[test]
fn deadlines_are_measured_on_the_workspace_clock() {
    const COUNT: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 300000) \
                         SELECT count(*) FROM c";
    let tight = BrokerOptions {
        statement_timeout: Duration::from_millis(1),
        transaction_timeout: Duration::from_millis(1),
        ..BrokerOptions::default()
    };
    let (_d, _ws, db) = with_clock("clock-stopped", 0, tight);
    let started = Instant::now();
    assert_eq!(db.query_value(COUNT, &[]).unwrap(), Some(Value::Integer(300_000)));
    db.transaction(|tx| {
        tx.query_value(COUNT, &[])?;
        tx.exec("CREATE TABLE t (x)", &[])
    })
    .unwrap();
    assert!(started.elapsed() > Duration::from_millis(1), "real time did pass");

    // Each reading of this clock moves it a second: the 5 s default statement timeout fires
    // after a handful of progress checks, long before the statement could finish.
    let (_d, _ws, db) = with_clock("clock-fast", 1_000, BrokerOptions::default());
    let e = db.query_value(COUNT, &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert!(e.message().contains("statement timeout of 5000 ms"), "{e}");
    let e = db.transaction(|tx| tx.query_value(COUNT, &[])).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
}

/// TEXT that is not valid UTF-8 comes back as its exact bytes (never with U+FFFD), within the
/// result caps, and writing those bytes back stores the same bytes.
#[test]
fn text_that_is_not_utf8_round_trips_as_bytes() {
    let (_d, _ws, db) = setup("not-utf8", BrokerOptions::default());
    db.exec("CREATE TABLE t2 (x)", &[]).unwrap();
    db.exec("INSERT INTO t2 VALUES (CAST(x'41ff42' AS TEXT))", &[]).unwrap();
    let v = db.query_value("SELECT x FROM t2", &[]).unwrap();
    assert_eq!(v, Some(Value::Blob(vec![0x41, 0xff, 0x42])));
    assert_eq!(db.query_value("SELECT typeof(x) FROM t2", &[]).unwrap(), Some(Value::Text("text".into())));
    db.exec("INSERT INTO t2 VALUES (CAST(? AS TEXT))", &[v.clone().unwrap()]).unwrap();
    let same = db.query_value("SELECT count(DISTINCT hex(x)) FROM t2", &[]).unwrap();
    assert_eq!(same, Some(Value::Integer(1)), "the bytes written back are the bytes read");
}
