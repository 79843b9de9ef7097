//! LexiFlow: the back end of a legal practice management system.
//!
//! # Layout
//!
//! Domains each hold their model (SeaORM entities), operations (plain async functions that
//! run a transaction through [`app::App::write`]: write, audit, record domain events) and
//! HTTP handlers:
//!
//! - [`auth`]: registration, login (lockout per account and client address), refresh-token
//!   rotation, sessions, the access-token layer and its session cache.
//! - [`users`]: a firm's people and their roles.
//! - [`firms`]: the tenant table.
//! - [`cases`]: matters, their teams, sealed-access grants, and who may see or change them
//!   ([`cases::access`]); bulk create, update and delete.
//! - [`parties`]: the parties to a case.
//! - [`docket`]: each case's numbered docket entries (sealed and restricted ones included).
//! - [`documents`]: a case's documents and their numbered versions, downloads, and the job
//!   that scans a stored file and makes its thumbnail.
//! - [`calendar`]: events with reminders, court deadlines computed by rule (FRCP 6(a)), and a
//!   per-user `.ics` feed.
//! - [`reports`]: the case summary report, cached and warmed by a job.
//! - [`api_keys`]: keys for a firm's other systems, with scopes.
//! - [`webhooks`]: signed webhook subscriptions and their durable deliveries.
//! - [`audit`]: the tamper-evident audit trail every change writes to.
//! - [`jobs`]: the jobs run on the durable queue (crate `lexiflow-queue`), its admin API, and
//!   `lexiflow worker`'s probes (`jobs::probe`).
//! - [`import`]: `lexiflow import`, CSV in bulk through the same operations.
//!
//! Infrastructure sits beside them, named for what it is:
//!
//! - [`config`]: the one typed configuration, from the environment and `lexiflow.toml`.
//! - [`console`]: the operator console at `/console` (embedded page, cookie sign-in with CSRF,
//!   the API's protected routes behind a gate, live request metrics).
//! - [`db`]: connecting (SQLite or PostgreSQL), migrations, transactions ([`db::Tx`],
//!   [`db::transaction`]), bulk statements, and the data layer's own error ([`db::DbError`]).
//! - [`events`]: domain events, the outbox they are written to in the writing transaction,
//!   the per-firm sequencer, the outbox tail, and the in-process subscribers.
//! - [`bus`]: one message bus between the parts of a process and across instances (local
//!   broadcast plus one Redis pub/sub channel family).
//! - [`cache`]: the two-level data cache (in process, Redis behind it).
//! - [`http`]: the router (every route in one place), the envelope, the error catalogue and
//!   the mapping of [`db::DbError`] to statuses, extractors whose rejections are our error
//!   body, the request-context middleware, client addresses, security headers.
//! - [`paging`]: what a page of a list is (returned by operations, sent as `meta.pagination`).
//! - [`input`]: input hygiene and validation of plain text, rich text, URLs and e-mail.
//! - [`ids`]: typed identifiers; [`clock`]: the one clock and stored-time rounding.
//! - [`health`]: liveness, readiness and health probes.
//! - [`ratelimit`]: GCRA rate limits, in process or shared through Redis.
//! - [`resilience`]: timeouts, retries and circuit breakers for calls leaving the process.
//! - [`outbound`]: the one HTTP client for calls out (deadlines, breakers, SSRF guard).
//! - [`redis_link`]: the shared Redis connection of the scale-out shape (fails fast while down).
//! - [`telemetry`]: Prometheus metrics, the system snapshot, logs and OTLP trace export.
//! - [`realtime`]: the Socket.IO gateway on `/socket.io/`, namespace `/events`, fed from the outbox.
//! - [`uploads`]: tus 1.0 resumable uploads, their type sniffing, dedup into blobs and expiry.
//! - [`storage`]: where file bytes live: `UPLOAD_DIR` or an S3-compatible bucket.
//! - [`clamd`]: the ClamAV client (INSTREAM), behind a circuit breaker.
//! - [`app`]: the [`app::App`] value that holds every handle; [`server`]: serving it.
//!
//! `docs/ARCHITECTURE.md` walks one request from socket to database and back.

#![forbid(unsafe_code)]

pub mod api_keys;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod calendar;
pub mod cases;
pub mod clamd;
pub mod clock;
pub mod config;
pub mod console;
pub mod db;
pub mod docket;
pub mod documents;
pub mod events;
pub mod firms;
pub mod health;
pub mod http;
pub mod ids;
pub mod import;
pub mod input;
pub mod jobs;
pub mod outbound;
pub mod paging;
pub mod parties;
pub mod ratelimit;
pub mod realtime;
pub mod redis_link;
pub mod reports;
pub mod resilience;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod uploads;
pub mod users;
pub mod webhooks;
