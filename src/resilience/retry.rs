//! Retrying an outside call: exponential backoff with full jitter, a maximum number of
//! attempts and a total deadline, and only for errors the caller says are safe to retry
//! (a timeout on a non-idempotent call is not, for instance).

use std::{future::Future, time::Duration};

/// How to retry.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The backoff cap before jitter for attempt n is `base * 2^(n-1)`, at most `max_delay`.
    pub base: Duration,
    pub max_delay: Duration,
    /// No attempt starts after this much time has passed since the first.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the wait after failed attempt `attempt` (1-based), before jitter.
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max_delay)
    }

    /// "Full jitter": a uniformly random wait between zero and the cap, so clients that
    /// failed together do not retry together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self.cap(attempt).as_micros() as u64;
        Duration::from_micros(if cap == 0 { 0 } else { random_u64() % (cap + 1) })
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // Jitter needs no cryptographic quality; if the OS source fails, no jitter is a safe fallback.
    if getrandom::fill(&mut b).is_err() {
        return 0;
    }
    u64::from_le_bytes(b)
}

/// Runs `call` until it succeeds, fails with an error `retryable` rejects, runs out of
/// attempts, or would start past the deadline. Returns the last error.
pub async fn retry<T, E, F, Fut>(policy: RetryPolicy, retryable: impl Fn(&E) -> bool, mut call: F) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    let mut attempt = 1;
    loop {
        match call(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let wait = policy.delay(attempt);
                let out_of_time = started.elapsed() + wait >= policy.deadline;
                if attempt >= policy.max_attempts || !retryable(&e) || out_of_time {
                    return Err(e);
                }
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn caps_grow_exponentially_up_to_the_maximum_and_jitter_stays_below_them() {
        let p =
            RetryPolicy { base: Duration::from_millis(100), max_delay: Duration::from_secs(1), ..Default::default() };
        let caps: Vec<u128> = (1..=6).map(|a| p.cap(a).as_millis()).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
        for a in 1..=6 {
            for _ in 0..50 {
                assert!(p.delay(a) <= p.cap(a));
            }
        }
        assert_eq!(p.cap(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_within_the_attempt_budget() {
        let calls = AtomicU32::new(0);
        let r: Result<u32, &str> = retry(
            RetryPolicy::default(),
            |_| true,
            |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { if n < 3 { Err("transient") } else { Ok(n) } }
            },
        )
        .await;
        assert_eq!(r, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_attempts_and_on_unsafe_errors() {
        let calls = AtomicU32::new(0);
        let r: Result<(), &str> = retry(
            RetryPolicy { max_attempts: 3, ..Default::default() },
            |_| true,
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err("down") }
            },
        )
        .await;
        assert_eq!(r, Err("down"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let r: Result<(), &str> = retry(
            RetryPolicy::default(),
            |e| *e != "not idempotent",
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err("not idempotent") }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn never_starts_an_attempt_past_the_deadline() {
        let p = RetryPolicy {
            max_attempts: 100,
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
            deadline: Duration::from_millis(2_500),
        };
        let started = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let _: Result<(), ()> = retry(
            p,
            |_| true,
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(()) }
            },
        )
        .await;
        assert!(started.elapsed() < Duration::from_millis(2_500));
        assert!(calls.load(Ordering::SeqCst) >= 2);
    }
}
