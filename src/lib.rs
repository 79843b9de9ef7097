//! LexiFlow: the back end of a legal practice management system.
//!
//! # Layout
//!
//! Domains each hold their model (SeaORM entities), operations (plain async functions that
//! open a transaction, write and commit) and HTTP handlers:
//!
//! - [`auth`]: registration, login, refresh-token rotation, sessions, the access-token layer.
//! - [`users`]: a firm's people and their roles.
//! - [`cases`]: matters, their teams, and who may see or change them ([`cases::access`]).
//! - [`parties`]: the parties to a case.
//! - [`audit`]: the tamper-evident audit trail every change writes to.
//! - [`jobs`]: the jobs run on the durable queue (crate `lexiflow-queue`), and its admin API.
//!
//! Infrastructure sits beside them, named for what it is:
//!
//! - [`config`]: the one typed configuration, from the environment and `lexiflow.toml`.
//! - [`db`]: connecting (SQLite or PostgreSQL), migrations, write transactions, error mapping.
//! - [`http`]: the router (every route in one place), the envelope, the error catalogue,
//!   extractors whose rejections are our error body, the request-context middleware.
//! - [`input`]: input hygiene and validation of plain text, rich text, URLs and e-mail.
//! - [`health`]: liveness and readiness probes.
//! - [`ratelimit`]: GCRA rate limits, in process or shared through Redis.
//! - [`resilience`]: timeouts and circuit breakers for calls leaving the process.
//! - [`redis_link`]: the shared Redis connection of the scale-out shape.
//! - [`telemetry`]: Prometheus metrics, the system snapshot, logs and OTLP trace export.
//! - [`app`]: the [`app::App`] value that holds every handle; [`server`]: serving it.
//!
//! `docs/ARCHITECTURE.md` walks one request from socket to database and back.

#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod cases;
pub mod clock;
pub mod config;
pub mod db;
pub mod docket;
pub mod events;
pub mod firms;
pub mod health;
pub mod http;
pub mod ids;
pub mod import;
pub mod input;
pub mod jobs;
pub mod paging;
pub mod parties;
pub mod ratelimit;
pub mod redis_link;
pub mod reports;
pub mod resilience;
pub mod server;
pub mod telemetry;
pub mod users;
