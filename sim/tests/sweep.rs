//! A fixed sweep of seeds over every profile, as one test: the simulation in the form a
//! mutation tool needs (cargo-mutants judges each change to the engine by whether a test
//! fails; `docs/mutants.md`). The same seeds every run.
//!
//! `SILA_SWEEP_SEEDS` sets the seeds per profile: by default [`SEEDS_DEFAULT`], few enough
//! for a debug `cargo test` (CI's simulation step runs thousands in release); at most
//! [`SEEDS_MAX`].
#![allow(clippy::panic)]

use sila_sqlite_sim::world::{run_seed, Profile};

/// Seeds per profile when `SILA_SWEEP_SEEDS` is not set.
const SEEDS_DEFAULT: u64 = 2;
/// The most seeds per profile `SILA_SWEEP_SEEDS` may ask for.
const SEEDS_MAX: u64 = 100_000;
/// Operations per seed (as `sila-sim`'s default).
const OPS: usize = 60;

fn seeds_per_profile() -> u64 {
    match std::env::var("SILA_SWEEP_SEEDS") {
        Err(_) => SEEDS_DEFAULT,
        Ok(text) => match text.parse::<u64>() {
            Ok(n) if (1..=SEEDS_MAX).contains(&n) => n,
            _ => panic!("SILA_SWEEP_SEEDS={text:?}: give a whole number from 1 to {SEEDS_MAX}"),
        },
    }
}

#[test]
fn every_profile_passes_a_fixed_set_of_seeds() {
    let n = seeds_per_profile();
    for profile in Profile::ALL {
        for seed in 0..n {
            let outcome = run_seed(seed, profile, OPS);
            if let Some(v) = outcome.violation {
                panic!("seed {seed} profile {}: {}", profile.name(), v.what);
            }
        }
    }
}
