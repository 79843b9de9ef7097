//! What a job is: the request to run one ([`NewJob`]), the stored row ([`Job`]), its priority,
//! state and retry policy.

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A job's identifier, assigned by the database and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How urgent a job is; higher runs first, and within a priority the earliest due runs first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    /// Housekeeping that can wait.
    Low = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Ahead of normal work.
    High = 2,
    /// Ahead of everything.
    Critical = 3,
}

impl Priority {
    /// The stored number.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The priority a stored number means (unknown numbers clamp to the nearest).
    pub fn from_i32(n: i32) -> Self {
        match n {
            i32::MIN..=0 => Self::Low,
            1 => Self::Normal,
            2 => Self::High,
            _ => Self::Critical,
        }
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Due and ready to be claimed (or held, when its queue is paused).
    Waiting,
    /// Not due yet: `run_at` is in the future. Stored as `waiting`; derived from `run_at`.
    Delayed,
    /// Leased by a worker and running.
    Active,
    /// Finished successfully.
    Completed,
    /// An attempt failed; it will be retried at `run_at`.
    Failed,
    /// Retries exhausted; kept with its error history until retried or cleaned.
    Dead,
}

impl JobState {
    /// Every state, in display order.
    pub const ALL: [JobState; 6] =
        [JobState::Waiting, JobState::Delayed, JobState::Active, JobState::Completed, JobState::Failed, JobState::Dead];

    /// The name used in the API, metrics and (except `delayed`) the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Delayed => "delayed",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    /// Parses a state name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Retry delays: exponential with full jitter, capped.
///
/// Attempt `n` (1-based) that fails waits a uniformly random time in `[0, min(max, base·2ⁿ⁻¹)]`.
/// Full jitter spreads retries of jobs that failed together (say, an outage of the service
/// they call) instead of sending them back in a synchronised wave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// The largest delay ever chosen.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(5), max: Duration::from_secs(3600) }
    }
}

impl Backoff {
    /// Exponential backoff from `base`, capped at `max`.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The largest delay after failed attempt `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A random delay in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_micros()).unwrap_or(u64::MAX);
        // uuid's v4 generator is the randomness source already in the tree; a retry delay needs
        // no more than that.
        let r = uuid::Uuid::new_v4().as_u64_pair().0;
        Duration::from_micros(r % ceiling.saturating_add(1))
    }
}

/// A job to add to a queue.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// The queue (default `"default"`).
    pub queue: String,
    /// The job type, which picks the handler.
    pub job_type: String,
    /// The handler's input.
    pub payload: Value,
    /// Priority (default normal).
    pub priority: Priority,
    /// When it becomes due; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    /// A delay from enqueue time, used when `run_at` is `None`.
    pub delay: Option<Duration>,
    /// Attempts before the job is dead (default 5, at least 1).
    pub max_attempts: u32,
    /// Retry delays.
    pub backoff: Backoff,
    /// While a job with this key is pending or running in this queue, another is not added.
    pub unique_key: Option<String>,
}

impl NewJob {
    /// A job of `job_type` with `payload`, on the default queue, normal priority, due now.
    pub fn new(job_type: impl Into<String>, payload: Value) -> Self {
        Self {
            queue: "default".into(),
            job_type: job_type.into(),
            payload,
            priority: Priority::Normal,
            run_at: None,
            delay: None,
            max_attempts: 5,
            backoff: Backoff::default(),
            unique_key: None,
        }
    }

    /// Puts it on `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Makes it due at `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Makes it due `delay` after it is enqueued.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets the number of attempts before the job is dead (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the retry delays.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Deduplicates on `key` while a job with it is pending or running in the same queue.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
}

/// One failed attempt, kept in the job's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The attempt number (1-based).
    pub attempt: u32,
    /// The handler's error, panic message or "lease expired".
    pub error: String,
    /// When the attempt was recorded as failed.
    pub at: DateTime<Utc>,
}

/// A stored job.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its type.
    pub job_type: String,
    /// Its input.
    pub payload: Value,
    /// Its priority.
    pub priority: Priority,
    /// Its state (`delayed` when waiting with `run_at` in the future at read time).
    pub state: JobState,
    /// When it is (or was) due.
    pub run_at: DateTime<Utc>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Its retry policy.
    #[serde(skip)]
    pub backoff: Backoff,
    /// Its deduplication key.
    pub unique_key: Option<String>,
    /// The worker holding it, while active.
    pub locked_by: Option<String>,
    /// When the current lease runs out, while active.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The most recent failure.
    pub last_error: Option<String>,
    /// Every failed attempt.
    pub errors: Vec<AttemptError>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its latest attempt failed.
    pub failed_at: Option<DateTime<Utc>>,
    /// When it completed or died.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A `queue_jobs` row as the database returns it.
#[derive(Debug, FromQueryResult)]
pub(crate) struct JobRow {
    pub id: i64,
    pub queue: String,
    pub job_type: String,
    pub payload: Value,
    pub priority: i32,
    pub state: String,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub unique_key: Option<String>,
    pub locked_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub errors: Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRow {
    /// The public view, with `waiting` shown as `delayed` when not yet due at `now`.
    pub(crate) fn into_job(self, now: DateTime<Utc>) -> Job {
        let stored = JobState::parse(&self.state).unwrap_or(JobState::Waiting);
        let state = if stored == JobState::Waiting && self.run_at > now { JobState::Delayed } else { stored };
        let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
        Job {
            id: JobId(self.id),
            queue: self.queue,
            job_type: self.job_type,
            payload: self.payload,
            priority: Priority::from_i32(self.priority),
            state,
            run_at: self.run_at,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            max_attempts: u32::try_from(self.max_attempts).unwrap_or(1),
            backoff: Backoff { base: ms(self.backoff_base_ms), max: ms(self.backoff_max_ms) },
            unique_key: self.unique_key,
            locked_by: self.locked_by,
            lease_expires_at: self.lease_expires_at,
            last_error: self.last_error,
            errors: serde_json::from_value(self.errors).unwrap_or_default(),
            created_at: self.created_at,
            started_at: self.started_at,
            failed_at: self.failed_at,
            finished_at: self.finished_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let b = Backoff::exponential(Duration::from_secs(2), Duration::from_secs(30));
        let ceilings: Vec<u64> = (1..=6).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [2, 4, 8, 16, 30, 30]);
        assert_eq!(b.ceiling(200), Duration::from_secs(30));
        for n in 1..=6 {
            for _ in 0..200 {
                assert!(b.delay(n) <= b.ceiling(n));
            }
        }
    }

    #[test]
    fn full_jitter_spreads_delays() {
        let b = Backoff::exponential(Duration::from_secs(100), Duration::from_secs(100));
        let delays: std::collections::HashSet<u128> = (0..50).map(|_| b.delay(1).as_millis()).collect();
        assert!(delays.len() > 40, "delays should be spread, got {delays:?}");
    }
}
