//! Benchmark 1: indexed lookup on 1,000,000 rows.
//!
//! Data: `kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL)` with k = 1..=1,000,000 and a 40-byte
//! `v`, loaded once through the sila API (app of tier standard, `maxSizeMB` 256) in one
//! `db.transaction` of ten 100,000-row `INSERT … SELECT` statements. The workspace is then
//! closed (the broker checkpoints with TRUNCATE and SQLite removes the WAL) and the live
//! database file is copied byte for byte for the raw side, so both sides read the same file
//! contents.
//!
//! Measured, rotating sila and raw rounds over the same pseudo-random keys:
//! * 1 thread: `db.query_value("SELECT v FROM kv WHERE k = ?")` against raw
//!   `prepare_cached` + `query_row` on one connection; p50/p95/p99 per lookup.
//! * 2 threads: two threads sharing one `Database` (two readers of its pool) against two
//!   raw connections; lookups/s over the wall time, and sila's p95.
//!
//! The raw side runs twice: on SQLite's default unix VFS (what raw rusqlite gives; the
//! targets are judged against it) and on `unix-excl`, the locking sila's connections use (a
//! second copy of the file), which separates that choice from the engine's own overhead.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use sila_sqlite::{Database, Value, Workspace};

use crate::report::{fmt_duration, rate, Latencies, Row, Target};
use crate::setup::{
    open_raw, open_raw_excl, run_threads, Config, Keys, Scratch, SyncMode, EXCL_VFS, STANDARD_CACHE_KIB,
};
use crate::BoxError;

/// The app holding the lookup data.
pub const KV_APP: &str = "bench.lookup";
/// Its manifest: tier standard (synchronous NORMAL), one 256 MB database.
pub const KV_MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"kv","maxSizeMB":256}],"tier":"standard"}}}"#;
/// The database name.
pub const KV_DB: &str = "kv";
/// Rows in `kv`.
pub const KV_ROWS: i64 = 1_000_000;
/// The lookup.
pub const LOOKUP_SQL: &str = "SELECT v FROM kv WHERE k = ?";

const LOAD_CHUNK: i64 = 100_000;
const LOAD_SQL: &str = "WITH RECURSIVE c(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM c WHERE x < ?2) \
     INSERT INTO kv(k, v) SELECT x, printf('value-%07d-abcdefghijklmnopqrstuvwxyz', x) FROM c";

/// The `v` stored for key `k`.
pub fn expected_v(k: i64) -> String {
    format!("value-{k:07}-abcdefghijklmnopqrstuvwxyz")
}

/// Where the lookup data lives.
pub struct KvData {
    /// The raw side's copy.
    pub raw_path: PathBuf,
    /// A second copy for raw connections on the `unix-excl` VFS (kept apart: SQLite shares
    /// lock state between connections of one process to one file, whatever their VFS).
    pub raw_excl_path: PathBuf,
}

/// Loads the data through sila and copies the file for the raw side.
pub fn build(scratch: &Scratch, notes: &mut Vec<String>) -> Result<KvData, BoxError> {
    // Loading is not measured: generous timeouts so a loaded machine cannot fail the load.
    let mut options = crate::setup::measured_options();
    options.broker.transaction_timeout = Duration::from_secs(600);
    options.broker.statement_timeout = Duration::from_secs(600);
    let ws = Workspace::open(scratch.ws(), options)?;
    ws.register_app(KV_APP, KV_MANIFEST)?;
    let db = ws.open_app(KV_APP)?.open(KV_DB)?;
    db.exec("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL)", &[])?;
    let started = Instant::now();
    db.transaction(|tx| {
        let mut start = 1;
        // Bounded: ten chunks.
        while start <= KV_ROWS {
            let end = (start + LOAD_CHUNK - 1).min(KV_ROWS);
            tx.exec(LOAD_SQL, &[Value::Integer(start), Value::Integer(end)])?;
            start = end + 1;
        }
        Ok(())
    })?;
    let loaded = started.elapsed();
    let count = db.query_value("SELECT count(*) FROM kv", &[])?;
    if count != Some(Value::Integer(KV_ROWS)) {
        return Err(format!("kv holds {count:?} rows, expected {KV_ROWS}").into());
    }
    let key = ws.db_key(KV_APP, KV_DB)?;
    let sila_path = ws.broker().active(&key).ok_or("the kv database is not active")?.config().path.clone();
    drop(db);
    drop(ws);
    let wal = PathBuf::from(format!("{}-wal", sila_path.display()));
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if wal_len != 0 {
        return Err(
            format!("{} still holds {wal_len} bytes after the workspace closed", wal.display()).into()
        );
    }
    let raw_path = scratch.raw("kv.sqlite");
    let bytes = std::fs::copy(&sila_path, &raw_path)?;
    let raw_excl_path = scratch.raw("kv-excl.sqlite");
    std::fs::copy(&sila_path, &raw_excl_path)?;
    let stats = stat_tables(&Connection::open(&raw_path)?)?;
    notes.push(format!(
        "lookup data: {KV_ROWS} rows loaded through sila in one transaction in {}; file {:.1} MiB, \
         copied byte for byte for the raw side; statistics tables after the broker's close \
         (PRAGMA optimize=0x10002): {}",
        fmt_duration(loaded),
        bytes as f64 / 1_048_576.0,
        if stats.is_empty() { "none".to_string() } else { stats.join(", ") }
    ));
    Ok(KvData { raw_path, raw_excl_path })
}

/// `sqlite_stat*` tables of a database and their row counts.
pub fn stat_tables(conn: &Connection) -> Result<Vec<String>, BoxError> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE name LIKE 'sqlite_stat%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for name in names {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {name}"), [], |r| r.get(0))?;
        out.push(format!("{name} ({n} rows)"));
    }
    Ok(out)
}

fn check(k: i64, got: Option<&str>) -> Result<(), BoxError> {
    match got {
        Some(v) if v == expected_v(k) => Ok(()),
        other => Err(format!("lookup of k={k} returned {other:?}").into()),
    }
}

fn sila_lookup(db: &Database, k: i64) -> Result<(), BoxError> {
    match db.query_value(LOOKUP_SQL, &[Value::Integer(k)])? {
        Some(Value::Text(v)) => check(k, Some(&v)),
        other => Err(format!("lookup of k={k} returned {other:?}").into()),
    }
}

fn raw_lookup(conn: &Connection, k: i64) -> Result<String, BoxError> {
    Ok(conn.prepare_cached(LOOKUP_SQL)?.query_row([k], |r| r.get(0))?)
}

/// Times `n` sila lookups with keys from `seed`.
fn sila_round(db: &Database, seed: u64, n: u64, h: &mut Latencies) -> Result<(), BoxError> {
    let mut keys = Keys::new(seed, KV_ROWS);
    for _ in 0..n {
        let k = keys.next_key();
        let t = Instant::now();
        let r = db.query_value(LOOKUP_SQL, &[Value::Integer(k)]);
        h.record(t.elapsed());
        match r? {
            Some(Value::Text(v)) => check(k, Some(&v))?,
            other => return Err(format!("lookup of k={k} returned {other:?}").into()),
        }
    }
    Ok(())
}

/// Times `n` raw lookups with keys from `seed`.
fn raw_round(conn: &Connection, seed: u64, n: u64, h: &mut Latencies) -> Result<(), BoxError> {
    let mut keys = Keys::new(seed, KV_ROWS);
    for _ in 0..n {
        let k = keys.next_key();
        let t = Instant::now();
        let r = conn.prepare_cached(LOOKUP_SQL).and_then(|mut s| s.query_row([k], |r| r.get::<_, String>(0)));
        h.record(t.elapsed());
        check(k, Some(&r?))?;
    }
    Ok(())
}

/// Runs the lookup benchmark on a workspace opened with [`crate::setup::measured_options`].
pub fn run(
    scratch: &Scratch,
    data: &KvData,
    cfg: &Config,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), BoxError> {
    let ws = Workspace::open(scratch.ws(), crate::setup::measured_options())?;
    let db = ws.open_app(KV_APP)?.open(KV_DB)?;
    let raw = open_raw(&data.raw_path, SyncMode::Normal, STANDARD_CACHE_KIB)?;
    let raw_x = open_raw_excl(&data.raw_excl_path, SyncMode::Normal, STANDARD_CACHE_KIB)?;

    // Warm-up: page caches (SQLite's and the OS's), statement caches, the reader pool.
    let mut keys = Keys::new(0xC0FFEE, KV_ROWS);
    for _ in 0..cfg.warmup {
        let k = keys.next_key();
        sila_lookup(&db, k)?;
        check(k, Some(&raw_lookup(&raw, k)?))?;
        check(k, Some(&raw_lookup(&raw_x, k)?))?;
    }

    // 1 thread, rotating which side goes first.
    let mut sila = Latencies::new()?;
    let mut plain = Latencies::new()?;
    let mut plain_x = Latencies::new()?;
    for round in 0..cfg.lookup_rounds {
        let seed = 1000 + round;
        let n = cfg.lookups_per_round;
        // Bounded: three sides per round.
        for side in 0..3 {
            match (round + side) % 3 {
                0 => sila_round(&db, seed, n, &mut sila)?,
                1 => raw_round(&raw, seed, n, &mut plain)?,
                _ => raw_round(&raw_x, seed, n, &mut plain_x)?,
            }
        }
    }
    let b = "lookup 1M rows, 1 thread";
    rows.push(Row::latency(
        b,
        "p50",
        sila.percentile(50.0),
        plain.percentile(50.0),
        Target::RatioAtMost(1.25),
    ));
    rows.push(Row::latency(
        b,
        &format!("p50 vs raw on {EXCL_VFS}"),
        sila.percentile(50.0),
        plain_x.percentile(50.0),
        Target::None,
    ));
    rows.push(Row::latency(b, "p95", sila.percentile(95.0), plain.percentile(95.0), Target::None));
    rows.push(Row::latency(b, "p99", sila.percentile(99.0), plain.percentile(99.0), Target::None));
    rows.push(Row::absolute(
        b,
        "sila p95 (absolute)",
        sila.percentile(95.0),
        Target::Below(Duration::from_millis(50)),
    ));
    notes.push(format!(
        "lookup 1 thread: {} lookups per side in {} rounds rotating the order of sila, raw and raw on unix-excl; mean sila {} raw {}; max sila {} raw {}",
        sila.count(),
        cfg.lookup_rounds,
        fmt_duration(sila.mean()),
        fmt_duration(plain.mean()),
        fmt_duration(sila.percentile(100.0)),
        fmt_duration(plain.percentile(100.0)),
    ));
    drop(raw);
    drop(raw_x);

    // 2 threads.
    let per_thread = cfg.pair_lookups_per_thread;
    let (mut sila_ops, mut sila_wall, mut raw_ops, mut raw_wall) =
        (0u64, Duration::ZERO, 0u64, Duration::ZERO);
    let (mut raw_x_ops, mut raw_x_wall) = (0u64, Duration::ZERO);
    let mut sila2 = Latencies::new()?;
    let mut raw2 = Latencies::new()?;
    let mut raw2_x = Latencies::new()?;
    for round in 0..cfg.pair_rounds {
        let seeds = [2000 + 2 * round, 2001 + 2 * round];
        let sila_pass = |sila2: &mut Latencies| -> Result<(u64, Duration), BoxError> {
            let (hs, wall) = run_threads(seeds.to_vec(), |_, seed| {
                let mut h = Latencies::new()?;
                sila_round(&db, seed, per_thread, &mut h)?;
                Ok(h)
            })?;
            let mut ops = 0;
            for h in &hs {
                ops += h.count();
                sila2.merge(h)?;
            }
            Ok((ops, wall))
        };
        let raw_pass = |raw2: &mut Latencies, excl: bool| -> Result<(u64, Duration), BoxError> {
            // Connections are opened (and warmed) before the clock starts.
            let mut states = Vec::new();
            for &seed in &seeds {
                let conn = if excl {
                    open_raw_excl(&data.raw_excl_path, SyncMode::Normal, STANDARD_CACHE_KIB)?
                } else {
                    open_raw(&data.raw_path, SyncMode::Normal, STANDARD_CACHE_KIB)?
                };
                let mut warm = Keys::new(seed ^ 0xFFFF, KV_ROWS);
                for _ in 0..cfg.warmup / 4 {
                    raw_lookup(&conn, warm.next_key())?;
                }
                states.push((conn, seed));
            }
            let (hs, wall) = run_threads(states, |_, (conn, seed)| {
                let mut h = Latencies::new()?;
                raw_round(&conn, seed, per_thread, &mut h)?;
                Ok(h)
            })?;
            let mut ops = 0;
            for h in &hs {
                ops += h.count();
                raw2.merge(h)?;
            }
            Ok((ops, wall))
        };
        // Bounded: three sides per round, rotating which goes first.
        for side in 0..3 {
            match (round + side) % 3 {
                0 => {
                    let (ops, wall) = sila_pass(&mut sila2)?;
                    sila_ops += ops;
                    sila_wall += wall;
                }
                1 => {
                    let (ops, wall) = raw_pass(&mut raw2, false)?;
                    raw_ops += ops;
                    raw_wall += wall;
                }
                _ => {
                    let (ops, wall) = raw_pass(&mut raw2_x, true)?;
                    raw_x_ops += ops;
                    raw_x_wall += wall;
                }
            }
        }
    }
    let b = "lookup 1M rows, 2 threads";
    rows.push(Row::throughput(
        b,
        "lookups/s (1 shared Database vs 2 connections)",
        rate(sila_ops, sila_wall),
        rate(raw_ops, raw_wall),
        Target::RatioAtLeast(0.9),
    ));
    rows.push(Row::throughput(
        b,
        &format!("lookups/s vs 2 raw connections on {EXCL_VFS}"),
        rate(sila_ops, sila_wall),
        rate(raw_x_ops, raw_x_wall),
        Target::None,
    ));
    rows.push(Row::latency(b, "p50", sila2.percentile(50.0), raw2.percentile(50.0), Target::None));
    rows.push(Row::absolute(
        b,
        "sila p95 (absolute)",
        sila2.percentile(95.0),
        Target::Below(Duration::from_millis(50)),
    ));
    let stats = db.stats();
    notes.push(format!(
        "lookup 2 threads: {} lookups per thread per side in {} rounds rotating the order; per-lookup mean sila {} raw {}, \
         p99 sila {} raw {}; wall sila {} raw {}; sila connections open after: {}; sila page cache hits/misses \
         (closed connections only): {}/{}",
        per_thread * cfg.pair_rounds,
        cfg.pair_rounds,
        fmt_duration(sila2.mean()),
        fmt_duration(raw2.mean()),
        fmt_duration(sila2.percentile(99.0)),
        fmt_duration(raw2.percentile(99.0)),
        fmt_duration(sila_wall),
        fmt_duration(raw_wall),
        stats.connections,
        stats.metrics.cache_hits,
        stats.metrics.cache_misses
    ));
    Ok(())
}
