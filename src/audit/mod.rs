//! The tamper-evident audit trail (BLUEPRINT §9).
//!
//! Every change made through LexiFlow calls [`record`] inside the transaction that makes the
//! change, so a change without its entry (or an entry without its change) cannot exist:
//! both commit or neither does. Entries are append-only (database triggers refuse UPDATE and
//! DELETE; retention uses [`chain::prune`], which is itself audited) and hash-chained per
//! firm, so [`chain::verify`] finds an edited, inserted, deleted or reordered entry.
//!
//! What an entry holds: firm, actor (user, API key or system) and role, action
//! (`case.update`, `auth.login_failed`, …), entity type and id, the case it belongs to,
//! the changed fields with old and new values (secrets redacted by [`redact`]), correlation
//! id, client address, user agent, time, and its place in the chain.

pub mod chain;
pub mod http;
pub mod model;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{auth::Principal, http::envelope::REQUEST, ids::FirmId};

/// Who acted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActorKind {
    User,
    ApiKey,
    System,
}

impl ActorKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::System => "system",
        }
    }
}

/// The actor of an entry and the request it came in with.
#[derive(Clone, Debug)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: Option<Uuid>,
    pub role: Option<String>,
    pub correlation_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Actor {
    /// The signed-in user of the current request.
    pub fn user(p: &Principal) -> Self {
        match p.api_key {
            // A key is its own actor: its id, not its maker's.
            Some(k) => Self::request(ActorKind::ApiKey, Some(k.id), Some("api_key".to_owned())),
            None => Self::request(ActorKind::User, Some(p.user_id.0), Some(role_name(p.role))),
        }
    }

    /// A user acting before they have a session (registering, logging in).
    pub fn account(id: Uuid, role: crate::users::model::Role) -> Self {
        Self::request(ActorKind::User, Some(id), Some(role_name(role)))
    }

    /// LexiFlow itself (retention, scheduled work).
    pub fn system() -> Self {
        Self::request(ActorKind::System, None, None)
    }

    fn request(kind: ActorKind, id: Option<Uuid>, role: Option<String>) -> Self {
        let (correlation_id, ip, user_agent) = REQUEST
            .try_with(|c| (Some(c.correlation_id.clone()), c.client_ip.map(|i| i.to_string()), c.user_agent.clone()))
            .unwrap_or((None, None, None));
        Self { kind, id, role, correlation_id, ip, user_agent }
    }
}

fn role_name(r: crate::users::model::Role) -> String {
    serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// What happened.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub action: &'static str,
    pub entity_type: &'static str,
    pub entity_id: Option<String>,
    pub case_id: Option<Uuid>,
    pub changes: Value,
    /// `changes` already rendered and redacted (see [`AuditEvent::created_fields`]); when
    /// set, it is stored as is and `changes` is ignored.
    pub rendered: Option<String>,
}

impl AuditEvent {
    /// `action` on an entity of `entity_type`.
    pub fn new(action: &'static str, entity_type: &'static str, entity_id: Option<String>) -> Self {
        Self { action, entity_type, entity_id, case_id: None, changes: Value::Object(Map::new()), rendered: None }
    }

    /// The case the entity belongs to (for the case's history).
    pub fn case(mut self, case: Uuid) -> Self {
        self.case_id = Some(case);
        self
    }

    /// The changed fields, `{field: {old, new}}` (see [`diff`] and [`created`]).
    pub fn changes(mut self, changes: Value) -> Self {
        self.changes = changes;
        self.rendered = None;
        self
    }

    /// The changes of a created entity, `{field: {new, old: null}}` for every field of `new`
    /// — what `changes(redact(created(new)))` stores, rendered straight to text without the
    /// intermediate JSON maps (every create and every bulk item goes through here).
    pub fn created_fields(mut self, new: &Value) -> Self {
        self.rendered = Some(created_text(new));
        self
    }
}

/// The stored text of `redact(created(new))`, byte for byte.
pub fn created_text(new: &Value) -> String {
    let mut out = String::with_capacity(512);
    out.push('{');
    if let Some(fields) = new.as_object() {
        let mut first = true;
        for (k, v) in fields {
            if v.is_null() || matches!(k.as_str(), "version" | "updatedAt") {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&Value::from(k.as_str()).to_string());
            out.push_str(":{\"new\":");
            if is_secret(k) {
                out.push_str("\"[REDACTED]\"");
            } else if v.is_object() || v.is_array() {
                out.push_str(&redact(v.clone()).to_string());
            } else {
                out.push_str(&v.to_string());
            }
            out.push_str(",\"old\":null}");
        }
    }
    out.push('}');
    out
}

fn is_secret(key: &str) -> bool {
    let l = key.to_ascii_lowercase();
    ["password", "token", "secret", "hash", "apikey", "api_key"].iter().any(|s| l.contains(s))
}

/// Set only by `AUDIT_TRAIL=off`, which exists for the benchmark's with-versus-without
/// comparison and is refused in production (see `Config`). A process-wide switch rather
/// than a parameter, so that no write path can forget to pass it on.
static DISABLED_FOR_BENCHMARK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns auditing off for this process (benchmark only; refused in production by config).
pub fn disable_for_benchmark() {
    DISABLED_FOR_BENCHMARK.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::warn!("AUDIT_TRAIL=off: changes are NOT being audited (benchmark mode)");
}

/// Whether entries are being written: always, except under the benchmark's
/// `AUDIT_TRAIL=off`.
pub fn enabled() -> bool {
    !DISABLED_FOR_BENCHMARK.load(std::sync::atomic::Ordering::Relaxed)
}

/// Appends an entry to `firm`'s chain in the caller's transaction.
pub async fn record(
    db: &impl sea_orm::ConnectionTrait,
    firm: FirmId,
    actor: &Actor,
    event: AuditEvent,
) -> Result<(), sea_orm::DbErr> {
    if DISABLED_FOR_BENCHMARK.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    chain::append(db, firm.0, actor, event).await
}

/// Appends one entry per event (a bulk operation's items) in the caller's transaction.
pub async fn record_many(
    db: &impl sea_orm::ConnectionTrait,
    firm: FirmId,
    actor: &Actor,
    events: Vec<AuditEvent>,
) -> Result<(), sea_orm::DbErr> {
    if DISABLED_FOR_BENCHMARK.load(std::sync::atomic::Ordering::Relaxed) || events.is_empty() {
        return Ok(());
    }
    chain::append_many(db, firm.0, actor, events).await
}

/// Any serialisable view as JSON (for [`diff`] and [`created`]).
pub fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `{field: {old, new}}` for every top-level field that differs between two JSON objects.
pub fn diff(old: &Value, new: &Value) -> Value {
    let mut out = Map::new();
    let empty = Map::new();
    let (o, n) = (old.as_object().unwrap_or(&empty), new.as_object().unwrap_or(&empty));
    for (k, nv) in n {
        if matches!(k.as_str(), "version" | "updatedAt") {
            continue;
        }
        let ov = o.get(k).unwrap_or(&Value::Null);
        if ov != nv {
            out.insert(k.clone(), serde_json::json!({ "old": ov, "new": nv }));
        }
    }
    Value::Object(out)
}

/// `{field: {old: null, new}}` for every field of a created entity.
pub fn created(new: &Value) -> Value {
    diff(&Value::Object(Map::new()), new)
}

/// Replaces the values of secret-looking fields (passwords, tokens, secrets, hashes) with
/// `"[REDACTED]"`, at any depth.
pub fn redact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let secret = is_secret(&k);
                    (k, if secret && !v.is_null() { redacted(v) } else { redact(v) })
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(redact).collect()),
        other => other,
    }
}

/// A secret field's value: a `{old, new}` pair keeps its shape with both sides redacted.
fn redacted(v: Value) -> Value {
    match v {
        Value::Object(m) if m.contains_key("old") || m.contains_key("new") => Value::Object(
            m.into_iter().map(|(k, v)| (k, if v.is_null() { v } else { Value::from("[REDACTED]") })).collect(),
        ),
        _ => Value::from("[REDACTED]"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn diff_lists_changed_fields_only() {
        let d = diff(&json!({"a": 1, "b": "x", "version": 1}), &json!({"a": 2, "b": "x", "version": 2}));
        assert_eq!(d, json!({"a": {"old": 1, "new": 2}}));
    }

    #[test]
    fn created_text_is_what_the_generic_path_stores() {
        for v in [
            json!({}),
            json!({"title": "A \"quoted\" title\n", "n": 3, "f": 1.5, "ok": true, "none": null, "version": 1,
                   "updatedAt": "x", "passwordHash": "abc", "apiKey": null, "address": {"street": "1 Main",
                   "token": "t"}, "tags": [{"secret": "s"}, "x"], "é": "ü"}),
        ] {
            assert_eq!(created_text(&v), redact(created(&v)).to_string(), "{v}");
        }
    }

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let v = redact(
            json!({"password": {"old": null, "new": "hunter2"}, "nested": {"refreshToken": "abc"}, "title": "x"}),
        );
        assert_eq!(v["password"], json!({"old": null, "new": "[REDACTED]"}));
        assert_eq!(v["nested"]["refreshToken"], "[REDACTED]");
        assert_eq!(v["title"], "x");
    }
}
