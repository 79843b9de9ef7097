//! Firms, users, login sessions with their refresh tokens, cases, case teams and parties.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Firms {
    Table,
    Id,
    Name,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    FirmId,
    Email,
    PasswordHash,
    FirstName,
    LastName,
    Role,
    Status,
    Version,
    LastLoginAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    FirmId,
    UserAgent,
    Ip,
    CreatedAt,
    LastSeenAt,
    ExpiresAt,
    RevokedAt,
    RevokedReason,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    TokenHash,
    SessionId,
    CreatedAt,
    UsedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Cases {
    Table,
    Id,
    FirmId,
    CaseNumber,
    Title,
    CaseType,
    Status,
    Description,
    Court,
    Jurisdiction,
    Judge,
    FiledAt,
    ClosedAt,
    ClientName,
    LeadAttorneyId,
    Version,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum CaseTeamMembers {
    Table,
    CaseId,
    UserId,
    FirmId,
    Role,
    AddedBy,
    AddedAt,
}

#[derive(DeriveIden)]
enum Parties {
    Table,
    Id,
    FirmId,
    CaseId,
    Name,
    Kind,
    PartyType,
    Role,
    Email,
    Phone,
    Address,
    Website,
    Counsel,
    Notes,
    Version,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

fn ts(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).timestamp_with_time_zone().not_null().to_owned()
}

fn ts_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).timestamp_with_time_zone().null().to_owned()
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}

fn text_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().null().to_owned()
}

fn uuid(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).uuid().not_null().to_owned()
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create().name(name).from(from.0, from.1).to(to.0, to.1).on_delete(ForeignKeyAction::Restrict).to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Firms::Table)
                .col(uuid(Firms::Id).primary_key())
                .col(text(Firms::Name))
                .col(ts(Firms::CreatedAt))
                .col(ts(Firms::UpdatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Users::Table)
                .col(uuid(Users::Id).primary_key())
                .col(uuid(Users::FirmId))
                .col(text(Users::Email))
                .col(text(Users::PasswordHash))
                .col(text(Users::FirstName))
                .col(text(Users::LastName))
                .col(text(Users::Role))
                .col(text(Users::Status))
                .col(ColumnDef::new(Users::Version).integer().not_null().default(1))
                .col(ts_null(Users::LastLoginAt))
                .col(ts(Users::CreatedAt))
                .col(ts(Users::UpdatedAt))
                .foreign_key(&mut fk("fk_users_firm", (Users::Table, Users::FirmId), (Firms::Table, Firms::Id)))
                .to_owned(),
        )
        .await?;
        // Login is by e-mail alone, so an address belongs to one user across all firms.
        m.create_index(
            Index::create().name("uq_users_email").table(Users::Table).col(Users::Email).unique().to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("ix_users_firm").table(Users::Table).col(Users::FirmId).col(Users::Id).to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Sessions::Table)
                .col(uuid(Sessions::Id).primary_key())
                .col(uuid(Sessions::UserId))
                .col(uuid(Sessions::FirmId))
                .col(text_null(Sessions::UserAgent))
                .col(text_null(Sessions::Ip))
                .col(ts(Sessions::CreatedAt))
                .col(ts(Sessions::LastSeenAt))
                .col(ts(Sessions::ExpiresAt))
                .col(ts_null(Sessions::RevokedAt))
                .col(text_null(Sessions::RevokedReason))
                .foreign_key(&mut fk(
                    "fk_sessions_user",
                    (Sessions::Table, Sessions::UserId),
                    (Users::Table, Users::Id),
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("ix_sessions_user").table(Sessions::Table).col(Sessions::UserId).to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(RefreshTokens::Table)
                .col(text(RefreshTokens::TokenHash).primary_key())
                .col(uuid(RefreshTokens::SessionId))
                .col(ts(RefreshTokens::CreatedAt))
                .col(ts_null(RefreshTokens::UsedAt))
                .col(ts(RefreshTokens::ExpiresAt))
                .foreign_key(&mut fk(
                    "fk_refresh_tokens_session",
                    (RefreshTokens::Table, RefreshTokens::SessionId),
                    (Sessions::Table, Sessions::Id),
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_refresh_tokens_session")
                .table(RefreshTokens::Table)
                .col(RefreshTokens::SessionId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Cases::Table)
                .col(uuid(Cases::Id).primary_key())
                .col(uuid(Cases::FirmId))
                .col(text(Cases::CaseNumber))
                .col(text(Cases::Title))
                .col(text(Cases::CaseType))
                .col(text(Cases::Status))
                .col(text_null(Cases::Description))
                .col(text_null(Cases::Court))
                .col(text_null(Cases::Jurisdiction))
                .col(text_null(Cases::Judge))
                .col(ts_null(Cases::FiledAt))
                .col(ts_null(Cases::ClosedAt))
                .col(text_null(Cases::ClientName))
                .col(ColumnDef::new(Cases::LeadAttorneyId).uuid().null())
                .col(ColumnDef::new(Cases::Version).integer().not_null().default(1))
                .col(uuid(Cases::CreatedBy))
                .col(ts(Cases::CreatedAt))
                .col(ts(Cases::UpdatedAt))
                .col(ts_null(Cases::DeletedAt))
                .foreign_key(&mut fk("fk_cases_firm", (Cases::Table, Cases::FirmId), (Firms::Table, Firms::Id)))
                .foreign_key(&mut fk(
                    "fk_cases_lead_attorney",
                    (Cases::Table, Cases::LeadAttorneyId),
                    (Users::Table, Users::Id),
                ))
                .to_owned(),
        )
        .await?;
        // Soft-deleted cases keep their number: it stays part of the legal record.
        m.create_index(
            Index::create()
                .name("uq_cases_firm_case_number")
                .table(Cases::Table)
                .col(Cases::FirmId)
                .col(Cases::CaseNumber)
                .unique()
                .to_owned(),
        )
        .await?;
        for (name, col) in [("ix_cases_firm_updated", Cases::UpdatedAt), ("ix_cases_firm_title", Cases::Title)] {
            m.create_index(
                Index::create().name(name).table(Cases::Table).col(Cases::FirmId).col(col).col(Cases::Id).to_owned(),
            )
            .await?;
        }
        m.create_index(
            Index::create().name("ix_cases_firm_id").table(Cases::Table).col(Cases::FirmId).col(Cases::Id).to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(CaseTeamMembers::Table)
                .col(uuid(CaseTeamMembers::CaseId))
                .col(uuid(CaseTeamMembers::UserId))
                .col(uuid(CaseTeamMembers::FirmId))
                .col(text(CaseTeamMembers::Role))
                .col(uuid(CaseTeamMembers::AddedBy))
                .col(ts(CaseTeamMembers::AddedAt))
                .primary_key(
                    Index::create()
                        .name("pk_case_team_members")
                        .col(CaseTeamMembers::CaseId)
                        .col(CaseTeamMembers::UserId),
                )
                .foreign_key(&mut fk(
                    "fk_case_team_case",
                    (CaseTeamMembers::Table, CaseTeamMembers::CaseId),
                    (Cases::Table, Cases::Id),
                ))
                .foreign_key(&mut fk(
                    "fk_case_team_user",
                    (CaseTeamMembers::Table, CaseTeamMembers::UserId),
                    (Users::Table, Users::Id),
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_case_team_user")
                .table(CaseTeamMembers::Table)
                .col(CaseTeamMembers::UserId)
                .col(CaseTeamMembers::CaseId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Parties::Table)
                .col(uuid(Parties::Id).primary_key())
                .col(uuid(Parties::FirmId))
                .col(uuid(Parties::CaseId))
                .col(text(Parties::Name))
                .col(text(Parties::Kind))
                .col(text(Parties::PartyType))
                .col(text_null(Parties::Role))
                .col(text_null(Parties::Email))
                .col(text_null(Parties::Phone))
                .col(text_null(Parties::Address))
                .col(text_null(Parties::Website))
                .col(text_null(Parties::Counsel))
                .col(text_null(Parties::Notes))
                .col(ColumnDef::new(Parties::Version).integer().not_null().default(1))
                .col(ts(Parties::CreatedAt))
                .col(ts(Parties::UpdatedAt))
                .col(ts_null(Parties::DeletedAt))
                .foreign_key(&mut fk("fk_parties_case", (Parties::Table, Parties::CaseId), (Cases::Table, Cases::Id)))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_parties_case")
                .table(Parties::Table)
                .col(Parties::CaseId)
                .col(Parties::Id)
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
