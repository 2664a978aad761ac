//! The writer of a database: leading the write queue ([`super::queue`] holds its protocol),
//! group commit (a savepoint per request), transactions, the quiesce gate, and the fail-stop
//! check before every acknowledgement.

use super::*;

/// A write waiting for the writer.
pub enum WriteJob {
    /// One statement, group-committed with others.
    Exec(ExecRequest),
    /// A whole transaction, run alone by the leader.
    Transaction(Box<dyn FnOnce(&Connection) + Send>),
    /// A blocking caller's turn: the leader hands the writer (and leadership) over to the
    /// caller's own thread, which runs its transaction there.
    Gate(Arc<Gate>),
}

/// One `exec` (or script) in the write queue.
pub struct ExecRequest {
    /// The statement, or the statements of a script.
    pub sql: String,
    /// Whether `sql` is a script ([`sqlite::execute_script`]): any number of statements, no
    /// parameters, run as one atomic request.
    pub script: bool,
    /// Its parameters.
    pub params: Vec<Value>,
    /// Deadline and cancellation.
    pub stop: StopCheck,
    /// When it was submitted, on the broker clock's monotonic time (latency is measured
    /// from here).
    pub submitted: Duration,
    /// Where the answer goes.
    pub reply: Completer<ExecResult>,
    /// The admission slot, given back just before the request is answered.
    pub admission: Admission,
    /// Its `request` span ([`crate::trace`]), closed when it is answered.
    pub span: tracing::Span,
}

impl ExecRequest {
    /// Answers the request: gives its slot back, closes its span with the outcome, then
    /// delivers `r`. `now` is the broker clock's monotonic time.
    fn answer(self, r: Result<ExecResult>, now: Duration) {
        let ExecRequest { admission, span, submitted, reply, .. } = self;
        // The slot first: a caller answered may submit again at once, and must find it.
        drop(admission);
        let outcome = r.as_ref().map(|_| ()).map_err(|e| e.code());
        let rows = r.as_ref().ok().map(|x| x.changes);
        crate::trace::finish(&span, now.saturating_sub(submitted), outcome, rows);
        drop(span);
        reply.complete(r);
    }
}

impl QueuedWrite for WriteJob {
    fn class(&self) -> JobClass {
        match self {
            WriteJob::Exec(_) => JobClass::Groupable,
            WriteJob::Transaction(_) => JobClass::Alone,
            WriteJob::Gate(_) => JobClass::Gate,
        }
    }

    fn open_gate(&self) -> bool {
        match self {
            WriteJob::Gate(gate) => gate.open(),
            _ => false,
        }
    }
}

impl DbShared {
    // ----- writes ------------------------------------------------------------------------

    /// Queues a write. If the writer is idle, the caller becomes the leader: `inline` leads
    /// on this thread, otherwise a worker leads.
    pub fn submit_write(self: &Arc<Self>, job: WriteJob, inline: bool) -> Result<()> {
        self.touch();
        self.check_writable()?;
        let broker = self.broker()?;
        let max = broker.options.write_queue_max;
        let lead = self.writer.submit(job, max).map_err(|full| {
            Error::new(
                ErrorCode::Busy,
                format!("the write queue holds {} requests; write_queue_max is {max}", full.len),
            )
        })?;
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
    pub(super) fn hand_off(self: &Arc<Self>, broker: &BrokerShared) {
        let db = self.clone();
        let job: executor::Job = Box::new(move || db.lead());
        if let Err(job) = broker.executor.spawn(self.config.key.app, job) {
            job();
        }
    }

    /// Leads one turn: one batch of execs, one transaction, or hands the writer to a gate;
    /// then hands off to a worker or steps down.
    pub(super) fn lead(self: &Arc<Self>) {
        let Ok(broker) = self.broker() else {
            self.writer.abandon();
            return;
        };
        let Some((batch, conn)) = self.writer.next_turn(broker.options.group_commit_max_requests) else {
            return;
        };
        let conn = match conn {
            Some(c) => Ok(c),
            None => self.open_connection(false),
        };
        let conn = conn.and_then(|mut tagged| match self.sync_attachments(&mut tagged) {
            Ok(()) => Ok(tagged),
            Err(e) => {
                self.writer.keep_conn(tagged);
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
                    Ok(()) => self.writer.keep_conn(tagged),
                    Err(_) => self.close_connection(tagged.conn, false),
                }
            }
            Err(e) => {
                let now = self.hot.clock.monotonic();
                for job in batch {
                    // A dropped transaction job answers its caller through its completer.
                    if let WriteJob::Exec(req) = job {
                        req.answer(Err(e.clone()), now);
                    }
                }
            }
        }
        self.end_turn(&broker);
    }

    /// After a turn: hand off to a worker if work is queued, else step down.
    pub(super) fn end_turn(self: &Arc<Self>, broker: &BrokerShared) {
        if self.writer.end_turn() {
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
                        self.db.writer.keep_conn(t);
                    } else {
                        // The turn flipped the database: this connection is of the old file,
                        // which must not change any more (a restore keeps it as its undo
                        // snapshot), so no `PRAGMA optimize` on the way out.
                        self.db.close_connection(t.conn, false);
                    }
                }
                match self.db.broker() {
                    Ok(b) => self.db.end_turn(&b),
                    Err(_) => self.db.writer.abandon(),
                }
            }
        }
        let taken = self.writer.take_conn();
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

    pub(super) fn run_batch(&self, broker: &BrokerShared, conn: &Connection, batch: Vec<WriteJob>) {
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
                let ExecRequest { sql, script, params, stop, submitted, reply, admission, span } = req;
                reply.complete(Ok(ExecResult { changes: 1, statements: 1, ..Default::default() }));
                // The real caller is answered; the work still needs a completer to answer.
                let (_, reply) = pending::pending::<ExecResult>(CancelToken::new());
                answered.push(ExecRequest { sql, script, params, stop, submitted, reply, admission, span });
            }
            execs = answered;
        }
        let mut results = if let Err(e) = self.check_writable() {
            execs.into_iter().map(|r| (r, Err(e.clone()))).collect()
        } else {
            commit_group(conn, &self.hot.query_limits, execs)
        };
        // A checkpoint the commit triggers belongs to it: it runs before anyone is answered.
        self.after_commit(broker, conn);
        for (_, r) in &results {
            if let Err(e) = r {
                self.poison_on_io(e);
                self.note_refusal(e);
            }
        }
        if let Err(e) = self.fail_stop_window() {
            for (_, r) in results.iter_mut() {
                if r.is_ok() {
                    *r = Err(e.clone());
                }
            }
        }
        for (req, mut r) in results {
            if r.is_ok() && crate::sabotage::active(crate::sabotage::Sabotage::CancelledAfterCommit) {
                // Broken on purpose: a cancellation that came after the commit is reported.
                if let Err(e) = req.stop.check_cancel() {
                    r = Err(e);
                }
            }
            let written = r.as_ref().map(|x| (0, x.changes)).map_err(|e| e.code());
            self.record(&req.sql, OpKind::Exec, req.submitted, written);
            req.answer(r, self.hot.clock.monotonic());
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
    pub(super) fn after_commit(&self, broker: &BrokerShared, conn: &Connection) {
        let size = self.wal_frames.load(Ordering::Acquire).saturating_mul(crate::workspace::PAGE_SIZE_BYTES);
        let pinned = self.pins.load(Ordering::Acquire) > 0;
        let mode = if size > broker.options.wal_truncate_bytes && !pinned {
            "TRUNCATE"
        } else if size > broker.options.wal_checkpoint_bytes.min(self.config.wal_checkpoint_bytes) {
            "PASSIVE"
        } else {
            return;
        };
        if broker.latch.is_set() {
            return;
        }
        let _ = self.checkpoint_on(conn, &[mode]);
    }

    /// Runs a transaction job's body: BEGIN IMMEDIATE, `body`, then COMMIT on `Ok` (if the
    /// deadline has not passed) or ROLLBACK on `Err` or panic.
    pub fn run_transaction<T>(
        &self,
        conn: &Connection,
        deadline: Duration,
        body: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        let span = self.request_span("transaction", "", &[]);
        let started = self.hot.clock.monotonic();
        let result = span.in_scope(|| {
            self.check_writable()?;
            let result = self.run_transaction_inner(conn, deadline, body);
            if let Err(e) = &result {
                self.poison_on_io(e);
            }
            self.fail_stop_window()?;
            result
        });
        let took = self.hot.clock.monotonic().saturating_sub(started);
        crate::trace::finish(&span, took, result.as_ref().map(|_| ()).map_err(|e| e.code()), None);
        result
    }

    pub(super) fn run_transaction_inner<T>(
        &self,
        conn: &Connection,
        deadline: Duration,
        body: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        internal(conn, "BEGIN IMMEDIATE")?;
        // `last_insert_rowid()` and exec's rowid see the transaction's own inserts only.
        set_last_insert_rowid(conn, 0);
        let _ = sqlite::policy::take_temp_created();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let value = sqlite::policy::in_scope(sqlite::policy::Scope::Transaction, || body(conn))?;
            // Temporary objects live for the transaction (unless the manifest keeps them on
            // the connection): dropped inside it, so the commit (or the rollback) is their end.
            if !self.config.policy.temp_objects {
                drop_temp_objects(conn, true)?;
            }
            Ok(value)
        }));
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

    pub(super) fn transaction_timeout_error(&self) -> Error {
        let limit = self.broker.upgrade().map(|b| b.options.transaction_timeout).unwrap_or_default();
        Error::new(
            ErrorCode::Timeout,
            format!(
                "transaction exceeded transaction_timeout of {} ms and was rolled back",
                limit.as_millis()
            ),
        )
    }

    /// Tells the workspace about a write refused for quota (the audit trail records it, at
    /// most once a minute per database). Other errors are not its business.
    pub(crate) fn note_refusal(&self, e: &Error) {
        if e.code() == ErrorCode::QuotaExceeded {
            (self.on_event)(DbEvent::QuotaRefused(e));
        }
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
}

/// Runs a group of execs in one transaction, a savepoint each, and commits.
///
/// Some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM…) make SQLite roll back the whole
/// transaction, taking the earlier requests of the group with it. Then the failing request
/// keeps its error and the group is run again without it: at most one rerun per request, so
/// the loop is bounded by the group's size.
pub(super) fn commit_group(
    conn: &Connection,
    limits: &sqlite::QueryLimits,
    execs: Vec<ExecRequest>,
) -> Vec<(ExecRequest, Result<ExecResult>)> {
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
            let r = run_in_savepoint(conn, limits, req);
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
            if crate::sabotage::active(crate::sabotage::Sabotage::GroupAbortSkipsRerun) {
                // Broken on purpose: the rest of the group is "answered" without running.
                for (i, slot) in results.iter_mut().enumerate() {
                    if slot.is_none() || failed.get(i).is_some_and(Option::is_none) {
                        *slot = Some(Ok(ExecResult { changes: 1, statements: 1, ..Default::default() }));
                    }
                }
                if let Some((slot, Some(e))) =
                    results.iter_mut().zip(failed.iter()).find(|(_, f)| f.is_some())
                {
                    *slot = Some(Err(e.clone()));
                }
                break;
            }
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
        if crate::sabotage::active(crate::sabotage::Sabotage::GroupFailureSpreads) {
            // Broken on purpose: the first failure is everyone's answer.
            if let Some(e) = results.iter().flatten().find_map(|r| r.as_ref().err().cloned()) {
                results.iter_mut().flatten().for_each(|r| *r = Err(e.clone()));
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

/// Runs one request of a group in its own savepoint, so that its outcome is the one it would
/// have had alone (DESIGN.md invariant 11):
///
/// * an error rolls back to the savepoint: the request changed nothing, the others stand;
/// * deferred constraints (`DEFERRABLE INITIALLY DEFERRED` foreign keys, or any foreign key
///   under `PRAGMA defer_foreign_keys`) are checked at the request's own end, as its own
///   COMMIT would have: if the request leaves a violation outstanding it fails with SQLite's
///   `FOREIGN KEY constraint failed` and is rolled back, instead of failing the whole group at
///   the group's COMMIT. Every request therefore starts with none outstanding;
/// * `defer_foreign_keys`, which SQLite resets at COMMIT, is reset after a request that set
///   it, so it does not change how the next one is checked.
/// * `last_insert_rowid()` starts at 0 (a neighbour's insert never shows), and temporary
///   objects the request created are dropped when it ends.
pub(super) fn run_in_savepoint(
    conn: &Connection,
    limits: &sqlite::QueryLimits,
    req: &ExecRequest,
) -> Result<ExecResult> {
    req.stop.check()?;
    let per_request = !crate::sabotage::active(crate::sabotage::Sabotage::DeferredChecksAtGroupCommit);
    debug_assert!(
        !per_request || deferred_fk_violations(conn) == 0,
        "a request starts with a deferred violation outstanding"
    );
    internal_cached(conn, "SAVEPOINT _sila_request")?;
    set_last_insert_rowid(conn, 0);
    let _ = sqlite::policy::take_temp_created();
    let mut r = sqlite::policy::in_scope(sqlite::policy::Scope::Request, || {
        if req.script {
            sqlite::execute_script(conn, &req.sql, &req.stop)
        } else {
            sqlite::execute(conn, &req.sql, &req.params, limits, &req.stop)
        }
    });
    if conn.is_autocommit() {
        // SQLite already rolled back the whole transaction; the savepoint is gone.
        let _ = sqlite::policy::take_temp_created();
        return r.map_err(transaction_refusal);
    }
    if r.is_ok() && per_request && deferred_fk_violations(conn) > 0 {
        r = Err(deferred_fk_error());
    }
    if r.is_ok() {
        if let Err(e) = drop_temp_objects(conn, false) {
            r = Err(e);
        }
    }
    if r.is_err() {
        let _ = internal_cached(conn, "ROLLBACK TO _sila_request");
        let _ = sqlite::policy::take_temp_created();
    }
    internal_cached(conn, "RELEASE _sila_request")?;
    // Only when set: setting a flag PRAGMA expires every prepared statement of the connection.
    if internal_flag(conn, "PRAGMA defer_foreign_keys")? {
        internal(conn, "PRAGMA defer_foreign_keys=OFF")?;
    }
    r.map_err(transaction_refusal)
}

/// Runs a script inside an open transaction as one unit: in its own savepoint, rolled back to
/// it on an error, so the transaction stays usable and the script left nothing behind.
pub(crate) fn run_script_in_savepoint(conn: &Connection, sql: &str, stop: &StopCheck) -> Result<ExecResult> {
    internal(conn, "SAVEPOINT _sila_script")?;
    let r = sqlite::execute_script(conn, sql, stop);
    if conn.is_autocommit() {
        // SQLite rolled the whole transaction back; the savepoint is gone with it.
        return r;
    }
    if r.is_err() {
        let _ = internal(conn, "ROLLBACK TO _sila_script");
    }
    internal(conn, "RELEASE _sila_script")?;
    r
}

/// Sets what `last_insert_rowid()` answers on `conn` (the broker sets 0 at the start of every
/// request and transaction).
fn set_last_insert_rowid(conn: &Connection, rowid: i64) {
    // SAFETY: `conn.handle()` is the live sqlite3* owned by `conn`, used on this thread while
    // `conn` is borrowed; the call only stores the integer in the connection.
    #[allow(unsafe_code)]
    unsafe {
        rusqlite::ffi::sqlite3_set_last_insert_rowid(conn.handle(), rowid);
    }
}

/// Drops the temporary objects app SQL created in the request or transaction that is ending:
/// outside the `tempObjects` relaxation they live only that long. `always` looks even when the
/// policy saw no CREATE TEMP on this thread (a transaction, once; a request of a group relies
/// on the policy's note, so the common request pays nothing).
fn drop_temp_objects(conn: &Connection, always: bool) -> Result<()> {
    if !sqlite::policy::take_temp_created() && !always {
        return Ok(());
    }
    // Triggers first (one may sit on a main table), then views, then tables (their indexes
    // go with them).
    let objects: Vec<(String, String)> = as_internal(|| {
        conn.prepare_cached(&format!(
            "{}SELECT type, name FROM temp.sqlite_schema WHERE type IN ('trigger', 'view', 'table') \
             ORDER BY CASE type WHEN 'trigger' THEN 0 WHEN 'view' THEN 1 ELSE 2 END",
            sqlite::exec::INTERNAL_MARK
        ))
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()
        })
    })
    .map_err(|e| sqlite::map_error(e, None))?;
    for (kind, name) in objects {
        let kind = match kind.as_str() {
            "trigger" => "TRIGGER",
            "view" => "VIEW",
            _ => "TABLE",
        };
        internal(conn, &format!("DROP {kind} IF EXISTS temp.\"{}\"", name.replace('"', "\"\"")))?;
    }
    Ok(())
}

/// Whether the connection's transaction has deferred foreign-key violations outstanding
/// (`SQLITE_DBSTATUS_DEFERRED_FKS`: non-zero if any).
fn deferred_fk_violations(conn: &Connection) -> i32 {
    let (mut current, mut high) = (0, 0);
    // SAFETY: `conn.handle()` is the live sqlite3* owned by `conn`, valid for this call;
    // sqlite3_db_status only reads the connection's counters and writes the two out-params,
    // which live on this stack frame.
    #[allow(unsafe_code)]
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_status(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBSTATUS_DEFERRED_FKS,
            &mut current,
            &mut high,
            0,
        )
    };
    if rc == rusqlite::ffi::SQLITE_OK {
        current
    } else {
        // Unknown: treat as a violation rather than let one through to the group's COMMIT.
        1
    }
}

/// The error SQLite gives a transaction whose COMMIT finds a deferred foreign key violated.
fn deferred_fk_error() -> Error {
    let code = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY);
    sqlite::map_error(
        rusqlite::Error::SqliteFailure(code, Some("FOREIGN KEY constraint failed".into())),
        None,
    )
}

/// Turns SQLite's bare "not authorized" for a transaction statement into a clear policy
/// refusal.
pub fn transaction_refusal(e: Error) -> Error {
    if e.code() == ErrorCode::PolicyDenied && e.message().contains("not authorized") {
        return Error::new(ErrorCode::PolicyDenied, sqlite::policy::TRANSACTION_CONTROL_REFUSED);
    }
    e
}
