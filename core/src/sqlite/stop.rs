//! Deadlines and cancellation for running statements.
//!
//! A [`StopCheck`] is the limit of one request: a deadline and a [`CancelToken`] the caller
//! (or the broker on its behalf) can trip from any thread. While a statement runs, this module
//! owns the connection's SQLite progress handler: `ProgressGuard` installs a handler that is
//! called every [`PROGRESS_HANDLER_OPS`] virtual-machine instructions, checks the token and the
//! clock (the monotonic time of the [`Clock`] the check was built on: the workspace's, so a
//! simulation's clock decides when a deadline passes), and interrupts the statement when either says stop. It remembers which one fired so
//! the resulting `SQLITE_INTERRUPT` maps to [`ErrorCode::Timeout`] or
//! [`ErrorCode::Cancelled`] (see [`super::map_error`]). The guard removes the handler when it
//! drops, so a connection never keeps a handler pointing at a finished request.
//!
//! Invariant: nothing else may install a progress handler on a connection these functions run
//! on (rusqlite's `Connection::progress_handler` would be overwritten while a statement runs
//! and cleared afterwards).
//!
//! Known gap: the progress handler is not called while SQLite sleeps in its busy handler, so a
//! statement waiting for a lock can overrun its deadline by up to the connection's
//! `busy_timeout`.

use std::marker::PhantomData;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

use rusqlite::{ffi, Connection};

use crate::{Error, ErrorCode, Result};

/// Virtual-machine instructions between two checks of the deadline and the cancel flag.
///
/// One check costs an atomic load and a clock read (tens of nanoseconds); 1000 instructions
/// take a few microseconds, so a stop is noticed within microseconds at negligible cost.
pub const PROGRESS_HANDLER_OPS: c_int = 1000;

/// A cancellation flag shared between the request's owner and the thread running it.
///
/// Clones share the flag. Cancelling is idempotent and cannot be undone.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks every statement checking this token to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`CancelToken::cancel`] was called on this token or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Why a [`StopCheck`] stopped a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The deadline passed.
    Deadline,
    /// The cancel token was tripped.
    Cancelled,
}

const FIRED_NONE: u8 = 0;
const FIRED_DEADLINE: u8 = 1;
const FIRED_CANCELLED: u8 = 2;

/// The limits of one request: a deadline and a cancel token, plus a record of which of them
/// stopped a statement.
///
/// One `StopCheck` may serve several statements of the same request (a transaction); once it
/// has fired, every later statement run with it stops before it starts.
pub struct StopCheck {
    /// A point on `clock`'s monotonic time.
    deadline: Duration,
    timeout: Duration,
    cancel: CancelToken,
    fired: AtomicU8,
    /// `None` for the system clock: no shared reference count taken per request.
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for StopCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopCheck")
            .field("deadline", &self.deadline)
            .field("timeout", &self.timeout)
            .field("cancel", &self.cancel)
            .field("fired", &self.fired())
            .finish()
    }
}

impl StopCheck {
    /// A check that stops at `deadline` (a point on `clock`'s monotonic time) or when
    /// `cancel` is tripped. The timeout named in error messages is the time left until
    /// `deadline`, measured now.
    pub fn until(clock: &Arc<dyn Clock>, deadline: Duration, cancel: CancelToken) -> StopCheck {
        let timeout = deadline.saturating_sub(clock.monotonic());
        StopCheck { deadline, timeout, cancel, fired: AtomicU8::new(FIRED_NONE), clock: custom(clock) }
    }

    /// A check that stops `timeout` from now on the system clock, or when `cancel` is tripped.
    pub fn with_timeout(timeout: Duration, cancel: CancelToken) -> StopCheck {
        StopCheck::with_timeout_on(&crate::clock::system(), timeout, cancel)
    }

    /// A check that stops `timeout` from now on `clock`, or when `cancel` is tripped.
    pub fn with_timeout_on(clock: &Arc<dyn Clock>, timeout: Duration, cancel: CancelToken) -> StopCheck {
        StopCheck::with_timeout_from(clock, clock.monotonic(), timeout, cancel)
    }

    /// A check that stops `timeout` after `now`, a reading of `clock`'s monotonic time the
    /// caller has just taken (the read path reads the clock once per request and shares it).
    pub fn with_timeout_from(
        clock: &Arc<dyn Clock>,
        now: Duration,
        timeout: Duration,
        cancel: CancelToken,
    ) -> StopCheck {
        // An absurd timeout saturates (about 584 million years of monotonic time).
        let deadline = now.saturating_add(timeout);
        StopCheck { deadline, timeout, cancel, fired: AtomicU8::new(FIRED_NONE), clock: custom(clock) }
    }

    /// Monotonic time now on this check's clock.
    fn now(&self) -> Duration {
        match &self.clock {
            None => crate::clock::system_monotonic(),
            Some(clock) => clock.monotonic(),
        }
    }

    /// The deadline, a point on the clock's monotonic time.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Time left until the deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_sub(self.now())
    }

    /// The timeout this check was built with (named in [`ErrorCode::Timeout`] messages).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The cancel token.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Checks the token, then the clock; records and returns the first reason to stop.
    ///
    /// Cancellation wins over the deadline when both hold, because it is the caller's
    /// explicit wish.
    pub fn poll(&self) -> Option<StopReason> {
        if let Some(reason) = self.fired() {
            return Some(reason);
        }
        let reason = if self.cancel.is_cancelled() {
            StopReason::Cancelled
        } else if self.now() >= self.deadline {
            StopReason::Deadline
        } else {
            return None;
        };
        let code = match reason {
            StopReason::Deadline => FIRED_DEADLINE,
            StopReason::Cancelled => FIRED_CANCELLED,
        };
        // Keep the first reason recorded if another thread raced us.
        let _ = self.fired.compare_exchange(FIRED_NONE, code, Ordering::AcqRel, Ordering::Acquire);
        self.fired()
    }

    /// The reason this check stopped a statement, if it did.
    pub fn fired(&self) -> Option<StopReason> {
        match self.fired.load(Ordering::Acquire) {
            FIRED_DEADLINE => Some(StopReason::Deadline),
            FIRED_CANCELLED => Some(StopReason::Cancelled),
            _ => None,
        }
    }

    /// `Err` with [`ErrorCode::Timeout`] or [`ErrorCode::Cancelled`] when the request must stop.
    ///
    /// Called before a statement starts and between rows, where no progress handler runs.
    pub fn check(&self) -> Result<()> {
        match self.poll() {
            None => Ok(()),
            Some(reason) => Err(self.error(reason)),
        }
    }

    /// [`StopCheck::check`] without the clock: `Err` once the token is tripped or the check
    /// has already fired. For places where the deadline is watched elsewhere (between rows,
    /// the progress handler keeps counting the statement's instructions) or was just set.
    pub fn check_cancel(&self) -> Result<()> {
        if let Some(reason) = self.fired() {
            return Err(self.error(reason));
        }
        if self.cancel.is_cancelled() {
            let _ =
                self.fired.compare_exchange(FIRED_NONE, FIRED_CANCELLED, Ordering::AcqRel, Ordering::Acquire);
            return Err(self.error(self.fired().unwrap_or(StopReason::Cancelled)));
        }
        Ok(())
    }

    /// The error for a stop, with a message naming the cause.
    pub fn error(&self, reason: StopReason) -> Error {
        match reason {
            StopReason::Deadline => Error::new(
                ErrorCode::Timeout,
                format!("statement timeout of {} ms exceeded", self.timeout.as_millis()),
            ),
            StopReason::Cancelled => Error::new(ErrorCode::Cancelled, "statement cancelled by its caller"),
        }
    }
}

/// The clock a check keeps: none for the system clock (see [`StopCheck::now`]).
fn custom(clock: &Arc<dyn Clock>) -> Option<Arc<dyn Clock>> {
    (!clock.is_system()).then(|| clock.clone())
}

/// The C trampoline SQLite calls every [`PROGRESS_HANDLER_OPS`] instructions.
///
/// Returns non-zero to interrupt the running statement.
unsafe extern "C" fn progress_trampoline(arg: *mut c_void) -> c_int {
    // A panic must never unwind into SQLite's C frames; stopping the statement is the safe
    // fallback.
    let stop = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `arg` is the `&StopCheck` that `ProgressGuard::install` registered, and the
        // guard (which borrows that `StopCheck` for its whole life) unregisters this handler
        // before the borrow ends, so the pointer is valid whenever SQLite calls us.
        let check = unsafe { &*(arg as *const StopCheck) };
        check.poll().is_some()
    }));
    c_int::from(stop.unwrap_or(true))
}

/// Keeps a [`StopCheck`] installed as a connection's progress handler; removes it on drop.
pub(crate) struct ProgressGuard<'a> {
    db: *mut ffi::sqlite3,
    _borrows: PhantomData<(&'a Connection, &'a StopCheck)>,
}

impl<'a> ProgressGuard<'a> {
    /// Installs `stop` as `conn`'s progress handler until the guard drops.
    pub(crate) fn install(conn: &'a Connection, stop: &'a StopCheck) -> ProgressGuard<'a> {
        // SAFETY: the handle stays valid while `conn` is borrowed, which the guard's lifetime
        // enforces. `stop` outlives the guard (same lifetime), and `Drop` unregisters the
        // handler, so SQLite never calls the trampoline with a dangling pointer. `StopCheck`
        // is `Sync`, so reading it from the thread that steps the statement is sound.
        let db = unsafe { conn.handle() };
        let arg = stop as *const StopCheck as *mut c_void;
        unsafe { ffi::sqlite3_progress_handler(db, PROGRESS_HANDLER_OPS, Some(progress_trampoline), arg) };
        ProgressGuard { db, _borrows: PhantomData }
    }
}

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: `db` is the live handle of the connection this guard borrows.
        unsafe { ffi::sqlite3_progress_handler(self.db, 0, None, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_is_shared_by_clones() {
        let token = CancelToken::new();
        let clone = token.clone();
        assert!(!token.is_cancelled());
        clone.cancel();
        assert!(token.is_cancelled());
    }

    #[test]
    fn poll_records_the_first_reason() {
        let stop = StopCheck::with_timeout(Duration::from_secs(60), CancelToken::new());
        assert_eq!(stop.poll(), None);
        assert!(stop.check().is_ok());
        stop.cancel_token().cancel();
        assert_eq!(stop.poll(), Some(StopReason::Cancelled));
        assert_eq!(stop.check().unwrap_err().code(), ErrorCode::Cancelled);

        let past = StopCheck::with_timeout(Duration::ZERO, CancelToken::new());
        assert_eq!(past.poll(), Some(StopReason::Deadline));
        // A later cancel does not rewrite why it stopped.
        past.cancel_token().cancel();
        assert_eq!(past.fired(), Some(StopReason::Deadline));
        let err = past.check().unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout);
        assert!(err.message().contains("statement timeout of 0 ms exceeded"), "{err}");
    }

    #[test]
    fn check_cancel_ignores_the_clock_but_not_the_token_or_a_fired_check() {
        let past = StopCheck::with_timeout(Duration::ZERO, CancelToken::new());
        assert!(past.check_cancel().is_ok(), "the deadline is not read");
        assert_eq!(past.check().unwrap_err().code(), ErrorCode::Timeout);
        assert_eq!(past.check_cancel().unwrap_err().code(), ErrorCode::Timeout, "fired stays fired");

        let live = StopCheck::with_timeout(Duration::from_secs(60), CancelToken::new());
        assert!(live.check_cancel().is_ok());
        live.cancel_token().cancel();
        assert_eq!(live.check_cancel().unwrap_err().code(), ErrorCode::Cancelled);
        assert_eq!(live.fired(), Some(StopReason::Cancelled));
    }

    /// A clock that moves only when told to.
    struct ManualClock(std::sync::atomic::AtomicU64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> u64 {
            0
        }
        fn monotonic(&self) -> Duration {
            Duration::from_millis(self.0.load(Ordering::SeqCst))
        }
    }

    #[test]
    fn the_injected_clock_alone_decides_the_deadline() {
        let manual = Arc::new(ManualClock(std::sync::atomic::AtomicU64::new(1_000)));
        let clock: Arc<dyn Clock> = manual.clone();
        let stop = StopCheck::with_timeout_on(&clock, Duration::from_millis(50), CancelToken::new());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(stop.poll(), None, "real time passing does not matter");
        assert_eq!(stop.remaining(), Duration::from_millis(50));
        manual.0.store(1_049, Ordering::SeqCst);
        assert_eq!(stop.poll(), None, "one millisecond before the deadline");
        manual.0.store(1_050, Ordering::SeqCst);
        assert_eq!(stop.poll(), Some(StopReason::Deadline), "at the deadline");
        assert_eq!(stop.remaining(), Duration::ZERO);
        let until = StopCheck::until(&clock, Duration::from_millis(1_060), CancelToken::new());
        assert_eq!(until.timeout(), Duration::from_millis(10));
    }

    #[test]
    fn huge_timeout_does_not_overflow() {
        let stop = StopCheck::with_timeout(Duration::MAX, CancelToken::new());
        assert_eq!(stop.poll(), None);
    }

    #[test]
    fn guard_removes_the_handler() {
        let conn = Connection::open_in_memory().unwrap();
        let stop = StopCheck::with_timeout(Duration::ZERO, CancelToken::new());
        {
            let _guard = ProgressGuard::install(&conn, &stop);
            let err = conn
                .query_row("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 100000) SELECT count(*) FROM c", [], |r| r.get::<_, i64>(0))
                .unwrap_err();
            assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::OperationInterrupted));
        }
        let n: i64 = conn
            .query_row("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 100000) SELECT count(*) FROM c", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 100_000);
    }
}
