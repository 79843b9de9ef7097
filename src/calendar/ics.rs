//! The `.ics` feed: per user, at a secret URL a calendar application can subscribe to (they
//! cannot send a bearer token). The URL's token is `lfcal_` and 32 random bytes; only its
//! SHA-256 is stored. Making a new feed revokes the old one; revoking leaves none.
//!
//! The feed holds the events the user may see now (the same rule as the API, evaluated on
//! every fetch), from a year ago on, at most [`MAX_EVENTS`] (every event not yet over first, so
//! past ones never crowd out an upcoming deadline), as RFC 5545 `VEVENT`s: timed events in UTC,
//! all-day events as dates, completed ones marked so, reminders as `VALARM`s.

use chrono::Duration;
use icalendar::{Alarm, Calendar, Component, Event, EventLike};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr};
use serde::Serialize;
use uuid::Uuid;

use super::{
    model::{event, feed},
    ops::{self, EventView},
};
use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    clock,
    db::TxOptions,
    http::error::{ApiError, ApiResult},
    ids::{FirmId, SessionId, UserId},
    users::model as user,
};

/// The most events one feed holds (see [`feed_events`] for which).
pub const MAX_EVENTS: u64 = 20_000;
const PREFIX: &str = "lfcal_";

/// A feed as its owner sees it once, when it is made.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedCreated {
    /// The path of the feed (under this server's address): keep it secret, it is the key.
    pub path: String,
    pub token: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Makes the caller's feed, revoking any earlier one.
pub async fn create(app: &App, p: &Principal) -> ApiResult<FeedCreated> {
    if p.api_key.is_some() {
        return Err(ApiError::forbidden("a calendar feed belongs to a user; sign in as one"));
    }
    let token = format!("{PREFIX}{}", crate::auth::tokens::random_urlsafe(32)?);
    let token_hash = crate::auth::tokens::sha256_hex(token.as_bytes());
    let now = clock::now();
    let h = &token_hash;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        feed::Entity::update_many()
            .col_expr(feed::Column::RevokedAt, Expr::value(now))
            .filter(feed::Column::UserId.eq(p.user_id.0))
            .filter(feed::Column::RevokedAt.is_null())
            .exec(tx)
            .await?;
        let id = Uuid::now_v7();
        feed::Entity::insert(feed::ActiveModel::from(feed::Model {
            id,
            firm_id: p.firm_id.0,
            user_id: p.user_id.0,
            token_hash: h.clone(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        }))
        .exec_without_returning(tx)
        .await?;
        audit::record(
            tx,
            p.firm_id,
            &Actor::user(p),
            AuditEvent::new("calendar.feed.create", "calendar_feed", Some(id.to_string())),
        )
        .await?;
        Ok(())
    })
    .await?;
    Ok(FeedCreated { path: format!("/api/v1/calendar/feed/{token}.ics"), token, created_at: now })
}

/// Revokes the caller's feed.
pub async fn revoke(app: &App, p: &Principal) -> ApiResult<()> {
    if p.api_key.is_some() {
        return Err(ApiError::forbidden("a calendar feed belongs to a user; sign in as one"));
    }
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let n = feed::Entity::update_many()
            .col_expr(feed::Column::RevokedAt, Expr::value(clock::now()))
            .filter(feed::Column::UserId.eq(p.user_id.0))
            .filter(feed::Column::RevokedAt.is_null())
            .exec(tx)
            .await?
            .rows_affected;
        if n == 0 {
            return Err(ApiError::not_found("calendar feed"));
        }
        audit::record(tx, p.firm_id, &Actor::user(p), AuditEvent::new("calendar.feed.revoke", "calendar_feed", None))
            .await?;
        Ok(())
    })
    .await
}

/// The feed behind `token` (with or without `.ics`), rendered; 404 for any token that is not
/// a live feed of an active user.
pub async fn render(app: &App, token: &str) -> ApiResult<String> {
    let token = token.strip_suffix(".ics").unwrap_or(token);
    let missing = || ApiError::not_found("calendar feed");
    if !token.starts_with(PREFIX) || token.len() > 128 {
        return Err(missing());
    }
    let f = feed::Entity::find()
        .filter(feed::Column::TokenHash.eq(crate::auth::tokens::sha256_hex(token.as_bytes())))
        .filter(feed::Column::RevokedAt.is_null())
        .one(&app.db)
        .await?
        .ok_or_else(missing)?;
    let u = user::Entity::find_by_id(f.user_id).one(&app.db).await?.ok_or_else(missing)?;
    if u.status != user::UserStatus::Active || u.firm_id != f.firm_id {
        return Err(missing());
    }
    // The user's rights as they are now, as for a request of theirs.
    let p = Principal {
        user_id: UserId(u.id),
        firm_id: FirmId(u.firm_id),
        role: u.role,
        session_id: SessionId(f.id),
        api_key: None,
    };
    let rows = feed_events(&app.db, &p, MAX_EVENTS).await?;
    let views = ops::views(&app.db, rows).await?;
    // Last use is kept to the minute, so a calendar polling every few seconds writes little.
    let now = clock::now();
    if f.last_used_at.is_none_or(|t| now - t > Duration::minutes(1)) {
        feed::Entity::update_many()
            .col_expr(feed::Column::LastUsedAt, Expr::value(now))
            .filter(feed::Column::Id.eq(f.id))
            .exec(&app.db)
            .await?;
    }
    Ok(to_ics(&views, &format!("{} {} (LexiFlow)", u.first_name, u.last_name)))
}

/// The events of `p`'s feed, at most `cap`: every event `p` sees that is not over yet, then as
/// many of those that ended in the last 365 days as there is room for, the latest ended first.
/// Past events never crowd out an upcoming deadline; when the upcoming ones alone are more than
/// `cap`, the earliest `cap` are kept and a warning is logged. (Calendar applications order a
/// feed's events themselves.)
pub async fn feed_events(db: &impl ConnectionTrait, p: &Principal, cap: u64) -> ApiResult<Vec<event::Model>> {
    let now = clock::now();
    let mut rows = event::Entity::find()
        .filter(ops::visible(p))
        .filter(event::Column::EndsAt.gte(now))
        .order_by_asc(event::Column::StartsAt)
        .order_by_asc(event::Column::Id)
        .limit(cap.saturating_add(1))
        .all(db)
        .await?;
    let cap_len = usize::try_from(cap).unwrap_or(usize::MAX);
    if rows.len() > cap_len {
        rows.truncate(cap_len);
        // No titles: they may be confidential.
        tracing::warn!(
            user_id = %p.user_id,
            cap,
            "calendar feed: more upcoming events than a feed holds; the latest are left out"
        );
        return Ok(rows);
    }
    let room = cap.saturating_sub(u64::try_from(rows.len()).unwrap_or(cap));
    if room > 0 {
        let past = event::Entity::find()
            .filter(ops::visible(p))
            .filter(event::Column::EndsAt.lt(now))
            .filter(event::Column::EndsAt.gte(now - Duration::days(365)))
            .order_by_desc(event::Column::EndsAt)
            .order_by_desc(event::Column::Id)
            .limit(room)
            .all(db)
            .await?;
        rows.extend(past);
    }
    Ok(rows)
}

/// RFC 5545 text of `events`.
pub fn to_ics(events: &[EventView], name: &str) -> String {
    // Built from empty: `Calendar::new()` would add the crate's own PRODID beside ours, and
    // RFC 5545 allows one.
    let mut cal = Calendar::empty();
    cal.append_property(icalendar::Property::new("VERSION", "2.0"));
    cal.append_property(icalendar::Property::new("PRODID", "-//LexiFlow//Calendar//EN"));
    cal.append_property(icalendar::Property::new("CALSCALE", "GREGORIAN"));
    cal.name(name);
    for v in events {
        let mut e = Event::new();
        e.uid(&format!("{}@lexiflow", v.id));
        e.summary(&v.title);
        e.timestamp(v.updated_at);
        e.add_property("SEQUENCE", (v.version.max(1) - 1).to_string());
        e.add_property(
            "CATEGORIES",
            serde_json::to_value(v.event_type).ok().and_then(|t| t.as_str().map(str::to_uppercase)).unwrap_or_default(),
        );
        match (v.all_day, v.start_date, v.end_date) {
            (true, Some(first), Some(last)) => {
                e.starts(first);
                e.ends(last.succ_opt().unwrap_or(last));
            }
            _ => {
                e.starts(v.starts_at);
                e.ends(v.ends_at);
            }
        }
        let mut description = v.description.clone().unwrap_or_default();
        if let Some(d) = &v.deadline {
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str(&format!("{}: {}\n{}", d.source, d.rule_text, d.steps.join("\n")));
        }
        if !description.is_empty() {
            e.description(&description);
        }
        if let Some(l) = &v.location {
            e.location(l);
        }
        e.add_property("STATUS", "CONFIRMED");
        if v.completed {
            e.add_property("X-LEXIFLOW-COMPLETED", "TRUE");
        }
        for m in &v.reminders {
            e.alarm(Alarm::display(&v.title, -Duration::minutes(i64::from(*m))));
        }
        cal.push(e.done());
    }
    cal.done().to_string()
}
