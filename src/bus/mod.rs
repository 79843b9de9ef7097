//! The one message bus between the parts of a process and between instances: a local
//! broadcast, plus one Redis pub/sub channel family (`<prefix>bus:<topic>`) when Redis is
//! configured.
//!
//! - [`Bus::publish`] hands a message to this process's listeners ([`Bus::listen`]) and sends
//!   it to every other instance through Redis, where the topic's handlers ([`Bus::on`]) and
//!   the listeners get it. The publisher applies its own change itself (it knows it first);
//!   handlers are for what other instances did. They must be idempotent and cheap: they run
//!   on the subscription task.
//! - Topics in use: `auth` (sessions and users to forget, [`crate::auth::cache::Eviction`]),
//!   `cache` (data-cache invalidations, [`crate::cache`]). The realtime gateway adds its own.
//! - While Redis is down the bus is local only and nothing waits for it (publishes go
//!   through the `redis` breaker). When the subscription comes back after a break, every
//!   instance runs its reset handlers — the data cache drops its in-process copies and the
//!   session cache forgets every checked session — because messages sent meanwhile were lost.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use crate::redis_link::RedisLink;

/// A message as it travels: where it came from, its topic and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The instance (`App`) that published it.
    pub origin: String,
    pub topic: String,
    pub body: String,
}

type Handler = Arc<dyn Fn(&str) -> bool + Send + Sync>;
type Reset = Arc<dyn Fn() -> bool + Send + Sync>;

/// The bus; cheap to share in an `Arc`.
pub struct Bus {
    origin: String,
    redis: Option<Arc<RedisLink>>,
    handlers: RwLock<HashMap<String, Vec<Handler>>>,
    resets: RwLock<Vec<Reset>>,
    local: tokio::sync::broadcast::Sender<Arc<Message>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("origin", &self.origin).field("redis", &self.redis.is_some()).finish()
    }
}

/// The Redis channel of a topic, without the key prefix.
fn channel(topic: &str) -> String {
    format!("bus:{topic}")
}

impl Bus {
    /// A bus for the instance named `origin`; with `redis`, it also reaches (and hears) every
    /// other instance.
    pub fn new(origin: uuid::Uuid, redis: Option<Arc<RedisLink>>) -> Arc<Self> {
        let (local, _) = tokio::sync::broadcast::channel(4_096);
        let bus = Arc::new(Self {
            origin: origin.to_string(),
            redis,
            handlers: RwLock::default(),
            resets: RwLock::default(),
            local,
        });
        if let Some(link) = &bus.redis {
            let weak = Arc::downgrade(&bus);
            let weak_reset = weak.clone();
            let first = std::sync::atomic::AtomicBool::new(true);
            link.psubscribe_forever(
                &channel("*"),
                move || {
                    // Messages sent while the subscription was down are lost: every part that
                    // keeps copies starts afresh. (Not on the very first subscription: nothing
                    // was missed before it.)
                    if first.swap(false, std::sync::atomic::Ordering::AcqRel) {
                        return;
                    }
                    if let Some(bus) = weak_reset.upgrade() {
                        tracing::info!("bus subscription re-established: dropping in-process copies");
                        bus.reset_local();
                    }
                },
                move |channel_name, payload| {
                    let Some(bus) = weak.upgrade() else { return false };
                    bus.receive(channel_name, payload);
                    true
                },
            );
        }
        bus
    }

    /// Calls `handler` with the body of every message on `topic` published by another
    /// process, while it returns true.
    pub fn on(&self, topic: &str, handler: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.handlers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(topic.to_owned())
            .or_default()
            .push(Arc::new(handler));
    }

    /// Calls `reset` whenever messages may have been missed (the Redis subscription came back
    /// after a break), while it returns true.
    pub fn on_reset(&self, reset: impl Fn() -> bool + Send + Sync + 'static) {
        self.resets.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(Arc::new(reset));
    }

    /// Every message from now on, from this process and (with Redis) from the others.
    pub fn listen(&self) -> tokio::sync::broadcast::Receiver<Arc<Message>> {
        self.local.subscribe()
    }

    /// Runs the reset handlers of this process.
    pub fn reset_local(&self) {
        metrics::counter!("lexiflow_bus_resets_total").increment(1);
        let resets = self.resets.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let dead: Vec<usize> = resets.iter().enumerate().filter(|(_, r)| !r()).map(|(i, _)| i).collect();
        if !dead.is_empty() {
            let mut all = self.resets.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for i in dead.into_iter().rev() {
                if i < all.len() {
                    all.remove(i);
                }
            }
        }
    }

    fn dispatch(&self, topic: &str, body: &str) {
        let handlers: Vec<Handler> = self
            .handlers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(topic)
            .cloned()
            .unwrap_or_default();
        for h in handlers {
            // A handler whose owner is gone returns false; it is left in place (harmless) —
            // owners live as long as the process in practice.
            let _ = h(body);
        }
    }

    fn receive(&self, channel_name: &str, payload: String) {
        let Some(topic) = channel_name.rsplit_once("bus:").map(|(_, t)| t.to_owned()) else { return };
        let Some((origin, body)) = payload.split_once('|') else { return };
        if origin == self.origin {
            return;
        }
        metrics::counter!("lexiflow_bus_messages_total", "direction" => "in").increment(1);
        self.dispatch(&topic, body);
        let _ = self.local.send(Arc::new(Message { origin: origin.to_owned(), topic, body: body.to_owned() }));
    }

    /// Publishes `body` on `topic`: to this process's listeners, then to the other instances.
    /// Returns false when Redis is configured and did not take the message (the caller may
    /// need to make good what the others missed); true otherwise.
    pub async fn publish(&self, topic: &str, body: &str) -> bool {
        let _ = self.local.send(Arc::new(Message {
            origin: self.origin.clone(),
            topic: topic.to_owned(),
            body: body.to_owned(),
        }));
        self.send_remote(topic, body).await
    }

    /// Sends to the other instances only.
    async fn send_remote(&self, topic: &str, body: &str) -> bool {
        let Some(link) = &self.redis else { return true };
        metrics::counter!("lexiflow_bus_messages_total", "direction" => "out").increment(1);
        link.publish(&channel(topic), format!("{}|{body}", self.origin)).await.is_ok()
    }

    /// [`publish`](Self::publish) that does not wait for Redis: the remote send runs in a
    /// task of its own and is retried briefly (for messages that must not be lost lightly,
    /// such as a revoked session; sending one twice is harmless).
    pub fn publish_detached(self: &Arc<Self>, topic: &str, body: String) {
        let _ = self.local.send(Arc::new(Message {
            origin: self.origin.clone(),
            topic: topic.to_owned(),
            body: body.clone(),
        }));
        if self.redis.is_none() {
            return;
        }
        let bus = Arc::clone(self);
        let topic = topic.to_owned();
        tokio::spawn(async move {
            let policy = crate::resilience::RetryPolicy {
                max_attempts: 4,
                base: Duration::from_millis(100),
                max_delay: Duration::from_secs(2),
                deadline: Duration::from_secs(10),
            };
            for attempt in 1..=policy.max_attempts {
                if bus.send_remote(&topic, &body).await {
                    return;
                }
                tokio::time::sleep(policy.delay(attempt)).await;
            }
            tracing::warn!(topic = %topic, "could not tell the other instances; they catch up when their link resets");
        });
    }
}
