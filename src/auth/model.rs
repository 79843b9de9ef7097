//! Login sessions and the refresh tokens each has rotated through.

/// The `sessions` table: one row per login.
pub mod session {
    use sea_orm::entity::prelude::*;

    /// A session row. Revoking it ends its access and refresh tokens at once.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub firm_id: Uuid,
        pub user_agent: Option<String>,
        pub ip: Option<String>,
        pub created_at: DateTimeUtc,
        pub last_seen_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
        pub revoked_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `refresh_tokens` table: SHA-256 of every refresh token issued, and whether it was used.
pub mod refresh_token {
    use sea_orm::entity::prelude::*;

    /// A refresh token row; the token itself is never stored.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        pub session_id: Uuid,
        pub created_at: DateTimeUtc,
        /// Set when the token was rotated; presenting it again revokes the session.
        pub used_at: Option<DateTimeUtc>,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `login_attempts` table: failed logins in a row per e-mail address tried (whether or
/// not it has an account, so the work done reveals nothing), and the lock they led to.
pub mod login_attempt {
    use sea_orm::entity::prelude::*;

    /// Failures since the last success or lock, and the lock's end.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "login_attempts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub email: String,
        pub failures: i32,
        pub locked_until: Option<DateTimeUtc>,
        pub last_failure_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
