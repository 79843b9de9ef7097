//! The tamper-evident audit trail: `audit_entries` (append-only, hash-chained per firm in a
//! few parallel chains), `audit_heads` (each chain's head and, after pruning, its anchor),
//! and the triggers
//! that refuse UPDATE and DELETE on entries on both databases. Not reversible by design.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEntries {
    Table,
    Id,
    FirmId,
    Chain,
    Sequence,
    OccurredAt,
    ActorType,
    ActorId,
    ActorRole,
    Action,
    EntityType,
    EntityId,
    CaseId,
    Changes,
    CorrelationId,
    Ip,
    UserAgent,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum AuditHeads {
    Table,
    FirmId,
    Chain,
    Sequence,
    Hash,
    AnchorSequence,
    AnchorHash,
    PrunedAt,
}

#[derive(DeriveIden)]
enum AuditPruneGuard {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let text = |c: AuditEntries| ColumnDef::new(c).text().not_null().to_owned();
        let text_null = |c: AuditEntries| ColumnDef::new(c).text().null().to_owned();
        m.create_table(
            Table::create()
                .table(AuditEntries::Table)
                .col(ColumnDef::new(AuditEntries::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(AuditEntries::FirmId).uuid().not_null())
                .col(ColumnDef::new(AuditEntries::Chain).integer().not_null())
                .col(ColumnDef::new(AuditEntries::Sequence).big_integer().not_null())
                .col(ColumnDef::new(AuditEntries::OccurredAt).timestamp_with_time_zone().not_null())
                .col(text(AuditEntries::ActorType))
                .col(ColumnDef::new(AuditEntries::ActorId).uuid().null())
                .col(text_null(AuditEntries::ActorRole))
                .col(text(AuditEntries::Action))
                .col(text(AuditEntries::EntityType))
                .col(text_null(AuditEntries::EntityId))
                .col(ColumnDef::new(AuditEntries::CaseId).uuid().null())
                .col(text(AuditEntries::Changes))
                .col(text_null(AuditEntries::CorrelationId))
                .col(text_null(AuditEntries::Ip))
                .col(text_null(AuditEntries::UserAgent))
                .col(text(AuditEntries::PrevHash))
                .col(text(AuditEntries::Hash))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("uq_audit_firm_chain_sequence")
                .table(AuditEntries::Table)
                .col(AuditEntries::FirmId)
                .col(AuditEntries::Chain)
                .col(AuditEntries::Sequence)
                .unique()
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("ix_audit_firm_entity", AuditEntries::EntityId),
            ("ix_audit_firm_case", AuditEntries::CaseId),
            ("ix_audit_firm_actor", AuditEntries::ActorId),
            ("ix_audit_firm_time", AuditEntries::OccurredAt),
        ] {
            m.create_index(
                Index::create().name(name).table(AuditEntries::Table).col(AuditEntries::FirmId).col(col).to_owned(),
            )
            .await?;
        }
        m.create_table(
            Table::create()
                .table(AuditHeads::Table)
                .col(ColumnDef::new(AuditHeads::FirmId).uuid().not_null())
                .col(ColumnDef::new(AuditHeads::Chain).integer().not_null())
                .col(ColumnDef::new(AuditHeads::Sequence).big_integer().not_null())
                .col(ColumnDef::new(AuditHeads::Hash).text().not_null())
                .col(ColumnDef::new(AuditHeads::AnchorSequence).big_integer().not_null().default(0))
                .col(ColumnDef::new(AuditHeads::AnchorHash).text().not_null())
                .col(ColumnDef::new(AuditHeads::PrunedAt).timestamp_with_time_zone().null())
                .primary_key(Index::create().name("pk_audit_heads").col(AuditHeads::FirmId).col(AuditHeads::Chain))
                .to_owned(),
        )
        .await?;
        // Present (inside the pruning transaction only) while retention deletes old entries.
        m.create_table(
            Table::create()
                .table(AuditPruneGuard::Table)
                .col(ColumnDef::new(AuditPruneGuard::Id).integer().not_null().primary_key())
                .to_owned(),
        )
        .await?;

        let db = m.get_connection();
        match m.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "CREATE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                       IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM audit_prune_guard) THEN
                         RETURN OLD;
                       END IF;
                       RAISE EXCEPTION 'audit entries are append-only (% refused)', TG_OP;
                     END $$",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
                     FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
                     FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only()",
                )
                .await?;
            }
            _ => {
                db.execute_unprepared(
                    "CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
                     BEGIN SELECT RAISE(ABORT, 'audit entries are append-only (UPDATE refused)'); END",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
                     WHEN NOT EXISTS (SELECT 1 FROM audit_prune_guard)
                     BEGIN SELECT RAISE(ABORT, 'audit entries are append-only (DELETE refused)'); END",
                )
                .await?;
            }
        }
        Ok(())
    }
}
