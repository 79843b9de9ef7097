//! Case operations: open, read, list, change and (soft) delete.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, Order, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Select, Set,
    sea_query::{Expr, ExprTrait, Func, LikeExpr, Query, SimpleExpr},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    access::{CaseAccess, visible_case, visible_case_cached},
    model::{CaseStatus, CaseType, TeamRole, case, team_member},
};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    cache::{Key, tags},
    clock,
    db::{Tx, TxOptions},
    events::{DomainEvent, EventType},
    http::{
        error::{ApiError, ApiResult, ErrorCode},
        pagination::{Cursor, PageRequest},
    },
    ids::{CaseId, UserId},
    input::Fields,
    paging::{CursorPagination, OffsetPagination, Pagination},
    users::{model::Role, ops::active_in_firm},
};

const MAX_CASE_NUMBER: usize = 64;
const MAX_TITLE: usize = 500;
const MAX_SHORT: usize = 200;
const MAX_RICH: usize = 100_000;

/// A case as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseView {
    pub id: CaseId,
    pub case_number: String,
    pub title: String,
    #[serde(rename = "type")]
    pub case_type: CaseType,
    pub status: CaseStatus,
    /// Rich text (an HTML allowlist).
    pub description: Option<String>,
    pub court: Option<String>,
    pub jurisdiction: Option<String>,
    pub judge: Option<String>,
    pub filed_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub client_name: Option<String>,
    pub lead_attorney_id: Option<UserId>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<case::Model> for CaseView {
    fn from(c: case::Model) -> Self {
        Self {
            id: CaseId(c.id),
            case_number: c.case_number,
            title: c.title,
            case_type: c.case_type,
            status: c.status,
            description: c.description,
            court: c.court,
            jurisdiction: c.jurisdiction,
            judge: c.judge,
            filed_at: c.filed_at,
            closed_at: c.closed_at,
            client_name: c.client_name,
            lead_attorney_id: c.lead_attorney_id.map(UserId),
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// `POST /cases` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCase {
    pub case_number: String,
    pub title: String,
    #[serde(rename = "type")]
    pub case_type: CaseType,
    /// Defaults to `open`.
    pub status: Option<CaseStatus>,
    pub description: Option<String>,
    pub court: Option<String>,
    pub jurisdiction: Option<String>,
    pub judge: Option<String>,
    pub filed_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub client_name: Option<String>,
    /// Must be an active admin, partner or attorney of the firm; joins the team as lead.
    pub lead_attorney_id: Option<UserId>,
}

/// `PATCH /cases/{id}` body: absent fields stay, `null` clears a nullable field.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateCase {
    pub case_number: Option<String>,
    pub title: Option<String>,
    #[serde(rename = "type")]
    pub case_type: Option<CaseType>,
    pub status: Option<CaseStatus>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub court: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub jurisdiction: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub judge: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub filed_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub closed_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub client_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub lead_attorney_id: Option<Option<UserId>>,
    /// The version last read; a stale one is refused with 412 (as is a stale `If-Match`).
    pub version: Option<i32>,
}

fn check_dates(f: &mut Fields, filed: Option<DateTime<Utc>>, closed: Option<DateTime<Utc>>) {
    for (field, t) in [("filedAt", filed), ("closedAt", closed)] {
        if t.is_some_and(|t| !clock::in_range(t)) {
            f.error(field, "must be in the years 1 to 9999");
        }
    }
    if let (Some(a), Some(b)) = (filed, closed)
        && b < a
    {
        f.error("closedAt", "must not be before filedAt");
    }
}

/// A validated, cleaned [`CreateCase`].
#[derive(Clone, Debug)]
pub struct NewCase {
    pub case_number: String,
    pub title: String,
    pub case_type: CaseType,
    pub status: CaseStatus,
    pub description: Option<String>,
    pub court: Option<String>,
    pub jurisdiction: Option<String>,
    pub judge: Option<String>,
    pub filed_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub client_name: Option<String>,
    pub lead_attorney_id: Option<UserId>,
    /// Which optional fields the input carried (an upsert changes only those).
    pub given: Given,
}

/// Which optional fields of a [`CreateCase`] were present.
#[derive(Clone, Copy, Debug, Default)]
pub struct Given {
    pub status: bool,
    pub description: bool,
    pub court: bool,
    pub jurisdiction: bool,
    pub judge: bool,
    pub filed_at: bool,
    pub closed_at: bool,
    pub client_name: bool,
    pub lead_attorney_id: bool,
}

impl CreateCase {
    /// Checks and cleans every field, naming each invalid one.
    pub fn validate(self) -> ApiResult<NewCase> {
        let input = self;
        let given = Given {
            status: input.status.is_some(),
            description: input.description.is_some(),
            court: input.court.is_some(),
            jurisdiction: input.jurisdiction.is_some(),
            judge: input.judge.is_some(),
            filed_at: input.filed_at.is_some(),
            closed_at: input.closed_at.is_some(),
            client_name: input.client_name.is_some(),
            lead_attorney_id: input.lead_attorney_id.is_some(),
        };
        let mut f = Fields::default();
        let case_number = f.text("caseNumber", &input.case_number, MAX_CASE_NUMBER);
        let title = f.text("title", &input.title, MAX_TITLE);
        let description = f.opt_rich("description", input.description.as_deref(), MAX_RICH);
        let court = f.opt_text("court", input.court.as_deref(), MAX_SHORT);
        let jurisdiction = f.opt_text("jurisdiction", input.jurisdiction.as_deref(), MAX_SHORT);
        let judge = f.opt_text("judge", input.judge.as_deref(), MAX_SHORT);
        let client_name = f.opt_text("clientName", input.client_name.as_deref(), MAX_SHORT);
        let filed_at = input.filed_at.map(clock::stored);
        let closed_at = input.closed_at.map(clock::stored);
        check_dates(&mut f, filed_at, closed_at);
        f.finish()?;
        Ok(NewCase {
            case_number,
            title,
            case_type: input.case_type,
            status: input.status.unwrap_or(CaseStatus::Open),
            description,
            court,
            jurisdiction,
            judge,
            filed_at,
            closed_at,
            client_name,
            lead_attorney_id: input.lead_attorney_id,
            given,
        })
    }
}

/// Opens a case. The creator joins its team; a named lead attorney joins as lead.
pub async fn create(app: &App, p: &Principal, input: CreateCase) -> ApiResult<CaseView> {
    if !p.role.may_create_cases() {
        return Err(ApiError::forbidden("your role may not open cases"));
    }
    let NewCase {
        case_number,
        title,
        case_type,
        status,
        description,
        court,
        jurisdiction,
        judge,
        filed_at,
        closed_at,
        client_name,
        lead_attorney_id,
        given: _,
    } = input.validate()?;

    let now = clock::now();
    let id = Uuid::now_v7();
    let fields = (&case_number, &title, &description, &court, &jurisdiction, &judge, &client_name);
    let view = app
        .write(TxOptions::write(), |tx| async move {
            let (case_number, title, description, court, jurisdiction, judge, client_name) = fields;
            let tx = &tx;
            let lead = match lead_attorney_id {
                Some(uid) => Some(lead_candidate(tx, p, uid).await?),
                None => None,
            };
            let created = case::ActiveModel {
                id: Set(id),
                firm_id: Set(p.firm_id.0),
                case_number: Set(case_number.clone()),
                title: Set(title.clone()),
                case_type: Set(case_type),
                status: Set(status),
                description: Set(description.clone()),
                court: Set(court.clone()),
                jurisdiction: Set(jurisdiction.clone()),
                judge: Set(judge.clone()),
                filed_at: Set(filed_at),
                closed_at: Set(closed_at),
                client_name: Set(client_name.clone()),
                lead_attorney_id: Set(lead),
                version: Set(1),
                created_by: Set(p.user_id.0),
                created_at: Set(now),
                updated_at: Set(now),
                deleted_at: Set(None),
            }
            .insert(tx)
            .await?;
            let creator_role = if lead == Some(p.user_id.0) {
                TeamRole::LeadAttorney
            } else if p.role.may_lead_cases() {
                TeamRole::Attorney
            } else {
                TeamRole::Paralegal
            };
            add_member(tx, p, id, p.user_id.0, creator_role).await?;
            if let Some(l) = lead.filter(|l| *l != p.user_id.0) {
                add_member(tx, p, id, l, TeamRole::LeadAttorney).await?;
            }
            let view = CaseView::from(created);
            let actor = Actor::user(p);
            let json = audit::json(&view);
            audit::record(
                tx,
                p.firm_id,
                &actor,
                AuditEvent::new("case.create", "case", Some(id.to_string())).case(id).created_fields(&json),
            )
            .await?;
            tx.record(DomainEvent::new(EventType::CaseCreated, p.firm_id, &actor, id).case(id).data(json));
            Ok(view)
        })
        .await?;
    Ok(view)
}

/// Checks that a user may lead a case of the caller's firm.
async fn lead_candidate(db: &impl ConnectionTrait, p: &Principal, uid: UserId) -> ApiResult<Uuid> {
    let u = active_in_firm(db, p, uid, "leadAttorneyId").await?;
    if !u.role.may_lead_cases() {
        return Err(ApiError::field("leadAttorneyId", "must be an admin, partner or attorney"));
    }
    Ok(u.id)
}

pub(super) async fn add_member(
    db: &impl ConnectionTrait,
    p: &Principal,
    case_id: Uuid,
    user_id: Uuid,
    role: TeamRole,
) -> ApiResult<()> {
    team_member::ActiveModel {
        case_id: Set(case_id),
        user_id: Set(user_id),
        firm_id: Set(p.firm_id.0),
        role: Set(role),
        added_by: Set(p.user_id.0),
        added_at: Set(clock::now()),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// Makes `new_lead` the case's lead on its team: the previous lead stays as an attorney.
pub(super) async fn set_team_lead(
    db: &impl ConnectionTrait,
    p: &Principal,
    case_id: Uuid,
    new_lead: Option<Uuid>,
) -> ApiResult<()> {
    team_member::Entity::update_many()
        .col_expr(team_member::Column::Role, Expr::value(TeamRole::Attorney))
        .filter(team_member::Column::CaseId.eq(case_id))
        .filter(team_member::Column::Role.eq(TeamRole::LeadAttorney))
        .exec(db)
        .await?;
    if let Some(l) = new_lead {
        let n = team_member::Entity::update_many()
            .col_expr(team_member::Column::Role, Expr::value(TeamRole::LeadAttorney))
            .filter(team_member::Column::CaseId.eq(case_id))
            .filter(team_member::Column::UserId.eq(l))
            .exec(db)
            .await?
            .rows_affected;
        if n == 0 {
            add_member(db, p, case_id, l, TeamRole::LeadAttorney).await?;
        }
    }
    Ok(())
}

/// One case the caller can see.
pub async fn get(app: &App, p: &Principal, id: CaseId) -> ApiResult<CaseView> {
    Ok(visible_case_cached(app, p, id).await?.case.into())
}

/// How a list is sorted: a column and a direction, written `title` or `-title`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaseSort {
    key: SortKey,
    desc: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortKey {
    CreatedAt,
    UpdatedAt,
    CaseNumber,
    Title,
}

impl CaseSort {
    /// Parses `createdAt`, `-updatedAt`, `caseNumber`, `-title`…; default `-createdAt`.
    pub fn parse(s: Option<&str>) -> ApiResult<Self> {
        let s = s.unwrap_or("-createdAt");
        let (desc, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let key = match name {
            "createdAt" => SortKey::CreatedAt,
            "updatedAt" => SortKey::UpdatedAt,
            "caseNumber" => SortKey::CaseNumber,
            "title" => SortKey::Title,
            _ => {
                return Err(ApiError::field(
                    "sort",
                    "use createdAt, updatedAt, caseNumber or title, with - for descending",
                ));
            }
        };
        Ok(Self { key, desc })
    }

    fn name(self) -> String {
        let n = match self.key {
            SortKey::CreatedAt => "createdAt",
            SortKey::UpdatedAt => "updatedAt",
            SortKey::CaseNumber => "caseNumber",
            SortKey::Title => "title",
        };
        if self.desc { format!("-{n}") } else { n.to_owned() }
    }

    fn column(self) -> case::Column {
        match self.key {
            SortKey::CreatedAt => case::Column::CreatedAt,
            SortKey::UpdatedAt => case::Column::UpdatedAt,
            SortKey::CaseNumber => case::Column::CaseNumber,
            SortKey::Title => case::Column::Title,
        }
    }

    fn key_of(self, c: &case::Model) -> String {
        match self.key {
            SortKey::CreatedAt => Cursor::format_time(c.created_at),
            SortKey::UpdatedAt => Cursor::format_time(c.updated_at),
            SortKey::CaseNumber => c.case_number.clone(),
            SortKey::Title => c.title.clone(),
        }
    }

    fn value_of(self, cursor: &Cursor) -> ApiResult<sea_orm::Value> {
        Ok(match self.key {
            SortKey::CreatedAt | SortKey::UpdatedAt => cursor.time_key()?.into(),
            SortKey::CaseNumber | SortKey::Title => cursor.key.clone().into(),
        })
    }
}

/// Filters of `GET /cases`.
#[derive(Debug, Default)]
pub struct CaseFilter {
    pub status: Option<CaseStatus>,
    pub case_type: Option<CaseType>,
    pub q: Option<String>,
}

fn escape_like(s: &str) -> String {
    format!("%{}%", crate::db::like_literal(&s.to_lowercase()))
}

fn lower_like(col: case::Column, pattern: &str) -> SimpleExpr {
    Expr::expr(Func::lower(Expr::col((case::Entity, col)))).like(LikeExpr::new(pattern).escape('\\'))
}

/// The cases the caller can see, filtered.
fn visible(p: &Principal, filter: &CaseFilter) -> Select<case::Entity> {
    let mut q =
        case::Entity::find().filter(case::Column::FirmId.eq(p.firm_id.0)).filter(case::Column::DeletedAt.is_null());
    if !p.role.sees_all_cases() {
        q = q.filter(
            case::Column::Id.in_subquery(
                Query::select()
                    .column(team_member::Column::CaseId)
                    .from(team_member::Entity)
                    .and_where(team_member::Column::UserId.eq(p.user_id.0))
                    .to_owned(),
            ),
        );
    }
    if let Some(s) = filter.status {
        q = q.filter(case::Column::Status.eq(s));
    }
    if let Some(t) = filter.case_type {
        q = q.filter(case::Column::CaseType.eq(t));
    }
    if let Some(text) = filter.q.as_deref().filter(|t| !t.is_empty()) {
        let pattern = escape_like(text);
        q = q.filter(
            Condition::any()
                .add(lower_like(case::Column::Title, &pattern))
                .add(lower_like(case::Column::CaseNumber, &pattern)),
        );
    }
    q
}

/// A page of visible cases, in offset or keyset (cursor) mode.
pub async fn list(
    app: &App,
    p: &Principal,
    filter: CaseFilter,
    sort: CaseSort,
    page: PageRequest,
) -> ApiResult<(Vec<CaseView>, Pagination)> {
    let order = if sort.desc { Order::Desc } else { Order::Asc };
    let q = visible(p, &filter);
    match page {
        PageRequest::Offset { page, limit } => {
            // The count is answered from the partial index of live cases per firm
            // (`ix_cases_firm_live`); a window count in the page query was measured slower on
            // both databases (it materialises every matching row).
            let privileged = p.role.sees_all_cases();
            // A total depends on the firm's cases, the filters and — for callers who see only
            // their teams' cases — on the caller; writes to the firm's cases or teams make it stale.
            let scope = if privileged { "all".to_owned() } else { p.user_id.0.to_string() };
            let text = filter.q.as_deref().map(|q| {
                use sha2::Digest;
                sha2::Sha256::digest(q.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect::<String>()
            });
            let key = Key::new(format!(
                "case-count:{}:{scope}:{}:{}:{}",
                p.firm_id.0,
                filter.status.map_or(-1, |s| s as i16),
                filter.case_type.map_or(-1, |t| t as i16),
                text.unwrap_or_default(),
            ))
            .tag(tags::firm_cases(p.firm_id.0));
            let counting = q.clone();
            let total = app.cache.get_or_set(&key, || async move { counting.count(&app.db).await }).await?;
            let rows = q
                .order_by(sort.column(), order.clone())
                .order_by(case::Column::Id, order)
                .offset((page - 1) * limit)
                .limit(limit)
                .all(&app.db)
                .await?;
            let total_pages = total.div_ceil(limit);
            Ok((
                rows.into_iter().map(CaseView::from).collect(),
                Pagination::Offset(OffsetPagination { page, limit, total, total_pages, has_next: page < total_pages }),
            ))
        }
        PageRequest::Cursor { after, limit } => {
            let mut q = q;
            if let Some(c) = &after {
                let v = sort.value_of(c)?;
                let col = sort.column();
                // Rows strictly after (key, id) in the sort order: the id breaks ties, so
                // rows sharing a key are neither skipped nor repeated.
                let cond = if sort.desc {
                    Condition::any()
                        .add(col.lt(v.clone()))
                        .add(Condition::all().add(col.eq(v)).add(case::Column::Id.lt(c.id)))
                } else {
                    Condition::any()
                        .add(col.gt(v.clone()))
                        .add(Condition::all().add(col.eq(v)).add(case::Column::Id.gt(c.id)))
                };
                q = q.filter(cond);
            }
            let mut rows = q
                .order_by(sort.column(), order.clone())
                .order_by(case::Column::Id, order)
                .limit(limit + 1)
                .all(&app.db)
                .await?;
            let has_more = rows.len() as u64 > limit;
            rows.truncate(limit as usize);
            let next_cursor = has_more
                .then(|| rows.last().map(|r| Cursor { sort: sort.name(), key: sort.key_of(r), id: r.id }.encode()))
                .flatten();
            Ok((
                rows.into_iter().map(CaseView::from).collect(),
                Pagination::Cursor(CursorPagination { limit, next_cursor, has_more }),
            ))
        }
    }
}

fn stale(current: i32) -> ApiError {
    ApiError::new(ErrorCode::PreconditionFailed, "the case has changed since you read it; re-read and retry")
        .with_details(serde_json::json!({ "currentVersion": current }))
}

/// Applies a partial update guarded by the version the client last read.
pub async fn update(
    app: &App,
    p: &Principal,
    id: CaseId,
    input: UpdateCase,
    if_match: Option<i32>,
) -> ApiResult<CaseView> {
    let input = &input;
    app.write(TxOptions::write(), |tx| async move { update_in(&tx, p, id, input, if_match).await }).await
}

/// [`update`] inside the caller's transaction (also used by the bulk operations).
pub(super) async fn update_in(
    tx: &Tx,
    p: &Principal,
    id: CaseId,
    input: &UpdateCase,
    if_match: Option<i32>,
) -> ApiResult<CaseView> {
    let access = visible_case(tx, p, id).await?;
    access.require_edit()?;
    let current = &access.case;
    if let (Some(h), Some(b)) = (if_match, input.version)
        && h != b
    {
        return Err(ApiError::field("version", "differs from If-Match"));
    }
    let expected = if_match.or(input.version).unwrap_or(current.version);
    if expected != current.version {
        return Err(stale(current.version));
    }

    let mut f = Fields::default();
    let mut q = case::Entity::update_many();
    if let Some(v) = &input.case_number {
        q = q.col_expr(case::Column::CaseNumber, Expr::value(f.text("caseNumber", v, MAX_CASE_NUMBER)));
    }
    if let Some(v) = &input.title {
        q = q.col_expr(case::Column::Title, Expr::value(f.text("title", v, MAX_TITLE)));
    }
    if let Some(v) = input.case_type {
        q = q.col_expr(case::Column::CaseType, Expr::value(v));
    }
    if let Some(v) = input.status {
        q = q.col_expr(case::Column::Status, Expr::value(v));
    }
    if let Some(v) = &input.description {
        q = q.col_expr(case::Column::Description, Expr::value(f.opt_rich("description", v.as_deref(), MAX_RICH)));
    }
    for (col, field, value) in [
        (case::Column::Court, "court", &input.court),
        (case::Column::Jurisdiction, "jurisdiction", &input.jurisdiction),
        (case::Column::Judge, "judge", &input.judge),
        (case::Column::ClientName, "clientName", &input.client_name),
    ] {
        if let Some(v) = value {
            q = q.col_expr(col, Expr::value(f.opt_text(field, v.as_deref(), MAX_SHORT)));
        }
    }
    let filed = input.filed_at.map(|v| v.map(clock::stored));
    let closed = input.closed_at.map(|v| v.map(clock::stored));
    check_dates(&mut f, filed.unwrap_or(current.filed_at), closed.unwrap_or(current.closed_at));
    if let Some(v) = filed {
        q = q.col_expr(case::Column::FiledAt, Expr::value(v));
    }
    if let Some(v) = closed {
        q = q.col_expr(case::Column::ClosedAt, Expr::value(v));
    }
    f.finish()?;
    if let Some(new_lead) = input.lead_attorney_id {
        access.require_manage()?;
        let new_lead = match new_lead {
            Some(uid) => Some(lead_candidate(tx, p, uid).await?),
            None => None,
        };
        q = q.col_expr(case::Column::LeadAttorneyId, Expr::value(new_lead));
        set_team_lead(tx, p, current.id, new_lead).await?;
    }
    let n = q
        .col_expr(case::Column::Version, Expr::col(case::Column::Version).add(1))
        .col_expr(case::Column::UpdatedAt, Expr::value(clock::now()))
        .filter(case::Column::Id.eq(current.id))
        .filter(case::Column::Version.eq(expected))
        .exec(tx)
        .await?
        .rows_affected;
    if n != 1 {
        // Another writer got in between our read and this write (PostgreSQL read committed).
        return Err(stale(current.version));
    }
    let updated = case::Entity::find_by_id(current.id).one(tx).await?.ok_or_else(|| ApiError::not_found("case"))?;
    let view = CaseView::from(updated);
    let actor = Actor::user(p);
    let json = audit::json(&view);
    audit::record(
        tx,
        p.firm_id,
        &actor,
        AuditEvent::new("case.update", "case", Some(current.id.to_string()))
            .case(current.id)
            .changes(audit::diff(&audit::json(&CaseView::from(current.clone())), &json)),
    )
    .await?;
    tx.record(DomainEvent::new(EventType::CaseUpdated, p.firm_id, &actor, current.id).case(current.id).data(json));
    // Another court has other closures: its deadlines are counted again, in this transaction.
    use crate::calendar::court::court_key;
    if court_key(view.court.as_deref()) != court_key(current.court.as_deref()) {
        crate::calendar::court::case_court_changed(tx, p, current.id).await?;
    }
    Ok(view)
}

/// Soft-deletes a case: it disappears from the API and stays in the database for the record.
pub async fn delete(app: &App, p: &Principal, id: CaseId, if_match: Option<i32>) -> ApiResult<()> {
    app.write(TxOptions::write(), |tx| async move { delete_in(&tx, p, id, if_match, false).await }).await
}

/// Deletes a case inside the caller's transaction: soft (kept for the record, never served),
/// or — `hard`, admins only — removed with its team, refused while it has parties or docket
/// entries (those are part of the legal record).
pub(super) async fn delete_in(tx: &Tx, p: &Principal, id: CaseId, if_match: Option<i32>, hard: bool) -> ApiResult<()> {
    let access: CaseAccess = visible_case(tx, p, id).await?;
    access.require_manage()?;
    if hard {
        return hard_delete(tx, p, &access, if_match).await;
    }
    let expected = if_match.unwrap_or(access.case.version);
    let n = case::Entity::update_many()
        .col_expr(case::Column::DeletedAt, Expr::value(clock::now()))
        .col_expr(case::Column::Version, Expr::col(case::Column::Version).add(1))
        .col_expr(case::Column::UpdatedAt, Expr::value(clock::now()))
        .filter(case::Column::Id.eq(id.0))
        .filter(case::Column::Version.eq(expected))
        .exec(tx)
        .await?
        .rows_affected;
    if n != 1 {
        return Err(stale(access.case.version));
    }
    let change = serde_json::json!({ "deleted": { "old": false, "new": true } });
    let actor = Actor::user(p);
    audit::record(
        tx,
        p.firm_id,
        &actor,
        AuditEvent::new("case.delete", "case", Some(id.to_string())).case(id.0).changes(change),
    )
    .await?;
    tx.record(
        DomainEvent::new(EventType::CaseDeleted, p.firm_id, &actor, id)
            .case(id.0)
            .data(serde_json::json!({ "id": id, "caseNumber": access.case.case_number, "permanent": false })),
    );
    Ok(())
}

async fn hard_delete(tx: &Tx, p: &Principal, access: &CaseAccess, if_match: Option<i32>) -> ApiResult<()> {
    if p.role != Role::Admin {
        return Err(ApiError::forbidden("only an admin may delete a case permanently"));
    }
    // Lock the case (docket posters take the same lock) and read it again under the lock, so
    // neither a concurrent change nor a concurrent docket entry slips in before the delete.
    if tx.get_database_backend() == sea_orm::DbBackend::Postgres {
        tx.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT 1 FROM cases WHERE id = $1 FOR UPDATE",
            [access.case.id.into()],
        ))
        .await?;
    }
    let locked = case::Entity::find_by_id(access.case.id).one(tx).await?.ok_or_else(|| ApiError::not_found("case"))?;
    let c = &locked;
    let expected = if_match.unwrap_or(access.case.version);
    if c.version != expected {
        return Err(stale(c.version));
    }
    let parties =
        crate::parties::model::Entity::find().filter(crate::parties::model::Column::CaseId.eq(c.id)).count(tx).await?;
    let docket =
        crate::docket::model::Entity::find().filter(crate::docket::model::Column::CaseId.eq(c.id)).count(tx).await?;
    if parties > 0 || docket > 0 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "a case with parties or docket entries cannot be deleted permanently; delete it (soft) instead",
        ));
    }
    team_member::Entity::delete_many().filter(team_member::Column::CaseId.eq(c.id)).exec(tx).await?;
    super::sealed::grant::Entity::delete_many().filter(super::sealed::grant::Column::CaseId.eq(c.id)).exec(tx).await?;
    let n = case::Entity::delete_many()
        .filter(case::Column::Id.eq(c.id))
        .filter(case::Column::FirmId.eq(p.firm_id.0))
        .filter(case::Column::Version.eq(c.version))
        .exec(tx)
        .await
        .map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => ApiError::new(
                ErrorCode::Conflict,
                "the case gained records meanwhile and cannot be deleted permanently",
            ),
            _ => ApiError::from(e),
        })?
        .rows_affected;
    if n != 1 {
        return Err(stale(c.version));
    }
    let actor = Actor::user(p);
    audit::record(
        tx,
        p.firm_id,
        &actor,
        AuditEvent::new("case.purge", "case", Some(c.id.to_string()))
            .case(c.id)
            .changes(audit::diff(&audit::json(&CaseView::from(c.clone())), &serde_json::json!({}))),
    )
    .await?;
    tx.record(
        DomainEvent::new(EventType::CaseDeleted, p.firm_id, &actor, c.id)
            .case(c.id)
            .data(serde_json::json!({ "id": c.id, "caseNumber": c.case_number, "permanent": true })),
    );
    Ok(())
}

/// Whether the caller's firm role lets them be given `role` on a team.
pub(super) fn team_role_fits(user_role: Role, role: TeamRole) -> Result<(), &'static str> {
    match (user_role, role) {
        (Role::Client, TeamRole::Client) => Ok(()),
        (Role::Client, _) => Err("a client user can only be on a team as client"),
        (_, TeamRole::Client) => Err("only client users can be on a team as client"),
        (r, TeamRole::LeadAttorney) if !r.may_lead_cases() => Err("only an admin, partner or attorney can lead a case"),
        (r, TeamRole::Attorney) if !r.may_lead_cases() => {
            Err("only an admin, partner or attorney can be an attorney on a case")
        }
        _ => Ok(()),
    }
}
