//! Brute-force defence: failed logins counted per e-mail address (known or not, so the work
//! done does not reveal which addresses have accounts); the index the default case list
//! sort (`-createdAt`) was missing; and a partial index of live cases per firm, which answers
//! the case list's total count without reading the rows.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LoginAttempts {
    Table,
    Email,
    Failures,
    LockedUntil,
    LastFailureAt,
}

#[derive(DeriveIden)]
enum Cases {
    Table,
    FirmId,
    CreatedAt,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(LoginAttempts::Table)
                .col(ColumnDef::new(LoginAttempts::Email).text().not_null().primary_key())
                .col(ColumnDef::new(LoginAttempts::Failures).integer().not_null().default(0))
                .col(ColumnDef::new(LoginAttempts::LockedUntil).timestamp_with_time_zone().null())
                .col(ColumnDef::new(LoginAttempts::LastFailureAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_cases_firm_created")
                .table(Cases::Table)
                .col(Cases::FirmId)
                .col(Cases::CreatedAt)
                .col(Cases::Id)
                .to_owned(),
        )
        .await?;
        // Same syntax on SQLite and PostgreSQL; sea-query has no portable partial index.
        m.get_connection()
            .execute_unprepared(
                "CREATE INDEX ix_cases_firm_live ON cases (firm_id, created_at, id) WHERE deleted_at IS NULL",
            )
            .await?;
        Ok(())
    }
}
