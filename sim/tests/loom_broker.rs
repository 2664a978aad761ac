//! loom models of the broker's concurrency protocols (issue 6, item 7).
//!
//! The broker's protocol types built on the engine's `sync` shim (`core/src/sync.rs`: std,
//! or loom under `--cfg loom`) run here as they are: the write queue and its leader
//! (`WriteQueue`), the writer's gate (`Gate`), the reader pool and its leases on retired
//! files (`ReaderPool`) and the admission slots (`Slots`). What sits around them in the
//! broker (SQLite connections, the executor's threads, the flip's store steps) is
//! a small, faithful copy written on this file's own shim; every such function names the
//! function of `core/` it copies, and a change there must be mirrored here.
//!
//! * [`writer`] — the broker's `WriteQueue` led as `DbShared::submit_write`, `lead`,
//!   `end_turn`, `hand_off` and `run_batch` lead it, blocking transactions' gates
//!   (`WriteJob::Gate`, `Database::exclusive`, `DbShared::with_gate_connection` and its
//!   `Turn`), and the executor's workers (`executor::worker`, `ThreadPool::spawn`). Its
//!   deliberate bugs are the engine's own sabotages (`QueueStepsDownWithWorkQueued`,
//!   `GateJumpsTheQueue`), switched on for the model's thread: loom runs every modelled
//!   thread on it.
//! * [`slots`] — the broker's own admission slots (`core/src/broker/slots.rs`), which are
//!   built on the engine's `sync` shim and so run here as they are, not as a copy.
//! * [`leases`] — the broker's `ReaderPool` (readers tagged with the file generation across
//!   a flip, the leases on retired files) used as `DbShared::with_reader`,
//!   `checkout_reader`, `return_reader` and `switch_file` use it, the flip's store steps
//!   (`Database::install_new_version` in `versions/flip.rs`: `acquire_lease(old)` then
//!   `run_plan(plan_flip)`), and GC (`Workspace::gc` → `Store::plan_gc`: remove every file
//!   that is not the pointer, not leased, not in flight). Two of the three races this model
//!   found when the broker was first written are the pool's sabotages now
//!   (`ReaderCountedAfterVersionRead`, `ReturnReadsGenerationEarly`); loom must still find
//!   each.
//!
//! Ground truth (who holds the writer, which connections are open on which file, what was
//! committed, how often a lease was released) lives in plain `std` mutexes that loom does
//! not see: observing adds no interleavings.
//!
//! Run the models (release, each at most 3 threads):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p sila-sqlite-sim --test loom_broker --release
//! ```
//!
//! Without `--cfg loom` the loom tests compile away and the same scenarios run once on real
//! threads, so this file is never empty and the protocols stay exercised by `cargo test`.

/// `loom::sync` under `--cfg loom`, `std::sync` otherwise.
mod sync {
    #[cfg(loom)]
    pub use loom::sync::atomic::{AtomicU64, Ordering};
    #[cfg(loom)]
    pub use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
    #[cfg(loom)]
    pub use loom::thread;
    #[cfg(not(loom))]
    pub use std::sync::atomic::{AtomicU64, Ordering};
    #[cfg(not(loom))]
    pub use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    #[cfg(not(loom))]
    pub use std::thread;

    /// Like the broker's `lock`: a poisoned lock is still used.
    pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        cv.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// Joins a thread, re-raising its panic (a failed assertion) on this one.
    pub fn join<T>(handle: thread::JoinHandle<T>) -> T {
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Locks a ground-truth mutex (plain `std`, invisible to loom).
    pub fn observe<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The write queue with a leader, gates, and the quiesce before a flip.
pub mod writer {
    use super::sync::{lock, observe, wait, Arc, AtomicU64, Condvar, Mutex, Ordering};
    use sila_sqlite::broker::{JobClass, QueuedWrite, WriteQueue};
    use std::collections::VecDeque;

    /// The broker's own gate (`core/src/broker/gate.rs`), not a copy: `Gate::wait` with a
    /// timeout that never fires here (loom models no time), and `Gate::give_up` for a timeout
    /// firing at a point of loom's choosing (what `wait` does when its deadline passes).
    use sila_sqlite::broker::Gate;

    /// A wait no model ends by time.
    const NO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

    /// The answer slot of one `exec` (a `pending::Completer` / `Pending` pair).
    pub struct Reply {
        state: Mutex<Option<u64>>,
        ready: Condvar,
    }

    impl Reply {
        fn new() -> Reply {
            Reply { state: Mutex::new(None), ready: Condvar::new() }
        }

        /// `Completer::complete`: the generation of the file the exec committed on.
        fn complete(&self, generation: u64) {
            let mut s = lock(&self.state);
            assert!(s.is_none(), "an exec was answered twice");
            *s = Some(generation);
            self.ready.notify_all();
        }

        /// `Pending::wait`. A queue left with no leader makes this wait forever, which loom
        /// reports as a deadlock: the stranded-queue (lost wakeup) check.
        pub fn wait(&self) -> u64 {
            let mut s = lock(&self.state);
            loop {
                if let Some(g) = *s {
                    return g;
                }
                s = wait(&self.ready, s);
            }
        }
    }

    /// The model's `WriteJob` (no `Transaction`: a transaction job runs alone in a batch,
    /// like a batch of one exec, and adds nothing to the protocol).
    enum Job {
        Exec { id: usize, reply: Arc<Reply> },
        Gate { id: usize, gate: Arc<Gate> },
    }

    impl Job {
        fn id(&self) -> usize {
            match self {
                Job::Exec { id, .. } | Job::Gate { id, .. } => *id,
            }
        }
    }

    /// As the broker's `WriteJob` implements it.
    impl QueuedWrite for Job {
        fn class(&self) -> JobClass {
            match self {
                Job::Exec { .. } => JobClass::Groupable,
                Job::Gate { .. } => JobClass::Gate,
            }
        }

        fn open_gate(&self) -> bool {
            match self {
                Job::Gate { gate, .. } => gate.open(),
                Job::Exec { .. } => false,
            }
        }
    }

    struct ExecQueue {
        jobs: VecDeque<Arc<Db>>,
        closed: bool,
    }

    /// The executor: one worker running `lead` jobs (`ThreadPool` with one thread).
    pub struct Executor {
        queue: Mutex<ExecQueue>,
        work: Condvar,
    }

    impl Default for Executor {
        fn default() -> Executor {
            Executor::new()
        }
    }

    impl Executor {
        pub fn new() -> Executor {
            Executor {
                queue: Mutex::new(ExecQueue { jobs: VecDeque::new(), closed: false }),
                work: Condvar::new(),
            }
        }

        /// `ThreadPool::spawn`: refuses once closed (then `hand_off` leads inline).
        fn spawn(&self, db: Arc<Db>) -> Result<(), Arc<Db>> {
            let mut q = lock(&self.queue);
            if q.closed {
                return Err(db);
            }
            q.jobs.push_back(db);
            drop(q);
            self.work.notify_one();
            Ok(())
        }

        /// `executor::worker`.
        pub fn worker(&self) {
            loop {
                let job = {
                    let mut q = lock(&self.queue);
                    loop {
                        if let Some(job) = q.jobs.pop_front() {
                            break Some(job);
                        }
                        if q.closed {
                            break None;
                        }
                        q = wait(&self.work, q);
                    }
                };
                match job {
                    Some(db) => Db::lead(&db),
                    None => return,
                }
            }
        }

        /// Stops the worker once its queue is empty. Unlike `ThreadPool::shutdown` (which
        /// drops queued jobs: the workspace is closing) it lets queued leaders run, so the
        /// end state shows whether anything was stranded.
        pub fn close(&self) {
            lock(&self.queue).closed = true;
            self.work.notify_all();
        }

        fn queued(&self) -> usize {
            lock(&self.queue).jobs.len()
        }
    }

    /// What happened, in order (ground truth).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Event {
        /// A job entered the write queue (recorded under the writer lock: queue order).
        Enqueued(usize),
        /// An exec committed on the file of this generation.
        Committed {
            id: usize,
            generation: u64,
        },
        /// A gate's body started / ended (it holds the writer).
        GateStart(usize),
        GateEnd(usize),
        /// A gate's caller gave up (timeout) and never ran.
        Abandoned(usize),
    }

    #[derive(Default)]
    struct Observed {
        events: Vec<Event>,
        /// Who holds the writer connection now.
        holder: Option<&'static str>,
    }

    /// One database's writer side (the parts of `DbShared` the protocol uses).
    pub struct Db {
        /// The broker's own write queue; the connection kept between turns is the generation
        /// of the file it was opened on (`Tagged::generation`).
        writer: WriteQueue<Job, u64>,
        /// Held by a submitter while it records `Enqueued` and queues (see `submit_write`).
        submitting: Mutex<()>,
        /// `DbShared::version`: bumped by `switch_file`.
        version: Mutex<u64>,
        /// `DbShared::generation`: the version's generation, stored under its lock.
        generation: AtomicU64,
        /// The database file: what commits write. A loom lock, so another thread can be
        /// scheduled while a batch or a gate body holds the writer.
        file: Mutex<Vec<usize>>,
        executor: Arc<Executor>,
        /// `group_commit_max_requests`.
        batch_max: usize,
        obs: std::sync::Arc<std::sync::Mutex<Observed>>,
    }

    impl Db {
        pub fn new(executor: Arc<Executor>, batch_max: usize) -> Db {
            Db {
                writer: WriteQueue::default(),
                submitting: Mutex::new(()),
                version: Mutex::new(0),
                generation: AtomicU64::new(0),
                file: Mutex::new(Vec::new()),
                executor,
                batch_max,
                obs: std::sync::Arc::new(std::sync::Mutex::new(Observed::default())),
            }
        }

        fn record(&self, e: Event) {
            observe(&self.obs).events.push(e);
        }

        /// Takes the writer (ground truth): two holders at once is the bug.
        fn enter(&self, who: &'static str) {
            let mut o = observe(&self.obs);
            assert!(o.holder.is_none(), "{who} took the writer while {:?} held it", o.holder);
            o.holder = Some(who);
        }

        fn leave(&self) {
            observe(&self.obs).holder = None;
        }

        /// `DbShared::generation`.
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::Acquire)
        }

        /// `DbShared::open_connection(false)`: a connection on the live file.
        fn open_connection(&self) -> u64 {
            self.generation()
        }

        /// `DbShared::submit_write` (no poison check; the queue bound is never reached).
        fn submit_write(db: &Arc<Db>, job: Job, inline: bool) {
            // `Enqueued` is recorded and the job queued under one (loom) lock of the model's,
            // so the events list jobs in queue order. Submitters never interleave inside the
            // queue anyway (its own lock); the leader does not take this one.
            let id = job.id();
            let lead = {
                let _order = lock(&db.submitting);
                db.record(Event::Enqueued(id));
                db.writer.submit(job, usize::MAX)
            };
            let lead = match lead {
                Ok(lead) => lead,
                Err(_) => unreachable!("the model's queue has no bound"),
            };
            if lead {
                if inline {
                    Db::lead(db);
                } else {
                    Db::hand_off(db);
                }
            }
        }

        /// `DbShared::hand_off`.
        fn hand_off(db: &Arc<Db>) {
            if let Err(job) = db.executor.spawn(db.clone()) {
                Db::lead(&job);
            }
        }

        /// `DbShared::lead`.
        fn lead(db: &Arc<Db>) {
            let Some((batch, conn)) = db.writer.next_turn(db.batch_max) else {
                return;
            };
            let conn = conn.unwrap_or_else(|| db.open_connection());
            db.run_batch(conn, batch);
            db.writer.keep_conn(conn);
            Db::end_turn(db);
        }

        /// `DbShared::run_batch` + `commit_group`: commit, then answer.
        fn run_batch(&self, conn: u64, batch: Vec<Job>) {
            self.enter("a batch");
            let mut execs = Vec::new();
            for job in batch {
                match job {
                    Job::Exec { id, reply } => {
                        lock(&self.file).push(id);
                        self.record(Event::Committed { id, generation: conn });
                        execs.push(reply);
                    }
                    // `lead` never puts a gate in a batch.
                    Job::Gate { id, .. } => unreachable!("gate {id} in a batch"),
                }
            }
            self.leave();
            for reply in execs {
                reply.complete(conn);
            }
        }

        /// `DbShared::end_turn`.
        fn end_turn(db: &Arc<Db>) {
            if db.writer.end_turn() {
                Db::hand_off(db);
            }
        }

        /// `Database::exec`: submit inline, wait for the answer.
        pub fn exec(db: &Arc<Db>, id: usize) -> u64 {
            Db::submit_exec(db, id, true).wait()
        }

        /// `Database::submit_exec` (`inline` false) or the first half of `exec`.
        pub fn submit_exec(db: &Arc<Db>, id: usize, inline: bool) -> Arc<Reply> {
            let reply = Arc::new(Reply::new());
            Db::submit_write(db, Job::Exec { id, reply: reply.clone() }, inline);
            reply
        }

        /// `Database::exclusive` + `DbShared::with_gate_connection` (and `Turn::drop`).
        /// `times_out`: the gate's timeout fires at some point loom picks. `flip`: the body
        /// runs `switch_file`, as a flip does. Returns whether the body ran.
        pub fn exclusive(db: &Arc<Db>, id: usize, times_out: bool, flip: bool) -> bool {
            let gate = Arc::new(Gate::default());
            Db::submit_write(db, Job::Gate { id, gate: gate.clone() }, true);
            let opened = if times_out { gate.give_up() } else { gate.wait(NO_TIMEOUT) };
            if !opened {
                db.record(Event::Abandoned(id));
                return false;
            }
            let taken = db.writer.take_conn();
            let conn = taken.unwrap_or_else(|| db.open_connection());
            db.gate_body(id, conn, flip);
            // Turn::drop: a connection of the old file is closed, not put back.
            if conn == db.generation() {
                db.writer.keep_conn(conn);
            }
            Db::end_turn(db);
            true
        }

        /// The body of an exclusive turn (a transaction, or a flip's quiesce + switch).
        fn gate_body(&self, id: usize, conn: u64, flip: bool) {
            self.enter("a gate");
            self.record(Event::GateStart(id));
            // Quiesce: every job queued before the gate is committed already.
            {
                let o = observe(&self.obs);
                let before: Vec<usize> = o
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Enqueued(j) => Some(*j),
                        _ => None,
                    })
                    .take_while(|j| *j != id)
                    .collect();
                for j in before {
                    let committed =
                        o.events.iter().any(|e| matches!(e, Event::Committed { id, .. } if *id == j));
                    let abandoned = o.events.contains(&Event::Abandoned(j));
                    assert!(committed || abandoned, "gate {id} opened before job {j} queued ahead of it ran");
                }
            }
            lock(&self.file).push(id);
            if flip {
                // `DbShared::switch_file` (its reader half is the `leases` model).
                assert_eq!(conn, self.generation(), "the flip's writer connection is of an older file");
                let mut v = lock(&self.version);
                *v += 1;
                self.generation.store(*v, Ordering::Release);
            }
            self.record(Event::GateEnd(id));
            self.leave();
        }

        /// The end state: nothing queued, nobody leading, the executor empty.
        pub fn assert_quiescent(&self) {
            let (queued, leading) = self.writer.snapshot();
            assert!(queued == 0, "{queued} job(s) stranded in the write queue");
            assert!(!leading, "`leading` is set with nobody leading");
            assert_eq!(self.executor.queued(), 0, "leader jobs left in the executor");
        }

        pub fn events(&self) -> Vec<Event> {
            observe(&self.obs).events.clone()
        }
    }

    /// Index of the first event matching `f`.
    fn position(events: &[Event], f: impl Fn(&Event) -> bool) -> Option<usize> {
        events.iter().position(f)
    }

    /// Checks of every writer scenario: each exec committed exactly once, answered with the
    /// generation it committed on, in queue order; a gate ran exactly once unless abandoned.
    pub fn check_common(events: &[Event], answers: &[(usize, u64)]) {
        let enqueued: Vec<usize> = events
            .iter()
            .filter_map(|e| match e {
                Event::Enqueued(j) => Some(*j),
                _ => None,
            })
            .collect();
        for (id, generation) in answers {
            let commits: Vec<u64> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Committed { id: j, generation } if j == id => Some(*generation),
                    _ => None,
                })
                .collect();
            assert_eq!(commits, vec![*generation], "exec {id}: commits {commits:?}, answered {generation}");
        }
        // The queue is FIFO and a gate is a barrier: commits and gate bodies happen in queue
        // order (an abandoned gate is skipped wherever its caller gave up).
        let mut done = Vec::new();
        for e in events {
            match e {
                Event::Committed { id, .. } | Event::GateStart(id) => done.push(*id),
                _ => {}
            }
        }
        let in_queue_order: Vec<usize> = enqueued.iter().copied().filter(|j| done.contains(j)).collect();
        assert_eq!(done, in_queue_order, "jobs ran out of queue order; events: {events:?}");
        for id in &enqueued {
            let starts = events.iter().filter(|e| **e == Event::GateStart(*id)).count();
            let abandoned = events.iter().filter(|e| **e == Event::Abandoned(*id)).count();
            let commits =
                events.iter().filter(|e| matches!(e, Event::Committed { id: j, .. } if j == id)).count();
            assert_eq!(starts + abandoned + commits, 1, "job {id} ran {starts}+{abandoned}+{commits} times");
        }
    }

    /// Scenario (a): a writer queue with a leader. Three threads: this one submits exec 1
    /// (non-blocking: a worker leads) then exec 2 (blocking: leads inline if the writer is
    /// idle); a second thread takes an exclusive turn (gate 10), whose timeout may fire
    /// (`times_out`); the third is the executor's worker.
    pub fn queue_with_leader(batch_max: usize, times_out: bool) {
        use super::sync::{join, thread};
        let executor = Arc::new(Executor::new());
        let db = Arc::new(Db::new(executor.clone(), batch_max));
        let worker = {
            let executor = executor.clone();
            thread::spawn(move || executor.worker())
        };
        let gate_caller = {
            let db = db.clone();
            thread::spawn(move || Db::exclusive(&db, 10, times_out, false))
        };
        let r1 = Db::submit_exec(&db, 1, false);
        let g2 = Db::exec(&db, 2);
        let g1 = r1.wait();
        let opened = join(gate_caller);
        executor.close();
        join(worker);
        db.assert_quiescent();
        let events = db.events();
        check_common(&events, &[(1, g1), (2, g2)]);
        assert!(opened || times_out, "a gate that never times out did not open");
        let c1 = position(&events, |e| matches!(e, Event::Committed { id: 1, .. }));
        let c2 = position(&events, |e| matches!(e, Event::Committed { id: 2, .. }));
        assert!(c1 < c2, "exec 1 was submitted first but committed after exec 2: {events:?}");
    }

    /// Scenario (c): the quiesce before a flip. This thread submits exec 1 (non-blocking),
    /// then takes an exclusive turn (gate 10) that flips the file; a second thread runs
    /// exec 3 (blocking); the third is the worker. Execs queued before the gate commit on
    /// the old file before it starts; execs queued after it wait for its end and commit on
    /// the new file (the writer connection of the old file is closed by `Turn::drop`).
    pub fn quiesce_before_flip(batch_max: usize) {
        use super::sync::{join, thread};
        let executor = Arc::new(Executor::new());
        let db = Arc::new(Db::new(executor.clone(), batch_max));
        let worker = {
            let executor = executor.clone();
            thread::spawn(move || executor.worker())
        };
        let writer = {
            let db = db.clone();
            thread::spawn(move || Db::exec(&db, 3))
        };
        let r1 = Db::submit_exec(&db, 1, false);
        let opened = Db::exclusive(&db, 10, false, true);
        let g1 = r1.wait();
        let g3 = join(writer);
        executor.close();
        join(worker);
        db.assert_quiescent();
        let events = db.events();
        check_common(&events, &[(1, g1), (3, g3)]);
        assert!(opened, "the flip's gate did not open");
        let gate_at = position(&events, |e| *e == Event::Enqueued(10));
        let start = position(&events, |e| *e == Event::GateStart(10));
        let end = position(&events, |e| *e == Event::GateEnd(10));
        for (id, generation) in [(1, g1), (3, g3)] {
            let queued = position(&events, |e| *e == Event::Enqueued(id));
            let committed = position(&events, |e| matches!(e, Event::Committed { id: j, .. } if *j == id));
            if queued < gate_at {
                assert!(committed < start, "exec {id} queued before the flip committed after it began");
                assert_eq!(generation, 0, "exec {id} queued before the flip committed on the new file");
            } else {
                assert!(committed > end, "exec {id} queued during the flip committed before it ended");
                assert_eq!(generation, 1, "exec {id} queued after the flip committed on the old file");
            }
        }
    }
}

/// Reader connections, leases on retired files, and GC, across one flip. The reader pool is
/// the broker's own `ReaderPool`; the connections, the version and the store's leases and GC
/// around it are the model's.
pub mod leases {
    use super::sync::{join, lock, observe, thread, Arc, AtomicU64, Mutex, Ordering};
    use sila_sqlite::broker::{Checkout, Pooled, ReaderPool};
    use std::collections::{BTreeMap, BTreeSet};

    /// The live file before the flip, and the new one.
    const OLD: u32 = 0;
    const NEW: u32 = 1;

    /// Readers the pool may open (`readers_max`): more than the model's one reader thread
    /// ever needs, so the wait for a returned reader is never reached.
    const READERS_MAX: usize = 4;

    /// Which fix of the flip's store steps the model applies (they are a copy of
    /// `install_new_version`'s). This model found three races when the broker was first
    /// written; the two in the reader pool are now the pool's own sabotages
    /// (`ReaderCountedAfterVersionRead`, `ReturnReadsGenerationEarly`), this one is here.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Fixes {
        /// The flip takes its lease on the old file before `run_plan(plan_flip)` moves the
        /// pointer (as written: after, in a second store critical section, leaving a window
        /// in which GC sees the old file unreferenced and unleased while readers use it).
        pub lease_before_pointer_moves: bool,
    }

    impl Fixes {
        pub const ALL: Fixes = Fixes { lease_before_pointer_moves: true };
    }

    /// `Tagged`: a connection and the generation (and file) it was opened on.
    #[derive(Debug)]
    struct Conn {
        generation: u64,
        file: u32,
        last_thread: u64,
    }

    /// As the broker's `Tagged` implements it.
    impl Pooled for Conn {
        fn generation(&self) -> u64 {
            self.generation
        }

        fn last_thread(&self) -> u64 {
            self.last_thread
        }

        fn set_last_thread(&mut self, thread: u64) {
            self.last_thread = thread;
        }
    }

    /// `FileVersion`.
    #[derive(Debug, Clone, Copy)]
    struct Version {
        generation: u64,
        file: u32,
    }

    /// The parts of `Store` GC reads: pointer, leases, files of operations in flight.
    struct Store {
        pointer: u32,
        leases: BTreeMap<u64, u32>,
        next_lease: u64,
        in_flight: BTreeSet<u32>,
    }

    /// Ground truth.
    #[derive(Default)]
    struct Observed {
        /// Connections open on each file (from the moment the opener read the version).
        conns: BTreeMap<u32, usize>,
        /// Times each lease was released.
        released: BTreeMap<u64, usize>,
        /// Files GC removed.
        collected: BTreeSet<u32>,
        /// Queries that ran, by file.
        queries: Vec<u32>,
    }

    pub struct Db {
        version: Mutex<Version>,
        /// `DbShared::generation`: the version's generation, stored under its lock.
        generation: AtomicU64,
        /// The broker's own reader pool; a lease is the store's lease id.
        readers: ReaderPool<Conn, u64>,
        store: Mutex<Store>,
        /// Files on disk.
        disk: Mutex<BTreeSet<u32>>,
        fixes: Fixes,
        obs: std::sync::Arc<std::sync::Mutex<Observed>>,
    }

    impl Db {
        /// A database on `OLD`, with `NEW` written and its flip operation in flight; with
        /// `idle_reader`, one reader connection of `OLD` sits in the pool.
        pub fn new(fixes: Fixes, idle_reader: bool) -> Db {
            let db = Db {
                version: Mutex::new(Version { generation: 0, file: OLD }),
                generation: AtomicU64::new(0),
                readers: ReaderPool::default(),
                store: Mutex::new(Store {
                    pointer: OLD,
                    leases: BTreeMap::new(),
                    next_lease: 1,
                    in_flight: BTreeSet::from([NEW]),
                }),
                disk: Mutex::new(BTreeSet::from([OLD, NEW])),
                fixes,
                obs: std::sync::Arc::new(std::sync::Mutex::new(Observed::default())),
            };
            if idle_reader {
                let reader = db.checkout_reader();
                db.return_reader(reader);
            }
            db
        }

        /// `DbShared::generation`.
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::Acquire)
        }

        /// A connection now exists on `file` (ground truth).
        fn conn_opened(&self, file: u32) {
            *observe(&self.obs).conns.entry(file).or_insert(0) += 1;
        }

        /// `DbShared::close_connection`.
        fn close_connection(&self, conn: Conn) {
            let mut o = observe(&self.obs);
            let n = o.conns.entry(conn.file).or_insert(0);
            *n = n.saturating_sub(1);
        }

        /// SQLite touching the file: it must still be on disk (GC never removes a file a
        /// connection uses; opening a removed path would make SQLite create it afresh).
        fn touch(&self, file: u32, what: &str) {
            let on_disk = lock(&self.disk).contains(&file);
            assert!(on_disk, "{what} file {file}, which GC already removed");
        }

        /// `DbShared::with_reader` running one query.
        pub fn query(&self) -> bool {
            for _ in 0..3 {
                let tagged = self.checkout_reader();
                if tagged.generation != self.generation() {
                    self.return_reader(tagged);
                    continue;
                }
                self.touch(tagged.file, "a query read");
                observe(&self.obs).queries.push(tagged.file);
                self.return_reader(tagged);
                return true;
            }
            false
        }

        /// `DbShared::checkout_reader`: the pool's checkout, then the open of a new reader on
        /// the version it read (`open_connection_on`), which never fails here.
        fn checkout_reader(&self) -> Conn {
            let checkout = self.readers.checkout(
                1,
                READERS_MAX,
                || {
                    let v = *lock(&self.version);
                    self.conn_opened(v.file);
                    (v.generation, v)
                },
                || Err(()),
            );
            match checkout {
                Ok(Checkout::Idle(t)) => t,
                Ok(Checkout::Open(v)) => {
                    self.touch(v.file, "a reader opened");
                    Conn { generation: v.generation, file: v.file, last_thread: 1 }
                }
                Err(()) => unreachable!("the model's one reader thread found all {READERS_MAX} readers out"),
            }
        }

        /// `DbShared::return_reader`.
        fn return_reader(&self, tagged: Conn) {
            let returned = self.readers.give_back(tagged, || self.generation());
            if let Some(t) = returned.close {
                self.close_connection(t);
            }
            if let Some(lease) = returned.release {
                self.release_lease(lease);
            }
        }

        /// `DbShared::switch_file`.
        fn switch_file(&self, file: u32, old_lease: u64) {
            let old = {
                let mut v = lock(&self.version);
                let old = v.generation;
                v.generation += 1;
                v.file = file;
                self.generation.store(v.generation, Ordering::Release);
                old
            };
            let (idle, release_now) = self.readers.retire(old, old_lease);
            for t in idle {
                self.close_connection(t);
            }
            if let Some(lease) = release_now {
                self.release_lease(lease);
            }
        }

        /// `Store::acquire_lease`.
        fn acquire_lease(&self, file: u32) -> u64 {
            let mut s = lock(&self.store);
            let id = s.next_lease;
            s.next_lease += 1;
            s.leases.insert(id, file);
            id
        }

        /// `Store::release_lease` through the workspace's hook: at most once, and only when
        /// no connection is open on the file any more.
        fn release_lease(&self, lease: u64) {
            let file = lock(&self.store).leases.remove(&lease);
            let mut o = observe(&self.obs);
            let n = o.released.entry(lease).or_insert(0);
            *n += 1;
            assert_eq!(*n, 1, "lease {lease} released {n} times");
            if let Some(file) = file {
                let open = o.conns.get(&file).copied().unwrap_or(0);
                assert_eq!(
                    open, 0,
                    "lease on file {file} released while {open} connection(s) on it are open"
                );
            }
        }

        /// The flip's steps inside its exclusive turn (`install_new_version`), after the
        /// checkpoint: `run_plan(plan_flip)` (the pointer moves; the operation completes),
        /// `acquire_lease(old)`, `switch_file`. Each store step is its own critical section.
        pub fn flip(&self) {
            let old = lock(&self.store).pointer;
            let early =
                if self.fixes.lease_before_pointer_moves { Some(self.acquire_lease(old)) } else { None };
            {
                let mut s = lock(&self.store);
                s.pointer = NEW;
                s.in_flight.remove(&NEW);
            }
            let lease = early.unwrap_or_else(|| self.acquire_lease(old));
            self.switch_file(NEW, lease);
        }

        /// `Workspace::gc`: under the store lock, plan (`Store::plan_gc`: files neither the
        /// pointer, nor leased, nor in flight) and remove.
        pub fn gc(&self) {
            let s = lock(&self.store);
            let mut disk = lock(&self.disk);
            let leased: BTreeSet<u32> = s.leases.values().copied().collect();
            let victims: Vec<u32> = disk
                .iter()
                .copied()
                .filter(|f| *f != s.pointer && !leased.contains(f) && !s.in_flight.contains(f))
                .collect();
            for f in victims {
                let mut o = observe(&self.obs);
                let open = o.conns.get(&f).copied().unwrap_or(0);
                assert_eq!(open, 0, "GC removed file {f} while {open} reader connection(s) had it open");
                o.collected.insert(f);
                disk.remove(&f);
            }
        }

        /// After every thread: the old file's lease was released exactly once, no reader is
        /// counted out, nothing retired is left, and one more GC pass removes the old file.
        pub fn check_end(&self) {
            self.gc();
            let o = observe(&self.obs);
            let released: usize = o.released.values().sum();
            assert_eq!(released, 1, "the lease on the old file was released {released} times, not once");
            let old_conns = o.conns.get(&OLD).copied().unwrap_or(0);
            assert_eq!(old_conns, 0, "{old_conns} connection(s) on the old file outlived the flip");
            assert!(o.collected.contains(&OLD), "GC never removed the old file");
            assert!(!o.collected.contains(&NEW), "GC removed the live file");
            drop(o);
            assert!(self.readers.is_settled(), "readers still counted out, or a retired lease left");
        }
    }

    /// Scenario (b): a reader runs one query, a flip happens, GC runs once, concurrently
    /// (three threads: this one flips).
    pub fn reader_leases_across_a_flip(fixes: Fixes, idle_reader: bool) {
        let db = Arc::new(Db::new(fixes, idle_reader));
        let reader = {
            let db = db.clone();
            thread::spawn(move || db.query())
        };
        let gc = {
            let db = db.clone();
            thread::spawn(move || db.gc())
        };
        db.flip();
        let queried = join(reader);
        join(gc);
        assert!(queried, "one flip made a query give up");
        db.check_end();
    }
}

/// The broker's own concurrency slots ([`sila_sqlite::broker::Slots`], built on the engine's
/// `sync` shim): not a copy, the type production admits every request with.
pub mod slots {
    use super::sync::{join, thread, Arc};
    use sila_sqlite::broker::Slots;
    use std::time::Duration;

    /// A wait no model may end by time: only a release ends it (loom models no time).
    const FOREVER: Duration = Duration::from_secs(3600);

    /// One slot, taken. A waiter waits for it while the holder gives it back: the waiter gets
    /// it (no wake-up lost) and the count never passes the limit.
    pub fn waiter_gets_the_slot_given_back() {
        let slots = Arc::new(Slots::default());
        assert_eq!(slots.take(1, Duration::ZERO), Ok(()));
        let waiter = {
            let slots = slots.clone();
            thread::spawn(move || {
                let got = slots.take(1, FOREVER);
                assert!(slots.in_flight() <= 1, "{} slots taken of 1", slots.in_flight());
                got
            })
        };
        slots.release();
        assert_eq!(join(waiter), Ok(()));
        assert_eq!(slots.in_flight(), 1);
    }

    /// One slot, taken; a request that must not wait races a waiter while the holder gives
    /// the slot back. The fast path adds before it looks and gives back on refusal: that
    /// give-back must wake the waiter its add may have turned away. Whoever gets the slot
    /// gives it back; the waiter always ends with it.
    pub fn refusal_racing_a_waiter() {
        let slots = Arc::new(Slots::default());
        assert_eq!(slots.take(1, Duration::ZERO), Ok(()));
        let impatient = {
            let slots = slots.clone();
            thread::spawn(move || {
                if slots.take(1, Duration::ZERO).is_ok() {
                    slots.release();
                }
            })
        };
        let waiter = {
            let slots = slots.clone();
            thread::spawn(move || slots.take(1, FOREVER))
        };
        slots.release();
        join(impatient);
        assert_eq!(join(waiter), Ok(()));
        assert_eq!(slots.in_flight(), 1);
    }
}

#[cfg(loom)]
mod loom_models {
    use super::leases::{reader_leases_across_a_flip, Fixes};
    use super::writer::{queue_with_leader, quiesce_before_flip};
    use sila_sqlite::sabotage::Sabotage;

    /// Preemptions explored per execution in the writer models unless `LOOM_MAX_PREEMPTIONS`
    /// says otherwise. Their waits and loops make exhaustive search explode (bound 3: about
    /// 0.5 s a model here, 4: about 4 s, 5: about 30 s); the lease models are exhaustive.
    const WRITER_PREEMPTIONS: usize = 3;

    fn check(name: &str, preemptions: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
        let started = std::time::Instant::now();
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = preemptions;
        }
        let bound = builder.preemption_bound;
        builder.check(f);
        eprintln!("loom model {name} (preemption bound {bound:?}): {:.2?}", started.elapsed());
    }

    // ----- the broker's real admission slots ----------------------------------------------

    #[test]
    fn slots_waiter_gets_the_slot_given_back() {
        check("slots_waiter_gets_the_slot_given_back", None, super::slots::waiter_gets_the_slot_given_back);
    }

    /// Preemptions explored in the three-thread slots model: exhaustive search takes about
    /// 50 s here, bound 4 about 0.3 s (the two-thread model is exhaustive: it is the one that
    /// found a release's plain load of the waiter count losing a wake-up).
    const SLOTS_PREEMPTIONS: usize = 4;

    #[test]
    fn slots_refusal_racing_a_waiter() {
        check(
            "slots_refusal_racing_a_waiter",
            Some(SLOTS_PREEMPTIONS),
            super::slots::refusal_racing_a_waiter,
        );
    }

    // ----- (a) the writer queue with a leader --------------------------------------------

    #[test]
    fn writer_queue_batches_of_one() {
        check("writer_queue_batches_of_one", Some(WRITER_PREEMPTIONS), || queue_with_leader(1, false));
    }

    #[test]
    fn writer_queue_group_commit() {
        check("writer_queue_group_commit", Some(WRITER_PREEMPTIONS), || queue_with_leader(2, false));
    }

    #[test]
    fn writer_queue_gate_times_out() {
        check("writer_queue_gate_times_out", Some(WRITER_PREEMPTIONS), || queue_with_leader(2, true));
    }

    // ----- (c) the quiesce before a flip --------------------------------------------------

    #[test]
    fn quiesce_before_flip_batches_of_one() {
        check("quiesce_before_flip_batches_of_one", Some(WRITER_PREEMPTIONS), || quiesce_before_flip(1));
    }

    #[test]
    fn quiesce_before_flip_group_commit() {
        check("quiesce_before_flip_group_commit", Some(WRITER_PREEMPTIONS), || quiesce_before_flip(2));
    }

    // ----- (b) reader leases across a flip, and GC (exhaustive) ---------------------------

    #[test]
    fn reader_leases_with_fixes_idle_reader() {
        check("reader_leases_with_fixes_idle_reader", None, || reader_leases_across_a_flip(Fixes::ALL, true));
    }

    #[test]
    fn reader_leases_with_fixes_new_reader() {
        check("reader_leases_with_fixes_new_reader", None, || reader_leases_across_a_flip(Fixes::ALL, false));
    }

    // ----- models that must fail ---------------------------------------------------------
    //
    // A loom failure that leaves threads blocked (a deadlock, or an assertion while another
    // thread waits) aborts the process while unwinding, which no `should_panic` survives. So
    // each such model is an ignored test that a parent test runs in a child process of this
    // binary, expecting it to fail with a given message.

    /// Runs the ignored test `name` of this binary in a child process; it must fail, and
    /// its output must contain one of `expected`.
    fn must_fail(name: &str, expected: &[&str]) -> Result<(), String> {
        let started = std::time::Instant::now();
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                &format!("loom_models::{name}"),
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("RUST_BACKTRACE", "0")
            .output()
            .map_err(|e| format!("running {name}: {e}"))?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() || !text.contains("running 1 test") {
            return Err(format!("loom found nothing wrong in {name} ({}):\n{text}", out.status));
        }
        let Some(found) = expected.iter().find(|e| text.contains(**e)) else {
            return Err(format!("{name} failed, but not with any of {expected:?}:\n{text}"));
        };
        eprintln!("loom model {name}: failed as expected ({found:?}) in {:.2?}", started.elapsed());
        Ok(())
    }

    /// The checker bites: a leader that steps down with work queued strands it.
    #[test]
    fn mutation_step_down_with_work_queued_is_caught() -> Result<(), String> {
        must_fail("mutant_step_down_with_work_queued", &["deadlock", "stranded"])
    }

    #[test]
    #[ignore = "run in a child process by the matching must-fail test"]
    fn mutant_step_down_with_work_queued() {
        check("mutant_step_down_with_work_queued", Some(WRITER_PREEMPTIONS), || {
            sila_sqlite::sabotage::set(Some(Sabotage::QueueStepsDownWithWorkQueued));
            queue_with_leader(1, false)
        });
    }

    /// The checker bites: a gate that does not queue behind earlier writes.
    #[test]
    fn mutation_gate_jumps_the_queue_is_caught() -> Result<(), String> {
        must_fail("mutant_gate_jumps_the_queue", &["opened before job", "took the writer while"])
    }

    #[test]
    #[ignore = "run in a child process by the matching must-fail test"]
    fn mutant_gate_jumps_the_queue() {
        check("mutant_gate_jumps_the_queue", Some(WRITER_PREEMPTIONS), || {
            sila_sqlite::sabotage::set(Some(Sabotage::GateJumpsTheQueue));
            quiesce_before_flip(1)
        });
    }

    // The lease code as it was before the fixes (each race alone, the others fixed): loom
    // must still find each, which keeps the model honest as the code around it changes.

    /// The flip moves the pointer (`run_plan`) and takes the old file's lease in two store
    /// critical sections; GC in between removes the old file under its readers.
    #[test]
    fn as_written_gc_can_remove_the_old_file_between_flip_and_lease() -> Result<(), String> {
        must_fail("as_written_gc_window", &["GC removed file 0"])
    }

    #[test]
    #[ignore = "run in a child process by the matching must-fail test"]
    fn as_written_gc_window() {
        let fixes = Fixes { lease_before_pointer_moves: false };
        check("as_written_gc_window", None, move || reader_leases_across_a_flip(fixes, true));
    }

    /// The pool's `give_back` reads the generation before locking the pool
    /// (`ReturnReadsGenerationEarly`); a flip in between makes it pool an old-file connection
    /// and leak the retired lease.
    #[test]
    fn as_written_return_reader_can_pool_an_old_connection_and_leak_the_lease() -> Result<(), String> {
        must_fail("as_written_stale_generation", &["released 0 times"])
    }

    #[test]
    #[ignore = "run in a child process by the matching must-fail test"]
    fn as_written_stale_generation() {
        check("as_written_stale_generation", None, move || {
            sila_sqlite::sabotage::set(Some(Sabotage::ReturnReadsGenerationEarly));
            reader_leases_across_a_flip(Fixes::ALL, true)
        });
    }

    /// The pool's `checkout` counts a reader about to be opened only after it read the
    /// version unlocked (`ReaderCountedAfterVersionRead`); a flip in between releases the
    /// old file's lease while the connection is being opened on it.
    #[test]
    fn as_written_a_reader_opening_during_a_flip_is_not_counted() -> Result<(), String> {
        must_fail(
            "as_written_uncounted_open",
            &["released while 1 connection(s) on it are open", "which GC already removed"],
        )
    }

    #[test]
    #[ignore = "run in a child process by the matching must-fail test"]
    fn as_written_uncounted_open() {
        check("as_written_uncounted_open", None, move || {
            sila_sqlite::sabotage::set(Some(Sabotage::ReaderCountedAfterVersionRead));
            reader_leases_across_a_flip(Fixes::ALL, false)
        });
    }
}

/// Without loom: the same scenarios, once each, on real threads.
#[cfg(not(loom))]
#[test]
fn protocols_run_once_on_std_threads() {
    writer::queue_with_leader(1, false);
    writer::queue_with_leader(2, false);
    writer::queue_with_leader(2, true);
    writer::quiesce_before_flip(1);
    writer::quiesce_before_flip(2);
    leases::reader_leases_across_a_flip(leases::Fixes::ALL, true);
    leases::reader_leases_across_a_flip(leases::Fixes::ALL, false);
    slots::waiter_gets_the_slot_given_back();
    slots::refusal_racing_a_waiter();
}
