//! The `documents`, `document_versions` and `blobs` tables.

/// A stored file: per firm, one row per distinct content.
pub mod blob {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "blobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub firm_id: Uuid,
        pub sha256: String,
        pub size: i64,
        /// Sniffed from the bytes.
        pub mime: String,
        pub storage_key: String,
        /// `pending`, `clean`, `infected`, `error` or `not_scanned`.
        pub scan_status: String,
        /// The signature found, or the scanner's error.
        pub scan_detail: Option<String>,
        pub scanned_at: Option<DateTimeUtc>,
        pub thumbnail_key: Option<String>,
        /// Uploads and document versions that carry this content.
        pub ref_count: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A case's document.
pub mod document {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "documents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub firm_id: Uuid,
        pub case_id: Uuid,
        pub title: String,
        pub doc_type: String,
        /// A JSON array of strings.
        pub tags: String,
        pub sealed: bool,
        pub restricted: bool,
        /// Set, the document and its versions cannot be deleted.
        pub legal_hold: bool,
        pub current_version: i32,
        /// Optimistic concurrency on the document's own fields.
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

/// One version of a document.
pub mod version {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "document_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub firm_id: Uuid,
        pub document_id: Uuid,
        /// 1, 2, 3… per document, gapless.
        pub number: i32,
        pub blob_id: Uuid,
        pub filename: String,
        pub mime: String,
        pub size: i64,
        pub sha256: String,
        pub change_note: Option<String>,
        pub created_by: Uuid,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
