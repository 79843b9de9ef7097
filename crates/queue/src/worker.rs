//! The worker: claims jobs of its queues, runs the handler registered for each job's type,
//! and finishes the attempt; also reclaims expired leases, trims old jobs and fires cron
//! ticks. Any number of workers may run against one database, in one process or many.
//!
//! Each queue has its own loop and semaphore (its concurrency). An idle loop sleeps until
//! woken: by an enqueue in this process, by PostgreSQL `LISTEN/NOTIFY` from any process, or
//! by the fallback poll interval. On shutdown the loops stop claiming and wait for in-flight
//! jobs, up to a drain timeout; a job still running then is abandoned, its lease expires and
//! another worker retries it.
//!
//! Handlers must be idempotent: delivery is at least once. A worker that dies after the side
//! effect but before recording completion leaves the job to be retried.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures_util::{FutureExt, future::BoxFuture};
use sea_orm::{DatabaseConnection, DbBackend};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    NOTIFY_CHANNEL, QueueError,
    admin::trim_completed,
    cron::{Schedule, fire, trim_ticks},
    enqueue::{LOCAL_WAKE, wake_local},
    job::JobId,
    lease::{Claimed, claim, complete, extend, fail, reclaim_expired},
    metric,
};

/// The time source; tests may substitute their own.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

type HandlerFn = Arc<dyn Fn(JobContext) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What a handler is given: the job's identity, payload and attempt number.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The job's id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its type.
    pub job_type: String,
    /// Its payload.
    pub payload: Value,
    /// This attempt's number (1-based).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
}

impl JobContext {
    /// The payload as a typed value.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.payload)
    }
}

/// How long completed jobs are kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Completed jobs older than this are deleted.
    pub completed_max_age: Duration,
    /// At most this many completed jobs are kept per queue (the newest).
    pub completed_max_count: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self { completed_max_age: Duration::from_secs(24 * 3600), completed_max_count: 10_000 }
    }
}

/// Configures a [`Worker`].
pub struct WorkerBuilder {
    db: DatabaseConnection,
    id: String,
    queues: Vec<(String, usize)>,
    handlers: HashMap<String, HandlerFn>,
    schedules: Vec<Schedule>,
    lease: Duration,
    poll: Option<Duration>,
    drain_timeout: Duration,
    maintenance_interval: Option<Duration>,
    retention: Retention,
    clock: Clock,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder").field("id", &self.id).field("queues", &self.queues).finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Names this worker (shown as `locked_by` on the jobs it holds); default a random id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Works `queue` with up to `concurrency` jobs at once (at least 1).
    pub fn queue(mut self, queue: impl Into<String>, concurrency: usize) -> Self {
        self.queues.push((queue.into(), concurrency.max(1)));
        self
    }

    /// Runs jobs of `job_type` with `handler`. An `Err` or a panic fails the attempt with its
    /// message. The handler must be idempotent: a job can run more than once.
    pub fn handler<F, Fut, E>(mut self, job_type: impl Into<String>, handler: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let handler = Arc::new(handler);
        let boxed: HandlerFn = Arc::new(move |ctx| {
            let handler = handler.clone();
            Box::pin(async move { handler(ctx).await.map_err(|e| format!("{e:#}")) })
        });
        self.handlers.insert(job_type.into(), boxed);
        self
    }

    /// Fires `schedule` (once per tick across all instances running it).
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// How long a claim lasts before the job is presumed lost (default 60 s); the worker
    /// extends it every third of that while the handler runs.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// The fallback poll interval (default 500 ms on SQLite, 5 s on PostgreSQL, which is
    /// woken by LISTEN/NOTIFY).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = Some(poll);
        self
    }

    /// How long shutdown waits for running jobs (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How often expired leases are reclaimed (default a quarter of the lease, 1–30 s).
    pub fn maintenance_interval(mut self, every: Duration) -> Self {
        self.maintenance_interval = Some(every);
        self
    }

    /// How long completed jobs are kept.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Replaces the clock (for tests).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The worker; with no queue named it works `"default"` with concurrency 4.
    pub fn build(mut self) -> Worker {
        if self.queues.is_empty() {
            self.queues.push(("default".into(), 4));
        }
        let postgres = self.db.get_database_backend() == DbBackend::Postgres;
        let poll = self.poll.unwrap_or(if postgres { Duration::from_secs(5) } else { Duration::from_millis(500) });
        let maintenance = self
            .maintenance_interval
            .unwrap_or((self.lease / 4).clamp(Duration::from_secs(1), Duration::from_secs(30)));
        Worker {
            inner: Arc::new(Inner {
                db: self.db,
                id: self.id,
                queues: self.queues,
                handlers: self.handlers,
                schedules: self.schedules,
                lease: self.lease,
                poll,
                drain_timeout: self.drain_timeout,
                maintenance,
                retention: self.retention,
                clock: self.clock,
                postgres,
            }),
        }
    }
}

/// Runs jobs until shut down; see the module documentation.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").field("id", &self.inner.id).field("queues", &self.inner.queues).finish_non_exhaustive()
    }
}

struct Inner {
    db: DatabaseConnection,
    id: String,
    queues: Vec<(String, usize)>,
    handlers: HashMap<String, HandlerFn>,
    schedules: Vec<Schedule>,
    lease: Duration,
    poll: Duration,
    drain_timeout: Duration,
    maintenance: Duration,
    retention: Retention,
    clock: Clock,
    postgres: bool,
}

impl Inner {
    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }
}

impl Worker {
    /// Starts configuring a worker over `db`.
    pub fn builder(db: DatabaseConnection) -> WorkerBuilder {
        WorkerBuilder {
            db,
            id: format!("worker-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            queues: Vec::new(),
            handlers: HashMap::new(),
            schedules: Vec::new(),
            lease: Duration::from_secs(60),
            poll: None,
            drain_timeout: Duration::from_secs(30),
            maintenance_interval: None,
            retention: Retention::default(),
            clock: Arc::new(Utc::now),
        }
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Runs until `shutdown` is cancelled, then stops claiming and drains running jobs.
    pub async fn run(self, shutdown: CancellationToken) {
        let w = self.inner;
        tracing::info!(worker = %w.id, queues = ?w.queues, "queue worker started");
        let mut tasks = JoinSet::new();
        for (queue, concurrency) in w.queues.clone() {
            tasks.spawn(queue_loop(w.clone(), queue, concurrency, shutdown.clone()));
        }
        tasks.spawn(maintenance_loop(w.clone(), shutdown.clone()));
        if !w.schedules.is_empty() {
            tasks.spawn(cron_loop(w.clone(), shutdown.clone()));
        }
        if w.postgres {
            tasks.spawn(listen_loop(w.clone(), shutdown.clone()));
        }
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = res {
                tracing::error!(worker = %w.id, error = %e, "queue worker task ended abnormally");
            }
        }
        tracing::info!(worker = %w.id, "queue worker stopped");
    }
}

/// Sleeps for `d` unless shut down first; returns false on shutdown.
async fn pause_for(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

async fn queue_loop(w: Arc<Inner>, queue: String, concurrency: usize, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut running = JoinSet::new();
    let mut wake = LOCAL_WAKE.subscribe();
    loop {
        while running.try_join_next().is_some() {}
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        // Mark wakeups seen before claiming: one arriving during the claim is not lost.
        wake.borrow_and_update();
        let free = 1 + slots.available_permits();
        let claimed = match claim(&w.db, &queue, u32::try_from(free).unwrap_or(u32::MAX), w.lease, &w.id, w.now()).await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(worker = %w.id, %queue, error = %e, "claiming jobs failed; retrying after the poll interval");
                drop(first);
                if !pause_for(w.poll, &shutdown).await {
                    break;
                }
                continue;
            }
        };
        let idle = claimed.is_empty();
        let mut first = Some(first);
        for job in claimed {
            let permit = match first.take() {
                Some(p) => p,
                // Only this loop takes permits and the claim was sized to the free ones.
                None => match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            running.spawn(run_job(w.clone(), job, permit));
        }
        drop(first);
        if idle {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.changed() => {}
                _ = tokio::time::sleep(w.poll) => {}
            }
        }
    }
    let in_flight = running.len();
    if in_flight > 0 {
        tracing::info!(worker = %w.id, %queue, in_flight, "draining running jobs");
    }
    let drain = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout(w.drain_timeout, drain).await.is_err() {
        tracing::warn!(worker = %w.id, %queue, "drain timed out; abandoning running jobs to their leases");
        running.abort_all();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

async fn run_job(w: Arc<Inner>, claimed: Claimed, _slot: OwnedSemaphorePermit) {
    let Claimed { job, lease } = claimed;
    let ctx = JobContext {
        id: job.id,
        queue: job.queue.clone(),
        job_type: job.job_type.clone(),
        payload: job.payload.clone(),
        attempt: job.attempts,
        max_attempts: job.max_attempts,
    };
    let started = Instant::now();
    let outcome = match w.handlers.get(&job.job_type) {
        None => Err(format!("no handler registered for job type {:?}", job.job_type)),
        Some(handler) => {
            let handler = handler.clone();
            // The call itself runs inside the caught future, so a handler that panics before
            // its first await is caught too.
            let run = AssertUnwindSafe(async move { handler(ctx).await }).catch_unwind();
            tokio::pin!(run);
            let mut heartbeat = tokio::time::interval(w.lease / 3);
            heartbeat.tick().await;
            loop {
                tokio::select! {
                    res = &mut run => break match res {
                        Ok(r) => r,
                        Err(panic) => Err(format!("handler panicked: {}", panic_message(panic.as_ref()))),
                    },
                    _ = heartbeat.tick() => match extend(&w.db, &lease, w.lease, w.now()).await {
                        Ok(()) => {}
                        Err(QueueError::LeaseLost(_)) => {
                            // Someone reclaimed the job: stop, so it does not run twice at once.
                            tracing::warn!(job = %job.id, worker = %w.id, "lease lost while running; abandoning the attempt");
                            return;
                        }
                        Err(e) => tracing::warn!(job = %job.id, error = %e, "could not extend the lease"),
                    },
                }
            }
        }
    };
    metrics::histogram!(metric::DURATION, "queue" => job.queue.clone(), "type" => job.job_type.clone())
        .record(started.elapsed().as_secs_f64());
    let now = w.now();
    let recorded = match &outcome {
        Ok(()) => complete(&w.db, &lease, now).await,
        Err(message) => fail(&w.db, &lease, message, now).await.map(|_| ()),
    };
    if let Err(e) = recorded {
        // The lease will expire and the job be retried: the reason handlers are idempotent.
        tracing::warn!(job = %job.id, worker = %w.id, error = %e, "could not record the attempt's outcome");
    }
}

async fn maintenance_loop(w: Arc<Inner>, shutdown: CancellationToken) {
    let mut last_trim: Option<Instant> = None;
    while pause_for(w.maintenance, &shutdown).await {
        let now = w.now();
        if let Err(e) = reclaim_expired(&w.db, now).await {
            tracing::warn!(worker = %w.id, error = %e, "reclaiming expired leases failed");
        }
        if last_trim.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            last_trim = Some(Instant::now());
            let r = w.retention;
            if let Err(e) = trim_completed(&w.db, r.completed_max_age, r.completed_max_count, now).await {
                tracing::warn!(worker = %w.id, error = %e, "trimming completed jobs failed");
            }
            if let Err(e) = trim_ticks(&w.db, Duration::from_secs(7 * 24 * 3600), now).await {
                tracing::warn!(worker = %w.id, error = %e, "trimming cron ticks failed");
            }
        }
    }
}

/// Each instance handles each tick once in memory; the tick ledger makes the cluster fire it
/// once. A tick that came due up to one minute before start-up is still fired, so a restart
/// across a tick does not skip it.
async fn cron_loop(w: Arc<Inner>, shutdown: CancellationToken) {
    let start = w.now() - chrono::Duration::minutes(1);
    let mut handled: Vec<DateTime<Utc>> = vec![start; w.schedules.len()];
    loop {
        let now = w.now();
        for (schedule, since) in w.schedules.iter().zip(handled.iter_mut()) {
            let Some(tick) = schedule.latest_tick(now) else { continue };
            if tick <= *since {
                continue;
            }
            match fire(&w.db, schedule, tick).await {
                Ok(_) => *since = tick,
                Err(e) => {
                    tracing::warn!(schedule = schedule.name(), error = %e, "firing a cron tick failed; will retry")
                }
            }
        }
        if !pause_for(Duration::from_millis(250), &shutdown).await {
            return;
        }
    }
}

async fn listen_loop(w: Arc<Inner>, shutdown: CancellationToken) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(w.db.get_postgres_connection_pool()).await?;
            l.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(l)
        };
        let mut listener = match listener.await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(worker = %w.id, error = %e, "LISTEN failed; polling meanwhile");
                if !pause_for(Duration::from_secs(5), &shutdown).await {
                    return;
                }
                continue;
            }
        };
        // Jobs may have arrived while not listening.
        wake_local();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.recv() => match n {
                    Ok(_) => wake_local(),
                    Err(e) => {
                        // recv reconnects on the next call; the poll covers the gap.
                        tracing::warn!(worker = %w.id, error = %e, "LISTEN connection lost; reconnecting");
                        wake_local();
                        if !pause_for(Duration::from_secs(1), &shutdown).await {
                            return;
                        }
                    }
                },
            }
        }
    }
}
