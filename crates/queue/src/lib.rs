//! A durable job queue on plain database tables, the same on SQLite and PostgreSQL.
//!
//! # Layout
//!
//! - [`job`]: what a job is — [`NewJob`], [`Job`], [`Priority`], [`JobState`], [`Backoff`].
//! - [`enqueue`]: adding jobs, alone or in bulk, inside the caller's transaction.
//! - [`lease`]: claiming due jobs under a lease, completing, failing, reclaiming stalled ones.
//! - [`admin`]: pause/resume, clean, retry, cancel, counts and listings for the admin API.
//! - [`cron`]: schedules that fire once per tick across every instance.
//! - [`worker`]: the long-running loop: handlers by job type, per-queue concurrency,
//!   LISTEN/NOTIFY wakeups, graceful drain.
//!
//! # One job, end to end
//!
//! A request handler calls [`enqueue()`] with its own transaction; the row appears when it
//! commits (and on PostgreSQL `pg_notify` wakes idle workers at that moment). A [`Worker`]
//! claims it with [`lease::claim`], which marks it `active` with a lease token and expiry;
//! the handler runs while the worker extends the lease; [`lease::complete`] (the worker
//! batches these through [`lease::complete_many`]) or [`lease::fail`] then finish the
//! attempt, all refusing a token that is no longer current.
//! A worker that dies leaves an expired lease, which [`lease::reclaim_expired`] turns into a
//! failed attempt, so the job is retried with backoff and never lost.
//!
//! Delivery is at least once: handlers must be idempotent (see the README).
//!
//! The tables are created by `lexiflow-migration` (`m0004_jobs`).

pub mod admin;
pub mod cron;
pub mod enqueue;
mod error;
pub mod job;
pub mod lease;
mod metric;
mod sql;
pub mod worker;

pub use admin::{QueueStats, StateCounts};
pub use cron::Schedule;
pub use enqueue::{enqueue, enqueue_many};
pub use error::QueueError;
pub use job::{AttemptError, Backoff, Job, JobId, JobState, NewJob, Priority};
pub use lease::{Claimed, Lease};
pub use worker::{JobContext, Retention, Worker, WorkerBuilder};

/// The channel `pg_notify` announces new jobs on; the payload is the queue's name.
pub const NOTIFY_CHANNEL: &str = "lexiflow_queue";
