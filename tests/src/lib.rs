//! Support for the cross-crate integration tests in `tests/tests/`.
//!
//! The tests drive `sila_sqlite` through its public API on the real filesystem. This crate
//! gives them what they share: a unique temporary directory that is removed on drop, a full
//! picture of a directory tree (to prove that a refused request changed nothing on disk),
//! the manifests the tests register, and a few file helpers.
//!
//! Setup failures here panic on purpose: a test whose setup failed must stop, loudly.
#![allow(clippy::expect_used, clippy::panic)]

use sila_sqlite::uuid::Uuid;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The manifest of the foundation issue, verbatim.
pub const SPEC_MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics","maxSizeMB":256,"readOnly":false}],"tier":"standard"}}}"#;

/// The same manifest with every default left out: it validates to the same value.
pub const SPEC_MANIFEST_DEFAULTS_OMITTED: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics"}]}}}"#;

/// A manifest with two databases, so a test can damage one and check the other.
pub const TWO_DB_MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics","maxSizeMB":16},{"name":"cache","maxSizeMB":8}],"tier":"standard"}}}"#;

/// A second app's manifest (basic tier).
pub const OTHER_MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"notes","maxSizeMB":4}],"tier":"basic"}}}"#;

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/sila-it-<label>-<pid>-<n>`; `label` names the test for a person
    /// looking at a leftover directory.
    pub fn new(label: &str) -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("sila-it-{label}-{}-{n}", std::process::id()));
        // A leftover from an earlier run with the same pid would make the test lie.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One entry of a [`tree`]: a directory, or a file with its full content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir,
    /// A file and its bytes.
    File(Vec<u8>),
}

/// Every directory and file below `root`, by path relative to it (with `/` separators),
/// files with their content. Two equal trees mean nothing on disk changed.
pub fn tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Entry>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("read dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        if entry.file_type().expect("file type").is_dir() {
            out.insert(child.clone(), Entry::Dir);
            walk(&entry.path(), &child, out);
        } else {
            let bytes = std::fs::read(entry.path()).expect("read file");
            out.insert(child, Entry::File(bytes));
        }
    }
}

/// The names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("read dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Whether `name` is a UUID in the canonical lowercase hyphenated form.
pub fn is_canonical_uuid(name: &str) -> bool {
    Uuid::try_parse(name).map(|u| u.hyphenated().to_string() == name).unwrap_or(false)
}

/// The size of a file on disk.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).len()
}

/// Writes `len` bytes of a recognisable pattern to `path` (creating or replacing it).
pub fn write_pattern(path: &Path, len: usize) {
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
