//! Clients that run while a blocking operation is in the middle of its work: inserts and a
//! read, submitted to the deterministic executor while a snapshot copies the live file or
//! while a restore or an import writes the new version it will flip to.
//!
//! The operation runs on a thread of its own ([`super::paused`]). The disk's write hook
//! ([`crate::memfs::IoHook`]) stops that thread at a seeded write to the file the
//! operation makes (any `.sqlite` file but the live one); while it is stopped, the
//! simulation submits the clients' requests and steps the executor, and sometimes runs GC,
//! which must keep the file in the making and the version the operation pinned. Then the
//! operation goes on, and the requests it held up (it may hold the writer) run after it.
//! Exactly one thread runs at any time, so a seed replays the same interleaving.
//!
//! What the model expects: a snapshot holds the rows of the moment its copy began, never a
//! write acknowledged while it copied; a restore or import flips over the writes
//! acknowledged while it prepared the new version (they are in its undo snapshot, not in
//! the result); a read made while the operation is stopped sees the rows before it plus some
//! of the clients' inserts; a request cancelled before it ran is refused with `CANCELLED`
//! and changes nothing; nothing is acknowledged after a failed sync.

use super::ops::is_fault_code;
use super::paused::{self, StopAt};
use super::*;

/// Steps of the executor the clients may take at one go (each request is a step or two).
const CLIENT_STEPS_MAX: usize = 10_000;

/// Keys of the clients' inserts start here above the seed's key base: apart from the keys
/// the workload draws (deletes never reach them), so no client write meets a duplicate.
pub(super) const CLIENT_KEYS: i64 = 1 << 36;

/// The clients of one operation, as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clients {
    /// Keys the clients insert, one request each.
    pub keys: Vec<i64>,
    /// Seeds where the operation stops, the executor's order, a cancellation and a read.
    pub seed: u64,
}

/// What the clients got, kept until the operation settles the model
/// ([`World::settle_clients`]).
#[derive(Default)]
pub(super) struct ClientOutcome {
    /// Keys acknowledged while the operation was stopped.
    during: Vec<i64>,
    /// Keys acknowledged after the operation ended.
    after: Vec<i64>,
    /// Keys whose insert failed (they may or may not have taken effect).
    failed: Vec<i64>,
    /// The key whose request was cancelled before it ran (refused, so certainly absent).
    cancelled: Option<i64>,
    /// The write the operation stopped at and its file's name (`None`: it finished first).
    stopped_at: Option<(u64, String)>,
    /// Rows the read made while the operation was stopped returned.
    read_rows: Option<usize>,
    /// A read submitted before the operation went on, run after it with the late writes:
    /// it must see the operation's effect ([`World::check_late_read`]).
    late_read: Option<sila_sqlite::Pending<sila_sqlite::Rows>>,
    /// Rows the late read returned.
    late_rows: Option<usize>,
    /// What a GC run while the operation was stopped did.
    gc: Option<String>,
    /// The model's changes already made: the writes during, then after the operation.
    settled_during: bool,
    settled_after: bool,
}

impl std::fmt::Display for ClientOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.stopped_at {
            Some((n, file)) => write!(f, "clients at write {n} (to {file})")?,
            None => write!(f, "clients after the end")?,
        }
        write!(f, ": acked {:?} then {:?}, failed {:?}", self.during, self.after, self.failed)?;
        if let Some(k) = self.cancelled {
            write!(f, ", cancelled {k}")?;
        }
        if let Some(n) = self.read_rows {
            write!(f, ", read {n} rows")?;
        }
        if let Some(n) = self.late_rows {
            write!(f, ", read {n} rows after")?;
        }
        if let Some(gc) = &self.gc {
            write!(f, ", {gc}")?;
        }
        Ok(())
    }
}

/// Which of the clients' writes the model takes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Those acknowledged while the operation was stopped.
    During,
    /// Those acknowledged after it (and, with them, anything not yet taken in).
    After,
}

/// Which file the operation stops at a write to: where its writes come before its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopIn {
    /// The snapshot it copies to (after the copy's content was fixed).
    Snapshot,
    /// The new version it will flip to (before the flip). Not the snapshots directory: a
    /// restore writes its undo snapshot there after the flip.
    NewVersion,
}

/// What the clients do while the operation is stopped (drawn by [`World::blocking`]).
struct StopPlan<'a> {
    keys: &'a [i64],
    cancel_one: bool,
    with_read: bool,
    order_seed: u64,
    /// A sync failed before the stop: no insert may be acknowledged.
    refuse: bool,
    /// Run GC while the operation is stopped: it must leave the file the operation is making
    /// and the version it pinned alone, and meet no lock the operation holds (what it removes
    /// wrongly, the checks after find missing).
    gc: bool,
}

/// A client's insert and its answer.
struct Request {
    key: i64,
    pending: sila_sqlite::Pending<sila_sqlite::ExecResult>,
}

impl World {
    /// Runs `call` with the database: on this thread, or, when the operation has clients
    /// ([`Op::WithClients`]), on a thread of its own that stops at a seeded write while the
    /// clients run (see the module docs). The clients' outcome waits in `client_outcome` for
    /// the operation to settle the model.
    pub(super) fn blocking<T: Send + 'static>(
        &mut self,
        stop_in: StopIn,
        call: impl FnOnce(&Database) -> T + Send + 'static,
    ) -> Result<T, String> {
        let db = self.db()?.clone();
        let Some(clients) = self.clients.take() else { return Ok(call(&db)) };
        let ws = self.ws()?.clone();
        let key = ws.db_key(APP, "main").map_err(|e| e.to_string())?;
        // A store that refuses (a poisoned database) has no clients to interleave with: the
        // operation runs alone and meets the same refusal.
        let Ok(live_id) = ws.with_store(|s| s.pointer(&key).map(|p| p.file)) else { return Ok(call(&db)) };
        let live = Path::new(ROOT).join(layout::db_file(key.app, &key.db, live_id));
        let mut side = ChaCha8Rng::seed_from_u64(clients.seed);
        let stop_at = side.random_range(0..2u64);
        let cancel_one = side.random_bool(0.3);
        let with_read = side.random_bool(0.5);
        let order_seed = side.next_u64();
        let gc = side.random_bool(0.5);

        let made = move |path: &Path| {
            let in_snapshots =
                path.parent().and_then(Path::file_name).is_some_and(|d| d == layout::SNAPSHOTS_DIR);
            path != live
                && path.extension().is_some_and(|e| e == "sqlite")
                && in_snapshots == (stop_in == StopIn::Snapshot)
        };
        let stop = StopAt { reads: false, writes: true, at: stop_at, counts: Box::new(made) };
        let failures_at_start = self.fs.stats().sync_failures;
        let poisoned_before = self.poisoned_by_fault;
        let op_db = db.clone();
        let paused = paused::pause(&self.fs, "sim-operation", stop, move || call(&op_db))?;
        let mut outcome = ClientOutcome::default();
        let mut requests = Ok(Vec::new());
        if let Some(path) = paused.stopped_on() {
            let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            outcome.stopped_at = Some((stop_at, file));
            // A sync the operation failed before it stopped: nothing may be acknowledged now.
            let refuse = poisoned_before || self.fs.stats().sync_failures > failures_at_start;
            let plan = StopPlan { keys: &clients.keys, cancel_one, with_read, order_seed, refuse, gc };
            // The operation goes on (in `finish`) even when the clients found a violation.
            requests = self.run_while_stopped(&db, plan, &mut outcome);
        }
        let result = paused.finish(&self.fs)?;
        self.op_end_sync_failures = Some(self.fs.stats().sync_failures);
        let mut requests = requests?;
        if outcome.stopped_at.is_none() {
            requests = self.submit_clients(&clients.keys, cancel_one, &mut outcome)?;
            outcome.late_read = with_read.then(|| db.submit_query("SELECT k, v FROM kv ORDER BY k", vec![]));
        }
        // A sync failed during the operation or its clients: nothing more may be acknowledged.
        let refuse = poisoned_before || self.fs.stats().sync_failures > failures_at_start;
        let mut order = ChaCha8Rng::seed_from_u64(order_seed ^ 1);
        self.stepper.run_until_idle(CLIENT_STEPS_MAX, || order.random_range(0..64usize));
        let left = self.collect(requests, Stage::After, refuse, &mut outcome)?;
        if let Some(r) = left.first() {
            return Err(format!("a client's insert of {} was never answered", r.key));
        }
        self.client_outcome = Some(outcome);
        Ok(result)
    }

    /// The clients' turn while the operation is stopped: submits their inserts and a read,
    /// steps the executor, takes the answers that arrived and checks the read; queues the
    /// late read. Returns the inserts still unanswered (held up behind the operation).
    fn run_while_stopped(
        &mut self,
        db: &Database,
        plan: StopPlan<'_>,
        outcome: &mut ClientOutcome,
    ) -> Result<Vec<Request>, String> {
        let rows_before = self.model.rows.clone();
        let requests = self.submit_clients(plan.keys, plan.cancel_one, outcome)?;
        let read = plan.with_read.then(|| db.submit_query("SELECT k, v FROM kv ORDER BY k", vec![]));
        let mut order = ChaCha8Rng::seed_from_u64(plan.order_seed);
        self.stepper.run_until_idle(CLIENT_STEPS_MAX, || order.random_range(0..64usize));
        let requests = self.collect(requests, Stage::During, plan.refuse, outcome)?;
        if let Some(read) = read {
            outcome.read_rows = Some(self.check_client_read(read, &rows_before, plan.keys)?);
        }
        if plan.gc {
            outcome.gc = Some(match self.ws()?.gc() {
                Ok(summary) => format!("gc removed {} files", summary.files.len()),
                Err(e) if is_typed(&e.to_string()) => format!("gc error {}", e.code()),
                Err(e) => return Err(format!("GC during an operation failed without a typed error: {e}")),
            });
        }
        // Queued now, run only after the operation: it must see what the operation did.
        outcome.late_read = plan.with_read.then(|| db.submit_query("SELECT k, v FROM kv ORDER BY k", vec![]));
        Ok(requests)
    }

    /// Submits the clients' inserts, cancelling the last one at once if asked.
    fn submit_clients(
        &mut self,
        keys: &[i64],
        cancel_one: bool,
        outcome: &mut ClientOutcome,
    ) -> Result<Vec<Request>, String> {
        let db = self.db()?.clone();
        let mut all = self.model.rows.clone();
        all.extend(keys.iter().copied());
        self.model.in_flight.push(all);
        let requests: Vec<Request> = keys
            .iter()
            .map(|k| Request {
                key: *k,
                pending: db.submit_exec(
                    "INSERT INTO kv (k, v) VALUES (?, ?)",
                    vec![Value::Integer(*k), model::value_of(*k)],
                ),
            })
            .collect();
        if cancel_one {
            if let Some(last) = requests.last() {
                last.pending.cancel();
                outcome.cancelled = Some(last.key);
            }
        }
        Ok(requests)
    }

    /// Takes the answers that arrived; returns the requests still unanswered. `refuse` says
    /// a sync failed (or had failed) before these answers: none may be an acknowledgement.
    fn collect(
        &mut self,
        requests: Vec<Request>,
        stage: Stage,
        refuse: bool,
        outcome: &mut ClientOutcome,
    ) -> Result<Vec<Request>, String> {
        let mut left = Vec::new();
        for r in requests {
            match r.pending.try_take() {
                None => left.push(r),
                Some(Ok(_)) if outcome.cancelled == Some(r.key) => {
                    return Err(format!(
                        "the insert of {} was cancelled before it ran, yet acknowledged",
                        r.key
                    ))
                }
                Some(Ok(_)) if refuse => {
                    return Err(format!(
                        "fail-stop broken: a client's insert of {} was acknowledged after an fsync failure",
                        r.key
                    ))
                }
                Some(Ok(_)) => match stage {
                    Stage::During => outcome.during.push(r.key),
                    Stage::After => outcome.after.push(r.key),
                },
                Some(Err(e)) if !self.refused_by_disk(e.code()) => {
                    return Err(format!("a client's insert of a fresh key {} failed with {e}", r.key))
                }
                // Refused before it ran: certainly absent.
                Some(Err(e)) if outcome.cancelled == Some(r.key) && e.code() == ErrorCode::Cancelled => {}
                Some(Err(_)) => outcome.failed.push(r.key),
            }
        }
        Ok(left)
    }

    /// Checks the clients' read, run while the operation was stopped: the rows before the
    /// operation (up to keys of failed operations) plus some of the clients' inserts. Returns
    /// the number of rows.
    fn check_client_read(
        &self,
        read: sila_sqlite::Pending<sila_sqlite::Rows>,
        before: &BTreeSet<i64>,
        client_keys: &[i64],
    ) -> Result<usize, String> {
        let rows = match read.try_take() {
            None => return Err("a client's read was never answered".into()),
            Some(Err(e)) if is_fault_code(e.code()) => return Ok(0),
            Some(Err(e)) => return Err(format!("a client's read failed with {e}")),
            Some(Ok(rows)) => rows,
        };
        let got = model::keys_of(&rows)?;
        let maybe = &self.model.maybe;
        let extra: Vec<i64> = got
            .iter()
            .filter(|k| !before.contains(k) && !client_keys.contains(k) && !maybe.contains(k))
            .copied()
            .collect();
        let missing: Vec<i64> =
            before.iter().filter(|k| **k >= 0 && !got.contains(k) && !maybe.contains(k)).copied().collect();
        if !extra.is_empty() || !missing.is_empty() {
            return Err(format!(
                "a client's read while the operation was stopped saw extra keys {extra:?} and missed {missing:?}"
            ));
        }
        Ok(got.len())
    }

    /// Checks the late read once the operation and the late writes settled the model: the
    /// model's rows but for some late writes (those the executor ran after the read), up to
    /// keys of failed operations. Not checked while a failed operation leaves the state in
    /// doubt (the engine refuses work then, or shows one of the states), nor once the seed
    /// ended early.
    pub(super) fn check_late_read(&mut self) -> Result<(), String> {
        // A seed that ended (an import of rotted bits) keeps no model to compare with, and its
        // rows may hold the rotted values.
        if self.finished.is_some() {
            return Ok(());
        }
        let Some(outcome) = self.client_outcome.as_mut() else { return Ok(()) };
        let Some(read) = outcome.late_read.take() else { return Ok(()) };
        let rows = match read.try_take() {
            None => return Err("a client's read queued behind the operation was never answered".into()),
            Some(Err(e)) if is_fault_code(e.code()) => return Ok(()),
            Some(Err(e)) => return Err(format!("a client's read after the operation failed with {e}")),
            Some(Ok(rows)) => rows,
        };
        let got = model::keys_of(&rows)?;
        outcome.late_rows = Some(got.len());
        let late: BTreeSet<i64> = outcome.after.iter().copied().collect();
        let m = &self.model;
        if !m.in_doubt.is_empty() {
            return Ok(());
        }
        let extra: Vec<i64> =
            got.iter().filter(|k| !m.rows.contains(k) && !m.maybe.contains(k)).copied().collect();
        let missing: Vec<i64> = m
            .rows
            .iter()
            .filter(|k| **k >= 0 && !got.contains(k) && !m.maybe.contains(k) && !late.contains(k))
            .copied()
            .collect();
        if !extra.is_empty() || !missing.is_empty() {
            return Err(format!(
                "a client's read queued behind the operation saw extra keys {extra:?} and missed {missing:?}"
            ));
        }
        Ok(())
    }

    /// Takes the clients' writes of `stage` into the model: acknowledged ones commit,
    /// failed ones may or may not have taken effect. Called by the operation where its own
    /// effect falls between the two stages; whatever it did not take in is taken in after it.
    pub(super) fn settle_clients(&mut self, stage: Stage) {
        let full = self.full;
        let Some(mut outcome) = self.client_outcome.take() else { return };
        if !outcome.settled_during {
            outcome.settled_during = true;
            if !outcome.during.is_empty() {
                let mut next = self.model.rows.clone();
                next.extend(outcome.during.iter().copied());
                self.model.commit(next, full);
            }
        }
        if stage == Stage::After && !outcome.settled_after {
            outcome.settled_after = true;
            if !outcome.after.is_empty() {
                let mut next = self.model.rows.clone();
                next.extend(outcome.after.iter().copied());
                self.model.commit(next, full);
            }
            self.model.maybe.extend(outcome.failed.iter().copied());
        }
        self.client_outcome = Some(outcome);
    }
}
