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
pub fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}
