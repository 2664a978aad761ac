//! `sila-sim`: runs seeded whole-engine simulations and reports violations.
//!
//! ```text
//! sila-sim --seeds 2000 --profile crash-heavy     # fresh seeds 0..2000 (or from --start)
//! sila-sim --seed 1234 --profile io-errors         # replay one seed with its full trace
//! sila-sim --corpus sim/corpus.txt                 # the checked-in regression seeds
//! sila-sim --seeds 100000 --profile all --jobs 2    # a long local run on two cores
//! ```
//!
//! A failing seed prints a one-line command that replays it, the trace of operations up to
//! the violation, and a shrunk operation count (the shortest prefix that still fails).

use sila_sqlite_sim::world::{run_seed, FaultTally, Outcome, Profile};
use std::process::ExitCode;
use std::time::Instant;

/// Operations per seed by default.
const OPS_DEFAULT: usize = 60;
/// Most seeds one run accepts.
const SEEDS_MAX: u64 = 10_000_000;
/// Seeds of a profile from which a fault of it that never fired fails the run (fewer, as when
/// one seed is replayed, only report).
const FAULT_CHECK_SEEDS_MIN: u64 = 100;

struct Args {
    seeds: Option<u64>,
    start: u64,
    seed: Option<u64>,
    profiles: Vec<Profile>,
    ops: usize,
    corpus: Option<String>,
    verbose: bool,
    jobs: usize,
}

fn usage() -> String {
    "usage: sila-sim [--seeds N [--start S]] [--seed S] [--profile NAME|all] [--ops N] [--corpus FILE] [--jobs N] [--verbose]\n\
     corpus lines: `<profile> <seed>  # why it is here`\n\
     profiles: faultless, crash-heavy, io-errors, enospc, torn, eio, exports, sqlite-sync, quota, lying (all: every one)"
        .to_string()
}

fn parse() -> Result<Args, String> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut a = Args {
        seeds: None,
        start: 0,
        seed: None,
        profiles: Vec::new(),
        ops: OPS_DEFAULT,
        corpus: None,
        verbose: false,
        jobs: cores,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<u64, String> {
        v.ok_or_else(|| format!("{what} needs a value"))?.parse::<u64>().map_err(|e| format!("{what}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seeds" => a.seeds = Some(num(it.next(), "--seeds")?.min(SEEDS_MAX)),
            "--start" => a.start = num(it.next(), "--start")?,
            "--seed" => a.seed = Some(num(it.next(), "--seed")?),
            "--ops" => a.ops = usize::try_from(num(it.next(), "--ops")?).map_err(|e| e.to_string())?,
            "--profile" => {
                let name = it.next().ok_or("--profile needs a value")?;
                if name == "all" {
                    a.profiles.extend(Profile::ALL);
                } else {
                    a.profiles.push(
                        Profile::from_name(&name)
                            .ok_or_else(|| format!("unknown profile {name:?}\n{}", usage()))?,
                    );
                }
            }
            "--corpus" => a.corpus = Some(it.next().ok_or("--corpus needs a file")?),
            "--verbose" => a.verbose = true,
            "--jobs" => {
                a.jobs = usize::try_from(num(it.next(), "--jobs")?).map_err(|e| e.to_string())?.clamp(1, 64)
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    if a.profiles.is_empty() {
        a.profiles.push(Profile::CrashHeavy);
    }
    Ok(a)
}

fn report_failure(o: &Outcome, ops: usize) {
    let Some(v) = &o.violation else { return };
    println!("FAIL seed {} profile {}: {}", o.seed, o.profile.name(), v.what);
    println!("  replay: cargo run --release -p sila-sqlite-sim --bin sila-sim -- --seed {} --profile {} --ops {ops}", o.seed, o.profile.name());
    // Shrink: the shortest operation count that still fails (the workload is a prefix of
    // the same seeded stream, so fewer ops replays the same beginning).
    let mut lo = 1usize;
    let mut hi = ops.min(v.op_index + 1).max(1);
    let mut rounds = 0;
    while lo < hi && rounds < 16 {
        let mid = (lo + hi) / 2;
        if run_seed(o.seed, o.profile, mid).violation.is_some() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
        rounds += 1;
    }
    println!("  shrunk: fails with --ops {hi}");
    println!("  trace:");
    for line in &o.trace {
        println!("    {line}");
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut work: Vec<(Profile, u64)> = Vec::new();
    let mut fresh: Vec<u64> = Vec::new();
    if let Some(s) = args.seed {
        fresh.push(s);
    }
    if let Some(n) = args.seeds {
        fresh.extend(args.start..args.start.saturating_add(n));
    }
    for profile in &args.profiles {
        work.extend(fresh.iter().map(|s| (*profile, *s)));
    }
    if let Some(path) = &args.corpus {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for line in text.lines() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    let mut parts = line.split_whitespace();
                    match (
                        parts.next().and_then(Profile::from_name),
                        parts.next().and_then(|s| s.parse().ok()),
                    ) {
                        (Some(p), Some(seed)) => work.push((p, seed)),
                        _ if line.is_empty() => {}
                        _ => {
                            eprintln!("error[INVALID_ARGUMENT]: {path}: bad corpus line {line:?}");
                            return ExitCode::from(2);
                        }
                    }
                }
            }
            Err(e) => {
                eprintln!("error[IO]: reading {path}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if work.is_empty() {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let jobs = args.jobs.min(work.len()).max(1);
    let chunks: Vec<Vec<(Profile, u64)>> =
        (0..jobs).map(|j| work.iter().skip(j).step_by(jobs).copied().collect()).collect();
    let ops = args.ops;
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || {
                chunk.into_iter().map(|(p, s)| run_seed(s, p, ops)).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for h in handles {
        match h.join() {
            Ok(o) => outcomes.extend(o),
            Err(_) => {
                eprintln!("error[PANIC]: a simulation thread panicked");
                return ExitCode::from(1);
            }
        }
    }
    outcomes.sort_by_key(|o| (o.profile.name(), o.seed));
    let (mut run, mut failed) = (0u64, 0u64);
    for o in &outcomes {
        run += 1;
        if o.violation.is_some() {
            failed += 1;
            report_failure(o, args.ops);
        } else if args.verbose || args.seed == Some(o.seed) {
            println!("seed {} profile {} ok, trace hash {:016x}", o.seed, o.profile.name(), o.trace_hash);
            if args.verbose {
                for line in &o.trace {
                    println!("    {line}");
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { run as f64 / secs } else { 0.0 };
    // How often each fault fired, per profile; a profile whose faults never fired over enough
    // seeds tested nothing, and fails the run.
    let mut silent = 0u64;
    for profile in Profile::ALL {
        let mut tally = FaultTally::default();
        for o in outcomes.iter().filter(|o| o.profile == profile) {
            tally.add(o);
        }
        if tally.seeds == 0 {
            continue;
        }
        println!("  {:<12} {tally}", profile.name());
        let missing = tally.missing(profile);
        if tally.seeds >= FAULT_CHECK_SEEDS_MIN && !missing.is_empty() {
            silent += 1;
            println!(
                "FAIL profile {}: never fired over {} seeds: {}",
                profile.name(),
                tally.seeds,
                missing.join(", ")
            );
        }
    }
    println!("sila-sim: {run} seeds run, {failed} failed, {rate:.1} seeds/s on {jobs} threads ({secs:.1} s)");
    if failed > 0 || silent > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
