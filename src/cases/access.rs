//! Who may see and change a case.
//!
//! A user sees a case when they are on its team, or are an admin or partner of its firm.
//! A case the caller may not see answers exactly like one that does not exist (404), so ids
//! cannot be probed. Clients and staff read; admins, partners, attorneys and paralegals
//! write; admins, partners and the lead attorney manage the team and delete. Sealed material
//! is for admins and for holders of an admin's grant for the case (see `cases::sealed`).

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::model::{TeamRole, case, team_member};
use crate::{
    app::App,
    auth::Principal,
    cache::{Key, tags},
    http::error::{ApiError, ApiResult},
    ids::CaseId,
};

/// A case the caller can see, and what they may do with it.
#[derive(Debug)]
pub struct CaseAccess {
    pub case: case::Model,
    pub team_role: Option<TeamRole>,
    privileged: bool,
    may_edit: bool,
    /// The caller's firm role may lead cases (a lead demoted to paralegal no longer manages).
    may_lead: bool,
    admin: bool,
    user: uuid::Uuid,
    /// The caller is an API key.
    api_key: bool,
    /// The caller holds an admin's grant to see this case's sealed material. False until
    /// [`CaseAccess::with_sealed_grant`] looks it up, so a path that forgets to fails closed.
    sealed_grant: bool,
}

impl CaseAccess {
    /// Refuses callers who may only read.
    pub fn require_edit(&self) -> ApiResult<()> {
        if self.may_edit && self.team_role != Some(TeamRole::Client) {
            Ok(())
        } else {
            Err(ApiError::forbidden("you may read this case but not change it"))
        }
    }

    /// Whether the caller may see sealed material of this case: the firm's admins, and users
    /// an admin granted it for this case (looked up by [`with_sealed_grant`](Self::with_sealed_grant)).
    /// Leading the case is not enough: a partner can make themselves lead.
    pub fn sees_sealed(&self) -> bool {
        self.admin || self.sealed_grant
    }

    /// Looks up the caller's sealed-access grant for this case, from the database (grants are
    /// never cached, so a revoke holds from its commit on).
    pub async fn with_sealed_grant(mut self, db: &impl ConnectionTrait) -> ApiResult<Self> {
        // A key acts for its maker but never with the maker's grants: keys see no sealed material.
        if !self.admin && !self.api_key {
            self.sealed_grant = super::sealed::is_granted(db, self.case.id, self.user).await?;
        }
        Ok(self)
    }

    /// Whether the caller may see restricted material: everyone on the case but clients.
    pub fn sees_restricted(&self) -> bool {
        self.team_role != Some(TeamRole::Client)
    }

    /// Refuses callers who may not manage the team or delete the case.
    pub fn require_manage(&self) -> ApiResult<()> {
        if self.privileged || (self.may_lead && self.team_role == Some(TeamRole::LeadAttorney)) {
            Ok(())
        } else {
            Err(ApiError::forbidden("only an admin, a partner or the lead attorney may do this"))
        }
    }
}

/// Loads a live case of the caller's firm that the caller may see, or 404.
pub async fn visible_case(db: &impl ConnectionTrait, p: &Principal, id: CaseId) -> ApiResult<CaseAccess> {
    let found = live_case(db, p, id).await?;
    let privileged = p.role.sees_all_cases();
    // Admins and partners see every case, so their membership need not be looked up.
    let team_role = if privileged {
        None
    } else {
        team_member::Entity::find_by_id((id.0, p.user_id.0)).one(db).await?.map(|m| m.role)
    };
    decide(found, team_role, p)
}

/// [`visible_case`] for reads outside a write transaction: the caller's place on the team
/// comes from the cache, which every team change invalidates (on every instance) before it
/// answers.
pub async fn visible_case_cached(app: &App, p: &Principal, id: CaseId) -> ApiResult<CaseAccess> {
    let found = live_case(&app.db, p, id).await?;
    let team_role = if p.role.sees_all_cases() {
        None
    } else {
        let key = Key::new(format!("case-member:{}:{}", id.0, p.user_id.0))
            .tag(tags::case_team(id.0))
            .ttl(app.config.auth_cache_ttl.max(std::time::Duration::from_millis(1)))
            .local_ttl(app.config.auth_cache_ttl);
        app.cache
            .get_or_set(&key, || async {
                Ok::<_, sea_orm::DbErr>(
                    team_member::Entity::find_by_id((id.0, p.user_id.0)).one(&app.db).await?.map(|m| m.role),
                )
            })
            .await?
    };
    decide(found, team_role, p)
}

async fn live_case(db: &impl ConnectionTrait, p: &Principal, id: CaseId) -> ApiResult<case::Model> {
    case::Entity::find_by_id(id.0)
        .filter(case::Column::FirmId.eq(p.firm_id.0))
        .filter(case::Column::DeletedAt.is_null())
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found("case"))
}

fn decide(found: case::Model, team_role: Option<TeamRole>, p: &Principal) -> ApiResult<CaseAccess> {
    let privileged = p.role.sees_all_cases();
    if !privileged && team_role.is_none() {
        return Err(ApiError::not_found("case"));
    }
    // A user whose firm role became client is a client on every team they are still on,
    // whatever place they were given there before (a role change leaves team rows alone).
    let team_role =
        if p.role == crate::users::model::Role::Client { team_role.map(|_| TeamRole::Client) } else { team_role };
    Ok(CaseAccess {
        case: found,
        team_role,
        privileged,
        may_edit: p.role.may_edit_cases(),
        may_lead: p.role.may_lead_cases(),
        admin: p.role == crate::users::model::Role::Admin,
        user: p.user_id.0,
        api_key: p.api_key.is_some(),
        sealed_grant: false,
    })
}
