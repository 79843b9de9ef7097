//! The outbox tables: `domain_events` and `event_heads` (migration `m0007_events`).

/// One recorded domain event.
pub mod event {
    use sea_orm::entity::prelude::*;

    /// A row of the outbox. `seq` is None on PostgreSQL until the sequencer numbers it.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "domain_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub firm_id: Uuid,
        pub seq: Option<i64>,
        pub event_type: String,
        pub entity_type: String,
        pub entity_id: String,
        pub case_id: Option<Uuid>,
        pub actor_type: String,
        pub actor_id: Option<Uuid>,
        pub correlation_id: Option<String>,
        pub occurred_at: DateTimeUtc,
        pub data: String,
        pub sealed: bool,
        pub restricted: bool,
        pub origin: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Per firm, the last sequence number handed out.
pub mod head {
    use sea_orm::entity::prelude::*;

    /// A firm's event head.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_heads")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub firm_id: Uuid,
        pub seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
