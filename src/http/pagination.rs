//! Paging requests and opaque keyset cursors.
//!
//! Offset paging (`?page=&limit=`) is for tables with page numbers; cursor paging
//! (`?cursor=&limit=`) for infinite scroll. A cursor is the sort key and id of the last row
//! served, so rows inserted meanwhile are neither skipped nor repeated. It is opaque to
//! clients (base64url of JSON) and bound to the sort it was made for.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApiError;

/// Largest page a client may ask for.
pub const MAX_LIMIT: u64 = 100;
/// Highest page number accepted (deep offsets are slow; use cursors).
pub const MAX_PAGE: u64 = 100_000;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u64 = 20;

/// A decoded cursor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort it belongs to, e.g. `-createdAt`.
    #[serde(rename = "s")]
    pub sort: String,
    /// The sort key of the last row: text, or a time in RFC 3339 for time sorts.
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "i")]
    pub id: Uuid,
}

impl Cursor {
    /// Encodes for the client.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The key as a time (for time sorts).
    pub fn time_key(&self) -> Result<DateTime<Utc>, ApiError> {
        DateTime::parse_from_rfc3339(&self.key)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ApiError::field("cursor", "not a cursor this server issued"))
    }

    /// Formats a time key.
    pub fn format_time(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Decodes a client's cursor, checking it was made for `sort`.
    pub fn decode(s: &str, sort: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::field("cursor", "not a cursor this server issued");
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if c.sort != sort {
            return Err(ApiError::field("cursor", "the cursor was issued for another sort order"));
        }
        Ok(c)
    }
}

/// What a list request asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum PageRequest {
    Offset {
        page: u64,
        limit: u64,
    },
    /// `after` is None for the first page.
    Cursor {
        after: Option<Cursor>,
        limit: u64,
    },
}

impl PageRequest {
    /// From the raw query parameters; `cursor` present (even empty) selects cursor paging.
    pub fn parse(page: Option<u64>, limit: Option<u64>, cursor: Option<&str>, sort: &str) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        match (page, cursor) {
            (Some(_), Some(_)) => Err(ApiError::field("cursor", "use either page or cursor, not both")),
            (_, Some("")) => Ok(PageRequest::Cursor { after: None, limit }),
            (_, Some(c)) => Ok(PageRequest::Cursor { after: Some(Cursor::decode(c, sort)?), limit }),
            (Some(0), None) => Err(ApiError::field("page", "pages start at 1")),
            (Some(p), None) if p > MAX_PAGE => {
                Err(ApiError::field("page", format!("must be at most {MAX_PAGE}; use cursor paging to go deeper")))
            }
            (page, None) => Ok(PageRequest::Offset { page: page.unwrap_or(1), limit }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_is_bound_to_its_sort() {
        let c = Cursor { sort: "-createdAt".into(), key: "A-1".into(), id: Uuid::now_v7() };
        let s = c.encode();
        assert_eq!(Cursor::decode(&s, "-createdAt").unwrap(), c);
        assert!(Cursor::decode(&s, "title").is_err());
        assert!(Cursor::decode("not-a-cursor", "title").is_err());
    }

    #[test]
    fn limits_are_bounded() {
        assert!(PageRequest::parse(None, Some(101), None, "x").is_err());
        assert!(PageRequest::parse(None, Some(0), None, "x").is_err());
        assert!(PageRequest::parse(Some(0), None, None, "x").is_err());
        assert!(PageRequest::parse(Some(u64::MAX), None, None, "x").is_err());
        assert_eq!(PageRequest::parse(None, None, None, "x").unwrap(), PageRequest::Offset { page: 1, limit: 20 });
        assert_eq!(
            PageRequest::parse(None, Some(5), Some(""), "x").unwrap(),
            PageRequest::Cursor { after: None, limit: 5 }
        );
    }
}
