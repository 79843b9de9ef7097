//! The `files.process` job: a new blob is scanned by clamd (when `CLAMD_ADDR` is set) and its
//! outcome recorded; an infected file is moved to quarantine, audited, and announced; a clean
//! (or unscanned) image gets a thumbnail.
//! Every document version carrying the blob hears `document.processed`.
//!
//! Idempotent: a blob already settled is not scanned again, and moving a file already in
//! quarantine is a no-op. A scan that fails (clamd down, its breaker open, a timeout) fails
//! the job, which the queue retries with backoff; the last attempt records `error`.

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::model::{blob, document, version};
use crate::{
    audit::{Actor, AuditEvent},
    clamd::{self, Verdict},
    clock,
    config::FilesConfig,
    db::{self, TxOptions},
    events::{DomainEvent, EventType, outbox},
    ids::FirmId,
    jobs::JobError,
    storage::Storage,
};

/// What the job needs.
#[derive(Clone, Debug)]
pub struct Processor {
    pub db: DatabaseConnection,
    pub storage: Storage,
    pub files: FilesConfig,
}

/// Moves an infected blob's file from where uploads put it to its quarantine key `to`, if it
/// is still there (idempotent).
async fn quarantine(storage: &Storage, b: &blob::Model, to: &str) -> Result<(), JobError> {
    let from = Storage::blob_key(b.firm_id, &b.sha256);
    if from != to && storage.exists(&from).await? {
        storage.rename(&from, to).await?;
    }
    Ok(())
}

/// Runs the job for the blob named in `payload`.
pub async fn run(p: Processor, payload: serde_json::Value, attempt: u32, max_attempts: u32) -> Result<(), JobError> {
    let Some(id) = payload.get("blobId").and_then(|v| v.as_str()).and_then(|s| Uuid::parse_str(s).ok()) else {
        return Err(JobError::Invalid("payload has no blobId".into()));
    };
    let Some(b) = blob::Entity::find_by_id(id).one(&p.db).await? else { return Ok(()) };
    // Settled already (a second delivery of the job, or no scanner configured): only an
    // image's missing thumbnail may be left to do.
    let settled = b.scan_status != "pending";
    if b.scan_status == "infected" {
        // Recorded as quarantined before the file is moved (below): a job that stopped in
        // between moves it now. Until then the record alone keeps it from being served.
        quarantine(&p.storage, &b, &b.storage_key).await?;
    }
    let wants_thumb = b.thumbnail_key.is_none() && b.mime.starts_with("image/");
    if settled && !(wants_thumb && matches!(b.scan_status.as_str(), "clean" | "not_scanned")) {
        return Ok(());
    }
    let (status, detail, key): (&str, Option<String>, String) = match &p.files.clamd_addr {
        _ if settled => (b.scan_status.as_str(), b.scan_detail.clone(), b.storage_key.clone()),
        None => ("not_scanned", None, b.storage_key.clone()),
        Some(addr) => {
            let bytes = p.storage.read(&b.storage_key).await?;
            match clamd::scan(addr, p.files.clamd_timeout, bytes).await {
                Ok(Verdict::Clean) => ("clean", None, b.storage_key.clone()),
                // Recorded first, moved after the commit: were the file moved first and the
                // record then lost, the blob would stay `pending` pointing at nothing, and the
                // same bytes uploaded again would be put back where they are served from.
                Ok(Verdict::Infected(sig)) => ("infected", Some(sig), Storage::quarantine_key(b.firm_id, &b.sha256)),
                Err(e) if attempt < max_attempts => {
                    return Err(JobError::Scan(e.to_string()));
                }
                Err(e) => ("error", Some(e.to_string()), b.storage_key.clone()),
            }
        }
    };
    if !settled {
        metrics::counter!("lexiflow_file_scans_total", "result" => status.to_owned()).increment(1);
    }
    let thumb = if matches!(status, "clean" | "not_scanned") { thumbnail(&p, &b, &key).await } else { None };
    let firm = b.firm_id;
    let (detail, key, thumb) = (&detail, &key, &thumb);
    let done = crate::db::transaction(&p.db, TxOptions::write(), |tx| async move {
        let tx = &tx;
        let backend = sea_orm::ConnectionTrait::get_database_backend(tx);
        let now = clock::now();
        sea_orm::ConnectionTrait::execute_raw(
            tx,
            db::portable(
                backend,
                "UPDATE blobs SET scan_status = ?, scan_detail = ?, scanned_at = ?, storage_key = ?, thumbnail_key = ?, \
                 updated_at = ? WHERE id = ?",
                vec![
                    status.into(),
                    detail.clone().into(),
                    now.into(),
                    key.clone().into(),
                    thumb.clone().into(),
                    now.into(),
                    id.into(),
                ],
            ),
        )
        .await?;
        let versions = version::Entity::find().filter(version::Column::BlobId.eq(id)).all(tx).await?;
        let doc_ids: Vec<Uuid> = versions.iter().map(|v| v.document_id).collect();
        let docs = document::Entity::find()
            .filter(document::Column::Id.is_in(doc_ids))
            .filter(document::Column::DeletedAt.is_null())
            .all(tx)
            .await?;
        let actor = Actor::system();
        for v in &versions {
            let Some(d) = docs.iter().find(|d| d.id == v.document_id) else { continue };
            if status == "infected" && !settled {
                crate::audit::record(
                    tx,
                    FirmId(firm),
                    &actor,
                    AuditEvent::new("document.quarantined", "document", Some(d.id.to_string()))
                        .case(d.case_id)
                        .changes(serde_json::json!({ "version": v.number, "signature": detail })),
                )
                .await?;
            }
            tx.record(
                DomainEvent::new(EventType::DocumentProcessed, FirmId(firm), &actor, d.id)
                    .case(d.case_id)
                    .data(serde_json::json!({
                        "documentId": d.id,
                        "caseId": d.case_id,
                        "version": v.number,
                        "sha256": v.sha256,
                        "mime": v.mime,
                        "scanStatus": status,
                        "hasThumbnail": thumb.is_some(),
                    }))
                    .confidential(d.sealed, d.restricted),
            );
        }
        if status == "infected" && !settled && versions.is_empty() {
            // Not yet a document: the quarantine is still on the record.
            crate::audit::record(
                tx,
                FirmId(firm),
                &actor,
                AuditEvent::new("file.quarantined", "blob", Some(id.to_string()))
                    .changes(serde_json::json!({ "signature": detail })),
            )
            .await?;
        }
        Ok::<_, crate::http::error::ApiError>(())
    })
    .await
    .map_err(|e| JobError::Invalid(e.message.to_string()))?;
    drop(done.events);
    if status == "infected" {
        quarantine(&p.storage, &b, key).await?;
    }
    // Numbered now rather than by the minute's sweep, so followers hear of it at once.
    outbox::sequence_firm(&p.db, firm).await?;
    if status == "infected" {
        tracing::warn!(blob_id = %id, firm_id = %firm, signature = ?detail, "infected file quarantined");
    }
    Ok(())
}

/// Makes and stores the thumbnail of an image blob; None (logged) when it is not an image, is
/// too large, or cannot be decoded within the limits. A missing thumbnail never fails the job.
async fn thumbnail(p: &Processor, b: &blob::Model, key: &str) -> Option<String> {
    if !b.mime.starts_with("image/") || u64::try_from(b.size).unwrap_or(u64::MAX) > super::thumbnail::MAX_SOURCE_BYTES {
        return None;
    }
    let bytes = match p.storage.read_all(key).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(blob_id = %b.id, error = %e, "cannot read an image for its thumbnail");
            return None;
        }
    };
    let max = p.files.max_image_pixels;
    let made = tokio::task::spawn_blocking(move || super::thumbnail::make(&bytes, max)).await;
    let jpeg = match made {
        Ok(Ok(jpeg)) => jpeg,
        Ok(Err(why)) => {
            tracing::info!(blob_id = %b.id, reason = %why, "no thumbnail for this image");
            return None;
        }
        Err(e) => {
            tracing::warn!(blob_id = %b.id, error = %e, "thumbnail task failed");
            return None;
        }
    };
    let thumb = Storage::thumbnail_key(b.firm_id, &b.sha256);
    match p.storage.put(&thumb, bytes::Bytes::from(jpeg)).await {
        Ok(()) => Some(thumb),
        Err(e) => {
            tracing::warn!(blob_id = %b.id, error = %e, "cannot store a thumbnail");
            None
        }
    }
}
