//! Migrations: validate the chain, snapshot, run the steps in one transaction under the
//! writer, record `_sila_meta`.

use super::*;

/// One migration step, as the host SDK gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStep {
    /// Version before the step.
    pub from: u64,
    /// Version after it.
    pub to: u64,
    /// SQL that moves `from` → `to`.
    pub up: String,
    /// SQL that moves `to` → `from`.
    pub down: String,
}

/// A migration: the version the app wants and the steps to get there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationPlan {
    /// The target version.
    pub current_version: u64,
    /// The steps.
    pub steps: Vec<MigrationStep>,
}

/// Most steps a migration plan may have.
pub const MIGRATION_STEPS_MAX: usize = 1000;

/// What a migration did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Version before.
    pub from: u64,
    /// Version after.
    pub to: u64,
    /// The steps applied, as (from, to) pairs in order (downgrades have from > to).
    pub applied: Vec<(u64, u64)>,
    /// The automatic snapshot taken before (none for a dry run or a no-op).
    pub snapshot: Option<Uuid>,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
}

impl MigrationPlan {
    /// Parses the host SDK's JSON shape `{"currentVersion":2,"steps":[{"from":0,"to":1,"up":"…","down":"…"}]}`.
    pub fn from_json(text: &str) -> Result<MigrationPlan> {
        let bad = |why: &str| Error::invalid_argument(format!("migration plan: {why}"));
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(&format!("invalid JSON: {e}")))?;
        let current_version = v
            .get("currentVersion")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| bad("currentVersion must be a whole number"))?;
        let steps_v =
            v.get("steps").and_then(|x| x.as_array()).ok_or_else(|| bad("steps must be an array"))?;
        let mut steps = Vec::new();
        for (i, s) in steps_v.iter().enumerate() {
            let num = |k: &str| {
                s.get(k)
                    .and_then(|x| x.as_u64())
                    .ok_or_else(|| bad(&format!("steps[{i}].{k} must be a whole number")))
            };
            let text = |k: &str| {
                s.get(k)
                    .and_then(|x| x.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| bad(&format!("steps[{i}].{k} must be a string")))
            };
            let down = match s.get("down") {
                None => String::new(),
                Some(_) => text("down")?,
            };
            steps.push(MigrationStep { from: num("from")?, to: num("to")?, up: text("up")?, down });
        }
        Ok(MigrationPlan { current_version, steps })
    }

    /// Checks the chain before anything is touched: bounded size, no duplicate or backward
    /// steps, and a path from `from` to the target. Returns the steps to apply, in order,
    /// with `true` for up and `false` for down.
    pub fn path(&self, from: u64) -> Result<Vec<(&MigrationStep, bool)>> {
        let fail =
            |why: String| Error::new(ErrorCode::MigrationFailed, format!("invalid migration chain: {why}"));
        if self.steps.len() > MIGRATION_STEPS_MAX {
            return Err(fail(format!("{} steps, the limit is {MIGRATION_STEPS_MAX}", self.steps.len())));
        }
        for (i, s) in self.steps.iter().enumerate() {
            if s.to <= s.from {
                return Err(fail(format!(
                    "step {i} goes from {} to {}: steps must go up (cycle)",
                    s.from, s.to
                )));
            }
            if self.steps.iter().take(i).any(|o| o.from == s.from) {
                return Err(fail(format!("two steps start at version {} (duplicate)", s.from)));
            }
            if self.steps.iter().take(i).any(|o| o.to == s.to) {
                return Err(fail(format!("two steps end at version {} (duplicate)", s.to)));
            }
        }
        let target = self.current_version;
        let mut path = Vec::new();
        let mut at = from;
        // Each iteration moves `at` strictly toward the target, so the loop ends within
        // steps.len() + 1 iterations; the bound is a guard.
        for _ in 0..=self.steps.len() {
            if at == target {
                return Ok(path);
            }
            if at < target {
                let step = self.steps.iter().find(|s| s.from == at).ok_or_else(|| {
                    fail(format!("no step starts at version {at} (gap on the way to {target})"))
                })?;
                if step.to > target {
                    return Err(fail(format!(
                        "step {}→{} overshoots the target {target}",
                        step.from, step.to
                    )));
                }
                path.push((step, true));
                at = step.to;
            } else {
                let step = self.steps.iter().find(|s| s.to == at).ok_or_else(|| {
                    fail(format!("no step ends at version {at}, so it cannot be downgraded"))
                })?;
                if step.from < target {
                    return Err(fail(format!(
                        "downgrade step {}→{} overshoots the target {target}",
                        step.to, step.from
                    )));
                }
                path.push((step, false));
                at = step.from;
            }
        }
        Err(fail("the chain does not reach the target".into()))
    }
}

/// CRC-32C of a step's SQL, as recorded in `_sila_meta`.
pub fn step_checksum(sql: &str) -> String {
    format!("{:08x}", crc32c::crc32c(sql.as_bytes()))
}

pub(super) const META_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sila_meta (\
    version INTEGER NOT NULL, applied_at INTEGER NOT NULL, step_from INTEGER NOT NULL, \
    step_to INTEGER NOT NULL, direction TEXT NOT NULL, checksum TEXT NOT NULL)";

/// A migration as the audit trail records it: versions, each step applied with the checksum
/// of the SQL that ran, the safety snapshot.
fn migration_detail(plan: &MigrationPlan, report: &MigrationReport) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = report
        .applied
        .iter()
        .map(|&(from, to)| {
            let up = plan.steps.iter().find(|s| s.from == from && s.to == to).map(|s| &s.up);
            let down = plan.steps.iter().find(|s| s.from == to && s.to == from).map(|s| &s.down);
            let sql = up.or(down);
            serde_json::json!({"from": from, "to": to, "checksum": sql.map(|q| step_checksum(q))})
        })
        .collect();
    serde_json::json!({
        "from": report.from,
        "to": report.to,
        "steps": steps,
        "snapshot": report.snapshot.map(|id| id.to_string()),
        "dry_run": report.dry_run,
    })
}

/// The schema version recorded in `_sila_meta` (0 when the table does not exist).
pub fn read_schema_version(conn: &Connection) -> Result<u64> {
    let exists: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '_sila_meta'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sqlite::map_error(e, None))?;
    if exists == 0 {
        return Ok(0);
    }
    let v: Option<i64> = conn
        .query_row("SELECT version FROM _sila_meta ORDER BY rowid DESC LIMIT 1", [], |r| r.get(0))
        .map_err(|e| sqlite::map_error(e, None))
        .or_else(|e| if e.code() == ErrorCode::Sqlite { Ok(None) } else { Err(e) })?;
    Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

/// Runs the steps on `conn` (inside the caller's transaction) and records them.
pub(super) fn apply_steps(conn: &Connection, path: &[(&MigrationStep, bool)], now_ms: u64) -> Result<()> {
    crate::broker::run_internal(conn, META_TABLE)?;
    for (i, (step, up)) in path.iter().enumerate() {
        let (sql, from, to) =
            if *up { (&step.up, step.from, step.to) } else { (&step.down, step.to, step.from) };
        let stop = StopCheck::with_timeout(std::time::Duration::from_secs(3600), Default::default());
        sqlite::policy::as_migration_step(|| sqlite::execute_script(conn, sql, &stop)).map_err(|e| {
            Error::new(
                ErrorCode::MigrationFailed,
                format!(
                    "migration step {} of {} ({from}→{to}) failed: {}; rolled back",
                    i + 1,
                    path.len(),
                    e.message()
                ),
            )
        })?;
        // The engine's own write: apps (and their steps) may not write `_sila_meta`.
        crate::broker::as_internal(|| conn.execute(
            "INSERT INTO _sila_meta (version, applied_at, step_from, step_to, direction, checksum) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                i64::try_from(to).unwrap_or(i64::MAX),
                i64::try_from(now_ms).unwrap_or(i64::MAX),
                i64::try_from(step.from).unwrap_or(i64::MAX),
                i64::try_from(step.to).unwrap_or(i64::MAX),
                if *up { "up" } else { "down" },
                step_checksum(if *up { &step.up } else { &step.down }),
            ],
        ))
        .map_err(|e| sqlite::map_error(e, None))?;
    }
    let mut stmt = conn.prepare("PRAGMA foreign_key_check").map_err(|e| sqlite::map_error(e, None))?;
    let mut rows = stmt.query([]).map_err(|e| sqlite::map_error(e, None))?;
    if let Some(row) = rows.next().map_err(|e| sqlite::map_error(e, None))? {
        let table: String = row.get(0).unwrap_or_default();
        return Err(Error::new(
            ErrorCode::MigrationFailed,
            format!("migration leaves a foreign key violation in table {table:?}; rolled back"),
        ));
    }
    Ok(())
}

impl Database {
    /// Runs a migration: validates the chain, checks free disk space, takes an automatic
    /// snapshot, then runs every step in one transaction holding the writer, records each in
    /// `_sila_meta` (version, applied_at, direction, checksum), checks foreign keys, and
    /// commits. Any failure rolls everything back (the snapshot stays as a safety net) and the
    /// error names the failing step and SQLite's message. A step edited after it was applied
    /// is refused. `dry_run` runs the migration on a private copy and changes nothing.
    pub fn migrate(&self, plan: &MigrationPlan, dry_run: bool) -> Result<MigrationReport> {
        self.operation(
            "migrate",
            || self.migrate_inner(plan, dry_run),
            |_| None,
            |r| Some(migration_detail(plan, r)),
        )
    }

    pub(super) fn migrate_inner(&self, plan: &MigrationPlan, dry_run: bool) -> Result<MigrationReport> {
        self.refuse_read_only()?;
        let from = self.schema_version()?;
        let path = plan.path(from)?;
        let applied: Vec<(u64, u64)> =
            path.iter().map(|(s, up)| if *up { (s.from, s.to) } else { (s.to, s.from) }).collect();
        self.check_applied_checksums(plan)?;
        if path.is_empty() {
            return Ok(MigrationReport { from, to: from, applied, snapshot: None, dry_run });
        }
        let (db_bytes, wal_bytes) = self.refresh_sizes()?;
        self.check_free_space(2 * (db_bytes + wal_bytes))?;
        let now = self.ws.now_ms();
        if dry_run {
            let tmp = self.ws.root().join(crate::workspace::TMP_DIR);
            vfs::create_dir_all(self.fs(), &tmp)?;
            let copy = tmp.join(format!("dry-run-{}.sqlite", self.ws.new_uuid()));
            let stop = self.ws.broker().stop_after(self.ws.broker().options().transaction_timeout);
            let result = self
                .db
                .with_reader_conn(&stop, |conn| backup_to(self.vfs_name(), conn, &copy))
                .and_then(|()| {
                    let conn = self.db.open_side_connection(&copy)?;
                    crate::broker::run_internal(&conn, "PRAGMA foreign_keys=OFF")?;
                    crate::broker::run_internal(&conn, "BEGIN IMMEDIATE")?;
                    let r = apply_steps(&conn, &path, now);
                    let _ = crate::broker::run_internal(&conn, "ROLLBACK");
                    r
                });
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = copy.as_os_str().to_os_string();
                p.push(suffix);
                let _ = self.fs().remove_file(&PathBuf::from(p));
            }
            result?;
            return Ok(MigrationReport {
                from,
                to: plan.current_version,
                applied,
                snapshot: None,
                dry_run: true,
            });
        }
        let snapshot = self.snapshot(&format!("before migration {from} to {}", plan.current_version))?;
        let options = self.ws.broker().options().clone();
        let db = self.db.clone();
        self.exclusive(|conn| {
            let deadline = db.deadline_after(options.transaction_timeout);
            // Foreign keys off for the steps (outside the transaction, where it takes effect):
            // the table-rebuild procedure drops a parent table, which would cascade. Their
            // integrity is checked with foreign_key_check before the commit (`apply_steps`).
            crate::broker::run_internal(conn, "PRAGMA foreign_keys=OFF")?;
            let result = db.run_transaction(conn, deadline, |conn| {
                apply_steps(conn, &path, now)?;
                if crate::sabotage::active(crate::sabotage::Sabotage::MigrationNeverCommits) {
                    // Broken on purpose: undo the steps, then let the transaction "commit".
                    crate::broker::run_internal(conn, "ROLLBACK; BEGIN IMMEDIATE")?;
                }
                Ok(())
            });
            let restored = crate::broker::run_internal(conn, "PRAGMA foreign_keys=ON");
            result.and(restored)
        })?;
        Ok(MigrationReport {
            from,
            to: plan.current_version,
            applied,
            snapshot: Some(snapshot.id),
            dry_run: false,
        })
    }

    /// Refuses with `QuotaExceeded` when the filesystem holding the database has less than
    /// `needed` bytes free (skipped when the filesystem cannot tell).
    pub(super) fn check_free_space(&self, needed: u64) -> Result<()> {
        let path = self.db.path();
        let dir = path.parent().unwrap_or(&path);
        if let Some(free) = self.fs().free_bytes(dir)? {
            if free < needed {
                return Err(Error::quota_exceeded(crate::QuotaDetail {
                    usage: None,
                    limit_name: "free disk space for the migration (2 x database size)".into(),
                    limit_bytes: free,
                    used_bytes: 0,
                    requested_bytes: needed,
                }));
            }
        }
        Ok(())
    }

    /// Refuses a plan whose steps differ from what `_sila_meta` recorded when they ran.
    pub(super) fn check_applied_checksums(&self, plan: &MigrationPlan) -> Result<()> {
        let stop = self.ws.broker().stop_after(self.ws.broker().options().statement_timeout);
        let history: Vec<(u64, u64, String)> = self.db.with_reader_conn(&stop, |conn| {
            let exists: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema WHERE name = '_sila_meta'", [], |r| r.get(0))
                .map_err(|e| sqlite::map_error(e, None))?;
            if exists == 0 {
                return Ok(Vec::new());
            }
            let mut stmt = conn
                .prepare("SELECT step_from, step_to, checksum FROM _sila_meta WHERE direction = 'up'")
                .map_err(|e| sqlite::map_error(e, None))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
                .map_err(|e| sqlite::map_error(e, None))?;
            let mut out = Vec::new();
            for r in rows.take(MIGRATION_STEPS_MAX * 4) {
                let (f, t, c) = r.map_err(|e| sqlite::map_error(e, None))?;
                out.push((u64::try_from(f).unwrap_or(0), u64::try_from(t).unwrap_or(0), c));
            }
            Ok(out)
        })?;
        for step in &plan.steps {
            if let Some((_, _, recorded)) =
                history.iter().rev().find(|(f, t, _)| *f == step.from && *t == step.to)
            {
                let now = step_checksum(&step.up);
                if *recorded != now {
                    return Err(Error::new(
                        ErrorCode::MigrationFailed,
                        format!(
                            "step {}→{} was edited after it was applied (checksum {recorded} then, {now} now); \
                             add a new step instead",
                            step.from, step.to
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
