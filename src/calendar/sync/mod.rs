//! Two-way sync with Google Calendar (API v3) and Microsoft Graph (v1.0) calendars.
//!
//! - **Connecting** (per user and provider): `authorize` sends the user to the provider with a
//!   `state` and a PKCE S256 challenge (both kept server-side, the verifier sealed, for 10
//!   minutes, used once); the provider sends the browser back to the front end
//!   (`CALENDAR_REDIRECT_URL`), which posts the code to `callback` with the user's token; the
//!   state must be that user's, and the code is exchanged. Tokens are sealed at rest (AES-256-GCM, `CALENDAR_TOKEN_KEY`; without the key,
//!   connecting is refused), refreshed a minute before they expire (and once more on a 401),
//!   and revoked at the provider on disconnect where it has a revocation endpoint (Google).
//!   A refresh the provider refuses (`invalid_grant`) marks the connection `revoked`.
//! - **Push**: every change of an event enqueues a `calendar.push` job for its version (when
//!   the firm has any connection). The job sends the event to the connections of the users it
//!   concerns (creator, assignee, user attendees) who may see it, updates or deletes where it
//!   was sent before, and deletes it from calendars of users who no longer see it. A copy names
//!   only the attendees who may see the event at push time (Google puts a copy in each guest's
//!   calendar): none a sealed or restricted docket entry is hidden from.
//! - **Losing access**: a committed change that may take an event away from someone (a team
//!   removal, a revoked sealed grant, a deleted case, a changed docket entry, a suspended user or
//!   a new role) queues `calendar.revalidate` in its transaction ([`access_changed`], called
//!   by `db::tx`); the job pushes the events concerned again, which deletes the copies of users
//!   who no longer see them, and sends the others again when they would now leave an attendee out.
//! - **Created once**: before creating an event in a calendar, the push looks for a copy that
//!   carries its LexiFlow id (a lost answer, a crash before the link was recorded, an earlier
//!   connection) and takes it over.
//! - **Pull**: `calendar.pull` per connection, every `CALENDAR_SYNC_CRON` and on demand, reads
//!   the changes since its cursor (Google's `syncToken`, paged; Graph's delta link, paged). An
//!   expired cursor (410) starts a full listing. Only events LexiFlow pushed are considered:
//!   nothing of a user's own calendar is read into the firm's system.
//! - **Conflicts** (the rule, in `docs/CALENDAR.md`): hearings, court dates, filings and
//!   deadlines are LexiFlow's: a change or deletion made in the provider is overwritten (or the
//!   event re-created) and the conflict audited; LexiFlow's side is never lost. Other events:
//!   a change made only on one side is taken; a change on both sides is decided by the later
//!   modification time, and audited.

pub mod crypto;
pub mod model;
pub mod oauth;
pub mod remote;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use lexiflow_queue::NewJob;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use self::{
    crypto::TokenCipher,
    model::{connection, link, state},
    remote::{Api, Outgoing, RemoteEvent, When},
};
use super::model::{attendee, event};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    clock,
    config::{CalendarConfig, ProviderSettings},
    db::{self, TxOptions},
    events::{EventType as DomainType, outbox},
    http::error::{ApiError, ApiResult, ErrorCode},
    ids::FirmId,
    jobs::JobError,
    outbound::Outbound,
    users::model as user,
};

/// Push one event version to the calendars it belongs in.
pub const PUSH: &str = "calendar.push";
/// Pull one connection's changes.
pub const PULL: &str = "calendar.pull";
/// Push a newly connected user's events.
pub const BACKFILL: &str = "calendar.backfill";
/// Enqueue a pull of every active connection (on `CALENDAR_SYNC_CRON`).
pub const SYNC_ALL: &str = "calendar.sync";
/// Take the copies of events some user may no longer see out of that user's calendars.
pub const REVALIDATE: &str = "calendar.revalidate";
/// Sync's own queue, so a slow provider never holds up a reminder.
pub const QUEUE: &str = "calendar-sync";

/// When the second revalidation after a change that took access away runs.
const REVALIDATE_AGAIN: Duration = Duration::from_secs(300);

/// How long an authorization may take.
const STATE_TTL: Duration = Duration::from_secs(600);

/// A calendar provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Google,
    Microsoft,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Microsoft => "microsoft",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "google" => Some(Self::Google),
            "microsoft" => Some(Self::Microsoft),
            _ => None,
        }
    }

    /// Its label in metrics and breakers.
    pub fn dependency(self) -> &'static str {
        match self {
            Self::Google => "google_calendar",
            Self::Microsoft => "microsoft_graph",
        }
    }
}

/// Why a sync step failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the provider no longer accepts this connection's grant")]
    Revoked,
    #[error("the provider refused the access token")]
    Unauthorized,
    #[error("rate-limited by the provider for {0:?}")]
    RateLimited(Duration),
    #[error("the event changed at the provider since it was last synced")]
    Precondition,
    #[error("the event is gone at the provider")]
    Gone,
    #[error("the provider no longer knows the sync cursor")]
    CursorExpired,
    #[error("the provider answered {0}: {1}")]
    Http(u16, String),
    #[error("the provider could not be reached: {0}")]
    Transport(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
}

impl From<SyncError> for JobError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Db(d) => JobError::Db(d),
            other => JobError::Invalid(other.to_string()),
        }
    }
}

/// What sync needs: the database, the outbound client, the settings and the token key.
#[derive(Clone, Debug)]
pub struct Syncer {
    pub db: DatabaseConnection,
    pub outbound: Arc<Outbound>,
    pub config: CalendarConfig,
    pub cipher: Option<Arc<TokenCipher>>,
}

impl Syncer {
    /// From the configuration (no cipher when `CALENDAR_TOKEN_KEY` is unset).
    pub fn new(db: DatabaseConnection, outbound: Arc<Outbound>, config: &CalendarConfig) -> Self {
        use secrecy::ExposeSecret;
        let cipher = config.token_key.as_ref().and_then(|k| TokenCipher::new(k.expose_secret()).ok()).map(Arc::new);
        Self { db, outbound, config: config.clone(), cipher }
    }

    fn settings(&self, p: Provider) -> Option<&ProviderSettings> {
        match p {
            Provider::Google => self.config.google.as_ref(),
            Provider::Microsoft => self.config.microsoft.as_ref(),
        }
    }

    fn redirect(&self, p: Provider) -> Option<String> {
        self.config.redirect_url.as_ref().map(|u| u.replace("{provider}", p.as_str()))
    }

    fn context(c: &connection::Model, kind: &str) -> String {
        format!("{}:{}:{kind}", c.user_id, c.provider)
    }

    /// A usable access token of `conn` (refreshed first when it expires within a minute, or
    /// when `force`).
    pub async fn access_token(&self, conn: Uuid, force: bool) -> Result<String, SyncError> {
        let cipher = self.cipher.as_ref().ok_or_else(|| SyncError::Invalid("CALENDAR_TOKEN_KEY is not set".into()))?;
        let c = connection::Entity::find_by_id(conn).one(&self.db).await?.ok_or(SyncError::Revoked)?;
        if c.status != "active" {
            return Err(SyncError::Revoked);
        }
        let fresh = c.expires_at.is_none_or(|t| t > clock::now() + chrono::Duration::seconds(60));
        if fresh && !force {
            return cipher
                .open(&c.access_token, &Self::context(&c, "access"))
                .map_err(|e| SyncError::Invalid(e.to_string()));
        }
        // One refresh at a time per connection in this process; the row is read again under the
        // lock, and a token another refresh stored meanwhile is used instead of refreshing again.
        let _turn = stripe(&REFRESH_LOCKS, c.id).lock().await;
        let seen = c.access_token.clone();
        let c = connection::Entity::find_by_id(conn).one(&self.db).await?.ok_or(SyncError::Revoked)?;
        if c.status != "active" {
            return Err(SyncError::Revoked);
        }
        if c.access_token != seen {
            return cipher
                .open(&c.access_token, &Self::context(&c, "access"))
                .map_err(|e| SyncError::Invalid(e.to_string()));
        }
        let provider = Provider::parse(&c.provider).ok_or_else(|| SyncError::Invalid("unknown provider".into()))?;
        let (Some(settings), Some(redirect)) = (self.settings(provider), self.redirect(provider)) else {
            return Err(SyncError::Invalid(format!("{} is not configured", provider.as_str())));
        };
        let Some(sealed) = &c.refresh_token else {
            self.mark_revoked(c.id, "no refresh token", None).await?;
            return Err(SyncError::Revoked);
        };
        let refresh =
            cipher.open(sealed, &Self::context(&c, "refresh")).map_err(|e| SyncError::Invalid(e.to_string()))?;
        match oauth::refresh(&self.outbound, provider, settings, &redirect, &refresh).await {
            Ok(t) => {
                let access = cipher
                    .seal(&t.access, &Self::context(&c, "access"))
                    .map_err(|e| SyncError::Invalid(e.to_string()))?;
                // A provider may rotate the refresh token; keep the new one.
                let refresh_sealed = match &t.refresh {
                    Some(r) => Some(
                        cipher.seal(r, &Self::context(&c, "refresh")).map_err(|e| SyncError::Invalid(e.to_string()))?,
                    ),
                    None => c.refresh_token.clone(),
                };
                let expires = t.expires_in.map(|d| clock::now() + chrono::Duration::from_std(d).unwrap_or_default());
                // Stored only over the tokens this refresh started from: when another instance
                // refreshed first, its tokens stay and are used (the last writer does not win).
                let stored = connection::Entity::update_many()
                    .col_expr(connection::Column::AccessToken, Expr::value(access))
                    .col_expr(connection::Column::RefreshToken, Expr::value(refresh_sealed))
                    .col_expr(connection::Column::ExpiresAt, Expr::value(expires))
                    .col_expr(connection::Column::UpdatedAt, Expr::value(clock::now()))
                    .filter(connection::Column::Id.eq(c.id))
                    .filter(connection::Column::AccessToken.eq(seen))
                    .exec(&self.db)
                    .await?;
                metrics::counter!("lexiflow_calendar_token_refreshes_total", "provider" => provider.as_str())
                    .increment(1);
                if stored.rows_affected == 1 {
                    return Ok(t.access);
                }
                self.stored_access(cipher, conn).await
            }
            Err(oauth::OAuthError::InvalidGrant) => {
                // Only over the tokens this refresh used: another instance may have stored a
                // rotated refresh token meanwhile, and the connection is then still good.
                let why = "the provider refused the refresh token (invalid_grant)";
                if self.mark_revoked(c.id, why, Some(&seen)).await? {
                    return Err(SyncError::Revoked);
                }
                self.stored_access(cipher, conn).await
            }
            Err(e) => Err(SyncError::Transport(e.to_string())),
        }
    }

    /// The access token stored now (another refresh's), when the connection is still active.
    async fn stored_access(&self, cipher: &TokenCipher, conn: Uuid) -> Result<String, SyncError> {
        let c = connection::Entity::find_by_id(conn).one(&self.db).await?.ok_or(SyncError::Revoked)?;
        if c.status != "active" {
            return Err(SyncError::Revoked);
        }
        cipher.open(&c.access_token, &Self::context(&c, "access")).map_err(|e| SyncError::Invalid(e.to_string()))
    }

    /// Marks `conn` revoked (only while its access token is still `only_over`, when given:
    /// another instance's refresh meanwhile keeps it active); whether it did.
    async fn mark_revoked(&self, conn: Uuid, why: &str, only_over: Option<&str>) -> Result<bool, SyncError> {
        let mut q = connection::Entity::update_many()
            .col_expr(connection::Column::Status, Expr::value("revoked"))
            .col_expr(connection::Column::LastError, Expr::value(why))
            .col_expr(connection::Column::UpdatedAt, Expr::value(clock::now()))
            .filter(connection::Column::Id.eq(conn));
        if let Some(seen) = only_over {
            q = q.filter(connection::Column::AccessToken.eq(seen));
        }
        if q.exec(&self.db).await?.rows_affected == 0 {
            return Ok(false);
        }
        tracing::warn!(connection_id = %conn, reason = why, "calendar connection revoked");
        Ok(true)
    }

    async fn note_error(&self, conn: Uuid, e: &SyncError) {
        let r = connection::Entity::update_many()
            .col_expr(connection::Column::LastError, Expr::value(e.to_string()))
            .filter(connection::Column::Id.eq(conn))
            .exec(&self.db)
            .await;
        if let Err(db) = r {
            tracing::warn!(error = %db, "cannot record a calendar sync error");
        }
    }
}

type Stripes = std::sync::LazyLock<Vec<tokio::sync::Mutex<()>>>;

/// Locks of token refreshes, by connection, in this process.
static REFRESH_LOCKS: Stripes = std::sync::LazyLock::new(|| (0..64).map(|_| tokio::sync::Mutex::new(())).collect());
/// Locks of pushes, by event, in this process.
static EVENT_LOCKS: Stripes = std::sync::LazyLock::new(|| (0..64).map(|_| tokio::sync::Mutex::new(())).collect());

/// The lock of `id` among `locks`: one of a fixed set, chosen by the id (two ids may share one).
fn stripe(locks: &'static Stripes, id: Uuid) -> &'static tokio::sync::Mutex<()> {
    &locks[(id.as_u128() % locks.len() as u128) as usize]
}

fn not_configured(what: &str) -> ApiError {
    ApiError::new(ErrorCode::DependencyUnavailable, format!("calendar sync is not configured on this server: {what}"))
}

fn parse_provider(s: &str) -> ApiResult<Provider> {
    Provider::parse(s).ok_or_else(|| ApiError::not_found("calendar provider"))
}

fn syncer(app: &App) -> Syncer {
    Syncer::new(app.db.clone(), app.outbound.clone(), &app.config.calendar)
}

/// Where to send the user to connect `provider`, with a fresh state and PKCE challenge.
pub async fn authorize(app: &App, p: &Principal, provider: &str) -> ApiResult<url::Url> {
    let provider = parse_provider(provider)?;
    users_only(p)?;
    let s = syncer(app);
    let cipher = s.cipher.clone().ok_or_else(|| not_configured("CALENDAR_TOKEN_KEY is not set"))?;
    let settings =
        s.settings(provider).ok_or_else(|| not_configured(&format!("{} has no client", provider.as_str())))?;
    let redirect = s.redirect(provider).ok_or_else(|| not_configured("CALENDAR_REDIRECT_URL is not set"))?;
    let (url, st, verifier) = oauth::authorize_url(provider, settings, &redirect)
        .map_err(|e| ApiError::new(ErrorCode::DependencyUnavailable, e.to_string()))?;
    let hash = crate::auth::tokens::sha256_hex(st.as_bytes());
    let sealed = cipher.seal(&verifier, &format!("state:{hash}")).map_err(ApiError::internal)?;
    let now = clock::now();
    // Forget authorizations that were never finished.
    state::Entity::delete_many().filter(state::Column::ExpiresAt.lt(now)).exec(&app.db).await?;
    state::Entity::insert(state::ActiveModel::from(state::Model {
        state_hash: hash,
        firm_id: p.firm_id.0,
        user_id: p.user_id.0,
        provider: provider.as_str().to_owned(),
        verifier: sealed,
        created_at: now,
        expires_at: now + chrono::Duration::from_std(STATE_TTL).unwrap_or_default(),
    }))
    .exec_without_returning(&app.db)
    .await?;
    Ok(url)
}

/// A connection as its user sees it (never its tokens).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    pub provider: Provider,
    /// `active`, or `revoked` (connect again).
    pub status: String,
    pub scope: Option<String>,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

fn connection_view(c: connection::Model) -> ConnectionView {
    ConnectionView {
        provider: Provider::parse(&c.provider).unwrap_or(Provider::Google),
        status: c.status,
        scope: c.scope,
        last_synced_at: c.last_synced_at,
        last_error: c.last_error,
        created_at: c.created_at,
    }
}

/// Completes a connection with what the provider gave the browser: exchanges the code for
/// tokens and stores them sealed. Only the user who started it (`authorize`) can complete it:
/// a consent link sent to someone else, who grants access, would otherwise connect their
/// calendar to the sender's account.
pub async fn callback(
    app: &App,
    p: &Principal,
    provider: &str,
    code: Option<&str>,
    st: Option<&str>,
    error: Option<&str>,
) -> ApiResult<ConnectionView> {
    let provider = parse_provider(provider)?;
    users_only(p)?;
    let s = syncer(app);
    let cipher = s.cipher.clone().ok_or_else(|| not_configured("CALENDAR_TOKEN_KEY is not set"))?;
    let st = st.ok_or_else(|| ApiError::field("state", "missing"))?;
    // The state is used once, whatever happens next.
    let hash = crate::auth::tokens::sha256_hex(st.as_bytes());
    let found = state::Entity::find_by_id(hash.clone()).one(&app.db).await?;
    // Only the caller whose delete took the row goes on: two posts of one state, one connection.
    let taken = state::Entity::delete_by_id(hash.clone()).exec(&app.db).await?.rows_affected == 1;
    let found = found
        .filter(|f| taken && f.provider == provider.as_str() && f.expires_at > clock::now())
        .ok_or_else(|| ApiError::field("state", "unknown, used or expired: start again"))?;
    if found.user_id != p.user_id.0 || found.firm_id != p.firm_id.0 {
        // Someone else's consent link was followed and granted: never connect it, to either.
        tracing::warn!(
            user_id = %p.user_id.0,
            firm_id = %p.firm_id.0,
            started_by = %found.user_id,
            started_by_firm = %found.firm_id,
            provider = provider.as_str(),
            "a calendar connection started by another user was refused"
        );
        // Audited in the caller's firm: its admins see that someone sent them a consent link.
        let actor = &Actor::user(p);
        let changes = &serde_json::json!({ "provider": provider.as_str(), "startedBy": found.user_id });
        app.write(TxOptions::write(), |tx| async move {
            let event =
                AuditEvent::new("calendar.connect_refused", "calendar_connection", None).changes(changes.clone());
            audit::record(&tx, p.firm_id, actor, event).await?;
            Ok::<_, ApiError>(())
        })
        .await?;
        return Err(ApiError::field("state", "was made for another user: start again from your own account"));
    }
    if let Some(e) = error {
        return Err(ApiError::field("error", format!("the provider did not grant access: {}", crate::input::plain(e))));
    }
    let code = code.ok_or_else(|| ApiError::field("code", "missing"))?;
    let settings = s.settings(provider).ok_or_else(|| not_configured("the provider has no client"))?;
    let redirect = s.redirect(provider).ok_or_else(|| not_configured("CALENDAR_REDIRECT_URL is not set"))?;
    let verifier = cipher.open(&found.verifier, &format!("state:{hash}")).map_err(ApiError::internal)?;
    let t =
        oauth::exchange(&app.outbound, provider, settings, &redirect, code, &verifier).await.map_err(|e| match e {
            oauth::OAuthError::InvalidGrant => {
                ApiError::field("code", "the provider refused the code (used or expired)")
            }
            oauth::OAuthError::Transport(m) => {
                ApiError::new(ErrorCode::DependencyUnavailable, format!("the provider could not be reached: {m}"))
            }
            other => ApiError::field("code", other.to_string()),
        })?;
    let now = clock::now();
    let id = Uuid::now_v7();
    let mut c = connection::Model {
        id,
        firm_id: found.firm_id,
        user_id: found.user_id,
        provider: provider.as_str().to_owned(),
        account_email: None,
        access_token: String::new(),
        refresh_token: None,
        expires_at: t.expires_in.map(|d| now + chrono::Duration::from_std(d).unwrap_or_default()),
        scope: t.scope.clone(),
        sync_cursor: None,
        status: "active".into(),
        last_error: None,
        last_synced_at: None,
        created_at: now,
        updated_at: now,
    };
    c.access_token = cipher.seal(&t.access, &Syncer::context(&c, "access")).map_err(ApiError::internal)?;
    c.refresh_token = t
        .refresh
        .as_deref()
        .map(|r| cipher.seal(r, &Syncer::context(&c, "refresh")))
        .transpose()
        .map_err(ApiError::internal)?;
    let c = &c;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        // Connecting again replaces the old connection (and forgets what it had synced).
        let old: Vec<Uuid> = connection::Entity::find()
            .select_only()
            .column(connection::Column::Id)
            .filter(connection::Column::UserId.eq(c.user_id))
            .filter(connection::Column::Provider.eq(c.provider.clone()))
            .into_tuple()
            .all(tx)
            .await?;
        link::Entity::delete_many().filter(link::Column::ConnectionId.is_in(old.clone())).exec(tx).await?;
        connection::Entity::delete_many().filter(connection::Column::Id.is_in(old)).exec(tx).await?;
        connection::Entity::insert(connection::ActiveModel::from(c.clone())).exec_without_returning(tx).await?;
        let actor = Actor::user(p);
        audit::record(
            tx,
            FirmId(c.firm_id),
            &actor,
            AuditEvent::new("calendar.connect", "calendar_connection", Some(c.id.to_string()))
                .changes(serde_json::json!({ "provider": { "old": null, "new": c.provider } })),
        )
        .await?;
        for (kind, key) in [(BACKFILL, "backfill"), (PULL, "pull")] {
            let job = NewJob::new(kind, serde_json::json!({ "connectionId": c.id }))
                .queue(QUEUE)
                .max_attempts(8)
                .unique_key(format!("calendar-{key}:{}", c.id));
            lexiflow_queue::enqueue(tx, job).await.map_err(ApiError::internal)?;
        }
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(connection_view(c.clone()))
}

/// A calendar connection is its user's own: API keys (which act for their maker) may not
/// start, complete, list, pull or end one.
fn users_only(p: &Principal) -> ApiResult<()> {
    match p.api_key {
        Some(_) => Err(ApiError::forbidden("a calendar connection belongs to a user; sign in as one")),
        None => Ok(()),
    }
}

/// The caller's connections.
pub async fn list(app: &App, p: &Principal) -> ApiResult<Vec<ConnectionView>> {
    users_only(p)?;
    Ok(connection::Entity::find()
        .filter(connection::Column::UserId.eq(p.user_id.0))
        .all(&app.db)
        .await?
        .into_iter()
        .map(connection_view)
        .collect())
}

/// Disconnects: revokes the grant at the provider where it can be, and forgets the tokens.
pub async fn disconnect(app: &App, p: &Principal, provider: &str) -> ApiResult<bool> {
    let provider = parse_provider(provider)?;
    users_only(p)?;
    let c = connection::Entity::find()
        .filter(connection::Column::UserId.eq(p.user_id.0))
        .filter(connection::Column::Provider.eq(provider.as_str()))
        .one(&app.db)
        .await?
        .ok_or_else(|| ApiError::not_found("calendar connection"))?;
    let s = syncer(app);
    let mut revoked = false;
    if let (Some(cipher), Some(settings)) = (&s.cipher, s.settings(provider)) {
        let (token, hint) = match c.refresh_token.as_deref() {
            Some(t) => (cipher.open(t, &Syncer::context(&c, "refresh")), "refresh_token"),
            None => (cipher.open(&c.access_token, &Syncer::context(&c, "access")), "access_token"),
        };
        if let Ok(token) = token {
            match oauth::revoke(&app.outbound, provider, settings, &token, hint).await {
                Ok(r) => revoked = r,
                // The tokens are forgotten anyway; the user can remove the grant at the provider.
                Err(e) => tracing::warn!(provider = provider.as_str(), error = %e, "revoking a calendar grant failed"),
            }
        }
    }
    let c = &c;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        link::Entity::delete_many().filter(link::Column::ConnectionId.eq(c.id)).exec(tx).await?;
        connection::Entity::delete_by_id(c.id).exec(tx).await?;
        audit::record(
            tx,
            p.firm_id,
            &Actor::user(p),
            AuditEvent::new("calendar.disconnect", "calendar_connection", Some(c.id.to_string())).changes(
                serde_json::json!({ "provider": { "old": c.provider, "new": null }, "revokedAtProvider": revoked }),
            ),
        )
        .await?;
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(revoked)
}

/// Asks for a pull of the caller's connection now.
pub async fn sync_now(app: &App, p: &Principal, provider: &str) -> ApiResult<()> {
    let provider = parse_provider(provider)?;
    users_only(p)?;
    let c = connection::Entity::find()
        .filter(connection::Column::UserId.eq(p.user_id.0))
        .filter(connection::Column::Provider.eq(provider.as_str()))
        .filter(connection::Column::Status.eq("active"))
        .one(&app.db)
        .await?
        .ok_or_else(|| ApiError::not_found("calendar connection"))?;
    let job = NewJob::new(PULL, serde_json::json!({ "connectionId": c.id }))
        .queue(QUEUE)
        .max_attempts(8)
        .unique_key(format!("calendar-pull:{}", c.id));
    lexiflow_queue::enqueue(&app.db, job).await.map_err(ApiError::internal)?;
    Ok(())
}

/// After a change of `m` (in the writing transaction): a push job for this version, when the
/// firm has any calendar connection (links live only on connections).
pub async fn changed(tx: &impl ConnectionTrait, m: &event::Model) -> ApiResult<()> {
    let any: Option<Uuid> = connection::Entity::find()
        .select_only()
        .column(connection::Column::Id)
        .filter(connection::Column::FirmId.eq(m.firm_id))
        .limit(1)
        .into_tuple()
        .one(tx)
        .await?;
    if any.is_none() {
        return Ok(());
    }
    let job = NewJob::new(PUSH, serde_json::json!({ "eventId": m.id, "version": m.version }))
        .queue(QUEUE)
        .max_attempts(10)
        .unique_key(format!("calendar-push:{}:{}", m.id, m.version));
    lexiflow_queue::enqueue(tx, job).await.map_err(ApiError::internal)?;
    Ok(())
}

/// What a committed change took away from whom, as a `calendar.revalidate` job's scope: the
/// linked events of a case, a docket entry or a user (the user's own connections), or of a
/// user within one case.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Scope {
    firm_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    case_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    docket_entry_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<Uuid>,
}

/// The scope whose calendar copies a domain event may have made unseeable, if any: a user taken
/// off a case team or losing a sealed grant, a case deleted, a docket entry changed (sealed or
/// restricted), a user disabled or given another role.
fn lost_access(e: &crate::events::DomainEvent) -> Option<Scope> {
    // Every scope names what it is about; an event that does not (it cannot happen today) is
    // skipped rather than widened to the whole firm.
    let user = |k: &str| e.data.get(k).and_then(|v| v.as_str()).and_then(|v| Uuid::parse_str(v).ok());
    let entity = || Uuid::parse_str(&e.entity_id).ok();
    let base = Scope { firm_id: e.firm_id.0, ..Scope::default() };
    match e.event_type {
        DomainType::TeamMemberRemoved => {
            Some(Scope { case_id: Some(e.case_id?), user_id: Some(user("userId")?), ..base })
        }
        // A sealed grant given takes nothing away.
        DomainType::CaseAccessChanged if e.data.get("sealedAccess") != Some(&serde_json::Value::Bool(true)) => {
            Some(Scope { case_id: Some(e.case_id?), user_id: Some(user("userId")?), ..base })
        }
        DomainType::CaseDeleted => Some(Scope { case_id: Some(e.case_id?), ..base }),
        DomainType::DocketEntryUpdated => Some(Scope { docket_entry_id: Some(entity()?), ..base }),
        DomainType::UserDisabled | DomainType::UserRoleChanged => Some(Scope { user_id: Some(entity()?), ..base }),
        _ => None,
    }
}

/// In the writing transaction, after its domain events are written: for each change that may
/// have taken an event away from someone (see [`lost_access`]), a `calendar.revalidate` job,
/// when the firm has any calendar connection. Committed with the change, so a crash right after
/// the commit still takes the copies out.
pub async fn access_changed(
    tx: &impl ConnectionTrait,
    events: &[crate::events::DomainEvent],
) -> Result<(), sea_orm::DbErr> {
    let mut scopes: Vec<Scope> = events.iter().filter_map(lost_access).collect();
    if scopes.is_empty() {
        return Ok(());
    }
    scopes.sort_by_key(|s| (s.firm_id, s.case_id, s.docket_entry_id, s.user_id));
    scopes.dedup();
    let mut firms: Vec<Uuid> = scopes.iter().map(|s| s.firm_id).collect();
    firms.dedup();
    let connected: Vec<Uuid> = connection::Entity::find()
        .select_only()
        .column(connection::Column::FirmId)
        .filter(connection::Column::FirmId.is_in(firms))
        .distinct()
        .into_tuple()
        .all(tx)
        .await?;
    // Now, and once more later: a push of one of the events that was in flight on another
    // instance at the change (it had read its targets before) may write a copy after the first.
    let jobs: Vec<NewJob> = scopes
        .into_iter()
        .filter(|s| connected.contains(&s.firm_id))
        .flat_map(|s| {
            let payload = serde_json::to_value(&s).unwrap_or_default();
            [Duration::ZERO, REVALIDATE_AGAIN]
                .map(|d| NewJob::new(REVALIDATE, payload.clone()).queue(QUEUE).max_attempts(10).delay(d))
        })
        .collect();
    for chunk in jobs.chunks(500) {
        lexiflow_queue::enqueue_many(tx, chunk.to_vec()).await.map_err(|e| match e {
            lexiflow_queue::QueueError::Db(d) => d,
            other => sea_orm::DbErr::Custom(other.to_string()),
        })?;
    }
    Ok(())
}

/// Whether `u` may change `m` in LexiFlow (the rule of `ops`: a case event by whoever may edit
/// the case, a firm event by its creator or assignee, or an admin or partner).
async fn may_edit(db: &impl ConnectionTrait, u: &user::Model, m: &event::Model) -> Result<bool, SyncError> {
    if u.status != user::UserStatus::Active || !u.role.may_edit_cases() {
        return Ok(false);
    }
    if u.role.sees_all_cases() {
        return Ok(true);
    }
    match m.case_id {
        Some(case) => {
            let role =
                super::ops::team_role(db, case, u.id).await.map_err(|e| SyncError::Invalid(e.message.to_string()))?;
            Ok(role.is_some_and(|r| r != crate::cases::model::TeamRole::Client))
        }
        None => Ok(m.created_by == u.id || m.assignee_id == Some(u.id)),
    }
}

/// Court dates and deadlines: LexiFlow's side always wins.
fn protected(t: super::model::event::EventType) -> bool {
    use super::model::event::EventType::*;
    matches!(t, Deadline | CourtDate | Filing | Hearing)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventPayload {
    event_id: Uuid,
    version: i32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionPayload {
    connection_id: Uuid,
}

impl Syncer {
    fn api<'a>(
        &'a self,
        c: &'a connection::Model,
        token: &'a (dyn Fn(bool) -> futures_util::future::BoxFuture<'a, Result<String, SyncError>> + Send + Sync),
    ) -> Result<Api<'a>, SyncError> {
        let provider = Provider::parse(&c.provider).ok_or_else(|| SyncError::Invalid("unknown provider".into()))?;
        let settings =
            self.settings(provider).ok_or_else(|| SyncError::Invalid(format!("{} is not configured", c.provider)))?;
        Ok(Api { outbound: &self.outbound, provider, base: &settings.api_base, token })
    }

    /// The event as it is pushed, and a digest of the attendees it names (kept on each link,
    /// so a revalidation sends a copy again only when that list changed).
    async fn outgoing(&self, m: &event::Model) -> Result<(Outgoing, String), SyncError> {
        let attendees = self.shown_attendees(m).await?;
        let named: Vec<String> = attendees.iter().map(|(mail, name)| format!("{mail}\u{1f}{name:?}")).collect();
        let digest = crate::auth::tokens::sha256_hex(named.join("\u{1e}").as_bytes());
        let (start, end) = match (m.all_day, m.start_date, m.end_date) {
            (true, Some(first), Some(last)) => (When::Day(first), When::Day(last.succ_opt().unwrap_or(last))),
            _ => (When::At(m.starts_at), When::At(m.ends_at)),
        };
        let out = Outgoing {
            lexiflow_id: m.id,
            title: m.title.clone(),
            description: m.description.clone(),
            location: m.location.clone(),
            start,
            end,
            time_zone: m.time_zone.clone(),
            attendees,
            reminders: serde_json::from_str(&m.reminders).unwrap_or_default(),
        };
        Ok((out, digest))
    }

    /// The attendees a copy of `m` names. Google puts a copy of an event in each guest's
    /// calendar, so only those who may see the event now are named (the push's own rule, `reminders::sees`: a sealed docket entry's event names
    /// only admins and grant holders, a restricted one no client); addresses outside the firm
    /// only when the event's docket entry is neither sealed nor restricted.
    async fn shown_attendees(&self, m: &event::Model) -> Result<Vec<(String, Option<String>)>, SyncError> {
        let invalid = |e: ApiError| SyncError::Invalid(e.message.to_string());
        let people = attendee::Entity::find()
            .filter(attendee::Column::EventId.eq(m.id))
            .order_by_asc(attendee::Column::Position)
            .all(&self.db)
            .await?;
        let ids: Vec<Uuid> = people.iter().filter_map(|a| a.user_id).collect();
        let users: std::collections::HashMap<Uuid, user::Model> = user::Entity::find()
            .filter(user::Column::Id.is_in(ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|u| (u.id, u))
            .collect();
        let confidential = match m.docket_entry_id {
            Some(e) => {
                let (sealed, restricted) = super::ops::entry_flags(&self.db, e).await.map_err(invalid)?;
                sealed || restricted
            }
            None => false,
        };
        let mut shown = Vec::with_capacity(people.len());
        for a in &people {
            let mail = match (a.user_id.and_then(|id| users.get(&id)), &a.email) {
                (Some(u), _) => super::reminders::sees(&self.db, u, m).await.map_err(invalid)?.then(|| u.email.clone()),
                (None, Some(e)) if a.user_id.is_none() && !confidential => Some(e.clone()),
                (None, _) => None,
            };
            if let Some(mail) = mail {
                shown.push((mail, a.name.clone()));
            }
        }
        Ok(shown)
    }

    /// The connections `m` belongs in: of its creator, assignee and user attendees, active,
    /// whose users may see it now.
    async fn targets(&self, m: &event::Model) -> Result<Vec<connection::Model>, SyncError> {
        if m.deleted_at.is_some() {
            return Ok(Vec::new());
        }
        let mut people = vec![m.created_by];
        people.extend(m.assignee_id);
        people.extend(
            attendee::Entity::find()
                .filter(attendee::Column::EventId.eq(m.id))
                .all(&self.db)
                .await?
                .into_iter()
                .filter_map(|a| a.user_id),
        );
        people.sort_unstable();
        people.dedup();
        let conns = connection::Entity::find()
            .filter(connection::Column::UserId.is_in(people))
            .filter(connection::Column::Status.eq("active"))
            .all(&self.db)
            .await?;
        let mut out = Vec::with_capacity(conns.len());
        for c in conns {
            let Some(u) = user::Entity::find_by_id(c.user_id).one(&self.db).await? else { continue };
            let sees =
                super::reminders::sees(&self.db, &u, m).await.map_err(|e| SyncError::Invalid(e.message.to_string()))?;
            if sees && Provider::parse(&c.provider).and_then(|p| self.settings(p)).is_some() {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Forgets where `event` went on connection `conn`.
    async fn unlink(&self, event: Uuid, conn: Uuid) -> Result<(), SyncError> {
        link::Entity::delete_many()
            .filter(link::Column::EventId.eq(event))
            .filter(link::Column::ConnectionId.eq(conn))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn save_link(
        &self,
        m: &event::Model,
        c: &connection::Model,
        r: &RemoteEvent,
        version: i32,
        attendees: Option<&str>,
    ) -> Result<(), SyncError> {
        let backend = self.db.get_database_backend();
        self.db
            .execute_raw(db::portable(
                backend,
                "INSERT INTO calendar_event_links (event_id, connection_id, remote_id, remote_etag, remote_updated_at, \
                 pushed_version, synced_at, attendees_sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (event_id, connection_id) DO UPDATE SET remote_id = excluded.remote_id, \
                 remote_etag = excluded.remote_etag, remote_updated_at = excluded.remote_updated_at, \
                 pushed_version = excluded.pushed_version, synced_at = excluded.synced_at, \
                 attendees_sent = COALESCE(excluded.attendees_sent, calendar_event_links.attendees_sent)",
                vec![
                    m.id.into(),
                    c.id.into(),
                    r.id.clone().into(),
                    r.etag.clone().into(),
                    r.updated.into(),
                    version.into(),
                    clock::now().into(),
                    attendees.map(str::to_owned).into(),
                ],
            ))
            .await?;
        Ok(())
    }

    async fn audit_conflict(
        &self,
        m: &event::Model,
        c: &connection::Model,
        kept: &str,
        what: &str,
    ) -> Result<(), SyncError> {
        let (m, c) = (m.clone(), c.clone());
        let (kept, what) = (kept.to_owned(), what.to_owned());
        let (m, c, kept, what) = (&m, &c, &kept, &what);
        let done = db::transaction(&self.db, TxOptions::write(), |tx| async move {
            let mut a = AuditEvent::new("calendar.sync.conflict", "calendar_event", Some(m.id.to_string())).changes(
                serde_json::json!({ "provider": c.provider, "kept": kept, "what": what, "userId": c.user_id }),
            );
            if let Some(case) = m.case_id {
                a = a.case(case);
            }
            audit::record(&tx, FirmId(m.firm_id), &Actor::system(), a).await?;
            Ok::<_, ApiError>(())
        })
        .await
        .map_err(|e| SyncError::Invalid(e.message.to_string()))?;
        drop(done.events);
        tracing::info!(event_id = %m.id, provider = %c.provider, kept, what, "calendar sync conflict resolved");
        Ok(())
    }

    /// Makes `out` exist in the calendar once: a copy already there (made by an attempt whose
    /// answer was lost, or by an earlier connection to the same calendar) is overwritten with
    /// LexiFlow's version instead of a second copy being created.
    async fn create_once(api: &Api<'_>, out: &Outgoing) -> Result<RemoteEvent, SyncError> {
        match api.find(out.lexiflow_id).await? {
            Some(found) => match api.update(&found.id, None, out).await {
                Err(SyncError::Gone) => api.create(out).await,
                other => other,
            },
            None => api.create(out).await,
        }
    }

    /// Sends `m` (as `out`, naming the attendees `digest` stands for) to `c` (create, or update
    /// with the stored ETag), resolving a conflict by the rule. A copy already at this version is
    /// sent again only by a revalidation, to Google (Graph copies name no attendees), when the
    /// attendees it would name are not those it was last sent with.
    async fn push_one(
        &self,
        m: &event::Model,
        c: &connection::Model,
        l: Option<&link::Model>,
        (out, digest): (&Outgoing, &str),
        revalidating: bool,
    ) -> Result<(), SyncError> {
        let resend = |l: &link::Model| {
            revalidating && c.provider == Provider::Google.as_str() && l.attendees_sent.as_deref() != Some(digest)
        };
        if l.is_some_and(|l| l.pushed_version > m.version || (l.pushed_version == m.version && !resend(l))) {
            return Ok(());
        }
        let sent = Some(digest);
        let cid = c.id;
        let token = move |force: bool| -> futures_util::future::BoxFuture<'_, Result<String, SyncError>> {
            Box::pin(self.access_token(cid, force))
        };
        let api = self.api(c, &token)?;
        let Some(l) = l else {
            let r = Self::create_once(&api, out).await?;
            return self.save_link(m, c, &r, m.version, sent).await;
        };
        match api.update(&l.remote_id, l.remote_etag.as_deref(), out).await {
            Ok(r) => self.save_link(m, c, &r, m.version, sent).await,
            Err(SyncError::Gone) => {
                let r = Self::create_once(&api, out).await?;
                self.save_link(m, c, &r, m.version, sent).await?;
                self.audit_conflict(m, c, "lexiflow", "deleted at the provider while changed in LexiFlow: re-created")
                    .await
            }
            Err(SyncError::Precondition) => {
                // Changed on both sides.
                let remote = api.get(&l.remote_id).await?;
                let remote_newer = remote.as_ref().and_then(|r| r.updated).is_some_and(|t| t > m.updated_at);
                let owner_may_edit = match user::Entity::find_by_id(c.user_id).one(&self.db).await? {
                    Some(u) => may_edit(&self.db, &u, m).await?,
                    None => false,
                };
                match remote {
                    Some(r) if remote_newer && owner_may_edit && !protected(m.event_type) => {
                        let applied = self.apply_remote(m, &r).await?;
                        self.save_link(m, c, &r, applied, None).await?;
                        self.audit_conflict(m, c, "provider", "changed on both sides; the provider's change is later")
                            .await
                    }
                    _ => {
                        let r = api.update(&l.remote_id, None, out).await?;
                        self.save_link(m, c, &r, m.version, sent).await?;
                        let why = if protected(m.event_type) {
                            "changed on both sides; a court date or deadline keeps LexiFlow's version"
                        } else {
                            "changed on both sides; LexiFlow's change is later"
                        };
                        self.audit_conflict(m, c, "lexiflow", why).await
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The `calendar.push` job.
    pub async fn push(&self, payload: serde_json::Value) -> Result<(), JobError> {
        let p: EventPayload = serde_json::from_value(payload).map_err(|e| JobError::Invalid(e.to_string()))?;
        self.push_event(p.event_id, Some(p.version)).await.map_err(Into::into)
    }

    /// The `calendar.revalidate` job: every linked event of its scope is pushed again as it is
    /// now, which takes it out of the calendars of users who may no longer see it (the push's
    /// own rule) and changes nothing where it still belongs (already at that version), unless
    /// its copies would now leave out an attendee: then they are sent again.
    pub async fn revalidate(&self, payload: serde_json::Value) -> Result<(), JobError> {
        let s: Scope = serde_json::from_value(payload).map_err(|e| JobError::Invalid(e.to_string()))?;
        let mut linked = link::Entity::find().select_only().column(link::Column::EventId);
        if let Some(user) = s.user_id {
            let theirs = connection::Entity::find()
                .select_only()
                .column(connection::Column::Id)
                .filter(connection::Column::UserId.eq(user))
                .into_query();
            linked = linked.filter(link::Column::ConnectionId.in_subquery(theirs));
        }
        let mut q = event::Entity::find()
            .select_only()
            .column(event::Column::Id)
            .filter(event::Column::FirmId.eq(s.firm_id))
            .filter(event::Column::Id.in_subquery(linked.into_query()));
        if let Some(case) = s.case_id {
            q = q.filter(event::Column::CaseId.eq(case));
        }
        if let Some(entry) = s.docket_entry_id {
            q = q.filter(event::Column::DocketEntryId.eq(entry));
        }
        let mut first_error = None;
        let mut after = Uuid::nil();
        loop {
            let page = q.clone().filter(event::Column::Id.gt(after)).order_by_asc(event::Column::Id).limit(500);
            let page: Vec<Uuid> = page.into_tuple().all(&self.db).await?;
            let Some(last) = page.last() else { break };
            after = *last;
            for id in page {
                if let Err(e) = self.push_event(id, None).await {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Sends event `id` as it is now wherever it belongs, and takes it out of where it no longer
    /// does; nothing when it has moved past `version` (a later version's job does it).
    async fn push_event(&self, id: Uuid, version: Option<i32>) -> Result<(), SyncError> {
        // Pushes and revalidations of one event take turns in this process (two at once could
        // each find no copy and each create one); the event is read under the lock.
        let _turn = stripe(&EVENT_LOCKS, id).lock().await;
        let Some(m) = event::Entity::find_by_id(id).one(&self.db).await? else { return Ok(()) };
        if version.is_some_and(|v| m.version > v) {
            return Ok(());
        }
        let m = &m;
        let targets = self.targets(m).await?;
        // The copy is made once for every target. A revalidation sends it again where the
        // attendees it names changed: one who lost sight of the event would otherwise stay a
        // guest of the others' copies (and keep Google's copy in their own calendar) until the
        // event next changes.
        let out = if targets.is_empty() { None } else { Some(self.outgoing(m).await?) };
        let links = link::Entity::find().filter(link::Column::EventId.eq(m.id)).all(&self.db).await?;
        let mut first_error = None;
        for c in &targets {
            let Some((out, digest)) = &out else { break };
            let l = links.iter().find(|l| l.connection_id == c.id);
            if let Err(e) = self.push_one(m, c, l, (out, digest), version.is_none()).await {
                self.note_error(c.id, &e).await;
                first_error.get_or_insert(e);
            }
        }
        // Where it no longer belongs: taken out of that calendar.
        for l in links.iter().filter(|l| !targets.iter().any(|c| c.id == l.connection_id)) {
            if let Some(c) = connection::Entity::find_by_id(l.connection_id).one(&self.db).await?
                && c.status == "active"
            {
                let cid = c.id;
                let token = move |force: bool| -> futures_util::future::BoxFuture<'_, Result<String, SyncError>> {
                    Box::pin(self.access_token(cid, force))
                };
                let removed = match self.api(&c, &token) {
                    Ok(api) => api.delete(&l.remote_id).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = removed {
                    self.note_error(c.id, &e).await;
                    first_error.get_or_insert(e);
                    continue;
                }
            }
            self.unlink(l.event_id, l.connection_id).await?;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Takes a provider's change into the LexiFlow event (audited, announced); its new version.
    async fn apply_remote(&self, m: &event::Model, r: &RemoteEvent) -> Result<i32, SyncError> {
        let mut next = m.clone();
        if let Some(t) = &r.title {
            next.title = crate::input::plain(t).chars().take(300).collect();
        }
        next.description = r.description.as_deref().map(|d| crate::input::plain(d).chars().take(10_000).collect());
        next.location = r.location.as_deref().map(|l| crate::input::plain(l).chars().take(500).collect());
        let tz: chrono_tz::Tz = m.time_zone.parse().unwrap_or(chrono_tz::Tz::UTC);
        match (r.start, r.end) {
            (Some(When::At(s)), Some(When::At(e))) if e >= s => {
                (next.all_day, next.starts_at, next.ends_at, next.start_date, next.end_date) =
                    (false, s, e, None, None);
            }
            (Some(When::Day(s)), Some(When::Day(e))) if e > s => {
                let last = e.pred_opt().unwrap_or(s);
                if let (Some(a), Some(b)) = (super::ops::start_of(s, tz), super::ops::start_of(e, tz)) {
                    (next.all_day, next.starts_at, next.ends_at, next.start_date, next.end_date) =
                        (true, a, b, Some(s), Some(last));
                }
            }
            _ => {}
        }
        if next.starts_at != m.starts_at || next.ends_at != m.ends_at {
            next.recompute = false;
        }
        next.version = m.version + 1;
        next.updated_at = clock::now();
        let (m, next) = (m, &next);
        let done = db::transaction(&self.db, TxOptions::write(), |tx| async move {
            let tx = &tx;
            let n = event::Entity::update_many()
                .set(sea_orm::ActiveModelTrait::reset_all(event::ActiveModel::from(next.clone())))
                .filter(event::Column::Id.eq(m.id))
                .filter(event::Column::Version.eq(m.version))
                .exec(tx)
                .await?
                .rows_affected;
            if n != 1 {
                return Err(ApiError::new(ErrorCode::PreconditionFailed, "the event changed meanwhile"));
            }
            super::reminders::schedule(tx, next).await?;
            let people = super::ops::attendees_of(tx, &[m.id]).await?.remove(&m.id).unwrap_or_default();
            let flags = super::ops::confidentiality(tx, next).await?;
            let before = super::ops::view(m.clone(), people.clone());
            let v = super::ops::view(next.clone(), people);
            let actor = Actor::system();
            let mut a = AuditEvent::new("calendar.sync.pull", "calendar_event", Some(m.id.to_string()))
                .changes(audit::diff(&audit::json(&before), &audit::json(&v)));
            if let Some(c) = m.case_id {
                a = a.case(c);
            }
            audit::record(tx, FirmId(m.firm_id), &actor, a).await?;
            tx.record(super::ops::change_event(DomainType::CalendarEventUpdated, FirmId(m.firm_id), &actor, &v, flags));
            changed(tx, next).await?;
            Ok::<_, ApiError>(())
        })
        .await;
        match done {
            Ok(d) => {
                drop(d.events);
                outbox::sequence_firm(&self.db, m.firm_id).await?;
                Ok(next.version)
            }
            Err(e) if e.code == ErrorCode::PreconditionFailed => Err(SyncError::Precondition),
            Err(e) => Err(SyncError::Invalid(e.message.to_string())),
        }
    }

    /// Deletes the LexiFlow event a provider deleted (only for events that are not court dates).
    async fn delete_local(&self, m: &event::Model) -> Result<(), SyncError> {
        let done = db::transaction(&self.db, TxOptions::write(), |tx| async move {
            let tx = &tx;
            let n = event::Entity::update_many()
                .col_expr(event::Column::DeletedAt, Expr::value(clock::now()))
                .col_expr(event::Column::Version, Expr::col(event::Column::Version).add(1))
                .filter(event::Column::Id.eq(m.id))
                .filter(event::Column::Version.eq(m.version))
                .exec(tx)
                .await?
                .rows_affected;
            if n != 1 {
                return Ok::<_, ApiError>(());
            }
            let people = super::ops::attendees_of(tx, &[m.id]).await?.remove(&m.id).unwrap_or_default();
            let flags = super::ops::confidentiality(tx, m).await?;
            let v = super::ops::view(m.clone(), people);
            let actor = Actor::system();
            let mut a = AuditEvent::new("calendar.sync.pull", "calendar_event", Some(m.id.to_string()))
                .changes(serde_json::json!({ "deleted": { "old": false, "new": true }, "by": "provider" }));
            if let Some(c) = m.case_id {
                a = a.case(c);
            }
            audit::record(tx, FirmId(m.firm_id), &actor, a).await?;
            tx.record(super::ops::change_event(DomainType::CalendarEventDeleted, FirmId(m.firm_id), &actor, &v, flags));
            let mut gone = m.clone();
            gone.version += 1;
            gone.deleted_at = Some(clock::now());
            changed(tx, &gone).await?;
            Ok(())
        })
        .await
        .map_err(|e| SyncError::Invalid(e.message.to_string()))?;
        drop(done.events);
        outbox::sequence_firm(&self.db, m.firm_id).await?;
        Ok(())
    }

    /// The `calendar.pull` job.
    pub async fn pull(&self, payload: serde_json::Value) -> Result<(), JobError> {
        let p: ConnectionPayload = serde_json::from_value(payload).map_err(|e| JobError::Invalid(e.to_string()))?;
        let Some(c) = connection::Entity::find_by_id(p.connection_id).one(&self.db).await? else { return Ok(()) };
        if c.status != "active" {
            return Ok(());
        }
        match self.pull_connection(&c).await {
            Ok(n) => {
                connection::Entity::update_many()
                    .col_expr(connection::Column::LastSyncedAt, Expr::value(clock::now()))
                    .col_expr(connection::Column::LastError, Expr::value(Option::<String>::None))
                    .filter(connection::Column::Id.eq(c.id))
                    .exec(&self.db)
                    .await?;
                if n > 0 {
                    tracing::info!(connection_id = %c.id, provider = %c.provider, changes = n, "calendar changes pulled");
                }
                Ok(())
            }
            // A revoked grant is the user's to renew; retrying will not help.
            Err(SyncError::Revoked) => Ok(()),
            Err(e) => {
                self.note_error(c.id, &e).await;
                Err(e.into())
            }
        }
    }

    async fn pull_connection(&self, c: &connection::Model) -> Result<usize, SyncError> {
        let cid = c.id;
        let token = move |force: bool| -> futures_util::future::BoxFuture<'_, Result<String, SyncError>> {
            Box::pin(self.access_token(cid, force))
        };
        let api = self.api(c, &token)?;
        let (changes, cursor) = match api.changes(c.sync_cursor.as_deref()).await {
            Err(SyncError::CursorExpired) => {
                tracing::info!(connection_id = %c.id, "calendar sync cursor expired: full listing");
                metrics::counter!("lexiflow_calendar_full_syncs_total", "provider" => api.provider.as_str())
                    .increment(1);
                api.changes(None).await?
            }
            other => other?,
        };
        let mut applied = 0;
        for r in &changes {
            let Some(l) = link::Entity::find()
                .filter(link::Column::ConnectionId.eq(c.id))
                .filter(link::Column::RemoteId.eq(r.id.clone()))
                .one(&self.db)
                .await?
            else {
                continue;
            };
            // Our own write coming back.
            if r.etag.is_some() && r.etag == l.remote_etag && !r.deleted {
                continue;
            }
            let Some(m) = event::Entity::find_by_id(l.event_id).one(&self.db).await? else {
                link::Entity::delete_many()
                    .filter(link::Column::ConnectionId.eq(c.id))
                    .filter(link::Column::RemoteId.eq(r.id.clone()))
                    .exec(&self.db)
                    .await?;
                continue;
            };
            // The calendar's owner: no longer seeing the event, their copy goes; not allowed to
            // change it, their change is undone as for a court date.
            let owner = user::Entity::find_by_id(c.user_id).one(&self.db).await?;
            let sees = match &owner {
                Some(u) => super::reminders::sees(&self.db, u, &m)
                    .await
                    .map_err(|e| SyncError::Invalid(e.message.to_string()))?,
                None => false,
            };
            if !sees && m.deleted_at.is_none() {
                if !r.deleted {
                    api.delete(&r.id).await?;
                }
                self.unlink(m.id, c.id).await?;
                continue;
            }
            let may_edit = match &owner {
                Some(u) => may_edit(&self.db, u, &m).await?,
                None => false,
            };
            let keep_ours = protected(m.event_type) || !may_edit;
            let local_changed = m.version > l.pushed_version;
            if r.deleted {
                if m.deleted_at.is_some() {
                    self.unlink(m.id, c.id).await?;
                } else if keep_ours || local_changed {
                    let (out, digest) = self.outgoing(&m).await?;
                    let created = Self::create_once(&api, &out).await?;
                    self.save_link(&m, c, &created, m.version, Some(&digest)).await?;
                    self.audit_conflict(&m, c, "lexiflow", "deleted at the provider: re-created").await?;
                } else {
                    self.delete_local(&m).await?;
                    self.unlink(m.id, c.id).await?;
                }
                applied += 1;
                continue;
            }
            if m.deleted_at.is_some() {
                // Deleted here; the push job takes it out of that calendar.
                continue;
            }
            let remote_newer = r.updated.is_some_and(|t| t > m.updated_at);
            if keep_ours || (local_changed && !remote_newer) {
                let (out, digest) = self.outgoing(&m).await?;
                let w = api.update(&r.id, None, &out).await?;
                self.save_link(&m, c, &w, m.version, Some(&digest)).await?;
                let why = if protected(m.event_type) {
                    "changed at the provider; a court date or deadline keeps LexiFlow's version"
                } else if !may_edit {
                    "changed at the provider by a user who may not change this event; undone"
                } else {
                    "changed on both sides; LexiFlow's change is later"
                };
                self.audit_conflict(&m, c, "lexiflow", why).await?;
            } else {
                match self.apply_remote(&m, r).await {
                    Ok(v) => {
                        self.save_link(&m, c, r, v, None).await?;
                        if local_changed {
                            self.audit_conflict(
                                &m,
                                c,
                                "provider",
                                "changed on both sides; the provider's change is later",
                            )
                            .await?;
                        }
                    }
                    // Changed here meanwhile: the next pull sees it again.
                    Err(SyncError::Precondition) => continue,
                    Err(e) => return Err(e),
                }
            }
            applied += 1;
        }
        connection::Entity::update_many()
            .col_expr(connection::Column::SyncCursor, Expr::value(cursor))
            .filter(connection::Column::Id.eq(c.id))
            .exec(&self.db)
            .await?;
        Ok(applied)
    }

    /// The `calendar.backfill` job: pushes the connected user's events from a month ago on.
    pub async fn backfill(&self, payload: serde_json::Value) -> Result<(), JobError> {
        let p: ConnectionPayload = serde_json::from_value(payload).map_err(|e| JobError::Invalid(e.to_string()))?;
        let Some(c) = connection::Entity::find_by_id(p.connection_id).one(&self.db).await? else { return Ok(()) };
        let since = clock::now() - chrono::Duration::days(30);
        let me = c.user_id;
        let attending = sea_orm::sea_query::Query::select()
            .column(attendee::Column::EventId)
            .from(attendee::Entity)
            .and_where(attendee::Column::UserId.eq(me))
            .to_owned();
        let events = event::Entity::find()
            .filter(event::Column::FirmId.eq(c.firm_id))
            .filter(event::Column::DeletedAt.is_null())
            .filter(event::Column::EndsAt.gte(since))
            .filter(
                sea_orm::Condition::any()
                    .add(event::Column::CreatedBy.eq(me))
                    .add(event::Column::AssigneeId.eq(me))
                    .add(event::Column::Id.in_subquery(attending)),
            )
            .order_by_asc(event::Column::StartsAt)
            .limit(5_000)
            .all(&self.db)
            .await?;
        let jobs: Vec<NewJob> = events
            .iter()
            .map(|m| {
                NewJob::new(PUSH, serde_json::json!({ "eventId": m.id, "version": m.version }))
                    .queue(QUEUE)
                    .max_attempts(10)
                    .unique_key(format!("calendar-push:{}:{}", m.id, m.version))
            })
            .collect();
        for chunk in jobs.chunks(500) {
            lexiflow_queue::enqueue_many(&self.db, chunk.to_vec())
                .await
                .map_err(|e| JobError::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// The `calendar.sync` job: a pull for every active connection.
    pub async fn sync_all(&self) -> Result<(), JobError> {
        let ids: Vec<Uuid> = connection::Entity::find()
            .select_only()
            .column(connection::Column::Id)
            .filter(connection::Column::Status.eq("active"))
            .into_tuple()
            .all(&self.db)
            .await?;
        let jobs: Vec<NewJob> = ids
            .iter()
            .map(|id| {
                NewJob::new(PULL, serde_json::json!({ "connectionId": id }))
                    .queue(QUEUE)
                    .max_attempts(8)
                    .unique_key(format!("calendar-pull:{id}"))
            })
            .collect();
        for chunk in jobs.chunks(500) {
            lexiflow_queue::enqueue_many(&self.db, chunk.to_vec())
                .await
                .map_err(|e| JobError::Invalid(e.to_string()))?;
        }
        Ok(())
    }
}
