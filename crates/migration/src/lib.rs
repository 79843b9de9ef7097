//! LexiFlow's database migrations: one forward-only set, applied unchanged to SQLite and PostgreSQL.
//!
//! Each change is a new `mNNNN_*` module appended to [`Migrator::migrations`]; a migration that
//! has shipped is never edited. Constraint names are stable: the HTTP layer maps unique
//! violations to `409 CONFLICT` by name (see `lexiflow::db::constraint_conflict`).

pub use sea_orm_migration::prelude::*;

mod m0001_foundation;
mod m0002_login_defence;
mod m0003_audit;
mod m0004_jobs;
mod m0005_docket;
mod m0006_audit_append;
mod m0007_events;
mod m0008_sealed_grants;
mod m0009_api_keys;
mod m0010_webhooks;
mod m0011_documents;
mod m0012_calendar;
mod m0013_calendar_sync;
mod m0014_calendar_courts;
mod m0015_event_insert_order;

/// The ordered list of every migration.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_foundation::Migration),
            Box::new(m0002_login_defence::Migration),
            Box::new(m0003_audit::Migration),
            Box::new(m0004_jobs::Migration),
            Box::new(m0005_docket::Migration),
            Box::new(m0006_audit_append::Migration),
            Box::new(m0007_events::Migration),
            Box::new(m0008_sealed_grants::Migration),
            Box::new(m0009_api_keys::Migration),
            Box::new(m0010_webhooks::Migration),
            Box::new(m0011_documents::Migration),
            Box::new(m0012_calendar::Migration),
            Box::new(m0013_calendar_sync::Migration),
            Box::new(m0014_calendar_courts::Migration),
            Box::new(m0015_event_insert_order::Migration),
        ]
    }
}
