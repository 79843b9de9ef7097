//! Webhooks: subscriptions, their deliveries, and each firm's place in the outbox.
//!
//! - `webhook_subscriptions`: per firm, a URL, the event names it wants (space-separated), its
//!   signing secret sealed with the server's key (it is needed to sign, so it cannot be
//!   hashed), the previous secret during a rotation, and its failure count.
//! - `webhook_deliveries`: one row per event and subscription (unique), with its state and
//!   the last attempt's status, error, latency and a truncated answer body.
//! - `webhook_cursors`: per firm, the last outbox sequence number turned into deliveries.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookSubscriptions {
    Table,
    Id,
    FirmId,
    Url,
    Events,
    Description,
    Active,
    Secret,
    PreviousSecret,
    PreviousSecretUntil,
    ConsecutiveFailures,
    DisabledReason,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    FirmId,
    SubscriptionId,
    EventId,
    EventType,
    Payload,
    Status,
    Attempts,
    LastStatusCode,
    LastError,
    LastLatencyMs,
    LastResponseBody,
    CreatedAt,
    UpdatedAt,
    DeliveredAt,
}

#[derive(DeriveIden)]
enum WebhookCursors {
    Table,
    FirmId,
    Seq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use WebhookSubscriptions as S;
        m.create_table(
            Table::create()
                .table(S::Table)
                .col(ColumnDef::new(S::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(S::FirmId).uuid().not_null())
                .col(ColumnDef::new(S::Url).string().not_null())
                .col(ColumnDef::new(S::Events).string().not_null())
                .col(ColumnDef::new(S::Description).string().not_null().default(""))
                .col(ColumnDef::new(S::Active).boolean().not_null().default(true))
                .col(ColumnDef::new(S::Secret).string().not_null())
                .col(ColumnDef::new(S::PreviousSecret).string().null())
                .col(ColumnDef::new(S::PreviousSecretUntil).timestamp_with_time_zone().null())
                .col(ColumnDef::new(S::ConsecutiveFailures).integer().not_null().default(0))
                .col(ColumnDef::new(S::DisabledReason).string().null())
                .col(ColumnDef::new(S::CreatedBy).uuid().not_null())
                .col(ColumnDef::new(S::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(S::UpdatedAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_webhook_subs_firm").table(S::Table).col(S::FirmId).to_owned()).await?;

        use WebhookDeliveries as D;
        m.create_table(
            Table::create()
                .table(D::Table)
                .col(ColumnDef::new(D::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(D::FirmId).uuid().not_null())
                .col(ColumnDef::new(D::SubscriptionId).uuid().not_null())
                .col(ColumnDef::new(D::EventId).uuid().not_null())
                .col(ColumnDef::new(D::EventType).string().not_null())
                .col(ColumnDef::new(D::Payload).text().not_null())
                .col(ColumnDef::new(D::Status).string().not_null())
                .col(ColumnDef::new(D::Attempts).integer().not_null().default(0))
                .col(ColumnDef::new(D::LastStatusCode).integer().null())
                .col(ColumnDef::new(D::LastError).string().null())
                .col(ColumnDef::new(D::LastLatencyMs).integer().null())
                .col(ColumnDef::new(D::LastResponseBody).text().null())
                .col(ColumnDef::new(D::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(D::UpdatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(D::DeliveredAt).timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_webhook_delivery_event")
                .table(D::Table)
                .col(D::SubscriptionId)
                .col(D::EventId)
                .unique()
                .to_owned(),
        )
        .await?;

        use WebhookCursors as C;
        m.create_table(
            Table::create()
                .table(C::Table)
                .col(ColumnDef::new(C::FirmId).uuid().not_null().primary_key())
                .col(ColumnDef::new(C::Seq).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
