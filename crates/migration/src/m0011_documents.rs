//! Documents, their versions, the content-addressed blobs they point at, and tus uploads.
//!
//! - `uploads`: one row per tus upload (see `lexiflow::uploads`): who made it, for which
//!   case, its declared length and the offset the store has durably acknowledged, the
//!   running SHA-256 state and what the store needs for the next PATCH (`storage_state`: on
//!   S3 the multipart upload and its parts), so any instance can take it, a lease (`lock_token`,
//!   `locked_until`) that keeps two PATCHes from interleaving on any instance, and, once
//!   complete, the blob it became.
//! - `blobs`: per firm, one row per distinct content (SHA-256): stored once however many
//!   uploads and versions carry it (`ref_count`), with its sniffed MIME type and scan state.
//! - `documents` and `document_versions`: a case's documents; version numbers are unique per
//!   document (`ux_document_versions_number`) and assigned under the document's row lock.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Uploads {
    Table,
    Id,
    FirmId,
    UserId,
    CaseId,
    Filename,
    DeclaredType,
    Metadata,
    Length,
    Offset,
    HashState,
    StorageState,
    Sha256,
    Mime,
    BlobId,
    LockToken,
    LockedUntil,
    ExpiresAt,
    CreatedAt,
    UpdatedAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum Blobs {
    Table,
    Id,
    FirmId,
    Sha256,
    Size,
    Mime,
    StorageKey,
    ScanStatus,
    ScanDetail,
    ScannedAt,
    ThumbnailKey,
    RefCount,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Documents {
    Table,
    Id,
    FirmId,
    CaseId,
    Title,
    DocType,
    Tags,
    Sealed,
    Restricted,
    LegalHold,
    CurrentVersion,
    Version,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum DocumentVersions {
    Table,
    Id,
    FirmId,
    DocumentId,
    Number,
    BlobId,
    Filename,
    Mime,
    Size,
    Sha256,
    ChangeNote,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Cases {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use Blobs as B;
        m.create_table(
            Table::create()
                .table(B::Table)
                .col(ColumnDef::new(B::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(B::FirmId).uuid().not_null())
                .col(ColumnDef::new(B::Sha256).string().not_null())
                .col(ColumnDef::new(B::Size).big_integer().not_null())
                .col(ColumnDef::new(B::Mime).string().not_null())
                .col(ColumnDef::new(B::StorageKey).string().not_null())
                .col(ColumnDef::new(B::ScanStatus).string().not_null())
                .col(ColumnDef::new(B::ScanDetail).string().null())
                .col(ColumnDef::new(B::ScannedAt).timestamp_with_time_zone().null())
                .col(ColumnDef::new(B::ThumbnailKey).string().null())
                .col(ColumnDef::new(B::RefCount).big_integer().not_null())
                .col(ColumnDef::new(B::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(B::UpdatedAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("ux_blobs_content").table(B::Table).col(B::FirmId).col(B::Sha256).unique().to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("ix_blobs_refs").table(B::Table).col(B::RefCount).col(B::UpdatedAt).to_owned(),
        )
        .await?;

        use Uploads as U;
        m.create_table(
            Table::create()
                .table(U::Table)
                .col(ColumnDef::new(U::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(U::FirmId).uuid().not_null())
                .col(ColumnDef::new(U::UserId).uuid().not_null())
                .col(ColumnDef::new(U::CaseId).uuid().not_null())
                .col(ColumnDef::new(U::Filename).string().not_null())
                .col(ColumnDef::new(U::DeclaredType).string().null())
                .col(ColumnDef::new(U::Metadata).text().not_null())
                .col(ColumnDef::new(U::Length).big_integer().not_null())
                .col(ColumnDef::new(U::Offset).big_integer().not_null())
                .col(ColumnDef::new(U::HashState).text().not_null())
                .col(ColumnDef::new(U::StorageState).text().null())
                .col(ColumnDef::new(U::Sha256).string().null())
                .col(ColumnDef::new(U::Mime).string().null())
                .col(ColumnDef::new(U::BlobId).uuid().null())
                .col(ColumnDef::new(U::LockToken).uuid().null())
                .col(ColumnDef::new(U::LockedUntil).timestamp_with_time_zone().null())
                .col(ColumnDef::new(U::ExpiresAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(U::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(U::UpdatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(U::CompletedAt).timestamp_with_time_zone().null())
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_upload_blob")
                        .from(U::Table, U::BlobId)
                        .to(B::Table, B::Id)
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_uploads_expires").table(U::Table).col(U::ExpiresAt).to_owned()).await?;

        use Documents as D;
        m.create_table(
            Table::create()
                .table(D::Table)
                .col(ColumnDef::new(D::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(D::FirmId).uuid().not_null())
                .col(ColumnDef::new(D::CaseId).uuid().not_null())
                .col(ColumnDef::new(D::Title).string().not_null())
                .col(ColumnDef::new(D::DocType).string().not_null())
                .col(ColumnDef::new(D::Tags).text().not_null())
                .col(ColumnDef::new(D::Sealed).boolean().not_null())
                .col(ColumnDef::new(D::Restricted).boolean().not_null())
                .col(ColumnDef::new(D::LegalHold).boolean().not_null())
                .col(ColumnDef::new(D::CurrentVersion).integer().not_null())
                .col(ColumnDef::new(D::Version).integer().not_null())
                .col(ColumnDef::new(D::CreatedBy).uuid().not_null())
                .col(ColumnDef::new(D::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(D::UpdatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(D::DeletedAt).timestamp_with_time_zone().null())
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_document_case")
                        .from(D::Table, D::CaseId)
                        .to(Cases::Table, Cases::Id)
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_documents_case").table(D::Table).col(D::CaseId).col(D::Id).to_owned())
            .await?;

        use DocumentVersions as V;
        m.create_table(
            Table::create()
                .table(V::Table)
                .col(ColumnDef::new(V::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(V::FirmId).uuid().not_null())
                .col(ColumnDef::new(V::DocumentId).uuid().not_null())
                .col(ColumnDef::new(V::Number).integer().not_null())
                .col(ColumnDef::new(V::BlobId).uuid().not_null())
                .col(ColumnDef::new(V::Filename).string().not_null())
                .col(ColumnDef::new(V::Mime).string().not_null())
                .col(ColumnDef::new(V::Size).big_integer().not_null())
                .col(ColumnDef::new(V::Sha256).string().not_null())
                .col(ColumnDef::new(V::ChangeNote).string().null())
                .col(ColumnDef::new(V::CreatedBy).uuid().not_null())
                .col(ColumnDef::new(V::CreatedAt).timestamp_with_time_zone().not_null())
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_version_document")
                        .from(V::Table, V::DocumentId)
                        .to(D::Table, D::Id)
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_version_blob")
                        .from(V::Table, V::BlobId)
                        .to(B::Table, B::Id)
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_document_versions_number")
                .table(V::Table)
                .col(V::DocumentId)
                .col(V::Number)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_document_versions_blob").table(V::Table).col(V::BlobId).to_owned())
            .await?;
        Ok(())
    }
}
