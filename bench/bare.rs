//! The benchmark's floor: a bare axum server that reads the same `cases` rows as LexiFlow,
//! through the same SeaORM entities and the same pool settings, with no middleware at all —
//! no authentication, no envelope, no access checks, no logging. `bench/run.sh` loads it and
//! the full LexiFlow stack side by side on one database and prints the ratio.
//!
//! Env: `DATABASE_URL` (the database LexiFlow uses), `PORT`, `DATABASE_MAX_CONNECTIONS`,
//! `BARE_FIRM_ID` (the firm whose cases the list shows).

#![allow(clippy::print_stdout, clippy::expect_used)]

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use lexiflow::{
    cases::{CaseView, model::case},
    config::{Config, FileConfig},
};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

/// The same allocator as the `lexiflow` binary, so the comparison is of the stacks alone.
#[global_allocator]
static GLOBAL: lexiflow_alloc::MiMalloc = lexiflow_alloc::MiMalloc;

async fn one(
    State((db, _)): State<(DatabaseConnection, Uuid)>,
    Path(id): Path<Uuid>,
) -> Result<Json<CaseView>, StatusCode> {
    match case::Entity::find_by_id(id).one(&db).await {
        Ok(Some(c)) => Ok(Json(c.into())),
        Ok(None) => Err(StatusCode::NOT_FOUND),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn list(State((db, firm)): State<(DatabaseConnection, Uuid)>) -> Result<Json<Vec<CaseView>>, StatusCode> {
    case::Entity::find()
        .filter(case::Column::FirmId.eq(firm))
        .filter(case::Column::DeletedAt.is_null())
        .order_by_desc(case::Column::CreatedAt)
        .order_by_desc(case::Column::Id)
        .limit(20)
        .all(&db)
        .await
        .map(|rows| Json(rows.into_iter().map(CaseView::from).collect()))
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

fn main() {
    // As the `lexiflow` binary does, so the comparison is of the stacks alone.
    lexiflow_alloc::configure();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime").block_on(serve());
}

async fn serve() {
    let env = std::env::vars().collect();
    let config = Config::from_sources(FileConfig::default(), &env).expect("configuration");
    let db = lexiflow::db::connect(&config.database).await.expect("database");
    // The list reads the same firm's newest cases as LexiFlow's list does.
    let firm: Uuid = std::env::var("BARE_FIRM_ID").ok().and_then(|f| f.parse().ok()).unwrap_or_default();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/cases", get(list))
        .route("/cases/{id}", get(one))
        .with_state((db, firm));
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3201);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    println!("bare reference serving on http://127.0.0.1:{port}");
    axum::serve(listener, app).await.expect("serve");
}
