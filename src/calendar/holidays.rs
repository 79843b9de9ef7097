//! Legal holidays for FRCP 6(a)(6): the federal holidays of 5 U.S.C. 6103(a), each with the
//! day it is observed on (6103(b) and Executive Order 11582: a holiday on a Saturday is
//! observed the Friday before, one on a Sunday the Monday after), plus the court closures a
//! firm records.
//!
//! Both the statutory day and the observed day count as legal holidays: when the statutory day
//! is a weekend day it is not a counting day anyway, and courts close on the observed day.
//! Juneteenth (June 19) is a holiday from 2021 (Pub. L. 117-17).

use std::collections::BTreeSet;

use chrono::{Datelike, Duration, NaiveDate, Weekday};

/// One federal holiday in one year.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holiday {
    pub name: &'static str,
    /// The day 5 U.S.C. 6103(a) names.
    pub date: NaiveDate,
    /// The day it is observed (the same day unless that is a Saturday or a Sunday).
    pub observed: NaiveDate,
}

fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: u8) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, weekday, n)
}

fn last_weekday(year: i32, month: u32, weekday: Weekday) -> Option<NaiveDate> {
    nth_weekday(year, month, weekday, 5).or_else(|| nth_weekday(year, month, weekday, 4))
}

fn fixed(year: i32, month: u32, day: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, month, day)
}

/// The day a holiday on `date` is observed.
pub fn observed(date: NaiveDate) -> NaiveDate {
    match date.weekday() {
        Weekday::Sat => date - Duration::days(1),
        Weekday::Sun => date + Duration::days(1),
        _ => date,
    }
}

/// The federal holidays of `year` (out-of-range years have none).
pub fn federal(year: i32) -> Vec<Holiday> {
    if !(1..=9999).contains(&year) {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(11);
    let mut push = |name: &'static str, date: Option<NaiveDate>| {
        if let Some(date) = date {
            out.push(Holiday { name, date, observed: observed(date) });
        }
    };
    push("New Year's Day", fixed(year, 1, 1));
    push("Birthday of Martin Luther King, Jr.", nth_weekday(year, 1, Weekday::Mon, 3));
    push("Washington's Birthday", nth_weekday(year, 2, Weekday::Mon, 3));
    push("Memorial Day", last_weekday(year, 5, Weekday::Mon));
    if year >= 2021 {
        push("Juneteenth National Independence Day", fixed(year, 6, 19));
    }
    push("Independence Day", fixed(year, 7, 4));
    push("Labor Day", nth_weekday(year, 9, Weekday::Mon, 1));
    push("Columbus Day", nth_weekday(year, 10, Weekday::Mon, 2));
    push("Veterans Day", fixed(year, 11, 11));
    push("Thanksgiving Day", nth_weekday(year, 11, Weekday::Thu, 4));
    push("Christmas Day", fixed(year, 12, 25));
    out
}

/// The days a court is closed beyond weekends, for a range of years: federal holidays (both
/// the statutory and the observed day) and the firm's recorded closures.
#[derive(Clone, Debug, Default)]
pub struct Closed {
    days: BTreeSet<NaiveDate>,
}

impl Closed {
    /// Federal holidays of `first..=last` years (one year either side is added, since an
    /// observed New Year's Day can fall on December 31 of the year before) and `closures`.
    pub fn new(first: i32, last: i32, closures: impl IntoIterator<Item = NaiveDate>) -> Self {
        let mut days = BTreeSet::new();
        for year in first.saturating_sub(1)..=last.saturating_add(1) {
            for h in federal(year) {
                days.insert(h.date);
                days.insert(h.observed);
            }
        }
        days.extend(closures);
        Self { days }
    }

    /// Whether `d` is a legal holiday (federal, observed, or a recorded closure).
    pub fn is_holiday(&self, d: NaiveDate) -> bool {
        self.days.contains(&d)
    }

    /// Whether `d` is a Saturday, a Sunday or a legal holiday: a day a period may not end on.
    pub fn is_closed(&self, d: NaiveDate) -> bool {
        matches!(d.weekday(), Weekday::Sat | Weekday::Sun) || self.is_holiday(d)
    }

    /// Why `d` is closed, for the explanation of a computation.
    pub fn reason(&self, d: NaiveDate) -> Option<String> {
        match d.weekday() {
            Weekday::Sat => return Some("a Saturday".into()),
            Weekday::Sun => return Some("a Sunday".into()),
            _ => {}
        }
        if !self.is_holiday(d) {
            return None;
        }
        for year in [d.year() - 1, d.year(), d.year() + 1] {
            for h in federal(year) {
                if h.date == d || h.observed == d {
                    let how = if h.date == d { "" } else { " (observed)" };
                    return Some(format!("a legal holiday, {}{how}", h.name));
                }
            }
        }
        Some("a day the court is closed".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn the_federal_holidays_of_2026_and_their_observed_days() {
        let got: Vec<(NaiveDate, NaiveDate)> = federal(2026).into_iter().map(|h| (h.date, h.observed)).collect();
        assert_eq!(
            got,
            vec![
                (d(2026, 1, 1), d(2026, 1, 1)),
                (d(2026, 1, 19), d(2026, 1, 19)),
                (d(2026, 2, 16), d(2026, 2, 16)),
                (d(2026, 5, 25), d(2026, 5, 25)),
                (d(2026, 6, 19), d(2026, 6, 19)),
                // A Saturday: observed on Friday July 3.
                (d(2026, 7, 4), d(2026, 7, 3)),
                (d(2026, 9, 7), d(2026, 9, 7)),
                (d(2026, 10, 12), d(2026, 10, 12)),
                (d(2026, 11, 11), d(2026, 11, 11)),
                (d(2026, 11, 26), d(2026, 11, 26)),
                (d(2026, 12, 25), d(2026, 12, 25)),
            ]
        );
    }

    #[test]
    fn observed_days_cross_years_and_juneteenth_starts_in_2021() {
        // New Year's Day 2022 was a Saturday: observed on Friday December 31, 2021.
        let closed = Closed::new(2021, 2021, []);
        assert!(closed.is_holiday(d(2021, 12, 31)));
        assert_eq!(closed.reason(d(2021, 12, 31)).unwrap(), "a legal holiday, New Year's Day (observed)");
        // Christmas 2022 was a Sunday: observed on Monday December 26.
        assert!(Closed::new(2022, 2022, []).is_holiday(d(2022, 12, 26)));
        assert!(federal(2020).iter().all(|h| h.name != "Juneteenth National Independence Day"));
        assert!(federal(2021).iter().any(|h| h.date == d(2021, 6, 19) && h.observed == d(2021, 6, 18)));
        // Memorial Day is the last Monday of May, in a May with five Mondays too.
        assert!(federal(2027).iter().any(|h| h.name == "Memorial Day" && h.date == d(2027, 5, 31)));
    }

    #[test]
    fn closures_a_firm_records_are_holidays() {
        let closed = Closed::new(2026, 2026, [d(2026, 3, 10)]);
        assert!(closed.is_closed(d(2026, 3, 10)));
        assert_eq!(closed.reason(d(2026, 3, 10)).unwrap(), "a day the court is closed");
        assert!(!closed.is_closed(d(2026, 3, 11)));
    }
}
