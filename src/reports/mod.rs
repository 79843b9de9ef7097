//! Reports over a firm's cases, served from the cache.
//!
//! `GET /api/v1/reports/cases/summary`: counts by status and by type, and cases opened and
//! closed per month over the last twelve months, over the cases the caller can see. The
//! summary is cached per firm (and per caller, for those who see only their teams' cases)
//! and made stale by every write to the firm's cases or teams; a scheduled job
//! (`reports.warm`) computes the firm-wide summaries ahead of the first reader.

pub mod http;

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Months, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    app::App,
    auth::Principal,
    cache::{Key, tags},
    clock,
    http::error::ApiResult,
};

/// Cases per month.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonthCount {
    /// `YYYY-MM` (UTC).
    pub month: String,
    pub count: u64,
}

/// The case summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseSummary {
    /// Live cases the caller can see.
    pub total: u64,
    /// Status → count.
    pub by_status: BTreeMap<String, u64>,
    /// Type → count.
    pub by_type: BTreeMap<String, u64>,
    /// The last twelve months, oldest first: cases opened (filed, or created when no filing
    /// date is known).
    pub opened_per_month: Vec<MonthCount>,
    /// The last twelve months, oldest first: cases closed.
    pub closed_per_month: Vec<MonthCount>,
    /// When this summary was computed (it may come from the cache).
    pub generated_at: DateTime<Utc>,
}

/// Whose cases a summary covers: the whole firm, or one user's teams.
#[derive(Clone, Copy, Debug)]
pub struct Scope {
    pub firm: Uuid,
    pub user: Option<Uuid>,
}

impl Scope {
    /// The scope of what `p` can see.
    pub fn of(p: &Principal) -> Self {
        Self { firm: p.firm_id.0, user: (!p.role.sees_all_cases()).then_some(p.user_id.0) }
    }

    fn key(self) -> Key {
        let who = self.user.map_or_else(|| "all".to_owned(), |u| u.to_string());
        Key::new(format!("report:cases-summary:{}:{who}", self.firm)).tag(tags::firm_cases(self.firm))
    }
}

/// The summary for `p`, from the cache when current.
pub async fn case_summary(app: &App, p: &Principal) -> ApiResult<CaseSummary> {
    let scope = Scope::of(p);
    Ok(app.cache.get_or_set(&scope.key(), || compute(&app.db, scope)).await?)
}

/// Computes the firm-wide summary of `firm` and stores it in the cache (the warm-up job).
pub async fn warm(db: &impl ConnectionTrait, cache: &crate::cache::Cache, firm: Uuid) -> Result<(), DbErr> {
    let scope = Scope { firm, user: None };
    cache.refresh(&scope.key(), || compute(db, scope)).await?;
    Ok(())
}

/// Computes the summary from the database (uncached; the benchmark's baseline).
pub async fn compute(db: &impl ConnectionTrait, scope: Scope) -> Result<CaseSummary, DbErr> {
    let backend = db.get_database_backend();
    let ph = |i: usize| if backend == DbBackend::Postgres { format!("${i}") } else { "?".to_owned() };
    let mut params: Vec<Value> = vec![scope.firm.into()];
    let mut visible = format!("firm_id = {} AND deleted_at IS NULL", ph(1));
    if let Some(u) = scope.user {
        params.push(u.into());
        visible.push_str(&format!(" AND id IN (SELECT case_id FROM case_team_members WHERE user_id = {})", ph(2)));
    }
    let grouped = |column: &str| format!("SELECT {column}, COUNT(*) FROM cases WHERE {visible} GROUP BY {column}");
    let by_status = counts(db, &grouped("status"), &params).await?;
    let by_type = counts(db, &grouped("case_type"), &params).await?;
    let total = by_status.values().sum();

    let now = clock::now();
    let first = now
        .date_naive()
        .with_day(1)
        .and_then(|d| d.checked_sub_months(Months::new(11)))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .unwrap_or(now);
    let month = |expr: &str| match backend {
        DbBackend::Postgres => format!("to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM')"),
        _ => format!("substr({expr}, 1, 7)"),
    };
    let mut since = params.clone();
    since.push(first.into());
    let cutoff = ph(since.len());
    let opened_expr = "COALESCE(filed_at, created_at)";
    let opened = counts(
        db,
        &format!(
            "SELECT {m}, COUNT(*) FROM cases WHERE {visible} AND {opened_expr} >= {cutoff} GROUP BY {m}",
            m = month(opened_expr)
        ),
        &since,
    )
    .await?;
    let closed = counts(
        db,
        &format!(
            "SELECT {m}, COUNT(*) FROM cases WHERE {visible} AND closed_at >= {cutoff} GROUP BY {m}",
            m = month("closed_at")
        ),
        &since,
    )
    .await?;
    let months: Vec<String> = (0..12)
        .filter_map(|i| first.checked_add_months(Months::new(i)))
        .map(|d| d.format("%Y-%m").to_string())
        .collect();
    let series = |m: &BTreeMap<String, u64>| {
        months.iter().map(|k| MonthCount { month: k.clone(), count: m.get(k).copied().unwrap_or(0) }).collect()
    };
    Ok(CaseSummary {
        total,
        by_status,
        by_type,
        opened_per_month: series(&opened),
        closed_per_month: series(&closed),
        generated_at: now,
    })
}

async fn counts(db: &impl ConnectionTrait, sql: &str, params: &[Value]) -> Result<BTreeMap<String, u64>, DbErr> {
    let backend = db.get_database_backend();
    let rows = db.query_all_raw(Statement::from_sql_and_values(backend, sql, params.to_vec())).await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let key: Option<String> = r.try_get_by_index(0)?;
        let n: i64 = r.try_get_by_index(1)?;
        if let Some(k) = key {
            out.insert(k, n.max(0) as u64);
        }
    }
    Ok(out)
}
