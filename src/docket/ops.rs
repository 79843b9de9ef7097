//! Docket operations, always through a case the caller can see.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
    sea_query::{Expr, ExprTrait, Query, SimpleExpr},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{self as entry, EntryType};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    cases::access::{CaseAccess, visible_case, visible_case_cached},
    clock,
    db::{
        TxOptions,
        bulk::{Cell, Table, col, insert_rows},
    },
    events::{DomainEvent, EventType},
    http::error::{ApiError, ApiResult, ErrorCode},
    ids::{CaseId, DocketEntryId},
    input::Fields,
    paging::{OffsetPagination, Pagination},
};

const MAX_DESCRIPTION: usize = 2_000;

const MAX_SHORT: usize = 300;
const MAX_RICH: usize = 200_000;
/// Entries one request may post.
pub const MAX_BATCH: usize = 1_000;

/// A docket entry as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocketEntryView {
    pub id: DocketEntryId,
    pub case_id: CaseId,
    /// Assigned by the server: 1, 2, 3… per case, gapless.
    pub sequence_number: i64,
    pub entry_date: NaiveDate,
    pub filed_at: Option<DateTime<Utc>>,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    pub description: String,
    /// Rich text (an HTML allowlist).
    pub text: Option<String>,
    pub filed_by: Option<String>,
    pub document_number: Option<String>,
    pub sealed: bool,
    pub restricted: bool,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<entry::Model> for DocketEntryView {
    fn from(m: entry::Model) -> Self {
        Self {
            id: DocketEntryId(m.id),
            case_id: CaseId(m.case_id),
            sequence_number: m.sequence_number,
            entry_date: m.entry_date,
            filed_at: m.filed_at,
            entry_type: m.entry_type,
            description: m.description,
            text: m.text,
            filed_by: m.filed_by,
            document_number: m.document_number,
            sealed: m.sealed,
            restricted: m.restricted,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// One entry to post. The sequence number is not accepted: the server assigns it.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEntry {
    /// Defaults to today (UTC).
    pub entry_date: Option<NaiveDate>,
    pub filed_at: Option<DateTime<Utc>>,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    pub description: String,
    pub text: Option<String>,
    pub filed_by: Option<String>,
    pub document_number: Option<String>,
    /// Only users who may see sealed material may post or seal entries.
    #[serde(default)]
    pub sealed: bool,
    #[serde(default)]
    pub restricted: bool,
}

/// `PATCH /cases/{id}/docket/{entryId}` body: absent fields stay, `null` clears.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateEntry {
    pub entry_date: Option<NaiveDate>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub filed_at: Option<Option<DateTime<Utc>>>,
    #[serde(rename = "type")]
    pub entry_type: Option<EntryType>,
    pub description: Option<String>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub text: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub filed_by: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub document_number: Option<Option<String>>,
    pub sealed: Option<bool>,
    pub restricted: Option<bool>,
    /// The version last read; a stale one is refused with 412 (as is a stale `If-Match`).
    pub version: Option<i32>,
}

struct Clean {
    entry_date: NaiveDate,
    filed_at: Option<DateTime<Utc>>,
    entry_type: EntryType,
    description: String,
    text: Option<String>,
    filed_by: Option<String>,
    document_number: Option<String>,
    sealed: bool,
    restricted: bool,
}

fn clean(input: &CreateEntry, today: NaiveDate, index: Option<usize>) -> ApiResult<Clean> {
    let mut f = Fields::default();
    let name = |n: &str| match index {
        Some(i) => format!("[{i}].{n}"),
        None => n.to_owned(),
    };
    let description = f.text(&name("description"), &input.description, MAX_DESCRIPTION);
    let text = f.opt_rich(&name("text"), input.text.as_deref(), MAX_RICH);
    let filed_by = f.opt_text(&name("filedBy"), input.filed_by.as_deref(), MAX_SHORT);
    let document_number = f.opt_text(&name("documentNumber"), input.document_number.as_deref(), MAX_SHORT);
    if input.entry_date.is_some_and(|d| !clock::date_in_range(d)) {
        f.error(&name("entryDate"), "must be in the years 1 to 9999");
    }
    if input.filed_at.is_some_and(|t| !clock::in_range(t)) {
        f.error(&name("filedAt"), "must be in the years 1 to 9999");
    }
    f.finish()?;
    Ok(Clean {
        entry_date: input.entry_date.unwrap_or(today),
        filed_at: input.filed_at.map(clock::stored),
        entry_type: input.entry_type,
        description,
        text,
        filed_by,
        document_number,
        sealed: input.sealed,
        restricted: input.restricted,
    })
}

const TABLE: Table = Table {
    name: "docket_entries",
    columns: &[
        col("id", "uuid"),
        col("firm_id", "uuid"),
        col("case_id", "uuid"),
        col("sequence_number", "int8"),
        col("entry_date", "date"),
        col("filed_at", "timestamptz"),
        col("entry_type", "text"),
        col("description", "text"),
        col("text", "text"),
        col("filed_by", "text"),
        col("document_number", "text"),
        col("sealed", "bool"),
        col("ever_sealed", "bool"),
        col("restricted", "bool"),
        col("ever_restricted", "bool"),
        col("version", "int4"),
        col("created_by", "uuid"),
        col("created_at", "timestamptz"),
        col("updated_at", "timestamptz"),
        col("deleted_at", "timestamptz"),
    ],
};

fn type_name(t: EntryType) -> String {
    audit::json(&t).as_str().unwrap_or_default().to_owned()
}

fn row(m: &entry::Model) -> Vec<Cell> {
    vec![
        m.id.into(),
        m.firm_id.into(),
        m.case_id.into(),
        m.sequence_number.into(),
        m.entry_date.into(),
        m.filed_at.into(),
        type_name(m.entry_type).into(),
        m.description.clone().into(),
        m.text.clone().into(),
        m.filed_by.clone().into(),
        m.document_number.clone().into(),
        m.sealed.into(),
        m.ever_sealed.into(),
        m.restricted.into(),
        m.ever_restricted.into(),
        m.version.into(),
        m.created_by.into(),
        m.created_at.into(),
        m.updated_at.into(),
        m.deleted_at.into(),
    ]
}

/// Locks the case row against concurrent posters (and a concurrent delete) until the
/// transaction ends; SQLite writers already hold the write lock `BEGIN IMMEDIATE` took. Taken
/// before the access check, so the check sees the case as it will stay.
async fn lock_case(tx: &impl ConnectionTrait, p: &Principal, case: Uuid) -> ApiResult<()> {
    let backend = tx.get_database_backend();
    if backend == DbBackend::Postgres {
        tx.execute_raw(Statement::from_sql_and_values(
            backend,
            "SELECT 1 FROM cases WHERE id = $1 AND firm_id = $2 FOR UPDATE",
            [case.into(), p.firm_id.0.into()],
        ))
        .await?;
    }
    Ok(())
}

/// The highest number used on `case`'s docket (struck entries included); the case is locked.
async fn last_number(tx: &impl ConnectionTrait, case: Uuid) -> ApiResult<i64> {
    let max: Option<Option<i64>> = entry::Entity::find()
        .select_only()
        .column_as(entry::Column::SequenceNumber.max(), "max")
        .filter(entry::Column::CaseId.eq(case))
        .into_tuple()
        .one(tx)
        .await?;
    Ok(max.flatten().unwrap_or(0))
}

/// Posts entries to a case's docket, numbered in the order given, in one transaction: all
/// are posted or none.
pub async fn create(
    app: &App,
    p: &Principal,
    case_id: CaseId,
    inputs: Vec<CreateEntry>,
) -> ApiResult<Vec<DocketEntryView>> {
    if inputs.is_empty() || inputs.len() > MAX_BATCH {
        return Err(ApiError::field("entries", format!("post between 1 and {MAX_BATCH} entries")));
    }
    let today = clock::now().date_naive();
    let single = inputs.len() == 1;
    let cleaned: Vec<Clean> = {
        let mut out = Vec::with_capacity(inputs.len());
        let mut errors = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            match clean(input, today, (!single).then_some(i)) {
                Ok(c) => out.push(c),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            let fields: Vec<serde_json::Value> = errors
                .into_iter()
                .filter_map(|e| e.details.and_then(|d| d.get("fields").cloned()))
                .flat_map(|f| f.as_array().cloned().unwrap_or_default())
                .collect();
            let message = format!("{} fields are invalid", fields.len());
            return Err(ApiError::new(ErrorCode::ValidationFailed, message)
                .with_details(serde_json::json!({ "fields": fields })));
        }
        out
    };
    let cleaned = &cleaned;
    let views = app
        .write(TxOptions::write(), |tx| async move {
            let tx = &tx;
            lock_case(tx, p, case_id.0).await?;
            let access = visible_case(tx, p, case_id).await?.with_sealed_grant(tx).await?;
            access.require_edit()?;
            if cleaned.iter().any(|c| c.sealed) && !access.sees_sealed() {
                return Err(ApiError::forbidden(
                    "only an admin, or a user an admin granted sealed access on this case, may post sealed entries",
                ));
            }
            let mut next = last_number(tx, case_id.0).await?;
            let now = clock::now();
            let models: Vec<entry::Model> = cleaned
                .iter()
                .map(|c| {
                    next += 1;
                    entry::Model {
                        id: Uuid::now_v7(),
                        firm_id: p.firm_id.0,
                        case_id: case_id.0,
                        sequence_number: next,
                        entry_date: c.entry_date,
                        filed_at: c.filed_at,
                        entry_type: c.entry_type,
                        description: c.description.clone(),
                        text: c.text.clone(),
                        filed_by: c.filed_by.clone(),
                        document_number: c.document_number.clone(),
                        sealed: c.sealed,
                        ever_sealed: c.sealed,
                        restricted: c.restricted,
                        ever_restricted: c.restricted,
                        version: 1,
                        created_by: p.user_id.0,
                        created_at: now,
                        updated_at: now,
                        deleted_at: None,
                    }
                })
                .collect();
            let rows: Vec<Vec<Cell>> = models.iter().map(row).collect();
            insert_rows(tx, &TABLE, &rows).await?;
            let actor = Actor::user(p);
            let mut events = Vec::with_capacity(models.len());
            let mut views = Vec::with_capacity(models.len());
            for m in models {
                let flags = (m.ever_sealed, m.ever_restricted);
                let v = DocketEntryView::from(m);
                let json = audit::json(&v);
                events.push(
                    AuditEvent::new("docket.create", "docket_entry", Some(v.id.to_string()))
                        .case(case_id.0)
                        .created_fields(&json),
                );
                tx.record(
                    DomainEvent::new(EventType::DocketEntryCreated, p.firm_id, &actor, v.id)
                        .case(case_id.0)
                        .data(json)
                        .confidential(flags.0, flags.1),
                );
                views.push(v);
            }
            audit::record_many(tx, p.firm_id, &actor, events).await?;
            Ok(views)
        })
        .await?;
    Ok(views)
}

fn visible_entries(access: &CaseAccess) -> sea_orm::Select<entry::Entity> {
    let mut q = entry::Entity::find()
        .filter(entry::Column::CaseId.eq(access.case.id))
        .filter(entry::Column::DeletedAt.is_null());
    if !access.sees_sealed() {
        q = q.filter(entry::Column::Sealed.eq(false));
    }
    if !access.sees_restricted() {
        q = q.filter(entry::Column::Restricted.eq(false));
    }
    q
}

/// An audit entry's `entity_id` as the uuid it names when its entity type is `entity_type`
/// (NULL otherwise), to compare with a table's id: SQLite stores a uuid as its 16 bytes.
fn audit_entity_uuid(backend: DbBackend, entity_type: &'static str) -> String {
    match backend {
        DbBackend::Postgres => format!(
            r#"CASE WHEN "audit_entries"."entity_type" = '{entity_type}' THEN CAST("audit_entries"."entity_id" AS uuid) END"#
        ),
        _ => format!(
            r#"CASE WHEN "audit_entries"."entity_type" = '{entity_type}' THEN unhex(replace("audit_entries"."entity_id", '-', '')) END"#
        ),
    }
}

/// A condition on `audit_entries` rows that leaves out the history of the entries of
/// `access`'s case its caller may not see; None when they see them all. Entries sealed or
/// restricted before and lifted since keep their history hidden: it may hold what was
/// withheld before the lifting.
///
/// It is a correlated `NOT EXISTS` that probes each history row's entry by primary key, so no
/// list of ids is read or bound, however many entries are hidden. The entity id is text in the
/// audit trail; it is turned into an id only for rows of the probed entity type (under `CASE`,
/// so no other entity's id is ever cast). Deadlines computed from hidden entries and sealed or
/// restricted documents are left out the same way.
pub fn hidden_history(backend: DbBackend, access: &CaseAccess) -> Option<SimpleExpr> {
    if access.sees_sealed() && access.sees_restricted() {
        return None;
    }
    let column = |c: entry::Column| Expr::col((entry::Entity, c));
    let mut hidden = Condition::any();
    if !access.sees_sealed() {
        hidden = hidden.add(column(entry::Column::Sealed).eq(true)).add(column(entry::Column::EverSealed).eq(true));
    }
    if !access.sees_restricted() {
        hidden =
            hidden.add(column(entry::Column::Restricted).eq(true)).add(column(entry::Column::EverRestricted).eq(true));
    }
    let entry_id = audit_entity_uuid(backend, "docket_entry");
    let probe = Query::select()
        .expr(Expr::val(1))
        .from(entry::Entity)
        .and_where(column(entry::Column::Id).eq(Expr::cust(entry_id)))
        .and_where(column(entry::Column::CaseId).eq(access.case.id))
        .cond_where(hidden.clone())
        .to_owned();
    // The history of calendar events computed from (tied to) those entries is hidden with them.
    use crate::calendar::model::event as cal;
    let event_id = audit_entity_uuid(backend, "calendar_event");
    let hidden_entries = Query::select()
        .column((entry::Entity, entry::Column::Id))
        .from(entry::Entity)
        .and_where(column(entry::Column::CaseId).eq(access.case.id))
        .cond_where(hidden)
        .to_owned();
    let event_probe = Query::select()
        .expr(Expr::val(1))
        .from(cal::Entity)
        .and_where(Expr::col((cal::Entity, cal::Column::Id)).eq(Expr::cust(event_id)))
        .and_where(Expr::col((cal::Entity, cal::Column::DocketEntryId)).in_subquery(hidden_entries))
        .to_owned();
    // And the history of the case's sealed (restricted) documents: their flags never change.
    use crate::documents::model::document as doc;
    let doc_id = audit_entity_uuid(backend, "document");
    let mut hidden_docs = Condition::any();
    if !access.sees_sealed() {
        hidden_docs = hidden_docs.add(Expr::col((doc::Entity, doc::Column::Sealed)).eq(true));
    }
    if !access.sees_restricted() {
        hidden_docs = hidden_docs.add(Expr::col((doc::Entity, doc::Column::Restricted)).eq(true));
    }
    let doc_probe = Query::select()
        .expr(Expr::val(1))
        .from(doc::Entity)
        .and_where(Expr::col((doc::Entity, doc::Column::Id)).eq(Expr::cust(doc_id)))
        .and_where(Expr::col((doc::Entity, doc::Column::CaseId)).eq(access.case.id))
        .cond_where(hidden_docs)
        .to_owned();
    Some(Expr::exists(probe).not().and(Expr::exists(event_probe).not()).and(Expr::exists(doc_probe).not()))
}

/// An entry sealed or restricted after it was filed: its earlier events in the outbox (and
/// those of deadlines computed from it) become sealed or restricted too, so that a realtime
/// replay (`since`, `lastSeq`) does not send what the entry held to those who may no longer
/// see it; and the webhook deliveries made of them are withheld: their stored copy replaced
/// by [`crate::webhooks::WITHHELD`] (the deliveries list shows it to `webhooks:manage` keys,
/// which see no sealed material), pending and retrying ones cancelled, redelivery refused.
/// Flags are only ever turned on, as the entry's `ever_*` flags are.
async fn confide_past_events(
    tx: &crate::db::Tx,
    p: &Principal,
    entry_id: Uuid,
    (sealed, restricted): (bool, bool),
) -> ApiResult<()> {
    use crate::calendar::model::event as calendar_event;
    let mut ids = vec![("docket_entry", entry_id.to_string())];
    let deadlines: Vec<Uuid> = calendar_event::Entity::find()
        .select_only()
        .column(calendar_event::Column::Id)
        .filter(calendar_event::Column::FirmId.eq(p.firm_id.0))
        .filter(calendar_event::Column::DocketEntryId.eq(entry_id))
        .into_tuple()
        .all(tx)
        .await?;
    ids.extend(deadlines.into_iter().map(|d| ("calendar_event", d.to_string())));
    let backend = tx.get_database_backend();
    if backend == DbBackend::Postgres {
        // The webhook dispatcher holds this row while it turns events into deliveries: wait for
        // a batch in flight to commit, so that its deliveries are withheld below too.
        tx.execute_raw(crate::db::portable(
            backend,
            "SELECT 1 FROM webhook_cursors WHERE firm_id = ? FOR UPDATE",
            vec![p.firm_id.0.into()],
        ))
        .await?;
    }
    // No index serves these lookups: the events are found in the firm's part of the outbox (a
    // week by default, `EVENTS_RETENTION_DAYS`), the deliveries by a scan (a deleted
    // subscription's are withheld too). Every write would pay for an index; sealing is rare.
    for (kind, id) in ids {
        tx.execute_raw(crate::db::portable(
            backend,
            "UPDATE webhook_deliveries SET payload = ?,
                 status = CASE WHEN status IN ('pending', 'retrying') THEN 'cancelled' ELSE status END,
                 last_error = CASE WHEN status IN ('pending', 'retrying') THEN ? ELSE last_error END
             WHERE firm_id = ? AND event_id IN
                 (SELECT id FROM domain_events WHERE firm_id = ? AND entity_type = ? AND entity_id = ?)",
            vec![
                crate::webhooks::WITHHELD.into(),
                "withheld: the entry was sealed or restricted after this was queued".into(),
                p.firm_id.0.into(),
                p.firm_id.0.into(),
                kind.into(),
                id.clone().into(),
            ],
        ))
        .await?;
        tx.execute_raw(crate::db::portable(
            backend,
            "UPDATE domain_events SET sealed = (sealed OR ?), restricted = (restricted OR ?)
             WHERE firm_id = ? AND entity_type = ? AND entity_id = ?",
            vec![sealed.into(), restricted.into(), p.firm_id.0.into(), kind.into(), id.into()],
        ))
        .await?;
    }
    Ok(())
}

/// A page of the docket, in sequence order; entries the caller may not see are not there,
/// and not counted.
pub async fn list(
    app: &App,
    p: &Principal,
    case_id: CaseId,
    page: u64,
    limit: u64,
) -> ApiResult<(Vec<DocketEntryView>, Pagination)> {
    let access = visible_case_cached(app, p, case_id).await?.with_sealed_grant(&app.db).await?;
    let total = visible_entries(&access).count(&app.db).await?;
    let rows = visible_entries(&access)
        .order_by_asc(entry::Column::SequenceNumber)
        .offset((page - 1) * limit)
        .limit(limit)
        .all(&app.db)
        .await?;
    let total_pages = total.div_ceil(limit);
    Ok((
        rows.into_iter().map(DocketEntryView::from).collect(),
        Pagination::Offset(OffsetPagination { page, limit, total, total_pages, has_next: page < total_pages }),
    ))
}

async fn find(db: &impl ConnectionTrait, access: &CaseAccess, id: DocketEntryId) -> ApiResult<entry::Model> {
    visible_entries(access)
        .filter(entry::Column::Id.eq(id.0))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found("docket entry"))
}

/// One entry (404 when it is sealed or restricted from the caller).
pub async fn get(app: &App, p: &Principal, case_id: CaseId, id: DocketEntryId) -> ApiResult<DocketEntryView> {
    let access = visible_case_cached(app, p, case_id).await?.with_sealed_grant(&app.db).await?;
    Ok(find(&app.db, &access, id).await?.into())
}

fn stale(current: i32) -> ApiError {
    ApiError::new(ErrorCode::PreconditionFailed, "the docket entry has changed since you read it; re-read and retry")
        .with_details(serde_json::json!({ "currentVersion": current }))
}

/// Changes an entry, guarded by its version. Its number never changes.
pub async fn update(
    app: &App,
    p: &Principal,
    case_id: CaseId,
    id: DocketEntryId,
    input: UpdateEntry,
    if_match: Option<i32>,
) -> ApiResult<DocketEntryView> {
    let input = &input;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let access = visible_case(tx, p, case_id).await?.with_sealed_grant(tx).await?;
        access.require_edit()?;
        let current = find(tx, &access, id).await?;
        if input.sealed.is_some_and(|s| s != current.sealed) && !access.sees_sealed() {
            return Err(ApiError::forbidden(
                "only an admin, or a user an admin granted sealed access on this case, may seal or unseal entries",
            ));
        }
        let expected = if_match.or(input.version).unwrap_or(current.version);
        if expected != current.version {
            return Err(stale(current.version));
        }
        let mut f = Fields::default();
        if input.entry_date.is_some_and(|d| !clock::date_in_range(d)) {
            f.error("entryDate", "must be in the years 1 to 9999");
        }
        if input.filed_at.flatten().is_some_and(|t| !clock::in_range(t)) {
            f.error("filedAt", "must be in the years 1 to 9999");
        }
        let mut q = entry::Entity::update_many();
        if let Some(v) = input.entry_date {
            q = q.col_expr(entry::Column::EntryDate, Expr::value(v));
        }
        if let Some(v) = input.filed_at {
            q = q.col_expr(entry::Column::FiledAt, Expr::value(v.map(clock::stored)));
        }
        if let Some(v) = input.entry_type {
            q = q.col_expr(entry::Column::EntryType, Expr::value(v));
        }
        if let Some(v) = &input.description {
            q = q.col_expr(entry::Column::Description, Expr::value(f.text("description", v, MAX_DESCRIPTION)));
        }
        if let Some(v) = &input.text {
            q = q.col_expr(entry::Column::Text, Expr::value(f.opt_rich("text", v.as_deref(), MAX_RICH)));
        }
        for (column, field, value) in [
            (entry::Column::FiledBy, "filedBy", &input.filed_by),
            (entry::Column::DocumentNumber, "documentNumber", &input.document_number),
        ] {
            if let Some(v) = value {
                q = q.col_expr(column, Expr::value(f.opt_text(field, v.as_deref(), MAX_SHORT)));
            }
        }
        if let Some(v) = input.sealed {
            q = q.col_expr(entry::Column::Sealed, Expr::value(v));
            if v {
                q = q.col_expr(entry::Column::EverSealed, Expr::value(true));
            }
        }
        if let Some(v) = input.restricted {
            q = q.col_expr(entry::Column::Restricted, Expr::value(v));
            if v {
                q = q.col_expr(entry::Column::EverRestricted, Expr::value(true));
            }
        }
        f.finish()?;
        let n = q
            .col_expr(entry::Column::Version, Expr::col(entry::Column::Version).add(1))
            .col_expr(entry::Column::UpdatedAt, Expr::value(clock::now()))
            .filter(entry::Column::Id.eq(id.0))
            .filter(entry::Column::Version.eq(expected))
            .exec(tx)
            .await?
            .rows_affected;
        if n != 1 {
            return Err(stale(current.version));
        }
        let updated =
            entry::Entity::find_by_id(id.0).one(tx).await?.ok_or_else(|| ApiError::not_found("docket entry"))?;
        // Deadlines computed from this entry follow its date (audited as their own changes).
        if updated.entry_date != current.entry_date {
            crate::calendar::court::entry_moved(tx, p, id.0, updated.entry_date).await?;
        }
        let flags = (updated.ever_sealed, updated.ever_restricted);
        if (flags.0 && !current.ever_sealed) || (flags.1 && !current.ever_restricted) {
            confide_past_events(tx, p, id.0, flags).await?;
        }
        let view = DocketEntryView::from(updated);
        let (actor, json) = (Actor::user(p), audit::json(&view));
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("docket.update", "docket_entry", Some(id.to_string()))
                .case(case_id.0)
                .changes(audit::diff(&audit::json(&DocketEntryView::from(current.clone())), &json)),
        )
        .await?;
        tx.record(
            DomainEvent::new(EventType::DocketEntryUpdated, p.firm_id, &actor, id)
                .case(case_id.0)
                .data(json)
                .confidential(flags.0, flags.1),
        );
        Ok(view)
    })
    .await
}

/// Strikes an entry: it leaves the docket but keeps its row and number for the record.
pub async fn delete(
    app: &App,
    p: &Principal,
    case_id: CaseId,
    id: DocketEntryId,
    if_match: Option<i32>,
) -> ApiResult<()> {
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let access = visible_case(tx, p, case_id).await?.with_sealed_grant(tx).await?;
        access.require_edit()?;
        let current = find(tx, &access, id).await?;
        let expected = if_match.unwrap_or(current.version);
        let n = entry::Entity::update_many()
            .col_expr(entry::Column::DeletedAt, Expr::value(clock::now()))
            .col_expr(entry::Column::Version, Expr::col(entry::Column::Version).add(1))
            .filter(entry::Column::Id.eq(id.0))
            .filter(entry::Column::Version.eq(expected))
            .exec(tx)
            .await?
            .rows_affected;
        if n != 1 {
            return Err(stale(current.version));
        }
        let change = serde_json::json!({ "deleted": { "old": false, "new": true } });
        let actor = Actor::user(p);
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("docket.delete", "docket_entry", Some(id.to_string())).case(case_id.0).changes(change),
        )
        .await?;
        tx.record(
            DomainEvent::new(EventType::DocketEntryDeleted, p.firm_id, &actor, id)
                .case(case_id.0)
                .data(serde_json::json!({ "id": id, "caseId": case_id, "sequenceNumber": current.sequence_number }))
                .confidential(current.ever_sealed, current.ever_restricted),
        );
        Ok(())
    })
    .await
}
