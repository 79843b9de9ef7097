//! Where file bytes live: the local `UPLOAD_DIR` (the embedded default).
//!
//! Keys are made here, from ids and content hashes, never from anything a client sent:
//! - `staging/<upload id>`: an upload's bytes while they arrive (tus PATCHes append to it);
//! - `blobs/<firm>/<aa>/<sha256>`: a finished file, stored once per firm and content;
//! - `quarantine/<firm>/<sha256>`: a file the scanner found infected, never served;
//! - `thumbs/<firm>/<sha256>.jpg`: an image's thumbnail.
//!
//! Durability: an upload's bytes are `fsync`ed before its offset is recorded, and a blob is
//! renamed into place (then its directory synced) before the transaction that records it
//! commits, so a crash at any point leaves either the old state or the new one.

use std::{
    io,
    path::{Component, Path, PathBuf},
};

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

/// The file store.
#[derive(Clone, Debug)]
pub struct Storage {
    root: PathBuf,
}

/// Bytes per read when streaming a file out.
const READ_CHUNK: usize = 256 * 1024;

impl Storage {
    /// A store under `root` (created on first write).
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The key of a finished file.
    pub fn blob_key(firm: Uuid, sha256: &str) -> String {
        let shard = sha256.get(..2).unwrap_or("00");
        format!("blobs/{firm}/{shard}/{sha256}")
    }

    /// Where an infected file is kept.
    pub fn quarantine_key(firm: Uuid, sha256: &str) -> String {
        format!("quarantine/{firm}/{sha256}")
    }

    /// The key of an image's thumbnail.
    pub fn thumbnail_key(firm: Uuid, sha256: &str) -> String {
        format!("thumbs/{firm}/{sha256}.jpg")
    }

    /// The path of `key`. Keys are ours, but one with anything but plain names is refused all
    /// the same, so no key can leave the store.
    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let rel = Path::new(key);
        if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a storage key"));
        }
        Ok(self.root.join(rel))
    }

    fn staging(&self, upload: Uuid) -> PathBuf {
        self.root.join("staging").join(upload.to_string())
    }

    /// The staging file of `upload`, cut back to `offset` (bytes past the last acknowledged
    /// offset were never acknowledged and are dropped) and positioned there for appending.
    pub async fn open_staging(&self, upload: Uuid, offset: u64) -> io::Result<tokio::fs::File> {
        let path = self.staging(upload);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut f = tokio::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&path).await?;
        let len = f.metadata().await?.len();
        if len < offset {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("staging file of upload {upload} holds {len} bytes, {offset} were acknowledged"),
            ));
        }
        if len > offset {
            f.set_len(offset).await?;
        }
        f.seek(io::SeekFrom::Start(offset)).await?;
        Ok(f)
    }

    /// Cuts the staging file back to `offset` (a PATCH whose bytes were refused).
    pub async fn truncate_staging(&self, upload: Uuid, offset: u64) -> io::Result<()> {
        let f = tokio::fs::OpenOptions::new().write(true).open(self.staging(upload)).await?;
        f.set_len(offset).await?;
        f.sync_all().await
    }

    /// Up to `n` bytes from the start of the staging file (for sniffing the type).
    pub async fn staging_head(&self, upload: Uuid, n: usize) -> io::Result<Vec<u8>> {
        read_head(&self.staging(upload), n).await
    }

    /// Up to `n` bytes from the start of a stored file.
    pub async fn head(&self, key: &str, n: usize) -> io::Result<Vec<u8>> {
        read_head(&self.path(key)?, n).await
    }

    /// Removes an upload's staging file, if there is one.
    pub async fn discard_staging(&self, upload: Uuid) -> io::Result<()> {
        ignore_missing(tokio::fs::remove_file(self.staging(upload)).await)
    }

    /// Makes the staging file of `upload` the file at `key`. When `key` already holds a file
    /// (the same content: keys are content hashes) the staging copy is dropped instead.
    /// Idempotent, so a transaction that runs again finds it done.
    pub async fn promote(&self, upload: Uuid, key: &str) -> io::Result<()> {
        let to = self.path(key)?;
        let from = self.staging(upload);
        if tokio::fs::try_exists(&to).await? {
            return self.discard_staging(upload).await;
        }
        if let Some(dir) = to.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(&from, &to).await?;
        sync_dir(to.parent()).await
    }

    /// Moves a stored file to another key (quarantining it).
    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (self.path(from)?, self.path(to)?);
        if let Some(dir) = to.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        match tokio::fs::rename(&from, &to).await {
            // Already moved by an earlier run.
            Err(e) if e.kind() == io::ErrorKind::NotFound && tokio::fs::try_exists(&to).await? => Ok(()),
            other => other,
        }?;
        sync_dir(to.parent()).await
    }

    /// Writes a small file (a thumbnail) at `key`, atomically.
    pub async fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let to = self.path(key)?;
        if let Some(dir) = to.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let tmp = to.with_extension(format!("tmp-{}", Uuid::now_v7()));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::File::open(&tmp).await?.sync_all().await?;
        tokio::fs::rename(&tmp, &to).await?;
        sync_dir(to.parent()).await
    }

    /// Removes a stored file; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> io::Result<()> {
        ignore_missing(tokio::fs::remove_file(self.path(key)?).await)
    }

    /// Whether a stored file exists.
    pub async fn exists(&self, key: &str) -> io::Result<bool> {
        tokio::fs::try_exists(self.path(key)?).await
    }

    /// `len` bytes of the file at `key` from `start`, as a stream of chunks: the file is never
    /// read into memory whole.
    pub async fn read_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
    ) -> io::Result<impl Stream<Item = io::Result<Bytes>> + Send + 'static> {
        let mut f = tokio::fs::File::open(self.path(key)?).await?;
        f.seek(io::SeekFrom::Start(start)).await?;
        Ok(tokio_util::io::ReaderStream::with_capacity(f.take(len), READ_CHUNK))
    }

    /// The whole file at `key`, as a stream.
    pub async fn read(&self, key: &str) -> io::Result<impl Stream<Item = io::Result<Bytes>> + Send + 'static> {
        let f = tokio::fs::File::open(self.path(key)?).await?;
        Ok(tokio_util::io::ReaderStream::with_capacity(f, READ_CHUNK))
    }

    /// The whole (small) file at `key` in memory: thumbnails and images being thumbnailed.
    pub async fn read_all(&self, key: &str) -> io::Result<Vec<u8>> {
        tokio::fs::read(self.path(key)?).await
    }
}

async fn read_head(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    let f = tokio::fs::File::open(path).await?;
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut buf).await?;
    Ok(buf)
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes a rename in `dir` durable.
async fn sync_dir(dir: Option<&Path>) -> io::Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_leave_the_store_are_refused() {
        let s = Storage::local("/srv/files");
        assert!(s.path("blobs/a/b").is_ok());
        for bad in ["", "../etc/passwd", "blobs/../../x", "/etc/passwd", "blobs/./x"] {
            assert!(s.path(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn staging_is_cut_back_to_the_acknowledged_offset_and_promoted_once() -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir()?;
        let s = Storage::local(dir.path());
        let up = Uuid::now_v7();
        let mut f = s.open_staging(up, 0).await?;
        f.write_all(b"hello world").await?;
        f.sync_all().await?;
        // Only 5 bytes were acknowledged: the rest is dropped on the next open.
        let mut f = s.open_staging(up, 5).await?;
        f.write_all(b"!").await?;
        f.sync_all().await?;
        assert_eq!(s.staging_head(up, 100).await?, b"hello!");
        assert!(s.open_staging(up, 50).await.is_err());
        let key = Storage::blob_key(Uuid::nil(), "abcdef");
        s.promote(up, &key).await?;
        s.promote(up, &key).await?;
        assert_eq!(s.read_all(&key).await?, b"hello!");
        Ok(())
    }
}
