//! A circuit breaker: CLOSED until `failure_threshold` failures fall within `window`, then
//! OPEN (every call refused at once) for `cool_down`, then HALF_OPEN, where at most
//! `half_open_calls` trial calls go through; if they all succeed it closes, and any failure
//! opens it again. Time is injected (`*_at` methods) so the state machine is tested without
//! sleeping.

use std::{
    collections::VecDeque,
    sync::{Arc, LazyLock, Mutex, Weak},
    time::{Duration, Instant},
};

/// Tuning of one breaker.
#[derive(Clone, Copy, Debug)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub window: Duration,
    pub cool_down: Duration,
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(5),
            half_open_calls: 1,
        }
    }
}

/// The externally visible state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of the `lexiflow_circuit_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }

    /// `closed`, `open` or `half_open`.
    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: VecDeque<Instant> },
    Open { until: Instant },
    HalfOpen { in_flight: u32, succeeded: u32 },
}

impl Inner {
    fn state(&self) -> BreakerState {
        match self {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// Every breaker alive in this process, for the operator console: its dependency, the host it
/// guards (outbound calls have one breaker per host) and its state.
static REGISTRY: LazyLock<Mutex<Vec<Registered>>> = LazyLock::new(Mutex::default);

/// A breaker's name, target and state, held weakly so a dropped breaker leaves the registry.
type Registered = (&'static str, Option<String>, Weak<Mutex<Inner>>);

/// One breaker as the console shows it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BreakerView {
    /// The dependency (`redis`, `clamd`, `webhooks`, `google_calendar`, …).
    pub name: &'static str,
    /// The host, for breakers kept per host.
    pub target: Option<String>,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
}

/// The breakers alive in this process, by name and target.
pub fn snapshot() -> Vec<BreakerView> {
    let mut all = REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    all.retain(|(_, _, inner)| inner.strong_count() > 0);
    let mut views: Vec<BreakerView> = all
        .iter()
        .filter_map(|(name, target, inner)| {
            let inner = inner.upgrade()?;
            let state = inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).state();
            Some(BreakerView { name, target: target.clone(), state: state.label() })
        })
        .collect();
    views.sort_by(|a, b| (a.name, &a.target).cmp(&(b.name, &b.target)));
    views
}

/// A breaker for one named dependency; cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct Breaker {
    name: &'static str,
    config: BreakerConfig,
    inner: Arc<Mutex<Inner>>,
}

/// The call was refused: the breaker is open (or half-open with its trial calls taken).
#[derive(Debug)]
pub struct Rejected;

/// Permission to make one call; report how it went.
#[derive(Debug)]
#[must_use = "report the outcome with success() or failure()"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    trial: bool,
    reported: bool,
}

impl Permit<'_> {
    /// The call succeeded.
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record_at(Instant::now(), true, self.trial);
    }

    /// The call failed (error or timeout).
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record_at(Instant::now(), false, self.trial);
    }
}

impl Drop for Permit<'_> {
    /// A call abandoned before it finished (its future was dropped) decides nothing, but a
    /// half-open trial slot it held is given back, or the breaker would stay half-open.
    fn drop(&mut self) {
        if !self.reported && self.trial {
            self.breaker.release_trial();
        }
    }
}

impl Breaker {
    /// A closed breaker for `name`.
    pub fn new(name: &'static str, config: BreakerConfig) -> Self {
        Self::for_target(name, None, config)
    }

    /// A closed breaker for `name` in front of one `target` (a host).
    pub fn for_target(name: &'static str, target: Option<String>, config: BreakerConfig) -> Self {
        metrics::gauge!("lexiflow_circuit_breaker_state", "dependency" => name).set(0.0);
        let inner = Arc::new(Mutex::new(Inner::Closed { failures: VecDeque::new() }));
        let mut all = REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|(_, _, i)| i.strong_count() > 0);
        all.push((name, target, Arc::downgrade(&inner)));
        drop(all);
        Self { name, config, inner }
    }

    /// The dependency's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the state half-written (every
        // transition is a single assignment), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state (OPEN turns HALF_OPEN only when a call asks to go through).
    pub fn state(&self) -> BreakerState {
        self.lock().state()
    }

    /// Asks to make a call now.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        self.try_acquire_at(Instant::now()).map(|trial| Permit { breaker: self, trial, reported: false })
    }

    fn release_trial(&self) {
        if let Inner::HalfOpen { in_flight, .. } = &mut *self.lock() {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Asks to make a call at `now`; `Ok(true)` is a half-open trial call.
    pub fn try_acquire_at(&self, now: Instant) -> Result<bool, Rejected> {
        let mut inner = self.lock();
        let (result, transition) = match &mut *inner {
            Inner::Closed { .. } => (Ok(false), None),
            Inner::Open { until } if now >= *until => {
                *inner = Inner::HalfOpen { in_flight: 1, succeeded: 0 };
                (Ok(true), Some((BreakerState::Open, BreakerState::HalfOpen)))
            }
            Inner::Open { .. } => (Err(Rejected), None),
            Inner::HalfOpen { in_flight, .. } if *in_flight < self.config.half_open_calls => {
                *in_flight += 1;
                (Ok(true), None)
            }
            Inner::HalfOpen { .. } => (Err(Rejected), None),
        };
        drop(inner);
        if let Some((from, to)) = transition {
            self.transitioned(from, to);
        }
        if result.is_err() {
            metrics::counter!("lexiflow_circuit_breaker_rejected_calls_total", "dependency" => self.name).increment(1);
        }
        result
    }

    /// Records the outcome of a call made at `now`.
    pub fn record_at(&self, now: Instant, ok: bool, trial: bool) {
        let mut inner = self.lock();
        let transition = match &mut *inner {
            Inner::Closed { failures } => {
                if ok {
                    None
                } else {
                    failures.push_back(now);
                    while failures.front().is_some_and(|t| now.duration_since(*t) > self.config.window) {
                        failures.pop_front();
                    }
                    if failures.len() as u32 >= self.config.failure_threshold {
                        *inner = Inner::Open { until: now + self.config.cool_down };
                        Some((BreakerState::Closed, BreakerState::Open))
                    } else {
                        None
                    }
                }
            }
            // Only trial calls decide a half-open breaker; a late answer from before is ignored.
            Inner::HalfOpen { in_flight, succeeded } if trial => {
                *in_flight = in_flight.saturating_sub(1);
                if !ok {
                    *inner = Inner::Open { until: now + self.config.cool_down };
                    Some((BreakerState::HalfOpen, BreakerState::Open))
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.config.half_open_calls {
                        *inner = Inner::Closed { failures: VecDeque::new() };
                        Some((BreakerState::HalfOpen, BreakerState::Closed))
                    } else {
                        None
                    }
                }
            }
            Inner::HalfOpen { .. } | Inner::Open { .. } => None,
        };
        drop(inner);
        if let Some((from, to)) = transition {
            self.transitioned(from, to);
        }
    }

    fn transitioned(&self, from: BreakerState, to: BreakerState) {
        metrics::gauge!("lexiflow_circuit_breaker_state", "dependency" => self.name).set(to.gauge());
        metrics::counter!("lexiflow_circuit_breaker_transitions_total",
            "dependency" => self.name, "from" => from.label(), "to" => to.label())
        .increment(1);
        if to == BreakerState::Open {
            tracing::warn!(dependency = self.name, from = from.label(), "circuit breaker opened");
        } else {
            tracing::info!(
                dependency = self.name,
                from = from.label(),
                to = to.label(),
                "circuit breaker changed state"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            "test",
            BreakerConfig {
                failure_threshold: 3,
                window: Duration::from_secs(10),
                cool_down: Duration::from_secs(5),
                half_open_calls: 2,
            },
        )
    }

    #[test]
    fn opens_after_threshold_failures_within_the_window() {
        let b = breaker();
        let t0 = Instant::now();
        for i in 0..2 {
            b.try_acquire_at(t0).unwrap();
            b.record_at(t0 + Duration::from_secs(i), false, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record_at(t0 + Duration::from_secs(2), false, false);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire_at(t0 + Duration::from_secs(3)).is_err());
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_open_it() {
        let b = breaker();
        let t0 = Instant::now();
        for i in 0..6 {
            b.record_at(t0 + Duration::from_secs(i * 6), false, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_a_limited_number_of_trials_through_then_closes() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record_at(t0, false, false);
        }
        let later = t0 + Duration::from_secs(5);
        assert!(b.try_acquire_at(later).unwrap());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire_at(later).unwrap());
        // The third concurrent call is refused: only two trials while half-open.
        assert!(b.try_acquire_at(later).is_err());
        b.record_at(later, true, true);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record_at(later, true, true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.try_acquire_at(later).unwrap());
    }

    #[test]
    fn a_failed_trial_reopens_for_another_cool_down() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record_at(t0, false, false);
        }
        let t1 = t0 + Duration::from_secs(6);
        b.try_acquire_at(t1).unwrap();
        b.record_at(t1, false, true);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire_at(t1 + Duration::from_secs(4)).is_err());
        assert!(b.try_acquire_at(t1 + Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn an_abandoned_trial_call_gives_its_slot_back() {
        let b = Breaker::new(
            "test",
            BreakerConfig { failure_threshold: 1, cool_down: Duration::ZERO, ..Default::default() },
        );
        b.record_at(Instant::now(), false, false);
        let permit = b.try_acquire().unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire_at(Instant::now()).is_err());
        drop(permit);
        let again = b.try_acquire().unwrap();
        again.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_late_answer_from_before_opening_does_not_close_it() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record_at(t0, false, false);
        }
        b.record_at(t0, true, false);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
