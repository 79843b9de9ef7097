//! Writing many rows at once, inside the caller's transaction.
//!
//! [`insert_rows`] is the fast path every bulk operation uses. On PostgreSQL each batch is
//! one statement, `INSERT … SELECT * FROM unnest($1::uuid[], $2::text[], …)`, with one
//! parameter per column holding the whole column: a never-null column ([`req`]) as a typed
//! array, sent in PostgreSQL's binary format, a nullable one ([`col`]) as an array literal.
//! The statement is prepared once, the server runs it about as fast as `COPY`, and — unlike
//! `COPY` — it runs on the transaction SeaORM holds, so the rows, their audit entries and
//! their jobs commit or roll back together. On SQLite each batch is one multi-row
//! `INSERT … VALUES (…), (…)` prepared statement, as many rows as the variable limit allows,
//! all in the caller's single transaction.
//!
//! Rows are given as [`Cell`]s in the table's column order; the caller has validated them.
//!
//! [`one_of`] is how bulk paths look rows up by a list of keys (which case numbers exist
//! already, say): on PostgreSQL one array parameter, `= ANY($n)`, never an `IN ($2, …)`
//! list — see its documentation for the measurements behind that.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};
use uuid::Uuid;

/// One value of a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Uuid(Uuid),
    Int(i64),
    Bool(bool),
    Time(DateTime<Utc>),
    Date(NaiveDate),
}

impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Text(v)
    }
}
impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Text(v.to_owned())
    }
}
impl From<Uuid> for Cell {
    fn from(v: Uuid) -> Self {
        Cell::Uuid(v)
    }
}
impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Cell::Int(v)
    }
}
impl From<i32> for Cell {
    fn from(v: i32) -> Self {
        Cell::Int(i64::from(v))
    }
}
impl From<bool> for Cell {
    fn from(v: bool) -> Self {
        Cell::Bool(v)
    }
}
impl From<DateTime<Utc>> for Cell {
    fn from(v: DateTime<Utc>) -> Self {
        Cell::Time(v)
    }
}
impl From<NaiveDate> for Cell {
    fn from(v: NaiveDate) -> Self {
        Cell::Date(v)
    }
}
impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Null, Into::into)
    }
}

/// A column: its name and its PostgreSQL type (for the array cast).
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub pg_type: &'static str,
    /// Never null: on PostgreSQL the column is sent as a binary typed array (no text to
    /// parse on the server, nor to escape here); a nullable column goes as an array literal,
    /// the one form that carries NULL elements through SeaORM.
    pub required: bool,
}

/// A table's name and the columns a bulk insert fills, in row order.
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
}

/// Shorthand for a [`Column`].
pub const fn col(name: &'static str, pg_type: &'static str) -> Column {
    Column { name, pg_type, required: false }
}

/// The condition "`column` is one of `values`". On PostgreSQL `column = ANY($n)` with the
/// values as one array parameter; on SQLite `column IN (…)`.
///
/// Why not `IN ($2, …, $1001)` on PostgreSQL: sqlx prepares every statement, and after five
/// runs PostgreSQL may switch to a generic plan, made once with the table's size *then* and
/// kept. A bulk import's existence check made its generic plan while the table was nearly
/// empty — a sequential scan, comparing each row with each of the thousand parameters — and
/// kept it while the table grew: ten requests of 10,000 cases took 0.55 s for the first and
/// 19.5 s for the tenth. With one array parameter the generic plan probes the unique index
/// once the table has more than a few dozen rows (measured with `psql`, ten existence checks
/// of 1,000 numbers per 10,000 rows added, 10,000 to 90,000 rows: `IN` list 3.8 s rising to
/// 34 s, `= ANY($2)` 11–57 ms throughout, also from a table analysed at 60 rows; forcing
/// custom plans instead, or `ANALYZE` after each batch, 44 → 229 ms: with a thousand values
/// the planner prefers a sequential scan up to about 100 times as many rows). A generic plan
/// made at a few dozen rows can still scan; [`analyze_grown`] sees to that. The array is also
/// one statement for any number of values rather than one per list length. The figures and
/// the other options are in `docs/ARCHITECTURE.md` ("Query plans as the table grows").
pub fn one_of<C, V, I>(backend: DbBackend, column: C, values: I) -> sea_orm::sea_query::Expr
where
    C: sea_orm::ColumnTrait,
    V: Into<Value> + sea_orm::sea_query::postgres_array::NotU8,
    I: IntoIterator<Item = V>,
{
    if backend == DbBackend::Postgres { column.eq_any(values) } else { column.is_in(values) }
}

/// Rows a committed bulk write must have added to a table before [`analyze_grown`] looks at it.
const ANALYZE_MIN_ROWS: usize = 1_000;

/// After a bulk write has committed, on PostgreSQL: `ANALYZE`s each of `grown` (table, rows
/// added) that this write grew by at least [`ANALYZE_MIN_ROWS`] and that has at least doubled
/// since its statistics were taken (or was never analysed). Fresh statistics also invalidate
/// every cached plan of the table in every session, so a generic plan made while the table
/// was small — a sequential scan, which [`one_of`]'s array form does not rule out once the
/// table was analysed small, nor does a lookup by id — is made again at the table's new size
/// right away, rather than when autovacuum next analyses the table (a minute or more later).
/// A plan made at half the present size still chooses as it should; one made at a few dozen
/// rows does not.
///
/// On a task of its own, not awaited, and only on doubling: at 100,000 cases `ANALYZE` took
/// about 90 ms for `cases` and 100–150 ms for `audit_entries` (it samples 30,000 rows whatever
/// the size). Awaited after every import request of 10,000 cases it made each 0.53 s instead of
/// 0.35 s; on a task of its own after every request, 0.40 s rising to 0.52–0.57 s (the two
/// cores shared with it); on doubling, four times in ten requests. A failure is logged (the
/// write has committed).
pub fn analyze_grown(db: &sea_orm::DatabaseConnection, grown: &[(&'static str, usize)]) {
    let tables: Vec<(&'static str, usize)> =
        grown.iter().copied().filter(|(_, added)| *added >= ANALYZE_MIN_ROWS).collect();
    if db.get_database_backend() != DbBackend::Postgres || tables.is_empty() {
        return;
    }
    let db = db.clone();
    tokio::spawn(async move {
        for (table, added) in tables {
            let analyze = async {
                let Some((tuples, changed)) = statistics(&db, table).await? else { return Ok(()) };
                // The change counter lags this write's commit: count at least what it added.
                if tuples < 0.0 || changed.max(added as f64) >= tuples {
                    db.execute_unprepared(&format!("ANALYZE \"{table}\"")).await?;
                }
                Ok::<_, DbErr>(())
            };
            if let Err(e) = analyze.await {
                tracing::warn!(table, error = %e, "ANALYZE after a bulk write failed");
            }
        }
    });
}

/// A PostgreSQL table's statistics row count (-1 until first analysed or vacuumed) and the
/// rows changed since they were taken; None for a table that does not exist.
async fn statistics(db: &sea_orm::DatabaseConnection, table: &str) -> Result<Option<(f64, f64)>, DbErr> {
    let known = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT reltuples::float8, pg_stat_get_mod_since_analyze(oid)::float8 FROM pg_class \
         WHERE oid = to_regclass($1)",
        [table.into()],
    );
    let Some(row) = db.query_one_raw(known).await? else { return Ok(None) };
    Ok(Some((row.try_get_by_index(0)?, row.try_get_by_index(1)?)))
}

/// Tables whose statistics the `db.analyze` job keeps up with on PostgreSQL.
pub const ANALYZED_TABLES: &[&str] =
    &["cases", "case_team_members", "parties", "docket_entries", "audit_entries", "domain_events", "sessions"];

/// Runs `ANALYZE` on each of `tables` (PostgreSQL) whose rows changed since its statistics by
/// at least [`ANALYZE_MIN_ROWS`] and by half its size (or that was never analysed and has
/// that many changes): what autovacuum does, for servers where it is off or lags behind a
/// table that grows from empty. Stale statistics are not a slow query's only cost: a plan
/// cached while a table was small stays until they change (seen here: `GET /cases` at 139
/// req/s instead of 8,500 after another instance added 66,000 cases to a table last analysed
/// at none, until `ANALYZE cases`). Returns the tables analysed. Run every minute by the
/// `db.analyze` job.
pub async fn analyze_stale(
    db: &sea_orm::DatabaseConnection,
    tables: &[&'static str],
) -> Result<Vec<&'static str>, DbErr> {
    let mut done = Vec::new();
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(done);
    }
    for table in tables {
        let Some((tuples, changed)) = statistics(db, table).await? else { continue };
        let min = ANALYZE_MIN_ROWS as f64;
        if changed >= min && (tuples < 0.0 || changed >= (tuples * 0.5).max(min)) {
            db.execute_unprepared(&format!("ANALYZE \"{table}\"")).await?;
            done.push(*table);
        }
    }
    Ok(done)
}

/// Shorthand for a [`Column`] that is never null (a null there fails the encoding).
pub const fn req(name: &'static str, pg_type: &'static str) -> Column {
    Column { name, pg_type, required: true }
}

/// Rows per PostgreSQL statement: large enough that per-statement costs vanish, small enough
/// that one statement's parameters stay a few megabytes.
const PG_BATCH: usize = 5_000;
/// And at most this many bytes of parameters (estimated, escaping included): 5,000 rows of
/// long rich-text descriptions would otherwise approach PostgreSQL's 1 GB message limit.
const PG_BATCH_BYTES: usize = 64 << 20;
/// SQLite's default limit of bound variables per statement.
const SQLITE_MAX_VARIABLES: usize = 32_766;

/// Inserts `rows` into `table` in the caller's transaction. Returns the number inserted.
/// Constraint violations fail the statement (and, on PostgreSQL, the transaction: callers
/// that want to go on after one run the insert in a [`savepoint`](super::savepoint)).
pub async fn insert_rows(db: &impl ConnectionTrait, table: &Table, rows: &[Vec<Cell>]) -> Result<u64, DbErr> {
    encode(db.get_database_backend(), table, rows)?.run(db).await
}

/// Rows made into the statements that insert them, for one database. Making them is plain
/// CPU work, apart from the database: a writer of many batches makes the next batch's on
/// another thread ([`tokio::task::spawn_blocking`]) while the database runs this one's.
#[derive(Debug, Default)]
pub struct Encoded {
    statements: Vec<Statement>,
}

impl Encoded {
    /// Runs the statements in the caller's transaction; returns the number of rows inserted.
    pub async fn run(self, db: &impl ConnectionTrait) -> Result<u64, DbErr> {
        let mut inserted = 0;
        for statement in self.statements {
            inserted += db.execute_raw(statement).await?.rows_affected();
        }
        Ok(inserted)
    }
}

/// The statements [`insert_rows`] runs for `rows` on `backend`.
pub fn encode(backend: DbBackend, table: &Table, rows: &[Vec<Cell>]) -> Result<Encoded, DbErr> {
    if let Some(bad) = rows.iter().position(|r| r.len() != table.columns.len()) {
        return Err(DbErr::Custom(format!(
            "bulk insert into {}: row {bad} has {} values for {} columns",
            table.name,
            rows[bad].len(),
            table.columns.len()
        )));
    }
    let statements = match backend {
        DbBackend::Postgres => batches(rows, PG_BATCH, PG_BATCH_BYTES)
            .map(|chunk| {
                let (sql, values) = pg_insert(table, chunk)?;
                Ok(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
            })
            .collect::<Result<_, DbErr>>()?,
        backend => {
            let per_statement = (SQLITE_MAX_VARIABLES / table.columns.len()).clamp(1, 2_000);
            rows.chunks(per_statement)
                .map(|chunk| {
                    let sql = sqlite_statement(table, chunk.len());
                    let values: Vec<Value> = chunk.iter().flat_map(|r| r.iter().map(sqlite_value)).collect();
                    Statement::from_sql_and_values(backend, sql, values)
                })
                .collect()
        }
    };
    Ok(Encoded { statements })
}

fn column_list(table: &Table) -> String {
    table.columns.iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ")
}

/// An upper bound of a row's size as array-literal parameters (every character escaped).
fn row_bytes(row: &[Cell]) -> usize {
    row.iter().map(|c| if let Cell::Text(s) = c { 2 * s.len() + 4 } else { 40 }).sum()
}

/// `rows` in consecutive batches of at most `max_rows` rows and `max_bytes` estimated bytes
/// (a single row larger than that is a batch of its own).
fn batches(rows: &[Vec<Cell>], max_rows: usize, max_bytes: usize) -> impl Iterator<Item = &[Vec<Cell>]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= rows.len() {
            return None;
        }
        let (mut end, mut bytes) = (start, 0);
        while end < rows.len() && end - start < max_rows {
            let b = row_bytes(&rows[end]);
            if end > start && bytes + b > max_bytes {
                break;
            }
            bytes += b;
            end += 1;
        }
        let batch = &rows[start..end];
        start = end;
        Some(batch)
    })
}

/// PostgreSQL's insert of `rows` (one batch) and its parameters `$1…$n`, one per column.
fn pg_insert(table: &Table, rows: &[Vec<Cell>]) -> Result<(String, Vec<Value>), DbErr> {
    let values = table
        .columns
        .iter()
        .enumerate()
        .map(|(c, column)| {
            if column.required {
                typed_array(table, column, rows.iter().map(|r| &r[c]))
            } else {
                Ok(Value::from(pg_array(rows.iter().map(|r| &r[c]))))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok((pg_statement(table), values))
}

/// One never-null column as a typed array, which SeaORM binds in PostgreSQL's binary format.
fn typed_array<'a>(table: &Table, column: &Column, cells: impl Iterator<Item = &'a Cell>) -> Result<Value, DbErr> {
    fn all<'a, T>(cells: impl Iterator<Item = &'a Cell>, f: impl Fn(&Cell) -> Option<T>) -> Option<Vec<T>> {
        cells.map(f).collect()
    }
    let value = match column.pg_type {
        "uuid" => all(cells, |c| if let Cell::Uuid(u) = c { Some(*u) } else { None }).map(Value::from),
        "text" => all(cells, |c| if let Cell::Text(s) = c { Some(s.clone()) } else { None }).map(Value::from),
        "timestamptz" => all(cells, |c| if let Cell::Time(t) = c { Some(*t) } else { None }).map(Value::from),
        "int4" => all(cells, |c| if let Cell::Int(i) = c { i32::try_from(*i).ok() } else { None }).map(Value::from),
        "int8" => all(cells, |c| if let Cell::Int(i) = c { Some(*i) } else { None }).map(Value::from),
        "bool" => all(cells, |c| if let Cell::Bool(b) = c { Some(*b) } else { None }).map(Value::from),
        "date" => all(cells, |c| if let Cell::Date(d) = c { Some(*d) } else { None }).map(Value::from),
        _ => None,
    };
    value.ok_or_else(|| {
        DbErr::Custom(format!(
            "bulk insert into {}: column {} ({}) needs a non-null value of its type in every row",
            table.name, column.name, column.pg_type
        ))
    })
}

fn pg_statement(table: &Table) -> String {
    let arrays = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", i + 1, c.pg_type))
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO \"{}\" ({}) SELECT * FROM unnest({arrays})", table.name, column_list(table))
}

fn sqlite_statement(table: &Table, rows: usize) -> String {
    let one = format!("({})", vec!["?"; table.columns.len()].join(", "));
    let mut sql = format!("INSERT INTO \"{}\" ({}) VALUES ", table.name, column_list(table));
    sql.reserve(rows * (one.len() + 1));
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&one);
    }
    sql
}

/// The value SeaORM itself would bind for the cell, so rows written here read back exactly
/// like rows written through the entities (SQLite stores times and ids in SeaORM's format).
fn sqlite_value(c: &Cell) -> Value {
    match c {
        Cell::Null => Value::String(None),
        Cell::Text(s) => Value::from(s.clone()),
        Cell::Uuid(u) => Value::from(*u),
        Cell::Int(i) => Value::from(*i),
        Cell::Bool(b) => Value::from(*b),
        Cell::Time(t) => Value::from(*t),
        Cell::Date(d) => Value::from(*d),
    }
}

/// A PostgreSQL array literal (`{"a","b",NULL}`) of one column's values.
pub fn pg_array<'a>(cells: impl Iterator<Item = &'a Cell>) -> String {
    let mut out = String::from("{");
    for (i, c) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        match c {
            Cell::Null => out.push_str("NULL"),
            Cell::Text(s) => quote_into(&mut out, s),
            Cell::Uuid(u) => out.push_str(&u.hyphenated().to_string()),
            Cell::Int(n) => out.push_str(&n.to_string()),
            Cell::Bool(b) => out.push(if *b { 't' } else { 'f' }),
            Cell::Time(t) => {
                out.push('"');
                out.push_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true));
                out.push('"');
            }
            Cell::Date(d) => out.push_str(&d.format("%Y-%m-%d").to_string()),
        }
    }
    out.push('}');
    out
}

/// A double-quoted array element: backslash and double quote are escaped; everything else
/// (commas, braces, the word NULL, newlines) is literal inside the quotes.
fn quote_into(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_to_both_the_row_and_the_byte_cap() {
        let row = |n: usize| vec![Cell::Text("x".repeat(n)), Cell::Int(1)];
        let rows: Vec<Vec<Cell>> = (0..10).map(|_| row(100)).collect();
        // 244 estimated bytes a row: three fit in 800 bytes, and never more than 4 rows.
        let sizes: Vec<usize> = batches(&rows, 4, 800).map(<[_]>::len).collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
        let sizes: Vec<usize> = batches(&rows, 4, 1 << 20).map(<[_]>::len).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        // A row larger than the cap goes alone; nothing is lost or repeated.
        let mixed = vec![row(10), row(10_000), row(10)];
        let sizes: Vec<usize> = batches(&mixed, 100, 1_000).map(<[_]>::len).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert_eq!(batches(&[], 4, 800).count(), 0);
    }

    #[test]
    fn array_literals_quote_what_postgres_would_misread() {
        let cells = [
            Cell::Text(r#"a "quoted", {braced} \ text"#.into()),
            Cell::Null,
            Cell::Text("NULL".into()),
            Cell::Text(String::new()),
            Cell::Int(-3),
            Cell::Bool(true),
        ];
        assert_eq!(pg_array(cells.iter()), r#"{"a \"quoted\", {braced} \\ text",NULL,"NULL","",-3,t}"#);
    }

    #[test]
    fn required_columns_go_as_typed_arrays_and_refuse_nulls() {
        const T: Table = Table { name: "t", columns: &[req("a", "text"), col("b", "int8"), req("c", "int4")] };
        let rows = vec![
            vec![Cell::Text("x".into()), Cell::Null, Cell::Int(1)],
            vec![Cell::Text("y".into()), Cell::Int(2), Cell::Int(2)],
        ];
        let (_, values) = pg_insert(&T, &rows).unwrap();
        assert!(matches!(values[0], Value::Array(sea_orm::sea_query::ArrayType::String, Some(_))));
        assert_eq!(values[1], Value::from("{NULL,2}".to_owned()), "a nullable column stays a literal");
        assert!(matches!(values[2], Value::Array(sea_orm::sea_query::ArrayType::Int, Some(_))));
        // A null, a value of another type, or an int4 out of range fails the batch.
        for bad in [Cell::Null, Cell::Int(3)] {
            let rows = vec![vec![bad, Cell::Null, Cell::Int(1)]];
            assert!(pg_insert(&T, &rows).is_err());
        }
        let rows = vec![vec![Cell::Text("z".into()), Cell::Null, Cell::Int(i64::from(i32::MAX) + 1)]];
        assert!(pg_insert(&T, &rows).is_err());
    }

    #[test]
    fn sqlite_statements_have_one_placeholder_per_value() {
        const T: Table = Table { name: "t", columns: &[col("a", "text"), col("b", "int8")] };
        assert_eq!(sqlite_statement(&T, 2), r#"INSERT INTO "t" ("a", "b") VALUES (?, ?),(?, ?)"#);
        assert_eq!(pg_statement(&T), r#"INSERT INTO "t" ("a", "b") SELECT * FROM unnest($1::text[], $2::int8[])"#);
    }
}
