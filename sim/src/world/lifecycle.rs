//! A second app's lifecycle: registered, updated (a database added, then removed while the
//! kept one grows), unregistered, registered again, under every fault the profile injects.
//!
//! What the model expects: an acknowledged change is what the workspace says at once and
//! after any later crash; a failed one leaves the app as it was or, when the failure came
//! at or after its commit, as the change made it (either, until recovery tells). After a
//! crash and one GC, no file of a removed database or an unregistered app remains, and no
//! retired directory is left. Before each change the app's databases get a row (through a
//! handle dropped at once), so a change has connections to close and files to retire.

use super::*;
use sila_sqlite::manifest::Manifest;

/// The second app.
pub(super) const SIDE_APP: &str = "com.sim.side";

/// The manifests the second app moves between (index 0 is "not registered").
const SIDE_MANIFESTS: [&str; 3] = [
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":1}],"tier":"standard"}}}"#,
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":1},{"name":"b","maxSizeMB":1}],"tier":"standard"}}}"#,
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":2}],"tier":"standard"}}}"#,
];

/// What the model knows of the second app: the acknowledged state (`None`: not registered,
/// `Some(i)`: registered with `SIDE_MANIFESTS[i]`), and states a failed change may have left.
#[derive(Debug, Clone, Default)]
pub(super) struct SideApp {
    pub(super) acked: Option<usize>,
    pub(super) maybe: Vec<Option<usize>>,
    /// Directories of the app recovery found damaged (a record's bits rotted): the app is
    /// out of the workload from then on, and its files out of the checks.
    pub(super) quarantined: Vec<PathBuf>,
}

impl World {
    /// [`Op::AppChange`]: the next step of the second app's cycle; `seed` picks between
    /// shrinking to one database and unregistering.
    pub(super) fn op_app_change(&mut self, seed: u64) -> Result<String, String> {
        if !self.side.quarantined.is_empty() {
            return Ok("no change: the app's records rotted".into());
        }
        let ws = self.ws()?.clone();
        let from = self.side.acked;
        if let Some(i) = from {
            self.touch_side_databases(&ws, i);
        }
        let to = match from {
            None => Some(0),
            Some(0) | Some(2) => Some(1),
            _ if seed.is_multiple_of(2) => Some(2),
            _ => None,
        };
        let done = match (from, to) {
            (None, Some(i)) => ws.register_app(SIDE_APP, manifest_text(i)?).map(drop),
            (Some(_), Some(i)) => ws.update_app(SIDE_APP, manifest_text(i)?).map(drop),
            (Some(_), None) => ws.unregister_app(SIDE_APP),
            (None, None) => return Ok("no change".into()),
        };
        let what = match to {
            Some(i) => format!("app {SIDE_APP} at manifest {i}"),
            None => format!("app {SIDE_APP} unregistered"),
        };
        match done {
            Ok(()) => {
                if self.poisoned_by_fault {
                    return Err(format!("fail-stop broken: {what} acknowledged after an fsync failure"));
                }
                self.side.acked = to;
                self.side.maybe.clear();
                let seen = side_state(&ws)?;
                if seen != to {
                    return Err(format!("{what} acknowledged, but the workspace says {seen:?}"));
                }
                Ok(what)
            }
            Err(e) => {
                // Busy (a handle of the workload's own? none is kept) or a fault: the change
                // may have committed before the failure.
                self.side.maybe.push(to);
                Ok(format!("error {} ({what} refused)", e.code()))
            }
        }
    }

    /// Writes a row into each database of the second app and drops the handle.
    fn touch_side_databases(&self, ws: &Workspace, state: usize) {
        let Ok(app) = ws.open_app(SIDE_APP) else { return };
        let names: &[&str] = if state == 1 { &["a", "b"] } else { &["a"] };
        for name in names {
            if let Ok(db) = app.open(name) {
                // Errors are the faults' business; the model of this app is its records.
                let _ = db.exec("CREATE TABLE IF NOT EXISTS t (x)", &[]);
                let _ = db.exec("INSERT INTO t VALUES (randomblob(300))", &[]);
            }
        }
    }

    /// After recovery: the second app is in its acknowledged state or one a failed change
    /// may have left; from now on that is the state. With `strict` false (a lying disk),
    /// whatever recovery found is adopted.
    pub(super) fn check_side_app(&mut self, ws: &Workspace, strict: bool) -> Result<(), String> {
        if !self.side.quarantined.is_empty() {
            return Ok(());
        }
        let seen = side_state(ws)?;
        if strict && seen != self.side.acked && !self.side.maybe.contains(&seen) {
            return Err(format!(
                "after recovery app {SIDE_APP} is {seen:?}; acknowledged {:?}, possible {:?}",
                self.side.acked, self.side.maybe
            ));
        }
        self.side.acked = seen;
        self.side.maybe.clear();
        Ok(())
    }

    /// After a GC: no retired directory is left, and every file under `apps/` belongs to a
    /// database a registered app lists (or is its record).
    pub(super) fn check_nothing_retired(&self, ws: &Workspace) -> Result<(), String> {
        let retired = ws.with_store(|s| s.retired());
        if !retired.is_empty() {
            return Err(format!("after GC, retired directories remain: {retired:?}"));
        }
        let apps: Vec<sila_sqlite::AppInfo> = ws.apps();
        let apps_dir = Path::new(ROOT).join(layout::APPS_DIR);
        for path in self.fs.files().keys() {
            let Ok(rel) = path.strip_prefix(&apps_dir) else { continue };
            if self.side.quarantined.iter().any(|d| path.starts_with(Path::new(ROOT).join(d))) {
                continue;
            }
            let mut parts = rel.iter().filter_map(|p| p.to_str());
            let Some(dir) = parts.next() else { continue };
            let Some(app) = apps.iter().find(|a| a.app_uuid.hyphenated().to_string() == dir) else {
                return Err(format!("after GC, {} of no registered app remains", path.display()));
            };
            if parts.next() == Some("db") {
                let listed =
                    parts.next().is_some_and(|db| app.manifest.dbs.iter().any(|d| d.name.as_str() == db));
                if !listed {
                    return Err(format!("after GC, {} of a removed database remains", path.display()));
                }
            }
        }
        Ok(())
    }
}

fn manifest_text(i: usize) -> Result<&'static str, String> {
    SIDE_MANIFESTS.get(i).copied().ok_or_else(|| format!("no side manifest {i}"))
}

/// The second app's state as the workspace says it.
fn side_state(ws: &Workspace) -> Result<Option<usize>, String> {
    let Ok(info) = ws.app_info(SIDE_APP) else { return Ok(None) };
    for (i, text) in SIDE_MANIFESTS.iter().enumerate() {
        if Manifest::parse(text).map_err(|e| e.to_string())? == info.manifest {
            return Ok(Some(i));
        }
    }
    Err(format!("app {SIDE_APP} has a manifest the workload never wrote: {:?}", info.manifest))
}
