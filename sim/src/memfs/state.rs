//! The disk behind a [`MemFs`]: inodes with their volatile and durable states, the
//! namespace, the fault draws and the power cut. Every call of the filesystem and of its
//! handles locks one [`State`].

use super::*;

/// One inode: a file or a directory, each with a volatile and a durable state.
#[derive(Debug, Clone)]
pub(super) enum Inode {
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
    pub(super) fn empty_file() -> Self {
        Inode::File {
            data: Vec::new(),
            durable: Vec::new(),
            pending: Vec::new(),
            bad_sectors: BTreeSet::new(),
            failing: false,
            read_only: false,
        }
    }

    pub(super) fn empty_dir() -> Self {
        Inode::Dir { live: BTreeMap::new(), durable: BTreeMap::new() }
    }

    pub(super) fn is_dir(&self) -> bool {
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

/// Called with a file's path (as opened) at the start of every `write_at` on it
/// ([`MemFs::set_write_hook`]) or every `read_at` ([`MemFs::set_read_hook`]), on the calling
/// thread and with the disk unlocked: a simulation may block there to run other clients
/// deterministically between two writes of an operation, or in the middle of a read.
#[derive(Clone)]
pub struct IoHook(pub Arc<dyn Fn(&Path) + Send + Sync>);

impl std::fmt::Debug for IoHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IoHook")
    }
}

/// Decides which files bit rot may touch, by the path a handle was opened with and whether
/// the file is marked read-only ([`Vfs::set_read_only`]) at the time of the read.
pub type RotFilter = fn(&Path, bool) -> bool;

/// Everything behind a [`MemFs`] handle.
#[derive(Debug, Clone)]
pub(super) struct State {
    pub(super) inodes: BTreeMap<Ino, Inode>,
    pub(super) next_ino: Ino,
    /// Incremented by each crash; handles and guards remember the epoch they were made in.
    pub(super) epoch: u64,
    /// Open handle (and lock guard) count per inode, for this epoch.
    pub(super) open: BTreeMap<Ino, u64>,
    /// Inodes locked by a live [`MemLock`].
    pub(super) locks: BTreeSet<Ino>,
    pub(super) faults: Faults,
    /// File syncs left before the injected failure.
    pub(super) syncs_before_failure: Option<u64>,
    pub(super) stats: MemStats,
    /// Mutating IO calls left before the power is cut (`None`: never).
    pub(super) power_cut_in: Option<u64>,
    /// Set by [`MemFs::cut_power_when_dirty`]: when the countdown runs out the cut waits,
    /// for at most the second number of calls, until this many files have unsynced changes.
    pub(super) power_cut_dirty: Option<(usize, u64)>,
    /// The power is off: every call fails until the next crash (durable image).
    pub(super) dead: bool,
    /// The seeded generator behind every fault choice.
    pub(super) rng: ChaCha8Rng,
    /// The next position in the global order of pending operations.
    pub(super) next_seq: u64,
    /// Files bit rot may touch (none when `None`).
    pub(super) rot_filter: Option<RotFilter>,
    /// Paths of files whose bits rotted, in order (across crashes).
    pub(super) rotted: Vec<PathBuf>,
    /// Paths of the last [`FAILED_SYNCS_KEPT`] failed file and directory syncs, oldest
    /// first (across crashes).
    pub(super) failed_syncs: std::collections::VecDeque<PathBuf>,
    /// Where slow calls report their latency.
    pub(super) latency_sink: Option<LatencySink>,
    /// Called before every write (not kept across a crash: it belongs to the run).
    pub(super) write_hook: Option<IoHook>,
    pub(super) read_hook: Option<IoHook>,
}

pub(super) fn err(kind: VfsErrorKind, op: &'static str, path: &Path, detail: impl Into<String>) -> VfsError {
    VfsError::new(kind, op, path, detail)
}

/// Splits an absolute path into its names (borrowed from the path: a lookup allocates one
/// vector, not a string per name). `.` is skipped; `..` and relative paths are refused.
pub(super) fn split<'p>(path: &'p Path, op: &'static str) -> VfsResult<Vec<&'p str>> {
    // On the text, not through `Path::components`: every file call looks a path up, and the
    // component parser cost more than the rest of the lookup.
    let Some(text) = path.to_str() else {
        return Err(err(VfsErrorKind::Other, op, path, "path is not UTF-8"));
    };
    let Some(rest) = text.strip_prefix('/') else {
        return Err(err(VfsErrorKind::Other, op, path, "MemFs paths must be absolute"));
    };
    let mut names = Vec::with_capacity(8);
    for name in rest.split('/') {
        match name {
            "" | "." => {}
            ".." => return Err(err(VfsErrorKind::Other, op, path, "'..' is not supported")),
            name => names.push(name),
        }
    }
    Ok(names)
}

/// Failed syncs whose paths a disk remembers ([`super::MemFs::failed_syncs`]).
pub const FAILED_SYNCS_KEPT: usize = 256;

impl State {
    /// Counts a failed file or directory sync of `path`.
    pub(super) fn count_sync_failure(&mut self, path: &Path) {
        self.stats.sync_failures = self.stats.sync_failures.saturating_add(1);
        if self.failed_syncs.len() == FAILED_SYNCS_KEPT {
            self.failed_syncs.pop_front();
        }
        self.failed_syncs.push_back(path.to_path_buf());
    }

    pub(super) fn new() -> Self {
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
            failed_syncs: std::collections::VecDeque::new(),
            latency_sink: None,
            write_hook: None,
            read_hook: None,
        }
    }

    pub(super) fn live_entries(&self, dir: Ino) -> Option<&BTreeMap<String, Ino>> {
        match self.inodes.get(&dir) {
            Some(Inode::Dir { live, .. }) => Some(live),
            _ => None,
        }
    }

    pub(super) fn live_entries_mut(&mut self, dir: Ino) -> Option<&mut BTreeMap<String, Ino>> {
        match self.inodes.get_mut(&dir) {
            Some(Inode::Dir { live, .. }) => Some(live),
            _ => None,
        }
    }

    pub(super) fn is_dir(&self, ino: Ino) -> bool {
        self.inodes.get(&ino).is_some_and(Inode::is_dir)
    }

    /// Follows `names` from the root through live entries; every one must be a directory.
    pub(super) fn walk_dir(&self, names: &[&str], op: &'static str, path: &Path) -> VfsResult<Ino> {
        let mut ino = ROOT;
        for name in names {
            let Some(entries) = self.live_entries(ino) else {
                return Err(err(VfsErrorKind::Other, op, path, "a path component is not a directory"));
            };
            let Some(next) = entries.get(*name) else {
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
    pub(super) fn lookup(&self, path: &Path, op: &'static str) -> VfsResult<Option<Ino>> {
        let names = split(path, op)?;
        let Some((name, parents)) = names.split_last() else { return Ok(Some(ROOT)) };
        let parent = self.walk_dir(parents, op, path)?;
        Ok(self.live_entries(parent).and_then(|entries| entries.get(*name)).copied())
    }

    /// The parent directory's inode and the last name of a path that is not the root.
    pub(super) fn parent_of(&self, path: &Path, op: &'static str) -> VfsResult<(Ino, String)> {
        let mut names = split(path, op)?;
        let Some(name) = names.pop() else {
            return Err(err(VfsErrorKind::Other, op, path, "not allowed on the root directory"));
        };
        let parent = self.walk_dir(&names, op, path)?;
        Ok((parent, name.to_string()))
    }

    pub(super) fn alloc(&mut self, node: Inode) -> Ino {
        let ino = self.next_ino;
        self.next_ino = self.next_ino.saturating_add(1);
        self.inodes.insert(ino, node);
        ino
    }

    /// Links a new inode under `parent` (live entries only).
    pub(super) fn link_new(
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

    pub(super) fn open_ref(&mut self, ino: Ino) {
        let count = self.open.entry(ino).or_insert(0);
        *count = count.saturating_add(1);
    }

    pub(super) fn close_ref(&mut self, ino: Ino) {
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
    pub(super) fn reachable(&self, via_live: bool, via_durable: bool, with_open: bool) -> BTreeSet<Ino> {
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

    /// Closes one handle (or lock guard) on `ino`. When it was the last and no directory
    /// links the inode, live or durably, the inode is dropped: what [`State::sweep`] would
    /// do, since a file has no children and everything else was swept when it was unlinked,
    /// but without walking the tree on every close.
    pub(super) fn close_and_collect(&mut self, ino: Ino) {
        self.close_ref(ino);
        if self.open.contains_key(&ino) || self.is_dir(ino) {
            return;
        }
        let linked = self.inodes.values().any(|node| match node {
            Inode::Dir { live, durable } => {
                live.values().any(|i| *i == ino) || durable.values().any(|i| *i == ino)
            }
            Inode::File { .. } => false,
        });
        if !linked {
            self.inodes.remove(&ino);
        }
        debug_assert_eq!(
            self.reachable(true, true, true).len(),
            self.inodes.len(),
            "closing inode {ino} left unreachable inodes behind"
        );
    }

    /// Drops inodes that nothing can reach any more: not linked live or durably, not open.
    pub(super) fn sweep(&mut self) {
        let keep = self.reachable(true, true, true);
        self.inodes.retain(|ino, _| keep.contains(ino));
    }

    /// Total bytes of files reachable live or held open: what `capacity_bytes` limits.
    pub(super) fn used_bytes(&self) -> u64 {
        self.reachable(true, false, true)
            .iter()
            .filter_map(|ino| match self.inodes.get(ino) {
                Some(Inode::File { data, .. }) => Some(data.len() as u64),
                _ => None,
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Checks that growing a file from `old_len` to `new_len` bytes fits the capacity.
    pub(super) fn check_growth(
        &mut self,
        old_len: u64,
        new_len: u64,
        op: &'static str,
        path: &Path,
    ) -> VfsResult<()> {
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
    pub(super) fn tick(&mut self, op: &'static str, path: &Path) -> VfsResult<()> {
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
    pub(super) fn dirty_files(&self) -> usize {
        self.reachable(false, true, false)
            .iter()
            .filter(|ino| matches!(self.inodes.get(ino), Some(Inode::File { pending, .. }) if !pending.is_empty()))
            .count()
    }

    /// Fails every call once the power is off.
    pub(super) fn alive(&self, op: &'static str, path: &Path) -> VfsResult<()> {
        if self.dead {
            return Err(err(VfsErrorKind::Other, op, path, POWER_OFF_DETAIL));
        }
        Ok(())
    }

    /// Draws a fault with rate `bp` (basis points). Never draws when the rate is zero, so
    /// a run with a fault off replays the same as before the fault existed.
    pub(super) fn roll(&mut self, bp: u16) -> bool {
        bp > 0 && self.rng.random_range(0..BP_SCALE) < u32::from(bp)
    }

    /// Draws the fault whose rate `pick` reads from the current knobs.
    pub(super) fn chance(&mut self, pick: impl Fn(&Faults) -> u16) -> bool {
        let bp = pick(&self.faults);
        self.roll(bp)
    }

    /// Maybe makes this call slow: reports a latency to the sink.
    pub(super) fn maybe_slow(&mut self) {
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
    pub(super) fn maybe_write_back(&mut self) {
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
    pub(super) fn push_pending(&mut self, ino: Ino, make: impl FnOnce(u64) -> Pending) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        if let Some(Inode::File { pending, .. }) = self.inodes.get_mut(&ino) {
            pending.push(make(seq));
        }
    }

    /// The fate at a crash of every pending operation of the files in `keep`, keyed by its
    /// global position. See [`Faults`] for the choices.
    pub(super) fn crash_fates(&mut self, keep: &BTreeSet<Ino>) -> BTreeMap<u64, Fate> {
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
    pub(super) fn crashed(&mut self) -> State {
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
            failed_syncs: self.failed_syncs.clone(),
            latency_sink: self.latency_sink.clone(),
            write_hook: None,
            read_hook: None,
        }
    }

    /// Every live path with its inode, parents before children, in name order.
    pub(super) fn live_paths(&self) -> Vec<(PathBuf, Ino)> {
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
