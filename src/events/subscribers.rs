//! The subscribers every process installs: what a committed change makes stale.

use std::sync::{Arc, Weak};

use futures_util::{FutureExt, future::BoxFuture};

use super::{DomainEvent, EventType, Subscriber};
use crate::{
    app::{App, AppInner},
    auth::cache::Eviction,
    cache::{Cache, tags},
};

/// Installs the cache-invalidation and session-eviction subscribers on `app`'s hub.
pub fn install(app: &App) {
    app.events.subscribe(Arc::new(CacheInvalidation { cache: Arc::downgrade(&app.cache) }));
    app.events.subscribe(Arc::new(SessionEviction { app: app.weak() }));
}

/// Makes the totals, reports and access decisions that depend on a changed case stale, here
/// and (through the bus) on every instance, before the writer answers.
#[derive(Debug)]
struct CacheInvalidation {
    cache: Weak<Cache>,
}

/// The cache tags an event makes stale.
pub fn stale_tags(e: &DomainEvent) -> Vec<String> {
    use EventType::*;
    match e.event_type {
        CaseCreated | CaseUpdated | CaseDeleted | TeamMemberAdded | TeamMemberRemoved | CaseAccessChanged => {
            let mut t = vec![tags::firm_cases(e.firm_id.0)];
            t.extend(e.case_id.map(tags::case_team));
            t
        }
        PartyCreated
        | PartyUpdated
        | PartyDeleted
        | DocketEntryCreated
        | DocketEntryUpdated
        | DocketEntryDeleted
        | UserDisabled
        | UserRoleChanged
        | SessionRevoked
        | ApiKeyRevoked
        | WebhookDisabled
        | DocumentUploaded
        | DocumentProcessed
        | DocumentUpdated
        | DocumentDeleted
        | CalendarEventCreated
        | CalendarEventUpdated
        | CalendarEventDeleted
        | CalendarEventReminder => Vec::new(),
    }
}

impl Subscriber for CacheInvalidation {
    fn name(&self) -> &'static str {
        "cache-invalidation"
    }

    fn deliver<'a>(&'a self, events: &'a [DomainEvent]) -> BoxFuture<'a, ()> {
        async move {
            let Some(cache) = self.cache.upgrade() else { return };
            let mut all: Vec<String> = events.iter().flat_map(stale_tags).collect();
            all.sort_unstable();
            all.dedup();
            cache.invalidate_tags(&all).await;
        }
        .boxed()
    }
}

/// Forgets cached sessions that a revocation, a suspension or a role change ended or changed,
/// here and (through the bus) on every instance.
#[derive(Debug)]
struct SessionEviction {
    app: Weak<AppInner>,
}

impl Subscriber for SessionEviction {
    fn name(&self) -> &'static str {
        "session-eviction"
    }

    fn deliver<'a>(&'a self, events: &'a [DomainEvent]) -> BoxFuture<'a, ()> {
        async move {
            let Some(app) = App::upgrade(&self.app) else { return };
            for e in events {
                let Ok(id) = uuid::Uuid::parse_str(&e.entity_id) else { continue };
                match e.event_type {
                    EventType::SessionRevoked => app.evict(Eviction::Session(id)),
                    EventType::UserDisabled | EventType::UserRoleChanged => app.evict(Eviction::User(id)),
                    // Keys are cached by prefix; revocations are rare: forget them all.
                    EventType::ApiKeyRevoked => app.evict(Eviction::ApiKeys),
                    _ => {}
                }
            }
        }
        .boxed()
    }
}
