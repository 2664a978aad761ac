//! An app's lifecycle in the store: registration, a manifest update, unregistration, and
//! the directories they leave behind for GC.
//!
//! The app record (`apps/<app>/app.json`) says which databases exist. Each change commits
//! with one rename:
//!
//! * **Register**: the databases' directories and records first, then `app.json.tmp`
//!   renamed to `app.json`.
//! * **Update**: the added databases' directories and records first, then the new record
//!   renamed over `app.json`. A database the new record does not list is *retired*.
//! * **Unregister**: `app.json` renamed to `app.json.removed` (a tombstone); the whole app
//!   directory is retired.
//!
//! A retired directory is garbage: no request can reach it, and GC removes it whole
//! ([`Step::RemoveTree`]). Recovery finds the same from the disk alone: a database
//! directory the record does not list (removed, or added by an update that never
//! committed) and an app directory holding a tombstone and no record are retired. Retired
//! bytes no longer count against the app's quota; GC's summary counts them when it frees
//! them.

use super::*;

/// A directory GC removes whole: a database the app record no longer lists, or an
/// unregistered app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Retired {
    pub(super) app: Uuid,
    /// The database, or `None` for the whole app directory.
    pub(super) db: Option<DbName>,
    /// Bytes of the files below it, as last known.
    pub(super) bytes: u64,
}

impl Retired {
    pub(super) fn root(&self) -> PathBuf {
        match &self.db {
            Some(db) => layout::db_dir(self.app, db),
            None => layout::app_dir(self.app),
        }
    }
}

/// The steps creating one empty database (pointer generation 1, empty manifest).
fn new_db_steps(app: Uuid, db: &DbName, file: Uuid, now_ms: u64) -> Vec<Step> {
    let pointer = PointerRecord {
        generation: 1,
        file,
        size: 0,
        schema: 0,
        created_ms: now_ms,
        label: "created".into(),
    };
    let manifest = ManifestRecord { generation: 1, snapshots: Vec::new() };
    let data = layout::db_file(app, db, file);
    vec![
        Step::CreateDir(layout::db_dir(app, db)),
        Step::CreateDir(layout::snapshots_dir(app, db)),
        // A zero-byte file is an empty SQLite database.
        Step::WriteFile { path: data.clone(), bytes: Vec::new() },
        Step::SyncFile(data),
        Step::WriteFile { path: layout::current(app, db), bytes: pointer.encode() },
        Step::SyncFile(layout::current(app, db)),
        Step::WriteFile { path: layout::manifest(app, db), bytes: manifest.encode() },
        Step::SyncFile(layout::manifest(app, db)),
        Step::SyncDir(layout::db_dir(app, db)),
    ]
}

/// The state of a database [`new_db_steps`] created.
pub(super) fn new_db_state(spec: Option<&crate::manifest::DbSpec>, file: Uuid, created_ms: u64) -> DbState {
    let mut files = BTreeMap::new();
    files.insert(layout::db_file_name(file), 0);
    files.insert(layout::CURRENT.to_string(), 0);
    files.insert(layout::MANIFEST.to_string(), 0);
    DbState {
        health: Health::Ok,
        pointer: PointerRecord {
            generation: 1,
            file,
            size: 0,
            schema: 0,
            created_ms,
            label: "created".into(),
        },
        manifest: ManifestRecord { generation: 1, snapshots: Vec::new() },
        files,
        busy: None,
        max_size_bytes: spec.map(|s| s.max_size_bytes).unwrap_or(0),
        read_only: spec.is_some_and(|s| s.read_only),
    }
}

impl Store {
    /// Plans the registration of an app: its directory, one empty database per manifest
    /// entry (pointer generation 1, empty manifest), then the app record, whose rename is the
    /// commit point. `app_uuid` and `file_uuids` (one per database) come from the caller.
    pub fn plan_register_app(
        &mut self,
        app_id: AppId,
        manifest: Manifest,
        app_uuid: Uuid,
        file_uuids: &[Uuid],
        now_ms: u64,
    ) -> Result<Plan> {
        if self.by_id.contains_key(&app_id) {
            return Err(Error::new(
                ErrorCode::AlreadyExists,
                format!("app {:?} is already registered", app_id.as_str()),
            ));
        }
        if self.apps.contains_key(&app_uuid) || self.registering(&app_id) {
            return Err(Error::new(
                ErrorCode::Busy,
                format!("app {:?} is being registered", app_id.as_str()),
            ));
        }
        if file_uuids.len() != manifest.dbs.len() {
            return Err(Error::internal("one file UUID per database is required"));
        }
        let record = AppRecord { app_id, app_uuid, created_ms: now_ms, manifest };
        let mut steps =
            vec![Step::CreateDir(layout::app_dir(app_uuid)), Step::CreateDir(layout::dbs_dir(app_uuid))];
        let mut dbs = Vec::new();
        for (spec, file) in record.manifest.dbs.iter().zip(file_uuids) {
            steps.extend(new_db_steps(app_uuid, &spec.name, *file, now_ms));
            dbs.push((spec.name.clone(), *file));
        }
        steps.push(Step::SyncDir(layout::dbs_dir(app_uuid)));
        steps.push(Step::WriteFile { path: layout::app_record_tmp(app_uuid), bytes: record.encode() });
        steps.push(Step::SyncFile(layout::app_record_tmp(app_uuid)));
        steps.push(Step::SyncDir(layout::app_dir(app_uuid)));
        // The app directory's own entry must be durable before the record that commits it.
        steps.push(Step::SyncDir(layout::apps_dir()));
        let commit = steps.len();
        steps.push(Step::Rename { from: layout::app_record_tmp(app_uuid), to: layout::app_record(app_uuid) });
        steps.push(Step::SyncDir(layout::app_dir(app_uuid)));
        let op = self.next_op(OpKind::Register { record, dbs });
        Ok(Plan { op, steps, commit_step: Some(commit) })
    }

    /// Plans making an app's registration durable again: its record, its directory and the
    /// directory that lists it. For acknowledging a registration (or an update) that finds
    /// the app already as asked: what the cache shows may be what a failed sync left (an
    /// earlier attempt that failed after its commit), so the answer must not rest on it.
    pub fn plan_confirm_app(&mut self, app_uuid: Uuid) -> Result<Plan> {
        self.app_state(app_uuid)?;
        let steps = vec![
            Step::SyncFile(layout::app_record(app_uuid)),
            Step::SyncDir(layout::app_dir(app_uuid)),
            Step::SyncDir(layout::apps_dir()),
        ];
        let op = self.next_op(OpKind::Confirm);
        Ok(Plan { op, steps, commit_step: None })
    }

    pub(super) fn registering(&self, app_id: &AppId) -> bool {
        self.ops.values().any(|op| matches!(op, OpKind::Register { record, .. } if &record.app_id == app_id))
    }

    /// Plans replacing a registered app's manifest: databases it adds are created empty
    /// (`file_uuids`, one per added database in manifest order), databases it drops are
    /// retired (their files leave through GC), and the new limits apply to the rest. The
    /// rename of the new app record is the commit point.
    ///
    /// Refused, with nothing changed: `NotFound` for an unknown app; `Busy` while another
    /// operation runs on one of its databases or a removed database of the same name still
    /// awaits GC; `QuotaExceeded` when a database already holds more than its new
    /// `maxSizeMB`, or the databases kept hold more than the new app quota.
    pub fn plan_update_app(
        &mut self,
        app_uuid: Uuid,
        manifest: Manifest,
        file_uuids: &[Uuid],
        now_ms: u64,
    ) -> Result<Plan> {
        let state = self.app_state(app_uuid)?;
        let app_id = state.record.app_id.clone();
        self.check_app_idle(app_uuid)?;
        let added: Vec<DbName> = manifest
            .dbs
            .iter()
            .filter(|d| !state.dbs.contains_key(&d.name))
            .map(|d| d.name.clone())
            .collect();
        let removed: Vec<DbName> =
            state.dbs.keys().filter(|name| manifest.db(name).is_none()).cloned().collect();
        if added.len() != file_uuids.len() {
            return Err(Error::internal("one file UUID per added database is required"));
        }
        if let Some(name) =
            added.iter().find(|name| self.retired.contains_key(&layout::db_dir(app_uuid, name)))
        {
            return Err(Error::new(
                ErrorCode::Busy,
                format!(
                    "app {:?} had a database {:?} whose files still await GC; run GC, then retry",
                    app_id.as_str(),
                    name.as_str()
                ),
            ));
        }
        for spec in &manifest.dbs {
            let Some(db) = state.dbs.get(&spec.name) else { continue };
            let live = live_bytes(db);
            if live > spec.max_size_bytes {
                return Err(Error::quota_exceeded(QuotaDetail {
                    usage: None,
                    limit_name: format!("maxSizeMB of database {:?}", spec.name.as_str()),
                    limit_bytes: spec.max_size_bytes,
                    used_bytes: live,
                    requested_bytes: 0,
                }));
            }
        }
        let mut ledger = self.ledger_where(app_uuid, |name| manifest.db(name).is_some())?;
        ledger.quota_bytes = manifest.storage_quota_bytes();
        if ledger.used_bytes() > ledger.quota_bytes {
            return Err(Error::quota_exceeded(QuotaDetail {
                limit_name: "app storage quota (storage_factor x sum of maxSizeMB)".into(),
                limit_bytes: ledger.quota_bytes,
                used_bytes: ledger.used_bytes(),
                requested_bytes: 0,
                usage: Some(ledger),
            }));
        }
        let record = AppRecord { app_id, app_uuid, created_ms: state.record.created_ms, manifest };
        let mut steps = Vec::new();
        for (name, file) in added.iter().zip(file_uuids) {
            steps.extend(new_db_steps(app_uuid, name, *file, now_ms));
        }
        if !added.is_empty() {
            steps.push(Step::SyncDir(layout::dbs_dir(app_uuid)));
        }
        steps.push(Step::WriteFile { path: layout::app_record_tmp(app_uuid), bytes: record.encode() });
        steps.push(Step::SyncFile(layout::app_record_tmp(app_uuid)));
        let commit = steps.len();
        steps.push(Step::Rename { from: layout::app_record_tmp(app_uuid), to: layout::app_record(app_uuid) });
        steps.push(Step::SyncDir(layout::app_dir(app_uuid)));
        let added = added.into_iter().zip(file_uuids.iter().copied()).collect();
        let op = self.next_op(OpKind::UpdateApp { record, added, removed });
        self.mark_app_busy(app_uuid, op);
        Ok(Plan { op, steps, commit_step: Some(commit) })
    }

    /// Plans unregistering an app: its record is renamed to a tombstone (the commit point),
    /// and the whole app directory is retired for GC. `Busy` while an operation runs on one
    /// of its databases.
    pub fn plan_unregister_app(&mut self, app_uuid: Uuid) -> Result<Plan> {
        self.app_state(app_uuid)?;
        self.check_app_idle(app_uuid)?;
        let steps = vec![
            Step::Rename { from: layout::app_record(app_uuid), to: layout::app_tombstone(app_uuid) },
            Step::SyncDir(layout::app_dir(app_uuid)),
        ];
        let op = self.next_op(OpKind::Unregister { app: app_uuid });
        self.mark_app_busy(app_uuid, op);
        Ok(Plan { op, steps, commit_step: Some(0) })
    }

    fn app_state(&self, app_uuid: Uuid) -> Result<&AppState> {
        self.apps
            .get(&app_uuid)
            .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("app {app_uuid} is not registered")))
    }

    /// `Busy` if an operation runs on one of the app's databases or on the app itself.
    fn check_app_idle(&self, app_uuid: Uuid) -> Result<()> {
        let state = self.app_state(app_uuid)?;
        if let Some((name, op)) = state.dbs.iter().find_map(|(n, d)| d.busy.map(|op| (n, op))) {
            return Err(busy(&DbKey { app: app_uuid, db: name.clone() }, op));
        }
        let app_op = self.ops.values().any(|op| match op {
            OpKind::UpdateApp { record, .. } => record.app_uuid == app_uuid,
            OpKind::Unregister { app } => *app == app_uuid,
            _ => false,
        });
        if app_op {
            return Err(Error::new(
                ErrorCode::Busy,
                format!("app {app_uuid} is being updated or unregistered; retry when that finishes"),
            ));
        }
        Ok(())
    }

    fn mark_app_busy(&mut self, app_uuid: Uuid, op: OpId) {
        if let Some(state) = self.apps.get_mut(&app_uuid) {
            for db in state.dbs.values_mut() {
                db.busy = Some(op);
            }
        }
    }

    pub(super) fn clear_app_busy(&mut self, app_uuid: Uuid) {
        if let Some(state) = self.apps.get_mut(&app_uuid) {
            for db in state.dbs.values_mut() {
                db.busy = None;
            }
        }
    }

    /// Applies a completed update: the new record, the added databases, the new limits;
    /// removed databases are retired.
    pub(super) fn complete_update(
        &mut self,
        record: AppRecord,
        added: Vec<(DbName, Uuid)>,
        removed: Vec<DbName>,
    ) {
        let app_uuid = record.app_uuid;
        self.clear_app_busy(app_uuid);
        let Some(state) = self.apps.get_mut(&app_uuid) else { return };
        for name in removed {
            if let Some(db) = state.dbs.remove(&name) {
                let retired = Retired { app: app_uuid, db: Some(name), bytes: db.files.values().sum() };
                self.retired.insert(retired.root(), retired);
            }
        }
        for spec in &record.manifest.dbs {
            if let Some(db) = state.dbs.get_mut(&spec.name) {
                db.max_size_bytes = spec.max_size_bytes;
                db.read_only = spec.read_only;
            }
        }
        for (name, file) in added {
            let db = new_db_state(record.manifest.db(&name), file, record.created_ms);
            state.dbs.insert(name, db);
        }
        state.record = record;
    }

    /// Applies a completed unregistration: the app is gone and its directory retired.
    pub(super) fn complete_unregister(&mut self, app_uuid: Uuid) {
        let Some(state) = self.apps.remove(&app_uuid) else { return };
        self.by_id.remove(&state.record.app_id);
        let mut bytes: u64 = state.dbs.values().flat_map(|d| d.files.values()).sum();
        self.retired.retain(|_, r| {
            let inside = r.app == app_uuid;
            if inside {
                bytes = bytes.saturating_add(r.bytes);
            }
            !inside
        });
        let retired = Retired { app: app_uuid, db: None, bytes };
        self.retired.insert(retired.root(), retired);
    }

    /// The cleanup of an update that failed before its commit: what it created of the added
    /// databases, and its temporary record.
    pub(super) fn abort_update(&mut self, app_uuid: Uuid, added: &[(DbName, Uuid)]) -> Vec<Step> {
        self.clear_app_busy(app_uuid);
        let mut steps: Vec<Step> =
            added.iter().map(|(name, _)| Step::RemoveTree(layout::db_dir(app_uuid, name))).collect();
        steps.push(Step::RemoveFile(layout::app_record_tmp(app_uuid)));
        steps.push(Step::SyncDir(layout::dbs_dir(app_uuid)));
        steps
    }

    /// What a failed update or unregistration leaves: with the outcome unknown, every
    /// database of the app is poisoned until recovery reads the record again.
    pub(super) fn fail_app_op(&mut self, app_uuid: Uuid, why: &str) {
        self.clear_app_busy(app_uuid);
        let keys: Vec<DbKey> = self.db_keys().into_iter().filter(|k| k.app == app_uuid).collect();
        for key in keys {
            self.poison(&key, why);
        }
    }

    /// GC steps for retired directories no lease holds; marks them as being removed.
    pub(super) fn plan_gc_retired(&mut self, summary: &mut GcSummary, steps: &mut Vec<Step>) -> Vec<PathBuf> {
        let mut roots = Vec::new();
        let mut parents = BTreeSet::new();
        for (root, retired) in &self.retired {
            let leased = self
                .leases
                .values()
                .any(|(key, _)| key.app == retired.app && retired.db.as_ref().is_none_or(|db| *db == key.db));
            if leased {
                summary.kept_leased.push(root.clone());
                continue;
            }
            if self.retired_pending.contains(root) {
                continue;
            }
            steps.push(Step::RemoveTree(root.clone()));
            if let Some(parent) = root.parent() {
                parents.insert(parent.to_path_buf());
            }
            summary.files.push(root.clone());
            summary.bytes += retired.bytes;
            roots.push(root.clone());
        }
        steps.extend(parents.into_iter().map(Step::SyncDir));
        self.retired_pending.extend(roots.iter().cloned());
        roots
    }

    /// Directories retired and not yet removed (workspace-relative), with their bytes.
    pub fn retired(&self) -> Vec<(PathBuf, u64)> {
        self.retired.iter().map(|(root, r)| (root.clone(), r.bytes)).collect()
    }
}

/// Bytes of a database's live file and its side files.
fn live_bytes(db: &DbState) -> u64 {
    db.files
        .iter()
        .filter(|(name, _)| match layout::classify(name) {
            FileKind::Database(id) | FileKind::Side(id) => id == db.pointer.file,
            _ => false,
        })
        .map(|(_, size)| size)
        .sum()
}

/// Recovery of an app directory without a record: a tombstone makes it retired.
pub(super) fn retired_app(app: &AppScan) -> Option<Retired> {
    if !app.files.iter().any(|f| f.rel == layout::APP_TOMBSTONE) {
        return None;
    }
    let app_uuid = Uuid::parse_str(&app.dir_name).ok()?;
    Some(Retired { app: app_uuid, db: None, bytes: app.files.iter().map(|f| f.size).sum() })
}

/// Recovery of the database directories a valid record does not list: each is retired.
pub(super) fn retired_dbs(app: &AppScan, record: &AppRecord) -> Vec<Retired> {
    let mut out = Vec::new();
    for dir in &app.dirs {
        let Some(name) = dir.strip_prefix("db/") else { continue };
        if name.contains('/') {
            continue;
        }
        let Ok(db) = DbName::new(name) else { continue };
        if record.manifest.db(&db).is_some() {
            continue;
        }
        let prefix = format!("{dir}/");
        let bytes = app.files.iter().filter(|f| f.rel.starts_with(&prefix)).map(|f| f.size).sum();
        out.push(Retired { app: record.app_uuid, db: Some(db), bytes });
    }
    out
}
