//! The domain-event outbox (see `lexiflow::events`).
//!
//! - `domain_events`: one row per event, written in the transaction of the change it
//!   describes. `seq` is the firm's gapless, increasing sequence number; on SQLite it is set
//!   in that transaction, on PostgreSQL right after it commits (by the sequencer, which
//!   numbers every committed row of a firm that has none yet, in id order), so readers only
//!   ever read rows that have one. `data` is the resource's public view as JSON text;
//!   `origin` names the process that wrote the row, so a process that tails the outbox for
//!   other processes' changes skips its own.
//! - `event_heads`: per firm, the last `seq` handed out.
//!
//! No index on `occurred_at`: every write pays for each index, and retention prunes by id
//! (UUIDv7, so time-ordered) through the primary key instead.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        let (uuid, ts) = match m.get_database_backend() {
            DbBackend::Postgres => ("UUID", "TIMESTAMPTZ"),
            _ => ("uuid_text", "timestamp_with_timezone_text"),
        };
        db.execute_unprepared(&format!(
            "CREATE TABLE domain_events (
               id {uuid} NOT NULL PRIMARY KEY,
               firm_id {uuid} NOT NULL,
               seq BIGINT NULL,
               event_type TEXT NOT NULL,
               entity_type TEXT NOT NULL,
               entity_id TEXT NOT NULL,
               case_id {uuid} NULL,
               actor_type TEXT NOT NULL,
               actor_id {uuid} NULL,
               correlation_id TEXT NULL,
               occurred_at {ts} NOT NULL,
               data TEXT NOT NULL,
               sealed BOOLEAN NOT NULL DEFAULT FALSE,
               restricted BOOLEAN NOT NULL DEFAULT FALSE,
               origin TEXT NOT NULL
             )"
        ))
        .await?;
        db.execute_unprepared("CREATE UNIQUE INDEX uq_domain_events_firm_seq ON domain_events (firm_id, seq)").await?;
        db.execute_unprepared(
            "CREATE INDEX ix_domain_events_unsequenced ON domain_events (firm_id, id) WHERE seq IS NULL",
        )
        .await?;
        db.execute_unprepared(&format!(
            "CREATE TABLE event_heads (firm_id {uuid} NOT NULL PRIMARY KEY, seq BIGINT NOT NULL DEFAULT 0)"
        ))
        .await?;
        Ok(())
    }
}
