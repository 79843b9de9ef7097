//! The calendar: events, their attendees, court closures, a firm's own deadline rules and the
//! `.ics` feed tokens (see `lexiflow::calendar`).
//!
//! - `calendar_events`: per firm, optionally tied to a case and a docket entry. `starts_at` and
//!   `ends_at` are instants (for all-day events, the start of the first day and of the day
//!   after the last, in the event's `time_zone`; `start_date`/`end_date` keep the days). A
//!   deadline computed by rule keeps the rule, its trigger date, the service method and the
//!   computation (`computation`, JSON), and is recomputed when its docket entry's date
//!   changes while `recompute` holds (a hand edit of the dates clears it). `reminders` is a
//!   JSON array of minutes before the start.
//! - `calendar_attendees`: the event's attendees in order: a user of the firm or an e-mail.
//! - `court_closures`: days a firm's courts are closed beyond the federal holidays; FRCP
//!   6(a)(6) counts them as legal holidays.
//! - `deadline_rules`: a firm's own rules, beside those shipped in `rules.toml`.
//! - `calendar_feeds`: per user, the SHA-256 of the secret token of their `.ics` feed.
//! - `calendar_reminders_sent`: one row per reminder sent (event, its version, minutes
//!   before), so a reminder job run twice (a worker that died after sending) sends once.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CalendarEvents {
    Table,
    Id,
    FirmId,
    CaseId,
    DocketEntryId,
    EventType,
    Title,
    Description,
    Location,
    StartsAt,
    EndsAt,
    StartDate,
    EndDate,
    AllDay,
    TimeZone,
    AssigneeId,
    Reminders,
    Completed,
    CompletedAt,
    RuleId,
    TriggerDate,
    ServiceMethod,
    Computation,
    Recompute,
    Version,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum CalendarAttendees {
    Table,
    EventId,
    Position,
    UserId,
    Email,
    Name,
}

#[derive(DeriveIden)]
enum CourtClosures {
    Table,
    FirmId,
    Day,
    Name,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum DeadlineRules {
    Table,
    FirmId,
    Id,
    Name,
    Source,
    Text,
    Trigger,
    Amount,
    Unit,
    Direction,
    ServiceExtension,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CalendarFeeds {
    Table,
    Id,
    FirmId,
    UserId,
    TokenHash,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum CalendarRemindersSent {
    Table,
    EventId,
    Version,
    Minutes,
    SentAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use CalendarEvents as E;
        m.create_table(
            Table::create()
                .table(E::Table)
                .col(ColumnDef::new(E::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(E::FirmId).uuid().not_null())
                .col(ColumnDef::new(E::CaseId).uuid().null())
                .col(ColumnDef::new(E::DocketEntryId).uuid().null())
                .col(ColumnDef::new(E::EventType).string().not_null())
                .col(ColumnDef::new(E::Title).string().not_null())
                .col(ColumnDef::new(E::Description).text().null())
                .col(ColumnDef::new(E::Location).string().null())
                .col(ColumnDef::new(E::StartsAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(E::EndsAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(E::StartDate).date().null())
                .col(ColumnDef::new(E::EndDate).date().null())
                .col(ColumnDef::new(E::AllDay).boolean().not_null())
                .col(ColumnDef::new(E::TimeZone).string().not_null())
                .col(ColumnDef::new(E::AssigneeId).uuid().null())
                .col(ColumnDef::new(E::Reminders).string().not_null())
                .col(ColumnDef::new(E::Completed).boolean().not_null())
                .col(ColumnDef::new(E::CompletedAt).timestamp_with_time_zone().null())
                .col(ColumnDef::new(E::RuleId).string().null())
                .col(ColumnDef::new(E::TriggerDate).date().null())
                .col(ColumnDef::new(E::ServiceMethod).string().null())
                .col(ColumnDef::new(E::Computation).text().null())
                .col(ColumnDef::new(E::Recompute).boolean().not_null())
                .col(ColumnDef::new(E::Version).integer().not_null())
                .col(ColumnDef::new(E::CreatedBy).uuid().not_null())
                .col(ColumnDef::new(E::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(E::UpdatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(E::DeletedAt).timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            ("ix_calendar_events_firm_start", vec![E::FirmId, E::StartsAt, E::Id]),
            ("ix_calendar_events_case", vec![E::CaseId, E::StartsAt]),
            ("ix_calendar_events_entry", vec![E::DocketEntryId]),
            ("ix_calendar_events_assignee", vec![E::AssigneeId, E::StartsAt]),
        ] {
            let mut idx = Index::create().name(name).table(E::Table).to_owned();
            for c in cols {
                idx.col(c);
            }
            m.create_index(idx).await?;
        }

        use CalendarAttendees as A;
        m.create_table(
            Table::create()
                .table(A::Table)
                .col(ColumnDef::new(A::EventId).uuid().not_null())
                .col(ColumnDef::new(A::Position).integer().not_null())
                .col(ColumnDef::new(A::UserId).uuid().null())
                .col(ColumnDef::new(A::Email).string().null())
                .col(ColumnDef::new(A::Name).string().null())
                .primary_key(Index::create().name("pk_calendar_attendees").col(A::EventId).col(A::Position))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_calendar_attendee_event")
                        .from(A::Table, A::EventId)
                        .to(E::Table, E::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_calendar_attendees_user")
                .table(A::Table)
                .col(A::UserId)
                .col(A::EventId)
                .to_owned(),
        )
        .await?;

        use CourtClosures as C;
        m.create_table(
            Table::create()
                .table(C::Table)
                .col(ColumnDef::new(C::FirmId).uuid().not_null())
                .col(ColumnDef::new(C::Day).date().not_null())
                .col(ColumnDef::new(C::Name).string().not_null())
                .col(ColumnDef::new(C::CreatedBy).uuid().not_null())
                .col(ColumnDef::new(C::CreatedAt).timestamp_with_time_zone().not_null())
                .primary_key(Index::create().name("pk_court_closures").col(C::FirmId).col(C::Day))
                .to_owned(),
        )
        .await?;

        use DeadlineRules as R;
        m.create_table(
            Table::create()
                .table(R::Table)
                .col(ColumnDef::new(R::FirmId).uuid().not_null())
                .col(ColumnDef::new(R::Id).string().not_null())
                .col(ColumnDef::new(R::Name).string().not_null())
                .col(ColumnDef::new(R::Source).string().not_null())
                .col(ColumnDef::new(R::Text).text().not_null())
                .col(ColumnDef::new(R::Trigger).string().not_null())
                .col(ColumnDef::new(R::Amount).integer().not_null())
                .col(ColumnDef::new(R::Unit).string().not_null())
                .col(ColumnDef::new(R::Direction).string().not_null())
                .col(ColumnDef::new(R::ServiceExtension).boolean().not_null())
                .col(ColumnDef::new(R::CreatedBy).uuid().not_null())
                .col(ColumnDef::new(R::CreatedAt).timestamp_with_time_zone().not_null())
                .primary_key(Index::create().name("pk_deadline_rules").col(R::FirmId).col(R::Id))
                .to_owned(),
        )
        .await?;

        use CalendarFeeds as F;
        m.create_table(
            Table::create()
                .table(F::Table)
                .col(ColumnDef::new(F::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(F::FirmId).uuid().not_null())
                .col(ColumnDef::new(F::UserId).uuid().not_null())
                .col(ColumnDef::new(F::TokenHash).string().not_null().unique_key())
                .col(ColumnDef::new(F::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(F::LastUsedAt).timestamp_with_time_zone().null())
                .col(ColumnDef::new(F::RevokedAt).timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_calendar_feeds_user").table(F::Table).col(F::UserId).to_owned())
            .await?;

        use CalendarRemindersSent as S;
        m.create_table(
            Table::create()
                .table(S::Table)
                .col(ColumnDef::new(S::EventId).uuid().not_null())
                .col(ColumnDef::new(S::Version).integer().not_null())
                .col(ColumnDef::new(S::Minutes).integer().not_null())
                .col(ColumnDef::new(S::SentAt).timestamp_with_time_zone().not_null())
                .primary_key(
                    Index::create().name("pk_calendar_reminders_sent").col(S::EventId).col(S::Version).col(S::Minutes),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
