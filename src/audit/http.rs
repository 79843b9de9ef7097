//! `/api/v1/audit*` (admins) and `/api/v1/cases/{id}/history` (whoever can see the case).

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    chain::{self, Verification},
    model::entry,
};
use crate::{
    app::App,
    auth::Principal,
    http::{
        ApiError, ApiResult, AppPath, AppQuery, Envelope,
        envelope::{CursorPagination, ErrorBody, OffsetPagination, Pagination, Success},
        pagination::{Cursor, MAX_LIMIT, MAX_PAGE},
    },
    ids::CaseId,
    users::model::Role,
};

/// An audit entry as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryView {
    pub id: Uuid,
    /// The chain (of the firm's parallel chains) and the place in it.
    pub chain: i32,
    pub sequence: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor_type: String,
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<String>,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Option<String>,
    pub case_id: Option<Uuid>,
    /// `{field: {old, new}}`, secrets redacted.
    #[schema(value_type = Object)]
    pub changes: Value,
    pub correlation_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl From<entry::Model> for AuditEntryView {
    fn from(e: entry::Model) -> Self {
        Self {
            id: e.id,
            chain: e.chain,
            sequence: e.sequence,
            occurred_at: e.occurred_at,
            actor_type: e.actor_type,
            actor_id: e.actor_id,
            actor_role: e.actor_role,
            action: e.action,
            entity_type: e.entity_type,
            entity_id: e.entity_id,
            case_id: e.case_id,
            changes: serde_json::from_str(&e.changes).unwrap_or(Value::Null),
            correlation_id: e.correlation_id,
            ip: e.ip,
            user_agent: e.user_agent,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

fn require_admin(p: &Principal) -> ApiResult<()> {
    // An API key reaches here only with the `audit:read` scope (checked by `require_auth`).
    if p.role == Role::Admin || p.api_key.is_some_and(|k| k.scopes.contains(crate::api_keys::Scope::AuditRead)) {
        Ok(())
    } else {
        Err(ApiError::forbidden("only a firm admin may read the audit trail"))
    }
}

/// `GET /audit` filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// `case`, `party`, `user`, `session`, `firm`, `audit_trail`…
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub actor_id: Option<Uuid>,
    /// `case.update`, `auth.login_failed`…
    pub action: Option<String>,
    /// From this time (inclusive), RFC 3339.
    pub from: Option<DateTime<Utc>>,
    /// Until this time (exclusive), RFC 3339.
    pub to: Option<DateTime<Utc>>,
    pub page: Option<u64>,
    pub limit: Option<u64>,
}

fn filtered(p: &Principal, q: &AuditQuery) -> sea_orm::Select<entry::Entity> {
    let mut c = Condition::all().add(entry::Column::FirmId.eq(p.firm_id.0));
    if let Some(v) = &q.entity_type {
        c = c.add(entry::Column::EntityType.eq(v.as_str()));
    }
    if let Some(v) = &q.entity_id {
        c = c.add(entry::Column::EntityId.eq(v.as_str()));
    }
    if let Some(v) = q.actor_id {
        c = c.add(entry::Column::ActorId.eq(v));
    }
    if let Some(v) = &q.action {
        c = c.add(entry::Column::Action.eq(v.as_str()));
    }
    if let Some(v) = q.from {
        c = c.add(entry::Column::OccurredAt.gte(v));
    }
    if let Some(v) = q.to {
        c = c.add(entry::Column::OccurredAt.lt(v));
    }
    entry::Entity::find().filter(c)
}

/// The firm's audit trail, newest first, filtered and paged.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Success<Vec<AuditEntryView>>), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    p: Principal,
    AppQuery(q): AppQuery<AuditQuery>,
) -> ApiResult<Envelope<Vec<AuditEntryView>>> {
    require_admin(&p)?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let page = q.page.unwrap_or(1).clamp(1, MAX_PAGE);
    let base = filtered(&p, &q);
    let total = base.clone().count(&app.db).await?;
    let rows = base
        .order_by_desc(entry::Column::OccurredAt)
        .order_by_desc(entry::Column::Id)
        .offset((page - 1) * limit)
        .limit(limit)
        .all(&app.db)
        .await?;
    let total_pages = total.div_ceil(limit);
    Ok(Envelope::page(
        rows.into_iter().map(AuditEntryView::from).collect(),
        Pagination::Offset(OffsetPagination { page, limit, total, total_pages, has_next: page < total_pages }),
    ))
}

/// Recompute the firm's hash chain.
#[utoipa::path(get, path = "/audit/verify", tag = "audit",
    responses((status = 200, body = Success<Verification>), (status = 403, body = ErrorBody)))]
pub async fn verify(State(app): State<App>, p: Principal) -> ApiResult<Envelope<Verification>> {
    require_admin(&p)?;
    Ok(Envelope::ok(chain::verify(&app.db, p.firm_id.0).await?))
}

/// `GET /audit/report` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Start of the period (inclusive), RFC 3339.
    pub from: DateTime<Utc>,
    /// End of the period (exclusive), RFC 3339.
    pub to: DateTime<Utc>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// A compliance report: totals by action and by actor, and the entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub total: u64,
    /// `[{action, count}]`, most frequent first.
    #[schema(value_type = Vec<Object>)]
    pub by_action: Vec<Value>,
    /// `[{actorType, actorId, count}]`, most frequent first.
    #[schema(value_type = Vec<Object>)]
    pub by_actor: Vec<Value>,
    pub chain: Verification,
    pub entries: Vec<AuditEntryView>,
}

/// Largest period a report may cover, in entries (beyond it: narrow the period).
const REPORT_MAX_ENTRIES: u64 = 100_000;

/// Largest period a report may cover, in characters of the entries' changes (the report holds
/// them about three times over while it is built: rows, values, the serialized body).
const REPORT_MAX_CHANGE_BYTES: u64 = 64_000_000;

/// A compliance report for a period, as JSON or CSV (opens in a spreadsheet).
#[utoipa::path(get, path = "/audit/report", tag = "audit", params(ReportQuery),
    responses((status = 200, body = Success<AuditReport>, description = "JSON, or text/csv with format=csv"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn report(State(app): State<App>, p: Principal, AppQuery(q): AppQuery<ReportQuery>) -> ApiResult<Response> {
    require_admin(&p)?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::field("format", "use json or csv")),
    };
    if q.to <= q.from {
        return Err(ApiError::field("to", "must be after from"));
    }
    let base = filtered(&p, &AuditQuery { from: Some(q.from), to: Some(q.to), ..Default::default() });
    let total = base.clone().count(&app.db).await?;
    if total > REPORT_MAX_ENTRIES {
        return Err(ApiError::field(
            "from",
            format!("the period holds {total} entries; report at most {REPORT_MAX_ENTRIES} at once"),
        ));
    }
    // Entries can be large (a docket entry's text is up to 200,000 characters, and its audit
    // entry holds the change): a report is built in memory, so its size is bounded too.
    let bytes: Option<i64> = base
        .clone()
        .select_only()
        .column_as(sea_orm::sea_query::Expr::cust("COALESCE(SUM(LENGTH(changes)), 0)"), "bytes")
        .into_tuple()
        .one(&app.db)
        .await?;
    let bytes = bytes.unwrap_or(0).max(0) as u64;
    if bytes > REPORT_MAX_CHANGE_BYTES {
        return Err(ApiError::field(
            "from",
            format!(
                "the period's entries hold {} MB of changes; report at most {} MB at once",
                bytes / 1_000_000,
                REPORT_MAX_CHANGE_BYTES / 1_000_000
            ),
        ));
    }
    let rows = base.order_by_asc(entry::Column::OccurredAt).order_by_asc(entry::Column::Id).all(&app.db).await?;
    let mut by_action: std::collections::BTreeMap<String, u64> = Default::default();
    let mut by_actor: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for e in &rows {
        *by_action.entry(e.action.clone()).or_default() += 1;
        *by_actor.entry((e.actor_type.clone(), e.actor_id.map(|a| a.to_string()).unwrap_or_default())).or_default() +=
            1;
    }
    let mut by_action: Vec<(String, u64)> = by_action.into_iter().collect();
    by_action.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut by_actor: Vec<((String, String), u64)> = by_actor.into_iter().collect();
    by_actor.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let chain = chain::verify(&app.db, p.firm_id.0).await?;
    if csv {
        return Ok(csv_response(&q, total, &by_action, &by_actor, &chain, rows));
    }
    let report = AuditReport {
        from: q.from,
        to: q.to,
        total,
        by_action: by_action.into_iter().map(|(a, n)| serde_json::json!({"action": a, "count": n})).collect(),
        by_actor: by_actor
            .into_iter()
            .map(|((t, id), n)| serde_json::json!({"actorType": t, "actorId": if id.is_empty() { Value::Null } else { Value::from(id) }, "count": n}))
            .collect(),
        chain,
        entries: rows.into_iter().map(AuditEntryView::from).collect(),
    };
    Ok(Envelope::ok(report).into_response())
}

/// One CSV field: quoted, quotes doubled, and a leading `= + - @` (or tab/CR) defused with
/// an apostrophe so a spreadsheet shows text instead of running a formula.
pub fn csv_field(s: &str) -> String {
    let defused = match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_owned(),
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

fn csv_response(
    q: &ReportQuery,
    total: u64,
    by_action: &[(String, u64)],
    by_actor: &[((String, String), u64)],
    chain: &Verification,
    rows: Vec<entry::Model>,
) -> Response {
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    };
    line(&mut out, &["section".into(), "key".into(), "value".into()].map(|c: String| csv_field(&c)));
    for (k, v) in [
        ("from", q.from.to_rfc3339()),
        ("to", q.to.to_rfc3339()),
        ("total", total.to_string()),
        ("chainValid", chain.valid.to_string()),
    ] {
        line(&mut out, &[csv_field("period"), csv_field(k), csv_field(&v)]);
    }
    for (a, n) in by_action {
        line(&mut out, &[csv_field("byAction"), csv_field(a), csv_field(&n.to_string())]);
    }
    for ((t, id), n) in by_actor {
        line(&mut out, &[csv_field("byActor"), csv_field(&format!("{t}:{id}")), csv_field(&n.to_string())]);
    }
    out.push_str("\r\n");
    let header = [
        "chain",
        "sequence",
        "occurredAt",
        "actorType",
        "actorId",
        "actorRole",
        "action",
        "entityType",
        "entityId",
        "caseId",
        "changes",
        "correlationId",
        "ip",
        "userAgent",
        "hash",
    ];
    line(&mut out, &header.map(csv_field));
    for e in rows {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        line(
            &mut out,
            &[
                e.chain.to_string(),
                e.sequence.to_string(),
                e.occurred_at.to_rfc3339(),
                e.actor_type,
                e.actor_id.map(|a| a.to_string()).unwrap_or_default(),
                opt(&e.actor_role),
                e.action,
                e.entity_type,
                opt(&e.entity_id),
                e.case_id.map(|c| c.to_string()).unwrap_or_default(),
                e.changes,
                opt(&e.correlation_id),
                opt(&e.ip),
                opt(&e.user_agent),
                e.hash,
            ]
            .map(|c| csv_field(&c)),
        );
    }
    let mut res = (StatusCode::OK, out).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    res.headers_mut()
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"audit-report.csv\""));
    res
}

/// `GET /cases/{id}/history` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Entries per page, at most 100 (default 50).
    pub limit: Option<u64>,
    /// Absent (or empty) for the newest page, then `meta.pagination.nextCursor`.
    pub cursor: Option<String>,
}

/// The sort a history cursor is bound to.
const HISTORY_SORT: &str = "-occurredAt";

/// The changes of one case (and its team, parties and docket), newest first, in cursor pages.
/// Entries of docket entries the caller may not see (sealed, or restricted from a client, now
/// or before) are not there, nor are sealed-access grants for those who do not see sealed
/// material; client address and user agent are for admins only.
#[utoipa::path(get, path = "/cases/{id}/history", tag = "cases",
    params(("id" = CaseId, Path, description = "case id"), HistoryQuery),
    responses((status = 200, body = Success<Vec<AuditEntryView>>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn case_history(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<CaseId>,
    AppQuery(q): AppQuery<HistoryQuery>,
) -> ApiResult<Envelope<Vec<AuditEntryView>>> {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(Cursor::decode(c, HISTORY_SORT)?),
    };
    let access = crate::cases::access::visible_case_cached(&app, &p, id).await?.with_sealed_grant(&app.db).await?;
    let admin = p.role == Role::Admin;
    let mut query =
        entry::Entity::find().filter(entry::Column::FirmId.eq(p.firm_id.0)).filter(entry::Column::CaseId.eq(id.0));
    // Sealed (and, for clients, restricted) docket entries do not exist for those who may not
    // see them — nor does their history. Filtered in the query, so every page is full.
    if let Some(hidden) = crate::docket::ops::hidden_history(app.db.get_database_backend(), &access) {
        query = query.filter(hidden);
    }
    if !access.sees_sealed() {
        query = query.filter(entry::Column::EntityType.ne("sealed_access"));
    }
    if let Some(c) = &after {
        let t = c.time_key()?;
        // Strictly older than the last entry served: the id breaks ties between entries of
        // the same microsecond, so none is skipped or repeated. The plain `<=` is redundant
        // but lets both databases start the index scan at the cursor; the `OR` alone is a
        // filter, and a deep page would read every newer entry first (measured: 30,000 rows
        // read for a page 20,000 entries deep on PostgreSQL).
        query = query.filter(entry::Column::OccurredAt.lte(t)).filter(
            Condition::any()
                .add(entry::Column::OccurredAt.lt(t))
                .add(Condition::all().add(entry::Column::OccurredAt.eq(t)).add(entry::Column::Id.lt(c.id))),
        );
    }
    let mut rows = query
        .order_by_desc(entry::Column::OccurredAt)
        .order_by_desc(entry::Column::Id)
        .limit(limit + 1)
        .all(&app.db)
        .await?;
    let has_more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = has_more
        .then(|| {
            rows.last().map(|r| {
                Cursor { sort: HISTORY_SORT.to_owned(), key: Cursor::format_time(r.occurred_at), id: r.id }.encode()
            })
        })
        .flatten();
    // Who acted and when is for everyone on the case; where from (address, browser) is for
    // the firm's admins only — a client on the team need not learn staff members' addresses.
    let views = rows
        .into_iter()
        .map(AuditEntryView::from)
        .map(|mut v| {
            if !admin {
                v.ip = None;
                v.user_agent = None;
            }
            v
        })
        .collect();
    Ok(Envelope::page(views, Pagination::Cursor(CursorPagination { limit, next_cursor, has_more })))
}
