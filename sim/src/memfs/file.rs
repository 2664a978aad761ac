//! [`Vfs`] for [`MemFs`], and its open files ([`MemFile`]) and lock guards ([`MemLock`]).

use super::*;

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
            state.count_sync_failure(path);
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
pub(super) struct MemFile {
    pub(super) fs: Arc<Mutex<State>>,
    pub(super) ino: Ino,
    pub(super) epoch: u64,
    pub(super) writable: bool,
    pub(super) path: PathBuf,
    pub(super) poisoned: AtomicBool,
}

impl MemFile {
    /// Locks the disk after checking the handle is neither stale nor poisoned.
    pub(super) fn enter(&self, op: &'static str) -> VfsResult<MutexGuard<'_, State>> {
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

    pub(super) fn check_writable(&self, op: &'static str) -> VfsResult<()> {
        if self.writable {
            Ok(())
        } else {
            Err(err(VfsErrorKind::Other, op, &self.path, "file was opened read-only"))
        }
    }

    pub(super) fn vanished(&self, op: &'static str) -> VfsError {
        err(VfsErrorKind::Other, op, &self.path, "inode vanished")
    }
}

impl MemFile {
    pub(super) fn eio(&self, state: &mut State, op: &'static str, what: &str) -> VfsError {
        state.stats.io_errors = state.stats.io_errors.saturating_add(1);
        err(VfsErrorKind::Other, op, &self.path, format!("EIO ({what})"))
    }

    /// Fails the sync: drops the inode's pending data, poisons the handle (fail-stop).
    pub(super) fn fail_sync(&self, state: &mut State, op: &'static str) -> VfsError {
        if let Some(Inode::File { data, durable, pending, .. }) = state.inodes.get_mut(&self.ino) {
            data.clone_from(durable);
            pending.clear();
        }
        self.poisoned.store(true, Ordering::Release);
        state.count_sync_failure(&self.path);
        err(VfsErrorKind::Other, op, &self.path, "EIO")
    }

    /// Read-time faults on `start..start + n` of a file of `len` bytes: latent sector
    /// errors (new and old) and bit rot. Returns the error the read must fail with, if any.
    pub(super) fn read_faults(&self, state: &mut State, start: u64, n: usize) -> Option<VfsError> {
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
    pub(super) fn io_len(state: &mut State, len: usize) -> usize {
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
        // Called with the disk unlocked: the hook may block while other threads use it.
        let hook = lock_state(&self.fs).read_hook.clone();
        if let Some(hook) = hook {
            (hook.0)(&self.path);
        }
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
        // Called with the disk unlocked: the hook may block while other threads use it.
        let hook = lock_state(&self.fs).write_hook.clone();
        if let Some(hook) = hook {
            (hook.0)(&self.path);
        }
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
            state.close_and_collect(self.ino);
        }
    }
}

/// A lock taken by [`MemFs::lock_exclusive`](Vfs::lock_exclusive); released on drop (or by
/// a crash, after which dropping it does nothing).
pub(super) struct MemLock {
    pub(super) fs: Arc<Mutex<State>>,
    pub(super) ino: Ino,
    pub(super) epoch: u64,
}

impl LockGuard for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut state = lock_state(&self.fs);
        if state.epoch == self.epoch {
            state.locks.remove(&self.ino);
            state.close_and_collect(self.ino);
        }
    }
}
