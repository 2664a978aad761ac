//! The workspace: the exclusive owner of a directory of apps and their databases.
//!
//! [`Workspace::open`] takes the workspace lock (a second opener, in this process or another,
//! gets [`ErrorCode::WorkspaceLocked`] naming the holder's pid), then runs recovery: it reads
//! every app record, pointer and manifest, verifies their checksums, removes temp files and
//! registrations that never committed, and lists orphans for GC. Recovery is idempotent.
//!
//! Apps are registered from a capability manifest; registration is durable when
//! [`Workspace::register_app`] returns. Every change runs as a store [`Plan`] on the
//! driver; the store's mutex orders them.

use crate::api::{App, DbStats};
use crate::audit::{AuditLimits, AuditLog, AuditQuery, AuditRead, Entry as AuditEntry};
use crate::broker::executor::{Executor, ThreadPool};
use crate::broker::{BrokerIo, BrokerOptions, BrokerShared, DbConfig, DbShared};
use crate::driver::Driver;
use crate::fault::{Fault, FaultLatch, FencedVfs};
use crate::manifest::Manifest;
use crate::names::{AppId, DbName};
use crate::sqlite::vfs::{SqliteVfs, TempLimits, VfsHooks};
use crate::sqlite::{ConnectionOptions, Synchronous};
use crate::store::ids::UuidSource;
use crate::store::record::AppRecord;
use crate::store::{layout, DbKey, GcSummary, Ledger, Plan, RecoveryReport, Store};
use crate::vfs::{LockGuard, RealFs, Vfs, VfsErrorKind};
use crate::{Error, ErrorCode, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::json;

mod lifecycle;

/// Directory under the workspace root for private scratch files (dry-run copies); emptied on
/// open.
pub const TMP_DIR: &str = "tmp";

/// SQLite's page size here (the default); `max_page_count` = `maxSizeMB` / this.
pub const PAGE_SIZE_BYTES: u64 = 4096;

/// How often the housekeeping thread looks for idle databases.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// A thread that closes databases idle for `idle_timeout`, until dropped.
struct Housekeeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Housekeeper {
    fn start(broker: &Arc<BrokerShared>) -> Result<Housekeeper> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let weak: Weak<BrokerShared> = Arc::downgrade(broker);
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sila-housekeeper".into())
            .spawn(move || loop {
                let stopped = {
                    let guard = lock(&s.0);
                    let (guard, _) =
                        s.1.wait_timeout_while(guard, HOUSEKEEPING_INTERVAL, |stop| !*stop)
                            .unwrap_or_else(|p| p.into_inner());
                    *guard
                };
                if stopped {
                    return;
                }
                match weak.upgrade() {
                    Some(b) => {
                        b.close_idle(b.options().idle_timeout);
                    }
                    None => return,
                }
            })
            .map_err(|e| Error::io("starting the housekeeping thread", &e))?;
        Ok(Housekeeper { stop, thread: Some(thread) })
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.housekeeper.take();
        // Attachments hold their databases; two databases attached to each other would keep
        // each other alive past the workspace.
        for db in self.broker.active_all() {
            db.clear_attachments();
        }
        // Close every connection (checkpointing WALs) before the workspace lock is released.
        self.broker.close_idle(Duration::ZERO);
        self.broker.executor().shutdown();
    }
}

pub use crate::clock::{Clock, SystemClock};

/// Options for opening a workspace.
#[derive(Clone)]
pub struct WorkspaceOptions {
    /// Seed for UUID generation; `None` seeds from the operating system (production).
    pub uuid_seed: Option<u64>,
    /// The clock: wall time for records, and the monotonic time every deadline, timeout,
    /// budget and idle period is measured on (see [`crate::clock`]); defaults to
    /// [`SystemClock`].
    pub clock: Arc<dyn Clock>,
    /// Broker limits and pool sizes.
    pub broker: BrokerOptions,
    /// Who runs work units. `None`: a [`ThreadPool`] of `broker.worker_threads` threads and a
    /// housekeeping thread that closes idle databases. A [`crate::broker::executor::Stepper`]
    /// here makes scheduling deterministic (simulation).
    pub executor: Option<Arc<dyn Executor>>,
    /// Create the workspace when the directory holds none (default true). False refuses a
    /// directory without a workspace with `NOT_FOUND`: a mistyped path is then an error,
    /// not a new, empty workspace.
    pub create_if_missing: bool,
    /// How large the audit trail may grow ([`crate::audit`]).
    pub audit: AuditLimits,
}

impl Default for WorkspaceOptions {
    fn default() -> Self {
        WorkspaceOptions {
            uuid_seed: None,
            clock: Arc::new(SystemClock),
            broker: BrokerOptions::default(),
            executor: None,
            create_if_missing: true,
            audit: AuditLimits::default(),
        }
    }
}

impl std::fmt::Debug for WorkspaceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceOptions").field("uuid_seed", &self.uuid_seed).finish_non_exhaustive()
    }
}

/// What the host sees of a registered app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    /// The host's id for the app.
    pub app_id: AppId,
    /// The UUID naming its directory.
    pub app_uuid: Uuid,
    /// Its validated manifest.
    pub manifest: Manifest,
}

use uuid::Uuid;

impl From<&AppRecord> for AppInfo {
    fn from(r: &AppRecord) -> Self {
        AppInfo { app_id: r.app_id.clone(), app_uuid: r.app_uuid, manifest: r.manifest.clone() }
    }
}

struct Inner {
    broker: Arc<BrokerShared>,
    /// The SQLite VFS every connection of the workspace opens through (over `driver`'s
    /// fenced `Vfs`); the broker holds it too.
    sqlite_vfs: Arc<SqliteVfs>,
    /// The workspace's first IO fault, if any ([`crate::fault`]).
    latch: Arc<FaultLatch>,
    housekeeper: Option<Housekeeper>,
    driver: Driver,
    store: Mutex<Store>,
    uuids: Mutex<UuidSource>,
    clock: Arc<dyn Clock>,
    report: RecoveryReport,
    /// Temporaries of exports and backups being written now (absolute paths): GC leaves them.
    partials: Arc<Mutex<BTreeSet<PathBuf>>>,
    /// Set by [`Workspace::abandon_partials`] (under the `partials` lock): no export or
    /// backup starts a temporary any more.
    abandoned: std::sync::atomic::AtomicBool,
    /// Where the next [`Workspace::maintain`] continues.
    maintenance: Mutex<crate::maintenance::Cursor>,
    /// The audit trail ([`crate::audit`]).
    audit: AuditLog,
    _lock: Box<dyn LockGuard>,
}

/// An open workspace. Cheap to clone; all clones share one lock and one store.
#[derive(Clone)]
pub struct Workspace {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace").field("root", &self.inner.driver.root()).finish_non_exhaustive()
    }
}

/// An app's registration as the audit trail records it.
fn manifest_detail(info: &AppInfo) -> serde_json::Value {
    json!({
        "app_uuid": info.app_uuid.to_string(),
        "tier": format!("{:?}", info.manifest.tier).to_lowercase(),
        "quota_bytes": info.manifest.storage_quota_bytes(),
        "databases": info.manifest.dbs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
    })
}

/// The refusal of a directory that holds no workspace (no lock file), when opening may not
/// create one.
fn no_workspace(dir: &Path) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!(
            "no workspace at {} (it has no {} file); check the path, or create the workspace on purpose",
            dir.display(),
            layout::LOCK_FILE
        ),
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the store lock cannot leave it half-updated in a way that matters
    // more than refusing all work would: every mutation is applied in one call.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    /// Records an event of a database in the audit trail (see [`crate::broker::DbEvent`]):
    /// a write refused for quota as a failure, a poisoning and a starved checkpoint as
    /// alarms; each at most once a minute per database. Nothing is written once the
    /// workspace has a fault (it writes nothing more until a reopen).
    fn audit_db_event(&self, app: &str, db: &str, event: crate::broker::DbEvent<'_>) {
        use crate::broker::DbEvent;
        if self.latch.is_set() {
            return;
        }
        let at_ms = self.clock.now_ms();
        let entry =
            |op, error| AuditEntry { op, app, db, error, duration_ms: 0, detail: serde_json::Value::Null };
        match event {
            DbEvent::Poisoned(why) => {
                let detail = serde_json::json!({ "why": why });
                self.audit.append_alarm(AuditEntry { detail, ..entry("poisoned", None) }, at_ms);
            }
            DbEvent::QuotaRefused(error) => self.audit.append_failure(entry("write", Some(error)), at_ms),
            DbEvent::CheckpointStarved { wal_bytes, oldest_read } => {
                let detail = serde_json::json!({
                    "wal_bytes": wal_bytes,
                    "oldest_read_ms": u64::try_from(oldest_read.as_millis()).unwrap_or(u64::MAX),
                });
                self.audit.append_alarm(AuditEntry { detail, ..entry("checkpoint_starved", None) }, at_ms);
            }
        }
    }

    /// Brings the ledger up to date with a version that is not live any more, after a flip
    /// replaced it or its last reader closed: SQLite removes the side files (WAL, SHM,
    /// journal) when the last connection on a file closes, which the store does not see, and
    /// a flip's checkpoint grows the file itself (`with_main`). Nothing happens to the live
    /// version's files ([`Inner::refresh_live_sizes`] sizes those).
    fn refresh_file_sizes(&self, key: &DbKey, file: Uuid, with_main: bool) {
        let live = lock(&self.store).pointer(key).map(|p| p.file);
        if live.map_or(true, |live| live == file) {
            return;
        }
        let sizes = self.stat_version(key, file, with_main);
        let mut store = lock(&self.store);
        apply_sizes(&mut store, key, sizes);
    }

    /// Brings the ledger up to date with the live version of every database of an app.
    /// SQLite grows the live file in checkpoints and its WAL in commits, and removes the side
    /// files when its last connection closes; the store hears of none of it. Called before
    /// the ledger is read or charged, so usage is current without a reopen. The sizes are
    /// applied only while the pointer still names the version they were taken from (a flip
    /// in between accounts for its own files).
    fn refresh_live_sizes(&self, app: Uuid) {
        let lives: Vec<(DbKey, Uuid)> = {
            let store = lock(&self.store);
            store
                .db_keys()
                .into_iter()
                .filter(|k| k.app == app)
                .filter_map(|k| store.pointer(&k).map(|p| p.file).ok().map(|f| (k, f)))
                .collect()
        };
        for (key, file) in lives {
            let sizes = self.stat_version(&key, file, true);
            let mut store = lock(&self.store);
            if store.pointer(&key).map(|p| p.file).ok() == Some(file) {
                apply_sizes(&mut store, &key, sizes);
            }
        }
    }

    /// The sizes on disk of a version's files (its main file when `with_main`, and its side
    /// files): `Some(size)`, `None` for a file that is not there. A failed stat leaves the
    /// file out, and its ledger entry as it was (GC forgets what vanished).
    fn stat_version(&self, key: &DbKey, file: Uuid, with_main: bool) -> Vec<(String, Option<u64>)> {
        let name = layout::db_file_name(file);
        let dir = self.driver.abs(&layout::db_dir(key.app, &key.db));
        let main = with_main.then_some("");
        main.into_iter()
            .chain(layout::SIDE_SUFFIXES)
            .filter_map(|suffix| {
                let rel = format!("{name}{suffix}");
                self.driver.vfs().file_len(&dir.join(&rel)).ok().map(|size| (rel, size))
            })
            .collect()
    }
}

/// Records sizes from [`Inner::stat_version`]: a file there at its size, one gone forgotten.
fn apply_sizes(store: &mut Store, key: &DbKey, sizes: Vec<(String, Option<u64>)>) {
    for (rel, size) in sizes {
        let _ = match size {
            Some(size) => store.set_file_size(key, &rel, size),
            None => store.forget_file(key, &rel),
        };
    }
}

impl Workspace {
    /// [`Inner::refresh_file_sizes`] for the version a flip just replaced.
    pub(crate) fn refresh_replaced_file_sizes(&self, key: &DbKey, replaced: Uuid) {
        self.inner.refresh_file_sizes(key, replaced, true);
    }

    /// [`Inner::refresh_live_sizes`]: the ledger sees the live files of an app as they are.
    pub(crate) fn refresh_live_sizes(&self, app: Uuid) {
        self.inner.refresh_live_sizes(app);
    }

    /// Opens the workspace at `dir` on the real filesystem, creating it if needed (unless
    /// [`WorkspaceOptions::create_if_missing`] is false).
    pub fn open(dir: impl AsRef<Path>, options: WorkspaceOptions) -> Result<Workspace> {
        let dir = dir.as_ref();
        if !options.create_if_missing && !dir.join(layout::LOCK_FILE).exists() {
            return Err(no_workspace(dir));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create workspace {}", dir.display()), &e))?;
        let root = dir.canonicalize().map_err(|e| Error::io(format!("resolve {}", dir.display()), &e))?;
        Workspace::open_with(Arc::new(RealFs::new()), root, options)
    }

    /// Opens the workspace at `root` (which must exist) on any [`Vfs`]; a directory with no
    /// workspace in it gets one unless [`WorkspaceOptions::create_if_missing`] is false.
    pub fn open_with(vfs: Arc<dyn Vfs>, root: PathBuf, options: WorkspaceOptions) -> Result<Workspace> {
        if !options.create_if_missing && !matches!(vfs.file_len(&root.join(layout::LOCK_FILE)), Ok(Some(_))) {
            return Err(no_workspace(&root));
        }
        // Every IO of the workspace, the engine's and SQLite's, goes through the fence: the
        // first fault stops all writes (crate::fault).
        let latch = Arc::new(FaultLatch::new());
        let vfs: Arc<dyn Vfs> = Arc::new(FencedVfs::new(vfs, root.clone(), latch.clone()));
        let lock_path = root.join(layout::LOCK_FILE);
        let guard = vfs.lock_exclusive(&lock_path).map_err(|e| {
            if e.kind == VfsErrorKind::Locked {
                Error::new(
                    ErrorCode::WorkspaceLocked,
                    format!("workspace {} is locked: {}", root.display(), e.detail),
                )
            } else {
                Error::from(e)
            }
        })?;
        // Pages a failed sync of this workspace left in the cache (earlier in this process)
        // are dropped before recovery reads anything (see crate::fault).
        for path in crate::fault::take_untrusted_cache(&root) {
            let _ = vfs.drop_cache(&path);
        }
        let driver = Driver::new(vfs.clone(), root.clone());
        let apps = driver.abs(&layout::apps_dir());
        if !vfs.exists(&apps)? {
            vfs.create_dir(&apps)?;
            vfs.sync_dir(&root)?;
        }
        let tmp = root.join(TMP_DIR);
        clear_tmp(vfs.as_ref(), &tmp)?;
        if !vfs.exists(&tmp)? {
            vfs.create_dir(&tmp)?;
        }
        let report = recover(&driver)?;
        let (store, report) = report;
        let audit = AuditLog::open(vfs.clone(), &root, options.audit)?;
        let mut uuids = match options.uuid_seed {
            Some(seed) => UuidSource::from_seed(seed),
            None => UuidSource::from_entropy(),
        };
        let (executor, own_pool): (Arc<dyn Executor>, bool) = match options.executor {
            Some(e) => (e, false),
            None => {
                let pool = ThreadPool::new(options.broker.worker_threads, options.broker.queue_max)
                    .map_err(|e| Error::io("starting worker threads", &e))?;
                (Arc::new(pool), true)
            }
        };
        let seed = options.uuid_seed.map_or_else(|| uuids.next_u64(), |s| s ^ 0x5f5f_7366_7361_6c69);
        let hooks = VfsHooks {
            tmp_dir: tmp.clone(),
            clock: options.clock.clone(),
            seed,
            temp: TempLimits::default(),
        };
        let sqlite_vfs = Arc::new(crate::sqlite::vfs::register(vfs.clone(), hooks)?);
        // App connections may open scratch copies there (a migration's dry run).
        sqlite_vfs.allow_dir(&tmp)?;
        let io = BrokerIo { vfs: vfs.clone(), sqlite_vfs: sqlite_vfs.clone(), latch: latch.clone() };
        let broker = BrokerShared::new(options.broker, executor, io, options.clock.clone());
        let housekeeper = if own_pool { Some(Housekeeper::start(&broker)?) } else { None };
        Ok(Workspace {
            inner: Arc::new(Inner {
                broker,
                sqlite_vfs,
                latch,
                housekeeper,
                driver,
                store: Mutex::new(store),
                uuids: Mutex::new(uuids),
                clock: options.clock,
                report,
                partials: Arc::default(),
                abandoned: std::sync::atomic::AtomicBool::new(false),
                maintenance: Mutex::default(),
                audit,
                _lock: guard,
            }),
        })
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        self.inner.driver.root()
    }

    /// The first IO fault of this workspace since it was opened, if any: from then on it
    /// acknowledges no write (see [`crate::fault`]); reopen it to recover.
    pub fn fault(&self) -> Option<Fault> {
        self.inner.latch.fault().cloned()
    }

    /// The SQLite VFS the workspace's connections open through.
    pub fn sqlite_vfs(&self) -> &SqliteVfs {
        &self.inner.sqlite_vfs
    }

    /// What recovery found when this workspace was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// Registers an app from its capability manifest (JSON text). Durable on return.
    /// Registering the same app id again with the same manifest returns the existing app;
    /// with a different manifest it is `AlreadyExists`.
    pub fn register_app(&self, app_id: &str, manifest_json: &str) -> Result<AppInfo> {
        // Registering again with the same manifest changes nothing and is not recorded.
        self.app_operation(
            "register_app",
            app_id,
            || self.register_app_inner(app_id, manifest_json),
            |(info, changed)| changed.then(|| manifest_detail(info)),
        )
        .map(|(info, _)| info)
    }

    /// Runs an operation on an app as a whole in its `operation` span ([`crate::trace`]) and
    /// as an audited operation ([`Self::audited`]).
    fn app_operation<T>(
        &self,
        op: &'static str,
        app_id: &str,
        run: impl FnOnce() -> Result<T>,
        detail: impl FnOnce(&T) -> Option<serde_json::Value>,
    ) -> Result<T> {
        let span = crate::trace::operation(app_id, "", op);
        crate::trace::traced(
            span,
            self.inner.clock.as_ref(),
            || self.audited(op, app_id, "", run, detail),
            |_| None,
        )
    }

    /// The app, and whether this call registered it (false: it was, with this manifest).
    fn register_app_inner(&self, app_id: &str, manifest_json: &str) -> Result<(AppInfo, bool)> {
        let app_id = AppId::new(app_id)?;
        let manifest = Manifest::parse(manifest_json)?;
        let mut store = lock(&self.inner.store);
        if let Some(uuid) = store.app_uuid(&app_id) {
            let existing = store.app(uuid).ok_or_else(|| Error::internal("app index out of step"))?;
            if existing.manifest == manifest {
                let info = AppInfo::from(existing);
                let plan = store.plan_confirm_app(uuid)?;
                self.execute(&mut store, &plan)?;
                return Ok((info, false));
            }
            return Err(Error::new(
                ErrorCode::AlreadyExists,
                format!("app {:?} is already registered with a different manifest", app_id.as_str()),
            ));
        }
        let now = self.inner.clock.now_ms();
        let (app_uuid, files) = {
            let mut uuids = lock(&self.inner.uuids);
            let app_uuid = uuids.next(now);
            let files: Vec<Uuid> = manifest.dbs.iter().map(|_| uuids.next(now)).collect();
            (app_uuid, files)
        };
        let plan = store.plan_register_app(app_id.clone(), manifest, app_uuid, &files, now)?;
        self.execute(&mut store, &plan)?;
        let record = store.app(app_uuid).ok_or_else(|| Error::internal("registered app missing"))?;
        Ok((AppInfo::from(record), true))
    }

    /// Every registered app, ordered by app id.
    pub fn apps(&self) -> Vec<AppInfo> {
        lock(&self.inner.store).apps().into_iter().map(AppInfo::from).collect()
    }

    /// An app handle, to open its databases.
    pub fn open_app(&self, app_id: &str) -> Result<App> {
        let info = self.app_info(app_id)?;
        let shared = self.inner.broker.app(info.app_uuid);
        Ok(App::new(self.clone(), info, shared))
    }

    /// The broker (for the layers above and for tests).
    pub fn broker(&self) -> &Arc<BrokerShared> {
        &self.inner.broker
    }

    /// The broker state of one database of an app, created on first use.
    pub(crate) fn database_shared(&self, info: &AppInfo, db: &DbName) -> Result<Arc<DbShared>> {
        let key = DbKey { app: info.app_uuid, db: db.clone() };
        if let Some(shared) = self.inner.broker.active(&key) {
            return Ok(shared);
        }
        // The record as it is now, not as the caller's `App` handle saw it: an update may
        // have changed it since.
        let (rel, manifest, spec) = {
            let store = lock(&self.inner.store);
            let manifest = store.app(info.app_uuid).map(|r| r.manifest.clone()).ok_or_else(|| {
                Error::new(ErrorCode::NotFound, format!("app {:?} is not registered", info.app_id.as_str()))
            })?;
            let spec = manifest.db(db).ok_or_else(|| {
                Error::new(
                    ErrorCode::CapabilityDenied,
                    format!(
                        "app {:?} has no database {:?} in its manifest",
                        info.app_id.as_str(),
                        db.as_str()
                    ),
                )
            })?;
            let spec = spec.clone();
            (store.current_file_path(&key)?, manifest, spec)
        };
        let limits = manifest.tier.limits();
        let connection = ConnectionOptions {
            synchronous: if limits.synchronous_full { Synchronous::Full } else { Synchronous::Normal },
            cache_size_kib: limits.cache_size_kib_max,
            max_page_count: Some(u32::try_from(spec.max_size_bytes / PAGE_SIZE_BYTES).unwrap_or(u32::MAX)),
            busy_timeout_ms: self.inner.broker.options().busy_timeout_ms,
            read_only: false,
            query_only: false,
            statement_cache_capacity: ConnectionOptions::default().statement_cache_capacity,
            incremental_vacuum: spec.incremental_vacuum,
            vfs: Some(self.inner.sqlite_vfs.app_name().to_string()),
        };
        let key_for_hook = key.clone();
        let config = DbConfig {
            key,
            app_id: info.app_id.as_str().to_string(),
            path: self.inner.driver.abs(&rel),
            read_only: spec.read_only,
            connection,
            policy: manifest.policy,
            wal_checkpoint_bytes: limits.wal_checkpoint_kib.saturating_mul(1024),
        };
        let weak = Arc::downgrade(&self.inner);
        let release: crate::broker::LeaseRelease = Arc::new(move |lease| {
            if let Some(inner) = weak.upgrade() {
                let released = lock(&inner.store).release_lease(lease);
                // The last reader of a retired version just closed: SQLite removed its side
                // files then, which the ledger must not go on counting.
                if let Some((key, file)) = released {
                    inner.refresh_file_sizes(&key, file, false);
                }
            }
        });
        let weak = Arc::downgrade(&self.inner);
        let event_key = key_for_hook.clone();
        let app_id = config.app_id.clone();
        let on_event: crate::broker::DbEventHook = Arc::new(move |event| {
            if let Some(inner) = weak.upgrade() {
                if let crate::broker::DbEvent::Poisoned(why) = event {
                    lock(&inner.store).poison(&event_key, why);
                }
                inner.audit_db_event(&app_id, event_key.db.as_str(), event);
            }
        });
        self.inner.broker.database(config, release, on_event)
    }

    /// Statistics of every active database, optionally of one app (and one database).
    pub fn stats(&self, app_id: Option<&str>, db: Option<&str>) -> Result<Vec<DbStats>> {
        let filter = match app_id {
            Some(a) => Some(self.app_info(a)?.app_uuid),
            None => None,
        };
        let db = db.map(DbName::new).transpose()?;
        let mut out: Vec<DbStats> = self
            .inner
            .broker
            .active_all()
            .iter()
            .filter(|d| filter.is_none_or(|a| d.config().key.app == a))
            .filter(|d| db.as_ref().is_none_or(|n| &d.config().key.db == n))
            .map(|d| crate::api::db_stats(d))
            .collect();
        out.sort_by(|a, b| (&a.app_id, &a.db).cmp(&(&b.app_id, &b.db)));
        Ok(out)
    }

    /// Every active database's metrics and every app's quota ledger in the Prometheus text
    /// exposition format (`core/src/prometheus.rs` lists the series). Counters count since
    /// the workspace was opened in this process; sizes and ledgers are read now.
    pub fn metrics_text(&self) -> Result<String> {
        let dbs = self.stats(None, None)?;
        let apps: Vec<(AppId, Uuid)> =
            lock(&self.inner.store).apps().iter().map(|a| (a.app_id.clone(), a.app_uuid)).collect();
        let mut ledgers = Vec::with_capacity(apps.len());
        for (id, uuid) in apps {
            self.inner.refresh_live_sizes(uuid);
            // An app unregistered since the list was taken is left out.
            if let Ok(ledger) = lock(&self.inner.store).ledger(uuid) {
                ledgers.push((id.as_str().to_string(), ledger));
            }
        }
        crate::prometheus::encode(dbs, ledgers)
    }

    /// One app's registration.
    pub fn app_info(&self, app_id: &str) -> Result<AppInfo> {
        let app_id = AppId::new(app_id)?;
        let store = lock(&self.inner.store);
        let uuid = store.app_uuid(&app_id).ok_or_else(|| not_registered(&app_id))?;
        store.app(uuid).map(AppInfo::from).ok_or_else(|| not_registered(&app_id))
    }

    /// Records of the audit trail ([`crate::audit`]): registrations, manifest changes,
    /// migrations, snapshots, restores, imports, exports, backups, compactions, GC runs,
    /// integrity findings and failed operations, oldest first.
    pub fn audit(&self, query: &AuditQuery) -> Result<AuditRead> {
        self.inner.audit.read(query)
    }

    /// Runs `run` as an audited operation of `app`/`db` (empty for none). When it succeeds
    /// and `detail` describes it, its record is appended and synced before the result is
    /// returned: an acknowledged operation always has its record. If that fails, the
    /// failure is returned instead. A failed operation's record is written too
    /// (rate-limited, see [`crate::audit`]).
    pub(crate) fn audited<T>(
        &self,
        op: &'static str,
        app: &str,
        db: &str,
        run: impl FnOnce() -> Result<T>,
        detail: impl FnOnce(&T) -> Option<serde_json::Value>,
    ) -> Result<T> {
        let clock = self.inner.clock.as_ref();
        let started = clock.monotonic();
        let result = run();
        let duration_ms =
            u64::try_from(clock.monotonic().saturating_sub(started).as_millis()).unwrap_or(u64::MAX);
        let at_ms = clock.now_ms();
        match &result {
            Ok(value) => {
                if let Some(detail) = detail(value) {
                    let entry = AuditEntry { op, app, db, error: None, duration_ms, detail };
                    self.inner.audit.append(entry, at_ms)?;
                }
            }
            Err(e) if !self.inner.latch.is_set() => {
                let entry =
                    AuditEntry { op, app, db, error: Some(e), duration_ms, detail: serde_json::Value::Null };
                self.inner.audit.append_failure(entry, at_ms);
            }
            Err(_) => {}
        }
        result
    }

    /// The quota ledger of an app.
    pub fn ledger(&self, app_id: &str) -> Result<Ledger> {
        let app_id = AppId::new(app_id)?;
        let store = lock(&self.inner.store);
        let uuid = store.app_uuid(&app_id).ok_or_else(|| not_registered(&app_id))?;
        drop(store);
        self.inner.refresh_live_sizes(uuid);
        lock(&self.inner.store).ledger(uuid)
    }

    /// The key of a database of an app, checking both exist and the manifest lists it.
    pub fn db_key(&self, app_id: &str, db: &str) -> Result<DbKey> {
        let app_id = AppId::new(app_id)?;
        let db = DbName::new(db)?;
        let store = lock(&self.inner.store);
        let uuid = store.app_uuid(&app_id).ok_or_else(|| not_registered(&app_id))?;
        let record = store.app(uuid).ok_or_else(|| not_registered(&app_id))?;
        if record.manifest.db(&db).is_none() {
            return Err(Error::new(
                ErrorCode::CapabilityDenied,
                format!("app {:?} has no database {:?} in its manifest", app_id.as_str(), db.as_str()),
            ));
        }
        Ok(DbKey { app: uuid, db })
    }

    /// Removes every file nothing references (no pointer, manifest entry, lease or operation
    /// in flight) and the temporaries (`*.partial`) that interrupted exports and backups left
    /// in the apps' `exports/` and the backup directories, and reports what was freed.
    /// Temporaries of exports and backups still running are left alone.
    pub fn gc(&self) -> Result<GcSummary> {
        let span = crate::trace::operation("", "", "gc");
        crate::trace::traced(span, self.inner.clock.as_ref(), || self.gc_inner(), |s| Some(s.bytes))
    }

    fn gc_inner(&self) -> Result<GcSummary> {
        self.audited(
            "gc",
            "",
            "",
            || self.gc_unaudited(),
            |s| (!s.files.is_empty()).then(|| json!({"files": s.files.len(), "bytes": s.bytes})),
        )
    }

    fn gc_unaudited(&self) -> Result<GcSummary> {
        let (mut summary, areas) = {
            let mut store = lock(&self.inner.store);
            let (plan, summary) = store.plan_gc();
            self.execute(&mut store, &plan)?;
            (summary, export_and_backup_dirs(&store))
        };
        for dir in areas {
            self.remove_partials(&dir, &mut summary)?;
        }
        Ok(summary)
    }

    /// Reserves a fresh temporary name beside `dest` (`<name>.<uuid>.partial`) for an export
    /// or backup that writes `dest`. GC leaves the file alone while the returned guard lives;
    /// dropping the guard removes the file if it is still there (renamed, it is not). Reserve
    /// before creating the file. `Cancelled` once [`Workspace::abandon_partials`] ran.
    pub(crate) fn hold_partial(&self, dest: &Path) -> Result<PartialFile> {
        let name = layout::partial_name(dest.file_name().unwrap_or_default(), self.new_uuid());
        let path = dest.with_file_name(name);
        let mut held = lock(&self.inner.partials);
        if self.inner.abandoned.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::new(
                ErrorCode::Cancelled,
                "the host is stopping: no export or backup starts any more",
            ));
        }
        held.insert(path.clone());
        drop(held);
        Ok(PartialFile { path, held: self.inner.partials.clone(), vfs: self.inner.driver.vfs().clone() })
    }

    /// For a host that is stopping in the middle of an export or backup (the CLI calls it on
    /// Ctrl-C, then exits): removes the temporary file of every export and backup running
    /// now (`<name>.<uuid>.partial`, beside its destination, which may be outside the
    /// workspace), and makes every later one fail with `Cancelled` before it writes. Returns
    /// how many files it removed. An operation already running is not waited for: its next
    /// step fails on the missing file, or, if it had reserved its name but not yet created
    /// the file, it creates it after this returned; a second call a moment later removes
    /// that one. A destination already renamed into place is a complete export and stays.
    /// What running operations leave inside the workspace, recovery and GC remove.
    pub fn abandon_partials(&self) -> usize {
        self.inner.abandon_partials()
    }

    /// A handle that calls [`Workspace::abandon_partials`] without keeping the workspace
    /// open: for a signal handler that lives as long as the process, while the workspace
    /// must still close (and checkpoint) when its last handle drops.
    pub fn abandoner(&self) -> Abandoner {
        Abandoner(Arc::downgrade(&self.inner))
    }

    /// Removes the temporaries in `dir` (workspace-relative) that no export or backup holds,
    /// then syncs `dir`; adds them to `summary`. A temporary nobody holds is a leftover: its
    /// writer crashed or could not remove it, and no writer ever reuses its name.
    fn remove_partials(&self, dir: &Path, summary: &mut GcSummary) -> Result<()> {
        let abs = self.inner.driver.abs(dir);
        for (name, bytes) in self.remove_unheld_partials(&abs, None)? {
            summary.files.push(dir.join(name));
            summary.bytes += bytes;
        }
        Ok(())
    }

    /// Removes the leftover temporaries of an export to `dest` (the absolute path it will
    /// have): `<final name>.<uuid>.partial` files beside it, and their `-journal`, that no
    /// export of this workspace holds. An export to a host path calls it first, since GC
    /// sweeps only the workspace's own areas.
    pub(crate) fn remove_leftover_partials_of(&self, dest: &Path) -> Result<()> {
        let (Some(dir), Some(name)) = (dest.parent(), dest.file_name().and_then(|n| n.to_str())) else {
            return Ok(());
        };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        self.remove_unheld_partials(dir, Some(name)).map(|_| ())
    }

    /// Removes the temporaries in the absolute directory `abs` (only those of the final name
    /// `of`, when given) that no export or backup holds, and syncs `abs` if it removed any.
    /// Returns the names removed with their sizes.
    fn remove_unheld_partials(&self, abs: &Path, of: Option<&str>) -> Result<Vec<(String, u64)>> {
        let fs = self.inner.driver.vfs().as_ref();
        if !fs.exists(abs)? {
            return Ok(Vec::new());
        }
        let mut removed = Vec::new();
        for entry in fs.list_dir(abs)? {
            let Some(temporary) = layout::partial_of(&entry.name).filter(|_| !entry.is_dir) else { continue };
            if of.is_some_and(|name| !layout::is_partial_of(temporary, name)) {
                continue;
            }
            // A writer reserves its name before it creates the file and releases it only once
            // the file is renamed or removed, so a listed file that is not held is not written.
            if lock(&self.inner.partials).contains(&abs.join(temporary)) {
                continue;
            }
            let path = abs.join(&entry.name);
            let bytes = fs.file_len(&path)?.unwrap_or(0);
            match fs.remove_file(&path) {
                Err(e) if e.kind == VfsErrorKind::NotFound => continue,
                other => other?,
            }
            removed.push((entry.name, bytes));
        }
        if !removed.is_empty() {
            fs.sync_dir(abs)?;
        }
        Ok(removed)
    }

    /// Runs a plan under the store lock: on success completes its operation; on failure
    /// aborts it (and runs the cleanup best-effort) or poisons what it touched.
    fn execute(&self, store: &mut Store, plan: &Plan) -> Result<()> {
        if let Err(e) = self.inner.latch.check() {
            // A plan writes: none runs after a fault. Its reservation goes; what its operation
            // wrote before stays for the reopen's recovery (the fence refuses the cleanup).
            let cleanup = store.abort(plan.op);
            let _ = self.inner.driver.run(&cleanup);
            return Err(e);
        }
        match self.inner.driver.run(plan) {
            Ok(()) => {
                store.complete(plan.op)?;
                self.inner.latch.check_acknowledge()
            }
            Err(failure) => {
                let poisoned_before: Vec<DbKey> = poisoned_keys(store);
                let cleanup = store.fail(plan.op, failure.must_poison(), &failure.step);
                // The broker refuses work on what the store just poisoned (fail-stop).
                for key in poisoned_keys(store).into_iter().filter(|k| !poisoned_before.contains(k)) {
                    if let Some(db) = self.inner.broker.active(&key) {
                        db.poison_from_store(&failure.to_error().to_string());
                    }
                }
                // Cleanup is best effort: recovery removes whatever it leaves.
                let _ = self.inner.driver.run(&cleanup);
                Err(failure.to_error())
            }
        }
    }

    /// Runs a plan to completion (see `execute`), taking the store lock.
    pub(crate) fn run_plan(&self, plan: &Plan) -> Result<()> {
        let mut store = lock(&self.inner.store);
        self.execute(&mut store, plan)
    }

    /// Abandons an operation that failed before its plan ran and removes what it wrote.
    pub(crate) fn abort_op(&self, op: crate::store::OpId) {
        let cleanup = lock(&self.inner.store).abort(op);
        let _ = self.inner.driver.run(&cleanup);
    }

    /// Runs `f` with the store locked (for the layers above and for tests).
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut lock(&self.inner.store))
    }

    /// The driver (for the layers above).
    pub fn driver(&self) -> &Driver {
        &self.inner.driver
    }

    /// The workspace's clock.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Runs `f` on the maintenance cursor.
    pub(crate) fn with_maintenance_cursor<T>(
        &self,
        f: impl FnOnce(&mut crate::maintenance::Cursor) -> T,
    ) -> T {
        f(&mut lock(&self.inner.maintenance))
    }

    /// Milliseconds now, from the workspace's clock.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// A fresh UUID v7 from the workspace's source.
    pub fn new_uuid(&self) -> Uuid {
        let now = self.now_ms();
        lock(&self.inner.uuids).next(now)
    }
}

/// See [`Workspace::abandoner`].
#[derive(Clone)]
pub struct Abandoner(Weak<Inner>);

impl Abandoner {
    /// [`Workspace::abandon_partials`] if the workspace is still open; 0 otherwise.
    pub fn abandon_partials(&self) -> usize {
        self.0.upgrade().map_or(0, |inner| inner.abandon_partials())
    }
}

impl Inner {
    fn abandon_partials(&self) -> usize {
        let held = lock(&self.partials);
        self.abandoned.store(true, std::sync::atomic::Ordering::Release);
        let vfs = self.driver.vfs();
        held.iter().filter(|p| vfs.remove_file(p).is_ok()).count()
    }
}

/// A temporary name reserved by [`Workspace::hold_partial`]. Dropping it removes the file
/// still under that name, then releases the name.
pub(crate) struct PartialFile {
    path: PathBuf,
    held: Arc<Mutex<BTreeSet<PathBuf>>>,
    vfs: Arc<dyn Vfs>,
}

impl PartialFile {
    /// The temporary's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        // Best effort: GC removes what this could not, once the name is released. In this
        // order, GC never sees a file that is still written and not held.
        let _ = self.vfs.remove_file(&self.path);
        lock(&self.held).remove(&self.path);
    }
}

/// The directories exports and backups write into (workspace-relative): every registered
/// app's export area and the backup directory of each of its databases.
fn export_and_backup_dirs(store: &Store) -> Vec<PathBuf> {
    let exports = store.apps().into_iter().map(|app| layout::exports_dir(app.app_uuid));
    exports.chain(store.db_keys().iter().map(|k| layout::backups_dir(k.app, &k.db))).collect()
}

/// The databases the store holds poisoned.
fn poisoned_keys(store: &Store) -> Vec<DbKey> {
    store
        .db_keys()
        .into_iter()
        .filter(|k| matches!(store.health(k), Ok(crate::store::Health::Poisoned(_))))
        .collect()
}

fn not_registered(app_id: &AppId) -> Error {
    Error::new(ErrorCode::NotFound, format!("app {:?} is not registered", app_id.as_str()))
}

/// Removes scratch files a previous process left in `tmp/` (bounded by one listing).
fn clear_tmp(vfs: &dyn Vfs, tmp: &Path) -> Result<()> {
    if !vfs.exists(tmp)? {
        return Ok(());
    }
    for entry in vfs.list_dir(tmp)? {
        if !entry.is_dir {
            vfs.remove_file(&tmp.join(&entry.name))?;
        }
    }
    Ok(())
}

/// Scans the disk, rebuilds the store and runs the recovery plan.
pub fn recover(driver: &Driver) -> Result<(Store, RecoveryReport)> {
    let scan = driver.scan()?;
    let (mut store, report, plan) = Store::recover(&scan);
    driver.run(&plan).map_err(|f| f.to_error().context("recovery"))?;
    store.complete(plan.op)?;
    Ok((store, report))
}
