//! Exports and backups: a consistent copy written under a temporary name, synced, renamed
//! into place, its directory synced; backup retention.

use super::*;

/// How [`Database::export_as`], [`Database::export_to_path_as`] and [`Database::backup_as`]
/// write their file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExportFormat {
    /// A plain `.sqlite` file (rollback-journal mode) that the stock `sqlite3` shell opens.
    #[default]
    Sqlite,
    /// The same file, gzip-compressed (`.sqlite.gz`, one gzip member, DEFLATE level 6).
    /// [`Database::import`] takes such files as they are.
    SqliteGzip,
}

impl ExportFormat {
    /// The file name suffix: `.sqlite` or `.sqlite.gz`.
    pub fn suffix(self) -> &'static str {
        match self {
            ExportFormat::Sqlite => ".sqlite",
            ExportFormat::SqliteGzip => ".sqlite.gz",
        }
    }
}

/// Creates an export or backup directory and makes it durable in its parent.
pub(super) fn create_export_dir(fs: &dyn Vfs, dir: &Path) -> Result<()> {
    if crate::sabotage::active(crate::sabotage::Sabotage::ExportDirNotDurable) {
        return Ok(vfs::create_dir_all(fs, dir)?);
    }
    Ok(vfs::create_dir_all_durable(fs, dir)?)
}

impl Database {
    /// Writes a consistent copy of the live database to a host path (for operators and the
    /// CLI; apps use [`Database::export`]). The file opens in the stock `sqlite3` shell.
    /// Returns its size.
    pub fn export_to_path(&self, dest: &Path) -> Result<u64> {
        self.export_to_path_as(dest, ExportFormat::Sqlite)
    }

    /// [`Database::export_to_path`] in the given format (`dest` is used as given).
    pub fn export_to_path_as(&self, dest: &Path, format: ExportFormat) -> Result<u64> {
        // The file's name, not its directory: the record says what was written, the host
        // knows where it asked for it.
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.operation("export", || self.export_to_path_inner(dest, format), |n| Some(*n), |n| {
            Some(serde_json::json!({"file": name, "bytes": n, "format": format!("{format:?}").to_lowercase()}))
        })
    }

    /// Writes the export under a temporary name beside `dest` (see
    /// [`crate::Workspace::hold_partial`]), syncs it, renames it to `dest` and syncs the
    /// directory: a file under the final name is always complete, and a failed export leaves
    /// none (nor its temporaries; GC removes those a crash left).
    pub(super) fn export_to_path_inner(&self, dest: &Path, format: ExportFormat) -> Result<u64> {
        let refuse_existing = || -> Result<()> {
            if self.fs().exists(dest)? {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!("{} already exists", dest.display()),
                ));
            }
            Ok(())
        };
        refuse_existing()?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // A destination the host named outside the workspace: its failures (a full or failing
        // device, a failed sync there) say nothing about the workspace's files, so they do
        // not poison the database (a failure reading the live file latches the workspace's
        // fault by itself, in the VFS).
        let outside = !dest.starts_with(self.ws.driver().root());
        let mark = |e: Error| if outside { e.outside_workspace() } else { e };
        // What an earlier export to the same destination left when it crashed (GC sweeps the
        // workspace's areas, not a host directory).
        self.ws.remove_leftover_partials_of(dest).map_err(mark)?;
        let temp = self.ws.hold_partial(dest)?;
        let written = self.write_export(temp.path(), dest, format).and_then(|size| {
            // The first check was before the copy: a file may have appeared since. The rename
            // refuses it atomically instead of replacing it.
            self.fs().rename_noreplace(temp.path(), dest).map_err(|e| match e.kind {
                vfs::VfsErrorKind::AlreadyExists => Error::new(
                    ErrorCode::AlreadyExists,
                    format!("{} already exists (it appeared while the export was written)", dest.display()),
                ),
                _ => Error::from(e),
            })?;
            Ok(size)
        });
        let size = written.map_err(|e| mark(e.context("export")))?;
        if let Err(e) = self.fs().sync_dir(dir) {
            // The rename may not last; take it back rather than leave a file the error disowns.
            let _ = self.fs().remove_file(dest);
            return Err(mark(Error::from(e).context("export")));
        }
        Ok(size)
    }

    /// Writes a consistent copy of the live database in `format` into the new file `to` and
    /// syncs it; returns its size. `dest` names the temporaries beside it.
    pub(super) fn write_export(&self, to: &Path, dest: &Path, format: ExportFormat) -> Result<u64> {
        match format {
            ExportFormat::Sqlite => {
                self.copy_live(to)?;
            }
            ExportFormat::SqliteGzip => {
                let plain = self.ws.hold_partial(dest)?;
                self.copy_live(plain.path())?;
                gzip_file(self.fs(), plain.path(), to)?;
            }
        }
        let file = self.fs().open(to, OpenMode::ReadWrite)?;
        if !crate::sabotage::active(crate::sabotage::Sabotage::ExportSkipsSync) {
            file.sync()?;
        }
        Ok(file.len()?)
    }

    /// Exports into the app's own export area under a validated name
    /// (`apps/<app>/exports/<name>.sqlite`); apps never name host paths. Returns the path.
    pub fn export(&self, name: &str) -> Result<PathBuf> {
        self.export_as(name, ExportFormat::Sqlite)
    }

    /// [`Database::export`] in the given format (`<name>.sqlite` or `<name>.sqlite.gz`).
    pub fn export_as(&self, name: &str, format: ExportFormat) -> Result<PathBuf> {
        let name = crate::names::DbName::new(name)?;
        let key = self.key();
        let dir = self.ws.driver().abs(&layout::exports_dir(key.app));
        // Durable before the export is: an export reported done must survive a crash.
        create_export_dir(self.fs(), &dir)?;
        let dest = dir.join(format!("{}{}", name.as_str(), format.suffix()));
        self.export_to_path_as(&dest, format)?;
        Ok(dest)
    }

    /// Writes an online backup into the workspace's backup area
    /// (`backups/<app_uuid>/<db>/<uuid>.sqlite`) and keeps the newest `keep_last` backups of
    /// this database. Returns the backup's id and path.
    pub fn backup(&self, keep_last: usize) -> Result<(Uuid, PathBuf)> {
        self.backup_as(keep_last, ExportFormat::Sqlite)
    }

    /// [`Database::backup`] in the given format (`<uuid>.sqlite` or `<uuid>.sqlite.gz`); the
    /// `keep_last` newest backups of either format are kept.
    pub fn backup_as(&self, keep_last: usize, format: ExportFormat) -> Result<(Uuid, PathBuf)> {
        self.operation("backup", || self.backup_inner(keep_last, format), |_| None, |(id, _)| {
            Some(serde_json::json!({"backup": id.to_string(), "format": format!("{format:?}").to_lowercase()}))
        })
    }

    pub(super) fn backup_inner(&self, keep_last: usize, format: ExportFormat) -> Result<(Uuid, PathBuf)> {
        let key = self.key();
        let dir = self.ws.driver().abs(&layout::backups_dir(key.app, &key.db));
        create_export_dir(self.fs(), &dir)?;
        let id = self.ws.new_uuid();
        let dest = dir.join(format!("{}{}", id.hyphenated(), format.suffix()));
        self.export_to_path_as(&dest, format)?;
        // The workspace's UUID v7 names sort in the order they were made (store::ids);
        // compressed and plain backups count alike. Only complete backups have such a name:
        // temporaries (`.partial`) never count. The backup just made is always kept, even if
        // a clock stepped back across a restart makes an older name sort after it.
        let own = dest.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut names: Vec<String> = self
            .fs()
            .list_dir(&dir)?
            .into_iter()
            .map(|e| e.name)
            .filter(|n| {
                let plain = n.strip_suffix(".gz").unwrap_or(n);
                matches!(layout::classify(plain), layout::FileKind::Database(_)) && Some(n) != own.as_ref()
            })
            .collect();
        names.sort();
        let excess = names.len().saturating_sub(keep_last.max(1) - 1);
        for old in names.iter().take(excess) {
            self.fs().remove_file(&dir.join(old))?;
        }
        self.fs().sync_dir(&dir)?;
        Ok((id, dest))
    }
}
