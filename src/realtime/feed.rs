//! The feed: one task per instance that reads committed events from the outbox in each firm's
//! sequence order and carries out their [`plan`](super::route::plan) on this instance's sockets.
//!
//! Every instance reads the outbox itself, so an event committed anywhere reaches every
//! instance's sockets, in order, whether or not Redis is up (Redis only wakes the others
//! sooner). Live delivery and a socket's replay take turns on one lock, so a replaying
//! socket gets the events up to the feed's mark from the replay and the ones after it live:
//! no gap, no duplicate (decision 0013).

use std::{collections::HashMap, sync::atomic::Ordering};

use chrono::{DateTime, Utc};
use sea_orm::DbErr;
use serde::Serialize;
use serde_json::Value;
use socketioxide::{extract::SocketRef, operators::BroadcastOperators};
use uuid::Uuid;

use super::{
    Conn,
    route::{self, Action, Emit},
};
use crate::{
    app::{App, AppInner},
    events::{DomainEvent, outbox},
    ids::FirmId,
};

/// Events read from the outbox per query.
const BATCH: u64 = 1_000;

/// The bus topic on which instances wake each other's feeds.
pub const TOPIC: &str = "realtime";

/// How far the feed has delivered, per firm. None until it first reads the heads (it starts
/// from the heads as they are, and again whenever this instance had no sockets).
#[derive(Debug, Default)]
pub struct Marks(Option<HashMap<FirmId, i64>>);

impl Marks {
    async fn init(&mut self, app: &App) -> Result<&mut HashMap<FirmId, i64>, DbErr> {
        if self.0.is_none() {
            self.0 = Some(outbox::heads(&app.db).await?);
        }
        Ok(self.0.get_or_insert_default())
    }
}

/// What a client receives for every event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub seq: Option<i64>,
    pub firm_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<Uuid>,
    pub data: &'a Value,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: Option<&'a str>,
}

impl<'a> Payload<'a> {
    fn of(e: &'a DomainEvent, x: &'a Emit) -> Self {
        Self {
            kind: x.event,
            seq: e.seq,
            firm_id: e.firm_id.0,
            case_id: e.case_id,
            data: &x.data,
            occurred_at: e.occurred_at,
            correlation_id: e.correlation_id.as_deref(),
        }
    }
}

/// Runs the feed until `app` is dropped.
pub async fn run(app: std::sync::Weak<AppInner>) {
    loop {
        let Some(app) = App::upgrade(&app) else { return };
        let wake = std::sync::Arc::clone(&app.realtime.wake);
        let poll = app.config.realtime.poll_every;
        if let Err(e) = pass(&app).await {
            tracing::debug!(error = %e, "realtime feed: cannot read the outbox; trying again");
        }
        drop(app);
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// One look at the outbox: wakes the other instances if this one committed something, then
/// delivers what is new.
async fn pass(app: &App) -> Result<(), DbErr> {
    let gw = &app.realtime;
    if gw.dirty.swap(false, Ordering::AcqRel) && app.redis.is_some() {
        app.bus.publish(TOPIC, "").await;
    }
    let mut marks = gw.marks.lock().await;
    if gw.connected.load(Ordering::Acquire) == 0 {
        // Nothing to deliver to: start from the heads when a socket comes.
        marks.0 = None;
        return Ok(());
    }
    let Some(ns) = gw.namespace() else { return Ok(()) };
    let delivered = marks.init(app).await?;
    for (firm, head) in outbox::heads(&app.db).await? {
        let mut from = delivered.get(&firm).copied().unwrap_or(0);
        if head <= from {
            continue;
        }
        if ns.clone().local().to(route::firm_room(firm.0)).sockets().is_empty() {
            delivered.insert(firm, head);
            continue;
        }
        while from < head {
            let events = outbox::numbered(&app.db, firm, from, head, BATCH).await?;
            let Some(last) = events.last().and_then(|e| e.seq) else {
                from = head;
                break;
            };
            for e in &events {
                apply(&ns, e).await;
            }
            from = last;
            delivered.insert(firm, from);
        }
        delivered.insert(firm, from);
    }
    Ok(())
}

/// Carries out an event's plan on this instance's sockets.
async fn apply(ns: &BroadcastOperators, e: &DomainEvent) {
    for action in route::plan(e) {
        match action {
            Action::Emit(x) => {
                let mut op = ns.clone().local();
                for r in &x.to {
                    op = op.to(r.clone());
                }
                for r in &x.except {
                    op = op.except(r.clone());
                }
                let sent = op.emit(x.event, &Payload::of(e, &x)).await;
                // From the event's making (in its transaction, just before the commit) to every
                // socket here holding it: the server's part of what a client waits.
                let lag = (Utc::now() - e.occurred_at).to_std().unwrap_or_default();
                metrics::histogram!("lexiflow_realtime_delivery_lag_seconds").record(lag.as_secs_f64());
                match sent {
                    Ok(()) => metrics::counter!("lexiflow_realtime_events_total", "event" => x.event).increment(1),
                    Err(err) => {
                        // A socket whose buffer is full is too slow to keep up; it can catch up
                        // with `lastSeq` when it reconnects.
                        metrics::counter!("lexiflow_realtime_emit_failures_total").increment(1);
                        tracing::debug!(error = %err, event = x.event, "realtime emit failed for some sockets");
                    }
                }
            }
            Action::LeaveCase { user, case } => {
                for s in ns.clone().local().to(route::user_room(user)).sockets() {
                    if let Some(conn) = s.extensions.get::<std::sync::Arc<Conn>>()
                        && !conn.principal.role.sees_all_cases()
                    {
                        s.leave(route::case_rooms(case));
                        conn.forget(case);
                    }
                }
            }
            Action::SealedAccess { user, case, granted } => {
                for s in ns.clone().local().to(route::user_room(user)).sockets() {
                    let Some(conn) = s.extensions.get::<std::sync::Arc<Conn>>() else { continue };
                    if granted && conn.follows(case) {
                        s.join(route::case_sealed_room(case));
                    } else if !granted && conn.principal.role != crate::users::model::Role::Admin {
                        s.leave(route::case_sealed_room(case));
                    }
                }
            }
            Action::CaseGone(case) => {
                for s in ns.clone().local().to(route::case_room(case)).sockets() {
                    s.leave(route::case_rooms(case));
                    if let Some(conn) = s.extensions.get::<std::sync::Arc<Conn>>() {
                        conn.forget(case);
                    }
                }
            }
            Action::Disconnect(room) => {
                if let Err(err) = ns.clone().local().to(room).disconnect().await {
                    tracing::warn!(error = %err, "realtime: could not disconnect sockets");
                }
                metrics::counter!("lexiflow_realtime_forced_disconnects_total").increment(1);
            }
        }
    }
}

/// How a replay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Every missed event the socket may see was sent; live events follow.
    Done { sent: usize, seq: i64 },
    /// The socket is too far behind (or the events were pruned): it must reload. `seq` is
    /// where live events start.
    Resync { seq: i64 },
}

/// What a socket may join, decided by [`replay_then_join`]'s gate under the feed's lock: the
/// rooms it will be in, and those it was in already.
#[derive(Debug)]
pub struct Joining {
    pub rooms: Vec<String>,
    pub before: Vec<String>,
    /// The case the socket follows once it has joined (counted against its limit only then,
    /// so a replay that fails leaves nothing behind).
    pub follow: Option<Uuid>,
}

/// Decides, with `gate`, what `s` may join; sends it the events of its firm after `since`, up
/// to the feed's mark, that would reach a socket in the new rooms but not one in those it had;
/// then joins them — all under the feed's lock. So the next live event is the first one after
/// the replay, and the gate's access check (read from the database) cannot race an access
/// change: one committed before it is seen by it, one committed after is applied by the feed
/// to a socket already in its rooms.
pub async fn replay_then_join(
    app: &App,
    s: &SocketRef,
    firm: FirmId,
    since: Option<i64>,
    gate: impl Future<Output = Result<Joining, crate::http::ApiError>>,
) -> Result<Replay, crate::http::ApiError> {
    let gw = &app.realtime;
    let mut marks = gw.marks.lock().await;
    // The heads first: a change committed after them is above the mark and reaches the socket
    // through the feed; one committed before the gate's read is seen by the gate.
    let mark = marks.init(app).await?.get(&firm).copied().unwrap_or(0);
    let Joining { rooms, before, follow } = gate.await?;
    let outcome = match since {
        None => Replay::Done { sent: 0, seq: mark },
        Some(since) => replay(app, s, firm, since.max(0), mark, &rooms, &before).await?,
    };
    s.join(rooms);
    if let Some(case) = follow
        && let Some(conn) = s.extensions.get::<std::sync::Arc<Conn>>()
    {
        conn.follow(case);
    }
    Ok(outcome)
}

async fn replay(
    app: &App,
    s: &SocketRef,
    firm: FirmId,
    since: i64,
    mark: i64,
    rooms: &[String],
    before: &[String],
) -> Result<Replay, DbErr> {
    if since >= mark {
        return Ok(Replay::Done { sent: 0, seq: mark });
    }
    let max = app.config.realtime.replay_max.max(0);
    if mark - since > max {
        metrics::counter!("lexiflow_realtime_replays_total", "outcome" => "resync").increment(1);
        return Ok(Replay::Resync { seq: mark });
    }
    let events = outbox::numbered(&app.db, firm, since, mark, max as u64).await?;
    // Numbers are gapless per firm: fewer rows than numbers means some were pruned.
    if events.len() as i64 != mark - since {
        metrics::counter!("lexiflow_realtime_replays_total", "outcome" => "resync").increment(1);
        return Ok(Replay::Resync { seq: mark });
    }
    let mut sent = 0;
    for e in &events {
        for action in route::plan(e) {
            if let Action::Emit(x) = action
                && x.reaches(rooms)
                && !x.reaches(before)
            {
                if let Err(err) = s.emit(x.event, &Payload::of(e, &x)) {
                    tracing::debug!(error = %err, "realtime replay: socket gone or full");
                    return Ok(Replay::Resync { seq: mark });
                }
                sent += 1;
            }
        }
    }
    metrics::counter!("lexiflow_realtime_replays_total", "outcome" => "replayed").increment(1);
    Ok(Replay::Done { sent, seq: mark })
}
