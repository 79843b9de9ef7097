//! Who may see sealed material, and what must stay hidden of once-restricted entries.
//!
//! - `case_sealed_grants`: one row per case and user an admin has let see that case's sealed
//!   docket entries (see `lexiflow::cases::sealed`). No role sees sealed material by leading a
//!   case any more; admins see it by role.
//! - `docket_entries.ever_restricted`: set for good once an entry is restricted, as
//!   `ever_sealed` is for sealing, so its history stays hidden from clients after the
//!   restriction is lifted. Existing entries are backfilled from their current flag and from
//!   the audit trail (an entry created restricted, or restricted or unrestricted later); entries
//!   whose audit entries were pruned keep only their current flag.
//! - `ix_audit_firm_case_time` replaces `ix_audit_firm_case`: case history is read newest first
//!   in keyset pages, `(occurred_at, id)` within a case, and the wider index still serves every
//!   query the old one did, so an audit append keeps the same number of indexes to update.
//!
//! Not reversible: dropping the grants would widen nobody's access but lose the record of who
//! was let in.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CaseSealedGrants {
    Table,
    CaseId,
    UserId,
    FirmId,
    GrantedBy,
    GrantedAt,
}

#[derive(DeriveIden)]
enum Cases {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum DocketEntries {
    Table,
    EverRestricted,
}

#[derive(DeriveIden)]
enum AuditEntries {
    Table,
    FirmId,
    CaseId,
    OccurredAt,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use CaseSealedGrants as G;
        m.create_table(
            Table::create()
                .table(G::Table)
                .col(ColumnDef::new(G::CaseId).uuid().not_null())
                .col(ColumnDef::new(G::UserId).uuid().not_null())
                .col(ColumnDef::new(G::FirmId).uuid().not_null())
                .col(ColumnDef::new(G::GrantedBy).uuid().not_null())
                .col(ColumnDef::new(G::GrantedAt).timestamp_with_time_zone().not_null())
                .primary_key(Index::create().name("pk_case_sealed_grants").col(G::CaseId).col(G::UserId))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_sealed_grant_case")
                        .from(G::Table, G::CaseId)
                        .to(Cases::Table, Cases::Id)
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_sealed_grant_user")
                        .from(G::Table, G::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;

        m.alter_table(
            Table::alter()
                .table(DocketEntries::Table)
                .add_column(ColumnDef::new(DocketEntries::EverRestricted).boolean().not_null().default(false))
                .to_owned(),
        )
        .await?;
        // Audit changes are stored as canonical JSON with sorted keys: `{"new":…,"old":…}`.
        let id_matches = match m.get_database_backend() {
            DbBackend::Postgres => "a.entity_id = docket_entries.id::text",
            _ => "replace(a.entity_id, '-', '') = lower(hex(docket_entries.id))",
        };
        m.get_connection()
            .execute_unprepared(&format!(
                "UPDATE docket_entries SET ever_restricted = TRUE
                  WHERE restricted = TRUE
                     OR EXISTS (SELECT 1 FROM audit_entries a
                                 WHERE a.firm_id = docket_entries.firm_id
                                   AND a.case_id = docket_entries.case_id
                                   AND a.entity_type = 'docket_entry'
                                   AND {id_matches}
                                   AND (a.changes LIKE '%\"restricted\":{{\"new\":true%'
                                        OR a.changes LIKE '%\"restricted\":{{\"new\":false,\"old\":true%'))"
            ))
            .await?;

        m.create_index(
            Index::create()
                .name("ix_audit_firm_case_time")
                .table(AuditEntries::Table)
                .col(AuditEntries::FirmId)
                .col(AuditEntries::CaseId)
                .col(AuditEntries::OccurredAt)
                .col(AuditEntries::Id)
                .to_owned(),
        )
        .await?;
        m.drop_index(Index::drop().name("ix_audit_firm_case").table(AuditEntries::Table).to_owned()).await?;
        Ok(())
    }
}
