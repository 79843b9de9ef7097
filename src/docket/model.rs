//! The `docket_entries` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Kind of docket entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    Filing,
    Order,
    Notice,
    Motion,
    Hearing,
    Judgment,
    MinuteEntry,
    Transcript,
    Exhibit,
    Correspondence,
    Other,
}

/// A docket entry. `deleted_at` set means struck: kept, with its number, for the record.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "docket_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub firm_id: Uuid,
    pub case_id: Uuid,
    pub sequence_number: i64,
    pub entry_date: Date,
    pub filed_at: Option<DateTimeUtc>,
    pub entry_type: EntryType,
    pub description: String,
    pub text: Option<String>,
    pub filed_by: Option<String>,
    pub document_number: Option<String>,
    pub sealed: bool,
    /// Sealed now or at any time before.
    pub ever_sealed: bool,
    pub restricted: bool,
    /// Restricted now or at any time before.
    pub ever_restricted: bool,
    pub version: i32,
    pub created_by: Uuid,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
