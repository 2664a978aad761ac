//! Registering the engine's SQLite VFS: the never-freed shells SQLite points to.
//!
//! SQLite keeps a pointer to a registered `sqlite3_vfs` and may be inside a call on it while
//! another thread unregisters it. So the `sqlite3_vfs` struct (with its name) lives in a
//! *shell* that is never freed; the shell points to a registration's state through a slot
//! that unregistering empties (callbacks then fail cleanly). Open files hold their state by
//! reference count, so they stay valid even after the registration goes. A shell is reused
//! by a later registration only once no file of its previous one is open, so the number of
//! shells is bounded by the number of registrations alive at once (two per open workspace).

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use rusqlite::ffi;

use super::callbacks;
use super::{lock, SqliteVfs, VfsHooks, VfsState, MAX_PATHNAME};
use crate::vfs::Vfs;
use crate::{Error, ErrorCode, Result};

/// What a shell serves now: a registration's state, and whether paths are confined.
#[derive(Clone)]
pub(super) struct Serving {
    pub(super) state: Arc<VfsState>,
    pub(super) confined: bool,
}

/// The never-freed home of one name's `sqlite3_vfs`.
pub(super) struct Shell {
    /// Handed to SQLite as `*mut sqlite3_vfs`.
    raw: UnsafeCell<ffi::sqlite3_vfs>,
    /// Owns the bytes `raw.zName` points to.
    _name: CString,
    /// The registration served; `None` while unregistered.
    slot: RwLock<Option<Serving>>,
    /// The last registration served, to tell when its files are all closed.
    last: Mutex<Weak<VfsState>>,
}

// SAFETY: `raw` is written by Rust only in `Shell::leak`, before the shell is shared with
// anyone. Afterwards only SQLite writes it (`pNext`, under SQLite's own global mutex, while
// registered), and Rust only passes its address. Every other field is `Sync` on its own.
unsafe impl Sync for Shell {}

impl Shell {
    /// Allocates a shell for `name` and leaks it: SQLite may hold its address forever.
    fn leak(name: CString) -> &'static Shell {
        let raw = callbacks::vfs_struct(name.as_ptr(), MAX_PATHNAME);
        let shell = Box::into_raw(Box::new(Shell {
            raw: UnsafeCell::new(raw),
            _name: name,
            slot: RwLock::new(None),
            last: Mutex::new(Weak::new()),
        }));
        // SAFETY: `shell` is a fresh, valid, uniquely owned allocation; nobody else can see it
        // yet, so writing its `raw.pAppData` cannot race. It is never freed, so the `'static`
        // reference (and the self-pointer in pAppData) stays valid for the whole process.
        unsafe {
            (*(*shell).raw.get()).pAppData = shell.cast::<c_void>();
            &*shell
        }
    }

    fn vfs_ptr(&self) -> *mut ffi::sqlite3_vfs {
        self.raw.get()
    }

    /// The registration served now.
    pub(super) fn serving(&self) -> Option<Serving> {
        self.slot.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Free for a new registration: none served, and no file of the last one open.
    fn is_free(&self) -> bool {
        self.serving().is_none()
            && lock(&self.last).upgrade().is_none_or(|s| s.open_files.load(Ordering::Acquire) == 0)
    }
}

/// Every shell ever made, by name; also serializes register and unregister.
static SHELLS: Mutex<BTreeMap<String, &'static Shell>> = Mutex::new(BTreeMap::new());

/// Prefix of every name this module registers.
const NAME_PREFIX: &str = "sila-vfs-";

/// Registers the engine's SQLite VFS over `vfs` (see the module doc of [`super`]): an app
/// name and an engine name, unregistered when the returned handle drops.
pub fn register(vfs: Arc<dyn Vfs>, hooks: VfsHooks) -> Result<SqliteVfs> {
    let state = Arc::new(VfsState::new(vfs, hooks));
    let mut shells = lock(&SHELLS);
    let mut names = Vec::with_capacity(2);
    for confined in [true, false] {
        let free = shells.iter().find(|(name, shell)| !names.contains(*name) && shell.is_free());
        let (name, shell) = match free {
            Some((name, shell)) => (name.clone(), *shell),
            None => {
                let name = format!("{NAME_PREFIX}{}", shells.len());
                let c_name = CString::new(name.clone()).map_err(|e| Error::internal(e.to_string()))?;
                // SAFETY: `c_name` is a valid NUL-terminated string for the duration of the call.
                let existing = unsafe { ffi::sqlite3_vfs_find(c_name.as_ptr()) };
                if !existing.is_null() {
                    return Err(Error::internal(format!("a SQLite VFS named {name:?} already exists")));
                }
                let shell = Shell::leak(c_name);
                shells.insert(name.clone(), shell);
                (name, shell)
            }
        };
        *shell.slot.write().unwrap_or_else(PoisonError::into_inner) =
            Some(Serving { state: state.clone(), confined });
        *lock(&shell.last) = Arc::downgrade(&state);
        // SAFETY: the shell's sqlite3_vfs is fully initialized, lives forever at a fixed
        // address, and its callbacks find their state through the slot just filled.
        let rc = unsafe { ffi::sqlite3_vfs_register(shell.vfs_ptr(), 0) };
        if rc != ffi::SQLITE_OK {
            *shell.slot.write().unwrap_or_else(PoisonError::into_inner) = None;
            drop(shells);
            for name in &names {
                unregister(name);
            }
            return Err(Error::new(
                ErrorCode::Internal,
                format!("sqlite3_vfs_register({name:?}) failed with code {rc}"),
            ));
        }
        names.push(name);
    }
    drop(shells);
    let engine_name = names.pop().unwrap_or_default();
    let app_name = names.pop().unwrap_or_default();
    Ok(SqliteVfs { state, app_name, engine_name })
}

/// Unregisters `name` (no-op if it is not registered). Files it opened stay valid; SQLite's
/// VFS-level calls on it (access, delete) then fail cleanly.
pub(super) fn unregister(name: &str) {
    let shells = lock(&SHELLS);
    let Some(shell) = shells.get(name).copied() else { return };
    if shell.serving().is_none() {
        return;
    }
    // SAFETY: the pointer is this shell's registered sqlite3_vfs; unregistering a registered
    // VFS only unlinks it from SQLite's list.
    let _rc: c_int = unsafe { ffi::sqlite3_vfs_unregister(shell.vfs_ptr()) };
    *shell.slot.write().unwrap_or_else(PoisonError::into_inner) = None;
}

/// Files open through the registration behind `name` (`None` if it is not registered).
pub fn open_files(name: &str) -> Option<usize> {
    let shell = lock(&SHELLS).get(name).copied()?;
    shell.serving().map(|s| s.state.open_files.load(Ordering::Acquire))
}

/// The shell SQLite passes to a vfs callback.
///
/// # Safety
/// `vfs` is null or a `sqlite3_vfs` pointer SQLite got from [`register`]: the `raw` field of
/// a leaked, never-freed [`Shell`] whose `pAppData` points to the shell itself.
pub(super) unsafe fn serving_of(vfs: *mut ffi::sqlite3_vfs) -> Option<Serving> {
    if vfs.is_null() {
        return None;
    }
    // SAFETY: per the contract `vfs` points to a live sqlite3_vfs; `pAppData` is never
    // written after the shell was published, so this read does not race.
    let app = unsafe { (*vfs).pAppData }.cast::<Shell>().cast_const();
    if app.is_null() {
        return None;
    }
    // SAFETY: `pAppData` of our vfs is the address of its leaked `Shell`, valid forever.
    let shell: &'static Shell = unsafe { &*app };
    shell.serving()
}
