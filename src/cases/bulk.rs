//! Bulk case operations: create (or upsert on the case number), update and delete many cases
//! in one request or import, with a result per item.
//!
//! Two modes, stated by the caller. `atomic`: all or nothing — one bad item and nothing is
//! written, the errors say which items and why. `partial`: each bad item is reported, the good
//! ones are kept. Either way every item written is audited in the same transaction, and a
//! crash at any point leaves either the whole batch or none of it.
//!
//! Items are validated first (fields, duplicate case numbers within the batch, lead
//! attorneys), then written in one transaction through [`crate::db::bulk::insert_rows`]. A
//! case number that exists already is a conflict, skipped, or an update of that case, as
//! `onConflict` says. A concurrent writer taking a number between the check and the insert
//! makes the insert fail: in `partial` mode the batch's insert is undone alone (a savepoint),
//! the numbers checked again and the batch retried without them.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, SqlErr};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    model::{TeamRole, case, team_member},
    ops::{self, CaseView, CreateCase, NewCase, UpdateCase},
};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    clock,
    db::{
        self, TxOptions,
        bulk::{Cell, Encoded, Table, col, encode, insert_rows, req},
    },
    events::{DomainEvent, EventType},
    http::error::{ApiError, ApiResult, ErrorCode},
    ids::CaseId,
    users::model as user,
};

/// Items one request may carry.
pub const MAX_ITEMS: usize = 10_000;

/// How a bulk request treats bad items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkMode {
    /// All or nothing (the default).
    #[default]
    Atomic,
    /// Bad items are reported, good ones kept.
    Partial,
}

/// What to do when an item's case number is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// The item fails with `CONFLICT` (the default).
    #[default]
    Fail,
    /// The item is skipped; its `id` is the existing case's.
    Skip,
    /// The existing case is updated with the item's fields.
    Update,
}

/// One failed item.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemError {
    /// Position in the request (from 0).
    pub index: usize,
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// The outcome of a bulk operation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    pub total: usize,
    /// Items written (created, updated or deleted).
    pub succeeded: usize,
    pub failed: usize,
    /// Items left as they were (`onConflict: skip`).
    pub skipped: usize,
    pub errors: Vec<ItemError>,
    /// Per item, in request order: the case's id, or null where the item failed.
    pub ids: Vec<Option<Uuid>>,
}

impl BulkResult {
    pub(crate) fn new(total: usize) -> Self {
        Self { total, ids: vec![None; total], ..Self::default() }
    }

    pub(crate) fn fail(&mut self, index: usize, e: &ApiError) {
        self.ids[index] = None;
        self.errors.push(ItemError { index, code: e.code, message: e.message.to_string(), details: e.details.clone() });
    }

    pub(crate) fn finish(mut self) -> Self {
        self.errors.sort_by_key(|e| e.index);
        self.failed = self.errors.len();
        self
    }

    /// Refuses the batch (see [`refuse`](Self::refuse)) when `mode` is atomic and an item
    /// failed; else passes it on.
    pub(crate) fn refuse_if_atomic(self, mode: BulkMode) -> ApiResult<Self> {
        if mode == BulkMode::Atomic && !self.errors.is_empty() { Err(self.finish().refuse()) } else { Ok(self) }
    }

    /// In `atomic` mode, a batch with failed items is refused whole: `409` when every failure
    /// is a conflict, else `422`-style `VALIDATION_FAILED` (400), with the items in `details`.
    pub(crate) fn refuse(self) -> ApiError {
        let all_conflicts = self.errors.iter().all(|e| e.code == ErrorCode::Conflict);
        let code = if all_conflicts { ErrorCode::Conflict } else { ErrorCode::ValidationFailed };
        let message =
            format!("{} of {} items failed; nothing was written (atomic mode)", self.errors.len(), self.total);
        ApiError::new(code, message).with_details(serde_json::json!({ "errors": self.errors }))
    }
}

/// Options of a bulk create.
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateOptions {
    pub mode: BulkMode,
    pub on_conflict: OnConflict,
}

const TABLE: Table = Table {
    name: "cases",
    columns: &[
        req("id", "uuid"),
        req("firm_id", "uuid"),
        req("case_number", "text"),
        req("title", "text"),
        req("case_type", "text"),
        req("status", "text"),
        col("description", "text"),
        col("court", "text"),
        col("jurisdiction", "text"),
        col("judge", "text"),
        col("filed_at", "timestamptz"),
        col("closed_at", "timestamptz"),
        col("client_name", "text"),
        col("lead_attorney_id", "uuid"),
        req("version", "int4"),
        req("created_by", "uuid"),
        req("created_at", "timestamptz"),
        req("updated_at", "timestamptz"),
        col("deleted_at", "timestamptz"),
    ],
};

const TEAM_TABLE: Table = Table {
    name: "case_team_members",
    columns: &[
        req("case_id", "uuid"),
        req("user_id", "uuid"),
        req("firm_id", "uuid"),
        req("role", "text"),
        req("added_by", "uuid"),
        req("added_at", "timestamptz"),
    ],
};

fn enum_text<T: Serialize>(v: &T) -> String {
    audit::json(v).as_str().unwrap_or_default().to_owned()
}

fn case_row(m: &case::Model) -> Vec<Cell> {
    vec![
        m.id.into(),
        m.firm_id.into(),
        m.case_number.clone().into(),
        m.title.clone().into(),
        enum_text(&m.case_type).into(),
        enum_text(&m.status).into(),
        m.description.clone().into(),
        m.court.clone().into(),
        m.jurisdiction.clone().into(),
        m.judge.clone().into(),
        m.filed_at.into(),
        m.closed_at.into(),
        m.client_name.clone().into(),
        m.lead_attorney_id.into(),
        m.version.into(),
        m.created_by.into(),
        m.created_at.into(),
        m.updated_at.into(),
        m.deleted_at.into(),
    ]
}

fn conflict(number: &str) -> ApiError {
    ApiError::new(ErrorCode::Conflict, "a case with this number already exists in your firm")
        .with_details(serde_json::json!({ "field": "caseNumber", "caseNumber": number }))
}

/// Creates many cases (or upserts them on the case number). `items` are the parsed request
/// items: an item that did not even parse arrives as its error. `progress` is told how many
/// valid items have been written so far (the import's progress bar). No size limit here:
/// the HTTP layer caps a request at [`MAX_ITEMS`]; an import may be larger, in one
/// transaction when atomic.
pub async fn create_many(
    app: &App,
    p: &Principal,
    items: Vec<Result<CreateCase, ApiError>>,
    opts: CreateOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> ApiResult<BulkResult> {
    if !p.role.may_create_cases() {
        return Err(ApiError::forbidden("your role may not open cases"));
    }
    let mut result = BulkResult::new(items.len());
    let mut valid: Vec<(usize, NewCase)> = Vec::with_capacity(items.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item.and_then(CreateCase::validate) {
            Ok(c) => match seen.get(&c.case_number) {
                Some(first) => result.fail(
                    i,
                    &ApiError::new(ErrorCode::Conflict, format!("duplicates the case number of item {first}"))
                        .with_details(serde_json::json!({ "field": "caseNumber" })),
                ),
                None => {
                    seen.insert(c.case_number.clone(), i);
                    valid.push((i, c));
                }
            },
            Err(e) => result.fail(i, &e),
        }
    }
    let result = result.refuse_if_atomic(opts.mode)?;
    let valid = &Arc::new(valid);
    let base = &result;
    let result = app
        .write(TxOptions::write(), |tx| async move {
            let mut result = base.clone();
            // Lead attorneys are checked in the transaction that makes them leads, so one
            // suspended meanwhile is not made lead (on a copy: the transaction may run again).
            let valid = if valid.iter().any(|(_, c)| c.lead_attorney_id.is_some()) {
                let mut v = (**valid).clone();
                check_leads(&tx, p, &mut v, &mut result).await?;
                Arc::new(v)
            } else {
                Arc::clone(valid)
            };
            let mut result = result.refuse_if_atomic(opts.mode)?;
            write_creates(&tx, p, &valid, opts, &mut result, progress).await?;
            result.refuse_if_atomic(opts.mode)
        })
        .await?;
    let n = result.succeeded;
    db::bulk::analyze_grown(&app.db, &[("cases", n), ("audit_entries", n), ("domain_events", n)]);
    Ok(result.finish())
}

/// Fails items whose lead attorney is not an active admin, partner or attorney of the firm.
async fn check_leads(
    db: &impl ConnectionTrait,
    p: &Principal,
    valid: &mut Vec<(usize, NewCase)>,
    result: &mut BulkResult,
) -> ApiResult<()> {
    let wanted: HashSet<Uuid> = valid.iter().filter_map(|(_, c)| c.lead_attorney_id.map(|l| l.0)).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut ok = HashSet::new();
    let wanted: Vec<Uuid> = wanted.into_iter().collect();
    for chunk in wanted.chunks(500) {
        let mut q = user::Entity::find().filter(user::Column::FirmId.eq(p.firm_id.0)).filter(db::bulk::one_of(
            db.get_database_backend(),
            user::Column::Id,
            chunk.iter().copied(),
        ));
        if db.get_database_backend() == sea_orm::DbBackend::Postgres {
            // A suspension of one of them waits for this transaction (SQLite writers are
            // serialised already).
            q = q.lock(sea_orm::sea_query::LockType::Share);
        }
        let users = q.all(db).await?;
        ok.extend(
            users.into_iter().filter(|u| u.status == user::UserStatus::Active && u.role.may_lead_cases()).map(|u| u.id),
        );
    }
    valid.retain(|(i, c)| match c.lead_attorney_id {
        Some(l) if !ok.contains(&l.0) => {
            result.fail(
                *i,
                &ApiError::field("leadAttorneyId", "must be an active admin, partner or attorney of your firm"),
            );
            false
        }
        _ => true,
    });
    Ok(())
}

/// The live or deleted cases of the firm holding any of `numbers`: number → (id, deleted).
async fn existing(db: &impl ConnectionTrait, firm: Uuid, numbers: &[&str]) -> ApiResult<HashMap<String, (Uuid, bool)>> {
    let mut found = HashMap::new();
    for chunk in numbers.chunks(1_000) {
        let rows: Vec<(Uuid, String, Option<chrono::DateTime<chrono::Utc>>)> = case::Entity::find()
            .select_only()
            .column(case::Column::Id)
            .column(case::Column::CaseNumber)
            .column(case::Column::DeletedAt)
            .filter(case::Column::FirmId.eq(firm))
            .filter(db::bulk::one_of(
                db.get_database_backend(),
                case::Column::CaseNumber,
                chunk.iter().map(|n| (*n).to_owned()),
            ))
            .into_tuple()
            .all(db)
            .await?;
        found.extend(rows.into_iter().map(|(id, n, d)| (n, (id, d.is_some()))));
    }
    Ok(found)
}

/// Items written per round trip group (and per progress report).
const CHUNK: usize = 5_000;

async fn write_creates(
    tx: &db::Tx,
    p: &Principal,
    valid: &Arc<Vec<(usize, NewCase)>>,
    opts: CreateOptions,
    result: &mut BulkResult,
    progress: &(dyn Fn(usize) + Sync),
) -> ApiResult<()> {
    // Which numbers exist, asked once before anything is written: asked between chunks, the
    // query would run against rows this transaction inserted, which PostgreSQL's statistics
    // do not know of yet, and it was planned as a sequential scan (quadratic in the batch).
    let numbers: Vec<&str> = valid.iter().map(|(_, c)| c.case_number.as_str()).collect();
    let taken = existing(tx, p.firm_id.0, &numbers).await?;
    if opts.mode == BulkMode::Atomic && taken.is_empty() {
        return write_pipelined(tx, p, valid, result, progress).await;
    }
    let mut done = 0;
    for chunk in valid.chunks(CHUNK) {
        write_chunk(tx, p, chunk.iter().collect(), opts, result, &taken).await?;
        done += chunk.len();
        progress(done);
    }
    Ok(())
}

async fn write_chunk(
    tx: &db::Tx,
    p: &Principal,
    mut pending: Vec<&(usize, NewCase)>,
    opts: CreateOptions,
    result: &mut BulkResult,
    known: &HashMap<String, (Uuid, bool)>,
) -> ApiResult<()> {
    // At most two rounds: the second only when a concurrent writer took a number meanwhile.
    for round in 0..2 {
        let rechecked;
        let taken = if round == 0 {
            known
        } else {
            let numbers: Vec<&str> = pending.iter().map(|(_, c)| c.case_number.as_str()).collect();
            rechecked = existing(tx, p.firm_id.0, &numbers).await?;
            &rechecked
        };
        let mut fresh = Vec::with_capacity(pending.len());
        for item in pending {
            let (i, c) = item;
            let Some((id, deleted)) = taken.get(&c.case_number).copied() else {
                fresh.push(item);
                continue;
            };
            match opts.on_conflict {
                OnConflict::Fail => result.fail(*i, &conflict(&c.case_number)),
                OnConflict::Skip => {
                    // The existing case's id only for a caller who can see it.
                    let visible = !deleted
                        && (p.role.sees_all_cases()
                            || team_member::Entity::find_by_id((id, p.user_id.0)).one(tx).await?.is_some());
                    if visible {
                        result.ids[*i] = Some(id);
                        result.skipped += 1;
                    } else {
                        result.fail(*i, &conflict(&c.case_number));
                    }
                }
                OnConflict::Update if deleted => result.fail(
                    *i,
                    &ApiError::new(ErrorCode::Conflict, "a deleted case holds this number; it cannot be updated"),
                ),
                OnConflict::Update => {
                    let update = update_from(c);
                    let update = &update;
                    // A savepoint per item, so a failed one leaves the transaction usable;
                    // atomic mode refuses the whole batch afterwards.
                    let outcome =
                        db::savepoint(tx, |sp| async move { ops::update_in(&sp, p, CaseId(id), update, None).await })
                            .await;
                    match outcome {
                        Ok(_) => {
                            result.ids[*i] = Some(id);
                            result.succeeded += 1;
                        }
                        Err(e) if escalate(&e) => return Err(e),
                        Err(e) => result.fail(*i, &e),
                    }
                }
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let batch = &fresh;
        let inserted = match opts.mode {
            BulkMode::Atomic => insert_cases(tx, p, batch).await,
            BulkMode::Partial => db::savepoint(tx, |sp| async move { insert_cases(&sp, p, batch).await }).await,
        };
        match inserted {
            Ok(ids) => {
                for ((i, _), id) in fresh.iter().zip(ids) {
                    result.ids[*i] = Some(id);
                }
                result.succeeded += fresh.len();
                return Ok(());
            }
            Err(e) if round == 0 && opts.mode == BulkMode::Partial && e.code == ErrorCode::Conflict => {
                // Someone took one of the numbers after the check: check again.
                pending = fresh;
            }
            Err(e) if opts.mode == BulkMode::Partial && e.code == ErrorCode::Conflict => {
                // Numbers keep being taken under us: one savepoint per item, so only the
                // items whose numbers are gone fail.
                for item in fresh {
                    let one = [item];
                    let one = &one[..];
                    match db::savepoint(tx, |sp| async move { insert_cases(&sp, p, one).await }).await {
                        Ok(ids) => {
                            result.ids[item.0] = ids.first().copied();
                            result.succeeded += 1;
                        }
                        Err(e) if e.code == ErrorCode::Conflict => result.fail(item.0, &conflict(&item.1.case_number)),
                        Err(e) => return Err(e),
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The update an upsert applies: the required fields, and only the optional ones the item
/// carried (an import with fewer columns does not clear the others, nor reopen a case).
fn update_from(c: &NewCase) -> UpdateCase {
    let g = c.given;
    UpdateCase {
        case_number: None,
        title: Some(c.title.clone()),
        case_type: Some(c.case_type),
        status: g.status.then_some(c.status),
        description: g.description.then(|| c.description.clone()),
        court: g.court.then(|| c.court.clone()),
        jurisdiction: g.jurisdiction.then(|| c.jurisdiction.clone()),
        judge: g.judge.then(|| c.judge.clone()),
        filed_at: g.filed_at.then_some(c.filed_at),
        closed_at: g.closed_at.then_some(c.closed_at),
        client_name: g.client_name.then(|| c.client_name.clone()),
        lead_attorney_id: g.lead_attorney_id.then_some(c.lead_attorney_id),
        version: None,
    }
}

/// Errors of one item that must fail the whole transaction rather than the item: a lost
/// conflict (the transaction is re-run) and failures of ours or of the database.
fn escalate(e: &ApiError) -> bool {
    crate::db::TxError::is_conflict(e) || matches!(e.code, ErrorCode::InternalError | ErrorCode::DependencyUnavailable)
}

/// Atomic creates whose case numbers are all free, the common import. The first chunk is
/// written here, after which the heads of every chain the batch's entries fall in are held;
/// for the rest a producer thread makes each chunk's case and team rows and audit entries —
/// sealed after those heads — and the statements that insert them, while the database runs
/// the previous chunk's: the CPU work of a chunk overlaps the database work of the one
/// before. Any failure fails the whole transaction (atomic), so entries sealed ahead of a
/// failed chunk are never written.
async fn write_pipelined(
    tx: &db::Tx,
    p: &Principal,
    valid: &Arc<Vec<(usize, NewCase)>>,
    result: &mut BulkResult,
    progress: &(dyn Fn(usize) + Sync),
) -> ApiResult<()> {
    let backend = tx.get_database_backend();
    let audited = audit::enabled();
    let ids: Arc<Vec<Uuid>> = Arc::new(valid.iter().map(|_| Uuid::now_v7()).collect());
    // Made here: the actor carries the request's correlation id, address and user agent,
    // which live in the request task's context and not on a blocking thread.
    let actor = Actor::user(p);
    // The first chunk is written here, in the order every other write takes its locks — its
    // rows first, then the chain heads (those of every chunk) — so that a writer holding a
    // head while it waits for a row or a key this batch touches cannot deadlock with it.
    let first = CHUNK.min(valid.len());
    let (rows, team, events, changes) = build(p, &actor, valid[..first].iter().map(|(_, c)| c), &ids[..first], audited);
    insert_rows(tx, &TABLE, &rows).await.map_err(db_conflict)?;
    insert_rows(tx, &TEAM_TABLE, &team).await?;
    tx.record_all(changes);
    let mut heads = None;
    if audited {
        let chains = ids.iter().map(|id| audit::chain::chain_for(CASE, Some(&id.to_string()))).collect();
        let mut h = audit::chain::lock_heads(tx, p.firm_id.0, &chains).await?;
        h.seal(backend, &actor, events)?.run(tx).await?;
        heads = Some(h);
    }
    progress(first);
    let mut done = first;
    if first < valid.len() {
        heads = write_rest(tx, p, valid, &ids, actor, heads, &mut done, progress).await?;
    }
    if done != valid.len() {
        return Err(ApiError::internal(sea_orm::DbErr::Custom(format!(
            "bulk create: {done} of {} cases were prepared",
            valid.len()
        ))));
    }
    if let Some(heads) = heads {
        heads.store(tx).await?;
    }
    for ((i, _), id) in valid.iter().zip(ids.iter()) {
        result.ids[*i] = Some(*id);
    }
    result.succeeded += valid.len();
    Ok(())
}

/// The chunks after the first: made by a producer thread one chunk ahead of the writes (up
/// to three chunks' statements alive at once: one being made, one waiting, one running).
/// Returns the heads after the last entry sealed.
#[allow(clippy::too_many_arguments)]
async fn write_rest(
    tx: &db::Tx,
    p: &Principal,
    valid: &Arc<Vec<(usize, NewCase)>>,
    ids: &Arc<Vec<Uuid>>,
    actor: Actor,
    heads: Option<audit::chain::Heads>,
    done: &mut usize,
    progress: &(dyn Fn(usize) + Sync),
) -> ApiResult<Option<audit::chain::Heads>> {
    let backend = tx.get_database_backend();
    let (send, mut receive) = tokio::sync::mpsc::channel::<Result<Prepared, sea_orm::DbErr>>(1);
    let producer = {
        let (valid, ids, p, start) = (Arc::clone(valid), Arc::clone(ids), p.clone(), *done);
        // The request's span, so what the producer logs carries its correlation id.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let mut heads = heads;
            let mut at = start;
            while at < valid.len() {
                let end = (at + CHUNK).min(valid.len());
                let items = valid[at..end].iter().map(|(_, c)| c);
                let prepared = prepare(backend, &p, &actor, items, &ids[at..end], heads.as_mut());
                let failed = prepared.is_err();
                // A send fails when the writer has given up (its error ends the transaction).
                if send.blocking_send(prepared).is_err() || failed {
                    break;
                }
                at = end;
            }
            heads
        })
    };
    while let Some(prepared) = receive.recv().await {
        let prepared = prepared?;
        prepared.cases.run(tx).await.map_err(db_conflict)?;
        prepared.team.run(tx).await?;
        prepared.entries.run(tx).await?;
        tx.record_all(prepared.changes);
        *done += prepared.count;
        progress(*done);
    }
    match producer.await {
        Ok(heads) => Ok(heads),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// The audit entity type of a case.
const CASE: &str = "case";

/// A chunk of new cases made ready to write.
struct Prepared {
    count: usize,
    cases: Encoded,
    team: Encoded,
    /// Empty when auditing is off (benchmark only).
    entries: Encoded,
    /// The `case.created` domain events.
    changes: Vec<DomainEvent>,
}

/// Makes the statements that create `items` (with `ids`): rows, team rows, and — when
/// `heads` are given — their audit entries sealed after those heads.
fn prepare<'a>(
    backend: sea_orm::DbBackend,
    p: &Principal,
    actor: &Actor,
    items: impl ExactSizeIterator<Item = &'a NewCase>,
    ids: &[Uuid],
    heads: Option<&mut audit::chain::Heads>,
) -> Result<Prepared, sea_orm::DbErr> {
    let count = items.len();
    let (rows, team, events, changes) = build(p, actor, items, ids, heads.is_some());
    Ok(Prepared {
        count,
        changes,
        cases: encode(backend, &TABLE, &rows)?,
        team: encode(backend, &TEAM_TABLE, &team)?,
        entries: match heads {
            Some(h) => h.seal(backend, actor, events)?,
            None => Encoded::default(),
        },
    })
}

/// Inserts the cases, their team rows and their audit entries. Returns the new ids.
async fn insert_cases(tx: &db::Tx, p: &Principal, items: &[&(usize, NewCase)]) -> ApiResult<Vec<Uuid>> {
    let ids: Vec<Uuid> = items.iter().map(|_| Uuid::now_v7()).collect();
    let actor = Actor::user(p);
    let (rows, team, events, changes) = build(p, &actor, items.iter().map(|(_, c)| c), &ids, audit::enabled());
    insert_rows(tx, &TABLE, &rows).await.map_err(db_conflict)?;
    insert_rows(tx, &TEAM_TABLE, &team).await?;
    audit::record_many(tx, p.firm_id, &actor, events).await?;
    tx.record_all(changes);
    Ok(ids)
}

/// What [`build`] makes: case rows, team rows, audit events, domain events.
type Built = (Vec<Vec<Cell>>, Vec<Vec<Cell>>, Vec<AuditEvent>, Vec<DomainEvent>);

/// The case rows, team rows, (when `audited`) audit events, and domain events that create
/// `items`, one id each from `ids`.
fn build<'a>(
    p: &Principal,
    actor: &Actor,
    items: impl Iterator<Item = &'a NewCase>,
    ids: &[Uuid],
    audited: bool,
) -> Built {
    let now = clock::now();
    let mut rows = Vec::with_capacity(ids.len());
    let mut team = Vec::new();
    let mut events = Vec::with_capacity(if audited { ids.len() } else { 0 });
    let mut changes = Vec::with_capacity(ids.len());
    // Whoever sees every case by role (admin, partner) is not added to each team; anyone else
    // joins the teams of the cases they import, as with a single create.
    let creator_role = (!p.role.sees_all_cases())
        .then(|| if p.role.may_lead_cases() { TeamRole::Attorney } else { TeamRole::Paralegal });
    for (c, &id) in items.zip(ids) {
        let lead = c.lead_attorney_id.map(|l| l.0);
        let m = case::Model {
            id,
            firm_id: p.firm_id.0,
            case_number: c.case_number.clone(),
            title: c.title.clone(),
            case_type: c.case_type,
            status: c.status,
            description: c.description.clone(),
            court: c.court.clone(),
            jurisdiction: c.jurisdiction.clone(),
            judge: c.judge.clone(),
            filed_at: c.filed_at,
            closed_at: c.closed_at,
            client_name: c.client_name.clone(),
            lead_attorney_id: lead,
            version: 1,
            created_by: p.user_id.0,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        rows.push(case_row(&m));
        if let Some(role) = creator_role {
            let role = if lead == Some(p.user_id.0) { TeamRole::LeadAttorney } else { role };
            team.push(team_row(id, p.user_id.0, p, role, now));
        }
        if let Some(l) = lead.filter(|l| creator_role.is_none() || *l != p.user_id.0) {
            team.push(team_row(id, l, p, TeamRole::LeadAttorney, now));
        }
        let view = audit::json(&CaseView::from(m));
        if audited {
            events.push(AuditEvent::new("case.bulk_create", CASE, Some(id.to_string())).case(id).created_fields(&view));
        }
        changes.push(DomainEvent::new(EventType::CaseCreated, p.firm_id, actor, id).case(id).data(view));
    }
    (rows, team, events, changes)
}

fn team_row(case: Uuid, user: Uuid, p: &Principal, role: TeamRole, now: chrono::DateTime<chrono::Utc>) -> Vec<Cell> {
    vec![case.into(), user.into(), p.firm_id.0.into(), enum_text(&role).into(), p.user_id.0.into(), now.into()]
}

fn db_conflict(e: sea_orm::DbErr) -> ApiError {
    if let Some(SqlErr::UniqueConstraintViolation(_)) = e.sql_err() {
        return ApiError::new(ErrorCode::Conflict, "a case number in the batch was taken meanwhile");
    }
    ApiError::from(e)
}

/// One item of a bulk update: the case and its changes (the fields of `PATCH /cases/{id}`
/// beside `id`).
#[derive(Debug)]
pub struct UpdateItem {
    pub id: CaseId,
    pub changes: UpdateCase,
}

/// Applies a partial update to each listed case (each guarded by its `version` when given).
pub async fn update_many(
    app: &App,
    p: &Principal,
    items: Vec<Result<UpdateItem, ApiError>>,
    mode: BulkMode,
) -> ApiResult<BulkResult> {
    if items.len() > MAX_ITEMS {
        return Err(ApiError::field("items", format!("at most {MAX_ITEMS} items per request")));
    }
    let mut base = BulkResult::new(items.len());
    let mut valid = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Ok(u) => valid.push((i, u)),
            Err(e) => base.fail(i, &e),
        }
    }
    let base = base.refuse_if_atomic(mode)?;
    let (valid, base) = (&valid, &base);
    let result = app
        .write(TxOptions::write(), |tx| async move {
            let mut result = base.clone();
            for (i, item) in valid {
                let outcome =
                    db::savepoint(&tx, |sp| async move { ops::update_in(&sp, p, item.id, &item.changes, None).await })
                        .await;
                match outcome {
                    Ok(v) => {
                        result.ids[*i] = Some(v.id.0);
                        result.succeeded += 1;
                    }
                    Err(e) if escalate(&e) => return Err(e),
                    Err(e) => result.fail(*i, &e),
                }
            }
            result.refuse_if_atomic(mode)
        })
        .await?;
    Ok(result.finish())
}

/// Deletes each listed case: soft by default, permanently with `hard` (admins only; refused
/// for cases with parties or docket entries).
pub async fn delete_many(
    app: &App,
    p: &Principal,
    ids: Vec<CaseId>,
    hard: bool,
    mode: BulkMode,
) -> ApiResult<BulkResult> {
    if ids.len() > MAX_ITEMS {
        return Err(ApiError::field("ids", format!("at most {MAX_ITEMS} ids per request")));
    }
    let ids = &ids;
    let result = app
        .write(TxOptions::write(), |tx| async move {
            let mut result = BulkResult::new(ids.len());
            for (i, id) in ids.iter().enumerate() {
                let id = *id;
                let outcome =
                    db::savepoint(&tx, |sp| async move { ops::delete_in(&sp, p, id, None, hard).await }).await;
                match outcome {
                    Ok(()) => {
                        result.ids[i] = Some(id.0);
                        result.succeeded += 1;
                    }
                    Err(e) if escalate(&e) => return Err(e),
                    Err(e) => result.fail(i, &e),
                }
            }
            result.refuse_if_atomic(mode)
        })
        .await?;
    Ok(result.finish())
}
