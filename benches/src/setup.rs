//! What every benchmark shares: command-line arguments, run sizes, the scratch directory,
//! the key sequence, and how raw rusqlite connections are configured.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::BoxError;

/// The benchmarks, in the order they run.
pub const BENCHES: [&str; 6] = ["lookup", "open", "insert", "analyze", "versions", "scale"];

/// Parsed command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    /// Smaller counts (CI / smoke runs).
    pub quick: bool,
    /// Run only these benchmarks (empty: all).
    pub only: Vec<String>,
    /// Where to create the scratch directory (default: the system temp dir).
    pub dir: Option<PathBuf>,
    /// Keep the scratch directory after the run.
    pub keep: bool,
    /// Print usage and exit.
    pub help: bool,
}

/// Usage text.
pub const USAGE: &str = "\
usage: sila-bench [--quick] [--only NAME[,NAME…]]… [--dir DIR] [--keep]
  benchmarks: lookup, open, insert, analyze, versions, scale (default: all)
  --quick   smaller counts (well under 2 minutes in release mode)
  --dir     where the scratch directory goes (default: the system temp dir; use a real
            disk, not tmpfs, or fsync costs nothing)
  --keep    keep the scratch directory";

impl Args {
    /// Parses `args` (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, BoxError> {
        let mut out = Args::default();
        let mut it = args.into_iter();
        // Bounded: every iteration consumes at least one argument.
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => out.quick = true,
                "--keep" => out.keep = true,
                "-h" | "--help" => out.help = true,
                "--only" => {
                    let v = it.next().ok_or("--only needs a benchmark name")?;
                    for name in v.split(',').filter(|n| !n.is_empty()) {
                        if !BENCHES.contains(&name) {
                            return Err(
                                format!("unknown benchmark {name:?}; known: {}", BENCHES.join(", ")).into()
                            );
                        }
                        out.only.push(name.to_string());
                    }
                }
                "--dir" => out.dir = Some(PathBuf::from(it.next().ok_or("--dir needs a directory")?)),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
            }
        }
        Ok(out)
    }

    /// Whether benchmark `name` runs.
    pub fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|n| n == name)
    }
}

/// How much work each benchmark does.
#[derive(Debug, Clone)]
pub struct Config {
    /// Lookups per side before measuring (cache warm-up).
    pub warmup: u64,
    /// Alternating sila/raw rounds of the 1-thread lookup.
    pub lookup_rounds: u64,
    /// Lookups per side per round.
    pub lookups_per_round: u64,
    /// Alternating rounds of the 2-thread lookup.
    pub pair_rounds: u64,
    /// Lookups per thread per round.
    pub pair_lookups_per_thread: u64,
    /// Cold opens per side.
    pub opens: u64,
    /// Rows inserted per side per insert case.
    pub insert_rows: u64,
    /// An insert case stops here even if its rows are not all written.
    pub insert_deadline: Duration,
    /// Rows of the STAT4 table.
    pub analyze_rows: i64,
    /// Lookups per STAT4 phase.
    pub analyze_lookups: u64,
    /// Size of the versions benchmark's database, MB (about).
    pub versions_mb: u64,
    /// Alternating snapshot rounds per side.
    pub versions_rounds: u32,
    /// Databases the scale benchmark registers (3 per app), if time allows.
    pub scale_dbs: u64,
    /// Databases the scale benchmark makes active.
    pub scale_active: u64,
    /// Time registration may take in the scale benchmark.
    pub scale_register_budget: Duration,
}

impl Config {
    /// The sizes of a quick or a full run.
    pub fn new(quick: bool) -> Config {
        if quick {
            Config {
                warmup: 20_000,
                lookup_rounds: 4,
                lookups_per_round: 25_000,
                pair_rounds: 2,
                pair_lookups_per_thread: 50_000,
                opens: 10,
                insert_rows: 2_000,
                insert_deadline: Duration::from_secs(10),
                analyze_rows: 100_000,
                analyze_lookups: 10_000,
                versions_mb: 32,
                versions_rounds: 3,
                scale_dbs: 1_000,
                scale_active: 300,
                scale_register_budget: Duration::from_secs(30),
            }
        } else {
            Config {
                warmup: 50_000,
                lookup_rounds: 10,
                lookups_per_round: 50_000,
                pair_rounds: 6,
                pair_lookups_per_thread: 100_000,
                opens: 40,
                insert_rows: 20_000,
                insert_deadline: Duration::from_secs(40),
                analyze_rows: 200_000,
                analyze_lookups: 50_000,
                versions_mb: 256,
                versions_rounds: 3,
                scale_dbs: 10_000,
                scale_active: 1_000,
                scale_register_budget: Duration::from_secs(180),
            }
        }
    }
}

/// The scratch directory: `ws/` holds the sila workspace, `raw/` the raw rusqlite files.
/// Removed on drop unless kept.
pub struct Scratch {
    /// The directory itself.
    pub root: PathBuf,
    keep: bool,
}

impl Scratch {
    /// Creates a fresh directory under `parent`.
    pub fn new(parent: &Path, keep: bool) -> Result<Scratch, BoxError> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let root = parent.join(format!("sila-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(root.join("raw"))?;
        Ok(Scratch { root, keep })
    }

    /// The workspace directory.
    pub fn ws(&self) -> PathBuf {
        self.root.join("ws")
    }

    /// A file of the raw side.
    pub fn raw(&self, name: &str) -> PathBuf {
        self.root.join("raw").join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// A deterministic key sequence (splitmix64) over `1..=n`; the same seed gives both sides
/// the same keys.
pub struct Keys {
    state: u64,
    n: u64,
}

impl Keys {
    /// Keys in `1..=n` from `seed`.
    pub fn new(seed: u64, n: i64) -> Keys {
        Keys { state: seed, n: u64::try_from(n).unwrap_or(1).max(1) }
    }

    /// The next key.
    pub fn next_key(&mut self) -> i64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        i64::try_from(1 + z % self.n).unwrap_or(1)
    }
}

/// `synchronous` of a raw connection, matching a sila tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `synchronous=NORMAL` (tier standard).
    Normal,
    /// `synchronous=FULL` (tier premium).
    Full,
}

impl SyncMode {
    /// The pragma value.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Normal => "NORMAL",
            SyncMode::Full => "FULL",
        }
    }
}

/// Page cache of tier standard, KiB (sila's connections of that tier get the same).
pub const STANDARD_CACHE_KIB: i64 = 8 * 1024;
/// Page cache of tier premium, KiB.
pub const PREMIUM_CACHE_KIB: i64 = 32 * 1024;

/// A raw rusqlite connection configured like sila's for the same tier, so the comparison
/// measures the engine's overhead and not different settings: WAL, `synchronous`,
/// `busy_timeout=5000`, the tier's `cache_size`, `temp_store=MEMORY`, `mmap_size=0`.
pub fn open_raw(path: &Path, sync: SyncMode, cache_kib: i64) -> Result<Connection, BoxError> {
    let conn = Connection::open(path)?;
    configure_raw(&conn, sync, cache_kib)?;
    Ok(conn)
}

/// SQLite's unix VFS with one exclusive lock per file for the process and the wal-index in
/// heap memory: the closest raw SQLite gets to the locking of sila's own VFS
/// (`sila_sqlite::sqlite::vfs`: in-process lock table, wal-index in heap memory).
pub const EXCL_VFS: &str = "unix-excl";

/// [`open_raw`] on SQLite's `unix-excl` VFS ([`EXCL_VFS`]), locking as sila's connections do
/// (in process, no `fcntl` per read transaction): raw rusqlite with the engine's locking
/// choice, to separate that choice from the engine's own overhead.
pub fn open_raw_excl(path: &Path, sync: SyncMode, cache_kib: i64) -> Result<Connection, BoxError> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags_and_vfs(path, flags, EXCL_VFS)?;
    configure_raw(&conn, sync, cache_kib)?;
    Ok(conn)
}

/// The settings of [`open_raw`] on an open connection.
pub fn configure_raw(conn: &Connection, sync: SyncMode, cache_kib: i64) -> Result<(), BoxError> {
    conn.busy_timeout(Duration::from_millis(5000))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("journal_mode is {mode}, not wal").into());
    }
    conn.pragma_update(None, "synchronous", sync.name())?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    let _: i64 = conn.pragma_update_and_check(None, "mmap_size", 0, |r| r.get(0))?;
    Ok(())
}

/// The options of the measured workspaces: the defaults, with the per-app per-minute budgets
/// lifted (by default one app may run 60,000 statements a minute, which would refuse a
/// benchmark after its first 60,000 statements). Lifted budgets still take their locks on
/// every statement; only the refusals go.
pub fn measured_options() -> sila_sqlite::WorkspaceOptions {
    let mut options = sila_sqlite::WorkspaceOptions::default();
    options.broker.statements_per_minute = u64::MAX;
    options.broker.rows_read_per_minute = u64::MAX;
    options.broker.rows_written_per_minute = u64::MAX;
    options
}

/// `/proc/loadavg`'s three load averages, or a note that it is unreadable.
pub fn load_average() -> String {
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(s) => s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        Err(_) => "unknown (no /proc/loadavg)".to_string(),
    }
}

/// Runs `f` on `threads` threads that start together; returns each thread's result and the
/// wall time from the first start to the last finish.
pub fn run_threads<S: Send, T: Send>(
    states: Vec<S>,
    f: impl Fn(usize, S) -> Result<T, BoxError> + std::marker::Sync,
) -> Result<(Vec<T>, Duration), BoxError> {
    type Timed<T> = std::thread::Result<Result<(Instant, Instant, T), String>>;
    let barrier = std::sync::Barrier::new(states.len());
    let joined: Vec<Timed<T>> = std::thread::scope(|s| {
        let handles: Vec<_> = states
            .into_iter()
            .enumerate()
            .map(|(i, state)| {
                let (f, barrier) = (&f, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let r = f(i, state).map_err(|e| e.to_string());
                    r.map(|t| (start, Instant::now(), t))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut out = Vec::new();
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for r in joined {
        let (start, end, t) = r.map_err(|_| "a benchmark thread panicked")??;
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(end, |l| l.max(end)));
        out.push(t);
    }
    let wall = match (first, last) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    };
    Ok((out, wall))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse() {
        let a =
            Args::parse(["--quick", "--only", "lookup,open", "--only", "insert"].map(String::from)).unwrap();
        assert!(a.quick);
        assert!(a.wants("open") && a.wants("insert") && !a.wants("analyze"));
        assert!(Args::parse(["--only", "nope"].map(String::from)).is_err());
        assert!(Args::parse(["--bogus"].map(String::from)).is_err());
        assert!(Args::default().wants("analyze"));
    }

    #[test]
    fn keys_are_deterministic_and_in_range() {
        let a: Vec<i64> = {
            let mut k = Keys::new(7, 10);
            (0..1000).map(|_| k.next_key()).collect()
        };
        let mut k = Keys::new(7, 10);
        assert!(a.iter().all(|&x| x == k.next_key()));
        assert!(a.iter().all(|&x| (1..=10).contains(&x)));
        assert!((1..=10).all(|x| a.contains(&x)), "every key appears");
    }
}
