//! Resumable uploads: tus 1.0.0 under `/api/v1/uploads` (core, creation,
//! creation-with-upload, termination, checksum, expiration), so tus-js-client, Uppy and
//! tuspy work unchanged.
//!
//! State lives in the `uploads` row, not in process memory, so any instance can take the next
//! PATCH: the offset durably stored, and the running SHA-256 (serialized after each PATCH).
//! A PATCH first takes the row's lease (`lock_token` until `locked_until`, renewed while bytes
//! arrive), so two PATCHes on one upload cannot interleave on any instance; the loser gets
//! 423. Bytes stream to the staging file through a small buffer (never a whole chunk in
//! memory; its writeback starts every MiB), are `fsync`ed, and only then is the new offset
//! recorded. A client that hangs up mid-PATCH keeps what arrived (tus asks servers to), unless
//! it sent a checksum, which then cannot be checked.
//!
//! When the last byte arrives the upload is finished in the same request: its type is sniffed
//! from the bytes (and refused unless allowed), images too large to decode safely are refused,
//! and the content becomes a per-firm, reference-counted blob (the same bytes are stored
//! once); a new blob gets a `files.process` job (virus scan, thumbnail) in the same
//! transaction. The upload then waits to be turned into a document version, which takes over
//! its reference; unused uploads expire (`UPLOAD_EXPIRY_HOURS`) and the `uploads.expire`
//! job removes them and any blob no longer referenced.

pub mod http;
pub mod model;
pub mod sniff;
pub mod tus;

use std::time::Instant;

use base64::Engine;
use futures_util::StreamExt;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, QuerySelect};
use sha2::{
    Digest, Sha256,
    digest::common::hazmat::{SerializableState, SerializedState},
};
use uuid::Uuid;

use crate::{
    app::App,
    auth::Principal,
    cases::access::visible_case,
    clock,
    db::{self, TxOptions},
    documents::model::blob,
    http::error::{ApiError, ApiResult, ErrorCode},
    ids::{CaseId, UploadId},
    storage::Storage,
};

/// Chunks waiting for the hashing thread (a request body's chunks are 8–64 KiB).
const HASH_QUEUE: usize = 64;

/// The queue of file processing (scans, thumbnails).
pub const QUEUE: &str = "files";
/// Scan a new blob and make its thumbnail.
pub const PROCESS: &str = "files.process";
/// Remove expired uploads and unreferenced blobs (hourly).
pub const EXPIRE: &str = "uploads.expire";

/// The state of a fresh SHA-256, serialized.
fn fresh_hash() -> String {
    save_hash(&Sha256::new())
}

fn save_hash(h: &Sha256) -> String {
    base64::engine::general_purpose::STANDARD.encode(h.serialize().as_slice())
}

fn load_hash(s: &str) -> ApiResult<Sha256> {
    let raw = base64::engine::general_purpose::STANDARD.decode(s).map_err(ApiError::internal)?;
    let state = SerializedState::<Sha256>::try_from(raw.as_slice())
        .map_err(|_| ApiError::internal(std::io::Error::other("stored hash state has the wrong size")))?;
    Sha256::deserialize(&state).map_err(|_| ApiError::internal(std::io::Error::other("stored hash state is invalid")))
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the upload would be larger than its Upload-Length or {max} bytes"),
    )
}

/// Options of a new upload, from the creation request's headers.
#[derive(Debug)]
pub struct Creation {
    pub length: u64,
    pub metadata: String,
}

/// Creates an upload for a case the caller may change. The file name is checked (a name, not
/// a path) and kept only for display.
pub async fn create(app: &App, p: &Principal, c: Creation) -> ApiResult<model::Model> {
    let max = app.config.files.max_file_size;
    if c.length > max {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("Upload-Length {} is more than the largest file accepted, {max} bytes", c.length),
        ));
    }
    let pairs = tus::parse_metadata(&c.metadata).map_err(|m| ApiError::field("Upload-Metadata", m))?;
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).and_then(|(_, v)| v.clone());
    let filename = get("filename")
        .or_else(|| get("name"))
        .ok_or_else(|| ApiError::field("Upload-Metadata", "filename is required"))?;
    let filename = tus::check_filename(&filename).map_err(|m| ApiError::field("Upload-Metadata.filename", m))?;
    let declared = get("filetype").or_else(|| get("type")).filter(|t| !t.is_empty());
    if declared.as_ref().is_some_and(|t| t.len() > 255) {
        return Err(ApiError::field("Upload-Metadata.filetype", "longer than 255 bytes"));
    }
    let case = get("caseId")
        .ok_or_else(|| ApiError::field("Upload-Metadata", "caseId is required"))
        .and_then(|v| Uuid::parse_str(v.trim()).map_err(|_| ApiError::field("Upload-Metadata.caseId", "not a UUID")))?;
    visible_case(&app.db, p, CaseId(case)).await?.require_edit()?;
    let now = clock::now();
    let row = model::Model {
        id: Uuid::now_v7(),
        firm_id: p.firm_id.0,
        user_id: p.user_id.0,
        case_id: case,
        filename,
        declared_type: declared,
        metadata: c.metadata,
        length: i64::try_from(c.length).map_err(|_| too_large(max))?,
        offset: 0,
        hash_state: fresh_hash(),
        storage_state: None,
        sha256: None,
        mime: None,
        blob_id: None,
        lock_token: None,
        locked_until: None,
        expires_at: now
            + chrono::Duration::from_std(app.config.files.upload_expiry).unwrap_or(chrono::Duration::days(1)),
        created_at: now,
        updated_at: now,
        completed_at: None,
    };
    model::Entity::insert(sea_orm::IntoActiveModel::into_active_model(row.clone())).exec(&app.db).await?;
    if row.length == 0 {
        // Nothing to send: finished at once.
        app.storage
            .writer(row.id, 0, None)
            .await
            .map_err(ApiError::internal)?
            .commit(true)
            .await
            .map_err(ApiError::internal)?;
        return complete(app, row, Sha256::new(), Uuid::now_v7()).await;
    }
    Ok(row)
}

/// The caller's live upload, or 404 (another user's, another firm's and an expired one
/// alike).
pub async fn find(app: &App, p: &Principal, id: UploadId) -> ApiResult<model::Model> {
    model::Entity::find_by_id(id.0)
        .filter(model::Column::FirmId.eq(p.firm_id.0))
        .filter(model::Column::UserId.eq(p.user_id.0))
        .filter(model::Column::ExpiresAt.gt(clock::now()))
        .one(&app.db)
        .await?
        .ok_or_else(|| ApiError::not_found("upload"))
}

/// Takes the upload's lease for `token`, or 423 while another request holds it (404 when
/// there is no such upload for the caller). One statement when the lease is free: the row
/// comes back with it.
async fn acquire(app: &App, p: &Principal, id: UploadId, token: Uuid) -> ApiResult<model::Model> {
    let now = clock::now();
    let backend = app.db.get_database_backend();
    // All rows, not the first: SQLite commits an UPDATE … RETURNING when the statement runs to
    // its end, and only running it to the end reports a failed commit.
    let taken = app
        .db
        .query_all_raw(db::portable(
            backend,
            "UPDATE uploads SET lock_token = ?, locked_until = ? \
             WHERE id = ? AND firm_id = ? AND user_id = ? AND expires_at > ? \
             AND (lock_token IS NULL OR locked_until < ?) RETURNING *",
            vec![
                token.into(),
                (now + chrono::Duration::from_std(app.config.files.upload_lease).unwrap_or_default()).into(),
                id.0.into(),
                p.firm_id.0.into(),
                p.user_id.0.into(),
                now.into(),
                now.into(),
            ],
        ))
        .await?
        .into_iter()
        .next();
    match taken {
        Some(row) => Ok(<model::Model as sea_orm::FromQueryResult>::from_query_result(&row, "")?),
        None => {
            // Missing (404) or held by another request (423).
            find(app, p, id).await?;
            Err(ApiError::new(ErrorCode::ResourceLocked, "another request is writing to this upload"))
        }
    }
}

/// Renews the lease; false when it was lost (it expired and another request took it).
async fn renew(app: &App, id: Uuid, token: Uuid) -> ApiResult<bool> {
    let until = clock::now() + chrono::Duration::from_std(app.config.files.upload_lease).unwrap_or_default();
    let res = app
        .db
        .execute_raw(db::portable(
            app.db.get_database_backend(),
            "UPDATE uploads SET locked_until = ? WHERE id = ? AND lock_token = ?",
            vec![until.into(), id.into(), token.into()],
        ))
        .await?;
    Ok(res.rows_affected() == 1)
}

/// Records the new offset and hash state and gives the lease back.
async fn release(app: &App, id: Uuid, token: Uuid, progress: Option<(i64, &Sha256, Option<String>)>) -> ApiResult<()> {
    let backend = app.db.get_database_backend();
    let recorded = progress.is_some();
    let stmt = match progress {
        Some((offset, hash, state)) => db::portable(
            backend,
            "UPDATE uploads SET lock_token = NULL, locked_until = NULL, \"offset\" = ?, hash_state = ?, \
             storage_state = ?, updated_at = ? WHERE id = ? AND lock_token = ?",
            vec![offset.into(), save_hash(hash).into(), state.into(), clock::now().into(), id.into(), token.into()],
        ),
        None => db::portable(
            backend,
            "UPDATE uploads SET lock_token = NULL, locked_until = NULL WHERE id = ? AND lock_token = ?",
            vec![id.into(), token.into()],
        ),
    };
    let res = app.db.execute_raw(stmt).await?;
    if res.rows_affected() == 0 && recorded {
        return Err(ApiError::new(ErrorCode::ResourceLocked, "the upload's lease was lost; resume from HEAD"));
    }
    Ok(())
}

/// Records that every byte of the upload is stored (the offset at the length, the final hash
/// state), keeping the lease for the completion that follows.
async fn record_full(app: &App, id: Uuid, token: Uuid, hash: &Sha256) -> ApiResult<()> {
    let res = app
        .db
        .execute_raw(db::portable(
            app.db.get_database_backend(),
            "UPDATE uploads SET \"offset\" = length, hash_state = ?, storage_state = NULL, updated_at = ? \
             WHERE id = ? AND lock_token = ?",
            vec![save_hash(hash).into(), clock::now().into(), id.into(), token.into()],
        ))
        .await?;
    if res.rows_affected() != 1 {
        return Err(ApiError::new(ErrorCode::ResourceLocked, "the upload's lease was lost; resume from HEAD"));
    }
    Ok(())
}

/// Finishes an upload whose bytes are all stored but whose completion failed (the request
/// that carried the last bytes ended in an error after they were recorded); a no-op for any
/// other. Called where a client looks next: HEAD, GET, and filing it as a document.
pub async fn finish_stranded(app: &App, p: &Principal, row: model::Model) -> ApiResult<model::Model> {
    if row.completed_at.is_some() || row.offset != row.length {
        return Ok(row);
    }
    let token = Uuid::now_v7();
    let row = acquire(app, p, UploadId(row.id), token).await?;
    if row.completed_at.is_some() || row.offset != row.length {
        release(app, row.id, token, None).await?;
        return Ok(row);
    }
    let id = row.id;
    tracing::info!(upload_id = %id, "finishing an upload whose completion failed before");
    let result = match load_hash(&row.hash_state) {
        Ok(hash) => complete(app, row, hash, token).await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = release(app, id, token, None).await;
    }
    result
}

/// What one PATCH asks.
#[derive(Debug)]
pub struct Patch {
    pub offset: u64,
    pub content_length: Option<u64>,
    pub checksum: Option<(tus::Algorithm, Vec<u8>)>,
}

/// Appends a PATCH's body at `offset`. Returns the upload as it now stands.
pub async fn patch(
    app: &App,
    p: &Principal,
    id: UploadId,
    req: Patch,
    body: axum::body::Body,
) -> ApiResult<model::Model> {
    let token = Uuid::now_v7();
    // Before the lease's expiry is computed: what this process counts from never runs late.
    let leased = Instant::now();
    let row = acquire(app, p, id, token).await?;
    let result = receive(app, row, token, leased, req, body).await;
    if result.is_err() {
        // Whatever failed, the lease goes back (a no-op when receive already gave it back).
        let _ = release(app, id.0, token, None).await;
    }
    result
}

async fn receive(
    app: &App,
    row: model::Model,
    token: Uuid,
    leased: Instant,
    req: Patch,
    body: axum::body::Body,
) -> ApiResult<model::Model> {
    let max = app.config.files.max_file_size;
    let (offset, length) = (row.offset as u64, row.length as u64);
    if row.completed_at.is_some() || req.offset != offset {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("Upload-Offset is {}, the upload is at {offset}", req.offset),
        )
        .with_details(serde_json::json!({ "offset": offset })));
    }
    let room = length - offset;
    if req.content_length.is_some_and(|n| n > room) {
        return Err(too_large(max));
    }
    let mut out =
        app.storage.writer(row.id, offset, row.storage_state.as_deref()).await.map_err(crate::storage::api_error)?;
    // Hashing runs on a blocking thread of its own, fed through a channel, so it overlaps with
    // receiving and storing the bytes instead of taking turns with them.
    let mut hash = load_hash(&row.hash_state)?;
    let mut check = req.checksum.as_ref().map(|(algo, _)| aws_lc_rs::digest::Context::new(algo.digest()));
    let (feed, mut chunks) = tokio::sync::mpsc::channel::<bytes::Bytes>(HASH_QUEUE);
    let hasher = tokio::task::spawn_blocking(move || {
        while let Some(b) = chunks.blocking_recv() {
            hash.update(&b);
            if let Some(c) = check.as_mut() {
                c.update(&b);
            }
        }
        (hash, check)
    });
    let mut received: u64 = 0;
    let mut over = false;
    let mut hung_up = None;
    // When the lease was last taken or renewed (counted from before the request, so never late).
    let mut renewed = leased;
    // Whether the lease is due for renewal: a sixth of it gone since it was taken or renewed.
    let due = |renewed: Instant| renewed.elapsed() >= app.config.files.upload_lease / 6;
    // A body that sends nothing for a third of the lease is taken as ended (its bytes so far
    // kept, as for a hang-up): with renewals every sixth of it while bytes arrive, a PATCH
    // then never outlives its lease by stalling.
    let idle = app.config.files.upload_lease / 3;
    let mut stream = body.into_data_stream();
    loop {
        let next = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(_) => {
                let why = format!("no bytes arrived for {} s", idle.as_secs_f32());
                hung_up = Some(axum::Error::new(std::io::Error::new(std::io::ErrorKind::TimedOut, why)));
                break;
            }
        };
        match next {
            Ok(chunk) => {
                if received + chunk.len() as u64 > room {
                    over = true;
                    break;
                }
                // Renewed before the bytes are written: a PATCH that lost its lease (its process
                // stalled past it) writes nothing more, so on S3 it cannot overwrite a part the
                // next holder sent under the same number.
                if due(renewed) {
                    let at = Instant::now();
                    if !renew(app, row.id, token).await? {
                        return Err(ApiError::new(ErrorCode::ResourceLocked, "the upload's lease was lost"));
                    }
                    renewed = at;
                }
                received += chunk.len() as u64;
                out.write(chunk.clone()).await.map_err(crate::storage::api_error)?;
                if feed.send(chunk).await.is_err() {
                    return Err(ApiError::internal(std::io::Error::other("the hashing thread stopped")));
                }
            }
            Err(e) => {
                hung_up = Some(e);
                break;
            }
        }
    }
    drop(feed);
    let (hash, check) = hasher.await.map_err(ApiError::internal)?;
    let refused = if over {
        Some(too_large(max))
    } else if let (Some((_, want)), Some(c)) = (&req.checksum, check) {
        if hung_up.is_some() {
            Some(ApiError::field("body", "the request ended early; its checksum cannot be checked"))
        } else if c.finish().as_ref() != want.as_slice() {
            Some(ApiError::new(ErrorCode::ChecksumMismatch, ErrorCode::ChecksumMismatch.default_message()))
        } else {
            None
        }
    } else {
        None
    };
    if let Some(e) = refused {
        out.abort().await.map_err(crate::storage::api_error)?;
        return Err(e);
    }
    let new_offset = offset + received;
    let last = new_offset == length;
    // Still ours? A lease lost while the bytes were written (another request took the upload
    // after it expired) must not be overwritten by this PATCH's commit.
    // Nothing is undone here: the new holder writes from the recorded offset, as this did.
    // A lease taken or renewed less than a sixth of its length ago cannot have expired, so
    // the database is asked only when the last renewal is older (a PATCH of a few MB, the
    // usual case, asks nothing here).
    if due(renewed) && !renew(app, row.id, token).await? {
        return Err(ApiError::new(ErrorCode::ResourceLocked, "the upload's lease was lost; resume from HEAD"));
    }
    let committed = out.commit(last).await.map_err(crate::storage::api_error)?;
    metrics::counter!("lexiflow_upload_bytes_total").increment(received);
    let id = row.id;
    // The previous PATCH's tail, superseded once the new state is recorded.
    let sweep = |garbage: Vec<String>| async move {
        for key in garbage {
            if let Err(e) = app.storage.delete(&key).await {
                tracing::warn!(upload_id = %id, error = %e, "could not delete a superseded staging object");
            }
        }
    };
    let result = if last {
        // Every byte is stored: recorded first, so that a completion that fails from here on
        // (the database going away mid-transaction) is finished later instead of stranding
        // the upload (`finish_stranded`).
        record_full(app, id, token, &hash).await?;
        sweep(committed.garbage).await;
        complete(app, row, hash, token).await
    } else {
        let r = release(app, id, token, Some((new_offset as i64, &hash, committed.state.clone()))).await;
        if r.is_ok() {
            sweep(committed.garbage).await;
        }
        r.map(|()| model::Model {
            offset: new_offset as i64,
            hash_state: save_hash(&hash),
            storage_state: committed.state,
            ..row
        })
    };
    if let Some(e) = hung_up {
        tracing::info!(upload_id = %id, offset = new_offset, error = %e, "upload PATCH ended early; received bytes kept");
    }
    result
}

/// Finishes an upload whose last byte is stored: type, size guard, blob, processing job.
async fn complete(app: &App, row: model::Model, hash: Sha256, token: Uuid) -> ApiResult<model::Model> {
    let sha = crate::audit::chain::hex(&hash.finalize());
    let key = Storage::blob_key(row.firm_id, &sha);
    let head = match app.storage.staging_head(row.id, sniff::HEAD_BYTES).await {
        Ok(h) => h,
        // A failed earlier completion already moved the bytes to their blob.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            app.storage.head(&key, sniff::HEAD_BYTES).await.map_err(crate::storage::api_error)?
        }
        Err(e) => return Err(crate::storage::api_error(e)),
    };
    let refused = |message: String| async {
        // It can never become a document: gone now, rather than left to expire.
        discard(app, &row).await?;
        Err::<model::Model, ApiError>(ApiError::new(ErrorCode::UnsupportedMediaType, message))
    };
    let mime = match sniff::detect(&head, row.length as u64) {
        Ok(m) => m,
        Err(why) => return refused(why).await,
    };
    if mime.starts_with("image/")
        && let Some((w, h)) = sniff::image_size(&head)
        && w.saturating_mul(h) > app.config.files.max_image_pixels
    {
        return refused(format!(
            "the image is {w}×{h} pixels, more than the {} accepted",
            app.config.files.max_image_pixels
        ))
        .await;
    }
    let (firm, size, id) = (row.firm_id, row.length, row.id);
    let (sha, key) = (&sha, &key);
    let scanning = app.config.files.clamd_addr.is_some();
    let blob_id = app
        .write(TxOptions::write(), |tx| async move {
            let tx = &tx;
            let now = clock::now();
            let backend = tx.get_database_backend();
            let fresh = Uuid::now_v7();
            let status = if scanning { "pending" } else { "not_scanned" };
            let stmt = db::portable(
                backend,
                "INSERT INTO blobs (id, firm_id, sha256, size, mime, storage_key, scan_status, ref_count, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?) \
                 ON CONFLICT (firm_id, sha256) DO UPDATE SET ref_count = blobs.ref_count + 1, updated_at = excluded.updated_at \
                 RETURNING id, storage_key",
                vec![
                    fresh.into(),
                    firm.into(),
                    sha.clone().into(),
                    size.into(),
                    mime.into(),
                    key.clone().into(),
                    status.into(),
                    now.into(),
                    now.into(),
                ],
            );
            let got = tx.query_one_raw(stmt).await?.ok_or_else(|| ApiError::internal(std::io::Error::other("no blob row")))?;
            let blob_id: Uuid = got.try_get("", "id")?;
            let stored_at: String = got.try_get("", "storage_key")?;
            if stored_at == *key {
                app.storage.promote(id, key).await.map_err(crate::storage::api_error)?;
            } else {
                // Quarantined content: the new copy is not kept.
                app.storage.discard_staging(id, None).await.map_err(crate::storage::api_error)?;
            }
            let res = tx
                .execute_raw(db::portable(
                    backend,
                    "UPDATE uploads SET \"offset\" = length, sha256 = ?, mime = ?, blob_id = ?, completed_at = ?, \
                     updated_at = ?, lock_token = NULL, locked_until = NULL WHERE id = ? AND (lock_token = ? OR lock_token IS NULL)",
                    vec![sha.clone().into(), mime.into(), blob_id.into(), now.into(), now.into(), id.into(), token.into()],
                ))
                .await?;
            if res.rows_affected() != 1 {
                return Err(ApiError::new(ErrorCode::ResourceLocked, "the upload's lease was lost; resume from HEAD"));
            }
            if blob_id == fresh {
                let job = lexiflow_queue::NewJob::new(PROCESS, serde_json::json!({ "blobId": blob_id }))
                    .queue(QUEUE)
                    .max_attempts(8)
                    .unique_key(format!("process:{blob_id}"));
                lexiflow_queue::enqueue(tx, job).await.map_err(ApiError::internal)?;
            }
            Ok(blob_id)
        })
        .await?;
    let now = clock::now();
    Ok(model::Model {
        offset: row.length,
        sha256: Some(sha.clone()),
        mime: Some(mime.to_owned()),
        blob_id: Some(blob_id),
        completed_at: Some(now),
        lock_token: None,
        locked_until: None,
        ..row
    })
}

/// Removes an upload row and its staging file, and drops its reference to a blob.
async fn discard(app: &App, row: &model::Model) -> ApiResult<()> {
    discard_with(&app.db, &app.storage, row).await
}

/// [`discard`] with the database and store given (the expiry job's form). `row` may be stale.
pub async fn discard_with(db: &DatabaseConnection, storage: &Storage, row: &model::Model) -> ApiResult<()> {
    let id = row.id;
    // The reference dropped is the one the deleted row held, read as it is deleted: `row` may
    // be stale (filed as a document meanwhile, its reference passed to the version; or
    // completed since it was listed), and a row another request deleted first drops nothing.
    let done = db::transaction(db, TxOptions::write(), |tx| async move {
        let backend = tx.get_database_backend();
        let gone = tx
            .query_one_raw(db::portable(
                backend,
                "DELETE FROM uploads WHERE id = ? RETURNING blob_id, storage_state",
                vec![id.into()],
            ))
            .await?;
        let Some(gone) = gone else { return Ok::<_, ApiError>(None) };
        if let Some(b) = gone.try_get::<Option<Uuid>>("", "blob_id")? {
            tx.execute_raw(db::portable(
                backend,
                "UPDATE blobs SET ref_count = ref_count - 1, updated_at = ? WHERE id = ?",
                vec![clock::now().into(), b.into()],
            ))
            .await?;
        }
        Ok(Some(gone.try_get::<Option<String>>("", "storage_state")?))
    })
    .await?;
    match done.value {
        Some(state) => storage.discard_staging(id, state.as_deref()).await.map_err(ApiError::internal),
        None => Ok(()),
    }
}

/// tus termination: the upload and its bytes are removed (423 while a PATCH holds it).
pub async fn terminate(app: &App, p: &Principal, id: UploadId) -> ApiResult<()> {
    let row = acquire(app, p, id, Uuid::now_v7()).await?;
    discard(app, &row).await
}

/// Removes expired uploads and then blobs nothing refers to any more (the `uploads.expire`
/// job). Idempotent. Returns how many uploads and blobs went.
pub async fn expire_with(db: &DatabaseConnection, storage: &Storage) -> ApiResult<(u64, u64)> {
    let now = clock::now();
    let expired = model::Entity::find()
        .filter(model::Column::ExpiresAt.lte(now))
        .filter(
            sea_orm::Condition::any().add(model::Column::LockToken.is_null()).add(model::Column::LockedUntil.lt(now)),
        )
        .limit(1_000)
        .all(db)
        .await?;
    let uploads = expired.len() as u64;
    for row in &expired {
        discard_with(db, storage, row).await?;
    }
    let blobs = collect_garbage(db, storage).await?;
    Ok((uploads, blobs))
}

/// No version and no upload refers to the blob (`blobs` in the outer query).
const UNREFERENCED: &str = "NOT EXISTS (SELECT 1 FROM document_versions v WHERE v.blob_id = blobs.id) \
     AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.blob_id = blobs.id)";

/// Deletes blobs with no references: each under its row lock (PostgreSQL; SQLite's writer
/// lock), so an upload of the same bytes finishing at that moment either waits and inserts a
/// fresh row after the file is gone, or took its reference first and the blob stays.
async fn collect_garbage(db: &DatabaseConnection, storage: &Storage) -> ApiResult<u64> {
    let ids: Vec<Uuid> = blob::Entity::find()
        .select_only()
        .column(blob::Column::Id)
        .filter(blob::Column::RefCount.lte(0))
        .filter(sea_orm::sea_query::Expr::cust(UNREFERENCED))
        .limit(1_000)
        .into_tuple()
        .all(db)
        .await?;
    let mut n = 0;
    for id in ids {
        let gone = db::transaction(db, TxOptions::write(), |tx| async move {
            let backend = tx.get_database_backend();
            let lock = if backend == DbBackend::Postgres { " FOR UPDATE" } else { "" };
            let row = tx
                .query_one_raw(db::portable(
                    backend,
                    // Nothing may refer to it, whatever the count says: a count that went
                    // wrong must never cost a filed version its file.
                    &format!(
                        "SELECT firm_id, sha256, storage_key, thumbnail_key FROM blobs
                          WHERE id = ? AND ref_count <= 0 AND {UNREFERENCED}{lock}"
                    ),
                    vec![id.into()],
                ))
                .await?;
            let Some(row) = row else { return Ok::<_, ApiError>(false) };
            let key: String = row.try_get("", "storage_key")?;
            let thumb: Option<String> = row.try_get("", "thumbnail_key")?;
            storage.delete(&key).await.map_err(ApiError::internal)?;
            // An infected file whose move to quarantine never happened (its job ran out of
            // attempts in between) is still where uploads leave files.
            let (firm, sha): (Uuid, String) = (row.try_get("", "firm_id")?, row.try_get("", "sha256")?);
            let uploaded = Storage::blob_key(firm, &sha);
            if uploaded != key {
                storage.delete(&uploaded).await.map_err(ApiError::internal)?;
            }
            if let Some(t) = thumb {
                storage.delete(&t).await.map_err(ApiError::internal)?;
            }
            tx.execute_raw(db::portable(backend, "DELETE FROM blobs WHERE id = ?", vec![id.into()])).await?;
            Ok(true)
        })
        .await?;
        n += u64::from(gone.value);
    }
    Ok(n)
}

/// When an upload expires, as tus's `Upload-Expires`.
pub fn expires_header(row: &model::Model) -> String {
    tus::http_date(row.expires_at)
}
