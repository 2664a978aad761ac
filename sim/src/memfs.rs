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
//! * A **file** inode has `data` (volatile: every read, write and `set_len` uses it) and
//!   `durable` bytes. [`VfsFile::sync`] on any handle of the inode copies `data` to
//!   `durable`, whole. Nothing else ever makes file contents durable: the model takes the
//!   strict end of the contract and loses *every* unsynced write at a crash.
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
//! 2. Every surviving directory's live entries become its durable entries; every surviving
//!    file's data becomes its durable data.
//! 3. Inodes no longer reachable are dropped.
//! 4. Every handle and lock guard taken before the crash goes stale: each call on a stale
//!    handle fails with [`VfsErrorKind::Other`] and the detail `"stale handle after crash"`,
//!    and all locks are released.
//!
//! Fault settings ([`Faults`]) and counters ([`MemStats`]) carry over a crash.
//!
//! Because directories are inodes, a cross-directory rename synced in only one of the two
//! directories can leave the file under both names or under neither after a crash; the
//! contract asks for `sync_dir` of both parents, and this model holds callers to it.
//!
//! # Faults
//!
//! [`MemFs::set_faults`] can make `sync_dir` or file `sync` lie (return `Ok`, do nothing),
//! make one future file `sync` fail with `EIO` (dropping that inode's unsynced data and
//! poisoning the handle, see [`Faults::fail_sync_after`]), and cap the total file bytes so
//! growing writes fail with [`VfsErrorKind::NoSpace`].
//!
//! # Limits and deviations from a real filesystem
//!
//! * Paths must be absolute and contain no `..`; `.` components are ignored.
//! * Directories cannot be renamed (an `Other` error).
//! * Reads and writes are never short; a read at or past the end returns `Ok(0)`, a write
//!   past the end zero-fills the gap. No file may grow past [`FILE_BYTES_MAX`].
//! * [`Vfs::lock_exclusive`] creates the lock file (like `CreateOrOpen`) but writes nothing
//!   to it; the lock table is in memory and names [`std::process::id`] as the holder.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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

/// Fault knobs of a [`MemFs`]. `Faults::default()` turns every fault off.
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
    /// Cap on the total bytes of all files reachable in the live namespace or held open; a
    /// write or `set_len` that would grow past it fails with [`VfsErrorKind::NoSpace`] and
    /// changes nothing.
    pub capacity_bytes: Option<u64>,
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
    /// File `sync` calls that failed (injected by [`Faults::fail_sync_after`]).
    pub sync_failures: u64,
}

/// One inode: a file or a directory, each with a volatile and a durable state.
#[derive(Debug, Clone)]
enum Inode {
    /// A regular file.
    File {
        /// What reads see now.
        data: Vec<u8>,
        /// What a crash leaves.
        durable: Vec<u8>,
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
        Inode::File { data: Vec::new(), durable: Vec::new() }
    }

    fn empty_dir() -> Self {
        Inode::Dir { live: BTreeMap::new(), durable: BTreeMap::new() }
    }

    fn is_dir(&self) -> bool {
        matches!(self, Inode::Dir { .. })
    }
}

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
    /// The power is off: every call fails until the next crash (durable image).
    dead: bool,
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
            dead: false,
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
    fn check_growth(&self, old_len: u64, new_len: u64, op: &'static str, path: &Path) -> VfsResult<()> {
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
                self.dead = true;
                self.power_cut_in = None;
                Err(err(VfsErrorKind::Other, op, path, POWER_OFF_DETAIL))
            }
            Some(n) => {
                self.power_cut_in = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Fails every call once the power is off.
    fn alive(&self, op: &'static str, path: &Path) -> VfsResult<()> {
        if self.dead {
            return Err(err(VfsErrorKind::Other, op, path, POWER_OFF_DETAIL));
        }
        Ok(())
    }

    /// The state a power cut leaves: see the module docs.
    fn crashed(&self) -> State {
        let keep = self.reachable(false, true, false);
        let mut inodes = BTreeMap::new();
        for ino in &keep {
            let node = match self.inodes.get(ino) {
                Some(Inode::File { durable, .. }) => {
                    Inode::File { data: durable.clone(), durable: durable.clone() }
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
            dead: false,
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
        MemFs { inner: Arc::new(Mutex::new(crashed)) }
    }

    /// Sets the fault knobs; also restarts the [`Faults::fail_sync_after`] countdown.
    pub fn set_faults(&self, faults: Faults) {
        let mut state = self.state();
        state.faults = faults;
        state.syncs_before_failure = faults.fail_sync_after;
    }

    /// The fault knobs last set (the `fail_sync_after` countdown is not reflected here).
    pub fn faults(&self) -> Faults {
        self.state().faults
    }

    /// Cuts the power after `calls` more mutating IO calls (creates, writes, truncates,
    /// syncs, renames, unlinks, mkdirs): the `calls + 1`-th fails and so does everything
    /// after it. Take [`MemFs::durable_image`] to boot the machine again.
    pub fn cut_power_after(&self, calls: u64) {
        self.state().power_cut_in = Some(calls);
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
            Some(Inode::File { data, durable }) => {
                let sync_note = if data == durable {
                    "synced".to_string()
                } else {
                    format!("dirty, durable {} bytes", durable.len())
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
                            if mode == OpenMode::CreateTruncate {
                                data.clear();
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
        let op = "rename";
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

impl VfsFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
        let op = "read";
        let state = self.enter(op)?;
        let Some(Inode::File { data, .. }) = state.inodes.get(&self.ino) else {
            return Err(self.vanished(op));
        };
        let Ok(start) = usize::try_from(offset) else { return Ok(0) };
        let Some(available) = data.get(start..) else { return Ok(0) };
        let n = available.len().min(buf.len());
        let (Some(src), Some(dst)) = (available.get(..n), buf.get_mut(..n)) else { return Ok(0) };
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
        let old_len = match state.inodes.get(&self.ino) {
            Some(Inode::File { data, .. }) => data.len() as u64,
            _ => return Err(self.vanished(op)),
        };
        let Some(end) = offset.checked_add(buf.len() as u64) else {
            return Err(err(VfsErrorKind::Other, op, &self.path, "offset overflow"));
        };
        state.check_growth(old_len, end, op, &self.path)?;
        let (Ok(start), Ok(end)) = (usize::try_from(offset), usize::try_from(end)) else {
            return Err(err(VfsErrorKind::Other, op, &self.path, "offset does not fit in memory"));
        };
        let Some(Inode::File { data, .. }) = state.inodes.get_mut(&self.ino) else {
            return Err(self.vanished(op));
        };
        if data.len() < end {
            data.resize(end, 0);
        }
        let Some(dst) = data.get_mut(start..end) else { return Err(self.vanished(op)) };
        dst.copy_from_slice(buf);
        state.stats.writes = state.stats.writes.saturating_add(1);
        Ok(buf.len())
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
        match state.syncs_before_failure {
            Some(0) => {
                state.syncs_before_failure = None;
                if let Some(Inode::File { data, durable }) = state.inodes.get_mut(&self.ino) {
                    *data = durable.clone();
                }
                self.poisoned.store(true, Ordering::Release);
                state.stats.sync_failures = state.stats.sync_failures.saturating_add(1);
                return Err(err(VfsErrorKind::Other, op, &self.path, "EIO"));
            }
            Some(n) => state.syncs_before_failure = Some(n.saturating_sub(1)),
            None => {}
        }
        if state.faults.lie_sync {
            return Ok(());
        }
        match state.inodes.get_mut(&self.ino) {
            Some(Inode::File { data, durable }) => {
                *durable = data.clone();
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
            dump.contains("b #") && dump.contains("2 bytes (dirty, durable 0 bytes) [entry not durable]"),
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
}
