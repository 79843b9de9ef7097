//! Calendar provider sync (see `lexiflow::calendar::sync`).
//!
//! - `calendar_connections`: per user and provider (`google`, `microsoft`), the OAuth tokens
//!   sealed with AES-256-GCM under `CALENDAR_TOKEN_KEY` (never stored in the clear), when the
//!   access token expires, the provider's incremental-sync cursor (Google's `syncToken`, Graph's
//!   `deltaLink`), and the connection's state.
//! - `calendar_oauth_states`: an authorization in flight: the SHA-256 of its `state`, whose
//!   user it is, and the sealed PKCE verifier; used once, and only within 10 minutes.
//! - `calendar_event_links`: which provider event a LexiFlow event became on a connection,
//!   the provider's ETag and change time at the last sync, and the LexiFlow version that was
//!   last pushed or pulled (the conflict rule compares both sides against them).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CalendarConnections {
    Table,
    Id,
    FirmId,
    UserId,
    Provider,
    AccountEmail,
    AccessToken,
    RefreshToken,
    ExpiresAt,
    Scope,
    SyncCursor,
    Status,
    LastError,
    LastSyncedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CalendarOauthStates {
    Table,
    StateHash,
    FirmId,
    UserId,
    Provider,
    Verifier,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum CalendarEventLinks {
    Table,
    EventId,
    ConnectionId,
    RemoteId,
    RemoteEtag,
    RemoteUpdatedAt,
    PushedVersion,
    SyncedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use CalendarConnections as C;
        m.create_table(
            Table::create()
                .table(C::Table)
                .col(ColumnDef::new(C::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(C::FirmId).uuid().not_null())
                .col(ColumnDef::new(C::UserId).uuid().not_null())
                .col(ColumnDef::new(C::Provider).string().not_null())
                .col(ColumnDef::new(C::AccountEmail).string().null())
                .col(ColumnDef::new(C::AccessToken).text().not_null())
                .col(ColumnDef::new(C::RefreshToken).text().null())
                .col(ColumnDef::new(C::ExpiresAt).timestamp_with_time_zone().null())
                .col(ColumnDef::new(C::Scope).string().null())
                .col(ColumnDef::new(C::SyncCursor).text().null())
                .col(ColumnDef::new(C::Status).string().not_null())
                .col(ColumnDef::new(C::LastError).text().null())
                .col(ColumnDef::new(C::LastSyncedAt).timestamp_with_time_zone().null())
                .col(ColumnDef::new(C::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(C::UpdatedAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_calendar_connections_user")
                .table(C::Table)
                .col(C::UserId)
                .col(C::Provider)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_calendar_connections_firm")
                .table(C::Table)
                .col(C::FirmId)
                .col(C::Status)
                .to_owned(),
        )
        .await?;

        use CalendarOauthStates as S;
        m.create_table(
            Table::create()
                .table(S::Table)
                .col(ColumnDef::new(S::StateHash).string().not_null().primary_key())
                .col(ColumnDef::new(S::FirmId).uuid().not_null())
                .col(ColumnDef::new(S::UserId).uuid().not_null())
                .col(ColumnDef::new(S::Provider).string().not_null())
                .col(ColumnDef::new(S::Verifier).text().not_null())
                .col(ColumnDef::new(S::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(S::ExpiresAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;

        use CalendarEventLinks as L;
        m.create_table(
            Table::create()
                .table(L::Table)
                .col(ColumnDef::new(L::EventId).uuid().not_null())
                .col(ColumnDef::new(L::ConnectionId).uuid().not_null())
                .col(ColumnDef::new(L::RemoteId).string().not_null())
                .col(ColumnDef::new(L::RemoteEtag).string().null())
                .col(ColumnDef::new(L::RemoteUpdatedAt).timestamp_with_time_zone().null())
                .col(ColumnDef::new(L::PushedVersion).integer().not_null())
                .col(ColumnDef::new(L::SyncedAt).timestamp_with_time_zone().not_null())
                .primary_key(Index::create().name("pk_calendar_event_links").col(L::EventId).col(L::ConnectionId))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_calendar_event_links_remote")
                .table(L::Table)
                .col(L::ConnectionId)
                .col(L::RemoteId)
                .unique()
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
