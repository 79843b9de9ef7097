//! One-statement audit appends (see `lexiflow::audit::chain::append`).
//!
//! - PostgreSQL: `audit_heads.prev_hash`, the hash before the head's, so that the appending
//!   `UPDATE … RETURNING` hands the new entry its `prev_hash`, sequence and hash at once
//!   (`SET prev_hash = hash, hash = …` reads the old row). Empty until a chain's next append.
//! - SQLite: the trigger `audit_entries_advance_head` moves the chain's head to every
//!   inserted entry.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        match m.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared("ALTER TABLE audit_heads ADD COLUMN prev_hash TEXT").await?;
            }
            _ => {
                db.execute_unprepared(
                    "CREATE TRIGGER audit_entries_advance_head AFTER INSERT ON audit_entries
                     BEGIN
                       UPDATE audit_heads SET sequence = NEW.sequence, hash = NEW.hash
                        WHERE firm_id = NEW.firm_id AND chain = NEW.chain AND sequence < NEW.sequence;
                     END",
                )
                .await?;
            }
        }
        Ok(())
    }
}
