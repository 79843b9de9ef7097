//! `/api/v1/cases/{id}/docket` handlers.

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use serde::Deserialize;

use super::ops::{self, CreateEntry, DocketEntryView, MAX_BATCH, UpdateEntry};
use crate::{
    app::App,
    auth::Principal,
    http::{
        ApiError, ApiResult, AppJson, AppPath, AppQuery, Envelope, IfMatch,
        envelope::{ErrorBody, Success},
        pagination::{DEFAULT_LIMIT, MAX_LIMIT, MAX_PAGE},
    },
    ids::{CaseId, DocketEntryId},
    input::OneOrMany,
};

/// `GET /cases/{id}/docket` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListDocketQuery {
    /// Page number, from 1.
    pub page: Option<u64>,
    /// Items per page, at most 100.
    pub limit: Option<u64>,
}

/// One entry or several (posted in order, all or none).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PostDocket {
    One(CreateEntry),
    Many(Vec<CreateEntry>),
}

/// `POST /cases/{id}/docket` body as read: what [`PostDocket`] documents, each entry kept as
/// JSON to be parsed in the handler. A batch past [`MAX_BATCH`] entries is refused while the
/// body is read, before the rest of it is parsed.
#[derive(Debug)]
pub struct DocketBody(OneOrMany);

impl<'de> Deserialize<'de> for DocketBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::input::one_or_many(d, MAX_BATCH, "entries").map(DocketBody)
    }
}

/// A case's docket, in sequence order. Sealed entries appear only to admins and the case's
/// lead attorney; restricted ones not to clients.
#[utoipa::path(get, path = "/cases/{id}/docket", tag = "docket",
    params(("id" = CaseId, Path, description = "case id"), ListDocketQuery),
    responses((status = 200, body = Success<Vec<DocketEntryView>>), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    p: Principal,
    AppPath(case_id): AppPath<CaseId>,
    AppQuery(q): AppQuery<ListDocketQuery>,
) -> ApiResult<Envelope<Vec<DocketEntryView>>> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let (items, pagination) = ops::list(&app, &p, case_id, q.page.unwrap_or(1).clamp(1, MAX_PAGE), limit).await?;
    Ok(Envelope::page(items, pagination))
}

/// Post one entry (an object) or several (an array, at most 1,000). The server assigns each
/// its `sequenceNumber`; a body that sets one is refused.
#[utoipa::path(post, path = "/cases/{id}/docket", tag = "docket", request_body = PostDocket,
    params(("id" = CaseId, Path, description = "case id")),
    responses((status = 201, body = Success<Vec<DocketEntryView>>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    p: Principal,
    AppPath(case_id): AppPath<CaseId>,
    AppJson(DocketBody(body)): AppJson<DocketBody>,
) -> ApiResult<impl IntoResponse> {
    // Parsed here rather than by serde's untagged enum, whose error would not say which field
    // was wrong.
    let parse = |v: serde_json::Value| {
        serde_json::from_value::<CreateEntry>(v).map_err(|e| ApiError::field("body", e.to_string()))
    };
    match body {
        OneOrMany::Many(items) => {
            let inputs = items.into_iter().map(parse).collect::<ApiResult<Vec<_>>>()?;
            let views = ops::create(&app, &p, case_id, inputs).await?;
            Ok(Envelope::created(views).into_response())
        }
        OneOrMany::One(one @ serde_json::Value::Object(_)) => {
            let mut views = ops::create(&app, &p, case_id, vec![parse(one)?]).await?;
            let v = views.pop().ok_or_else(|| ApiError::not_found("docket entry"))?;
            let version = v.version;
            Ok(Envelope::created(v).etag(version).into_response())
        }
        OneOrMany::One(_) => Err(ApiError::field("body", "expected a docket entry or an array of them")),
    }
}

/// One entry.
#[utoipa::path(get, path = "/cases/{id}/docket/{entryId}", tag = "docket",
    params(("id" = CaseId, Path, description = "case id"), ("entryId" = DocketEntryId, Path, description = "entry id")),
    responses((status = 200, body = Success<DocketEntryView>), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<App>,
    p: Principal,
    AppPath((case_id, id)): AppPath<(CaseId, DocketEntryId)>,
) -> ApiResult<Envelope<DocketEntryView>> {
    let v = ops::get(&app, &p, case_id, id).await?;
    let version = v.version;
    Ok(Envelope::ok(v).etag(version))
}

/// Change an entry (`If-Match` or `version` guards against lost updates); its number stays.
#[utoipa::path(patch, path = "/cases/{id}/docket/{entryId}", tag = "docket", request_body = UpdateEntry,
    params(("id" = CaseId, Path, description = "case id"), ("entryId" = DocketEntryId, Path, description = "entry id")),
    responses((status = 200, body = Success<DocketEntryView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn update(
    State(app): State<App>,
    p: Principal,
    AppPath((case_id, id)): AppPath<(CaseId, DocketEntryId)>,
    IfMatch(if_match): IfMatch,
    AppJson(input): AppJson<UpdateEntry>,
) -> ApiResult<Envelope<DocketEntryView>> {
    let v = ops::update(&app, &p, case_id, id, input, if_match).await?;
    let version = v.version;
    Ok(Envelope::ok(v).etag(version))
}

/// Strike an entry: it leaves the docket, its number is not reused.
#[utoipa::path(delete, path = "/cases/{id}/docket/{entryId}", tag = "docket",
    params(("id" = CaseId, Path, description = "case id"), ("entryId" = DocketEntryId, Path, description = "entry id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn delete(
    State(app): State<App>,
    p: Principal,
    AppPath((case_id, id)): AppPath<(CaseId, DocketEntryId)>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<impl IntoResponse> {
    ops::delete(&app, &p, case_id, id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Result<OneOrMany, serde_json::Error> {
        serde_json::from_str::<DocketBody>(json).map(|b| b.0)
    }

    #[test]
    fn a_batch_takes_max_batch_entries_and_refuses_one_more() {
        let batch = |n: usize| format!("[{}]", vec!["{}"; n].join(","));
        assert!(matches!(body(&batch(MAX_BATCH)), Ok(OneOrMany::Many(v)) if v.len() == MAX_BATCH));
        let e = body(&batch(MAX_BATCH + 1)).unwrap_err();
        assert!(e.to_string().contains(&format!("at most {MAX_BATCH} entries per request")), "{e}");
        // One entry is still an object, and anything else is left for the handler to refuse.
        assert!(matches!(body(r#"{"description":"x"}"#), Ok(OneOrMany::One(serde_json::Value::Object(_)))));
        assert!(matches!(body(r#""x""#), Ok(OneOrMany::One(serde_json::Value::String(_)))));
    }
}
