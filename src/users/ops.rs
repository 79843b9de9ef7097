//! User administration: admins add people to their firm, change roles and suspend accounts.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Expr, ExprTrait},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    UserView,
    model::{self as user, Role, UserStatus},
};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::{Principal, model::login_attempt, ops::revoke_all_for_user, password::password_problem},
    clock,
    db::TxOptions,
    events::{DomainEvent, EventType},
    http::error::{ApiError, ApiResult, ErrorCode},
    ids::UserId,
    input::{Fields, looks_like_email},
    paging::{OffsetPagination, Pagination},
};

/// `POST /users` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub password: String,
}

/// `PATCH /users/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUser {
    pub role: Option<Role>,
    pub status: Option<UserStatus>,
    /// `true` lifts a lock left by repeated failed logins, and clears the failure count.
    pub unlock: Option<bool>,
    /// The version last read; a stale one is refused with 412.
    pub version: Option<i32>,
}

/// The failed-login records of `email` from each client address (`<e-mail>|<address>`). The
/// address is a LIKE pattern with `%`, `_` and `\` escaped: an address may contain them, and
/// unescaped `%@%.%` would match every account's records in the deployment.
fn address_locks_of(email: &str) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::{Expr, LikeExpr};
    let pattern = format!("{}|%", crate::db::like_literal(email));
    Expr::col(login_attempt::Column::Email).like(LikeExpr::new(pattern).escape('\\'))
}

/// Fills `locked_until` of each view from the failed-login record of its address.
async fn with_locks(db: &impl sea_orm::ConnectionTrait, mut views: Vec<UserView>) -> ApiResult<Vec<UserView>> {
    // Locks are per account and client address (`<e-mail>|<address>`, see
    // `auth::ops::source_key`): a user shows as locked while any address is locked out.
    let now = clock::now();
    let mut any = sea_orm::Condition::any();
    for v in &views {
        any = any.add(address_locks_of(&v.email));
    }
    let locks =
        login_attempt::Entity::find().filter(any).filter(login_attempt::Column::LockedUntil.gt(now)).all(db).await?;
    for v in &mut views {
        let prefix = format!("{}|", v.email);
        v.locked_until = locks.iter().filter(|l| l.email.starts_with(&prefix)).filter_map(|l| l.locked_until).max();
    }
    Ok(views)
}

fn require_admin(p: &Principal) -> ApiResult<()> {
    if p.role == Role::Admin { Ok(()) } else { Err(ApiError::forbidden("only a firm admin may manage users")) }
}

/// Adds a user to the caller's firm.
pub async fn create(app: &App, p: &Principal, input: CreateUser) -> ApiResult<UserView> {
    require_admin(p)?;
    let mut f = Fields::default();
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
    let (email, hash, first_name, last_name, role) = (&email, &hash, &first_name, &last_name, input.role);
    let view = app
        .write(TxOptions::write(), |tx| async move {
            let tx = &tx;
            let u = user::ActiveModel {
                id: Set(Uuid::now_v7()),
                firm_id: Set(p.firm_id.0),
                email: Set(email.clone()),
                password_hash: Set(hash.clone()),
                first_name: Set(first_name.clone()),
                last_name: Set(last_name.clone()),
                role: Set(role),
                status: Set(UserStatus::Active),
                version: Set(1),
                last_login_at: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(tx)
            .await?;
            let view = UserView::from(u);
            audit::record(
                tx,
                p.firm_id,
                &Actor::user(p),
                AuditEvent::new("user.create", "user", Some(view.id.to_string())).created_fields(&audit::json(&view)),
            )
            .await?;
            Ok(view)
        })
        .await?;
    Ok(view)
}

/// The firm's users, oldest first.
pub async fn list(app: &App, p: &Principal, page: u64, limit: u64) -> ApiResult<(Vec<UserView>, Pagination)> {
    require_admin(p)?;
    let q = user::Entity::find().filter(user::Column::FirmId.eq(p.firm_id.0));
    let total = q.clone().count(&app.db).await?;
    let rows = q.order_by_asc(user::Column::Id).offset((page - 1) * limit).limit(limit).all(&app.db).await?;
    let total_pages = total.div_ceil(limit);
    Ok((
        with_locks(&app.db, rows.into_iter().map(UserView::from).collect()).await?,
        Pagination::Offset(OffsetPagination { page, limit, total, total_pages, has_next: page < total_pages }),
    ))
}

/// Changes a user's role or status. Nobody changes their own role or suspends themselves;
/// suspending a user ends all their sessions at once.
pub async fn update(
    app: &App,
    p: &Principal,
    id: UserId,
    input: UpdateUser,
    if_match: Option<i32>,
) -> ApiResult<UserView> {
    require_admin(p)?;
    if id == p.user_id && (input.role.is_some_and(|r| r != p.role) || input.status == Some(UserStatus::Suspended)) {
        return Err(ApiError::forbidden("you cannot change your own role or suspend yourself"));
    }
    let input = &input;
    let view = app
        .write(TxOptions::write(), |tx| async move {
            let tx = &tx;
            let current = user::Entity::find_by_id(id.0)
                .filter(user::Column::FirmId.eq(p.firm_id.0))
                .one(tx)
                .await?
                .ok_or_else(|| ApiError::not_found("user"))?;
            let expected = if_match.or(input.version);
            if expected.is_some_and(|v| v != current.version) {
                return Err(ApiError::new(ErrorCode::PreconditionFailed, "the user has changed since you read it")
                    .with_details(serde_json::json!({ "currentVersion": current.version })));
            }
            let mut q = user::Entity::update_many()
                .col_expr(user::Column::Version, Expr::col(user::Column::Version).add(1))
                .col_expr(user::Column::UpdatedAt, Expr::value(clock::now()));
            if let Some(role) = input.role {
                q = q.col_expr(user::Column::Role, Expr::value(role));
            }
            if let Some(status) = input.status {
                q = q.col_expr(user::Column::Status, Expr::value(status));
            }
            let n = q
                .filter(user::Column::Id.eq(id.0))
                .filter(user::Column::Version.eq(current.version))
                .exec(tx)
                .await?
                .rows_affected;
            if n != 1 {
                return Err(ApiError::new(ErrorCode::PreconditionFailed, "the user has changed since you read it"));
            }
            if input.status == Some(UserStatus::Suspended) {
                revoke_all_for_user(tx, id, "account suspended").await?;
            }
            if input.unlock == Some(true) {
                login_attempt::Entity::delete_many()
                    .filter(
                        sea_orm::Condition::any()
                            .add(login_attempt::Column::Email.eq(current.email.clone()))
                            .add(address_locks_of(&current.email)),
                    )
                    .exec(tx)
                    .await?;
                tracing::info!(user_id = %id, "login lock lifted by an admin");
            }
            let updated = user::Entity::find_by_id(id.0).one(tx).await?.ok_or_else(|| ApiError::not_found("user"))?;
            let view = with_locks(tx, vec![updated.into()]).await?.pop().ok_or_else(|| ApiError::not_found("user"))?;
            let mut changes = audit::diff(&audit::json(&UserView::from(current.clone())), &audit::json(&view));
            if input.unlock == Some(true)
                && let Some(m) = changes.as_object_mut()
            {
                m.insert("unlocked".into(), serde_json::json!({ "old": null, "new": true }));
            }
            let role_changed = input.role.is_some_and(|r| r != current.role);
            let action = if role_changed { "user.role_change" } else { "user.update" };
            let actor = Actor::user(p);
            audit::record(
                tx,
                p.firm_id,
                &actor,
                AuditEvent::new(action, "user", Some(id.to_string())).changes(changes),
            )
            .await?;
            // Cached sessions hold the old role or status: the session-eviction subscriber drops
            // them everywhere once this commits.
            let data = audit::json(&view);
            if input.status.is_some_and(|s| s != current.status && s != UserStatus::Active) {
                tx.record(DomainEvent::new(EventType::UserDisabled, p.firm_id, &actor, id).data(data.clone()));
            }
            if role_changed {
                tx.record(DomainEvent::new(EventType::UserRoleChanged, p.firm_id, &actor, id).data(data));
            }
            Ok(view)
        })
        .await?;
    Ok(view)
}

/// Loads an active user of the caller's firm, for team and lead-attorney assignments.
pub async fn active_in_firm(
    db: &impl sea_orm::ConnectionTrait,
    p: &Principal,
    id: UserId,
    field: &str,
) -> ApiResult<user::Model> {
    user::Entity::find_by_id(id.0)
        .filter(user::Column::FirmId.eq(p.firm_id.0))
        .filter(user::Column::Status.eq(UserStatus::Active))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::field(field, "no active user with this id in your firm"))
}
