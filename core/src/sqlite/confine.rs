//! Confinement rules: which files an app's SQLite connection may open, and the record of
//! every refusal.
//!
//! The engine's SQLite VFS ([`super::vfs`]) checks, under the name app connections open
//! through, every path SQLite asks for, so even if the authorizer ([`super::policy`]) were
//! bypassed, SQL could only reach files the engine itself lays out:
//!
//! * the path is absolute, valid UTF-8, and has no empty, `.` or `..` component;
//! * its directory is one the broker allowed (a database's directory inside the workspace,
//!   `<ws>/apps/<app_uuid>/db/<db>`, or the workspace's `tmp/`), exactly — not a subdirectory;
//! * its file name is `<stem>.sqlite` or one of SQLite's companions `-wal`, `-shm`, `-journal`,
//!   where the stem is 1–64 ASCII letters, digits, `-` or `_` (the store names files by UUID);
//! * neither the file nor its directory is a symbolic link (`Vfs::is_symlink`). Between that
//!   check and the open a symlink could in principle be swapped in; the directories are the
//!   workspace's own, which SQL has no way to create, rename or replace;
//! * super-journals (multi-database commits) are refused: attached databases are read-only,
//!   so no commit spans two files.
//!
//! Anonymous temporary files are counted against caps ([`temp_grow_within`]). Extension
//! loading through the VFS always fails. A refused path makes the SQLite call fail with
//! `SQLITE_CANTOPEN` (or `SQLITE_IOERR_*` for access/delete); the reason is kept for
//! [`super::map_error`] ([`take_refusal`]) and counted ([`refusals`]).
//!
//! Limit of this layer, stated plainly: the allowed directories are per workspace, so a
//! connection of app A is confined to the databases' directories the workspace has opened,
//! not to A's alone (the authorizer, which refuses every ATTACH app SQL carries, is what keeps
//! A out of B's files; the broker's own ATTACH names files it resolved from A's manifest).

use std::sync::atomic::{AtomicU64, Ordering};

/// Longest file stem accepted, in bytes.
const STEM_BYTES_MAX: usize = 64;

/// Suffixes SQLite appends to a database's name for its companion files.
const COMPANION_SUFFIXES: [&str; 4] = ["", "-wal", "-shm", "-journal"];

/// Paths refused since the process started.
static REFUSALS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static LAST_REFUSAL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// How many paths the VFS has refused since the process started.
pub fn refusals() -> u64 {
    REFUSALS.load(Ordering::Relaxed)
}

/// Takes the reason of the last refusal made on this thread, if any.
pub fn take_refusal() -> Option<String> {
    LAST_REFUSAL.with(|r| r.borrow_mut().take())
}

/// Forgets a refusal left on this thread by an earlier call that SQLite tolerated (an
/// `xAccess` probe that was refused but did not fail the statement), so it cannot relabel the
/// error of an unrelated later statement. Called before every statement the engine runs.
pub fn clear_refusal() {
    LAST_REFUSAL.with(|r| r.borrow_mut().take());
    super::vfs::clear_io_note();
}

/// Records (on this thread) and counts a refused path.
pub(crate) fn refuse(path: &str, why: &str) {
    REFUSALS.fetch_add(1, Ordering::Relaxed);
    // The path is shown escaped and shortened: it may come from SQL.
    let shown: String = path.escape_debug().take(200).collect();
    LAST_REFUSAL.with(|r| {
        *r.borrow_mut() = Some(format!(
            "the confinement VFS refused file {shown:?}: {why}; apps reach only their own databases"
        ))
    });
}

/// Records (on this thread) and counts a refusal whose message is `why` (temp caps).
pub(crate) fn refuse_with(why: String) {
    REFUSALS.fetch_add(1, Ordering::Relaxed);
    LAST_REFUSAL.with(|r| *r.borrow_mut() = Some(why));
}

/// Splits an absolute, normalized path into its directory and file name.
pub(crate) fn split_path(path: &str) -> std::result::Result<(&str, &str), &'static str> {
    if !path.starts_with('/') {
        return Err("it is not an absolute path");
    }
    if path.split('/').skip(1).any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("it has an empty, '.' or '..' component");
    }
    let cut = path.rfind('/').ok_or("it is not an absolute path")?;
    let dir = path.get(..cut).ok_or("it is not an absolute path")?;
    let name = path.get(cut + 1..).ok_or("it has no file name")?;
    if dir.is_empty() {
        return Err("it lies in the root directory");
    }
    Ok((dir, name))
}

pub(crate) fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    let stem = COMPANION_SUFFIXES
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix).and_then(|n| n.strip_suffix(".sqlite")))
        .ok_or("its name is not <stem>.sqlite or one of SQLite's -wal, -shm, -journal companions")?;
    let good = !stem.is_empty()
        && stem.len() <= STEM_BYTES_MAX
        && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if good {
        Ok(())
    } else {
        Err("its name is not a database file name the engine creates")
    }
}

// ----- anonymous temporary files: capped -------------------------------------------------------

/// Accounts growth of a temporary file from `accounted` to `end` bytes against the caps
/// `(per_file, total)` and the counter of bytes in use; returns the bytes added, or why the
/// growth is refused.
pub(crate) fn temp_grow_within(
    accounted: u64,
    end: u64,
    (per_file, total): (u64, u64),
    in_use: &AtomicU64,
) -> std::result::Result<u64, String> {
    if end <= accounted {
        return Ok(0);
    }
    let grow = end - accounted;
    if end > per_file {
        return Err(format!(
            "temporary storage of one statement (a sort, DISTINCT, GROUP BY or materialized subquery) \
             would pass temp_file_bytes_max ({per_file} bytes); narrow the query or add an index"
        ));
    }
    let before = in_use.fetch_add(grow, Ordering::AcqRel);
    if before.saturating_add(grow) > total {
        in_use.fetch_sub(grow, Ordering::AcqRel);
        return Err(format!(
            "temporary storage of all statements would pass temp_bytes_total_max ({total} bytes); retry later"
        ));
    }
    Ok(grow)
}

#[cfg(test)]
mod tests {
    #[test]
    fn temp_growth_is_refused_one_byte_past_either_cap() {
        let in_use = AtomicU64::new(0);
        let caps = (1000, 1500);
        assert_eq!(temp_grow_within(0, 1000, caps, &in_use), Ok(1000), "exactly the per-file cap fits");
        assert!(temp_grow_within(1000, 1001, caps, &in_use).is_err_and(|w| w.contains("temp_file_bytes_max")));
        assert_eq!(temp_grow_within(1000, 900, caps, &in_use), Ok(0), "rewriting inside the file is free");
        assert_eq!(in_use.load(Ordering::Relaxed), 1000);
        assert_eq!(temp_grow_within(0, 500, caps, &in_use), Ok(500), "exactly the total cap fits");
        let over = temp_grow_within(0, 1, caps, &in_use);
        assert!(over.is_err_and(|w| w.contains("temp_bytes_total_max")), "one byte past the total");
        assert_eq!(in_use.load(Ordering::Relaxed), 1500, "a refused growth is not counted");
    }

    #[test]
    fn a_tolerated_refusal_is_forgotten_before_the_next_statement() {
        refuse("/etc/passwd", "test");
        clear_refusal();
        assert_eq!(take_refusal(), None);
        refuse("/etc/passwd", "test");
        assert!(take_refusal().is_some_and(|r| r.contains("refused")));
    }

    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(check_name("0190a5c4-1b2c-7d3e-8f40-123456789abc.sqlite"), Ok(()));
        assert_eq!(check_name("a.sqlite-wal"), Ok(()));
        assert_eq!(check_name("a.sqlite-shm"), Ok(()));
        assert_eq!(check_name("a.sqlite-journal"), Ok(()));
        for bad in ["a.db", ".sqlite", "a.sqlite-mj01", "a b.sqlite", "passwd", "a.sqlite.sqlite-x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for bad in ["relative/a.sqlite", "/a.sqlite", "/x/../y/a.sqlite", "/x/./a.sqlite", "/x//a.sqlite", ""]
        {
            assert!(split_path(bad).is_err(), "{bad}");
        }
        assert_eq!(split_path("/x/y/a.sqlite"), Ok(("/x/y", "a.sqlite")));
    }
}
