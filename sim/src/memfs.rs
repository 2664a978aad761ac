//! `MemFs`: an in-memory filesystem that models what survives a power cut.
//!
//! [`MemFs`] implements [`sila_sqlite::vfs::Vfs`] so the engine can run unchanged on a
//! simulated disk, and a test can cut the power ([`MemFs::crash`]) or fork the post-crash
//! disk ([`MemFs::durable_image`]) after any step of a plan.
//!
//! # Crash model
//!
//! Files and directories are *inodes*. The root directory `/` always exists and is always
//! durable. Every inode has a volatile state (what calls see now) and a durable state (what
//! a crash leaves):
//!
//! * A **file** inode has `data` (volatile: every read, write and `set_len` uses it),
//!   `durable` bytes, and a log of the writes and `set_len`s made since its last sync, in
//!   the order they were issued (each with its position in one global order across files).
//!   [`VfsFile::sync`] on any handle of the inode copies `data` to `durable`, whole, and
//!   empties the log. Early write-back ([`Faults::writeback_bp`]) may make the oldest logged
//!   operations durable sooner; nothing else does.
//! * A **directory** inode has *live* entries (name → inode, what lookups see) and *durable*
//!   entries. Creating a file or directory, a rename into or out of it and an unlink change
//!   only the live entries. [`Vfs::sync_dir`] of the directory makes its durable entries
//!   equal to its live entries — the entries only, not the contents of the files they name
//!   and not the entries of its subdirectories.
//! * An inode's identity survives a rename: a file renamed and then crashed back to its old
//!   name (because the directory was not synced) comes back with *its own* durable data,
//!   and a renamed file keeps whatever it synced under its previous name.
//!
//! At a crash ([`MemFs::crash`]) the machine reboots onto the durable state:
//!
//! 1. The namespace is rebuilt from the root through *durable* entries only, so an entry
//!    survives only if every ancestor directory is itself durably linked all the way up
//!    (a synced directory whose own entry in its parent was never synced vanishes with
//!    everything in it).
//! 2. Every surviving directory's live entries become its durable entries. Every surviving
//!    file becomes its durable bytes with a seeded choice of its logged operations applied
//!    in issue order (see *Faults*); with the crash faults off every one is dropped, the
//!    strict end of the contract ("a crash may keep any subset of the unsynced writes").
//! 3. Inodes no longer reachable are dropped.
//! 4. Every handle and lock guard taken before the crash goes stale: each call on a stale
//!    handle fails with [`VfsErrorKind::Other`] and the detail `"stale handle after crash"`,
//!    and all locks are released.
//!
//! Where the power goes out: [`MemFs::cut_power_after`] cuts it at a given mutating call;
//! [`MemFs::cut_power_when_dirty`] lets that call wait (boundedly) until enough files have
//! unsynced changes, because a careful caller syncs so promptly that cuts at uniform steps
//! mostly find nothing to lose. [`MemStats`] counts what the crash images held: unsynced
//! changes, on two files or more, and changes kept after an earlier one to another file
//! was lost (reordering).
//!
//! Fault settings ([`Faults`]), counters ([`MemStats`]), the fault generator, latent sector
//! errors and the rot log carry over a crash; bad inodes do not (a reboot resets them).
//!
//! Because directories are inodes, a cross-directory rename synced in only one of the two
//! directories can leave the file under both names or under neither after a crash; the
//! contract asks for `sync_dir` of both parents, and this model holds callers to it.
//!
//! # Faults
//!
//! Every knob of [`Faults`] defaults to off; rates are basis points drawn from a seeded
//! ChaCha generator ([`MemFs::set_seed`]), and a knob at zero never draws, so one seed
//! replays one history. What each family does, and what a caller may rely on:
//!
//! * **At a crash** (inside the contract): each logged operation is applied, dropped or
//!   (writes only) *trashed* — garbage at 512-byte sector granularity — and a surviving
//!   multi-sector write may be *torn* (each sector lands or not, one may hold garbage).
//!   By default garbage covers only the bytes the write covered (power-safe overwrite, what
//!   SQLite's unix VFS assumes); [`Faults::trash_spills`] spills it over the whole sectors. Choices are independent per operation, so any subset across files survives
//!   (reordering), or, with [`Faults::crash_prefix_only`], a prefix of the global issue
//!   order survives. A surviving shrink may still be undone ([`Faults::drop_truncate_bp`]).
//!   Garbage lands only where an unsynced write touched: with `trash_spills`, synced bytes
//!   sharing a sector with an unsynced write are fair game; a sector no unsynced write
//!   touched never changes.
//! * **Lying syncs** ([`Faults::lie_sync`], [`Faults::lie_sync_dir`]) break the contract:
//!   callers cannot detect them, so a checker must expect lost acknowledged data.
//! * **Failed syncs** ([`Faults::fail_sync_after`], [`Faults::sync_eio_bp`], a bad inode):
//!   a file sync drops the inode's pending data and poisons the handle; a `sync_dir` makes
//!   nothing durable. Both count in [`Vfs::sync_failures`], so the engine can fail-stop.
//! * **EIO** on reads and writes, transient (one call) or persistent: a *bad inode* fails
//!   every write and sync until a crash or [`MemFs::repair`]; a *latent sector error* fails
//!   every read touching the sector until a whole-sector write remaps it or a repair — it
//!   survives crashes. A failed read or write changes nothing.
//! * **Short reads and writes** move at least one byte and fewer than asked, as the
//!   contract allows; callers loop ([`sila_sqlite::vfs::read_full`],
//!   [`sila_sqlite::vfs::write_all_at`]).
//! * **Bit rot** flips one stored bit (volatile and durable) in the range a read covers, so
//!   the read and every later one see it. It touches only files the rot filter accepts
//!   ([`MemFs::set_rot_filter`]; it sees the path and whether the file is marked read-only),
//!   and [`MemFs::rotted`] lists them. SQLite pages carry no
//!   checksum, so rot in a database file can become wrong rows that nothing detects; the
//!   whole-engine simulation therefore rots only files the engine checksums (pointer,
//!   manifest and app records, CRC-32C; snapshots once sealed read-only, after their CRC-32C
//!   was computed — rot before that would be checksummed with the file) and asserts a
//!   clean typed error (damage reported at recovery, `CORRUPT` from a restore) or correct
//!   data — never silently wrong data.
//! * **Slow IO** reports a latency to a sink ([`MemFs::set_latency_sink`]), e.g. a
//!   simulation clock, instead of sleeping.
//! * **A capacity cap** makes growing writes fail with [`VfsErrorKind::NoSpace`].
//!
//! # Limits and deviations from a real filesystem
//!
//! * Paths must be absolute and contain no `..`; `.` components are ignored.
//! * Directories cannot be renamed (an `Other` error).
//! * [`Vfs::set_read_only`] only records a flag (for the rot filter); permissions are not
//!   enforced.
//! * Reads and writes are short only when [`Faults::short_io_bp`] says so; a read at or
//!   past the end returns `Ok(0)`, a write past the end zero-fills the gap. No file may grow past [`FILE_BYTES_MAX`].
//! * [`Vfs::lock_exclusive`] creates the lock file (like `CreateOrOpen`) but writes nothing
//!   to it; the lock table is in memory and names [`std::process::id`] as the holder.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sila_sqlite::vfs::{DirEntry, LockGuard, OpenMode, Vfs, VfsError, VfsErrorKind, VfsFile, VfsResult};

/// Largest file a [`MemFs`] holds; a write or `set_len` beyond it fails with
/// [`VfsErrorKind::Other`] ("file too large"), so a bogus offset cannot exhaust memory.
pub const FILE_BYTES_MAX: u64 = 1 << 32;

/// The detail of every error returned by a handle or guard taken before a crash.
pub const STALE_DETAIL: &str = "stale handle after crash";

/// Inode number. Never reused within one [`MemFs`] history, so a stale handle cannot reach
/// a new inode.
type Ino = u64;

/// The error detail of every call made after [`MemFs::cut_power_after`] ran out.
pub const POWER_OFF_DETAIL: &str = "the power is off";

/// The root directory's inode.
const ROOT: Ino = 0;

/// The sector size of the simulated disk: torn writes, trashed writes and latent errors
/// work in whole sectors.
pub const SECTOR_BYTES: u64 = 512;

/// The denominator of every `_bp` rate of [`Faults`].
pub const BP_SCALE: u32 = 10_000;

/// Fault knobs of a [`MemFs`]. `Faults::default()` turns every fault off.
///
/// Rates ending in `_bp` are in basis points: out of [`BP_SCALE`] (10 000), drawn from the
/// filesystem's seeded generator ([`MemFs::set_seed`]) only when the rate is not zero, so a
/// disk with every rate at zero never draws and replays exactly as before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// `sync_dir` returns `Ok` and makes nothing durable.
    pub lie_sync_dir: bool,
    /// File `sync` returns `Ok` and makes nothing durable.
    pub lie_sync: bool,
    /// Counting from the [`MemFs::set_faults`] call, the `(n + 1)`-th file `sync` fails with
    /// [`VfsErrorKind::Other`] (`"EIO"`): that inode's unsynced data is dropped (its data is
    /// reset to its durable data) and the handle is poisoned (every later call on it fails
    /// with [`VfsErrorKind::Poisoned`]). One-shot: later syncs are not failed. Syncs on stale
    /// or poisoned handles do not count; lying syncs do.
    pub fail_sync_after: Option<u64>,
    /// With [`Faults::fail_sync_after`]: only syncs of files whose path ends with this count
    /// and fail (`".sqlite"`: database and snapshot files; `"-wal"`: write-ahead logs), so a
    /// profile can aim at SQLite's own syncs. `None`: every file sync.
    pub fail_sync_suffix: Option<&'static str>,
    /// Cap on the total bytes of all files reachable in the live namespace or held open; a
    /// write or `set_len` that would grow past it fails with [`VfsErrorKind::NoSpace`] and
    /// changes nothing.
    pub capacity_bytes: Option<u64>,
    /// At a crash, each pending (unsynced) write or `set_len` survives with this rate; the
    /// others are dropped. Zero (the default) drops every pending operation.
    pub crash_keep_bp: u16,
    /// At a crash, each pending write is *trashed* with this rate (before `crash_keep_bp` is
    /// drawn): every 512-byte sector it touches is filled with garbage.
    pub crash_trash_bp: u16,
    /// Garbage from a trashed or torn write spills over the *whole* 512-byte sectors it
    /// touches, bytes no unsynced write covered included: a disk without power-safe
    /// overwrite. Off: garbage lands only on the bytes the write covered, which is what
    /// SQLite's unix VFS assumes by default (`SQLITE_IOCAP_POWERSAFE_OVERWRITE`, psow=1), and
    /// so what production runs on.
    pub trash_spills: bool,
    /// At a crash, a surviving write spanning two or more sectors is *torn* with this rate:
    /// each of its sectors lands or not, and one of them may hold garbage.
    pub torn_bp: u16,
    /// At a crash, the surviving pending operations are a prefix of the global order in
    /// which they were issued (across all files; the cut is uniform), instead of an
    /// independent choice per operation. The operation at the cut may be torn or trashed.
    pub crash_prefix_only: bool,
    /// At a crash, a surviving pending `set_len` that shrank the file is undone with this
    /// rate (the truncate was never journaled).
    pub drop_truncate_bp: u16,
    /// On each mutating call, with this rate the oldest pending operations of one dirty file
    /// are written back early (become durable without a sync).
    pub writeback_bp: u16,
    /// Transient `EIO` on a file read (the call fails, nothing changes).
    pub read_eio_bp: u16,
    /// Transient `EIO` on a file write (the call fails, nothing is written).
    pub write_eio_bp: u16,
    /// Transient `EIO` on a file `sync` or a `sync_dir`. A failed file sync drops the inode's
    /// pending data and poisons the handle, like [`Faults::fail_sync_after`]; a failed
    /// `sync_dir` makes no entry durable. Both count in [`MemStats::sync_failures`].
    pub sync_eio_bp: u16,
    /// On a write, with this rate the inode goes bad: this and every later write and sync
    /// of it fail with `EIO` until the next crash or [`MemFs::repair`].
    pub bad_inode_bp: u16,
    /// On a read, with this rate a sector in the read range develops a *latent sector
    /// error*: every read touching it fails with `EIO` until a write covers the whole
    /// sector (the drive remaps it) or [`MemFs::repair`]. It survives crashes.
    pub latent_sector_bp: u16,
    /// On a read or a write of two bytes or more, with this rate the call moves fewer bytes
    /// than asked (at least one), as the [`Vfs`] contract allows.
    pub short_io_bp: u16,
    /// On a read of a file the rot filter accepts ([`MemFs::set_rot_filter`]), with this
    /// rate one stored bit in the read range flips, in the volatile and the durable data:
    /// the read returns the rotten byte and so does every later read.
    pub bitrot_bp: u16,
    /// On a read, write or sync, with this rate the call is slow: it reports 1 to
    /// `slow_io_ms_max` milliseconds to the latency sink ([`MemFs::set_latency_sink`]).
    pub slow_io_bp: u16,
    /// The longest simulated latency of one slow call, in milliseconds.
    pub slow_io_ms_max: u32,
}

impl Faults {
    /// Whether any fault that makes a call fail or return wrong bytes (EIO, bad inodes,
    /// latent sectors, bit rot) is on. Short IO, slowness and crash-time faults are not.
    pub fn call_errors_on(&self) -> bool {
        self.read_eio_bp > 0
            || self.write_eio_bp > 0
            || self.sync_eio_bp > 0
            || self.bad_inode_bp > 0
            || self.latent_sector_bp > 0
            || self.bitrot_bp > 0
    }

    /// Only the crash-time choices of these faults: a healthy disk (no failing calls, no
    /// capacity cap, no lies, no slowness) that still loses, tears and reorders unsynced
    /// writes at a crash.
    pub fn quiet(self) -> Faults {
        Faults {
            crash_keep_bp: self.crash_keep_bp,
            crash_trash_bp: self.crash_trash_bp,
            torn_bp: self.torn_bp,
            crash_prefix_only: self.crash_prefix_only,
            trash_spills: self.trash_spills,
            drop_truncate_bp: self.drop_truncate_bp,
            ..Faults::default()
        }
    }
}

/// Operation counters of a [`MemFs`] since [`MemFs::new`] (crashes do not reset them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStats {
    /// File `sync` calls on live, unpoisoned handles (successful, lying and failed ones).
    pub syncs: u64,
    /// `sync_dir` calls on existing directories (including lying ones).
    pub dir_syncs: u64,
    /// Successful `write_at` calls.
    pub writes: u64,
    /// Successful `rename` calls.
    pub renames: u64,
    /// File `sync` and `sync_dir` calls that failed (injected by [`Faults::fail_sync_after`]
    /// or [`Faults::sync_eio_bp`], or on a bad inode).
    pub sync_failures: u64,
    /// Reads and writes that failed with an injected `EIO` (transient, bad inode or latent
    /// sector).
    pub io_errors: u64,
    /// Reads and writes that moved fewer bytes than asked.
    pub short_ios: u64,
    /// Bits flipped by bit rot.
    pub rot_flips: u64,
    /// Calls made slow, and their total simulated latency in milliseconds.
    pub slow_ios: u64,
    /// Total simulated latency reported to the sink, in milliseconds.
    pub latency_ms: u64,
    /// Pending operations written back early.
    pub writebacks: u64,
    /// Pending writes torn or trashed at a crash.
    pub torn_writes: u64,
    /// Writes and `set_len` calls refused for want of space ([`Faults::capacity_bytes`]).
    pub no_space: u64,
    /// Crash images taken ([`MemFs::crash`], [`MemFs::durable_image`]).
    pub crash_images: u64,
    /// Crash images taken while some file had unsynced changes.
    pub crash_images_unsynced: u64,
    /// Crash images taken while two files or more had unsynced changes.
    pub crash_images_multi_file: u64,
    /// Crash images in which a change survived while an earlier change to another file was
    /// lost (reordering across files).
    pub crash_reorders: u64,
    /// Power cuts that waited for unsynced changes on enough files
    /// ([`MemFs::cut_power_when_dirty`]) and found them.
    pub dirty_cuts: u64,
}

/// A file change made since the inode's last successful sync, in the order issued.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    /// `write_at` of `bytes` at `offset`.
    Write {
        /// Position in the global issue order (for prefix-only crashes).
        seq: u64,
        /// Byte offset.
        offset: u64,
        /// What was written.
        bytes: Vec<u8>,
    },
    /// `set_len` (or a truncating open).
    SetLen {
        /// Position in the global issue order.
        seq: u64,
        /// The new length.
        len: u64,
        /// It made the file shorter (only shrinks can be dropped as truncates).
        shrinks: bool,
    },
}

impl Pending {
    fn seq(&self) -> u64 {
        match self {
            Pending::Write { seq, .. } | Pending::SetLen { seq, .. } => *seq,
        }
    }

    /// Whether a torn crash can split it: a write touching two sectors or more.
    fn multi_sector(&self) -> bool {
        match self {
            Pending::Write { offset, bytes, .. } => sector_span(*offset, bytes.len()).count() > 1,
            Pending::SetLen { .. } => false,
        }
    }
}

/// What a crash does to one pending operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// It reached the disk whole.
    Applied,
    /// It never reached the disk.
    Dropped,
    /// Every sector it touches holds garbage.
    Trashed,
    /// Some of its sectors reached the disk; one may hold garbage.
    Torn,
}

/// Whether a crash kept a change (whole or torn) while losing an earlier change to another
/// file: `fates` and `file_of` are keyed by position in the global issue order.
fn reordered(fates: &BTreeMap<u64, Fate>, file_of: &BTreeMap<u64, Ino>) -> bool {
    // The files that lost a change so far, in issue order.
    let mut lost: BTreeSet<Ino> = BTreeSet::new();
    for (seq, fate) in fates {
        let Some(ino) = file_of.get(seq) else { continue };
        if *fate == Fate::Dropped {
            lost.insert(*ino);
        } else if lost.iter().any(|other| other != ino) {
            return true;
        }
    }
    false
}

/// The indexes of the 512-byte sectors that `len` bytes at `offset` touch.
fn sector_span(offset: u64, len: usize) -> std::ops::Range<u64> {
    if len == 0 {
        return 0..0;
    }
    let first = offset / SECTOR_BYTES;
    let last = offset.saturating_add(len as u64 - 1) / SECTOR_BYTES;
    first..last.saturating_add(1)
}

/// Grows `image` with zeros to at least `len` bytes (capped at [`FILE_BYTES_MAX`]).
fn grow(image: &mut Vec<u8>, len: u64) {
    let len = usize::try_from(len.min(FILE_BYTES_MAX)).unwrap_or(usize::MAX);
    if image.len() < len {
        image.resize(len, 0);
    }
}

/// Writes `bytes` at `offset` into `image`, zero-filling a gap.
fn put(image: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    grow(image, offset.saturating_add(bytes.len() as u64));
    let Ok(start) = usize::try_from(offset) else { return };
    if let Some(dst) = image.get_mut(start..start.saturating_add(bytes.len())) {
        dst.copy_from_slice(bytes);
    }
}

/// Fills sector `sector` of `image` with garbage from `rng`: the whole sector when `spill`
/// (no power-safe overwrite), else only its bytes inside `write` (the range a write covers).
fn trash_sector(
    image: &mut [u8],
    sector: u64,
    write: std::ops::Range<u64>,
    spill: bool,
    rng: &mut ChaCha8Rng,
) {
    let mut lo = sector.saturating_mul(SECTOR_BYTES);
    let mut hi = lo.saturating_add(SECTOR_BYTES);
    if !spill {
        lo = lo.max(write.start);
        hi = hi.min(write.end);
    }
    let start = usize::try_from(lo).unwrap_or(usize::MAX);
    let end = usize::try_from(hi).unwrap_or(usize::MAX).min(image.len());
    if let Some(dst) = image.get_mut(start..end) {
        rng.fill_bytes(dst);
    }
}

/// Applies one pending operation to a durable image with its crash fate.
fn apply_pending(image: &mut Vec<u8>, op: &Pending, fate: Fate, spill: bool, rng: &mut ChaCha8Rng) {
    match (op, fate) {
        (_, Fate::Dropped) => {}
        (Pending::SetLen { len, .. }, _) => {
            let len = usize::try_from((*len).min(FILE_BYTES_MAX)).unwrap_or(usize::MAX);
            image.resize(len, 0);
        }
        (Pending::Write { offset, bytes, .. }, Fate::Applied) => put(image, *offset, bytes),
        (Pending::Write { offset, bytes, .. }, Fate::Trashed) => {
            let end = offset.saturating_add(bytes.len() as u64);
            grow(image, end);
            for sector in sector_span(*offset, bytes.len()) {
                trash_sector(image, sector, *offset..end, spill, rng);
            }
        }
        (Pending::Write { offset, bytes, .. }, Fate::Torn) => {
            // The file's size may already cover the whole write; each sector lands or not.
            let end = offset.saturating_add(bytes.len() as u64);
            grow(image, end);
            let span = sector_span(*offset, bytes.len());
            let garbage = if rng.random_bool(0.5) { Some(rng.random_range(span.clone())) } else { None };
            for sector in span {
                if Some(sector) == garbage {
                    trash_sector(image, sector, *offset..end, spill, rng);
                    continue;
                }
                if !rng.random_bool(0.5) {
                    continue;
                }
                let lo = (sector * SECTOR_BYTES).max(*offset);
                let hi = ((sector + 1) * SECTOR_BYTES).min(offset.saturating_add(bytes.len() as u64));
                let (Ok(from), Ok(to)) = (usize::try_from(lo - offset), usize::try_from(hi - offset)) else {
                    continue;
                };
                if let Some(part) = bytes.get(from..to) {
                    put(image, lo, part);
                }
            }
        }
    }
}

/// One inode: a file or a directory, each with a volatile and a durable state.
#[derive(Debug, Clone)]
enum Inode {
    /// A regular file.
    File {
        /// What reads see now: `durable` with every `pending` operation applied in order.
        data: Vec<u8>,
        /// What a crash with every pending operation dropped leaves.
        durable: Vec<u8>,
        /// Changes since the last successful sync, oldest first.
        pending: Vec<Pending>,
        /// Sectors with a latent error: reads touching them fail (survives crashes).
        bad_sectors: BTreeSet<u64>,
        /// The inode went bad: writes and syncs fail until a crash or repair.
        failing: bool,
        /// Marked read-only ([`Vfs::set_read_only`]); survives renames and crashes.
        read_only: bool,
    },
    /// A directory.
    Dir {
        /// What lookups see now.
        live: BTreeMap<String, Ino>,
        /// What a crash leaves.
        durable: BTreeMap<String, Ino>,
    },
}

impl Inode {
    fn empty_file() -> Self {
        Inode::File {
            data: Vec::new(),
            durable: Vec::new(),
            pending: Vec::new(),
            bad_sectors: BTreeSet::new(),
            failing: false,
            read_only: false,
        }
    }

    fn empty_dir() -> Self {
        Inode::Dir { live: BTreeMap::new(), durable: BTreeMap::new() }
    }

    fn is_dir(&self) -> bool {
        matches!(self, Inode::Dir { .. })
    }
}

/// Where simulated latency goes (e.g. a simulation clock's `advance`), in milliseconds.
#[derive(Clone)]
pub struct LatencySink(pub Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for LatencySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatencySink")
    }
}

/// Decides which files bit rot may touch, by the path a handle was opened with and whether
/// the file is marked read-only ([`Vfs::set_read_only`]) at the time of the read.
pub type RotFilter = fn(&Path, bool) -> bool;

/// Everything behind a [`MemFs`] handle.
#[derive(Debug, Clone)]
struct State {
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    /// Incremented by each crash; handles and guards remember the epoch they were made in.
    epoch: u64,
    /// Open handle (and lock guard) count per inode, for this epoch.
    open: BTreeMap<Ino, u64>,
    /// Inodes locked by a live [`MemLock`].
    locks: BTreeSet<Ino>,
    faults: Faults,
    /// File syncs left before the injected failure.
    syncs_before_failure: Option<u64>,
    stats: MemStats,
    /// Mutating IO calls left before the power is cut (`None`: never).
    power_cut_in: Option<u64>,
    /// Set by [`MemFs::cut_power_when_dirty`]: when the countdown runs out the cut waits,
    /// for at most the second number of calls, until this many files have unsynced changes.
    power_cut_dirty: Option<(usize, u64)>,
    /// The power is off: every call fails until the next crash (durable image).
    dead: bool,
    /// The seeded generator behind every fault choice.
    rng: ChaCha8Rng,
    /// The next position in the global order of pending operations.
    next_seq: u64,
    /// Files bit rot may touch (none when `None`).
    rot_filter: Option<RotFilter>,
    /// Paths of files whose bits rotted, in order (across crashes).
    rotted: Vec<PathBuf>,
    /// Where slow calls report their latency.
    latency_sink: Option<LatencySink>,
}

fn err(kind: VfsErrorKind, op: &'static str, path: &Path, detail: impl Into<String>) -> VfsError {
    VfsError::new(kind, op, path, detail)
}

/// Splits an absolute path into its names. `.` is skipped; `..` and relative paths are refused.
fn split(path: &Path, op: &'static str) -> VfsResult<Vec<String>> {
    let mut names = Vec::new();
    let mut rooted = false;
    for component in path.components() {
        match component {
            Component::RootDir => rooted = true,
            Component::CurDir => {}
            Component::Normal(name) => {
                let Some(name) = name.to_str() else {
                    return Err(err(VfsErrorKind::Other, op, path, "path is not UTF-8"));
                };
                names.push(name.to_string());
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(err(VfsErrorKind::Other, op, path, "'..' and prefixes are not supported"));
            }
        }
    }
    if !rooted {
        return Err(err(VfsErrorKind::Other, op, path, "MemFs paths must be absolute"));
    }
    Ok(names)
}

impl State {
    fn new() -> Self {
        let mut inodes = BTreeMap::new();
        inodes.insert(ROOT, Inode::empty_dir());
        State {
            inodes,
            next_ino: ROOT + 1,
            epoch: 0,
            open: BTreeMap::new(),
            locks: BTreeSet::new(),
            faults: Faults::default(),
            syncs_before_failure: None,
            stats: MemStats::default(),
            power_cut_in: None,
            power_cut_dirty: None,
            dead: false,
            rng: ChaCha8Rng::seed_from_u64(0),
            next_seq: 0,
            rot_filter: None,
            rotted: Vec::new(),
            latency_sink: None,
        }
    }

    fn live_entries(&self, dir: Ino) -> Option<&BTreeMap<String, Ino>> {
        match self.inodes.get(&dir) {
            Some(Inode::Dir { live, .. }) => Some(live),
            _ => None,
        }
    }

    fn live_entries_mut(&mut self, dir: Ino) -> Option<&mut BTreeMap<String, Ino>> {
        match self.inodes.get_mut(&dir) {
            Some(Inode::Dir { live, .. }) => Some(live),
            _ => None,
        }
    }

    fn is_dir(&self, ino: Ino) -> bool {
        self.inodes.get(&ino).is_some_and(Inode::is_dir)
    }

    /// Follows `names` from the root through live entries; every one must be a directory.
    fn walk_dir(&self, names: &[String], op: &'static str, path: &Path) -> VfsResult<Ino> {
        let mut ino = ROOT;
        for name in names {
            let Some(entries) = self.live_entries(ino) else {
                return Err(err(VfsErrorKind::Other, op, path, "a path component is not a directory"));
            };
            let Some(next) = entries.get(name) else {
                return Err(err(VfsErrorKind::NotFound, op, path, format!("no such directory: {name}")));
            };
            ino = *next;
        }
        if !self.is_dir(ino) {
            return Err(err(VfsErrorKind::Other, op, path, "a path component is not a directory"));
        }
        Ok(ino)
    }

    /// The inode at `path`, `Ok(None)` if its parent exists but it does not.
    fn lookup(&self, path: &Path, op: &'static str) -> VfsResult<Option<Ino>> {
        let names = split(path, op)?;
        let Some((name, parents)) = names.split_last() else { return Ok(Some(ROOT)) };
        let parent = self.walk_dir(parents, op, path)?;
        Ok(self.live_entries(parent).and_then(|entries| entries.get(name)).copied())
    }

    /// The parent directory's inode and the last name of a path that is not the root.
    fn parent_of(&self, path: &Path, op: &'static str) -> VfsResult<(Ino, String)> {
        let mut names = split(path, op)?;
        let Some(name) = names.pop() else {
            return Err(err(VfsErrorKind::Other, op, path, "not allowed on the root directory"));
        };
        let parent = self.walk_dir(&names, op, path)?;
        Ok((parent, name))
    }

    fn alloc(&mut self, node: Inode) -> Ino {
        let ino = self.next_ino;
        self.next_ino = self.next_ino.saturating_add(1);
        self.inodes.insert(ino, node);
        ino
    }

    /// Links a new inode under `parent` (live entries only).
    fn link_new(
        &mut self,
        parent: Ino,
        name: &str,
        node: Inode,
        op: &'static str,
        path: &Path,
    ) -> VfsResult<Ino> {
        if self.live_entries(parent).is_none() {
            return Err(err(VfsErrorKind::Other, op, path, "parent is not a directory"));
        }
        let ino = self.alloc(node);
        if let Some(entries) = self.live_entries_mut(parent) {
            entries.insert(name.to_string(), ino);
        }
        Ok(ino)
    }

    fn open_ref(&mut self, ino: Ino) {
        let count = self.open.entry(ino).or_insert(0);
        *count = count.saturating_add(1);
    }

    fn close_ref(&mut self, ino: Ino) {
        let drop_entry = match self.open.get_mut(&ino) {
            Some(count) => {
                *count = count.saturating_sub(1);
                *count == 0
            }
            None => false,
        };
        if drop_entry {
            self.open.remove(&ino);
        }
    }

    /// Inodes reachable from the root through live and/or durable entries, plus (optionally)
    /// every inode held open. Each inode is pushed at most once, so the loop is bounded.
    fn reachable(&self, via_live: bool, via_durable: bool, with_open: bool) -> BTreeSet<Ino> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![ROOT];
        seen.insert(ROOT);
        if with_open {
            for ino in self.open.keys() {
                if seen.insert(*ino) {
                    stack.push(*ino);
                }
            }
        }
        let bound = self.inodes.len().saturating_add(self.open.len()).saturating_add(1);
        for _ in 0..bound {
            let Some(ino) = stack.pop() else { break };
            let Some(Inode::Dir { live, durable }) = self.inodes.get(&ino) else { continue };
            let mut children: Vec<Ino> = Vec::new();
            if via_live {
                children.extend(live.values().copied());
            }
            if via_durable {
                children.extend(durable.values().copied());
            }
            for child in children {
                if self.inodes.contains_key(&child) && seen.insert(child) {
                    stack.push(child);
                }
            }
        }
        seen
    }

    /// Drops inodes that nothing can reach any more: not linked live or durably, not open.
    fn sweep(&mut self) {
        let keep = self.reachable(true, true, true);
        self.inodes.retain(|ino, _| keep.contains(ino));
    }

    /// Total bytes of files reachable live or held open: what `capacity_bytes` limits.
    fn used_bytes(&self) -> u64 {
        self.reachable(true, false, true)
            .iter()
            .filter_map(|ino| match self.inodes.get(ino) {
                Some(Inode::File { data, .. }) => Some(data.len() as u64),
                _ => None,
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Checks that growing a file from `old_len` to `new_len` bytes fits the capacity.
    fn check_growth(&mut self, old_len: u64, new_len: u64, op: &'static str, path: &Path) -> VfsResult<()> {
        if new_len > FILE_BYTES_MAX {
            return Err(err(
                VfsErrorKind::Other,
                op,
                path,
                format!("file too large (over {FILE_BYTES_MAX} bytes)"),
            ));
        }
        let Some(capacity) = self.faults.capacity_bytes else { return Ok(()) };
        if new_len <= old_len {
            return Ok(());
        }
        let after = self.used_bytes().saturating_sub(old_len).saturating_add(new_len);
        if after > capacity {
            self.stats.no_space = self.stats.no_space.saturating_add(1);
            return Err(err(
                VfsErrorKind::NoSpace,
                op,
                path,
                format!("no space left on device ({after} bytes needed, capacity {capacity})"),
            ));
        }
        Ok(())
    }

    /// Counts one mutating IO call against the power-cut countdown. When it runs out the
    /// power goes off: this call and every later one fail, and nothing changes any more, so
    /// the durable image taken at any later time is the disk as the cut left it.
    fn tick(&mut self, op: &'static str, path: &Path) -> VfsResult<()> {
        if self.dead {
            return Err(err(VfsErrorKind::Other, op, path, POWER_OFF_DETAIL));
        }
        match self.power_cut_in {
            Some(0) => {
                if let Some((files_min, patience)) = self.power_cut_dirty {
                    let dirty = self.dirty_files();
                    if dirty < files_min && patience > 0 {
                        self.power_cut_dirty = Some((files_min, patience - 1));
                        self.maybe_write_back();
                        return Ok(());
                    }
                    if dirty >= files_min {
                        self.stats.dirty_cuts = self.stats.dirty_cuts.saturating_add(1);
                    }
                }
                self.dead = true;
                self.power_cut_in = None;
                self.power_cut_dirty = None;
                Err(err(VfsErrorKind::Other, op, path, POWER_OFF_DETAIL))
            }
            Some(n) => {
                self.power_cut_in = Some(n - 1);
                self.maybe_write_back();
                Ok(())
            }
            None => {
                self.maybe_write_back();
                Ok(())
            }
        }
    }

    /// Files a crash now would keep (reachable through durable directory entries) that have
    /// changes not yet synced.
    fn dirty_files(&self) -> usize {
        self.reachable(false, true, false)
            .iter()
            .filter(|ino| matches!(self.inodes.get(ino), Some(Inode::File { pending, .. }) if !pending.is_empty()))
            .count()
    }

    /// Fails every call once the power is off.
    fn alive(&self, op: &'static str, path: &Path) -> VfsResult<()> {
        if self.dead {
            return Err(err(VfsErrorKind::Other, op, path, POWER_OFF_DETAIL));
        }
        Ok(())
    }

    /// Draws a fault with rate `bp` (basis points). Never draws when the rate is zero, so
    /// a run with a fault off replays the same as before the fault existed.
    fn roll(&mut self, bp: u16) -> bool {
        bp > 0 && self.rng.random_range(0..BP_SCALE) < u32::from(bp)
    }

    /// Draws the fault whose rate `pick` reads from the current knobs.
    fn chance(&mut self, pick: impl Fn(&Faults) -> u16) -> bool {
        let bp = pick(&self.faults);
        self.roll(bp)
    }

    /// Maybe makes this call slow: reports a latency to the sink.
    fn maybe_slow(&mut self) {
        if !self.roll(self.faults.slow_io_bp) {
            return;
        }
        let ms = u64::from(self.rng.random_range(1..=self.faults.slow_io_ms_max.max(1)));
        self.stats.slow_ios = self.stats.slow_ios.saturating_add(1);
        self.stats.latency_ms = self.stats.latency_ms.saturating_add(ms);
        if let Some(sink) = &self.latency_sink {
            (sink.0)(ms);
        }
    }

    /// Maybe writes back early the oldest pending operations of one dirty file.
    fn maybe_write_back(&mut self) {
        if !self.roll(self.faults.writeback_bp) {
            return;
        }
        let dirty: Vec<Ino> = self
            .inodes
            .iter()
            .filter(|(_, node)| matches!(node, Inode::File { pending, .. } if !pending.is_empty()))
            .map(|(ino, _)| *ino)
            .collect();
        if dirty.is_empty() {
            return;
        }
        let ino = dirty.get(self.rng.random_range(0..dirty.len())).copied().unwrap_or(ROOT);
        let Some(Inode::File { durable, pending, .. }) = self.inodes.get_mut(&ino) else { return };
        let count = self.rng.random_range(1..=pending.len());
        for op in pending.drain(..count) {
            apply_pending(durable, &op, Fate::Applied, false, &mut self.rng);
        }
        self.stats.writebacks = self.stats.writebacks.saturating_add(count as u64);
    }

    /// Records a pending operation of `ino` in the global issue order.
    fn push_pending(&mut self, ino: Ino, make: impl FnOnce(u64) -> Pending) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        if let Some(Inode::File { pending, .. }) = self.inodes.get_mut(&ino) {
            pending.push(make(seq));
        }
    }

    /// The fate at a crash of every pending operation of the files in `keep`, keyed by its
    /// global position. See [`Faults`] for the choices.
    fn crash_fates(&mut self, keep: &BTreeSet<Ino>) -> BTreeMap<u64, Fate> {
        let mut order: Vec<(u64, bool, bool)> = Vec::new();
        // The file of each pending operation, by its position (for the reordering count).
        let mut file_of: BTreeMap<u64, Ino> = BTreeMap::new();
        let mut dirty_files = 0u64;
        for ino in keep {
            if let Some(Inode::File { pending, .. }) = self.inodes.get(ino) {
                dirty_files += u64::from(!pending.is_empty());
                for op in pending {
                    let shrinks = matches!(op, Pending::SetLen { shrinks: true, .. });
                    order.push((op.seq(), op.multi_sector(), shrinks));
                    file_of.insert(op.seq(), *ino);
                }
            }
        }
        order.sort_unstable();
        self.stats.crash_images = self.stats.crash_images.saturating_add(1);
        self.stats.crash_images_unsynced =
            self.stats.crash_images_unsynced.saturating_add(u64::from(dirty_files > 0));
        self.stats.crash_images_multi_file =
            self.stats.crash_images_multi_file.saturating_add(u64::from(dirty_files > 1));
        let mut fates = BTreeMap::new();
        if order.is_empty() {
            return fates;
        }
        let f = self.faults;
        let cut = if f.crash_prefix_only { self.rng.random_range(0..=order.len()) } else { 0 };
        for (i, (seq, multi, shrinks)) in order.into_iter().enumerate() {
            let fate = if f.crash_prefix_only {
                match i.cmp(&cut) {
                    std::cmp::Ordering::Less => Fate::Applied,
                    std::cmp::Ordering::Equal if self.roll(f.crash_trash_bp) && !shrinks => Fate::Trashed,
                    std::cmp::Ordering::Equal if multi && self.roll(f.torn_bp) => Fate::Torn,
                    _ => Fate::Dropped,
                }
            } else {
                let r = if f.crash_trash_bp > 0 || f.crash_keep_bp > 0 {
                    self.rng.random_range(0..BP_SCALE)
                } else {
                    BP_SCALE
                };
                if r < u32::from(f.crash_trash_bp) && !shrinks {
                    Fate::Trashed
                } else if r < u32::from(f.crash_trash_bp).saturating_add(u32::from(f.crash_keep_bp)) {
                    if multi && self.roll(f.torn_bp) {
                        Fate::Torn
                    } else {
                        Fate::Applied
                    }
                } else {
                    Fate::Dropped
                }
            };
            let fate = if fate == Fate::Applied && shrinks && self.roll(f.drop_truncate_bp) {
                Fate::Dropped
            } else {
                fate
            };
            if matches!(fate, Fate::Torn | Fate::Trashed) {
                self.stats.torn_writes = self.stats.torn_writes.saturating_add(1);
            }
            fates.insert(seq, fate);
        }
        if reordered(&fates, &file_of) {
            self.stats.crash_reorders = self.stats.crash_reorders.saturating_add(1);
        }
        fates
    }

    /// The state a power cut leaves: see the module docs.
    fn crashed(&mut self) -> State {
        let keep = self.reachable(false, true, false);
        let fates = self.crash_fates(&keep);
        let mut inodes = BTreeMap::new();
        for ino in &keep {
            let node = match self.inodes.get(ino) {
                Some(Inode::File { durable, pending, bad_sectors, read_only, .. }) => {
                    let mut image = durable.clone();
                    for op in pending {
                        let fate = fates.get(&op.seq()).copied().unwrap_or(Fate::Dropped);
                        apply_pending(&mut image, op, fate, self.faults.trash_spills, &mut self.rng);
                    }
                    Inode::File {
                        data: image.clone(),
                        durable: image,
                        pending: Vec::new(),
                        bad_sectors: bad_sectors.clone(),
                        failing: false,
                        read_only: *read_only,
                    }
                }
                Some(Inode::Dir { durable, .. }) => {
                    Inode::Dir { live: durable.clone(), durable: durable.clone() }
                }
                None => continue,
            };
            inodes.insert(*ino, node);
        }
        let present: BTreeSet<Ino> = inodes.keys().copied().collect();
        for node in inodes.values_mut() {
            if let Inode::Dir { live, durable } = node {
                live.retain(|_, ino| present.contains(ino));
                durable.retain(|_, ino| present.contains(ino));
            }
        }
        inodes.entry(ROOT).or_insert_with(Inode::empty_dir);
        State {
            inodes,
            next_ino: self.next_ino,
            epoch: self.epoch.saturating_add(1),
            open: BTreeMap::new(),
            locks: BTreeSet::new(),
            faults: self.faults,
            syncs_before_failure: self.syncs_before_failure,
            stats: self.stats,
            power_cut_in: None,
            power_cut_dirty: None,
            dead: false,
            rng: self.rng.clone(),
            next_seq: self.next_seq,
            rot_filter: self.rot_filter,
            rotted: self.rotted.clone(),
            latency_sink: self.latency_sink.clone(),
        }
    }

    /// Every live path with its inode, parents before children, in name order.
    fn live_paths(&self) -> Vec<(PathBuf, Ino)> {
        let mut out = Vec::new();
        let mut stack = vec![(PathBuf::from("/"), ROOT)];
        let mut seen = BTreeSet::new();
        let bound = self.inodes.len().saturating_add(1);
        for _ in 0..bound {
            let Some((path, ino)) = stack.pop() else { break };
            if !seen.insert(ino) {
                continue;
            }
            if let Some(entries) = self.live_entries(ino) {
                for (name, child) in entries.iter().rev() {
                    if self.is_dir(*child) {
                        stack.push((path.join(name), *child));
                    } else {
                        out.push((path.join(name), *child));
                    }
                }
            }
            out.push((path, ino));
        }
        out.sort();
        out
    }
}

fn lock_state(inner: &Mutex<State>) -> MutexGuard<'_, State> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An in-memory filesystem that loses what a power cut would lose. A cheap [`Clone`] handle:
/// clones share one disk. See the module docs for the crash model.
#[derive(Debug, Clone)]
pub struct MemFs {
    inner: Arc<Mutex<State>>,
}

impl Default for MemFs {
    fn default() -> Self {
        MemFs::new()
    }
}

impl MemFs {
    /// A new filesystem holding only the (durable) root directory `/`.
    pub fn new() -> Self {
        MemFs { inner: Arc::new(Mutex::new(State::new())) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock_state(&self.inner)
    }

    /// [`Vfs::rename`] (`replace`) or [`Vfs::rename_noreplace`]: one step under the state
    /// lock, so the check for an existing target and the rename are one atomic change.
    fn rename_as(&self, from: &Path, to: &Path, replace: bool) -> VfsResult<()> {
        let op = if replace { "rename" } else { "rename noreplace" };
        let mut state = self.state();
        state.tick(op, from)?;
        let (from_parent, from_name) = state.parent_of(from, op)?;
        let Some(ino) = state.live_entries(from_parent).and_then(|entries| entries.get(&from_name)).copied()
        else {
            return Err(err(VfsErrorKind::NotFound, op, from, "no such file"));
        };
        if state.is_dir(ino) {
            return Err(err(VfsErrorKind::Other, op, from, "MemFs cannot rename directories"));
        }
        let (to_parent, to_name) = state.parent_of(to, op)?;
        match state.live_entries(to_parent).and_then(|entries| entries.get(&to_name)).copied() {
            Some(_) if !replace => {
                return Err(err(VfsErrorKind::AlreadyExists, op, to, "target exists"));
            }
            Some(target) if target == ino => {
                // Both names are the same inode: POSIX says do nothing.
                state.stats.renames = state.stats.renames.saturating_add(1);
                return Ok(());
            }
            Some(target) if state.is_dir(target) => {
                return Err(err(VfsErrorKind::Other, op, to, "target is a directory"));
            }
            _ => {}
        }
        if let Some(entries) = state.live_entries_mut(from_parent) {
            entries.remove(&from_name);
        }
        if let Some(entries) = state.live_entries_mut(to_parent) {
            entries.insert(to_name, ino);
        }
        state.stats.renames = state.stats.renames.saturating_add(1);
        state.sweep();
        Ok(())
    }

    /// Cuts the power: the disk becomes its durable state, handles and lock guards taken
    /// before go stale and locks are released. See the module docs.
    pub fn crash(&self) {
        let mut state = self.state();
        *state = state.crashed();
    }

    /// A new, independent filesystem equal to what [`MemFs::crash`] would leave now
    /// (including the fault settings and counters), leaving `self` untouched.
    pub fn durable_image(&self) -> MemFs {
        let crashed = self.state().crashed();
        // The image draws from its own stream, so the live disk and the image do not share
        // (and so do not depend on each other's) future fault choices.
        let mut crashed = crashed;
        let fork = crashed.rng.next_u64();
        crashed.rng = ChaCha8Rng::seed_from_u64(fork);
        MemFs { inner: Arc::new(Mutex::new(crashed)) }
    }

    /// Sets the fault knobs; also restarts the [`Faults::fail_sync_after`] countdown.
    pub fn set_faults(&self, faults: Faults) {
        let mut state = self.state();
        state.faults = faults;
        state.syncs_before_failure = faults.fail_sync_after;
    }

    /// Seeds the generator behind every fault choice (crash fates, EIO, rot, slowness…).
    pub fn set_seed(&self, seed: u64) {
        self.state().rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Lets bit rot ([`Faults::bitrot_bp`]) touch only files whose path (as opened) the
    /// filter accepts; `None` (the default) keeps every file safe from rot.
    pub fn set_rot_filter(&self, filter: Option<RotFilter>) {
        self.state().rot_filter = filter;
    }

    /// Sends the latency of slow calls ([`Faults::slow_io_bp`]) to `sink`.
    pub fn set_latency_sink(&self, sink: Option<LatencySink>) {
        self.state().latency_sink = sink;
    }

    /// The paths (as opened) of every file a bit rotted in, oldest first, across crashes.
    pub fn rotted(&self) -> Vec<PathBuf> {
        self.state().rotted.clone()
    }

    /// Replaces the failing hardware: clears latent sector errors and bad inodes. Data is
    /// not changed (rotten bits stay rotten).
    pub fn repair(&self) {
        let mut state = self.state();
        for node in state.inodes.values_mut() {
            if let Inode::File { bad_sectors, failing, .. } = node {
                bad_sectors.clear();
                *failing = false;
            }
        }
    }

    /// The fault knobs last set (the `fail_sync_after` countdown is not reflected here).
    pub fn faults(&self) -> Faults {
        self.state().faults
    }

    /// Cuts the power after `calls` more mutating IO calls (creates, writes, truncates,
    /// syncs, renames, unlinks, mkdirs): the `calls + 1`-th fails and so does everything
    /// after it. Take [`MemFs::durable_image`] to boot the machine again.
    pub fn cut_power_after(&self, calls: u64) {
        let mut state = self.state();
        state.power_cut_in = Some(calls);
        state.power_cut_dirty = None;
    }

    /// [`MemFs::cut_power_after`], except that when the countdown runs out the cut waits
    /// until `files_min` files have unsynced changes, for at most `patience` more mutating
    /// calls (then it cuts anyway). Most IO steps of a careful engine come right after a
    /// sync, so cuts at uniform steps rarely find unsynced data on several files; these do,
    /// and so exercise crash images that lose, tear and reorder changes across files.
    pub fn cut_power_when_dirty(&self, calls: u64, files_min: usize, patience: u64) {
        let mut state = self.state();
        state.power_cut_in = Some(calls);
        state.power_cut_dirty = Some((files_min, patience));
    }

    /// Whether a power cut armed by [`MemFs::cut_power_when_dirty`] has not happened yet.
    pub fn power_cut_waits(&self) -> bool {
        let state = self.state();
        state.power_cut_in.is_some() && state.power_cut_dirty.is_some()
    }

    /// Whether the power is off.
    pub fn is_dead(&self) -> bool {
        self.state().dead
    }

    /// The operation counters.
    pub fn stats(&self) -> MemStats {
        self.state().stats
    }

    /// Every file of the live (volatile) namespace with its current contents.
    pub fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let state = self.state();
        state
            .live_paths()
            .into_iter()
            .filter_map(|(path, ino)| match state.inodes.get(&ino) {
                Some(Inode::File { data, .. }) => Some((path, data.clone())),
                _ => None,
            })
            .collect()
    }

    /// Every directory of the live namespace, the root `/` included.
    pub fn dirs(&self) -> BTreeSet<PathBuf> {
        let state = self.state();
        state.live_paths().into_iter().filter(|(_, ino)| state.is_dir(*ino)).map(|(path, _)| path).collect()
    }

    /// The current contents of the file at `path`; `None` if it is missing or a directory.
    pub fn read(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let state = self.state();
        let ino = state.lookup(path.as_ref(), "read").ok()??;
        match state.inodes.get(&ino) {
            Some(Inode::File { data, .. }) => Some(data.clone()),
            _ => None,
        }
    }

    /// A tree listing of the live namespace for failure messages: sizes, whether file data
    /// is synced, and which entries are not (or no longer) durable.
    pub fn dump(&self) -> String {
        let state = self.state();
        let mut out = String::from("/\n");
        // Pending lines (depth, text, directory to descend into), popped depth first.
        let mut pending: Vec<(usize, String, Option<Ino>)> = dump_dir(&state, ROOT, 1);
        pending.reverse();
        let mut seen = BTreeSet::from([ROOT]);
        let bound = state
            .inodes
            .values()
            .map(|node| match node {
                Inode::Dir { live, durable } => live.len().saturating_add(durable.len()),
                Inode::File { .. } => 0,
            })
            .fold(1usize, usize::saturating_add);
        for _ in 0..bound {
            let Some((depth, line, subdir)) = pending.pop() else { break };
            let _ = writeln!(out, "{}{}", "  ".repeat(depth), line);
            if let Some(dir) = subdir {
                if seen.insert(dir) {
                    let mut children = dump_dir(&state, dir, depth.saturating_add(1));
                    children.reverse();
                    pending.extend(children);
                }
            }
        }
        let _ = writeln!(
            out,
            "(epoch {}, {} inodes, {} open, {} locked)",
            state.epoch,
            state.inodes.len(),
            state.open.len(),
            state.locks.len()
        );
        out
    }

    fn lock_guard(&self, ino: Ino, epoch: u64) -> MemLock {
        MemLock { fs: Arc::clone(&self.inner), ino, epoch }
    }
}

/// The lines of one directory for [`MemFs::dump`]: (depth, text, subdirectory to descend).
fn dump_dir(state: &State, dir: Ino, depth: usize) -> Vec<(usize, String, Option<Ino>)> {
    let Some(Inode::Dir { live, durable }) = state.inodes.get(&dir) else { return Vec::new() };
    let names: BTreeSet<&String> = live.keys().chain(durable.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let live_ino = live.get(name).copied();
        let durable_ino = durable.get(name).copied();
        let entry_note = match (live_ino, durable_ino) {
            (Some(a), Some(b)) if a == b => String::new(),
            (Some(_), Some(b)) => format!(" [entry durably names #{b}]"),
            (Some(_), None) => " [entry not durable]".to_string(),
            (None, Some(b)) => format!(" [removed; entry still durable -> #{b}]"),
            (None, None) => String::new(),
        };
        let shown = live_ino.or(durable_ino);
        let Some(ino) = shown else { continue };
        let (text, subdir) = match state.inodes.get(&ino) {
            Some(Inode::Dir { .. }) => (format!("{name}/ #{ino}{entry_note}"), live_ino),
            Some(Inode::File { data, durable, pending, .. }) => {
                let sync_note = if data == durable {
                    "synced".to_string()
                } else {
                    format!("dirty, durable {} bytes, {} pending", durable.len(), pending.len())
                };
                (format!("{name} #{ino} {} bytes ({sync_note}){entry_note}", data.len()), None)
            }
            None => (format!("{name} #{ino} (missing inode){entry_note}"), None),
        };
        out.push((depth, text, subdir));
    }
    out
}

impl Vfs for MemFs {
    fn sync_failures(&self) -> u64 {
        self.state().stats.sync_failures
    }

    fn open(&self, path: &Path, mode: OpenMode) -> VfsResult<Box<dyn VfsFile>> {
        let op = "open";
        let (ino, epoch) = {
            let mut state = self.state();
            if mode == OpenMode::Read || mode == OpenMode::ReadWrite {
                state.alive(op, path)?;
            } else {
                state.tick(op, path)?;
            }
            let (parent, name) = state.parent_of(path, op)?;
            let existing = state.live_entries(parent).and_then(|entries| entries.get(&name)).copied();
            let ino = match existing {
                Some(_) if mode == OpenMode::CreateNew => {
                    return Err(err(VfsErrorKind::AlreadyExists, op, path, "file exists"));
                }
                Some(ino) => {
                    match state.inodes.get_mut(&ino) {
                        Some(Inode::File { data, .. }) => {
                            if mode == OpenMode::CreateTruncate && !data.is_empty() {
                                data.clear();
                                state.push_pending(ino, |seq| Pending::SetLen { seq, len: 0, shrinks: true });
                            }
                        }
                        Some(Inode::Dir { .. }) => {
                            return Err(err(VfsErrorKind::Other, op, path, "is a directory"));
                        }
                        None => return Err(err(VfsErrorKind::Other, op, path, "dangling directory entry")),
                    }
                    ino
                }
                None => match mode {
                    OpenMode::Read | OpenMode::ReadWrite => {
                        return Err(err(VfsErrorKind::NotFound, op, path, "no such file"));
                    }
                    OpenMode::CreateOrOpen | OpenMode::CreateNew | OpenMode::CreateTruncate => {
                        state.link_new(parent, &name, Inode::empty_file(), op, path)?
                    }
                },
            };
            state.open_ref(ino);
            (ino, state.epoch)
        };
        Ok(Box::new(MemFile {
            fs: Arc::clone(&self.inner),
            ino,
            epoch,
            writable: mode != OpenMode::Read,
            path: path.to_path_buf(),
            poisoned: AtomicBool::new(false),
        }))
    }

    fn create_dir(&self, path: &Path) -> VfsResult<()> {
        let op = "mkdir";
        let mut state = self.state();
        state.tick(op, path)?;
        let names = split(path, op)?;
        if names.is_empty() {
            return Err(err(VfsErrorKind::AlreadyExists, op, path, "the root always exists"));
        }
        let (parent, name) = state.parent_of(path, op)?;
        if state.live_entries(parent).is_some_and(|entries| entries.contains_key(&name)) {
            return Err(err(VfsErrorKind::AlreadyExists, op, path, "already exists"));
        }
        state.link_new(parent, &name, Inode::empty_dir(), op, path)?;
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> VfsResult<()> {
        let op = "unlink";
        let mut state = self.state();
        state.tick(op, path)?;
        let (parent, name) = state.parent_of(path, op)?;
        let Some(ino) = state.live_entries(parent).and_then(|entries| entries.get(&name)).copied() else {
            return Err(err(VfsErrorKind::NotFound, op, path, "no such file"));
        };
        if state.is_dir(ino) {
            return Err(err(VfsErrorKind::Other, op, path, "is a directory"));
        }
        if let Some(entries) = state.live_entries_mut(parent) {
            entries.remove(&name);
        }
        state.sweep();
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> VfsResult<()> {
        let op = "rmdir";
        let mut state = self.state();
        state.tick(op, path)?;
        let (parent, name) = state.parent_of(path, op)?;
        let Some(ino) = state.live_entries(parent).and_then(|entries| entries.get(&name)).copied() else {
            return Err(err(VfsErrorKind::NotFound, op, path, "no such directory"));
        };
        match state.live_entries(ino) {
            None => return Err(err(VfsErrorKind::Other, op, path, "not a directory")),
            Some(entries) if !entries.is_empty() => {
                return Err(err(VfsErrorKind::Other, op, path, "directory not empty"));
            }
            Some(_) => {}
        }
        if let Some(entries) = state.live_entries_mut(parent) {
            entries.remove(&name);
        }
        state.sweep();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> VfsResult<()> {
        self.rename_as(from, to, true)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> VfsResult<()> {
        self.rename_as(from, to, false)
    }

    fn sync_dir(&self, path: &Path) -> VfsResult<()> {
        let op = "sync dir";
        let mut state = self.state();
        state.tick(op, path)?;
        let Some(ino) = state.lookup(path, op)? else {
            return Err(err(VfsErrorKind::NotFound, op, path, "no such directory"));
        };
        if !state.is_dir(ino) {
            return Err(err(VfsErrorKind::Other, op, path, "not a directory"));
        }
        state.stats.dir_syncs = state.stats.dir_syncs.saturating_add(1);
        state.maybe_slow();
        if state.chance(|f| f.sync_eio_bp) {
            state.stats.sync_failures = state.stats.sync_failures.saturating_add(1);
            return Err(err(VfsErrorKind::Other, op, path, "EIO"));
        }
        if state.faults.lie_sync_dir {
            return Ok(());
        }
        if let Some(Inode::Dir { live, durable }) = state.inodes.get_mut(&ino) {
            *durable = live.clone();
        }
        state.sweep();
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> VfsResult<Vec<DirEntry>> {
        let op = "list";
        let state = self.state();
        state.alive(op, path)?;
        let Some(ino) = state.lookup(path, op)? else {
            return Err(err(VfsErrorKind::NotFound, op, path, "no such directory"));
        };
        let Some(entries) = state.live_entries(ino) else {
            return Err(err(VfsErrorKind::Other, op, path, "not a directory"));
        };
        // BTreeMap order is name order, which is also `DirEntry` order (names are unique).
        Ok(entries
            .iter()
            .map(|(name, child)| DirEntry { name: name.clone(), is_dir: state.is_dir(*child) })
            .collect())
    }

    fn file_len(&self, path: &Path) -> VfsResult<Option<u64>> {
        let state = self.state();
        state.alive("stat", path)?;
        match state.lookup(path, "stat") {
            Ok(Some(ino)) => Ok(Some(match state.inodes.get(&ino) {
                Some(Inode::File { data, .. }) => data.len() as u64,
                _ => 0,
            })),
            Ok(None) => Ok(None),
            Err(e) if e.kind == VfsErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn exists(&self, path: &Path) -> VfsResult<bool> {
        Ok(self.file_len(path)?.is_some())
    }

    /// Records the flag on the inode (it follows renames and survives crashes, like a mode
    /// change the file system journals). Permissions are not enforced: the simulated disk
    /// behaves as it would for the file's owner with the capability to override them. The
    /// flag tells the rot filter which files are sealed.
    fn set_read_only(&self, path: &Path, read_only: bool) -> VfsResult<()> {
        let op = "chmod";
        let mut state = self.state();
        state.alive(op, path)?;
        let ino =
            state.lookup(path, op)?.ok_or_else(|| err(VfsErrorKind::NotFound, op, path, "no such file"))?;
        match state.inodes.get_mut(&ino) {
            Some(Inode::File { read_only: flag, .. }) => {
                *flag = read_only;
                Ok(())
            }
            _ => Err(err(VfsErrorKind::Other, op, path, "is a directory")),
        }
    }

    fn lock_exclusive(&self, path: &Path) -> VfsResult<Box<dyn LockGuard>> {
        let op = "lock";
        let (ino, epoch) = {
            let mut state = self.state();
            let (parent, name) = state.parent_of(path, op)?;
            let ino = match state.live_entries(parent).and_then(|entries| entries.get(&name)).copied() {
                Some(ino) if state.is_dir(ino) => {
                    return Err(err(VfsErrorKind::Other, op, path, "is a directory"));
                }
                Some(ino) => ino,
                None => state.link_new(parent, &name, Inode::empty_file(), op, path)?,
            };
            if state.locks.contains(&ino) {
                return Err(err(
                    VfsErrorKind::Locked,
                    op,
                    path,
                    format!("held by pid {}", std::process::id()),
                ));
            }
            state.locks.insert(ino);
            state.open_ref(ino);
            (ino, state.epoch)
        };
        Ok(Box::new(self.lock_guard(ino, epoch)))
    }
}

/// An open file of a [`MemFs`].
struct MemFile {
    fs: Arc<Mutex<State>>,
    ino: Ino,
    epoch: u64,
    writable: bool,
    path: PathBuf,
    poisoned: AtomicBool,
}

impl MemFile {
    /// Locks the disk after checking the handle is neither stale nor poisoned.
    fn enter(&self, op: &'static str) -> VfsResult<MutexGuard<'_, State>> {
        let state = lock_state(&self.fs);
        state.alive(op, &self.path)?;
        if state.epoch != self.epoch {
            return Err(err(VfsErrorKind::Other, op, &self.path, STALE_DETAIL));
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(err(
                VfsErrorKind::Poisoned,
                op,
                &self.path,
                "an earlier sync failed on this file; reopen the database",
            ));
        }
        Ok(state)
    }

    fn check_writable(&self, op: &'static str) -> VfsResult<()> {
        if self.writable {
            Ok(())
        } else {
            Err(err(VfsErrorKind::Other, op, &self.path, "file was opened read-only"))
        }
    }

    fn vanished(&self, op: &'static str) -> VfsError {
        err(VfsErrorKind::Other, op, &self.path, "inode vanished")
    }
}

impl MemFile {
    fn eio(&self, state: &mut State, op: &'static str, what: &str) -> VfsError {
        state.stats.io_errors = state.stats.io_errors.saturating_add(1);
        err(VfsErrorKind::Other, op, &self.path, format!("EIO ({what})"))
    }

    /// Fails the sync: drops the inode's pending data, poisons the handle (fail-stop).
    fn fail_sync(&self, state: &mut State, op: &'static str) -> VfsError {
        if let Some(Inode::File { data, durable, pending, .. }) = state.inodes.get_mut(&self.ino) {
            data.clone_from(durable);
            pending.clear();
        }
        self.poisoned.store(true, Ordering::Release);
        state.stats.sync_failures = state.stats.sync_failures.saturating_add(1);
        err(VfsErrorKind::Other, op, &self.path, "EIO")
    }

    /// Read-time faults on `start..start + n` of a file of `len` bytes: latent sector
    /// errors (new and old) and bit rot. Returns the error the read must fail with, if any.
    fn read_faults(&self, state: &mut State, start: u64, n: usize) -> Option<VfsError> {
        let op = "read";
        let span = sector_span(start, n);
        if span.is_empty() {
            return None;
        }
        if state.chance(|f| f.latent_sector_bp) {
            let sector = state.rng.random_range(span.clone());
            if let Some(Inode::File { bad_sectors, .. }) = state.inodes.get_mut(&self.ino) {
                bad_sectors.insert(sector);
            }
        }
        let bad = match state.inodes.get(&self.ino) {
            Some(Inode::File { bad_sectors, .. }) => bad_sectors.range(span).next().copied(),
            _ => None,
        };
        if let Some(sector) = bad {
            return Some(self.eio(state, op, &format!("latent error in sector {sector}")));
        }
        let read_only = matches!(state.inodes.get(&self.ino), Some(Inode::File { read_only: true, .. }));
        let rots = state.rot_filter.is_some_and(|accepts| accepts(&self.path, read_only));
        if rots && state.chance(|f| f.bitrot_bp) {
            let pos = start.saturating_add(state.rng.random_range(0..n as u64));
            let mask = 1u8 << state.rng.random_range(0..8u32);
            if let (Some(Inode::File { data, durable, .. }), Ok(pos)) =
                (state.inodes.get_mut(&self.ino), usize::try_from(pos))
            {
                for image in [data, durable] {
                    if let Some(byte) = image.get_mut(pos) {
                        *byte ^= mask;
                    }
                }
            }
            state.stats.rot_flips = state.stats.rot_flips.saturating_add(1);
            state.rotted.push(self.path.clone());
        }
        None
    }

    /// How many of `len` bytes this call moves: all, or (a short call) at least one.
    fn io_len(state: &mut State, len: usize) -> usize {
        if len > 1 && state.chance(|f| f.short_io_bp) {
            state.stats.short_ios = state.stats.short_ios.saturating_add(1);
            state.rng.random_range(1..len)
        } else {
            len
        }
    }
}

impl VfsFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
        let op = "read";
        let mut state = self.enter(op)?;
        state.maybe_slow();
        if state.chance(|f| f.read_eio_bp) {
            return Err(self.eio(&mut state, op, "transient"));
        }
        let len = match state.inodes.get(&self.ino) {
            Some(Inode::File { data, .. }) => data.len(),
            _ => return Err(self.vanished(op)),
        };
        let Ok(start) = usize::try_from(offset) else { return Ok(0) };
        let available = len.saturating_sub(start);
        let wanted = available.min(buf.len());
        if wanted == 0 {
            return Ok(0);
        }
        let n = MemFile::io_len(&mut state, wanted);
        if let Some(e) = self.read_faults(&mut state, offset, n) {
            return Err(e);
        }
        let Some(Inode::File { data, .. }) = state.inodes.get(&self.ino) else {
            return Err(self.vanished(op));
        };
        let (Some(src), Some(dst)) = (data.get(start..start.saturating_add(n)), buf.get_mut(..n)) else {
            return Ok(0);
        };
        dst.copy_from_slice(src);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> VfsResult<usize> {
        let op = "write";
        self.check_writable(op)?;
        let mut state = self.enter(op)?;
        state.tick(op, &self.path)?;
        if buf.is_empty() {
            return Ok(0);
        }
        state.maybe_slow();
        let (old_len, failing) = match state.inodes.get(&self.ino) {
            Some(Inode::File { data, failing, .. }) => (data.len() as u64, *failing),
            _ => return Err(self.vanished(op)),
        };
        if failing {
            return Err(self.eio(&mut state, op, "the inode is bad"));
        }
        if state.chance(|f| f.bad_inode_bp) {
            if let Some(Inode::File { failing, .. }) = state.inodes.get_mut(&self.ino) {
                *failing = true;
            }
            return Err(self.eio(&mut state, op, "the inode went bad"));
        }
        if state.chance(|f| f.write_eio_bp) {
            return Err(self.eio(&mut state, op, "transient"));
        }
        let n = MemFile::io_len(&mut state, buf.len());
        let Some(bytes) = buf.get(..n) else { return Err(self.vanished(op)) };
        let Some(end) = offset.checked_add(n as u64) else {
            return Err(err(VfsErrorKind::Other, op, &self.path, "offset overflow"));
        };
        state.check_growth(old_len, end, op, &self.path)?;
        if usize::try_from(end).is_err() {
            return Err(err(VfsErrorKind::Other, op, &self.path, "offset does not fit in memory"));
        }
        let Some(Inode::File { data, bad_sectors, .. }) = state.inodes.get_mut(&self.ino) else {
            return Err(self.vanished(op));
        };
        put(data, offset, bytes);
        // A write covering a whole bad sector lets the drive remap it.
        bad_sectors.retain(|s| !(s * SECTOR_BYTES >= offset && (s + 1) * SECTOR_BYTES <= end));
        state.push_pending(self.ino, |seq| Pending::Write { seq, offset, bytes: bytes.to_vec() });
        state.stats.writes = state.stats.writes.saturating_add(1);
        Ok(n)
    }

    fn set_len(&self, len: u64) -> VfsResult<()> {
        let op = "truncate";
        self.check_writable(op)?;
        let mut state = self.enter(op)?;
        state.tick(op, &self.path)?;
        let old_len = match state.inodes.get(&self.ino) {
            Some(Inode::File { data, .. }) => data.len() as u64,
            _ => return Err(self.vanished(op)),
        };
        state.check_growth(old_len, len, op, &self.path)?;
        let Ok(new_len) = usize::try_from(len) else {
            return Err(err(VfsErrorKind::Other, op, &self.path, "length does not fit in memory"));
        };
        let Some(Inode::File { data, .. }) = state.inodes.get_mut(&self.ino) else {
            return Err(self.vanished(op));
        };
        data.resize(new_len, 0);
        if len != old_len {
            state.push_pending(self.ino, |seq| Pending::SetLen { seq, len, shrinks: len < old_len });
        }
        Ok(())
    }

    fn len(&self) -> VfsResult<u64> {
        let op = "stat";
        let state = self.enter(op)?;
        match state.inodes.get(&self.ino) {
            Some(Inode::File { data, .. }) => Ok(data.len() as u64),
            _ => Err(self.vanished(op)),
        }
    }

    fn sync(&self) -> VfsResult<()> {
        let op = "sync";
        let mut state = self.enter(op)?;
        state.tick(op, &self.path)?;
        state.stats.syncs = state.stats.syncs.saturating_add(1);
        state.maybe_slow();
        let aimed_at = state
            .faults
            .fail_sync_suffix
            .is_none_or(|suffix| self.path.to_str().is_some_and(|p| p.ends_with(suffix)));
        match state.syncs_before_failure {
            Some(0) if aimed_at => {
                state.syncs_before_failure = None;
                return Err(self.fail_sync(&mut state, op));
            }
            Some(n) if aimed_at => state.syncs_before_failure = Some(n.saturating_sub(1)),
            _ => {}
        }
        let failing = matches!(state.inodes.get(&self.ino), Some(Inode::File { failing: true, .. }));
        if failing || state.chance(|f| f.sync_eio_bp) {
            return Err(self.fail_sync(&mut state, op));
        }
        if state.faults.lie_sync {
            return Ok(());
        }
        match state.inodes.get_mut(&self.ino) {
            Some(Inode::File { data, durable, pending, .. }) => {
                durable.clone_from(data);
                pending.clear();
                Ok(())
            }
            _ => Err(self.vanished(op)),
        }
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        let mut state = lock_state(&self.fs);
        if state.epoch == self.epoch {
            state.close_ref(self.ino);
            state.sweep();
        }
    }
}

/// A lock taken by [`MemFs::lock_exclusive`](Vfs::lock_exclusive); released on drop (or by
/// a crash, after which dropping it does nothing).
struct MemLock {
    fs: Arc<Mutex<State>>,
    ino: Ino,
    epoch: u64,
}

impl LockGuard for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut state = lock_state(&self.fs);
        if state.epoch == self.epoch {
            state.locks.remove(&self.ino);
            state.close_ref(self.ino);
            state.sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sila_sqlite::vfs::{read_file, write_all_at, write_file};

    fn p(path: &str) -> &Path {
        Path::new(path)
    }

    fn kind<T>(result: VfsResult<T>) -> Option<VfsErrorKind> {
        result.err().map(|e| e.kind)
    }

    fn detail<T>(result: VfsResult<T>) -> Option<String> {
        result.err().map(|e| e.detail)
    }

    /// Writes `bytes` to a fresh file at `path` and syncs the file (not its directory).
    fn put_synced(fs: &MemFs, path: &str, bytes: &[u8]) -> VfsResult<()> {
        let file = write_file(fs, p(path), bytes)?;
        file.sync()
    }

    /// A durable directory `/d` under the root.
    fn fs_with_dir() -> VfsResult<MemFs> {
        let fs = MemFs::new();
        fs.create_dir(p("/d"))?;
        fs.sync_dir(p("/"))?;
        Ok(fs)
    }

    #[test]
    fn unsynced_write_is_lost_at_crash() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/a", b"v1")?;
        fs.sync_dir(p("/d"))?;
        let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
        write_all_at(file.as_ref(), b"v2-longer", 0)?;
        assert_eq!(fs.read("/d/a").as_deref(), Some(&b"v2-longer"[..]));
        fs.crash();
        assert_eq!(fs.read("/d/a").as_deref(), Some(&b"v1"[..]), "{}", fs.dump());
        Ok(())
    }

    #[test]
    fn synced_write_survives_crash() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/a", b"v1")?;
        fs.sync_dir(p("/d"))?;
        let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
        write_all_at(file.as_ref(), b"v2", 0)?;
        file.set_len(5)?;
        file.sync()?;
        fs.crash();
        assert_eq!(fs.read("/d/a").as_deref(), Some(&b"v2\0\0\0"[..]), "{}", fs.dump());
        Ok(())
    }

    #[test]
    fn synced_file_without_sync_dir_of_parent_is_gone_after_crash() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/a", b"data")?;
        assert!(fs.exists(p("/d/a"))?);
        fs.crash();
        assert!(!fs.exists(p("/d/a"))?, "{}", fs.dump());
        assert!(fs.exists(p("/d"))?);
        let inodes = lock_state(&fs.inner).inodes.len();
        assert_eq!(inodes, 2, "the orphaned inode is dropped: {}", fs.dump());
        Ok(())
    }

    #[test]
    fn rename_noreplace_refuses_an_existing_target_and_is_not_durable_until_sync_dir() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/tmp", b"new")?;
        put_synced(&fs, "/d/dest", b"theirs")?;
        fs.sync_dir(p("/d"))?;
        let refused = fs.rename_noreplace(p("/d/tmp"), p("/d/dest"));
        assert_eq!(refused.map_err(|e| e.kind), Err(VfsErrorKind::AlreadyExists));
        assert_eq!(fs.read("/d/dest").as_deref(), Some(&b"theirs"[..]));
        assert_eq!(fs.read("/d/tmp").as_deref(), Some(&b"new"[..]));
        fs.rename_noreplace(p("/d/tmp"), p("/d/other"))?;
        assert_eq!(fs.read("/d/other").as_deref(), Some(&b"new"[..]));
        assert!(!fs.exists(p("/d/tmp"))?);
        fs.crash();
        assert_eq!(fs.read("/d/tmp").as_deref(), Some(&b"new"[..]), "{}", fs.dump());
        assert_eq!(fs.read("/d/other"), None, "{}", fs.dump());
        Ok(())
    }

    #[test]
    fn rename_is_not_durable_until_sync_dir() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/current", b"old")?;
        put_synced(&fs, "/d/tmp", b"")?;
        fs.sync_dir(p("/d"))?; // both names durable; tmp durably empty
        let tmp = fs.open(p("/d/tmp"), OpenMode::ReadWrite)?;
        write_all_at(tmp.as_ref(), b"new", 0)?;
        tmp.sync()?;
        fs.rename(p("/d/tmp"), p("/d/current"))?;
        assert_eq!(fs.read("/d/current").as_deref(), Some(&b"new"[..]));
        assert!(!fs.exists(p("/d/tmp"))?);
        fs.crash();
        // Old entries come back; the inode under `tmp` carries the data synced through it.
        assert_eq!(fs.read("/d/current").as_deref(), Some(&b"old"[..]), "{}", fs.dump());
        assert_eq!(fs.read("/d/tmp").as_deref(), Some(&b"new"[..]), "{}", fs.dump());
        Ok(())
    }

    #[test]
    fn renamed_file_crashed_back_to_old_name_keeps_its_durable_data() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/a", b"synced")?;
        fs.sync_dir(p("/d"))?;
        let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
        write_all_at(file.as_ref(), b"unsynced", 0)?;
        fs.rename(p("/d/a"), p("/d/b"))?;
        fs.crash();
        assert_eq!(fs.read("/d/a").as_deref(), Some(&b"synced"[..]), "{}", fs.dump());
        assert_eq!(fs.read("/d/b"), None);
        Ok(())
    }

    #[test]
    fn rename_then_sync_dir_is_durable() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/current", b"old")?;
        fs.sync_dir(p("/d"))?;
        put_synced(&fs, "/d/tmp", b"new")?;
        fs.rename(p("/d/tmp"), p("/d/current"))?;
        fs.sync_dir(p("/d"))?;
        fs.crash();
        assert_eq!(fs.read("/d/current").as_deref(), Some(&b"new"[..]), "{}", fs.dump());
        assert!(!fs.exists(p("/d/tmp"))?);
        let names: Vec<String> = fs.list_dir(p("/d"))?.into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["current".to_string()]);
        Ok(())
    }

    #[test]
    fn unlink_is_undone_by_crash_unless_dir_synced() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/a", b"keep")?;
        put_synced(&fs, "/d/b", b"gone")?;
        fs.sync_dir(p("/d"))?;
        fs.remove_file(p("/d/a"))?;
        fs.remove_file(p("/d/b"))?;
        assert_eq!(fs.read("/d/a"), None);
        fs.crash();
        assert_eq!(fs.read("/d/a").as_deref(), Some(&b"keep"[..]), "{}", fs.dump());
        assert_eq!(fs.read("/d/b").as_deref(), Some(&b"gone"[..]));
        fs.remove_file(p("/d/b"))?;
        fs.sync_dir(p("/d"))?;
        fs.crash();
        assert_eq!(fs.read("/d/a").as_deref(), Some(&b"keep"[..]));
        assert_eq!(fs.read("/d/b"), None, "{}", fs.dump());
        Ok(())
    }

    #[test]
    fn nested_dir_with_unsynced_entry_vanishes_with_its_contents() -> VfsResult<()> {
        let fs = MemFs::new();
        fs.create_dir(p("/a"))?;
        fs.create_dir(p("/a/b"))?;
        put_synced(&fs, "/a/b/f", b"x")?;
        fs.sync_dir(p("/a/b"))?;
        fs.sync_dir(p("/a"))?;
        // `/` itself was never synced, so `/a` is not durably linked.
        fs.crash();
        assert_eq!(fs.dirs(), BTreeSet::from([PathBuf::from("/")]), "{}", fs.dump());
        assert!(fs.files().is_empty());
        // Once the whole chain is synced it all survives.
        fs.create_dir(p("/a"))?;
        fs.create_dir(p("/a/b"))?;
        put_synced(&fs, "/a/b/f", b"x")?;
        fs.sync_dir(p("/a/b"))?;
        fs.sync_dir(p("/a"))?;
        fs.sync_dir(p("/"))?;
        fs.crash();
        assert_eq!(fs.files(), BTreeMap::from([(PathBuf::from("/a/b/f"), b"x".to_vec())]));
        Ok(())
    }

    #[test]
    fn recreated_directory_does_not_resurrect_old_entries() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/old", b"1")?;
        fs.sync_dir(p("/d"))?;
        fs.remove_file(p("/d/old"))?;
        fs.remove_dir(p("/d"))?;
        fs.create_dir(p("/d"))?;
        fs.sync_dir(p("/"))?; // the new, empty `/d` is durable; its entries never were
        fs.crash();
        assert!(fs.exists(p("/d"))?);
        assert!(fs.list_dir(p("/d"))?.is_empty(), "{}", fs.dump());
        Ok(())
    }

    #[test]
    fn durable_image_does_not_disturb_the_live_fs() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/a", b"durable")?;
        fs.sync_dir(p("/d"))?;
        let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
        write_all_at(file.as_ref(), b"volatile", 0)?;
        put_synced(&fs, "/d/b", b"unlinked-in-image")?;
        let before = fs.files();
        let image = fs.durable_image();
        assert_eq!(fs.files(), before);
        assert_eq!(
            image.files(),
            BTreeMap::from([(PathBuf::from("/d/a"), b"durable".to_vec())]),
            "{}",
            image.dump()
        );
        // The live handle still works; the image is independent both ways.
        assert_eq!(file.len()?, 8);
        write_file(&image, p("/d/c"), b"only in image")?;
        assert!(!fs.exists(p("/d/c"))?);
        write_all_at(file.as_ref(), b"V", 0)?;
        assert_eq!(image.read("/d/a").as_deref(), Some(&b"durable"[..]));
        // And it equals what a real crash leaves.
        let again = fs.durable_image();
        fs.crash();
        assert_eq!(fs.files(), again.files());
        assert_eq!(fs.dirs(), again.dirs());
        Ok(())
    }

    #[test]
    fn lie_sync_dir_makes_renames_vanish() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/current", b"old")?;
        fs.sync_dir(p("/d"))?;
        fs.set_faults(Faults { lie_sync_dir: true, ..Faults::default() });
        put_synced(&fs, "/d/tmp", b"new")?;
        fs.rename(p("/d/tmp"), p("/d/current"))?;
        fs.sync_dir(p("/d"))?;
        assert_eq!(fs.stats().dir_syncs, 3);
        fs.crash();
        assert_eq!(fs.read("/d/current").as_deref(), Some(&b"old"[..]), "{}", fs.dump());
        Ok(())
    }

    #[test]
    fn lie_sync_loses_data() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        fs.set_faults(Faults { lie_sync: true, ..Faults::default() });
        put_synced(&fs, "/d/a", b"data")?;
        fs.sync_dir(p("/d"))?;
        fs.crash();
        assert_eq!(fs.read("/d/a").as_deref(), Some(&b""[..]), "{}", fs.dump());
        Ok(())
    }

    #[test]
    fn failed_sync_poisons_the_handle_and_drops_pending_data() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        fs.set_faults(Faults { fail_sync_after: Some(1), ..Faults::default() });
        let file = fs.open(p("/d/a"), OpenMode::CreateNew)?;
        write_all_at(file.as_ref(), b"first", 0)?;
        file.sync()?; // the 1st sync succeeds
        write_all_at(file.as_ref(), b"SECOND", 0)?;
        let failed = file.sync(); // the 2nd fails
        assert_eq!(
            failed.as_ref().err().map(|e| (e.kind, e.detail.as_str())),
            Some((VfsErrorKind::Other, "EIO"))
        );
        assert_eq!(fs.read("/d/a").as_deref(), Some(&b"first"[..]), "unsynced data dropped");
        let mut buf = [0u8; 8];
        assert_eq!(kind(file.read_at(&mut buf, 0)), Some(VfsErrorKind::Poisoned));
        assert_eq!(kind(file.write_at(b"x", 0)), Some(VfsErrorKind::Poisoned));
        assert_eq!(kind(file.set_len(0)), Some(VfsErrorKind::Poisoned));
        assert_eq!(kind(file.len()), Some(VfsErrorKind::Poisoned));
        assert_eq!(kind(file.sync()), Some(VfsErrorKind::Poisoned), "no retry-then-succeed");
        // One-shot: a fresh handle syncs again.
        let other = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
        write_all_at(other.as_ref(), b"third", 0)?;
        other.sync()?;
        assert_eq!(fs.stats().syncs, 3);
        Ok(())
    }

    #[test]
    fn capacity_refuses_growth_and_writes_nothing() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        fs.set_faults(Faults { capacity_bytes: Some(10), ..Faults::default() });
        let a = fs.open(p("/d/a"), OpenMode::CreateNew)?;
        assert_eq!(a.write_at(b"12345678", 0)?, 8);
        assert_eq!(kind(a.write_at(b"9abc", 7)), Some(VfsErrorKind::NoSpace));
        assert_eq!(fs.read("/d/a").as_deref(), Some(&b"12345678"[..]), "nothing written");
        assert_eq!(kind(a.set_len(11)), Some(VfsErrorKind::NoSpace));
        let b = fs.open(p("/d/b"), OpenMode::CreateNew)?;
        assert_eq!(kind(b.write_at(b"abc", 0)), Some(VfsErrorKind::NoSpace));
        assert_eq!(b.write_at(b"ab", 0)?, 2);
        assert_eq!(a.write_at(b"XY", 0)?, 2, "overwriting in place needs no space");
        drop(b);
        fs.remove_file(p("/d/b"))?;
        a.set_len(10)?;
        assert_eq!(fs.read("/d/a").map(|d| d.len()), Some(10));
        Ok(())
    }

    #[test]
    fn handles_are_stale_after_crash() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/a", b"abc")?;
        fs.sync_dir(p("/d"))?;
        let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
        fs.crash();
        let mut buf = [0u8; 3];
        assert_eq!(detail(file.read_at(&mut buf, 0)).as_deref(), Some(STALE_DETAIL));
        assert_eq!(kind(file.write_at(b"x", 0)), Some(VfsErrorKind::Other));
        assert_eq!(detail(file.sync()).as_deref(), Some(STALE_DETAIL));
        assert_eq!(detail(file.len()).as_deref(), Some(STALE_DETAIL));
        assert_eq!(detail(file.set_len(0)).as_deref(), Some(STALE_DETAIL));
        drop(file);
        assert_eq!(read_file(&fs, p("/d/a"))?, b"abc".to_vec());
        Ok(())
    }

    #[test]
    fn lock_is_exclusive_until_dropped_or_crash() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let first = fs.lock_exclusive(p("/d/LOCK"))?;
        assert!(fs.exists(p("/d/LOCK"))?, "lock file is created");
        let second = fs.lock_exclusive(p("/d/LOCK"));
        let expected = format!("held by pid {}", std::process::id());
        assert_eq!(second.err().map(|e| (e.kind, e.detail)), Some((VfsErrorKind::Locked, expected)));
        drop(first);
        let again = fs.lock_exclusive(p("/d/LOCK"))?;
        fs.sync_dir(p("/d"))?;
        fs.crash();
        let after_crash = fs.lock_exclusive(p("/d/LOCK"))?;
        drop(again); // a stale guard must not release the new holder's lock
        assert_eq!(kind(fs.lock_exclusive(p("/d/LOCK"))), Some(VfsErrorKind::Locked));
        drop(after_crash);
        assert!(fs.lock_exclusive(p("/d/LOCK")).is_ok());
        Ok(())
    }

    #[test]
    fn reads_past_eof_and_writes_past_eof_zero_fill() -> VfsResult<()> {
        let fs = MemFs::new();
        let file = fs.open(p("/f"), OpenMode::CreateOrOpen)?;
        assert_eq!(file.write_at(b"ab", 4)?, 2);
        assert_eq!(fs.read("/f").as_deref(), Some(&b"\0\0\0\0ab"[..]));
        let mut buf = [9u8; 4];
        assert_eq!(file.read_at(&mut buf, 6)?, 0);
        assert_eq!(file.read_at(&mut buf, 100)?, 0);
        assert_eq!(file.read_at(&mut buf, u64::MAX)?, 0);
        assert_eq!(file.read_at(&mut buf, 3)?, 3);
        assert_eq!(buf, [0, b'a', b'b', 9]);
        assert_eq!(kind(file.write_at(b"x", u64::MAX)), Some(VfsErrorKind::Other));
        assert_eq!(kind(file.set_len(FILE_BYTES_MAX + 1)), Some(VfsErrorKind::Other));
        file.set_len(1)?;
        assert_eq!(file.len()?, 1);
        Ok(())
    }

    #[test]
    fn open_modes() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        assert_eq!(kind(fs.open(p("/d/a"), OpenMode::Read)), Some(VfsErrorKind::NotFound));
        assert_eq!(kind(fs.open(p("/d/a"), OpenMode::ReadWrite)), Some(VfsErrorKind::NotFound));
        assert_eq!(kind(fs.open(p("/nope/a"), OpenMode::CreateOrOpen)), Some(VfsErrorKind::NotFound));
        write_file(&fs, p("/d/a"), b"hello")?;
        assert_eq!(kind(fs.open(p("/d/a"), OpenMode::CreateNew)), Some(VfsErrorKind::AlreadyExists));
        assert_eq!(fs.open(p("/d/a"), OpenMode::CreateOrOpen)?.len()?, 5);
        let ro = fs.open(p("/d/a"), OpenMode::Read)?;
        assert_eq!(kind(ro.write_at(b"x", 0)), Some(VfsErrorKind::Other));
        assert_eq!(kind(ro.set_len(0)), Some(VfsErrorKind::Other));
        assert_eq!(fs.open(p("/d/a"), OpenMode::CreateTruncate)?.len()?, 0);
        assert_eq!(ro.len()?, 0, "same inode");
        assert_eq!(kind(fs.open(p("/d"), OpenMode::Read)), Some(VfsErrorKind::Other));
        assert_eq!(kind(fs.open(p("/"), OpenMode::Read)), Some(VfsErrorKind::Other));
        assert_eq!(kind(fs.open(p("d/a"), OpenMode::Read)), Some(VfsErrorKind::Other), "relative");
        assert_eq!(kind(fs.open(p("/d/../d/a"), OpenMode::Read)), Some(VfsErrorKind::Other));
        assert_eq!(kind(fs.open(p("/d/a/x"), OpenMode::CreateOrOpen)), Some(VfsErrorKind::Other));
        Ok(())
    }

    #[test]
    fn namespace_operations() -> VfsResult<()> {
        let fs = MemFs::new();
        assert!(fs.exists(p("/"))?);
        assert_eq!(kind(fs.create_dir(p("/"))), Some(VfsErrorKind::AlreadyExists));
        assert_eq!(kind(fs.create_dir(p("/a/b"))), Some(VfsErrorKind::NotFound));
        fs.create_dir(p("/a"))?;
        assert_eq!(kind(fs.create_dir(p("/a"))), Some(VfsErrorKind::AlreadyExists));
        fs.create_dir(p("/a/z"))?;
        write_file(&fs, p("/a/m"), b"1")?;
        write_file(&fs, p("/a/b"), b"22")?;
        let listing = fs.list_dir(p("/a"))?;
        let expected = vec![
            DirEntry { name: "b".into(), is_dir: false },
            DirEntry { name: "m".into(), is_dir: false },
            DirEntry { name: "z".into(), is_dir: true },
        ];
        assert_eq!(listing, expected);
        assert_eq!(kind(fs.list_dir(p("/a/b"))), Some(VfsErrorKind::Other));
        assert_eq!(kind(fs.list_dir(p("/x"))), Some(VfsErrorKind::NotFound));
        assert_eq!(fs.file_len(p("/a/b"))?, Some(2));
        assert_eq!(fs.file_len(p("/a/nope"))?, None);
        assert_eq!(fs.file_len(p("/nope/nope"))?, None);
        assert_eq!(kind(fs.remove_dir(p("/a"))), Some(VfsErrorKind::Other), "not empty");
        assert_eq!(kind(fs.remove_dir(p("/a/b"))), Some(VfsErrorKind::Other), "a file");
        assert_eq!(kind(fs.remove_file(p("/a/z"))), Some(VfsErrorKind::Other), "a dir");
        assert_eq!(kind(fs.remove_file(p("/a/nope"))), Some(VfsErrorKind::NotFound));
        assert_eq!(kind(fs.rename(p("/a/z"), p("/a/y"))), Some(VfsErrorKind::Other), "dir rename");
        assert_eq!(kind(fs.rename(p("/a/b"), p("/a/z"))), Some(VfsErrorKind::Other), "onto a dir");
        assert_eq!(kind(fs.rename(p("/a/nope"), p("/a/y"))), Some(VfsErrorKind::NotFound));
        assert_eq!(kind(fs.rename(p("/a/b"), p("/q/y"))), Some(VfsErrorKind::NotFound));
        fs.rename(p("/a/b"), p("/a/m"))?;
        assert_eq!(fs.read("/a/m").as_deref(), Some(&b"22"[..]));
        fs.rename(p("/a/m"), p("/m"))?;
        assert_eq!(fs.stats().renames, 2);
        assert_eq!(fs.stats().writes, 2);
        fs.remove_dir(p("/a/z"))?;
        fs.remove_file(p("/m"))?;
        fs.remove_dir(p("/a"))?;
        assert_eq!(kind(fs.remove_dir(p("/"))), Some(VfsErrorKind::Other));
        assert_eq!(kind(fs.sync_dir(p("/a"))), Some(VfsErrorKind::NotFound));
        assert!(fs.files().is_empty());
        assert_eq!(fs.dirs().len(), 1);
        Ok(())
    }

    #[test]
    fn unlinked_open_file_stays_usable_and_is_collected_on_close() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let file = write_file(&fs, p("/d/a"), b"abc")?;
        fs.remove_file(p("/d/a"))?;
        write_all_at(file.as_ref(), b"d", 3)?;
        let mut buf = [0u8; 8];
        assert_eq!(file.read_at(&mut buf, 0)?, 4);
        let inodes = || lock_state(&fs.inner).inodes.len();
        assert_eq!(inodes(), 3, "root, /d and the open inode");
        drop(file);
        assert_eq!(inodes(), 2, "{}", fs.dump());
        Ok(())
    }

    #[test]
    fn dump_shows_pending_state() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/a", b"abc")?;
        fs.sync_dir(p("/d"))?;
        write_file(&fs, p("/d/b"), b"xy")?;
        fs.remove_file(p("/d/a"))?;
        let dump = fs.dump();
        assert!(dump.contains("d/ #"), "{dump}");
        assert!(
            dump.contains("b #")
                && dump.contains("2 bytes (dirty, durable 0 bytes, 1 pending) [entry not durable]"),
            "{dump}"
        );
        assert!(dump.contains("a #") && dump.contains("[removed; entry still durable"), "{dump}");
        Ok(())
    }

    #[test]
    fn power_cut_freezes_the_disk_at_the_cut() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        put_synced(&fs, "/d/a", b"one")?;
        fs.sync_dir(p("/d"))?;
        // Two more mutating calls are allowed: the write and the sync of b; the sync_dir fails.
        fs.cut_power_after(2);
        let file = fs.open(p("/d/b"), OpenMode::CreateNew);
        assert!(file.is_ok(), "the create is the first call");
        fs.cut_power_after(2);
        let file = file?;
        assert!(file.write_at(b"two", 0).is_ok());
        assert!(file.sync().is_ok());
        assert_eq!(detail(fs.sync_dir(p("/d"))), Some(POWER_OFF_DETAIL.to_string()));
        assert!(fs.is_dead());
        assert_eq!(detail(fs.file_len(p("/d/a"))), Some(POWER_OFF_DETAIL.to_string()), "reads fail too");
        assert_eq!(detail(file.len()), Some(POWER_OFF_DETAIL.to_string()));
        let image = fs.durable_image();
        assert!(!image.is_dead());
        assert_eq!(image.read("/d/a"), Some(b"one".to_vec()));
        assert_eq!(image.read("/d/b"), None, "b's directory entry was never synced");
        Ok(())
    }

    #[test]
    fn a_dirty_cut_waits_for_unsynced_changes_on_enough_files() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let a = synced_file(&fs, "a", 1, 10)?;
        let b = synced_file(&fs, "b", 2, 10)?;
        fs.cut_power_when_dirty(0, 2, 10);
        assert!(fs.power_cut_waits());
        // The countdown has run out, but no file is dirty yet: the cut waits.
        a.write_at(b"A", 0)?;
        // One file is dirty: still waiting.
        b.write_at(b"B", 0)?;
        // Two files are dirty: this call is cut.
        assert_eq!(detail(a.sync()), Some(POWER_OFF_DETAIL.to_string()));
        assert!(!fs.power_cut_waits());
        let stats = fs.stats();
        assert_eq!(stats.dirty_cuts, 1);
        let image = fs.durable_image();
        assert_eq!(image.stats().crash_images_multi_file, 1, "{:?}", image.stats());
        assert_eq!(image.stats().crash_images_unsynced, 1);
        Ok(())
    }

    #[test]
    fn a_dirty_cut_gives_up_waiting_after_its_patience() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let a = synced_file(&fs, "a", 1, 10)?;
        // Two files are asked for, and one call of patience given: the first write waits,
        // the next call is cut although only one file is dirty.
        fs.cut_power_when_dirty(0, 2, 1);
        a.write_at(b"A", 0)?;
        assert_eq!(detail(a.sync()), Some(POWER_OFF_DETAIL.to_string()));
        assert_eq!(fs.stats().dirty_cuts, 0, "the cut did not find two dirty files");
        let image = fs.durable_image();
        assert_eq!((image.stats().crash_images_unsynced, image.stats().crash_images_multi_file), (1, 0));
        // A plain cut re-armed later does not wait.
        let fs = fs_with_dir()?;
        fs.cut_power_when_dirty(5, 2, 100);
        fs.cut_power_after(0);
        assert!(!fs.power_cut_waits());
        assert_eq!(detail(fs.create_dir(p("/e"))), Some(POWER_OFF_DETAIL.to_string()));
        Ok(())
    }

    #[test]
    fn reordering_means_a_kept_change_after_a_lost_one_of_another_file() {
        let files: BTreeMap<u64, Ino> = [(1, 10), (2, 11), (3, 10)].into_iter().collect();
        let fates = |f: [Fate; 3]| -> BTreeMap<u64, Fate> { (1..=3).zip(f).collect() };
        use Fate::{Applied, Dropped, Torn, Trashed};
        assert!(!reordered(&fates([Applied, Applied, Dropped]), &files), "a prefix survived");
        assert!(!reordered(&fates([Applied, Dropped, Dropped]), &files));
        assert!(reordered(&fates([Dropped, Applied, Dropped]), &files), "file 11 kept a later change");
        assert!(reordered(&fates([Applied, Dropped, Torn]), &files), "file 10 kept a later, torn change");
        assert!(reordered(&fates([Applied, Dropped, Trashed]), &files));
        assert!(
            !reordered(
                &fates([Dropped, Dropped, Applied]),
                &[(1, 10), (2, 10), (3, 10)].into_iter().collect()
            ),
            "one file: not across files"
        );
    }

    /// A durable file `/d/<name>` holding `len` copies of `fill`.
    fn synced_file(fs: &MemFs, name: &str, fill: u8, len: usize) -> VfsResult<Box<dyn VfsFile>> {
        let path = format!("/d/{name}");
        let file = write_file(fs, p(&path), &vec![fill; len])?;
        file.sync()?;
        fs.sync_dir(p("/d"))?;
        Ok(file)
    }

    fn sector(image: &[u8], index: usize) -> &[u8] {
        let start = index * SECTOR_BYTES as usize;
        image.get(start..(start + SECTOR_BYTES as usize).min(image.len())).unwrap_or(&[])
    }

    #[test]
    fn crash_keep_all_applies_every_pending_operation() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let file = synced_file(&fs, "a", b'o', 2048)?;
        fs.set_faults(Faults { crash_keep_bp: 10_000, ..Faults::default() });
        write_all_at(file.as_ref(), b"new", 700)?;
        file.set_len(1500)?;
        write_all_at(file.as_ref(), b"tail", 1600)?;
        let live = fs.read("/d/a");
        fs.crash();
        assert_eq!(fs.read("/d/a"), live, "{}", fs.dump());
        Ok(())
    }

    #[test]
    fn crash_keeps_an_in_order_subset_of_pending_writes() -> VfsResult<()> {
        let mut mixed = false;
        for seed in 0..32 {
            let fs = fs_with_dir()?;
            fs.set_seed(seed);
            let a = synced_file(&fs, "a", b'o', 1024)?;
            let b = synced_file(&fs, "b", b'o', 1024)?;
            fs.set_faults(Faults { crash_keep_bp: 5_000, ..Faults::default() });
            write_all_at(a.as_ref(), &[b'1'; 512], 0)?;
            write_all_at(a.as_ref(), &[b'2'; 512], 0)?;
            write_all_at(b.as_ref(), &[b'3'; 512], 512)?;
            fs.crash();
            let a = fs.read("/d/a").unwrap_or_default();
            let b = fs.read("/d/b").unwrap_or_default();
            // Each sector holds one version it had since the last sync, never a blend.
            let a0 = sector(&a, 0).first().copied();
            assert!(matches!(a0, Some(b'o' | b'1' | b'2')), "{a0:?}");
            assert!(sector(&a, 0).iter().all(|x| Some(*x) == a0));
            assert_eq!(sector(&a, 1), &[b'o'; 512][..]);
            let b1 = sector(&b, 1).first().copied();
            assert!(matches!(b1, Some(b'o' | b'3')) && sector(&b, 1).iter().all(|x| Some(*x) == b1));
            mixed |= a0 == Some(b'o') && b1 == Some(b'3');
        }
        assert!(mixed, "a later write to another file survived while an earlier one was lost");
        Ok(())
    }

    #[test]
    fn trashed_write_is_garbage_only_where_it_wrote_by_default() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let file = synced_file(&fs, "a", b'o', 2048)?;
        fs.set_faults(Faults { crash_trash_bp: 10_000, ..Faults::default() });
        write_all_at(file.as_ref(), b"0123456789", 1020)?; // sectors 1 and 2
        fs.crash();
        let image = fs.read("/d/a").unwrap_or_default();
        assert_eq!(image.len(), 2048);
        let written = image.get(1020..1030).unwrap_or_default();
        assert!(written != b"0123456789" && written != [b'o'; 10], "{written:?}");
        let untouched = image.iter().enumerate().filter(|(i, _)| !(1020..1030).contains(i));
        assert!(
            untouched.clone().all(|(_, b)| *b == b'o'),
            "power-safe overwrite: no byte outside the write changes"
        );
        assert_eq!(untouched.count(), 2038);
        Ok(())
    }

    #[test]
    fn trashed_write_spills_over_its_whole_sectors_without_power_safe_overwrite() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let file = synced_file(&fs, "a", b'o', 2048)?;
        fs.set_faults(Faults { crash_trash_bp: 10_000, trash_spills: true, ..Faults::default() });
        write_all_at(file.as_ref(), b"0123456789", 1020)?; // sectors 1 and 2
        fs.crash();
        let image = fs.read("/d/a").unwrap_or_default();
        assert_eq!(image.len(), 2048);
        assert_eq!(sector(&image, 0), &[b'o'; 512][..]);
        assert_eq!(sector(&image, 3), &[b'o'; 512][..]);
        for s in [1, 2] {
            assert!(sector(&image, s).iter().filter(|x| **x == b'o').count() < 64, "sector {s} is garbage");
        }
        assert_eq!(fs.stats().torn_writes, 1);
        Ok(())
    }

    #[test]
    fn torn_write_lands_some_of_its_sectors() -> VfsResult<()> {
        let mut torn_seen = false;
        for seed in 0..16 {
            let fs = fs_with_dir()?;
            fs.set_seed(seed);
            let file = synced_file(&fs, "a", b'o', 2048)?;
            fs.set_faults(Faults { crash_keep_bp: 10_000, torn_bp: 10_000, ..Faults::default() });
            write_all_at(file.as_ref(), &[b'n'; 2048], 0)?;
            fs.crash();
            let image = fs.read("/d/a").unwrap_or_default();
            let (mut old, mut new, mut garbage) = (0, 0, 0);
            for s in 0..4 {
                match sector(&image, s) {
                    x if x == [b'o'; 512] => old += 1,
                    x if x == [b'n'; 512] => new += 1,
                    _ => garbage += 1,
                }
            }
            assert!(garbage <= 1, "at most the torn sector holds garbage");
            torn_seen |= old > 0 && new > 0;
        }
        assert!(torn_seen);
        Ok(())
    }

    #[test]
    fn prefix_only_crash_keeps_a_prefix_of_the_global_order() -> VfsResult<()> {
        let mut lengths = BTreeSet::new();
        for seed in 0..40 {
            let fs = fs_with_dir()?;
            fs.set_seed(seed);
            let a = synced_file(&fs, "a", b'o', 2048)?;
            let b = synced_file(&fs, "b", b'o', 2048)?;
            fs.set_faults(Faults { crash_prefix_only: true, ..Faults::default() });
            // Issue order: a0 b0 a1 b1, one sector each.
            let order = [(&a, 0u64), (&b, 0), (&a, 1), (&b, 1)];
            for (file, s) in order {
                write_all_at(file.as_ref(), &[b'n'; 512], s * SECTOR_BYTES)?;
            }
            fs.crash();
            let images = [fs.read("/d/a").unwrap_or_default(), fs.read("/d/b").unwrap_or_default()];
            let landed: Vec<bool> = [(0, 0), (1, 0), (0, 1), (1, 1)]
                .iter()
                .map(|(f, s)| images.get(*f).is_some_and(|i| sector(i, *s) == [b'n'; 512]))
                .collect();
            let kept = landed.iter().take_while(|x| **x).count();
            assert!(landed.iter().skip(kept).all(|x| !x), "{landed:?} is not a prefix");
            lengths.insert(kept);
        }
        assert!(lengths.len() >= 3, "cuts vary: {lengths:?}");
        Ok(())
    }

    #[test]
    fn early_write_back_makes_data_durable_without_a_sync() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let file = synced_file(&fs, "a", b'o', 512)?;
        fs.set_faults(Faults { writeback_bp: 10_000, ..Faults::default() });
        write_all_at(file.as_ref(), b"early", 0)?;
        fs.create_dir(p("/e"))?; // any mutating call may write back
        assert!(fs.stats().writebacks >= 1);
        fs.crash();
        assert_eq!(fs.read("/d/a").and_then(|d| d.get(..5).map(<[u8]>::to_vec)), Some(b"early".to_vec()));
        Ok(())
    }

    #[test]
    fn a_dropped_truncate_brings_the_tail_back() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let file = synced_file(&fs, "a", b'o', 1000)?;
        fs.set_faults(Faults { crash_keep_bp: 10_000, drop_truncate_bp: 10_000, ..Faults::default() });
        file.set_len(10)?;
        write_all_at(file.as_ref(), b"x", 0)?;
        fs.crash();
        let image = fs.read("/d/a").unwrap_or_default();
        assert_eq!(image.len(), 1000, "the shrink was undone");
        assert_eq!(image.first(), Some(&b'x'), "the later write still landed");
        Ok(())
    }

    #[test]
    fn transient_read_and_write_errors_change_nothing() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let file = synced_file(&fs, "a", b'o', 16)?;
        fs.set_faults(Faults { read_eio_bp: 10_000, write_eio_bp: 10_000, ..Faults::default() });
        let mut buf = [0u8; 4];
        assert_eq!(detail(file.read_at(&mut buf, 0)).as_deref(), Some("EIO (transient)"));
        assert_eq!(kind(file.write_at(b"x", 0)), Some(VfsErrorKind::Other));
        assert_eq!(fs.stats().io_errors, 2);
        fs.set_faults(Faults::default());
        assert_eq!(file.read_at(&mut buf, 0)?, 4, "transient: the next call works");
        assert_eq!(&buf, b"oooo");
        Ok(())
    }

    #[test]
    fn sync_errors_poison_and_a_failed_sync_dir_leaves_entries_volatile() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let file = synced_file(&fs, "a", b'o', 4)?;
        fs.set_faults(Faults { sync_eio_bp: 10_000, ..Faults::default() });
        write_all_at(file.as_ref(), b"nn", 0)?;
        assert_eq!(detail(file.sync()).as_deref(), Some("EIO"));
        assert_eq!(fs.read("/d/a").as_deref(), Some(&b"oooo"[..]), "pending data dropped");
        assert_eq!(kind(file.len()), Some(VfsErrorKind::Poisoned));
        write_file(&fs, p("/d/b"), b"b")?;
        assert_eq!(detail(fs.sync_dir(p("/d"))).as_deref(), Some("EIO"));
        assert_eq!(fs.sync_failures(), 2);
        fs.crash();
        assert_eq!(fs.read("/d/b"), None, "the failed sync_dir made nothing durable");
        Ok(())
    }

    #[test]
    fn a_bad_inode_fails_writes_and_syncs_until_repaired() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let file = synced_file(&fs, "a", b'o', 4)?;
        fs.set_faults(Faults { bad_inode_bp: 10_000, ..Faults::default() });
        assert_eq!(detail(file.write_at(b"x", 0)).as_deref(), Some("EIO (the inode went bad)"));
        fs.set_faults(Faults::default());
        assert_eq!(detail(file.write_at(b"x", 0)).as_deref(), Some("EIO (the inode is bad)"));
        let other = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
        assert_eq!(detail(other.sync()).as_deref(), Some("EIO"), "persistent: every handle");
        fs.repair();
        let fresh = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
        assert_eq!(fresh.write_at(b"x", 0)?, 1);
        fresh.sync()?;
        Ok(())
    }

    #[test]
    fn a_latent_sector_error_fails_reads_until_the_sector_is_rewritten() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let file = synced_file(&fs, "a", b'o', 1024)?;
        fs.set_faults(Faults { latent_sector_bp: 10_000, ..Faults::default() });
        let mut buf = [0u8; 16];
        assert!(detail(file.read_at(&mut buf, 600)).is_some_and(|d| d.contains("latent error in sector 1")));
        fs.set_faults(Faults::default());
        assert!(file.read_at(&mut buf, 1000).is_err(), "the sector stays bad");
        assert_eq!(file.read_at(&mut buf, 0)?, 16, "other sectors read fine");
        fs.crash();
        let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
        assert!(file.read_at(&mut buf, 512).is_err(), "latent errors survive a crash");
        write_all_at(file.as_ref(), &[b'n'; 100], 512)?;
        assert!(file.read_at(&mut buf, 512).is_err(), "a partial write does not remap");
        write_all_at(file.as_ref(), &[b'n'; 512], 512)?;
        assert_eq!(file.read_at(&mut buf, 512)?, 16, "a whole-sector write remaps it");
        assert_eq!(&buf, &[b'n'; 16]);
        Ok(())
    }

    #[test]
    fn short_reads_and_writes_move_fewer_bytes_and_the_helpers_loop() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        fs.set_faults(Faults { short_io_bp: 10_000, ..Faults::default() });
        let file = fs.open(p("/d/a"), OpenMode::CreateNew)?;
        let n = file.write_at(b"0123456789", 0)?;
        assert!((1..10).contains(&n), "{n}");
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        write_all_at(file.as_ref(), &data, 0)?;
        let mut buf = vec![0u8; 5000];
        let got = file.read_at(&mut buf, 0)?;
        assert!((1..5000).contains(&got), "{got}");
        assert_eq!(sila_sqlite::vfs::read_full(file.as_ref(), &mut buf, 0)?, 5000);
        assert_eq!(buf, data);
        assert!(fs.stats().short_ios >= 3);
        Ok(())
    }

    #[test]
    fn bit_rot_flips_one_stored_bit_only_in_files_the_filter_accepts() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        synced_file(&fs, "record", 0, 64)?;
        synced_file(&fs, "db", 0, 64)?;
        fs.set_rot_filter(Some(|path: &Path, _| path.ends_with("record")));
        fs.set_faults(Faults { bitrot_bp: 10_000, ..Faults::default() });
        assert_eq!(read_file(&fs, p("/d/db"))?, vec![0u8; 64], "not accepted: never rots");
        let first = read_file(&fs, p("/d/record"))?;
        assert_eq!(first.iter().map(|b| b.count_ones()).sum::<u32>(), 1, "one bit flipped");
        fs.set_faults(Faults::default());
        fs.crash();
        assert_eq!(read_file(&fs, p("/d/record"))?, first, "the rot is on the medium");
        assert_eq!(fs.rotted(), vec![PathBuf::from("/d/record")]);
        Ok(())
    }

    #[test]
    fn the_rot_filter_sees_the_read_only_flag_which_follows_renames_and_crashes() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        synced_file(&fs, "snap", 0, 64)?;
        fs.set_rot_filter(Some(|_: &Path, read_only| read_only));
        fs.set_faults(Faults { bitrot_bp: 10_000, ..Faults::default() });
        assert_eq!(read_file(&fs, p("/d/snap"))?, vec![0u8; 64], "not sealed: never rots");
        fs.set_read_only(p("/d/snap"), true)?;
        fs.rename(p("/d/snap"), p("/d/sealed"))?;
        fs.sync_dir(p("/d"))?;
        fs.set_faults(Faults::default());
        fs.crash();
        fs.set_faults(Faults { bitrot_bp: 10_000, ..Faults::default() });
        let rotten = read_file(&fs, p("/d/sealed"))?;
        assert_eq!(rotten.iter().map(|b| b.count_ones()).sum::<u32>(), 1, "sealed: rots");
        assert!(fs.set_read_only(p("/d/missing"), true).is_err());
        Ok(())
    }

    #[test]
    fn slow_calls_report_latency_to_the_sink() -> VfsResult<()> {
        let fs = fs_with_dir()?;
        let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sink = Arc::clone(&total);
        fs.set_latency_sink(Some(LatencySink(Arc::new(move |ms| {
            sink.fetch_add(ms, Ordering::SeqCst);
        }))));
        fs.set_faults(Faults { slow_io_bp: 10_000, slow_io_ms_max: 7, ..Faults::default() });
        let file = synced_file(&fs, "a", b'o', 8)?; // a write, a sync and a sync_dir
        let mut buf = [0u8; 8];
        file.read_at(&mut buf, 0)?;
        let stats = fs.stats();
        assert_eq!(stats.slow_ios, 4);
        assert!((4..=28).contains(&stats.latency_ms), "{stats:?}");
        assert_eq!(total.load(Ordering::SeqCst), stats.latency_ms);
        Ok(())
    }

    #[test]
    fn the_same_seed_gives_the_same_crash() -> VfsResult<()> {
        let run = |seed: u64| -> VfsResult<Option<Vec<u8>>> {
            let fs = fs_with_dir()?;
            fs.set_seed(seed);
            let file = synced_file(&fs, "a", b'o', 4096)?;
            fs.set_faults(Faults {
                crash_keep_bp: 5_000,
                crash_trash_bp: 2_000,
                torn_bp: 5_000,
                ..Faults::default()
            });
            for i in 0..8u64 {
                write_all_at(file.as_ref(), &[b'a' + i as u8; 700], i * 450)?;
            }
            fs.crash();
            Ok(fs.read("/d/a"))
        };
        assert_eq!(run(5)?, run(5)?);
        assert_ne!(run(5)?, run(6)?);
        Ok(())
    }
}
