//! API tests: the router driven in process, every suite on SQLite and on PostgreSQL.

mod support;

mod auth;
mod cases;
mod contract;
mod parties;
mod users;
