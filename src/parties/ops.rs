//! Party operations, always through a case the caller can see.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{self as party, PartyKind, PartyType};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    cases::{
        access::{visible_case, visible_case_cached},
        bulk::{BulkMode, BulkResult, MAX_ITEMS},
    },
    clock,
    db::{
        TxOptions,
        bulk::{Cell, Table, col, insert_rows},
    },
    events::{DomainEvent, EventType},
    http::error::{ApiError, ApiResult, ErrorCode},
    ids::{CaseId, PartyId},
    input::Fields,
    paging::{OffsetPagination, Pagination},
};

const MAX_SHORT: usize = 300;
const MAX_RICH: usize = 100_000;

/// A party as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartyView {
    pub id: PartyId,
    pub case_id: CaseId,
    pub name: String,
    pub kind: PartyKind,
    #[serde(rename = "type")]
    pub party_type: PartyType,
    pub role: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub website: Option<String>,
    pub counsel: Option<String>,
    /// Rich text (an HTML allowlist).
    pub notes: Option<String>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<party::Model> for PartyView {
    fn from(m: party::Model) -> Self {
        Self {
            id: PartyId(m.id),
            case_id: CaseId(m.case_id),
            name: m.name,
            kind: m.kind,
            party_type: m.party_type,
            role: m.role,
            email: m.email,
            phone: m.phone,
            address: m.address,
            website: m.website,
            counsel: m.counsel,
            notes: m.notes,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// `POST /cases/{id}/parties` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateParty {
    pub name: String,
    pub kind: PartyKind,
    #[serde(rename = "type")]
    pub party_type: PartyType,
    pub role: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: Option<String>,
    /// http(s) only.
    pub website: Option<String>,
    pub counsel: Option<String>,
    pub notes: Option<String>,
}

/// `PATCH /cases/{id}/parties/{partyId}` body: absent fields stay, `null` clears.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateParty {
    pub name: Option<String>,
    pub kind: Option<PartyKind>,
    #[serde(rename = "type")]
    pub party_type: Option<PartyType>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub role: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub address: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub website: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub counsel: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub notes: Option<Option<String>>,
    pub version: Option<i32>,
}

/// Checks and cleans a new party's fields and builds its row.
fn build(input: CreateParty, p: &Principal, case_id: CaseId, now: DateTime<Utc>) -> ApiResult<party::Model> {
    let mut f = Fields::default();
    let name = f.text("name", &input.name, MAX_SHORT);
    let role = f.opt_text("role", input.role.as_deref(), MAX_SHORT);
    let email = f.opt_email("email", input.email.as_deref());
    let phone = f.opt_text("phone", input.phone.as_deref(), 50);
    let address = f.opt_text("address", input.address.as_deref(), 1000);
    let website = f.opt_url("website", input.website.as_deref());
    let counsel = f.opt_text("counsel", input.counsel.as_deref(), MAX_SHORT);
    let notes = f.opt_rich("notes", input.notes.as_deref(), MAX_RICH);
    f.finish()?;
    Ok(party::Model {
        id: Uuid::now_v7(),
        firm_id: p.firm_id.0,
        case_id: case_id.0,
        name,
        kind: input.kind,
        party_type: input.party_type,
        role,
        email,
        phone,
        address,
        website,
        counsel,
        notes,
        version: 1,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    })
}

/// Adds a party to a case the caller may change.
pub async fn create(app: &App, p: &Principal, case_id: CaseId, input: CreateParty) -> ApiResult<PartyView> {
    let m = build(input, p, case_id, clock::now())?;
    let m = &m;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        visible_case(tx, p, case_id).await?.require_edit()?;
        let m = party::ActiveModel::from(m.clone()).insert(tx).await?;
        let view = PartyView::from(m);
        let (actor, json) = (Actor::user(p), audit::json(&view));
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("party.create", "party", Some(view.id.to_string())).case(case_id.0).created_fields(&json),
        )
        .await?;
        tx.record(DomainEvent::new(EventType::PartyCreated, p.firm_id, &actor, view.id).case(case_id.0).data(json));
        Ok(view)
    })
    .await
}

const TABLE: Table = Table {
    name: "parties",
    columns: &[
        col("id", "uuid"),
        col("firm_id", "uuid"),
        col("case_id", "uuid"),
        col("name", "text"),
        col("kind", "text"),
        col("party_type", "text"),
        col("role", "text"),
        col("email", "text"),
        col("phone", "text"),
        col("address", "text"),
        col("website", "text"),
        col("counsel", "text"),
        col("notes", "text"),
        col("version", "int4"),
        col("created_at", "timestamptz"),
        col("updated_at", "timestamptz"),
        col("deleted_at", "timestamptz"),
    ],
};

fn row(m: &party::Model) -> Vec<Cell> {
    let text = |v: serde_json::Value| Cell::from(v.as_str().unwrap_or_default());
    vec![
        m.id.into(),
        m.firm_id.into(),
        m.case_id.into(),
        m.name.clone().into(),
        text(audit::json(&m.kind)),
        text(audit::json(&m.party_type)),
        m.role.clone().into(),
        m.email.clone().into(),
        m.phone.clone().into(),
        m.address.clone().into(),
        m.website.clone().into(),
        m.counsel.clone().into(),
        m.notes.clone().into(),
        m.version.into(),
        m.created_at.into(),
        m.updated_at.into(),
        m.deleted_at.into(),
    ]
}

/// Adds many parties to one case: `atomic` (all or none) or `partial` (invalid items are
/// reported, the valid ones added). Every party added is audited in the same transaction.
pub async fn create_many(
    app: &App,
    p: &Principal,
    case_id: CaseId,
    items: Vec<Result<CreateParty, ApiError>>,
    mode: BulkMode,
) -> ApiResult<BulkResult> {
    if items.len() > MAX_ITEMS {
        return Err(ApiError::field("items", format!("at most {MAX_ITEMS} items per request")));
    }
    create_across(app, p, items.into_iter().map(|i| i.map(|c| (case_id, c))).collect(), mode).await
}

/// Adds parties to any cases of the firm the caller may change (the CSV import), in one
/// transaction. An item for a case the caller cannot see or change fails like an invalid one.
pub async fn create_across(
    app: &App,
    p: &Principal,
    items: Vec<Result<(CaseId, CreateParty), ApiError>>,
    mode: BulkMode,
) -> ApiResult<BulkResult> {
    let now = clock::now();
    let mut result = BulkResult::new(items.len());
    let mut models = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item.and_then(|(case_id, c)| build(c, p, case_id, now)) {
            Ok(m) => models.push((i, m)),
            Err(e) => result.fail(i, &e),
        }
    }
    let result = result.refuse_if_atomic(mode)?;
    let (models, base) = (&models, &result);
    let result = app
        .write(TxOptions::write(), |tx| async move {
            let tx = &tx;
            let mut result = base.clone();
            let mut allowed: std::collections::HashMap<Uuid, Option<ApiError>> = std::collections::HashMap::new();
            for (_, m) in models {
                if let std::collections::hash_map::Entry::Vacant(slot) = allowed.entry(m.case_id) {
                    let check = match visible_case(tx, p, CaseId(m.case_id)).await {
                        Ok(a) => a.require_edit().err(),
                        Err(e) => Some(e),
                    };
                    slot.insert(check);
                }
            }
            let mut rows = Vec::with_capacity(models.len());
            let mut events = Vec::with_capacity(models.len());
            let mut changes = Vec::with_capacity(models.len());
            let actor = Actor::user(p);
            for (i, m) in models {
                if let Some(Some(e)) = allowed.get(&m.case_id) {
                    result.fail(*i, e);
                    continue;
                }
                rows.push(row(m));
                let json = audit::json(&PartyView::from(m.clone()));
                events.push(
                    AuditEvent::new("party.bulk_create", "party", Some(m.id.to_string()))
                        .case(m.case_id)
                        .created_fields(&json),
                );
                changes.push(
                    DomainEvent::new(EventType::PartyCreated, p.firm_id, &actor, m.id).case(m.case_id).data(json),
                );
                result.ids[*i] = Some(m.id);
                result.succeeded += 1;
            }
            let result = result.refuse_if_atomic(mode)?;
            insert_rows(tx, &TABLE, &rows).await?;
            audit::record_many(tx, p.firm_id, &actor, events).await?;
            tx.record_all(changes);
            Ok(result)
        })
        .await?;
    let n = result.succeeded;
    crate::db::bulk::analyze_grown(&app.db, &[("parties", n), ("audit_entries", n), ("domain_events", n)]);
    Ok(result.finish())
}

fn live(case_id: CaseId) -> sea_orm::Select<party::Entity> {
    party::Entity::find().filter(party::Column::CaseId.eq(case_id.0)).filter(party::Column::DeletedAt.is_null())
}

/// The parties of a case the caller can see, oldest first.
pub async fn list(
    app: &App,
    p: &Principal,
    case_id: CaseId,
    page: u64,
    limit: u64,
) -> ApiResult<(Vec<PartyView>, Pagination)> {
    visible_case_cached(app, p, case_id).await?;
    let total = live(case_id).count(&app.db).await?;
    let rows =
        live(case_id).order_by_asc(party::Column::Id).offset((page - 1) * limit).limit(limit).all(&app.db).await?;
    let total_pages = total.div_ceil(limit);
    Ok((
        rows.into_iter().map(PartyView::from).collect(),
        Pagination::Offset(OffsetPagination { page, limit, total, total_pages, has_next: page < total_pages }),
    ))
}

async fn find(db: &impl sea_orm::ConnectionTrait, case_id: CaseId, id: PartyId) -> ApiResult<party::Model> {
    live(case_id).filter(party::Column::Id.eq(id.0)).one(db).await?.ok_or_else(|| ApiError::not_found("party"))
}

/// One party.
pub async fn get(app: &App, p: &Principal, case_id: CaseId, id: PartyId) -> ApiResult<PartyView> {
    visible_case_cached(app, p, case_id).await?;
    Ok(find(&app.db, case_id, id).await?.into())
}

fn stale(current: i32) -> ApiError {
    ApiError::new(ErrorCode::PreconditionFailed, "the party has changed since you read it; re-read and retry")
        .with_details(serde_json::json!({ "currentVersion": current }))
}

/// Changes a party, guarded by its version.
pub async fn update(
    app: &App,
    p: &Principal,
    case_id: CaseId,
    id: PartyId,
    input: UpdateParty,
    if_match: Option<i32>,
) -> ApiResult<PartyView> {
    let input = &input;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        visible_case(tx, p, case_id).await?.require_edit()?;
        let current = find(tx, case_id, id).await?;
        let expected = if_match.or(input.version).unwrap_or(current.version);
        if expected != current.version {
            return Err(stale(current.version));
        }
        let mut f = Fields::default();
        let mut q = party::Entity::update_many();
        if let Some(v) = &input.name {
            q = q.col_expr(party::Column::Name, Expr::value(f.text("name", v, MAX_SHORT)));
        }
        if let Some(v) = input.kind {
            q = q.col_expr(party::Column::Kind, Expr::value(v));
        }
        if let Some(v) = input.party_type {
            q = q.col_expr(party::Column::PartyType, Expr::value(v));
        }
        for (col, field, value, max) in [
            (party::Column::Role, "role", &input.role, MAX_SHORT),
            (party::Column::Phone, "phone", &input.phone, 50),
            (party::Column::Address, "address", &input.address, 1000),
            (party::Column::Counsel, "counsel", &input.counsel, MAX_SHORT),
        ] {
            if let Some(v) = value {
                q = q.col_expr(col, Expr::value(f.opt_text(field, v.as_deref(), max)));
            }
        }
        if let Some(v) = &input.email {
            q = q.col_expr(party::Column::Email, Expr::value(f.opt_email("email", v.as_deref())));
        }
        if let Some(v) = &input.website {
            q = q.col_expr(party::Column::Website, Expr::value(f.opt_url("website", v.as_deref())));
        }
        if let Some(v) = &input.notes {
            q = q.col_expr(party::Column::Notes, Expr::value(f.opt_rich("notes", v.as_deref(), MAX_RICH)));
        }
        f.finish()?;
        let n = q
            .col_expr(party::Column::Version, Expr::col(party::Column::Version).add(1))
            .col_expr(party::Column::UpdatedAt, Expr::value(clock::now()))
            .filter(party::Column::Id.eq(id.0))
            .filter(party::Column::Version.eq(expected))
            .exec(tx)
            .await?
            .rows_affected;
        if n != 1 {
            return Err(stale(current.version));
        }
        let updated = find(tx, case_id, id).await?;
        let view = PartyView::from(updated);
        let (actor, json) = (Actor::user(p), audit::json(&view));
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("party.update", "party", Some(id.to_string()))
                .case(case_id.0)
                .changes(audit::diff(&audit::json(&PartyView::from(current.clone())), &json)),
        )
        .await?;
        tx.record(DomainEvent::new(EventType::PartyUpdated, p.firm_id, &actor, id).case(case_id.0).data(json));
        Ok(view)
    })
    .await
}

/// Removes a party from the case (soft: the row stays for the record).
pub async fn delete(app: &App, p: &Principal, case_id: CaseId, id: PartyId, if_match: Option<i32>) -> ApiResult<()> {
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        visible_case(tx, p, case_id).await?.require_edit()?;
        let current = find(tx, case_id, id).await?;
        let expected = if_match.unwrap_or(current.version);
        let n = party::Entity::update_many()
            .col_expr(party::Column::DeletedAt, Expr::value(clock::now()))
            .col_expr(party::Column::Version, Expr::col(party::Column::Version).add(1))
            .filter(party::Column::Id.eq(id.0))
            .filter(party::Column::Version.eq(expected))
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
            AuditEvent::new("party.delete", "party", Some(id.to_string())).case(case_id.0).changes(change),
        )
        .await?;
        tx.record(
            DomainEvent::new(EventType::PartyDeleted, p.firm_id, &actor, id)
                .case(case_id.0)
                .data(serde_json::json!({ "id": id, "caseId": case_id })),
        );
        Ok(())
    })
    .await
}
