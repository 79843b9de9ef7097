//! The order the outbox's rows were written in (PostgreSQL; see `lexiflow::events::outbox`).
//!
//! On PostgreSQL events are numbered after they commit, and they used to be numbered in id
//! order: UUIDv7, stamped by the writing process's clock. Two instances whose clocks differ by
//! a few milliseconds could then number a change made after another one's commit first
//! (`case.updated` before `case.created`). `insert_order` is drawn from a database sequence
//! when the row is written, so a transaction that starts after another committed always has
//! higher values, whatever the instances' clocks; the sequencer numbers by it. SQLite numbers
//! events in the writing transaction, under its one writer, and needs nothing.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = m.get_connection();
        db.execute_unprepared("ALTER TABLE domain_events ADD COLUMN insert_order BIGSERIAL").await?;
        db.execute_unprepared(
            "CREATE INDEX ix_domain_events_unsequenced_order ON domain_events (firm_id, insert_order) \
             WHERE seq IS NULL",
        )
        .await?;
        db.execute_unprepared("DROP INDEX ix_domain_events_unsequenced").await?;
        Ok(())
    }
}
