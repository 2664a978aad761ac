//! Gzip for exports, backups and imports: compressing a copy, and decompressing a source
//! under the size cap before anything is written.

use super::*;

/// The two bytes every gzip member starts with.
pub(super) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a [`vfs::VfsFile`] from the start, for decoders that want [`std::io::Read`]. It keeps
/// the file's own read error, so the caller can tell it from the decoder's complaints about
/// the data (both arrive as an [`std::io::Error`]).
pub(super) struct VfsReader<'a> {
    pub(super) file: &'a dyn vfs::VfsFile,
    pub(super) offset: u64,
    pub(super) failed: Option<vfs::VfsError>,
}

impl std::io::Read for VfsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.file.read_at(buf, self.offset) {
            Ok(n) => {
                self.offset += n as u64;
                Ok(n)
            }
            Err(e) => {
                let err = std::io::Error::other(e.to_string());
                self.failed = Some(e);
                Err(err)
            }
        }
    }
}

/// Compresses `from` into the new file `to` with gzip; returns the compressed size.
pub(super) fn gzip_file(fs: &dyn Vfs, from: &Path, to: &Path) -> Result<u64> {
    use std::io::Write as _;
    let src = fs.open(from, OpenMode::Read)?;
    let dst = fs.open(to, OpenMode::CreateNew)?;
    let len = src.len()?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut buf = vfs::chunk_buffer(len);
    let (mut read, mut written) = (0u64, 0u64);
    while read < len {
        let n = vfs::read_full(src.as_ref(), &mut buf, read)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else { break };
        encoder.write_all(chunk).map_err(|e| Error::internal(format!("gzip: {e}")))?;
        read += n as u64;
        let out = std::mem::take(encoder.get_mut());
        vfs::write_all_at(dst.as_ref(), &out, written)?;
        written += out.len() as u64;
    }
    let tail = encoder.finish().map_err(|e| Error::internal(format!("gzip: {e}")))?;
    vfs::write_all_at(dst.as_ref(), &tail, written)?;
    Ok(written + tail.len() as u64)
}

/// Decompresses the gzip file `from` into the new file `to`, refusing (before writing past
/// it) output larger than `max_bytes`. Returns the decompressed size. A damaged or truncated
/// gzip stream is `Corrupt` naming the `gzip` check; a failed read of `from` is the
/// filesystem's error (`Io`), which says nothing about the data, marked as outside the
/// workspace (it does not poison the database).
pub(super) fn gunzip_file(fs: &dyn Vfs, from: &Path, to: &Path, max_bytes: u64) -> Result<u64> {
    use std::io::Read as _;
    let src = fs.open(from, OpenMode::Read).map_err(|e| Error::from(e).outside_workspace())?;
    let dst = fs.open(to, OpenMode::CreateNew)?;
    let reader = VfsReader { file: src.as_ref(), offset: 0, failed: None };
    let mut decoder = flate2::read::MultiGzDecoder::new(reader);
    let mut buf = vec![0u8; vfs::COPY_CHUNK_BYTES];
    let mut written = 0u64;
    // Each round writes at least one byte or ends, and the cap bounds the bytes.
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                return Err(match decoder.get_mut().failed.take() {
                    Some(read) => {
                        Error::from(read).context("reading the compressed import source").outside_workspace()
                    }
                    None => Error::corrupt(format!(
                        "import check 'gzip' failed: the compressed source is damaged or truncated ({e})"
                    )),
                })
            }
        };
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else { break };
        if written + n as u64 > max_bytes {
            return Err(Error::quota_exceeded(crate::QuotaDetail {
                usage: None,
                limit_name: "maxSizeMB of the database (decompressed import)".into(),
                limit_bytes: max_bytes,
                used_bytes: 0,
                requested_bytes: written + n as u64,
            }));
        }
        vfs::write_all_at(dst.as_ref(), chunk, written)?;
        written += n as u64;
    }
    Ok(written)
}

/// The size a gzip file says its content has (its ISIZE trailer: the size modulo 2^32), or
/// `None` when the file is too short to have one.
pub(super) fn gzip_stated_size(fs: &dyn Vfs, path: &Path, len: u64) -> Result<Option<u64>> {
    if len < 18 {
        return Ok(None);
    }
    let mut trailer = [0u8; 4];
    let n = fs
        .open(path, OpenMode::Read)
        .and_then(|f| vfs::read_full(f.as_ref(), &mut trailer, len - 4))
        .map_err(|e| Error::from(e).outside_workspace())?;
    Ok((n == 4).then(|| u64::from(u32::from_le_bytes(trailer))))
}
