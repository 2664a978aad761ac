//! `sila-sqlite check`: verifies a workspace and prints a report.
//!
//! Opening the workspace already runs recovery, which reads every app record, pointer and
//! snapshot manifest, verifies their checksums and that the files they name exist, removes
//! temp files and never-committed registrations, and lists orphans and unknown files. This
//! command reports that, then runs `PRAGMA integrity_check` on every database whose records
//! are healthy, through the same API a host uses.

use crate::outln;
use sila_sqlite::store::layout;
use sila_sqlite::{Error, ErrorCode, Result, Value, Workspace};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Most lines of a failing integrity_check quoted in the report.
const INTEGRITY_LINES_SHOWN: usize = 5;

pub fn run(ws: &Workspace) -> Result<()> {
    let report = ws.recovery_report();
    let mut problems: Vec<Error> = Vec::new();

    outln!("check        {}", ws.root().display())?;
    outln!(
        "records      {} apps, {} databases verified ok, {} damaged",
        report.apps,
        report.databases_ok,
        report.damaged.len()
    )?;
    for (path, err) in &report.damaged {
        outln!("  DAMAGED    {}: {err}", path.display())?;
        problems.push(err.clone());
    }
    for path in &report.temps_removed {
        outln!("  repaired   removed temp file {}", path.display())?;
    }
    for path in &report.incomplete_apps_removed {
        outln!("  repaired   removed never-committed registration {}", path.display())?;
    }
    for path in &report.orphans {
        outln!("  orphan     {} (unreferenced; `gc` removes it)", path.display())?;
    }
    for path in &report.unknown {
        outln!("  unknown    {} (not the engine's; left untouched)", path.display())?;
    }

    let damaged: BTreeSet<PathBuf> = report.damaged.iter().map(|(p, _)| p.clone()).collect();
    let mut checked = 0usize;
    outln!("integrity    PRAGMA integrity_check on every healthy database")?;
    for info in ws.apps() {
        let id = info.app_id.as_str();
        let app = ws.open_app(id)?;
        for spec in &info.manifest.dbs {
            let name = spec.name.as_str();
            if damaged.contains(&layout::db_dir(info.app_uuid, &spec.name)) {
                outln!("  skipped    {id}/{name} (records damaged, see above)")?;
                continue;
            }
            checked += 1;
            match app.open(name).and_then(|db| db.query("PRAGMA integrity_check", &[])) {
                Ok(rows) => {
                    let lines: Vec<String> = rows
                        .rows
                        .iter()
                        .filter_map(|r| r.first())
                        .map(|v| match v {
                            Value::Text(s) => s.clone(),
                            other => other.to_json().to_string(),
                        })
                        // One row may carry several findings, one per line.
                        .flat_map(|s| s.lines().map(str::to_string).collect::<Vec<_>>())
                        .filter(|s| !s.trim().is_empty())
                        .collect();
                    if lines.len() == 1 && lines.first().map(String::as_str) == Some("ok") {
                        outln!("  ok         {id}/{name}")?;
                    } else {
                        let shown: Vec<&str> =
                            lines.iter().take(INTEGRITY_LINES_SHOWN).map(String::as_str).collect();
                        let more = lines.len().saturating_sub(INTEGRITY_LINES_SHOWN);
                        let more = if more > 0 { format!(" (+{more} more)") } else { String::new() };
                        let err = Error::new(
                            ErrorCode::Corrupt,
                            format!("{id}/{name}: integrity_check: {}{more}", shown.join("; ")),
                        );
                        outln!("  FAILED     {err}")?;
                        problems.push(err);
                    }
                }
                Err(e) => {
                    let err = e.context(format!("{id}/{name}"));
                    outln!("  FAILED     {err}")?;
                    problems.push(err);
                }
            }
        }
    }

    match problems.first() {
        None => outln!("result       ok: records verified, {checked} databases pass integrity_check"),
        Some(first) => {
            outln!("result       {} problem(s)", problems.len())?;
            Err(Error::new(
                first.code(),
                format!(
                    "check found {} problem(s) in {}; see the report above",
                    problems.len(),
                    ws.root().display()
                ),
            ))
        }
    }
}
