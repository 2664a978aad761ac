//! The driver: runs the store's plans on a [`Vfs`] and reads the disk for recovery.
//!
//! It owns no state beyond the filesystem handle and the workspace root. Each [`Step`] maps
//! to one or two `Vfs` calls; a failure is reported with the step's index so the caller can
//! tell, with [`Plan::failure_is_after_commit`], whether to abort or to poison.

use crate::store::{AppScan, Plan, Scan, ScannedFile, Step};
use crate::vfs::{self, Vfs, VfsError, VfsErrorKind};
use crate::{Error, ErrorCode};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most entries a recovery scan visits before refusing (a bound on the walk).
pub const SCAN_ENTRIES_MAX: usize = 1_000_000;
/// Deepest directory level below an app directory a scan descends (`db/<db>/snapshots`).
pub const SCAN_DEPTH_MAX: usize = 3;

/// A failed plan step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// Index of the failed step in the plan.
    pub index: usize,
    /// The step, as text.
    pub step: String,
    /// Whether the step was a sync (file or directory): a failure there is fail-stop.
    pub sync: bool,
    /// Whether the operation may have taken effect (failure at or after the commit step).
    pub after_commit: bool,
    /// The filesystem's error.
    pub error: VfsError,
}

impl StepFailure {
    /// Whether the database must be poisoned (outcome unknown or durability lost).
    pub fn must_poison(&self) -> bool {
        self.sync || self.after_commit
    }

    /// The error to report to the caller: what failed, on what kind of file, in the system's
    /// words, and no path (apps see these errors; the layout of the workspace is not theirs).
    /// A full disk is [`ErrorCode::DiskFull`]; a refusal after an earlier fault is
    /// [`ErrorCode::Poisoned`]; anything else [`ErrorCode::Io`].
    pub fn to_error(&self) -> Error {
        let code = match self.error.kind {
            VfsErrorKind::Poisoned => ErrorCode::Poisoned,
            VfsErrorKind::NoSpace => ErrorCode::DiskFull,
            _ => ErrorCode::Io,
        };
        let tail = if self.must_poison() {
            "; the database is poisoned until the workspace is reopened"
        } else {
            ""
        };
        let kind = crate::fault::FileKind::of_path(&self.error.path);
        let kind = if self.error.op.contains("dir") { crate::fault::FileKind::Directory } else { kind };
        Error::new(
            code,
            format!(
                "step {} of the operation failed: {} of a {} failed: {}{tail}",
                self.index,
                self.error.op,
                kind.as_str(),
                self.error.detail
            ),
        )
    }
}

/// Runs plans against a workspace root on a [`Vfs`].
#[derive(Clone)]
pub struct Driver {
    vfs: Arc<dyn Vfs>,
    root: PathBuf,
}

impl Driver {
    /// A driver for the workspace at `root`.
    pub fn new(vfs: Arc<dyn Vfs>, root: PathBuf) -> Driver {
        Driver { vfs, root }
    }

    /// The filesystem.
    pub fn vfs(&self) -> &Arc<dyn Vfs> {
        &self.vfs
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of a workspace-relative path.
    pub fn abs(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Runs one step.
    pub fn run_step(&self, step: &Step) -> Result<(), VfsError> {
        let fs = self.vfs.as_ref();
        match step {
            Step::CreateDir(p) => fs.create_dir(&self.abs(p)),
            Step::WriteFile { path, bytes } => vfs::write_file(fs, &self.abs(path), bytes).map(|_| ()),
            Step::SyncFile(p) => fs.open(&self.abs(p), vfs::OpenMode::ReadWrite)?.sync(),
            Step::Rename { from, to } => fs.rename(&self.abs(from), &self.abs(to)),
            Step::SyncDir(p) => fs.sync_dir(&self.abs(p)),
            Step::RemoveFile(p) => match fs.remove_file(&self.abs(p)) {
                Err(e) if e.kind == VfsErrorKind::NotFound => Ok(()),
                other => other,
            },
            Step::RemoveDir(p) => match fs.remove_dir(&self.abs(p)) {
                Err(e) if e.kind == VfsErrorKind::NotFound => Ok(()),
                other => other,
            },
            Step::RemoveTree(p) => {
                let mut budget = SCAN_ENTRIES_MAX;
                self.remove_tree(&self.abs(p), 0, &mut budget)
            }
        }
    }

    /// Removes `dir` and what is below it, children first, at most [`SCAN_ENTRIES_MAX`]
    /// entries and one level deeper than a scan looks (`db/<db>/snapshots/<file>` below an
    /// app directory); anything deeper makes the final `remove_dir` fail, and GC reports it.
    fn remove_tree(&self, dir: &Path, depth: usize, budget: &mut usize) -> Result<(), VfsError> {
        let fs = self.vfs.as_ref();
        let entries = match fs.list_dir(dir) {
            Err(e) if e.kind == VfsErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        for entry in entries {
            *budget = budget.checked_sub(1).ok_or_else(|| {
                VfsError::new(
                    VfsErrorKind::Other,
                    "remove_dir",
                    dir,
                    format!("stopped after {SCAN_ENTRIES_MAX} entries"),
                )
            })?;
            let path = dir.join(&entry.name);
            let removed = if entry.is_dir && depth <= SCAN_DEPTH_MAX {
                self.remove_tree(&path, depth + 1, budget)
            } else if entry.is_dir {
                fs.remove_dir(&path)
            } else {
                fs.remove_file(&path)
            };
            match removed {
                Err(e) if e.kind == VfsErrorKind::NotFound => {}
                other => other?,
            }
        }
        match fs.remove_dir(dir) {
            Err(e) if e.kind == VfsErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Runs every step in order, stopping at the first failure.
    pub fn run(&self, plan: &Plan) -> Result<(), StepFailure> {
        for (index, step) in plan.steps.iter().enumerate() {
            if let Err(error) = self.run_step(step) {
                return Err(StepFailure {
                    index,
                    step: step.to_string(),
                    sync: step.is_sync(),
                    after_commit: plan.failure_is_after_commit(index),
                    error,
                });
            }
        }
        Ok(())
    }

    /// Reads what recovery needs: every app directory, its files (records read in full) and
    /// subdirectories. A missing `apps/` directory is an empty workspace.
    pub fn scan(&self) -> Result<Scan, Error> {
        let apps_dir = self.abs(Path::new(crate::store::layout::APPS_DIR));
        let mut scan = Scan::default();
        if !self.vfs.exists(&apps_dir)? {
            return Ok(scan);
        }
        let mut budget = SCAN_ENTRIES_MAX;
        for entry in self.vfs.list_dir(&apps_dir)? {
            if !entry.is_dir {
                continue;
            }
            let mut app = AppScan { dir_name: entry.name.clone(), ..AppScan::default() };
            self.walk(&apps_dir.join(&entry.name), "", 0, &mut app, &mut budget)?;
            scan.apps.push(app);
        }
        Ok(scan)
    }

    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        depth: usize,
        app: &mut AppScan,
        budget: &mut usize,
    ) -> Result<(), Error> {
        for entry in self.vfs.list_dir(dir)? {
            *budget = budget.checked_sub(1).ok_or_else(|| {
                Error::new(ErrorCode::Io, format!("recovery scan stopped after {SCAN_ENTRIES_MAX} entries"))
            })?;
            let child_rel = if rel.is_empty() { entry.name.clone() } else { format!("{rel}/{}", entry.name) };
            let path = dir.join(&entry.name);
            if entry.is_dir {
                app.dirs.push(child_rel.clone());
                if depth < SCAN_DEPTH_MAX {
                    self.walk(&path, &child_rel, depth + 1, app, budget)?;
                }
                continue;
            }
            let size = self.vfs.file_len(&path)?.unwrap_or(0);
            let is_record = entry.name == crate::store::layout::APP_RECORD && depth == 0
                || (depth == 2
                    && (entry.name == crate::store::layout::CURRENT
                        || entry.name == crate::store::layout::MANIFEST));
            let content = if is_record { Some(vfs::read_file(self.vfs.as_ref(), &path)?) } else { None };
            app.files.push(ScannedFile { rel: child_rel, size, content });
        }
        Ok(())
    }
}
