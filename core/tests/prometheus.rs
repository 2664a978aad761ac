//! The Prometheus text exposition of a workspace (`Workspace::metrics_text`): every series
//! the operator alerts on is there with its labels and the value the API reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::{ErrorCode, Value, Workspace, WorkspaceOptions};

mod support;
use support::{ReadGate, TempDir};

const APP: &str = "com.example.notes";
const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":4}],"tier":"standard"}}}"#;

/// The value of the sample `series` (name and labels exactly as printed).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn the_exposition_carries_requests_errors_latency_sizes_and_quota() {
    let dir = TempDir::new("prometheus");
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default()).unwrap();
    ws.register_app(APP, MANIFEST).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", &[]).unwrap();
    for i in 0..5 {
        db.exec("INSERT INTO t VALUES (?)", &[Value::Integer(i)]).unwrap();
    }
    for _ in 0..3 {
        db.query("SELECT * FROM t", &[]).unwrap();
    }
    let e = db.exec("INSERT INTO t VALUES (1)", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Sqlite);

    let text = ws.metrics_text().unwrap();
    let stats = &db.stats().metrics;
    let labels = format!(r#"app="{APP}",db="main""#);
    assert_eq!(sample(&text, &format!("sila_requests_total{{{labels},kind=\"query\"}}")), 3.0);
    assert_eq!(sample(&text, &format!("sila_requests_total{{{labels},kind=\"exec\"}}")), stats.execs as f64);
    assert_eq!(sample(&text, &format!("sila_errors_total{{{labels},code=\"SQLITE\"}}")), 1.0);
    assert_eq!(sample(&text, &format!("sila_rows_written_total{{{labels}}}")), stats.rows_written as f64);
    // The histogram: cumulative buckets ending at +Inf with every request, and its count.
    let count = sample(&text, &format!("sila_request_duration_seconds_count{{{labels}}}"));
    assert_eq!(count, stats.latency_count as f64);
    assert!(count >= 9.0, "{text}");
    assert_eq!(
        sample(&text, &format!("sila_request_duration_seconds_bucket{{le=\"+Inf\",{labels}}}")),
        count
    );
    assert_eq!(
        sample(&text, &format!("sila_request_duration_seconds_bucket{{le=\"60.0\",{labels}}}")),
        count
    );
    let sum = sample(&text, &format!("sila_request_duration_seconds_sum{{{labels}}}"));
    assert!(sum > 0.0 && sum < 60.0 * count, "{sum}");
    let mut last = 0.0;
    for line in text.lines().filter(|l| l.starts_with("sila_request_duration_seconds_bucket")) {
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v >= last, "buckets are cumulative: {line}");
        last = v;
    }
    assert!(sample(&text, &format!("sila_database_bytes{{{labels}}}")) > 0.0);
    assert!(sample(&text, &format!("sila_connections{{{labels}}}")) >= 1.0);
    // The quota and the ledger, current (the WAL the inserts grew is counted).
    let ledger = ws.ledger(APP).unwrap();
    assert_eq!(sample(&text, &format!("sila_quota_bytes{{app=\"{APP}\"}}")), ledger.quota_bytes as f64);
    assert_eq!(
        sample(&text, &format!("sila_quota_used_bytes{{app=\"{APP}\",kind=\"live\"}}")),
        ledger.live_bytes as f64
    );
    assert!(ledger.live_bytes > 0);
    assert_eq!(text.lines().filter(|l| l.starts_with("# TYPE sila_requests ")).count(), 1, "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

#[test]
fn a_workspace_without_databases_open_still_reports_its_apps() {
    let dir = TempDir::new("prometheus-empty");
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default()).unwrap();
    let text = ws.metrics_text().unwrap();
    assert!(!text.contains("sila_requests_total{"), "{text}");
    ws.register_app(APP, MANIFEST).unwrap();
    let text = ws.metrics_text().unwrap();
    assert_eq!(sample(&text, &format!("sila_quota_bytes{{app=\"{APP}\"}}")), 12.0 * 1024.0 * 1024.0);
}

/// A clock whose monotonic time moves only when the test says.
struct ManualClock(std::sync::atomic::AtomicU64);

impl sila_sqlite::clock::Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        1_800_000_000_000 + self.0.load(std::sync::atomic::Ordering::SeqCst) / 1000
    }
    fn monotonic(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Checkpoints report the pages they copied and the time they took; a read that runs shows
/// its age (what holds checkpoints back), and none once it ended.
#[test]
fn checkpoints_report_pages_and_time_and_a_running_read_its_age() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;
    let dir = TempDir::new("prometheus-checkpoints");
    let gate = Arc::new(ReadGate::default());
    let vfs = Arc::new(gate.wrapping(|path| path.to_string_lossy().ends_with("-wal")));
    let clock = Arc::new(ManualClock(std::sync::atomic::AtomicU64::new(1_000_000_000)));
    let options = WorkspaceOptions { clock: clock.clone(), ..WorkspaceOptions::default() };
    std::fs::create_dir_all(dir.0.join("ws")).unwrap();
    let ws = Workspace::open_with(vfs, dir.0.join("ws"), options).unwrap();
    ws.register_app(APP, MANIFEST).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    for i in 0..50 {
        db.exec("INSERT INTO t VALUES (?, randomblob(3000))", &[Value::Integer(i)]).unwrap();
    }
    let report = db.checkpoint().unwrap();
    assert!(report.complete && report.wal_frames >= 50, "{report:?}");
    let stats = db.stats().metrics;
    assert_eq!(stats.checkpoints, 1, "one checkpoint, though it ran PASSIVE then TRUNCATE");
    assert_eq!(stats.checkpoint_pages, report.checkpointed_frames, "{stats:?}");
    let labels = format!(r#"app="{APP}",db="main""#);
    let text = ws.metrics_text().unwrap();
    assert_eq!(
        sample(&text, &format!("sila_checkpoint_pages_total{{{labels}}}")),
        stats.checkpoint_pages as f64
    );
    assert_eq!(
        sample(&text, &format!("sila_checkpoint_seconds_total{{{labels}}}")),
        stats.checkpoint_us as f64 / 1e6
    );
    assert_eq!(sample(&text, &format!("sila_oldest_read_seconds{{{labels}}}")), 0.0);

    // A read stopped in the WAL: its age is what the clock moved since it began.
    db.query("SELECT count(*) FROM t", &[]).unwrap();
    db.exec("INSERT INTO t VALUES (1000, 'x')", &[]).unwrap();
    let reader = gate.stop_a_read(&db, "SELECT count(*) FROM t");
    clock.0.fetch_add(5_000_000, Ordering::SeqCst);
    assert_eq!(db.stats().oldest_read, Duration::from_secs(5));
    let text = ws.metrics_text().unwrap();
    assert_eq!(sample(&text, &format!("sila_oldest_read_seconds{{{labels}}}")), 5.0);
    gate.release();
    let rows = reader.join().unwrap().unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(51)]]);
    assert_eq!(db.stats().oldest_read, Duration::ZERO);
}
