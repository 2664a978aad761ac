//! The child process of `tests/tests/sync_faults.rs` (issue 14, fail-stop on the real disk).
//!
//! Usage: `fault_writer <workspace_dir> <rows> [--arm-at N] [--snapshot-at N]`
//!
//! Run under the `tests/c/sync_fault.c` shim (LD_PRELOAD), which makes the fsyncs of one kind
//! of file fail while the arm file exists. Setup, before the fault is armed: open the workspace
//! with `wal_checkpoint_bytes` = 1 (every commit is followed by a PASSIVE checkpoint, which
//! syncs the main database file) and an idle timeout longer than any run (housekeeping never
//! closes a database mid-run), register `APP` at the premium tier (synchronous=FULL: every
//! commit syncs the WAL) with databases `a` and `b`, create `t(id INTEGER PRIMARY KEY, v TEXT)`
//! in both, and write row 1 to `b`. Then it prints `ready` and writes rows 1..=rows to `a`, one
//! `exec` each, printing after each
//!
//! * `ack <i>` when the write was acknowledged, or
//! * `err <i> <CODE> <message>` (CODE is the stable `ErrorCode` name).
//!
//! Just before row `--arm-at` (default 1, i.e. right after `ready`) it creates the file named
//! by `SILA_FAULT_ARM` (if set) and prints `armed`: the rows before it are written with every
//! sync working, so the test has acknowledged rows to look for after the fault. Just before
//! row `--snapshot-at` (if given) it takes a snapshot of `a` and prints `snap-ok <uuid>` or
//! `snap-err <CODE> <message>` (plain inserts sync no directory; a snapshot does, see the
//! test). After the loop: one write to `b` (`b-ack` or `b-err <CODE> <message>`) and one read
//! of `a` (`read-ok <count>` or `read-err <CODE> <message>`). Messages are printed on one line.
//!
//! Every line is flushed at once. When `SILA_FAULT_LOG` is set, every line is also appended to
//! that file as `child <line>`, with the same O_APPEND discipline as the shim's `failed …`
//! lines, so the file orders the child's answers and the injected failures as they happened.
//!
//! Exit status 0 once setup succeeded (failures after it are output, not exit codes); 2 when
//! the arguments were wrong, setup failed or output could not be written (the error on
//! stderr).

use sila_sqlite::{BrokerOptions, Database, Error, Value, Workspace, WorkspaceOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The app the child registers (the test opens it after the reopen; keep the two in step).
const APP: &str = "com.example.syncfault";

/// Premium tier (synchronous=FULL), two databases.
const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"tier":"premium","dbs":[{"name":"a","maxSizeMB":64},{"name":"b","maxSizeMB":64}]}}}"#;

/// The value of row `i` (the test checks it after the reopen; keep the two in step).
fn value(i: i64) -> String {
    format!("row-{i}")
}

type BoxError = Box<dyn std::error::Error>;

/// Where the child's lines go: stdout, and the shared log when there is one.
struct Out {
    log: Option<PathBuf>,
}

impl Out {
    fn line(&self, text: &str) -> Result<(), BoxError> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}")?;
        stdout.flush()?;
        if let Some(log) = &self.log {
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
            // One write of the whole line, so it stays whole among the shim's appends.
            file.write_all(format!("child {text}\n").as_bytes())?;
        }
        Ok(())
    }

    /// `<prefix> <CODE> <message on one line>`.
    fn error(&self, prefix: &str, e: &Error) -> Result<(), BoxError> {
        let message = e.message().replace(['\n', '\r'], " ");
        self.line(&format!("{prefix} {} {message}", e.code().name()))
    }
}

fn non_empty_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

const USAGE: &str = "usage: fault_writer <workspace_dir> <rows> [--arm-at N] [--snapshot-at N]";

/// The command line.
struct Args {
    dir: PathBuf,
    rows: i64,
    arm_at: i64,
    snapshot_at: Option<i64>,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut positional = Vec::new();
    let (mut arm_at, mut snapshot_at) = (1, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = || -> Result<i64, BoxError> {
            let text = args.next().ok_or_else(|| format!("{arg} needs a row number; {USAGE}"))?;
            text.parse::<i64>().map_err(|e| BoxError::from(format!("{arg} {text}: {e}")))
        };
        match arg.as_str() {
            "--arm-at" => arm_at = number()?,
            "--snapshot-at" => snapshot_at = Some(number()?),
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}; {USAGE}").into()),
            _ => positional.push(arg),
        }
    }
    let [dir, rows] = <[String; 2]>::try_from(positional).map_err(|_| USAGE)?;
    let rows = rows.parse::<i64>().map_err(|e| format!("rows {rows}: {e}"))?;
    Ok(Args { dir: PathBuf::from(dir), rows, arm_at, snapshot_at })
}

fn run() -> Result<(), BoxError> {
    let Args { dir, rows, arm_at, snapshot_at } = parse_args()?;
    let out = Out { log: non_empty_env("SILA_FAULT_LOG") };

    let broker = BrokerOptions {
        // Every commit's WAL passes 1 byte: each is followed by a checkpoint.
        wal_checkpoint_bytes: 1,
        // No idle close (checkpoint, WAL removal, directory sync) in the middle of the run.
        idle_timeout: Duration::from_secs(24 * 3600),
        ..BrokerOptions::default()
    };
    let ws = Workspace::open(&dir, WorkspaceOptions { broker, ..WorkspaceOptions::default() })?;
    ws.register_app(APP, MANIFEST)?;
    let app = ws.open_app(APP)?;
    let a = app.open("sila://db/a")?;
    let b = app.open("sila://db/b")?;
    let create = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
    a.exec(create, &[])?;
    b.exec(create, &[])?;
    b.exec("INSERT INTO t(id, v) VALUES (?, ?)", &row(1))?;

    out.line("ready")?;

    for i in 1..=rows {
        if i == arm_at {
            if let Some(arm) = non_empty_env("SILA_FAULT_ARM") {
                std::fs::write(&arm, b"armed\n")
                    .map_err(|e| format!("create the arm file {}: {e}", arm.display()))?;
            }
            out.line("armed")?;
        }
        if snapshot_at == Some(i) {
            match a.snapshot("fault-test") {
                Ok(entry) => out.line(&format!("snap-ok {}", entry.id))?,
                Err(e) => out.error("snap-err", &e)?,
            }
        }
        match a.exec("INSERT INTO t(id, v) VALUES (?, ?)", &row(i)) {
            Ok(_) => out.line(&format!("ack {i}"))?,
            Err(e) => out.error(&format!("err {i}"), &e)?,
        }
    }
    match b.exec("INSERT INTO t(id, v) VALUES (?, ?)", &row(2)) {
        Ok(_) => out.line("b-ack")?,
        Err(e) => out.error("b-err", &e)?,
    }
    read_count(&a, &out)?;
    // The workspace closes its databases when the last handle drops, here (checkpoints,
    // syncs): with the fault still armed those may fail too, which is not this program's to
    // report; the test's reopen shows what they left.
    Ok(())
}

fn row(i: i64) -> [Value; 2] {
    [Value::Integer(i), Value::Text(value(i))]
}

fn read_count(a: &Database, out: &Out) -> Result<(), BoxError> {
    match a.query_value("SELECT count(*) FROM t", &[]) {
        Ok(Some(Value::Integer(n))) => out.line(&format!("read-ok {n}")),
        Ok(other) => out.line(&format!("read-ok {other:?}")),
        Err(e) => out.error("read-err", &e),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // If stderr itself is gone there is nobody left to tell.
            let _ = writeln!(std::io::stderr(), "fault_writer: {e}");
            ExitCode::from(2)
        }
    }
}
