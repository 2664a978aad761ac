//! Benchmark 5 (issue 5, item 8): snapshot, restore and import of a large database, with
//! concurrent writers.
//!
//! Data: `t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL)` with an index on `k`
//! and a 1,200-byte random `v`, loaded through the sila API (app of tier premium,
//! `maxSizeMB` 1024, so the app's quota of 4× holds the snapshots) in 20,000-row
//! transactions until the file is about 256 MB (32 MB with `--quick`). The workspace is then
//! closed (TRUNCATE checkpoint) and the live file copied byte for byte for the raw side;
//! the workspace is reopened and, in the same run:
//!
//! * (a) `db.snapshot()` against raw rusqlite's online backup API (`Backup::step(-1)` from
//!   a separate, already open connection on the byte copy into a new file) and against raw
//!   `wal_checkpoint(TRUNCATE)` + file copy + `fsync` (file and directory); interleaved
//!   rounds (each: sila, backup API, copy), medians.
//! * (b) writer stall: 4 threads doing single-row `db.exec` inserts into another table
//!   while a snapshot (and, separately, a restore) runs; per-insert latencies of the inserts
//!   that overlap the operation, against the same writers over an equally long window with
//!   nothing else running.
//! * (c) `db.restore(id)` against a raw copy + `fsync` of the same snapshot file.
//! * (d) `db.import(path)` of the byte copy against raw `PRAGMA quick_check` and
//!   `PRAGMA integrity_check` on that file.
//!
//! Scratch files are deleted as the benchmark goes; the workspace is removed at the end.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use sila_sqlite::store::layout;
use sila_sqlite::versions::{ImportOptions, RestoreOptions};
use sila_sqlite::{Database, Value, Workspace};

use crate::report::{fmt_duration, Latencies, Row, Target};
use crate::setup::{configure_raw, Config, Scratch, SyncMode, PREMIUM_CACHE_KIB};
use crate::BoxError;

const APP: &str = "bench.versions";
const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"big","maxSizeMB":1024}],"tier":"premium"}}}"#;
const DB: &str = "big";
const LOAD_CHUNK: i64 = 20_000;
/// Bytes a row takes in the file, about: three 1,200-byte rows fit a 4 KiB page, plus the
/// index entry.
const ROW_BYTES: u64 = 1_400;
const LOAD_SQL: &str = "WITH RECURSIVE c(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM c WHERE x < ?2) \
     INSERT INTO t(id, k, v) SELECT x, printf('key-%09d', x), randomblob(1200) FROM c";
const WRITE_SQL: &str = "INSERT INTO w(client, seq, payload) VALUES (?1, ?2, ?3)";
/// Concurrent writers of the stall measurement.
const WRITERS: usize = 4;
/// Inserts one writer records at most (bounds memory).
const WRITER_SAMPLES_MAX: usize = 1_000_000;
/// Writers run this long before the operation starts and after it ends.
const WRITER_MARGIN: Duration = Duration::from_millis(300);
/// The writer-stall target of issue 5.
const STALL_P99_MAX: Duration = Duration::from_millis(50);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(Duration::ZERO)
}

fn fsync_path(path: &Path) -> Result<(), BoxError> {
    std::fs::File::open(path)?.sync_all()?;
    Ok(())
}

/// Raw copy of `src` to `dest` with `fsync` of the file and its directory.
fn raw_copy(src: &Path, dest: &Path) -> Result<Duration, BoxError> {
    let t = Instant::now();
    std::fs::copy(src, dest)?;
    fsync_path(dest)?;
    fsync_path(dest.parent().ok_or("no parent")?)?;
    Ok(t.elapsed())
}

/// Raw online backup of the database behind `src` into a new file `dest`, in one step.
fn raw_backup(src: &Connection, dest: &Path) -> Result<Duration, BoxError> {
    let t = Instant::now();
    let mut out = Connection::open(dest)?;
    {
        let backup = rusqlite::backup::Backup::new(src, &mut out)?;
        match backup.step(-1)? {
            rusqlite::backup::StepResult::Done => {}
            other => return Err(format!("raw backup did not finish: {other:?}").into()),
        }
    }
    out.close().map_err(|(_, e)| e)?;
    Ok(t.elapsed())
}

fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// What concurrent writers saw while an operation ran.
struct Stall {
    /// Latencies of the inserts that overlapped the operation's window.
    during: Latencies,
    /// How long the operation took.
    window: Duration,
    /// Inserts in the whole run.
    inserts: u64,
}

/// Runs `op` while `WRITERS` threads insert single rows through `db.exec`; returns `op`'s
/// result and the latencies of the inserts that overlapped it.
fn with_writers<R: Send>(
    db: &Database,
    seq_base: i64,
    op: impl FnOnce() -> Result<R, BoxError> + Send,
) -> Result<(R, Stall), BoxError> {
    let stop = AtomicBool::new(false);
    type Samples = Vec<(Instant, Duration)>;
    let (result, window, samples) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|client| {
                let stop = &stop;
                s.spawn(move || -> Result<Samples, String> {
                    let mut out = Vec::new();
                    let mut seq = seq_base;
                    while !stop.load(Ordering::Acquire) && out.len() < WRITER_SAMPLES_MAX {
                        let params = [
                            Value::Integer(i64::try_from(client).unwrap_or(0)),
                            Value::Integer(seq),
                            Value::Text("writer-payload-0123456789abcdef".to_string()),
                        ];
                        let t = Instant::now();
                        db.exec(WRITE_SQL, &params).map_err(|e| e.to_string())?;
                        out.push((t, t.elapsed()));
                        seq += 1;
                    }
                    Ok(out)
                })
            })
            .collect();
        std::thread::sleep(WRITER_MARGIN);
        let start = Instant::now();
        let result = op();
        let end = Instant::now();
        std::thread::sleep(WRITER_MARGIN);
        stop.store(true, Ordering::Release);
        let mut samples = Vec::new();
        for h in handles {
            match h.join() {
                Ok(Ok(v)) => samples.push(v),
                Ok(Err(e)) => return (result, (start, end), Err(e)),
                Err(_) => return (result, (start, end), Err("a writer thread panicked".to_string())),
            }
        }
        (result, (start, end), Ok(samples))
    });
    let samples = samples?;
    let result = result?;
    let (start, end) = window;
    let mut during = Latencies::new()?;
    let mut inserts = 0u64;
    for (t, lat) in samples.iter().flatten() {
        inserts += 1;
        if *t < end && *t + *lat > start {
            during.record(*lat);
        }
    }
    Ok((result, Stall { during, window: end.saturating_duration_since(start), inserts }))
}

fn describe(s: &Stall) -> String {
    format!(
        "{} inserts overlapped the {} window (of {} in the run): p50 {} p99 {} max {}",
        s.during.count(),
        fmt_duration(s.window),
        s.inserts,
        fmt_duration(s.during.percentile(50.0)),
        fmt_duration(s.during.percentile(99.0)),
        fmt_duration(s.during.percentile(100.0)),
    )
}

fn open_ws(dir: &Path) -> Result<Workspace, BoxError> {
    // Generous timeouts: a 256 MB load or copy on a loaded shared disk must not time out.
    let mut options = crate::setup::measured_options();
    options.broker.transaction_timeout = Duration::from_secs(600);
    options.broker.statement_timeout = Duration::from_secs(600);
    Ok(Workspace::open(dir, options)?)
}

fn count(db: &Database, sql: &str) -> Result<i64, BoxError> {
    match db.query_value(sql, &[])? {
        Some(Value::Integer(n)) => Ok(n),
        other => Err(format!("{sql} returned {other:?}").into()),
    }
}

/// Runs the benchmark; appends rows and notes.
pub fn run(
    scratch: &Scratch,
    cfg: &Config,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), BoxError> {
    let dir = scratch.root.join("ws-versions");
    let r = run_in(&dir, scratch, cfg, rows, notes);
    let _ = std::fs::remove_dir_all(&dir);
    for name in ["versions.sqlite", "backup.sqlite", "copy.sqlite", "restore.sqlite"] {
        remove(&scratch.raw(name));
    }
    r
}

fn run_in(
    dir: &Path,
    scratch: &Scratch,
    cfg: &Config,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), BoxError> {
    let mb = cfg.versions_mb;
    let bench = format!("versions {mb} MB");
    // Load.
    let target_rows = i64::try_from(mb * 1024 * 1024 / ROW_BYTES)?;
    let ws = open_ws(dir)?;
    ws.register_app(APP, MANIFEST)?;
    let db = ws.open_app(APP)?.open(DB)?;
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL)", &[])?;
    db.exec("CREATE INDEX t_k ON t(k)", &[])?;
    db.exec(
        "CREATE TABLE w(id INTEGER PRIMARY KEY, client INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL)",
        &[],
    )?;
    let started = Instant::now();
    let mut start = 1;
    // Bounded: target_rows / LOAD_CHUNK transactions.
    while start <= target_rows {
        let end = (start + LOAD_CHUNK - 1).min(target_rows);
        db.transaction(|tx| tx.exec(LOAD_SQL, &[Value::Integer(start), Value::Integer(end)]).map(|_| ()))?;
        start = end + 1;
    }
    let loaded = started.elapsed();
    let key = ws.db_key(APP, DB)?;
    let live = ws.broker().active(&key).ok_or("the database is not active")?.config().path.clone();
    drop(db);
    drop(ws);
    let raw_src = scratch.raw("versions.sqlite");
    let size = std::fs::copy(&live, &raw_src)?;
    // Setup, not measured: on disk before the rounds, so the first measured fsync does not
    // wait behind the write-back of this copy.
    fsync_path(&raw_src)?;
    fsync_path(raw_src.parent().ok_or("no parent")?)?;
    notes.push(format!(
        "versions data: {target_rows} rows (1,200-byte random blob, indexed 13-byte text key) loaded through sila \
         (tier premium, synchronous FULL) in {}; file {:.1} MiB, copied byte for byte for the raw side; \
         timeouts raised to 600 s for this benchmark",
        fmt_duration(loaded),
        size as f64 / 1_048_576.0
    ));

    let ws = open_ws(dir)?;
    let db = ws.open_app(APP)?.open(DB)?;
    let n_t = count(&db, "SELECT count(*) FROM t")?;
    if n_t != target_rows {
        return Err(format!("t holds {n_t} rows, expected {target_rows}").into());
    }

    // (a) snapshot vs raw backup API vs raw checkpoint + copy + fsync.
    let src = Connection::open(&raw_src)?;
    configure_raw(&src, SyncMode::Full, PREMIUM_CACHE_KIB)?;
    let (mut sila_t, mut backup_t, mut copy_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut snaps = Vec::new();
    for round in 0..cfg.versions_rounds {
        let t = Instant::now();
        let e = db.snapshot(&format!("bench round {round}"))?;
        sila_t.push(t.elapsed());
        snaps.push(e);
        let dest = scratch.raw("backup.sqlite");
        backup_t.push(raw_backup(&src, &dest)?);
        remove(&dest);
        let dest = scratch.raw("copy.sqlite");
        let t = Instant::now();
        let _: (i64, i64, i64) =
            src.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        std::fs::copy(&raw_src, &dest)?;
        fsync_path(&dest)?;
        fsync_path(dest.parent().ok_or("no parent")?)?;
        copy_t.push(t.elapsed());
        remove(&dest);
    }
    drop(src);
    let (sila_snap, raw_backup_m, raw_copy_m) =
        (median(sila_t.clone()), median(backup_t.clone()), median(copy_t.clone()));
    rows.push(Row::latency(
        &bench,
        &format!("snapshot time (median of {}) vs raw backup API step(-1)", cfg.versions_rounds),
        sila_snap,
        raw_backup_m,
        Target::RatioAtMost(0.5),
    ));
    rows.push(Row::latency(
        &bench,
        "snapshot time vs raw checkpoint + copy + fsync",
        sila_snap,
        raw_copy_m,
        Target::None,
    ));
    let fmt_all = |v: &[Duration]| v.iter().map(|d| fmt_duration(*d)).collect::<Vec<_>>().join(", ");
    notes.push(format!(
        "snapshot rounds (interleaved: sila, backup API, copy): sila {}; raw backup API {}; raw checkpoint + copy + fsync {}; snapshot size {:.1} MiB",
        fmt_all(&sila_t),
        fmt_all(&backup_t),
        fmt_all(&copy_t),
        snaps.first().map(|s| s.size as f64 / 1_048_576.0).unwrap_or(0.0)
    ));
    let keep = snaps.first().ok_or("no snapshot taken")?.clone();
    for s in snaps.iter().skip(1) {
        db.drop_snapshot(s.id)?;
    }
    ws.gc()?;

    // (b) writer stall during a snapshot, against the same writers with nothing running.
    let (stall_snap_t, stall) = with_writers(&db, 0, || {
        let t = Instant::now();
        let e = db.snapshot("bench under writers")?;
        Ok((t.elapsed(), e))
    })?;
    let (snap_w_time, snap_w) = stall_snap_t;
    let quiet_window = snap_w_time.max(Duration::from_secs(1));
    let ((), quiet) = with_writers(&db, 10_000_000, || {
        std::thread::sleep(quiet_window);
        Ok(())
    })?;
    rows.push(Row::absolute(
        &bench,
        &format!("writer p99 during snapshot ({WRITERS} writers, exec)"),
        stall.during.percentile(99.0),
        Target::Below(STALL_P99_MAX),
    ));
    rows.push(Row::absolute(
        &bench,
        &format!("writer p99 without snapshot ({WRITERS} writers, exec)"),
        quiet.during.percentile(99.0),
        Target::None,
    ));
    notes.push(format!(
        "writers during snapshot (snapshot took {} under writers): {}",
        fmt_duration(snap_w_time),
        describe(&stall)
    ));
    notes.push(format!("writers without snapshot: {}", describe(&quiet)));
    db.drop_snapshot(snap_w.id)?;
    ws.gc()?;

    // (c) restore vs raw copy + fsync of the same snapshot file.
    let snap_path = ws.driver().abs(&layout::snapshot_file(key.app, &key.db, keep.id));
    let copy_dest = scratch.raw("restore.sqlite");
    let raw_restore = raw_copy(&snap_path, &copy_dest)?;
    remove(&copy_dest);
    let early_before = db.stats().metrics.undo_sums_while_copying;
    let t = Instant::now();
    let undo = db.restore(keep.id, RestoreOptions::default())?;
    let sila_restore = t.elapsed();
    let early = db.stats().metrics.undo_sums_while_copying > early_before;
    let raw_restore2 = raw_copy(&snap_path, &copy_dest)?;
    remove(&copy_dest);
    let raw_restore_m = raw_restore.min(raw_restore2);
    rows.push(Row::latency(
        &bench,
        "restore time vs raw copy + fsync of the snapshot file",
        sila_restore,
        raw_restore_m,
        Target::AtMostRawPlus(Duration::from_millis(20)),
    ));
    notes.push(format!(
        "restore: sila {} (includes its undo snapshot of the live file, the checksummed copy, the switch \
         to WAL and the flip; the undo's checksum {}); raw copy + fsync {} and {} (before / after; the \
         table uses the smaller)",
        fmt_duration(sila_restore),
        if early {
            "was read on a second thread while the snapshot was copied"
        } else {
            "was read after the flip"
        },
        fmt_duration(raw_restore),
        fmt_duration(raw_restore2)
    ));
    ws.gc()?;
    let early_before = db.stats().metrics.undo_sums_while_copying;
    let ((restore_w_time, undo_w), stall_r) = with_writers(&db, 20_000_000, || {
        let t = Instant::now();
        let u = db.restore(undo, RestoreOptions::default())?;
        Ok((t.elapsed(), u))
    })?;
    let early_w = db.stats().metrics.undo_sums_while_copying > early_before;
    rows.push(Row::absolute(
        &bench,
        &format!("writer p99 during restore ({WRITERS} writers, exec)"),
        stall_r.during.percentile(99.0),
        Target::Below(STALL_P99_MAX),
    ));
    notes.push(format!(
        "writers during restore (restore took {} under writers; its undo's checksum {}): {}",
        fmt_duration(restore_w_time),
        if early_w { "was taken while copying" } else { "was read after the flip: commits came in between" },
        describe(&stall_r)
    ));
    for id in [keep.id, undo, undo_w] {
        db.drop_snapshot(id)?;
    }
    ws.gc()?;

    // (d) import validation vs raw quick_check / integrity_check of the same file.
    let check = |pragma: &str| -> Result<Duration, BoxError> {
        let conn = Connection::open_with_flags(&raw_src, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let t = Instant::now();
        let r: String = conn.query_row(pragma, [], |r| r.get(0))?;
        let d = t.elapsed();
        if r != "ok" {
            return Err(format!("{pragma} on the raw copy: {r}").into());
        }
        Ok(d)
    };
    let quick = check("PRAGMA quick_check")?;
    let integrity = check("PRAGMA integrity_check")?;
    let t = Instant::now();
    let report = db.import(&raw_src, ImportOptions::default())?;
    let sila_import = t.elapsed();
    let copy_dest = scratch.raw("copy.sqlite");
    let import_copy = raw_copy(&raw_src, &copy_dest)?;
    remove(&copy_dest);
    let n_after = count(&db, "SELECT count(*) FROM t")?;
    if n_after != target_rows {
        return Err(format!("after import t holds {n_after} rows, expected {target_rows}").into());
    }
    rows.push(Row::latency(
        &bench,
        "import time vs raw integrity_check",
        sila_import,
        integrity,
        Target::None,
    ));
    rows.push(Row::latency(&bench, "import time vs raw quick_check", sila_import, quick, Target::None));
    notes.push(format!(
        "import: sila {} for {:.1} MiB (checks: {}); raw quick_check {}, integrity_check {}, copy + fsync {}",
        fmt_duration(sila_import),
        report.size as f64 / 1_048_576.0,
        report.checks.join(", "),
        fmt_duration(quick),
        fmt_duration(integrity),
        fmt_duration(import_copy)
    ));
    drop(db);
    drop(ws);
    Ok(())
}
