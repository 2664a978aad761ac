//! Benchmark 4: what ANALYZE (and STAT4) does to cached statements, on raw connections.
//!
//! The bundled SQLite's `PRAGMA compile_options` is checked for `ENABLE_STAT4`. A table
//! `t(id INTEGER PRIMARY KEY, tag TEXT, pad TEXT)` with an index on `tag` (1000 distinct
//! tags) is queried through one cached statement — `SELECT id FROM t WHERE tag = ? LIMIT 1`,
//! the bound tag changing every run, and the rowid lookup `SELECT tag FROM t WHERE id = ?` —
//! while the statement's `SQLITE_STMTSTATUS_REPREPARE` counter shows whether SQLite
//! re-prepares it. Phases:
//!
//! 1. no statistics;
//! 2. after `ANALYZE` (run on another connection, as any writer could);
//! 3. the same, binding the same tag every run;
//! 4. after `DELETE FROM sqlite_stat4` + `ANALYZE sqlite_schema` (stat1 only), on the
//!    connection that had loaded the STAT4 samples and on a new one;
//! 5. on a copy of the never-analyzed data after `PRAGMA analysis_limit=400; ANALYZE`;
//! 6. on another such copy after the broker's close-time policy, `PRAGMA optimize=0x10002`
//!    (run after lookups, so the connection has used the index).
//!
//! Phases 5 and 6 are measured on new connections, as the broker's next readers would be.

use std::path::Path;
use std::time::Instant;

use rusqlite::{Connection, StatementStatus};

use crate::lookup::stat_tables;
use crate::report::{fmt_duration, ratio, Latencies};
use crate::setup::{open_raw, Config, Keys, Scratch, SyncMode, STANDARD_CACHE_KIB};
use crate::BoxError;

const TAGS: i64 = 1000;
const TAG_SQL: &str = "SELECT id FROM t WHERE tag = ? LIMIT 1";
const ROWID_SQL: &str = "SELECT tag FROM t WHERE id = ?";

struct Phase {
    latency: Latencies,
    reprepares: i32,
    runs: u64,
}

impl Phase {
    fn describe(&self) -> String {
        format!(
            "p50 {} p99 {}, {} re-prepares / {} runs",
            fmt_duration(self.latency.percentile(50.0)),
            fmt_duration(self.latency.percentile(99.0)),
            self.reprepares,
            self.runs
        )
    }
}

fn build(path: &Path, rows: i64) -> Result<(), BoxError> {
    let conn = open_raw(path, SyncMode::Normal, STANDARD_CACHE_KIB)?;
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, tag TEXT NOT NULL, pad TEXT NOT NULL); \
         CREATE INDEX t_tag ON t(tag);",
    )?;
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1) \
         INSERT INTO t(id, tag, pad) SELECT x, printf('tag-%04d', x % 1000), printf('%040d', x) FROM c",
        [rows],
    )?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(())
}

/// Runs `sql` `n` times through the statement cache, binding keys from `seed` over
/// `1..=range` (mapped to a tag when `tag`), or the same key every time when `fixed`.
fn measure(
    conn: &Connection,
    sql: &str,
    n: u64,
    range: i64,
    tag: bool,
    fixed: bool,
) -> Result<Phase, BoxError> {
    // One untimed run so a re-prepare caused by the previous phase's schema change is not
    // counted against this phase.
    conn.prepare_cached(sql)?
        .query_row([if tag { "tag-0001".to_string() } else { "1".to_string() }], |_| Ok(()))?;
    conn.prepare_cached(sql)?.reset_status(StatementStatus::RePrepare);
    let mut keys = Keys::new(42, range);
    let mut latency = Latencies::new()?;
    let first = keys.next_key();
    for _ in 0..n {
        let k = if fixed { first } else { keys.next_key() };
        let t = Instant::now();
        if tag {
            let param = format!("tag-{:04}", k % TAGS);
            let _: i64 = conn.prepare_cached(sql)?.query_row([param], |r| r.get(0))?;
        } else {
            let _: String = conn.prepare_cached(sql)?.query_row([k], |r| r.get(0))?;
        }
        latency.record(t.elapsed());
    }
    let reprepares = conn.prepare_cached(sql)?.get_status(StatementStatus::RePrepare);
    Ok(Phase { latency, reprepares, runs: n })
}

/// Runs the ANALYZE/STAT4 benchmark; returns the one-line finding and adds detail lines.
pub fn run(scratch: &Scratch, cfg: &Config, notes: &mut Vec<String>) -> Result<String, BoxError> {
    let path = scratch.raw("stat4.sqlite");
    build(&path, cfg.analyze_rows)?;
    let limited = scratch.raw("stat4-limit.sqlite");
    std::fs::copy(&path, &limited)?;
    let optimized = scratch.raw("stat4-optimize.sqlite");
    std::fs::copy(&path, &optimized)?;
    let open = |p: &Path| open_raw(p, SyncMode::Normal, STANDARD_CACHE_KIB);
    let n = cfg.analyze_lookups;
    let rows = cfg.analyze_rows;

    let conn = open(&path)?;
    let options: Vec<String> =
        conn.prepare("PRAGMA compile_options")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let stat4 = options.iter().any(|o| o == "ENABLE_STAT4");

    let before = measure(&conn, TAG_SQL, n, TAGS, true, false)?;
    let before_rowid = measure(&conn, ROWID_SQL, n, rows, false, false)?;

    let analyzer = open(&path)?;
    let t = Instant::now();
    analyzer.execute_batch("ANALYZE")?;
    let analyze_time = t.elapsed();
    let after_stats = stat_tables(&conn)?;
    let after = measure(&conn, TAG_SQL, n, TAGS, true, false)?;
    let after_fixed = measure(&conn, TAG_SQL, n, TAGS, true, true)?;
    let after_rowid = measure(&conn, ROWID_SQL, n, rows, false, false)?;

    analyzer.execute_batch("DELETE FROM sqlite_stat4; ANALYZE sqlite_schema;")?;
    conn.execute_batch("ANALYZE sqlite_schema")?;
    let stat1_same = measure(&conn, TAG_SQL, n, TAGS, true, false)?;
    let stat1_new = measure(&open(&path)?, TAG_SQL, n, TAGS, true, false)?;

    let limited_stats = {
        let c = open(&limited)?;
        c.execute_batch("PRAGMA analysis_limit=400; ANALYZE")?;
        stat_tables(&c)?
    };
    let limit = measure(&open(&limited)?, TAG_SQL, n, TAGS, true, false)?;

    let policy_stats = {
        let c = open(&optimized)?;
        measure(&c, TAG_SQL, 100, TAGS, true, false)?;
        c.execute_batch("PRAGMA optimize=0x10002")?;
        stat_tables(&c)?
    };
    let policy = measure(&open(&optimized)?, TAG_SQL, n, TAGS, true, false)?;

    let wrote = |s: &[String]| if s.is_empty() { "nothing".to_string() } else { s.join(", ") };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    notes.push(format!(
        "analyze: {rows} rows, index on tag ({TAGS} distinct); compile_options ENABLE_STAT4: {}; ANALYZE took {}, \
         wrote {}",
        yes_no(stat4),
        fmt_duration(analyze_time),
        wrote(&after_stats)
    ));
    let lines = [
        ("indexed TEXT lookup, no statistics", &before),
        ("indexed TEXT lookup, after ANALYZE", &after),
        ("indexed TEXT lookup, after ANALYZE, same tag every run", &after_fixed),
        (
            "indexed TEXT lookup, stat1 only (stat4 emptied + ANALYZE sqlite_schema), same connection",
            &stat1_same,
        ),
        ("indexed TEXT lookup, stat1 only, new connection", &stat1_new),
        ("rowid lookup, no statistics", &before_rowid),
        ("rowid lookup, after ANALYZE", &after_rowid),
    ];
    for (label, phase) in lines {
        notes.push(format!("analyze: {label}: {}", phase.describe()));
    }
    notes.push(format!(
        "analyze: indexed TEXT lookup, never-analyzed copy after PRAGMA analysis_limit=400; ANALYZE (wrote {}), new \
         connection: {}",
        wrote(&limited_stats),
        limit.describe()
    ));
    notes.push(format!(
        "analyze: indexed TEXT lookup, never-analyzed copy after the broker's PRAGMA optimize=0x10002 (wrote {}), \
         new connection: {}",
        wrote(&policy_stats),
        policy.describe()
    ));

    let p50 = |p: &Phase| p.latency.percentile(50.0);
    let slowdown = ratio(p50(&after).as_secs_f64(), p50(&before).as_secs_f64())
        .map(|r| format!("{r:.2}×"))
        .unwrap_or_else(|| "?".to_string());
    let per_run = |p: &Phase| f64::from(p.reprepares) / p.runs.max(1) as f64;
    Ok(format!(
        "ANALYZE/STAT4: ENABLE_STAT4={}; re-prepares per run of a cached `tag = ?` lookup: {:.2} with no statistics, \
         {:.2} after ANALYZE (p50 {} → {}, {slowdown}), {:.2} after the broker's PRAGMA optimize=0x10002, {:.2} with \
         stat1 only on a new connection ({:.2} on the one that had loaded STAT4), {:.2} after ANALYZE under \
         analysis_limit=400; rowid lookups: {:.2} after ANALYZE",
        yes_no(stat4),
        per_run(&before),
        per_run(&after),
        fmt_duration(p50(&before)),
        fmt_duration(p50(&after)),
        per_run(&policy),
        per_run(&stat1_new),
        per_run(&stat1_same),
        per_run(&limit),
        per_run(&after_rowid),
    ))
}
