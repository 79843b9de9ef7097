//! The sync tables (see migration `m0013_calendar_sync`).

/// `calendar_connections`.
pub mod connection {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "calendar_connections")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub firm_id: Uuid,
        pub user_id: Uuid,
        pub provider: String,
        pub account_email: Option<String>,
        /// Sealed (see `sync::crypto`).
        pub access_token: String,
        /// Sealed.
        pub refresh_token: Option<String>,
        pub expires_at: Option<DateTimeUtc>,
        pub scope: Option<String>,
        /// Google's `nextSyncToken`, or Graph's `@odata.deltaLink`.
        pub sync_cursor: Option<String>,
        /// `active`, or `revoked` (the grant no longer works: connect again).
        pub status: String,
        pub last_error: Option<String>,
        pub last_synced_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `calendar_oauth_states`.
pub mod state {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "calendar_oauth_states")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub state_hash: String,
        pub firm_id: Uuid,
        pub user_id: Uuid,
        pub provider: String,
        /// The PKCE verifier, sealed.
        pub verifier: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `calendar_event_links`.
pub mod link {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "calendar_event_links")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub connection_id: Uuid,
        pub remote_id: String,
        pub remote_etag: Option<String>,
        pub remote_updated_at: Option<DateTimeUtc>,
        /// The LexiFlow version last pushed, or last taken from the provider.
        pub pushed_version: i32,
        pub synced_at: DateTimeUtc,
        /// A digest of the attendees the copy was last sent with (None: not known, sent before
        /// 2026-12-08 or last written from the provider's side).
        pub attendees_sent: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
