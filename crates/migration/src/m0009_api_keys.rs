//! API keys, and the stored first answers of `Idempotency-Key` requests.
//!
//! - `api_keys`: one row per key a firm's admin made. Only the public prefix and a SHA-256 of
//!   the secret are kept, never the key (see `lexiflow::api_keys`). The key acts for its
//!   firm, on behalf of the admin who made it (`created_by`), within its `scopes`
//!   (space-separated).
//! - `idempotency_keys`: per firm and key, the SHA-256 of the first request and, once it was
//!   answered, its status, content type and body, kept 24 hours (see `lexiflow::http::idempotency`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    FirmId,
    Name,
    Prefix,
    SecretHash,
    Scopes,
    CreatedBy,
    CreatedAt,
    ExpiresAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    FirmId,
    Key,
    RequestHash,
    StatusCode,
    ContentType,
    Body,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use ApiKeys as K;
        m.create_table(
            Table::create()
                .table(K::Table)
                .col(ColumnDef::new(K::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(K::FirmId).uuid().not_null())
                .col(ColumnDef::new(K::Name).string().not_null())
                .col(ColumnDef::new(K::Prefix).string().not_null().unique_key())
                .col(ColumnDef::new(K::SecretHash).string().not_null())
                .col(ColumnDef::new(K::Scopes).string().not_null())
                .col(ColumnDef::new(K::CreatedBy).uuid().not_null())
                .col(ColumnDef::new(K::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(K::ExpiresAt).timestamp_with_time_zone().null())
                .col(ColumnDef::new(K::LastUsedAt).timestamp_with_time_zone().null())
                .col(ColumnDef::new(K::RevokedAt).timestamp_with_time_zone().null())
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_api_key_creator")
                        .from(K::Table, K::CreatedBy)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_api_keys_firm").table(K::Table).col(K::FirmId).col(K::Id).to_owned())
            .await?;

        use IdempotencyKeys as I;
        m.create_table(
            Table::create()
                .table(I::Table)
                .col(ColumnDef::new(I::FirmId).uuid().not_null())
                .col(ColumnDef::new(I::Key).string().not_null())
                .col(ColumnDef::new(I::RequestHash).string().not_null())
                .col(ColumnDef::new(I::StatusCode).integer().null())
                .col(ColumnDef::new(I::ContentType).string().null())
                .col(ColumnDef::new(I::Body).text().null())
                .col(ColumnDef::new(I::CreatedAt).timestamp_with_time_zone().not_null())
                .primary_key(Index::create().name("pk_idempotency_keys").col(I::FirmId).col(I::Key))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("ix_idempotency_keys_created").table(I::Table).col(I::CreatedAt).to_owned(),
        )
        .await?;
        Ok(())
    }
}
