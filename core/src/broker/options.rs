//! The broker's tunables: every limit with its name, its default and (in the tests) its
//! boundary.

use super::*;

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
    /// Result caps per query (defaults 100 000 rows, 32 MiB of values) → `ResultTooLarge`.
    pub query_limits: QueryLimits,
    /// Requests an app may have in flight at once (default 64). A request that finds them
    /// all taken waits for one to be answered, at most `admission_wait`, then gets `Busy`.
    pub max_concurrent_requests_per_app: usize,
    /// Longest a request waits for one of its app's `max_concurrent_requests_per_app` slots
    /// (default 5 ms; zero refuses at once). A request's slot is given back before it is
    /// answered, so a client with one request at a time never waits.
    pub admission_wait: Duration,
    /// SQLite's busy timeout, in milliseconds (default 5000).
    pub busy_timeout_ms: u32,
    /// Statements slower than this go to the slow-query log (default 200 ms).
    pub slow_query_threshold: Duration,
    /// Log full SQL in the slow-query log, and full SQL with its parameters in trace spans
    /// ([`crate::trace`]), instead of redacted SQL and no parameters (development only: it
    /// puts app data in logs; default false).
    pub capture_full_sql: bool,
    /// After a commit, a WAL larger than this is checkpointed (PASSIVE; default 4 MiB). A
    /// tier may checkpoint sooner (`TierLimits::wal_checkpoint_kib`: 1 MiB for `basic`); this
    /// caps every tier.
    pub wal_checkpoint_bytes: u64,
    /// A WAL larger than this is checkpointed with TRUNCATE (default 64 MiB).
    pub wal_truncate_bytes: u64,
    /// A checkpoint that leaves frames in a WAL larger than this (reads held them) raises
    /// the checkpoint-starvation alarm: an audit record, at most once a minute per database
    /// (default 64 MiB).
    pub wal_starvation_alarm_bytes: u64,
    /// Databases unused this long close their connections (default 30 s).
    pub idle_timeout: Duration,
    /// Largest one anonymous temporary file may grow (a sort, DISTINCT or GROUP BY spilling
    /// past the page cache; default 256 MiB) → `QuotaExceeded` naming this option.
    pub temp_file_bytes_max: u64,
    /// Largest all anonymous temporary files of the workspace may be together (default
    /// 1 GiB) → `QuotaExceeded` naming this option.
    pub temp_bytes_total_max: u64,
    /// Statements an app may run per minute, across its databases (default 1 200 000, i.e.
    /// 20 000 a second sustained) → `BudgetExceeded`. A token bucket: bursts up to
    /// `budget_burst` of this rate, then this rate (see [`budget`]). `u64::MAX` disables the
    /// budget.
    pub statements_per_minute: u64,
    /// Rows an app's queries may return per minute (default 10 000 000) → `BudgetExceeded`.
    pub rows_read_per_minute: u64,
    /// Rows an app may insert, update or delete per minute (default 1 000 000) →
    /// `BudgetExceeded`.
    pub rows_written_per_minute: u64,
    /// How far above its per-minute rates an app may burst: each budget's bucket holds this
    /// long of its rate, at least one statement (default 5 s). A full minute would let an app
    /// that was quiet spend a minute's allowance at once while its neighbours wait.
    pub budget_burst: Duration,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        // Asked once per process: the answer reads the cgroup's CPU quota from /proc, which
        // cost about as much as the rest of opening a workspace.
        static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
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
            admission_wait: Duration::from_millis(5),
            busy_timeout_ms: 5000,
            slow_query_threshold: Duration::from_millis(200),
            capture_full_sql: false,
            wal_checkpoint_bytes: 4 * 1024 * 1024,
            wal_truncate_bytes: 64 * 1024 * 1024,
            wal_starvation_alarm_bytes: 64 * 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
            temp_file_bytes_max: sqlite::vfs::TEMP_FILE_BYTES_MAX_DEFAULT,
            temp_bytes_total_max: sqlite::vfs::TEMP_BYTES_TOTAL_MAX_DEFAULT,
            statements_per_minute: 1_200_000,
            rows_read_per_minute: 10_000_000,
            rows_written_per_minute: 1_000_000,
            budget_burst: Duration::from_secs(5),
        }
    }
}
