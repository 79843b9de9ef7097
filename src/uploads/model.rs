//! The `uploads` table.

use sea_orm::entity::prelude::*;

/// A tus upload.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "uploads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub firm_id: Uuid,
    /// Who made it: only they may continue, finish or use it.
    pub user_id: Uuid,
    pub case_id: Uuid,
    /// The client's file name, checked (no path); kept for `Content-Disposition`, never used
    /// to name anything on disk.
    pub filename: String,
    pub declared_type: Option<String>,
    /// The `Upload-Metadata` header as received (echoed by HEAD).
    pub metadata: String,
    pub length: i64,
    /// Bytes durably stored and acknowledged.
    pub offset: i64,
    /// The running SHA-256 over the first `offset` bytes, serialized (base64).
    pub hash_state: String,
    /// What the store keeps between PATCHes (S3: the multipart upload, its parts, the tail).
    pub storage_state: Option<String>,
    pub sha256: Option<String>,
    pub mime: Option<String>,
    pub blob_id: Option<Uuid>,
    /// The PATCH that holds the upload, until `locked_until`.
    pub lock_token: Option<Uuid>,
    pub locked_until: Option<DateTimeUtc>,
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
