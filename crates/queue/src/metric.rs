//! Metric names, recorded through the `metrics` facade (the host process installs the exporter).

/// Gauge: jobs per queue and state, refreshed by [`crate::admin::stats`].
pub(crate) const JOBS: &str = "lexiflow_queue_jobs";
/// Histogram: handler run time per queue and job type.
pub(crate) const DURATION: &str = "lexiflow_queue_job_duration_seconds";
/// Counter: failed attempts per queue and job type (errors, panics, expired leases).
pub(crate) const FAILURES: &str = "lexiflow_queue_job_failures_total";
/// Counter: jobs moved to the dead-letter state per queue.
pub(crate) const DEAD_LETTERS: &str = "lexiflow_queue_dead_letters_total";
/// Counter: running handlers cancelled because their lease could not be renewed in time
/// (`reason="not_renewed"`) or was found reclaimed (`reason="lost"`), per queue and job type.
pub(crate) const LEASE_CANCELLATIONS: &str = "lexiflow_queue_lease_cancellations_total";
