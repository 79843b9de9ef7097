//! Reminders: one delayed job per reminder of an event version, on the `calendar` queue.
//!
//! Every change of an event bumps its version and schedules that version's reminders (those
//! still in the future, and those already due but not sent while the event is still ahead,
//! at once); a job whose event has moved on (another version, completed, deleted) does
//! nothing, so a moved event's reminders fire at the new times only, and a reminder whose
//! job had not run yet when its event changed is not lost. The queue's lease
//! runs each job on one worker at a time, and `calendar_reminders_sent` makes a job that runs
//! again (its worker died after sending) send nothing twice.
//!
//! A reminder goes to the event's assignee and its attendees who are users (its creator when
//! it has neither), each only while they still may see the event, as a `notification` on
//! their sockets (through the `calendar_event.reminder` domain event, so every instance
//! delivers it to its own sockets).

use chrono::Duration;
use lexiflow_queue::NewJob;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::Deserialize;
use uuid::Uuid;

use super::model::{attendee, event};
use crate::{
    audit::Actor,
    clock,
    db::{self, TxOptions},
    events::{DomainEvent, EventType, outbox},
    http::error::{ApiError, ApiResult},
    ids::FirmId,
    jobs::JobError,
    users::model as user,
};

/// The calendar's queue.
pub const QUEUE: &str = "calendar";
/// Send one reminder of one event version.
pub const REMIND: &str = "calendar.remind";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    event_id: Uuid,
    version: i32,
    minutes: u32,
}

/// Schedules the reminders of `m` (as it is now) that are still ahead, in the caller's
/// transaction.
pub async fn schedule(tx: &impl ConnectionTrait, m: &event::Model) -> ApiResult<()> {
    if m.completed || m.deleted_at.is_some() {
        return Ok(());
    }
    let minutes: Vec<u32> = serde_json::from_str(&m.reminders).unwrap_or_default();
    let now = clock::now();
    for min in minutes {
        let due = m.starts_at - Duration::minutes(i64::from(min));
        // A reminder already due is sent now, while the event is still ahead and this reminder
        // of it was not sent yet: the job of the version before may not have run when this
        // version replaced it (a worker restarting, a busy queue, a retry waiting), and it
        // does nothing for a version that is not the event's own any more.
        let at = if due > now {
            due
        } else if m.starts_at > now && !sent_before(tx, m.id, min, due).await? {
            now
        } else {
            continue;
        };
        let job = NewJob::new(REMIND, serde_json::json!({ "eventId": m.id, "version": m.version, "minutes": min }))
            .queue(QUEUE)
            .run_at(at)
            .max_attempts(5)
            .unique_key(format!("calendar-remind:{}:{}:{min}", m.id, m.version));
        lexiflow_queue::enqueue(tx, job).await.map_err(ApiError::internal)?;
    }
    Ok(())
}

/// Whether the reminder `minutes` before event `id`, due at `due`, was sent (for any version
/// of the event: one moved since was reminded of at another time, and is reminded again).
async fn sent_before(
    db: &impl ConnectionTrait,
    id: Uuid,
    minutes: u32,
    due: chrono::DateTime<chrono::Utc>,
) -> ApiResult<bool> {
    let row = db
        .query_one_raw(db::portable(
            db.get_database_backend(),
            "SELECT 1 FROM calendar_reminders_sent WHERE event_id = ? AND minutes = ? AND due_at = ? LIMIT 1",
            vec![id.into(), i64::from(minutes).into(), clock::stored(due).into()],
        ))
        .await?;
    Ok(row.is_some())
}

/// Whether `u` may see `m` now.
pub(super) async fn sees(db: &impl ConnectionTrait, u: &user::Model, m: &event::Model) -> ApiResult<bool> {
    if u.status != user::UserStatus::Active || u.firm_id != m.firm_id {
        return Ok(false);
    }
    let Some(case) = m.case_id else {
        // A firm event reaches only the people on it.
        return Ok(true);
    };
    let live = crate::cases::model::case::Entity::find_by_id(case)
        .filter(crate::cases::model::case::Column::DeletedAt.is_null())
        .one(db)
        .await?
        .is_some();
    if !live {
        return Ok(false);
    }
    let role = if u.role.sees_all_cases() { None } else { super::ops::team_role(db, case, u.id).await? };
    if !u.role.sees_all_cases() && role.is_none() {
        return Ok(false);
    }
    match m.docket_entry_id {
        Some(e) => super::ops::sees_entry(db, u, role, case, super::ops::entry_flags(db, e).await?).await,
        None => Ok(true),
    }
}

/// The job: sends one reminder, unless the event has moved on or it was sent already.
pub async fn run(db: DatabaseConnection, payload: serde_json::Value) -> Result<(), JobError> {
    let p: Payload = serde_json::from_value(payload).map_err(|e| JobError::Invalid(e.to_string()))?;
    let Some(m) = event::Entity::find_by_id(p.event_id).one(&db).await? else { return Ok(()) };
    if m.version != p.version || m.completed || m.deleted_at.is_some() {
        return Ok(());
    }
    let mut people: Vec<Uuid> = m.assignee_id.into_iter().collect();
    let attendees = attendee::Entity::find().filter(attendee::Column::EventId.eq(m.id)).all(&db).await?;
    people.extend(attendees.iter().filter_map(|a| a.user_id));
    if people.is_empty() {
        people.push(m.created_by);
    }
    people.sort_unstable();
    people.dedup();
    let users = user::Entity::find().filter(user::Column::Id.is_in(people)).all(&db).await?;
    let mut to = Vec::with_capacity(users.len());
    for u in &users {
        if sees(&db, u, &m).await.map_err(|e| JobError::Invalid(e.message.to_string()))? {
            to.push(u.id);
        }
    }
    let (m, to) = (&m, &to);
    let due = clock::stored(m.starts_at - Duration::minutes(i64::from(p.minutes)));
    let done = db::transaction(&db, TxOptions::write(), |tx| async move {
        let tx = &tx;
        let backend = tx.get_database_backend();
        // Still this version, read again in the transaction that records the sending (the
        // event's row held on PostgreSQL; SQLite's writer lock orders it against the update):
        // an update committing after the check above must not have this version's reminder
        // sent next to the one its own version schedules.
        let lock = if backend == sea_orm::DbBackend::Postgres { " FOR UPDATE" } else { "" };
        let current = tx
            .query_one_raw(db::portable(
                backend,
                &format!(
                    "SELECT 1 FROM calendar_events WHERE id = ? AND version = ? AND completed = ? \
                     AND deleted_at IS NULL{lock}"
                ),
                vec![m.id.into(), m.version.into(), false.into()],
            ))
            .await?;
        if current.is_none() {
            return Ok::<_, ApiError>(false);
        }
        let n = tx
            .execute_raw(db::portable(
                backend,
                "INSERT INTO calendar_reminders_sent (event_id, version, minutes, sent_at, due_at) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT DO NOTHING",
                vec![m.id.into(), m.version.into(), i64::from(p.minutes).into(), clock::now().into(), due.into()],
            ))
            .await?
            .rows_affected();
        if n == 0 || to.is_empty() {
            return Ok::<_, ApiError>(false);
        }
        let mut e = DomainEvent::new(EventType::CalendarEventReminder, FirmId(m.firm_id), &Actor::system(), m.id).data(
            serde_json::json!({
                "eventId": m.id,
                "caseId": m.case_id,
                "title": m.title,
                "type": m.event_type,
                "startsAt": m.starts_at,
                "allDay": m.all_day,
                "startDate": m.start_date,
                "minutesBefore": p.minutes,
                "userIds": to,
            }),
        );
        if let Some(c) = m.case_id {
            e = e.case(c);
        }
        tx.record(e);
        Ok(true)
    })
    .await
    .map_err(|e| JobError::Invalid(e.message.to_string()))?;
    drop(done.events);
    if done.value {
        metrics::counter!("lexiflow_calendar_reminders_total").increment(1);
        outbox::sequence_firm(&db, m.firm_id).await?;
        tracing::info!(event_id = %m.id, minutes = p.minutes, recipients = to.len(), "calendar reminder sent");
    }
    Ok(())
}
