//! Sealed-access grants: which users, besides the firm's admins, may see a case's sealed
//! material.
//!
//! Seeing sealed material follows from no role on a case — not from leading it, which a
//! partner can arrange for themselves. Admins see it by role (they also read the whole audit
//! trail, sealed changes included); anyone else needs a grant for that case, which only an
//! admin of the firm gives or revokes, never to themselves. Each grant and revoke is audited
//! in its own transaction. A grant is read from the database on every check, never cached,
//! so a revoke holds from its commit on, on every instance.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

use super::{access::visible_case, model::team_member};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    clock,
    db::TxOptions,
    events::{DomainEvent, EventType},
    http::error::{ApiError, ApiResult},
    ids::{CaseId, UserId},
    users::{
        model::{self as user, Role},
        ops::active_in_firm,
    },
};

/// The `case_sealed_grants` table.
pub mod grant {
    use sea_orm::entity::prelude::*;

    /// One user's leave to see one case's sealed material.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "case_sealed_grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub case_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        pub firm_id: Uuid,
        pub granted_by: Uuid,
        pub granted_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A grant as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealedGrantView {
    pub user_id: UserId,
    pub first_name: String,
    pub last_name: String,
    pub granted_by: UserId,
    pub granted_at: DateTime<Utc>,
}

/// Whether `user` holds a grant for `case`.
pub async fn is_granted(db: &impl ConnectionTrait, case: uuid::Uuid, user: uuid::Uuid) -> ApiResult<bool> {
    Ok(grant::Entity::find_by_id((case, user)).one(db).await?.is_some())
}

fn require_admin(p: &Principal) -> ApiResult<()> {
    if p.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("only an admin of the firm may grant or revoke access to sealed material"))
    }
}

/// The grants of a case the caller (an admin) can see.
pub async fn list(app: &App, p: &Principal, id: CaseId) -> ApiResult<Vec<SealedGrantView>> {
    let access = visible_case(&app.db, p, id).await?;
    require_admin(p)?;
    let grants = grant::Entity::find()
        .filter(grant::Column::CaseId.eq(access.case.id))
        .filter(grant::Column::FirmId.eq(p.firm_id.0))
        .order_by_asc(grant::Column::GrantedAt)
        .all(&app.db)
        .await?;
    let users = user::Entity::find()
        .filter(user::Column::FirmId.eq(p.firm_id.0))
        .filter(user::Column::Id.is_in(grants.iter().map(|g| g.user_id)))
        .all(&app.db)
        .await?;
    Ok(grants
        .into_iter()
        .filter_map(|g| {
            let u = users.iter().find(|u| u.id == g.user_id)?;
            Some(view(g, u))
        })
        .collect())
}

fn view(g: grant::Model, u: &user::Model) -> SealedGrantView {
    SealedGrantView {
        user_id: UserId(g.user_id),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        granted_by: UserId(g.granted_by),
        granted_at: g.granted_at,
    }
}

/// Lets `user_id` see the case's sealed material. Granting what is already granted changes
/// nothing (and records nothing).
pub async fn grant(app: &App, p: &Principal, id: CaseId, user_id: UserId) -> ApiResult<SealedGrantView> {
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let access = visible_case(tx, p, id).await?;
        require_admin(p)?;
        if user_id == p.user_id {
            return Err(ApiError::forbidden("nobody may grant access to sealed material to themselves"));
        }
        let u = active_in_firm(tx, p, user_id, "userId").await?;
        let sees_case =
            u.role.sees_all_cases() || team_member::Entity::find_by_id((access.case.id, u.id)).one(tx).await?.is_some();
        if !sees_case {
            return Err(ApiError::field("userId", "this user cannot see the case; add them to its team first"));
        }
        if let Some(existing) = grant::Entity::find_by_id((access.case.id, u.id)).one(tx).await? {
            return Ok(view(existing, &u));
        }
        let g = grant::Model {
            case_id: access.case.id,
            user_id: u.id,
            firm_id: p.firm_id.0,
            granted_by: p.user_id.0,
            granted_at: clock::now(),
        };
        grant::Entity::insert(grant::ActiveModel::from(g.clone())).exec_without_returning(tx).await?;
        let change = serde_json::json!({ "sealedAccess": { "old": false, "new": true } });
        let actor = Actor::user(p);
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("case.sealed_access_grant", "sealed_access", Some(u.id.to_string()))
                .case(access.case.id)
                .changes(change),
        )
        .await?;
        // Grants are not cached (see the module note); the event drops whatever caches the
        // case's access decisions all the same, so a cache added later cannot outlive a change.
        tx.record(
            DomainEvent::new(EventType::CaseAccessChanged, p.firm_id, &actor, access.case.id)
                .case(access.case.id)
                .data(serde_json::json!({ "userId": u.id, "sealedAccess": true })),
        );
        Ok(view(g, &u))
    })
    .await
}

/// Withdraws `user_id`'s grant: from the commit on, the case's sealed material is gone for them.
pub async fn revoke(app: &App, p: &Principal, id: CaseId, user_id: UserId) -> ApiResult<()> {
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let access = visible_case(tx, p, id).await?;
        require_admin(p)?;
        let n = grant::Entity::delete_many()
            .filter(grant::Column::CaseId.eq(access.case.id))
            .filter(grant::Column::UserId.eq(user_id.0))
            .filter(grant::Column::FirmId.eq(p.firm_id.0))
            .exec(tx)
            .await?
            .rows_affected;
        if n == 0 {
            return Err(ApiError::not_found("sealed-access grant"));
        }
        let change = serde_json::json!({ "sealedAccess": { "old": true, "new": false } });
        let actor = Actor::user(p);
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("case.sealed_access_revoke", "sealed_access", Some(user_id.to_string()))
                .case(access.case.id)
                .changes(change),
        )
        .await?;
        tx.record(
            DomainEvent::new(EventType::CaseAccessChanged, p.firm_id, &actor, access.case.id)
                .case(access.case.id)
                .data(serde_json::json!({ "userId": user_id, "sealedAccess": false })),
        );
        Ok(())
    })
    .await
}
