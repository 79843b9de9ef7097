//! What a page of a list is: the paging information operations return with their items, and
//! the envelope sends as `meta.pagination`. A domain type, so operations need nothing of
//! the HTTP layer to describe their pages.

use serde::Serialize;

/// Paging information on list responses: offset or cursor style.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Pagination {
    Offset(OffsetPagination),
    Cursor(CursorPagination),
}

/// `?page=&limit=` paging.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffsetPagination {
    pub page: u64,
    pub limit: u64,
    pub total: u64,
    pub total_pages: u64,
    pub has_next: bool,
}

/// `?cursor=&limit=` paging.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CursorPagination {
    pub limit: u64,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}
