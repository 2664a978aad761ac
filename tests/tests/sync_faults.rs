//! Fail-stop on the real disk (issue 14), in a real process: a process whose fsyncs fail for
//! one kind of file never acknowledges a write after the failure, answers with a typed error,
//! and after a reopen without the fault every write it acknowledged at the FULL durability
//! tier is there.
//!
//! Each case compiles `tests/c/sync_fault.c` (an LD_PRELOAD shim over fsync, fdatasync,
//! sync_file_range and syncfs) with `cc`, and runs the `fault_writer` binary of this crate
//! under it in a fresh workspace: premium tier (synchronous=FULL), `wal_checkpoint_bytes` = 1,
//! databases `a` and `b`. The child writes [`ROWS`] rows to `a`, one `exec` each, and creates
//! the shim's arm file just before row `arm_at` ([`ARM_AT`] for `main` and `wal`, so the
//! acknowledged rows before it must survive; 1 for `dir`), the rows before it being written
//! with every sync working; then it writes one row to `b` and reads `a`. The shim appends `failed <call>
//! <path>` to a log for each sync it failed, and the child appends each of its output lines to
//! the same log (`child <line>`), so the log orders failures and answers as they happened.
//!
//! What each kind of fault hits:
//!
//! * `main` (`*.sqlite`): every commit is followed by a PASSIVE checkpoint, which ends with a
//!   sync of the database file. SQLite reports that failure only to the checkpoint's caller;
//!   the commit before it has succeeded, so only the engine can refuse to acknowledge it.
//! * `wal` (`*-wal`): at synchronous=FULL every commit syncs the WAL; the commit fails.
//! * `dir`: plain inserts sync no directory. A SQLite VFS (the unix one, and the engine's own,
//!   which does the same) syncs a directory only after the first sync of a journal or WAL it
//!   has just created (the unix VFS even ignores that sync's result), and `a`'s WAL is created
//!   during setup and stays while the connection is open (the child's idle timeout outlasts
//!   the run; a checkpoint rewinds the WAL, it does not recreate it); the engine syncs a
//!   directory only when it closes a database (after SQLite removed the WAL) or runs a store
//!   plan (registration, snapshot, restore…). So the `dir` cases arm the fault before row 1
//!   and take a snapshot of `a` before row [`SNAPSHOT_AT`]: its plan syncs `snapshots/` after
//!   the copy and the database directory after the manifest's rename. The snapshot must then
//!   fail and nothing may be acknowledged after it.
//!
//! Required of every case, beyond the fault having fired (a case whose fault never fired
//! fails, saying so):
//!
//! * The rows before the arm file are all acknowledged (the setup works without the fault).
//! * In the log, the first child answer after the first failed sync is a refusal, and no
//!   acknowledgement (`ack`, `snap-ok`, `b-ack`) follows the first failed sync.
//! * The first refusal is `IO` (the operation that met the failed sync) or `POISONED`; every
//!   later one is `POISONED`, including the write to `b`: after a failed sync the whole
//!   workspace stops acknowledging writes, not just the database that met it.
//! * The read of `a` after the fault may go on (a read acknowledges no durability) or be
//!   refused with `POISONED`; if it answers, it counts at least the acknowledged rows.
//! * `once` mode fails exactly one sync.
//! * Reopened in this process without the shim: nothing is reported damaged, every
//!   acknowledged row of `a` is there with its value, every row that is there is one the child
//!   wrote, `b` has its setup row, `PRAGMA integrity_check` is `ok` on both, and both take a
//!   new write.
//!
//! Without a C compiler, or where the shim cannot be preloaded, the cases fail with a message
//! saying so: they never pass without having injected a fault.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::workspace::{Workspace, WorkspaceOptions};
use sila_sqlite::Value;
use sila_sqlite_tests::TempDir;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// The child program (`tests/src/bin/fault_writer.rs`).
const CHILD: &str = env!("CARGO_BIN_EXE_fault_writer");

/// The app the child registers.
const APP: &str = "com.example.syncfault";

/// Rows the child writes to `a`.
const ROWS: i64 = 200;

/// The `main` and `wal` cases arm the fault just before this row: rows 1..ARM_AT are
/// acknowledged with every sync working, and must survive.
const ARM_AT: i64 = 50;

/// The `dir` cases take a snapshot of `a` just before this row.
const SNAPSHOT_AT: i64 = 100;

/// Longest a child may run (it normally takes seconds).
const CHILD_TIMEOUT: Duration = Duration::from_secs(300);

/// The value the child writes in row `i` (as `fault_writer` does; keep the two in step).
fn value(i: i64) -> String {
    format!("row-{i}")
}

#[derive(Debug, Clone, Copy)]
struct Case {
    /// `SILA_FAULT_KIND`.
    kind: &'static str,
    /// `SILA_FAULT_MODE`.
    mode: &'static str,
    /// The row before which the arm file is created.
    arm_at: i64,
    /// The row before which `a` is snapshotted, if any.
    snapshot_at: Option<i64>,
}

#[test]
fn main_file_sync_fails_once() {
    run_case(Case { kind: "main", mode: "once", arm_at: ARM_AT, snapshot_at: None });
}

#[test]
fn main_file_sync_fails_always() {
    run_case(Case { kind: "main", mode: "always", arm_at: ARM_AT, snapshot_at: None });
}

#[test]
fn wal_sync_fails_once() {
    run_case(Case { kind: "wal", mode: "once", arm_at: ARM_AT, snapshot_at: None });
}

#[test]
fn wal_sync_fails_always() {
    run_case(Case { kind: "wal", mode: "always", arm_at: ARM_AT, snapshot_at: None });
}

#[test]
fn directory_sync_fails_once() {
    run_case(Case { kind: "dir", mode: "once", arm_at: 1, snapshot_at: Some(SNAPSHOT_AT) });
}

#[test]
fn directory_sync_fails_always() {
    run_case(Case { kind: "dir", mode: "always", arm_at: 1, snapshot_at: Some(SNAPSHOT_AT) });
}

/// Compiles the shim into `dir`; panics, saying why, when there is no working C compiler.
fn build_shim(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("c").join("sync_fault.c");
    let shim = dir.join("libsilasyncfault.so");
    let cc = std::env::var_os("CC").filter(|v| !v.is_empty()).unwrap_or_else(|| "cc".into());
    let output = Command::new(&cc)
        .args(["-std=c11", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the C compiler {cc:?} ({e}): this test compiles {} and preloads it into \
                 a child process; install gcc (or set CC). It does not pass without injecting faults.",
                source.display()
            )
        });
    assert!(
        output.status.success(),
        "compiling {} with {cc:?} failed ({}):\n{}{}",
        source.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    shim
}

/// An operation of the child whose answer is a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// The insert of row `i` into `a`.
    Row(i64),
    /// The snapshot of `a`.
    Snapshot,
    /// The write to `b`.
    B,
    /// The read of `a`.
    Read,
}

/// A line of the child's output.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// Setup is done.
    Ready,
    /// The arm file exists from here on.
    Armed,
    /// The write or snapshot was acknowledged.
    Ok(Op),
    /// The read of `a` answered with this count.
    ReadOk(i64),
    /// The operation was refused with this code and message.
    Refused(Op, String, String),
}

impl Line {
    fn parse(text: &str) -> Option<Line> {
        let refused = |op: Op, rest: &str| {
            let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
            (!code.is_empty()).then(|| Line::Refused(op, code.to_string(), message.to_string()))
        };
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        match word {
            "ready" if rest.is_empty() => Some(Line::Ready),
            "armed" if rest.is_empty() => Some(Line::Armed),
            "ack" => rest.parse().ok().map(|i| Line::Ok(Op::Row(i))),
            "err" => {
                let (i, rest) = rest.split_once(' ')?;
                refused(Op::Row(i.parse().ok()?), rest)
            }
            "snap-ok" if !rest.is_empty() => Some(Line::Ok(Op::Snapshot)),
            "snap-err" => refused(Op::Snapshot, rest),
            "b-ack" if rest.is_empty() => Some(Line::Ok(Op::B)),
            "b-err" => refused(Op::B, rest),
            "read-ok" => rest.parse().ok().map(Line::ReadOk),
            "read-err" => refused(Op::Read, rest),
            _ => None,
        }
    }

    /// The operation answered, if this line is an answer.
    fn op(&self) -> Option<Op> {
        match self {
            Line::Ready | Line::Armed => None,
            Line::Ok(op) | Line::Refused(op, ..) => Some(*op),
            Line::ReadOk(_) => Some(Op::Read),
        }
    }

    /// Whether this line acknowledges a write or a snapshot (a durable change).
    fn acknowledges(&self) -> bool {
        matches!(self, Line::Ok(Op::Row(_) | Op::Snapshot | Op::B))
    }
}

/// One line of the shared log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LogLine {
    /// The shim failed `call` on `path`.
    Failed { call: String, path: PathBuf },
    /// The child printed this line.
    Child(String),
}

/// What a child run left: its output, the shared log, and how it ended.
struct Run {
    case: Case,
    root: PathBuf,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    log: String,
}

impl Run {
    /// Fails the test with `why` and everything the run printed.
    fn fail(&self, why: impl Display) -> ! {
        panic!(
            "{:?} (workspace {}): {why}\n--- child stdout ---\n{}--- child stderr ---\n{}--- shared log \
             (shim failures and child lines, in order) ---\n{}",
            self.case,
            self.root.display(),
            self.stdout,
            self.stderr,
            self.log
        )
    }

    fn lines(&self) -> Vec<Line> {
        self.stdout
            .lines()
            .map(|l| {
                Line::parse(l).unwrap_or_else(|| self.fail(format!("unexpected child output line {l:?}")))
            })
            .collect()
    }

    fn log_lines(&self) -> Vec<LogLine> {
        self.log
            .lines()
            .map(|l| {
                if let Some(child) = l.strip_prefix("child ") {
                    return LogLine::Child(child.to_string());
                }
                let parsed = l.strip_prefix("failed ").and_then(|rest| rest.split_once(' '));
                match parsed {
                    Some((call, path)) => {
                        LogLine::Failed { call: call.to_string(), path: PathBuf::from(path) }
                    }
                    None => self.fail(format!("unexpected log line {l:?}")),
                }
            })
            .collect()
    }
}

/// Runs the child under the shim, in `root`, and waits for it (at most [`CHILD_TIMEOUT`]).
fn run_child(case: Case, tmp: &Path, root: &Path, shim: &Path) -> Run {
    let stdout_path = tmp.join("stdout");
    let stderr_path = tmp.join("stderr");
    let log_path = tmp.join("log");
    let file = |p: &Path| std::fs::File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    let mut command = Command::new(CHILD);
    command
        .arg(root)
        .arg(ROWS.to_string())
        .args(["--arm-at", &case.arm_at.to_string()])
        .env("LD_PRELOAD", shim)
        .env("SILA_FAULT_ROOT", root)
        .env("SILA_FAULT_ARM", tmp.join("arm"))
        .env("SILA_FAULT_MODE", case.mode)
        .env("SILA_FAULT_KIND", case.kind)
        .env("SILA_FAULT_LOG", &log_path)
        .stdin(Stdio::null())
        // Files, not pipes: nobody reads a pipe while the child runs.
        .stdout(file(&stdout_path))
        .stderr(file(&stderr_path));
    if let Some(at) = case.snapshot_at {
        command.args(["--snapshot-at", &at.to_string()]);
    }
    let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {CHILD}: {e}"));
    // A watchdog kills a child that hangs (after the fault?); the test waits for the child,
    // not for the clock.
    let pid = child.id().to_string();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let hung = finished.recv_timeout(CHILD_TIMEOUT) == Err(std::sync::mpsc::RecvTimeoutError::Timeout);
        if hung {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
        hung
    });
    let status = child.wait().expect("wait for the child");
    let _ = done.send(());
    if watchdog.join().unwrap_or(false) {
        panic!(
            "{case:?}: the child ran longer than {CHILD_TIMEOUT:?} and was killed (a hang after the \
             fault?); its output so far:\n{}",
            std::fs::read_to_string(&stdout_path).unwrap_or_default()
        );
    }
    let read = |p: &Path| match std::fs::read_to_string(p) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("read {}: {e}", p.display()),
    };
    Run {
        case,
        root: root.to_path_buf(),
        status,
        stdout: read(&stdout_path),
        stderr: read(&stderr_path),
        log: read(&log_path),
    }
}

/// The lines the child prints when every operation answers: `ready`, then per row the arm
/// and snapshot markers where they fall and the row, then `b` and the read.
fn expected_ops(case: Case) -> Vec<Option<Op>> {
    let mut ops = vec![None];
    for i in 1..=ROWS {
        if i == case.arm_at {
            ops.push(None);
        }
        if case.snapshot_at == Some(i) {
            ops.push(Some(Op::Snapshot));
        }
        ops.push(Some(Op::Row(i)));
    }
    ops.extend([Some(Op::B), Some(Op::Read)]);
    ops
}

fn run_case(case: Case) {
    let tmp = TempDir::new(&format!("syncfault-{}-{}", case.kind, case.mode));
    let shim = build_shim(tmp.path());
    let ws_dir = tmp.path().join("ws");
    std::fs::create_dir_all(&ws_dir).unwrap();
    // The shim compares against the paths /proc/self/fd names: canonical ones.
    let root = ws_dir.canonicalize().unwrap();
    let run = run_child(case, tmp.path(), &root, &shim);

    if !run.status.success() {
        run.fail(format!("the child failed ({}); its setup runs before the fault is armed", run.status));
    }

    // The child's output has the expected shape.
    let lines = run.lines();
    let shape: Vec<Option<Op>> = lines.iter().map(Line::op).collect();
    if shape != expected_ops(case) {
        run.fail(
            "the child's output does not have the expected lines (ready, armed, snapshot, rows, b, read)",
        );
    }
    let (ready, armed) = (lines.first(), lines.iter().position(|l| *l == Line::Armed));
    if ready != Some(&Line::Ready) || armed.is_none() {
        run.fail("expected `ready`, then `armed` before the first row after the arm file");
    }
    for line in &lines {
        if let Line::Refused(Op::Row(i), ..) = line {
            if *i < case.arm_at {
                run.fail(format!("row {i} was refused before the fault was armed"));
            }
        }
    }

    // The shim's failures: there are some, of the right kind, under the workspace.
    let log = run.log_lines();
    let failures: Vec<(&str, &Path)> = log
        .iter()
        .filter_map(|l| match l {
            LogLine::Failed { call, path } => Some((call.as_str(), path.as_path())),
            LogLine::Child(_) => None,
        })
        .collect();
    if failures.is_empty() {
        run.fail(format!(
            "the fault never fired: no sync of a `{}` file under the workspace failed after the arm file \
             was created. Either the shim was not preloaded (LD_PRELOAD ignored, a statically linked \
             child?), or the engine did no such sync during the run, and this case needs another \
             trigger (see the module docs)",
            case.kind
        ));
    }
    for (call, path) in &failures {
        let kind_ok = match case.kind {
            "main" => path.to_string_lossy().ends_with(".sqlite"),
            "wal" => path.to_string_lossy().ends_with("-wal"),
            _ => true,
        };
        let call_ok = ["fsync", "fdatasync", "sync_file_range", "syncfs"].contains(call);
        if !kind_ok || !call_ok || !path.starts_with(&root) {
            run.fail(format!(
                "the shim failed {call} on {}, which is not a `{}` file of the workspace",
                path.display(),
                case.kind
            ));
        }
    }
    if case.mode == "once" && failures.len() != 1 {
        run.fail(format!("mode once failed {} syncs, not 1", failures.len()));
    }

    // The log has the child's lines as its stdout has them, and orders the failures among them.
    let child_in_log: Vec<&str> = log
        .iter()
        .filter_map(|l| match l {
            LogLine::Child(text) => Some(text.as_str()),
            LogLine::Failed { .. } => None,
        })
        .collect();
    if child_in_log != run.stdout.lines().collect::<Vec<_>>() {
        run.fail("the child's lines in the log differ from its stdout");
    }
    let first_failure = log.iter().position(|l| matches!(l, LogLine::Failed { .. })).unwrap();
    let armed_in_log = log.iter().position(|l| *l == LogLine::Child("armed".into()));
    if armed_in_log.is_none_or(|armed| armed > first_failure) {
        run.fail("a sync failed before the child created the arm file");
    }
    let answers_after: Vec<Line> = log[first_failure..]
        .iter()
        .filter_map(|l| match l {
            LogLine::Child(text) => Line::parse(text),
            LogLine::Failed { .. } => None,
        })
        .collect();
    match answers_after.first() {
        Some(Line::Refused(Op::Row(_) | Op::Snapshot | Op::B, ..)) => {}
        other => run.fail(format!(
            "the operation during which the sync failed was not refused: the first answer after the \
             failure is {other:?}"
        )),
    }
    if let Some(ack) = answers_after.iter().find(|l| l.acknowledges()) {
        run.fail(format!("acknowledged after a failed sync: {ack:?}"));
    }

    // The refusals: the first IO (or POISONED), every later one POISONED.
    let refusals: Vec<(Op, &str)> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Refused(op, code, _) => Some((*op, code.as_str())),
            _ => None,
        })
        .collect();
    let Some(&(first_op, first_code)) = refusals.first() else { run.fail("no operation was refused") };
    if first_code != "IO" && first_code != "POISONED" {
        run.fail(format!("the first refusal ({first_op:?}) is {first_code}, expected IO or POISONED"));
    }
    if let Some((op, code)) = refusals.iter().skip(1).find(|(_, code)| *code != "POISONED") {
        run.fail(format!("{op:?} was refused with {code} after the first refusal; expected POISONED"));
    }
    let first_refused = lines.iter().position(|l| matches!(l, Line::Refused(..))).unwrap();
    if let Some(ack) = lines[first_refused..].iter().find(|l| l.acknowledges()) {
        run.fail(format!("acknowledged after the first refusal: {ack:?}"));
    }
    // The whole workspace stops: `b`, which met no failed sync itself, refuses too.
    if !lines.iter().any(|l| matches!(l, Line::Refused(Op::B, code, _) if code == "POISONED")) {
        run.fail(
            "the write to `b` after the failed sync was not refused with POISONED (fail-stop covers the \
             whole workspace)",
        );
    }
    let acked: BTreeSet<i64> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Ok(Op::Row(i)) => Some(*i),
            _ => None,
        })
        .collect();
    // Reads may go on after a fault, or be refused; what one sees has every acknowledged row.
    let acked_count = i64::try_from(acked.len()).unwrap();
    match lines.last() {
        Some(Line::ReadOk(n)) if (acked_count..=ROWS).contains(n) => {}
        Some(Line::Refused(Op::Read, code, _)) if code == "POISONED" => {}
        other => run.fail(format!(
            "the read of `a` answered {other:?}; expected a count of at least the {acked_count} \
             acknowledged rows, or POISONED"
        )),
    }

    check_after_reopen(&run, &acked);
}

/// Reopens the workspace in this process, without the shim, and checks what is on disk.
fn check_after_reopen(run: &Run, acked: &BTreeSet<i64>) {
    let ws = Workspace::open(&run.root, WorkspaceOptions::default())
        .unwrap_or_else(|e| run.fail(format!("reopening without the fault: {e}")));
    let damaged = &ws.recovery_report().damaged;
    if !damaged.is_empty() {
        run.fail(format!("the reopen reports damage: {damaged:?}"));
    }
    let app = ws.open_app(APP).unwrap_or_else(|e| run.fail(format!("open_app after the reopen: {e}")));
    let open = |name: &str| {
        app.open(name).unwrap_or_else(|e| run.fail(format!("opening {name} after the reopen: {e}")))
    };
    let (a, b) = (open("sila://db/a"), open("sila://db/b"));
    let rows_of = |db: &sila_sqlite::Database, name: &str| -> BTreeMap<i64, String> {
        let rows = db
            .query("SELECT id, v FROM t ORDER BY id", &[])
            .unwrap_or_else(|e| run.fail(format!("reading {name} after the reopen: {e}")));
        rows.rows
            .iter()
            .map(|row| match row.as_slice() {
                [Value::Integer(id), Value::Text(v)] => (*id, v.clone()),
                other => run.fail(format!("{name} has the row {other:?}")),
            })
            .collect()
    };

    let in_a = rows_of(&a, "a");
    for i in acked {
        match in_a.get(i) {
            Some(v) if *v == value(*i) => {}
            Some(v) => run.fail(format!("acknowledged row {i} of a has v = {v:?} after the reopen")),
            None => run.fail(format!(
                "acknowledged row {i} of a is missing after the reopen ({} of {} acknowledged rows present)",
                acked.iter().filter(|i| in_a.contains_key(i)).count(),
                acked.len()
            )),
        }
    }
    // Rows that were refused may be there or not; what is there is what the child wrote.
    for (id, v) in &in_a {
        if !(1..=ROWS).contains(id) || *v != value(*id) {
            run.fail(format!("a has a row the child never wrote: ({id}, {v:?})"));
        }
    }
    let in_b = rows_of(&b, "b");
    if in_b.get(&1) != Some(&value(1)) {
        run.fail(format!("b lost its setup row: {in_b:?}"));
    }

    for (name, db) in [("a", &a), ("b", &b)] {
        match db.query_value("PRAGMA integrity_check", &[]) {
            Ok(Some(Value::Text(ok))) if ok == "ok" => {}
            other => run.fail(format!("integrity_check of {name} after the reopen: {other:?}")),
        }
    }
    // The reopened workspace works: both databases take a write.
    let insert = "INSERT INTO t(id, v) VALUES (?, ?)";
    let next = |db: &sila_sqlite::Database, name: &str, id: i64| {
        if let Err(e) = db.exec(insert, &[Value::Integer(id), Value::Text(value(id))]) {
            run.fail(format!("writing to {name} after the reopen: {e}"));
        }
    };
    next(&a, "a", ROWS + 1);
    next(&b, "b", 1000);
}
