//! The versions verbs: `snapshot`, `snapshots`, `restore`, `backup`, `export`, `import`,
//! `migrate`, `retention`, `gc`.
//!
//! Each is a thin shell over the public versions API of `sila_sqlite::Database` (and
//! `Workspace::gc`). The CLI is the operator's tool, so host paths are accepted here (apps
//! only ever name logical destinations). Results go to stdout in a shape scripts can capture
//! (`snapshot` and `restore` print only a UUID); progress notes for the long copies go to
//! stderr, and only when stderr is a terminal.

use crate::outln;
use sila_sqlite::store::{GcSummary, Retention};
use sila_sqlite::uuid::Uuid;
use sila_sqlite::versions::{ExportFormat, ImportOptions, MigrationPlan, RestoreOptions};
use sila_sqlite::{Database, Error, ErrorCode, Result, Workspace};
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::time::Instant;

/// Opens `db` of `app` (a manifest name or `sila://db/<name>`).
fn open_db(ws: &Workspace, app: &str, db: &str) -> Result<Database> {
    ws.open_app(app)?.open(db)
}

/// Runs a long copy. When stderr is a terminal, shows `<what>: working… done in X ms` there
/// (erased again on failure, so the error line stands alone); otherwise prints nothing, so
/// piped and captured output stays exactly the result.
pub fn with_progress<T>(what: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let tty = std::io::stderr().is_terminal();
    if tty {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{what}: working… ");
        let _ = err.flush();
    }
    let started = Instant::now();
    let result = work();
    if tty {
        let mut err = std::io::stderr().lock();
        let _ = match &result {
            Ok(_) => writeln!(err, "done in {} ms", started.elapsed().as_millis()),
            // Carriage return + erase line: the error printed next is the line's only text.
            Err(_) => write!(err, "\r\x1b[2K"),
        };
        let _ = err.flush();
    }
    result
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, proleptic Gregorian).
pub(crate) fn iso_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        ms % 1000
    )
}

pub fn snapshot(ws: &Workspace, app: &str, db: &str, label: &str) -> Result<()> {
    let db = open_db(ws, app, db)?;
    let entry = with_progress("snapshot", || db.snapshot(label))?;
    outln!("{}", entry.id)
}

pub fn snapshots(ws: &Workspace, app: &str, db: &str, json: bool) -> Result<()> {
    let list = open_db(ws, app, db)?.snapshots()?;
    if json {
        let docs: Vec<serde_json::Value> = list
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id.to_string(),
                    "size": s.size,
                    "schema": s.schema,
                    "created_ms": s.created_ms,
                    "created": iso_utc(s.created_ms),
                    "crc32c": format!("{:08x}", s.crc32c),
                    "label": s.label,
                })
            })
            .collect();
        return outln!("{}", serde_json::Value::Array(docs));
    }
    for s in &list {
        let line = format!("{} {} {} {} {}", s.id, s.size, s.schema, iso_utc(s.created_ms), s.label);
        outln!("{}", line.trim_end())?;
    }
    Ok(())
}

pub fn restore(ws: &Workspace, app: &str, db: &str, snapshot: &str, allow_schema_change: bool) -> Result<()> {
    let id = Uuid::parse_str(snapshot).map_err(|e| {
        Error::new(ErrorCode::InvalidArgument, format!("snapshot id {snapshot:?} is not a UUID: {e}"))
    })?;
    let db = open_db(ws, app, db)?;
    let undo =
        with_progress("restore", || db.restore(id, RestoreOptions { allow_schema_change })).map_err(|e| {
            // The API names its option; an operator needs the flag.
            if e.code() == ErrorCode::InvalidArgument && e.message().contains("pass allow_schema_change") {
                Error::new(
                    e.code(),
                    e.message().replace("pass allow_schema_change", "pass --allow-schema-change"),
                )
            } else {
                e
            }
        })?;
    outln!("{undo}")
}

pub fn backup(ws: &Workspace, app: &str, db: &str, keep: usize, format: ExportFormat) -> Result<()> {
    if keep == 0 {
        return Err(Error::new(
            ErrorCode::InvalidArgument,
            "--keep must be at least 1 (the backup just taken is always kept)",
        ));
    }
    let db = open_db(ws, app, db)?;
    let (id, path) = with_progress("backup", || db.backup_as(keep, format))?;
    outln!("{id} {}", path.display())
}

pub fn export(ws: &Workspace, app: &str, db: &str, file: &Path, format: ExportFormat) -> Result<()> {
    let db = open_db(ws, app, db)?;
    let bytes = with_progress("export", || db.export_to_path_as(file, format))?;
    outln!("{bytes} bytes written to {}", file.display())
}

pub fn import(ws: &Workspace, app: &str, db: &str, file: &Path, expected_tables: Vec<String>) -> Result<()> {
    let db = open_db(ws, app, db)?;
    let report = with_progress("import", || db.import(file, ImportOptions { expected_tables }))?;
    outln!("imported {} as {} ({} bytes)", file.display(), report.file, report.size)?;
    outln!("checks passed: {}", report.checks.join(", "))?;
    outln!("undo snapshot: {} (restore it to undo the import)", report.undo)
}

fn steps_text(applied: &[(u64, u64)]) -> String {
    let steps: Vec<String> = applied.iter().map(|(f, t)| format!("{f}→{t}")).collect();
    steps.join(", ")
}

pub fn migrate(ws: &Workspace, app: &str, db: &str, steps_file: &Path, dry_run: bool) -> Result<()> {
    let bytes = std::fs::read(steps_file).map_err(|e| {
        Error::new(ErrorCode::Io, format!("reading migration plan {}: {e}", steps_file.display()))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::new(
            ErrorCode::InvalidArgument,
            format!("migration plan {} is not UTF-8: {e}", steps_file.display()),
        )
    })?;
    let plan = MigrationPlan::from_json(&text).map_err(|e| e.context(steps_file.display()))?;
    let db = open_db(ws, app, db)?;
    let report = db.migrate(&plan, dry_run)?;
    let n = report.applied.len();
    outln!("version   {} → {}", report.from, report.to)?;
    if n == 0 {
        outln!("steps     none: already at version {}", report.to)?;
    } else if report.dry_run {
        outln!("steps     {n} would apply: {}", steps_text(&report.applied))?;
    } else {
        outln!("steps     {n} applied: {}", steps_text(&report.applied))?;
    }
    match report.snapshot {
        _ if report.dry_run => outln!("snapshot  dry run: nothing changed"),
        Some(id) => outln!("snapshot  {id} (taken before; restore it to go back)"),
        None => outln!("snapshot  none (nothing changed)"),
    }
}

pub fn retention(
    ws: &Workspace,
    app: &str,
    db: &str,
    keep_last: Option<usize>,
    max_age_secs: Option<u64>,
) -> Result<()> {
    if keep_last.is_none() && max_age_secs.is_none() {
        return Err(Error::new(
            ErrorCode::InvalidArgument,
            "give a policy: --keep-last N and/or --max-age-secs S",
        ));
    }
    let max_age_ms = match max_age_secs {
        Some(s) => Some(s.checked_mul(1000).ok_or_else(|| {
            Error::new(ErrorCode::InvalidArgument, format!("--max-age-secs {s} is too large"))
        })?),
        None => None,
    };
    let dropped = open_db(ws, app, db)?.apply_retention(Retention { keep_last, max_age_ms })?;
    for id in &dropped {
        outln!("{id}")?;
    }
    // The hint goes to stderr so stdout stays exactly the dropped ids.
    let mut err = std::io::stderr().lock();
    let _ = if dropped.is_empty() {
        writeln!(err, "retention: no snapshot is out of policy")
    } else {
        writeln!(
            err,
            "retention: dropped {} snapshot(s); run `sila-sqlite gc` to delete their files",
            dropped.len()
        )
    };
    Ok(())
}

pub fn gc(ws: &Workspace) -> Result<()> {
    let GcSummary { files, bytes, kept_leased } = ws.gc()?;
    for f in &files {
        outln!("removed  {}", f.display())?;
    }
    for f in &kept_leased {
        outln!("kept     {} (still leased or in use)", f.display())?;
    }
    outln!("gc       {} file(s) removed, {bytes} bytes freed", files.len())
}

pub fn maintain(ws: &Workspace, budget_ms: u64, full: bool, keep_last: Option<usize>) -> Result<()> {
    let options = sila_sqlite::maintenance::MaintenanceOptions {
        budget: std::time::Duration::from_millis(budget_ms),
        full_check_every: if full { 1 } else { u32::MAX },
        retention: keep_last.map(|n| sila_sqlite::store::Retention { keep_last: Some(n), max_age_ms: None }),
        gc: true,
    };
    let report = with_progress("maintain", || ws.maintain(&options))?;
    let mut damaged = 0usize;
    for d in &report.databases {
        let check = if d.full_check { "integrity_check" } else { "quick_check" };
        let state = match (&d.error, d.problems.first()) {
            (Some(e), _) => format!("error {e}"),
            (None, Some(first)) => {
                damaged += 1;
                format!(
                    "DAMAGED ({} problem(s), first: {first}); restore its last good snapshot",
                    d.problems.len()
                )
            }
            (None, None) if d.pages_freed > 0 => format!(
                "ok, {} snapshot(s) dropped, {} free page(s) given back",
                d.snapshots_dropped, d.pages_freed
            ),
            (None, None) => format!("ok, {} snapshot(s) dropped", d.snapshots_dropped),
        };
        outln!("{:<10} {} {} {check}: {state}", "maintain", d.app_id, d.db)?;
    }
    if let Some(gc) = &report.gc {
        outln!("gc       {} file(s) removed, {} bytes freed", gc.files.len(), gc.bytes)?;
    }
    if report.remaining > 0 {
        outln!("maintain {} database(s) left for the next run (budget reached)", report.remaining)?;
    }
    if damaged > 0 {
        return Err(Error::new(
            ErrorCode::Corrupt,
            format!("{damaged} damaged database(s); see docs/operations.md"),
        ));
    }
    Ok(())
}

pub fn checkpoint(ws: &Workspace, app: &str, db: &str) -> Result<()> {
    let report = with_progress("checkpoint", || open_db(ws, app, db)?.checkpoint())?;
    let how = if report.complete { "complete, WAL truncated" } else { "partial: a reader holds the rest" };
    outln!("checkpoint {} of {} frame(s) ({how})", report.checkpointed_frames, report.wal_frames)
}

pub fn compact(ws: &Workspace, app: &str, db: &str) -> Result<()> {
    let report = with_progress("compact", || open_db(ws, app, db)?.compact())?;
    outln!(
        "compact  {} -> {} bytes (the replaced file is freed by gc)",
        report.before_bytes,
        report.after_bytes
    )
}

#[cfg(test)]
mod tests {
    use super::iso_utc;

    #[test]
    fn iso_utc_formats_known_instants() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso_utc(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
