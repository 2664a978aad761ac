//! `sila-bench`: sila-sqlite against raw rusqlite, on the same data, in the same run.
//!
//! ```text
//! cargo run --release -p sila-sqlite-benches --bin sila-bench -- [--quick] [--only NAME]
//! ```
//!
//! Benchmarks (see each module): `lookup` (indexed lookup on 1,000,000 rows, 1 and 2
//! threads), `open` (workspace + app + first query, cold), `insert` (single-row inserts from
//! 1 and 16 clients at FULL and NORMAL: group commit against raw autocommit), `analyze`
//! (whether ANALYZE/STAT4 makes cached statements re-prepare), `versions` (snapshot,
//! restore and import of a 256 MB database with concurrent writers, issue 5), `scale`
//! (10,000 registered databases, 1,000 active). The output is a markdown
//! table with both figures, the ratio and the issue's target, then notes.
//!
//! Timing is `std::time::Instant` around each operation; percentiles come from
//! hdrhistogram. Every loop is bounded by a count (inserts also by a deadline).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

mod analyze;
mod insert;
mod lookup;
mod open;
mod report;
mod scale;
mod setup;
mod versions;

use std::time::Instant;

use setup::{Args, Config, Scratch};

/// The error type of the benchmarks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let raw_args: Vec<String> = std::env::args().skip(1).collect();
    let args = Args::parse(raw_args.clone())?;
    if args.help {
        println!("{}", setup::USAGE);
        return Ok(());
    }
    let cfg = Config::new(args.quick);
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = Scratch::new(&parent, args.keep)?;
    let started = Instant::now();

    let mut command = String::from("cargo run --release -p sila-sqlite-benches --bin sila-bench --");
    for a in &raw_args {
        command.push(' ');
        command.push_str(a);
    }
    println!("# sila-bench\n");
    println!("command: `{command}`\n");
    println!(
        "- host: {} cores (available_parallelism), load average before: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        setup::load_average()
    );
    println!(
        "- SQLite {} (bundled), build: {}, mode: {}",
        rusqlite::version(),
        if cfg!(debug_assertions) { "DEBUG (numbers meaningless; use --release)" } else { "release" },
        if args.quick { "quick" } else { "full" }
    );
    println!("- scratch directory: {}\n", scratch.root.display());

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut finding = None;
    if args.wants("lookup") || args.wants("open") {
        let data = lookup::build(&scratch, &mut notes)?;
        if args.wants("lookup") {
            eprintln!("[{:>6.1}s] lookup…", started.elapsed().as_secs_f64());
            lookup::run(&scratch, &data, &cfg, &mut rows, &mut notes)?;
        }
        if args.wants("open") {
            eprintln!("[{:>6.1}s] open…", started.elapsed().as_secs_f64());
            open::run(&scratch, &data, &cfg, &mut rows, &mut notes)?;
        }
    }
    if args.wants("insert") {
        eprintln!("[{:>6.1}s] insert…", started.elapsed().as_secs_f64());
        insert::run(&scratch, &cfg, &mut rows, &mut notes)?;
    }
    if args.wants("analyze") {
        eprintln!("[{:>6.1}s] analyze…", started.elapsed().as_secs_f64());
        finding = Some(analyze::run(&scratch, &cfg, &mut notes)?);
    }
    if args.wants("versions") {
        eprintln!("[{:>6.1}s] versions…", started.elapsed().as_secs_f64());
        versions::run(&scratch, &cfg, &mut rows, &mut notes)?;
    }
    if args.wants("scale") {
        eprintln!("[{:>6.1}s] scale…", started.elapsed().as_secs_f64());
        scale::run(&scratch, &cfg, &mut rows, &mut notes)?;
    }

    if !rows.is_empty() {
        println!("{}", report::render(&rows));
    }
    if let Some(f) = finding {
        println!("finding: {f}\n");
    }
    for n in &notes {
        println!("- {n}");
    }
    println!(
        "\n- total {:.1} s; load average after: {}",
        started.elapsed().as_secs_f64(),
        setup::load_average()
    );
    Ok(())
}
