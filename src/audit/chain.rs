//! Writing, verifying and pruning the hash chains.
//!
//! `hash = SHA-256(prev_hash ‖ canonical JSON of the entry)`, hex. The canonical encoding
//! is a fixed-order JSON object of every stored field but the hashes themselves, with times
//! in RFC 3339 (microseconds, `Z`) and `changes` as the exact stored text. A chain's first
//! entry chains to [`GENESIS`]; after pruning, the first kept entry chains to the anchor
//! kept in `audit_heads`.
//!
//! Each firm has [`CHAINS`] parallel chains, and an entry goes to the chain its entity hashes
//! to, so all the changes of one case (or user, or session) are in one chain, in order — for
//! entries written under one value of [`CHAINS`]; changing it moves an entity's later entries
//! to another chain (both chains still verify).
//! Appending locks the chain's head row until the transaction commits; with one chain per
//! firm, every write of a firm would wait for the previous one's commit (fsync included),
//! which on PostgreSQL cut write throughput by about 70% in the benchmark. Parallel chains
//! keep the same guarantee per chain — an edited, deleted, inserted or reordered entry
//! breaks its chain, and each chain's head catches a cut-off tail — while unrelated writes
//! proceed side by side.

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
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

/// Parallel chains per firm. Changing it is safe: existing chains keep verifying (verify
/// walks every chain it finds), new entries spread over the new count.
pub const CHAINS: u32 = 32;

/// The chain an entity's entries go to: FNV-1a of its type and id.
pub fn chain_for(entity_type: &str, entity_id: Option<&str>) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in entity_type.bytes().chain([b':']).chain(entity_id.unwrap_or("").bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % CHAINS) as i32
}

/// The `prev_hash` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Serialize)]
struct Canonical<'a> {
    firm_id: &'a Uuid,
    chain: i32,
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

/// Lower-case hex, without a `format!` per byte (hashing is on every audited write).
/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The hash an entry must carry, given the hash before it.
pub fn entry_hash(prev_hash: &str, e: &entry::Model) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical(e));
    hex(&h.finalize())
}

/// The canonical encoding of an entry (everything stored but the two hashes).
fn canonical(e: &entry::Model) -> Vec<u8> {
    let canonical = Canonical {
        firm_id: &e.firm_id,
        chain: e.chain,
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
    // Serialising a struct of strings and ids cannot fail; an empty encoding would still
    // produce a hash that verification then rejects, never a silent pass.
    serde_json::to_vec(&canonical).unwrap_or_default()
}

/// The canonical encoding of an entry whose sequence is not known yet, as the text before
/// and after the sequence number: `canonical = before ‖ decimal(sequence) ‖ after`. The
/// fields ahead of `sequence` are an id and a number, so the split point cannot be forged
/// by stored text.
fn canonical_around_sequence(e: &entry::Model) -> Result<(String, String), DbErr> {
    const MARK: &str = ",\"sequence\":";
    let text = String::from_utf8(canonical(&entry::Model { sequence: 0, ..e.clone() })).unwrap_or_default();
    match text.find(MARK) {
        Some(at) if text[at + MARK.len()..].starts_with("0,") => {
            let split = at + MARK.len();
            Ok((text[..split].to_owned(), text[split + 1..].to_owned()))
        }
        // Unreachable with the struct above; refuse rather than store an unverifiable hash.
        _ => Err(DbErr::Custom("the audit entry's canonical encoding has no sequence".into())),
    }
}

/// Appends `event` to its chain of `firm` inside the caller's transaction, in one statement
/// on either database (auditing is on every write; its cost is mostly round trips):
///
/// - PostgreSQL: one statement moves the chain's head (`UPDATE … RETURNING`, which holds the
///   row lock until commit, so concurrent writers of one chain append one after the other),
///   computing the entry's hash with the server's `sha256()` over the old head's hash and
///   the canonical encoding around the new sequence number, and inserts the entry.
/// - SQLite (writers already serialised by `BEGIN IMMEDIATE`): the entry is sealed against
///   the head this process last saw and inserted only if that is still the head (a guarded
///   `INSERT … SELECT … WHERE EXISTS`); the `audit_entries_advance_head` trigger moves the
///   head. When the guess was wrong (another process appended, or a transaction that
///   appended rolled back) nothing was written, and the head is read and the entry sealed
///   again.
pub async fn append(db: &impl ConnectionTrait, firm: Uuid, actor: &Actor, event: AuditEvent) -> Result<(), DbErr> {
    let chain = chain_for(event.entity_type, event.entity_id.as_deref());
    let e = build_entry(firm, chain, actor, event);
    if db.get_database_backend() == DbBackend::Postgres {
        if append_pg(db, &e).await? {
            return Ok(());
        }
        // The chain's first entry: create its head, then append to it.
        lock_head(db, firm, chain).await?;
        return if append_pg(db, &e).await? { Ok(()) } else { Err(DbErr::RecordNotFound("audit chain head".into())) };
    }
    let guessed = known_head(firm, chain).map(|(seq, hash)| seal(e.clone(), seq, hash));
    let sealed = match guessed {
        Some(g) if insert_if_head(db, &g).await? => g,
        _ => {
            let current = lock_head(db, firm, chain).await?;
            let s = seal(e, current.sequence, current.hash);
            if !insert_if_head(db, &s).await? {
                return Err(DbErr::Custom("audit chain head moved during the transaction".into()));
            }
            s
        }
    };
    remember_head(firm, chain, sealed.sequence, &sealed.hash);
    Ok(())
}

/// An entry's values in [`ENTRY_TABLE`]'s column order, nulls typed as their columns.
fn entry_values(e: &entry::Model) -> Vec<sea_orm::Value> {
    vec![
        e.id.into(),
        e.firm_id.into(),
        e.chain.into(),
        e.sequence.into(),
        e.occurred_at.into(),
        e.actor_type.clone().into(),
        e.actor_id.into(),
        e.actor_role.clone().into(),
        e.action.clone().into(),
        e.entity_type.clone().into(),
        e.entity_id.clone().into(),
        e.case_id.into(),
        e.changes.clone().into(),
        e.correlation_id.clone().into(),
        e.ip.clone().into(),
        e.user_agent.clone().into(),
        e.prev_hash.clone().into(),
        e.hash.clone().into(),
    ]
}

/// PostgreSQL's one-statement append; false when the chain has no head row yet.
async fn append_pg(db: &impl ConnectionTrait, e: &entry::Model) -> Result<bool, DbErr> {
    let (before, after) = canonical_around_sequence(e)?;
    let mut values = entry_values(e);
    values.extend([before.into(), after.into()]);
    let done = db.execute_raw(sea_orm::Statement::from_sql_and_values(DbBackend::Postgres, PG_APPEND, values)).await?;
    Ok(done.rows_affected() == 1)
}

/// `$1…$18`: the entry's values in [`entry_values`]' order, of which the sequence and the
/// hashes (`$4`, `$17`, `$18`: not known yet) are not used; `$19`, `$20`: the canonical
/// encoding before and after the sequence number. The `UPDATE` locks the head row until commit (a concurrent appender of the chain waits, then
/// re-reads the row it updates, so it chains to the committed head), keeps the old hash as
/// `prev_hash`, and computes the new sequence and hash from the old row; the insert takes all
/// three from its `RETURNING`. [`entry_hash`] computes the same hash in Rust (verification);
/// the tests that append (non-ASCII and escaped text included) and then verify hold the two
/// to each other.
const PG_APPEND: &str = "WITH h AS (UPDATE audit_heads SET prev_hash = hash, sequence = sequence + 1, \
        hash = encode(sha256(convert_to(hash || $19::text || (sequence + 1)::text || $20::text, 'UTF8')), 'hex') \
        WHERE firm_id = $2 AND chain = $3 RETURNING sequence, prev_hash, hash) \
    INSERT INTO audit_entries (id, firm_id, chain, sequence, occurred_at, actor_type, actor_id, actor_role, \
        action, entity_type, entity_id, case_id, changes, correlation_id, ip, user_agent, prev_hash, hash) \
    SELECT $1::uuid, $2::uuid, $3::int4, h.sequence, $5::timestamptz, $6::text, $7::uuid, $8::text, \
        $9::text, $10::text, $11::text, $12::uuid, $13::text, $14::text, $15::text, $16::text, h.prev_hash, h.hash \
    FROM h";

/// SQLite: inserts the sealed entry only if its chain's head is still what it was sealed
/// against; true when it was inserted (the trigger then moved the head).
async fn insert_if_head(db: &impl ConnectionTrait, e: &entry::Model) -> Result<bool, DbErr> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let cols = ENTRY_TABLE.columns;
        let names = cols.iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ");
        let params = vec!["?"; cols.len()].join(", ");
        format!(
            "INSERT INTO audit_entries ({names}) SELECT {params} WHERE EXISTS \
             (SELECT 1 FROM audit_heads WHERE firm_id = ? AND chain = ? AND sequence = ? AND hash = ?)"
        )
    });
    let mut values = entry_values(e);
    values.extend([e.firm_id.into(), e.chain.into(), (e.sequence - 1).into(), e.prev_hash.clone().into()]);
    let done = db.execute_raw(sea_orm::Statement::from_sql_and_values(DbBackend::Sqlite, SQL.as_str(), values)).await?;
    Ok(done.rows_affected() == 1)
}

/// The heads this process last wrote or read, per firm and chain (SQLite only): a guess that
/// saves reading the head before every append, always checked by [`insert_if_head`].
type KnownHeads = std::sync::Mutex<std::collections::HashMap<(Uuid, i32), (i64, String)>>;
static KNOWN_HEADS: std::sync::LazyLock<KnownHeads> = std::sync::LazyLock::new(Default::default);

/// Enough for every chain of a few thousand firms; beyond it the guesses start over.
const KNOWN_HEADS_MAX: usize = 1 << 17;

fn known_head(firm: Uuid, chain: i32) -> Option<(i64, String)> {
    KNOWN_HEADS.lock().ok()?.get(&(firm, chain)).cloned()
}

fn remember_head(firm: Uuid, chain: i32, sequence: i64, hash: &str) {
    if let Ok(mut heads) = KNOWN_HEADS.lock() {
        if heads.len() >= KNOWN_HEADS_MAX {
            heads.clear();
        }
        heads.insert((firm, chain), (sequence, hash.to_owned()));
    }
}

/// Appends many events (a bulk operation's items) in the caller's transaction, as
/// [`append`] would one by one, but with the chains' heads locked in one statement, the
/// entries written with one bulk insert and the heads moved in one statement.
pub async fn append_many(
    db: &impl ConnectionTrait,
    firm: Uuid,
    actor: &Actor,
    events: Vec<AuditEvent>,
) -> Result<(), DbErr> {
    let chains = events.iter().map(|e| chain_for(e.entity_type, e.entity_id.as_deref())).collect();
    let mut heads = lock_heads(db, firm, &chains).await?;
    heads.seal(db.get_database_backend(), actor, events)?.run(db).await?;
    heads.store(db).await
}

/// Heads of some of a firm's chains, locked for the rest of the caller's transaction, so
/// that entries can be sealed after them apart from the database — on another thread, while
/// the database writes earlier ones — and written in bulk. Only entries sealed here may be
/// written to those chains until [`store`](Self::store) and the commit.
#[derive(Debug)]
pub struct Heads {
    firm: Uuid,
    /// chain → (sequence, hash) of its last entry, sealed here or found.
    heads: std::collections::BTreeMap<i32, (i64, String)>,
}

/// Locks the heads of `firm`'s `chains` until the transaction ends, in chain order (so two
/// bulk writers of one firm do not deadlock each other; SQLite writers are serialised
/// already): on PostgreSQL one `SELECT … ORDER BY chain FOR UPDATE` when every head exists.
/// When some do not (a firm's first writes), each head is locked or created in turn, still
/// in chain order, as [`append`] does for one.
pub async fn lock_heads(
    db: &impl ConnectionTrait,
    firm: Uuid,
    chains: &std::collections::BTreeSet<i32>,
) -> Result<Heads, DbErr> {
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    let find = || {
        head::Entity::find()
            .filter(head::Column::FirmId.eq(firm))
            .filter(crate::db::bulk::one_of(db.get_database_backend(), head::Column::Chain, chains.iter().copied()))
            .order_by_asc(head::Column::Chain)
    };
    if chains.is_empty() {
        return Ok(Heads { firm, heads: Default::default() });
    }
    // On PostgreSQL, look before locking, so that missing heads are created in chain order
    // too; heads are never deleted, so once all exist a locking read finds them all. SQLite
    // takes no row locks: one read tells.
    let found = if postgres {
        let existing: Vec<i32> = find().select_only().column(head::Column::Chain).into_tuple().all(db).await?;
        if existing.len() == chains.len() { find().lock(LockType::Update).all(db).await? } else { Vec::new() }
    } else {
        find().all(db).await?
    };
    let found = if found.len() == chains.len() {
        found
    } else {
        let mut found = Vec::with_capacity(chains.len());
        for chain in chains {
            found.push(lock_head(db, firm, *chain).await?);
        }
        found
    };
    if found.len() != chains.len() {
        return Err(DbErr::RecordNotFound("audit chain head".into()));
    }
    Ok(Heads { firm, heads: found.into_iter().map(|h| (h.chain, (h.sequence, h.hash))).collect() })
}

impl Heads {
    /// Seals `events` after the heads, moving them on, and returns the statements that
    /// insert the entries. Fails for an event whose chain was not locked.
    pub fn seal(
        &mut self,
        backend: DbBackend,
        actor: &Actor,
        events: Vec<AuditEvent>,
    ) -> Result<crate::db::bulk::Encoded, DbErr> {
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            let chain = chain_for(event.entity_type, event.entity_id.as_deref());
            let Some((sequence, hash)) = self.heads.get_mut(&chain) else {
                return Err(DbErr::Custom(format!("audit chain {chain} was not locked for this write")));
            };
            let e = seal(build_entry(self.firm, chain, actor, event), *sequence, std::mem::take(hash));
            *sequence = e.sequence;
            hash.clone_from(&e.hash);
            rows.push(entry_row(e));
        }
        crate::db::bulk::encode(backend, &ENTRY_TABLE, &rows)
    }

    /// Records the heads after the entries sealed so far, once they are written: on
    /// PostgreSQL in one `UPDATE`; on SQLite the `audit_entries_advance_head` trigger has
    /// moved them with every entry, and this process notes them for its next append.
    pub async fn store(&self, db: &impl ConnectionTrait) -> Result<(), DbErr> {
        use crate::db::bulk::{Cell, pg_array};
        if db.get_database_backend() != DbBackend::Postgres {
            for (chain, (sequence, hash)) in &self.heads {
                remember_head(self.firm, *chain, *sequence, hash);
            }
            return Ok(());
        }
        if self.heads.is_empty() {
            return Ok(());
        }
        let chains: Vec<Cell> = self.heads.keys().map(|c| Cell::from(*c)).collect();
        let sequences: Vec<Cell> = self.heads.values().map(|(s, _)| Cell::from(*s)).collect();
        let hashes: Vec<Cell> = self.heads.values().map(|(_, h)| Cell::from(h.as_str())).collect();
        db.execute_raw(sea_orm::Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE audit_heads h SET sequence = v.sequence, hash = v.hash \
             FROM unnest($2::int4[], $3::int8[], $4::text[]) AS v(chain, sequence, hash) \
             WHERE h.firm_id = $1 AND h.chain = v.chain",
            [
                self.firm.into(),
                pg_array(chains.iter()).into(),
                pg_array(sequences.iter()).into(),
                pg_array(hashes.iter()).into(),
            ],
        ))
        .await?;
        Ok(())
    }
}

/// The columns [`append_many`] fills, in [`entry_row`]'s order.
const ENTRY_TABLE: crate::db::bulk::Table = {
    use crate::db::bulk::{col, req};
    crate::db::bulk::Table {
        name: "audit_entries",
        columns: &[
            req("id", "uuid"),
            req("firm_id", "uuid"),
            req("chain", "int4"),
            req("sequence", "int8"),
            req("occurred_at", "timestamptz"),
            req("actor_type", "text"),
            col("actor_id", "uuid"),
            col("actor_role", "text"),
            req("action", "text"),
            req("entity_type", "text"),
            col("entity_id", "text"),
            col("case_id", "uuid"),
            req("changes", "text"),
            col("correlation_id", "text"),
            col("ip", "text"),
            col("user_agent", "text"),
            req("prev_hash", "text"),
            req("hash", "text"),
        ],
    }
};

fn entry_row(e: entry::Model) -> Vec<crate::db::bulk::Cell> {
    vec![
        e.id.into(),
        e.firm_id.into(),
        e.chain.into(),
        e.sequence.into(),
        e.occurred_at.into(),
        e.actor_type.into(),
        e.actor_id.into(),
        e.actor_role.into(),
        e.action.into(),
        e.entity_type.into(),
        e.entity_id.into(),
        e.case_id.into(),
        e.changes.into(),
        e.correlation_id.into(),
        e.ip.into(),
        e.user_agent.into(),
        e.prev_hash.into(),
        e.hash.into(),
    ]
}

/// Locks the head row of `firm`'s `chain` for the rest of the transaction, creating it for
/// the chain's first entry.
async fn lock_head(db: &impl ConnectionTrait, firm: Uuid, chain: i32) -> Result<head::Model, DbErr> {
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    let lock_head = || {
        let q = head::Entity::find_by_id((firm, chain));
        if postgres { q.lock(LockType::Update) } else { q }
    };
    let current = match lock_head().one(db).await? {
        Some(h) => h,
        None => {
            // A chain's first entry: create its head (a concurrent first writer may win the
            // insert; then lock the row it made).
            head::Entity::insert(head::ActiveModel {
                firm_id: Set(firm),
                chain: Set(chain),
                sequence: Set(0),
                hash: Set(GENESIS.to_owned()),
                anchor_sequence: Set(0),
                anchor_hash: Set(GENESIS.to_owned()),
                pruned_at: Set(None),
            })
            .on_conflict(
                sea_orm::sea_query::OnConflict::columns([head::Column::FirmId, head::Column::Chain])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
            lock_head().one(db).await?.ok_or_else(|| DbErr::RecordNotFound("audit chain head".into()))?
        }
    };
    Ok(current)
}

/// The entry for `event`, not yet placed in its chain (no sequence, no hashes).
fn build_entry(firm: Uuid, chain: i32, actor: &Actor, event: AuditEvent) -> entry::Model {
    entry::Model {
        id: Uuid::now_v7(),
        firm_id: firm,
        chain,
        sequence: 0,
        occurred_at: clock::now(),
        actor_type: actor.kind.as_str().to_owned(),
        actor_id: actor.id,
        actor_role: actor.role.clone(),
        action: event.action.to_owned(),
        entity_type: event.entity_type.to_owned(),
        entity_id: event.entity_id,
        case_id: event.case_id,
        changes: match event.rendered {
            Some(text) => text,
            None => super::redact(event.changes).to_string(),
        },
        correlation_id: actor.correlation_id.clone(),
        ip: actor.ip.clone(),
        user_agent: actor.user_agent.clone(),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// `e` placed after the head `(prev_seq, prev_hash)` of its chain, hashed.
fn seal(mut e: entry::Model, prev_seq: i64, prev_hash: String) -> entry::Model {
    e.sequence = prev_seq + 1;
    e.hash = entry_hash(&prev_hash, &e);
    e.prev_hash = prev_hash;
    e
}

/// The result of recomputing a firm's chains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub valid: bool,
    pub entries_checked: u64,
    /// The chain in which the first break was found.
    pub first_invalid_chain: Option<i32>,
    /// The first sequence number (in that chain) at which it does not hold: an edited,
    /// inserted, deleted or reordered entry, or a head that does not match the last entry.
    pub first_invalid_sequence: Option<i64>,
}

const PAGE: u64 = 1_000;

/// Recomputes every chain of `firm` from its anchor to its head, in one read-only snapshot
/// (so a write committed meanwhile cannot make a healthy chain look broken).
pub async fn verify(db: &sea_orm::DatabaseConnection, firm: Uuid) -> Result<Verification, DbErr> {
    use sea_orm::{AccessMode, IsolationLevel, TransactionTrait};
    let tx = db.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)).await?;
    let v = verify_in(&tx, firm).await?;
    tx.commit().await?;
    Ok(v)
}

async fn verify_in(db: &impl ConnectionTrait, firm: Uuid) -> Result<Verification, DbErr> {
    let heads = head::Entity::find().filter(head::Column::FirmId.eq(firm)).all(db).await?;
    // Chains that have entries but no head are broken too (a forged chain, or a deleted head).
    let chains_with_entries: Vec<i32> = entry::Entity::find()
        .select_only()
        .column(entry::Column::Chain)
        .distinct()
        .filter(entry::Column::FirmId.eq(firm))
        .into_tuple()
        .all(db)
        .await?;
    let mut checked = 0u64;
    for c in &chains_with_entries {
        if !heads.iter().any(|h| h.chain == *c) {
            return Ok(Verification {
                valid: false,
                entries_checked: checked,
                first_invalid_chain: Some(*c),
                first_invalid_sequence: Some(1),
            });
        }
    }
    let mut heads = heads;
    heads.sort_by_key(|h| h.chain);
    for h in heads {
        let (n, broken) = verify_chain(db, firm, &h).await?;
        checked += n;
        if let Some(seq) = broken {
            return Ok(Verification {
                valid: false,
                entries_checked: checked,
                first_invalid_chain: Some(h.chain),
                first_invalid_sequence: Some(seq),
            });
        }
    }
    Ok(Verification { valid: true, entries_checked: checked, first_invalid_chain: None, first_invalid_sequence: None })
}

/// Walks one chain; returns the entries that held and the first sequence that did not.
async fn verify_chain(db: &impl ConnectionTrait, firm: Uuid, h: &head::Model) -> Result<(u64, Option<i64>), DbErr> {
    let (mut expect_seq, mut prev_hash) = (h.anchor_sequence + 1, h.anchor_hash.clone());
    let mut checked = 0u64;
    let mut after = i64::MIN;
    loop {
        let rows = entry::Entity::find()
            .filter(entry::Column::FirmId.eq(firm))
            .filter(entry::Column::Chain.eq(h.chain))
            .filter(entry::Column::Sequence.gt(after))
            .order_by_asc(entry::Column::Sequence)
            .limit(PAGE)
            .all(db)
            .await?;
        let n = rows.len() as u64;
        for e in rows {
            after = e.sequence;
            if e.sequence != expect_seq || e.prev_hash != prev_hash || e.hash != entry_hash(&prev_hash, &e) {
                return Ok((checked, Some(expect_seq.min(e.sequence))));
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
    if h.sequence != expect_seq - 1 || h.hash != prev_hash {
        return Ok((checked, Some(expect_seq)));
    }
    Ok((checked, None))
}

/// Every firm that has a chain.
pub async fn firms(db: &impl ConnectionTrait) -> Result<Vec<Uuid>, DbErr> {
    let mut firms: Vec<Uuid> = head::Entity::find().all(db).await?.into_iter().map(|h| h.firm_id).collect();
    // A firm whose heads were deleted still has entries: it must be verified (and fail).
    let with_entries: Vec<Uuid> =
        entry::Entity::find().select_only().column(entry::Column::FirmId).distinct().into_tuple().all(db).await?;
    firms.extend(with_entries);
    firms.sort();
    firms.dedup();
    Ok(firms)
}

/// Deletes `firm`'s entries older than `before`, keeping every chain verifiable: in each
/// chain, the last pruned entry's sequence and hash become the anchor the first kept entry
/// chains to, and the newest entry always stays. The deletion is itself audited (as a
/// system action) in the same transaction. Returns how many entries were removed.
pub async fn prune(
    db: &sea_orm::DatabaseConnection,
    firm: Uuid,
    before: DateTime<Utc>,
) -> Result<u64, crate::db::DbError> {
    let done = crate::db::transaction(db, crate::db::TxOptions::write(), |tx| async move {
        prune_in(&tx, firm, before).await.map_err(crate::db::DbError::from)
    })
    .await?;
    // Pruning records no domain events (only its own audit entry).
    Ok(done.value)
}

async fn prune_in(tx: &crate::db::Tx, firm: Uuid, before: DateTime<Utc>) -> Result<u64, DbErr> {
    let mut q = head::Entity::find().filter(head::Column::FirmId.eq(firm)).order_by_asc(head::Column::Chain);
    if tx.get_database_backend() == DbBackend::Postgres {
        q = q.lock(LockType::Update);
    }
    let heads = q.all(tx).await?;
    let mut removed = 0u64;
    let mut anchors = Vec::new();
    tx.execute_unprepared("INSERT INTO audit_prune_guard (id) VALUES (1)").await?;
    for h in heads {
        let last = entry::Entity::find()
            .filter(entry::Column::FirmId.eq(firm))
            .filter(entry::Column::Chain.eq(h.chain))
            .filter(entry::Column::OccurredAt.lt(before))
            .filter(entry::Column::Sequence.lt(h.sequence))
            .order_by_desc(entry::Column::Sequence)
            .one(tx)
            .await?;
        let Some(last) = last else { continue };
        removed += entry::Entity::delete_many()
            .filter(entry::Column::FirmId.eq(firm))
            .filter(entry::Column::Chain.eq(h.chain))
            .filter(entry::Column::Sequence.lte(last.sequence))
            .exec(tx)
            .await?
            .rows_affected;
        head::Entity::update_many()
            .col_expr(head::Column::AnchorSequence, Expr::value(last.sequence))
            .col_expr(head::Column::AnchorHash, Expr::value(last.hash.clone()))
            .col_expr(head::Column::PrunedAt, Expr::value(clock::now()))
            .filter(head::Column::FirmId.eq(firm))
            .filter(head::Column::Chain.eq(h.chain))
            .exec(tx)
            .await?;
        anchors
            .push(serde_json::json!({ "chain": h.chain, "throughSequence": last.sequence, "anchorHash": last.hash }));
    }
    tx.execute_unprepared("DELETE FROM audit_prune_guard").await?;
    if removed == 0 {
        return Ok(0);
    }
    let event = AuditEvent::new("audit.prune", "audit_trail", None).changes(serde_json::json!({
        "removedEntries": removed,
        "anchors": anchors,
        "before": time(before),
    }));
    append(tx, firm, &Actor::system(), event).await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sequence: i64, changes: &str, user_agent: Option<&str>) -> entry::Model {
        entry::Model {
            id: Uuid::now_v7(),
            firm_id: Uuid::now_v7(),
            chain: 7,
            sequence,
            occurred_at: clock::now(),
            actor_type: "user".into(),
            actor_id: Some(Uuid::now_v7()),
            actor_role: Some("admin".into()),
            action: "case.create".into(),
            entity_type: "case".into(),
            entity_id: Some("x".into()),
            case_id: None,
            changes: changes.into(),
            correlation_id: None,
            ip: None,
            user_agent: user_agent.map(str::to_owned),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// PostgreSQL hashes `prev ‖ before ‖ sequence ‖ after`; it must be the canonical
    /// encoding exactly, whatever the stored text holds (even the marker itself).
    #[test]
    fn the_split_around_the_sequence_rebuilds_the_canonical_encoding() {
        for (seq, changes, ua) in [
            (1, "{}", None),
            (42, r#"{"sequence":0,"x":{"old":null,"new":",\"sequence\":0,"}}"#, Some(",\"sequence\":9,")),
            (i64::MAX, "{\"t\":\"\\u0000 é ✓\"}", Some("Mozilla/5.0")),
        ] {
            let e = entry(seq, changes, ua);
            let (before, after) = canonical_around_sequence(&e).unwrap();
            assert_eq!(format!("{before}{seq}{after}").into_bytes(), canonical(&e));
            let mut h = Sha256::new();
            h.update(format!("{GENESIS}{before}{seq}{after}"));
            assert_eq!(hex(&h.finalize()), entry_hash(GENESIS, &e));
        }
    }
}
