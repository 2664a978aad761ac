//! Per-database metrics and the slow-query log.
//!
//! [`DbMetrics`] is shared by every thread that serves one database (put it in an `Arc`). Its
//! hot path is a few relaxed atomic increments plus one uncontended mutex for the latency
//! histogram (microseconds, 1 µs to 60 s, 3 significant digits; slower operations are recorded
//! as 60 s). [`DbMetrics::snapshot`] copies everything into a plain [`MetricsSnapshot`]; the
//! counters are read one by one, so a snapshot taken under load may mix operations that were
//! in flight, but every counter is exact on its own.
//!
//! [`SlowQueryLog`] keeps the last [`SLOW_QUERY_LOG_ENTRIES_MAX`] statements that took at
//! least `slow_query_threshold`, with their SQL redacted by [`crate::redact::redact_sql`]
//! unless the developer flag `capture_full_sql` is set. The broker owns one per database and
//! calls [`SlowQueryLog::observe`] after each statement; only slow statements pay for
//! redaction.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map};

use crate::redact::{redact_sql, truncate_with_marker};
use crate::ErrorCode;

/// The lowest latency the histogram tells apart, in microseconds.
pub const LATENCY_US_MIN: u64 = 1;
/// The highest latency the histogram records, in microseconds (60 s); slower ones count as this.
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits the latency histogram keeps: 2 is within 1% of every latency
/// and about 20 KiB a histogram (3 digits took about 140 KiB, eight of them per database:
/// the largest part of an open database's memory).
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 2;

/// Upper bounds, in microseconds, of the latency buckets [`MetricsSnapshot::latency_buckets`]
/// reports (Prometheus `le`, from 100 µs to the histogram's 60 s ceiling).
pub const LATENCY_BUCKETS_US: [u64; 17] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    LATENCY_US_MAX,
];

/// How many entries the slow-query log keeps; older ones are dropped first.
pub const SLOW_QUERY_LOG_ENTRIES_MAX: usize = 128;
/// The default `slow_query_threshold`.
pub const SLOW_QUERY_THRESHOLD_DEFAULT: Duration = Duration::from_millis(200);
/// The most bytes of SQL a slow-query entry keeps when `capture_full_sql` is on.
pub const SLOW_QUERY_FULL_SQL_BYTES_MAX: usize = 64 * 1024;

const ERROR_CODE_COUNT: usize = ErrorCode::ALL.len();

/// The kind of operation a latency belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A statement that returns rows (`query`).
    Query,
    /// A statement or script that changes the database (`exec`, batch, migration step).
    Exec,
}

/// Thread-safe counters and the latency histogram of one database.
#[derive(Debug)]
pub struct DbMetrics {
    errors: [AtomicU64; ERROR_CODE_COUNT],
    checkpoints: AtomicU64,
    checkpoints_failed: AtomicU64,
    checkpoints_incomplete: AtomicU64,
    checkpoint_pages: AtomicU64,
    checkpoint_us: AtomicU64,
    active_connections: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    slow_queries: AtomicU64,
    snapshots_by_copy: AtomicU64,
    snapshots_by_backup: AtomicU64,
    reflinks: AtomicU64,
    undo_sums_while_copying: AtomicU64,
    /// Per-operation counters and the latency histogram, in shards picked per thread, so
    /// threads serving the same database do not contend on one lock or cache line.
    shards: [Shard; LATENCY_SHARDS],
}

/// One shard of a database's per-operation metrics: the counters every request updates and
/// its latency histogram, under a lock only the threads that picked this shard take. Aligned
/// to 128 bytes so two shards never share a cache line (or an adjacent-line prefetch pair).
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<ShardData>);

#[derive(Debug, Default)]
struct ShardData {
    /// Made when this shard records its first latency (shards are picked per thread, so a
    /// database served by two threads has two): an idle database holds none.
    histogram: Option<Histogram<u64>>,
    queries: u64,
    execs: u64,
    rows_read: u64,
    rows_written: u64,
}

/// Shards of each database's per-operation metrics (see [`DbMetrics`]).
pub const LATENCY_SHARDS: usize = 8;

/// The shard this thread records into: threads take shards round-robin on first use.
fn shard_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % LATENCY_SHARDS;
    }
    SHARD.with(|s| *s)
}

impl Default for DbMetrics {
    fn default() -> DbMetrics {
        DbMetrics::new()
    }
}

impl DbMetrics {
    /// All counters at zero, the histogram empty.
    pub fn new() -> DbMetrics {
        DbMetrics {
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            checkpoints: AtomicU64::new(0),
            checkpoints_failed: AtomicU64::new(0),
            checkpoints_incomplete: AtomicU64::new(0),
            checkpoint_pages: AtomicU64::new(0),
            checkpoint_us: AtomicU64::new(0),
            active_connections: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            slow_queries: AtomicU64::new(0),
            snapshots_by_copy: AtomicU64::new(0),
            snapshots_by_backup: AtomicU64::new(0),
            reflinks: AtomicU64::new(0),
            undo_sums_while_copying: AtomicU64::new(0),
            shards: std::array::from_fn(|_| Shard(Mutex::new(ShardData::default()))),
        }
    }

    /// Records one finished operation: its kind, how long it took, and either the rows it read
    /// and wrote or the code it failed with.
    pub fn record(&self, kind: OpKind, latency: Duration, outcome: Result<(u64, u64), ErrorCode>) {
        if let Err(code) = outcome {
            self.record_error(code);
        }
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let Some(mut shard) = self.shard(shard_index()) else { return };
        match kind {
            OpKind::Query => shard.queries += 1,
            OpKind::Exec => shard.execs += 1,
        }
        if let Ok((rows_read, rows_written)) = outcome {
            shard.rows_read = shard.rows_read.saturating_add(rows_read);
            shard.rows_written = shard.rows_written.saturating_add(rows_written);
        }
        if shard.histogram.is_none() {
            shard.histogram = new_latency_histogram();
        }
        if let Some(histogram) = shard.histogram.as_mut() {
            histogram.saturating_record(latency_us.clamp(LATENCY_US_MIN, LATENCY_US_MAX));
        }
    }

    /// Counts an error that did not come from a timed operation (admission, open…).
    pub fn record_error(&self, code: ErrorCode) {
        let slot = usize::try_from(code.as_u32()).ok().and_then(|n| n.checked_sub(1));
        if let Some(counter) = slot.and_then(|i| self.errors.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a statement the slow-query log kept (see [`SlowQueryLog::observe`]).
    pub fn record_slow_query(&self) {
        self.slow_queries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a WAL checkpoint that copied `pages` pages into the database file and took
    /// `took`.
    pub fn record_checkpoint(&self, pages: u64, took: Duration) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.checkpoint_pages.fetch_add(pages, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let _ = self.checkpoint_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(us));
    }

    /// Counts a checkpoint that failed (IO, or the WAL was busy).
    pub fn record_checkpoint_failed(&self) {
        self.checkpoints_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a checkpoint that ran but could not fold every frame (a reader held some).
    pub fn record_checkpoint_incomplete(&self) {
        self.checkpoints_incomplete.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a snapshot or copy of the live file taken by the pinned file copy (`true`) or by
    /// SQLite's online backup API (`false`, the fallback).
    pub fn record_snapshot_copy(&self, by_file_copy: bool) {
        let counter = if by_file_copy { &self.snapshots_by_copy } else { &self.snapshots_by_backup };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a file copy (snapshot, export, restore) made as a reflink clone.
    pub fn record_reflink(&self) {
        self.reflinks.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a restore whose undo snapshot's checksum was computed while the snapshot was
    /// being copied (nothing was written in between), not read again after the flip.
    pub fn record_undo_sum_while_copying(&self) {
        self.undo_sums_while_copying.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds page-cache hits and misses (SQLite's `SQLITE_DBSTATUS_CACHE_HIT` / `_MISS` deltas).
    pub fn record_cache(&self, hits: u64, misses: u64) {
        self.cache_hits.fetch_add(hits, Ordering::Relaxed);
        self.cache_misses.fetch_add(misses, Ordering::Relaxed);
    }

    /// Raises the open-connections gauge by one.
    pub fn connection_opened(&self) {
        self.active_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Lowers the open-connections gauge by one; never below zero.
    pub fn connection_closed(&self) {
        let _ =
            self.active_connections.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// A copy of every counter and the latency percentiles.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let errors = ErrorCode::ALL
            .iter()
            .zip(self.errors.iter())
            .map(|(code, counter)| (*code, counter.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let merged = self.merged();
        let histogram = merged.as_ref().filter(|h| !h.is_empty());
        let (mut queries, mut execs, mut rows_read, mut rows_written) = (0u64, 0u64, 0u64, 0u64);
        for i in 0..LATENCY_SHARDS {
            if let Some(s) = self.shard(i) {
                queries = queries.saturating_add(s.queries);
                execs = execs.saturating_add(s.execs);
                rows_read = rows_read.saturating_add(s.rows_read);
                rows_written = rows_written.saturating_add(s.rows_written);
            }
        }
        let quantile = |q: f64| histogram.map_or(0, |h| h.value_at_quantile(q));
        let (latency_buckets, latency_us_sum) = histogram
            .map_or_else(|| (LATENCY_BUCKETS_US.iter().map(|b| (*b, 0)).collect(), 0), latency_buckets);
        MetricsSnapshot {
            queries,
            execs,
            errors,
            rows_read,
            rows_written,
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            checkpoints_failed: self.checkpoints_failed.load(Ordering::Relaxed),
            checkpoints_incomplete: self.checkpoints_incomplete.load(Ordering::Relaxed),
            checkpoint_pages: self.checkpoint_pages.load(Ordering::Relaxed),
            checkpoint_us: self.checkpoint_us.load(Ordering::Relaxed),
            active_connections: self.active_connections.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.cache_misses.load(Ordering::Relaxed),
            slow_queries: self.slow_queries.load(Ordering::Relaxed),
            snapshots_by_copy: self.snapshots_by_copy.load(Ordering::Relaxed),
            snapshots_by_backup: self.snapshots_by_backup.load(Ordering::Relaxed),
            reflinks: self.reflinks.load(Ordering::Relaxed),
            undo_sums_while_copying: self.undo_sums_while_copying.load(Ordering::Relaxed),
            latency_count: histogram.map_or(0, Histogram::len),
            latency_us_p50: quantile(0.50),
            latency_us_p95: quantile(0.95),
            latency_us_p99: quantile(0.99),
            latency_us_max: histogram.map_or(0, Histogram::max),
            latency_buckets,
            latency_us_sum,
        }
    }

    fn shard(&self, i: usize) -> Option<MutexGuard<'_, ShardData>> {
        // A panic while holding the lock cannot leave the histogram half-updated in a way that
        // matters for metrics, so a poisoned lock is simply taken over.
        self.shards.get(i % LATENCY_SHARDS).map(|m| m.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Every shard added into one histogram.
    fn merged(&self) -> Option<Histogram<u64>> {
        let mut merged = new_latency_histogram()?;
        for i in 0..LATENCY_SHARDS {
            if let Some(h) = self.shard(i).as_ref().and_then(|g| g.histogram.as_ref()) {
                // Same bounds on every shard, so adding cannot fail; a failure would only
                // leave these samples out of the snapshot.
                let _ = merged.add(h);
            }
        }
        Some(merged)
    }
}

/// The histogram's operations per bucket of [`LATENCY_BUCKETS_US`] (not cumulative; each
/// recorded value, at the histogram's 2-digit precision, in the first bucket that holds it)
/// and the sum of their latencies in microseconds.
fn latency_buckets(h: &Histogram<u64>) -> (Vec<(u64, u64)>, u64) {
    let mut buckets: Vec<(u64, u64)> = LATENCY_BUCKETS_US.iter().map(|b| (*b, 0)).collect();
    let mut sum = 0u64;
    for v in h.iter_recorded() {
        let (value, count) = (v.value_iterated_to(), v.count_at_value());
        sum = sum.saturating_add(value.saturating_mul(count));
        // Values are recorded at most at LATENCY_US_MAX, the last bound.
        let at = LATENCY_BUCKETS_US.iter().position(|b| value <= *b).unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        if let Some(bucket) = buckets.get_mut(at) {
            bucket.1 = bucket.1.saturating_add(count);
        }
    }
    (buckets, sum)
}

fn new_latency_histogram() -> Option<Histogram<u64>> {
    // The bounds are constants hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5),
    // so this is always `Some`; a test pins that.
    Histogram::new_with_bounds(LATENCY_US_MIN, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS).ok()
}

/// When each read now running on a database began. A read holds its snapshot of the WAL
/// until it ends, and no checkpoint may copy past the oldest one: the age of the oldest read
/// is how long checkpoints may have been held back (starvation grows the WAL).
#[derive(Debug, Default)]
pub struct ReadAges {
    /// One cell per reader connection (weak: a closed reader's cell goes away with it).
    cells: Mutex<Vec<Weak<AtomicU64>>>,
}

impl ReadAges {
    /// A cell for a new reader connection: it stores [`READ_IDLE`] or when its read began
    /// ([`ReadAges::began`]). Cells of closed readers are dropped here, so the list holds at
    /// most one more than the readers open.
    pub fn cell(&self) -> Arc<AtomicU64> {
        let cell = Arc::new(AtomicU64::new(READ_IDLE));
        let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        cells.retain(|c| c.strong_count() > 0);
        cells.push(Arc::downgrade(&cell));
        cell
    }

    /// The value a cell stores when its read began at `now` (the clock's monotonic time).
    pub fn began(now: Duration) -> u64 {
        u64::try_from(now.as_micros()).unwrap_or(u64::MAX).max(1)
    }

    /// How long the oldest read running at `now` has run (zero when none runs).
    pub fn oldest(&self, now: Duration) -> Duration {
        let cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest = cells
            .iter()
            .filter_map(Weak::upgrade)
            .map(|c| c.load(Ordering::Acquire))
            .filter(|began| *began != READ_IDLE)
            .min();
        oldest.map_or(Duration::ZERO, |began| now.saturating_sub(Duration::from_micros(began)))
    }
}

/// What a [`ReadAges`] cell stores while its reader runs no read.
pub const READ_IDLE: u64 = 0;

/// A point-in-time copy of a database's [`DbMetrics`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Queries run (successful or not).
    pub queries: u64,
    /// Execs run (successful or not).
    pub execs: u64,
    /// Errors by code, in code order; codes that never happened are left out.
    pub errors: Vec<(ErrorCode, u64)>,
    /// Rows returned by successful operations.
    pub rows_read: u64,
    /// Rows changed by successful operations.
    pub rows_written: u64,
    /// WAL checkpoints run.
    pub checkpoints: u64,
    /// WAL checkpoints that failed (IO, or the WAL was busy).
    pub checkpoints_failed: u64,
    /// Checkpoints of the broker that ran but left frames in the WAL, because a reader was
    /// still on an older state: growing steadily, checkpoints are starved and the WAL grows.
    pub checkpoints_incomplete: u64,
    /// Pages the successful checkpoints copied into the database file.
    pub checkpoint_pages: u64,
    /// Time the successful checkpoints took, in microseconds.
    pub checkpoint_us: u64,
    /// Connections open now.
    pub active_connections: u64,
    /// Page-cache hits.
    pub cache_hits: u64,
    /// Page-cache misses.
    pub cache_misses: u64,
    /// Statements at or over the slow-query threshold.
    pub slow_queries: u64,
    /// Snapshots made from the file itself: a pinned byte copy of the live file, or (for the
    /// undo of a restore) the replaced file kept by rename.
    pub snapshots_by_copy: u64,
    /// Copies of the live file made by SQLite's online backup API (when the WAL could not
    /// be fully checkpointed first).
    pub snapshots_by_backup: u64,
    /// File copies (snapshot, export, restore) made as reflink clones, sharing blocks with
    /// their source (filesystems with reflinks only, e.g. XFS, Btrfs).
    pub reflinks: u64,
    /// Restores whose undo snapshot was checksummed while the snapshot was copied, on a
    /// second thread, because nothing was written to the database in between (otherwise the
    /// replaced file is read once more after the flip).
    pub undo_sums_while_copying: u64,
    /// Operations in the latency histogram.
    pub latency_count: u64,
    /// Median latency in microseconds (0 when nothing was recorded).
    pub latency_us_p50: u64,
    /// 95th percentile latency in microseconds.
    pub latency_us_p95: u64,
    /// 99th percentile latency in microseconds.
    pub latency_us_p99: u64,
    /// Highest latency in microseconds.
    pub latency_us_max: u64,
    /// Operations per latency bucket: `(upper bound in µs, count)` for each bound of
    /// [`LATENCY_BUCKETS_US`], not cumulative.
    pub latency_buckets: Vec<(u64, u64)>,
    /// Sum of the recorded latencies in microseconds (at the histogram's precision).
    pub latency_us_sum: u64,
}

impl MetricsSnapshot {
    /// The total of all error counts.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(|(_, n)| *n).sum()
    }

    /// The count for one error code.
    pub fn error_count(&self, code: ErrorCode) -> u64 {
        self.errors.iter().find(|(c, _)| *c == code).map_or(0, |(_, n)| *n)
    }

    /// The snapshot as JSON; `errors` is an object from code name (`"TIMEOUT"`) to count.
    pub fn to_json(&self) -> serde_json::Value {
        let errors: Map<String, serde_json::Value> =
            self.errors.iter().map(|(code, n)| (code.name().to_owned(), json!(n))).collect();
        json!({
            "queries": self.queries,
            "execs": self.execs,
            "errors": errors,
            "errors_total": self.errors_total(),
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "checkpoints": self.checkpoints,
            "checkpoints_failed": self.checkpoints_failed,
            "checkpoints_incomplete": self.checkpoints_incomplete,
            "checkpoint_pages": self.checkpoint_pages,
            "checkpoint_us": self.checkpoint_us,
            "active_connections": self.active_connections,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "slow_queries": self.slow_queries,
            "snapshots_by_copy": self.snapshots_by_copy,
            "snapshots_by_backup": self.snapshots_by_backup,
            "reflinks": self.reflinks,
            "undo_sums_while_copying": self.undo_sums_while_copying,
            "latency_count": self.latency_count,
            "latency_us_p50": self.latency_us_p50,
            "latency_us_p95": self.latency_us_p95,
            "latency_us_p99": self.latency_us_p99,
            "latency_us_max": self.latency_us_max,
        })
    }
}

/// One statement in the slow-query log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowQueryEntry {
    /// The SQL, redacted unless `capture_full_sql` was set.
    pub sql: String,
    /// How long the statement took.
    pub latency: Duration,
    /// The app that ran it.
    pub app: String,
    /// The database (logical name) it ran on.
    pub db: String,
    /// When it finished, in milliseconds of the caller's clock (passed in, never read here).
    pub at_ms: u64,
}

impl SlowQueryEntry {
    /// `{"sql":…,"latency_us":…,"app":…,"db":…,"at_ms":…}`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "sql": self.sql,
            "latency_us": u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX),
            "app": self.app,
            "db": self.db,
            "at_ms": self.at_ms,
        })
    }
}

/// A bounded ring of the most recent slow statements of one database.
#[derive(Debug)]
pub struct SlowQueryLog {
    slow_query_threshold: Duration,
    capture_full_sql: bool,
    entries: Mutex<VecDeque<SlowQueryEntry>>,
}

impl Default for SlowQueryLog {
    fn default() -> SlowQueryLog {
        SlowQueryLog::new(SLOW_QUERY_THRESHOLD_DEFAULT, false)
    }
}

impl SlowQueryLog {
    /// A log that keeps statements taking at least `slow_query_threshold`. With
    /// `capture_full_sql` (a developer flag: it records data) the SQL is kept unredacted, cut
    /// at [`SLOW_QUERY_FULL_SQL_BYTES_MAX`] bytes.
    pub fn new(slow_query_threshold: Duration, capture_full_sql: bool) -> SlowQueryLog {
        SlowQueryLog {
            slow_query_threshold,
            capture_full_sql,
            entries: Mutex::new(VecDeque::with_capacity(SLOW_QUERY_LOG_ENTRIES_MAX)),
        }
    }

    /// The threshold: statements at or above it are slow.
    pub fn slow_query_threshold(&self) -> Duration {
        self.slow_query_threshold
    }

    /// Whether a statement of this latency is slow (`latency >= slow_query_threshold`).
    pub fn is_slow(&self, latency: Duration) -> bool {
        latency >= self.slow_query_threshold
    }

    /// Logs the statement when it was slow, dropping the oldest entry when the log is full;
    /// returns whether it was logged (so the caller can call [`DbMetrics::record_slow_query`]).
    pub fn observe(&self, sql: &str, latency: Duration, app: &str, db: &str, at_ms: u64) -> bool {
        if !self.is_slow(latency) {
            return false;
        }
        let sql = if self.capture_full_sql {
            truncate_with_marker(sql, SLOW_QUERY_FULL_SQL_BYTES_MAX)
        } else {
            redact_sql(sql)
        };
        let entry = SlowQueryEntry { sql, latency, app: app.to_owned(), db: db.to_owned(), at_ms };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= SLOW_QUERY_LOG_ENTRIES_MAX {
            entries.pop_front();
        }
        entries.push_back(entry);
        true
    }

    /// The logged statements, oldest first.
    pub fn entries(&self) -> Vec<SlowQueryEntry> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// The entries as a JSON array, oldest first.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.entries().iter().map(SlowQueryEntry::to_json).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_oldest_running_read_is_the_age_reported() {
        let ages = ReadAges::default();
        let (a, b) = (ages.cell(), ages.cell());
        let at = |s: u64| Duration::from_secs(s);
        assert_eq!(ages.oldest(at(100)), Duration::ZERO, "no read runs");
        a.store(ReadAges::began(at(10)), Ordering::Release);
        b.store(ReadAges::began(at(40)), Ordering::Release);
        assert_eq!(ages.oldest(at(100)), at(90));
        a.store(READ_IDLE, Ordering::Release);
        assert_eq!(ages.oldest(at(100)), at(60));
        // A read that began at time zero still counts (as begun a microsecond later); a
        // closed reader's cell goes away.
        a.store(ReadAges::began(Duration::ZERO), Ordering::Release);
        assert_eq!(ages.oldest(at(100)), at(100) - Duration::from_micros(1));
        drop(a);
        let _c = ages.cell();
        assert_eq!(ages.cells.lock().unwrap().len(), 2, "the closed reader's cell was dropped");
        assert_eq!(ages.oldest(at(100)), at(60));
    }

    #[test]
    fn counts_by_kind_outcome_and_code() {
        let m = DbMetrics::new();
        m.record(OpKind::Query, Duration::from_micros(100), Ok((10, 0)));
        m.record(OpKind::Exec, Duration::from_micros(200), Ok((0, 3)));
        m.record(OpKind::Query, Duration::from_micros(300), Err(ErrorCode::Timeout));
        m.record(OpKind::Exec, Duration::from_micros(400), Err(ErrorCode::Timeout));
        m.record_error(ErrorCode::Busy);
        m.record_error(ErrorCode::NotFound);
        m.record_error(ErrorCode::Internal);
        m.record_checkpoint(7, Duration::from_micros(1_500));
        m.record_checkpoint(3, Duration::from_micros(500));
        m.record_cache(5, 2);
        m.record_slow_query();
        let s = m.snapshot();
        assert_eq!((s.queries, s.execs, s.rows_read, s.rows_written), (2, 2, 10, 3));
        assert_eq!(s.error_count(ErrorCode::Timeout), 2);
        assert_eq!(s.error_count(ErrorCode::Busy), 1);
        assert_eq!(s.error_count(ErrorCode::NotFound), 1, "first code");
        assert_eq!(s.error_count(ErrorCode::Internal), 1, "last code");
        assert_eq!(s.error_count(ErrorCode::Corrupt), 0);
        assert_eq!(s.errors_total(), 5);
        assert_eq!((s.checkpoints, s.cache_hits, s.cache_misses, s.slow_queries), (2, 5, 2, 1));
        assert_eq!((s.checkpoint_pages, s.checkpoint_us), (10, 2_000));
        assert_eq!(s.latency_count, 4);
        // Within the histogram's 1% (two significant digits): 400 falls in a bucket of 2.
        assert!((400..=404).contains(&s.latency_us_max), "{}", s.latency_us_max);

        let j = s.to_json();
        assert_eq!(j["errors"]["TIMEOUT"], 2);
        assert_eq!(j["errors"]["BUSY"], 1);
        assert!(j["errors"].get("CORRUPT").is_none());
        assert_eq!(j["latency_us_max"], s.latency_us_max);
        assert_eq!(j["queries"], 2);
    }

    #[test]
    fn latency_percentiles_and_bounds() {
        assert!(new_latency_histogram().is_some());
        let m = DbMetrics::new();
        assert_eq!(m.snapshot().latency_us_p99, 0, "empty histogram reports zeros");
        for us in 1..=100 {
            m.record(OpKind::Query, Duration::from_micros(us), Ok((1, 0)));
        }
        let s = m.snapshot();
        assert_eq!(s.latency_us_p50, 50);
        assert_eq!(s.latency_us_p95, 95);
        assert_eq!(s.latency_us_p99, 99);
        assert_eq!(s.latency_us_max, 100);
        // Below the lowest bucket counts as 1 µs; beyond 60 s counts as 60 s.
        m.record(OpKind::Query, Duration::ZERO, Ok((0, 0)));
        m.record(OpKind::Query, Duration::from_secs(3600), Ok((0, 0)));
        let s = m.snapshot();
        assert_eq!(s.latency_count, 102);
        assert!(
            s.latency_us_max >= LATENCY_US_MAX && s.latency_us_max <= LATENCY_US_MAX + LATENCY_US_MAX / 100
        );
    }

    #[test]
    fn connection_gauge_never_goes_negative() {
        let m = DbMetrics::new();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        assert_eq!(m.snapshot().active_connections, 1);
        m.connection_closed();
        m.connection_closed();
        assert_eq!(m.snapshot().active_connections, 0);
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let m = Arc::new(DbMetrics::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.record(OpKind::Exec, Duration::from_micros(10), Ok((0, 1)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = m.snapshot();
        assert_eq!((s.execs, s.rows_written, s.latency_count), (4000, 4000, 4000));
    }

    #[test]
    fn slow_query_threshold_is_inclusive() {
        let log = SlowQueryLog::default();
        assert_eq!(log.slow_query_threshold(), Duration::from_millis(200));
        let just_under = Duration::from_millis(200) - Duration::from_nanos(1);
        assert!(!log.observe("SELECT 1", just_under, "app", "db", 1));
        assert!(log.entries().is_empty());
        assert!(log.observe(
            "SELECT * FROM t WHERE secret = 'hunter2' AND n = 42",
            Duration::from_millis(200),
            "app",
            "main",
            7
        ));
        let entries = log.entries();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.sql, "SELECT * FROM t WHERE secret = ? AND n = ?");
        assert_eq!(
            (e.app.as_str(), e.db.as_str(), e.at_ms, e.latency),
            ("app", "main", 7, Duration::from_millis(200))
        );
        assert_eq!(log.to_json()[0]["latency_us"], 200_000);
    }

    #[test]
    fn slow_query_ring_keeps_the_newest() {
        let log = SlowQueryLog::new(Duration::ZERO, false);
        let total = SLOW_QUERY_LOG_ENTRIES_MAX + 5;
        for i in 0..total {
            assert!(log.observe("SELECT 1", Duration::from_millis(1), "a", "d", i as u64));
        }
        let entries = log.entries();
        assert_eq!(entries.len(), SLOW_QUERY_LOG_ENTRIES_MAX);
        assert_eq!(entries.first().unwrap().at_ms, 5, "the 5 oldest were dropped");
        assert_eq!(entries.last().unwrap().at_ms, total as u64 - 1);
        // Exactly full: nothing dropped yet.
        let log = SlowQueryLog::new(Duration::ZERO, false);
        for i in 0..SLOW_QUERY_LOG_ENTRIES_MAX {
            log.observe("SELECT 1", Duration::ZERO, "a", "d", i as u64);
        }
        assert_eq!(log.entries().first().unwrap().at_ms, 0);
    }

    #[test]
    fn capture_full_sql_keeps_data_but_stays_bounded() {
        let log = SlowQueryLog::new(Duration::ZERO, true);
        log.observe("SELECT 'hunter2'", Duration::ZERO, "a", "d", 0);
        let huge = format!("SELECT '{}'", "é".repeat(SLOW_QUERY_FULL_SQL_BYTES_MAX));
        log.observe(&huge, Duration::ZERO, "a", "d", 1);
        let entries = log.entries();
        assert_eq!(entries[0].sql, "SELECT 'hunter2'");
        assert!(entries[1].sql.len() <= SLOW_QUERY_FULL_SQL_BYTES_MAX);
        assert!(entries[1].sql.ends_with('…'));
    }
}
