//! The console's live plots: request rate and p99 latency of this process over the last hour.
//!
//! Every request's duration goes into a fixed log-scale histogram of atomic counters (one
//! relaxed add each, next to the Prometheus histogram the request already feeds). A task
//! started with the first request reads it every [`INTERVAL`] and keeps one point per interval
//! for an hour: the requests in it, their rate, and the 99th percentile, taken from the
//! interval's own counts (the upper bound of the bucket holding the 99th percentile; buckets
//! are 25 % apart, so the figure is within 25 % above the true value).

use std::{
    collections::VecDeque,
    sync::{
        LazyLock, Mutex, Once,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One point per this long.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// An hour of points.
const KEEP: usize = 360;
/// Bucket upper bounds in microseconds: 50 µs × 1.25^i, up to about 2 minutes.
const BUCKETS: usize = 67;

static BOUNDS_US: LazyLock<[u64; BUCKETS]> = LazyLock::new(|| {
    let mut b = [0u64; BUCKETS];
    let mut v = 50.0f64;
    for x in &mut b {
        *x = v.round() as u64;
        v *= 1.25;
    }
    b
});
/// Counts per bucket; the last slot holds everything slower than the last bound.
static COUNTS: [AtomicU64; BUCKETS + 1] = [const { AtomicU64::new(0) }; BUCKETS + 1];
static POINTS: LazyLock<Mutex<VecDeque<Point>>> = LazyLock::new(|| Mutex::new(VecDeque::with_capacity(KEEP)));
static SAMPLER: Once = Once::new();

/// One interval.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// The end of the interval.
    pub at: DateTime<Utc>,
    pub requests: u64,
    pub rate_per_second: f64,
    /// None when the interval had no requests.
    pub p99_ms: Option<f64>,
}

/// The last hour, oldest first.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub interval_seconds: u64,
    pub points: Vec<Point>,
}

/// Counts one request that took `elapsed`; starts the sampler on first use (inside a Tokio
/// runtime, as every request is).
pub fn record(elapsed: Duration) {
    let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
    let i = BOUNDS_US.partition_point(|&b| b < us);
    COUNTS[i].fetch_add(1, Ordering::Relaxed);
    SAMPLER.call_once(|| {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sample_forever());
        }
    });
}

fn read() -> [u64; BUCKETS + 1] {
    std::array::from_fn(|i| COUNTS[i].load(Ordering::Relaxed))
}

async fn sample_forever() {
    let mut last = read();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = read();
        let delta: Vec<u64> = now.iter().zip(last.iter()).map(|(n, l)| n.saturating_sub(*l)).collect();
        last = now;
        push(point(Utc::now(), &delta));
    }
}

/// The point for an interval whose per-bucket counts are `delta`.
fn point(at: DateTime<Utc>, delta: &[u64]) -> Point {
    let requests: u64 = delta.iter().sum();
    let p99_ms = (requests > 0).then(|| {
        let rank = (requests * 99).div_ceil(100);
        let mut seen = 0;
        let i = delta
            .iter()
            .position(|c| {
                seen += c;
                seen >= rank
            })
            .unwrap_or(BUCKETS);
        // The overflow slot has no upper bound: report the last bound.
        BOUNDS_US[i.min(BUCKETS - 1)] as f64 / 1000.0
    });
    Point { at, requests, rate_per_second: requests as f64 / INTERVAL.as_secs_f64(), p99_ms }
}

fn push(p: Point) {
    let mut points = POINTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if points.len() == KEEP {
        points.pop_front();
    }
    points.push_back(p);
}

/// The points kept, oldest first.
pub fn series() -> Series {
    let points = POINTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect();
    Series { interval_seconds: INTERVAL.as_secs(), points }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_the_bound_of_the_bucket_holding_the_99th_percentile() {
        let mut delta = vec![0u64; BUCKETS + 1];
        // 990 fast requests (under 50 µs) and 10 slow ones around 100 ms.
        delta[0] = 990;
        let slow = BOUNDS_US.partition_point(|&b| b < 100_000);
        delta[slow] = 10;
        let p = point(Utc::now(), &delta);
        assert_eq!(p.requests, 1_000);
        assert!((p.rate_per_second - 100.0).abs() < 1e-9);
        assert_eq!(p.p99_ms, Some(0.05), "the 990th request is still a fast one");
        delta[0] = 980;
        let p = point(Utc::now(), &delta);
        let ms = p.p99_ms.unwrap();
        assert!((100.0..125.0).contains(&ms), "{ms}");
        assert_eq!(point(Utc::now(), &[0; BUCKETS + 1]).p99_ms, None);
    }

    #[test]
    fn bounds_grow_by_a_quarter_and_cover_two_minutes() {
        assert_eq!(BOUNDS_US[0], 50);
        assert!(BOUNDS_US[BUCKETS - 1] >= 120_000_000);
        assert!(BOUNDS_US.windows(2).all(|w| w[1] > w[0]));
    }
}
