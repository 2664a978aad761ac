//! Per-app per-minute budgets: statements, rows read and rows written.
//!
//! Each budget is a token bucket that refills continuously at `limit / 60 s` and holds at
//! most a modest burst: `burst_ms` milliseconds of that rate (`BrokerOptions::budget_burst`,
//! default 5 s; never less than one token). An app therefore runs at its limit's rate with
//! short bursts above it, and an app that went quiet cannot spend a whole minute's allowance
//! in one go at its neighbours' expense. The broker uses it in two places:
//!
//! * **admission** ([`AppBudget::check`], from `BrokerShared::admit`): a request is refused
//!   with [`ErrorCode::BudgetExceeded`] while any bucket is empty — for statements, less than
//!   one statement left; for rows, below zero (in debt) — and the message names the budget
//!   and the time until it refills enough;
//! * **accounting** ([`AppBudget::charge`], from `DbShared::record`): every statement that ran
//!   (including each statement inside a transaction, and failed ones) costs one statement,
//!   plus the rows it returned (read) and changed (written). Rows are known only after the
//!   statement, so a bucket may go into debt; the debt is capped at one minute's allowance
//!   (not at the burst: a large statement's rows are charged in full, up to that cap), so a
//!   refusal never lasts more than a minute after the app stops.
//!
//! Overshoot is bounded: requests already admitted finish (at most
//! `max_concurrent_requests_per_app` of them, plus the statements of transactions already
//! running), and the next admission is refused.
//!
//! The logic is pure: time comes in as milliseconds from any monotonic origin (the broker
//! passes the time since it started, from [`std::time::Instant`]), so the tests drive it with
//! explicit times. Arithmetic is in `i128` "token-milliseconds", exact and overflow-free for
//! every `u64` limit; a limit of [`UNLIMITED`] (`u64::MAX`) disables its budget.

use std::sync::{Mutex, MutexGuard};

use crate::{Error, ErrorCode, Result};

/// Milliseconds in the budget window.
pub const WINDOW_MS: u64 = 60_000;

/// A limit that disables its budget.
pub const UNLIMITED: u64 = u64::MAX;

/// The per-minute limits of one app (from [`super::BrokerOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Statements per minute.
    pub statements_per_minute: u64,
    /// Rows returned by queries per minute.
    pub rows_read_per_minute: u64,
    /// Rows inserted, updated or deleted per minute.
    pub rows_written_per_minute: u64,
    /// How much a bucket holds, in milliseconds of its rate (at least one token).
    pub burst_ms: u64,
}

impl BudgetLimits {
    /// Whether every budget is off (`u64::MAX`): then checking and charging cost nothing.
    pub fn disabled(&self) -> bool {
        self.statements_per_minute == u64::MAX
            && self.rows_read_per_minute == u64::MAX
            && self.rows_written_per_minute == u64::MAX
    }
}

/// Which budget refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKind {
    /// `statements_per_minute`.
    Statements,
    /// `rows_read_per_minute`.
    RowsRead,
    /// `rows_written_per_minute`.
    RowsWritten,
}

impl BudgetKind {
    /// The option's name, as the message shows it.
    pub fn option_name(self) -> &'static str {
        match self {
            BudgetKind::Statements => "statements_per_minute",
            BudgetKind::RowsRead => "rows_read_per_minute",
            BudgetKind::RowsWritten => "rows_written_per_minute",
        }
    }
}

/// One token bucket. `level` is in token-milliseconds: one token is [`WINDOW_MS`] units and
/// the bucket refills by `limit` units per millisecond, so it refills `limit` tokens a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    level: i128,
    last_ms: u64,
}

fn units(tokens: u64) -> i128 {
    i128::from(tokens) * i128::from(WINDOW_MS)
}

/// What a bucket of `limit` a minute holds when full: `burst_ms` of its rate, at least one
/// token (none for a limit of zero), in units.
fn capacity(limit: u64, burst_ms: u64) -> i128 {
    if limit == 0 {
        return 0;
    }
    i128::from(limit).saturating_mul(i128::from(burst_ms)).max(units(1))
}

impl Bucket {
    /// A full bucket at time `now_ms`.
    pub fn full(limit: u64, burst_ms: u64, now_ms: u64) -> Bucket {
        Bucket { level: capacity(limit, burst_ms), last_ms: now_ms }
    }

    /// Adds what accrued since the last update, up to the burst. Time that goes backwards
    /// adds nothing.
    fn refill(&mut self, limit: u64, burst_ms: u64, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let accrued = i128::from(elapsed).saturating_mul(i128::from(limit));
        self.level = self.level.saturating_add(accrued).min(capacity(limit, burst_ms));
    }

    /// Whole tokens available now (negative when in debt).
    pub fn tokens(&mut self, limit: u64, burst_ms: u64, now_ms: u64) -> i128 {
        self.refill(limit, burst_ms, now_ms);
        self.level.div_euclid(i128::from(WINDOW_MS))
    }

    /// `None` if at least `need_units` are available now, else the milliseconds until they
    /// are (rounded up, at least 1).
    fn wait_ms(&mut self, limit: u64, burst_ms: u64, now_ms: u64, need_units: i128) -> Option<u64> {
        if limit == UNLIMITED {
            return None;
        }
        self.refill(limit, burst_ms, now_ms);
        if self.level >= need_units {
            return None;
        }
        if limit == 0 {
            return Some(u64::MAX);
        }
        let missing = need_units - self.level;
        let ms = (missing + i128::from(limit) - 1) / i128::from(limit);
        Some(u64::try_from(ms).unwrap_or(u64::MAX).max(1))
    }

    /// Takes `tokens`; the level may go below zero, but never below minus one minute's
    /// allowance.
    fn take(&mut self, limit: u64, burst_ms: u64, now_ms: u64, tokens: u64) {
        if limit == UNLIMITED {
            return;
        }
        self.refill(limit, burst_ms, now_ms);
        self.level = self.level.saturating_sub(units(tokens)).max(-units(limit));
    }
}

#[derive(Debug, Clone, Copy)]
struct Buckets {
    statements: Bucket,
    rows_read: Bucket,
    rows_written: Bucket,
}

/// The budgets of one app. Starts full the first time it is used.
#[derive(Debug, Default)]
pub struct AppBudget {
    state: Mutex<Option<Buckets>>,
}

impl AppBudget {
    fn buckets(&self, limits: &BudgetLimits, now_ms: u64) -> MutexGuard<'_, Option<Buckets>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.is_none() {
            *state = Some(Buckets {
                statements: Bucket::full(limits.statements_per_minute, limits.burst_ms, now_ms),
                rows_read: Bucket::full(limits.rows_read_per_minute, limits.burst_ms, now_ms),
                rows_written: Bucket::full(limits.rows_written_per_minute, limits.burst_ms, now_ms),
            });
        }
        state
    }

    /// Refuses with [`ErrorCode::BudgetExceeded`] if a statement may not start now: fewer than
    /// one statement left, or rows read or written in debt.
    pub fn check(&self, limits: &BudgetLimits, now_ms: u64) -> Result<()> {
        if limits.disabled() {
            return Ok(());
        }
        let mut guard = self.buckets(limits, now_ms);
        let Some(b) = guard.as_mut() else {
            return Ok(());
        };
        let checks = [
            (BudgetKind::Statements, &mut b.statements, limits.statements_per_minute, units(1)),
            (BudgetKind::RowsRead, &mut b.rows_read, limits.rows_read_per_minute, 0),
            (BudgetKind::RowsWritten, &mut b.rows_written, limits.rows_written_per_minute, 0),
        ];
        for (kind, bucket, limit, need) in checks {
            if let Some(wait) = bucket.wait_ms(limit, limits.burst_ms, now_ms, need) {
                return Err(exceeded(kind, limit, wait));
            }
        }
        Ok(())
    }

    /// Charges one finished statement and its rows.
    pub fn charge(&self, limits: &BudgetLimits, now_ms: u64, rows_read: u64, rows_written: u64) {
        if limits.disabled() {
            return;
        }
        let mut guard = self.buckets(limits, now_ms);
        if let Some(b) = guard.as_mut() {
            let burst = limits.burst_ms;
            b.statements.take(limits.statements_per_minute, burst, now_ms, 1);
            b.rows_read.take(limits.rows_read_per_minute, burst, now_ms, rows_read);
            b.rows_written.take(limits.rows_written_per_minute, burst, now_ms, rows_written);
        }
    }
}

fn exceeded(kind: BudgetKind, limit: u64, wait_ms: u64) -> Error {
    let error = Error::new(
        ErrorCode::BudgetExceeded,
        format!(
            "the app's {} budget is used up ({} is {limit}); it refills enough for the next request in {wait_ms} ms",
            match kind {
                BudgetKind::Statements => "statement",
                BudgetKind::RowsRead => "rows-read",
                BudgetKind::RowsWritten => "rows-written",
            },
            kind.option_name(),
        ),
    );
    error.with_retry_after(std::time::Duration::from_millis(wait_ms))
}

#[cfg(test)]
mod tests {
    #[test]
    fn disabled_budgets_never_refuse_and_keep_no_state() {
        let off = BudgetLimits {
            statements_per_minute: u64::MAX,
            rows_read_per_minute: u64::MAX,
            rows_written_per_minute: u64::MAX,
            burst_ms: 5_000,
        };
        assert!(off.disabled());
        let b = AppBudget::default();
        for i in 0..1000 {
            assert!(b.check(&off, i).is_ok());
            b.charge(&off, i, u64::MAX / 2, u64::MAX / 2);
        }
        assert!(b.state.lock().unwrap().is_none(), "no bucket was ever made");
        let one_off = BudgetLimits { statements_per_minute: 1, ..off };
        assert!(!one_off.disabled());
    }

    use super::*;

    /// A minute's burst: the arithmetic of the tests below is in whole minutes.
    const LIMITS: BudgetLimits = BudgetLimits {
        statements_per_minute: 60,
        rows_read_per_minute: 600,
        rows_written_per_minute: 60,
        burst_ms: WINDOW_MS,
    };

    #[test]
    fn statements_burst_to_the_limit_then_refill_at_its_rate() {
        let budget = AppBudget::default();
        let t0 = 1_000;
        for i in 0..60 {
            budget.check(&LIMITS, t0).unwrap_or_else(|e| panic!("statement {i}: {e}"));
            budget.charge(&LIMITS, t0, 0, 0);
        }
        let err = budget.check(&LIMITS, t0).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BudgetExceeded);
        // 60 a minute is one per second: the next one is 1000 ms away.
        assert!(err.message().contains("statements_per_minute is 60"), "{err}");
        assert!(err.message().contains("in 1000 ms"), "{err}");
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_millis(1000)), "structured, too");
        assert!(budget.check(&LIMITS, t0 + 999).is_err(), "one millisecond short");
        budget.check(&LIMITS, t0 + 1000).unwrap();
        budget.charge(&LIMITS, t0 + 1000, 0, 0);
        assert!(budget.check(&LIMITS, t0 + 1000).is_err());
        // A long pause refills at most one minute's allowance.
        let later = t0 + 10 * WINDOW_MS;
        for _ in 0..60 {
            budget.check(&LIMITS, later).unwrap();
            budget.charge(&LIMITS, later, 0, 0);
        }
        assert!(budget.check(&LIMITS, later).is_err());
    }

    #[test]
    fn rows_may_go_into_debt_which_is_capped_at_one_minute() {
        let budget = AppBudget::default();
        budget.check(&LIMITS, 0).unwrap();
        // A query that returned far more rows than the budget: in debt.
        budget.charge(&LIMITS, 0, 100_000, 0);
        let err = budget.check(&LIMITS, 0).unwrap_err();
        assert!(err.message().contains("rows_read_per_minute is 600"), "{err}");
        // The debt is capped at -600 rows, which 600 rows a minute repay in 60 s.
        assert!(err.message().contains("in 60000 ms"), "{err}");
        assert!(budget.check(&LIMITS, 59_999).is_err());
        assert!(budget.check(&LIMITS, 60_000).is_ok());
        // Writes are a separate budget.
        let budget = AppBudget::default();
        budget.charge(&LIMITS, 0, 0, 61);
        let err = budget.check(&LIMITS, 0).unwrap_err();
        assert!(err.message().contains("rows_written_per_minute is 60"), "{err}");
        assert!(err.message().contains("in 1000 ms"), "one row of debt is 1 s at 60 rows/min: {err}");
    }

    /// One large legitimate write is refused afterwards only for as long as its overspend
    /// takes to refill at the limit's rate, not for a minute; the refusal says how long.
    #[test]
    fn a_large_write_locks_out_only_for_what_it_overspent() {
        let budget = AppBudget::default();
        budget.check(&LIMITS, 0).unwrap();
        // A full bucket of 60 rows, and a write of 75: 15 rows over, at 1 row a second.
        budget.charge(&LIMITS, 0, 0, 75);
        let err = budget.check(&LIMITS, 0).unwrap_err();
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_millis(15_000)), "{err}");
        assert!(budget.check(&LIMITS, 14_999).is_err());
        budget.check(&LIMITS, 15_000).unwrap();
        // A write within the allowance is never refused afterwards.
        let budget = AppBudget::default();
        budget.charge(&LIMITS, 0, 0, 60);
        budget.check(&LIMITS, 0).unwrap();
        assert_eq!(Error::new(ErrorCode::Busy, "x").retry_after(), None);
    }

    #[test]
    fn unlimited_and_zero_and_clock_going_backwards() {
        let unlimited = BudgetLimits {
            statements_per_minute: u64::MAX,
            rows_read_per_minute: u64::MAX,
            rows_written_per_minute: u64::MAX,
            burst_ms: 5_000,
        };
        let budget = AppBudget::default();
        for _ in 0..1000 {
            budget.check(&unlimited, 5).unwrap();
            budget.charge(&unlimited, 5, u64::MAX, u64::MAX);
        }
        let zero = BudgetLimits { statements_per_minute: 0, ..LIMITS };
        let err = AppBudget::default().check(&zero, 0).unwrap_err();
        assert!(err.message().contains(&format!("in {} ms", u64::MAX)), "{err}");
        // Time going backwards neither refills nor panics.
        let mut b = Bucket::full(60, WINDOW_MS, 10_000);
        b.take(60, WINDOW_MS, 10_000, 60);
        assert_eq!(b.tokens(60, WINDOW_MS, 5_000), 0);
        assert_eq!(b.tokens(60, WINDOW_MS, 11_000), 1);
    }

    /// The burst at its boundary: a bucket of 60 a minute with a 5 s burst holds 5
    /// statements; the 6th waits for the next token; after a long pause it again holds 5,
    /// not a minute's 60.
    #[test]
    fn a_bucket_holds_its_burst_not_a_minute() {
        let limits = BudgetLimits { burst_ms: 5_000, ..LIMITS };
        let budget = AppBudget::default();
        for i in 0..5 {
            budget.check(&limits, 0).unwrap_or_else(|e| panic!("statement {i} of the burst: {e}"));
            budget.charge(&limits, 0, 0, 0);
        }
        let err = budget.check(&limits, 0).unwrap_err();
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_millis(1000)), "{err}");
        let later = 10 * WINDOW_MS;
        for _ in 0..5 {
            budget.check(&limits, later).unwrap();
            budget.charge(&limits, later, 0, 0);
        }
        assert!(budget.check(&limits, later).is_err(), "a long pause refills the burst only");
        // A burst shorter than one token's refill still holds one statement.
        let tiny = BudgetLimits { burst_ms: 1, ..LIMITS };
        let budget = AppBudget::default();
        budget.check(&tiny, 0).unwrap();
        budget.charge(&tiny, 0, 0, 0);
        assert!(budget.check(&tiny, 0).is_err());
        // Rows are still charged in full past the burst, into debt capped at a minute.
        let budget = AppBudget::default();
        budget.charge(&limits, 0, 0, 1_000);
        let err = budget.check(&limits, 0).unwrap_err();
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_millis(WINDOW_MS)), "{err}");
    }
}
