//! The fault knobs of a [`MemFs`](super::MemFs) and the counters of what happened (see the module docs
//! of [`super`] for what each family does).

/// Fault knobs of a [`MemFs`](super::MemFs). `Faults::default()` turns every fault off.
///
/// Rates ending in `_bp` are in basis points: out of [`BP_SCALE`](super::BP_SCALE) (10 000), drawn from the
/// filesystem's seeded generator ([`MemFs::set_seed`](super::MemFs::set_seed)) only when the rate is not zero, so a
/// disk with every rate at zero never draws and replays exactly as before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// `sync_dir` returns `Ok` and makes nothing durable.
    pub lie_sync_dir: bool,
    /// File `sync` returns `Ok` and makes nothing durable.
    pub lie_sync: bool,
    /// Counting from the [`MemFs::set_faults`](super::MemFs::set_faults) call, the `(n + 1)`-th file `sync` fails with
    /// [`VfsErrorKind::Other`](sila_sqlite::vfs::VfsErrorKind::Other) (`"EIO"`): that inode's unsynced data is dropped (its data is
    /// reset to its durable data) and the handle is poisoned (every later call on it fails
    /// with [`VfsErrorKind::Poisoned`](sila_sqlite::vfs::VfsErrorKind::Poisoned)). One-shot: later syncs are not failed. Syncs on stale
    /// or poisoned handles do not count; lying syncs do.
    pub fail_sync_after: Option<u64>,
    /// With [`Faults::fail_sync_after`]: only syncs of files whose path ends with this count
    /// and fail (`".sqlite"`: database and snapshot files; `"-wal"`: write-ahead logs), so a
    /// profile can aim at SQLite's own syncs. `None`: every file sync.
    pub fail_sync_suffix: Option<&'static str>,
    /// Cap on the total bytes of all files reachable in the live namespace or held open; a
    /// write or `set_len` that would grow past it fails with [`VfsErrorKind::NoSpace`](sila_sqlite::vfs::VfsErrorKind::NoSpace) and
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
    /// of it fail with `EIO` until the next crash or [`MemFs::repair`](super::MemFs::repair).
    pub bad_inode_bp: u16,
    /// On a read, with this rate a sector in the read range develops a *latent sector
    /// error*: every read touching it fails with `EIO` until a write covers the whole
    /// sector (the drive remaps it) or [`MemFs::repair`](super::MemFs::repair). It survives crashes.
    pub latent_sector_bp: u16,
    /// On a read or a write of two bytes or more, with this rate the call moves fewer bytes
    /// than asked (at least one), as the [`Vfs`](sila_sqlite::vfs::Vfs) contract allows.
    pub short_io_bp: u16,
    /// On a read of a file the rot filter accepts ([`MemFs::set_rot_filter`](super::MemFs::set_rot_filter)), with this
    /// rate one stored bit in the read range flips, in the volatile and the durable data:
    /// the read returns the rotten byte and so does every later read.
    pub bitrot_bp: u16,
    /// On a read, write or sync, with this rate the call is slow: it reports 1 to
    /// `slow_io_ms_max` milliseconds to the latency sink ([`MemFs::set_latency_sink`](super::MemFs::set_latency_sink)).
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

/// Operation counters of a [`MemFs`](super::MemFs) since [`MemFs::new`](super::MemFs::new) (crashes do not reset them).
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
    /// Crash images taken ([`MemFs::crash`](super::MemFs::crash), [`MemFs::durable_image`](super::MemFs::durable_image)).
    pub crash_images: u64,
    /// Crash images taken while some file had unsynced changes.
    pub crash_images_unsynced: u64,
    /// Crash images taken while two files or more had unsynced changes.
    pub crash_images_multi_file: u64,
    /// Crash images in which a change survived while an earlier change to another file was
    /// lost (reordering across files).
    pub crash_reorders: u64,
    /// Power cuts that waited for unsynced changes on enough files
    /// ([`MemFs::cut_power_when_dirty`](super::MemFs::cut_power_when_dirty)) and found them.
    pub dirty_cuts: u64,
}
