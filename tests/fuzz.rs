//! Property tests (proptest; `cargo fuzz` needs nightly, which the toolchain here is not) on
//! every parser that takes untrusted input before authentication or validation: JSON nesting,
//! page cursors, tus headers and `Upload-Metadata`, file names, the Socket.IO handshake's
//! credentials and the access-token check behind it; and the deadline engine's invariants over
//! arbitrary rules and triggers. Each property runs PROPTEST_CASES cases (default 256 here).

use base64::Engine;
use chrono::{Datelike, NaiveDate};
use lexiflow::{
    calendar::{
        deadlines::{self, Direction, Rule, ServiceMethod, Trigger, Unit},
        holidays::Closed,
    },
    http::{extract::nesting_depth, pagination::Cursor},
    uploads::tus,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,10}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn json_nesting_depth_never_panics_and_counts_real_nesting(bytes in prop::collection::vec(any::<u8>(), 0..512), depth in 0usize..200) {
        let _ = nesting_depth(&bytes);
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        prop_assert_eq!(nesting_depth(nested.as_bytes()), depth);
        // Brackets inside strings are not nesting.
        let quoted = format!("[\"{}\"]", "[{".repeat(depth));
        prop_assert_eq!(nesting_depth(quoted.as_bytes()), 1);
    }

    #[test]
    fn any_cursor_text_is_refused_cleanly_and_ours_round_trip(text in ".{0,200}", sort in "[-a-zA-Z]{1,20}", key in ".{0,60}", id in any::<u128>()) {
        let _ = Cursor::decode(&text, &sort);
        let c = Cursor { sort: sort.clone(), key, id: uuid::Uuid::from_u128(id) };
        let back = Cursor::decode(&c.encode(), &sort).unwrap();
        prop_assert_eq!(&back.key, &c.key);
        prop_assert_eq!(back.id, c.id);
        let other = format!("{sort}x");
        prop_assert!(Cursor::decode(&c.encode(), &other).is_err(), "bound to its sort");
    }

    #[test]
    fn upload_metadata_never_panics_and_round_trips(header in ".{0,300}", pairs in prop::collection::btree_map("[!-+--~]{1,12}", prop::option::of(".{0,40}"), 0..8)) {
        let _ = tus::parse_metadata(&header);
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k} {}", base64::engine::general_purpose::STANDARD.encode(v)),
                None => k.clone(),
            })
            .collect();
        let parsed = tus::parse_metadata(&encoded.join(",")).unwrap();
        // An empty value encodes to nothing: `key ` and `key` are the same pair, read as no value.
        let expected: Vec<(String, Option<String>)> =
            pairs.into_iter().map(|(k, v)| (k, v.filter(|v| !v.is_empty()))).collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn upload_checksum_never_panics_and_takes_only_right_sized_sums(header in ".{0,120}", sum in prop::collection::vec(any::<u8>(), 0..40)) {
        let _ = tus::parse_checksum(&header);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&sum);
        prop_assert_eq!(tus::parse_checksum(&format!("sha1 {b64}")).is_ok(), sum.len() == 20);
        prop_assert_eq!(tus::parse_checksum(&format!("SHA256 {b64}")).is_ok(), sum.len() == 32);
        let md5 = format!("md5 {b64}");
        prop_assert!(tus::parse_checksum(&md5).is_err());
    }

    #[test]
    fn accepted_file_names_name_a_file_not_a_path(name in ".{0,300}") {
        if let Ok(ok) = tus::check_filename(&name) {
            prop_assert!(!ok.is_empty() && ok.len() <= tus::MAX_FILENAME);
            prop_assert!(!ok.contains('/') && !ok.contains('\\') && ok != "." && ok != "..");
            prop_assert!(!ok.chars().any(char::is_control));
        }
    }

    #[test]
    fn handshake_credentials_take_any_auth_and_header(auth in json_value(), header in prop::option::of(".{0,80}")) {
        let (token, _) = lexiflow::realtime::handshake_credentials(&auth, header.as_deref());
        if let Some(t) = token {
            prop_assert!(!t.trim().is_empty());
        }
        // A token in `auth` wins over the header.
        let (t, seq) = lexiflow::realtime::handshake_credentials(&json!({"token": "abc", "lastSeq": 7}), Some("Bearer xyz"));
        prop_assert_eq!(t.as_deref(), Some("abc"));
        prop_assert_eq!(seq, Some(7));
    }

    #[test]
    fn the_access_token_check_refuses_any_forgery_cleanly(token in ".{0,400}", parts in prop::collection::vec("[A-Za-z0-9_-]{0,60}", 3)) {
        let keys = lexiflow::auth::tokens::TokenKeys::new(
            &"fuzz-secret-that-is-long-enough-for-hs256-0123456789".to_owned().into(),
            std::time::Duration::from_secs(900),
            std::time::Duration::from_secs(3600),
        );
        prop_assert!(keys.verify(&token).is_err());
        prop_assert!(keys.verify(&parts.join(".")).is_err());
    }

    #[test]
    fn a_deadline_never_falls_on_a_closed_day_and_never_comes_early(
        amount in 1u32..400,
        after in any::<bool>(),
        extension in any::<bool>(),
        mail in any::<bool>(),
        offset in 0i64..30_000,
        closures in prop::collection::vec(0i64..40_000, 0..20),
    ) {
        let direction = if after { Direction::After } else { Direction::Before };
        let rule = Rule {
            id: "p".into(), name: "p".into(), source: "p".into(), text: "p".into(), trigger: "p".into(),
            amount, unit: Unit::Days, direction, service_extension: extension && after, builtin: false,
        };
        let base = NaiveDate::from_ymd_opt(1990, 1, 1).unwrap();
        let trigger = base + chrono::Duration::days(offset);
        let (a, z) = deadlines::years(&rule, trigger);
        let closed = Closed::new(a, z, closures.iter().map(|d| base + chrono::Duration::days(*d)));
        let service = mail.then_some(ServiceMethod::Mail);
        let c = deadlines::compute(&rule, Trigger::Day(trigger), service, &closed).unwrap();
        prop_assert!(!closed.is_closed(c.due_date), "{} is closed", c.due_date);
        let plain = if after { trigger + chrono::Duration::days(i64::from(amount)) } else { trigger - chrono::Duration::days(i64::from(amount)) };
        if after {
            prop_assert!(c.due_date >= plain, "after-periods only move later");
            if rule.service_extension && mail {
                prop_assert!(c.due_date >= plain + chrono::Duration::days(3));
            }
        } else {
            prop_assert!(c.due_date <= plain, "before-periods only move earlier");
        }
        prop_assert!((c.due_date - plain).num_days().abs() < 40, "rolled at most over the closed run");
        // Never before the window of years the closed days were computed for (a period of up
        // to 400 days back from 1990-01-01 lands in 1988; the bound was 1989 until a run drew
        // amount 372 before offset 0).
        prop_assert!(c.due_date.year() >= a, "{} is before {a}", c.due_date);
    }
}
