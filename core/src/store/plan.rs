//! IO plans: what the store asks the driver to do, one step at a time.
//!
//! A [`Plan`] is an ordered list of [`Step`]s. Each step is executable on its own, so the
//! simulation may crash the machine between any two. Paths are relative to the workspace
//! root; the driver joins them. The plan marks its *commit step*: the rename after which the
//! operation has taken effect on disk (once its directory is synced). A failure before the
//! commit step leaves the old state; a failure at or after it leaves the outcome to recovery.

use std::fmt;
use std::path::PathBuf;

use super::OpId;

/// One IO step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create a directory (its parent exists). Durable after `SyncDir` of the parent.
    CreateDir(PathBuf),
    /// Create or truncate a file and write these bytes. Not durable until `SyncFile`.
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Its whole content.
        bytes: Vec<u8>,
    },
    /// `fsync` a file.
    SyncFile(PathBuf),
    /// Atomically rename a file, replacing the target.
    Rename {
        /// The old name.
        from: PathBuf,
        /// The new name.
        to: PathBuf,
    },
    /// `fsync` a directory: its entries become durable.
    SyncDir(PathBuf),
    /// Unlink a file. A file already gone counts as removed (recovery replays removals).
    RemoveFile(PathBuf),
    /// Remove an empty directory. One already gone counts as removed.
    RemoveDir(PathBuf),
    /// Remove a directory the app record no longer lists (a removed database, an
    /// unregistered app) with everything below it, deepest first. One already gone counts
    /// as removed. GC plans hold it for directories recovery or a completed change retired,
    /// and the cleanup of an update that failed before its commit for the databases it was
    /// adding.
    RemoveTree(PathBuf),
}

impl Step {
    /// Whether a failure of this step means data the engine relied on may be lost, which
    /// poisons the database (fail-stop).
    pub fn is_sync(&self) -> bool {
        matches!(self, Step::SyncFile(_) | Step::SyncDir(_))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateDir(p) => write!(f, "create_dir {}", p.display()),
            Step::WriteFile { path, bytes } => write!(f, "write {} ({} bytes)", path.display(), bytes.len()),
            Step::SyncFile(p) => write!(f, "sync {}", p.display()),
            Step::Rename { from, to } => write!(f, "rename {} -> {}", from.display(), to.display()),
            Step::SyncDir(p) => write!(f, "sync_dir {}", p.display()),
            Step::RemoveFile(p) => write!(f, "remove {}", p.display()),
            Step::RemoveDir(p) => write!(f, "remove_dir {}", p.display()),
            Step::RemoveTree(p) => write!(f, "remove_tree {}", p.display()),
        }
    }
}

/// An ordered list of steps for one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The operation this plan belongs to; pass it to `Store::complete` or `Store::abort`.
    pub op: OpId,
    /// The steps, in the order they must run.
    pub steps: Vec<Step>,
    /// Index of the step after which the operation has taken effect, if it has one.
    pub commit_step: Option<usize>,
}

impl Plan {
    /// One line per step, for logs, traces and snapshot tests.
    pub fn transcript(&self) -> String {
        let mut out = String::new();
        for (i, step) in self.steps.iter().enumerate() {
            let mark = if Some(i) == self.commit_step { "  <- commit" } else { "" };
            out.push_str(&format!("{i:2} {step}{mark}\n"));
        }
        out
    }

    /// Whether a failure at step `index` may have left the operation committed (or unknown).
    pub fn failure_is_after_commit(&self, index: usize) -> bool {
        matches!(self.commit_step, Some(c) if index >= c)
    }
}
