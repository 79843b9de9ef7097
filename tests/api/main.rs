//! API tests: the router driven in process, every suite on SQLite and on PostgreSQL.

// A test binary: a panic is a failed test, which is what unwrap and expect should do here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../shared/chaos.rs"]
mod chaos;
#[path = "../shared/ports.rs"]
mod ports;
mod support;

mod api_keys;
mod audit;
mod auth;
mod bulk;
mod cache;
mod calendar;
mod calendar_sync;
mod cancellation;
mod cases;
mod contract;
mod docket;
mod documents;
mod events;
mod idempotency;
mod import;
mod jobs;
mod operations;
mod parties;
mod realtime;
mod redis_tls;
mod security;
mod transactions;
mod tus_clients;
mod users;
mod webhooks;
