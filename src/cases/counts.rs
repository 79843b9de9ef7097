//! A short-lived cache of case-list totals.
//!
//! Offset paging reports `total`, and counting a firm's cases reads every matching row: with
//! tens of thousands of cases that count, not the page, was the cost of `GET /cases` under
//! load. Totals are cached per firm, caller (when their visibility is limited to their teams)
//! and filter, for at most the configured time; every change to a firm's cases (create,
//! update, delete, team change) evicts that firm's totals on this instance at once and on the
//! others through Redis, so a client never sees its own write missing from the total.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

/// What a total depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CountKey {
    pub firm: Uuid,
    /// The caller, when they see only their teams' cases; None for whole-firm visibility.
    pub user: Option<Uuid>,
    /// A hash of the filters.
    pub filter: u64,
}

impl CountKey {
    /// The key for `firm`, `user` and any hashable description of the filters.
    pub fn new(firm: Uuid, user: Option<Uuid>, filter: impl Hash) -> Self {
        let mut h = DefaultHasher::new();
        filter.hash(&mut h);
        Self { firm, user, filter: h.finish() }
    }
}

#[derive(Debug, Default)]
struct State {
    totals: HashMap<CountKey, (u64, Instant)>,
    /// When each firm's totals were last evicted: a count that started earlier is not kept.
    evicted: HashMap<Uuid, Instant>,
}

/// The cache (TTL zero: off).
#[derive(Debug)]
pub struct CaseCounts {
    ttl: Duration,
    state: Mutex<State>,
    /// One gate per key being counted, so concurrent misses count once (the others wait
    /// and read the result) instead of all counting when a total expires under load.
    gates: Mutex<HashMap<CountKey, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

const MAX_ENTRIES: usize = 50_000;

impl CaseCounts {
    /// A cache whose totals live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, state: Mutex::new(State::default()), gates: Mutex::new(HashMap::new()) }
    }

    /// The gate for counting `key`: hold its lock while counting, then check the cache again.
    pub fn gate(&self, key: CountKey) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        if gates.len() >= 10_000 {
            // Gates nobody holds or waits for can go.
            gates.retain(|_, g| std::sync::Arc::strong_count(g) > 1);
        }
        gates.entry(key).or_default().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Entries are inserted and removed whole; a poisoned lock holds nothing half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh total for `key`.
    pub fn get(&self, key: &CountKey) -> Option<u64> {
        if self.ttl.is_zero() {
            return None;
        }
        self.lock().totals.get(key).filter(|(_, at)| at.elapsed() < self.ttl).map(|(n, _)| *n)
    }

    /// Keeps a total counted by a query that started at `counted_at`, unless the firm's
    /// cases changed since.
    pub fn put(&self, key: CountKey, total: u64, counted_at: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut s = self.lock();
        if s.evicted.get(&key.firm).is_some_and(|at| *at >= counted_at) {
            return;
        }
        if s.totals.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            s.totals.retain(|_, (_, at)| at.elapsed() < ttl);
            if s.totals.len() >= MAX_ENTRIES {
                s.totals.clear();
            }
        }
        s.totals.insert(key, (total, Instant::now()));
    }

    /// Forgets every total of `firm`.
    pub fn evict_firm(&self, firm: Uuid) {
        let mut s = self.lock();
        s.totals.retain(|k, _| k.firm != firm);
        let now = Instant::now();
        let keep = self.ttl.max(Duration::from_secs(1)) * 2;
        if s.evicted.len() >= 10_000 {
            s.evicted.retain(|_, at| now.duration_since(*at) < keep);
        }
        s.evicted.insert(firm, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_total_counted_before_an_eviction_is_not_kept() {
        let c = CaseCounts::new(Duration::from_secs(60));
        let firm = Uuid::now_v7();
        let key = CountKey::new(firm, None, "all");
        let started = Instant::now();
        c.evict_firm(firm);
        c.put(key, 7, started);
        assert_eq!(c.get(&key), None);
        c.put(key, 8, Instant::now());
        assert_eq!(c.get(&key), Some(8));
        c.evict_firm(firm);
        assert_eq!(c.get(&key), None);
    }
}
