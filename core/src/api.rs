//! The host API: [`App`] and [`Database`] handles (names follow the host SDK: `open`,
//! `query`, `query_value`, `exec`, `transaction`).
//!
//! ```no_run
//! use sila_sqlite::{Workspace, WorkspaceOptions, Value};
//! # fn main() -> sila_sqlite::Result<()> {
//! let ws = Workspace::open("./sila-workspace", WorkspaceOptions::default())?;
//! ws.register_app("com.example.notes", r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics"}]}}}"#)?;
//! let db = ws.open_app("com.example.notes")?.open("sila://db/analytics")?;
//! db.exec("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, ts INTEGER)", &[])?;
//! db.transaction(|tx| {
//!     tx.exec("INSERT INTO events VALUES (?, ?)", &[Value::Text("e1".into()), Value::Integer(1)])?;
//!     tx.query_value("SELECT count(*) FROM events", &[])
//! })?;
//! let rows = db.query("SELECT id FROM events WHERE ts = ?", &[Value::Integer(1)])?;
//! # Ok(()) }
//! ```
//!
//! Every call has a blocking form and a non-blocking form (`submit_*`) that returns a
//! [`Pending`] to wait on, poll, cancel, or attach a completion callback to.

use crate::broker::pending::{self, Pending};
use crate::broker::{AppShared, DbShared, ExecRequest, WriteJob};
use crate::metrics::{MetricsSnapshot, OpKind};
use crate::names::{DbName, LogicalName};
use crate::sqlite::{self, CancelToken, ExecResult, Rows, StopCheck, StopReason, Value};
use crate::workspace::{AppInfo, Workspace};
use crate::{Error, ErrorCode, Result};
use rusqlite::Connection;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A registered app: opens the databases its manifest lists.
#[derive(Clone)]
pub struct App {
    ws: Workspace,
    info: AppInfo,
    shared: Arc<AppShared>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("app_id", &self.info.app_id).finish_non_exhaustive()
    }
}

impl App {
    pub(crate) fn new(ws: Workspace, info: AppInfo, shared: Arc<AppShared>) -> App {
        App { ws, info, shared }
    }

    /// The app's registration.
    pub fn info(&self) -> &AppInfo {
        &self.info
    }

    /// Opens one of the app's databases by name (`analytics`) or logical name
    /// (`sila://db/analytics`, or `sila://app/<this app>/db/analytics`). Another app's
    /// database, or one not in the manifest, is `CapabilityDenied`. No connection is opened
    /// until the first request.
    pub fn open(&self, name: &str) -> Result<Database> {
        let db = if name.starts_with(crate::names::LOGICAL_PREFIX) {
            let logical = LogicalName::parse(name)?;
            if let Some(app) = &logical.app {
                if app != &self.info.app_id {
                    return Err(Error::new(
                        ErrorCode::CapabilityDenied,
                        format!("{name} belongs to another app; an app opens only its own databases"),
                    ));
                }
            }
            logical.db
        } else {
            DbName::new(name)?
        };
        let shared = self.ws.database_shared(&self.info, &db)?;
        let read_only = shared.config().read_only;
        Ok(Database { ws: self.ws.clone(), app: self.shared.clone(), db: shared, read_only })
    }
}

/// An open database of an app. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Database {
    pub(crate) ws: Workspace,
    pub(crate) app: Arc<AppShared>,
    pub(crate) db: Arc<DbShared>,
    pub(crate) read_only: bool,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("db", &self.db.config().key).finish_non_exhaustive()
    }
}

/// Statistics of one database.
#[derive(Debug, Clone)]
pub struct DbStats {
    /// The app id.
    pub app_id: String,
    /// The database name.
    pub db: String,
    /// Counters and latency percentiles.
    pub metrics: MetricsSnapshot,
    /// Bytes of the database file.
    pub db_bytes: u64,
    /// Bytes of its WAL.
    pub wal_bytes: u64,
    /// Connections open now.
    pub connections: usize,
    /// How long the oldest read running now has run (zero when none runs): a read holds
    /// back every checkpoint past its snapshot of the WAL.
    pub oldest_read: std::time::Duration,
}

impl DbStats {
    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "app": self.app_id,
            "db": self.db,
            "db_bytes": self.db_bytes,
            "wal_bytes": self.wal_bytes,
            "connections": self.connections,
            "oldest_read_ms": u64::try_from(self.oldest_read.as_millis()).unwrap_or(u64::MAX),
            "metrics": self.metrics.to_json(),
        })
    }
}

pub(crate) fn db_stats(db: &DbShared) -> DbStats {
    let (db_bytes, wal_bytes) = db.sizes();
    DbStats {
        app_id: db.config().app_id.clone(),
        db: db.config().key.db.as_str().to_string(),
        metrics: db.metrics.snapshot(),
        db_bytes,
        wal_bytes,
        connections: db.connections(),
        oldest_read: db.oldest_read(),
    }
}

fn read_only_error(db: &DbShared) -> Error {
    Error::new(
        ErrorCode::ReadOnly,
        format!(
            "database {:?} is read-only for this app (manifest readOnly: true)",
            db.config().key.db.as_str()
        ),
    )
}

impl Database {
    /// Takes one of the app's concurrency slots and charges its statement budget; a refusal
    /// (`Busy`, `BudgetExceeded`) is counted in this database's metrics.
    fn admit(&self) -> Result<crate::broker::Admission> {
        self.ws.broker().admit(&self.app).inspect_err(|e| self.db.metrics.record_error(e.code()))
    }

    /// Answers an ATTACH or DETACH statement ([`crate::attach`]); `None` for any other SQL.
    /// Refusals are counted in the metrics like any failed statement.
    fn attach_statement(&self, sql: &str, params: &[Value]) -> Option<Result<()>> {
        let parsed = crate::attach::parse(sql, params)?;
        let started = self.db.clock().monotonic();
        let answer = parsed.and_then(|statement| {
            let _slot = self.admit()?;
            self.apply_attach(statement)
        });
        self.db.metrics.record(
            OpKind::Exec,
            self.db.clock().monotonic().saturating_sub(started),
            answer.as_ref().map(|()| (0, 0)).map_err(|e| e.code()),
        );
        Some(answer)
    }

    fn apply_attach(&self, statement: crate::attach::Statement) -> Result<()> {
        use crate::attach::{Statement, ATTACHMENTS_MAX};
        let refused = |why: String| Error::new(ErrorCode::PolicyDenied, why);
        match statement {
            Statement::Attach { db, schema } => {
                if db == self.db.config().key.db {
                    return Err(refused(format!(
                        "ATTACH is refused: {} is this database itself",
                        LogicalName { app: None, db }
                    )));
                }
                let info = self.ws.app_info(&self.db.config().app_id)?;
                let target = self.ws.database_shared(&info, &db).map_err(|e| match e.code() {
                    ErrorCode::CapabilityDenied => refused(format!(
                        "ATTACH is refused: {} is not in this app's manifest",
                        LogicalName { app: None, db: db.clone() }
                    )),
                    _ => e,
                })?;
                self.db
                    .add_attachment(
                        crate::broker::Attachment { schema: schema.clone(), target },
                        ATTACHMENTS_MAX,
                    )
                    .map_err(|why| refused(format!("ATTACH is refused: {why}")))?;
                // Attach it now on one connection, so a failure is this statement's.
                let check = format!("SELECT count(*) FROM {schema}.sqlite_schema");
                let stop = self.ws.broker().stop_for(&CancelToken::new());
                if let Err(e) = self.db.query(&check, &[], &stop) {
                    self.db.remove_attachment(&schema);
                    return Err(e.context(format_args!("attaching {schema}")));
                }
                Ok(())
            }
            Statement::Detach { schema } => {
                if !self.db.remove_attachment(&schema) {
                    return Err(refused(format!(
                        "DETACH is refused: {schema} is not attached (only databases attached with \
                         ATTACH 'sila://db/<name>' can be detached)"
                    )));
                }
                Ok(())
            }
        }
    }

    fn options(&self) -> crate::broker::BrokerOptions {
        self.ws.broker().options().clone()
    }

    /// Runs a query and returns its rows (blocking, on the calling thread).
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        self.query_with(sql, params, &CancelToken::new())
    }

    /// [`Database::query`] with a cancellation token the caller may trigger from any thread.
    pub fn query_with(&self, sql: &str, params: &[Value], cancel: &CancelToken) -> Result<Rows> {
        if let Some(answer) = self.attach_statement(sql, params) {
            return answer.map(|()| Rows::default());
        }
        let broker = self.ws.broker();
        // One clock reading serves admission, the deadline and the latency's start.
        let now = broker.now();
        let _slot =
            broker.admit_borrowed(&self.app, now).inspect_err(|e| self.db.metrics.record_error(e.code()))?;
        let stop = broker.stop_for_at(cancel, now);
        self.db.query_at(sql, params, &stop, now)
    }

    /// The first column of the first row, or `None` when there is no row. Only the first row
    /// is computed: rows after it are never stepped to. The result caps apply to that row.
    pub fn query_value(&self, sql: &str, params: &[Value]) -> Result<Option<Value>> {
        self.query_value_with(sql, params, &CancelToken::new())
    }

    /// [`Database::query_value`] with a cancellation token.
    pub fn query_value_with(
        &self,
        sql: &str,
        params: &[Value],
        cancel: &CancelToken,
    ) -> Result<Option<Value>> {
        if let Some(answer) = self.attach_statement(sql, params) {
            return answer.map(|()| None);
        }
        let broker = self.ws.broker();
        let now = broker.now();
        let _slot =
            broker.admit_borrowed(&self.app, now).inspect_err(|e| self.db.metrics.record_error(e.code()))?;
        let stop = broker.stop_for_at(cancel, now);
        self.db.query_first_at(sql, params, &stop, now)
    }

    /// What SQLite says about one statement without running it: whether it writes (then it
    /// belongs to exec, and a query refuses it), its result columns, and its parameters by
    /// position with their names (`:id`, `@id`, `$id`, `?3`; `None` for a bare `?`). Prepared on
    /// a reader under the rules of a request (a statement that only a write request may run,
    /// like `SAVEPOINT` or `CREATE TEMP TABLE`, is described, not refused).
    pub fn describe(&self, sql: &str) -> Result<sqlite::StatementInfo> {
        let broker = self.ws.broker();
        let now = broker.now();
        let _slot =
            broker.admit_borrowed(&self.app, now).inspect_err(|e| self.db.metrics.record_error(e.code()))?;
        let stop = broker.stop_for_at(&CancelToken::new(), now);
        self.db.with_reader_conn(&stop, |conn| {
            let info = sqlite::policy::in_scope(sqlite::policy::Scope::Request, || {
                sqlite::describe(conn, sql, &stop)
            });
            // Nothing ran: a CREATE TEMP it prepared left nothing for the broker to drop.
            let _ = sqlite::policy::take_temp_created();
            info
        })
    }

    /// Runs one statement on the writer (blocking): any statement, usually one that writes.
    /// Group-committed with concurrent writes; answered once its batch is committed, with the
    /// rows changed, the rowid of its last insert, and the rows it returned (`INSERT …
    /// RETURNING`, or a SELECT).
    pub fn exec(&self, sql: &str, params: &[Value]) -> Result<ExecResult> {
        self.exec_with(sql, params, &CancelToken::new())
    }

    /// [`Database::exec`] with a cancellation token.
    pub fn exec_with(&self, sql: &str, params: &[Value], cancel: &CancelToken) -> Result<ExecResult> {
        if let Some(answer) = self.attach_statement(sql, params) {
            return answer.map(|()| ExecResult { statements: 1, ..Default::default() });
        }
        self.exec_pending(sql, params.to_vec(), false, cancel.clone(), true)?.wait()
    }

    /// Runs a script (a schema file, a migration written as one text): any number of
    /// statements without parameters, as one atomic request on the writer. Either every
    /// statement is applied or none is; an error names the statement's number and its line
    /// and column in the script. Rows the statements return are discarded; the result counts
    /// the statements and sums their changes. ATTACH and DETACH are not allowed in scripts.
    pub fn execute_script(&self, sql: &str) -> Result<ExecResult> {
        self.execute_script_with(sql, &CancelToken::new())
    }

    /// [`Database::execute_script`] with a cancellation token.
    pub fn execute_script_with(&self, sql: &str, cancel: &CancelToken) -> Result<ExecResult> {
        self.exec_pending(sql, Vec::new(), true, cancel.clone(), true)?.wait()
    }

    /// Submits a script ([`Database::execute_script`]); the handle answers once it is
    /// committed.
    pub fn submit_script(&self, sql: &str) -> Pending<ExecResult> {
        let cancel = CancelToken::new();
        match self.exec_pending(sql, Vec::new(), true, cancel.clone(), false) {
            Ok(p) => p,
            Err(e) => {
                let (p, c) = pending::pending(cancel);
                c.complete(Err(e));
                p
            }
        }
    }

    /// Submits a query; the returned handle answers when it finishes.
    pub fn submit_query(&self, sql: &str, params: Vec<Value>) -> Pending<Rows> {
        let cancel = CancelToken::new();
        let (pending, completer) = pending::pending(cancel.clone());
        if let Some(answer) = self.attach_statement(sql, &params) {
            completer.complete(answer.map(|()| Rows::default()));
            return pending;
        }
        let admission = match self.admit() {
            Ok(a) => a,
            Err(e) => {
                completer.complete(Err(e));
                return pending;
            }
        };
        let db = self.db.clone();
        let sql = sql.to_string();
        let stop = self.ws.broker().stop_for(&cancel);
        let slot = Arc::new(Mutex::new(Some(completer)));
        let job_slot = slot.clone();
        let job: crate::broker::executor::Job = Box::new(move || {
            let r = db.query(&sql, &params, &stop);
            drop(admission);
            if let Some(c) = job_slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                c.complete(r);
            }
        });
        if let Err(job) = self.ws.broker().executor().spawn(self.db.config().key.app, job) {
            drop(job);
            if let Some(c) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let max = self.ws.broker().options().queue_max;
                c.complete(Err(Error::new(
                    ErrorCode::Busy,
                    format!("the work queue is full (queue_max is {max})"),
                )));
            }
        }
        pending
    }

    /// Submits a write; the returned handle answers once it is committed.
    pub fn submit_exec(&self, sql: &str, params: Vec<Value>) -> Pending<ExecResult> {
        let cancel = CancelToken::new();
        if let Some(answer) = self.attach_statement(sql, &params) {
            let (p, c) = pending::pending(cancel);
            c.complete(answer.map(|()| ExecResult { statements: 1, ..Default::default() }));
            return p;
        }
        match self.exec_pending(sql, params, false, cancel.clone(), false) {
            Ok(p) => p,
            Err(e) => {
                let (p, c) = pending::pending(cancel);
                c.complete(Err(e));
                p
            }
        }
    }

    fn exec_pending(
        &self,
        sql: &str,
        params: Vec<Value>,
        script: bool,
        cancel: CancelToken,
        inline: bool,
    ) -> Result<Pending<ExecResult>> {
        if self.read_only {
            return Err(read_only_error(&self.db));
        }
        let admission = self.admit()?;
        let span = self.db.request_span(if script { "script" } else { "exec" }, sql, &params);
        let submitted = self.ws.broker().now();
        let (pending, reply) = pending::pending(cancel.clone());
        let req = ExecRequest {
            sql: sql.to_string(),
            script,
            params,
            stop: self.ws.broker().stop_for(&cancel),
            submitted,
            reply,
            admission,
            span: span.clone(),
        };
        if let Err(e) = self.db.submit_write(WriteJob::Exec(req), inline) {
            crate::trace::finish(&span, Duration::ZERO, Err(e.code()), None);
            return Err(e);
        }
        Ok(pending)
    }

    /// Runs `f` in a transaction (blocking): commits when it returns `Ok`, rolls back when it
    /// returns `Err` or panics (the panic continues after the rollback). The transaction may
    /// hold the writer for at most `transaction_timeout`; past it, it is rolled back with
    /// `Timeout`.
    pub fn transaction<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        if self.read_only {
            return Err(read_only_error(&self.db));
        }
        let _slot = self.admit()?;
        let options = self.options();
        let db = self.db.clone();
        self.exclusive(|conn| {
            let deadline = db.deadline_after(options.transaction_timeout);
            let cancel = CancelToken::new();
            db.run_transaction(conn, deadline, |conn| {
                let tx = Tx { conn, db: &db, deadline, cancel, statement_timeout: options.statement_timeout };
                f(&tx)
            })
        })
    }

    /// Runs `f` with the writer connection held exclusively, on the calling thread: queued
    /// writes before it finish first, writes after it wait. Waits at most
    /// `transaction_timeout` for its turn (`Busy` after that).
    pub(crate) fn exclusive<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let options = self.options();
        let gate = Arc::new(Gate::default());
        self.db.submit_write(WriteJob::Gate(gate.clone()), true)?;
        if !gate.wait(options.transaction_timeout) {
            return Err(Error::new(
                ErrorCode::Busy,
                format!(
                    "the writer stayed busy for transaction_timeout ({} ms); the operation did not start",
                    options.transaction_timeout.as_millis()
                ),
            ));
        }
        self.db.with_gate_connection(|conn| f(conn?))
    }

    /// Submits a transaction; `f` runs on a worker thread and the handle answers with its
    /// result after the commit (or the rollback).
    pub fn submit_transaction<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    ) -> Pending<T> {
        let cancel = CancelToken::new();
        let (pending, completer) = pending::pending(cancel.clone());
        if self.read_only {
            completer.complete(Err(read_only_error(&self.db)));
            return pending;
        }
        let admission = match self.admit() {
            Ok(a) => a,
            Err(e) => {
                completer.complete(Err(e));
                return pending;
            }
        };
        let options = self.options();
        let db = self.db.clone();
        let job = WriteJob::Transaction(Box::new(move |conn: &Connection| {
            if cancel.is_cancelled() {
                completer.complete(Err(Error::new(
                    ErrorCode::Cancelled,
                    "transaction cancelled before it started",
                )));
                return;
            }
            let deadline = db.deadline_after(options.transaction_timeout);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                db.run_transaction(conn, deadline, |conn| {
                    let tx = Tx {
                        conn,
                        db: &db,
                        deadline,
                        cancel: cancel.clone(),
                        statement_timeout: options.statement_timeout,
                    };
                    f(&tx)
                })
            }));
            drop(admission);
            match r {
                Ok(r) => completer.complete(r),
                Err(_) => completer.complete(Err(Error::new(
                    ErrorCode::Panic,
                    "the transaction closure panicked; rolled back",
                ))),
            }
        }));
        if let Err(e) = self.db.submit_write(job, false) {
            let (p, c) = pending::pending(CancelToken::new());
            c.complete(Err(e));
            return p;
        }
        pending
    }

    /// Whether the app's manifest makes this database read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Statistics of this database.
    pub fn stats(&self) -> DbStats {
        db_stats(&self.db)
    }
}

/// A transaction in progress: statements run on the writer connection.
pub struct Tx<'a> {
    conn: &'a Connection,
    db: &'a DbShared,
    /// A point on the broker clock's monotonic time.
    deadline: Duration,
    cancel: CancelToken,
    statement_timeout: Duration,
}

impl Tx<'_> {
    /// Refuses further statements once SQLite has rolled the transaction back by itself (a
    /// trigger's RAISE(ROLLBACK), SQLITE_FULL, IOERR…): run in autocommit they would commit
    /// on their own while the caller is told the transaction failed.
    fn still_open(&self) -> Result<()> {
        if self.conn.is_autocommit() {
            return Err(Error::new(
                ErrorCode::Sqlite,
                "the transaction was rolled back by SQLite after an earlier error; no further \
                 statement runs in it",
            ));
        }
        Ok(())
    }

    fn stop(&self) -> StopCheck {
        let deadline = self.deadline.min(self.db.deadline_after(self.statement_timeout));
        StopCheck::until(self.db.clock(), deadline, self.cancel.clone())
    }

    fn finish<T>(&self, stop: &StopCheck, r: Result<T>) -> Result<T> {
        match r {
            Err(e)
                if e.code() == ErrorCode::Timeout
                    && stop.fired() == Some(StopReason::Deadline)
                    && self.db.clock().monotonic() >= self.deadline =>
            {
                Err(self.db_timeout())
            }
            other => other.map_err(crate::broker::transaction_refusal),
        }
    }

    fn db_timeout(&self) -> Error {
        Error::new(ErrorCode::Timeout, "transaction exceeded transaction_timeout; it will be rolled back")
    }

    /// Runs a query inside the transaction.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        self.still_open()?;
        refuse_attach_in_transaction(sql).inspect_err(|e| self.db.metrics.record_error(e.code()))?;
        let started = self.db.clock().monotonic();
        let stop = self.stop();
        let r = self.finish(&stop, sqlite::query(self.conn, sql, params, self.db.query_limits(), &stop));
        let outcome = r.as_ref().map(|x| (x.rows.len() as u64, 0)).map_err(|e| e.code());
        self.db.record_in_transaction(sql, OpKind::Query, started, outcome);
        r
    }

    /// The first column of the first row, or `None`. Only the first row is computed.
    pub fn query_value(&self, sql: &str, params: &[Value]) -> Result<Option<Value>> {
        self.still_open()?;
        refuse_attach_in_transaction(sql).inspect_err(|e| self.db.metrics.record_error(e.code()))?;
        let started = self.db.clock().monotonic();
        let stop = self.stop();
        let r =
            self.finish(&stop, sqlite::query_first(self.conn, sql, params, self.db.query_limits(), &stop));
        let outcome = r.as_ref().map(|v| (u64::from(v.is_some()), 0)).map_err(|e| e.code());
        self.db.record_in_transaction(sql, OpKind::Query, started, outcome);
        r
    }

    /// Runs one statement inside the transaction (any statement: its rows come back as with
    /// [`Database::exec`]).
    pub fn exec(&self, sql: &str, params: &[Value]) -> Result<ExecResult> {
        self.still_open()?;
        refuse_attach_in_transaction(sql).inspect_err(|e| self.db.metrics.record_error(e.code()))?;
        let started = self.db.clock().monotonic();
        let stop = self.stop();
        let r = self.finish(&stop, sqlite::execute(self.conn, sql, params, self.db.query_limits(), &stop));
        let outcome = r.as_ref().map(|x| (x.rows.rows.len() as u64, x.changes)).map_err(|e| e.code());
        self.db.record_in_transaction(sql, OpKind::Exec, started, outcome);
        r.inspect_err(|e| self.db.note_refusal(e))
    }

    /// Runs a script inside the transaction ([`Database::execute_script`]): all of it or,
    /// on an error, none of it (the transaction stays open and usable).
    pub fn execute_script(&self, sql: &str) -> Result<ExecResult> {
        self.still_open()?;
        let started = self.db.clock().monotonic();
        let stop = self.stop();
        let r = self.finish(&stop, crate::broker::run_script_in_savepoint(self.conn, sql, &stop));
        let outcome = r.as_ref().map(|x| (0, x.changes)).map_err(|e| e.code());
        self.db.record_in_transaction(sql, OpKind::Exec, started, outcome);
        r.inspect_err(|e| self.db.note_refusal(e))
    }
}

/// ATTACH and DETACH change the database handle for every request: not inside a transaction.
fn refuse_attach_in_transaction(sql: &str) -> Result<()> {
    match crate::attach::parse(sql, &[]) {
        None => Ok(()),
        Some(_) => Err(Error::new(
            ErrorCode::PolicyDenied,
            "ATTACH/DETACH is refused inside a transaction: run it with exec before the transaction \
             (attachments belong to the database handle)",
        )),
    }
}

pub use crate::broker::{Gate, GateState};
