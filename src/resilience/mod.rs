//! The one way to call anything outside the process: a timeout and a circuit breaker per
//! named dependency (Redis today), and a retry policy for calls that are safe to repeat.
//! When a dependency keeps failing, the breaker opens and callers fall back at once instead
//! of each waiting out a timeout. Calls on a request's path that have a fallback (the rate
//! limiter) do not retry; background calls (telling other instances about a revoked
//! session) retry with backoff.

pub mod breaker;
pub mod retry;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use retry::{RetryPolicy, retry};

use std::{future::Future, time::Duration};

/// Why a guarded call did not produce a value.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker is open: the call was not attempted.
    #[error("{0} is unavailable (circuit open)")]
    Rejected(&'static str),
    /// The dependency did not answer in time.
    #[error("{0} did not answer within {1:?}")]
    Timeout(&'static str, Duration),
    /// The dependency answered with an error.
    #[error(transparent)]
    Failed(E),
}

/// Runs `f` through `breaker` with a deadline; the outcome is recorded on the breaker.
pub async fn guarded<T, E, F>(breaker: &Breaker, timeout: Duration, f: F) -> Result<T, CallError<E>>
where
    F: Future<Output = Result<T, E>>,
{
    let permit = breaker.try_acquire().map_err(|_| CallError::Rejected(breaker.name()))?;
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => {
            permit.success();
            Ok(v)
        }
        Ok(Err(e)) => {
            permit.failure();
            Err(CallError::Failed(e))
        }
        Err(_) => {
            permit.failure();
            Err(CallError::Timeout(breaker.name(), timeout))
        }
    }
}
