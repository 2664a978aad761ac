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

pub mod budget;
pub mod executor;
pub mod pending;

use crate::clock::Clock;
use crate::fault::FaultLatch;
use crate::manifest::PolicyRelaxations;
use crate::metrics::{DbMetrics, OpKind, SlowQueryLog};
use crate::sqlite::{self, CancelToken, ConnectionOptions, ExecResult, QueryLimits, Rows, StopCheck, Value};
use crate::store::{DbKey, LeaseId};
use crate::{Error, ErrorCode, Result};
use executor::Executor;
use pending::Completer;
use rusqlite::Connection;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// Tunables of the broker. Every limit has a name, a default and a test at its boundary.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Reader connections per database (default 4).
    pub readers_max: usize,
    /// Open connections across all databases (default 512). Idle ones of the least recently
    /// used databases are closed to stay under it; when none is idle, requests get `Busy`.
    pub connections_max: usize,
    /// Worker threads shared by all databases (default: 2 × cores, at most 16).
    pub worker_threads: usize,
    /// Work units waiting for a worker, across all apps (default 65 536).
    pub queue_max: usize,
    /// Requests waiting in one database's write queue (default 4096); more get `Busy`.
    pub write_queue_max: usize,
    /// Most `exec` requests committed together in one group commit (default 128).
    pub group_commit_max_requests: usize,
    /// Deadline of one statement (default 5 s) → `Timeout`.
    pub statement_timeout: Duration,
    /// Longest a transaction may hold the writer (default 10 s) → `Timeout` and rollback.
    pub transaction_timeout: Duration,
    /// Result caps per query (defaults 100 000 rows, 1 MiB of JSON) → `ResultTooLarge`.
    pub query_limits: QueryLimits,
    /// Requests an app may have in flight at once (default 64) → `Busy`.
    pub max_concurrent_requests_per_app: usize,
    /// SQLite's busy timeout, in milliseconds (default 5000).
    pub busy_timeout_ms: u32,
    /// Statements slower than this go to the slow-query log (default 200 ms).
    pub slow_query_threshold: Duration,
    /// Log full SQL in the slow-query log instead of redacted SQL (dev only; default false).
    pub capture_full_sql: bool,
    /// After a commit, a WAL larger than this is checkpointed (PASSIVE; default 4 MiB).
    pub wal_checkpoint_bytes: u64,
    /// A WAL larger than this is checkpointed with TRUNCATE (default 64 MiB).
    pub wal_truncate_bytes: u64,
    /// Databases unused this long close their connections (default 30 s).
    pub idle_timeout: Duration,
    /// Largest one anonymous temporary file may grow (a sort, DISTINCT or GROUP BY spilling
    /// past the page cache; default 256 MiB) → `QuotaExceeded` naming this option.
    pub temp_file_bytes_max: u64,
    /// Largest all anonymous temporary files of the workspace may be together (default
    /// 1 GiB) → `QuotaExceeded` naming this option.
    pub temp_bytes_total_max: u64,
    /// Statements an app may run per minute, across its databases (default 1 200 000, i.e.
    /// 20 000 a second sustained) →
    /// `BudgetExceeded`. A token bucket: bursts up to this, then this rate (see [`budget`]).
    /// `u64::MAX` disables the budget.
    pub statements_per_minute: u64,
    /// Rows an app's queries may return per minute (default 10 000 000) → `BudgetExceeded`.
    pub rows_read_per_minute: u64,
    /// Rows an app may insert, update or delete per minute (default 1 000 000) →
    /// `BudgetExceeded`.
    pub rows_written_per_minute: u64,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        BrokerOptions {
            readers_max: 4,
            connections_max: 512,
            worker_threads: (cores * 2).clamp(2, 16),
            queue_max: 65_536,
            write_queue_max: 4096,
            group_commit_max_requests: 128,
            statement_timeout: Duration::from_secs(5),
            transaction_timeout: Duration::from_secs(10),
            query_limits: QueryLimits::default(),
            max_concurrent_requests_per_app: 64,
            busy_timeout_ms: 5000,
            slow_query_threshold: Duration::from_millis(200),
            capture_full_sql: false,
            wal_checkpoint_bytes: 4 * 1024 * 1024,
            wal_truncate_bytes: 64 * 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
            temp_file_bytes_max: sqlite::vfs::TEMP_FILE_BYTES_MAX_DEFAULT,
            temp_bytes_total_max: sqlite::vfs::TEMP_BYTES_TOTAL_MAX_DEFAULT,
            statements_per_minute: 1_200_000,
            rows_read_per_minute: 10_000_000,
            rows_written_per_minute: 1_000_000,
        }
    }
}

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
}

/// Per-app shared state: the in-flight request count and the per-minute budgets.
#[derive(Debug, Default)]
pub struct AppShared {
    in_flight: AtomicUsize,
    budget: budget::AppBudget,
}

/// Holds one slot of an app's concurrency limit until dropped.
pub struct Admission {
    app: Arc<AppShared>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.app.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// [`Admission`] that borrows the app: see [`BrokerShared::admit_borrowed`].
pub struct BorrowedAdmission<'a> {
    app: &'a AppShared,
}

impl BorrowedAdmission<'_> {
    /// Hands the slot over to an owning [`Admission`] made by the caller (no release here).
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for BorrowedAdmission<'_> {
    fn drop(&mut self) {
        self.app.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A write waiting for the writer.
pub enum WriteJob {
    /// One statement, group-committed with others.
    Exec(ExecRequest),
    /// A whole transaction, run alone by the leader.
    Transaction(Box<dyn FnOnce(&Connection) + Send>),
    /// A blocking caller's turn: the leader hands the writer (and leadership) over to the
    /// caller's own thread, which runs its transaction there.
    Gate(Arc<crate::api::Gate>),
}

/// One `exec` in the write queue.
pub struct ExecRequest {
    /// The statement.
    pub sql: String,
    /// Its parameters.
    pub params: Vec<Value>,
    /// Deadline and cancellation.
    pub stop: StopCheck,
    /// When it was submitted, on the broker clock's monotonic time (latency is measured
    /// from here).
    pub submitted: Duration,
    /// Where the answer goes.
    pub reply: Completer<ExecResult>,
    /// The admission slot, released when the request is answered.
    pub admission: Admission,
}

/// A connection and the generation of the file it was opened on. Kept boxed: it moves in
/// and out of the pool on every request, and a pointer moves cheaper than a `Connection`.
struct Tagged {
    generation: u64,
    conn: Connection,
    /// What is attached on this connection (see [`DbShared::sync_attachments`]).
    attached: AttachedHere,
    /// The thread ([`thread_tag`]) that last used this connection as a reader.
    last_thread: u64,
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

/// The attachments one connection carries: the handle's attachment version they match, and
/// each attached database with the version of its file that was attached.
#[derive(Default)]
struct AttachedHere {
    version: u64,
    schemas: Vec<(String, Arc<DbShared>, u64)>,
}

#[derive(Default)]
struct WriterState {
    queue: VecDeque<WriteJob>,
    leading: bool,
    conn: Option<Box<Tagged>>,
}

#[derive(Default)]
struct ReaderState {
    // Boxed on purpose (clippy's vec_box): a reader leaves and re-enters this list on every
    // request, and moving a pointer instead of a `Connection` measured ~300 fewer instructions
    // per lookup.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Tagged>>,
    open: usize,
    /// Checked-out readers by file generation.
    out: OutCounts,
    /// Leases on retired files that readers still use, by generation.
    retired: Vec<(u64, LeaseId)>,
    /// Threads waiting for a reader to come back (so a return wakes someone only if needed).
    waiters: usize,
}

/// Checked-out readers per file generation. Rarely more than two generations are out (the
/// live one and one retired by a flip), so a short vector beats a hash map inside the reader
/// lock, which every read takes twice.
#[derive(Default)]
struct OutCounts(Vec<(u64, usize)>);

impl OutCounts {
    /// Counts one more reader out on `generation`.
    fn add(&mut self, generation: u64) {
        match self.0.iter_mut().find(|(g, _)| *g == generation) {
            Some((_, n)) => *n += 1,
            None => self.0.push((generation, 1)),
        }
    }

    /// Counts one reader of `generation` back; returns how many are still out on it (`None`
    /// if none was counted). A generation at zero is forgotten.
    fn remove_one(&mut self, generation: u64) -> Option<usize> {
        let i = self.0.iter().position(|(g, _)| *g == generation)?;
        let left = self.0.get_mut(i).map(|(_, n)| {
            *n = n.saturating_sub(1);
            *n
        })?;
        if left == 0 {
            self.0.swap_remove(i);
        }
        Some(left)
    }

    /// Readers out on `generation`.
    fn get(&self, generation: u64) -> usize {
        self.0.iter().find(|(g, _)| *g == generation).map_or(0, |(_, n)| *n)
    }
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

/// Tells the store a database is poisoned (the workspace hands the broker this hook).
pub type PoisonHook = Arc<dyn Fn(&str) + Send + Sync>;

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
    writer: Mutex<WriterState>,
    readers: Mutex<ReaderState>,
    reader_returned: Condvar,
    /// Set while the writer connection is checked out by internal work (checkpoint at close).
    closing: AtomicBool,
    /// Set by the first IO failure of a write (a failed fsync above all): the database
    /// refuses all work until the workspace is reopened (fail-stop; no retry-then-succeed).
    poisoned: Mutex<Option<String>>,
    /// `poisoned.is_some()`, readable without the lock on the hot path.
    is_poisoned: AtomicBool,
    on_poison: PoisonHook,
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
        on_poison: PoisonHook,
    ) -> Arc<DbShared> {
        let mut dbs = lock(&self.dbs);
        if let Some(db) = dbs.get(&config.key) {
            return db.clone();
        }
        let db = Arc::new(DbShared {
            latch: self.latch.clone(),
            hot: Hot {
                clock: self.clock.clone(),
                readers_max: self.options.readers_max,
                query_limits: self.options.query_limits,
                budget: self.budget_limits(),
                slow_log: self.slow_log.clone(),
            },
            version: Mutex::new(FileVersion { generation: 0, path: config.path.clone() }),
            generation: AtomicU64::new(0),
            wal_frames: Arc::new(AtomicU64::new(0)),
            commits: Arc::new(AtomicU64::new(0)),
            app: self.app(config.key.app),
            release_lease,
            config: config.clone(),
            broker: Arc::downgrade(self),
            writer: Mutex::new(WriterState::default()),
            readers: Mutex::new(ReaderState::default()),
            reader_returned: Condvar::new(),
            closing: AtomicBool::new(false),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
            on_poison,
            last_used_ms: AtomicU64::new(millis(self.now())),
            pins: AtomicUsize::new(0),
            attachments: Mutex::new(Vec::new()),
            attach_version: AtomicU64::new(0),
            metrics: DbMetrics::new(),
        });
        dbs.insert(config.key, db.clone());
        db
    }

    /// The database's shared state if it is active.
    pub fn active(&self, key: &DbKey) -> Option<Arc<DbShared>> {
        lock(&self.dbs).get(key).cloned()
    }

    /// Every active database.
    pub fn active_all(&self) -> Vec<Arc<DbShared>> {
        lock(&self.dbs).values().cloned().collect()
    }

    /// The shared state of an app.
    pub fn app(&self, app: uuid::Uuid) -> Arc<AppShared> {
        lock(&self.apps).entry(app).or_default().clone()
    }

    /// Takes one of the app's concurrency slots, or refuses with `Busy`.
    pub fn admit(&self, app: &Arc<AppShared>) -> Result<Admission> {
        self.admit_borrowed(app, self.now())?.keep();
        Ok(Admission { app: app.clone() })
    }

    /// [`BrokerShared::admit`] for a caller that waits for its request on its own thread: the
    /// slot borrows the app instead of holding a reference to it, one shared write less per
    /// request on the read path. `now` is a reading of [`BrokerShared::now`].
    pub fn admit_borrowed<'a>(&self, app: &'a AppShared, now: Duration) -> Result<BorrowedAdmission<'a>> {
        let max = self.options.max_concurrent_requests_per_app;
        let before = app.in_flight.fetch_add(1, Ordering::AcqRel);
        let admission = BorrowedAdmission { app };
        if before >= max {
            return Err(Error::new(
                ErrorCode::Busy,
                format!("the app has {before} requests in flight; max_concurrent_requests_per_app is {max}"),
            ));
        }
        // Dropping `admission` on refusal gives the slot back.
        app.budget.check(&self.budget_limits(), millis(now))?;
        Ok(admission)
    }

    /// The per-app budgets of the options.
    fn budget_limits(&self) -> budget::BudgetLimits {
        budget::BudgetLimits {
            statements_per_minute: self.options.statements_per_minute,
            rows_read_per_minute: self.options.rows_read_per_minute,
            rows_written_per_minute: self.options.rows_written_per_minute,
        }
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
                    "database {:?} is poisoned by an earlier IO failure ({why}); reopen the workspace to recover it",
                    self.config.key.db.as_str()
                ),
            )),
        }
    }

    /// Poisons the database (a plan of the store failed at a sync, or after its commit
    /// step): every later request is refused until the workspace is reopened.
    pub(crate) fn poison(&self, why: &str) {
        let mut p = lock(&self.poisoned);
        if p.is_none() {
            *p = Some(why.to_string());
            self.is_poisoned.store(true, Ordering::Release);
        }
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
        let mut p = lock(&self.poisoned);
        if p.is_none() {
            *p = Some(err.message().to_string());
            self.is_poisoned.store(true, Ordering::Release);
            drop(p);
            (self.on_poison)(err.message());
        }
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
        let opened =
            self.confined_options(&broker, &path).and_then(|opts| sqlite::open_connection(&path, &opts));
        let opened = opened.and_then(|mut conn| {
            if reader {
                // Readers open read-write (a read-only WAL connection cannot create -shm) but
                // refuse writes with query_only.
                conn.execute_batch("PRAGMA query_only=ON").map_err(|e| sqlite::map_error(e, None))?;
            }
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
                Ok(Box::new(Tagged { generation, conn, attached: AttachedHere::default(), last_thread: 0 }))
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
        let reader = {
            let mut r = lock(&self.readers);
            let c = r.idle.pop();
            if c.is_some() {
                r.open -= 1;
            }
            c
        };
        if let Some(t) = reader {
            self.close_connection(t.conn, false);
            return true;
        }
        let writer = {
            let mut w = lock(&self.writer);
            if w.leading {
                None
            } else {
                w.conn.take()
            }
        };
        match writer {
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
        let all_closed = {
            let r = lock(&self.readers);
            let w = lock(&self.writer);
            r.open == 0 && !w.leading && w.conn.is_none() && w.queue.is_empty()
        };
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
            // Through `internal`: the SQL policy refuses wal_checkpoint to app SQL.
            let result = internal(&conn, "PRAGMA wal_checkpoint(TRUNCATE)");
            self.checkpointed(result);
        }
        self.close_connection(conn, true);
        self.closing.store(false, Ordering::Release);
    }

    /// Accounts for a checkpoint's result; none is ever dropped. A failed one is counted; an
    /// IO failure poisons the database (a failed sync or write also set the workspace's fault
    /// latch below, which refuses every later write). Any other failure (the WAL was busy)
    /// leaves the committed data where it is, in the WAL.
    fn checkpointed(&self, result: Result<()>) {
        match result {
            Ok(()) => self.metrics.record_checkpoint(),
            Err(e) => {
                self.metrics.record_checkpoint_failed();
                self.poison_on_io(&e);
            }
        }
    }

    // ----- reads -------------------------------------------------------------------------

    /// Runs a query on a reader connection, on the calling thread.
    pub fn query(&self, sql: &str, params: &[Value], stop: &StopCheck) -> Result<Rows> {
        self.query_at(sql, params, stop, self.hot.clock.monotonic())
    }

    /// [`Self::query`] for a request that arrived at `now` (a reading of the broker clock's
    /// monotonic time, taken by the caller: one clock read serves the whole request).
    pub fn query_at(&self, sql: &str, params: &[Value], stop: &StopCheck, now: Duration) -> Result<Rows> {
        let limits = &self.hot.query_limits;
        self.read_at(sql, stop, now, |conn| sqlite::query(conn, sql, params, limits, stop), |r| r.rows.len())
    }

    /// The first column of the first row ([`sqlite::query_first`]: nothing after that row is
    /// computed), on a reader connection, for a request that arrived at `now`.
    pub fn query_first_at(
        &self,
        sql: &str,
        params: &[Value],
        stop: &StopCheck,
        now: Duration,
    ) -> Result<Option<Value>> {
        let limits = &self.hot.query_limits;
        self.read_at(
            sql,
            stop,
            now,
            |conn| sqlite::query_first(conn, sql, params, limits, stop),
            |v| usize::from(v.is_some()),
        )
    }

    /// The caps on one query's result.
    pub fn query_limits(&self) -> &QueryLimits {
        &self.hot.query_limits
    }

    fn read_at<T>(
        &self,
        sql: &str,
        stop: &StopCheck,
        now: Duration,
        run: impl FnOnce(&Connection) -> Result<T>,
        rows_of: impl FnOnce(&T) -> usize,
    ) -> Result<T> {
        self.touch_at(now);
        self.check_poison()?;
        // A request cancelled before it ran takes no reader. (`run` checks the deadline, on
        // the clock, before its statement starts.)
        stop.check_cancel()?;
        let result = self.with_reader(stop, |conn, _| run(conn));
        let outcome = result.as_ref().map(|r| (to_u64(rows_of(r)), 0)).map_err(|e| e.code());
        self.record(sql, OpKind::Query, now, outcome);
        result
    }

    fn with_reader<T>(&self, stop: &StopCheck, f: impl FnOnce(&Connection, u64) -> Result<T>) -> Result<T> {
        // A flip between checkout and use retires the connection; retry on the new file. A
        // bound of three covers two flips racing this call; a third is reported as Busy.
        for _ in 0..3 {
            let tagged = self.checkout_reader(stop)?;
            // `out` was counted before this check, so a flip either sees this reader (and keeps
            // its lease on the old file) or this check sees the flip.
            if tagged.generation != self.generation() {
                self.return_reader(tagged);
                continue;
            }
            let mut tagged = tagged;
            if let Err(e) = self.sync_attachments(&mut tagged) {
                self.return_reader(tagged);
                return Err(e);
            }
            let result = f(&tagged.conn, tagged.generation);
            self.return_reader(tagged);
            return result;
        }
        Err(Error::new(ErrorCode::Busy, "the database changed version three times during one read; retry"))
    }

    fn checkout_reader(&self, stop: &StopCheck) -> Result<Box<Tagged>> {
        let idle = {
            let me = thread_tag();
            let mut r = lock(&self.readers);
            loop {
                // This thread's own reader if it is idle (at most readers_max to look at),
                // else the most recently returned one.
                let mine = r.idle.iter().rposition(|t| t.last_thread == me);
                let taken = match mine {
                    Some(i) => Some(r.idle.swap_remove(i)),
                    None => r.idle.pop(),
                };
                if let Some(mut t) = taken {
                    r.out.add(t.generation);
                    t.last_thread = me;
                    break Ok(t);
                }
                if r.open < self.hot.readers_max {
                    r.open += 1;
                    // Count the reader on the version it will open before opening it, under
                    // this lock: a flip then keeps the old file's lease until it returns.
                    let version = lock(&self.version).clone();
                    r.out.add(version.generation);
                    break Err(version);
                }
                stop.check()?;
                let wait = stop.remaining().min(Duration::from_millis(50));
                r.waiters += 1;
                r = self
                    .reader_returned
                    .wait_timeout(r, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
                r.waiters -= 1;
            }
        };
        let version = match idle {
            Ok(t) => return Ok(t),
            Err(version) => version,
        };
        let generation = version.generation;
        match self.open_connection_on(true, version) {
            Ok(mut c) => {
                c.last_thread = thread_tag();
                Ok(c)
            }
            Err(e) => {
                let (waiters, lease) = {
                    let mut r = lock(&self.readers);
                    r.open -= 1;
                    let left = r.out.remove_one(generation);
                    let mut lease = None;
                    if left == Some(0) {
                        if let Some(i) = r.retired.iter().position(|(g, _)| *g == generation) {
                            lease = Some(r.retired.remove(i).1);
                        }
                    }
                    (r.waiters, lease)
                };
                if let Some(lease) = lease {
                    (self.release_lease)(lease);
                }
                if waiters > 0 {
                    self.reader_returned.notify_one();
                }
                Err(e)
            }
        }
    }

    /// Runs `f` on a pooled reader connection of the live file (for copies and checks).
    pub(crate) fn with_reader_conn<T>(
        &self,
        stop: &StopCheck,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        self.with_reader(stop, |conn, _| f(conn))
    }

    /// [`Self::with_reader_conn`] that also tells `f` the version of the file the reader
    /// reads: while the writer is held, the reader is on the live file if that equals
    /// [`Self::current_version`] (a flip happens only under the writer).
    pub(crate) fn with_versioned_reader<T>(
        &self,
        stop: &StopCheck,
        f: impl FnOnce(&Connection, u64) -> Result<T>,
    ) -> Result<T> {
        self.with_reader(stop, f)
    }

    /// The version (generation) of the live file; see [`Self::with_versioned_reader`].
    pub(crate) fn current_version(&self) -> u64 {
        self.generation()
    }

    /// Commits on the writer since the database became active. Read while holding the writer,
    /// it cannot move until the writer is released.
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// The broker's clock (deadlines are points on its monotonic time).
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.hot.clock
    }

    /// The deadline `timeout` from now on the broker's clock.
    pub(crate) fn deadline_after(&self, timeout: Duration) -> Duration {
        self.hot.clock.monotonic().saturating_add(timeout)
    }

    /// Counts a copy that pins the main file with a read transaction; the returned guard
    /// uncounts it when dropped.
    pub(crate) fn pin(&self) -> PinGuard<'_> {
        self.pins.fetch_add(1, Ordering::AcqRel);
        PinGuard(&self.pins)
    }

    /// Opens a connection to another file (a private copy) with this database's settings and
    /// the same SQL policy as its own connections. Not pooled, not counted.
    pub(crate) fn open_side_connection(&self, path: &std::path::Path) -> Result<Connection> {
        let mut conn = sqlite::open_connection(path, &self.config.connection)?;
        install_transaction_guard(&mut conn, self.config.policy)?;
        Ok(conn)
    }

    /// Puts a reader back; one of a retired file is closed, and the last one releases the
    /// file's lease so GC may collect it.
    fn return_reader(&self, tagged: Box<Tagged>) {
        let (to_close, lease, waiters) = {
            let mut r = lock(&self.readers);
            // Read under the readers lock: a flip bumps the generation and then takes this
            // lock to retire idle readers, so either it sees this reader's return or this
            // return sees the flip (found by the loom model of the reader leases).
            let current = self.generation();
            let waiters = r.waiters;
            let g = tagged.generation;
            let left = r.out.remove_one(g);
            if g == current {
                r.idle.push(tagged);
                (None, None, waiters)
            } else {
                r.open = r.open.saturating_sub(1);
                let lease = if left.unwrap_or(0) == 0 {
                    let pos = r.retired.iter().position(|(rg, _)| *rg == g);
                    pos.map(|i| r.retired.remove(i).1)
                } else {
                    None
                };
                (Some(tagged), lease, waiters)
            }
        };
        if let Some(t) = to_close {
            self.close_connection(t.conn, false);
        }
        if let Some(lease) = lease {
            (self.release_lease)(lease);
        }
        if waiters > 0 {
            self.reader_returned.notify_one();
        }
    }

    /// Points the database at a new live file. Call only while holding the writer exclusively
    /// (inside [`DbShared::with_gate_connection`]), after the flip is durable. Idle readers of
    /// the old file are closed; readers still running keep `old_lease` on the old file until
    /// the last of them returns. The writer connection of the old file is closed when the
    /// turn ends.
    pub fn switch_file(&self, path: PathBuf, old_lease: LeaseId) {
        let old = {
            let mut v = lock(&self.version);
            let old = v.generation;
            v.generation += 1;
            v.path = path;
            self.generation.store(v.generation, Ordering::Release);
            self.wal_frames.store(0, Ordering::Release);
            old
        };
        let (idle, release_now) = {
            let mut r = lock(&self.readers);
            let idle: Vec<Box<Tagged>> = r.idle.drain(..).collect();
            r.open = r.open.saturating_sub(idle.len());
            let busy_old = r.out.get(old);
            if busy_old > 0 {
                r.retired.push((old, old_lease));
                (idle, None)
            } else {
                (idle, Some(old_lease))
            }
        };
        for t in idle {
            self.close_connection(t.conn, false);
        }
        if let Some(lease) = release_now {
            (self.release_lease)(lease);
        }
    }

    /// Counts a finished statement. `started` is a reading of the broker clock's monotonic
    /// time; the latency runs from it to now on the same clock.
    fn record(
        &self,
        sql: &str,
        kind: OpKind,
        started: Duration,
        outcome: std::result::Result<(u64, u64), ErrorCode>,
    ) {
        let now = self.hot.clock.monotonic();
        let latency = now.saturating_sub(started);
        self.metrics.record(kind, latency, outcome);
        let (rows_read, rows_written) = outcome.unwrap_or((0, 0));
        let now_ms = millis(now);
        self.app.budget.charge(&self.hot.budget, now_ms, rows_read, rows_written);
        if self.hot.slow_log.observe(sql, latency, &self.config.app_id, self.config.key.db.as_str(), now_ms) {
            self.metrics.record_slow_query();
        }
    }

    // ----- writes ------------------------------------------------------------------------

    /// Queues a write. If the writer is idle, the caller becomes the leader: `inline` leads
    /// on this thread, otherwise a worker leads.
    pub fn submit_write(self: &Arc<Self>, job: WriteJob, inline: bool) -> Result<()> {
        self.touch();
        self.check_writable()?;
        let broker = self.broker()?;
        let lead = {
            let mut w = lock(&self.writer);
            if w.queue.len() >= broker.options.write_queue_max {
                return Err(Error::new(
                    ErrorCode::Busy,
                    format!(
                        "the write queue holds {} requests; write_queue_max is {}",
                        w.queue.len(),
                        broker.options.write_queue_max
                    ),
                ));
            }
            w.queue.push_back(job);
            let lead = !w.leading;
            w.leading = true;
            lead
        };
        if lead {
            if inline {
                self.lead();
            } else {
                self.hand_off(&broker);
            }
        }
        Ok(())
    }

    /// Passes leadership to a worker; if the executor refuses, keeps leading here.
    fn hand_off(self: &Arc<Self>, broker: &BrokerShared) {
        let db = self.clone();
        let job: executor::Job = Box::new(move || db.lead());
        if let Err(job) = broker.executor.spawn(self.config.key.app, job) {
            job();
        }
    }

    /// Leads one turn: one batch of execs, one transaction, or hands the writer to a gate;
    /// then hands off to a worker or steps down.
    fn lead(self: &Arc<Self>) {
        let Ok(broker) = self.broker() else {
            lock(&self.writer).leading = false;
            return;
        };
        let (batch, conn) = {
            let mut w = lock(&self.writer);
            // Gates at the front take the writer; abandoned ones are skipped. Bounded by the
            // queue length: every iteration pops one job.
            loop {
                match w.queue.front() {
                    None => {
                        w.leading = false;
                        return;
                    }
                    Some(WriteJob::Gate(_)) => {
                        if let Some(WriteJob::Gate(gate)) = w.queue.pop_front() {
                            if gate.open() {
                                // Leadership now belongs to the gate's caller.
                                return;
                            }
                        }
                    }
                    Some(_) => break,
                }
            }
            let mut batch = Vec::new();
            while batch.len() < broker.options.group_commit_max_requests.max(1) {
                match w.queue.front() {
                    Some(WriteJob::Exec(_)) => {}
                    Some(WriteJob::Transaction(_)) if batch.is_empty() => {
                        if let Some(job) = w.queue.pop_front() {
                            batch.push(job);
                        }
                        break;
                    }
                    _ => break,
                }
                if let Some(job) = w.queue.pop_front() {
                    batch.push(job);
                }
            }
            (batch, w.conn.take())
        };
        let conn = match conn {
            Some(c) => Ok(c),
            None => self.open_connection(false),
        };
        let conn = conn.and_then(|mut tagged| match self.sync_attachments(&mut tagged) {
            Ok(()) => Ok(tagged),
            Err(e) => {
                lock(&self.writer).conn = Some(tagged);
                Err(e)
            }
        });
        match conn {
            Ok(tagged) => {
                // A panic in the batch must not strand the queue with `leading` set: the
                // batch's completers answer as they unwind, the connection (state unknown) is
                // closed, and the turn ends normally below.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.run_batch(&broker, &tagged.conn, batch)
                }));
                match ran {
                    Ok(()) => lock(&self.writer).conn = Some(tagged),
                    Err(_) => self.close_connection(tagged.conn, false),
                }
            }
            Err(e) => {
                for job in batch {
                    // A dropped transaction job answers its caller through its completer.
                    if let WriteJob::Exec(req) = job {
                        req.reply.complete(Err(e.clone()));
                    }
                }
            }
        }
        self.end_turn(&broker);
    }

    /// After a turn: hand off to a worker if work is queued, else step down.
    fn end_turn(self: &Arc<Self>, broker: &BrokerShared) {
        let more = {
            let mut w = lock(&self.writer);
            if w.queue.is_empty() {
                w.leading = false;
            }
            w.leading
        };
        if more {
            self.hand_off(broker);
        }
    }

    /// Runs `f` with the writer connection, on the calling thread, after its gate opened (the
    /// caller leads). Restores the connection and ends the turn even if `f` panics.
    pub fn with_gate_connection<T>(
        self: &Arc<Self>,
        f: impl FnOnce(Result<&Connection>) -> Result<T>,
    ) -> Result<T> {
        struct Turn<'a> {
            db: &'a Arc<DbShared>,
            conn: Option<Box<Tagged>>,
        }
        impl Drop for Turn<'_> {
            fn drop(&mut self) {
                if let Some(t) = self.conn.take() {
                    if t.generation == self.db.generation() {
                        lock(&self.db.writer).conn = Some(t);
                    } else {
                        // The turn flipped the database: this connection is of the old file,
                        // which must not change any more (a restore keeps it as its undo
                        // snapshot), so no `PRAGMA optimize` on the way out.
                        self.db.close_connection(t.conn, false);
                    }
                }
                match self.db.broker() {
                    Ok(b) => self.db.end_turn(&b),
                    Err(_) => lock(&self.db.writer).leading = false,
                }
            }
        }
        let taken = lock(&self.writer).conn.take();
        let mut turn = Turn { db: self, conn: None };
        let conn = match taken {
            Some(c) => Ok(c),
            None => self.open_connection(false),
        };
        match conn {
            Ok(c) => {
                let tagged = turn.conn.insert(c);
                match self.sync_attachments(tagged) {
                    Ok(()) => f(Ok(&tagged.conn)),
                    Err(e) => f(Err(e)),
                }
            }
            Err(e) => f(Err(e)),
        }
    }

    /// Adds an attachment unless its schema name is taken or `max` are attached already;
    /// `Err` says which (checked and added under one lock, so concurrent ATTACHes cannot both
    /// pass the checks).
    pub(crate) fn add_attachment(
        &self,
        attachment: Attachment,
        max: usize,
    ) -> std::result::Result<(), String> {
        let mut a = lock(&self.attachments);
        if a.iter().any(|x| x.schema == attachment.schema) {
            return Err(format!("{} is attached already; DETACH it first", attachment.schema));
        }
        if a.len() >= max {
            return Err(format!("{max} databases are attached already (ATTACHMENTS_MAX)"));
        }
        a.push(attachment);
        self.attach_version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Removes the attachment named `schema`; false if there was none.
    pub(crate) fn remove_attachment(&self, schema: &str) -> bool {
        let mut a = lock(&self.attachments);
        let before = a.len();
        a.retain(|x| x.schema != schema);
        let removed = a.len() != before;
        if removed {
            self.attach_version.fetch_add(1, Ordering::AcqRel);
        }
        removed
    }

    /// Forgets every attachment (at workspace close); connections catch up as for DETACH.
    pub(crate) fn clear_attachments(&self) {
        lock(&self.attachments).clear();
        self.attach_version.fetch_add(1, Ordering::AcqRel);
    }

    /// Brings a connection's attached databases in line with the handle's attachments and
    /// with each attached database's current file (it may have flipped to a new version):
    /// detaches what it carries, then attaches each database's live file under its schema
    /// name, read-only (`SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE` is off on every connection).
    /// Called on a connection outside any transaction, before it serves a request. When
    /// nothing is attached it costs one atomic load.
    fn sync_attachments(&self, tagged: &mut Tagged) -> Result<()> {
        let version = self.attach_version.load(Ordering::Acquire);
        let current = tagged.attached.version == version
            && tagged.attached.schemas.iter().all(|(_, target, g)| target.generation() == *g);
        if current {
            return Ok(());
        }
        for (schema, _, _) in std::mem::take(&mut tagged.attached.schemas) {
            internal_attach(&tagged.conn, None, &schema)?;
        }
        let wanted = lock(&self.attachments).clone();
        for a in wanted {
            // The version before the path: a flip in between leaves the version stale, and the
            // next request attaches again.
            let g = a.target.generation();
            let path = a.target.path();
            if let (Some(dir), Some(broker)) = (path.parent(), self.broker.upgrade()) {
                broker.sqlite_vfs.allow_dir(dir)?;
            }
            internal_attach(&tagged.conn, Some(&path), &a.schema)?;
            tagged.attached.schemas.push((a.schema, a.target, g));
        }
        tagged.attached.version = version;
        Ok(())
    }

    fn run_batch(&self, broker: &BrokerShared, conn: &Connection, batch: Vec<WriteJob>) {
        let mut execs: Vec<ExecRequest> = Vec::new();
        for job in batch {
            match job {
                WriteJob::Transaction(f) => f(conn),
                WriteJob::Exec(req) => execs.push(req),
                // `lead` never puts a gate in a batch; one here would be a bug, and opening
                // it would hand the writer to a second thread. Its caller times out instead.
                WriteJob::Gate(_) => {}
            }
        }
        if execs.is_empty() {
            self.after_commit(broker, conn);
            return;
        }
        if crate::sabotage::active(crate::sabotage::Sabotage::AckBeforeCommit) {
            // Broken on purpose: answer first, commit later.
            let mut answered = Vec::new();
            for req in execs {
                let ExecRequest { sql, params, stop, submitted, reply, admission } = req;
                reply.complete(Ok(ExecResult { changes: 1, last_insert_rowid: 0 }));
                // The real caller is answered; the work still needs a completer to answer.
                let (_, reply) = pending::pending::<ExecResult>(CancelToken::new());
                answered.push(ExecRequest { sql, params, stop, submitted, reply, admission });
            }
            execs = answered;
        }
        let mut results = if let Err(e) = self.check_writable() {
            execs.into_iter().map(|r| (r, Err(e.clone()))).collect()
        } else {
            commit_group(conn, execs)
        };
        // A checkpoint the commit triggers belongs to it: it runs before anyone is answered.
        self.after_commit(broker, conn);
        for (_, r) in &results {
            if let Err(e) = r {
                self.poison_on_io(e);
            }
        }
        if let Err(e) = self.fail_stop_window() {
            for (_, r) in results.iter_mut() {
                if r.is_ok() {
                    *r = Err(e.clone());
                }
            }
        }
        for (req, r) in results {
            let written = r.as_ref().map(|x| (0, x.changes)).map_err(|e| e.code());
            self.record(&req.sql, OpKind::Exec, req.submitted, written);
            req.reply.complete(r);
            drop(req.admission);
        }
    }

    /// Fail-stop: called after an operation's last IO and before it is acknowledged. If the
    /// workspace has a fault now (it may have happened during this operation, whatever error
    /// code SQLite made of it, or in another database meanwhile), the operation is not
    /// acknowledged: its outcome is unknown until the workspace is reopened (`Io`, with the
    /// fault). Operations that begin after the fault are refused before they start
    /// ([`Self::check_writable`]: `Poisoned`).
    pub(crate) fn fail_stop_window(&self) -> Result<()> {
        self.latch.check_acknowledge()
    }

    /// Checkpoints when the WAL passed a threshold (its result is accounted, never dropped:
    /// see [`Self::checkpointed`]; the caller's fail-stop window then sees a fault it caused).
    fn after_commit(&self, broker: &BrokerShared, conn: &Connection) {
        let size = self.wal_frames.load(Ordering::Acquire).saturating_mul(crate::workspace::PAGE_SIZE_BYTES);
        let pinned = self.pins.load(Ordering::Acquire) > 0;
        let mode = if size > broker.options.wal_truncate_bytes && !pinned {
            "TRUNCATE"
        } else if size > broker.options.wal_checkpoint_bytes {
            "PASSIVE"
        } else {
            return;
        };
        if broker.latch.is_set() {
            return;
        }
        // Through `internal`: the SQL policy refuses wal_checkpoint to app SQL.
        let result = internal(conn, &format!("PRAGMA wal_checkpoint({mode})"));
        self.checkpointed(result);
    }

    /// Runs a transaction job's body: BEGIN IMMEDIATE, `body`, then COMMIT on `Ok` (if the
    /// deadline has not passed) or ROLLBACK on `Err` or panic.
    pub fn run_transaction<T>(
        &self,
        conn: &Connection,
        deadline: Duration,
        body: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        self.check_writable()?;
        let result = self.run_transaction_inner(conn, deadline, body);
        if let Err(e) = &result {
            self.poison_on_io(e);
        }
        self.fail_stop_window()?;
        result
    }

    fn run_transaction_inner<T>(
        &self,
        conn: &Connection,
        deadline: Duration,
        body: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        internal(conn, "BEGIN IMMEDIATE")?;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(conn)));
        match outcome {
            Ok(Ok(value)) => {
                if conn.is_autocommit() {
                    // SQLite rolled the transaction back by itself and the body went on.
                    return Err(Error::new(
                        ErrorCode::Sqlite,
                        "the transaction was rolled back by SQLite after an error inside it; nothing was committed",
                    ));
                }
                if self.hot.clock.monotonic() > deadline {
                    let _ = internal(conn, "ROLLBACK");
                    return Err(self.transaction_timeout_error());
                }
                match internal(conn, "COMMIT") {
                    Ok(()) => Ok(value),
                    Err(e) => {
                        let _ = internal(conn, "ROLLBACK");
                        Err(e)
                    }
                }
            }
            Ok(Err(e)) => {
                let _ = internal(conn, "ROLLBACK");
                Err(e)
            }
            Err(panic) => {
                let _ = internal(conn, "ROLLBACK");
                std::panic::resume_unwind(panic)
            }
        }
    }

    fn transaction_timeout_error(&self) -> Error {
        let limit = self.broker.upgrade().map(|b| b.options.transaction_timeout).unwrap_or_default();
        Error::new(
            ErrorCode::Timeout,
            format!(
                "transaction exceeded transaction_timeout of {} ms and was rolled back",
                limit.as_millis()
            ),
        )
    }

    /// Records a statement run inside a transaction.
    pub fn record_in_transaction(
        &self,
        sql: &str,
        kind: OpKind,
        started: Duration,
        outcome: std::result::Result<(u64, u64), ErrorCode>,
    ) {
        self.record(sql, kind, started, outcome);
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
        let readers = lock(&self.readers).open;
        let w = lock(&self.writer);
        readers + usize::from(w.conn.is_some() || w.leading || self.closing.load(Ordering::Acquire))
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

/// Attaches `path` as `schema` (or detaches `schema` when `path` is `None`), past the SQL
/// policy: the broker's own ATTACH of a database the app may attach ([`crate::attach`]).
fn internal_attach(conn: &Connection, path: Option<&std::path::Path>, schema: &str) -> Result<()> {
    INTERNAL.with(|f| f.set(true));
    let r = match path {
        Some(p) => conn.execute("ATTACH DATABASE ?1 AS ?2", rusqlite::params![p.to_string_lossy(), schema]),
        None => conn.execute("DETACH DATABASE ?1", [schema]),
    };
    INTERNAL.with(|f| f.set(false));
    r.map(|_| ()).map_err(|e| sqlite::map_error(e, None).context(format_args!("attaching {schema}")))
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

/// Runs a group of execs in one transaction, a savepoint each, and commits.
///
/// Some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM…) make SQLite roll back the whole
/// transaction, taking the earlier requests of the group with it. Then the failing request
/// keeps its error and the group is run again without it: at most one rerun per request, so
/// the loop is bounded by the group's size.
fn commit_group(conn: &Connection, execs: Vec<ExecRequest>) -> Vec<(ExecRequest, Result<ExecResult>)> {
    let mut results: Vec<Option<Result<ExecResult>>> = execs.iter().map(|_| None).collect();
    let mut failed: Vec<Option<Error>> = execs.iter().map(|_| None).collect();
    for _attempt in 0..=execs.len() {
        if let Err(e) = internal(conn, "BEGIN IMMEDIATE") {
            return execs.into_iter().map(|r| (r, Err(e.clone()))).collect();
        }
        let mut aborted = false;
        for (i, req) in execs.iter().enumerate() {
            if let Some(Some(e)) = failed.get(i) {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(Err(e.clone()));
                }
                continue;
            }
            let r = run_in_savepoint(conn, req);
            if r.is_err() && conn.is_autocommit() {
                // SQLite rolled the transaction back: rerun the group without this request.
                if let (Some(f), Err(e)) = (failed.get_mut(i), r) {
                    *f = Some(e);
                }
                aborted = true;
                break;
            }
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
        if aborted {
            continue;
        }
        if let Err(e) = internal(conn, "COMMIT") {
            let _ = internal(conn, "ROLLBACK");
            for r in results.iter_mut().flatten() {
                if r.is_ok() {
                    *r = Err(e.clone());
                }
            }
        }
        break;
    }
    execs
        .into_iter()
        .zip(results)
        .map(|(req, r)| {
            (req, r.unwrap_or_else(|| Err(Error::internal("request of an aborted group was not run"))))
        })
        .collect()
}

fn run_in_savepoint(conn: &Connection, req: &ExecRequest) -> Result<ExecResult> {
    req.stop.check()?;
    internal(conn, "SAVEPOINT sila_request")?;
    let r = sqlite::execute(conn, &req.sql, &req.params, &req.stop);
    if conn.is_autocommit() {
        // SQLite already rolled back the whole transaction; the savepoint is gone.
        return r.map_err(transaction_refusal);
    }
    if r.is_err() {
        let _ = internal(conn, "ROLLBACK TO sila_request");
    }
    internal(conn, "RELEASE sila_request")?;
    r.map_err(transaction_refusal)
}

/// Turns SQLite's "not authorized" for a transaction statement into a clear policy refusal.
pub fn transaction_refusal(e: Error) -> Error {
    if e.code() == ErrorCode::PolicyDenied && e.message().contains("not authorized") {
        return Error::new(
            ErrorCode::PolicyDenied,
            "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) is not allowed in SQL: \
             use the transaction API",
        );
    }
    e
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
mod tests {
    use super::OutCounts;

    #[test]
    fn out_counts_track_readers_per_generation_and_forget_zeros() {
        let mut out = OutCounts::default();
        assert_eq!(out.remove_one(7), None, "nothing was counted");
        out.add(7);
        out.add(7);
        out.add(8);
        assert_eq!((out.get(7), out.get(8), out.get(9)), (2, 1, 0));
        assert_eq!(out.remove_one(7), Some(1));
        assert_eq!(out.remove_one(8), Some(0));
        assert_eq!(out.get(8), 0);
        assert_eq!(out.remove_one(8), None, "a generation at zero is forgotten");
        assert_eq!(out.remove_one(7), Some(0));
        assert!(out.0.is_empty());
    }
}
