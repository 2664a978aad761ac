//! The reader pool of a database: checking readers out and back, the generation each was
//! opened on, the leases that keep a retired file alive while its readers finish, and the
//! read path itself.

use super::*;

#[derive(Default)]
pub(super) struct ReaderState {
    // Boxed on purpose (clippy's vec_box): a reader leaves and re-enters this list on every
    // request, and moving a pointer instead of a `Connection` measured ~300 fewer instructions
    // per lookup.
    #[allow(clippy::vec_box)]
    pub(super) idle: Vec<Box<Tagged>>,
    pub(super) open: usize,
    /// Checked-out readers by file generation.
    pub(super) out: OutCounts,
    /// Leases on retired files that readers still use, by generation.
    pub(super) retired: Vec<(u64, LeaseId)>,
    /// Threads waiting for a reader to come back (so a return wakes someone only if needed).
    pub(super) waiters: usize,
}

/// Checked-out readers per file generation. Rarely more than two generations are out (the
/// live one and one retired by a flip), so a short vector beats a hash map inside the reader
/// lock, which every read takes twice.
///
/// Public for the loom models of the reader leases (`sim/tests/loom_broker.rs`), which count
/// with this type rather than a copy of it.
#[derive(Debug, Default)]
pub struct OutCounts(Vec<(u64, usize)>);

impl OutCounts {
    /// Counts one more reader out on `generation`.
    pub fn add(&mut self, generation: u64) {
        match self.0.iter_mut().find(|(g, _)| *g == generation) {
            Some((_, n)) => *n += 1,
            None => self.0.push((generation, 1)),
        }
    }

    /// Counts one reader of `generation` back; returns how many are still out on it (`None`
    /// if none was counted). A generation at zero is forgotten.
    pub fn remove_one(&mut self, generation: u64) -> Option<usize> {
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
    pub fn get(&self, generation: u64) -> usize {
        self.0.iter().find(|(g, _)| *g == generation).map_or(0, |(_, n)| *n)
    }

    /// Whether no reader is out on any generation.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl DbShared {
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

    pub(super) fn read_at<T>(
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

    pub(super) fn with_reader<T>(
        &self,
        stop: &StopCheck,
        f: impl FnOnce(&Connection, u64) -> Result<T>,
    ) -> Result<T> {
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

    pub(super) fn checkout_reader(&self, stop: &StopCheck) -> Result<Box<Tagged>> {
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
    pub(super) fn return_reader(&self, tagged: Box<Tagged>) {
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
    pub(super) fn record(
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
}

#[cfg(test)]
mod tests {
    use super::OutCounts;

    #[test]
    pub(super) fn out_counts_track_readers_per_generation_and_forget_zeros() {
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
