//! SQLite: the audit chain's head follows every inserted entry (`audit_entries_advance_head`),
//! so an audited write appends its entry in one statement (see `lexiflow::audit::chain`).
//! PostgreSQL moves the head in the appending statement itself and needs nothing here.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DbBackend::Sqlite {
            m.get_connection()
                .execute_unprepared(
                    "CREATE TRIGGER audit_entries_advance_head AFTER INSERT ON audit_entries
                     BEGIN
                       UPDATE audit_heads SET sequence = NEW.sequence, hash = NEW.hash
                        WHERE firm_id = NEW.firm_id AND chain = NEW.chain AND sequence < NEW.sequence;
                     END",
                )
                .await?;
        }
        Ok(())
    }
}
