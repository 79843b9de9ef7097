//! Document operations, always through a case the caller can see.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{blob, document, version};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    cases::access::{CaseAccess, visible_case, visible_case_cached},
    clock,
    db::{self, TxOptions},
    events::{DomainEvent, EventType},
    http::error::{ApiError, ApiResult, ErrorCode},
    ids::{CaseId, DocumentId, UploadId},
    input::Fields,
    paging::{OffsetPagination, Pagination},
    uploads::model as upload,
};

const MAX_TITLE: usize = 500;
const MAX_TAG: usize = 64;
const MAX_TAGS: usize = 50;
const MAX_NOTE: usize = 2_000;

/// Kinds of document.
pub const TYPES: [&str; 12] = [
    "pleading",
    "motion",
    "brief",
    "order",
    "contract",
    "correspondence",
    "evidence",
    "exhibit",
    "transcript",
    "memo",
    "invoice",
    "other",
];

/// One version as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    pub number: i32,
    pub filename: String,
    /// From the file's bytes, not from what the client declared.
    pub mime: String,
    pub size: i64,
    pub sha256: String,
    /// `pending`, `clean`, `infected`, `error` or `not_scanned` (no scanner configured).
    pub scan_status: String,
    pub has_thumbnail: bool,
    pub change_note: Option<String>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
}

/// A document as the API shows it, with its current version.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentView {
    pub id: DocumentId,
    pub case_id: CaseId,
    pub title: String,
    #[serde(rename = "type")]
    pub doc_type: String,
    pub tags: Vec<String>,
    pub sealed: bool,
    pub restricted: bool,
    pub legal_hold: bool,
    pub current_version: i32,
    /// For `If-Match`.
    pub version: i32,
    pub latest: Option<VersionView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn version_view(v: version::Model, b: Option<&blob::Model>) -> VersionView {
    VersionView {
        number: v.number,
        filename: v.filename,
        mime: v.mime,
        size: v.size,
        sha256: v.sha256,
        scan_status: b.map(|b| b.scan_status.clone()).unwrap_or_else(|| "error".into()),
        has_thumbnail: b.is_some_and(|b| b.thumbnail_key.is_some()),
        change_note: v.change_note,
        created_by: v.created_by,
        created_at: v.created_at,
    }
}

fn document_view(d: document::Model, latest: Option<VersionView>) -> DocumentView {
    DocumentView {
        id: DocumentId(d.id),
        case_id: CaseId(d.case_id),
        title: d.title,
        doc_type: d.doc_type,
        tags: serde_json::from_str(&d.tags).unwrap_or_default(),
        sealed: d.sealed,
        restricted: d.restricted,
        legal_hold: d.legal_hold,
        current_version: d.current_version,
        version: d.version,
        latest,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

/// `POST /cases/{id}/documents`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDocument {
    /// A finished upload of the caller's, made for this case.
    pub upload_id: UploadId,
    pub title: String,
    #[serde(rename = "type")]
    pub doc_type: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only users who may see the case's sealed material may file sealed documents.
    #[serde(default)]
    pub sealed: bool,
    /// Hidden from client users.
    #[serde(default)]
    pub restricted: bool,
}

/// `POST /documents/{id}/versions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddVersion {
    pub upload_id: UploadId,
    pub change_note: Option<String>,
}

/// `PATCH /documents/{id}`: absent fields stay.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateDocument {
    pub title: Option<String>,
    #[serde(rename = "type")]
    pub doc_type: Option<String>,
    pub tags: Option<Vec<String>>,
    /// Admins and partners only.
    pub legal_hold: Option<bool>,
    /// The version last read; a stale one is refused with 412 (as is a stale `If-Match`).
    pub version: Option<i32>,
}

fn clean_tags(f: &mut Fields, tags: &[String]) -> Vec<String> {
    if tags.len() > MAX_TAGS {
        f.error("tags", format!("at most {MAX_TAGS} tags"));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, t) in tags.iter().enumerate() {
        let t = f.text(&format!("tags[{i}]"), t, MAX_TAG);
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn check_type(f: &mut Fields, t: &str) {
    if !TYPES.contains(&t) {
        f.error("type", format!("use one of {}", TYPES.join(", ")));
    }
}

/// A document of the caller's firm they may see, with the case access that decided it; 404
/// otherwise (missing, deleted, on a case they cannot see, sealed or restricted from them).
async fn visible_document(
    db: &impl ConnectionTrait,
    p: &Principal,
    id: DocumentId,
    lock: bool,
) -> ApiResult<(document::Model, CaseAccess)> {
    let not_found = || ApiError::not_found("document");
    if lock && db.get_database_backend() == DbBackend::Postgres {
        db.execute_raw(db::portable(
            DbBackend::Postgres,
            "SELECT 1 FROM documents WHERE id = ? AND firm_id = ? FOR UPDATE",
            vec![id.0.into(), p.firm_id.0.into()],
        ))
        .await?;
    }
    let doc = document::Entity::find_by_id(id.0)
        .filter(document::Column::FirmId.eq(p.firm_id.0))
        .filter(document::Column::DeletedAt.is_null())
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let access = match visible_case(db, p, CaseId(doc.case_id)).await {
        Ok(a) => a.with_sealed_grant(db).await?,
        Err(e) if e.code == ErrorCode::ResourceNotFound => return Err(not_found()),
        Err(e) => return Err(e),
    };
    if (doc.sealed && !access.sees_sealed()) || (doc.restricted && !access.sees_restricted()) {
        return Err(not_found());
    }
    Ok((doc, access))
}

/// Finishes the upload first if its completion failed before (see
/// `uploads::finish_stranded`); an upload that is not the caller's, or not there, is left for
/// [`take_upload`] to refuse.
async fn finish_upload(app: &App, p: &Principal, id: UploadId) -> ApiResult<()> {
    if let Ok(row) = crate::uploads::find(app, p, id).await {
        crate::uploads::finish_stranded(app, p, row).await?;
    }
    Ok(())
}

/// Takes the caller's finished upload for `case` out of the uploads table: its blob reference
/// passes to the version being made. 404 for anything else (not theirs, not finished,
/// expired, already used, another case's).
async fn take_upload(db: &impl ConnectionTrait, p: &Principal, id: UploadId, case: Uuid) -> ApiResult<upload::Model> {
    let bad = || ApiError::field("uploadId", "no finished upload of yours for this case has this id");
    let row = upload::Entity::find_by_id(id.0)
        .filter(upload::Column::FirmId.eq(p.firm_id.0))
        .filter(upload::Column::UserId.eq(p.user_id.0))
        .filter(upload::Column::ExpiresAt.gt(clock::now()))
        .one(db)
        .await?
        .ok_or_else(bad)?;
    if row.case_id != case || row.completed_at.is_none() || row.blob_id.is_none() {
        return Err(bad());
    }
    let res = db
        .execute_raw(db::portable(
            db.get_database_backend(),
            "DELETE FROM uploads WHERE id = ? AND completed_at IS NOT NULL",
            vec![id.0.into()],
        ))
        .await?;
    if res.rows_affected() != 1 {
        return Err(bad());
    }
    Ok(row)
}

async fn blob_of(db: &impl ConnectionTrait, id: Uuid) -> ApiResult<blob::Model> {
    blob::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| ApiError::internal(std::io::Error::other("a version's blob is missing")))
}

/// A new version row from an upload, and the events that announce it.
async fn add_version_row(
    tx: &db::Tx,
    p: &Principal,
    doc: &document::Model,
    number: i32,
    up: upload::Model,
    note: Option<String>,
) -> ApiResult<VersionView> {
    let blob_id = up.blob_id.ok_or_else(|| ApiError::field("uploadId", "the upload is not finished"))?;
    let b = blob_of(tx, blob_id).await?;
    let v = version::Model {
        id: Uuid::now_v7(),
        firm_id: p.firm_id.0,
        document_id: doc.id,
        number,
        blob_id,
        filename: up.filename,
        mime: b.mime.clone(),
        size: b.size,
        sha256: b.sha256.clone(),
        change_note: note,
        created_by: p.user_id.0,
        created_at: clock::now(),
    };
    version::Entity::insert(v.clone().into_active_model()).exec(tx).await?;
    Ok(version_view(v, Some(&b)))
}

fn announce(tx: &db::Tx, p: &Principal, t: EventType, doc: &DocumentView) {
    tx.record(
        DomainEvent::new(t, p.firm_id, &Actor::user(p), doc.id)
            .case(doc.case_id.0)
            .data(audit::json(doc))
            .confidential(doc.sealed, doc.restricted),
    );
}

/// Audits a new document or version (`event`, on the document's case) and announces it; when
/// its file was processed already (the same bytes were uploaded before), that too.
async fn record_filing(tx: &db::Tx, p: &Principal, view: &DocumentView, event: AuditEvent) -> ApiResult<()> {
    audit::record(tx, p.firm_id, &Actor::user(p), event.case(view.case_id.0)).await?;
    announce(tx, p, EventType::DocumentUploaded, view);
    if view.latest.as_ref().is_some_and(|v| v.scan_status != "pending") {
        announce(tx, p, EventType::DocumentProcessed, view);
    }
    Ok(())
}

/// Files a new document on a case, with version 1 from a finished upload.
pub async fn create(app: &App, p: &Principal, case_id: CaseId, input: CreateDocument) -> ApiResult<DocumentView> {
    let mut f = Fields::default();
    let title = f.text("title", &input.title, MAX_TITLE);
    check_type(&mut f, &input.doc_type);
    let tags = clean_tags(&mut f, &input.tags);
    f.finish()?;
    finish_upload(app, p, input.upload_id).await?;
    let (title, tags, input) = (&title, &tags, &input);
    app.write(TxOptions::write(), |tx| async move {
        let access = visible_case(&tx, p, case_id).await?.with_sealed_grant(&tx).await?;
        access.require_edit()?;
        if input.sealed && !access.sees_sealed() {
            return Err(ApiError::forbidden(
                "only an admin, or a user an admin granted sealed access on this case, may file sealed documents",
            ));
        }
        let up = take_upload(&tx, p, input.upload_id, case_id.0).await?;
        let now = clock::now();
        let doc = document::Model {
            id: Uuid::now_v7(),
            firm_id: p.firm_id.0,
            case_id: case_id.0,
            title: title.clone(),
            doc_type: input.doc_type.clone(),
            tags: serde_json::to_string(tags).unwrap_or_else(|_| "[]".into()),
            sealed: input.sealed,
            restricted: input.restricted,
            legal_hold: false,
            current_version: 1,
            version: 1,
            created_by: p.user_id.0,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        document::Entity::insert(doc.clone().into_active_model()).exec(&tx).await?;
        let v = add_version_row(&tx, p, &doc, 1, up, None).await?;
        let view = document_view(doc, Some(v));
        let event = AuditEvent::new("document.create", "document", Some(view.id.to_string()))
            .created_fields(&audit::json(&view));
        record_filing(&tx, p, &view, event).await?;
        Ok(view)
    })
    .await
}

/// Adds a version from a finished upload. Numbers are 1, 2, 3… per document, gapless under
/// concurrent posts: the document row is locked (PostgreSQL; SQLite writers are serialised)
/// before the highest number is read, and the unique index backs it.
pub async fn add_version(app: &App, p: &Principal, id: DocumentId, input: AddVersion) -> ApiResult<DocumentView> {
    let mut f = Fields::default();
    let note = f.opt_text("changeNote", input.change_note.as_deref(), MAX_NOTE);
    f.finish()?;
    finish_upload(app, p, input.upload_id).await?;
    let (note, input) = (&note, &input);
    app.write(TxOptions::write(), |tx| async move {
        let (doc, access) = visible_document(&tx, p, id, true).await?;
        access.require_edit()?;
        let up = take_upload(&tx, p, input.upload_id, doc.case_id).await?;
        let last: Option<Option<i32>> = version::Entity::find()
            .select_only()
            .column_as(version::Column::Number.max(), "max")
            .filter(version::Column::DocumentId.eq(doc.id))
            .into_tuple()
            .one(&tx)
            .await?;
        let number = last.flatten().unwrap_or(0) + 1;
        let v = add_version_row(&tx, p, &doc, number, up, note.clone()).await?;
        let now = clock::now();
        let doc = document::Model { current_version: number, version: doc.version + 1, updated_at: now, ..doc };
        document::Entity::update(doc.clone().into_active_model().reset_all()).exec(&tx).await?;
        let view = document_view(doc, Some(v));
        let event = AuditEvent::new("document.version.create", "document", Some(view.id.to_string()))
            .changes(serde_json::json!({ "currentVersion": { "to": number } }));
        record_filing(&tx, p, &view, event).await?;
        Ok(view)
    })
    .await
}

/// The current versions of `docs`, with their blobs.
async fn latest(db: &impl ConnectionTrait, docs: &[document::Model]) -> ApiResult<Vec<Option<VersionView>>> {
    if docs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = docs.iter().map(|d| d.id).collect();
    let versions = version::Entity::find().filter(version::Column::DocumentId.is_in(ids)).all(db).await?;
    let versions: Vec<version::Model> = versions
        .into_iter()
        .filter(|v| docs.iter().any(|d| d.id == v.document_id && d.current_version == v.number))
        .collect();
    let blob_ids: Vec<Uuid> = versions.iter().map(|v| v.blob_id).collect();
    let blobs = blob::Entity::find().filter(blob::Column::Id.is_in(blob_ids)).all(db).await?;
    Ok(docs
        .iter()
        .map(|d| {
            versions.iter().find(|v| v.document_id == d.id).map(|v| {
                let b = blobs.iter().find(|b| b.id == v.blob_id);
                version_view(v.clone(), b)
            })
        })
        .collect())
}

fn visible_documents(access: &CaseAccess) -> sea_orm::Select<document::Entity> {
    let mut q = document::Entity::find()
        .filter(document::Column::CaseId.eq(access.case.id))
        .filter(document::Column::DeletedAt.is_null());
    if !access.sees_sealed() {
        q = q.filter(document::Column::Sealed.eq(false));
    }
    if !access.sees_restricted() {
        q = q.filter(document::Column::Restricted.eq(false));
    }
    q
}

/// A page of a case's documents, newest first; those the caller may not see are not there.
pub async fn list(
    app: &App,
    p: &Principal,
    case_id: CaseId,
    page: u64,
    limit: u64,
) -> ApiResult<(Vec<DocumentView>, Pagination)> {
    let access = visible_case_cached(app, p, case_id).await?.with_sealed_grant(&app.db).await?;
    let total = visible_documents(&access).count(&app.db).await?;
    let docs = visible_documents(&access)
        .order_by_desc(document::Column::Id)
        .offset((page - 1) * limit)
        .limit(limit)
        .all(&app.db)
        .await?;
    let latest = latest(&app.db, &docs).await?;
    let total_pages = total.div_ceil(limit);
    Ok((
        docs.into_iter().zip(latest).map(|(d, v)| document_view(d, v)).collect(),
        Pagination::Offset(OffsetPagination { page, limit, total, total_pages, has_next: page < total_pages }),
    ))
}

/// One document with its current version.
pub async fn get(app: &App, p: &Principal, id: DocumentId) -> ApiResult<DocumentView> {
    let (doc, _) = visible_document(&app.db, p, id, false).await?;
    let v = latest(&app.db, std::slice::from_ref(&doc)).await?.pop().flatten();
    Ok(document_view(doc, v))
}

/// Every version of a document, newest first.
pub async fn versions(app: &App, p: &Principal, id: DocumentId) -> ApiResult<Vec<VersionView>> {
    let (doc, _) = visible_document(&app.db, p, id, false).await?;
    let rows = version::Entity::find()
        .filter(version::Column::DocumentId.eq(doc.id))
        .order_by_desc(version::Column::Number)
        .all(&app.db)
        .await?;
    let blob_ids: Vec<Uuid> = rows.iter().map(|v| v.blob_id).collect();
    let blobs = blob::Entity::find().filter(blob::Column::Id.is_in(blob_ids)).all(&app.db).await?;
    Ok(rows
        .into_iter()
        .map(|v| {
            let b = blobs.iter().find(|b| b.id == v.blob_id);
            version_view(v, b)
        })
        .collect())
}

fn stale(current: i32) -> ApiError {
    ApiError::new(ErrorCode::PreconditionFailed, "the document has changed since you read it; re-read and retry")
        .with_details(serde_json::json!({ "currentVersion": current }))
}

/// Changes a document's title, type, tags or legal hold, guarded by its version.
pub async fn update(
    app: &App,
    p: &Principal,
    id: DocumentId,
    input: UpdateDocument,
    if_match: Option<i32>,
) -> ApiResult<DocumentView> {
    let mut f = Fields::default();
    let title = input.title.as_deref().map(|t| f.text("title", t, MAX_TITLE));
    if let Some(t) = &input.doc_type {
        check_type(&mut f, t);
    }
    let tags = input.tags.as_deref().map(|t| clean_tags(&mut f, t));
    f.finish()?;
    if input.legal_hold.is_some() && !p.role.sees_all_cases() {
        return Err(ApiError::forbidden("only an admin or a partner may place or lift a legal hold"));
    }
    let expected = if_match.or(input.version);
    let (title, tags, input) = (&title, &tags, &input);
    app.write(TxOptions::write(), |tx| async move {
        let (doc, access) = visible_document(&tx, p, id, true).await?;
        access.require_edit()?;
        if expected.is_some_and(|v| v != doc.version) {
            return Err(stale(doc.version));
        }
        let before = document_view(doc.clone(), None);
        let doc = document::Model {
            title: title.clone().unwrap_or(doc.title.clone()),
            doc_type: input.doc_type.clone().unwrap_or(doc.doc_type.clone()),
            tags: tags
                .as_ref()
                .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into()))
                .unwrap_or(doc.tags.clone()),
            legal_hold: input.legal_hold.unwrap_or(doc.legal_hold),
            version: doc.version + 1,
            updated_at: clock::now(),
            ..doc
        };
        document::Entity::update(doc.clone().into_active_model().reset_all()).exec(&tx).await?;
        let strip = |mut v: serde_json::Value| {
            if let Some(o) = v.as_object_mut() {
                o.remove("version");
                o.remove("updatedAt");
            }
            v
        };
        let (old, after) = (strip(audit::json(&before)), strip(audit::json(&document_view(doc.clone(), None))));
        let v = latest(&tx, std::slice::from_ref(&doc)).await?.pop().flatten();
        let view = document_view(doc, v);
        audit::record(
            &tx,
            p.firm_id,
            &Actor::user(p),
            AuditEvent::new(
                if input.legal_hold.is_some() { "document.legal_hold" } else { "document.update" },
                "document",
                Some(view.id.to_string()),
            )
            .case(view.case_id.0)
            .changes(audit::diff(&old, &after)),
        )
        .await?;
        announce(&tx, p, EventType::DocumentUpdated, &view);
        Ok(view)
    })
    .await
}

/// Soft-deletes a document (its versions stay, for the record). Refused under a legal hold.
pub async fn delete(app: &App, p: &Principal, id: DocumentId, if_match: Option<i32>) -> ApiResult<()> {
    app.write(TxOptions::write(), |tx| async move {
        let (doc, access) = visible_document(&tx, p, id, true).await?;
        access.require_edit()?;
        if if_match.is_some_and(|v| v != doc.version) {
            return Err(stale(doc.version));
        }
        if doc.legal_hold {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the document is under a legal hold: neither it nor any of its versions may be deleted",
            ));
        }
        let now = clock::now();
        let doc = document::Model { deleted_at: Some(now), updated_at: now, version: doc.version + 1, ..doc };
        document::Entity::update(doc.clone().into_active_model().reset_all()).exec(&tx).await?;
        let view = document_view(doc, None);
        audit::record(
            &tx,
            p.firm_id,
            &Actor::user(p),
            AuditEvent::new("document.delete", "document", Some(view.id.to_string())).case(view.case_id.0),
        )
        .await?;
        announce(&tx, p, EventType::DocumentDeleted, &view);
        Ok(())
    })
    .await
}

/// What a download serves.
#[derive(Debug)]
pub struct Download {
    pub storage_key: String,
    pub filename: String,
    pub mime: String,
    pub size: u64,
    pub sha256: String,
}

/// Decides whether `version` (default the current one) of a document may be served, and
/// audits the download. Infected files are never served; with `SCAN_REQUIRED` only clean ones
/// are.
pub async fn download(app: &App, p: &Principal, id: DocumentId, number: Option<i32>) -> ApiResult<Download> {
    let (doc, v, b) = servable_version(app, p, id, number).await?;
    let number = v.number;
    match b.scan_status.as_str() {
        "clean" => {}
        status if app.config.files.scan_required => {
            return Err(ApiError::new(
                ErrorCode::FileNotScanned,
                format!("SCAN_REQUIRED is on and this file's scan is {status}; it is served once found clean"),
            ));
        }
        _ => {}
    }
    let case = doc.case_id;
    app.write(TxOptions::write(), |tx| async move {
        audit::record(
            &tx,
            p.firm_id,
            &Actor::user(p),
            AuditEvent::new("document.download", "document", Some(id.to_string()))
                .case(case)
                .changes(serde_json::json!({ "version": number })),
        )
        .await?;
        Ok(())
    })
    .await?;
    Ok(Download {
        storage_key: b.storage_key,
        filename: v.filename,
        mime: v.mime,
        size: u64::try_from(b.size).unwrap_or(0),
        sha256: b.sha256,
    })
}

/// The thumbnail of a version's image, if it has one.
pub async fn thumbnail(app: &App, p: &Principal, id: DocumentId, number: Option<i32>) -> ApiResult<String> {
    let (_, _, b) = servable_version(app, p, id, number).await?;
    b.thumbnail_key.ok_or_else(|| ApiError::not_found("thumbnail"))
}

/// A visible document's version `number` (default the current one) and its blob; 403
/// `FILE_QUARANTINED` when the content was found infected.
async fn servable_version(
    app: &App,
    p: &Principal,
    id: DocumentId,
    number: Option<i32>,
) -> ApiResult<(document::Model, version::Model, blob::Model)> {
    let (doc, _) = visible_document(&app.db, p, id, false).await?;
    let v = version::Entity::find()
        .filter(version::Column::DocumentId.eq(doc.id))
        .filter(version::Column::Number.eq(number.unwrap_or(doc.current_version)))
        .one(&app.db)
        .await?
        .ok_or_else(|| ApiError::not_found("document version"))?;
    let b = blob_of(&app.db, v.blob_id).await?;
    if b.scan_status == "infected" {
        return Err(ApiError::new(ErrorCode::FileQuarantined, ErrorCode::FileQuarantined.default_message()));
    }
    Ok((doc, v, b))
}
