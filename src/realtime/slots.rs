//! `REALTIME_MAX_CONNECTIONS_PER_USER` across instances: each open socket holds a slot in a
//! Redis sorted set per user (member: instance and socket id; score: when the slot lapses, by
//! Redis's clock). A handshake takes a slot only while the user's live slots are fewer than the
//! limit, in one script, so two instances admitting at the same moment cannot both take the
//! last one. A socket gives its slot back when it closes; an instance renews its sockets' slots
//! every [`RENEW_EVERY`], so the slots of an instance that died lapse after [`TTL`].
//!
//! The instance's own count is checked first, and is all there is without Redis, or while
//! Redis does not answer (then each instance admits up to the limit: a user may hold up to the
//! limit per instance until Redis is back; logged once, and `lexiflow_realtime_slots_degraded`
//! is 1). A renewal puts back the slot of every open socket, so sockets admitted while Redis
//! was away, and slots Redis lost (a restart without persistence), count again within
//! [`RENEW_EVERY`] of its return; a user then over the limit is refused new sockets until
//! enough close.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use uuid::Uuid;

use crate::{
    app::{App, AppInner},
    redis_link::{Fallback, RedisLink},
};

/// How often an instance renews the slots of its open sockets (`slot_renew_every` in the
/// configuration; tests shorten it).
pub const RENEW_EVERY: Duration = Duration::from_secs(30);
/// A slot lapses after this many renewal periods without a renewal.
pub const RENEWALS_PER_TTL: u32 = 3;
/// How long a slot lives without being renewed.
pub const TTL: Duration = Duration::from_secs(RENEW_EVERY.as_secs() * RENEWALS_PER_TTL as u64);

/// KEYS[1] the user's set; ARGV: member, limit, TTL in ms. 1 when the slot was taken.
const TAKE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"#;

/// KEYS: users' sets; ARGV[1] TTL in ms, then one member per key. Renews each slot, or puts
/// it back when Redis no longer has it. A socket that closed while the renewal was on its way
/// may be put back too: the caller gives those back afterwards ([`Slots::give_back`]).
const RENEW_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS
"#;

/// The per-user connection slots of one instance.
#[derive(Debug)]
pub struct Slots {
    redis: Option<Arc<RedisLink>>,
    instance: Uuid,
    take: redis::Script,
    renew: redis::Script,
    fallback: Fallback,
    /// How long a slot lives without being renewed: [`TTL`].
    ttl: Duration,
}

impl Default for Slots {
    /// Per instance only (no Redis).
    fn default() -> Self {
        Self::new(None)
    }
}

impl Slots {
    /// Slots counted in `redis`, or (None) on this instance only.
    pub fn new(redis: Option<Arc<RedisLink>>) -> Self {
        Self {
            redis,
            instance: Uuid::now_v7(),
            take: redis::Script::new(TAKE_LUA),
            renew: redis::Script::new(RENEW_LUA),
            fallback: Fallback::new(
                "lexiflow_realtime_slots_degraded",
                "Redis is unavailable: realtime connections per user are counted per instance",
                "Redis answers again: realtime connections per user are counted across instances again",
            ),
            ttl: TTL,
        }
    }

    /// The same with slots that lapse after `ttl` instead of [`TTL`] (tests that watch a dead
    /// instance's slots lapse).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn key(link: &RedisLink, user: Uuid) -> String {
        format!("{}rt:conns:{user}", link.prefix)
    }

    fn member(&self, socket: &str) -> String {
        format!("{}:{socket}", self.instance)
    }

    /// Takes a slot for `socket` of `user`, who has `here` sockets on this instance; false
    /// when the user already holds `limit`, counting every instance.
    pub async fn take(&self, user: Uuid, socket: &str, limit: usize, here: usize) -> bool {
        if here >= limit {
            return false;
        }
        let Some(link) = &self.redis else { return true };
        let mut inv = self.take.key(Self::key(link, user));
        inv.arg(self.member(socket)).arg(limit).arg(self.ttl.as_millis() as u64);
        match link.run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await {
            Ok(taken) => {
                self.fallback.answered();
                taken == 1
            }
            Err(e) => {
                self.fallback.failed(&e);
                true
            }
        }
    }

    /// The slot `socket` of `user` took, given back when the returned guard is dropped; None
    /// when slots are counted on this instance only.
    pub fn held(&self, app: Weak<AppInner>, user: Uuid, socket: String) -> Option<Held> {
        self.redis.is_some().then_some(Held { app, user, socket })
    }

    /// Gives `socket`'s slot back (it closed). A slot that cannot be given back now lapses.
    pub async fn give_back(&self, user: Uuid, socket: &str) {
        let Some(link) = &self.redis else { return };
        let (key, member) = (Self::key(link, user), self.member(socket));
        let res = link
            .run(|mut c| async move { redis::cmd("ZREM").arg(key).arg(member).query_async::<i64>(&mut c).await })
            .await;
        if let Err(e) = res {
            tracing::debug!(error = %e, "realtime: could not give a connection slot back; it lapses");
        }
    }

    /// Renews the slots of this instance's open sockets, `(user, socket id)`, putting back
    /// those Redis no longer has. The caller then gives back the slots of any of them that
    /// closed meanwhile (their own give-back may have gone first).
    pub async fn renew(&self, open: &[(Uuid, String)]) {
        let Some(link) = &self.redis else { return };
        for part in open.chunks(500) {
            let mut inv = self.renew.prepare_invoke();
            inv.arg(self.ttl.as_millis() as u64);
            for (user, socket) in part {
                inv.key(Self::key(link, *user));
                inv.arg(self.member(socket));
            }
            match link.run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await {
                Ok(_) => self.fallback.answered(),
                Err(e) => {
                    self.fallback.failed(&e);
                    return;
                }
            }
        }
    }
}

/// A socket's slot, kept in its state and given back when that is dropped: when the socket
/// closes, and also when it never got going (a handshake accepted, then the connection lost
/// before the socket's handlers were in place), which a disconnect handler would miss.
pub struct Held {
    app: Weak<AppInner>,
    user: Uuid,
    socket: String,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("user", &self.user).field("socket", &self.socket).finish()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(app) = App::upgrade(&self.app) else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (user, socket) = (self.user, std::mem::take(&mut self.socket));
        rt.spawn(async move { app.realtime.slots.give_back(user, &socket).await });
    }
}
