//! Benchmark 6 (issue 3, item 2): 10,000 registered databases, 1,000 active, on one host.
//!
//! Registers apps of tier standard with three 1 MB databases each until there are 10,000
//! databases (3,334 apps; 1,000 databases with `--quick`). Each registration is durable on
//! return (about 17 `fsync`s), so the first 200 are timed, the total is extrapolated, and
//! the count is cut to what fits the registration budget (3 minutes; 30 s with `--quick`);
//! the output says when it was cut. Then 1,000 databases (300 with `--quick`) are made
//! active, one after the other: `open_app` + `open`, `CREATE TABLE`, one `INSERT`, one
//! query. The broker's connection cap (default 512) is below what 1,000 active databases
//! would hold open, so it evicts idle connections; at the end every active database is
//! queried again and must answer with its row.
//!
//! Threads (`/proc/self/task`), open file descriptors (`/proc/self/fd`) and resident memory
//! (`VmRSS`) are read before the workspace opens, after registration, after activation and
//! after the re-query.
//! Default `BrokerOptions` except the per-app per-minute budgets (lifted). No raw side.

use std::time::{Duration, Instant};

use sila_sqlite::{Database, Value, Workspace};

use crate::report::{fmt_duration, Latencies, Row};
use crate::setup::{Config, Scratch};
use crate::BoxError;

const DBS_PER_APP: u64 = 3;
const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":1},{"name":"b","maxSizeMB":1},{"name":"c","maxSizeMB":1}],"tier":"standard"}}}"#;
const DB_NAMES: [&str; 3] = ["a", "b", "c"];
/// Registrations timed before the count is chosen.
const PROBE: u64 = 200;

fn app_id(i: u64) -> String {
    format!("scale.app{i:05}")
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// Threads, open file descriptors and resident memory (KiB, `VmRSS`) of this process.
fn threads_fds() -> (usize, usize, u64) {
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    (count_dir("/proc/self/task"), count_dir("/proc/self/fd"), rss_kib)
}

fn check_one(db: &Database, i: u64) -> Result<(), BoxError> {
    match db.query_value("SELECT x FROM t WHERE id = 1", &[])? {
        Some(Value::Integer(x)) if u64::try_from(x).ok() == Some(i) => Ok(()),
        other => Err(format!("database #{i} answered {other:?}").into()),
    }
}

/// Runs the benchmark; appends rows and notes.
pub fn run(
    scratch: &Scratch,
    cfg: &Config,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), BoxError> {
    let dir = scratch.root.join("ws-scale");
    let r = run_in(&dir, cfg, rows, notes);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run_in(
    dir: &std::path::Path,
    cfg: &Config,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), BoxError> {
    let bench = "scale";
    let before = threads_fds();
    let ws = Workspace::open(dir, crate::setup::measured_options())?;
    let opened = threads_fds();
    let wanted_apps = cfg.scale_dbs.div_ceil(DBS_PER_APP);

    // Registration: probe, extrapolate, choose the count.
    let mut reg = Latencies::new()?;
    let mut last = Latencies::new()?;
    let started = Instant::now();
    let probe = PROBE.min(wanted_apps);
    for i in 0..probe {
        let t = Instant::now();
        ws.register_app(&app_id(i), MANIFEST)?;
        reg.record(t.elapsed());
    }
    let probe_time = started.elapsed();
    let per_app = probe_time.as_secs_f64() / probe.max(1) as f64;
    let projected = Duration::from_secs_f64(per_app * wanted_apps as f64);
    let budget = cfg.scale_register_budget;
    let fit = if per_app > 0.0 { (budget.as_secs_f64() / per_app) as u64 } else { wanted_apps };
    let planned = wanted_apps.min(fit).max(probe);
    let mut registered = probe;
    let mut cut = false;
    // Bounded by `planned`, and by the budget plus 20 % should registration slow down.
    while registered < planned {
        if started.elapsed() > budget.mul_f64(1.2) {
            cut = true;
            break;
        }
        let t = Instant::now();
        ws.register_app(&app_id(registered), MANIFEST)?;
        let d = t.elapsed();
        reg.record(d);
        if planned - registered <= PROBE {
            last.record(d);
        }
        registered += 1;
    }
    let reg_time = started.elapsed();
    let dbs = registered * DBS_PER_APP;
    let after_reg = threads_fds();
    rows.push(Row::info(bench, "databases registered", format!("{dbs} ({registered} apps × {DBS_PER_APP})")));
    rows.push(Row::absolute(bench, "registration per app (mean)", reg.mean(), crate::report::Target::None));
    notes.push(format!(
        "scale registration: first {probe} apps in {} ({} per app) → {wanted_apps} apps ({} databases) projected at {}; \
         budget {} → registered {registered} apps{}{} in {} total; per app p50 {} p99 {} max {}; mean of the last {} {}",
        fmt_duration(probe_time),
        fmt_duration(Duration::from_secs_f64(per_app)),
        cfg.scale_dbs,
        fmt_duration(projected),
        fmt_duration(budget),
        if registered < wanted_apps { " (CUT to fit the budget)" } else { "" },
        if cut { " (stopped at 1.2× the budget)" } else { "" },
        fmt_duration(reg_time),
        fmt_duration(reg.percentile(50.0)),
        fmt_duration(reg.percentile(99.0)),
        fmt_duration(reg.percentile(100.0)),
        last.count(),
        fmt_duration(last.mean()),
    ));

    // Activation.
    let active = cfg.scale_active.min(dbs);
    let mut act = Latencies::new()?;
    let mut handles = Vec::new();
    let started = Instant::now();
    let mut peak_conns = 0;
    for i in 0..active {
        let app = app_id(i / DBS_PER_APP);
        let name = DB_NAMES.get(usize::try_from(i % DBS_PER_APP)?).ok_or("db index")?;
        let t = Instant::now();
        let db = ws.open_app(&app)?.open(name)?;
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER NOT NULL)", &[])?;
        db.exec("INSERT INTO t(id, x) VALUES (1, ?1)", &[Value::Integer(i64::try_from(i)?)])?;
        check_one(&db, i)?;
        act.record(t.elapsed());
        peak_conns = peak_conns.max(ws.broker().connections_open());
        handles.push(db);
    }
    let act_time = started.elapsed();
    let after_act = threads_fds();
    let conns_after_act = ws.broker().connections_open();
    let active_after_act = ws.broker().active_all().len();

    // Every database still answers after evictions.
    let mut requery = Latencies::new()?;
    let started = Instant::now();
    for (i, db) in (0u64..).zip(&handles) {
        let t = Instant::now();
        check_one(db, i)?;
        requery.record(t.elapsed());
    }
    let requery_time = started.elapsed();
    let after_requery = threads_fds();
    let conns_end = ws.broker().connections_open();
    let metrics_conns: usize = handles.iter().map(|d| d.stats().connections).sum();

    rows.push(Row::info(bench, "databases made active", active.to_string()));
    rows.push(Row::absolute(
        bench,
        "activation per db (open + CREATE + INSERT + query, mean)",
        act.mean(),
        crate::report::Target::None,
    ));
    rows.push(Row::absolute(
        bench,
        "activation per db p99",
        act.percentile(99.0),
        crate::report::Target::None,
    ));
    rows.push(Row::absolute(
        bench,
        "re-query per db after evictions (mean)",
        requery.mean(),
        crate::report::Target::None,
    ));
    rows.push(Row::info(bench, "re-query: databases that answered", format!("{}/{active}", requery.count())));
    rows.push(Row::info(
        bench,
        "threads: before open / after register / after activation / after re-query",
        format!("{} / {} / {} / {}", before.0, after_reg.0, after_act.0, after_requery.0),
    ));
    rows.push(Row::info(
        bench,
        "open fds: before open / after register / after activation / after re-query",
        format!("{} / {} / {} / {}", before.1, after_reg.1, after_act.1, after_requery.1),
    ));
    rows.push(Row::info(
        bench,
        "RSS MiB: before open / after register / after activation / after re-query",
        format!(
            "{:.1} / {:.1} / {:.1} / {:.1}",
            before.2 as f64 / 1024.0,
            after_reg.2 as f64 / 1024.0,
            after_act.2 as f64 / 1024.0,
            after_requery.2 as f64 / 1024.0
        ),
    ));
    rows.push(Row::info(
        bench,
        "RSS per active database (after activation − after register)",
        format!("{:.0} KiB", after_act.2.saturating_sub(after_reg.2) as f64 / active.max(1) as f64),
    ));
    rows.push(Row::info(
        bench,
        "broker connections_open(): after activation / after re-query (peak)",
        format!("{conns_after_act} / {conns_end} ({peak_conns})"),
    ));
    notes.push(format!(
        "scale activation: {active} databases in {} (p50 {} p99 {} max {}); broker databases in memory after: \
         {active_after_act}; re-query of all {active} in {} (p50 {} p99 {} max {}); connections by the \
         databases' own stats at the end: {metrics_conns}; threads/fds right after Workspace::open: {} / {}; \
         broker options: defaults (connections_max 512, readers_max 4, worker_threads {}) with budgets lifted",
        fmt_duration(act_time),
        fmt_duration(act.percentile(50.0)),
        fmt_duration(act.percentile(99.0)),
        fmt_duration(act.percentile(100.0)),
        fmt_duration(requery_time),
        fmt_duration(requery.percentile(50.0)),
        fmt_duration(requery.percentile(99.0)),
        fmt_duration(requery.percentile(100.0)),
        opened.0,
        opened.1,
        ws.broker().options().worker_threads,
    ));
    let started = Instant::now();
    drop(handles);
    drop(ws);
    notes.push(format!("scale: closing the workspace took {}", fmt_duration(started.elapsed())));
    Ok(())
}
