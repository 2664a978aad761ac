//! Admission: an app's concurrency slots and per-minute budgets, taken before a request
//! runs and given back when it is answered.

use super::*;

/// Per-app shared state: the concurrency slots and the per-minute budgets.
#[derive(Debug, Default)]
pub struct AppShared {
    pub(super) slots: Slots,
    pub(super) budget: budget::AppBudget,
}

/// Holds one slot of an app's concurrency limit until dropped.
pub struct Admission {
    pub(super) app: Arc<AppShared>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.app.slots.release();
    }
}

/// [`Admission`] that borrows the app: see [`BrokerShared::admit_borrowed`].
pub struct BorrowedAdmission<'a> {
    pub(super) app: &'a AppShared,
}

impl BorrowedAdmission<'_> {
    /// Hands the slot over to an owning [`Admission`] made by the caller (no release here).
    pub(super) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for BorrowedAdmission<'_> {
    fn drop(&mut self) {
        self.app.slots.release();
    }
}

impl BrokerShared {
    /// The shared state of an app.
    pub fn app(&self, app: uuid::Uuid) -> Arc<AppShared> {
        lock(&self.apps).entry(app).or_default().clone()
    }

    /// Forgets the shared state (budgets, slots) of an app that was unregistered: apps
    /// registered and unregistered again and again leave nothing behind. A handle still
    /// held keeps its own copy, and opens nothing any more.
    pub fn forget_app(&self, app: uuid::Uuid) {
        lock(&self.apps).remove(&app);
    }

    /// How many apps' shared state the broker holds (for tests of that bound).
    pub fn apps_held(&self) -> usize {
        lock(&self.apps).len()
    }

    /// Takes one of the app's concurrency slots, waiting at most `admission_wait` for one
    /// to be given back when all are taken, or refuses with `Busy`.
    pub fn admit(&self, app: &Arc<AppShared>) -> Result<Admission> {
        self.admit_borrowed(app, self.now())?.keep();
        Ok(Admission { app: app.clone() })
    }

    /// [`BrokerShared::admit`] for a caller that waits for its request on its own thread: the
    /// slot borrows the app instead of holding a reference to it, one shared write less per
    /// request on the read path. `now` is a reading of [`BrokerShared::now`].
    pub fn admit_borrowed<'a>(&self, app: &'a AppShared, now: Duration) -> Result<BorrowedAdmission<'a>> {
        let max = self.options.max_concurrent_requests_per_app;
        let wait = self.options.admission_wait;
        if let Err(in_flight) = app.slots.take(max, wait) {
            return Err(Error::new(
                ErrorCode::Busy,
                format!(
                    "the app has {in_flight} requests in flight; max_concurrent_requests_per_app is {max} \
                     and none was answered within admission_wait ({} ms)",
                    wait.as_millis()
                ),
            ));
        }
        let admission = BorrowedAdmission { app };
        // Dropping `admission` on refusal gives the slot back.
        app.budget.check(&self.budget_limits(), millis(now))?;
        Ok(admission)
    }

    /// The per-app budgets of the options.
    pub(super) fn budget_limits(&self) -> budget::BudgetLimits {
        budget::BudgetLimits {
            statements_per_minute: self.options.statements_per_minute,
            rows_read_per_minute: self.options.rows_read_per_minute,
            rows_written_per_minute: self.options.rows_written_per_minute,
            burst_ms: u64::try_from(self.options.budget_burst.as_millis()).unwrap_or(u64::MAX),
        }
    }
}
