//! Docket entries: each case's numbered record of filings, orders and hearings.
//!
//! `sequence_number` is assigned by the server, gapless and unique per case (the unique
//! index is the last line of defence; the write path serialises posters per case). Entries
//! are never hard-deleted: a struck entry keeps its number and row (`deleted_at`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DocketEntries {
    Table,
    Id,
    FirmId,
    CaseId,
    SequenceNumber,
    EntryDate,
    FiledAt,
    EntryType,
    Description,
    Text,
    FiledBy,
    DocumentNumber,
    Sealed,
    EverSealed,
    Restricted,
    Version,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum Cases {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use DocketEntries as D;
        let text = |c: D| ColumnDef::new(c).text().not_null().to_owned();
        let text_null = |c: D| ColumnDef::new(c).text().null().to_owned();
        let ts = |c: D| ColumnDef::new(c).timestamp_with_time_zone().not_null().to_owned();
        let ts_null = |c: D| ColumnDef::new(c).timestamp_with_time_zone().null().to_owned();
        m.create_table(
            Table::create()
                .table(D::Table)
                .col(ColumnDef::new(D::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(D::FirmId).uuid().not_null())
                .col(ColumnDef::new(D::CaseId).uuid().not_null())
                .col(ColumnDef::new(D::SequenceNumber).big_integer().not_null())
                .col(ColumnDef::new(D::EntryDate).date().not_null())
                .col(ts_null(D::FiledAt))
                .col(text(D::EntryType))
                .col(text(D::Description))
                .col(text_null(D::Text))
                .col(text_null(D::FiledBy))
                .col(text_null(D::DocumentNumber))
                .col(ColumnDef::new(D::Sealed).boolean().not_null().default(false))
                // Set for good once an entry is sealed: its history stays hidden from those who
                // may not see sealed material even after it is unsealed (it may hold what was
                // redacted before unsealing).
                .col(ColumnDef::new(D::EverSealed).boolean().not_null().default(false))
                .col(ColumnDef::new(D::Restricted).boolean().not_null().default(false))
                .col(ColumnDef::new(D::Version).integer().not_null().default(1))
                .col(ColumnDef::new(D::CreatedBy).uuid().not_null())
                .col(ts(D::CreatedAt))
                .col(ts(D::UpdatedAt))
                .col(ts_null(D::DeletedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_docket_case")
                        .from(D::Table, D::CaseId)
                        .to(Cases::Table, Cases::Id)
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("uq_docket_case_sequence")
                .table(D::Table)
                .col(D::CaseId)
                .col(D::SequenceNumber)
                .unique()
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
