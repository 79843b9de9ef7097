//! Account operations: register, login, refresh, logout, sessions.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Expr, OnConflict},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    Principal,
    model::{login_attempt, refresh_token, session},
    password::password_problem,
    tokens::{hash_refresh_token, new_refresh_token},
};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    clock,
    db::{Outcome, Tx, TxOptions},
    events::{DomainEvent, EventType},
    firms,
    http::error::{ApiError, ApiResult, ErrorCode},
    ids::{FirmId, SessionId, UserId},
    input::{Fields, looks_like_email},
    users::{
        UserView,
        model::{self as user, Role, UserStatus},
    },
};

/// Where a login came from, kept on the session for the user's session list.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// `POST /auth/register` body. A `role` here is an unknown field and refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterInput {
    pub firm_name: String,
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
}

/// What register, login and refresh answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthTokens {
    pub user: UserView,
    pub access_token: String,
    pub refresh_token: String,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
    pub token_type: &'static str,
}

/// A session as its owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: SessionId,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// True for the session the request was made with.
    pub current: bool,
}

/// Lower-cases and checks an e-mail address used for login.
pub fn normalize_email(field: &str, email: &str) -> Result<String, ApiError> {
    let e = crate::input::plain(email).trim().to_lowercase();
    if looks_like_email(&e) { Ok(e) } else { Err(ApiError::field(field, "must be an e-mail address")) }
}

/// Creates a firm and its first user, an admin, and logs them in.
pub async fn register(app: &App, input: RegisterInput, client: ClientInfo) -> ApiResult<AuthTokens> {
    let mut f = Fields::default();
    let firm_name = f.text("firmName", &input.firm_name, 200);
    let first_name = f.text("firstName", &input.first_name, 100);
    let last_name = f.text("lastName", &input.last_name, 100);
    let email = crate::input::plain(&input.email).trim().to_lowercase();
    if !looks_like_email(&email) {
        f.error("email", "must be an e-mail address");
    }
    if let Some(problem) = password_problem(&input.password) {
        f.error("password", problem);
    }
    f.finish()?;
    let hash = app.passwords.hash(input.password).await?;

    let now = clock::now();
    let (firm_name, email, hash, first_name, last_name) = (&firm_name, &email, &hash, &first_name, &last_name);
    let client = &client;
    let tokens = app
        .write(TxOptions::write(), |tx| async move {
            let tx = &tx;
            let firm = firms::ActiveModel {
                id: Set(Uuid::now_v7()),
                name: Set(firm_name.clone()),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(tx)
            .await?;
            let u = user::ActiveModel {
                id: Set(Uuid::now_v7()),
                firm_id: Set(firm.id),
                email: Set(email.clone()),
                password_hash: Set(hash.clone()),
                first_name: Set(first_name.clone()),
                last_name: Set(last_name.clone()),
                role: Set(Role::Admin),
                status: Set(UserStatus::Active),
                version: Set(1),
                last_login_at: Set(Some(now)),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(tx)
            .await?;
            let actor = Actor::account(u.id, u.role);
            let view = UserView::from(u.clone());
            audit::record(
                tx,
                FirmId(firm.id),
                &actor,
                AuditEvent::new("firm.register", "firm", Some(firm.id.to_string()))
                    .changes(serde_json::json!({ "name": { "old": null, "new": firm.name } })),
            )
            .await?;
            let user_json = serde_json::to_value(&view).map_err(ApiError::internal)?;
            audit::record(
                tx,
                FirmId(firm.id),
                &actor,
                AuditEvent::new("user.create", "user", Some(u.id.to_string())).created_fields(&user_json),
            )
            .await?;
            start_session(app, tx, &u, client.clone()).await
        })
        .await?;
    tracing::info!(firm_id = %tokens.user.firm_id, user_id = %tokens.user.id, "firm registered");
    Ok(tokens)
}

fn invalid_credentials() -> ApiError {
    ApiError::new(ErrorCode::AuthInvalidCredentials, ErrorCode::AuthInvalidCredentials.default_message())
}

/// The key failed logins of an account are counted under: the address as typed, normalised
/// and bounded. This count, across every client address, only slows attempts down; it never
/// locks (so nobody can keep a user out by failing on purpose).
pub fn login_key(email: &str) -> String {
    crate::input::plain(email).trim().to_lowercase().chars().take(320).collect()
}

/// The key of one client address's failures against one account: `<login key>|<address>`
/// (`-` when the address is unknown). This count locks, after `LOGIN_LOCKOUT_THRESHOLD`
/// failures, that address's attempts on that account — not the account.
pub fn source_key(login_key: &str, ip: Option<&str>) -> String {
    format!("{login_key}|{}", ip.unwrap_or("-"))
}

/// Checks e-mail and password; a wrong e-mail, a wrong password, a suspended account and a
/// locked one get the same answer after the same work.
///
/// Brute-force defence:
/// - per account, across every client address: after `slowdown_after` failures in a row
///   every attempt on the account waits first (doubling, capped at `slowdown_max`), so
///   guessing from many addresses stays slow;
/// - per account and client address: after `threshold` failures that address is locked out
///   of that account for `duration`, during which even the right password is refused from
///   it. Other addresses — the account's owner among them — are not locked.
///
/// Success clears both counts. A failure is counted in a transaction that commits and then
/// refuses ([`crate::db::Outcome::CommitThenFail`]).
pub async fn login(app: &App, email: &str, password: String, client: ClientInfo) -> ApiResult<AuthTokens> {
    let key = login_key(email);
    let source = source_key(&key, client.ip.as_deref());
    let lock = app.config.security.lockout;
    let now = clock::now();
    let attempts = login_attempt::Entity::find()
        .filter(login_attempt::Column::Email.is_in([key.clone(), source.clone()]))
        .all(&app.db)
        .await?;
    let locked = attempts.iter().find(|a| a.email == source).and_then(|a| a.locked_until).is_some_and(|t| t > now);
    let failures =
        attempts.iter().find(|a| a.email == key).map(|a| u32::try_from(a.failures).unwrap_or(0)).unwrap_or(0);
    if failures >= lock.slowdown_after {
        let doublings = (failures - lock.slowdown_after).min(16);
        let wait = lock.slowdown_base.saturating_mul(1 << doublings).min(lock.slowdown_max);
        tokio::time::sleep(wait).await;
    }
    let found = user::Entity::find().filter(user::Column::Email.eq(key.as_str())).one(&app.db).await?;
    let ok = app.passwords.verify(password, found.as_ref().map(|u| u.password_hash.clone())).await?;
    let u = match found {
        Some(u) if ok && !locked && u.status == UserStatus::Active => u,
        found => {
            let reason = if locked { "locked" } else { "invalid_credentials" };
            metrics::counter!("lexiflow_auth_failures_total", "reason" => reason).increment(1);
            tracing::info!(reason, "login refused");
            if locked {
                return Err(invalid_credentials());
            }
            let (key, source, account) = (&key, &source, &found);
            return app
                .write_outcome(TxOptions::write(), |tx| async move {
                    let tx = &tx;
                    if record_failure(app, tx, key, source, account.as_ref()).await? {
                        tracing::warn!(
                            user_id = account.as_ref().map(|u| u.id.to_string()),
                            "login locked for one client address after repeated failures"
                        );
                    }
                    Ok(Outcome::CommitThenFail(invalid_credentials()))
                })
                .await;
        }
    };
    let keys = [key, source];
    let (u, had_attempts, keys, client) = (&u, !attempts.is_empty(), &keys, &client);
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        user::Entity::update_many()
            .col_expr(user::Column::LastLoginAt, Expr::value(now))
            .filter(user::Column::Id.eq(u.id))
            .exec(tx)
            .await?;
        if had_attempts {
            login_attempt::Entity::delete_many()
                .filter(login_attempt::Column::Email.is_in(keys.iter().cloned()))
                .exec(tx)
                .await?;
        }
        start_session(app, tx, u, client.clone()).await
    })
    .await
}

/// Counts a failed login under the account's key and the address's key; returns true when
/// this failure locked the address out of the account.
async fn record_failure(app: &App, tx: &Tx, key: &str, source: &str, account: Option<&user::Model>) -> ApiResult<bool> {
    use sea_orm::sea_query::ExprTrait as _;
    let lock = app.config.security.lockout;
    let now = clock::now();
    for k in [key, source] {
        login_attempt::Entity::insert(login_attempt::ActiveModel {
            email: Set(k.to_owned()),
            failures: Set(1),
            locked_until: Set(None),
            last_failure_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(login_attempt::Column::Email)
                .value(
                    login_attempt::Column::Failures,
                    // Qualified: inside ON CONFLICT, PostgreSQL would find `failures` ambiguous.
                    Expr::col((login_attempt::Entity, login_attempt::Column::Failures)).add(1),
                )
                .value(login_attempt::Column::LastFailureAt, Expr::value(now))
                .to_owned(),
        )
        .exec_without_returning(tx)
        .await?;
    }
    let until = now + chrono::Duration::from_std(lock.duration).map_err(ApiError::internal)?;
    let locked_now = login_attempt::Entity::update_many()
        .col_expr(login_attempt::Column::LockedUntil, Expr::value(until))
        .col_expr(login_attempt::Column::Failures, Expr::value(0))
        .filter(login_attempt::Column::Email.eq(source))
        .filter(login_attempt::Column::Failures.gte(lock.threshold as i32))
        .exec(tx)
        .await?
        .rows_affected
        == 1;
    // Failures against an existing account go into its firm's trail; an address with no
    // account belongs to no firm, so it is only counted (and logged).
    if let Some(u) = account {
        let actor = Actor::account(u.id, u.role);
        let firm = FirmId(u.firm_id);
        audit::record(tx, firm, &actor, AuditEvent::new("auth.login_failed", "user", Some(u.id.to_string()))).await?;
        if locked_now {
            let change = serde_json::json!({ "lockedUntil": { "old": null, "new": until } });
            audit::record(
                tx,
                firm,
                &Actor::system(),
                AuditEvent::new("auth.locked", "user", Some(u.id.to_string())).changes(change),
            )
            .await?;
        }
    }
    Ok(locked_now)
}

/// Opens a session for `u` and issues its first token pair.
async fn start_session(
    app: &App,
    tx: &impl ConnectionTrait,
    u: &user::Model,
    client: ClientInfo,
) -> ApiResult<AuthTokens> {
    let now = clock::now();
    let expires = now + chrono::Duration::from_std(app.tokens.refresh_ttl).map_err(ApiError::internal)?;
    let s = session::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(u.id),
        firm_id: Set(u.firm_id),
        user_agent: Set(client.user_agent.map(|ua| crate::input::plain(&ua).chars().take(512).collect())),
        ip: Set(client.ip),
        created_at: Set(now),
        last_seen_at: Set(now),
        expires_at: Set(expires),
        revoked_at: Set(None),
        revoked_reason: Set(None),
    }
    .insert(tx)
    .await?;
    audit::record(
        tx,
        FirmId(u.firm_id),
        &Actor::account(u.id, u.role),
        AuditEvent::new("auth.login", "session", Some(s.id.to_string())),
    )
    .await?;
    issue_pair(app, tx, u, &s).await
}

async fn issue_pair(
    app: &App,
    tx: &impl ConnectionTrait,
    u: &user::Model,
    s: &session::Model,
) -> ApiResult<AuthTokens> {
    let refresh = new_refresh_token()?;
    refresh_token::ActiveModel {
        token_hash: Set(hash_refresh_token(&refresh)),
        session_id: Set(s.id),
        created_at: Set(clock::now()),
        used_at: Set(None),
        expires_at: Set(s.expires_at),
    }
    .insert(tx)
    .await?;
    let access = app.tokens.issue(UserId(u.id), FirmId(u.firm_id), u.role, SessionId(s.id))?;
    Ok(AuthTokens {
        user: UserView::from(u.clone()),
        access_token: access,
        refresh_token: refresh,
        expires_in: app.tokens.access_ttl.as_secs(),
        token_type: "Bearer",
    })
}

fn refresh_refused() -> ApiError {
    ApiError::new(ErrorCode::AuthTokenInvalid, "the refresh token is not valid; log in again")
}

/// Rotates a refresh token. A token that was already rotated means it leaked (or a client
/// raced itself): the whole session is revoked, so neither copy keeps working.
///
/// The token is looked up before any write transaction: a caller without a live token (an
/// anonymous guess) never takes the database's write lock.
pub async fn refresh(app: &App, token: &str) -> ApiResult<AuthTokens> {
    let hash = hash_refresh_token(token);
    let now = clock::now();
    let Some(rt) = refresh_token::Entity::find_by_id(hash.clone()).one(&app.db).await? else {
        return Err(refresh_refused());
    };
    if rt.expires_at <= now {
        return Err(refresh_refused());
    }
    let hash = &hash;
    app.write_outcome(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let Some(rt) = refresh_token::Entity::find_by_id(hash.clone()).one(tx).await? else {
            return Err(refresh_refused());
        };
        let Some(s) = session::Entity::find_by_id(rt.session_id).one(tx).await? else {
            return Err(refresh_refused());
        };
        if s.revoked_at.is_some() || s.expires_at <= now || rt.expires_at <= now {
            return Err(refresh_refused());
        }
        // Claim the token: only one caller can turn used_at from NULL to a time.
        let claimed = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
            .filter(refresh_token::Column::TokenHash.eq(hash.clone()))
            .filter(refresh_token::Column::UsedAt.is_null())
            .exec(tx)
            .await?
            .rows_affected
            == 1;
        if !claimed {
            revoke(tx, SessionId(s.id), "refresh token reused").await?;
            let change = serde_json::json!({ "reason": { "old": null, "new": "refresh token reused" } });
            let actor = Actor::system();
            audit::record(
                tx,
                FirmId(s.firm_id),
                &actor,
                AuditEvent::new("auth.session_revoked", "session", Some(s.id.to_string())).changes(change),
            )
            .await?;
            tx.record(session_revoked(FirmId(s.firm_id), &actor, s.id, s.user_id, "refresh token reused"));
            tracing::warn!(session_id = %s.id, user_id = %s.user_id, "refresh token reuse: session revoked");
            return Ok(Outcome::CommitThenFail(refresh_refused()));
        }
        let Some(u) = user::Entity::find_by_id(s.user_id).one(tx).await? else {
            return Err(refresh_refused());
        };
        if u.status != UserStatus::Active {
            return Err(refresh_refused());
        }
        session::Entity::update_many()
            .col_expr(session::Column::LastSeenAt, Expr::value(now))
            .filter(session::Column::Id.eq(s.id))
            .exec(tx)
            .await?;
        let tokens = issue_pair(app, tx, &u, &s).await?;
        audit::record(
            tx,
            FirmId(u.firm_id),
            &Actor::account(u.id, u.role),
            AuditEvent::new("auth.refresh", "session", Some(s.id.to_string())),
        )
        .await?;
        Ok(Outcome::Commit(tokens))
    })
    .await
}

/// The `session.revoked` event.
fn session_revoked(firm: FirmId, actor: &Actor, session: Uuid, user: Uuid, reason: &str) -> DomainEvent {
    DomainEvent::new(EventType::SessionRevoked, firm, actor, session)
        .data(serde_json::json!({ "sessionId": session, "userId": user, "reason": reason }))
}

/// Marks a session revoked; its access and refresh tokens stop working at once.
pub async fn revoke(tx: &impl ConnectionTrait, id: SessionId, reason: &str) -> Result<bool, sea_orm::DbErr> {
    let n = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(clock::now()))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(session::Column::Id.eq(id.0))
        .filter(session::Column::RevokedAt.is_null())
        .exec(tx)
        .await?
        .rows_affected;
    Ok(n > 0)
}

/// Revokes every live session of a user (suspension, role change).
pub async fn revoke_all_for_user(tx: &impl ConnectionTrait, user: UserId, reason: &str) -> Result<u64, sea_orm::DbErr> {
    Ok(session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(clock::now()))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(session::Column::UserId.eq(user.0))
        .filter(session::Column::RevokedAt.is_null())
        .exec(tx)
        .await?
        .rows_affected)
}

/// Ends the caller's own session.
pub async fn logout(app: &App, p: &Principal) -> ApiResult<()> {
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        revoke(tx, p.session_id, "logout").await?;
        let actor = Actor::user(p);
        audit::record(tx, p.firm_id, &actor, AuditEvent::new("auth.logout", "session", Some(p.session_id.to_string())))
            .await?;
        tx.record(session_revoked(p.firm_id, &actor, p.session_id.0, p.user_id.0, "logout"));
        Ok(())
    })
    .await
}

/// The caller's live sessions, newest first.
pub async fn list_sessions(app: &App, p: &Principal) -> ApiResult<Vec<SessionView>> {
    let now = clock::now();
    let rows = session::Entity::find()
        .filter(session::Column::UserId.eq(p.user_id.0))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now))
        .order_by_desc(session::Column::Id)
        .all(&app.db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|s| SessionView {
            current: s.id == p.session_id.0,
            id: SessionId(s.id),
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect())
}

/// Revokes one of the caller's own sessions; someone else's is "not found".
pub async fn revoke_own_session(app: &App, p: &Principal, id: SessionId) -> ApiResult<()> {
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let owned = session::Entity::find_by_id(id.0)
            .filter(session::Column::UserId.eq(p.user_id.0))
            .filter(session::Column::RevokedAt.is_null())
            .one(tx)
            .await?;
        if owned.is_none() {
            return Err(ApiError::not_found("session"));
        }
        let change = serde_json::json!({ "reason": { "old": null, "new": "revoked by user" } });
        end_session(tx, p, id, p.user_id.0, "revoked by user", change).await
    })
    .await
}

/// Ends session `id` (of `user`) for `reason` in `tx`: audited as `auth.session_revoked` with
/// `change`, raised as `session.revoked`. "Not found" when another request ended it meanwhile,
/// so one revocation makes one audit entry.
async fn end_session(
    tx: &Tx,
    p: &Principal,
    id: SessionId,
    user: Uuid,
    reason: &str,
    change: serde_json::Value,
) -> ApiResult<()> {
    if !revoke(tx, id, reason).await? {
        return Err(ApiError::not_found("session"));
    }
    let actor = Actor::user(p);
    audit::record(
        tx,
        p.firm_id,
        &actor,
        AuditEvent::new("auth.session_revoked", "session", Some(id.to_string())).changes(change),
    )
    .await?;
    tx.record(session_revoked(p.firm_id, &actor, id.0, user, reason));
    Ok(())
}

/// Shortens a session to end at `until` at the latest (the console's sign-in lasts no longer
/// than its cookie).
pub async fn cap_session(app: &App, id: SessionId, until: DateTime<Utc>) -> ApiResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::ExpiresAt, Expr::value(until))
        .filter(session::Column::Id.eq(id.0))
        .filter(session::Column::ExpiresAt.gt(until))
        .exec(&app.db)
        .await?;
    Ok(())
}

/// A live session of someone in the firm, as its admins see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirmSessionView {
    pub id: SessionId,
    pub user_id: UserId,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// True for the session the request was made with.
    pub current: bool,
}

fn require_firm_admin(p: &Principal) -> ApiResult<()> {
    if p.role == Role::Admin && p.api_key.is_none() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only a firm admin, signed in, may see or end other people's sessions"))
    }
}

/// Every live session of the firm's users, newest first (the newest 1,000).
pub async fn list_firm_sessions(app: &App, p: &Principal) -> ApiResult<Vec<FirmSessionView>> {
    require_firm_admin(p)?;
    let now = clock::now();
    let rows = session::Entity::find()
        .filter(session::Column::FirmId.eq(p.firm_id.0))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now))
        .order_by_desc(session::Column::Id)
        .limit(1_000)
        .all(&app.db)
        .await?;
    let ids: std::collections::HashSet<Uuid> = rows.iter().map(|s| s.user_id).collect();
    let users: std::collections::HashMap<Uuid, user::Model> = user::Entity::find()
        .filter(user::Column::FirmId.eq(p.firm_id.0))
        .filter(user::Column::Id.is_in(ids))
        .all(&app.db)
        .await?
        .into_iter()
        .map(|u| (u.id, u))
        .collect();
    Ok(rows
        .into_iter()
        .filter_map(|s| {
            let u = users.get(&s.user_id)?;
            Some(FirmSessionView {
                current: s.id == p.session_id.0,
                id: SessionId(s.id),
                user_id: UserId(u.id),
                email: u.email.clone(),
                first_name: u.first_name.clone(),
                last_name: u.last_name.clone(),
                role: u.role,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                expires_at: s.expires_at,
                user_agent: s.user_agent,
                ip: s.ip,
            })
        })
        .collect())
}

/// An admin ends a session of someone in the firm; a session of another firm is "not found".
pub async fn revoke_firm_session(app: &App, p: &Principal, id: SessionId) -> ApiResult<()> {
    require_firm_admin(p)?;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let found = session::Entity::find_by_id(id.0)
            .filter(session::Column::FirmId.eq(p.firm_id.0))
            .filter(session::Column::RevokedAt.is_null())
            .one(tx)
            .await?;
        let Some(s) = found else { return Err(ApiError::not_found("session")) };
        let change =
            serde_json::json!({ "reason": { "old": null, "new": "revoked by an admin" }, "userId": s.user_id });
        end_session(tx, p, id, s.user_id, "revoked by an admin", change).await
    })
    .await
}

/// The caller's own account.
pub async fn me(app: &App, p: &Principal) -> ApiResult<UserView> {
    user::Entity::find_by_id(p.user_id.0)
        .one(&app.db)
        .await?
        .map(UserView::from)
        .ok_or_else(|| ApiError::not_found("user"))
}

/// How long an address's failure record is kept after its last failure once no lock is
/// running: after a day without failures, counting starts again from zero.
pub const LOGIN_FAILURES_KEPT: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Deletes the `login_attempts` rows whose last failure is older than
/// [`LOGIN_FAILURES_KEPT`] and whose lock, if any, has ended — the rows of addresses with no
/// account would otherwise stay for ever. Returns how many were deleted. Run hourly by the
/// `auth.login_attempts.prune` job.
pub async fn prune_login_attempts(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<u64, sea_orm::DbErr> {
    let deleted = login_attempt::Entity::delete_many()
        .filter(login_attempt::Column::LastFailureAt.lt(now - LOGIN_FAILURES_KEPT))
        .filter(
            sea_orm::Condition::any()
                .add(login_attempt::Column::LockedUntil.is_null())
                .add(login_attempt::Column::LockedUntil.lte(now)),
        )
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}
