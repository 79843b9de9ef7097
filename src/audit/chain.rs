//! Writing, verifying and pruning the hash chain.
//!
//! `hash = SHA-256(prev_hash ‖ canonical JSON of the entry)`, hex. The canonical encoding
//! is a fixed-order JSON object of every stored field but the hashes themselves, with times
//! in RFC 3339 (microseconds, `Z`) and `changes` as the exact stored text. A firm's first
//! entry chains to [`GENESIS`]; after pruning, the first kept entry chains to the anchor
//! kept in `audit_heads`.

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
    sea_query::{Expr, LockType},
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    Actor, AuditEvent,
    model::{entry, head},
};
use crate::clock;

/// The `prev_hash` of a firm's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Serialize)]
struct Canonical<'a> {
    firm_id: &'a Uuid,
    sequence: i64,
    occurred_at: String,
    actor_type: &'a str,
    actor_id: &'a Option<Uuid>,
    actor_role: &'a Option<String>,
    action: &'a str,
    entity_type: &'a str,
    entity_id: &'a Option<String>,
    case_id: &'a Option<Uuid>,
    changes: &'a str,
    correlation_id: &'a Option<String>,
    ip: &'a Option<String>,
    user_agent: &'a Option<String>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The hash an entry must carry, given the hash before it.
pub fn entry_hash(prev_hash: &str, e: &entry::Model) -> String {
    let canonical = Canonical {
        firm_id: &e.firm_id,
        sequence: e.sequence,
        occurred_at: time(e.occurred_at),
        actor_type: &e.actor_type,
        actor_id: &e.actor_id,
        actor_role: &e.actor_role,
        action: &e.action,
        entity_type: &e.entity_type,
        entity_id: &e.entity_id,
        case_id: &e.case_id,
        changes: &e.changes,
        correlation_id: &e.correlation_id,
        ip: &e.ip,
        user_agent: &e.user_agent,
    };
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    // Serialising a struct of strings and ids cannot fail; an empty encoding would still
    // produce a hash that verification then rejects, never a silent pass.
    h.update(serde_json::to_vec(&canonical).unwrap_or_default());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends `event` to `firm`'s chain inside the caller's transaction. The firm's head row
/// is locked (PostgreSQL `FOR UPDATE`; SQLite writers are already serialised by
/// `BEGIN IMMEDIATE`) so concurrent writers of one firm chain one after the other.
pub async fn append(db: &impl ConnectionTrait, firm: Uuid, actor: &Actor, event: AuditEvent) -> Result<(), DbErr> {
    let mut q = head::Entity::find_by_id(firm);
    if db.get_database_backend() == DbBackend::Postgres {
        q = q.lock(LockType::Update);
    }
    let current = q.one(db).await?;
    let (prev_seq, prev_hash) = match &current {
        Some(h) => (h.sequence, h.hash.clone()),
        None => (0, GENESIS.to_owned()),
    };
    let mut e = entry::Model {
        id: Uuid::now_v7(),
        firm_id: firm,
        sequence: prev_seq + 1,
        occurred_at: clock::now(),
        actor_type: actor.kind.as_str().to_owned(),
        actor_id: actor.id,
        actor_role: actor.role.clone(),
        action: event.action.to_owned(),
        entity_type: event.entity_type.to_owned(),
        entity_id: event.entity_id,
        case_id: event.case_id,
        changes: super::redact(event.changes).to_string(),
        correlation_id: actor.correlation_id.clone(),
        ip: actor.ip.clone(),
        user_agent: actor.user_agent.clone(),
        prev_hash: prev_hash.clone(),
        hash: String::new(),
    };
    e.hash = entry_hash(&prev_hash, &e);
    let (seq, hash) = (e.sequence, e.hash.clone());
    entry::ActiveModel::from(e).insert(db).await?;
    match current {
        Some(_) => {
            head::Entity::update_many()
                .col_expr(head::Column::Sequence, Expr::value(seq))
                .col_expr(head::Column::Hash, Expr::value(hash))
                .filter(head::Column::FirmId.eq(firm))
                .exec(db)
                .await?;
        }
        None => {
            head::ActiveModel {
                firm_id: Set(firm),
                sequence: Set(seq),
                hash: Set(hash),
                anchor_sequence: Set(0),
                anchor_hash: Set(GENESIS.to_owned()),
                pruned_at: Set(None),
            }
            .insert(db)
            .await?;
        }
    }
    Ok(())
}

/// The result of recomputing a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub valid: bool,
    pub entries_checked: u64,
    /// The first sequence number at which the chain does not hold (an edited, inserted,
    /// deleted or reordered entry, or a head that does not match the last entry).
    pub first_invalid_sequence: Option<i64>,
}

const PAGE: u64 = 1_000;

/// Recomputes `firm`'s chain from its anchor to its head.
pub async fn verify(db: &impl ConnectionTrait, firm: Uuid) -> Result<Verification, DbErr> {
    let h = head::Entity::find_by_id(firm).one(db).await?;
    let (mut expect_seq, mut prev_hash) = match &h {
        Some(h) => (h.anchor_sequence + 1, h.anchor_hash.clone()),
        None => (1, GENESIS.to_owned()),
    };
    let mut checked = 0u64;
    let mut after = i64::MIN;
    loop {
        let rows = entry::Entity::find()
            .filter(entry::Column::FirmId.eq(firm))
            .filter(entry::Column::Sequence.gt(after))
            .order_by_asc(entry::Column::Sequence)
            .order_by_asc(entry::Column::Id)
            .limit(PAGE)
            .all(db)
            .await?;
        let n = rows.len() as u64;
        for e in rows {
            after = e.sequence;
            if e.sequence != expect_seq || e.prev_hash != prev_hash || e.hash != entry_hash(&prev_hash, &e) {
                return Ok(Verification {
                    valid: false,
                    entries_checked: checked,
                    first_invalid_sequence: Some(expect_seq.min(e.sequence)),
                });
            }
            checked += 1;
            expect_seq += 1;
            prev_hash = e.hash;
        }
        if n < PAGE {
            break;
        }
    }
    // The head must agree with the last entry: otherwise entries were cut off the end.
    let head_ok = match &h {
        Some(h) => h.sequence == expect_seq - 1 && h.hash == prev_hash,
        None => checked == 0,
    };
    if !head_ok {
        return Ok(Verification { valid: false, entries_checked: checked, first_invalid_sequence: Some(expect_seq) });
    }
    Ok(Verification { valid: true, entries_checked: checked, first_invalid_sequence: None })
}

/// Every firm that has a chain.
pub async fn firms(db: &impl ConnectionTrait) -> Result<Vec<Uuid>, DbErr> {
    Ok(head::Entity::find().all(db).await?.into_iter().map(|h| h.firm_id).collect())
}

/// Deletes `firm`'s entries older than `before`, keeping the chain verifiable: the last
/// pruned entry's sequence and hash become the anchor the first kept entry chains to. The
/// deletion is itself audited (as a system action) in the same transaction. Returns how
/// many entries were removed.
pub async fn prune(db: &sea_orm::DatabaseConnection, firm: Uuid, before: DateTime<Utc>) -> Result<u64, DbErr> {
    let tx = crate::db::begin_write(db).await?;
    let mut q = head::Entity::find_by_id(firm);
    if tx.get_database_backend() == DbBackend::Postgres {
        q = q.lock(LockType::Update);
    }
    let Some(h) = q.one(&tx).await? else {
        return Ok(0);
    };
    // Never prune the head itself: the newest entry must stay to show where the chain ends.
    let last = entry::Entity::find()
        .filter(entry::Column::FirmId.eq(firm))
        .filter(entry::Column::OccurredAt.lt(before))
        .filter(entry::Column::Sequence.lt(h.sequence))
        .order_by_desc(entry::Column::Sequence)
        .one(&tx)
        .await?;
    let Some(last) = last else {
        return Ok(0);
    };
    tx.execute_unprepared("INSERT INTO audit_prune_guard (id) VALUES (1)").await?;
    let removed = entry::Entity::delete_many()
        .filter(entry::Column::FirmId.eq(firm))
        .filter(entry::Column::Sequence.lte(last.sequence))
        .exec(&tx)
        .await?
        .rows_affected;
    tx.execute_unprepared("DELETE FROM audit_prune_guard").await?;
    head::Entity::update_many()
        .col_expr(head::Column::AnchorSequence, Expr::value(last.sequence))
        .col_expr(head::Column::AnchorHash, Expr::value(last.hash.clone()))
        .col_expr(head::Column::PrunedAt, Expr::value(clock::now()))
        .filter(head::Column::FirmId.eq(firm))
        .exec(&tx)
        .await?;
    let event = AuditEvent::new("audit.prune", "audit_trail", None).changes(serde_json::json!({
        "removedEntries": removed,
        "throughSequence": last.sequence,
        "anchorHash": last.hash,
        "before": time(before),
    }));
    append(&tx, firm, &Actor::system(), event).await?;
    tx.commit().await?;
    Ok(removed)
}
