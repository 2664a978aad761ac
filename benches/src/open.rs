//! Benchmark 3: open cost.
//!
//! sila: `Workspace::open` (lock, recovery scan of every registered app, worker pool start),
//! then `open_app`, `App::open` and the first `query_value` (which opens the first reader
//! connection with sila's pragmas). Raw: `Connection::open` and the first `query_row`, as a
//! bare minimum, and also with sila's pragmas applied, to show where the difference goes.
//! "Cold" means nothing of the database is open in the process; the OS page cache is warm.
//! Closing is not timed (dropping the workspace joins its threads and closes connections).

use std::time::Instant;

use rusqlite::Connection;
use sila_sqlite::{Value, Workspace};

use crate::lookup::{expected_v, KvData, KV_APP, KV_DB, KV_ROWS, LOOKUP_SQL};
use crate::report::{fmt_duration, Latencies, Row, Target};
use crate::setup::{configure_raw, Config, Keys, Scratch, SyncMode, STANDARD_CACHE_KIB};
use crate::BoxError;

/// Runs the open benchmark.
pub fn run(
    scratch: &Scratch,
    data: &KvData,
    cfg: &Config,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), BoxError> {
    let mut sila_total = Latencies::new()?;
    let mut sila_ws = Latencies::new()?;
    let mut sila_first = Latencies::new()?;
    let mut raw_bare = Latencies::new()?;
    let mut raw_configured = Latencies::new()?;
    let mut keys = Keys::new(0x09E4, KV_ROWS);
    let mut apps = 0;
    for _ in 0..cfg.opens {
        let k = keys.next_key();
        let expected = Some(Value::Text(expected_v(k)));

        let t0 = Instant::now();
        let ws = Workspace::open(scratch.ws(), crate::setup::measured_options())?;
        let t1 = Instant::now();
        let db = ws.open_app(KV_APP)?.open(KV_DB)?;
        let v = db.query_value(LOOKUP_SQL, &[Value::Integer(k)])?;
        let t2 = Instant::now();
        if v != expected {
            return Err(format!("first lookup of k={k} returned {v:?}").into());
        }
        apps = ws.apps().len();
        drop(db);
        drop(ws);
        sila_total.record(t2 - t0);
        sila_ws.record(t1 - t0);
        sila_first.record(t2 - t1);

        let t0 = Instant::now();
        let conn = Connection::open(&data.raw_path)?;
        let v: String = conn.query_row(LOOKUP_SQL, [k], |r| r.get(0))?;
        raw_bare.record(t0.elapsed());
        drop(conn);
        if Some(Value::Text(v)) != expected {
            return Err(format!("raw first lookup of k={k} is wrong").into());
        }

        let t0 = Instant::now();
        let conn = Connection::open(&data.raw_path)?;
        configure_raw(&conn, SyncMode::Normal, STANDARD_CACHE_KIB)?;
        let _: String = conn.prepare_cached(LOOKUP_SQL)?.query_row([k], |r| r.get(0))?;
        raw_configured.record(t0.elapsed());
        drop(conn);
    }
    let b = "open + first query (cold)";
    rows.push(Row::latency(b, "p50", sila_total.percentile(50.0), raw_bare.percentile(50.0), Target::None));
    rows.push(Row::latency(b, "p99", sila_total.percentile(99.0), raw_bare.percentile(99.0), Target::None));
    notes.push(format!(
        "open: {} opens per side, workspace with {apps} registered app(s); sila split p50/p99: Workspace::open \
         {}/{}, then open_app + open + first query {}/{}; raw with sila's pragmas (WAL, synchronous, cache_size, \
         temp_store, mmap_size, busy_timeout) p50/p99 {}/{}",
        sila_total.count(),
        fmt_duration(sila_ws.percentile(50.0)),
        fmt_duration(sila_ws.percentile(99.0)),
        fmt_duration(sila_first.percentile(50.0)),
        fmt_duration(sila_first.percentile(99.0)),
        fmt_duration(raw_configured.percentile(50.0)),
        fmt_duration(raw_configured.percentile(99.0)),
    ));
    Ok(())
}
