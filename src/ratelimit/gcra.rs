//! The Generic Cell Rate Algorithm, and the in-process store that runs it.
//!
//! GCRA keeps one number per key, the "theoretical arrival time" (TAT). A quota of `limit`
//! requests per `period` lets a request through when, after adding one emission interval
//! (`period / limit`) to the TAT, the TAT is no more than `period` ahead of now. The effect
//! is a sliding window: a burst of `limit` is allowed, then one more request every interval,
//! with no double burst at a window boundary as a fixed window would allow.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::Mutex,
    time::{Duration, Instant},
};

/// `limit` requests per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period: Duration,
}

impl Quota {
    /// `limit` per `seconds`.
    pub const fn per_seconds(limit: u32, seconds: u64) -> Self {
        Self { limit, period: Duration::from_secs(seconds) }
    }

    fn period_us(self) -> u64 {
        self.period.as_micros().max(1) as u64
    }

    fn interval_us(self) -> u64 {
        (self.period_us() / u64::from(self.limit.max(1))).max(1)
    }
}

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// The quota's period.
    pub window: Duration,
    pub remaining: u32,
    /// Until the budget is whole again.
    pub reset: Duration,
    /// Until the next request would be allowed (zero when this one was).
    pub retry_after: Duration,
}

/// One GCRA step at `now_us`, given the stored TAT. Returns the decision and, when the
/// request is allowed, the TAT to store.
pub fn step(now_us: u64, stored_tat: Option<u64>, q: Quota) -> (Decision, Option<u64>) {
    let period = q.period_us();
    let interval = q.interval_us();
    let tat = stored_tat.unwrap_or(now_us).max(now_us);
    let new_tat = tat + interval;
    if new_tat - now_us > period {
        let d = Decision {
            allowed: false,
            limit: q.limit,
            window: q.period,
            remaining: 0,
            reset: Duration::from_micros(tat - now_us),
            retry_after: Duration::from_micros(new_tat - now_us - period),
        };
        return (d, None);
    }
    let ahead = new_tat - now_us;
    let d = Decision {
        allowed: true,
        limit: q.limit,
        window: q.period,
        remaining: ((period - ahead) / interval).min(u64::from(q.limit)) as u32,
        reset: Duration::from_micros(ahead),
        retry_after: Duration::ZERO,
    };
    (d, Some(new_tat))
}

const SHARDS: usize = 16;
/// A shard is swept of expired keys when it grows past this many.
const SWEEP_AT: usize = 10_000;

/// Per-instance GCRA state: sharded maps of key → TAT (µs since the store was made).
#[derive(Debug)]
pub struct MemoryStore {
    origin: Instant,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<String, u64>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl MemoryStore {
    /// Checks and counts one request for `key` now.
    pub fn check(&self, key: &str, q: Quota) -> Decision {
        self.check_at(Instant::now(), key, q)
    }

    /// Checks and counts one request for `key` at `now`.
    pub fn check_at(&self, now: Instant, key: &str, q: Quota) -> Decision {
        let now_us = now.saturating_duration_since(self.origin).as_micros() as u64;
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        // A panic cannot leave a half-written entry (inserts are atomic), so poison is harmless.
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let (decision, store) = step(now_us, map.get(key).copied(), q);
        if let Some(tat) = store {
            if map.len() >= SWEEP_AT && !map.contains_key(key) {
                map.retain(|_, t| *t > now_us);
            }
            map.insert(key.to_owned(), tat);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_limit_passes_and_the_next_is_refused() {
        let s = MemoryStore::default();
        let q = Quota::per_seconds(100, 60);
        let t = Instant::now();
        for i in 0..100 {
            let d = s.check_at(t, "k", q);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 99 - i);
        }
        let d = s.check_at(t, "k", q);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Duration::from_millis(600));
    }

    #[test]
    fn the_window_slides_one_interval_at_a_time() {
        let s = MemoryStore::default();
        let q = Quota::per_seconds(10, 10);
        let t = Instant::now();
        for _ in 0..10 {
            assert!(s.check_at(t, "k", q).allowed);
        }
        // One interval later exactly one request fits, not a whole new window's worth.
        let t1 = t + Duration::from_secs(1);
        assert!(s.check_at(t1, "k", q).allowed);
        assert!(!s.check_at(t1, "k", q).allowed);
        // After a whole period of quiet, the full burst is back.
        let t2 = t1 + Duration::from_secs(10);
        for _ in 0..10 {
            assert!(s.check_at(t2, "k", q).allowed);
        }
    }

    #[test]
    fn no_double_burst_at_a_window_boundary() {
        let s = MemoryStore::default();
        let q = Quota::per_seconds(10, 10);
        let t = Instant::now() + Duration::from_millis(9_900);
        let allowed =
            (0..20).filter(|i| s.check_at(t + Duration::from_millis(if *i < 10 { 0 } else { 200 }), "k", q).allowed);
        // A fixed window would allow 20 around the 10 s mark; GCRA allows 10 plus what refilled.
        assert_eq!(allowed.count(), 10);
    }

    #[test]
    fn keys_are_independent() {
        let s = MemoryStore::default();
        let q = Quota::per_seconds(1, 60);
        let t = Instant::now();
        assert!(s.check_at(t, "a", q).allowed);
        assert!(!s.check_at(t, "a", q).allowed);
        assert!(s.check_at(t, "b", q).allowed);
    }
}
