//! `sila_request`: asynchronous queries and writes for event-loop hosts.
//!
//! A submit function hands the statement to the engine and returns at once with a request
//! handle. The engine answers on a worker thread; the answer is stored in the request (so
//! `sila_request_wait` / `sila_request_is_done` / `sila_request_take_result` work whether or
//! not a callback was given) and then, if the host gave a callback, the callback runs on that
//! worker thread with the request.
//!
//! Memory: a request is reference-counted. The host holds one reference (released by
//! `sila_request_free`) and the engine holds one until the callback has returned, so the
//! pointer a callback receives is valid for the whole call even if the host frees its
//! handle on another thread meanwhile.

use crate::boundary::{guard, guard_value, handle, out_arg, str_arg, write_out, Result};
use crate::database::{params_arg, sila_database};
use crate::result::sila_result;
use crate::status::sila_status;
use sila_sqlite::broker::executor::Executor;
use sila_sqlite::uuid::Uuid;
use sila_sqlite::{CancelToken, Error, ErrorCode, ExecResult, Pending, Rows, Workspace};
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Completion callback of a request: `userdata` as given at submit, and the request (now
/// complete: `sila_request_take_result` does not block).
///
/// It runs on one of the engine's worker threads (or, after the workspace was closed, on a
/// short-lived thread of the library's), never inside the submit call, so a host may hold a
/// lock across submit that its callback also takes. It must return quickly, must
/// not unwind (no C++ exception, no longjmp out of it), and must not block on this request
/// (`sila_request_wait` is pointless there) nor make blocking calls on the database or
/// workspace (query, exec, begin, snapshot… would tie up a worker). It may take the result,
/// free the request (if the host has not already), and submit new requests.
#[allow(non_camel_case_types)]
pub type sila_request_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, request: *mut sila_request)>;

/// The host's callback and its userdata. The host promises the userdata may be used from the
/// thread that completes the request (the header says so).
struct Callback {
    function: unsafe extern "C" fn(*mut c_void, *mut sila_request),
    userdata: *mut c_void,
}

// SAFETY: the userdata pointer is only handed back to the host's callback; the header makes
// the host responsible for its use from a worker thread.
unsafe impl Send for Callback {}

impl Callback {
    /// Calls the host's function with its userdata and the request, which `request` keeps
    /// alive for the whole call.
    fn call(self, request: &Arc<sila_request>) {
        let ptr = Arc::as_ptr(request).cast_mut();
        // SAFETY: the host's function pointer, called with its own userdata and a live
        // request (see above). The header forbids unwinding out of it.
        unsafe { (self.function)(self.userdata, ptr) };
    }
}

enum Outcome {
    Running,
    Done(Result<sila_result>),
    Taken,
}

/// A query or write in flight. Opaque; made by `sila_database_submit_query` /
/// `sila_database_submit_exec`, released by `sila_request_free`.
///
/// Thread-safety: functions taking a `const sila_request *` (wait, is_done, cancel) may be
/// called from many threads at once; `sila_request_take_result` and `sila_request_free` take
/// it exclusively.
pub struct sila_request {
    outcome: Mutex<Outcome>,
    done: Condvar,
    cancel: CancelToken,
}

impl sila_request {
    fn lock(&self) -> MutexGuard<'_, Outcome> {
        self.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn complete(&self, result: Result<sila_result>) {
        *self.lock() = Outcome::Done(result);
        self.done.notify_all();
    }
}

/// Runs host callbacks off the submitting thread: on the workspace's executor (a worker
/// thread), or, once the executor has shut down, on a short-lived thread of its own.
struct Dispatch {
    executor: Arc<dyn Executor>,
    app: Uuid,
}

impl Dispatch {
    fn run(&self, call: Box<dyn FnOnce() + Send + 'static>) {
        let Err(call) = self.executor.spawn(self.app, call) else { return };
        // The executor refused (queue full or shut down). A plain thread keeps the promise
        // that the callback never runs inside the submit call; only if even that fails does
        // it run here, rather than never.
        let slot = Arc::new(Mutex::new(Some(call)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new().name("sila-callback".into()).spawn(move || {
            if let Some(call) = theirs.lock().unwrap_or_else(|p| p.into_inner()).take() {
                call();
            }
        });
        if spawned.is_err() {
            if let Some(call) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                call();
            }
        }
    }
}

/// Hands a pending core request to C: stores its answer in a new request and runs the
/// host's callback after it, never inside the submit call (a request answered before submit
/// returns has its callback dispatched to a worker). Every outcome of the engine, a refusal
/// at admission included, arrives through the request, so a host has one place to look.
/// Whether the calling thread is one of the engine's worker threads (they are named
/// `sila-worker-<n>` by `sila_sqlite::broker::executor::ThreadPool`).
fn on_engine_worker() -> bool {
    std::thread::current().name().is_some_and(|n| n.starts_with("sila-worker-"))
}

fn submit<T: Send + 'static>(
    database: &sila_database,
    ws: &Workspace,
    pending: Pending<T>,
    convert: fn(T) -> sila_result,
    callback: sila_request_callback,
    userdata: *mut c_void,
) -> Result<*mut sila_request> {
    let early = pending.wait_timeout(Duration::ZERO);
    let request = Arc::new(sila_request {
        outcome: Mutex::new(Outcome::Running),
        done: Condvar::new(),
        cancel: pending.cancel_token(),
    });
    database.ws.adopt_request(&request, pending.cancel_token());
    let engine_ref = request.clone();
    let callback = callback.map(|function| Callback { function, userdata });
    let dispatch = Dispatch { executor: ws.broker().executor().clone(), app: database.app_uuid };
    let finish = move |answer: Result<T>| {
        engine_ref.complete(answer.map(convert));
        let Some(cb) = callback else { return };
        let call = move || cb.call(&engine_ref);
        // The header promises callbacks run on an engine worker thread. The answer can come
        // on another thread: the submitter's, or a host thread that was leading a blocking
        // write and committed this request in its group (it may hold host locks). So only a
        // worker runs the callback in place; every other thread hands it to a worker.
        if on_engine_worker() {
            call();
        } else {
            dispatch.run(Box::new(call));
        }
    };
    match early {
        // Answered before we could attach: complete here, dispatch the callback.
        Some(answer) => finish(answer),
        None => pending.on_complete(finish),
    }
    Ok(Arc::into_raw(request).cast_mut())
}

/// Submits a query without blocking. Arguments as `sila_database_query`, plus an optional
/// completion `callback` (NULL for none) with its `userdata`. On success `*request_out` is a
/// new request the caller owns (free it with `sila_request_free`, exactly once, whether or
/// not it completed). Only bad arguments (`SILA_INVALID_ARGUMENT`: NULL, non-UTF-8, invalid
/// JSON, a closed workspace) are returned here, and then no request is made; every outcome of
/// the engine, refusals such as `SILA_BUSY` or `SILA_READ_ONLY` included, is the request's.
/// Thread-safe on a const database.
///
/// # Safety
/// As `sila_database_query`; `callback` is NULL or a function valid until it has run.
#[no_mangle]
pub unsafe extern "C" fn sila_database_submit_query(
    database: *const sila_database,
    sql: *const c_char,
    sql_len: usize,
    params_json: *const c_char,
    params_json_len: usize,
    callback: sila_request_callback,
    userdata: *mut c_void,
    request_out: *mut *mut sila_request,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (database, sql, params) = unsafe {
            (
                handle(database, "database")?,
                str_arg(sql, sql_len, "sql")?,
                params_arg(params_json, params_json_len)?,
            )
        };
        out_arg(request_out, "request_out")?;
        let (db, ws) = database.get()?;
        let pending = db.submit_query(sql, params);
        let request = submit(
            database,
            &ws,
            pending,
            sila_result::from_rows as fn(Rows) -> sila_result,
            callback,
            userdata,
        )?;
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(request_out, request) };
        Ok(())
    })
}

/// Submits a write without blocking; the request completes once the write is committed
/// (its result carries changes and last insert rowid). Arguments as
/// `sila_database_submit_query`. Thread-safe on a const database.
///
/// # Safety
/// As `sila_database_submit_query`.
#[no_mangle]
pub unsafe extern "C" fn sila_database_submit_exec(
    database: *const sila_database,
    sql: *const c_char,
    sql_len: usize,
    params_json: *const c_char,
    params_json_len: usize,
    callback: sila_request_callback,
    userdata: *mut c_void,
    request_out: *mut *mut sila_request,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (database, sql, params) = unsafe {
            (
                handle(database, "database")?,
                str_arg(sql, sql_len, "sql")?,
                params_arg(params_json, params_json_len)?,
            )
        };
        out_arg(request_out, "request_out")?;
        let (db, ws) = database.get()?;
        let pending = db.submit_exec(sql, params);
        let request = submit(
            database,
            &ws,
            pending,
            sila_result::from_exec as fn(ExecResult) -> sila_result,
            callback,
            userdata,
        )?;
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(request_out, request) };
        Ok(())
    })
}

/// Whether the request has completed (its result may be taken without blocking). False for
/// NULL. Thread-safe on a const request; does not change the last error.
///
/// # Safety
/// `request` is NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn sila_request_is_done(request: *const sila_request) -> bool {
    guard_value(false, || {
        // SAFETY: NULL or live (caller's contract).
        unsafe { request.as_ref() }.is_some_and(|r| !matches!(*r.lock(), Outcome::Running))
    })
}

/// Waits until the request completes or `timeout_ms` milliseconds pass (negative: no limit;
/// 0: just poll). Returns `SILA_OK` when it has completed (take its outcome with
/// `sila_request_take_result`) and `SILA_TIMEOUT` when it is still running (the request goes
/// on; this does not say how it will end). Thread-safe on a const request.
///
/// # Safety
/// `request` is NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn sila_request_wait(request: *const sila_request, timeout_ms: i64) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let request = unsafe { handle(request, "request") }?;
        let deadline = u64::try_from(timeout_ms).ok().map(|ms| Instant::now() + Duration::from_millis(ms));
        let mut outcome = request.lock();
        while matches!(*outcome, Outcome::Running) {
            outcome = match deadline {
                None => request.done.wait(outcome).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::new(ErrorCode::Timeout, "the request is still running"));
                    }
                    request.done.wait_timeout(outcome, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
        Ok(())
    })
}

/// Asks the request to stop: a queued request completes with `SILA_CANCELLED` without
/// running; a running statement is interrupted and completes with `SILA_CANCELLED`; a request
/// that already finished keeps its outcome. Returns at once (`SILA_OK`); the completion (and
/// callback) follows. Thread-safe on a const request.
///
/// # Safety
/// `request` is NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn sila_request_cancel(request: *const sila_request) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let request = unsafe { handle(request, "request") }?;
        request.cancel.cancel();
        Ok(())
    })
}

/// Takes the outcome of the request, blocking until it completes. Returns the request's own
/// status: on `SILA_OK`, `*result_out` (if not NULL) receives its result, which the caller now
/// owns (`sila_result_free`); on failure the error is the thread's last error. A result can be
/// taken once; taking again is `SILA_INVALID_ARGUMENT` (an error outcome is returned every
/// time). Exclusive.
///
/// # Safety
/// `request` is NULL or a live request used by no other thread for this call; `result_out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_request_take_result(
    request: *mut sila_request,
    result_out: *mut *mut sila_result,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let request = unsafe { handle(request.cast_const(), "request") }?;
        let mut outcome = request.lock();
        while matches!(*outcome, Outcome::Running) {
            outcome = request.done.wait(outcome).unwrap_or_else(|p| p.into_inner());
        }
        match std::mem::replace(&mut *outcome, Outcome::Taken) {
            Outcome::Done(Ok(result)) => {
                if !result_out.is_null() {
                    // SAFETY: non-NULL and writable (caller's contract).
                    unsafe { write_out(result_out, Box::into_raw(Box::new(result))) };
                }
                Ok(())
            }
            Outcome::Done(Err(e)) => {
                *outcome = Outcome::Done(Err(e.clone()));
                Err(e)
            }
            Outcome::Taken | Outcome::Running => {
                Err(Error::new(ErrorCode::InvalidArgument, "the request's result was already taken"))
            }
        }
    })
}

/// Releases the host's reference to the request. NULL is allowed and does nothing. A request
/// still running is not cancelled (call `sila_request_cancel` first for that): it completes,
/// its callback still runs (with a pointer valid during the call, which must then not be
/// freed again), and its result is discarded. Freeing twice is undefined. Exclusive.
///
/// # Safety
/// `request` is NULL or a request from this library whose host reference was not yet freed.
#[no_mangle]
pub unsafe extern "C" fn sila_request_free(request: *mut sila_request) {
    guard_value((), || {
        if !request.is_null() {
            // SAFETY: made by `Arc::into_raw` in `submit`; the host's one reference is
            // released once.
            drop(unsafe { Arc::from_raw(request.cast_const()) });
        }
    })
}
