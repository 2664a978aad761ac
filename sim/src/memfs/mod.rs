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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sila_sqlite::vfs::{DirEntry, LockGuard, OpenMode, Vfs, VfsError, VfsErrorKind, VfsFile, VfsResult};

mod faults;
mod file;
mod pending;
mod state;
#[cfg(test)]
mod tests;

pub use faults::{Faults, MemStats};
use file::*;
use pending::*;
use state::*;
pub use state::{IoHook, LatencySink, RotFilter, FAILED_SYNCS_KEPT};

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

    /// Calls `hook` at the start of every `write_at`, before the disk is locked (see
    /// [`IoHook`]); `None` removes it. A crash removes it too.
    pub fn set_write_hook(&self, hook: Option<IoHook>) {
        self.state().write_hook = hook;
    }

    /// Calls `hook` at the start of every `read_at`, before the disk is locked (see
    /// [`IoHook`]); `None` removes it. A crash removes it too.
    pub fn set_read_hook(&self, hook: Option<IoHook>) {
        self.state().read_hook = hook;
    }

    /// The paths (as opened) of every file a bit rotted in, oldest first, across crashes.
    pub fn rotted(&self) -> Vec<PathBuf> {
        self.state().rotted.clone()
    }

    /// The paths of the last `n` failed file and directory syncs (at most
    /// [`FAILED_SYNCS_KEPT`]), oldest first.
    pub fn failed_syncs(&self, n: usize) -> Vec<PathBuf> {
        let state = self.state();
        state.failed_syncs.iter().skip(state.failed_syncs.len().saturating_sub(n)).cloned().collect()
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
