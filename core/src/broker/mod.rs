//! The broker: the only code that talks to SQLite on an app's behalf.
//!
//! Per database it keeps one writer connection and a pool of reader connections (WAL), both
//! opened lazily. A global cap bounds open connections across every database; when it is
//! reached, idle connections of the least recently used databases are closed. Work runs on
//! a shared [`Executor`] whose thread count does not grow with the number of databases.
//!
//! # Writes: a queue with a leader (group commit)
//!
//! Every write (a single `exec`, or a whole transaction) is a [`WriteJob`] in the database's
//! queue. Whoever finds the writer idle becomes the *leader*: a blocking caller leads on its
//! own thread (no thread hop), a non-blocking one hands leadership to a worker. The leader
//! takes up to `group_commit_max_requests` queued `exec`s, runs them in one transaction with
//! a savepoint each (a failing request rolls back only itself), commits, and only then
//! answers them — so every acknowledgement is as durable as the `synchronous` level makes
//! the commit. While the leader commits, new requests queue up: they form the next batch.
//! A transaction job runs alone. After a batch, leadership passes to a worker if more work
//! is queued, so a blocking caller never leads other callers' work for long.
//!
//! # Reads
//!
//! A blocking query checks out a reader connection on the caller's thread, runs, and
//! returns it; a non-blocking query does the same on a worker.
//!
//! # Where things are
//!
//! This file holds the broker and a database's shared state, opening and closing
//! connections, poisoning and the fault checks. Beside it: [`options`] (every limit),
//! [`admission`] (an app's concurrency slots and budgets; [`slots`] the slots themselves,
//! which loom checks), [`pool`] (the reader pool and the
//! read path), [`queue`] (the write queue and its leader, which loom checks), [`writer`]
//! (leading it: group commit, transactions, the quiesce gate),
//! [`attachments`] (databases attached to a handle), [`executor`] (thread pool and the
//! deterministic stepper), [`pending`] (non-blocking requests) and [`budget`].

mod admission;
mod attachments;
pub mod budget;
pub mod executor;
mod gate;
mod options;
pub mod pending;
mod pool;
mod queue;
mod readers;
mod retire;
mod slots;
mod writer;

pub use admission::{Admission, AppShared, BorrowedAdmission};
use attachments::AttachedHere;
pub use gate::{Gate, GateState};
pub use options::BrokerOptions;
pub use queue::{JobClass, QueueFull, QueuedWrite, WriteQueue};
pub use readers::{Checkout, Pooled, ReaderPool, Returned};
pub use retire::Retirement;
pub use slots::Slots;
pub(crate) use writer::run_script_in_savepoint;
pub use writer::{transaction_refusal, ExecRequest, WriteJob};

use crate::clock::Clock;
use crate::fault::FaultLatch;
use crate::manifest::PolicyRelaxations;
use crate::metrics::{DbMetrics, OpKind, ReadAges, SlowQueryLog};
use crate::sqlite::{self, CancelToken, ConnectionOptions, ExecResult, QueryLimits, Rows, StopCheck, Value};
use crate::store::{DbKey, LeaseId};
use crate::{Error, ErrorCode, Result};
use executor::Executor;
use pending::Completer;
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the broker needs to know to open a database.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// Which database.
    pub key: DbKey,
    /// The host's app id (for logs and metrics).
    pub app_id: String,
    /// The absolute path of the live file.
    pub path: PathBuf,
    /// Whether the app may only read.
    pub read_only: bool,
    /// Connection settings (synchronous, cache cap, max_page_count…).
    pub connection: ConnectionOptions,
    /// The parts of the SQL policy the app's manifest relaxes.
    pub policy: PolicyRelaxations,
    /// The tier's WAL size that triggers a checkpoint after a commit (capped by
    /// `BrokerOptions::wal_checkpoint_bytes`).
    pub wal_checkpoint_bytes: u64,
}

/// A connection and the generation of the file it was opened on. Kept boxed: it moves in
/// and out of the pool on every request, and moving a pointer instead of a `Connection`
/// measured ~300 fewer instructions per lookup.
struct Tagged {
    generation: u64,
    conn: Connection,
    /// What is attached on this connection (see [`DbShared::sync_attachments`]).
    attached: AttachedHere,
    /// The thread ([`thread_tag`]) that last used this connection as a reader.
    last_thread: u64,
    /// When its read began, while it runs one ([`ReadAges`]).
    reading: Arc<AtomicU64>,
}

impl Pooled for Box<Tagged> {
    fn generation(&self) -> u64 {
        self.generation
    }

    fn last_thread(&self) -> u64 {
        self.last_thread
    }

    fn set_last_thread(&mut self, thread: u64) {
        self.last_thread = thread;
    }
}

/// A small number naming the calling thread, for reader affinity: a thread gets back the
/// reader it used last when that one is idle, so a connection's SQLite state (page cache,
/// prepared statements) stays in one core's cache instead of bouncing between threads.
fn thread_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TAG: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TAG.with(|t| *t)
}

/// A database of the same app attached to a database handle ([`crate::attach`]).
#[derive(Clone)]
pub(crate) struct Attachment {
    /// The schema name it is attached as (lower case).
    pub schema: String,
    /// The attached database.
    pub target: Arc<DbShared>,
}

/// The live file of a database as the broker sees it: bumped by every flip.
#[derive(Debug, Clone)]
struct FileVersion {
    generation: u64,
    path: PathBuf,
}

/// Read-path settings copied from the broker at creation.
struct Hot {
    clock: Arc<dyn Clock>,
    readers_max: usize,
    query_limits: QueryLimits,
    budget: budget::BudgetLimits,
    slow_log: Arc<SlowQueryLog>,
    /// `BrokerOptions::capture_full_sql`: spans carry SQL as written and its parameters.
    capture_full_sql: bool,
    /// `BrokerOptions::wal_starvation_alarm_bytes`.
    wal_starvation_alarm_bytes: u64,
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Whole milliseconds of a monotonic reading (saturating).
fn millis(at: Duration) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
}

/// Releases a store lease (the workspace hands the broker this hook).
pub type LeaseRelease = Arc<dyn Fn(LeaseId) + Send + Sync>;

/// Tells the workspace what happened to a database (the workspace hands the broker this
/// hook): the store marks a poisoned database, and the audit trail records every event.
/// Called on the thread the event happened on, never with the store's lock held.
pub type DbEventHook = Arc<dyn Fn(DbEvent<'_>) + Send + Sync>;

/// An event of one database the workspace hears about through its [`DbEventHook`].
#[derive(Debug, Clone, Copy)]
pub enum DbEvent<'a> {
    /// The database was poisoned, for this reason: it refuses every request until the
    /// workspace is reopened.
    Poisoned(&'a str),
    /// A write request was refused with `QuotaExceeded` (the error says which limit).
    QuotaRefused(&'a Error),
    /// A checkpoint left frames in a WAL larger than
    /// [`BrokerOptions::wal_starvation_alarm_bytes`]: reads keep every checkpoint from
    /// completing, and the WAL grows.
    CheckpointStarved {
        /// The WAL's size when the checkpoint began.
        wal_bytes: u64,
        /// How long the oldest read running then had run.
        oldest_read: Duration,
    },
}

/// The broker's state for one database.
pub struct DbShared {
    config: DbConfig,
    /// What the read path needs from the broker, copied here so a read never touches the
    /// broker's shared reference count (two readers would otherwise ping-pong on it).
    hot: Hot,
    version: Mutex<FileVersion>,
    /// `version.generation`, readable without the lock on the hot read path.
    generation: AtomicU64,
    /// Pages in the WAL after the last commit (from SQLite's WAL hook on the writer).
    wal_frames: Arc<AtomicU64>,
    /// Commits on this database's writer connections since it became active (from the same
    /// WAL hook): an operation that reads the live file across a gap compares it to learn
    /// whether anything was written in between.
    commits: Arc<AtomicU64>,
    /// The app's shared state (budgets), held here so the hot path takes no map lock.
    app: Arc<AppShared>,
    release_lease: LeaseRelease,
    broker: Weak<BrokerShared>,
    writer: WriteQueue<WriteJob, Box<Tagged>>,
    readers: ReaderPool<Box<Tagged>, LeaseId>,
    /// Set while the writer connection is checked out by internal work (checkpoint at close).
    closing: AtomicBool,
    /// Set by the first IO failure of a write (a failed fsync above all): the database
    /// refuses all work until the workspace is reopened (fail-stop; no retry-then-succeed).
    poisoned: Mutex<Option<String>>,
    /// `poisoned.is_some()`, readable without the lock on the hot path.
    is_poisoned: AtomicBool,
    on_event: DbEventHook,
    last_used_ms: AtomicU64,
    /// Copies of the main file in progress that pin it with a read transaction (see
    /// `Database::snapshot`): while any runs, a size-triggered checkpoint stays PASSIVE, since
    /// TRUNCATE would wait for the pinning reader with the writer held.
    pins: AtomicUsize,
    /// The workspace's fault latch (held here: the read path checks it without touching the
    /// broker's reference count).
    latch: Arc<FaultLatch>,
    /// Databases of the same app attached to this handle, and a version bumped on every
    /// change: a connection catches up before it serves a request.
    attachments: Mutex<Vec<Attachment>>,
    attach_version: AtomicU64,
    /// Metrics of this database.
    pub metrics: DbMetrics,
    /// When the reads running now began (the oldest read's age: checkpoint starvation).
    pub(crate) read_ages: ReadAges,
}

/// Where the broker's IO goes: the workspace's (fenced) [`crate::vfs::Vfs`], its SQLite VFS
/// over it, and its fault latch.
pub struct BrokerIo {
    /// The workspace's filesystem, under the fault policy.
    pub vfs: Arc<dyn crate::vfs::Vfs>,
    /// The SQLite VFS registered over it.
    pub sqlite_vfs: Arc<sqlite::vfs::SqliteVfs>,
    /// The workspace's fault latch.
    pub latch: Arc<FaultLatch>,
}

/// The broker: shared by every database of one workspace.
pub struct BrokerShared {
    options: BrokerOptions,
    executor: Arc<dyn Executor>,
    vfs: Arc<dyn crate::vfs::Vfs>,
    /// The workspace's SQLite VFS: every connection opens through it (unregistered when the
    /// last holder of the broker drops it, after every connection closed).
    sqlite_vfs: Arc<sqlite::vfs::SqliteVfs>,
    /// The workspace's fault latch ([`crate::fault`]): set, no write is acknowledged.
    latch: Arc<FaultLatch>,
    dbs: Mutex<HashMap<DbKey, Arc<DbShared>>>,
    /// Databases a change of their app holds out of service ([`retire`]).
    retiring: Mutex<std::collections::HashSet<DbKey>>,
    apps: Mutex<HashMap<uuid::Uuid, Arc<AppShared>>>,
    connections_open: AtomicUsize,
    /// The time every deadline, timeout, budget refill and idle period is measured on.
    clock: Arc<dyn Clock>,
    /// The slow-query log of the workspace.
    pub slow_log: Arc<SlowQueryLog>,
}

impl BrokerShared {
    /// A broker running work on `executor`, measuring time on `clock`'s monotonic time.
    pub fn new(
        options: BrokerOptions,
        executor: Arc<dyn Executor>,
        io: BrokerIo,
        clock: Arc<dyn Clock>,
    ) -> Arc<BrokerShared> {
        let slow_log = Arc::new(SlowQueryLog::new(options.slow_query_threshold, options.capture_full_sql));
        io.sqlite_vfs.set_temp_limits(sqlite::vfs::TempLimits {
            file_bytes_max: options.temp_file_bytes_max,
            total_bytes_max: options.temp_bytes_total_max,
        });
        Arc::new(BrokerShared {
            options,
            executor,
            vfs: io.vfs,
            sqlite_vfs: io.sqlite_vfs,
            latch: io.latch,
            dbs: Mutex::new(HashMap::new()),
            retiring: Mutex::new(std::collections::HashSet::new()),
            apps: Mutex::new(HashMap::new()),
            connections_open: AtomicUsize::new(0),
            clock,
            slow_log,
        })
    }

    /// The options.
    pub fn options(&self) -> &BrokerOptions {
        &self.options
    }

    /// The executor.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }

    /// Open connections across all databases.
    pub fn connections_open(&self) -> usize {
        self.connections_open.load(Ordering::Acquire)
    }

    /// Databases with broker state (opened at least once and not evicted).
    pub fn databases_active(&self) -> usize {
        lock(&self.dbs).len()
    }

    /// Monotonic time now on the broker's clock. The blocking read path reads it once per
    /// request and hands the reading to admission, the deadline, and the metrics.
    pub fn now(&self) -> Duration {
        self.clock.monotonic()
    }

    /// A statement's limits: `statement_timeout` on the broker's clock, and `cancel`.
    pub fn stop_for(&self, cancel: &CancelToken) -> StopCheck {
        self.stop_for_at(cancel, self.now())
    }

    /// [`BrokerShared::stop_for`] counted from `now`, a reading of [`BrokerShared::now`].
    pub fn stop_for_at(&self, cancel: &CancelToken, now: Duration) -> StopCheck {
        StopCheck::with_timeout_from(&self.clock, now, self.options.statement_timeout, cancel.clone())
    }

    /// Limits of `timeout` on the broker's clock, with a token nobody else holds.
    pub fn stop_after(&self, timeout: Duration) -> StopCheck {
        StopCheck::with_timeout_on(&self.clock, timeout, CancelToken::new())
    }

    /// The shared state of a database, created on first use (no connection is opened yet).
    pub fn database(
        self: &Arc<Self>,
        config: DbConfig,
        release_lease: LeaseRelease,
        on_event: DbEventHook,
    ) -> Result<Arc<DbShared>> {
        let mut dbs = lock(&self.dbs);
        if let Some(db) = dbs.get(&config.key) {
            return Ok(db.clone());
        }
        self.check_not_retiring(&config.key)?;
        let db = Arc::new(DbShared {
            latch: self.latch.clone(),
            hot: Hot {
                clock: self.clock.clone(),
                readers_max: self.options.readers_max,
                query_limits: self.options.query_limits,
                budget: self.budget_limits(),
                slow_log: self.slow_log.clone(),
                capture_full_sql: self.options.capture_full_sql,
                wal_starvation_alarm_bytes: self.options.wal_starvation_alarm_bytes,
            },
            version: Mutex::new(FileVersion { generation: 0, path: config.path.clone() }),
            generation: AtomicU64::new(0),
            wal_frames: Arc::new(AtomicU64::new(0)),
            commits: Arc::new(AtomicU64::new(0)),
            app: self.app(config.key.app),
            release_lease,
            config: config.clone(),
            broker: Arc::downgrade(self),
            writer: WriteQueue::default(),
            readers: ReaderPool::default(),
            closing: AtomicBool::new(false),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
            on_event,
            last_used_ms: AtomicU64::new(millis(self.now())),
            pins: AtomicUsize::new(0),
            attachments: Mutex::new(Vec::new()),
            attach_version: AtomicU64::new(0),
            metrics: DbMetrics::new(),
            read_ages: ReadAges::default(),
        });
        dbs.insert(config.key, db.clone());
        Ok(db)
    }

    /// The database's shared state if it is active.
    pub fn active(&self, key: &DbKey) -> Option<Arc<DbShared>> {
        lock(&self.dbs).get(key).cloned()
    }

    /// Every active database.
    pub fn active_all(&self) -> Vec<Arc<DbShared>> {
        lock(&self.dbs).values().cloned().collect()
    }

    /// Makes room for one more connection, closing idle connections of the least recently
    /// used databases if the cap is reached. `Busy` if nothing could be closed.
    fn reserve_connection(&self) -> Result<()> {
        let max = self.options.connections_max;
        loop {
            let open = self.connections_open.load(Ordering::Acquire);
            if open < max {
                if self
                    .connections_open
                    .compare_exchange(open, open + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            let mut dbs = self.active_all();
            dbs.sort_by_key(|d| d.last_used_ms.load(Ordering::Acquire));
            let closed = dbs.iter().any(|d| d.close_one_idle());
            if !closed {
                return Err(Error::new(
                    ErrorCode::Busy,
                    format!("{open} connections are open and busy; connections_max is {max}"),
                ));
            }
        }
    }

    fn release_connection(&self) {
        self.connections_open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Closes every connection of databases unused for `idle_for` and forgets them.
    /// Returns how many databases were closed.
    pub fn close_idle(&self, idle_for: Duration) -> usize {
        let now = millis(self.now());
        let idle_ms = u64::try_from(idle_for.as_millis()).unwrap_or(u64::MAX);
        let mut closed = 0;
        for db in self.active_all() {
            if now.saturating_sub(db.last_used_ms.load(Ordering::Acquire)) < idle_ms || !db.close_all_idle() {
                continue;
            }
            let key = db.config.key.clone();
            drop(db);
            // Forget the state only when nothing else holds it (no `Database` handle, no job):
            // under the map lock nobody can take a new reference, so a later open cannot end
            // up with a second writer queue for the same file.
            let mut dbs = lock(&self.dbs);
            if dbs.get(&key).is_some_and(|d| Arc::strong_count(d) == 1) {
                dbs.remove(&key);
                closed += 1;
            }
        }
        closed
    }
}

impl DbShared {
    /// The configuration.
    pub fn config(&self) -> &DbConfig {
        &self.config
    }

    fn broker(&self) -> Result<Arc<BrokerShared>> {
        self.broker.upgrade().ok_or_else(|| Error::new(ErrorCode::Cancelled, "the workspace is closing"))
    }

    fn touch(&self) {
        self.touch_at(self.hot.clock.monotonic());
    }

    /// [`Self::touch`] with a reading of the broker clock the caller already took.
    fn touch_at(&self, at: Duration) {
        // Stored only when the millisecond changed: two threads reading the same database
        // would otherwise bounce this cache line on every request.
        let now = millis(at);
        if self.last_used_ms.load(Ordering::Relaxed) != now {
            self.last_used_ms.store(now, Ordering::Release);
        }
    }

    /// Refuses writes once the workspace has a fault ([`crate::fault`]) or the database is
    /// poisoned. Reads check only [`Self::check_poison`]: after a fault they stop only where
    /// the failed file was this database's.
    pub fn check_writable(&self) -> Result<()> {
        self.latch.check()?;
        self.check_poison()
    }

    /// Refuses work once the database is poisoned, or once the workspace has a fault in one
    /// of this database's files (its pages may no longer be what it acknowledged; see
    /// [`crate::fault`]). Faults elsewhere leave its reads alone.
    pub fn check_poison(&self) -> Result<()> {
        if let Some(fault) = self.latch.fault() {
            if self.config.path.parent().is_some_and(|d| fault.touches(d)) {
                return self.latch.check();
            }
        }
        if !self.is_poisoned.load(Ordering::Acquire) {
            return Ok(());
        }
        match lock(&self.poisoned).as_ref() {
            None => Ok(()),
            Some(why) => Err(Error::new(
                ErrorCode::Poisoned,
                format!(
                    "database {:?} is poisoned by an earlier failure ({why}); reopen the workspace to recover it",
                    self.config.key.db.as_str()
                ),
            )),
        }
    }

    /// Poisons the database (an operation took effect but could not be acknowledged, or
    /// found it damaged): every later request is refused until the workspace is reopened,
    /// and the store is told (its health shows it, and it refuses the database's plans).
    /// Must not be called with the store's lock held (the hook takes it).
    pub(crate) fn poison(&self, why: &str) {
        if self.mark_poisoned(why) {
            (self.on_event)(DbEvent::Poisoned(why));
        }
    }

    /// Poisons the database in the broker only: for the store's own failure path, which
    /// marked the database itself and holds its lock.
    pub(crate) fn poison_from_store(&self, why: &str) {
        self.mark_poisoned(why);
    }

    /// Marks the database poisoned; `true` when it was not already.
    fn mark_poisoned(&self, why: &str) -> bool {
        let mut p = lock(&self.poisoned);
        if p.is_some() {
            return false;
        }
        *p = Some(why.to_string());
        self.is_poisoned.store(true, Ordering::Release);
        true
    }

    /// Poisons the database if `err` is an IO failure in the workspace (a failure of a file
    /// the caller handed in, such as an import source, says nothing about this database).
    /// An error behind which the workspace has a fault does not poison the database: the
    /// fault already refuses every write, and decides by the failed file's directory whose
    /// reads stop (see [`crate::fault`]).
    pub(crate) fn poison_on_io(&self, err: &Error) {
        if err.code() != ErrorCode::Io || err.is_outside_workspace() {
            return;
        }
        if self.latch.is_set() {
            return;
        }
        self.poison(err.message());
    }

    /// The live file's path.
    pub fn path(&self) -> PathBuf {
        lock(&self.version).path.clone()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The connection options on the workspace's confined SQLite VFS ([`sqlite::vfs`]), after
    /// allowing the file's directory.
    fn confined_options(&self, broker: &BrokerShared, path: &std::path::Path) -> Result<ConnectionOptions> {
        let mut opts = self.config.connection.clone();
        let dir = path.parent().ok_or_else(|| Error::internal("database path has no directory"))?;
        broker.sqlite_vfs.allow_dir(dir)?;
        opts.vfs = Some(broker.sqlite_vfs.app_name().to_string());
        Ok(opts)
    }

    fn open_connection(&self, reader: bool) -> Result<Box<Tagged>> {
        let version = lock(&self.version).clone();
        self.open_connection_on(reader, version)
    }

    /// Opens a connection on a given version of the file (a reader counted in `out` before
    /// it opens, so a flip in between keeps the old file's lease).
    fn open_connection_on(&self, reader: bool, version: FileVersion) -> Result<Box<Tagged>> {
        let broker = self.broker()?;
        broker.reserve_connection()?;
        let FileVersion { generation, path } = version;
        // A reader refuses writes from its first statement, and never switches the journal
        // mode: it may be opening a version a flip retires meanwhile (see `query_only`).
        let opened = self.confined_options(&broker, &path).and_then(|mut opts| {
            opts.query_only = reader;
            sqlite::open_connection(&path, &opts)
        });
        let opened = opened.and_then(|mut conn| {
            // Checkpoints are the broker's (counted, on thresholds), not SQLite's automatic ones.
            conn.execute_batch("PRAGMA wal_autocheckpoint=0").map_err(|e| sqlite::map_error(e, None))?;
            install_transaction_guard(&mut conn, self.config.policy)?;
            if !reader {
                // SQLite reports the WAL's length after every commit: checkpoints are decided
                // on it, not on the -wal file's size (a checkpoint rewinds the WAL but does
                // not shrink the file).
                let frames = self.wal_frames.clone();
                let commits = self.commits.clone();
                conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: std::os::raw::c_int| {
                    frames.store(u64::try_from(pages).unwrap_or(0), Ordering::Release);
                    commits.fetch_add(1, Ordering::AcqRel);
                    Ok(())
                }))
                .map_err(|e| sqlite::map_error(e, None))?;
            }
            Ok(conn)
        });
        match opened {
            Ok(conn) => {
                self.metrics.connection_opened();
                Ok(Box::new(Tagged {
                    generation,
                    conn,
                    attached: AttachedHere::default(),
                    last_thread: 0,
                    reading: self.read_ages.cell(),
                }))
            }
            Err(e) => {
                broker.release_connection();
                Err(e)
            }
        }
    }

    fn close_connection(&self, conn: Connection, writer: bool) {
        let (hits, misses) = cache_stats(&conn);
        self.metrics.record_cache(hits, misses);
        if writer && !self.latch.is_set() {
            // A failed optimize leaves statistics as they were; an IO failure in it is a fault
            // the latch below recorded, and it refuses every later write.
            let _ = sqlite::optimize_on_close(&conn);
        }
        drop(conn);
        self.metrics.connection_closed();
        if let Some(b) = self.broker.upgrade() {
            b.release_connection();
        }
    }

    /// Closes one idle connection (a reader, else an idle writer). True if one was closed.
    fn close_one_idle(&self) -> bool {
        if let Some(t) = self.readers.take_idle() {
            self.close_connection(t.conn, false);
            return true;
        }
        match self.writer.take_idle_conn() {
            Some(t) => {
                self.checkpoint_and_close(t.conn);
                true
            }
            None => false,
        }
    }

    /// Closes every idle connection; true if nothing is open or busy afterwards.
    fn close_all_idle(&self) -> bool {
        let mut bound = self.broker.upgrade().map(|b| b.options.readers_max + 1).unwrap_or(1);
        let mut closed_any = false;
        while bound > 0 && self.close_one_idle() {
            bound -= 1;
            closed_any = true;
        }
        let all_closed = self.readers.open() == 0 && self.writer.is_idle_and_closed();
        if all_closed && closed_any {
            self.sync_dir_after_close();
        }
        all_closed
    }

    /// Makes the removal of the WAL durable once the last connection closed. SQLite deletes
    /// the WAL then without syncing its directory (as its unix VFS does), so a crash could
    /// bring the file back, and with it commit frames past the last one SQLite acknowledged:
    /// a commit whose WAL write failed after its commit frame (while padding to a sector)
    /// leaves that frame behind, and the close's checkpoint syncs it. A transaction reported
    /// failed, and seen absent after the reopen, would reappear after a later crash.
    /// A failed directory sync poisons the database (fail-stop).
    fn sync_dir_after_close(&self) {
        let Some(broker) = self.broker.upgrade() else { return };
        let path = self.path();
        let Some(dir) = path.parent() else { return };
        if let Err(e) = broker.vfs.sync_dir(dir) {
            self.poison_on_io(&Error::from(e).context("syncing the directory after closing the database"));
        }
    }

    /// Folds the WAL into the main file and closes the writer. After a workspace fault it
    /// writes nothing: the WAL stays as it is (SQLite's own checkpoint at close is switched
    /// off), and the reopen's recovery replays or discards it.
    fn checkpoint_and_close(&self, conn: Connection) {
        self.closing.store(true, Ordering::Release);
        if self.latch.is_set() {
            // If SQLite refuses, its close-time checkpoint still fails at its first write
            // (the fenced VFS refuses every write after a fault): nothing reaches the disk.
            let _ = conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
        } else {
            let _ = self.checkpoint_on(&conn, &["TRUNCATE"]);
        }
        self.close_connection(conn, true);
        self.closing.store(false, Ordering::Release);
    }

    /// How long the oldest read running now has run (zero when none runs).
    pub fn oldest_read(&self) -> Duration {
        self.read_ages.oldest(self.hot.clock.monotonic())
    }

    /// Runs `PRAGMA wal_checkpoint(mode)` on the writer `conn` for each of `modes` in turn
    /// (stopping at a failure) and accounts for them as one checkpoint: none is ever
    /// dropped. One that left frames in the WAL is counted as incomplete. A failed one is
    /// counted; an IO failure poisons the database (a failed sync or write also set the
    /// workspace's fault latch below, which refuses every later write). Any other failure
    /// (the WAL was busy) leaves the committed data where it is, in the WAL. Returns SQLite's
    /// rows: (busy, frames in the WAL, frames checkpointed), one per mode.
    pub(crate) fn checkpoint_on(&self, conn: &Connection, modes: &[&str]) -> Result<Vec<Vec<i64>>> {
        let frames_before = self.wal_frames.load(Ordering::Acquire);
        let started = self.hot.clock.monotonic();
        // Through `internal`: the SQL policy refuses wal_checkpoint to app SQL.
        let result: Result<Vec<Vec<i64>>> = modes
            .iter()
            .map(|mode| internal_int_row(conn, &format!("PRAGMA wal_checkpoint({mode})")))
            .collect();
        let took = self.hot.clock.monotonic().saturating_sub(started);
        match &result {
            Ok(rows) => {
                let pages = rows.iter().map(|row| checkpoint_pages(row, frames_before)).max().unwrap_or(0);
                self.metrics.record_checkpoint(pages, took);
                if !rows.last().is_some_and(|row| checkpoint_complete(row)) {
                    self.metrics.record_checkpoint_incomplete();
                    let wal_bytes = frames_before.saturating_mul(crate::workspace::PAGE_SIZE_BYTES);
                    if wal_bytes > self.hot.wal_starvation_alarm_bytes {
                        let oldest_read = self.oldest_read();
                        (self.on_event)(DbEvent::CheckpointStarved { wal_bytes, oldest_read });
                    }
                }
            }
            Err(e) => {
                self.metrics.record_checkpoint_failed();
                self.poison_on_io(e);
            }
        }
        result
    }

    /// Bytes of the database file and its WAL.
    pub fn sizes(&self) -> (u64, u64) {
        let path = self.path();
        let Some(broker) = self.broker.upgrade() else { return (0, 0) };
        let db = broker.vfs.file_len(&path).ok().flatten().unwrap_or(0);
        let wal = broker.vfs.file_len(&wal_path(&path)).ok().flatten().unwrap_or(0);
        (db, wal)
    }

    /// Connections open for this database (readers + writer).
    pub fn connections(&self) -> usize {
        let readers = self.readers.open();
        readers + usize::from(self.writer.writer_busy_or_open() || self.closing.load(Ordering::Acquire))
    }
}

fn wal_path(db: &std::path::Path) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push("-wal");
    PathBuf::from(s)
}

// Whether the broker itself is preparing a statement (BEGIN, SAVEPOINT…) on this thread; the
// transaction guard lets those through and refuses transaction control from apps.
thread_local! {
    static INTERNAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keeps a pin of [`DbShared::pin`] counted while alive.
pub(crate) struct PinGuard<'a>(&'a AtomicUsize);

impl Drop for PinGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs a statement of the broker itself that returns one row of integers (a checkpoint's
/// `busy, log, checkpointed`) past the SQL policy, and returns that row.
pub(crate) fn internal_int_row(conn: &Connection, sql: &str) -> Result<Vec<i64>> {
    INTERNAL.with(|f| f.set(true));
    let r = conn.query_row(sql, [], |row| {
        (0..row.as_ref().column_count()).map(|i| row.get::<_, i64>(i)).collect::<rusqlite::Result<Vec<_>>>()
    });
    INTERNAL.with(|f| f.set(false));
    r.map_err(|e| sqlite::map_error(e, None))
}

/// Whether a `PRAGMA wal_checkpoint` row `(busy, frames in the WAL, frames checkpointed)`
/// says every frame was folded into the database file. Not when a reader held some back
/// (fewer checkpointed), the checkpoint was busy, or the database is not in WAL mode (-1s).
pub(crate) fn checkpoint_complete(row: &[i64]) -> bool {
    matches!(row, [0, log, done] if *log >= 0 && log == done)
}

/// The pages a checkpoint copied, from its row and the WAL's frames before it: a TRUNCATE
/// that completed answers (0, 0, 0), having copied every frame there was.
fn checkpoint_pages(row: &[i64], frames_before: u64) -> u64 {
    match row {
        [_, _, done] if *done > 0 => u64::try_from(*done).unwrap_or(0),
        [0, 0, 0] => frames_before,
        _ => 0,
    }
}

/// Runs `f`, which prepares statements of the engine itself (not the app's), past the SQL
/// policy (writing the engine's own tables, for one).
pub(crate) fn as_internal<T>(f: impl FnOnce() -> T) -> T {
    INTERNAL.with(|flag| flag.set(true));
    let r = f();
    INTERNAL.with(|flag| flag.set(false));
    r
}

/// Runs SQL of the broker itself (not the app's) past the SQL policy.
pub(crate) fn run_internal(conn: &Connection, sql: &str) -> Result<()> {
    internal(conn, sql)
}

/// Runs one of the broker's own transaction-control statements.
fn internal(conn: &Connection, sql: &str) -> Result<()> {
    INTERNAL.with(|f| f.set(true));
    let r = conn.execute_batch(sql).map_err(|e| sqlite::map_error(e, None));
    INTERNAL.with(|f| f.set(false));
    r
}

/// [`internal`] for a statement the broker runs on every request (the savepoint around each
/// request of a group): prepared once per connection and kept in its statement cache, under
/// [`sqlite::exec::INTERNAL_MARK`] so that app SQL never reuses it past the policy. One
/// statement without parameters or rows.
fn internal_cached(conn: &Connection, sql: &str) -> Result<()> {
    INTERNAL.with(|f| f.set(true));
    let marked = format!("{}{sql}", sqlite::exec::INTERNAL_MARK);
    let r = conn.prepare_cached(&marked).and_then(|mut stmt| stmt.raw_execute()).map(drop);
    INTERNAL.with(|f| f.set(false));
    r.map_err(|e| sqlite::map_error(e, None))
}

/// Reads a 0/1 setting of the connection with one of the broker's own (cached) statements.
fn internal_flag(conn: &Connection, sql: &str) -> Result<bool> {
    INTERNAL.with(|f| f.set(true));
    let marked = format!("{}{sql}", sqlite::exec::INTERNAL_MARK);
    let r = conn.prepare_cached(&marked).and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, i64>(0)));
    INTERNAL.with(|f| f.set(false));
    r.map(|v| v != 0).map_err(|e| sqlite::map_error(e, None))
}

/// Installs the SQL security policy ([`sqlite::policy`]) on a connection that will run app
/// SQL. Among much else it refuses BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE from app SQL:
/// transactions go through the API (`transaction`), and a COMMIT inside a group-commit batch
/// would break every other request's atomicity. The broker's own statements pass because they
/// run through [`internal`], which sets `INTERNAL` while they are prepared.
fn install_transaction_guard(conn: &mut Connection, relax: PolicyRelaxations) -> Result<()> {
    fn broker_is_preparing() -> bool {
        INTERNAL.with(|f| f.get())
    }
    sqlite::policy::install_authorizer(conn, relax, broker_is_preparing)
}

/// Reads and resets the page cache hit and miss counters of a connection.
fn cache_stats(conn: &Connection) -> (u64, u64) {
    let read = |op: std::os::raw::c_int| -> u64 {
        let (mut cur, mut hi) = (0, 0);
        // SAFETY: `conn.handle()` is the live sqlite3* owned by `conn`, valid for this call;
        // sqlite3_db_status only reads counters and writes the two out-params on our stack.
        #[allow(unsafe_code)]
        let rc = unsafe { rusqlite::ffi::sqlite3_db_status(conn.handle(), op, &mut cur, &mut hi, 1) };
        if rc == rusqlite::ffi::SQLITE_OK {
            u64::try_from(cur).unwrap_or(0)
        } else {
            0
        }
    };
    (read(rusqlite::ffi::SQLITE_DBSTATUS_CACHE_HIT), read(rusqlite::ffi::SQLITE_DBSTATUS_CACHE_MISS))
}

#[cfg(test)]
mod checkpoint_tests {
    use super::checkpoint_complete;

    #[test]
    fn a_checkpoint_is_complete_only_when_every_frame_was_folded() {
        assert!(checkpoint_complete(&[0, 0, 0]));
        assert!(checkpoint_complete(&[0, 12, 12]));
        assert!(!checkpoint_complete(&[0, 12, 7]), "a reader held frames back");
        assert!(!checkpoint_complete(&[1, 12, 12]), "busy");
        assert!(!checkpoint_complete(&[0, -1, -1]), "not in WAL mode");
        assert!(!checkpoint_complete(&[]));
    }
}
