//! Databases attached to a handle (`ATTACH 'sila://db/<name>'`, see [`crate::attach`]):
//! recorded on the handle, attached read-only by every connection before its next request.

use super::*;

/// The attachments one connection carries: the handle's attachment version they match, and
/// each attached database with the version of its file that was attached.
#[derive(Default)]
pub(super) struct AttachedHere {
    pub(super) version: u64,
    pub(super) schemas: Vec<(String, Arc<DbShared>, u64)>,
}

impl DbShared {
    /// Adds an attachment unless its schema name is taken or `max` are attached already;
    /// `Err` says which (checked and added under one lock, so concurrent ATTACHes cannot both
    /// pass the checks).
    pub(crate) fn add_attachment(
        &self,
        attachment: Attachment,
        max: usize,
    ) -> std::result::Result<(), String> {
        let mut a = lock(&self.attachments);
        if a.iter().any(|x| x.schema == attachment.schema) {
            return Err(format!("{} is attached already; DETACH it first", attachment.schema));
        }
        if a.len() >= max {
            return Err(format!("{max} databases are attached already (ATTACHMENTS_MAX)"));
        }
        a.push(attachment);
        self.attach_version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Removes the attachment named `schema`; false if there was none.
    pub(crate) fn remove_attachment(&self, schema: &str) -> bool {
        let mut a = lock(&self.attachments);
        let before = a.len();
        a.retain(|x| x.schema != schema);
        let removed = a.len() != before;
        if removed {
            self.attach_version.fetch_add(1, Ordering::AcqRel);
        }
        removed
    }

    /// Forgets every attachment (at workspace close); connections catch up as for DETACH.
    pub(crate) fn clear_attachments(&self) {
        lock(&self.attachments).clear();
        self.attach_version.fetch_add(1, Ordering::AcqRel);
    }

    /// Brings a connection's attached databases in line with the handle's attachments and
    /// with each attached database's current file (it may have flipped to a new version):
    /// detaches what it carries, then attaches each database's live file under its schema
    /// name, read-only (`SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE` is off on every connection).
    /// Called on a connection outside any transaction, before it serves a request. When
    /// nothing is attached it costs one atomic load.
    pub(super) fn sync_attachments(&self, tagged: &mut Tagged) -> Result<()> {
        let version = self.attach_version.load(Ordering::Acquire);
        let current = tagged.attached.version == version
            && tagged.attached.schemas.iter().all(|(_, target, g)| target.generation() == *g);
        if current {
            return Ok(());
        }
        for (schema, _, _) in std::mem::take(&mut tagged.attached.schemas) {
            internal_attach(&tagged.conn, None, &schema)?;
        }
        let wanted = lock(&self.attachments).clone();
        for a in wanted {
            // The version before the path: a flip in between leaves the version stale, and the
            // next request attaches again.
            let g = a.target.generation();
            let path = a.target.path();
            if let (Some(dir), Some(broker)) = (path.parent(), self.broker.upgrade()) {
                broker.sqlite_vfs.allow_dir(dir)?;
            }
            internal_attach(&tagged.conn, Some(&path), &a.schema)?;
            tagged.attached.schemas.push((a.schema, a.target, g));
        }
        tagged.attached.version = version;
        Ok(())
    }
}

/// Attaches `path` as `schema` (or detaches `schema` when `path` is `None`), past the SQL
/// policy: the broker's own ATTACH of a database the app may attach ([`crate::attach`]).
pub(super) fn internal_attach(conn: &Connection, path: Option<&std::path::Path>, schema: &str) -> Result<()> {
    INTERNAL.with(|f| f.set(true));
    let r = match path {
        Some(p) => conn.execute("ATTACH DATABASE ?1 AS ?2", rusqlite::params![p.to_string_lossy(), schema]),
        None => conn.execute("DETACH DATABASE ?1", [schema]),
    };
    INTERNAL.with(|f| f.set(false));
    r.map(|_| ()).map_err(|e| sqlite::map_error(e, None).context(format_args!("attaching {schema}")))
}
