//! A firm's people: created by admins, each with one role.

pub mod http;
pub mod model;
pub mod ops;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::{FirmId, UserId};
use model::{Role, UserStatus};

/// A user as the API shows them (never the password hash).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: UserId,
    pub firm_id: FirmId,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub status: UserStatus,
    pub version: i32,
    pub last_login_at: Option<DateTime<Utc>>,
    /// Set while repeated failed logins keep the account locked (admins can unlock it).
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<model::Model> for UserView {
    fn from(u: model::Model) -> Self {
        Self {
            id: UserId(u.id),
            firm_id: FirmId(u.firm_id),
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
            role: u.role,
            status: u.status,
            version: u.version,
            locked_until: None,
            last_login_at: u.last_login_at,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}
