//! The calendar: events per firm (optionally of a case and a docket entry) with reminders,
//! court deadlines computed by rule, and a per-user `.ics` feed. The contract is in
//! `docs/CALENDAR.md`.
//!
//! - [`ops`]: events, who sees and changes them, listing.
//! - [`deadlines`] and [`holidays`]: FRCP 6(a) counting over rules kept as data
//!   (`rules.toml`), federal holidays and a firm's court closures; [`court`] puts them in the
//!   API, creates deadline events and recomputes them when their trigger moves.
//! - [`reminders`]: delayed queue jobs, once per reminder even with several workers.
//! - [`ics`]: the feed.
//! - [`sync`]: two-way sync with Google Calendar and Microsoft Graph over OAuth 2.0.

pub mod court;
pub mod deadlines;
pub mod holidays;
pub mod http;
pub mod ics;
pub mod model;
pub mod ops;
pub mod reminders;
pub mod sync;
