//! The data cache: an in-process level (moka) always, Redis behind it when configured.
//!
//! - [`Cache::get_or_set`] answers from the nearest level that holds a current value, else
//!   computes it once however many requests miss at the same moment (the others wait for
//!   that result), and stores it in both levels.
//! - Every entry carries tags (`cases:<firm>`, `team:<case>`); [`Cache::invalidate_tags`]
//!   makes every entry with one of them stale on every instance, [`Cache::invalidate_prefix`]
//!   drops keys by prefix.
//! - Writers invalidate after their transaction committed, before they answer. Invalidation
//!   bumps the tags' versions in Redis, and every instance checks an in-process copy against
//!   those versions before serving it (one small round trip; the value itself stays in
//!   process), so a read after a write never returns the old value on any instance. A pub/sub
//!   message also drops the copies on every instance, which is what keeps them right while
//!   Redis cannot be asked; in-process copies live at most `CACHE_LOCAL_TTL_MS` in any case.
//! - If Redis is down, the cache works in process only and the API keeps working; the
//!   invalidations Redis missed are made good when it returns (its cache keys are flushed).
//!
//! Tags are versioned rather than indexed. In process, a tag hashes to one of
//! [`SLOTS`] counters and an entry remembers the counters of its tags when stored: bumping
//! a counter makes those entries stale at once, without finding them (an unrelated tag on
//! the same slot only causes a spurious miss). In Redis each tag has a version key; an entry
//! is stored with the versions it was computed under and is current only while they are,
//! and a value computed while an invalidation happened is not stored at all (a conditional
//! write in Lua), so a slow reader cannot put back what a writer just invalidated.

use std::{
    collections::HashMap,
    future::Future,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Serialize, de::DeserializeOwned};

use crate::redis_link::RedisLink;

/// Sizing and lifetimes.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Entries kept in process (`CACHE_MAX_ENTRIES`, default 100,000).
    pub max_entries: u64,
    /// Lifetime of an entry unless the caller sets one (`CACHE_TTL_MS`, default 60 s).
    pub default_ttl: Duration,
    /// Longest an in-process copy is trusted (`CACHE_LOCAL_TTL_MS`, default 10 s): the bound on
    /// staleness across instances if a pub/sub message is lost.
    pub local_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { max_entries: 100_000, default_ttl: Duration::from_secs(60), local_ttl: Duration::from_secs(10) }
    }
}

/// The tags the domain uses, in one place so writers and readers agree.
pub mod tags {
    use uuid::Uuid;

    /// Everything derived from a firm's cases as a whole: totals, reports.
    pub fn firm_cases(firm: Uuid) -> String {
        format!("cases:{firm}")
    }

    /// Who is on one case's team, and what depends on it.
    pub fn case_team(case: Uuid) -> String {
        format!("team:{case}")
    }
}

/// In-process tag counters.
const SLOTS: usize = 4_096;
/// The bus topic of invalidations.
const TOPIC: &str = "cache";

#[derive(Debug)]
struct Entry {
    json: Arc<[u8]>,
    /// (slot, counter) of each tag when stored.
    tags: Vec<(usize, u64)>,
    /// The Redis versions of its tags it was computed under (scale-out shape).
    remote: Option<Vec<String>>,
    expires: Instant,
}

/// The two-level cache; cheap to share (hold it in an `Arc` or in `App`).
#[derive(Debug)]
pub struct Cache {
    local: moka::sync::Cache<String, Arc<Entry>>,
    slots: Box<[AtomicU64]>,
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    redis: Option<Arc<RedisLink>>,
    bus: Arc<crate::bus::Bus>,
    /// Set when an invalidation could not reach Redis: its cache keys are flushed as soon as
    /// it answers again.
    redis_dirty: AtomicBool,
    config: CacheConfig,
}

/// What `get_or_set` needs of a key.
#[derive(Clone, Debug)]
pub struct Key {
    key: String,
    tags: Vec<String>,
    ttl: Option<Duration>,
    local_ttl: Option<Duration>,
}

impl Key {
    /// `key` is `namespace:rest`; the namespace labels the metrics.
    pub fn new(key: impl Into<String>) -> Self {
        Self { key: key.into(), tags: Vec::new(), ttl: None, local_ttl: None }
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the lifetime.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Trusts the in-process copy for at most `ttl` (shorter than the cache-wide bound, for
    /// entries that decide access).
    pub fn local_ttl(mut self, ttl: Duration) -> Self {
        self.local_ttl = Some(ttl);
        self
    }

    fn namespace(&self) -> &str {
        self.key.split(':').next().unwrap_or("")
    }
}

fn slot(tag: &str) -> usize {
    let mut h = DefaultHasher::new();
    tag.hash(&mut h);
    (h.finish() as usize) % SLOTS
}

fn count(namespace: &str, level: &'static str, result: &'static str) {
    metrics::counter!("lexiflow_cache_requests_total", "cache" => namespace.to_owned(), "level" => level, "result" => result)
        .increment(1);
}

impl Cache {
    /// A cache; `redis` adds the shared level, and `bus` carries invalidations to the other
    /// instances (through Redis when it has it).
    pub fn new(config: CacheConfig, redis: Option<Arc<RedisLink>>, bus: Arc<crate::bus::Bus>) -> Arc<Self> {
        let local = moka::sync::Cache::builder()
            .max_capacity(config.max_entries)
            .time_to_live(config.local_ttl.max(Duration::from_millis(1)))
            .support_invalidation_closures()
            .eviction_listener(|_k, _v, cause| {
                let cause = match cause {
                    moka::notification::RemovalCause::Expired => "expired",
                    moka::notification::RemovalCause::Size => "size",
                    moka::notification::RemovalCause::Explicit => "explicit",
                    moka::notification::RemovalCause::Replaced => return,
                };
                metrics::counter!("lexiflow_cache_evictions_total", "cause" => cause).increment(1);
            })
            .build();
        let cache = Arc::new(Self {
            local,
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            gates: Mutex::new(HashMap::new()),
            redis,
            bus,
            redis_dirty: AtomicBool::new(false),
            config,
        });
        let weak = Arc::downgrade(&cache);
        cache.bus.on(TOPIC, move |msg| {
            let Some(c) = weak.upgrade() else { return false };
            c.apply_message(msg);
            true
        });
        let weak = Arc::downgrade(&cache);
        cache.bus.on_reset(move || {
            // Invalidations sent while this instance could not hear them are lost: start afresh.
            let Some(c) = weak.upgrade() else { return false };
            c.drop_all_local();
            true
        });
        cache
    }

    fn apply_message(&self, msg: &str) {
        match msg.split_once(':') {
            Some(("t", tags)) => tags.split('\n').for_each(|t| self.bump(t)),
            Some(("p", prefix)) => self.drop_local_prefix(prefix),
            Some(("k", key)) => self.local.invalidate(key),
            _ if msg == "all" => self.drop_all_local(),
            _ => tracing::debug!(message = msg, "unknown cache invalidation message"),
        }
    }

    /// Drops every in-process copy (they may have missed invalidations).
    pub fn drop_all_local(&self) {
        self.local.invalidate_all();
        // Entries stored before this moment but checked after it must not count as current.
        for s in self.slots.iter() {
            s.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn bump(&self, tag: &str) {
        self.slots[slot(tag)].fetch_add(1, Ordering::AcqRel);
    }

    fn drop_local_prefix(&self, prefix: &str) {
        let prefix = prefix.to_owned();
        // Only fails when closures are not supported, which the builder enables.
        let _ = self.local.invalidate_entries_if(move |k, _| k.starts_with(&prefix));
    }

    fn snapshot(&self, tags: &[String]) -> Vec<(usize, u64)> {
        tags.iter()
            .map(|t| {
                let s = slot(t);
                (s, self.slots[s].load(Ordering::Acquire))
            })
            .collect()
    }

    fn current(&self, e: &Entry) -> bool {
        e.expires > Instant::now() && e.tags.iter().all(|(s, g)| self.slots[*s].load(Ordering::Acquire) == *g)
    }

    /// The in-process copy, if current. With Redis, "current" is checked against the tags'
    /// versions there (one round trip, no payload): an invalidation made by another instance
    /// a moment ago counts even if its pub/sub message has not arrived yet. If Redis does not
    /// answer, the copy is trusted for what is left of its (short) local lifetime.
    async fn local_get(&self, key: &Key) -> Option<Arc<[u8]>> {
        let e = self.local.get(&key.key)?;
        if !self.current(&e) {
            self.local.invalidate(&key.key);
            return None;
        }
        if let (Some(link), Some(stored)) = (&self.redis, &e.remote)
            && !key.tags.is_empty()
            && let Some(now) = self.remote_versions(link, key).await
            && &now != stored
        {
            self.local.invalidate(&key.key);
            return None;
        }
        Some(e.json.clone())
    }

    fn local_put(&self, key: &Key, json: Arc<[u8]>, tags: Vec<(usize, u64)>, remote: Option<Vec<String>>) {
        let ttl = key.ttl.unwrap_or(self.config.default_ttl).min(key.local_ttl.unwrap_or(self.config.local_ttl));
        self.local.insert(key.key.clone(), Arc::new(Entry { json, tags, remote, expires: Instant::now() + ttl }));
    }

    /// The Redis versions of `key`'s tags, or None if Redis did not answer.
    async fn remote_versions(&self, link: &RedisLink, key: &Key) -> Option<Vec<String>> {
        if self.redis_dirty.load(Ordering::Acquire) {
            return None;
        }
        let tag_keys: Vec<String> = key.tags.iter().map(|t| format!("{}cache-tag:{t}", link.prefix)).collect();
        let got = link
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                for t in &tag_keys {
                    pipe.cmd("GET").arg(t);
                }
                pipe.query_async::<Vec<Option<String>>>(&mut c).await
            })
            .await
            .ok()?;
        Some(got.into_iter().map(|v| v.unwrap_or_else(|| "0".into())).collect())
    }

    fn gate(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        if gates.len() >= 10_000 {
            gates.retain(|_, g| Arc::strong_count(g) > 1);
        }
        gates.entry(key.to_owned()).or_default().clone()
    }

    /// The cached value of `key`, if any level holds a current one.
    pub async fn get<T: DeserializeOwned>(&self, key: &Key) -> Option<T> {
        if let Some(json) = self.local_get(key).await {
            count(key.namespace(), "local", "hit");
            return serde_json::from_slice(&json).ok();
        }
        count(key.namespace(), "local", "miss");
        let (json, _) = self.remote_get(key).await;
        serde_json::from_slice(&json?).ok()
    }

    /// Stores `value` under `key` in both levels.
    pub async fn set<T: Serialize>(&self, key: &Key, value: &T) {
        let Ok(json) = serde_json::to_vec(value) else { return };
        let json: Arc<[u8]> = json.into();
        let tags = self.snapshot(&key.tags);
        let versions = match &self.redis {
            Some(link) => self.remote_versions(link, key).await,
            None => None,
        };
        self.local_put(key, json.clone(), tags, versions.clone());
        if let Some(versions) = versions {
            self.remote_put(key, &json, &versions).await;
        }
    }

    /// The value of `key`: cached, or computed by `compute` — once, however many callers miss
    /// together — and stored unless an invalidation of its tags happened meanwhile.
    pub async fn get_or_set<T, E, F, Fut>(&self, key: &Key, compute: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(v) = self.local_get(key).await.and_then(|j| serde_json::from_slice(&j).ok()) {
            count(key.namespace(), "local", "hit");
            return Ok(v);
        }
        let gate = self.gate(&key.key);
        let _computing = gate.lock().await;
        if let Some(v) = self.local_get(key).await.and_then(|j| serde_json::from_slice(&j).ok()) {
            // Another caller computed it while this one waited.
            count(key.namespace(), "local", "hit");
            return Ok(v);
        }
        count(key.namespace(), "local", "miss");
        let before = self.snapshot(&key.tags);
        let (remote, versions) = self.remote_get(key).await;
        if let Some(json) = remote
            && let Ok(v) = serde_json::from_slice(&json)
        {
            if self.snapshot(&key.tags) == before {
                self.local_put(key, json.into(), before, versions);
            }
            return Ok(v);
        }
        let value = compute().await?;
        if let Ok(json) = serde_json::to_vec(&value) {
            let json: Arc<[u8]> = json.into();
            if self.snapshot(&key.tags) == before {
                self.local_put(key, json.clone(), before, versions.clone());
            }
            if let Some(versions) = versions {
                self.remote_put(key, &json, &versions).await;
            }
        }
        Ok(value)
    }

    /// Computes `key`'s value afresh and stores it (a warm-up), unless an invalidation of its
    /// tags happened while it was computed: the tags' state is taken before computing, as in
    /// [`Cache::get_or_set`], so a value computed from data a write then changed is not kept.
    pub async fn refresh<T, E, F, Fut>(&self, key: &Key, compute: F) -> Result<T, E>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let before = self.snapshot(&key.tags);
        let versions = match &self.redis {
            Some(link) => self.remote_versions(link, key).await,
            None => None,
        };
        let value = compute().await?;
        if let Ok(json) = serde_json::to_vec(&value) {
            let json: Arc<[u8]> = json.into();
            if self.snapshot(&key.tags) == before {
                self.local_put(key, json.clone(), before, versions.clone());
            }
            if let Some(versions) = versions {
                self.remote_put(key, &json, &versions).await;
            }
        }
        Ok(value)
    }

    /// Drops one key on every instance.
    pub async fn delete(&self, key: &str) {
        metrics::counter!("lexiflow_cache_invalidations_total", "kind" => "key").increment(1);
        self.local.invalidate(key);
        if let Some(link) = &self.redis {
            let k = format!("{}cache:{key}", link.prefix);
            let ok = link.run(|mut c| async move { redis::cmd("DEL").arg(k).query_async::<i64>(&mut c).await }).await;
            self.after_remote_invalidation(ok.is_ok(), format!("k:{key}")).await;
        }
    }

    /// Makes every entry tagged with one of `tags` stale, on every instance.
    pub async fn invalidate_tags(&self, tags: &[String]) {
        if tags.is_empty() {
            return;
        }
        metrics::counter!("lexiflow_cache_invalidations_total", "kind" => "tag").increment(tags.len() as u64);
        for t in tags {
            self.bump(t);
        }
        if let Some(link) = &self.redis {
            let keys: Vec<String> = tags.iter().map(|t| format!("{}cache-tag:{t}", link.prefix)).collect();
            let ok = link
                .run(|mut c| async move {
                    let mut pipe = redis::pipe();
                    // No expiry: a version that vanished and restarted at 0 could make an old
                    // entry current again. One small key per tag ever invalidated.
                    for k in &keys {
                        pipe.cmd("INCR").arg(k).ignore();
                    }
                    pipe.query_async::<()>(&mut c).await
                })
                .await;
            let published = self.publish(format!("t:{}", tags.join("\n"))).await;
            if !(ok.is_ok() && published) {
                self.redis_dirty.store(true, Ordering::Release);
            }
        } else {
            // Local listeners (and nothing else) hear it.
            self.publish(format!("t:{}", tags.join("\n"))).await;
        }
    }

    /// Drops every key starting with `prefix`, on every instance.
    pub async fn invalidate_prefix(&self, prefix: &str) {
        metrics::counter!("lexiflow_cache_invalidations_total", "kind" => "prefix").increment(1);
        self.drop_local_prefix(prefix);
        if let Some(link) = &self.redis {
            let ok = self.remote_delete_matching(link, &format!("{}cache:{}*", link.prefix, glob_escape(prefix))).await;
            self.after_remote_invalidation(ok, format!("p:{prefix}")).await;
        }
    }

    async fn after_remote_invalidation(&self, stored: bool, message: String) {
        let published = self.publish(message).await;
        if !(stored && published) {
            self.redis_dirty.store(true, Ordering::Release);
        }
    }

    async fn publish(&self, message: String) -> bool {
        self.bus.publish(TOPIC, &message).await
    }

    /// Deletes Redis keys matching `pattern` with SCAN (never KEYS, which blocks the server).
    async fn remote_delete_matching(&self, link: &RedisLink, pattern: &str) -> bool {
        let mut cursor: u64 = 0;
        loop {
            let pattern = pattern.to_owned();
            let step = link
                .run(|mut c| async move {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1_000)
                        .query_async(&mut c)
                        .await?;
                    if !keys.is_empty() {
                        redis::cmd("UNLINK").arg(&keys).query_async::<i64>(&mut c).await?;
                    }
                    Ok(next)
                })
                .await;
            match step {
                Ok(0) => return true,
                Ok(next) => cursor = next,
                Err(_) => return false,
            }
        }
    }

    /// Before using Redis again after it missed invalidations, flush its cache keys and tell
    /// every instance to drop its in-process copies.
    async fn heal(&self, link: &RedisLink) -> bool {
        if !self.redis_dirty.load(Ordering::Acquire) {
            return true;
        }
        if self.remote_delete_matching(link, &format!("{}cache:*", link.prefix)).await
            && self.publish("all".into()).await
        {
            self.redis_dirty.store(false, Ordering::Release);
            tracing::info!("Redis is back: its cache was flushed, since it missed invalidations");
            true
        } else {
            false
        }
    }

    /// The Redis value of `key` if current, and the versions of its tags (None when Redis is
    /// not configured or did not answer).
    async fn remote_get(&self, key: &Key) -> (Option<Vec<u8>>, Option<Vec<String>>) {
        let Some(link) = &self.redis else { return (None, None) };
        if !self.heal(link).await {
            return (None, None);
        }
        let value_key = format!("{}cache:{}", link.prefix, key.key);
        let tag_keys: Vec<String> = key.tags.iter().map(|t| format!("{}cache-tag:{t}", link.prefix)).collect();
        let got = link
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("GET").arg(&value_key);
                for t in &tag_keys {
                    pipe.cmd("GET").arg(t);
                }
                pipe.query_async::<Vec<Option<Vec<u8>>>>(&mut c).await
            })
            .await;
        let Ok(mut got) = got else {
            count(key.namespace(), "redis", "error");
            return (None, None);
        };
        let stored = if got.is_empty() { None } else { got.remove(0) };
        let versions: Vec<String> =
            got.into_iter().map(|v| v.and_then(|b| String::from_utf8(b).ok()).unwrap_or_else(|| "0".into())).collect();
        // Stored as "<versions joined by ','>|<json>".
        let value = stored.and_then(|raw| {
            let bar = raw.iter().position(|b| *b == b'|')?;
            let (head, json) = raw.split_at(bar);
            (std::str::from_utf8(head).ok()? == versions.join(",")).then(|| json[1..].to_vec())
        });
        count(key.namespace(), "redis", if value.is_some() { "hit" } else { "miss" });
        (value, Some(versions))
    }

    /// Stores in Redis only if the tags' versions are still `versions`.
    async fn remote_put(&self, key: &Key, json: &[u8], versions: &[String]) {
        let Some(link) = &self.redis else { return };
        const SCRIPT: &str = r"
            for i = 2, #KEYS do
              if (redis.call('GET', KEYS[i]) or '0') ~= ARGV[i + 1] then return 0 end
            end
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
            return 1";
        let mut payload = versions.join(",").into_bytes();
        payload.push(b'|');
        payload.extend_from_slice(json);
        let ttl = key.ttl.unwrap_or(self.config.default_ttl).as_millis().max(1) as u64;
        let value_key = format!("{}cache:{}", link.prefix, key.key);
        let tag_keys: Vec<String> = key.tags.iter().map(|t| format!("{}cache-tag:{t}", link.prefix)).collect();
        let versions = versions.to_vec();
        let stored = link
            .run(|mut c| async move {
                let script = redis::Script::new(SCRIPT);
                let mut inv = script.prepare_invoke();
                inv.key(&value_key);
                for t in &tag_keys {
                    inv.key(t);
                }
                inv.arg(payload).arg(ttl);
                for v in &versions {
                    inv.arg(v);
                }
                inv.invoke_async::<i64>(&mut c).await
            })
            .await;
        if stored.is_err() {
            count(key.namespace(), "redis", "error");
        }
    }

    /// Entries held in process (for metrics).
    pub fn local_entries(&self) -> u64 {
        self.local.entry_count()
    }
}

/// Escapes Redis glob characters in a literal prefix.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Arc<Cache> {
        Cache::new(CacheConfig::default(), None, crate::bus::Bus::new(uuid::Uuid::now_v7(), None))
    }

    #[tokio::test]
    async fn concurrent_misses_compute_once() {
        let c = cache();
        let computed = Arc::new(AtomicU64::new(0));
        let key = Key::new("t:one");
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (c, computed, key) = (c.clone(), computed.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                c.get_or_set(&key, || async {
                    computed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, ()>(42u64)
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.ok().and_then(Result::ok), Some(42));
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_tag_invalidation_makes_tagged_entries_stale_only() {
        let c = cache();
        let a = Key::new("t:a").tag("firm:1");
        let b = Key::new("t:b").tag("firm:2");
        c.set(&a, &1u32).await;
        c.set(&b, &2u32).await;
        c.invalidate_tags(&["firm:1".into()]).await;
        assert_eq!(c.get::<u32>(&a).await, None);
        assert_eq!(c.get::<u32>(&b).await, Some(2));
    }

    #[tokio::test]
    async fn a_value_computed_across_an_invalidation_is_not_kept() {
        let c = cache();
        let key = Key::new("t:racy").tag("firm:9");
        let v = c
            .get_or_set(&key, || async {
                // A writer invalidates while this reader is computing from old data.
                c.invalidate_tags(&["firm:9".into()]).await;
                Ok::<_, ()>(1u32)
            })
            .await;
        assert_eq!(v, Ok(1));
        assert_eq!(c.get::<u32>(&key).await, None);
    }

    #[tokio::test]
    async fn a_warm_up_computed_across_an_invalidation_is_not_kept() {
        let c = cache();
        let key = Key::new("t:warm").tag("firm:8");
        let v = c
            .refresh(&key, || async {
                c.invalidate_tags(&["firm:8".into()]).await;
                Ok::<_, ()>(2u32)
            })
            .await;
        assert_eq!(v, Ok(2));
        assert_eq!(c.get::<u32>(&key).await, None);
        c.refresh(&key, || async { Ok::<_, ()>(3u32) }).await.unwrap();
        assert_eq!(c.get::<u32>(&key).await, Some(3));
    }

    #[tokio::test]
    async fn prefixes_and_keys_are_dropped() {
        let c = cache();
        for k in ["r:1:a", "r:1:b", "r:2:a"] {
            c.set(&Key::new(k), &k).await;
        }
        c.invalidate_prefix("r:1:").await;
        assert_eq!(c.get::<String>(&Key::new("r:1:a")).await, None);
        assert_eq!(c.get::<String>(&Key::new("r:1:b")).await, None);
        assert_eq!(c.get::<String>(&Key::new("r:2:a")).await.as_deref(), Some("r:2:a"));
        c.delete("r:2:a").await;
        assert_eq!(c.get::<String>(&Key::new("r:2:a")).await, None);
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
