//! The fuzz targets on stable, in every `cargo test`: each target's checked-in corpus
//! (`fuzz/corpus/<target>/`), then a bounded number of deterministic mutations of it (bit
//! flips, byte insertions and deletions, splices, truncations). The coverage-guided runs are
//! `cargo +nightly fuzz run <target>` (see `fuzz/README.md`); CI runs them for a bounded time
//! where a nightly toolchain is available.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

#[path = "../../fuzz/targets.rs"]
mod targets;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// Mutated inputs tried per target (the import target, which writes and checks files, a
/// tenth of it).
const MUTATIONS: usize = 3_000;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn mutate(rng: &mut ChaCha8Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..5usize) {
        match rng.random_range(0..5u32) {
            0 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8u32);
            }
            1 => {
                let i = rng.random_range(0..=data.len());
                data.insert(i, rng.random::<u8>());
            }
            2 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data.remove(i);
            }
            3 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let cut = rng.random_range(0..=data.len());
                let from = rng.random_range(0..=other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ => {
                let keep = rng.random_range(0..=data.len());
                data.truncate(keep);
            }
        }
    }
    data
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_mutations_of_it() {
    for (name, target) in targets::TARGETS {
        let seeds = corpus(name);
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} is empty");
        for seed in &seeds {
            target(seed);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed ^ name.len() as u64);
        let n = if name == "import" { MUTATIONS / 10 } else { MUTATIONS };
        for _ in 0..n {
            target(&mutate(&mut rng, &seeds));
        }
    }
}
