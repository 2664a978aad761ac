//! Fault profiles: which faults a seed may draw (swarm testing), and how a seed's faults
//! are described in its trace.

use super::*;

/// Fault profiles: which faults a seed may draw ("swarm": each seed turns some off).
///
/// | profile | faults a seed may draw |
/// |---|---|
/// | `faultless` | short reads and writes, slow IO (legal behaviour, not faults): every operation must succeed |
/// | (every other profile) | also bit rot of the checksummed files, in half of its seeds |
/// | `crash-heavy` | power cuts (also during recovery); at a crash pending writes applied, dropped, trashed or torn, any subset or a prefix; early write-back; dropped truncates; short and slow IO |
/// | `io-errors` | one-shot fsync failures (fail-stop), power cuts with crash fates, short and slow IO |
/// | `enospc` | a full disk, early write-back, power cuts with crash fates |
/// | `torn` | power cuts with every crash fate on at high rates, prefix-only crashes, write-back, dropped truncates |
/// | `eio` | one-shot and random fsync/`sync_dir` failures with crash fates, transient and persistent read/write EIO (bad inodes, latent sector errors), bit rot of checksummed files, short and slow IO, power cuts |
/// | `exports` | the `io-errors` faults, with exports and backups (plain and gzip) in the workload |
/// | `quota` | a 1 MB database written with 6 KiB values, so the app's quota (SQLite's `max_page_count`, and the ledger for snapshots) fills within a seed; power cuts with crash fates |
/// | `lying` | a disk that breaks its contract: file syncs, directory syncs or both return `Ok` and make nothing durable, and garbage may spill over synced bytes sharing a sector with an unsynced write; power cuts with crash fates. Durability cannot be asked of the engine here; the checker asks that every error is typed, nothing panics, recovery either refuses with a typed error or yields a database that passes `integrity_check`, and the store's own invariants (ledger, GC) hold |
/// | `versions` | the `io-errors` faults, with version operations drawn often: snapshots, restores, imports, migrations (and plans that edit an applied step), drops of one snapshot, retention by count and by age, exports to a host path, integrity checks, compactions, upkeep |
/// | `sqlite-sync` | one-shot fsync failures aimed at SQLite's own syncs (the main file, which WAL mode syncs only in checkpoints, or the WAL), with a checkpoint after every commit, and power cuts with crash fates |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// No faults, no crashes: every operation must succeed.
    Faultless,
    /// Power cuts at random IO steps, including during recovery.
    CrashHeavy,
    /// Failed fsyncs (fail-stop) and power cuts.
    IoErrors,
    /// A full disk and power cuts.
    Enospc,
    /// Power cuts where pending writes tear, turn to garbage and reorder.
    Torn,
    /// Read and write errors, bad sectors and bit rot.
    Eio,
    /// Failed fsyncs and power cuts, with exports and backups in the workload.
    Exports,
    /// Failed fsyncs of SQLite's main files (in post-commit checkpoints) or WALs, power cuts.
    SqliteSync,
    /// The app's quota fills (a 1 MB database, large values), power cuts.
    Quota,
    /// A lying disk: syncs that make nothing durable, garbage spills; consistency and typed
    /// errors are checked, not durability.
    Lying,
    /// Failed fsyncs and power cuts, with version operations drawn often.
    Versions,
}

impl Profile {
    /// Every profile: what `--profile all` (and CI) runs.
    pub const ALL: [Profile; 11] = [
        Profile::Faultless,
        Profile::CrashHeavy,
        Profile::IoErrors,
        Profile::Enospc,
        Profile::Torn,
        Profile::Eio,
        Profile::Exports,
        Profile::SqliteSync,
        Profile::Quota,
        Profile::Lying,
        Profile::Versions,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Faultless => "faultless",
            Profile::CrashHeavy => "crash-heavy",
            Profile::IoErrors => "io-errors",
            Profile::Enospc => "enospc",
            Profile::Torn => "torn",
            Profile::Eio => "eio",
            Profile::Exports => "exports",
            Profile::SqliteSync => "sqlite-sync",
            Profile::Quota => "quota",
            Profile::Lying => "lying",
            Profile::Versions => "versions",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Mixed into a seed before anything is drawn from it, so each profile runs its own
    /// operation sequence for the same seed number (600 seeds on 11 profiles are 6,600
    /// workloads, not 600 workloads under 10 fault sets). `faultless` mixes in nothing. The
    /// mix is an XOR, so a world seed `w` of profile `p` is the seed number `w ^ p.salt()`:
    /// that is how the regression corpus kept its worlds when the mix came in.
    pub fn salt(self) -> u64 {
        if self == Profile::Faultless {
            return 0;
        }
        // FNV-1a of the name: stable across releases and independent of the enum's order.
        self.name()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    }

    /// Whether the seed cuts the power at random IO steps.
    pub(super) fn cuts_power(self) -> bool {
        self != Profile::Faultless
    }

    /// The faults one seed runs with: each family is on or off by a coin of the seed's own
    /// stream (swarm testing), with a seeded rate. Drawn from a stream separate from the
    /// workload's, so the operations of a seed do not depend on its faults.
    pub fn swarm(self, seed: u64) -> Faults {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SWARM_SALT);
        let mut on = |lo: u16, hi: u16| -> u16 {
            if rng.random_bool(0.5) {
                rng.random_range(lo..=hi)
            } else {
                0
            }
        };
        let mut f = Faults { short_io_bp: on(50, 2_000), slow_io_bp: on(10, 300), ..Faults::default() };
        let crash_fates = |f: &mut Faults, on: &mut dyn FnMut(u16, u16) -> u16, hard: bool| {
            let (lo, hi) = if hard { (2_000, 10_000) } else { (1, 10_000) };
            f.crash_keep_bp = on(lo, hi);
            f.crash_trash_bp = on(if hard { 500 } else { 50 }, 3_000);
            f.torn_bp = on(lo, hi);
            f.drop_truncate_bp = on(lo, hi);
            f.writeback_bp = on(10, 2_000);
        };
        match self {
            Profile::Faultless => {}
            Profile::CrashHeavy | Profile::Enospc | Profile::Quota => crash_fates(&mut f, &mut on, false),
            Profile::IoErrors | Profile::Exports | Profile::Versions => crash_fates(&mut f, &mut on, false),
            Profile::SqliteSync => {
                crash_fates(&mut f, &mut on, false);
                f.fail_sync_suffix = Some(if on(0, 1) == 1 { ".sqlite" } else { "-wal" });
            }
            Profile::Torn => {
                crash_fates(&mut f, &mut on, true);
                f.crash_prefix_only = on(0, 1) == 1;
            }
            Profile::Lying => {
                crash_fates(&mut f, &mut on, false);
                match on(1, 3) {
                    1 => f.lie_sync = true,
                    2 => f.lie_sync_dir = true,
                    _ => (f.lie_sync, f.lie_sync_dir) = (true, true),
                }
                f.trash_spills = on(0, 1) == 1;
            }
            Profile::Eio => {
                crash_fates(&mut f, &mut on, false);
                f.read_eio_bp = on(1, 40);
                f.write_eio_bp = on(1, 40);
                f.sync_eio_bp = on(2, 60);
                f.bad_inode_bp = on(1, 20);
                f.latent_sector_bp = on(1, 30);
                f.bitrot_bp = on(10, 2_000);
            }
        }
        if self != Profile::Faultless && f.bitrot_bp == 0 {
            // Every fault profile may rot the bits of sealed, checksummed files (pointer,
            // manifest and app records, snapshots): they must be reported, never read wrong.
            f.bitrot_bp = on(5, 500);
        }
        if f.slow_io_bp > 0 {
            f.slow_io_ms_max = 20;
        }
        f
    }
}

/// Mixed into a seed for its fault stream.
pub(super) const SWARM_SALT: u64 = 0x5741_524d_5f46_4c54;
/// The faults that are on, for the trace.
pub(super) fn describe(f: &Faults) -> String {
    let rates = [
        ("keep", f.crash_keep_bp),
        ("trash", f.crash_trash_bp),
        ("torn", f.torn_bp),
        ("drop-truncate", f.drop_truncate_bp),
        ("writeback", f.writeback_bp),
        ("read-eio", f.read_eio_bp),
        ("write-eio", f.write_eio_bp),
        ("sync-eio", f.sync_eio_bp),
        ("bad-inode", f.bad_inode_bp),
        ("latent-sector", f.latent_sector_bp),
        ("short-io", f.short_io_bp),
        ("bitrot", f.bitrot_bp),
        ("slow-io", f.slow_io_bp),
    ];
    let mut out: Vec<String> =
        rates.iter().filter(|(_, bp)| *bp > 0).map(|(name, bp)| format!("{name}={bp}bp")).collect();
    let flags = [
        ("prefix-only", f.crash_prefix_only),
        ("lying-sync", f.lie_sync),
        ("lying-sync-dir", f.lie_sync_dir),
        ("trash-spills", f.trash_spills),
    ];
    out.extend(flags.iter().filter(|(_, on)| *on).map(|(name, _)| (*name).to_string()));
    if let Some(cap) = f.capacity_bytes {
        out.push(format!("capacity={cap}B"));
    }
    if let Some(suffix) = f.fail_sync_suffix {
        out.push(format!("failed-syncs-only-on=*{suffix}"));
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(" ")
    }
}

/// How often each kind of fault fired across the seeds of one profile (the summary line of
/// `sila-sim`). A profile whose faults never fire tests nothing; [`FaultTally::missing`]
/// names them, and `sila-sim` fails the run when any is missing over enough seeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultTally {
    /// Seeds counted.
    pub seeds: u64,
    /// Power cuts (including the final one of each seed).
    pub crashes: u64,
    /// Pending writes torn or trashed at a crash.
    pub torn_writes: u64,
    /// Pending operations written back early.
    pub writebacks: u64,
    /// Failed file and directory syncs.
    pub sync_failures: u64,
    /// Reads and writes failed with `EIO`.
    pub io_errors: u64,
    /// Writes refused for want of space.
    pub no_space: u64,
    /// Bits flipped by bit rot.
    pub rot_flips: u64,
    /// Short reads and writes.
    pub short_ios: u64,
    /// Slow calls.
    pub slow_ios: u64,
    /// Refusals with QUOTA_EXCEEDED.
    pub quota_refusals: u64,
    /// Crash images taken while files had unsynced changes: on any file, on two or more.
    pub images_unsynced: u64,
    /// Crash images with unsynced changes on two files or more.
    pub images_multi_file: u64,
    /// Crash images that kept a change and lost an earlier one to another file.
    pub reorders: u64,
}

impl FaultTally {
    /// Adds one seed's outcome.
    pub fn add(&mut self, o: &Outcome) {
        let d = &o.disk;
        self.seeds += 1;
        self.crashes += o.crashes;
        self.torn_writes += d.torn_writes;
        self.writebacks += d.writebacks;
        self.sync_failures += d.sync_failures;
        self.io_errors += d.io_errors;
        self.no_space += d.no_space;
        self.rot_flips += d.rot_flips;
        self.short_ios += d.short_ios;
        self.slow_ios += d.slow_ios;
        self.quota_refusals += o.quota_refusals;
        self.images_unsynced += d.crash_images_unsynced;
        self.images_multi_file += d.crash_images_multi_file;
        self.reorders += d.crash_reorders;
    }

    /// The faults `profile` exists to inject that never fired.
    pub fn missing(&self, profile: Profile) -> Vec<&'static str> {
        let expected: &[(&str, u64)] = match profile {
            Profile::Faultless => &[("short IO", self.short_ios), ("slow IO", self.slow_ios)],
            Profile::CrashHeavy => &[
                ("crash", self.crashes),
                ("torn write", self.torn_writes),
                ("writeback", self.writebacks),
                ("crash with unsynced changes on two files", self.images_multi_file),
                ("crash reordering changes across files", self.reorders),
            ],
            Profile::IoErrors | Profile::Exports | Profile::SqliteSync | Profile::Versions => {
                &[("crash", self.crashes), ("failed sync", self.sync_failures)]
            }
            Profile::Enospc => &[("crash", self.crashes), ("full disk", self.no_space)],
            Profile::Torn => &[
                ("crash", self.crashes),
                ("torn write", self.torn_writes),
                ("crash with unsynced changes on two files", self.images_multi_file),
                ("crash reordering changes across files", self.reorders),
            ],
            Profile::Eio => {
                &[("failed sync", self.sync_failures), ("EIO", self.io_errors), ("bit rot", self.rot_flips)]
            }
            Profile::Quota => &[("crash", self.crashes), ("quota refusal", self.quota_refusals)],
            Profile::Lying => &[("crash", self.crashes)],
        };
        expected.iter().filter(|(_, n)| *n == 0).map(|(name, _)| *name).collect()
    }
}

impl std::fmt::Display for FaultTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} seeds: crashes {} (unsynced {}, on 2+ files {}, reordered {}), torn {}, writebacks {}, failed syncs {}, EIO {}, full disk {}, quota {}, bit rot {}, short IO {}, slow IO {}",
            self.seeds,
            self.crashes,
            self.images_unsynced,
            self.images_multi_file,
            self.reorders,
            self.torn_writes,
            self.writebacks,
            self.sync_failures,
            self.io_errors,
            self.no_space,
            self.quota_refusals,
            self.rot_flips,
            self.short_ios,
            self.slow_ios
        )
    }
}
