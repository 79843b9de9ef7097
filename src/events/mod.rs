//! Domain events: what changed, recorded by an operation on its transaction, written to the
//! outbox in that same transaction, and handed to the process's subscribers once it commits.
//!
//! - An operation calls [`crate::db::Tx::record`] with a [`DomainEvent`] next to its audit
//!   entry. Events live on the transaction (a savepoint's on the savepoint): a rollback drops
//!   them, and a transaction that is run again starts with none, so nothing is published
//!   after a rollback and nothing twice when a transaction is retried.
//! - Just before commit the transaction writes its events to the outbox (`domain_events`,
//!   [`outbox`]). Each firm's events carry a gapless, increasing sequence number: on SQLite
//!   it is set in the writing transaction (writers take turns anyway); on PostgreSQL the
//!   [`outbox::Sequencer`] sets it right after commit, because a per-firm counter locked until
//!   commit would make every write of a firm wait for the previous one's commit (see
//!   `docs/decisions/0001-event-sequence.md`). Readers only read numbered rows, so they never
//!   see a later number before an earlier one.
//! - After commit, [`Hub::publish`] hands the committed events to every subscriber of the
//!   process, once (cache invalidation, session eviction; realtime and webhooks next). Events
//!   written by another process (a `lexiflow import`, another instance) reach this one's
//!   subscribers through [`outbox::tail`], which reads the numbered rows of other origins.
//! - The outbox is kept `EVENTS_RETENTION_DAYS` (default 7), pruned by the `events.prune` job.

pub mod model;
pub mod outbox;
pub mod subscribers;

use std::{fmt, sync::Arc};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::{audit::Actor, ids::FirmId};

/// What kind of change an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    #[serde(rename = "case.created")]
    CaseCreated,
    #[serde(rename = "case.updated")]
    CaseUpdated,
    #[serde(rename = "case.deleted")]
    CaseDeleted,
    #[serde(rename = "team_member.added")]
    TeamMemberAdded,
    #[serde(rename = "team_member.removed")]
    TeamMemberRemoved,
    #[serde(rename = "case.access_changed")]
    CaseAccessChanged,
    #[serde(rename = "party.created")]
    PartyCreated,
    #[serde(rename = "party.updated")]
    PartyUpdated,
    #[serde(rename = "party.deleted")]
    PartyDeleted,
    #[serde(rename = "docket_entry.created")]
    DocketEntryCreated,
    #[serde(rename = "docket_entry.updated")]
    DocketEntryUpdated,
    #[serde(rename = "docket_entry.deleted")]
    DocketEntryDeleted,
    #[serde(rename = "user.disabled")]
    UserDisabled,
    #[serde(rename = "user.role_changed")]
    UserRoleChanged,
    #[serde(rename = "session.revoked")]
    SessionRevoked,
    #[serde(rename = "api_key.revoked")]
    ApiKeyRevoked,
    #[serde(rename = "webhook.disabled")]
    WebhookDisabled,
    #[serde(rename = "document.uploaded")]
    DocumentUploaded,
    #[serde(rename = "document.processed")]
    DocumentProcessed,
    #[serde(rename = "document.updated")]
    DocumentUpdated,
    #[serde(rename = "document.deleted")]
    DocumentDeleted,
    #[serde(rename = "calendar_event.created")]
    CalendarEventCreated,
    #[serde(rename = "calendar_event.updated")]
    CalendarEventUpdated,
    #[serde(rename = "calendar_event.deleted")]
    CalendarEventDeleted,
    /// A reminder of a calendar event was due: `data.userIds` are told.
    #[serde(rename = "calendar_event.reminder")]
    CalendarEventReminder,
}

impl EventType {
    /// Every type, for parsing.
    pub const ALL: [EventType; 25] = [
        EventType::CaseCreated,
        EventType::CaseUpdated,
        EventType::CaseDeleted,
        EventType::TeamMemberAdded,
        EventType::TeamMemberRemoved,
        EventType::CaseAccessChanged,
        EventType::PartyCreated,
        EventType::PartyUpdated,
        EventType::PartyDeleted,
        EventType::DocketEntryCreated,
        EventType::DocketEntryUpdated,
        EventType::DocketEntryDeleted,
        EventType::UserDisabled,
        EventType::UserRoleChanged,
        EventType::SessionRevoked,
        EventType::ApiKeyRevoked,
        EventType::WebhookDisabled,
        EventType::DocumentUploaded,
        EventType::DocumentProcessed,
        EventType::DocumentUpdated,
        EventType::DocumentDeleted,
        EventType::CalendarEventCreated,
        EventType::CalendarEventUpdated,
        EventType::CalendarEventDeleted,
        EventType::CalendarEventReminder,
    ];

    /// The stored and published name (`case.created`).
    pub fn as_str(self) -> &'static str {
        use EventType::*;
        match self {
            CaseCreated => "case.created",
            CaseUpdated => "case.updated",
            CaseDeleted => "case.deleted",
            TeamMemberAdded => "team_member.added",
            TeamMemberRemoved => "team_member.removed",
            CaseAccessChanged => "case.access_changed",
            PartyCreated => "party.created",
            PartyUpdated => "party.updated",
            PartyDeleted => "party.deleted",
            DocketEntryCreated => "docket_entry.created",
            DocketEntryUpdated => "docket_entry.updated",
            DocketEntryDeleted => "docket_entry.deleted",
            UserDisabled => "user.disabled",
            UserRoleChanged => "user.role_changed",
            SessionRevoked => "session.revoked",
            ApiKeyRevoked => "api_key.revoked",
            WebhookDisabled => "webhook.disabled",
            DocumentUploaded => "document.uploaded",
            DocumentProcessed => "document.processed",
            DocumentUpdated => "document.updated",
            DocumentDeleted => "document.deleted",
            CalendarEventCreated => "calendar_event.created",
            CalendarEventUpdated => "calendar_event.updated",
            CalendarEventDeleted => "calendar_event.deleted",
            CalendarEventReminder => "calendar_event.reminder",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The kind of entity the event is about.
    pub fn entity_type(self) -> &'static str {
        use EventType::*;
        match self {
            CaseCreated | CaseUpdated | CaseDeleted | CaseAccessChanged => "case",
            TeamMemberAdded | TeamMemberRemoved => "team_member",
            PartyCreated | PartyUpdated | PartyDeleted => "party",
            DocketEntryCreated | DocketEntryUpdated | DocketEntryDeleted => "docket_entry",
            UserDisabled | UserRoleChanged => "user",
            SessionRevoked => "session",
            ApiKeyRevoked => "api_key",
            WebhookDisabled => "webhook",
            DocumentUploaded | DocumentProcessed | DocumentUpdated | DocumentDeleted => "document",
            CalendarEventCreated | CalendarEventUpdated | CalendarEventDeleted | CalendarEventReminder => {
                "calendar_event"
            }
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventActor {
    /// `user`, `api_key` or `system`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<Uuid>,
}

/// One committed (or about to be committed) change.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainEvent {
    /// UUIDv7.
    pub id: Uuid,
    /// The firm's sequence number, once known (see the module documentation).
    pub seq: Option<i64>,
    pub firm_id: FirmId,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub entity_id: String,
    pub case_id: Option<Uuid>,
    pub actor: EventActor,
    pub correlation_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// The resource's public view after the change (its last view for a deletion), or what
    /// identifies it when there is no view (a session, a team membership).
    pub data: Value,
    /// About a sealed docket entry (now or before): only those granted sealed access may
    /// receive it.
    pub sealed: bool,
    /// About a restricted docket entry (now or before): never sent to clients.
    pub restricted: bool,
}

impl DomainEvent {
    /// An event of `event_type` about `entity_id` in `firm`, caused by `actor` in the current
    /// request (its correlation id is taken from the actor).
    pub fn new(event_type: EventType, firm: FirmId, actor: &Actor, entity_id: impl ToString) -> Self {
        Self {
            id: Uuid::now_v7(),
            seq: None,
            firm_id: firm,
            event_type,
            entity_id: entity_id.to_string(),
            case_id: None,
            actor: EventActor { kind: actor.kind.as_str().to_owned(), id: actor.id },
            correlation_id: actor.correlation_id.clone(),
            occurred_at: crate::clock::now(),
            data: Value::Null,
            sealed: false,
            restricted: false,
        }
    }

    /// The case the entity belongs to (or is).
    pub fn case(mut self, case: Uuid) -> Self {
        self.case_id = Some(case);
        self
    }

    /// The resource's public view.
    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// Marks the event as about sealed and/or restricted material.
    pub fn confidential(mut self, sealed: bool, restricted: bool) -> Self {
        self.sealed = sealed;
        self.restricted = restricted;
        self
    }
}

/// Something in the process that reacts to committed events. Delivery is once per event per
/// subscriber, in commit order per process; a subscriber must not fail the write that caused
/// the events (it has committed), so it handles its own errors.
pub trait Subscriber: Send + Sync + fmt::Debug {
    /// A name for logs and metrics.
    fn name(&self) -> &'static str;
    /// Handles a batch of committed events (all of one transaction, or of one tail read).
    fn deliver<'a>(&'a self, events: &'a [DomainEvent]) -> BoxFuture<'a, ()>;
}

/// The process's subscribers.
#[derive(Debug, Default)]
pub struct Hub {
    subscribers: std::sync::RwLock<Vec<Arc<dyn Subscriber>>>,
}

impl Hub {
    /// Adds a subscriber for every event published from now on.
    pub fn subscribe(&self, s: Arc<dyn Subscriber>) {
        self.subscribers.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(s);
    }

    /// Hands committed events to every subscriber, in order of subscription. Callers run it
    /// where a dropped request cannot cut it short (`App::write` on the committing task, the
    /// outbox tail on its own); the caller's answer comes after, for example, the cache
    /// invalidation it caused. A subscriber that panics is logged and the others still run.
    pub async fn publish(&self, events: Vec<DomainEvent>) {
        use futures_util::FutureExt;
        if events.is_empty() {
            return;
        }
        for e in &events {
            metrics::counter!("lexiflow_events_published_total", "type" => e.event_type.as_str()).increment(1);
        }
        let subscribers = self.subscribers.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for s in subscribers {
            if std::panic::AssertUnwindSafe(s.deliver(&events)).catch_unwind().await.is_err() {
                tracing::error!(subscriber = s.name(), "a domain event subscriber panicked");
            }
        }
    }
}
