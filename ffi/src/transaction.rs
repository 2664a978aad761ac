//! `sila_transaction`: begin / statements / commit / rollback across separate C calls, with
//! the engine's maximum transaction duration enforced.
//!
//! The Rust API runs a transaction as a closure (`Database::submit_transaction`), which a C
//! host cannot hold open across calls. So `sila_database_begin` submits a closure that runs on
//! one of the engine's worker threads, holding the writer connection inside `BEGIN
//! IMMEDIATE`, and serves the host's statements from a channel:
//!
//! ```text
//!   C host thread                         worker thread (writer held)
//!   sila_database_begin ── submit ──────▶ BEGIN IMMEDIATE; send Started
//!          ◀──────────── Started ───────
//!   sila_transaction_exec ── Exec ─────▶ tx.exec(...) ── reply ──▶
//!   sila_transaction_commit ── Commit ─▶ return Ok  → COMMIT
//!          ◀──────────── Finished(outcome) (the request's completion)
//! ```
//!
//! The deadline is the engine's `transaction_timeout`, counted from BEGIN: every statement
//! runs under it (the engine's own deadline check), the worker stops waiting for the host's
//! next command when it passes, and a commit that arrives after it rolls back. In each case
//! the transaction is rolled back and the host's next call on it answers `SILA_TIMEOUT`.
//! Any statement error rolls the whole transaction back (as SQLite may already have done for
//! some errors, later statements must never run outside it). Arguments refused before a
//! statement runs (NULL, bad UTF-8, bad JSON) leave the transaction open.
//!
//! While open, the transaction occupies one worker thread and the database's writer; other
//! writes to the database wait behind it (at most the deadline).

use crate::boundary::{guard, guard_value, handle, handle_mut, out_arg, str_arg, write_out, Result};
use crate::database::{params_arg, sila_database};
use crate::result::sila_result;
use crate::status::sila_status;
use sila_sqlite::{CancelToken, Error, ErrorCode, ExecResult, Rows, Tx, Value};
use std::ffi::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

enum Command {
    Query(String, Vec<Value>, SyncSender<Result<Rows>>),
    Exec(String, Vec<Value>, SyncSender<Result<ExecResult>>),
    Commit,
    Rollback,
}

enum Event {
    Started,
    Finished(Result<()>),
}

/// What the workspace's close reaches: the command channel (dropping it makes the worker
/// roll back at once).
pub(crate) struct TxLink {
    commands: Mutex<Option<Sender<Command>>>,
    /// Set when the workspace's close ended the transaction: later calls on it are the host's
    /// misuse (`SILA_INVALID_ARGUMENT`), not a cancellation.
    workspace_closed: AtomicBool,
}

impl TxLink {
    fn lock(&self) -> MutexGuard<'_, Option<Sender<Command>>> {
        self.commands.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the worker roll back and finish (its next receive sees the channel closed).
    pub(crate) fn abandon(&self) {
        self.lock().take();
    }

    /// The workspace is closing: the transaction rolls back, and calls made on it afterwards
    /// are told the workspace was closed.
    pub(crate) fn close_workspace(&self) {
        self.workspace_closed.store(true, Ordering::Release);
        self.abandon();
    }

    fn send(&self, command: Command) -> bool {
        self.lock().as_ref().is_some_and(|s| s.send(command).is_ok())
    }
}

/// How a finished transaction ended, for the calls made on it afterwards.
enum State {
    Open,
    Finished(String),
}

/// An open transaction. Opaque; made by `sila_database_begin`, released by
/// `sila_transaction_free`.
///
/// Thread-safety: exclusive. Every function takes a non-const `sila_transaction *`: one
/// thread at a time (it may move between threads between calls).
pub struct sila_transaction {
    link: Arc<TxLink>,
    events: Receiver<Event>,
    host_rollback: Arc<AtomicBool>,
    state: State,
}

/// The body that runs on the worker: serve commands until commit, rollback, an error, the
/// deadline, or the host going away.
fn serve(
    tx: &Tx<'_>,
    commands: &Receiver<Command>,
    deadline: Instant,
    host_rollback: &AtomicBool,
) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match commands.recv_timeout(left) {
            Ok(Command::Query(sql, params, reply)) => {
                let r = tx.query(&sql, &params);
                let failed = r.as_ref().err().cloned();
                let _ = reply.send(r);
                if let Some(e) = failed {
                    return Err(e);
                }
            }
            Ok(Command::Exec(sql, params, reply)) => {
                let r = tx.exec(&sql, &params);
                let failed = r.as_ref().err().cloned();
                let _ = reply.send(r);
                if let Some(e) = failed {
                    return Err(e);
                }
            }
            Ok(Command::Commit) => return Ok(()),
            Ok(Command::Rollback) => {
                host_rollback.store(true, Ordering::Release);
                return Err(Error::new(ErrorCode::Cancelled, "rolled back by the host"));
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::new(
                    ErrorCode::Timeout,
                    "transaction exceeded transaction_timeout while waiting for the host's next \
                     statement and was rolled back",
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::new(
                    ErrorCode::Cancelled,
                    "the transaction handle was freed (or its workspace closed) before commit; rolled back",
                ))
            }
        }
    }
}

/// Begins a transaction on the database's writer (`BEGIN IMMEDIATE`), blocking until it holds
/// the writer: queued writes finish first. Waits at most `transaction_timeout` for its turn
/// (then `SILA_BUSY`, nothing started). A read-only database is `SILA_READ_ONLY`.
///
/// On success `*transaction_out` is a new transaction the caller owns: run statements with
/// `sila_transaction_query` / `sila_transaction_exec`, end it with `sila_transaction_commit`
/// or `sila_transaction_rollback`, and free it with `sila_transaction_free` (which rolls back
/// one still open). It must end within `transaction_timeout` of its start, or it is rolled
/// back and its next call answers `SILA_TIMEOUT`. While open it occupies one worker thread
/// and the database's writer: do not call `sila_database_exec` on the same database from the
/// thread that holds the transaction (it would wait for the transaction until its deadline).
/// Thread-safe on a const database.
///
/// # Safety
/// `database` is NULL or live; `transaction_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_database_begin(
    database: *const sila_database,
    transaction_out: *mut *mut sila_transaction,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let database = unsafe { handle(database, "database") }?;
        out_arg(transaction_out, "transaction_out")?;
        let (db, ws) = database.get()?;
        let timeout = ws.broker().options().transaction_timeout;
        let (command_tx, command_rx) = mpsc::channel::<Command>();
        let (event_tx, event_rx) = mpsc::channel::<Event>();
        let host_rollback = Arc::new(AtomicBool::new(false));
        let flag = host_rollback.clone();
        let started = event_tx.clone();
        let pending = db.submit_transaction(move |tx: &Tx<'_>| {
            // The engine's own deadline starts just before BEGIN; this one a moment later, so
            // the engine's check at COMMIT is the binding one.
            let deadline = Instant::now() + timeout;
            let _ = started.send(Event::Started);
            serve(tx, &command_rx, deadline, &flag)
        });
        let cancel: CancelToken = pending.cancel_token();
        pending.on_complete(move |outcome| {
            let _ = event_tx.send(Event::Finished(outcome));
        });
        let link = Arc::new(TxLink {
            commands: Mutex::new(Some(command_tx)),
            workspace_closed: AtomicBool::new(false),
        });
        match event_rx.recv_timeout(timeout) {
            Ok(Event::Started) => {}
            Ok(Event::Finished(outcome)) => {
                return Err(outcome.err().unwrap_or_else(|| {
                    Error::new(ErrorCode::Internal, "transaction finished before it started")
                }))
            }
            Err(_) => {
                // Not started in time: make sure it never runs (or, if it starts right now,
                // that it rolls back at once: the command channel is dropped with `link`).
                cancel.cancel();
                return Err(Error::new(
                    ErrorCode::Busy,
                    format!(
                        "the writer stayed busy for transaction_timeout ({} ms); the transaction did not start",
                        timeout.as_millis()
                    ),
                ));
            }
        }
        database.ws.adopt_transaction(&link);
        let tx = sila_transaction { link, events: event_rx, host_rollback, state: State::Open };
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(transaction_out, Box::into_raw(Box::new(tx))) };
        Ok(())
    })
}

impl sila_transaction {
    fn check_open(&self) -> Result<()> {
        match &self.state {
            State::Open => Ok(()),
            State::Finished(how) => Err(Error::new(
                ErrorCode::InvalidArgument,
                format!("the transaction has already finished ({how})"),
            )),
        }
    }

    /// Waits for the worker's outcome and marks the transaction finished.
    fn finish(&mut self) -> Result<()> {
        let outcome = loop {
            match self.events.recv() {
                Ok(Event::Finished(outcome)) => break outcome,
                Ok(Event::Started) => continue,
                Err(_) => break Err(Error::new(ErrorCode::Internal, "the transaction worker vanished")),
            }
        };
        self.link.abandon();
        let outcome = if self.link.workspace_closed.load(Ordering::Acquire) {
            Err(Error::new(
                ErrorCode::InvalidArgument,
                "the workspace of this transaction was closed (sila_workspace_close), which rolled the \
                 transaction back; free it with sila_transaction_free",
            ))
        } else {
            outcome
        };
        let host_rollback = self.host_rollback.load(Ordering::Acquire);
        self.state = State::Finished(match (&outcome, host_rollback) {
            (Ok(()), _) => "committed".to_string(),
            (Err(_), true) => "rolled back by the host".to_string(),
            (Err(e), false) => format!("rolled back: {}", e.message()),
        });
        match outcome {
            Err(_) if host_rollback => Ok(()),
            other => other,
        }
    }

    /// Sends a statement and waits for its answer. If the worker has already ended (deadline,
    /// earlier error), answers with the transaction's outcome instead.
    fn run<T>(&mut self, make: impl FnOnce(SyncSender<Result<T>>) -> Command) -> Result<T> {
        self.check_open()?;
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let sent = self.link.send(make(reply_tx));
        let answer = if sent { reply_rx.recv().ok() } else { None };
        match answer {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => {
                // The worker rolled back after this error; record how it ended.
                let _ = self.finish();
                Err(e)
            }
            None => {
                let outcome = self.finish();
                Err(outcome
                    .err()
                    .unwrap_or_else(|| Error::new(ErrorCode::Internal, "transaction ended early")))
            }
        }
    }
}

/// Runs a reading statement inside the transaction (sees its uncommitted writes). Arguments
/// as `sila_database_query`. A failed statement rolls the transaction back. Exclusive.
///
/// # Safety
/// `transaction` is NULL or live; strings NULL or valid as described; `result_out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn sila_transaction_query(
    transaction: *mut sila_transaction,
    sql: *const c_char,
    sql_len: usize,
    params_json: *const c_char,
    params_json_len: usize,
    result_out: *mut *mut sila_result,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (transaction, sql, params) = unsafe {
            (
                handle_mut(transaction, "transaction")?,
                str_arg(sql, sql_len, "sql")?,
                params_arg(params_json, params_json_len)?,
            )
        };
        out_arg(result_out, "result_out")?;
        let sql = sql.to_string();
        let rows = transaction.run(|reply| Command::Query(sql, params, reply))?;
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(result_out, Box::into_raw(Box::new(sila_result::from_rows(rows)))) };
        Ok(())
    })
}

/// Runs a writing statement inside the transaction. Arguments as `sila_database_exec`
/// (`result_out` may be NULL). A failed statement rolls the transaction back: the call
/// returns the statement's error and later calls `SILA_INVALID_ARGUMENT` ("finished").
/// Exclusive.
///
/// # Safety
/// As `sila_transaction_query`; `result_out` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn sila_transaction_exec(
    transaction: *mut sila_transaction,
    sql: *const c_char,
    sql_len: usize,
    params_json: *const c_char,
    params_json_len: usize,
    result_out: *mut *mut sila_result,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (transaction, sql, params) = unsafe {
            (
                handle_mut(transaction, "transaction")?,
                str_arg(sql, sql_len, "sql")?,
                params_arg(params_json, params_json_len)?,
            )
        };
        let sql = sql.to_string();
        let exec = transaction.run(|reply| Command::Exec(sql, params, reply))?;
        if !result_out.is_null() {
            // SAFETY: non-NULL and writable (caller's contract).
            unsafe { write_out(result_out, Box::into_raw(Box::new(sila_result::from_exec(exec)))) };
        }
        Ok(())
    })
}

/// Commits, blocking until the commit is durable. `SILA_TIMEOUT` (rolled back) when the
/// transaction outlived `transaction_timeout`. Either way the transaction is finished; free
/// it with `sila_transaction_free`. Calling it on a finished transaction is
/// `SILA_INVALID_ARGUMENT`. Exclusive.
///
/// # Safety
/// `transaction` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn sila_transaction_commit(transaction: *mut sila_transaction) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let transaction = unsafe { handle_mut(transaction, "transaction") }?;
        transaction.check_open()?;
        if !transaction.link.send(Command::Commit) {
            transaction.link.abandon();
        }
        transaction.finish()
    })
}

/// Rolls back, blocking until the writer is released. `SILA_OK` when it rolled back on this
/// request; if the transaction had already ended on its own (deadline), that outcome
/// (`SILA_TIMEOUT`). Calling it on a finished transaction is `SILA_INVALID_ARGUMENT`.
/// Exclusive.
///
/// # Safety
/// `transaction` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn sila_transaction_rollback(transaction: *mut sila_transaction) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let transaction = unsafe { handle_mut(transaction, "transaction") }?;
        transaction.check_open()?;
        if !transaction.link.send(Command::Rollback) {
            transaction.link.abandon();
        }
        transaction.finish()
    })
}

/// Frees a transaction; one still open is rolled back (without waiting for the rollback to
/// finish). NULL is allowed and does nothing. Freeing twice is undefined. Exclusive.
///
/// # Safety
/// `transaction` is NULL or a live transaction used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn sila_transaction_free(transaction: *mut sila_transaction) {
    guard_value((), || {
        if !transaction.is_null() {
            // SAFETY: made by `Box::into_raw` in `sila_database_begin`, freed once.
            let transaction = unsafe { Box::from_raw(transaction) };
            transaction.link.abandon();
        }
    })
}
