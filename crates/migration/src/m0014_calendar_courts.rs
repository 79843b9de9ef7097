//! Court closures per court (see `lexiflow::calendar::court`), and what a provider copy named.
//!
//! `court_closures` gains `court`: the court a closure applies to, matched against a case's
//! `court` without regard to case or surrounding spaces, or `''` for every court of the firm
//! (what every closure recorded before meant). The key becomes `(firm_id, day, court)`, so two
//! courts can be closed on one day. The table is rebuilt (SQLite cannot change a primary key
//! in place); existing closures keep applying to every court.
//!
//! `calendar_event_links` gains `attendees_sent`: a digest of the attendees a provider copy was
//! last sent with, so that a revalidation sends a copy again only when the attendees it may
//! name changed (someone lost sight of a sealed entry's event), not on every run.
//!
//! `calendar_reminders_sent` gains `due_at`: when the reminder sent was due, so that a version
//! of an event that replaced one whose reminder had not run yet sends it, and one whose
//! reminder was sent for the same moment does not send it again.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CourtClosures {
    Table,
}

#[derive(DeriveIden)]
enum CourtClosuresNext {
    Table,
    FirmId,
    Day,
    Court,
    Name,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CalendarEventLinks {
    Table,
    AttendeesSent,
}

#[derive(DeriveIden)]
enum CalendarRemindersSent {
    Table,
    DueAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use CourtClosuresNext as C;
        use sea_orm_migration::sea_orm::{ConnectionTrait, TransactionTrait};
        let create = Table::create()
            .table(C::Table)
            .col(ColumnDef::new(C::FirmId).uuid().not_null())
            .col(ColumnDef::new(C::Day).date().not_null())
            .col(ColumnDef::new(C::Court).string().not_null().default(""))
            .col(ColumnDef::new(C::Name).string().not_null())
            .col(ColumnDef::new(C::CreatedBy).uuid().not_null())
            .col(ColumnDef::new(C::CreatedAt).timestamp_with_time_zone().not_null())
            .primary_key(Index::create().name("pk_court_closures_by_court").col(C::FirmId).col(C::Day).col(C::Court))
            .to_owned();
        // On one connection, in one transaction: on SQLite another pooled connection may still
        // read the schema as it was before the old table was dropped, and refuse the rename.
        let tx = m.get_connection().begin().await?;
        tx.execute(&create).await?;
        tx.execute_unprepared(
            "INSERT INTO court_closures_next (firm_id, day, court, name, created_by, created_at)
             SELECT firm_id, day, '', name, created_by, created_at FROM court_closures",
        )
        .await?;
        tx.execute(&Table::drop().table(CourtClosures::Table).to_owned()).await?;
        tx.execute(&Table::rename().table(C::Table, CourtClosures::Table).to_owned()).await?;
        tx.commit().await?;
        m.alter_table(
            Table::alter()
                .table(CalendarEventLinks::Table)
                .add_column(ColumnDef::new(CalendarEventLinks::AttendeesSent).string().null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(CalendarRemindersSent::Table)
                .add_column(ColumnDef::new(CalendarRemindersSent::DueAt).timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
