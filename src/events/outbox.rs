//! The outbox: writing a transaction's events, numbering them per firm, reading them back,
//! and pruning them.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement, TransactionTrait,
};
use uuid::Uuid;

use super::{DomainEvent, EventActor, EventType, model::event};
use crate::db::bulk::{Cell, Table, col, insert_rows, req};
use crate::ids::FirmId;

/// The origin of events written outside any `App` (no process reads them back as its own).
pub fn anonymous_origin() -> Uuid {
    static ORIGIN: std::sync::LazyLock<Uuid> = std::sync::LazyLock::new(Uuid::now_v7);
    *ORIGIN
}

/// Writes `events` in the open transaction `tx`. On SQLite (one writer at a time) each firm's
/// head is moved and the events numbered here; on PostgreSQL they are left unnumbered for the
/// [`Sequencer`] to number after commit. Fills in `seq` where it was assigned.
/// `origin` names the writer (an `App`): its own events were already handed to its
/// subscribers, so its [`tail`] skips them.
pub async fn write(tx: &impl ConnectionTrait, origin: Uuid, events: &mut [DomainEvent]) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let backend = tx.get_database_backend();
    if backend == DbBackend::Sqlite {
        let mut per_firm: HashMap<FirmId, i64> = HashMap::new();
        for e in events.iter() {
            *per_firm.entry(e.firm_id).or_default() += 1;
        }
        let mut next: HashMap<FirmId, i64> = HashMap::new();
        for (firm, n) in per_firm {
            // One statement: creates the head on a firm's first event, else moves it.
            let row = tx
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    "INSERT INTO event_heads (firm_id, seq) VALUES (?, ?)
                     ON CONFLICT (firm_id) DO UPDATE SET seq = event_heads.seq + excluded.seq RETURNING seq",
                    [firm.0.into(), n.into()],
                ))
                .await?
                .ok_or_else(|| DbErr::RecordNotFound("event head".into()))?;
            let last: i64 = row.try_get_by_index(0)?;
            next.insert(firm, last - n + 1);
        }
        for e in events.iter_mut() {
            if let Some(n) = next.get_mut(&e.firm_id) {
                e.seq = Some(*n);
                *n += 1;
            }
        }
    }
    // One bulk statement per few thousand rows (binary arrays on PostgreSQL): a bulk import
    // writes an event per case.
    let origin = origin.to_string();
    let rows: Vec<Vec<Cell>> = events
        .iter()
        .map(|e| {
            vec![
                e.id.into(),
                e.firm_id.0.into(),
                e.seq.into(),
                e.event_type.as_str().into(),
                e.event_type.entity_type().into(),
                e.entity_id.clone().into(),
                e.case_id.into(),
                e.actor.kind.clone().into(),
                e.actor.id.into(),
                e.correlation_id.clone().into(),
                e.occurred_at.into(),
                e.data.to_string().into(),
                e.sealed.into(),
                e.restricted.into(),
                origin.clone().into(),
            ]
        })
        .collect();
    insert_rows(tx, &TABLE, &rows).await?;
    Ok(())
}

const TABLE: Table = Table {
    name: "domain_events",
    columns: &[
        req("id", "uuid"),
        req("firm_id", "uuid"),
        col("seq", "int8"),
        req("event_type", "text"),
        req("entity_type", "text"),
        req("entity_id", "text"),
        col("case_id", "uuid"),
        req("actor_type", "text"),
        col("actor_id", "uuid"),
        col("correlation_id", "text"),
        req("occurred_at", "timestamptz"),
        req("data", "text"),
        req("sealed", "bool"),
        req("restricted", "bool"),
        req("origin", "text"),
    ],
};

/// Rows numbered per sequencer transaction at most.
const SEQUENCE_BATCH: i64 = 5_000;

/// Numbers a firm's committed, unnumbered events (PostgreSQL) in one short transaction: it
/// locks the firm's head row, then — with a fresh snapshot, so rows another sequencer just
/// numbered are seen as numbered — gives the unnumbered rows the next numbers in the order they
/// were written (`insert_order`, from a database sequence: never ahead of a commit that came
/// before, whatever the instances' clocks, as UUIDv7 ids could be) and moves the head. Returns how many rows it numbered. Safe to run anywhere at any time: two
/// sequencers of one firm take turns at the head row.
pub async fn sequence_firm(db: &DatabaseConnection, firm: Uuid) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    if backend != DbBackend::Postgres {
        return Ok(0);
    }
    let mut total = 0;
    loop {
        let tx = db.begin().await?;
        let lock = || {
            Statement::from_sql_and_values(
                backend,
                "SELECT seq FROM event_heads WHERE firm_id = $1 FOR UPDATE",
                [firm.into()],
            )
        };
        let head = match tx.query_one_raw(lock()).await? {
            Some(h) => h,
            None => {
                // The firm's first events.
                tx.execute_raw(Statement::from_sql_and_values(
                    backend,
                    "INSERT INTO event_heads (firm_id, seq) VALUES ($1, 0) ON CONFLICT (firm_id) DO NOTHING",
                    [firm.into()],
                ))
                .await?;
                tx.query_one_raw(lock()).await?.ok_or_else(|| DbErr::RecordNotFound("event head".into()))?
            }
        };
        let head: i64 = head.try_get_by_index(0)?;
        let numbered = tx
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "UPDATE domain_events d SET seq = $2 + p.n
                   FROM (SELECT id, row_number() OVER (ORDER BY insert_order, id) AS n
                           FROM domain_events WHERE firm_id = $1 AND seq IS NULL
                          ORDER BY insert_order, id LIMIT $3) p
                  WHERE d.id = p.id",
                [firm.into(), head.into(), SEQUENCE_BATCH.into()],
            ))
            .await?
            .rows_affected();
        if numbered == 0 {
            tx.rollback().await?;
            return Ok(total);
        }
        tx.execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE event_heads SET seq = $2 WHERE firm_id = $1",
            [firm.into(), (head + numbered as i64).into()],
        ))
        .await?;
        tx.commit().await?;
        total += numbered;
        if (numbered as i64) < SEQUENCE_BATCH {
            return Ok(total);
        }
    }
}

/// Numbers every firm's leftover unnumbered events: those whose writer died between its
/// commit and its sequencing (the `events.sequence` job runs this every minute).
pub async fn sequence_all(db: &DatabaseConnection) -> Result<u64, DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(0);
    }
    let firms: Vec<Uuid> = event::Entity::find()
        .select_only()
        .column(event::Column::FirmId)
        .filter(event::Column::Seq.is_null())
        .distinct()
        .into_tuple()
        .all(db)
        .await?;
    // One firm that fails does not leave the others unnumbered until the next sweep.
    let (mut n, mut failed) = (0, None);
    for firm in firms {
        match sequence_firm(db, firm).await {
            Ok(k) => n += k,
            Err(e) => {
                tracing::warn!(firm_id = %firm, error = %e, "numbering a firm's events failed; going on with the others");
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(n), Err)
}

/// How long a sequencer run waits for more commits to join it.
const SEQUENCE_GATHER: Duration = Duration::from_millis(10);

/// Runs [`sequence_firm`] after commits (PostgreSQL), one run per firm at a time: a commit
/// that arrives while a run is going makes it go round once more instead of starting another,
/// so a burst of writes costs a few sequencer transactions, not one each.
#[derive(Debug, Default)]
pub struct Sequencer {
    firms: Mutex<HashMap<Uuid, Arc<FirmState>>>,
    /// Told after every run that numbered events (the realtime feed and the webhook
    /// dispatcher wait on them).
    numbered: Vec<Arc<tokio::sync::Notify>>,
}

#[derive(Debug, Default)]
struct FirmState {
    running: AtomicBool,
    again: AtomicBool,
}

impl Sequencer {
    /// A sequencer that tells `numbered` whenever it has numbered events.
    pub fn new(numbered: Vec<Arc<tokio::sync::Notify>>) -> Self {
        Self { firms: Mutex::default(), numbered }
    }

    /// Makes sure `firm`'s committed events get numbered soon.
    pub fn kick(&self, db: &DatabaseConnection, firm: Uuid) {
        if db.get_database_backend() != DbBackend::Postgres {
            return;
        }
        let state = {
            let mut firms = self.firms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if firms.len() > 10_000 {
                firms.retain(|_, s| s.running.load(Ordering::Acquire));
            }
            Arc::clone(firms.entry(firm).or_default())
        };
        state.again.store(true, Ordering::Release);
        if state.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let db = db.clone();
        let numbered = self.numbered.clone();
        tokio::spawn(async move {
            loop {
                // Let the commits of the next moment join this run: under load one run then
                // numbers the events of many writes (each run is a transaction of its own).
                tokio::time::sleep(SEQUENCE_GATHER).await;
                state.again.store(false, Ordering::Release);
                let mut attempt = 0;
                loop {
                    match sequence_firm(&db, firm).await {
                        Ok(n) => {
                            if n > 0 {
                                numbered.iter().for_each(|w| w.notify_one());
                            }
                            break;
                        }
                        Err(e) if attempt < 5 => {
                            attempt += 1;
                            tracing::debug!(error = %e, firm_id = %firm, "event sequencing failed; retrying");
                            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                        }
                        Err(e) => {
                            // The `events.sequence` job numbers what is left.
                            tracing::warn!(error = %e, firm_id = %firm, "event sequencing failed; left to the sweep");
                            break;
                        }
                    }
                }
                if state.again.load(Ordering::Acquire) {
                    continue;
                }
                state.running.store(false, Ordering::Release);
                // A kick between the check and the store found `running` set and left: take it.
                if !state.again.load(Ordering::Acquire) || state.running.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        });
    }
}

/// Turns a stored row back into an event.
fn from_row(r: event::Model) -> Option<DomainEvent> {
    Some(DomainEvent {
        id: r.id,
        seq: r.seq,
        firm_id: FirmId(r.firm_id),
        event_type: EventType::parse(&r.event_type)?,
        entity_id: r.entity_id,
        case_id: r.case_id,
        actor: EventActor { kind: r.actor_type, id: r.actor_id },
        correlation_id: r.correlation_id,
        occurred_at: r.occurred_at,
        data: serde_json::from_str(&r.data).unwrap_or(serde_json::Value::Null),
        sealed: r.sealed,
        restricted: r.restricted,
    })
}

/// Every firm's head: the last number handed out.
/// One firm's head (0 before its first event): a primary-key read, whatever the number of firms.
pub async fn head(db: &impl ConnectionTrait, firm: FirmId) -> Result<i64, DbErr> {
    Ok(super::model::head::Entity::find_by_id(firm.0).one(db).await?.map_or(0, |h| h.seq))
}

pub async fn heads(db: &impl ConnectionTrait) -> Result<HashMap<FirmId, i64>, DbErr> {
    let rows = super::model::head::Entity::find().all(db).await?;
    Ok(rows.into_iter().map(|h| (FirmId(h.firm_id), h.seq)).collect())
}

/// Follows the outbox for events written by other processes (a `lexiflow import` beside the
/// embedded server, other instances) and hands them to `hub`'s subscribers, so their caches
/// forget what those writes changed. Polls the heads every `every`; starts from the heads as
/// they are (history is not replayed). Ends when the hub is dropped (its `App` is gone).
pub async fn tail(db: DatabaseConnection, hub: std::sync::Weak<super::Hub>, origin: Uuid, every: Duration) {
    let origin = origin.to_string();
    let mut seen = loop {
        match heads(&db).await {
            Ok(h) => break h,
            Err(e) => {
                tracing::debug!(error = %e, "outbox tail: cannot read the heads yet");
                tokio::time::sleep(every).await;
                if hub.strong_count() == 0 {
                    return;
                }
            }
        }
    };
    loop {
        tokio::time::sleep(every).await;
        if hub.strong_count() == 0 {
            return;
        }
        let now = match heads(&db).await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "outbox tail: cannot read the heads");
                continue;
            }
        };
        // Everything other processes wrote since the last look, handed over in one publish per
        // firm per look (up to a batch at a time), so a burst of foreign writes costs this
        // process's caches one invalidation per look rather than one per thousand events.
        for (firm, head) in now {
            let mut from = seen.get(&firm).copied().unwrap_or(0);
            while from < head {
                let batch = match foreign_rows(&db, firm, from, head, &origin, TAIL_BATCH).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::debug!(error = %e, "outbox tail: cannot read events");
                        break;
                    }
                };
                let full = batch.len() as u64 == TAIL_BATCH;
                from = if full { batch.last().and_then(|e| e.seq).unwrap_or(head) } else { head };
                let events: Vec<DomainEvent> = batch.into_iter().filter_map(from_row).collect();
                let Some(hub) = hub.upgrade() else { return };
                hub.publish(events).await;
            }
            seen.insert(firm, from.max(seen.get(&firm).copied().unwrap_or(0)));
        }
    }
}

/// A firm's numbered events in `(after, through]`, whoever wrote them, oldest first, at most
/// `limit` (the realtime feed and its replays read them).
pub async fn numbered(
    db: &impl ConnectionTrait,
    firm: FirmId,
    after: i64,
    through: i64,
    limit: u64,
) -> Result<Vec<DomainEvent>, DbErr> {
    let rows = event::Entity::find()
        .filter(event::Column::FirmId.eq(firm.0))
        .filter(event::Column::Seq.gt(after))
        .filter(event::Column::Seq.lte(through))
        .order_by_asc(event::Column::Seq)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

/// Events the tail hands over per publish at most.
const TAIL_BATCH: u64 = 5_000;

/// A firm's numbered events in `(after, through]` written by another origin than `origin`,
/// oldest first, at most `limit` (this process's own are filtered out by the database).
async fn foreign_rows(
    db: &impl ConnectionTrait,
    firm: FirmId,
    after: i64,
    through: i64,
    origin: &str,
    limit: u64,
) -> Result<Vec<event::Model>, DbErr> {
    event::Entity::find()
        .filter(event::Column::FirmId.eq(firm.0))
        .filter(event::Column::Seq.gt(after))
        .filter(event::Column::Seq.lte(through))
        .filter(event::Column::Origin.ne(origin))
        .order_by_asc(event::Column::Seq)
        .limit(limit)
        .all(db)
        .await
}

/// Deletes numbered events recorded before `before`; returns how many. Event ids are UUIDv7,
/// whose first 48 bits are the milliseconds since 1970, so "before" is a range of the primary
/// key (no index on the time column for every write to maintain).
pub async fn prune(db: &impl ConnectionTrait, before: DateTime<Utc>) -> Result<u64, DbErr> {
    let r = event::Entity::delete_many()
        .filter(event::Column::Id.lt(first_id_at(before)))
        .filter(event::Column::Seq.is_not_null())
        .exec(db)
        .await?;
    Ok(r.rows_affected)
}

/// The smallest UUIDv7 of the millisecond `at`.
fn first_id_at(at: DateTime<Utc>) -> Uuid {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0).to_be_bytes();
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_of_a_millisecond_orders_before_every_id_made_in_it_and_after_earlier_ones() {
        let now = chrono::Utc::now();
        let id = Uuid::now_v7();
        assert!(first_id_at(now - chrono::Duration::milliseconds(5)) < id);
        assert!(first_id_at(now + chrono::Duration::milliseconds(5)) > id);
        assert_eq!(first_id_at(now).get_version_num(), 7);
    }
}
