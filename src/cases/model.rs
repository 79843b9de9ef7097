//! The `cases` and `case_team_members` tables and their enumerations.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Kind of matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum CaseType {
    Civil,
    Criminal,
    Family,
    Bankruptcy,
    Immigration,
    IntellectualProperty,
    Corporate,
    RealEstate,
    Labor,
    Environmental,
    Tax,
    Other,
}

/// Where a matter stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    Open,
    Active,
    Pending,
    Discovery,
    Trial,
    Settled,
    Closed,
    Archived,
    OnHold,
}

/// A person's part on a case team.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TeamRole {
    LeadAttorney,
    Attorney,
    Paralegal,
    Staff,
    Client,
}

/// The `cases` table.
pub mod case {
    use super::{CaseStatus, CaseType};
    use sea_orm::entity::prelude::*;

    /// A case row. `deleted_at` set means soft-deleted: kept for the record, never served.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cases")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub firm_id: Uuid,
        pub case_number: String,
        pub title: String,
        pub case_type: CaseType,
        pub status: CaseStatus,
        pub description: Option<String>,
        pub court: Option<String>,
        pub jurisdiction: Option<String>,
        pub judge: Option<String>,
        pub filed_at: Option<DateTimeUtc>,
        pub closed_at: Option<DateTimeUtc>,
        pub client_name: Option<String>,
        pub lead_attorney_id: Option<Uuid>,
        pub version: i32,
        pub created_by: Uuid,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub deleted_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `case_team_members` table.
pub mod team_member {
    use super::TeamRole;
    use sea_orm::entity::prelude::*;

    /// Membership of one user in one case's team.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "case_team_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub case_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        pub firm_id: Uuid,
        pub role: TeamRole,
        pub added_by: Uuid,
        pub added_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
