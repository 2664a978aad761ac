//! `sila-sqlite`: the dev CLI of the sila-sqlite engine.
//!
//! Every command opens the workspace (taking its exclusive lock, running recovery), does its
//! work through the public API of the `sila-sqlite` crate, and closes it. Errors print one
//! first line `error[<CODE>]: <message>` on stderr (CODE is the stable `ErrorCode` name) and
//! exit 1; usage errors exit 2.

mod audit;
mod check;
mod demo;
mod versions;

use clap::{Parser, Subcommand};
use sila_sqlite::manifest::MIB;
use sila_sqlite::sqlite::policy::SQL_LENGTH_BYTES_MAX;
use sila_sqlite::versions::ExportFormat;
use sila_sqlite::workspace::Abandoner;
use sila_sqlite::{
    AppInfo, BrokerOptions, Error, ErrorCode, ExecResult, Result, Value, Workspace, WorkspaceOptions,
};
use std::ffi::{OsStr, OsString};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Prints one line on stdout; a closed or failing stdout is an `IO` error, never a panic.
macro_rules! outln {
    () => { $crate::write_out(format_args!("")) };
    ($($arg:tt)*) => { $crate::write_out(format_args!($($arg)*)) };
}
pub(crate) use outln;

/// Set once stdout's reader has gone (`sila-sqlite demo | head`): the rest of the output is
/// dropped and the command still finishes, closing the workspace cleanly.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

pub(crate) fn write_out(args: std::fmt::Arguments<'_>) -> Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(Error::new(ErrorCode::Io, format!("writing to stdout: {e}"))),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "sila-sqlite",
    version,
    about = "Dev CLI of sila-sqlite, the embedded multi-tenant SQLite engine",
    after_help = "Errors: exit code 1 and stderr's first line `error[<CODE>]: <message>`; usage errors exit 2."
)]
struct Cli {
    /// The workspace directory. One process holds it at a time. `demo` and `app register`
    /// create it if it holds no workspace; any other command refuses such a directory
    /// (NOT_FOUND) unless --create is given, so a mistyped path is an error, not a new,
    /// empty workspace.
    #[arg(long, global = true, value_name = "DIR", default_value = "./sila-workspace")]
    workspace: PathBuf,

    /// Create the workspace if the directory holds none, whatever the command.
    #[arg(long, global = true)]
    create: bool,

    /// If another process holds the workspace, wait up to this many milliseconds for it
    /// (default: fail at once with WORKSPACE_LOCKED).
    #[arg(
        long,
        global = true,
        value_name = "MS",
        value_parser = clap::value_parser!(u64).range(0..=WAIT_MS_MAX)
    )]
    wait_ms: Option<u64>,

    /// The statement timeout for this run, in milliseconds (the engine's default is 5000).
    /// A statement running longer is stopped with TIMEOUT.
    #[arg(
        long,
        global = true,
        value_name = "MS",
        value_parser = clap::value_parser!(u64).range(1..=STATEMENT_TIMEOUT_MS_MAX)
    )]
    statement_timeout_ms: Option<u64>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the spec's host-SDK example end to end (start here).
    ///
    /// Registers com.example.analytics, opens sila://db/analytics, creates a table and an
    /// index, writes 1000 events in one transaction and counts them inside it, queries by
    /// parameter, prints the results and the database's metrics. Safe to rerun: each run adds
    /// a new batch.
    Demo,

    /// Register and list apps.
    #[command(subcommand)]
    App(AppCommand),

    /// Run one SQL statement, or a script with -f; print the outcome as JSON on one line.
    ///
    /// One statement prints {"columns":[…],"rows":[[…]…],"changes":N,"last_insert_rowid":R}.
    /// SQLite decides how it runs: a statement that only reads runs as a query on a reader
    /// (on a read-only database too); one that writes runs on the writer, and its rows
    /// (INSERT … RETURNING) are printed as well. Values map to JSON as the engine's API does:
    /// blobs are {"$blob":"<base64>"}, non-finite reals {"$real":"Infinity"}.
    ///
    /// A script (-f FILE, or -f - for standard input) runs any number of statements as one
    /// atomic request: all or nothing. It prints {"statements":N,"changes":N,"last_insert_rowid":R};
    /// an error names the statement and its line and column.
    Sql {
        /// The app id (e.g. com.example.analytics).
        app: String,
        /// The database name from the app's manifest (e.g. analytics), or sila://db/<name>.
        db: String,
        /// The statement, or `-` to read it from standard input (at most the engine's SQL
        /// length limit, 1,000,000 bytes). Must be UTF-8. Not given with -f.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        sql: Option<OsString>,
        /// Run the script in FILE (`-` for standard input) instead of one statement.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<OsString>,
        /// A parameter for the next `?`, as a JSON value: null, true, 42, 1.5, "text",
        /// {"$blob":"<base64>"}. Repeat for more. Not with -f (scripts take no parameters).
        #[arg(long = "param", value_name = "JSON", allow_hyphen_values = true, conflicts_with = "file")]
        params: Vec<String>,
    },

    /// Print statistics as JSON: per-database metrics and sizes, per-app quota ledgers.
    ///
    /// For each database: metrics, file and WAL sizes, open connections; for each app: its
    /// quota ledger.
    ///
    /// Statistics cover only databases used by this process, so `stats` first opens every
    /// database it reports on and runs `SELECT 1` there (which counts as one query in the
    /// metrics); counters therefore start from this process, while sizes and ledgers are the
    /// workspace's.
    Stats {
        /// Only this app.
        app: Option<String>,
        /// Only this database of the app.
        db: Option<String>,
    },

    /// Verify records and integrity; print a report, exit 1 on any problem.
    ///
    /// Checks every app record, pointer and manifest (checksums, the files they name) as
    /// recovery reads them on open, then runs `PRAGMA integrity_check` on every healthy
    /// database. Exits 1 if anything is damaged or not "ok".
    Check,

    /// Take a consistent snapshot while the database stays live; print only its UUID.
    ///
    /// The snapshot is immutable, listed with size, checksum, schema version, time and label,
    /// and restorable with `restore`.
    Snapshot {
        /// The app id.
        app: String,
        /// The database name from the app's manifest, or sila://db/<name>.
        db: String,
        /// A label stored with the snapshot (printable ASCII).
        #[arg(long, default_value = "")]
        label: String,
    },

    /// List a database's snapshots, oldest first.
    ///
    /// One line per snapshot: UUID SIZE_BYTES SCHEMA_VERSION CREATED_UTC LABEL (the label,
    /// which may contain spaces, is last).
    Snapshots {
        /// The app id.
        app: String,
        /// The database name.
        db: String,
        /// Print one JSON array of {id, size, schema, created_ms, created, crc32c, label}.
        #[arg(long)]
        json: bool,
    },

    /// Restore a snapshot; print only the UUID of the undo snapshot taken first.
    ///
    /// Restoring the printed undo snapshot reverses the restore. A snapshot whose schema
    /// version differs from the database's is refused unless --allow-schema-change.
    Restore {
        /// The app id.
        app: String,
        /// The database name.
        db: String,
        /// The snapshot's UUID (from `snapshot` or `snapshots`).
        snapshot_id: String,
        /// Restore even if the snapshot's schema version differs from the current one.
        #[arg(long)]
        allow_schema_change: bool,
    },

    /// Write an online backup into the workspace's backup area; print its id and path.
    ///
    /// Backups go to <workspace>/backups/<app_uuid>/<db>/<uuid>.sqlite (.sqlite.gz with
    /// --gzip); only the newest --keep of this database are kept.
    Backup {
        /// The app id.
        app: String,
        /// The database name.
        db: String,
        /// How many backups of this database to keep (the newest).
        #[arg(long, value_name = "N", default_value_t = 7)]
        keep: usize,
        /// Compress the backup with gzip (`import` takes it as it is).
        #[arg(long)]
        gzip: bool,
    },

    /// Export a standalone .sqlite file (host path); print the bytes written.
    ///
    /// The copy is consistent and self-contained (rollback-journal mode, no WAL), so the
    /// stock sqlite3 shell opens it (after gunzip, with --gzip). An existing FILE is refused.
    Export {
        /// The app id.
        app: String,
        /// The database name.
        db: String,
        /// The destination file (a host path; must not exist).
        file: PathBuf,
        /// Compress the file with gzip (`import` takes it as it is).
        #[arg(long)]
        gzip: bool,
    },

    /// Import a .sqlite file as the database's new version; print the checks passed.
    ///
    /// The file is copied into the workspace (never opened in place) and the copy checked
    /// (header, page size, WAL, integrity_check with cell_size_check, schema, expected
    /// tables, quota) before the flip. Any failure names the check and changes nothing.
    Import {
        /// The app id.
        app: String,
        /// The database name.
        db: String,
        /// The file to import (a host path).
        file: PathBuf,
        /// A table the imported database must have. Repeat for more.
        #[arg(long = "expect-table", value_name = "TABLE")]
        expect_tables: Vec<String>,
    },

    /// Run a migration plan; print from → to, the steps and the safety snapshot's id.
    ///
    /// STEPS.json is the host SDK's shape:
    /// {"currentVersion":2,"steps":[{"from":0,"to":1,"up":"…","down":"…"}]}.
    /// Steps run in one transaction after an automatic snapshot; any failure rolls back and
    /// names the step (MIGRATION_FAILED).
    Migrate {
        /// The app id.
        app: String,
        /// The database name.
        db: String,
        /// The migration plan (JSON file).
        #[arg(value_name = "STEPS.json")]
        steps: PathBuf,
        /// Run the migration on a private copy and report; change nothing.
        #[arg(long)]
        dry_run: bool,
    },

    /// Apply a snapshot retention policy; print the dropped snapshot ids, one per line.
    ///
    /// Dropped snapshots leave the manifest at once; `gc` then deletes their files.
    Retention {
        /// The app id.
        app: String,
        /// The database name.
        db: String,
        /// Keep at most the newest N snapshots.
        #[arg(long, value_name = "N")]
        keep_last: Option<usize>,
        /// Drop snapshots older than S seconds.
        #[arg(long, value_name = "S")]
        max_age_secs: Option<u64>,
    },

    /// Delete every file nothing references; print the files removed and bytes freed.
    Gc,

    /// Print the audit trail: what changed the workspace, oldest first.
    ///
    /// One line per record: sequence number, time (UTC), operation, app/database, outcome
    /// (ok or error[CODE]), duration and what it did as JSON. Registrations, manifest
    /// changes, migrations, snapshots, restores, imports, exports, backups, compactions,
    /// GC runs, integrity findings and failed operations are recorded.
    Audit {
        /// Only this app's records.
        #[arg(long)]
        app: Option<String>,
        /// Only records since: unix milliseconds, or a duration before now (90m, 12h, 7d).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most the newest N matching records (1 to 10000).
        #[arg(long, value_name = "N", default_value_t = sila_sqlite::audit::AUDIT_READ_MAX)]
        limit: usize,
        /// Print one JSON object {"records":[…],"damaged":N}.
        #[arg(long)]
        json: bool,
    },

    /// Print the workspace's metrics in the Prometheus text exposition format.
    ///
    /// Per app: the quota and what it is used by (live, snapshots, in flight, garbage).
    /// Per database opened by this process: requests, errors, latency, sizes (a CLI run
    /// opens none before this command, so its counters start at zero).
    Metrics,

    /// Do a bounded share of the workspace's upkeep, continuing where the last run stopped.
    ///
    /// For each database in turn while the budget lasts: an integrity check (quick, or full
    /// with --full), PRAGMA optimize, and retention with --keep-last; then GC. One line per
    /// database; a damaged one is reported (and refused until the workspace is reopened)
    /// and the exit code is 1. (The rotation cursor lives in the process: each CLI run
    /// starts from the first database.)
    Maintain {
        /// Start no new database after this many milliseconds (one always runs).
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        budget_ms: u64,
        /// Run SQLite's full integrity_check instead of quick_check.
        #[arg(long)]
        full: bool,
        /// Keep at most the newest N snapshots of each database.
        #[arg(long, value_name = "N")]
        keep_last: Option<usize>,
    },

    /// Fold a database's WAL into its file and truncate it.
    ///
    /// Prints the WAL's frames and those folded; a reader still on an older state leaves
    /// the rest for a later checkpoint (reported as partial).
    Checkpoint {
        /// The app id.
        app: String,
        /// The database name from the app's manifest, or sila://db/<name>.
        db: String,
    },

    /// Rewrite a database into a new compact file (VACUUM) and switch to it.
    ///
    /// Every row stays; writes wait for the copy, reads do not. Needs room in the app's
    /// quota and on the disk for a copy of the live size. The replaced file is removed by
    /// `gc`. Prints the sizes before and after.
    Compact {
        /// The app id.
        app: String,
        /// The database name from the app's manifest, or sila://db/<name>.
        db: String,
    },
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// Register an app from its capability manifest (JSON file); prints its id and uuid.
    /// Registering the same app with the same manifest again is a no-op.
    Register {
        /// The manifest file, e.g. {"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics"}]}}}.
        manifest: PathBuf,
        /// The app id to register it under.
        #[arg(long = "app", value_name = "APP_ID")]
        app: String,
    },
    /// One line per registered app: id, uuid, tier, databases (name:sizeMB, `ro` if read-only).
    List,
    /// Replace a registered app's manifest (JSON file): databases it adds are created empty,
    /// databases it drops are removed with their snapshots (their files leave at the next
    /// `gc`), the others take the new limits. Refused, changing nothing, if what is stored
    /// would not fit. Prints the app as `app list` does.
    Update {
        /// The new manifest file.
        manifest: PathBuf,
        /// The app to update.
        #[arg(long = "app", value_name = "APP_ID")]
        app: String,
    },
    /// Unregister an app: it is gone at once, and its files leave at the next `gc`.
    Unregister {
        /// The app to unregister.
        app: String,
        /// First export each of its databases to DIR/<db>.sqlite; if one fails, the app stays.
        #[arg(long = "export-dir", value_name = "DIR")]
        export_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // If stderr itself is gone there is nobody left to tell.
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::FAILURE
        }
    }
}

/// The longest `--statement-timeout-ms`: one day.
const STATEMENT_TIMEOUT_MS_MAX: u64 = 86_400_000;

/// The longest `--wait-ms`: one day.
const WAIT_MS_MAX: u64 = 86_400_000;

/// How often `--wait-ms` tries the workspace's lock again.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(20);

fn run(cli: Cli) -> Result<()> {
    let interrupted = stop_cleanly_on_ctrl_c();
    // Read before the workspace is locked: waiting on standard input must not hold it.
    let statement = match &cli.command {
        Command::Sql { sql: Some(sql), .. } => sql_text(sql)?,
        Command::Sql { file: Some(file), .. } => script_text(file)?,
        _ => String::new(),
    };
    // The commands that start a workspace create it on purpose; the others must find one.
    let create =
        cli.create || matches!(cli.command, Command::Demo | Command::App(AppCommand::Register { .. }));
    let ws = open_waiting(&cli.workspace, cli.statement_timeout_ms, create, cli.wait_ms)?;
    // Set once, here, so the OnceLock cannot be full already.
    let _ = interrupted.set(ws.abandoner());
    match cli.command {
        Command::Demo => demo::run(&ws),
        Command::App(AppCommand::Register { manifest, app }) => app_register(&ws, &manifest, &app),
        Command::App(AppCommand::List) => app_list(&ws),
        Command::App(AppCommand::Update { manifest, app }) => app_update(&ws, &manifest, &app),
        Command::App(AppCommand::Unregister { app, export_dir }) => {
            app_unregister(&ws, &app, export_dir.as_deref())
        }
        Command::Sql { app, db, file: Some(_), .. } => run_script(&ws, &app, &db, &statement),
        Command::Sql { app, db, params, .. } => run_sql(&ws, &app, &db, &statement, &params),
        Command::Stats { app, db } => stats(&ws, app.as_deref(), db.as_deref()),
        Command::Check => check::run(&ws),
        Command::Snapshot { app, db, label } => versions::snapshot(&ws, &app, &db, &label),
        Command::Snapshots { app, db, json } => versions::snapshots(&ws, &app, &db, json),
        Command::Restore { app, db, snapshot_id, allow_schema_change } => {
            versions::restore(&ws, &app, &db, &snapshot_id, allow_schema_change)
        }
        Command::Backup { app, db, keep, gzip } => versions::backup(&ws, &app, &db, keep, format(gzip)),
        Command::Export { app, db, file, gzip } => versions::export(&ws, &app, &db, &file, format(gzip)),
        Command::Import { app, db, file, expect_tables } => {
            versions::import(&ws, &app, &db, &file, expect_tables)
        }
        Command::Migrate { app, db, steps, dry_run } => versions::migrate(&ws, &app, &db, &steps, dry_run),
        Command::Retention { app, db, keep_last, max_age_secs } => {
            versions::retention(&ws, &app, &db, keep_last, max_age_secs)
        }
        Command::Gc => versions::gc(&ws),
        Command::Metrics => outln!("{}", ws.metrics_text()?.trim_end()),
        Command::Audit { app, since, limit, json } => audit::run(&ws, app, since.as_deref(), limit, json),
        Command::Maintain { budget_ms, full, keep_last } => {
            versions::maintain(&ws, budget_ms, full, keep_last)
        }
        Command::Checkpoint { app, db } => versions::checkpoint(&ws, &app, &db),
        Command::Compact { app, db } => versions::compact(&ws, &app, &db),
    }
}

/// The export format a `--gzip` flag asks for.
fn format(gzip: bool) -> ExportFormat {
    if gzip {
        ExportFormat::SqliteGzip
    } else {
        ExportFormat::Sqlite
    }
}

/// [`open_workspace`], trying again while another process holds the lock, for up to
/// `wait_ms`. Bounded: each try is followed by a sleep of [`WAIT_POLL`] until the deadline.
fn open_waiting(
    dir: &Path,
    statement_timeout_ms: Option<u64>,
    create: bool,
    wait_ms: Option<u64>,
) -> Result<Workspace> {
    let wait = std::time::Duration::from_millis(wait_ms.unwrap_or(0));
    let deadline = std::time::Instant::now() + wait;
    loop {
        match open_workspace(dir, statement_timeout_ms, create) {
            Err(e) if e.code() == ErrorCode::WorkspaceLocked && wait_ms.is_some() => {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(Error::new(
                        e.code(),
                        format!("{} (still locked after --wait-ms {})", e.message(), wait.as_millis()),
                    ));
                }
                std::thread::sleep(WAIT_POLL.min(deadline - now));
            }
            other => return other,
        }
    }
}

fn open_workspace(dir: &Path, statement_timeout_ms: Option<u64>, create: bool) -> Result<Workspace> {
    let mut broker = BrokerOptions::default();
    if let Some(ms) = statement_timeout_ms {
        broker.statement_timeout = std::time::Duration::from_millis(ms);
    }
    let options = WorkspaceOptions { broker, create_if_missing: create, ..WorkspaceOptions::default() };
    Workspace::open(dir, options).map_err(|e| {
        if e.code() == ErrorCode::NotFound && !create {
            Error::new(
                e.code(),
                format!("{}: `app register` and `demo` create one, or pass --create", e.message()),
            )
        } else {
            e
        }
    })
}

/// The statement of `sql`: the argument itself, or standard input for `-`, read up to one
/// byte past the engine's length limit (so a longer input is refused without reading it all).
fn sql_text(arg: &OsStr) -> Result<String> {
    if arg != "-" {
        return arg.to_str().map(str::to_owned).ok_or_else(|| not_utf8("argument"));
    }
    read_limited(std::io::stdin(), "on standard input")
}

/// The text of `-f FILE` (`-` is standard input), at most the SQL length limit.
fn script_text(file: &OsStr) -> Result<String> {
    if file == "-" {
        return read_limited(std::io::stdin(), "on standard input");
    }
    let path = Path::new(file);
    let opened = std::fs::File::open(path)
        .map_err(|e| Error::new(ErrorCode::Io, format!("opening the script {}: {e}", path.display())))?;
    read_limited(opened, &format!("in the script {}", path.display()))
}

fn not_utf8(from: &str) -> Error {
    Error::new(ErrorCode::InvalidArgument, format!("the SQL {from} is not valid UTF-8"))
}

/// Reads UTF-8 SQL of at most `SQL_LENGTH_BYTES_MAX` bytes; `from` says where it came from in
/// errors ("on standard input").
fn read_limited(source: impl std::io::Read, from: &str) -> Result<String> {
    let limit = u64::try_from(SQL_LENGTH_BYTES_MAX).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    source
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::new(ErrorCode::Io, format!("reading the SQL {from}: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(Error::new(
            ErrorCode::InvalidArgument,
            format!("the SQL {from} is longer than SQL_LENGTH_BYTES_MAX ({limit} bytes)"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| not_utf8(from))
}

/// `analytics:256MB,logs:64MB:ro`.
pub(crate) fn describe_dbs(info: &AppInfo) -> String {
    let dbs: Vec<String> = info
        .manifest
        .dbs
        .iter()
        .map(|d| {
            let ro = if d.read_only { ":ro" } else { "" };
            format!("{}:{}MB{ro}", d.name.as_str(), d.max_size_bytes / MIB)
        })
        .collect();
    dbs.join(",")
}

/// How long Ctrl-C waits before its second sweep of export temporaries (see
/// `Workspace::abandon_partials`: an export that had reserved its name but not yet created
/// the file creates it within this time).
const INTERRUPT_SWEEP_GAP: std::time::Duration = std::time::Duration::from_millis(50);

/// On Ctrl-C (or SIGTERM): no export or backup leaves a `.partial` file anywhere, and the
/// process exits 130. What an operation inside the workspace leaves, the next open's
/// recovery and GC remove; nothing acknowledged is lost (the workspace's files only change
/// through their commit points). Installed before the workspace opens (the returned cell
/// receives it), so a test that sees the workspace locked knows the handler is there.
/// Without a handler (it could not be installed) Ctrl-C kills the process as before.
fn stop_cleanly_on_ctrl_c() -> Arc<OnceLock<Abandoner>> {
    // The handler lives as long as the process; it must not keep the workspace open (its
    // close checkpoints at the end of every command).
    let cell: Arc<OnceLock<Abandoner>> = Arc::new(OnceLock::new());
    let ws = cell.clone();
    let installed = ctrlc::set_handler(move || {
        if let Some(ws) = ws.get() {
            ws.abandon_partials();
            std::thread::sleep(INTERRUPT_SWEEP_GAP);
            ws.abandon_partials();
        }
        let _ = writeln!(std::io::stderr(), "error[CANCELLED]: interrupted; no partial file is left behind");
        std::process::exit(130);
    });
    if let Err(e) = installed {
        let _ = writeln!(std::io::stderr(), "warning: Ctrl-C will not clean up: {e}");
    }
    cell
}

fn read_manifest(manifest: &Path) -> Result<String> {
    let bytes = std::fs::read(manifest)
        .map_err(|e| Error::new(ErrorCode::Io, format!("reading manifest {}: {e}", manifest.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::new(ErrorCode::InvalidManifest, format!("manifest {} is not UTF-8: {e}", manifest.display()))
    })
}

fn app_register(ws: &Workspace, manifest: &Path, app: &str) -> Result<()> {
    let info = ws.register_app(app, &read_manifest(manifest)?)?;
    outln!("{} {}", info.app_id.as_str(), info.app_uuid)
}

fn app_update(ws: &Workspace, manifest: &Path, app: &str) -> Result<()> {
    let info = ws.update_app(app, &read_manifest(manifest)?)?;
    outln!("{} {} {} {}", info.app_id.as_str(), info.app_uuid, info.manifest.tier.name(), describe_dbs(&info))
}

fn app_unregister(ws: &Workspace, app: &str, export_dir: Option<&Path>) -> Result<()> {
    let info = ws.app_info(app)?;
    if let Some(dir) = export_dir {
        let handle = ws.open_app(app)?;
        for spec in &info.manifest.dbs {
            let dest = dir.join(format!("{}.sqlite", spec.name.as_str()));
            let bytes =
                versions::with_progress("export", || handle.open(spec.name.as_str())?.export_to_path(&dest))
                    .map_err(|e| {
                        e.context(format!(
                            "exporting {} before unregistering (nothing was unregistered)",
                            spec.name.as_str()
                        ))
                    })?;
            outln!("exported {} ({bytes} bytes) to {}", spec.name.as_str(), dest.display())?;
        }
    }
    ws.unregister_app(app)?;
    outln!("unregistered {app}; its files leave at the next `sila-sqlite gc`")
}

fn app_list(ws: &Workspace) -> Result<()> {
    for info in ws.apps() {
        outln!(
            "{} {} {} {}",
            info.app_id.as_str(),
            info.app_uuid,
            info.manifest.tier.name(),
            describe_dbs(&info)
        )?;
    }
    Ok(())
}

fn parse_param(text: &str) -> Result<Value> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Error::new(
            ErrorCode::InvalidArgument,
            format!("--param {text:?} is not a JSON value ({e}); strings need JSON quotes, e.g. --param '\"abc\"'"),
        )
    })?;
    Value::from_json(&json).map_err(|e| e.context(format!("--param {text}")))
}

fn run_sql(ws: &Workspace, app: &str, db: &str, sql: &str, params: &[String]) -> Result<()> {
    let params = params.iter().map(|p| parse_param(p)).collect::<Result<Vec<Value>>>()?;
    let db = ws.open_app(app)?.open(db)?;
    // SQLite decides: a query refuses a statement that writes (before anything runs), and the
    // writer runs it instead.
    let done = match db.query(sql, &params) {
        Ok(rows) => ExecResult { rows, ..Default::default() },
        Err(e) if e.code() == ErrorCode::WriteInQuery => db.exec(sql, &params)?,
        Err(e) => return Err(e),
    };
    let json_rows: Vec<serde_json::Value> = done
        .rows
        .rows
        .iter()
        .map(|row| serde_json::Value::Array(row.iter().map(Value::to_json).collect()))
        .collect();
    let columns = serde_json::json!(done.rows.columns);
    let rows = serde_json::Value::Array(json_rows);
    // Built by hand so the keys keep this order whatever serde_json features are enabled.
    outln!(
        "{{\"columns\":{columns},\"rows\":{rows},\"changes\":{},\"last_insert_rowid\":{}}}",
        done.changes,
        done.last_insert_rowid
    )
}

fn run_script(ws: &Workspace, app: &str, db: &str, script: &str) -> Result<()> {
    let done = ws.open_app(app)?.open(db)?.execute_script(script)?;
    outln!(
        "{{\"statements\":{},\"changes\":{},\"last_insert_rowid\":{}}}",
        done.statements,
        done.changes,
        done.last_insert_rowid
    )
}

fn stats(ws: &Workspace, app: Option<&str>, db: Option<&str>) -> Result<()> {
    let db = db.map(|d| d.strip_prefix("sila://db/").unwrap_or(d));
    let apps = match app {
        Some(a) => vec![ws.app_info(a)?],
        None => ws.apps(),
    };
    if let (Some(a), Some(d)) = (app, db) {
        // Refuse a database the app does not have rather than printing nothing.
        ws.db_key(a, d)?;
    }
    let mut unavailable = Vec::new();
    let mut ledgers = Vec::new();
    for info in &apps {
        let id = info.app_id.as_str();
        let handle = ws.open_app(id)?;
        for spec in &info.manifest.dbs {
            let name = spec.name.as_str();
            if db.is_some_and(|d| d != name) {
                continue;
            }
            let touched = handle.open(name).and_then(|d| d.query("SELECT 1", &[]));
            if let Err(e) = touched {
                if db.is_some() {
                    return Err(e);
                }
                unavailable.push(serde_json::json!({"app": id, "db": name, "error": e.to_string()}));
            }
        }
        let ledger = ws.ledger(id)?;
        ledgers.push(serde_json::json!({
            "app": id,
            "app_uuid": info.app_uuid.to_string(),
            "tier": info.manifest.tier.name(),
            "ledger": ledger.to_json(),
        }));
    }
    let databases: Vec<serde_json::Value> = ws.stats(app, db)?.iter().map(|s| s.to_json()).collect();
    let doc = serde_json::json!({
        "workspace": ws.root().display().to_string(),
        "databases": databases,
        "apps": ledgers,
        "unavailable": unavailable,
    });
    let text = serde_json::to_string_pretty(&doc)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("encoding stats as JSON: {e}")))?;
    outln!("{text}")
}
