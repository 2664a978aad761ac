//! The lock table and shared memory of the engine's SQLite VFS: in process, per database path.
//!
//! One process owns a workspace (its `LOCK`), so every connection to a database file is in
//! this process, and locks between them are decisions over a table, not `fcntl` calls. Each
//! open handle of a path is a *holder* with its database lock level and its WAL slot masks; all
//! decisions for a path are made under that path's mutex by looking at its other holders:
//!
//! * `SHARED` is refused (`SQLITE_BUSY`) while another holder is at `PENDING` or above.
//! * `RESERVED` is refused while another holder is at `RESERVED` or above.
//! * `EXCLUSIVE` is refused while another holder is at `RESERVED` or above; otherwise the
//!   holder moves to `PENDING` (new `SHARED` requests now fail) and then to `EXCLUSIVE` once
//!   no other holder is at `SHARED` — if some still is, the answer is `SQLITE_BUSY` and the
//!   holder stays at `PENDING`, as with SQLite's unix VFS.
//! * `xUnlock` lowers the holder's level; `xCheckReservedLock` is true when any holder of
//!   the path (this one included) is at `RESERVED` or above.
//!
//! **Shared memory for WAL.** The `-shm` of a database is never a file: it is a list of zeroed
//! regions of the size SQLite asks (32 KiB) held in the path's entry, as SQLite's `unix-excl`
//! keeps its wal-index in heap memory. Each region is one heap allocation, made once and never
//! moved or resized, and SQLite gets its raw address; the list only grows. The regions are
//! freed when the last holder of the path unmaps or closes, which is exactly what a crash does
//! to a real `-shm` (SQLite rebuilds the wal-index from the WAL when it finds it empty). The
//! eight WAL lock slots are per-holder bit masks (`shared`, `exclusive`): a shared lock on a
//! slot is refused while another holder has it exclusive; an exclusive lock on a range is
//! refused while another holder has any slot of it shared or exclusive (all-or-nothing).

use std::collections::BTreeMap;
use std::ffi::{c_int, c_void};

use rusqlite::ffi;

/// Number of WAL lock slots SQLite uses (`SQLITE_SHM_NLOCK`).
pub(super) const SHM_SLOTS: c_int = 8;
/// Cap on shared-memory regions per database (4096 × 32 KiB = 128 MiB of wal-index,
/// enough for 16 M WAL frames): a bogus region number cannot exhaust memory.
pub(super) const SHM_REGIONS_MAX: usize = 4096;

/// Returned by lock decisions: `Ok(())` granted, `Err(code)` refused or failed.
pub(super) type LockResult = Result<(), c_int>;

/// The holders of one path, and its shared memory.
#[derive(Default)]
pub(super) struct PathEntry {
    pub(super) holders: BTreeMap<u64, Holder>,
    /// Region size SQLite asked for (0 before the first map).
    pub(super) region_size: usize,
    /// The `-shm` regions; freed when no holder is mapped.
    pub(super) shm: Vec<Region>,
}

/// One open handle's locks on its path.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Holder {
    /// `SQLITE_LOCK_NONE` … `SQLITE_LOCK_EXCLUSIVE`.
    pub(super) level: c_int,
    /// Whether the handle has called `xShmMap` (and not `xShmUnmap`).
    pub(super) shm_mapped: bool,
    /// WAL slots held shared (bit i = slot i).
    pub(super) shm_shared: u8,
    /// WAL slots held exclusive.
    pub(super) shm_excl: u8,
}

/// One shared-memory region: a heap block made by `Box::into_raw` and freed only by `Drop`,
/// so its address is stable for as long as the region exists. `u64` elements make it
/// 8-byte aligned, as SQLite's wal-index (which uses aligned 32-bit atomics) needs.
pub(super) struct Region {
    block: *mut [u64],
}

// SAFETY: a `Region` owns its block exclusively on the Rust side (Rust never reads or writes
// the bytes); the bytes are shared with SQLite connections on any thread, which synchronize
// their access through the WAL lock slots and `xShmBarrier`, exactly as with real shared
// memory. Moving the owner between threads is therefore fine.
unsafe impl Send for Region {}

impl Region {
    pub(super) fn new(bytes: usize) -> Region {
        let words = bytes.div_ceil(8);
        Region { block: Box::into_raw(vec![0u64; words].into_boxed_slice()) }
    }

    pub(super) fn addr(&self) -> *mut c_void {
        self.block.cast::<c_void>()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `block` came from `Box::into_raw` in `Region::new` and is freed only here,
        // once. No connection uses it any more: regions are dropped only when every holder
        // of the path has unmapped or closed (SQLite never touches a region after xShmUnmap).
        drop(unsafe { Box::from_raw(self.block) });
    }
}

/// The database-file lock decision (see the module docs).
pub(super) fn lock_level(entry: &mut PathEntry, me: u64, want: c_int) -> LockResult {
    let current = entry.holders.get(&me).map_or(ffi::SQLITE_LOCK_NONE, |h| h.level);
    if want <= current {
        return Ok(());
    }
    let others_max = entry.holders.iter().filter(|(id, _)| **id != me).map(|(_, h)| h.level).max();
    let others_max = others_max.unwrap_or(ffi::SQLITE_LOCK_NONE);
    let granted = if want == ffi::SQLITE_LOCK_SHARED {
        if others_max >= ffi::SQLITE_LOCK_PENDING {
            return Err(ffi::SQLITE_BUSY);
        }
        ffi::SQLITE_LOCK_SHARED
    } else if want == ffi::SQLITE_LOCK_RESERVED {
        if current < ffi::SQLITE_LOCK_SHARED {
            return Err(ffi::SQLITE_IOERR_LOCK);
        }
        if others_max >= ffi::SQLITE_LOCK_RESERVED {
            return Err(ffi::SQLITE_BUSY);
        }
        ffi::SQLITE_LOCK_RESERVED
    } else {
        // EXCLUSIVE (or PENDING, which SQLite never asks for explicitly).
        if current < ffi::SQLITE_LOCK_SHARED {
            return Err(ffi::SQLITE_IOERR_LOCK);
        }
        if others_max >= ffi::SQLITE_LOCK_RESERVED {
            return Err(ffi::SQLITE_BUSY);
        }
        if let Some(holder) = entry.holders.get_mut(&me) {
            holder.level = ffi::SQLITE_LOCK_PENDING;
        }
        if want == ffi::SQLITE_LOCK_PENDING {
            return Ok(());
        }
        if others_max >= ffi::SQLITE_LOCK_SHARED {
            // Keep PENDING: no new reader gets in, the current ones drain.
            return Err(ffi::SQLITE_BUSY);
        }
        ffi::SQLITE_LOCK_EXCLUSIVE
    };
    match entry.holders.get_mut(&me) {
        Some(holder) => {
            holder.level = granted;
            Ok(())
        }
        None => Err(ffi::SQLITE_IOERR_LOCK),
    }
}

/// The WAL slot lock decision (see the module docs).
pub(super) fn shm_lock_slots(entry: &mut PathEntry, me: u64, mask: u8, flags: c_int) -> LockResult {
    let (others_shared, others_excl) = entry
        .holders
        .iter()
        .filter(|(id, _)| **id != me)
        .fold((0u8, 0u8), |(s, x), (_, h)| (s | h.shm_shared, x | h.shm_excl));
    let Some(holder) = entry.holders.get_mut(&me) else { return Err(ffi::SQLITE_IOERR_SHMLOCK) };
    let unlock = flags & ffi::SQLITE_SHM_UNLOCK != 0;
    let exclusive = flags & ffi::SQLITE_SHM_EXCLUSIVE != 0;
    let shared = flags & ffi::SQLITE_SHM_SHARED != 0;
    let lock = flags & ffi::SQLITE_SHM_LOCK != 0;
    if unlock == lock || exclusive == shared {
        return Err(ffi::SQLITE_IOERR_SHMLOCK);
    }
    if unlock {
        holder.shm_shared &= !mask;
        holder.shm_excl &= !mask;
        return Ok(());
    }
    if shared {
        if others_excl & mask != 0 {
            return Err(ffi::SQLITE_BUSY);
        }
        holder.shm_shared |= mask;
    } else {
        if (others_shared | others_excl) & mask != 0 {
            return Err(ffi::SQLITE_BUSY);
        }
        holder.shm_excl |= mask;
    }
    Ok(())
}

/// Releases `me`'s WAL slots and mapping; frees the regions when no holder is mapped.
pub(super) fn shm_release(entry: &mut PathEntry, me: u64) {
    if let Some(holder) = entry.holders.get_mut(&me) {
        holder.shm_mapped = false;
        holder.shm_shared = 0;
        holder.shm_excl = 0;
    }
    if !entry.holders.values().any(|h| h.shm_mapped) {
        entry.shm.clear();
        entry.region_size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_with(ids: &[u64]) -> PathEntry {
        let mut entry = PathEntry::default();
        for id in ids {
            entry.holders.insert(*id, Holder::default());
        }
        entry
    }

    #[test]
    fn lock_levels_follow_sqlite_semantics() {
        let mut e = entry_with(&[1, 2, 3]);
        assert_eq!(lock_level(&mut e, 1, ffi::SQLITE_LOCK_SHARED), Ok(()));
        assert_eq!(lock_level(&mut e, 2, ffi::SQLITE_LOCK_SHARED), Ok(()));
        assert_eq!(lock_level(&mut e, 1, ffi::SQLITE_LOCK_RESERVED), Ok(()));
        assert_eq!(lock_level(&mut e, 2, ffi::SQLITE_LOCK_RESERVED), Err(ffi::SQLITE_BUSY));
        // A reader still holds SHARED: the writer stops at PENDING.
        assert_eq!(lock_level(&mut e, 1, ffi::SQLITE_LOCK_EXCLUSIVE), Err(ffi::SQLITE_BUSY));
        assert_eq!(e.holders.get(&1).map(|h| h.level), Some(ffi::SQLITE_LOCK_PENDING));
        // PENDING keeps new readers out.
        assert_eq!(lock_level(&mut e, 3, ffi::SQLITE_LOCK_SHARED), Err(ffi::SQLITE_BUSY));
        if let Some(h) = e.holders.get_mut(&2) {
            h.level = ffi::SQLITE_LOCK_NONE;
        }
        assert_eq!(lock_level(&mut e, 1, ffi::SQLITE_LOCK_EXCLUSIVE), Ok(()));
        assert_eq!(e.holders.get(&1).map(|h| h.level), Some(ffi::SQLITE_LOCK_EXCLUSIVE));
        assert_eq!(lock_level(&mut e, 3, ffi::SQLITE_LOCK_SHARED), Err(ffi::SQLITE_BUSY));
        if let Some(h) = e.holders.get_mut(&1) {
            h.level = ffi::SQLITE_LOCK_SHARED;
        }
        assert_eq!(lock_level(&mut e, 3, ffi::SQLITE_LOCK_SHARED), Ok(()));
        assert_eq!(lock_level(&mut e, 3, ffi::SQLITE_LOCK_NONE), Ok(()), "lower is a no-op");
    }

    #[test]
    fn wal_slots_are_shared_or_exclusive() {
        let lock_sh = ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_SHARED;
        let lock_ex = ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE;
        let unlock_sh = ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_SHARED;
        let unlock_ex = ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE;
        let mut e = entry_with(&[1, 2]);
        assert_eq!(shm_lock_slots(&mut e, 1, 0b0000_1000, lock_sh), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 2, 0b0000_1000, lock_sh), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 2, 0b1111_1000, lock_ex), Err(ffi::SQLITE_BUSY));
        assert_eq!(e.holders.get(&2).map(|h| h.shm_excl), Some(0), "all or nothing");
        assert_eq!(shm_lock_slots(&mut e, 2, 0b0000_0001, lock_ex), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 1, 0b0000_0001, lock_sh), Err(ffi::SQLITE_BUSY));
        assert_eq!(shm_lock_slots(&mut e, 1, 0b0000_0001, lock_ex), Err(ffi::SQLITE_BUSY));
        assert_eq!(shm_lock_slots(&mut e, 2, 0b0000_0001, unlock_ex), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 1, 0b0000_0001, lock_ex), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 1, 0b0000_1000, unlock_sh), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 2, 0b0000_1000, unlock_sh), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 2, 0b0000_1000, lock_ex), Ok(()));
        assert_eq!(
            shm_lock_slots(&mut e, 2, 0b0000_1000, lock_ex | ffi::SQLITE_SHM_UNLOCK),
            Err(ffi::SQLITE_IOERR_SHMLOCK)
        );
        // Unmapping releases everything and frees the regions with the last mapper.
        e.shm.push(Region::new(32768));
        for h in e.holders.values_mut() {
            h.shm_mapped = true;
        }
        shm_release(&mut e, 1);
        assert_eq!(e.shm.len(), 1);
        shm_release(&mut e, 2);
        assert!(e.shm.is_empty());
        assert_eq!(shm_lock_slots(&mut e, 1, 0b1111_1111, lock_ex), Ok(()));
    }
}
