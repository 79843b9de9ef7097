//! Court deadlines computed by rule, counted by FRCP 6(a).
//!
//! - Periods in days (6(a)(1)): the trigger day is excluded, every day is counted (weekends
//!   and holidays too), and the last day is included; when it is a Saturday, a Sunday or a
//!   legal holiday the period runs on to the next day that is none of those. "Next" is
//!   forward for periods after an event and backward for periods before one (6(a)(5)).
//! - Periods in hours (6(a)(2)): counting starts at the trigger; when the period would end on
//!   a Saturday, Sunday or legal holiday it runs on to the same time on the next day that is
//!   none of those (the court's time zone decides the day).
//! - 6(d): when a period runs from service under Rule 5(b) and service was by mail, by leaving
//!   with the clerk, or by other means consented to, 3 days are added after the period would
//!   otherwise expire, and the result is itself moved off a closed day.
//!
//! Rules are data (`rules.toml`, and a firm's own rules in `deadline_rules`); every computed
//! deadline carries the rule's source and text and the steps that produced it.

use std::sync::OnceLock;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::holidays::Closed;

/// The unit a period counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Days,
    Hours,
}

/// Whether a period runs forward from its trigger or back from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    After,
    Before,
}

/// How the triggering paper was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceMethod {
    /// Rule 5(b)(2)(A)–(B): handing it over or leaving it at the office or dwelling.
    Personal,
    /// Rule 5(b)(2)(E): electronic filing or consented e-mail (no 6(d) days since 2016).
    Electronic,
    /// Rule 5(b)(2)(C).
    Mail,
    /// Rule 5(b)(2)(D): leaving it with the court clerk.
    LeavingWithClerk,
    /// Rule 5(b)(2)(F): any other means the person consented to in writing.
    OtherConsented,
}

impl ServiceMethod {
    /// Whether 6(d) adds 3 days for this method.
    pub fn adds_three_days(self) -> bool {
        matches!(self, Self::Mail | Self::LeavingWithClerk | Self::OtherConsented)
    }
}

/// A deadline rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    pub name: String,
    /// Where the rule comes from (a citation).
    pub source: String,
    /// The rule's words the period comes from.
    pub text: String,
    /// What starts the period.
    pub trigger: String,
    pub amount: u32,
    pub unit: Unit,
    pub direction: Direction,
    /// The period runs from service under Rule 5(b), so 6(d) may add 3 days.
    pub service_extension: bool,
    /// Shipped with LexiFlow (false: the firm's own).
    #[serde(default)]
    pub builtin: bool,
}

/// The longest period a rule may state.
pub const MAX_DAYS: u32 = 3_660;
pub const MAX_HOURS: u32 = 24 * 366;

impl Rule {
    /// Why the rule is unusable, if it is.
    pub fn invalid(&self) -> Option<&'static str> {
        let max = match self.unit {
            Unit::Days => MAX_DAYS,
            Unit::Hours => MAX_HOURS,
        };
        if self.amount == 0 || self.amount > max {
            return Some("amount must be at least 1 and at most 3,660 days or 8,784 hours");
        }
        if self.service_extension && self.direction == Direction::Before {
            return Some("a period before an event does not run from service, so serviceExtension must be false");
        }
        None
    }
}

#[derive(Deserialize)]
struct RuleFile {
    rule: Vec<Rule>,
}

/// The rules shipped in `rules.toml`, parsed once (a broken file fails the tests, not a request).
pub fn builtin() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        match toml::from_str::<RuleFile>(include_str!("rules.toml")) {
            Ok(file) => file.rule.into_iter().map(|r| Rule { builtin: true, ..r }).collect(),
            // Caught by the unit tests before it can ship; never a panic in a request.
            Err(e) => {
                tracing::error!(error = %e, "src/calendar/rules.toml does not parse: no shipped deadline rules");
                Vec::new()
            }
        }
    })
}

/// A shipped rule by id.
pub fn builtin_rule(id: &str) -> Option<&'static Rule> {
    builtin().iter().find(|r| r.id == id)
}

/// When the period starts.
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    /// A day (periods in days).
    Day(NaiveDate),
    /// An instant, with the court's time zone (periods in hours, and days from an instant).
    At(DateTime<Utc>, Tz),
}

impl Trigger {
    fn day(self) -> NaiveDate {
        match self {
            Self::Day(d) => d,
            Self::At(t, tz) => t.with_timezone(&tz).date_naive(),
        }
    }
}

/// A computed deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Computed {
    pub rule_id: String,
    pub name: String,
    pub source: String,
    pub rule_text: String,
    pub trigger_date: NaiveDate,
    /// The last day to act.
    pub due_date: NaiveDate,
    /// For periods in hours: the instant the period ends.
    pub due_at: Option<DateTime<Utc>>,
    /// How the date was reached, step by step, each citing its rule.
    pub steps: Vec<String>,
}

/// Why a computation failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ComputeError {
    #[error("a period in hours needs a trigger time and time zone (triggerAt and timeZone)")]
    NeedsInstant,
    #[error("the deadline falls outside the years 1 to 9999")]
    OutOfRange,
}

/// The years a computation may touch, for loading closures and holidays.
pub fn years(rule: &Rule, trigger: NaiveDate) -> (i32, i32) {
    let span = match rule.unit {
        Unit::Days => rule.amount / 365 + 1,
        Unit::Hours => rule.amount / (24 * 365) + 1,
    } as i32;
    (trigger.year() - span - 1, trigger.year() + span + 1)
}

fn step_day(d: NaiveDate, forward: bool) -> Result<NaiveDate, ComputeError> {
    let next = if forward { d.succ_opt() } else { d.pred_opt() };
    next.filter(|n| (1..=9999).contains(&n.year())).ok_or(ComputeError::OutOfRange)
}

/// Moves `d` off closed days, in the given direction, noting why.
fn roll(d: NaiveDate, forward: bool, closed: &Closed, steps: &mut Vec<String>) -> Result<NaiveDate, ComputeError> {
    let start = d;
    let mut d = d;
    while closed.is_closed(d) {
        d = step_day(d, forward)?;
    }
    if d != start {
        let why = closed.reason(start).unwrap_or_default();
        let way = if forward { "the next" } else { "the previous" };
        steps.push(format!(
            "{start} is {why}; the period runs to {way} day that is not a Saturday, Sunday or legal holiday (FRCP 6(a)(1)(C), 6(a)(5)): {d} ({}).",
            d.format("%A")
        ));
    }
    Ok(d)
}

/// The local date and time of `t` in `tz` moved by whole days, keeping the wall-clock time (the
/// earlier of two instants across a DST fold, the first instant after a gap).
fn same_time_days(t: DateTime<Utc>, tz: Tz, days: i64) -> Result<DateTime<Utc>, ComputeError> {
    let local = t.with_timezone(&tz).naive_local() + Duration::days(days);
    if !(1..=9999).contains(&local.year()) {
        return Err(ComputeError::OutOfRange);
    }
    match tz.from_local_datetime(&local) {
        LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => Ok(x.with_timezone(&Utc)),
        LocalResult::None => tz
            .from_local_datetime(&(local + Duration::hours(1)))
            .earliest()
            .map(|x| x.with_timezone(&Utc))
            .ok_or(ComputeError::OutOfRange),
    }
}

/// Computes `rule`'s deadline from `trigger`.
pub fn compute(
    rule: &Rule,
    trigger: Trigger,
    service: Option<ServiceMethod>,
    closed: &Closed,
) -> Result<Computed, ComputeError> {
    let forward = rule.direction == Direction::After;
    let way = if forward { "after" } else { "before" };
    let mut steps = Vec::new();
    let trigger_day = trigger.day();
    let (due_date, due_at) = match rule.unit {
        Unit::Days => {
            steps.push(format!(
                "Trigger: {trigger_day} ({}). The day of the event is excluded (FRCP 6(a)(1)(A)).",
                rule.trigger
            ));
            let mut d = trigger_day;
            for _ in 0..rule.amount {
                d = step_day(d, forward)?;
            }
            steps.push(format!(
                "Counting {} days {way}, every day included, weekends and holidays too (FRCP 6(a)(1)(B)), the last day is {d} ({}) (FRCP 6(a)(1)(C)).",
                rule.amount,
                d.format("%A")
            ));
            (roll(d, forward, closed, &mut steps)?, None)
        }
        Unit::Hours => {
            let Trigger::At(at, tz) = trigger else { return Err(ComputeError::NeedsInstant) };
            steps.push(format!(
                "Trigger: {} in {tz} ({}). Counting begins immediately (FRCP 6(a)(2)(A)).",
                at.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
                rule.trigger
            ));
            let hours = Duration::hours(i64::from(rule.amount));
            let mut end = if forward { at.checked_add_signed(hours) } else { at.checked_sub_signed(hours) }
                .filter(|t| (1..=9999).contains(&t.year()))
                .ok_or(ComputeError::OutOfRange)?;
            steps.push(format!(
                "Counting {} hours {way}, every hour included (FRCP 6(a)(2)(B)), the period ends {} ({}).",
                rule.amount,
                end.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
                end.with_timezone(&tz).format("%A")
            ));
            let first = end.with_timezone(&tz).date_naive();
            let mut moved = false;
            while closed.is_closed(end.with_timezone(&tz).date_naive()) {
                end = same_time_days(end, tz, if forward { 1 } else { -1 })?;
                moved = true;
            }
            if moved {
                let way = if forward { "next" } else { "previous" };
                steps.push(format!(
                    "{first} is {}; the period continues to run until the same time on the {way} day that is not a Saturday, Sunday or legal holiday (FRCP 6(a)(2)(C), 6(a)(5)): {}.",
                    closed.reason(first).unwrap_or_default(),
                    end.with_timezone(&tz).format("%Y-%m-%d %H:%M %A")
                ));
            }
            (end.with_timezone(&tz).date_naive(), Some(end))
        }
    };
    let mut due_date = due_date;
    let mut due_at = due_at;
    if let Some(method) = service
        && rule.service_extension
        && method.adds_three_days()
    {
        match (due_at, trigger) {
            (Some(end), Trigger::At(_, tz)) => {
                let mut end = same_time_days(end, tz, 3)?;
                steps.push(format!(
                    "Served under Rule 5(b)(2)(C), (D) or (F): 3 days are added after the period would otherwise expire (FRCP 6(d)): {}.",
                    end.with_timezone(&tz).format("%Y-%m-%d %H:%M")
                ));
                let first = end.with_timezone(&tz).date_naive();
                while closed.is_closed(end.with_timezone(&tz).date_naive()) {
                    end = same_time_days(end, tz, 1)?;
                }
                if end.with_timezone(&tz).date_naive() != first {
                    steps.push(format!(
                        "{first} is {}; the period runs to the same time on the next day that is not a Saturday, Sunday or legal holiday (FRCP 6(a)(2)(C)): {}.",
                        closed.reason(first).unwrap_or_default(),
                        end.with_timezone(&tz).format("%Y-%m-%d %H:%M %A")
                    ));
                }
                due_date = end.with_timezone(&tz).date_naive();
                due_at = Some(end);
            }
            _ => {
                let mut d = due_date;
                for _ in 0..3 {
                    d = step_day(d, true)?;
                }
                steps.push(format!(
                    "Served under Rule 5(b)(2)(C), (D) or (F): 3 days are added after the period would otherwise expire (FRCP 6(d)): {d} ({}).",
                    d.format("%A")
                ));
                due_date = roll(d, true, closed, &mut steps)?;
            }
        }
    } else if let Some(method) = service
        && method.adds_three_days()
    {
        steps.push(format!(
            "No days are added for service by {}: this period does not run from service under Rule 5(b) (FRCP 6(d)).",
            serde_json::to_value(method).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        ));
    }
    steps.push(format!("Due: {due_date} ({}).", due_date.format("%A")));
    Ok(Computed {
        rule_id: rule.id.clone(),
        name: rule.name.clone(),
        source: rule.source.clone(),
        rule_text: rule.text.clone(),
        trigger_date: trigger_day,
        due_date,
        due_at,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn due(rule: &str, trigger: &str, service: Option<ServiceMethod>) -> NaiveDate {
        let rule = builtin_rule(rule).unwrap();
        let t = d(trigger);
        let (first, last) = years(rule, t);
        compute(rule, Trigger::Day(t), service, &Closed::new(first, last, [])).unwrap().due_date
    }

    #[test]
    fn the_shipped_rules_parse_are_valid_and_name_their_source() {
        let rules = builtin();
        assert!(rules.len() >= 10);
        for r in rules {
            assert!(r.invalid().is_none(), "{}: {:?}", r.id, r.invalid());
            assert!(!r.source.is_empty() && !r.text.is_empty() && r.builtin, "{}", r.id);
        }
        let mut ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), rules.len(), "rule ids are unique");
    }

    /// Worked examples, checked by hand against a 2026–2027 calendar.
    #[test]
    fn worked_examples_match_the_table() {
        use ServiceMethod::*;
        let table: &[(&str, &str, Option<ServiceMethod>, &str, &str)] = &[
            // rule, trigger, service, expected, why
            ("frcp-12-a-1-A-i", "2026-01-09", None, "2026-01-30", "a plain Friday"),
            ("frcp-12-a-1-A-i", "2026-03-07", None, "2026-03-30", "day 21 is Saturday 2026-03-28: to Monday"),
            (
                "frcp-12-a-4-A",
                "2026-05-09",
                None,
                "2026-05-26",
                "day 14 is Saturday 05-23, then Sunday, then Memorial Day",
            ),
            (
                "frap-4-a-1-A",
                "2026-06-03",
                None,
                "2026-07-06",
                "day 30 is Friday 07-03, Independence Day observed (July 4 is a Saturday)",
            ),
            ("frcp-12-a-1-A-i", "2026-12-11", None, "2027-01-04", "day 21 is New Year's Day 2027, a Friday"),
            ("frcp-56-b", "2026-12-02", None, "2027-01-04", "across New Year: day 30 is 01-01, a Friday"),
            ("frcp-59-b", "2026-10-29", None, "2026-11-27", "day 28 is Thanksgiving, 11-26"),
            ("frcp-33-b-2", "2026-01-07", Some(Mail), "2026-02-09", "day 30 is Friday 02-06; +3 is Monday 02-09"),
            ("frcp-12-a-1-B", "2026-01-07", Some(Mail), "2026-02-02", "day 21 is 01-28; +3 is Saturday 01-31: Monday"),
            ("frcp-12-a-1-B", "2026-01-07", Some(Electronic), "2026-01-28", "no days added for e-service"),
            ("frcp-12-a-1-A-i", "2026-01-07", Some(Mail), "2026-01-28", "a summons is not served under Rule 5(b)"),
            (
                "frcp-12-a-1-B",
                "2026-12-08",
                Some(LeavingWithClerk),
                "2027-01-04",
                "day 21 is 12-29; +3 is New Year's Day: to Monday",
            ),
            ("frcp-6-c-1", "2026-11-25", None, "2026-11-10", "14 days before is Veterans Day: back to Tuesday"),
            ("frcp-26-f-1", "2026-03-30", None, "2026-03-09", "21 days before is Monday 03-09"),
            ("frcp-6-c-1", "2026-07-20", None, "2026-07-06", "14 days before is Monday 07-06"),
            ("frcp-6-c-1", "2026-07-17", None, "2026-07-02", "14 days before is Friday 07-03 (observed): Thursday"),
            (
                "frcp-6-c-1",
                "2027-01-17",
                None,
                "2026-12-31",
                "backward across New Year: 14 days before is Sunday 01-03, then Saturday, then New Year's Day",
            ),
        ];
        let mut failures = Vec::new();
        for (rule, trigger, service, expected, why) in table {
            let got = due(rule, trigger, *service);
            if got != d(expected) {
                failures.push(format!("{rule} from {trigger} ({why}): expected {expected}, got {got}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn steps_cite_the_rules_that_moved_the_date() {
        let rule = builtin_rule("frap-4-a-1-A").unwrap();
        let c = compute(rule, Trigger::Day(d("2026-06-03")), None, &Closed::new(2025, 2027, [])).unwrap();
        assert_eq!(c.source, "Fed. R. App. P. 4(a)(1)(A)");
        assert!(c.rule_text.contains("within 30 days after entry"));
        let all = c.steps.join("\n");
        assert!(all.contains("2026-07-03 is a legal holiday, Independence Day (observed)"), "{all}");
        assert!(all.contains("2026-07-06 (Monday)"), "{all}");
    }

    #[test]
    fn firm_closures_extend_a_period() {
        let rule = builtin_rule("frcp-12-a-1-A-i").unwrap();
        let closed = Closed::new(2025, 2027, [d("2026-01-30")]);
        let c = compute(rule, Trigger::Day(d("2026-01-09")), None, &closed).unwrap();
        assert_eq!(c.due_date, d("2026-02-02"));
    }

    #[test]
    fn periods_in_hours_run_to_the_same_time_on_the_next_open_day() {
        let rule = Rule {
            id: "local-48h".into(),
            name: "Response to an emergency motion".into(),
            source: "A local rule".into(),
            text: "Responses are due within 48 hours.".into(),
            trigger: "service of the motion".into(),
            amount: 48,
            unit: Unit::Hours,
            direction: Direction::After,
            service_extension: false,
            builtin: false,
        };
        let tz: Tz = "America/New_York".parse().unwrap();
        let at = tz.with_ymd_and_hms(2026, 7, 2, 10, 0, 0).unwrap().with_timezone(&Utc);
        let closed = Closed::new(2025, 2027, []);
        let c = compute(&rule, Trigger::At(at, tz), None, &closed).unwrap();
        // 48 hours on is Saturday July 4, 10:00: the period runs to Monday July 6, 10:00.
        assert_eq!(c.due_at.unwrap(), tz.with_ymd_and_hms(2026, 7, 6, 10, 0, 0).unwrap().with_timezone(&Utc));
        assert_eq!(c.due_date, d("2026-07-06"));
        // Across the autumn DST change the wall-clock time is kept.
        let at = tz.with_ymd_and_hms(2026, 10, 30, 9, 0, 0).unwrap().with_timezone(&Utc);
        let c = compute(&Rule { amount: 24, ..rule.clone() }, Trigger::At(at, tz), None, &closed).unwrap();
        assert_eq!(c.due_at.unwrap(), tz.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap().with_timezone(&Utc));
        assert_eq!(
            compute(&rule, Trigger::Day(d("2026-07-02")), None, &closed).unwrap_err(),
            ComputeError::NeedsInstant
        );
    }

    #[test]
    fn a_period_that_leaves_the_calendar_is_an_error_not_a_panic() {
        let rule = Rule { amount: MAX_DAYS, ..builtin_rule("frcp-56-b").unwrap().clone() };
        let t = d("9999-06-01");
        let (a, b) = years(&rule, t);
        assert_eq!(
            compute(&rule, Trigger::Day(t), None, &Closed::new(a, b, [])).unwrap_err(),
            ComputeError::OutOfRange
        );
    }
}
