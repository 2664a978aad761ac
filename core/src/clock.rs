//! Time sources, injected so a simulation controls time.
//!
//! [`Clock::now_ms`] is wall-clock time (records, snapshot times, retention ages).
//! [`Clock::monotonic`] is what every deadline and timeout is measured on: statement and
//! transaction timeouts, waits for a reader, budget refills, idle closing. The default is the
//! process's monotonic clock; the simulation's clock advances only when the simulation says,
//! so the same seed times out the same statements.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A source of time. See the module docs.
pub trait Clock: Send + Sync {
    /// Milliseconds since the unix epoch.
    fn now_ms(&self) -> u64;

    /// Time since an arbitrary origin, never going back. Deadlines are points on it.
    fn monotonic(&self) -> Duration {
        process_origin().elapsed()
    }

    /// Waits `duration` (SQLite's busy handler sleeps through this). The default blocks the
    /// thread; a simulated clock must not block its single-threaded executor.
    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }

    /// True only for [`SystemClock`], whose monotonic time is [`system_monotonic`]: every
    /// request builds a deadline, and knowing this spares it a shared reference count.
    fn is_system(&self) -> bool {
        false
    }
}

/// The monotonic time of [`SystemClock`] (and the default of [`Clock::monotonic`]).
pub fn system_monotonic() -> Duration {
    process_origin().elapsed()
}

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    fn is_system(&self) -> bool {
        true
    }
}

/// The origin of the default [`Clock::monotonic`]: the first time anyone asked.
fn process_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// A shared [`SystemClock`].
pub fn system() -> Arc<dyn Clock> {
    static SYSTEM: OnceLock<Arc<dyn Clock>> = OnceLock::new();
    SYSTEM.get_or_init(|| Arc::new(SystemClock)).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_monotonic_and_near_the_wall() {
        let c = system();
        let (a, b) = (c.monotonic(), c.monotonic());
        assert!(b >= a);
        assert!(c.now_ms() > 1_600_000_000_000, "after 2020");
    }
}
