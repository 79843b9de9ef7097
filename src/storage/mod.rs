//! Where file bytes live: the local `UPLOAD_DIR` (the embedded default), or an S3-compatible
//! bucket (`S3_BUCKET`; the scale-out shape, shared by every instance).
//!
//! Keys are made here, from ids and content hashes, never from anything a client sent:
//! - `staging/<upload id>`: an upload's bytes while they arrive;
//! - `blobs/<firm>/<aa>/<sha256>`: a finished file, stored once per firm and content;
//! - `quarantine/<firm>/<sha256>`: a file the scanner found infected, never served;
//! - `thumbs/<firm>/<sha256>.jpg`: an image's thumbnail.
//!
//! **Staging.** An upload's PATCHes write through a [`Writer`]; what must be remembered
//! between PATCHes (on S3: the multipart upload's id, its parts, the tail not yet a part) is
//! returned by [`Writer::commit`] and kept in the upload's row, so any instance can take the
//! next PATCH.
//! - Local: bytes are appended to `staging/<id>` and `fsync`ed before the offset is recorded;
//!   a PATCH whose bytes are refused cuts the file back.
//! - S3: bytes are sent as multipart parts of [`PART`] bytes (S3 wants at least 5 MiB for every
//!   part but the last); what is left after a PATCH (the tail, less than a part) is written
//!   as an object of its own and read back by the next PATCH. So at most one part is held in
//!   memory per PATCH. The last PATCH sends the tail as the last part and completes the
//!   upload into `staging/<id>`.
//!
//! **Durability.** A blob is moved into place (local: renamed, then its directory synced; S3:
//! copied) before the transaction that records it commits, so a crash at any point leaves
//! either the old state or the new one.

use std::{
    io,
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, aws::AmazonS3, multipart::MultipartStore,
    path::Path as ObjectPath,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

/// Bytes per read when streaming a local file out.
const READ_CHUNK: usize = 256 * 1024;
/// Write buffer between a request body and a local staging file.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Bytes of a local staging file handed to the disk at a time while a PATCH arrives.
const WRITE_BEHIND: u64 = 1024 * 1024;
/// Chunks waiting for a local staging file's writing thread.
const WRITE_QUEUE: usize = 64;
/// Size of an S3 multipart part (every part but the last): S3's minimum, 5 MiB.
pub const PART: usize = 5 * 1024 * 1024;

/// How to reach an S3-compatible bucket.
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// `S3_BUCKET`.
    pub bucket: String,
    /// `S3_ENDPOINT` (MinIO, Ceph, moto…); None is AWS.
    pub endpoint: Option<String>,
    /// `S3_REGION` (default `us-east-1`).
    pub region: String,
    /// `S3_ACCESS_KEY_ID` and `S3_SECRET_ACCESS_KEY`; None uses the environment's AWS
    /// credentials (instance profile, web identity).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// `S3_ALLOW_HTTP` (default false): allow a plain-HTTP endpoint.
    pub allow_http: bool,
    /// `S3_PREFIX`: keys are stored under it (one bucket shared by several installs).
    pub prefix: String,
}

/// The file store.
#[derive(Clone, Debug)]
pub struct Storage {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    Local(PathBuf),
    S3 { store: Arc<AmazonS3>, prefix: String },
}

/// The API's answer to a failed storage call: the store unreachable or failing is a 503 the
/// client may retry (a tus client resumes from HEAD); a missing object or bytes that do not
/// make sense are ours (500), since retrying cannot fix them.
pub fn api_error(e: io::Error) -> crate::http::ApiError {
    match e.kind() {
        io::ErrorKind::ResourceBusy => {
            crate::http::ApiError::new(crate::http::ErrorCode::ResourceLocked, e.to_string())
        }
        io::ErrorKind::NotFound | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            crate::http::ApiError::internal(e)
        }
        _ => crate::http::ApiError::unavailable(e),
    }
}

fn os_err(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        other => io::Error::other(other.to_string()),
    }
}

/// What an S3 upload's PATCHes leave for the next one (kept, as JSON, in the upload's row).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct S3Staging {
    /// The multipart upload, once the first part was sent.
    upload_id: Option<String>,
    /// The parts sent, in order (their ETags).
    parts: Vec<String>,
    /// The object holding the bytes after the last part (the offset less the parts' bytes).
    tail: Option<String>,
}

impl Storage {
    /// A store under `root` (created on first write).
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Self { inner: Inner::Local(root.into()) }
    }

    /// A store in an S3-compatible bucket.
    pub fn s3(s: &S3Settings) -> Result<Self, String> {
        // object_store retries a failed request for up to 3 minutes by default, so a PATCH
        // during an S3 outage would hang that long. Bounded here: at most three retries (100,
        // 200, 400 ms apart) and none started after 15 s, 3 s to connect; then the request
        // fails with our 503 and the client resumes from HEAD once S3 answers again. A server
        // that accepts and never answers is bounded by the 30 s request timeout, per call.
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(15),
            ..Default::default()
        };
        let client = object_store::ClientOptions::new().with_connect_timeout(std::time::Duration::from_secs(3));
        // The client options first: setting them replaces any set before (allow_http too).
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_client_options(client)
            .with_retry(retry)
            .with_bucket_name(&s.bucket)
            .with_region(&s.region)
            .with_allow_http(s.allow_http);
        if let Some(e) = &s.endpoint {
            // Path-style addressing: custom endpoints rarely have per-bucket host names.
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&s.access_key_id, &s.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret.expose_secret());
        }
        let store = b.build().map_err(|e| e.to_string())?;
        let prefix = s.prefix.trim_matches('/').to_owned();
        Ok(Self { inner: Inner::S3 { store: Arc::new(store), prefix } })
    }

    /// The store the configuration names: S3 when `S3_BUCKET` is set, else `UPLOAD_DIR`.
    pub fn from_config(c: &crate::config::Config) -> Result<Self, String> {
        match &c.files.s3 {
            Some(s) => Self::s3(s),
            None => Ok(Self::local(c.upload_dir.clone())),
        }
    }

    /// `local` or `s3`, for logs and health.
    pub fn kind(&self) -> &'static str {
        match self.inner {
            Inner::Local(_) => "local",
            Inner::S3 { .. } => "s3",
        }
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

    fn staging_key(upload: Uuid) -> String {
        format!("staging/{upload}")
    }

    /// Keys are ours, but one with anything but plain names is refused all the same, so no
    /// key can leave the store.
    fn check(key: &str) -> io::Result<()> {
        let plain = key.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\\'));
        if !plain || !Path::new(key).components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a storage key"));
        }
        Ok(())
    }

    fn local_path(root: &Path, key: &str) -> io::Result<PathBuf> {
        Self::check(key)?;
        Ok(root.join(key))
    }

    fn object(prefix: &str, key: &str) -> io::Result<ObjectPath> {
        Self::check(key)?;
        let full = if prefix.is_empty() { key.to_owned() } else { format!("{prefix}/{key}") };
        ObjectPath::parse(full).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }

    /// Opens the writer for a PATCH of `upload` at `offset`, with the state the previous
    /// PATCH left (`state`).
    pub async fn writer(&self, upload: Uuid, offset: u64, state: Option<&str>) -> io::Result<Writer> {
        match &self.inner {
            Inner::Local(root) => {
                let path = Self::local_path(root, &Self::staging_key(upload))?;
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let f = tokio::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&path).await?;
                let mut f = f.into_std().await;
                // One writer at a time, whatever the leases say: a PATCH that lost its lease
                // (its process stalled past it) still holds its descriptor and buffered bytes,
                // and once the file is complete it is renamed into the blob in place. Until
                // that writer is gone the file is not written by anyone else (423), so its
                // late bytes land past the recorded offset and are cut off below.
                let mut f = tokio::task::spawn_blocking(move || {
                    use std::io::Seek;
                    match f.try_lock() {
                        Ok(()) => {}
                        Err(std::fs::TryLockError::WouldBlock) => {
                            return Err(io::Error::new(
                                io::ErrorKind::ResourceBusy,
                                format!("upload {upload} is still being written by an earlier request"),
                            ));
                        }
                        Err(std::fs::TryLockError::Error(e)) => return Err(e),
                    }
                    let len = f.metadata()?.len();
                    if len < offset {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("staging file of upload {upload} holds {len} bytes, {offset} were acknowledged"),
                        ));
                    }
                    // Bytes past the acknowledged offset were never acknowledged: dropped.
                    if len > offset {
                        f.set_len(offset)?;
                    }
                    f.seek(io::SeekFrom::Start(offset))?;
                    Ok(f)
                })
                .await
                .map_err(io::Error::other)??;
                // Written by a blocking thread of its own, fed through a channel: the disk
                // writes overlap with receiving the next bytes instead of taking turns.
                let (feed, mut chunks) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
                let task = tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, &mut f);
                    let mut behind = WriteBehind::new(offset);
                    while let Some(b) = chunks.blocking_recv() {
                        out.write_all(&b)?;
                        if let Some((from, len)) = behind.wrote(b.len() as u64) {
                            out.flush()?;
                            start_writeback(out.get_ref(), from, len);
                        }
                    }
                    out.flush()?;
                    drop(out);
                    Ok(f)
                });
                Ok(Writer(WriterKind::Local { feed, task, start: offset }))
            }
            Inner::S3 { store, prefix } => {
                let staged: S3Staging = match state {
                    Some(s) => serde_json::from_str(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
                    None => S3Staging::default(),
                };
                let mut buf = BytesMut::with_capacity(PART);
                if let Some(tail) = &staged.tail {
                    buf.extend_from_slice(
                        &store
                            .get(&Self::object(prefix, tail)?)
                            .await
                            .map_err(os_err)?
                            .bytes()
                            .await
                            .map_err(os_err)?,
                    );
                }
                // The parts and the tail must add up to the offset the row records.
                if staged.parts.len() as u64 * PART as u64 + buf.len() as u64 != offset {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("staging state of upload {upload} does not add up to its offset {offset}"),
                    ));
                }
                let path = Self::object(prefix, &Self::staging_key(upload))?;
                Ok(Writer(WriterKind::S3 { store: store.clone(), prefix: prefix.clone(), upload, path, staged, buf }))
            }
        }
    }

    /// Up to `n` bytes from the start of a finished upload's staged bytes.
    pub async fn staging_head(&self, upload: Uuid, n: usize) -> io::Result<Vec<u8>> {
        self.head(&Self::staging_key(upload), n).await
    }

    /// Up to `n` bytes from the start of a stored file.
    pub async fn head(&self, key: &str, n: usize) -> io::Result<Vec<u8>> {
        match &self.inner {
            Inner::Local(root) => {
                let f = tokio::fs::File::open(Self::local_path(root, key)?).await?;
                let mut buf = Vec::with_capacity(n);
                f.take(n as u64).read_to_end(&mut buf).await?;
                Ok(buf)
            }
            Inner::S3 { store, prefix } => {
                let path = Self::object(prefix, key)?;
                let size = store.head(&path).await.map_err(os_err)?.size;
                let end = size.min(n as u64);
                if end == 0 {
                    return Ok(Vec::new());
                }
                Ok(store.get_range(&path, 0..end).await.map_err(os_err)?.to_vec())
            }
        }
    }

    /// Removes everything an upload staged (its staging file or object; on S3 also its
    /// multipart upload and tail). Missing pieces are not an error.
    pub async fn discard_staging(&self, upload: Uuid, state: Option<&str>) -> io::Result<()> {
        if let (Inner::S3 { store, prefix }, Some(state)) = (&self.inner, state) {
            let staged: S3Staging = serde_json::from_str(state).unwrap_or_default();
            if let Some(id) = &staged.upload_id {
                let path = Self::object(prefix, &Self::staging_key(upload))?;
                match store.abort_multipart(&path, &id.clone()).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => tracing::warn!(upload_id = %upload, error = %e, "could not abort an S3 multipart upload"),
                }
            }
            if let Some(tail) = &staged.tail {
                self.delete(tail).await?;
            }
        }
        self.delete(&Self::staging_key(upload)).await
    }

    /// Makes the finished upload's staged bytes the file at `key`. When `key` already holds a
    /// file (the same content: keys are content hashes) the staged copy is dropped instead.
    /// Idempotent, so a transaction that runs again finds it done.
    pub async fn promote(&self, upload: Uuid, key: &str) -> io::Result<()> {
        let staging = Self::staging_key(upload);
        if self.exists(key).await? {
            return self.delete(&staging).await;
        }
        match &self.inner {
            Inner::Local(root) => {
                let to = Self::local_path(root, key)?;
                if let Some(dir) = to.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                tokio::fs::rename(Self::local_path(root, &staging)?, &to).await?;
                sync_dir(to.parent()).await
            }
            Inner::S3 { store, prefix } => {
                store.copy(&Self::object(prefix, &staging)?, &Self::object(prefix, key)?).await.map_err(os_err)?;
                self.delete(&staging).await
            }
        }
    }

    /// Moves a stored file to another key (quarantining it). Idempotent.
    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        if !self.exists(from).await? && self.exists(to).await? {
            return Ok(());
        }
        match &self.inner {
            Inner::Local(root) => {
                let (from, to) = (Self::local_path(root, from)?, Self::local_path(root, to)?);
                if let Some(dir) = to.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                tokio::fs::rename(&from, &to).await?;
                sync_dir(to.parent()).await
            }
            Inner::S3 { store, prefix } => {
                store.copy(&Self::object(prefix, from)?, &Self::object(prefix, to)?).await.map_err(os_err)?;
                self.delete(from).await
            }
        }
    }

    /// Writes a small file (a thumbnail) at `key`, atomically.
    pub async fn put(&self, key: &str, bytes: Bytes) -> io::Result<()> {
        match &self.inner {
            Inner::Local(root) => {
                let to = Self::local_path(root, key)?;
                if let Some(dir) = to.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let tmp = to.with_extension(format!("tmp-{}", Uuid::now_v7()));
                tokio::fs::write(&tmp, &bytes).await?;
                tokio::fs::File::open(&tmp).await?.sync_all().await?;
                tokio::fs::rename(&tmp, &to).await?;
                sync_dir(to.parent()).await
            }
            Inner::S3 { store, prefix } => {
                store.put(&Self::object(prefix, key)?, PutPayload::from(bytes)).await.map_err(os_err)?;
                Ok(())
            }
        }
    }

    /// Removes a stored file; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> io::Result<()> {
        let r = match &self.inner {
            Inner::Local(root) => tokio::fs::remove_file(Self::local_path(root, key)?).await,
            Inner::S3 { store, prefix } => store.delete(&Self::object(prefix, key)?).await.map_err(os_err),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Whether a stored file exists.
    pub async fn exists(&self, key: &str) -> io::Result<bool> {
        match &self.inner {
            Inner::Local(root) => tokio::fs::try_exists(Self::local_path(root, key)?).await,
            Inner::S3 { store, prefix } => match store.head(&Self::object(prefix, key)?).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(os_err(e)),
            },
        }
    }

    /// `len` bytes of the file at `key` from `start`, as a stream of chunks: the file is never
    /// read into memory whole.
    pub async fn read_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
    ) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        match &self.inner {
            Inner::Local(root) => {
                let mut f = tokio::fs::File::open(Self::local_path(root, key)?).await?;
                f.seek(io::SeekFrom::Start(start)).await?;
                Ok(tokio_util::io::ReaderStream::with_capacity(f.take(len), READ_CHUNK).boxed())
            }
            Inner::S3 { store, prefix } => {
                if len == 0 {
                    return Ok(futures_util::stream::empty().boxed());
                }
                let opts = GetOptions { range: Some(GetRange::Bounded(start..start + len)), ..Default::default() };
                let got = store.get_opts(&Self::object(prefix, key)?, opts).await.map_err(os_err)?;
                Ok(got.into_stream().map_err(os_err).boxed())
            }
        }
    }

    /// The whole file at `key`, as a stream.
    pub async fn read(&self, key: &str) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        match &self.inner {
            Inner::Local(root) => {
                let f = tokio::fs::File::open(Self::local_path(root, key)?).await?;
                Ok(tokio_util::io::ReaderStream::with_capacity(f, READ_CHUNK).boxed())
            }
            Inner::S3 { store, prefix } => {
                let got = store.get(&Self::object(prefix, key)?).await.map_err(os_err)?;
                Ok(got.into_stream().map_err(os_err).boxed())
            }
        }
    }

    /// The whole (small) file at `key` in memory: thumbnails and images being thumbnailed.
    pub async fn read_all(&self, key: &str) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = self.read(key).await?;
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// The keys under `prefix` (`blobs/`, `staging/`…), for checks and sweeps.
    pub async fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        match &self.inner {
            Inner::Local(root) => {
                let mut out = Vec::new();
                let mut stack = vec![root.join(prefix)];
                while let Some(dir) = stack.pop() {
                    let Ok(mut entries) = tokio::fs::read_dir(&dir).await else { continue };
                    while let Some(e) = entries.next_entry().await? {
                        let p = e.path();
                        if e.file_type().await?.is_dir() {
                            stack.push(p);
                        } else if let Ok(rel) = p.strip_prefix(root) {
                            out.push(rel.display().to_string());
                        }
                    }
                }
                Ok(out)
            }
            Inner::S3 { store, prefix: base } => {
                let full = Self::object(base, prefix.trim_end_matches('/'))?;
                let strip = if base.is_empty() { String::new() } else { format!("{base}/") };
                let metas: Vec<object_store::ObjectMeta> =
                    store.list(Some(&full)).try_collect().await.map_err(os_err)?;
                Ok(metas.into_iter().map(|m| m.location.to_string().trim_start_matches(&strip).to_owned()).collect())
            }
        }
    }
}

/// Where one PATCH's bytes go.
pub struct Writer(WriterKind);

enum WriterKind {
    Local {
        feed: tokio::sync::mpsc::Sender<Bytes>,
        task: tokio::task::JoinHandle<io::Result<std::fs::File>>,
        start: u64,
    },
    S3 {
        store: Arc<AmazonS3>,
        prefix: String,
        upload: Uuid,
        path: ObjectPath,
        staged: S3Staging,
        buf: BytesMut,
    },
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            WriterKind::Local { .. } => "Writer::Local",
            WriterKind::S3 { .. } => "Writer::S3",
        })
    }
}

/// What a committed PATCH leaves.
#[derive(Debug)]
pub struct Committed {
    /// To keep in the upload's row for the next PATCH.
    pub state: Option<String>,
    /// Objects the previous state used, to delete once the new state is recorded.
    pub garbage: Vec<String>,
}

impl Writer {
    /// Takes the next bytes.
    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        match &mut self.0 {
            WriterKind::Local { feed, .. } => {
                // A send fails only when the writing thread stopped on an error, which
                // commit or abort then report.
                feed.send(chunk).await.map_err(|_| io::Error::other("the staging file's writer stopped"))
            }
            WriterKind::S3 { store, path, staged, buf, .. } => {
                buf.extend_from_slice(&chunk);
                while buf.len() >= PART {
                    let part = buf.split_to(PART).freeze();
                    let id = match &staged.upload_id {
                        Some(id) => id.clone(),
                        None => {
                            let id = store.create_multipart(path).await.map_err(os_err)?;
                            staged.upload_id = Some(id.clone());
                            id
                        }
                    };
                    let done =
                        store.put_part(path, &id, staged.parts.len(), PutPayload::from(part)).await.map_err(os_err)?;
                    staged.parts.push(done.content_id);
                }
                Ok(())
            }
        }
    }

    /// Makes what was written durable. `last` when these were the upload's final bytes: on
    /// S3 the multipart upload is completed into the staging object.
    pub async fn commit(self, last: bool) -> io::Result<Committed> {
        match self.0 {
            WriterKind::Local { feed, task, .. } => {
                drop(feed);
                let f = task.await.map_err(io::Error::other)??;
                tokio::task::spawn_blocking(move || f.sync_data()).await.map_err(io::Error::other)??;
                Ok(Committed { state: None, garbage: Vec::new() })
            }
            WriterKind::S3 { store, prefix, upload, path, mut staged, buf } => {
                let garbage: Vec<String> = staged.tail.take().into_iter().collect();
                if last {
                    match &staged.upload_id {
                        None => {
                            store.put(&path, PutPayload::from(buf.freeze())).await.map_err(os_err)?;
                        }
                        Some(id) => {
                            let finished = async {
                                if !buf.is_empty() {
                                    let done = store
                                        .put_part(&path, id, staged.parts.len(), PutPayload::from(buf.freeze()))
                                        .await?;
                                    staged.parts.push(done.content_id);
                                }
                                let parts = staged
                                    .parts
                                    .iter()
                                    .map(|p| object_store::multipart::PartId { content_id: p.clone() })
                                    .collect();
                                store.complete_multipart(&path, id, parts).await
                            }
                            .await;
                            // An earlier PATCH completed this multipart upload and its process died
                            // before recording it (found by tests/cluster's kill loop): the upload
                            // id is gone, every retry failed, and the upload was stuck for good.
                            // Only a completed upload leaves an object at `path`, so its presence
                            // means the bytes are there.
                            if let Err(e) = finished {
                                if store.head(&path).await.is_err() {
                                    return Err(os_err(e));
                                }
                                tracing::warn!(%upload, error = %e, "the multipart upload was already completed by an earlier request; taking its object");
                            }
                        }
                    }
                    return Ok(Committed { state: None, garbage });
                }
                if !buf.is_empty() {
                    let key = format!("staging/{upload}.tail-{}", Uuid::now_v7());
                    store
                        .put(&Storage::object(&prefix, &key)?, PutPayload::from(buf.freeze()))
                        .await
                        .map_err(os_err)?;
                    staged.tail = Some(key);
                }
                let state = serde_json::to_string(&staged).map_err(io::Error::other)?;
                Ok(Committed { state: Some(state), garbage })
            }
        }
    }

    /// Drops this PATCH's bytes (refused: over the length, or a checksum mismatch). On S3 the
    /// parts sent are left to be overwritten by the next PATCH (same part numbers) or aborted
    /// with the upload.
    pub async fn abort(self) -> io::Result<()> {
        match self.0 {
            WriterKind::Local { feed, task, start } => {
                drop(feed);
                let f = task.await.map_err(io::Error::other)??;
                tokio::task::spawn_blocking(move || {
                    f.set_len(start)?;
                    f.sync_all()
                })
                .await
                .map_err(io::Error::other)?
            }
            WriterKind::S3 { .. } => Ok(()),
        }
    }
}

/// Which ranges of a staging file to hand to the disk while a PATCH is still arriving: every
/// [`WRITE_BEHIND`] bytes, the ones written since the last hand-over.
#[derive(Debug)]
struct WriteBehind {
    /// Where the range not yet handed over starts.
    from: u64,
    /// Bytes written after `from`.
    pending: u64,
}

impl WriteBehind {
    fn new(offset: u64) -> Self {
        Self { from: offset, pending: 0 }
    }

    /// Counts `n` more bytes written; returns the range to start writing back, when one is due.
    fn wrote(&mut self, n: u64) -> Option<(u64, u64)> {
        self.pending += n;
        if self.pending < WRITE_BEHIND {
            return None;
        }
        let range = (self.from, self.pending);
        self.from += self.pending;
        self.pending = 0;
        Some(range)
    }
}

/// Starts writing `len` bytes of `f` from `from` to the disk without waiting for them
/// (`POSIX_FADV_DONTNEED` on Linux starts the range's writeback, then drops the pages already
/// clean): the `fsync` before a PATCH's answer then waits for the last stretch only, instead
/// of the whole PATCH's bytes after the last one arrived. Only a hint: durability still comes
/// from that `fsync`, and a failure here changes nothing.
#[cfg(target_os = "linux")]
fn start_writeback(f: &std::fs::File, from: u64, len: u64) {
    if let Err(e) = rustix::fs::fadvise(f, from, std::num::NonZeroU64::new(len), rustix::fs::Advice::DontNeed) {
        tracing::debug!(error = %e, "could not start a staging file's writeback early");
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &std::fs::File, _: u64, _: u64) {}

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
        assert!(Storage::local_path(Path::new("/srv/files"), "blobs/a/b").is_ok());
        for bad in ["", "../etc/passwd", "blobs/../../x", "/etc/passwd", "blobs/./x"] {
            assert!(Storage::local_path(Path::new("/srv/files"), bad).is_err(), "{bad}");
            assert!(Storage::object("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_behind_hands_over_each_stretch_once_from_the_patch_offset() {
        let mut b = WriteBehind::new(100);
        assert_eq!(b.wrote(WRITE_BEHIND - 1), None);
        assert_eq!(b.wrote(10), Some((100, WRITE_BEHIND + 9)));
        assert_eq!(b.wrote(5), None);
        assert_eq!(b.wrote(3 * WRITE_BEHIND), Some((100 + WRITE_BEHIND + 9, 3 * WRITE_BEHIND + 5)));
    }

    #[tokio::test]
    async fn a_staging_file_written_in_many_stretches_holds_every_byte() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let s = Storage::local(dir.path());
        let up = Uuid::now_v7();
        let data: Vec<u8> = (0..3 * WRITE_BEHIND as usize + 12_345).map(|i| (i * 31 % 251) as u8).collect();
        let (a, b) = data.split_at(WRITE_BEHIND as usize + 7);
        for (offset, part) in [(0, a), (a.len() as u64, b)] {
            let mut w = s.writer(up, offset, None).await?;
            for chunk in part.chunks(65_536) {
                w.write(Bytes::copy_from_slice(chunk)).await?;
            }
            w.commit(false).await?;
        }
        assert_eq!(tokio::fs::read(dir.path().join(Storage::staging_key(up))).await?, data);
        Ok(())
    }

    #[tokio::test]
    async fn local_staging_is_cut_back_to_the_acknowledged_offset_and_promoted_once() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let s = Storage::local(dir.path());
        let up = Uuid::now_v7();
        let mut w = s.writer(up, 0, None).await?;
        w.write(Bytes::from_static(b"hello world")).await?;
        w.commit(false).await?;
        // Only 5 bytes were acknowledged: the rest is dropped on the next open.
        let mut w = s.writer(up, 5, None).await?;
        w.write(Bytes::from_static(b"!")).await?;
        w.commit(false).await?;
        let mut w = s.writer(up, 6, None).await?;
        w.write(Bytes::from_static(b"refused")).await?;
        w.abort().await?;
        assert_eq!(s.staging_head(up, 100).await?, b"hello!");
        assert!(s.writer(up, 50, None).await.is_err());
        let key = Storage::blob_key(Uuid::nil(), "abcdef");
        s.promote(up, &key).await?;
        s.promote(up, &key).await?;
        assert_eq!(s.read_all(&key).await?, b"hello!");
        assert_eq!(s.list("blobs").await?, vec![key]);
        Ok(())
    }
}
