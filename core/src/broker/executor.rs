//! Executors: who runs the broker's work units.
//!
//! A work unit is a boxed closure tagged with the app it serves. Both executors keep one
//! FIFO per app and take from the apps round-robin, so one app flooding the queue delays
//! only itself. The queue is bounded ([`Executor::spawn`] refuses when full).
//!
//! * [`ThreadPool`] — production: a fixed number of OS threads shared by every database.
//! * [`Stepper`] — simulation: nothing runs until the caller steps it, one unit at a time,
//!   in an order the caller picks (from a seeded RNG), so one seed replays one interleaving.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use uuid::Uuid;

/// One unit of broker work.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Runs work units.
pub trait Executor: Send + Sync {
    /// Queues `job` on behalf of `app`. Returns the job back if the queue is full.
    fn spawn(&self, app: Uuid, job: Job) -> Result<(), Job>;
    /// Drops every queued job (their requests are answered by the completers' drop) and
    /// stops accepting new ones.
    fn shutdown(&self);

    /// Whether an operation may run part of its own work on a short-lived helper thread
    /// beside the calling one (a restore checksums the file it replaces while it copies the
    /// snapshot). `false` for a deterministic executor: a simulated disk must see the IO of
    /// one thread at a time, in an order the seed decides.
    fn allows_helper_threads(&self) -> bool {
        true
    }
}

/// Per-app FIFOs served round-robin, with a bound on the total, and a cap on how many of
/// an app's jobs may run at once (so one app can never hold every worker).
struct FairQueue {
    apps: VecDeque<(Uuid, VecDeque<Job>)>,
    len: usize,
    len_max: usize,
    closed: bool,
    running: std::collections::HashMap<Uuid, usize>,
    running_per_app_max: usize,
}

impl FairQueue {
    fn new(len_max: usize) -> FairQueue {
        FairQueue::with_cap(len_max, usize::MAX)
    }

    fn with_cap(len_max: usize, running_per_app_max: usize) -> FairQueue {
        FairQueue {
            apps: VecDeque::new(),
            len: 0,
            len_max,
            closed: false,
            running: std::collections::HashMap::new(),
            running_per_app_max: running_per_app_max.max(1),
        }
    }

    /// Takes the next job of the first app (in round-robin order) that is under its cap of
    /// running jobs, and counts it as running until [`FairQueue::finished`].
    fn pop_runnable(&mut self) -> Option<(Uuid, Job)> {
        let cap = self.running_per_app_max;
        let index =
            self.apps.iter().position(|(app, _)| self.running.get(app).copied().unwrap_or(0) < cap)?;
        let app = self.apps.get(index).map(|(a, _)| *a)?;
        let job = self.pop_at(index)?;
        *self.running.entry(app).or_insert(0) += 1;
        Some((app, job))
    }

    fn finished(&mut self, app: Uuid) {
        if let Some(n) = self.running.get_mut(&app) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(&app);
            }
        }
    }

    fn push(&mut self, app: Uuid, job: Job) -> Result<(), Job> {
        if self.closed || self.len >= self.len_max {
            return Err(job);
        }
        match self.apps.iter_mut().find(|(a, _)| *a == app) {
            Some((_, q)) => q.push_back(job),
            None => self.apps.push_back((app, VecDeque::from([job]))),
        }
        self.len += 1;
        Ok(())
    }

    /// Takes the next job of the app at position `index % apps` and rotates that app to the
    /// back, so every app with work gets a turn.
    fn pop_at(&mut self, index: usize) -> Option<Job> {
        if self.apps.is_empty() {
            return None;
        }
        let i = index % self.apps.len();
        let (app, mut q) = self.apps.remove(i)?;
        let job = q.pop_front();
        if !q.is_empty() {
            self.apps.push_back((app, q));
        }
        if job.is_some() {
            self.len -= 1;
        }
        job
    }

    fn drain(&mut self) -> Vec<Job> {
        self.len = 0;
        self.apps.drain(..).flat_map(|(_, q)| q).collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct PoolShared {
    queue: Mutex<FairQueue>,
    work: Condvar,
}

/// A fixed set of worker threads serving every database of the workspace, started by the
/// first job: a workspace used only through blocking calls (which run on the caller's thread)
/// never starts them, and opening one costs no thread.
pub struct ThreadPool {
    shared: Arc<PoolShared>,
    /// The workers, once started.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Workers to start.
    size: usize,
    /// Set once the workers run (read on every spawn without a lock).
    started: std::sync::atomic::AtomicBool,
}

impl ThreadPool {
    /// A pool of `threads` workers (at least one), started by the first job, with a queue of
    /// at most `queue_max` jobs. One app may run at most `threads - 1` jobs at once (at least
    /// one), so a worker is always left for the other apps: a flood of slow work from one app
    /// cannot stall another.
    pub fn new(threads: usize, queue_max: usize) -> std::io::Result<ThreadPool> {
        let threads = threads.max(1);
        let queue = FairQueue::with_cap(queue_max, threads.saturating_sub(1).max(1));
        let shared = Arc::new(PoolShared { queue: Mutex::new(queue), work: Condvar::new() });
        Ok(ThreadPool {
            shared,
            threads: Mutex::new(Vec::new()),
            size: threads,
            started: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Starts the workers if they are not running (and the pool is not shut down). A worker
    /// that cannot be started is an error only if none could: the pool then refuses jobs.
    fn start(&self) -> std::io::Result<()> {
        let mut handles = lock(&self.threads);
        if self.started.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        if lock(&self.shared.queue).closed {
            return Err(std::io::Error::other("the worker pool is shut down"));
        }
        let mut last_error = None;
        for i in 0..self.size {
            let shared = self.shared.clone();
            match std::thread::Builder::new().name(format!("sila-worker-{i}")).spawn(move || worker(&shared))
            {
                Ok(h) => handles.push(h),
                Err(e) => last_error = Some(e),
            }
        }
        if handles.is_empty() {
            return Err(last_error.unwrap_or_else(|| std::io::Error::other("no worker started")));
        }
        self.started.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Workers running (0 until the first job).
    pub fn threads_started(&self) -> usize {
        lock(&self.threads).len()
    }
}

fn worker(shared: &PoolShared) {
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(job) = q.pop_runnable() {
                    break Some(job);
                }
                if q.closed {
                    break None;
                }
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        match job {
            // A panicking job must not take the worker down with it; the job's completer is
            // dropped during unwinding and answers its caller.
            Some((app, job)) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                lock(&shared.queue).finished(app);
                // A job of this app may have been waiting on the cap.
                shared.work.notify_one();
            }
            None => return,
        }
    }
}

impl Executor for ThreadPool {
    fn spawn(&self, app: Uuid, job: Job) -> Result<(), Job> {
        if !self.started.load(std::sync::atomic::Ordering::Acquire) && self.start().is_err() {
            // No worker could start (or the pool is shut down): refused, like a full queue.
            return Err(job);
        }
        lock(&self.shared.queue).push(app, job)?;
        self.shared.work.notify_one();
        Ok(())
    }

    fn shutdown(&self) {
        let dropped = {
            let mut q = lock(&self.shared.queue);
            q.closed = true;
            q.drain()
        };
        drop(dropped);
        self.shared.work.notify_all();
        let handles: Vec<JoinHandle<()>> = lock(&self.threads).drain(..).collect();
        let me = std::thread::current().id();
        for h in handles {
            // A worker may drop the last workspace handle itself; it cannot join itself.
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A deterministic executor: jobs run only when [`Stepper::step`] is called, on the calling
/// thread, in the order the caller's choices give.
pub struct Stepper {
    queue: Mutex<FairQueue>,
}

impl Stepper {
    /// A stepper holding at most `queue_max` jobs.
    pub fn new(queue_max: usize) -> Stepper {
        Stepper { queue: Mutex::new(FairQueue::new(queue_max)) }
    }

    /// Jobs waiting.
    pub fn pending(&self) -> usize {
        lock(&self.queue).len
    }

    /// Runs one job: that of the app at position `choice % apps_with_work`. Returns false
    /// when there was nothing to run.
    pub fn step(&self, choice: usize) -> bool {
        let job = lock(&self.queue).pop_at(choice);
        match job {
            Some(job) => {
                job();
                true
            }
            None => false,
        }
    }

    /// Runs jobs until none is left or `steps_max` ran, choosing each with `choose`.
    /// Returns the number of jobs run.
    pub fn run_until_idle(&self, steps_max: usize, mut choose: impl FnMut() -> usize) -> usize {
        let mut ran = 0;
        while ran < steps_max && self.step(choose()) {
            ran += 1;
        }
        ran
    }
}

impl Executor for Stepper {
    fn spawn(&self, app: Uuid, job: Job) -> Result<(), Job> {
        lock(&self.queue).push(app, job)
    }

    fn allows_helper_threads(&self) -> bool {
        false
    }

    fn shutdown(&self) {
        let dropped = {
            let mut q = lock(&self.queue);
            q.closed = true;
            q.drain()
        };
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn fair_queue_alternates_between_apps() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let s = Stepper::new(100);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for i in 0..4 {
            let o = order.clone();
            assert!(s.spawn(a, Box::new(move || o.lock().unwrap().push(format!("a{i}")))).is_ok());
        }
        let o = order.clone();
        assert!(s.spawn(b, Box::new(move || o.lock().unwrap().push("b0".into()))).is_ok());
        assert_eq!(s.run_until_idle(100, || 0), 5);
        assert_eq!(*order.lock().unwrap(), vec!["a0", "b0", "a1", "a2", "a3"]);
    }

    #[test]
    fn one_app_never_holds_every_worker() {
        let mut q = FairQueue::with_cap(100, 1);
        let (heavy, light) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for _ in 0..3 {
            assert!(q.push(heavy, Box::new(|| {})).is_ok());
        }
        let (app, _job) = q.pop_runnable().unwrap();
        assert_eq!(app, heavy);
        // The heavy app is at its cap: its next job waits, even with nothing else queued.
        assert!(q.pop_runnable().is_none());
        assert!(q.push(light, Box::new(|| {})).is_ok());
        assert_eq!(q.pop_runnable().map(|(a, _)| a), Some(light), "the light app gets the free worker");
        q.finished(heavy);
        assert_eq!(q.pop_runnable().map(|(a, _)| a), Some(heavy));
    }

    #[test]
    fn queue_bound_is_enforced() {
        let s = Stepper::new(2);
        let app = Uuid::from_u128(1);
        assert!(s.spawn(app, Box::new(|| {})).is_ok());
        assert!(s.spawn(app, Box::new(|| {})).is_ok());
        assert!(s.spawn(app, Box::new(|| {})).is_err(), "the third job exceeds queue_max = 2");
        assert!(s.step(0));
        assert!(s.spawn(app, Box::new(|| {})).is_ok());
    }

    #[test]
    fn thread_pool_starts_its_workers_with_the_first_job_and_never_after_shutdown() {
        let pool = ThreadPool::new(3, 10).unwrap();
        assert_eq!(pool.threads_started(), 0, "no thread before the first job");
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(pool.spawn(Uuid::nil(), Box::new(move || tx.send(()).unwrap())).is_ok());
        rx.recv().unwrap();
        assert_eq!(pool.threads_started(), 3);
        pool.shutdown();
        assert_eq!(pool.threads_started(), 0, "joined");
        let idle = ThreadPool::new(3, 10).unwrap();
        idle.shutdown();
        assert!(idle.spawn(Uuid::nil(), Box::new(|| {})).is_err(), "shut down before any job");
        assert_eq!(idle.threads_started(), 0, "and none started");
    }

    #[test]
    fn thread_pool_runs_everything_and_survives_a_panicking_job() {
        let pool = ThreadPool::new(2, 1000).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(pool.spawn(Uuid::nil(), Box::new(|| panic!("job panics"))).is_ok());
        for i in 0..100u128 {
            let c = count.clone();
            let tx = tx.clone();
            let job: Job = Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(());
            });
            assert!(pool.spawn(Uuid::from_u128(i % 3), job).is_ok());
        }
        for _ in 0..100 {
            rx.recv().unwrap();
        }
        assert_eq!(count.load(Ordering::SeqCst), 100);
        pool.shutdown();
        assert!(pool.spawn(Uuid::nil(), Box::new(|| {})).is_err(), "closed after shutdown");
    }
}
