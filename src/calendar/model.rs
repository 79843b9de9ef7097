//! The calendar's tables (see migration `m0012_calendar`).

/// `calendar_events`.
pub mod event {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    /// Kind of calendar event.
    #[derive(
        Clone,
        Copy,
        Debug,
        Default,
        PartialEq,
        Eq,
        Hash,
        EnumIter,
        DeriveActiveEnum,
        Serialize,
        Deserialize,
        utoipa::ToSchema,
    )]
    #[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
    #[serde(rename_all = "snake_case")]
    pub enum EventType {
        Hearing,
        #[default]
        Deadline,
        Meeting,
        Reminder,
        CourtDate,
        Filing,
    }

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "calendar_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub firm_id: Uuid,
        pub case_id: Option<Uuid>,
        pub docket_entry_id: Option<Uuid>,
        pub event_type: EventType,
        pub title: String,
        pub description: Option<String>,
        pub location: Option<String>,
        pub starts_at: DateTimeUtc,
        pub ends_at: DateTimeUtc,
        pub start_date: Option<Date>,
        pub end_date: Option<Date>,
        pub all_day: bool,
        pub time_zone: String,
        pub assignee_id: Option<Uuid>,
        /// JSON array of minutes before the start.
        pub reminders: String,
        pub completed: bool,
        pub completed_at: Option<DateTimeUtc>,
        pub rule_id: Option<String>,
        pub trigger_date: Option<Date>,
        pub service_method: Option<String>,
        /// JSON: the computation's steps and the rule's source and text.
        pub computation: Option<String>,
        pub recompute: bool,
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

/// `calendar_attendees`.
pub mod attendee {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "calendar_attendees")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub position: i32,
        pub user_id: Option<Uuid>,
        pub email: Option<String>,
        pub name: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `court_closures`.
pub mod closure {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "court_closures")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub firm_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: Date,
        /// The court it applies to (compared without regard to case or surrounding spaces), or
        /// `""` for every court.
        #[sea_orm(primary_key, auto_increment = false)]
        pub court: String,
        pub name: String,
        pub created_by: Uuid,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `deadline_rules`: a firm's own rules.
pub mod rule {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deadline_rules")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub firm_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub source: String,
        pub text: String,
        pub trigger: String,
        pub amount: i32,
        pub unit: String,
        pub direction: String,
        pub service_extension: bool,
        pub created_by: Uuid,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `calendar_feeds`.
pub mod feed {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "calendar_feeds")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub firm_id: Uuid,
        pub user_id: Uuid,
        pub token_hash: String,
        pub created_at: DateTimeUtc,
        pub last_used_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
