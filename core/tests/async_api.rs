//! `Pending` as a `Future`: awaited on a tokio current-thread runtime (the engine knows no
//! runtime; the thread that answers wakes the task), many requests in flight from one
//! thread, and a dropped handle cancelling its request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use sila_sqlite::{BrokerOptions, Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::time::Duration;
use support::TempDir;

const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":8}],"tier":"standard"}}}"#;

fn setup(name: &str) -> (TempDir, Workspace, Database) {
    let dir = TempDir::new(name);
    let broker = BrokerOptions { max_concurrent_requests_per_app: 256, ..BrokerOptions::default() };
    let ws = Workspace::open(&dir.0, WorkspaceOptions { broker, ..WorkspaceOptions::default() }).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", &[]).unwrap();
    (dir, ws, db)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

#[test]
fn requests_are_awaited_on_a_current_thread_runtime() {
    let (_d, _ws, db) = setup("async-await");
    let rt = current_thread();
    rt.block_on(async {
        let r = db.submit_exec("INSERT INTO t (k, v) VALUES (1, 'one')", vec![]).await.unwrap();
        assert_eq!(r.changes, 1);
        let rows = db.submit_query("SELECT v FROM t WHERE k = ?", vec![Value::Integer(1)]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Text("one".into())]]);
        let e = db.submit_query("SELECT * FROM missing", vec![]).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Sqlite);
    });
}

#[test]
fn many_tasks_on_one_thread_all_complete() {
    // 200 writes in flight from 200 tasks on a single thread: none blocks the thread, and the
    // executor wakes each task when its write is answered (group commit answers many at once).
    let (_d, _ws, db) = setup("async-many");
    let rt = current_thread();
    let done = rt.block_on(async {
        let tasks: Vec<_> = (0..200i64)
            .map(|k| {
                let db = db.clone();
                tokio::task::spawn(async move {
                    db.submit_exec("INSERT INTO t (k, v) VALUES (?, 'x')", vec![Value::Integer(k)]).await
                })
            })
            .collect();
        let mut done = 0;
        for t in tasks {
            t.await.unwrap().unwrap();
            done += 1;
        }
        done
    });
    assert_eq!(done, 200);
    assert_eq!(db.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(200)));
}

#[test]
fn dropping_a_pending_write_cancels_it_and_detach_lets_it_run() {
    let (_d, _ws, db) = setup("async-drop");
    // A transaction holds the writer until told to end, so the writes below queue behind it.
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let blocker = db.submit_transaction(move |tx| {
        started_tx.send(()).unwrap();
        hold.recv_timeout(Duration::from_secs(60)).unwrap();
        tx.exec("INSERT INTO t (k, v) VALUES (0, 'blocker')", &[]).map(|_| ())
    });
    started.recv_timeout(Duration::from_secs(60)).unwrap();
    drop(db.submit_exec("INSERT INTO t (k, v) VALUES (1, 'dropped')", vec![]));
    db.submit_exec("INSERT INTO t (k, v) VALUES (2, 'detached')", vec![]).detach();
    let kept = db.submit_exec("INSERT INTO t (k, v) VALUES (3, 'kept')", vec![]);
    release.send(()).unwrap();
    blocker.wait().unwrap();
    kept.wait().unwrap();
    // The queue is first in, first out, and `kept` is answered after the commit of its group:
    // the detached write, queued before it, is committed by then.
    let keys: Vec<Value> = db
        .query("SELECT k FROM t ORDER BY k", &[])
        .unwrap()
        .rows
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect();
    assert_eq!(
        keys,
        vec![Value::Integer(0), Value::Integer(2), Value::Integer(3)],
        "the dropped write never ran; the detached one did"
    );
}

#[test]
fn a_future_dropped_mid_await_cancels_its_query() {
    // A query that would run forever, awaited with a timeout on the runtime: the timeout drops
    // the future, which cancels the query, and its concurrency slot comes back.
    let dir = TempDir::new("async-timeout");
    let broker = BrokerOptions {
        max_concurrent_requests_per_app: 1,
        // Far longer than a cancellation takes to land; a handle that did not cancel on drop
        // fails the test with BUSY when it runs out.
        admission_wait: Duration::from_secs(60),
        ..BrokerOptions::default()
    };
    let ws = Workspace::open(&dir.0, WorkspaceOptions { broker, ..WorkspaceOptions::default() }).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    let forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
    let rt = current_thread();
    rt.block_on(async {
        let mut query = Box::pin(db.submit_query(forever, vec![]));
        // Poll it once so it is registered with this task, then give up on it.
        assert!(futures_poll_once(query.as_mut()).is_pending());
        drop(query);
    });
    // The only slot: taken by the forever query until its cancellation lands; the admission
    // wait ends as soon as it does.
    assert_eq!(db.query_value("SELECT 1", &[]).unwrap(), Some(Value::Integer(1)));
}

/// Polls a future once with a waker that does nothing.
fn futures_poll_once<F: std::future::Future + ?Sized>(
    f: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    f.poll(&mut cx)
}
