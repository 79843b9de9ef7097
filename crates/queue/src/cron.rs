//! Cron schedules declared in code or configuration, firing once per tick across instances.
//!
//! Every instance evaluates every schedule; when a tick comes due, each tries to insert
//! `(schedule, tick_at)` into `queue_cron_ticks`, whose primary key lets exactly one insert
//! succeed. The winner enqueues the schedule's job in the same transaction, so a tick is
//! recorded if and only if its job is. Ticks are computed in the schedule's time zone
//! (croner evaluates a `DateTime<chrono_tz::Tz>`), so "02:00 every day" follows daylight
//! saving time.

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds},
};
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::{
    QueueError,
    enqueue::enqueue_many_at,
    job::NewJob,
    lease::begin_write,
    sql::{at, minus, stmt},
};

/// A named cron schedule and the job each tick enqueues.
#[derive(Clone, Debug)]
pub struct Schedule {
    name: String,
    cron: Cron,
    tz: Tz,
    job: NewJob,
}

impl Schedule {
    /// A schedule `name` (unique across the deployment) firing `job` on `pattern` (croner
    /// syntax, five fields or six with seconds) in time zone `tz` (an IANA name such as
    /// `"Europe/London"`, or `"UTC"`).
    pub fn new(name: impl Into<String>, pattern: &str, tz: &str, job: NewJob) -> Result<Self, QueueError> {
        let name = name.into();
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(pattern)
            .map_err(|e| QueueError::Schedule { name: name.clone(), reason: e.to_string() })?;
        let tz = Tz::from_str(tz).map_err(|e| QueueError::Schedule { name: name.clone(), reason: e.to_string() })?;
        Ok(Self { name, cron, tz, job })
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue each tick's job goes to.
    pub fn queue(&self) -> &str {
        &self.job.queue
    }

    /// The most recent tick at or before `now`.
    pub fn latest_tick(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.tz);
        self.cron.find_previous_occurrence(&local, true).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The first tick strictly after `now`.
    pub fn next_tick(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.tz);
        self.cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
    }
}

/// Fires `schedule`'s tick at `tick_at` unless some instance already has: records the tick
/// and enqueues the job in one transaction. Returns whether this call fired it.
pub async fn fire(db: &DatabaseConnection, schedule: &Schedule, tick_at: DateTime<Utc>) -> Result<bool, QueueError> {
    let tick_at = at(tick_at);
    let now = at(Utc::now());
    let tx = begin_write(db).await?;
    let inserted = tx
        .execute_raw(stmt(
            &tx,
            "INSERT INTO queue_cron_ticks (schedule, tick_at, fired_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            vec![schedule.name.clone().into(), tick_at.into(), now.into()],
        ))
        .await?
        .rows_affected();
    if inserted != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    let job = schedule.job.clone().run_at(tick_at);
    enqueue_many_at(&tx, vec![job], now).await?;
    tx.commit().await?;
    tracing::debug!(schedule = %schedule.name, %tick_at, "cron tick fired");
    Ok(true)
}

/// Fires the latest due tick of each schedule if it falls after `since`; returns the ticks
/// this call fired. A scheduler calls this with `since` = the last tick it already handled.
pub async fn fire_due(
    db: &DatabaseConnection,
    schedules: &[Schedule],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<(String, DateTime<Utc>)>, QueueError> {
    let mut fired = Vec::new();
    for s in schedules {
        if let Some(tick) = s.latest_tick(now)
            && tick > since
            && fire(db, s, tick).await?
        {
            fired.push((s.name.clone(), tick));
        }
    }
    Ok(fired)
}

/// Forgets ticks older than `max_age` (the ledger only needs to outlive clock skew and
/// catch-up windows).
pub async fn trim_ticks(db: &impl ConnectionTrait, max_age: Duration, now: DateTime<Utc>) -> Result<u64, QueueError> {
    let res = db
        .execute_raw(stmt(db, "DELETE FROM queue_cron_ticks WHERE tick_at < $1", vec![minus(at(now), max_age).into()]))
        .await?;
    Ok(res.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ticks_follow_the_time_zone_through_dst() {
        let s =
            Schedule::new("nightly", "0 2 * * *", "America/New_York", NewJob::new("x", serde_json::json!({}))).unwrap();
        // Winter: 02:00 EST is 07:00 UTC; summer: 02:00 EDT is 06:00 UTC.
        let winter = Utc.with_ymd_and_hms(2025, 1, 15, 12, 0, 0).unwrap();
        assert_eq!(s.latest_tick(winter), Some(Utc.with_ymd_and_hms(2025, 1, 15, 7, 0, 0).unwrap()));
        let summer = Utc.with_ymd_and_hms(2025, 7, 15, 12, 0, 0).unwrap();
        assert_eq!(s.latest_tick(summer), Some(Utc.with_ymd_and_hms(2025, 7, 15, 6, 0, 0).unwrap()));
        assert_eq!(s.next_tick(summer), Some(Utc.with_ymd_and_hms(2025, 7, 16, 6, 0, 0).unwrap()));
    }

    #[test]
    fn bad_patterns_and_zones_are_refused() {
        let job = NewJob::new("x", serde_json::json!({}));
        assert!(Schedule::new("a", "not cron", "UTC", job.clone()).is_err());
        assert!(Schedule::new("b", "* * * * *", "Mars/Olympus", job).is_err());
    }
}
