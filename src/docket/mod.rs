//! Docket entries: each case's numbered record of filings, orders, hearings and the like.
//!
//! The server numbers entries 1, 2, 3… per case, gapless and unique however many clients post
//! at once: a poster locks the case row (PostgreSQL; SQLite writers are serialised by
//! `BEGIN IMMEDIATE`) before reading the highest number, and a failed transaction takes its
//! numbers with it. Entries are never removed — a struck entry keeps its number.
//!
//! Sealed entries exist only for users allowed to see sealed material (admins and the
//! case's lead attorney): to everyone else they are absent from lists, counts, gets and the
//! case's history. Restricted entries are hidden from client users.

pub mod http;
pub mod model;
pub mod ops;
