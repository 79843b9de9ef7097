//! A short-lived cache of checked sessions, so an authenticated request need not ask the
//! database whether its session is still live on every call.
//!
//! Correctness rests on invalidation, not on the time to live: every path that ends a
//! session or changes what a session may do (logout, revoking a session, refresh-token
//! reuse, suspension, a role change) evicts the affected entries on this instance at once,
//! and — when Redis is configured — tells every other instance through Redis pub/sub. The
//! TTL (`AUTH_CACHE_TTL_MS`, default 2 s) only bounds staleness for multi-instance
//! deployments without Redis, or while Redis is unreachable.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

use super::Principal;

#[derive(Debug)]
struct Entry {
    principal: Principal,
    user_id: Uuid,
    session_expires: chrono::DateTime<chrono::Utc>,
    cached_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Uuid, Entry>,
    /// When each session or user was last evicted: a lookup that started before an eviction
    /// must not put its (possibly pre-revocation) answer into the cache afterwards.
    evicted: HashMap<Uuid, Instant>,
}

/// Checked sessions by session id.
#[derive(Debug)]
pub struct SessionCache {
    ttl: Duration,
    state: Mutex<State>,
}

/// Bound on entries; past it expired entries are swept, and if that is not enough, all.
const MAX_ENTRIES: usize = 100_000;

impl SessionCache {
    /// A cache whose entries live `ttl` (zero: no caching at all).
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Entries are inserted and removed whole; a poisoned lock holds nothing half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached principal of `session` for `user`, if fresh and the session not expired.
    pub fn get(&self, session: Uuid, user: Uuid) -> Option<Principal> {
        if self.ttl.is_zero() {
            return None;
        }
        let state = self.lock();
        let e = state.entries.get(&session)?;
        (e.user_id == user && e.cached_at.elapsed() < self.ttl && e.session_expires > chrono::Utc::now())
            .then(|| e.principal.clone())
    }

    /// Remembers a session checked by a lookup that started at `looked_up_at`, unless the
    /// session or its user was evicted since then.
    pub fn put(&self, principal: &Principal, session_expires: chrono::DateTime<chrono::Utc>, looked_up_at: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut state = self.lock();
        let stale = [principal.session_id.0, principal.user_id.0]
            .iter()
            .any(|id| state.evicted.get(id).is_some_and(|at| *at >= looked_up_at));
        if stale {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            state.entries.retain(|_, e| e.cached_at.elapsed() < ttl);
            if state.entries.len() >= MAX_ENTRIES {
                state.entries.clear();
            }
        }
        state.entries.insert(
            principal.session_id.0,
            Entry {
                principal: principal.clone(),
                user_id: principal.user_id.0,
                session_expires,
                cached_at: Instant::now(),
            },
        );
    }

    fn note_eviction(&self, state: &mut State, id: Uuid) {
        let now = Instant::now();
        // Eviction marks only matter for lookups in flight, which last far less than a TTL.
        let keep = self.ttl.max(Duration::from_secs(1)) * 2;
        if state.evicted.len() >= 10_000 {
            state.evicted.retain(|_, at| now.duration_since(*at) < keep);
        }
        state.evicted.insert(id, now);
    }

    /// Forgets every session (evictions may have been missed).
    pub fn clear(&self) {
        let mut state = self.lock();
        let ids: Vec<Uuid> = state.entries.keys().copied().collect();
        state.entries.clear();
        for id in ids {
            self.note_eviction(&mut state, id);
        }
    }

    /// Forgets one session.
    pub fn evict_session(&self, session: Uuid) {
        let mut state = self.lock();
        state.entries.remove(&session);
        self.note_eviction(&mut state, session);
    }

    /// Forgets every session of a user.
    pub fn evict_user(&self, user: Uuid) {
        let mut state = self.lock();
        state.entries.retain(|_, e| e.user_id != user);
        self.note_eviction(&mut state, user);
    }
}

/// What one instance tells the others (over Redis) to forget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    Session(Uuid),
    User(Uuid),
    /// Every checked API key (a key was revoked).
    ApiKeys,
}

impl Eviction {
    /// `s:<uuid>`, `u:<uuid>` or `k:all`.
    pub fn encode(self) -> String {
        match self {
            Eviction::Session(id) => format!("s:{id}"),
            Eviction::User(id) => format!("u:{id}"),
            Eviction::ApiKeys => "k:all".to_owned(),
        }
    }

    /// Parses what [`encode`](Self::encode) wrote.
    pub fn decode(s: &str) -> Option<Self> {
        let (kind, id) = s.split_once(':')?;
        if kind == "k" {
            return Some(Eviction::ApiKeys);
        }
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "s" => Some(Eviction::Session(id)),
            "u" => Some(Eviction::User(id)),
            _ => None,
        }
    }
}
