//! The read path of a database: checking readers out and back through its [`ReaderPool`]
//! (which holds the protocol: generations, leases on retired files), opening them, and
//! running queries on them.

use super::*;

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
        self.read_at(
            sql,
            params,
            stop,
            now,
            |conn| sqlite::query(conn, sql, params, limits, stop),
            |r| r.rows.len(),
        )
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
            params,
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
        params: &[Value],
        stop: &StopCheck,
        now: Duration,
        run: impl FnOnce(&Connection) -> Result<T>,
        rows_of: impl FnOnce(&T) -> usize,
    ) -> Result<T> {
        self.touch_at(now);
        let span = self.request_span("query", sql, params);
        let result = span.in_scope(|| {
            self.check_poison()?;
            // A request cancelled before it ran takes no reader. (`run` checks the deadline,
            // on the clock, before its statement starts.)
            stop.check_cancel()?;
            self.with_reader(stop, |conn, _| run(conn))
        });
        // Fail-stop for reads: a disk fault that touched this database while the read ran may
        // have dropped pages it read (Linux may drop pages whose writeback failed), so rows
        // read across it could miss acknowledged commits. They are not delivered.
        let result = result.and_then(|r| {
            self.check_poison()
                .map_err(|e| e.context("the disk failed while this read ran; its rows are not delivered"))?;
            Ok(r)
        });
        let outcome = result.as_ref().map(|r| (to_u64(rows_of(r)), 0)).map_err(|e| e.code());
        let end = self.record(sql, OpKind::Query, now, outcome);
        let rows = outcome.ok().map(|(rows, _)| rows);
        crate::trace::finish(&span, end.saturating_sub(now), outcome.map(|_| ()), rows);
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
            tagged.reading.store(ReadAges::began(self.hot.clock.monotonic()), Ordering::Release);
            let result = f(&tagged.conn, tagged.generation);
            tagged.reading.store(crate::metrics::READ_IDLE, Ordering::Release);
            self.return_reader(tagged);
            return result;
        }
        Err(Error::new(ErrorCode::Busy, "the database changed version three times during one read; retry"))
    }

    pub(super) fn checkout_reader(&self, stop: &StopCheck) -> Result<Box<Tagged>> {
        let me = thread_tag();
        let checkout = self.readers.checkout(
            me,
            self.hot.readers_max,
            || {
                let version = lock(&self.version).clone();
                (version.generation, version)
            },
            || {
                stop.check()?;
                Ok::<_, Error>(stop.remaining().min(Duration::from_millis(50)))
            },
        )?;
        let version = match checkout {
            Checkout::Idle(t) => return Ok(t),
            Checkout::Open(version) => version,
        };
        let generation = version.generation;
        match self.open_connection_on(true, version) {
            Ok(mut c) => {
                c.last_thread = me;
                Ok(c)
            }
            Err(e) => {
                if let Some(lease) = self.readers.open_failed(generation) {
                    (self.release_lease)(lease);
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
    /// file's lease so GC may collect it (the protocol: [`ReaderPool::give_back`]).
    pub(super) fn return_reader(&self, tagged: Box<Tagged>) {
        let returned = self.readers.give_back(tagged, || self.generation());
        if let Some(t) = returned.close {
            self.close_connection(t.conn, false);
        }
        if let Some(lease) = returned.release {
            (self.release_lease)(lease);
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
        let (idle, release_now) = self.readers.retire(old, old_lease);
        for t in idle {
            self.close_connection(t.conn, false);
        }
        if let Some(lease) = release_now {
            (self.release_lease)(lease);
        }
    }

    /// Counts a finished statement. `started` is a reading of the broker clock's monotonic
    /// time; the latency runs from it to now on the same clock, which is returned.
    pub(super) fn record(
        &self,
        sql: &str,
        kind: OpKind,
        started: Duration,
        outcome: std::result::Result<(u64, u64), ErrorCode>,
    ) -> Duration {
        let now = self.hot.clock.monotonic();
        let latency = now.saturating_sub(started);
        self.metrics.record(kind, latency, outcome);
        let (rows_read, rows_written) = outcome.unwrap_or((0, 0));
        let now_ms = millis(now);
        self.app.budget.charge(&self.hot.budget, now_ms, rows_read, rows_written);
        if self.hot.slow_log.observe(sql, latency, &self.config.app_id, self.config.key.db.as_str(), now_ms) {
            self.metrics.record_slow_query();
        }
        now
    }

    /// A `request` span ([`crate::trace`]) of this database.
    pub(crate) fn request_span(&self, op: &'static str, sql: &str, params: &[Value]) -> tracing::Span {
        let full = self.hot.capture_full_sql;
        crate::trace::request(&self.config.app_id, self.config.key.db.as_str(), op, sql, params, full)
    }
}
