//! Isolation between apps: a heavy app (long queries, many writes, a flood of non-blocking
//! requests) must not stall a light app's indexed lookups.
//!
//! Each test measures the light app alone first, then under load, in the same process, and
//! compares p99 latencies. The bound is generous because the tests share two loaded cores
//! with other work: the light app's p99 under load must stay under
//! `max(10 × solo p99, 250 ms)`, while every heavy query runs for `HEAVY_QUERY` (1.5 s). A light
//! request that waited behind one heavy query (a shared lock, a FIFO worker pool) would take
//! over a second and fail the bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use sila_sqlite::{BrokerOptions, Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::TempDir;

const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":64}]}}}"#;
const FOREVER: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
const HEAVY_QUERY: Duration = Duration::from_millis(1500);
const LIGHT_REQUESTS: usize = 300;
const LOADED_P99_FLOOR: Duration = Duration::from_millis(250);

fn setup(name: &str) -> (TempDir, Workspace, Database, Database) {
    let dir = TempDir::new(name);
    let broker = BrokerOptions { statement_timeout: HEAVY_QUERY, ..BrokerOptions::default() };
    let ws = Workspace::open(&dir.0, WorkspaceOptions { broker, ..WorkspaceOptions::default() }).unwrap();
    ws.register_app("com.example.heavy", MANIFEST).unwrap();
    ws.register_app("com.example.light", MANIFEST).unwrap();
    let heavy = ws.open_app("com.example.heavy").unwrap().open("main").unwrap();
    let light = ws.open_app("com.example.light").unwrap().open("main").unwrap();
    heavy.exec("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)", &[]).unwrap();
    light.exec("CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)", &[]).unwrap();
    light
        .exec(
            "INSERT INTO kv SELECT 'k' || x, x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 1000) SELECT x FROM c)",
            &[],
        )
        .unwrap();
    (dir, ws, heavy, light)
}

/// Runs the light workload and returns its latencies, sorted.
fn light_run(light: &Database, non_blocking: bool) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(LIGHT_REQUESTS);
    for i in 0..LIGHT_REQUESTS {
        let key = Value::Text(format!("k{}", i % 1000 + 1));
        let started = Instant::now();
        let rows = if non_blocking {
            light.submit_query("SELECT v FROM kv WHERE k = ?", vec![key]).wait()
        } else {
            light.query("SELECT v FROM kv WHERE k = ?", &[key])
        };
        latencies.push(started.elapsed());
        let rows = rows.unwrap_or_else(|e| panic!("light request {i} failed: {e}"));
        assert_eq!(rows.rows, vec![vec![Value::Integer((i % 1000 + 1) as i64)]]);
    }
    latencies.sort();
    latencies
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

/// Starts the heavy app's workload: blocking long queries and bulk writes on their own
/// threads, plus a flood of non-blocking long queries through the shared worker pool. Returns
/// once every heavy thread has issued its first request.
fn start_heavy(heavy: &Database, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<usize>> {
    let threads = 5;
    let started = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::new();
    for t in 0..threads {
        let db = heavy.clone();
        let stop = stop.clone();
        let started = started.clone();
        handles.push(std::thread::spawn(move || {
            let mut done = 0;
            let mut first = true;
            while !stop.load(Ordering::Acquire) {
                let r = match t {
                    // Long queries on the caller's thread; each runs until the statement timeout.
                    0 | 1 => {
                        if first {
                            started.wait();
                            first = false;
                        }
                        db.query(FOREVER, &[]).map(drop)
                    }
                    // Bulk writes: 2000 rows of 1 KiB per statement.
                    2 | 3 => {
                        if first {
                            started.wait();
                            first = false;
                        }
                        db.exec(
                            "INSERT INTO big(v) SELECT randomblob(1024) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 2000) SELECT x FROM c)",
                            &[],
                        )
                        .map(drop)
                        .and_then(|_| db.exec("DELETE FROM big WHERE id % 2 = 0", &[]).map(drop))
                    }
                    // A flood of non-blocking long queries through the worker pool.
                    _ => {
                        let pending: Vec<_> = (0..32).map(|_| db.submit_query(FOREVER, vec![])).collect();
                        if first {
                            started.wait();
                            first = false;
                        }
                        let mut last = Ok(());
                        for p in pending {
                            last = p.wait().map(drop);
                        }
                        last
                    }
                };
                match r {
                    Ok(()) => {}
                    Err(e) => assert!(
                        matches!(e.code(), ErrorCode::Timeout | ErrorCode::Busy),
                        "heavy request failed unexpectedly: {e}"
                    ),
                }
                done += 1;
            }
            if first {
                started.wait();
            }
            done
        }));
    }
    started.wait();
    handles
}

fn compare(name: &str, non_blocking: bool) {
    let (_dir, _ws, heavy, light) = setup(name);
    // Warm up the light app's connections, then measure it alone.
    light_run(&light, non_blocking);
    let solo = light_run(&light, non_blocking);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = start_heavy(&heavy, &stop);
    let loaded = light_run(&light, non_blocking);
    stop.store(true, Ordering::Release);
    let heavy_requests: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let (solo_p99, loaded_p99) = (p99(&solo), p99(&loaded));
    let bound = (solo_p99 * 10).max(LOADED_P99_FLOOR);
    eprintln!(
        "{name}: light p99 solo {solo_p99:?}, under load {loaded_p99:?} (max {:?}), bound {bound:?}; heavy ran {heavy_requests} requests",
        loaded.last().unwrap()
    );
    assert!(heavy_requests > 0);
    assert!(
        loaded_p99 <= bound,
        "{name}: light p99 {loaded_p99:?} under load exceeds {bound:?} (solo {solo_p99:?})"
    );
}

/// The light app calls the blocking API (its requests run on its own thread).
#[test]
fn light_blocking_lookups_keep_their_latency_beside_a_heavy_app() {
    compare("blocking", false);
}

/// The light app calls the non-blocking API, so its requests compete with the heavy app's
/// flood for the shared worker pool. The pool never lets one app run on every worker, so a
/// worker is free for the light app's lookups.
#[test]
fn light_non_blocking_lookups_keep_their_latency_beside_a_heavy_app() {
    compare("non-blocking", true);
}
