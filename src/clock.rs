//! The one source of "now": UTC, truncated to microseconds.
//!
//! PostgreSQL keeps microseconds; truncating everywhere makes a timestamp read back from either
//! database equal to the one written, which keyset cursors and `updatedAt` comparisons rely on.

use chrono::{DateTime, SubsecRound, Utc};

/// The current time in UTC at microsecond precision.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Truncates a client-supplied time to the precision we store.
/// Whether a client-supplied time is in the years 1–9999, which both databases store and
/// every format we write can express.
pub fn in_range(t: DateTime<Utc>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&t.year())
}

/// Whether a client-supplied date is in the years 1–9999.
pub fn date_in_range(d: chrono::NaiveDate) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&d.year())
}

pub fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}
