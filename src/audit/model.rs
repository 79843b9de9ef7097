//! The `audit_entries` and `audit_heads` tables.

/// One audit entry: append-only, chained to the firm's previous entry by `prev_hash`.
pub mod entry {
    use sea_orm::entity::prelude::*;

    /// An audit row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_entries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub firm_id: Uuid,
        /// Which of the firm's parallel chains (see `audit::chain`).
        pub chain: i32,
        pub sequence: i64,
        pub occurred_at: DateTimeUtc,
        pub actor_type: String,
        pub actor_id: Option<Uuid>,
        pub actor_role: Option<String>,
        pub action: String,
        pub entity_type: String,
        pub entity_id: Option<String>,
        pub case_id: Option<Uuid>,
        /// JSON text: `{field: {old, new}}`, secrets redacted; hashed exactly as stored.
        pub changes: String,
        pub correlation_id: Option<String>,
        pub ip: Option<String>,
        pub user_agent: Option<String>,
        pub prev_hash: String,
        pub hash: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Each chain's head (last sequence and hash) and the anchor pruning left behind.
pub mod head {
    use sea_orm::entity::prelude::*;

    /// A chain head row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_heads")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub firm_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub chain: i32,
        pub sequence: i64,
        pub hash: String,
        /// The last pruned entry's sequence (0 when nothing was pruned).
        pub anchor_sequence: i64,
        /// The last pruned entry's hash: the first kept entry's `prev_hash`.
        pub anchor_hash: String,
        pub pruned_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
