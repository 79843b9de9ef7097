//! The worker: claims jobs of its queues, runs the handler registered for each job's type,
//! and finishes the attempt; also reclaims expired leases, trims old jobs and fires cron
//! ticks. Any number of workers may run against one database, in one process or many.
//!
//! Each queue has its own loop and semaphore (its concurrency). The loop keeps one claim in
//! flight while jobs run, sized to the free slots plus a read-ahead (about 20 ms of work at
//! the loop's recent pace, see [`WorkerBuilder::read_ahead`]), so with short jobs a slot that
//! frees up finds the next job already claimed and one statement claims many jobs. An idle
//! loop sleeps until woken: by an enqueue in this process, by PostgreSQL `LISTEN/NOTIFY` from
//! any process, or by the fallback poll interval.
//!
//! Successful attempts are recorded by one task per worker, in batches: whatever finished
//! while the previous batch was being written goes into the next single `UPDATE`, each job
//! under its own lease token. Failures are recorded at once, one by one.
//!
//! On shutdown the loops stop claiming, give back jobs read ahead but not started, and wait
//! for in-flight jobs, up to a drain timeout; a job still running then is abandoned, its lease
//! expires and another worker retries it. `run` returns once every completion is recorded.
//!
//! While a handler runs, its lease is renewed every third of the lease on a separate task. If
//! no renewal has succeeded three quarters of the lease after the last one (the database
//! refuses, hangs or is unreachable), or a renewal finds the lease reclaimed, the handler's
//! future is dropped, nothing is recorded, and the job is left to its lease: it is reclaimed
//! and retried after expiry, so two executions of one job never overlap (given clocks within
//! a quarter lease of each other). Work a handler spawned onto other tasks, or a handler that
//! blocks its thread, is not stopped by this.
//!
//! Handlers must be idempotent: delivery is at least once. A worker that dies after the side
//! effect but before recording completion (including a completion waiting for its batch, a
//! window of one statement's round trip) leaves the job to be retried.

use std::{
    collections::{HashMap, VecDeque},
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
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    NOTIFY_CHANNEL, QueueError,
    admin::trim_completed,
    cron::{Schedule, fire, trim_ticks},
    enqueue::{LOCAL_WAKE, wake_local},
    job::JobId,
    lease::{Claimed, Lease, claim, complete, complete_many, extend, fail, reclaim_expired, release},
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
    read_ahead: Duration,
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
    /// extends it every third of that while the handler runs, and cancels the handler (drops
    /// its future) when it has not managed to renew it within three quarters of that, so the
    /// handler has stopped before the lease can expire and the job be reclaimed elsewhere.
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

    /// How much work each queue claims ahead of its free slots, as time (default 20 ms;
    /// zero turns read-ahead off): the loop keeps about as many extra jobs claimed as it
    /// starts in that time at its recent pace (at most 10 per slot), so with short jobs the
    /// next ones are at hand when slots free up and a claim brings back many jobs at once.
    ///
    /// A read-ahead job holds a lease while it waits. If it waits a third of the lease (its
    /// slots are taken by slow jobs), it goes back to the queue; jobs read ahead are also
    /// given back unstarted at shutdown, and neither counts as an attempt. The cost: a job
    /// read ahead can start after a pause, or before a more urgent job enqueued after it was
    /// claimed — by about this window.
    pub fn read_ahead(mut self, window: Duration) -> Self {
        self.read_ahead = window;
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

    /// The queues this worker knows, sorted, each once: those it works (`"default"` when none
    /// is named) and those its schedules enqueue to. The admin API lists them even before they
    /// have had a job ([`crate::admin::stats_including`]).
    pub fn known_queues(&self) -> Vec<String> {
        let worked = self.queues.iter().map(|(q, _)| q.as_str());
        let worked: Vec<&str> = if self.queues.is_empty() { vec!["default"] } else { worked.collect() };
        let scheduled = self.schedules.iter().map(Schedule::queue);
        let mut known: Vec<String> = worked.into_iter().chain(scheduled).map(str::to_owned).collect();
        known.sort();
        known.dedup();
        known
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
                read_ahead: self.read_ahead,
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
    read_ahead: Duration,
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
            read_ahead: Duration::from_millis(20),
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
        // Completions go to one recorder task; it ends once every queue loop (and every job
        // it started) has dropped its sender, so shutdown records all of them first.
        let (done_tx, done_rx) = mpsc::channel(COMPLETION_BUFFER);
        tasks.spawn(completion_loop(w.clone(), done_rx));
        for (queue, concurrency) in w.queues.clone() {
            tasks.spawn(queue_loop(w.clone(), queue, concurrency, done_tx.clone(), shutdown.clone()));
        }
        drop(done_tx);
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

/// Read-ahead is capped at this many jobs per slot.
const READ_AHEAD_MAX_PER_SLOT: usize = 10;

/// How fast a queue loop starts jobs, to size its read-ahead.
struct Pace {
    started: usize,
    since: Instant,
    per_sec: f64,
}

impl Pace {
    fn new() -> Self {
        Self { started: 0, since: Instant::now(), per_sec: 0.0 }
    }

    /// Jobs to claim beyond the free slots: as many as the loop starts in `window` at its
    /// recent pace (a moving average), at most `max`. Short jobs get a deep read-ahead, so
    /// claims stop being the bottleneck; slow ones get little or none, so a read-ahead job
    /// seldom waits long for a slot.
    fn read_ahead(&mut self, window: Duration, max: usize) -> usize {
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_millis(5) {
            #[allow(clippy::cast_precision_loss)]
            let now = self.started as f64 / elapsed.as_secs_f64();
            self.per_sec = (self.per_sec + now) / 2.0;
            self.started = 0;
            self.since = Instant::now();
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (self.per_sec * window.as_secs_f64()) as usize;
        n.min(max)
    }
}

/// A claim in flight (its own task), and when it was sent (the lease is stamped from then).
type ClaimTask = tokio::task::JoinHandle<(Result<Vec<Claimed>, QueueError>, Instant)>;

/// A job claimed by this loop but not started yet, and when its lease was stamped.
struct Held {
    claimed: Claimed,
    at: Instant,
}

async fn queue_loop(
    w: Arc<Inner>,
    queue: String,
    concurrency: usize,
    done: mpsc::Sender<Lease>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut pace = Pace::new();
    let renew_after = w.lease / 3;
    let mut ready: VecDeque<Held> = VecDeque::new();
    let mut running = JoinSet::new();
    let mut wake = LOCAL_WAKE.subscribe();
    // At most one claim in flight; it runs while jobs run, so the next batch is (usually)
    // there by the time slots free up. It is a task of its own, not a future polled by this
    // loop: on SQLite a claim holds the write lock from `BEGIN IMMEDIATE` to its commit, and
    // must reach the commit even while this loop is busy elsewhere.
    let mut claiming: Option<ClaimTask> = None;
    // Releases of read-ahead jobs that waited too long, likewise off this loop.
    let mut returning = JoinSet::new();
    // Set after a claim found nothing (or failed): wait for a wakeup or the poll.
    let mut idle_until: Option<tokio::time::Instant> = None;
    loop {
        while running.try_join_next().is_some() {}
        let held = concurrency - slots.available_permits() + ready.len();
        if claiming.is_none() && idle_until.is_none() {
            let target = concurrency + pace.read_ahead(w.read_ahead, concurrency * READ_AHEAD_MAX_PER_SLOT);
            if held < target {
                // Mark wakeups seen before claiming: one arriving during the claim is not lost.
                wake.borrow_and_update();
                let want = u32::try_from(target - held).unwrap_or(u32::MAX);
                let (w, queue) = (w.clone(), queue.clone());
                claiming = Some(tokio::spawn(async move {
                    let at = Instant::now();
                    (claim(&w.db, &queue, want, w.lease, &w.id, w.now()).await, at)
                }));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            res = async { match claiming.as_mut() { Some(c) => c.await, None => std::future::pending().await } }, if claiming.is_some() => {
                claiming = None;
                match res {
                    Ok((Ok(claimed), at)) if !claimed.is_empty() => ready.extend(claimed.into_iter().map(|claimed| Held { claimed, at })),
                    Ok((Ok(_), _)) => idle_until = Some(tokio::time::Instant::now() + w.poll),
                    Ok((Err(e), _)) => {
                        tracing::warn!(worker = %w.id, %queue, error = %e, "claiming jobs failed; retrying after the poll interval");
                        idle_until = Some(tokio::time::Instant::now() + w.poll);
                    }
                    Err(e) => {
                        tracing::warn!(worker = %w.id, %queue, error = %e, "claiming jobs failed; retrying after the poll interval");
                        idle_until = Some(tokio::time::Instant::now() + w.poll);
                    }
                }
            }
            permit = slots.clone().acquire_owned(), if !ready.is_empty() => {
                let Ok(permit) = permit else { break };
                if let Some(job) = ready.pop_front() {
                    pace.started += 1;
                    running.spawn(run_job(w.clone(), job, permit, done.clone()));
                }
            }
            // Read-ahead jobs that waited as long as a heartbeat interval (their slots are
            // held by slow jobs) go back to the queue for any worker, rather than wait here.
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(ready.front().map_or_else(Instant::now, |h| h.at) + renew_after)), if !ready.is_empty() => {
                let mut stale = Vec::new();
                while let Some(h) = ready.pop_front_if(|h| h.at.elapsed() >= renew_after) {
                    stale.push(h.claimed.lease);
                }
                let (w, queue) = (w.clone(), queue.clone());
                returning.spawn(async move {
                    match release(&w.db, &stale).await {
                        Ok(n) => tracing::debug!(worker = %w.id, %queue, released = n, "returned read-ahead jobs that waited too long"),
                        Err(e) => tracing::warn!(worker = %w.id, %queue, error = %e, "could not return read-ahead jobs; they run again after their leases"),
                    }
                });
            }
            Some(_) = returning.join_next(), if !returning.is_empty() => {}
            // A finished job frees room for the next claim.
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = wake.changed(), if idle_until.is_some() => idle_until = None,
            _ = tokio::time::sleep_until(idle_until.unwrap_or_else(tokio::time::Instant::now)), if idle_until.is_some() => {
                idle_until = None;
            }
        }
    }
    // Stop claiming. A claim already sent is let finish (dropping it could leave its jobs
    // active until their leases expire); what it and the read-ahead hold goes back unstarted.
    if let Some(c) = claiming.take()
        && let Ok((Ok(claimed), at)) = c.await
    {
        ready.extend(claimed.into_iter().map(|claimed| Held { claimed, at }));
    }
    if !ready.is_empty() {
        let leases: Vec<Lease> = ready.drain(..).map(|h| h.claimed.lease).collect();
        match release(&w.db, &leases).await {
            Ok(n) => tracing::info!(worker = %w.id, %queue, released = n, "returned unstarted jobs to the queue"),
            Err(e) => {
                tracing::warn!(worker = %w.id, %queue, error = %e, "could not return unstarted jobs; they run again after their leases")
            }
        }
    }
    while returning.join_next().await.is_some() {}
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

/// Why a running handler was cancelled because of its lease (the `reason` label of
/// `lexiflow_queue_lease_cancellations_total`).
#[derive(Clone, Copy, Debug)]
enum LeaseCancel {
    /// The lease could not be renewed before [`give_up_after`] its last stamp.
    NotRenewed,
    /// Renewing found the lease reclaimed or the job moved on.
    Lost,
}

/// How long after a lease was stamped the worker stops a handler whose lease it has not
/// renewed since: three quarters of the lease. The last quarter (15 s of the default 60 s) is
/// the safety margin for timer lateness and clock skew between instances, so the handler has
/// stopped before any worker can see the lease expired and reclaim the job.
fn give_up_after(lease: Duration) -> Duration {
    lease - lease / 4
}

/// Records a handler cancelled because of its lease; the job is left active under that lease
/// and retried after it expires and is reclaimed, as for a worker that died.
fn cancelled(w: &Inner, job: &crate::Job, reason: LeaseCancel, last_error: Option<&str>) {
    let label = match reason {
        LeaseCancel::NotRenewed => "not_renewed",
        LeaseCancel::Lost => "lost",
    };
    metrics::counter!(metric::LEASE_CANCELLATIONS, "queue" => job.queue.clone(), "type" => job.job_type.clone(), "reason" => label)
        .increment(1);
    match reason {
        LeaseCancel::NotRenewed => tracing::warn!(
            job = %job.id, queue = %job.queue, job_type = %job.job_type, worker = %w.id, error = last_error,
            "could not renew the lease in time: handler cancelled before the lease can expire; the job runs again after it"
        ),
        LeaseCancel::Lost => tracing::warn!(
            job = %job.id, queue = %job.queue, job_type = %job.job_type, worker = %w.id,
            "lease lost while running: handler cancelled, the attempt abandoned"
        ),
    }
}

/// A renewal in flight (its own task, so the handler keeps running meanwhile), and when it
/// was sent: a renewed lease runs from then.
type RenewTask = tokio::task::JoinHandle<(Instant, Result<(), QueueError>)>;

async fn run_job(w: Arc<Inner>, held: Held, slot: OwnedSemaphorePermit, done: mpsc::Sender<Lease>) {
    let Held { claimed: Claimed { mut job, lease }, at: mut stamped } = held;
    let renew_every = w.lease / 3;
    let give_up = give_up_after(w.lease);
    // A job read ahead may have waited for its slot: renew its lease first if a heartbeat
    // would have been due by now, so the handler never starts on a lease near its end.
    if stamped.elapsed() >= renew_every {
        let sent = Instant::now();
        if let Err(e) = extend(&w.db, &lease, w.lease, w.now()).await {
            tracing::warn!(job = %job.id, worker = %w.id, error = %e, "could not renew a read-ahead job's lease; leaving it to expire");
            return;
        }
        stamped = sent;
        if stamped.elapsed() >= give_up {
            tracing::warn!(job = %job.id, worker = %w.id, "renewing a read-ahead job's lease took too long; leaving it to expire");
            return;
        }
    }
    let ctx = JobContext {
        id: job.id,
        queue: job.queue.clone(),
        job_type: job.job_type.clone(),
        // Moved, not cloned: the runner needs only the job's id, queue and type after this.
        payload: std::mem::take(&mut job.payload),
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
            // The lease is renewed every third of its length, each renewal on its own task so
            // the handler runs on while it waits; a failed renewal is retried every twelfth.
            // Whatever happens to the renewals, the handler is dropped (cancelled) once the
            // lease, counted from when it was last stamped, reaches `give_up`: strictly
            // before it expires and another worker may reclaim the job.
            let retry_every = (w.lease / 12).max(Duration::from_millis(10));
            let mut next_renewal = stamped + renew_every;
            let mut renewing: Option<RenewTask> = None;
            let mut last_error: Option<String> = None;
            loop {
                let deadline = tokio::time::Instant::from_std(stamped + give_up);
                tokio::select! {
                    biased;
                    res = &mut run => break match res {
                        Ok(r) => r,
                        Err(panic) => Err(format!("handler panicked: {}", panic_message(panic.as_ref()))),
                    },
                    res = async { match renewing.as_mut() { Some(r) => r.await, None => std::future::pending().await } }, if renewing.is_some() => {
                        renewing = None;
                        match res {
                            Ok((sent, Ok(()))) => {
                                stamped = sent;
                                next_renewal = sent + renew_every;
                                last_error = None;
                            }
                            Ok((_, Err(QueueError::LeaseLost(_)))) => {
                                // Someone reclaimed the job: stop, so it does not run twice at once.
                                cancelled(&w, &job, LeaseCancel::Lost, None);
                                return;
                            }
                            Ok((_, Err(e))) => {
                                tracing::warn!(job = %job.id, worker = %w.id, error = %e, "could not renew the lease; retrying");
                                last_error = Some(e.to_string());
                                next_renewal = Instant::now() + retry_every;
                            }
                            Err(e) => {
                                tracing::warn!(job = %job.id, worker = %w.id, error = %e, "lease renewal task failed; retrying");
                                last_error = Some(e.to_string());
                                next_renewal = Instant::now() + retry_every;
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        // Dropping `run` on return cancels the handler; a renewal still in
                        // flight finishes on its own (at worst it postpones the retry).
                        cancelled(&w, &job, LeaseCancel::NotRenewed, last_error.as_deref());
                        return;
                    }
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next_renewal)), if renewing.is_none() => {
                        let (w, lease) = (w.clone(), lease.clone());
                        renewing = Some(tokio::spawn(async move {
                            let sent = Instant::now();
                            (sent, extend(&w.db, &lease, w.lease, w.now()).await)
                        }));
                    }
                }
            }
        }
    };
    metrics::histogram!(metric::DURATION, "queue" => job.queue.clone(), "type" => job.job_type.clone())
        .record(started.elapsed().as_secs_f64());
    let recorded = match outcome {
        // Handed to the completion recorder, which writes completions in batches; the slot
        // is free again as soon as the completion is queued.
        Ok(()) => match done.send(lease).await {
            Ok(()) => Ok(()),
            // The recorder is gone (it only ends after every sender): record it here.
            Err(mpsc::error::SendError(lease)) => complete(&w.db, &lease, w.now()).await,
        },
        Err(message) => fail(&w.db, &lease, &message, w.now()).await.map(|_| ()),
    };
    drop(slot);
    if let Err(e) = recorded {
        // The lease will expire and the job be retried: the reason handlers are idempotent.
        tracing::warn!(job = %job.id, worker = %w.id, error = %e, "could not record the attempt's outcome");
    }
}

/// How many finished-but-unrecorded completions a worker holds before its jobs wait.
const COMPLETION_BUFFER: usize = 1024;
/// The most completions one statement records.
const COMPLETION_BATCH: usize = 500;

/// Records successful attempts in batches: whatever has queued up while the previous batch
/// was being written goes in the next statement (one `UPDATE`, each job under its own lease
/// token), so under load one round trip records many jobs, and an idle worker records a
/// lone completion at once. Ends when every sender is gone, after recording what is queued.
///
/// A crash between a handler's return and the write of its batch leaves the job active under
/// its lease; it expires and the job runs again — the at-least-once window, a few
/// milliseconds wide, that idempotent handlers already cover.
async fn completion_loop(w: Arc<Inner>, mut done: mpsc::Receiver<Lease>) {
    let mut batch = Vec::with_capacity(COMPLETION_BATCH);
    while done.recv_many(&mut batch, COMPLETION_BATCH).await > 0 {
        record_completions(&w, &batch).await;
        batch.clear();
    }
}

async fn record_completions(w: &Inner, batch: &[Lease]) {
    const TRIES: u32 = 3;
    for attempt in 1..=TRIES {
        match complete_many(&w.db, batch, w.now()).await {
            Ok(recorded) => {
                if recorded.len() < batch.len() {
                    let recorded: std::collections::HashSet<JobId> = recorded.into_iter().collect();
                    for lease in batch.iter().filter(|l| !recorded.contains(&l.job_id)) {
                        // Reclaimed meanwhile: the job runs again elsewhere, as with any lost lease.
                        tracing::warn!(job = %lease.job_id, worker = %w.id, "could not record the attempt's outcome: lease lost");
                    }
                }
                return;
            }
            Err(e) if attempt < TRIES => {
                tracing::warn!(worker = %w.id, jobs = batch.len(), error = %e, "recording completions failed; retrying");
                tokio::time::sleep(Duration::from_millis(100) * attempt).await;
            }
            Err(e) => {
                // The leases will expire and the jobs be retried: the reason handlers are idempotent.
                tracing::warn!(worker = %w.id, jobs = batch.len(), error = %e, "could not record completions; the jobs will run again after their leases");
            }
        }
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
