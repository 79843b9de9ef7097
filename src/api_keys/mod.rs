//! API keys: how a firm's other systems (billing, document automation, e-filing bridges) call
//! the API without a user's password.
//!
//! - An admin makes a key (`POST /api/v1/api-keys {name, scopes, expiresAt?}`); the answer
//!   shows `lf_<prefix>_<secret>` once. Only the prefix and a SHA-256 of the secret are
//!   stored; a presented key is looked up by its prefix and its secret compared in constant
//!   time.
//! - A key is accepted as `Authorization: Bearer lf_…` or `X-API-Key: lf_…`.
//!   [`crate::auth::require_auth`] turns it into the same [`Principal`] a session gives: the
//!   key acts inside its firm, on behalf of the admin who made it, with the rights of a
//!   partner (every case of the firm, no sealed material), and only on the routes its
//!   [scopes](Scope) open ([`required_scope`]). It is audited as actor `api_key` (its id),
//!   rate-limited on its own budget, and stops working when revoked, past its expiry, or when
//!   its maker is disabled or no longer an admin.
//! - Checked keys are trusted for `AUTH_CACHE_TTL_MS` in process; a revocation evicts them at
//!   once, here and on every instance (the `api_key.revoked` event).

pub mod http;

use std::{sync::Arc, time::Instant};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    sea_query::{Expr, ExprTrait, Query},
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    clock,
    db::TxOptions,
    events::{DomainEvent, EventType},
    http::error::{ApiError, ApiResult, ErrorCode},
    ids::{FirmId, SessionId, UserId},
    users::model::{self as user, Role, UserStatus},
};

/// The `api_keys` table.
pub mod model {
    use sea_orm::entity::prelude::*;

    /// One key. The secret itself is never stored.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub firm_id: Uuid,
        pub name: String,
        pub prefix: String,
        /// Hex SHA-256 of the secret part.
        pub secret_hash: String,
        /// Space-separated scope names.
        pub scopes: String,
        pub created_by: Uuid,
        pub created_at: DateTimeUtc,
        pub expires_at: Option<DateTimeUtc>,
        pub last_used_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    #[serde(rename = "cases:read")]
    CasesRead,
    #[serde(rename = "cases:write")]
    CasesWrite,
    #[serde(rename = "documents:read")]
    DocumentsRead,
    #[serde(rename = "documents:write")]
    DocumentsWrite,
    #[serde(rename = "calendar:read")]
    CalendarRead,
    #[serde(rename = "calendar:write")]
    CalendarWrite,
    #[serde(rename = "webhooks:manage")]
    WebhooksManage,
    #[serde(rename = "audit:read")]
    AuditRead,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::CasesRead,
        Scope::CasesWrite,
        Scope::DocumentsRead,
        Scope::DocumentsWrite,
        Scope::CalendarRead,
        Scope::CalendarWrite,
        Scope::WebhooksManage,
        Scope::AuditRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::CasesRead => "cases:read",
            Scope::CasesWrite => "cases:write",
            Scope::DocumentsRead => "documents:read",
            Scope::DocumentsWrite => "documents:write",
            Scope::CalendarRead => "calendar:read",
            Scope::CalendarWrite => "calendar:write",
            Scope::WebhooksManage => "webhooks:manage",
            Scope::AuditRead => "audit:read",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scopes(u16);

impl Scopes {
    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    /// Parses the stored, space-separated form (unknown names are ignored: they open nothing).
    pub fn parse_stored(s: &str) -> Self {
        Self(s.split_whitespace().filter_map(Scope::parse).fold(0, |acc, x| acc | x.bit()))
    }

    pub fn list(self) -> Vec<Scope> {
        Scope::ALL.into_iter().filter(|s| self.contains(*s)).collect()
    }

    fn stored(self) -> String {
        self.list().iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |acc, x| acc | x.bit()))
    }
}

/// The key a request came with, on its [`Principal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGrant {
    pub id: Uuid,
    pub scopes: Scopes,
}

/// The scope a key needs for `method` on `path` (the full request path), or None when keys
/// may not call the route at all (accounts, sessions, users, keys themselves, the job queue).
pub fn required_scope(method: &::http::Method, path: &str) -> Option<Scope> {
    // The path as the client sent it, or as a nested router sees it (without `/api/v1`).
    let rest = path.strip_prefix("/api/v1").unwrap_or(path).strip_prefix('/')?;
    let mut segments = rest.split('/');
    let first = segments.next().unwrap_or("");
    let read = matches!(*method, ::http::Method::GET | ::http::Method::HEAD);
    let pick = |r: Scope, w: Scope| Some(if read { r } else { w });
    // A case's documents are documents: `/cases/{id}/documents` needs the documents scopes.
    if first == "cases" && segments.nth(1) == Some("documents") {
        return pick(Scope::DocumentsRead, Scope::DocumentsWrite);
    }
    match first {
        "cases" | "reports" => pick(Scope::CasesRead, Scope::CasesWrite),
        "documents" | "uploads" => pick(Scope::DocumentsRead, Scope::DocumentsWrite),
        "calendar" => pick(Scope::CalendarRead, Scope::CalendarWrite),
        "webhooks" => Some(Scope::WebhooksManage),
        // Reading and verifying the trail change nothing.
        "audit" => Some(Scope::AuditRead),
        _ => None,
    }
}

/// Refuses a key-authenticated request outside the key's scopes.
pub fn check_scope(p: &Principal, method: &::http::Method, path: &str) -> ApiResult<()> {
    let Some(key) = p.api_key else { return Ok(()) };
    match required_scope(method, path) {
        Some(s) if key.scopes.contains(s) => Ok(()),
        Some(s) => Err(ApiError::forbidden(format!("this API key does not have the scope {}", s.as_str()))),
        None => Err(ApiError::forbidden("API keys may not call this route; sign in as a user")),
    }
}

/// The prefix and secret of a presented key (`lf_<prefix>_<secret>`).
fn split(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix("lf_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (ok(prefix, PREFIX_LEN) && ok(secret, SECRET_LEN)).then_some((prefix, secret))
}

/// Whether a presented credential is an API key rather than an access token.
pub fn looks_like_key(presented: &str) -> bool {
    presented.starts_with("lf_")
}

/// A presented key as checked once for a request (by the rate limiter, which needs to know
/// whether it is valid to pick its budget), so authentication does not look it up again. Set
/// by the server only, in the request's extensions; used only for the same presented key.
#[derive(Clone, Debug)]
pub struct CheckedKey {
    pub presented: String,
    /// The key's principal, or None when it is not a valid key.
    pub principal: Option<Principal>,
    /// False when the check could not tell (the database failing): authentication then asks
    /// again and reports that failure, rather than calling a valid key invalid.
    pub decided: bool,
}

impl CheckedKey {
    /// Checks `presented` as [`authenticate`] does (cache, else database).
    pub async fn check(app: &App, presented: &str) -> Self {
        let (principal, decided) = match authenticate(app, presented).await {
            Ok(p) => (Some(p), true),
            Err(e) if e.code == ErrorCode::AuthTokenInvalid => (None, true),
            Err(_) => (None, false),
        };
        Self { presented: presented.to_owned(), principal, decided }
    }

    /// The rate-limit budget of the key: its own (by prefix) when it is valid, else None, and
    /// the request counts against its address like any unauthenticated one (a made-up key, or
    /// a real prefix with a wrong secret, must not open a fresh budget or drain the real
    /// key's).
    pub fn budget(&self) -> Option<String> {
        self.principal.as_ref()?;
        split(&self.presented).map(|(prefix, _)| format!("k:{prefix}"))
    }

    /// What authentication makes of it: the principal, or the usual 401.
    pub fn into_result(self) -> Result<Principal, ApiError> {
        self.principal.ok_or_else(invalid)
    }
}

const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 43;

fn hash(secret: &str) -> String {
    crate::auth::tokens::sha256_hex(secret.as_bytes())
}

fn invalid() -> ApiError {
    ApiError::new(ErrorCode::AuthTokenInvalid, "the API key is not valid, has expired or was revoked")
}

/// A checked key, cached.
#[derive(Debug)]
pub struct CachedKey {
    secret_hash: String,
    principal: Principal,
    expires_at: Option<DateTime<Utc>>,
    checked: Instant,
    last_used_written: std::sync::atomic::AtomicI64,
}

/// Keys checked recently, by prefix. A lookup that read the database before the cache was
/// last cleared (a revocation, a maker suspended) is not kept: without that, a key read a
/// moment before its revocation committed would be cached after the clearing and trusted
/// for another `AUTH_CACHE_TTL_MS`.
#[derive(Clone, Debug)]
pub struct KeyCache {
    entries: moka::sync::Cache<String, Arc<CachedKey>>,
    /// How many times the cache was cleared.
    clearings: Arc<std::sync::atomic::AtomicU64>,
}

impl KeyCache {
    pub fn get(&self, prefix: &str) -> Option<Arc<CachedKey>> {
        self.entries.get(prefix)
    }

    /// Forgets every key (on this instance).
    pub fn invalidate_all(&self) {
        self.clearings.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.entries.invalidate_all();
    }

    /// A mark to take before reading a key from the database, for [`KeyCache::insert_since`].
    fn mark(&self) -> u64 {
        self.clearings.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Keeps `entry` unless the cache was cleared since `mark` (checked again after the
    /// insert, so a clearing between the check and the insert removes it too).
    fn insert_since(&self, mark: u64, prefix: &str, entry: Arc<CachedKey>) {
        if self.mark() != mark {
            return;
        }
        self.entries.insert(prefix.to_owned(), entry);
        if self.mark() != mark {
            self.entries.invalidate(prefix);
        }
    }
}

/// A cache that trusts a checked key for `ttl`.
pub fn cache(ttl: std::time::Duration) -> KeyCache {
    KeyCache {
        entries: moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(ttl.max(std::time::Duration::from_millis(1)))
            .build(),
        clearings: Arc::default(),
    }
}

/// The principal of a presented key, or 401.
pub async fn authenticate(app: &App, presented: &str) -> Result<Principal, ApiError> {
    let (prefix, secret) = split(presented).ok_or_else(invalid)?;
    let ttl = app.config.auth_cache_ttl;
    let cached = app.api_keys.get(prefix).filter(|c| !ttl.is_zero() && c.checked.elapsed() < ttl);
    let entry = match cached {
        Some(c) => c,
        None => {
            let mark = app.api_keys.mark();
            let c = Arc::new(lookup(app, prefix).await?.ok_or_else(invalid)?);
            if !ttl.is_zero() {
                app.api_keys.insert_since(mark, prefix, Arc::clone(&c));
            }
            c
        }
    };
    if !bool::from(hash(secret).as_bytes().ct_eq(entry.secret_hash.as_bytes())) {
        return Err(invalid());
    }
    if entry.expires_at.is_some_and(|e| e <= clock::now()) {
        return Err(invalid());
    }
    touch(app, &entry);
    Ok(entry.principal.clone())
}

/// Loads a usable key: not revoked, not expired, its maker an active admin of its firm.
async fn lookup(app: &App, prefix: &str) -> Result<Option<CachedKey>, ApiError> {
    let k = model::Entity::find().filter(model::Column::Prefix.eq(prefix)).one(&app.db).await?;
    let Some(k) = k else { return Ok(None) };
    if k.revoked_at.is_some() || k.expires_at.is_some_and(|e| e <= clock::now()) {
        return Ok(None);
    }
    let stmt = Query::select()
        .column(user::Column::Status)
        .column(user::Column::FirmId)
        .column(user::Column::Role)
        .from(user::Entity)
        .and_where(Expr::col(user::Column::Id).eq(k.created_by))
        .to_owned();
    let Some(row) = app.db.query_one(&stmt).await? else { return Ok(None) };
    let status: UserStatus = row.try_get("", "status")?;
    let firm: Uuid = row.try_get("", "firm_id")?;
    let role: Role = row.try_get("", "role")?;
    // Only admins make keys; a maker who is no longer one has lost what the key acts with.
    if status != UserStatus::Active || firm != k.firm_id || role != Role::Admin {
        return Ok(None);
    }
    Ok(Some(CachedKey {
        principal: Principal {
            user_id: UserId(k.created_by),
            firm_id: FirmId(k.firm_id),
            role: Role::Partner,
            session_id: SessionId(k.id),
            api_key: Some(KeyGrant { id: k.id, scopes: Scopes::parse_stored(&k.scopes) }),
        },
        secret_hash: k.secret_hash,
        expires_at: k.expires_at,
        checked: Instant::now(),
        last_used_written: std::sync::atomic::AtomicI64::new(k.last_used_at.map(|t| t.timestamp()).unwrap_or(0)),
    }))
}

/// Records the key's use, at most once a minute per key and process, off the request's path.
fn touch(app: &App, entry: &CachedKey) {
    use std::sync::atomic::Ordering;
    let now = clock::now();
    let last = entry.last_used_written.load(Ordering::Relaxed);
    if now.timestamp() - last < 60
        || entry.last_used_written.compare_exchange(last, now.timestamp(), Ordering::AcqRel, Ordering::Relaxed).is_err()
    {
        return;
    }
    let Some(key) = entry.principal.api_key else { return };
    let db = app.db.clone();
    tokio::spawn(async move {
        let r = model::Entity::update_many()
            .col_expr(model::Column::LastUsedAt, Expr::value(now))
            .filter(model::Column::Id.eq(key.id))
            .exec(&db)
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "could not record an API key's last use");
        }
    });
}

/// A key as the API shows it (never its secret, except once on creation).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    /// The public part of the key (`lf_<prefix>_…`), to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The whole key, `lf_<prefix>_<secret>`: only in the answer that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn view(k: &model::Model, key: Option<String>) -> ApiKeyView {
    ApiKeyView {
        id: k.id,
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        scopes: Scopes::parse_stored(&k.scopes).list(),
        created_by: k.created_by,
        created_at: k.created_at,
        expires_at: k.expires_at,
        last_used_at: k.last_used_at,
        revoked_at: k.revoked_at,
        key,
    }
}

/// `POST /api-keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Only a signed-in admin (not a key) manages keys.
fn require_admin(p: &Principal) -> ApiResult<()> {
    if p.role == Role::Admin && p.api_key.is_none() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only a firm admin, signed in, may manage API keys"))
    }
}

/// Makes a key; the answer carries it whole, once.
pub async fn create(app: &App, p: &Principal, input: CreateKey) -> ApiResult<ApiKeyView> {
    require_admin(p)?;
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::field("name", "must be 1 to 100 characters"));
    }
    let mut scopes = Vec::new();
    for s in &input.scopes {
        scopes.push(Scope::parse(s).ok_or_else(|| {
            let all: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::field("scopes", format!("unknown scope {s:?}; use any of {}", all.join(", ")))
        })?);
    }
    if scopes.is_empty() {
        return Err(ApiError::field("scopes", "name at least one scope"));
    }
    if input.expires_at.is_some_and(|e| e <= clock::now()) {
        return Err(ApiError::field("expiresAt", "must be in the future"));
    }
    let scopes: Scopes = scopes.into_iter().collect();
    // 9 random bytes make 12 characters of prefix; 32 make 43 of secret.
    let prefix = crate::auth::tokens::random_urlsafe(9)?.replace(['-', '_'], "x");
    let secret = crate::auth::tokens::random_urlsafe(32)?;
    let key = format!("lf_{prefix}_{secret}");
    let row = model::Model {
        id: Uuid::now_v7(),
        firm_id: p.firm_id.0,
        name,
        prefix,
        secret_hash: hash(&secret),
        scopes: scopes.stored(),
        created_by: p.user_id.0,
        created_at: clock::now(),
        expires_at: input.expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    let saved = app
        .write(TxOptions::write(), |tx| {
            let row = row.clone();
            async move {
                let tx = &tx;
                let saved = model::ActiveModel::from(row).insert(tx).await?;
                let change = serde_json::json!({
                    "name": { "old": null, "new": saved.name },
                    "scopes": { "old": null, "new": saved.scopes },
                    "expiresAt": { "old": null, "new": saved.expires_at },
                });
                audit::record(
                    tx,
                    p.firm_id,
                    &Actor::user(p),
                    AuditEvent::new("api_key.create", "api_key", Some(saved.id.to_string())).changes(change),
                )
                .await?;
                Ok(saved)
            }
        })
        .await?;
    Ok(view(&saved, Some(key)))
}

/// The firm's keys, newest first.
pub async fn list(app: &App, p: &Principal) -> ApiResult<Vec<ApiKeyView>> {
    require_admin(p)?;
    let rows = model::Entity::find()
        .filter(model::Column::FirmId.eq(p.firm_id.0))
        .order_by_desc(model::Column::Id)
        .all(&app.db)
        .await?;
    Ok(rows.iter().map(|k| view(k, None)).collect())
}

/// Revokes a key: from the commit on it gets 401, on every instance.
pub async fn revoke(app: &App, p: &Principal, id: Uuid) -> ApiResult<()> {
    require_admin(p)?;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let k = model::Entity::find_by_id(id)
            .filter(model::Column::FirmId.eq(p.firm_id.0))
            .one(tx)
            .await?
            .ok_or_else(|| ApiError::not_found("API key"))?;
        if k.revoked_at.is_some() {
            return Ok(());
        }
        let now = clock::now();
        let mut active: model::ActiveModel = k.into();
        active.revoked_at = Set(Some(now));
        active.update(tx).await?;
        let actor = Actor::user(p);
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("api_key.revoke", "api_key", Some(id.to_string()))
                .changes(serde_json::json!({ "revokedAt": { "old": null, "new": now } })),
        )
        .await?;
        tx.record(DomainEvent::new(EventType::ApiKeyRevoked, p.firm_id, &actor, id));
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::Method;

    #[test]
    fn routes_map_to_scopes_and_the_rest_is_closed_to_keys() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required_scope(&get, "/api/v1/cases"), Some(Scope::CasesRead));
        assert_eq!(required_scope(&post, "/api/v1/cases/x/docket"), Some(Scope::CasesWrite));
        assert_eq!(required_scope(&Method::DELETE, "/api/v1/cases/x"), Some(Scope::CasesWrite));
        assert_eq!(required_scope(&get, "/api/v1/audit/verify"), Some(Scope::AuditRead));
        assert_eq!(required_scope(&get, "/cases/x/parties"), Some(Scope::CasesRead));
        for closed in ["/api/v1/users", "/api/v1/api-keys", "/api/v1/auth/me", "/api/v1/admin/queues", "/users"] {
            assert_eq!(required_scope(&get, closed), None, "{closed}");
        }
    }

    #[test]
    fn keys_parse_only_in_their_exact_shape() {
        let k = format!("lf_{}_{}", "a".repeat(PREFIX_LEN), "b".repeat(SECRET_LEN));
        assert!(split(&k).is_some());
        assert!(split(&k[..k.len() - 1]).is_none());
        assert!(split("lf_short_secret").is_none());
        assert!(split(&k.replacen("lf_", "xx_", 1)).is_none());
        let scopes: Scopes = [Scope::CasesRead, Scope::AuditRead].into_iter().collect();
        assert_eq!(Scopes::parse_stored(&scopes.stored()), scopes);
        assert!(scopes.contains(Scope::AuditRead) && !scopes.contains(Scope::CasesWrite));
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn entry() -> Arc<CachedKey> {
        Arc::new(CachedKey {
            secret_hash: String::new(),
            principal: Principal {
                user_id: UserId(Uuid::nil()),
                firm_id: FirmId(Uuid::nil()),
                role: Role::Partner,
                session_id: SessionId(Uuid::nil()),
                api_key: None,
            },
            expires_at: None,
            checked: Instant::now(),
            last_used_written: std::sync::atomic::AtomicI64::new(0),
        })
    }

    #[test]
    fn a_key_read_before_the_cache_was_cleared_is_not_kept() {
        let c = cache(std::time::Duration::from_secs(60));
        let mark = c.mark();
        // The revocation commits and clears the cache while the lookup is on its way.
        c.invalidate_all();
        c.insert_since(mark, "abc", entry());
        assert!(c.get("abc").is_none());
        // A lookup that started after the clearing is kept.
        let mark = c.mark();
        c.insert_since(mark, "abc", entry());
        assert!(c.get("abc").is_some());
    }
}
