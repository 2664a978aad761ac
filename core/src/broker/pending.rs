//! [`Pending`]: the non-blocking handle of a request, and its [`Completer`].
//!
//! A request submitted without blocking returns a `Pending<T>`. The host may wait on it
//! (with or without a timeout), poll it, `.await` it (it is a [`Future`] on any executor:
//! the thread that answers the request wakes the task's [`Waker`]), cancel it, or register a
//! callback that runs on the thread that completes the request. Every `Completer` answers
//! exactly once: dropping one unanswered answers `Internal` ("request dropped"), so no
//! waiter hangs forever.
//!
//! Dropping a `Pending` whose answer nobody can receive any more (no callback, not taken)
//! cancels the request, as dropping a future does: a queued request is answered `Cancelled`
//! without running, a running statement is interrupted (a write already committed stays
//! committed). [`Pending::detach`] lets a request run to its end unobserved.

use crate::sqlite::CancelToken;
use crate::{Error, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

type Callback<T> = Box<dyn FnOnce(Result<T>) + Send>;

enum State<T> {
    /// Not answered yet: a callback to run, or the waker of the task awaiting it.
    Waiting(Option<Callback<T>>, Option<Waker>),
    Ready(Result<T>),
    Taken,
    /// Detached ([`Pending::detach`]): the answer is dropped when it comes.
    Detached,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The waitable, cancellable handle of a request in flight; a [`Future`] of its answer.
/// Dropping it unanswered cancels the request (see the module docs).
pub struct Pending<T> {
    slot: Arc<Slot<T>>,
    cancel: CancelToken,
}

/// The answering side of a [`Pending`].
pub struct Completer<T> {
    slot: Option<Arc<Slot<T>>>,
}

/// A new pending request and its completer, sharing `cancel`.
pub fn pending<T>(cancel: CancelToken) -> (Pending<T>, Completer<T>) {
    let slot = Arc::new(Slot { state: Mutex::new(State::Waiting(None, None)), ready: Condvar::new() });
    (Pending { slot: slot.clone(), cancel }, Completer { slot: Some(slot) })
}

impl<T> Completer<T> {
    /// Answers the request: runs the callback if one is registered (on this thread),
    /// otherwise stores the result and wakes waiters.
    pub fn complete(mut self, result: Result<T>) {
        if let Some(slot) = self.slot.take() {
            deliver(&slot, result);
        }
    }
}

fn deliver<T>(slot: &Slot<T>, result: Result<T>) {
    let mut state = lock(&slot.state);
    match std::mem::replace(&mut *state, State::Taken) {
        State::Waiting(Some(callback), _) => {
            drop(state);
            // The callback is the host's code: a panic in it must not unwind into a worker.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(result)));
        }
        State::Waiting(None, waker) => {
            *state = State::Ready(result);
            slot.ready.notify_all();
            drop(state);
            // Outside the lock: a waker may run the task's poll on this thread at once.
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        // Taken or detached: nobody receives the answer.
        other => *state = other,
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            deliver(&slot, Err(Error::internal("request dropped before it was answered")));
        }
    }
}

impl<T> Pending<T> {
    /// Blocks until the request is answered.
    pub fn wait(self) -> Result<T> {
        let mut state = lock(&self.slot.state);
        loop {
            match std::mem::replace(&mut *state, State::Taken) {
                State::Ready(r) => return r,
                State::Taken | State::Detached => return Err(Error::internal("result already taken")),
                waiting @ State::Waiting(..) => {
                    *state = waiting;
                    state = self.slot.ready.wait(state).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }

    /// Waits up to `timeout`; `None` if the request is still running (the handle stays valid).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<T>> {
        let state = lock(&self.slot.state);
        let (mut state, _) = self
            .slot
            .ready
            .wait_timeout_while(state, timeout, |s| matches!(s, State::Waiting(..)))
            .unwrap_or_else(|p| p.into_inner());
        take_ready(&mut state)
    }

    /// The result if the request has been answered, without blocking.
    pub fn try_take(&self) -> Option<Result<T>> {
        take_ready(&mut lock(&self.slot.state))
    }

    /// Whether the request has been answered (and the result not yet taken).
    pub fn is_ready(&self) -> bool {
        matches!(*lock(&self.slot.state), State::Ready(_))
    }

    /// Asks the request to stop: a queued request is answered `Cancelled` without running; a
    /// running statement is interrupted and answered `Cancelled`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The request's cancellation token (cancel it from anywhere).
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Registers a callback that receives the result. It runs on the thread that answers the
    /// request (a worker thread), or right here if the answer is already in. It must not
    /// block for long; a panic in it is caught and discarded.
    pub fn on_complete(self, callback: impl FnOnce(Result<T>) + Send + 'static) {
        let mut state = lock(&self.slot.state);
        match std::mem::replace(&mut *state, State::Taken) {
            State::Ready(r) => {
                drop(state);
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(r)));
            }
            State::Waiting(..) => *state = State::Waiting(Some(Box::new(callback)), None),
            other => *state = other,
        }
    }

    /// Lets the request run to its end with nobody to answer: dropping the handle then does
    /// not cancel it (fire and forget).
    pub fn detach(self) {
        let mut state = lock(&self.slot.state);
        if matches!(*state, State::Waiting(None, _) | State::Ready(_)) {
            *state = State::Detached;
        }
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;

    /// Ready once the request is answered; until then the task's waker is kept and woken by
    /// the thread that answers (any executor: nothing here belongs to a runtime).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut state = lock(&self.slot.state);
        match std::mem::replace(&mut *state, State::Taken) {
            State::Ready(r) => Poll::Ready(r),
            State::Taken | State::Detached => Poll::Ready(Err(Error::internal("result already taken"))),
            State::Waiting(callback, waker) => {
                // A callback registered means the handle was consumed; a Pending being polled
                // has none. Keep the newest waker (the task may have moved).
                let waker = match waker {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                };
                *state = State::Waiting(callback, Some(waker));
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for Pending<T> {
    /// Cancels the request if its answer can no longer reach anyone: not taken, no callback
    /// registered, not detached.
    fn drop(&mut self) {
        if matches!(*lock(&self.slot.state), State::Waiting(None, _)) {
            self.cancel.cancel();
        }
    }
}

fn take_ready<T>(state: &mut State<T>) -> Option<Result<T>> {
    match std::mem::replace(state, State::Taken) {
        State::Ready(r) => Some(r),
        other => {
            *state = other;
            None
        }
    }
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("ready", &self.is_ready()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn wait_poll_and_callback() {
        let (p, c) = pending::<u32>(CancelToken::new());
        assert!(p.try_take().is_none());
        assert!(p.wait_timeout(Duration::from_millis(1)).is_none());
        c.complete(Ok(7));
        assert!(p.is_ready());
        assert_eq!(p.wait().unwrap(), 7);

        let (p, c) = pending::<u32>(CancelToken::new());
        let (tx, rx) = std::sync::mpsc::channel();
        p.on_complete(move |r| tx.send(r.unwrap()).unwrap());
        std::thread::spawn(move || c.complete(Ok(9)));
        assert_eq!(rx.recv().unwrap(), 9);
    }

    #[test]
    fn dropped_completer_answers_internal() {
        let (p, c) = pending::<u32>(CancelToken::new());
        drop(c);
        assert_eq!(p.wait().unwrap_err().code(), ErrorCode::Internal);
    }

    #[test]
    fn callback_registered_after_completion_runs_at_once() {
        let (p, c) = pending::<u32>(CancelToken::new());
        c.complete(Ok(1));
        let hit = Arc::new(Mutex::new(None));
        let h = hit.clone();
        p.on_complete(move |r| *h.lock().unwrap() = Some(r.unwrap()));
        assert_eq!(*hit.lock().unwrap(), Some(1));
    }
}
