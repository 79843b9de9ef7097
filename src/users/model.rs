//! The `users` table and the roles a user can hold.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A user's role in their firm.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema,
)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Partner,
    Attorney,
    Paralegal,
    Staff,
    Client,
}

impl Role {
    /// Admins and partners see every case of their firm.
    pub fn sees_all_cases(self) -> bool {
        matches!(self, Role::Admin | Role::Partner)
    }

    /// Roles that may open a new case.
    pub fn may_create_cases(self) -> bool {
        matches!(self, Role::Admin | Role::Partner | Role::Attorney | Role::Paralegal)
    }

    /// Roles that may change a case they can see (clients and staff read only).
    pub fn may_edit_cases(self) -> bool {
        self.may_create_cases()
    }

    /// Roles that may lead a case.
    pub fn may_lead_cases(self) -> bool {
        matches!(self, Role::Admin | Role::Partner | Role::Attorney)
    }
}

/// Whether a user may log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Suspended,
}

/// A user row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub firm_id: Uuid,
    /// Lower-cased; unique across firms because login is by e-mail alone.
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub status: UserStatus,
    pub version: i32,
    pub last_login_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
