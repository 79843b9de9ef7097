//! `lexiflow import cases|parties FILE.csv`: bulk import from CSV through the same bulk
//! operations as the API, acting as a named user of the firm (their permissions apply and
//! every row is audited as theirs).
//!
//! The header row names the columns, spelled as the API's fields (`caseNumber`, `title`,
//! `type`, …; for parties also `caseNumber`, the case each party joins). Empty cells are
//! absent values. An unknown column stops the import before anything is written.
//!
//! The whole file is written in one transaction, so a crash or an interrupted import leaves
//! nothing half done. In `atomic` mode one bad row and nothing is imported; in `partial`
//! mode bad rows are left out. Either way every rejected row is written to the rejects file
//! (`FILE.rejects.csv` unless named) with its line number, error code and reason.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    app::App,
    auth::Principal,
    cases::{
        bulk::{self, BulkMode, BulkResult, CreateOptions, ItemError, OnConflict},
        model::case,
        ops::CreateCase,
    },
    http::error::{ApiError, ErrorCode},
    ids::{CaseId, FirmId, SessionId, UserId},
    parties::ops::CreateParty,
    users::model as user,
};

/// Columns a cases file may have.
const CASE_COLUMNS: &[&str] = &[
    "caseNumber",
    "title",
    "type",
    "status",
    "description",
    "court",
    "jurisdiction",
    "judge",
    "filedAt",
    "closedAt",
    "clientName",
    "leadAttorneyId",
];

/// Columns a parties file may have.
const PARTY_COLUMNS: &[&str] =
    &["caseNumber", "name", "kind", "type", "role", "email", "phone", "address", "website", "counsel", "notes"];

/// How to import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The e-mail address of the user the import acts as.
    pub actor: String,
    pub mode: BulkMode,
    pub on_conflict: OnConflict,
    /// Where rejected rows go (default: next to the file, `.rejects.csv`).
    pub rejects: Option<PathBuf>,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// What an import did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub file: PathBuf,
    pub rows: usize,
    pub imported: usize,
    pub skipped: usize,
    pub rejected: usize,
    /// Written only when rows were rejected.
    pub rejects_file: Option<PathBuf>,
    /// False when an atomic import was refused (nothing was written).
    pub committed: bool,
    pub seconds: f64,
    pub rows_per_second: f64,
}

/// The user the import acts as, as a principal of their firm.
async fn principal(app: &App, email: &str) -> anyhow::Result<Principal> {
    let u = user::Entity::find()
        .filter(user::Column::Email.eq(email.trim().to_lowercase()))
        .one(&app.db)
        .await?
        .with_context(|| format!("no user with the e-mail address {email}"))?;
    anyhow::ensure!(u.status == user::UserStatus::Active, "{email} is not an active user");
    Ok(Principal {
        user_id: UserId(u.id),
        firm_id: FirmId(u.firm_id),
        role: u.role,
        session_id: SessionId(Uuid::nil()),
        api_key: None,
    })
}

/// One parsed data row: its line in the file and its cells by column.
struct Row {
    line: u64,
    cells: Map<String, Value>,
}

fn read(file: &Path, allowed: &[&str], bar: &ProgressBar) -> anyhow::Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    let headers = reader.headers().with_context(|| format!("{}: no header row", file.display()))?.clone();
    let unknown: Vec<&str> = headers.iter().filter(|h| !allowed.contains(h)).collect();
    anyhow::ensure!(
        unknown.is_empty(),
        "{}: unknown column(s) {:?}; the columns are {}",
        file.display(),
        unknown,
        allowed.join(", ")
    );
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("{}: unreadable CSV", file.display()))?;
        let line = record.position().map_or(0, |p| p.line());
        let cells = headers
            .iter()
            .zip(record.iter())
            .filter(|(_, v)| !v.is_empty())
            .map(|(h, v)| (h.to_owned(), Value::String(v.to_owned())))
            .collect();
        rows.push(Row { line, cells });
        if rows.len() % 10_000 == 0 {
            bar.set_message(format!("read {} rows", rows.len()));
        }
    }
    Ok(rows)
}

fn parse<T: serde::de::DeserializeOwned>(cells: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(cells)).map_err(|e| ApiError::field("row", e.to_string()))
}

fn bar(opts: &ImportOptions, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        None,
        if opts.progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} rows  {{per_sec}}  ETA {{eta}}  {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Imports cases.
pub async fn cases(app: &App, file: &Path, opts: &ImportOptions) -> anyhow::Result<ImportReport> {
    let started = Instant::now();
    let p = principal(app, &opts.actor).await?;
    let bar = bar(opts, "cases");
    let rows = read(file, CASE_COLUMNS, &bar)?;
    bar.set_length(rows.len() as u64);
    bar.set_message("writing");
    let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
    let items = rows.into_iter().map(|r| parse::<CreateCase>(r.cells)).collect();
    let options = CreateOptions { mode: opts.mode, on_conflict: opts.on_conflict };
    let outcome = bulk::create_many(app, &p, items, options, &|done| bar.set_position(done as u64)).await;
    bar.finish_and_clear();
    finish(file, opts, &lines, outcome, started)
}

/// Imports parties; each row names its case by `caseNumber`.
pub async fn parties(app: &App, file: &Path, opts: &ImportOptions) -> anyhow::Result<ImportReport> {
    let started = Instant::now();
    let p = principal(app, &opts.actor).await?;
    let bar = bar(opts, "parties");
    let rows = read(file, PARTY_COLUMNS, &bar)?;
    bar.set_length(rows.len() as u64);
    bar.set_message("writing");
    let numbers: Vec<String> = {
        let mut n: Vec<String> =
            rows.iter().filter_map(|r| r.cells.get("caseNumber").and_then(|v| v.as_str()).map(str::to_owned)).collect();
        n.sort();
        n.dedup();
        n
    };
    let mut cases: HashMap<String, Uuid> = HashMap::new();
    for chunk in numbers.chunks(1_000) {
        let found: Vec<(Uuid, String)> = case::Entity::find()
            .select_only()
            .column(case::Column::Id)
            .column(case::Column::CaseNumber)
            .filter(case::Column::FirmId.eq(p.firm_id.0))
            .filter(case::Column::DeletedAt.is_null())
            .filter(crate::db::bulk::one_of(
                app.db.get_database_backend(),
                case::Column::CaseNumber,
                chunk.iter().cloned(),
            ))
            .into_tuple()
            .all(&app.db)
            .await?;
        cases.extend(found.into_iter().map(|(id, n)| (n, id)));
    }
    let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
    let items = rows
        .into_iter()
        .map(|mut r| {
            let number = r.cells.remove("caseNumber").and_then(|v| v.as_str().map(str::to_owned));
            let case = match number {
                None => return Err(ApiError::field("caseNumber", "required")),
                Some(n) => *cases.get(&n).ok_or_else(|| ApiError::not_found("case"))?,
            };
            Ok((CaseId(case), parse::<CreateParty>(r.cells)?))
        })
        .collect();
    let outcome = crate::parties::ops::create_across(app, &p, items, opts.mode).await;
    bar.set_position(lines.len() as u64);
    bar.finish_and_clear();
    finish(file, opts, &lines, outcome, started)
}

/// Writes the rejects file and the report; an atomic refusal is an error after that.
fn finish(
    file: &Path,
    opts: &ImportOptions,
    lines: &[u64],
    outcome: Result<BulkResult, ApiError>,
    started: Instant,
) -> anyhow::Result<ImportReport> {
    let (result, committed) = match outcome {
        Ok(r) => (r, true),
        Err(e) if e.code == ErrorCode::Conflict || e.code == ErrorCode::ValidationFailed => {
            let errors: Vec<ItemError> = e
                .details
                .as_ref()
                .and_then(|d| d.get("errors"))
                .and_then(|v| serde_json::from_value::<Vec<RawItemError>>(v.clone()).ok())
                .map(|v| v.into_iter().map(RawItemError::into_item).collect())
                .ok_or_else(|| anyhow::anyhow!("import refused: {}", e.message))?;
            let failed = errors.len();
            (BulkResult { total: lines.len(), failed, errors, ..BulkResult::default() }, false)
        }
        Err(e) => return Err(anyhow::anyhow!("import failed, nothing was written: {e}")),
    };
    let rejects_file = if result.errors.is_empty() {
        None
    } else {
        let path = opts.rejects.clone().unwrap_or_else(|| file.with_extension("rejects.csv"));
        let mut w = csv::Writer::from_path(&path).with_context(|| format!("cannot write {}", path.display()))?;
        w.write_record(["line", "code", "message", "details"])?;
        for e in &result.errors {
            let line = lines.get(e.index).copied().unwrap_or(0);
            let code =
                serde_json::to_value(e.code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            let details = e.details.as_ref().map(Value::to_string).unwrap_or_default();
            w.write_record([line.to_string(), code, defuse(&e.message), defuse(&details)])?;
        }
        w.flush()?;
        Some(path)
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok(ImportReport {
        file: file.to_owned(),
        rows: lines.len(),
        imported: if committed { result.succeeded } else { 0 },
        skipped: result.skipped,
        rejected: result.errors.len(),
        rejects_file,
        committed,
        seconds,
        rows_per_second: if seconds > 0.0 { lines.len() as f64 / seconds } else { 0.0 },
    })
}

/// A cell that would start a spreadsheet formula (`= + - @`, tab, CR) gets an apostrophe in
/// front: messages echo the file's own cells back.
fn defuse(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_owned(),
    }
}

/// An item error as it appears in an error body's details.
#[derive(serde::Deserialize)]
struct RawItemError {
    index: usize,
    code: String,
    message: String,
    details: Option<Value>,
}

impl RawItemError {
    fn into_item(self) -> ItemError {
        let code = serde_json::from_value(Value::String(self.code)).unwrap_or(ErrorCode::ValidationFailed);
        ItemError { index: self.index, code, message: self.message, details: self.details }
    }
}
