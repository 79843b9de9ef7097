//! Calendar event operations.
//!
//! Who sees an event:
//! - an event of a case: whoever sees the case; when it is tied to a docket entry, only those
//!   who may see that entry (sealed entries: admins and grant holders; restricted: no clients);
//! - a firm event (no case): admins and partners, its creator, its assignee and its attendees.
//!
//! Who changes one: for a case event, whoever may edit the case; for a firm event, a user
//! whose role may edit cases and who sees the event as creator, assignee, or admin/partner.
//! A user named as assignee or attendee must be an active user of the firm who sees the case;
//! an attendee of an event tied to a docket entry must also see the entry (no one it is sealed
//! or restricted from, and no address outside the firm when it is either).

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Query},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    deadlines::ServiceMethod,
    model::{
        attendee,
        event::{self, EventType},
    },
    reminders,
};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    cases::{
        access::visible_case,
        model::{TeamRole, case, team_member},
        sealed::grant,
    },
    clock,
    db::TxOptions,
    docket::model as entry,
    events::{DomainEvent, EventType as DomainType},
    http::error::{ApiError, ApiResult, ErrorCode},
    ids::{CalendarEventId, CaseId, DocketEntryId, UserId},
    input::Fields,
    paging::{OffsetPagination, Pagination},
    users::model::{self as user, Role},
};

const MAX_TITLE: usize = 300;
const MAX_DESCRIPTION: usize = 10_000;
const MAX_LOCATION: usize = 500;
const MAX_NAME: usize = 200;
/// Attendees one event may have.
pub const MAX_ATTENDEES: usize = 100;
/// Reminders one event may have, and the earliest (four weeks before).
pub const MAX_REMINDERS: usize = 5;
pub const MAX_REMINDER_MINUTES: u32 = 4 * 7 * 24 * 60;
/// The longest an event may last.
const MAX_SPAN_DAYS: i64 = 366;

/// An attendee: a user of the firm, or someone outside it by e-mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attendee {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// How a deadline event was computed.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadlineInfo {
    pub rule_id: String,
    pub trigger_date: NaiveDate,
    pub service_method: Option<ServiceMethod>,
    pub source: String,
    pub rule_text: String,
    pub steps: Vec<String>,
    /// Recomputed when the triggering docket entry's date changes (cleared by editing the
    /// event's dates by hand).
    pub recompute: bool,
}

/// A calendar event as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub id: CalendarEventId,
    pub case_id: Option<CaseId>,
    pub docket_entry_id: Option<DocketEntryId>,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub title: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// All-day events: the first day.
    pub start_date: Option<NaiveDate>,
    /// All-day events: the last day (inclusive).
    pub end_date: Option<NaiveDate>,
    pub all_day: bool,
    /// IANA time zone.
    pub time_zone: String,
    pub assignee_id: Option<UserId>,
    pub attendees: Vec<Attendee>,
    /// Minutes before the start.
    pub reminders: Vec<u32>,
    pub completed: bool,
    pub completed_at: Option<DateTime<Utc>>,
    pub deadline: Option<DeadlineInfo>,
    pub version: i32,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a stored computation holds.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Computation {
    pub source: String,
    pub rule_text: String,
    pub steps: Vec<String>,
}

pub(super) fn view(m: event::Model, attendees: Vec<Attendee>) -> EventView {
    let reminders: Vec<u32> = serde_json::from_str(&m.reminders).unwrap_or_default();
    let deadline = match (&m.rule_id, m.trigger_date) {
        (Some(rule), Some(trigger)) => {
            let c: Option<Computation> = m.computation.as_deref().and_then(|c| serde_json::from_str(c).ok());
            let (source, rule_text, steps) = c.map(|c| (c.source, c.rule_text, c.steps)).unwrap_or_default();
            Some(DeadlineInfo {
                rule_id: rule.clone(),
                trigger_date: trigger,
                service_method: m
                    .service_method
                    .as_deref()
                    .and_then(|s| serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()),
                source,
                rule_text,
                steps,
                recompute: m.recompute,
            })
        }
        _ => None,
    };
    EventView {
        id: CalendarEventId(m.id),
        case_id: m.case_id.map(CaseId),
        docket_entry_id: m.docket_entry_id.map(DocketEntryId),
        event_type: m.event_type,
        title: m.title,
        description: m.description,
        location: m.location,
        starts_at: m.starts_at,
        ends_at: m.ends_at,
        start_date: m.start_date,
        end_date: m.end_date,
        all_day: m.all_day,
        time_zone: m.time_zone,
        assignee_id: m.assignee_id.map(UserId),
        attendees,
        reminders,
        completed: m.completed,
        completed_at: m.completed_at,
        deadline,
        version: m.version,
        created_by: UserId(m.created_by),
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

/// `POST /calendar` body.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEvent {
    pub case_id: Option<CaseId>,
    /// A docket entry of the case (requires `caseId`).
    pub docket_entry_id: Option<DocketEntryId>,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub title: String,
    pub description: Option<String>,
    pub location: Option<String>,
    /// Timed events: the start (required) and end (defaults to the start).
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// All-day events: the first day (required) and last day (defaults to the first).
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    #[serde(default)]
    pub all_day: bool,
    /// IANA time zone; defaults to UTC.
    pub time_zone: Option<String>,
    pub assignee_id: Option<UserId>,
    #[serde(default)]
    pub attendees: Vec<Attendee>,
    /// Minutes before the start, at most 5, each at most 40,320 (four weeks).
    #[serde(default)]
    pub reminders: Vec<u32>,
}

/// `PATCH /calendar/{id}` body: absent fields stay, `null` clears.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateEvent {
    #[serde(rename = "type")]
    pub event_type: Option<EventType>,
    pub title: Option<String>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub location: Option<Option<String>>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub all_day: Option<bool>,
    pub time_zone: Option<String>,
    #[serde(default, deserialize_with = "crate::input::nullable")]
    pub assignee_id: Option<Option<UserId>>,
    pub attendees: Option<Vec<Attendee>>,
    pub reminders: Option<Vec<u32>>,
    pub completed: Option<bool>,
    /// The version last read; a stale one is refused with 412 (as is a stale `If-Match`).
    pub version: Option<i32>,
}

/// The instants and days of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Times {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
}

/// The first instant of `day` in `tz` (after a DST gap at midnight, the first instant that exists).
pub(super) fn start_of(day: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    let midnight = day.and_hms_opt(0, 0, 0)?;
    tz.from_local_datetime(&midnight)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(midnight + Duration::hours(1))).earliest())
        .map(|t| t.with_timezone(&Utc))
}

/// The time zone named `name`, or a field error.
pub(super) fn zone(f: &mut Fields, name: &str) -> Tz {
    match name.parse::<Tz>() {
        Ok(tz) => tz,
        Err(_) => {
            f.error("timeZone", "must be an IANA time zone, such as America/New_York");
            Tz::UTC
        }
    }
}

/// Checks and derives an event's times.
pub(super) fn times(
    f: &mut Fields,
    all_day: bool,
    tz: Tz,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
) -> Option<Times> {
    if all_day {
        let Some(first) = start_date else {
            f.error("startDate", "an all-day event needs its first day");
            return None;
        };
        let last = end_date.unwrap_or(first);
        if !clock::date_in_range(first) || !clock::date_in_range(last) {
            f.error("startDate", "must be in the years 1 to 9999");
            return None;
        }
        if last < first {
            f.error("endDate", "must not be before startDate");
            return None;
        }
        if (last - first).num_days() > MAX_SPAN_DAYS {
            f.error("endDate", format!("an event may last at most {MAX_SPAN_DAYS} days"));
            return None;
        }
        let (Some(s), Some(e)) = (start_of(first, tz), last.succ_opt().and_then(|d| start_of(d, tz))) else {
            f.error("startDate", "must be in the years 1 to 9999");
            return None;
        };
        Some(Times { starts_at: s, ends_at: e, start_date: Some(first), end_date: Some(last) })
    } else {
        let Some(start) = starts_at else {
            f.error("startsAt", "a timed event needs its start (or set allDay with startDate)");
            return None;
        };
        let end = ends_at.unwrap_or(start);
        if !clock::in_range(start) || !clock::in_range(end) {
            f.error("startsAt", "must be in the years 1 to 9999");
            return None;
        }
        if end < start {
            f.error("endsAt", "must not be before startsAt");
            return None;
        }
        if (end - start).num_days() > MAX_SPAN_DAYS {
            f.error("endsAt", format!("an event may last at most {MAX_SPAN_DAYS} days"));
            return None;
        }
        Some(Times { starts_at: clock::stored(start), ends_at: clock::stored(end), start_date: None, end_date: None })
    }
}

fn clean_reminders(f: &mut Fields, r: &[u32]) -> String {
    let mut r = r.to_vec();
    r.sort_unstable_by(|a, b| b.cmp(a));
    r.dedup();
    if r.len() > MAX_REMINDERS {
        f.error("reminders", format!("at most {MAX_REMINDERS} reminders"));
    }
    if r.iter().any(|m| *m > MAX_REMINDER_MINUTES) {
        f.error("reminders", format!("each reminder is at most {MAX_REMINDER_MINUTES} minutes before the start"));
    }
    serde_json::to_string(&r).unwrap_or_else(|_| "[]".into())
}

fn clean_attendees(f: &mut Fields, list: &[Attendee]) -> Vec<Attendee> {
    if list.len() > MAX_ATTENDEES {
        f.error("attendees", format!("at most {MAX_ATTENDEES} attendees"));
        return Vec::new();
    }
    let mut out: Vec<Attendee> = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        let field = format!("attendees[{i}]");
        let email = f.opt_email(&format!("{field}.email"), a.email.as_deref()).map(|e| e.trim().to_lowercase());
        let name = f.opt_text(&format!("{field}.name"), a.name.as_deref(), MAX_NAME);
        match (a.user_id, &email) {
            (Some(_), Some(_)) | (None, None) => f.error(&field, "give either userId or email"),
            _ => {}
        }
        let dup = out
            .iter()
            .any(|o| (o.user_id.is_some() && o.user_id == a.user_id) || (email.is_some() && o.email == email));
        if dup {
            f.error(&field, "is listed twice");
        }
        out.push(Attendee { user_id: a.user_id, email, name });
    }
    out
}

/// `user` when they are an active user of the firm who sees `case` (any firm user for firm
/// events), with their place on its team (None for admins and partners, who see every case).
async fn attendee_of(
    db: &impl ConnectionTrait,
    firm: Uuid,
    user: Uuid,
    case: Option<Uuid>,
) -> ApiResult<Option<(user::Model, Option<TeamRole>)>> {
    let Some(u) = user::Entity::find_by_id(user).filter(user::Column::FirmId.eq(firm)).one(db).await? else {
        return Ok(None);
    };
    if u.status != user::UserStatus::Active {
        return Ok(None);
    }
    let team = match case {
        None => None,
        Some(_) if u.role.sees_all_cases() => None,
        Some(c) => match team_role(db, c, user).await? {
            Some(r) => Some(r),
            None => return Ok(None),
        },
    };
    Ok(Some((u, team)))
}

/// Whether docket entry `id` is sealed, and whether it is restricted, now.
pub(super) async fn entry_flags(db: &impl ConnectionTrait, id: Uuid) -> ApiResult<(bool, bool)> {
    let flags: Option<(bool, bool)> = entry::Entity::find_by_id(id)
        .select_only()
        .column(entry::Column::Sealed)
        .column(entry::Column::Restricted)
        .into_tuple()
        .one(db)
        .await?;
    Ok(flags.unwrap_or((false, false)))
}

/// Whether `u`, who sees `case` (`team`: their place on its team), may also see a docket entry
/// of it with these flags: sealed, only admins and holders of a grant for the case; restricted,
/// not clients (the rule of [`visible`] and `reminders::sees`).
pub(super) async fn sees_entry(
    db: &impl ConnectionTrait,
    u: &user::Model,
    team: Option<TeamRole>,
    case: Uuid,
    (sealed, restricted): (bool, bool),
) -> ApiResult<bool> {
    if sealed && u.role != Role::Admin && !crate::cases::sealed::is_granted(db, case, u.id).await? {
        return Ok(false);
    }
    Ok(!(restricted && (team == Some(TeamRole::Client) || u.role == Role::Client)))
}

/// Refuses assignees and attendees who are not active users of the firm seeing the case. For an
/// event tied to a docket entry, [`check_people_on`] checks the attendees against the entry too.
pub(super) async fn check_people(
    db: &impl ConnectionTrait,
    firm: Uuid,
    case: Option<Uuid>,
    assignee: Option<Uuid>,
    attendees: &[Attendee],
) -> ApiResult<()> {
    check_people_on(db, firm, case, None, assignee, attendees).await
}

/// [`check_people`] for an event tied to `docket_entry` of `case`: each attendee must also
/// see the entry as it is now. A provider's copy of the event names its attendees, and Google
/// puts a copy in each one's calendar, so a sealed or restricted entry's event names no one it
/// is hidden from; an address outside the firm holds no grant and is refused there too.
pub(super) async fn check_people_on(
    db: &impl ConnectionTrait,
    firm: Uuid,
    case: Option<Uuid>,
    docket_entry: Option<Uuid>,
    assignee: Option<Uuid>,
    attendees: &[Attendee],
) -> ApiResult<()> {
    let mut f = Fields::default();
    let why = if case.is_some() {
        "must be an active user of the firm who sees the case"
    } else {
        "must be an active user of the firm"
    };
    // One wording for sealed and restricted entries: the refusal tells nothing of which.
    let hidden = "must be a user who may see the docket entry this event is tied to";
    let flags = match (case, docket_entry) {
        (Some(_), Some(e)) => entry_flags(db, e).await?,
        _ => (false, false),
    };
    if let Some(a) = assignee
        && attendee_of(db, firm, a, case).await?.is_none()
    {
        f.error("assigneeId", why);
    }
    for (i, a) in attendees.iter().enumerate() {
        let Some(id) = a.user_id else {
            if flags.0 || flags.1 {
                f.error(&format!("attendees[{i}].email"), hidden);
            }
            continue;
        };
        let field = format!("attendees[{i}].userId");
        match attendee_of(db, firm, id.0, case).await? {
            None => f.error(&field, why),
            Some((u, team)) => {
                if let Some(c) = case
                    && !sees_entry(db, &u, team, c, flags).await?
                {
                    f.error(&field, hidden);
                }
            }
        }
    }
    f.finish()
}

/// The condition that leaves the events `p` may see (see the module documentation).
pub fn visible(p: &Principal) -> Condition {
    let me = p.user_id.0;
    let firm = p.firm_id.0;
    let privileged = p.role.sees_all_cases();
    let mut firm_events = Condition::all().add(event::Column::CaseId.is_null());
    if !privileged {
        firm_events = firm_events.add(
            Condition::any().add(event::Column::CreatedBy.eq(me)).add(event::Column::AssigneeId.eq(me)).add(
                event::Column::Id.in_subquery(
                    Query::select()
                        .column(attendee::Column::EventId)
                        .from(attendee::Entity)
                        .and_where(attendee::Column::UserId.eq(me))
                        .to_owned(),
                ),
            ),
        );
    }
    let mut cases = Query::select()
        .column(case::Column::Id)
        .from(case::Entity)
        .and_where(case::Column::FirmId.eq(firm))
        .and_where(case::Column::DeletedAt.is_null())
        .to_owned();
    if !privileged {
        cases.and_where(
            case::Column::Id.in_subquery(
                Query::select()
                    .column(team_member::Column::CaseId)
                    .from(team_member::Entity)
                    .and_where(team_member::Column::UserId.eq(me))
                    .to_owned(),
            ),
        );
    }
    let mut case_events = Condition::all().add(event::Column::CaseId.in_subquery(cases));
    if p.role != Role::Admin {
        // Entries the caller may not see: sealed ones of cases they hold no grant for, and
        // (for clients) restricted ones.
        // An API key acts for its maker but never with the maker's grants: every sealed one.
        let mut sealed = Condition::all().add(entry::Column::Sealed.eq(true));
        if p.api_key.is_none() {
            sealed = sealed.add(
                entry::Column::CaseId.not_in_subquery(
                    Query::select()
                        .column(grant::Column::CaseId)
                        .from(grant::Entity)
                        .and_where(grant::Column::UserId.eq(me))
                        .to_owned(),
                ),
            );
        }
        let mut hidden = Condition::any().add(sealed);
        if p.role == Role::Client {
            hidden = hidden.add(entry::Column::Restricted.eq(true));
        }
        let hidden_entries = Query::select()
            .column(entry::Column::Id)
            .from(entry::Entity)
            .and_where(entry::Column::FirmId.eq(firm))
            .cond_where(hidden)
            .to_owned();
        case_events = case_events.add(
            Condition::any()
                .add(event::Column::DocketEntryId.is_null())
                .add(event::Column::DocketEntryId.not_in_subquery(hidden_entries)),
        );
    }
    Condition::all()
        .add(event::Column::FirmId.eq(firm))
        .add(event::Column::DeletedAt.is_null())
        .add(Condition::any().add(firm_events).add(case_events))
}

/// The attendees of `events`, in order.
pub(super) async fn attendees_of(
    db: &impl ConnectionTrait,
    events: &[Uuid],
) -> ApiResult<std::collections::HashMap<Uuid, Vec<Attendee>>> {
    let mut out: std::collections::HashMap<Uuid, Vec<Attendee>> = std::collections::HashMap::new();
    for chunk in events.chunks(500) {
        let rows = attendee::Entity::find()
            .filter(attendee::Column::EventId.is_in(chunk.to_vec()))
            .order_by_asc(attendee::Column::EventId)
            .order_by_asc(attendee::Column::Position)
            .all(db)
            .await?;
        for r in rows {
            out.entry(r.event_id).or_default().push(Attendee {
                user_id: r.user_id.map(UserId),
                email: r.email,
                name: r.name,
            });
        }
    }
    Ok(out)
}

pub(super) async fn views(db: &impl ConnectionTrait, rows: Vec<event::Model>) -> ApiResult<Vec<EventView>> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut people = attendees_of(db, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let a = people.remove(&r.id).unwrap_or_default();
            view(r, a)
        })
        .collect())
}

async fn write_attendees(db: &impl ConnectionTrait, event: Uuid, list: &[Attendee]) -> ApiResult<()> {
    attendee::Entity::delete_many().filter(attendee::Column::EventId.eq(event)).exec(db).await?;
    if list.is_empty() {
        return Ok(());
    }
    let rows = list.iter().enumerate().map(|(i, a)| attendee::ActiveModel {
        event_id: sea_orm::Set(event),
        position: sea_orm::Set(i32::try_from(i).unwrap_or(i32::MAX)),
        user_id: sea_orm::Set(a.user_id.map(|u| u.0)),
        email: sea_orm::Set(a.email.clone()),
        name: sea_orm::Set(a.name.clone()),
    });
    attendee::Entity::insert_many(rows).exec_without_returning(db).await?;
    Ok(())
}

/// Whether an event's docket entry is (or was) sealed or restricted: its events and their
/// history are confidential the same way.
pub(super) async fn confidentiality(db: &impl ConnectionTrait, m: &event::Model) -> ApiResult<(bool, bool)> {
    let Some(e) = m.docket_entry_id else { return Ok((false, false)) };
    let flags: Option<(bool, bool)> = entry::Entity::find_by_id(e)
        .select_only()
        .column(entry::Column::EverSealed)
        .column(entry::Column::EverRestricted)
        .into_tuple()
        .one(db)
        .await?;
    Ok(flags.unwrap_or((false, false)))
}

/// Which change a `calendar_event.*` domain event reports.
pub(super) fn change_event(
    kind: DomainType,
    p_firm: crate::ids::FirmId,
    actor: &Actor,
    v: &EventView,
    flags: (bool, bool),
) -> DomainEvent {
    let mut e = DomainEvent::new(kind, p_firm, actor, v.id).data(audit::json(v)).confidential(flags.0, flags.1);
    if let Some(c) = v.case_id {
        e = e.case(c.0);
    }
    e
}

/// Loads an event the caller sees, or 404.
async fn find(db: &impl ConnectionTrait, p: &Principal, id: CalendarEventId) -> ApiResult<event::Model> {
    event::Entity::find_by_id(id.0)
        .filter(visible(p))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found("calendar event"))
}

/// Refuses callers who may not change `m` (which they see).
async fn require_edit(db: &impl ConnectionTrait, p: &Principal, m: &event::Model) -> ApiResult<()> {
    match m.case_id {
        Some(c) => visible_case(db, p, CaseId(c)).await?.require_edit(),
        None => {
            let mine = m.created_by == p.user_id.0 || m.assignee_id == Some(p.user_id.0);
            if p.role.may_edit_cases() && (mine || p.role.sees_all_cases()) {
                Ok(())
            } else {
                Err(ApiError::forbidden("you may read this event but not change it"))
            }
        }
    }
}

/// Checks a docket entry named for a new event: of the case, and seen by the caller.
async fn check_entry(
    db: &impl ConnectionTrait,
    p: &Principal,
    case: CaseId,
    id: DocketEntryId,
) -> ApiResult<entry::Model> {
    let access = visible_case(db, p, case).await?.with_sealed_grant(db).await?;
    let e = entry::Entity::find_by_id(id.0)
        .filter(entry::Column::CaseId.eq(case.0))
        .filter(entry::Column::DeletedAt.is_null())
        .one(db)
        .await?
        .filter(|e| (!e.sealed || access.sees_sealed()) && (!e.restricted || access.sees_restricted()));
    e.ok_or_else(|| ApiError::field("docketEntryId", "no such docket entry on this case"))
}

/// A new event's row, checked; `created_by` is the caller.
#[derive(Clone)]
pub(super) struct NewEvent {
    pub model: event::Model,
    pub attendees: Vec<Attendee>,
}

pub(super) fn clean_new(p: &Principal, input: &CreateEvent) -> ApiResult<NewEvent> {
    let mut f = Fields::default();
    let title = f.text("title", &input.title, MAX_TITLE);
    let description = f.opt_text("description", input.description.as_deref(), MAX_DESCRIPTION);
    let location = f.opt_text("location", input.location.as_deref(), MAX_LOCATION);
    let tz_name = input.time_zone.clone().unwrap_or_else(|| "UTC".into());
    let tz = zone(&mut f, &tz_name);
    let t = times(&mut f, input.all_day, tz, input.starts_at, input.ends_at, input.start_date, input.end_date);
    let reminders = clean_reminders(&mut f, &input.reminders);
    let attendees = clean_attendees(&mut f, &input.attendees);
    if input.docket_entry_id.is_some() && input.case_id.is_none() {
        f.error("docketEntryId", "an event tied to a docket entry needs the entry's caseId");
    }
    f.finish()?;
    let t = t.ok_or_else(|| ApiError::field("startsAt", "invalid"))?;
    let now = clock::now();
    Ok(NewEvent {
        model: event::Model {
            id: Uuid::now_v7(),
            firm_id: p.firm_id.0,
            case_id: input.case_id.map(|c| c.0),
            docket_entry_id: input.docket_entry_id.map(|d| d.0),
            event_type: input.event_type,
            title,
            description,
            location,
            starts_at: t.starts_at,
            ends_at: t.ends_at,
            start_date: t.start_date,
            end_date: t.end_date,
            all_day: input.all_day,
            time_zone: tz.name().to_owned(),
            assignee_id: input.assignee_id.map(|a| a.0),
            reminders,
            completed: false,
            completed_at: None,
            rule_id: None,
            trigger_date: None,
            service_method: None,
            computation: None,
            recompute: false,
            version: 1,
            created_by: p.user_id.0,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        },
        attendees,
    })
}

/// Inserts checked events in the caller's transaction: rows, attendees, audit, domain events
/// and reminder jobs.
pub(super) async fn insert(tx: &crate::db::Tx, p: &Principal, new: Vec<NewEvent>) -> ApiResult<Vec<EventView>> {
    let actor = Actor::user(p);
    let mut out = Vec::with_capacity(new.len());
    let mut audits = Vec::with_capacity(new.len());
    for n in new {
        let m = n.model;
        event::Entity::insert(event::ActiveModel::from(m.clone())).exec_without_returning(tx).await?;
        write_attendees(tx, m.id, &n.attendees).await?;
        reminders::schedule(tx, &m).await?;
        super::sync::changed(tx, &m).await?;
        let flags = confidentiality(tx, &m).await?;
        let v = view(m, n.attendees);
        let json = audit::json(&v);
        let mut a = AuditEvent::new("calendar.create", "calendar_event", Some(v.id.to_string())).created_fields(&json);
        if let Some(c) = v.case_id {
            a = a.case(c.0);
        }
        audits.push(a);
        tx.record(change_event(DomainType::CalendarEventCreated, p.firm_id, &actor, &v, flags));
        out.push(v);
    }
    audit::record_many(tx, p.firm_id, &actor, audits).await?;
    Ok(out)
}

/// Creates an event.
pub async fn create(app: &App, p: &Principal, input: CreateEvent) -> ApiResult<EventView> {
    if !p.role.may_edit_cases() {
        return Err(ApiError::forbidden("your role may read the calendar but not add to it"));
    }
    let new = clean_new(p, &input)?;
    let (input, new) = (&input, &new);
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let mut n = new.clone();
        if let Some(c) = input.case_id {
            visible_case(tx, p, c).await?.require_edit()?;
            if let Some(e) = input.docket_entry_id {
                check_entry(tx, p, c, e).await?;
            }
        }
        let m = &n.model;
        check_people_on(tx, p.firm_id.0, m.case_id, m.docket_entry_id, m.assignee_id, &n.attendees).await?;
        n.model.updated_at = clock::now();
        let mut v = insert(tx, p, vec![n]).await?;
        v.pop().ok_or_else(|| ApiError::not_found("calendar event"))
    })
    .await
}

/// One event.
pub async fn get(app: &App, p: &Principal, id: CalendarEventId) -> ApiResult<EventView> {
    let m = find(&app.db, p, id).await?;
    let mut v = views(&app.db, vec![m]).await?;
    v.pop().ok_or_else(|| ApiError::not_found("calendar event"))
}

/// Filters of a calendar listing.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub case_id: Option<CaseId>,
    pub event_type: Option<EventType>,
    pub assignee: Option<UserId>,
    pub completed: Option<bool>,
}

/// A page of the events the caller sees, by start time.
pub async fn list(
    app: &App,
    p: &Principal,
    filter: Filter,
    page: u64,
    limit: u64,
) -> ApiResult<(Vec<EventView>, Pagination)> {
    let mut q = event::Entity::find().filter(visible(p));
    // Overlapping [from, to).
    if let Some(from) = filter.from {
        q = q.filter(event::Column::EndsAt.gte(from));
    }
    if let Some(to) = filter.to {
        q = q.filter(event::Column::StartsAt.lt(to));
    }
    if let Some(c) = filter.case_id {
        q = q.filter(event::Column::CaseId.eq(c.0));
    }
    if let Some(t) = filter.event_type {
        q = q.filter(event::Column::EventType.eq(t));
    }
    if let Some(a) = filter.assignee {
        q = q.filter(event::Column::AssigneeId.eq(a.0));
    }
    if let Some(c) = filter.completed {
        q = q.filter(event::Column::Completed.eq(c));
    }
    let total = q.clone().count(&app.db).await?;
    let rows = q
        .order_by_asc(event::Column::StartsAt)
        .order_by_asc(event::Column::Id)
        .offset((page - 1) * limit)
        .limit(limit)
        .all(&app.db)
        .await?;
    let total_pages = total.div_ceil(limit);
    Ok((
        views(&app.db, rows).await?,
        Pagination::Offset(OffsetPagination { page, limit, total, total_pages, has_next: page < total_pages }),
    ))
}

fn stale(current: i32) -> ApiError {
    ApiError::new(ErrorCode::PreconditionFailed, "the calendar event has changed since you read it; re-read and retry")
        .with_details(serde_json::json!({ "currentVersion": current }))
}

/// Changes an event, guarded by its version; its reminders move with it.
pub async fn update(
    app: &App,
    p: &Principal,
    id: CalendarEventId,
    input: UpdateEvent,
    if_match: Option<i32>,
) -> ApiResult<EventView> {
    let input = &input;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let current = find(tx, p, id).await?;
        require_edit(tx, p, &current).await?;
        let expected = if_match.or(input.version).unwrap_or(current.version);
        if expected != current.version {
            return Err(stale(current.version));
        }
        let mut f = Fields::default();
        let mut next = current.clone();
        if let Some(t) = input.event_type {
            next.event_type = t;
        }
        if let Some(t) = &input.title {
            next.title = f.text("title", t, MAX_TITLE);
        }
        if let Some(d) = &input.description {
            next.description = f.opt_text("description", d.as_deref(), MAX_DESCRIPTION);
        }
        if let Some(l) = &input.location {
            next.location = f.opt_text("location", l.as_deref(), MAX_LOCATION);
        }
        let tz = match &input.time_zone {
            Some(name) => zone(&mut f, name),
            None => current.time_zone.parse().unwrap_or(Tz::UTC),
        };
        next.time_zone = tz.name().to_owned();
        let retimed = input.starts_at.is_some()
            || input.ends_at.is_some()
            || input.start_date.is_some()
            || input.end_date.is_some()
            || input.all_day.is_some()
            || input.time_zone.is_some();
        if retimed {
            let all_day = input.all_day.unwrap_or(current.all_day);
            // Moving the start alone keeps the event's length; an end given is taken as given.
            let (s, e, sd, ed) = if all_day {
                let sd = input.start_date.or(current.start_date);
                let ed = match (input.end_date, input.start_date, current.start_date, current.end_date) {
                    (Some(ed), _, _, _) => Some(ed),
                    (None, Some(new), Some(old_first), Some(old_last)) => Some(new + (old_last - old_first)),
                    (None, Some(_), _, _) => None,
                    (None, None, _, old_last) => old_last,
                };
                (None, None, sd, ed)
            } else if current.all_day {
                (input.starts_at, input.ends_at, None, None)
            } else {
                let s = input.starts_at.unwrap_or(current.starts_at);
                let e =
                    input.ends_at.or_else(|| input.starts_at.map(|new| new + (current.ends_at - current.starts_at)));
                (Some(s), e.or(Some(current.ends_at)), None, None)
            };
            if let Some(t) = times(&mut f, all_day, tz, s, e, sd, ed) {
                next.all_day = all_day;
                next.starts_at = t.starts_at;
                next.ends_at = t.ends_at;
                next.start_date = t.start_date;
                next.end_date = t.end_date;
            }
            // Dates set by hand are no longer the rule's: they are kept as they are.
            if next.starts_at != current.starts_at || next.ends_at != current.ends_at {
                next.recompute = false;
            }
        }
        if let Some(a) = input.assignee_id {
            next.assignee_id = a.map(|u| u.0);
        }
        let attendees = input.attendees.as_ref().map(|list| clean_attendees(&mut f, list));
        if let Some(r) = &input.reminders {
            next.reminders = clean_reminders(&mut f, r);
        }
        if let Some(c) = input.completed {
            next.completed = c;
            next.completed_at = match (c, current.completed) {
                (true, false) => Some(clock::now()),
                (true, true) => current.completed_at,
                (false, _) => None,
            };
        }
        f.finish()?;
        let people_changed = input.assignee_id.is_some() || attendees.is_some();
        let old_people = attendees_of(tx, &[id.0]).await?.remove(&id.0).unwrap_or_default();
        let all_attendees = attendees.unwrap_or_else(|| old_people.clone());
        if people_changed {
            check_people_on(tx, p.firm_id.0, next.case_id, next.docket_entry_id, next.assignee_id, &all_attendees)
                .await?;
        }
        next.version = current.version + 1;
        next.updated_at = clock::now();
        let n = event::Entity::update_many()
            .set(sea_orm::ActiveModelTrait::reset_all(event::ActiveModel::from(next.clone())))
            .filter(event::Column::Id.eq(id.0))
            .filter(event::Column::Version.eq(expected))
            .exec(tx)
            .await?
            .rows_affected;
        if n != 1 {
            return Err(stale(current.version));
        }
        if input.attendees.is_some() {
            write_attendees(tx, id.0, &all_attendees).await?;
        }
        reminders::schedule(tx, &next).await?;
        super::sync::changed(tx, &next).await?;
        let before = view(current.clone(), old_people);
        let flags = confidentiality(tx, &next).await?;
        let v = view(next, all_attendees);
        let actor = Actor::user(p);
        let mut a = AuditEvent::new("calendar.update", "calendar_event", Some(id.to_string()))
            .changes(audit::diff(&audit::json(&before), &audit::json(&v)));
        if let Some(c) = v.case_id {
            a = a.case(c.0);
        }
        audit::record(tx, p.firm_id, &actor, a).await?;
        tx.record(change_event(DomainType::CalendarEventUpdated, p.firm_id, &actor, &v, flags));
        Ok(v)
    })
    .await
}

/// Deletes an event (kept as a row for the record; its reminders no longer fire).
pub async fn delete(app: &App, p: &Principal, id: CalendarEventId, if_match: Option<i32>) -> ApiResult<()> {
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let current = find(tx, p, id).await?;
        require_edit(tx, p, &current).await?;
        let expected = if_match.unwrap_or(current.version);
        let n = event::Entity::update_many()
            .col_expr(event::Column::DeletedAt, Expr::value(clock::now()))
            .col_expr(event::Column::Version, Expr::col(event::Column::Version).add(1))
            .filter(event::Column::Id.eq(id.0))
            .filter(event::Column::Version.eq(expected))
            .exec(tx)
            .await?
            .rows_affected;
        if n != 1 {
            return Err(stale(current.version));
        }
        let flags = confidentiality(tx, &current).await?;
        let mut gone = current.clone();
        gone.version += 1;
        gone.deleted_at = Some(clock::now());
        super::sync::changed(tx, &gone).await?;
        let people = attendees_of(tx, &[id.0]).await?.remove(&id.0).unwrap_or_default();
        let v = view(current, people);
        let actor = Actor::user(p);
        let mut a = AuditEvent::new("calendar.delete", "calendar_event", Some(id.to_string()))
            .changes(serde_json::json!({ "deleted": { "old": false, "new": true } }));
        if let Some(c) = v.case_id {
            a = a.case(c.0);
        }
        audit::record(tx, p.firm_id, &actor, a).await?;
        tx.record(change_event(DomainType::CalendarEventDeleted, p.firm_id, &actor, &v, flags));
        Ok(())
    })
    .await
}

/// Upcoming events the caller sees: not completed, not over, starting within `days`.
pub async fn upcoming(app: &App, p: &Principal, days: u32, limit: u64, mine: bool) -> ApiResult<Vec<EventView>> {
    let now = clock::now();
    let mut q = event::Entity::find()
        .filter(visible(p))
        .filter(event::Column::Completed.eq(false))
        .filter(event::Column::EndsAt.gte(now))
        .filter(event::Column::StartsAt.lt(now + Duration::days(i64::from(days))));
    if mine {
        let me = p.user_id.0;
        q = q.filter(
            Condition::any().add(event::Column::AssigneeId.eq(me)).add(
                event::Column::Id.in_subquery(
                    Query::select()
                        .column(attendee::Column::EventId)
                        .from(attendee::Entity)
                        .and_where(attendee::Column::UserId.eq(me))
                        .to_owned(),
                ),
            ),
        );
    }
    let rows =
        q.order_by_asc(event::Column::StartsAt).order_by_asc(event::Column::Id).limit(limit).all(&app.db).await?;
    views(&app.db, rows).await
}

/// The team role `user` holds on `case`, for checks outside a request.
pub(super) async fn team_role(db: &impl ConnectionTrait, case: Uuid, user: Uuid) -> ApiResult<Option<TeamRole>> {
    Ok(team_member::Entity::find_by_id((case, user)).one(db).await?.map(|m| m.role))
}
