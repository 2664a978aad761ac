//! Scheduled maintenance the host drives: [`Workspace::maintain`] does a bounded share of
//! the workspace's upkeep each time it is called, continuing where the last call stopped.
//!
//! One call walks the databases in a fixed order from a cursor kept in the workspace, and for
//! each one, while the work budget lasts: an integrity check (`quick_check`, and the full
//! `integrity_check` on every [`MaintenanceOptions::full_check_every`]-th pass over all
//! databases), `PRAGMA optimize`, and the retention policy if one is given. A damaged
//! database is marked (refused until a reopen) and reported. GC runs at the end. The host
//! decides when (its quiet hours) and how much (the budget); nothing runs on its own.

use std::time::Duration;

use crate::store::{GcSummary, Retention};
use crate::workspace::Workspace;
use crate::Result;

/// Free pages one upkeep call gives back per database in incremental auto-vacuum mode
/// (8 MiB): the writer is held while they move, so the step is bounded; the next call goes
/// on.
pub const INCREMENTAL_VACUUM_PAGES_MAX: u64 = 2048;

/// The default [`MaintenanceOptions::budget`].
pub const MAINTENANCE_BUDGET_DEFAULT: Duration = Duration::from_secs(1);
/// The default [`MaintenanceOptions::full_check_every`].
pub const FULL_CHECK_EVERY_DEFAULT: u32 = 8;

/// What one [`Workspace::maintain`] call may do.
#[derive(Debug, Clone)]
pub struct MaintenanceOptions {
    /// No database is started once this much time has passed since the call began (the one
    /// running finishes). Default [`MAINTENANCE_BUDGET_DEFAULT`]; zero still maintains one
    /// database, so repeated calls always make progress.
    pub budget: Duration,
    /// Every this many passes over all databases (the `full_check_every`-th, the
    /// 2 x `full_check_every`-th…), the check is SQLite's full `integrity_check` instead of
    /// `quick_check` (1: always full; `u32::MAX`: practically never). Default
    /// [`FULL_CHECK_EVERY_DEFAULT`].
    pub full_check_every: u32,
    /// Applied to each database's snapshots (`None`: snapshots are kept).
    pub retention: Option<Retention>,
    /// Run GC at the end (default true).
    pub gc: bool,
}

impl Default for MaintenanceOptions {
    fn default() -> Self {
        MaintenanceOptions {
            budget: MAINTENANCE_BUDGET_DEFAULT,
            full_check_every: FULL_CHECK_EVERY_DEFAULT,
            retention: None,
            gc: true,
        }
    }
}

/// What one database got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbMaintenance {
    /// The app id.
    pub app_id: String,
    /// The database name.
    pub db: String,
    /// Whether its check was the full `integrity_check`.
    pub full_check: bool,
    /// What the check found (empty: sound). A damaged database is refused from now on.
    pub problems: Vec<String>,
    /// Snapshots the retention policy dropped.
    pub snapshots_dropped: usize,
    /// Free pages given back by incremental vacuum (databases whose manifest entry asks for
    /// `incrementalVacuum`), at most [`INCREMENTAL_VACUUM_PAGES_MAX`] per call.
    pub pages_freed: u64,
    /// The error that stopped its maintenance (a poisoned database, a busy writer…), as
    /// `CODE: message`.
    pub error: Option<String>,
}

/// What a [`Workspace::maintain`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// The databases maintained, in order.
    pub databases: Vec<DbMaintenance>,
    /// Databases the budget left for the next call in this pass.
    pub remaining: usize,
    /// The pass over all databases this call worked in (from 0).
    pub pass: u64,
    /// What GC removed (when it ran).
    pub gc: Option<GcSummary>,
}

/// Where the next call continues: the database index in the sorted list, and the pass.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    next: usize,
    pass: u64,
}

impl Workspace {
    /// Does a bounded share of the workspace's upkeep (see the module docs) and says what
    /// it did. Errors of one database are reported in its entry and do not stop the others;
    /// the call fails only if GC does.
    pub fn maintain(&self, options: &MaintenanceOptions) -> Result<MaintenanceReport> {
        let clock = self.clock();
        let started = clock.monotonic();
        let mut keys: Vec<(String, String)> = self
            .apps()
            .into_iter()
            .flat_map(|a| {
                let id = a.app_id.as_str().to_string();
                a.manifest
                    .dbs
                    .iter()
                    .map(move |d| (id.clone(), d.name.as_str().to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        keys.sort();
        let mut report = MaintenanceReport::default();
        let every = u64::from(options.full_check_every.max(1));
        // Bounded by the number of databases: each is visited at most once per call.
        for _ in 0..keys.len() {
            let (index, pass) = self.with_maintenance_cursor(|c| {
                if c.next >= keys.len() {
                    c.next = 0;
                    c.pass = c.pass.saturating_add(1);
                }
                let at = (c.next, c.pass);
                c.next += 1;
                at
            });
            report.pass = pass;
            let Some((app_id, db)) = keys.get(index) else { break };
            // Passes count from 0: pass n is full when n + 1 is a multiple of `every`.
            let full = (pass.saturating_add(1)) % every == 0;
            report.databases.push(self.maintain_one(app_id, db, full, options.retention));
            let last = index + 1 == keys.len();
            if last || clock.monotonic().saturating_sub(started) >= options.budget {
                report.remaining = keys.len() - index - 1;
                break;
            }
        }
        if options.gc {
            report.gc = Some(self.gc()?);
        }
        Ok(report)
    }

    fn maintain_one(
        &self,
        app_id: &str,
        db: &str,
        full: bool,
        retention: Option<Retention>,
    ) -> DbMaintenance {
        let mut out = DbMaintenance {
            app_id: app_id.to_string(),
            db: db.to_string(),
            full_check: full,
            problems: Vec::new(),
            snapshots_dropped: 0,
            pages_freed: 0,
            error: None,
        };
        let result = self.open_app(app_id).and_then(|app| app.open(db)).and_then(|database| {
            out.problems = database.check_integrity(full)?.problems;
            if !out.problems.is_empty() {
                return Ok(());
            }
            if !database.is_read_only() {
                database.optimize()?;
                out.pages_freed = database.incremental_vacuum(INCREMENTAL_VACUUM_PAGES_MAX)?;
            }
            if let Some(policy) = retention {
                out.snapshots_dropped = database.apply_retention(policy)?.len();
            }
            Ok(())
        });
        if let Err(e) = result {
            out.error = Some(format!("{}: {}", e.code(), e.message()));
        }
        out
    }
}
