//! A case's team: who works on it, and in which part.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};

use super::{
    access::{visible_case, visible_case_cached},
    model::{TeamRole, case, team_member},
    ops::{add_member, set_team_lead, team_role_fits},
};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    clock,
    db::TxOptions,
    events::{DomainEvent, EventType},
    http::error::{ApiError, ApiResult},
    ids::{CaseId, UserId},
    users::{model as user, ops::active_in_firm},
};

/// A team member as the API shows them. A client on the team sees names and roles only: staff
/// e-mail addresses (and other clients') are not for them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamMemberView {
    pub user_id: UserId,
    pub role: TeamRole,
    pub first_name: String,
    pub last_name: String,
    /// Absent when the caller is a client on the team.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub added_at: DateTime<Utc>,
}

/// `POST /cases/{id}/team` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddMember {
    pub user_id: UserId,
    pub role: TeamRole,
}

/// The team of a case the caller can see: members who are users of the caller's firm.
pub async fn list(app: &App, p: &Principal, id: CaseId) -> ApiResult<Vec<TeamMemberView>> {
    let access = visible_case_cached(app, p, id).await?;
    let shows_email = access.team_role != Some(TeamRole::Client);
    let members = team_member::Entity::find()
        .filter(team_member::Column::CaseId.eq(id.0))
        .filter(team_member::Column::FirmId.eq(p.firm_id.0))
        .order_by_asc(team_member::Column::AddedAt)
        .all(&app.db)
        .await?;
    let users = user::Entity::find()
        .filter(user::Column::FirmId.eq(p.firm_id.0))
        .filter(user::Column::Id.is_in(members.iter().map(|m| m.user_id)))
        .all(&app.db)
        .await?;
    Ok(members
        .into_iter()
        .filter_map(|m| {
            let u = users.iter().find(|u| u.id == m.user_id)?;
            Some(TeamMemberView {
                user_id: UserId(m.user_id),
                role: m.role,
                first_name: u.first_name.clone(),
                last_name: u.last_name.clone(),
                email: shows_email.then(|| u.email.clone()),
                added_at: m.added_at,
            })
        })
        .collect())
}

/// Adds a user of the firm to the team. Adding a lead attorney makes them the case's lead.
pub async fn add(app: &App, p: &Principal, id: CaseId, input: AddMember) -> ApiResult<Vec<TeamMemberView>> {
    let input = &input;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let access = visible_case(tx, p, id).await?;
        access.require_manage()?;
        let u = active_in_firm(tx, p, input.user_id, "userId").await?;
        team_role_fits(u.role, input.role).map_err(|m| ApiError::field("role", m))?;
        if input.role == TeamRole::LeadAttorney {
            add_member(tx, p, id.0, u.id, TeamRole::Attorney).await?;
            set_team_lead(tx, p, id.0, Some(u.id)).await?;
            bump_case(tx, id, Some(Some(u.id))).await?;
        } else {
            add_member(tx, p, id.0, u.id, input.role).await?;
            bump_case(tx, id, None).await?;
        }
        let change = serde_json::json!({ "role": { "old": null, "new": audit::json(&input.role) } });
        let actor = Actor::user(p);
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("case.team_add", "team_member", Some(u.id.to_string())).case(id.0).changes(change),
        )
        .await?;
        tx.record(
            DomainEvent::new(EventType::TeamMemberAdded, p.firm_id, &actor, u.id)
                .case(id.0)
                .data(serde_json::json!({ "caseId": id, "userId": u.id, "role": input.role })),
        );
        Ok(())
    })
    .await?;
    list(app, p, id).await
}

/// Removes a user from the team; removing the lead clears the case's lead attorney.
pub async fn remove(app: &App, p: &Principal, id: CaseId, user_id: UserId) -> ApiResult<()> {
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let access = visible_case(tx, p, id).await?;
        access.require_manage()?;
        let member = team_member::Entity::find_by_id((id.0, user_id.0))
            .one(tx)
            .await?
            .ok_or_else(|| ApiError::not_found("team member"))?;
        team_member::Entity::delete_by_id((id.0, user_id.0)).exec(tx).await?;
        if member.role == TeamRole::LeadAttorney || access.case.lead_attorney_id == Some(user_id.0) {
            bump_case(tx, id, Some(None)).await?;
        } else {
            bump_case(tx, id, None).await?;
        }
        let change = serde_json::json!({ "role": { "old": audit::json(&member.role), "new": null } });
        let actor = Actor::user(p);
        audit::record(
            tx,
            p.firm_id,
            &actor,
            AuditEvent::new("case.team_remove", "team_member", Some(user_id.to_string())).case(id.0).changes(change),
        )
        .await?;
        tx.record(
            DomainEvent::new(EventType::TeamMemberRemoved, p.firm_id, &actor, user_id)
                .case(id.0)
                .data(serde_json::json!({ "caseId": id, "userId": user_id, "role": member.role })),
        );
        Ok(())
    })
    .await?;
    Ok(())
}

/// A team change is a change of the case: its version moves, and the lead is kept in step.
async fn bump_case(tx: &impl sea_orm::ConnectionTrait, id: CaseId, lead: Option<Option<uuid::Uuid>>) -> ApiResult<()> {
    let mut q = case::Entity::update_many()
        .col_expr(case::Column::Version, Expr::col(case::Column::Version).add(1))
        .col_expr(case::Column::UpdatedAt, Expr::value(clock::now()));
    if let Some(l) = lead {
        q = q.col_expr(case::Column::LeadAttorneyId, Expr::value(l));
    }
    q.filter(case::Column::Id.eq(id.0)).exec(tx).await?;
    Ok(())
}
