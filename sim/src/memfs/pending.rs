//! Changes made since a file's last sync, and what a crash does to each: applied, dropped,
//! trashed or torn, sector by sector.

use super::*;

/// A file change made since the inode's last successful sync, in the order issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pending {
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
    pub(super) fn seq(&self) -> u64 {
        match self {
            Pending::Write { seq, .. } | Pending::SetLen { seq, .. } => *seq,
        }
    }

    /// Whether a torn crash can split it: a write touching two sectors or more.
    pub(super) fn multi_sector(&self) -> bool {
        match self {
            Pending::Write { offset, bytes, .. } => sector_span(*offset, bytes.len()).count() > 1,
            Pending::SetLen { .. } => false,
        }
    }
}

/// What a crash does to one pending operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
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
pub(super) fn reordered(fates: &BTreeMap<u64, Fate>, file_of: &BTreeMap<u64, Ino>) -> bool {
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
pub(super) fn sector_span(offset: u64, len: usize) -> std::ops::Range<u64> {
    if len == 0 {
        return 0..0;
    }
    let first = offset / SECTOR_BYTES;
    let last = offset.saturating_add(len as u64 - 1) / SECTOR_BYTES;
    first..last.saturating_add(1)
}

/// Grows `image` with zeros to at least `len` bytes (capped at [`FILE_BYTES_MAX`]).
pub(super) fn grow(image: &mut Vec<u8>, len: u64) {
    let len = usize::try_from(len.min(FILE_BYTES_MAX)).unwrap_or(usize::MAX);
    if image.len() < len {
        image.resize(len, 0);
    }
}

/// Writes `bytes` at `offset` into `image`, zero-filling a gap.
pub(super) fn put(image: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    grow(image, offset.saturating_add(bytes.len() as u64));
    let Ok(start) = usize::try_from(offset) else { return };
    if let Some(dst) = image.get_mut(start..start.saturating_add(bytes.len())) {
        dst.copy_from_slice(bytes);
    }
}

/// Fills sector `sector` of `image` with garbage from `rng`: the whole sector when `spill`
/// (no power-safe overwrite), else only its bytes inside `write` (the range a write covers).
pub(super) fn trash_sector(
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
pub(super) fn apply_pending(
    image: &mut Vec<u8>,
    op: &Pending,
    fate: Fate,
    spill: bool,
    rng: &mut ChaCha8Rng,
) {
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
