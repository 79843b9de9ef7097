//! Court deadlines in the API: computing them by rule, creating their events, recomputing them
//! when their trigger moves or the firm's court closures change, and a firm's own rules and
//! closures.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    deadlines::{self, Computed, Direction, Rule, ServiceMethod, Trigger, Unit},
    holidays::Closed,
    model::{closure, event, rule},
    ops::{self, Computation, EventView, NewEvent},
    reminders,
};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    cases::access::visible_case,
    clock,
    db::TxOptions,
    docket::model as entry,
    events::EventType as DomainType,
    http::error::{ApiError, ApiResult},
    ids::{CaseId, DocketEntryId, FirmId, UserId},
    input::Fields,
};

/// Closures a firm may record.
pub const MAX_CLOSURES: u64 = 5_000;
/// Rules a firm may add.
pub const MAX_RULES: u64 = 1_000;

/// The rules a firm can use: the shipped ones, then its own.
pub async fn rules(db: &impl ConnectionTrait, firm: Uuid) -> ApiResult<Vec<Rule>> {
    let mut out: Vec<Rule> = deadlines::builtin().to_vec();
    let own = rule::Entity::find().filter(rule::Column::FirmId.eq(firm)).order_by_asc(rule::Column::Id).all(db).await?;
    out.extend(own.into_iter().filter_map(from_row));
    Ok(out)
}

fn from_row(r: rule::Model) -> Option<Rule> {
    let unit = serde_json::from_value(serde_json::Value::String(r.unit)).ok()?;
    let direction = serde_json::from_value(serde_json::Value::String(r.direction)).ok()?;
    Some(Rule {
        id: r.id,
        name: r.name,
        source: r.source,
        text: r.text,
        trigger: r.trigger,
        amount: u32::try_from(r.amount).ok()?,
        unit,
        direction,
        service_extension: r.service_extension,
        builtin: false,
    })
}

/// One rule by id: shipped, or the firm's.
pub async fn find_rule(db: &impl ConnectionTrait, firm: Uuid, id: &str) -> ApiResult<Option<Rule>> {
    if let Some(r) = deadlines::builtin_rule(id) {
        return Ok(Some(r.clone()));
    }
    Ok(rule::Entity::find_by_id((firm, id.to_owned())).one(db).await?.and_then(from_row))
}

/// A court as closures and cases are matched by: without regard to case or surrounding
/// spaces (`""`: none, or for a closure every court).
pub fn court_key(court: Option<&str>) -> String {
    court.map(|c| c.trim().to_lowercase()).unwrap_or_default()
}

/// Whether a closure recorded for `closure_court` (`""`: every court) closes the court of a
/// case whose court is `case_court`.
pub fn closes(closure_court: &str, case_court: Option<&str>) -> bool {
    let wanted = court_key(Some(closure_court));
    wanted.is_empty() || (case_court.is_some() && court_key(case_court) == wanted)
}

/// The firm's closures (at most [`MAX_CLOSURES`]): read once for the deadlines computed
/// together, then narrowed by [`closed_among`].
async fn closures_of(db: &impl ConnectionTrait, firm: Uuid) -> ApiResult<Vec<closure::Model>> {
    Ok(closure::Entity::find().filter(closure::Column::FirmId.eq(firm)).all(db).await?)
}

/// The closed days for computing `rule` from `trigger` for a case in `court`: federal holidays,
/// the firm's closures of every court, and those of that court (from `closures`, the firm's).
/// A closure of another court never moves a deadline (it would move it later than the rule
/// allows).
fn closed_among(closures: &[closure::Model], court: Option<&str>, rule: &Rule, trigger: NaiveDate) -> Closed {
    let (first, last) = deadlines::years(rule, trigger);
    let from = NaiveDate::from_ymd_opt(first.max(1), 1, 1).unwrap_or(NaiveDate::MIN);
    let to = NaiveDate::from_ymd_opt(last.min(9999), 12, 31).unwrap_or(NaiveDate::MAX);
    let days = closures.iter().filter(|c| (from..=to).contains(&c.day) && closes(&c.court, court)).map(|c| c.day);
    Closed::new(first, last, days)
}

/// `POST /cases/{id}/deadlines/compute` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputeRequest {
    pub rule_id: String,
    /// The day of the triggering event. Defaults to the docket entry's date when
    /// `docketEntryId` is given.
    pub trigger_date: Option<NaiveDate>,
    /// Periods in hours: the instant of the triggering event (with `timeZone`).
    pub trigger_at: Option<DateTime<Utc>>,
    /// The court's IANA time zone (defaults to UTC); all-day deadline events use it too.
    pub time_zone: Option<String>,
    pub service_method: Option<ServiceMethod>,
    /// The triggering docket entry: created events are tied to it and recomputed when its date
    /// changes.
    pub docket_entry_id: Option<DocketEntryId>,
    /// Create the deadline's calendar event too.
    #[serde(default)]
    pub create: bool,
    pub assignee_id: Option<UserId>,
    /// Reminders of the created event (minutes before).
    #[serde(default)]
    pub reminders: Vec<u32>,
}

/// What a computation returns.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeResult {
    pub deadlines: Vec<Computed>,
    /// The events created (with `create: true`).
    pub events: Vec<EventView>,
}

fn compute_error(e: deadlines::ComputeError) -> ApiError {
    match e {
        deadlines::ComputeError::NeedsInstant => ApiError::field("triggerAt", e.to_string()),
        deadlines::ComputeError::OutOfRange => ApiError::field("triggerDate", e.to_string()),
    }
}

/// The event times of a computed deadline: all day on its date, or at its instant.
fn deadline_times(c: &Computed, tz: Tz) -> ApiResult<ops::Times> {
    match c.due_at {
        Some(at) => Ok(ops::Times { starts_at: at, ends_at: at, start_date: None, end_date: None }),
        None => {
            let s = ops::start_of(c.due_date, tz);
            let e = c.due_date.succ_opt().and_then(|d| ops::start_of(d, tz));
            match (s, e) {
                (Some(s), Some(e)) => Ok(ops::Times {
                    starts_at: s,
                    ends_at: e,
                    start_date: Some(c.due_date),
                    end_date: Some(c.due_date),
                }),
                _ => Err(ApiError::field("triggerDate", "the deadline falls outside the years 1 to 9999")),
            }
        }
    }
}

fn computation_json(c: &Computed) -> String {
    serde_json::to_string(&Computation {
        source: c.source.clone(),
        rule_text: c.rule_text.clone(),
        steps: c.steps.clone(),
    })
    .unwrap_or_default()
}

fn method_name(m: ServiceMethod) -> Option<String> {
    serde_json::to_value(m).ok().and_then(|v| v.as_str().map(str::to_owned))
}

/// The rule and its computed deadline for a case (checks: the case and the docket entry are
/// the caller's to see; with `create`, to edit).
async fn compute_in(
    db: &impl ConnectionTrait,
    p: &Principal,
    case_id: CaseId,
    input: &ComputeRequest,
    tz: Tz,
) -> ApiResult<(Rule, Computed)> {
    let access = visible_case(db, p, case_id).await?.with_sealed_grant(db).await?;
    if input.create {
        access.require_edit()?;
    }
    let linked = match input.docket_entry_id {
        Some(e) => {
            let found = entry::Entity::find_by_id(e.0)
                .filter(entry::Column::CaseId.eq(case_id.0))
                .filter(entry::Column::DeletedAt.is_null())
                .one(db)
                .await?
                .filter(|m| (!m.sealed || access.sees_sealed()) && (!m.restricted || access.sees_restricted()));
            Some(found.ok_or_else(|| ApiError::field("docketEntryId", "no such docket entry on this case"))?)
        }
        None => None,
    };
    let rule = find_rule(db, p.firm_id.0, &input.rule_id)
        .await?
        .ok_or_else(|| ApiError::field("ruleId", "no such rule; GET /api/v1/calendar/rules lists them"))?;
    let trigger = match (rule.unit, input.trigger_at, input.trigger_date.or(linked.as_ref().map(|e| e.entry_date))) {
        (_, Some(at), _) => Trigger::At(at, tz),
        (Unit::Days, None, Some(d)) => Trigger::Day(d),
        (Unit::Hours, None, _) => {
            return Err(ApiError::field("triggerAt", "a period in hours needs the instant of its trigger"));
        }
        (Unit::Days, None, None) => {
            return Err(ApiError::field("triggerDate", "give triggerDate, or a docketEntryId whose date it is"));
        }
    };
    let day = match trigger {
        Trigger::Day(d) => d,
        Trigger::At(at, tz) => at.with_timezone(&tz).date_naive(),
    };
    let closed = closed_among(&closures_of(db, p.firm_id.0).await?, access.case.court.as_deref(), &rule, day);
    let c = deadlines::compute(&rule, trigger, input.service_method, &closed).map_err(compute_error)?;
    Ok((rule, c))
}

/// Computes a rule's deadline for a case, and with `create` makes its event.
pub async fn compute(app: &App, p: &Principal, case_id: CaseId, input: ComputeRequest) -> ApiResult<ComputeResult> {
    let mut f = Fields::default();
    let tz_name = input.time_zone.clone().unwrap_or_else(|| "UTC".into());
    let tz = ops::zone(&mut f, &tz_name);
    if input.trigger_date.is_some_and(|d| !clock::date_in_range(d)) {
        f.error("triggerDate", "must be in the years 1 to 9999");
    }
    if input.trigger_at.is_some_and(|t| !clock::in_range(t)) {
        f.error("triggerAt", "must be in the years 1 to 9999");
    }
    f.finish()?;
    let input = &input;
    if !input.create {
        // Computing only reads: no write transaction (on SQLite it would queue behind writers).
        let (_, c) = compute_in(&app.db, p, case_id, input, tz).await?;
        return Ok(ComputeResult { deadlines: vec![c], events: Vec::new() });
    }
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let (rule, c) = compute_in(tx, p, case_id, input, tz).await?;
        let mut events = Vec::new();
        if input.create {
            let t = deadline_times(&c, tz)?;
            let create = ops::CreateEvent {
                case_id: Some(case_id),
                docket_entry_id: input.docket_entry_id,
                event_type: super::model::event::EventType::Deadline,
                title: format!("{} ({})", rule.name, rule.source),
                all_day: c.due_at.is_none(),
                starts_at: Some(t.starts_at),
                start_date: t.start_date,
                time_zone: Some(tz.name().to_owned()),
                assignee_id: input.assignee_id,
                reminders: input.reminders.clone(),
                ..Default::default()
            };
            let mut n: NewEvent = ops::clean_new(p, &create)?;
            n.model.rule_id = Some(rule.id.clone());
            n.model.trigger_date = Some(c.trigger_date);
            n.model.service_method = input.service_method.and_then(method_name);
            n.model.computation = Some(computation_json(&c));
            // Only a deadline counted in days from a docket entry's date follows that date.
            n.model.recompute = rule.unit == Unit::Days;
            ops::check_people(tx, p.firm_id.0, Some(case_id.0), n.model.assignee_id, &n.attendees).await?;
            events = ops::insert(tx, p, vec![n]).await?;
        }
        Ok(ComputeResult { deadlines: vec![c], events })
    })
    .await
}

/// Recomputes the open rule-computed deadlines in `events` (rows as they are now) and saves
/// those whose dates changed: new version, reminders, audit and domain event. `trigger_of`
/// gives each event's trigger day (a moved docket entry's new date, or its own).
async fn recompute(
    tx: &crate::db::Tx,
    firm: FirmId,
    actor: &Actor,
    events: Vec<event::Model>,
    trigger_of: impl Fn(&event::Model) -> Option<NaiveDate>,
    why: &str,
) -> ApiResult<usize> {
    let mut changed = 0;
    // The firm's closures, read once for all the events.
    let closures = if events.is_empty() { Vec::new() } else { closures_of(tx, firm.0).await? };
    // The court of each event's case (events of one case share it).
    let mut courts: std::collections::HashMap<Uuid, Option<String>> = Default::default();
    for m in events {
        let (Some(rule_id), Some(trigger)) = (m.rule_id.clone(), trigger_of(&m)) else { continue };
        let Some(rule) = find_rule(tx, firm.0, &rule_id).await? else {
            tracing::warn!(event_id = %m.id, rule_id, "a deadline's rule is gone: its dates are kept");
            continue;
        };
        if rule.unit != Unit::Days {
            continue;
        }
        let tz: Tz = m.time_zone.parse().unwrap_or(Tz::UTC);
        let service = m
            .service_method
            .as_deref()
            .and_then(|s| serde_json::from_value(serde_json::Value::String(s.to_owned())).ok());
        let court = match m.case_id {
            Some(case) => match courts.get(&case) {
                Some(c) => c.clone(),
                None => {
                    let c = crate::cases::model::case::Entity::find_by_id(case)
                        .filter(crate::cases::model::case::Column::FirmId.eq(firm.0))
                        .one(tx)
                        .await?
                        .and_then(|c| c.court);
                    courts.insert(case, c.clone());
                    c
                }
            },
            None => None,
        };
        let closed = closed_among(&closures, court.as_deref(), &rule, trigger);
        let Ok(c) = deadlines::compute(&rule, Trigger::Day(trigger), service, &closed) else { continue };
        let t = deadline_times(&c, tz)?;
        if t.starts_at == m.starts_at && t.ends_at == m.ends_at && m.trigger_date == Some(trigger) {
            continue;
        }
        let mut next = m.clone();
        next.starts_at = t.starts_at;
        next.ends_at = t.ends_at;
        next.start_date = t.start_date;
        next.end_date = t.end_date;
        next.trigger_date = Some(trigger);
        next.computation = Some(computation_json(&c));
        next.version = m.version + 1;
        next.updated_at = clock::now();
        let n = event::Entity::update_many()
            .set(sea_orm::ActiveModelTrait::reset_all(event::ActiveModel::from(next.clone())))
            .filter(event::Column::Id.eq(m.id))
            .filter(event::Column::Version.eq(m.version))
            .exec(tx)
            .await?
            .rows_affected;
        if n != 1 {
            continue;
        }
        reminders::schedule(tx, &next).await?;
        super::sync::changed(tx, &next).await?;
        let people = ops::attendees_of(tx, &[m.id]).await?.remove(&m.id).unwrap_or_default();
        let flags = ops::confidentiality(tx, &next).await?;
        let v = ops::view(next, people);
        let mut a = AuditEvent::new("calendar.recompute", "calendar_event", Some(m.id.to_string())).changes(
            serde_json::json!({
                "startDate": { "old": m.start_date, "new": v.start_date },
                "triggerDate": { "old": m.trigger_date, "new": trigger },
                "reason": why,
            }),
        );
        if let Some(c) = v.case_id {
            a = a.case(c.0);
        }
        audit::record(tx, firm, actor, a).await?;
        tx.record(ops::change_event(DomainType::CalendarEventUpdated, firm, actor, &v, flags));
        changed += 1;
    }
    Ok(changed)
}

/// The firm's open deadlines that follow their rule: computed in days, neither completed nor
/// deleted (narrowed further by the caller).
fn recomputable(firm: FirmId) -> sea_orm::Select<event::Entity> {
    event::Entity::find()
        .filter(event::Column::FirmId.eq(firm.0))
        .filter(event::Column::Recompute.eq(true))
        .filter(event::Column::Completed.eq(false))
        .filter(event::Column::DeletedAt.is_null())
}

/// After a docket entry's date changed (in the same transaction): recomputes the deadlines
/// computed from it.
pub async fn entry_moved(tx: &crate::db::Tx, p: &Principal, entry: Uuid, date: NaiveDate) -> ApiResult<usize> {
    let events = recomputable(p.firm_id).filter(event::Column::DocketEntryId.eq(entry)).all(tx).await?;
    let actor = Actor::user(p);
    recompute(tx, p.firm_id, &actor, events, |_| Some(date), "the docket entry's date changed").await
}

/// After a case's court changed (in the same transaction): recomputes its open rule-computed
/// deadlines, since the closures that count are that court's.
pub async fn case_court_changed(tx: &crate::db::Tx, p: &Principal, case: Uuid) -> ApiResult<usize> {
    let events = recomputable(p.firm_id).filter(event::Column::CaseId.eq(case)).all(tx).await?;
    let actor = Actor::user(p);
    recompute(tx, p.firm_id, &actor, events, |m| m.trigger_date, "the case's court changed").await
}

/// After the firm's closures changed: recomputes its open rule-computed deadlines that fall
/// within 60 days of `day` or later.
async fn closures_changed(tx: &crate::db::Tx, p: &Principal, day: NaiveDate) -> ApiResult<usize> {
    let from = ops::start_of(day - Duration::days(60), Tz::UTC).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let events = recomputable(p.firm_id).filter(event::Column::StartsAt.gte(from)).all(tx).await?;
    let actor = Actor::user(p);
    recompute(tx, p.firm_id, &actor, events, |m| m.trigger_date, "the firm's court closures changed").await
}

fn require_admin(p: &Principal) -> ApiResult<()> {
    if p.role.sees_all_cases() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only an admin or a partner may change the firm's rules and court closures"))
    }
}

/// A court closure.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClosureView {
    pub day: NaiveDate,
    pub name: String,
    /// The court it closes, as cases name it in their `court` (compared without regard to case
    /// or surrounding spaces); absent or empty: every court of the firm.
    #[serde(default)]
    pub court: Option<String>,
}

impl From<closure::Model> for ClosureView {
    fn from(c: closure::Model) -> Self {
        Self { day: c.day, name: c.name, court: (!c.court.is_empty()).then_some(c.court) }
    }
}

/// The firm's closures in `[from, to]`.
pub async fn list_closures(app: &App, p: &Principal, from: NaiveDate, to: NaiveDate) -> ApiResult<Vec<ClosureView>> {
    Ok(closure::Entity::find()
        .filter(closure::Column::FirmId.eq(p.firm_id.0))
        .filter(closure::Column::Day.between(from, to))
        .order_by_asc(closure::Column::Day)
        .all(&app.db)
        .await?
        .into_iter()
        .map(ClosureView::from)
        .collect())
}

/// A closure's court as stored: plain text, trimmed; `""` for every court.
fn closure_court(court: Option<&str>) -> String {
    crate::input::plain(court.unwrap_or_default()).trim().to_owned()
}

/// The audit identity of a closure: its day, and its court when it has one.
fn closure_id(day: NaiveDate, court: &str) -> String {
    if court.is_empty() { day.to_string() } else { format!("{day}/{}", court_key(Some(court))) }
}

/// The firm's closure on `day` of `court` however it was written (case, spaces).
async fn same_court_on(
    db: &impl ConnectionTrait,
    firm: Uuid,
    day: NaiveDate,
    court: &str,
) -> ApiResult<Option<closure::Model>> {
    let on_day = closure::Entity::find()
        .filter(closure::Column::FirmId.eq(firm))
        .filter(closure::Column::Day.eq(day))
        .all(db)
        .await?;
    let key = court_key(Some(court));
    Ok(on_day.into_iter().find(|c| court_key(Some(&c.court)) == key))
}

/// Records a closure (or renames one) and recomputes the deadlines it moves.
pub async fn add_closure(app: &App, p: &Principal, input: ClosureView) -> ApiResult<(ClosureView, usize)> {
    require_admin(p)?;
    let mut f = Fields::default();
    let name = f.text("name", &input.name, 200);
    let court = closure_court(input.court.as_deref());
    if court.chars().count() > 200 {
        f.error("court", "must be at most 200 characters");
    }
    if !clock::date_in_range(input.day) {
        f.error("day", "must be in the years 1 to 9999");
    }
    f.finish()?;
    let (name, day, court) = (&name, input.day, &court);
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        use sea_orm::PaginatorTrait;
        let count = closure::Entity::find().filter(closure::Column::FirmId.eq(p.firm_id.0)).count(tx).await?;
        // The same court however it is written: one closure a day, renamed in place.
        let existing = same_court_on(tx, p.firm_id.0, day, court).await?;
        if existing.is_none() && count >= MAX_CLOSURES {
            return Err(ApiError::field("day", format!("a firm may record at most {MAX_CLOSURES} closures")));
        }
        if let Some(e) = &existing {
            closure::Entity::delete_by_id((p.firm_id.0, day, e.court.clone())).exec(tx).await?;
        }
        closure::Entity::insert(closure::ActiveModel::from(closure::Model {
            firm_id: p.firm_id.0,
            day,
            court: court.clone(),
            name: name.clone(),
            created_by: p.user_id.0,
            created_at: clock::now(),
        }))
        .exec_without_returning(tx)
        .await?;
        let actor = Actor::user(p);
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("calendar.closure.add", "court_closure", Some(closure_id(day, court))).changes(
                serde_json::json!({
                    "name": { "old": existing.as_ref().map(|e| e.name.clone()), "new": name },
                    "court": { "old": existing.map(|e| e.court), "new": court },
                }),
            ),
        )
        .await?;
        let moved = closures_changed(tx, p, day).await?;
        Ok((ClosureView { day, name: name.clone(), court: (!court.is_empty()).then(|| court.clone()) }, moved))
    })
    .await
}

/// Removes a closure (of `court`, or the one of every court) and recomputes the deadlines it
/// had moved.
pub async fn remove_closure(app: &App, p: &Principal, day: NaiveDate, court: Option<&str>) -> ApiResult<usize> {
    require_admin(p)?;
    let court = closure_court(court);
    let court = &court;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let Some(found) = same_court_on(tx, p.firm_id.0, day, court).await? else {
            return Err(ApiError::not_found("court closure"));
        };
        closure::Entity::delete_by_id((p.firm_id.0, day, found.court.clone())).exec(tx).await?;
        let actor = Actor::user(p);
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("calendar.closure.remove", "court_closure", Some(closure_id(day, court))).changes(
                serde_json::json!({ "deleted": { "old": false, "new": true }, "court": { "old": found.court, "new": null } }),
            ),
        )
        .await?;
        closures_changed(tx, p, day).await
    })
    .await
}

/// `POST /calendar/rules` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRule {
    /// Lower-case letters, digits and dashes, 3 to 64; not a shipped rule's id.
    pub id: String,
    pub name: String,
    pub source: String,
    pub text: String,
    pub trigger: String,
    pub amount: u32,
    pub unit: Unit,
    pub direction: Direction,
    #[serde(default)]
    pub service_extension: bool,
}

/// Adds a rule of the firm's own.
pub async fn add_rule(app: &App, p: &Principal, input: NewRule) -> ApiResult<Rule> {
    require_admin(p)?;
    let mut f = Fields::default();
    let id = input.id.trim().to_owned();
    if !(3..=64).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        f.error("id", "3 to 64 lower-case letters, digits and dashes");
    }
    if deadlines::builtin_rule(&id).is_some() {
        f.error("id", "is the id of a rule shipped with LexiFlow");
    }
    let r = Rule {
        id,
        name: f.text("name", &input.name, 300),
        source: f.text("source", &input.source, 300),
        text: f.text("text", &input.text, 5_000),
        trigger: f.text("trigger", &input.trigger, 300),
        amount: input.amount,
        unit: input.unit,
        direction: input.direction,
        service_extension: input.service_extension,
        builtin: false,
    };
    if let Some(why) = r.invalid() {
        f.error("amount", why);
    }
    f.finish()?;
    let r = &r;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        use sea_orm::PaginatorTrait;
        if rule::Entity::find_by_id((p.firm_id.0, r.id.clone())).one(tx).await?.is_some() {
            return Err(ApiError::new(
                crate::http::error::ErrorCode::Conflict,
                "the firm already has a rule with this id",
            ));
        }
        if rule::Entity::find().filter(rule::Column::FirmId.eq(p.firm_id.0)).count(tx).await? >= MAX_RULES {
            return Err(ApiError::field("id", format!("a firm may add at most {MAX_RULES} rules")));
        }
        let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        rule::Entity::insert(rule::ActiveModel::from(rule::Model {
            firm_id: p.firm_id.0,
            id: r.id.clone(),
            name: r.name.clone(),
            source: r.source.clone(),
            text: r.text.clone(),
            trigger: r.trigger.clone(),
            amount: i32::try_from(r.amount).unwrap_or(i32::MAX),
            unit: name(serde_json::to_value(r.unit).unwrap_or_default()),
            direction: name(serde_json::to_value(r.direction).unwrap_or_default()),
            service_extension: r.service_extension,
            created_by: p.user_id.0,
            created_at: clock::now(),
        }))
        .exec_without_returning(tx)
        .await?;
        let actor = Actor::user(p);
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("calendar.rule.add", "deadline_rule", Some(r.id.clone())).created_fields(&audit::json(r)),
        )
        .await?;
        Ok(r.clone())
    })
    .await
}

/// Removes a rule of the firm's own. Deadlines computed from it keep their dates and
/// computation, and are no longer recomputed.
pub async fn remove_rule(app: &App, p: &Principal, id: &str) -> ApiResult<()> {
    require_admin(p)?;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let n = rule::Entity::delete_by_id((p.firm_id.0, id.to_owned())).exec(tx).await?.rows_affected;
        if n == 0 {
            return Err(ApiError::not_found("deadline rule"));
        }
        // Its deadlines keep their dates; a rule added later under the same id must not move them.
        event::Entity::update_many()
            .col_expr(event::Column::Recompute, sea_orm::sea_query::Expr::value(false))
            .filter(event::Column::FirmId.eq(p.firm_id.0))
            .filter(event::Column::RuleId.eq(id))
            .exec(tx)
            .await?;
        let actor = Actor::user(p);
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("calendar.rule.remove", "deadline_rule", Some(id.to_owned()))
                .changes(serde_json::json!({ "deleted": { "old": false, "new": true } })),
        )
        .await?;
        Ok(())
    })
    .await
}
