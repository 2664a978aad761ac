//! `sila-sqlite demo`: the host-SDK example of the spec (section 5), end to end, through the
//! Rust API a host embeds:
//!
//! ```ts
//! const db = await sila.sqlite.open({ dbName: "analytics" });
//! await db.exec("CREATE TABLE IF NOT EXISTS events (...)");
//! await db.transaction(async (tx) => { await tx.exec("INSERT ..."); await tx.queryValue("SELECT COUNT(*) ..."); });
//! const rows = await db.query("SELECT ... WHERE user_id = ?", [userId]);
//! ```

use crate::{describe_dbs, outln};
use sila_sqlite::{Error, ErrorCode, Result, Value, Workspace};
use std::time::Instant;

/// The demo app's id.
pub const APP_ID: &str = "com.example.analytics";

/// The demo app's capability manifest.
pub const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics","maxSizeMB":256}],"tier":"standard"}}}"#;

/// Events written per run.
const BATCH: i64 = 1000;

/// Distinct users the events are spread over.
const USERS: i64 = 10;

/// The user the demo queries.
const QUERY_USER: &str = "user-7";

const QUERY: &str = "SELECT id, ts FROM events WHERE user_id = ? ORDER BY ts DESC LIMIT 5";

fn kind(i: i64) -> &'static str {
    match i % 3 {
        0 => "view",
        1 => "click",
        _ => "purchase",
    }
}

/// A value as a person reads it: text bare, numbers plain, the rest as the API's JSON.
fn show(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        other => other.to_json().to_string(),
    }
}

fn integer(v: Option<Value>, what: &str) -> Result<i64> {
    match v {
        Some(Value::Integer(i)) => Ok(i),
        other => Err(Error::new(ErrorCode::Internal, format!("{what}: expected an integer, got {other:?}"))),
    }
}

pub fn run(ws: &Workspace) -> Result<()> {
    // The host registers the sub-app from its manifest (idempotent for the same manifest).
    let info = ws.register_app(APP_ID, MANIFEST)?;
    outln!("workspace    {}", ws.root().display())?;
    outln!(
        "app          {} (uuid {}, tier {}, dbs {})",
        info.app_id.as_str(),
        info.app_uuid,
        info.manifest.tier.name(),
        describe_dbs(&info)
    )?;

    // const db = await sila.sqlite.open({ dbName: "analytics" });
    let db = ws.open_app(APP_ID)?.open("sila://db/analytics")?;
    db.exec(
        "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, user_id TEXT, ts INTEGER, data JSON)",
        &[],
    )?;
    db.exec("CREATE INDEX IF NOT EXISTS idx_events_user ON events(user_id)", &[])?;
    outln!("opened       sila://db/analytics; table events, index idx_events_user")?;

    // Each run writes its own batch: ids carry the run number, so reruns never collide, and
    // timestamps continue after the previous run's even when the clock has not moved past them.
    let previous = db.query(
        "SELECT COALESCE(MAX(json_extract(data, '$.run')), 0) + 1, COALESCE(MAX(ts), 0) + 1 FROM events",
        &[],
    )?;
    let mut first = previous.rows.into_iter().next().unwrap_or_default().into_iter();
    let run = integer(first.next(), "run number")?;
    let now = i64::try_from(ws.now_ms()).unwrap_or(i64::MAX - BATCH).max(integer(first.next(), "last ts")?);

    let started = Instant::now();
    let (total, for_user) = db.transaction(|tx| {
        for i in 0..BATCH {
            let data = serde_json::json!({"kind": kind(i), "run": run, "seq": i}).to_string();
            tx.exec(
                "INSERT INTO events (id, user_id, ts, data) VALUES (?, ?, ?, ?)",
                &[
                    Value::Text(format!("run{run}-evt{i:04}")),
                    Value::Text(format!("user-{}", i % USERS)),
                    Value::Integer(now.saturating_add(i)),
                    Value::Text(data),
                ],
            )?;
        }
        let total = tx.query_value("SELECT COUNT(*) FROM events", &[])?;
        let for_user = tx.query_value(
            "SELECT COUNT(*) FROM events WHERE user_id = ?",
            &[Value::Text(QUERY_USER.into())],
        )?;
        Ok((total, for_user))
    })?;
    let tx_ms = started.elapsed().as_secs_f64() * 1000.0;
    outln!(
        "transaction  run {run}: inserted {BATCH} events, committed in {tx_ms:.1} ms; inside it COUNT(*) = {}, {QUERY_USER}: {}",
        integer(total, "count")?,
        integer(for_user, "count for user")?
    )?;

    let started = Instant::now();
    let rows = db.query(QUERY, &[Value::Text(QUERY_USER.into())])?;
    let q_us = started.elapsed().as_micros();
    outln!("query        {QUERY}  [? = {QUERY_USER:?}]  ({} rows, {q_us} µs)", rows.rows.len())?;
    let header: Vec<String> = rows.columns.iter().map(|c| format!("{c:<16}")).collect();
    outln!("    {}", header.concat().trim_end())?;
    for row in &rows.rows {
        let cells: Vec<String> = row.iter().map(|v| format!("{:<16}", show(v))).collect();
        outln!("    {}", cells.concat().trim_end())?;
    }

    let stats = serde_json::to_string_pretty(&db.stats().to_json())
        .map_err(|e| Error::new(ErrorCode::Internal, format!("encoding stats as JSON: {e}")))?;
    outln!("metrics      db.stats():")?;
    outln!("{stats}")
}
