//! turmoil: a host running the engine is crashed and bounced mid-work in simulated time
//! (issue 6, item 7).
//!
//! The `engine` host boots a [`Workspace`] on a [`MemFs`] that outlives the host's process
//! (the simulated disk is shared through an `Arc`) and serves a line protocol over turmoil's
//! TCP:
//!
//! ```text
//! put <k> <v>              -> ok | err <CODE>
//! tx <k1> <v1> <k2> <v2>   -> ok | err <CODE>      (one transaction)
//! get <k>                  -> val <v> | none | err <CODE>
//! ```
//!
//! A `client` host sends puts, transactions and gets; a driver loop steps the simulation and,
//! from a seeded RNG, makes the machine fail:
//!
//! * **power loss** — the power is cut ([`MemFs::cut_power_after`]`(0)`), the host crashes
//!   (`Sim::crash`), and some steps later it boots again (`Sim::bounce`) on the disk's
//!   durable image ([`MemFs::durable_image`]): unsynced data is gone;
//! * **power cut mid-IO** — `cut_power_after(n)` arms a cut n mutating IO calls ahead, so it
//!   lands inside a commit; the driver sees the dead disk and crashes the host as above;
//! * **process restart** — `Sim::bounce` alone: the process restarts and the disk keeps
//!   everything it was given (synced or not).
//!
//! The client must see acknowledged data or clean errors: every reply is well formed (a
//! connection error or `err <CODE>` is clean); no read returns a value that was never
//! written; an acknowledged write is readable afterwards — always on the premium tier
//! (`synchronous=FULL`), and on the standard tier (`NORMAL`) unless a power loss came after
//! it; a transaction is all or nothing. At the end, with faults off, every key is read once
//! more and checked the same way.
//!
//! The broker runs on a [`Stepper`]: writes are submitted non-blocking and the host steps
//! the stepper until they are answered, so nothing blocks turmoil's single thread.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sila_sqlite::broker::executor::{Executor, Stepper};
use sila_sqlite::vfs::Vfs;
use sila_sqlite::workspace::Clock;
use sila_sqlite::{Database, Error, Value, Workspace, WorkspaceOptions};
use sila_sqlite_sim::memfs::MemFs;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use turmoil::net::{TcpListener, TcpStream};

const PORT: u16 = 7070;
const ROOT: &str = "/ws";
const APP: &str = "com.example.turmoil";
/// Requests the client sends before the final check.
const OPS: usize = 160;
/// Simulation steps (1 ms of simulated time each) one run may take.
const STEPS_MAX: usize = 200_000;
/// Stepper jobs one request may run.
const STEPPER_STEPS_MAX: usize = 256;
/// Connections one boot of the engine serves, and requests per connection.
const CONNECTIONS_MAX: usize = 10_000;
const REQUESTS_PER_CONNECTION_MAX: usize = 10_000;
/// Tries of one final read (the engine may still be booting).
const FINAL_TRIES_MAX: usize = 200;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The machine the engine runs on, outside its process: the disk and what the test knows.
struct Machine {
    fs: MemFs,
    full: bool,
    seed: u64,
    vfs_prefix: String,
    boots: u64,
    /// The power went off: the next boot starts from the durable image.
    power_lost: bool,
    /// Boots that started from a durable image (power losses so far).
    losses: u64,
    /// Boots the power cut during recovery.
    boots_cut: u64,
    /// Engine-side failures of the harness or the engine (boot, stuck request, leak).
    problems: Vec<String>,
}

type Shared = Arc<Mutex<Machine>>;

/// The workspace clock: simulated time.
struct TurmoilClock;

impl Clock for TurmoilClock {
    fn now_ms(&self) -> u64 {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default();
        1_800_000_000_000 + u64::try_from(elapsed.as_millis()).unwrap_or(0)
    }
}

fn manifest(full: bool) -> String {
    let tier = if full { "premium" } else { "standard" };
    format!(
        r#"{{"capabilities":{{"sqlite":{{"enabled":true,"dbs":[{{"name":"main","maxSizeMB":8}}],"tier":"{tier}"}}}}}}"#
    )
}

/// One boot of the engine. Dropping it (the host crashed or was bounced) closes the
/// workspace.
struct Engine {
    db: Option<Database>,
    ws: Option<Workspace>,
    stepper: Arc<Stepper>,
    vfs: String,
    machine: Shared,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.db = None;
        self.ws = None;
    }
}

fn code(e: &Error) -> String {
    format!("err {}", e.code().name())
}

impl Engine {
    /// Boots on the machine's disk (from its durable image after a power loss): recovery,
    /// then the app and its table.
    fn boot(machine: &Shared) -> Result<Engine, String> {
        let (fs, vfs, seed, full) = {
            let mut m = lock(machine);
            if m.power_lost || m.fs.is_dead() {
                m.fs = m.fs.durable_image();
                m.power_lost = false;
                m.losses += 1;
            }
            m.boots += 1;
            (
                m.fs.clone(),
                format!("{}-b{}", m.vfs_prefix, m.boots),
                m.seed.wrapping_mul(7919) ^ m.boots,
                m.full,
            )
        };
        let stepper = Arc::new(Stepper::new(1024));
        let mut engine = Engine {
            db: None,
            ws: None,
            stepper: stepper.clone(),
            vfs: vfs.clone(),
            machine: machine.clone(),
        };
        let options = WorkspaceOptions {
            uuid_seed: Some(seed),
            clock: Arc::new(TurmoilClock),
            executor: Some(stepper as Arc<dyn Executor>),
            ..WorkspaceOptions::default()
        };
        let ws = Workspace::open_with(Arc::new(fs), PathBuf::from(ROOT), options)
            .map_err(|e| format!("recovery: {e}"))?;
        let app = match ws.open_app(APP) {
            Ok(app) => app,
            Err(_) => {
                ws.register_app(APP, &manifest(full)).map_err(|e| format!("register: {e}"))?;
                ws.open_app(APP).map_err(|e| format!("open app: {e}"))?
            }
        };
        engine.db = Some(app.open("main").map_err(|e| format!("open db: {e}"))?);
        engine.ws = Some(ws);
        let created =
            engine.write("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)", vec![]);
        if created != "ok" {
            return Err(format!("create table: {created}"));
        }
        Ok(engine)
    }

    fn db(&self) -> Result<&Database, String> {
        self.db.as_ref().ok_or_else(|| "err NO_DATABASE".to_string())
    }

    /// Runs the stepper until it is idle (a bounded number of jobs).
    fn settle(&self) {
        self.stepper.run_until_idle(STEPPER_STEPS_MAX, || 0);
    }

    /// A non-blocking write, answered by stepping the executor.
    fn write(&self, sql: &str, params: Vec<Value>) -> String {
        let db = match self.db() {
            Ok(db) => db,
            Err(e) => return e,
        };
        let pending = db.submit_exec(sql, params);
        self.settle();
        match pending.try_take() {
            Some(Ok(_)) => "ok".to_string(),
            Some(Err(e)) => code(&e),
            None => {
                lock(&self.machine).problems.push(format!("{}: a write was never answered", self.vfs));
                "err STUCK".to_string()
            }
        }
    }

    /// A blocking transaction: the writer is idle (every request settles the stepper), so
    /// the caller leads on this thread.
    fn transaction(&self, pairs: [(&str, &str); 2]) -> String {
        let db = match self.db() {
            Ok(db) => db,
            Err(e) => return e,
        };
        let r = db.transaction(|tx| {
            for (k, v) in pairs {
                tx.exec(PUT, &[Value::Text(k.to_string()), Value::Text(v.to_string())])?;
            }
            Ok(())
        });
        self.settle();
        match r {
            Ok(()) => "ok".to_string(),
            Err(e) => code(&e),
        }
    }

    fn get(&self, k: &str) -> String {
        let db = match self.db() {
            Ok(db) => db,
            Err(e) => return e,
        };
        let r = db.query("SELECT v FROM kv WHERE k = ?1", &[Value::Text(k.to_string())]);
        self.settle();
        match r {
            Ok(rows) => match rows.rows.first().and_then(|row| row.first()) {
                Some(Value::Text(v)) => format!("val {v}"),
                Some(other) => format!("bad {other:?}"),
                None => "none".to_string(),
            },
            Err(e) => code(&e),
        }
    }

    fn handle(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["put", k, v] => self.write(PUT, vec![Value::Text(k.to_string()), Value::Text(v.to_string())]),
            ["tx", k1, v1, k2, v2] => self.transaction([(k1, v1), (k2, v2)]),
            ["get", k] => self.get(k),
            _ => "err PROTOCOL".to_string(),
        }
    }
}

const PUT: &str = "INSERT INTO kv (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = excluded.v";

/// The engine host's software: boot, then serve connections one at a time.
async fn engine_main(machine: Shared) -> turmoil::Result {
    let engine = match Engine::boot(&machine) {
        Ok(engine) => engine,
        Err(e) => {
            // The power went off during recovery: the machine is dead until the driver
            // reboots it, which recovers again from the durable image.
            let power_off = {
                let mut m = lock(&machine);
                m.boots_cut += u64::from(m.fs.is_dead());
                m.fs.is_dead()
            };
            if !power_off {
                return Err(e.into());
            }
            std::future::pending::<()>().await;
            return Ok(());
        }
    };
    let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
    for _ in 0..CONNECTIONS_MAX {
        let (stream, _) = listener.accept().await?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        for _ in 0..REQUESTS_PER_CONNECTION_MAX {
            let Ok(Some(line)) = lines.next_line().await else { break };
            let reply = engine.handle(&line);
            if write.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                break;
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Req {
    Put { k: String },
    Tx { k1: String, k2: String },
    Get { k: String },
}

/// Every key is written once, with this value.
fn value_of(k: &str) -> String {
    format!("v-{k}")
}

impl Req {
    fn line(&self) -> String {
        match self {
            Req::Put { k } => format!("put {k} {}", value_of(k)),
            Req::Tx { k1, k2 } => format!("tx {k1} {} {k2} {}", value_of(k1), value_of(k2)),
            Req::Get { k } => format!("get {k}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Record {
    req: Req,
    /// The reply line, or `None` after a connection error or timeout.
    reply: Option<String>,
    /// Power losses before the request was sent and after its answer arrived.
    losses_sent: u64,
    losses_answered: u64,
    /// Sent after the faults stopped.
    last: bool,
}

#[derive(Default)]
struct ClientLog {
    records: Vec<Record>,
    /// The client finished its work and reads everything back: faults stop.
    final_phase: bool,
    connection_errors: u64,
}

type Log = Arc<Mutex<ClientLog>>;

type Conn = (Lines<BufReader<OwnedReadHalf>>, OwnedWriteHalf);

/// Sends one request; `None` on any connection failure or timeout (the connection is
/// dropped and the next request reconnects).
async fn request(conn: &mut Option<Conn>, line: &str) -> Option<String> {
    if conn.is_none() {
        let stream = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(("engine", PORT)))
            .await
            .ok()?
            .ok()?;
        let (read, write) = stream.into_split();
        *conn = Some((BufReader::new(read).lines(), write));
    }
    let (lines, write) = conn.as_mut()?;
    let answer = async {
        write.write_all(format!("{line}\n").as_bytes()).await.ok()?;
        lines.next_line().await.ok()?
    };
    let reply = tokio::time::timeout(Duration::from_secs(2), answer).await.ok().flatten();
    if reply.is_none() {
        *conn = None;
    }
    reply
}

async fn client_main(log: Log, machine: Shared, seed: u64) -> turmoil::Result {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00C1_1E47);
    let mut conn = None;
    let mut written: Vec<String> = Vec::new();
    let mut next = 0u32;
    let mut key = || {
        next += 1;
        format!("k{next}")
    };
    let losses = |m: &Shared| lock(m).losses;
    for _ in 0..OPS {
        let roll = rng.random_range(0..10u32);
        let req = if roll < 5 || written.is_empty() {
            Req::Put { k: key() }
        } else if roll < 7 {
            Req::Tx { k1: key(), k2: key() }
        } else {
            let i = rng.random_range(0..written.len());
            Req::Get { k: written.get(i).cloned().unwrap_or_default() }
        };
        match &req {
            Req::Put { k } => written.push(k.clone()),
            Req::Tx { k1, k2 } => written.extend([k1.clone(), k2.clone()]),
            Req::Get { .. } => {}
        }
        let losses_sent = losses(&machine);
        let reply = request(&mut conn, &req.line()).await;
        let losses_answered = losses(&machine);
        {
            let mut l = lock(&log);
            l.connection_errors += u64::from(reply.is_none());
            l.records.push(Record { req, reply: reply.clone(), losses_sent, losses_answered, last: false });
        }
        if reply.is_none() {
            // The engine is down or restarting: back off in simulated time.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    lock(&log).final_phase = true;
    for k in written {
        let req = Req::Get { k };
        for _ in 0..FINAL_TRIES_MAX {
            let losses_sent = losses(&machine);
            let reply = request(&mut conn, &req.line()).await;
            if let Some(reply) = reply {
                let losses_answered = losses(&machine);
                let record =
                    Record { req: req.clone(), reply: Some(reply), losses_sent, losses_answered, last: true };
                lock(&log).records.push(record);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// What the driver did to the engine.
#[derive(Debug, Default)]
struct Faults {
    power_losses: u64,
    power_cuts_armed: u64,
    power_cuts_fired: u64,
    restarts: u64,
}

/// One seeded run. Returns the client's records, what was injected, and the machine.
fn run(seed: u64, full: bool) -> Result<(Vec<Record>, Faults, Shared), String> {
    let fs = MemFs::new();
    fs.create_dir(Path::new(ROOT)).map_err(|e| e.to_string())?;
    fs.sync_dir(Path::new("/")).map_err(|e| e.to_string())?;
    let machine: Shared = Arc::new(Mutex::new(Machine {
        fs,
        full,
        seed,
        vfs_prefix: format!("turmoil-{}-s{seed}", std::process::id()),
        boots: 0,
        power_lost: false,
        losses: 0,
        boots_cut: 0,
        problems: Vec::new(),
    }));
    let log: Log = Arc::new(Mutex::new(ClientLog::default()));
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(3600))
        .max_message_latency(Duration::from_millis(20))
        .rng_seed(seed)
        .build();
    let m = machine.clone();
    sim.host("engine", move || engine_main(m.clone()));
    sim.client("client", client_main(log.clone(), machine.clone(), seed));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xD21E_2000);
    let mut faults = Faults::default();
    // Steps left until a crashed engine boots again.
    let mut down_for: Option<u32> = None;
    let mut finished = false;
    for _ in 0..STEPS_MAX {
        if sim.step().map_err(|e| format!("seed {seed}: the simulation failed: {e}"))? {
            finished = true;
            break;
        }
        let final_phase = lock(&log).final_phase;
        if let Some(left) = down_for {
            if left == 0 || final_phase {
                sim.bounce("engine");
                down_for = None;
            } else {
                down_for = Some(left - 1);
            }
            continue;
        }
        let dead = lock(&machine).fs.is_dead();
        if dead {
            // An armed cut fired inside some IO: the machine is off; it reboots later.
            faults.power_cuts_fired += 1;
            sim.crash("engine");
            lock(&machine).power_lost = true;
            down_for = Some(if final_phase { 0 } else { rng.random_range(1..300) });
            continue;
        }
        if final_phase {
            // Faults off for the final reads: no armed cut may fire any more.
            lock(&machine).fs.cut_power_after(u64::MAX);
            continue;
        }
        match rng.random_range(0..10_000u32) {
            0..15 => {
                faults.power_losses += 1;
                lock(&machine).fs.cut_power_after(0);
                sim.crash("engine");
                lock(&machine).power_lost = true;
                down_for = Some(rng.random_range(1..300));
            }
            15..30 => {
                faults.restarts += 1;
                sim.bounce("engine");
            }
            30..60 => {
                faults.power_cuts_armed += 1;
                lock(&machine).fs.cut_power_after(rng.random_range(0..40));
            }
            _ => {}
        }
    }
    drop(sim);
    if !finished {
        return Err(format!("seed {seed}: the client did not finish within {STEPS_MAX} steps"));
    }
    let records = std::mem::take(&mut lock(&log).records);
    Ok((records, faults, machine))
}

/// Checks one run's records; returns the violations.
fn check(full: bool, records: &[Record]) -> Vec<String> {
    let mut bad = Vec::new();
    // Acknowledged writes: key -> (losses before the write was sent, written by a transaction with).
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut tx_pairs: Vec<(String, String, bool)> = Vec::new();
    let mut last_read: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let Some(reply) = &r.reply else { continue };
        let clean_error = reply.strip_prefix("err ").is_some_and(|code| {
            !code.is_empty() && code != "STUCK" && code.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        });
        match &r.req {
            Req::Put { k } => {
                if reply == "ok" {
                    acked.insert(k.clone(), r.losses_sent);
                } else if !clean_error {
                    bad.push(format!("#{i} {}: unclean reply {reply:?}", r.req.line()));
                }
            }
            Req::Tx { k1, k2 } => {
                if reply == "ok" {
                    acked.insert(k1.clone(), r.losses_sent);
                    acked.insert(k2.clone(), r.losses_sent);
                } else if !clean_error {
                    bad.push(format!("#{i} {}: unclean reply {reply:?}", r.req.line()));
                }
                tx_pairs.push((k1.clone(), k2.clone(), reply == "ok"));
            }
            Req::Get { k } => {
                let seen = if reply == "none" {
                    None
                } else if let Some(v) = reply.strip_prefix("val ") {
                    if v != value_of(k) {
                        bad.push(format!("#{i} get {k}: read {v:?}, which was never written"));
                    }
                    Some(v.to_string())
                } else {
                    if !clean_error {
                        bad.push(format!("#{i} get {k}: unclean reply {reply:?}"));
                    }
                    if r.last {
                        bad.push(format!("#{i} get {k}: {reply} with faults off"));
                    }
                    continue;
                };
                if seen.is_none() {
                    if let Some(sent) = acked.get(k) {
                        // FULL keeps every acknowledged commit; NORMAL only until a power loss.
                        if full || r.losses_answered == *sent {
                            bad.push(format!(
                                "#{i} get {k}: acknowledged write missing (tier {}, power losses since: {})",
                                if full { "premium" } else { "standard" },
                                r.losses_answered - sent
                            ));
                        }
                    }
                }
                if r.last {
                    last_read.insert(k.clone(), seen);
                }
            }
        }
    }
    for (k1, k2, ok) in tx_pairs {
        let (a, b) = (last_read.get(&k1), last_read.get(&k2));
        if let (Some(a), Some(b)) = (a, b) {
            if a.is_some() != b.is_some() {
                bad.push(format!(
                    "transaction {k1}+{k2} (acknowledged: {ok}) is half applied: {a:?} / {b:?}"
                ));
            }
        } else {
            bad.push(format!("transaction {k1}+{k2}: not read back at the end"));
        }
    }
    let written = records.iter().filter(|r| !r.last && !matches!(r.req, Req::Get { .. })).count();
    if written > 0 && last_read.is_empty() {
        bad.push("no final reads".to_string());
    }
    bad
}

fn run_and_check(seed: u64, full: bool) -> Result<(), String> {
    let started = std::time::Instant::now();
    let (records, faults, machine) = run(seed, full)?;
    let m = lock(&machine);
    if !m.problems.is_empty() {
        return Err(format!("seed {seed}: engine problems: {:#?}", m.problems));
    }
    let violations = check(full, &records);
    let acked = records.iter().filter(|r| !r.last && r.reply.as_deref() == Some("ok")).count();
    let errors = records.iter().filter(|r| r.reply.as_deref().is_some_and(|x| x.starts_with("err "))).count();
    let lost = records.iter().filter(|r| r.reply.is_none()).count();
    let codes: std::collections::BTreeSet<&str> =
        records.iter().filter_map(|r| r.reply.as_deref()).filter(|x| x.starts_with("err ")).collect();
    // Acknowledged writes a power loss took (allowed on the standard tier only).
    let forgotten = check(true, &records).iter().filter(|v| v.contains("acknowledged write missing")).count();
    eprintln!(
        "turmoil seed {seed} tier {}: {} requests ({acked} acknowledged writes, {errors} err replies {codes:?}, \
         {lost} connection errors, {forgotten} reads missing an acknowledged write), {} boots ({} cut during \
         recovery), {faults:?}, {:.2?}",
        if full { "premium" } else { "standard" },
        records.len(),
        m.boots,
        m.boots_cut,
        started.elapsed()
    );
    if !violations.is_empty() {
        return Err(format!("seed {seed}: {violations:#?}"));
    }
    if m.boots < 3 {
        return Err(format!("seed {seed}: the engine booted {} times; the run proves little", m.boots));
    }
    Ok(())
}

#[test]
fn premium_tier_keeps_every_acknowledged_write_across_crashes_and_bounces() -> Result<(), String> {
    for seed in 1..=6 {
        run_and_check(seed, true)?;
    }
    Ok(())
}

#[test]
fn standard_tier_answers_cleanly_and_never_tears_a_transaction() -> Result<(), String> {
    for seed in 11..=14 {
        run_and_check(seed, false)?;
    }
    Ok(())
}

/// A checker that cannot fail is no checker: the standard tier (`synchronous=NORMAL`) does
/// lose acknowledged commits at a power loss, and the premium tier's rule must say so.
#[test]
fn the_premium_rule_catches_the_standard_tier_losing_acknowledged_writes() -> Result<(), String> {
    let (records, _, _) = run(11, false)?;
    let violations = check(true, &records);
    if !violations.iter().any(|v| v.contains("acknowledged write missing")) {
        return Err(format!("no acknowledged write was lost on the standard tier: {violations:#?}"));
    }
    Ok(())
}
