//! Benchmark 2: single-row inserts from 1 and 16 concurrent clients, at FULL and NORMAL.
//!
//! sila: N threads share one `Database` and each calls `db.exec("INSERT …")` one row at a
//! time; the broker group-commits concurrent requests (one transaction, a savepoint each)
//! and answers each caller after its batch committed. FULL uses an app of tier premium
//! (`synchronous=FULL`), NORMAL one of tier standard.
//!
//! Raw: N threads, one connection each (WAL, the same `synchronous`, `busy_timeout=5000`,
//! the tier's cache size), each row its own autocommit transaction through
//! `prepare_cached` + `execute`. A `SQLITE_BUSY` that outlasts the busy timeout is retried
//! (bounded) and counted.
//!
//! At FULL, 64 blocking clients (a thread each, one request at a time) are also compared with
//! 64 requests kept in flight by one thread through `submit_exec`.
//!
//! Every case writes a fixed number of rows per side (split evenly across clients) and stops
//! early only at a deadline, which the output then reports. Row counts are checked after
//! each case.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use sila_sqlite::{Database, Value, Workspace};

use crate::report::{fmt_duration, fmt_rate, rate, Latencies, Row, Target};
use crate::setup::{open_raw, run_threads, Config, Scratch, SyncMode, PREMIUM_CACHE_KIB, STANDARD_CACHE_KIB};
use crate::BoxError;

const FULL_APP: &str = "bench.insert-full";
const FULL_MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"ins","maxSizeMB":256}],"tier":"premium"}}}"#;
const NORMAL_APP: &str = "bench.insert-normal";
const NORMAL_MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"ins","maxSizeMB":256}],"tier":"standard"}}}"#;
const CREATE: &str = "CREATE TABLE IF NOT EXISTS ev(id INTEGER PRIMARY KEY, client INTEGER NOT NULL, \
     seq INTEGER NOT NULL, payload TEXT NOT NULL)";
const INSERT: &str = "INSERT INTO ev(client, seq, payload) VALUES (?1, ?2, ?3)";
const PAYLOAD: &str = "event-payload-0123456789abcdef";
/// Retries of a raw insert that got `SQLITE_BUSY` after its busy timeout.
const BUSY_RETRIES_MAX: u32 = 20;
/// Rows per transaction of the raw batched reference.
const BATCH_ROWS: u64 = 1000;

/// Blocking clients against the same number of requests in flight from one thread (FULL).
const BLOCKING_CLIENTS: usize = 64;

/// The concurrent client counts measured.
pub const CLIENTS: [usize; 2] = [1, 16];

struct Case {
    rows: u64,
    wall: Duration,
    latency: Latencies,
    busy_retries: u64,
    cut: bool,
}

impl Case {
    fn rate(&self) -> f64 {
        rate(self.rows, self.wall)
    }

    fn describe(&self) -> String {
        format!(
            "{} rows in {}, per-row p50 {} p99 {}{}{}",
            self.rows,
            fmt_duration(self.wall),
            fmt_duration(self.latency.percentile(50.0)),
            fmt_duration(self.latency.percentile(99.0)),
            if self.busy_retries > 0 {
                format!(", {} busy retries", self.busy_retries)
            } else {
                String::new()
            },
            if self.cut { ", CUT AT THE DEADLINE" } else { "" },
        )
    }
}

fn sila_count(db: &Database) -> Result<i64, BoxError> {
    match db.query_value("SELECT count(*) FROM ev", &[])? {
        Some(Value::Integer(n)) => Ok(n),
        other => Err(format!("count(*) returned {other:?}").into()),
    }
}

fn raw_count(path: &Path) -> Result<i64, BoxError> {
    Ok(Connection::open(path)?.query_row("SELECT count(*) FROM ev", [], |r| r.get(0))?)
}

fn check_count(side: &str, before: i64, after: i64, rows: u64) -> Result<(), BoxError> {
    if u64::try_from(after - before).ok() != Some(rows) {
        return Err(
            format!("{side}: {rows} inserts acknowledged but the table grew by {}", after - before).into()
        );
    }
    Ok(())
}

fn merge(results: Vec<(Latencies, u64, u64, bool)>, wall: Duration) -> Result<Case, BoxError> {
    let mut case = Case { rows: 0, wall, latency: Latencies::new()?, busy_retries: 0, cut: false };
    for (h, rows, retries, cut) in results {
        case.latency.merge(&h)?;
        case.rows += rows;
        case.busy_retries += retries;
        case.cut |= cut;
    }
    Ok(case)
}

fn sila_case(
    db: &Database,
    clients: usize,
    per_client: u64,
    limit: Duration,
) -> Result<(Case, String), BoxError> {
    let before = sila_count(db)?;
    let checkpoints = db.stats().metrics.checkpoints;
    let deadline = Instant::now() + limit;
    let (results, wall) = run_threads((0..clients).collect(), |_, client| {
        let mut h = Latencies::new()?;
        let (mut done, mut cut) = (0, false);
        for seq in 0..per_client {
            if Instant::now() >= deadline {
                cut = true;
                break;
            }
            let params = [
                Value::Integer(i64::try_from(client)?),
                Value::Integer(i64::try_from(seq)?),
                Value::Text(PAYLOAD.to_string()),
            ];
            let t = Instant::now();
            let r = db.exec(INSERT, &params)?;
            h.record(t.elapsed());
            if r.changes != 1 {
                return Err(format!("insert changed {} rows", r.changes).into());
            }
            done += 1;
        }
        Ok((h, done, 0, cut))
    })?;
    let case = merge(results, wall)?;
    check_count("sila", before, sila_count(db)?, case.rows)?;
    let stats = db.stats();
    let broker = format!(
        "{} WAL checkpoints by the broker during the case, WAL file {:.1} MiB after",
        stats.metrics.checkpoints - checkpoints,
        stats.wal_bytes as f64 / 1_048_576.0
    );
    Ok((case, broker))
}

/// The non-blocking reference: one thread keeps `in_flight` inserts submitted
/// (`submit_exec`), waiting for the oldest before it submits the next (group commit answers
/// in queue order). Any answer but one changed row fails the case.
fn sila_pipelined(db: &Database, in_flight: usize, rows: u64, limit: Duration) -> Result<Case, BoxError> {
    let before = sila_count(db)?;
    let deadline = Instant::now() + limit;
    let started = Instant::now();
    let mut latency = Latencies::new()?;
    let mut queue = std::collections::VecDeque::with_capacity(in_flight);
    let (mut submitted, mut done, mut cut) = (0u64, 0u64, false);
    // Bounded: each pass submits one insert, takes one answer or notes the deadline once:
    // `2 × rows + 1` passes at most.
    for _ in 0..rows.saturating_mul(2).saturating_add(1) {
        if queue.len() < in_flight && submitted < rows && !cut {
            if Instant::now() >= deadline {
                cut = true;
                continue;
            }
            let params = vec![
                Value::Integer(-2),
                Value::Integer(i64::try_from(submitted)?),
                Value::Text(PAYLOAD.to_string()),
            ];
            queue.push_back((Instant::now(), db.submit_exec(INSERT, params)));
            submitted += 1;
            continue;
        }
        let Some((t, pending)) = queue.pop_front() else { break };
        let r = pending.wait()?;
        latency.record(t.elapsed());
        if r.changes != 1 {
            return Err(format!("insert changed {} rows", r.changes).into());
        }
        done += 1;
    }
    if !queue.is_empty() {
        return Err(format!("{} submitted inserts were never waited for", queue.len()).into());
    }
    let case = Case { rows: done, wall: started.elapsed(), latency, busy_retries: 0, cut };
    check_count("sila pipelined", before, sila_count(db)?, case.rows)?;
    Ok(case)
}

fn raw_insert(conn: &Connection, client: usize, seq: u64, retries: &mut u64) -> Result<(), BoxError> {
    let (client, seq) = (i64::try_from(client)?, i64::try_from(seq)?);
    // Bounded: at most BUSY_RETRIES_MAX + 1 attempts.
    for attempt in 0..=BUSY_RETRIES_MAX {
        let r =
            conn.prepare_cached(INSERT).and_then(|mut s| s.execute(rusqlite::params![client, seq, PAYLOAD]));
        match r {
            Ok(1) => return Ok(()),
            Ok(n) => return Err(format!("insert changed {n} rows").into()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && attempt < BUSY_RETRIES_MAX =>
            {
                *retries += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err("insert stayed busy".into())
}

fn raw_case(
    path: &Path,
    sync: SyncMode,
    cache_kib: i64,
    clients: usize,
    per_client: u64,
    limit: Duration,
) -> Result<Case, BoxError> {
    let before = raw_count(path)?;
    let mut states = Vec::new();
    for client in 0..clients {
        let conn = open_raw(path, sync, cache_kib)?;
        conn.prepare_cached(INSERT)?;
        states.push((conn, client));
    }
    let deadline = Instant::now() + limit;
    let (results, wall) = run_threads(states, |_, (conn, client)| {
        let mut h = Latencies::new()?;
        let (mut done, mut retries, mut cut) = (0, 0, false);
        for seq in 0..per_client {
            if Instant::now() >= deadline {
                cut = true;
                break;
            }
            let t = Instant::now();
            raw_insert(&conn, client, seq, &mut retries)?;
            h.record(t.elapsed());
            done += 1;
        }
        Ok((h, done, retries, cut))
    })?;
    let case = merge(results, wall)?;
    check_count("raw", before, raw_count(path)?, case.rows)?;
    Ok(case)
}

/// The raw ceiling: one connection inserting `rows` in transactions of [`BATCH_ROWS`].
fn raw_batched(path: &Path, sync: SyncMode, cache_kib: i64, rows: u64) -> Result<f64, BoxError> {
    let mut conn = open_raw(path, sync, cache_kib)?;
    let started = Instant::now();
    let mut seq = 0;
    while seq < rows {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(INSERT)?;
            for _ in 0..BATCH_ROWS.min(rows - seq) {
                stmt.execute(rusqlite::params![-1, i64::try_from(seq)?, PAYLOAD])?;
                seq += 1;
            }
        }
        tx.commit()?;
    }
    Ok(rate(rows, started.elapsed()))
}

/// Runs the insert benchmark.
pub fn run(
    scratch: &Scratch,
    cfg: &Config,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), BoxError> {
    let ws = Workspace::open(scratch.ws(), crate::setup::measured_options())?;
    let tiers = [
        (SyncMode::Full, FULL_APP, FULL_MANIFEST, PREMIUM_CACHE_KIB),
        (SyncMode::Normal, NORMAL_APP, NORMAL_MANIFEST, STANDARD_CACHE_KIB),
    ];
    for (sync, app, manifest, cache_kib) in tiers {
        ws.register_app(app, manifest)?;
        let db = ws.open_app(app)?.open("ins")?;
        db.exec(CREATE, &[])?;
        let raw_path = scratch.raw(&format!("ins-{}.sqlite", sync.name().to_lowercase()));
        open_raw(&raw_path, sync, cache_kib)?.execute_batch(CREATE)?;
        let mut raw_single: Option<f64> = None;
        for (i, clients) in CLIENTS.into_iter().enumerate() {
            let per_client = cfg.insert_rows / u64::try_from(clients)?;
            let ((sila, broker), raw) = if i % 2 == 0 {
                let raw = raw_case(&raw_path, sync, cache_kib, clients, per_client, cfg.insert_deadline)?;
                (sila_case(&db, clients, per_client, cfg.insert_deadline)?, raw)
            } else {
                let sila = sila_case(&db, clients, per_client, cfg.insert_deadline)?;
                (sila, raw_case(&raw_path, sync, cache_kib, clients, per_client, cfg.insert_deadline)?)
            };
            let name = format!("insert {} ×{clients}", sync.name());
            let target = if sync == SyncMode::Full && clients == 16 {
                Target::RatioAtLeast(5.0)
            } else {
                Target::None
            };
            rows.push(Row::throughput(
                &name,
                "rows/s (sila exec vs raw autocommit, 1 conn per client)",
                sila.rate(),
                raw.rate(),
                target,
            ));
            if clients == 1 {
                raw_single = Some(raw.rate());
            } else if let (Some(single), SyncMode::Full) = (raw_single, sync) {
                rows.push(Row::throughput(
                    &name,
                    "rows/s (sila ×16 vs raw autocommit ×1)",
                    sila.rate(),
                    single,
                    Target::RatioAtLeast(5.0),
                ));
            }
            notes.push(format!("{name}: sila {} ({broker}); raw {}", sila.describe(), raw.describe()));
        }
        if sync == SyncMode::Full {
            // 64 blocking clients, one request each, against 64 requests kept in flight by one
            // thread: no BUSY below the cap (admission slots come back before each answer).
            let clients = BLOCKING_CLIENTS;
            let per_client = cfg.insert_rows / u64::try_from(clients)?;
            let (blocking, _) = sila_case(&db, clients, per_client, cfg.insert_deadline)?;
            let pipelined =
                sila_pipelined(&db, clients, per_client * u64::try_from(clients)?, cfg.insert_deadline)?;
            let name = format!("insert FULL ×{clients}");
            rows.push(Row::throughput(
                &name,
                "rows/s (blocking exec, a thread each, vs submit_exec, all in flight from one thread)",
                blocking.rate(),
                pipelined.rate(),
                Target::RatioAtLeast(0.8),
            ));
            notes.push(format!(
                "{name}: blocking {}; non-blocking {}",
                blocking.describe(),
                pipelined.describe()
            ));
        }
        let batched = raw_batched(&raw_path, sync, cache_kib, cfg.insert_rows)?;
        notes.push(format!(
            "insert {}: raw reference, 1 connection, {BATCH_ROWS}-row transactions: {}",
            sync.name(),
            fmt_rate(batched)
        ));
        let stats = db.stats();
        notes.push(format!(
            "insert {}: sila metrics: execs {} errors {} checkpoints {}",
            sync.name(),
            stats.metrics.execs,
            stats.metrics.errors_total(),
            stats.metrics.checkpoints,
        ));
    }
    Ok(())
}
