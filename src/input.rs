//! Input hygiene and field validation (BLUEPRINT §12).
//!
//! Plain text is stored as sent, after Unicode NFC and removal of control characters other
//! than tab and newline: "Smith & Wesson v. O'Brien; DROP TABLE cases;--" comes back byte for
//! byte. SQL injection is impossible by construction (every value is a bound parameter), so
//! nothing is HTML-encoded or deleted. Rich-text fields go through an HTML allowlist. URL
//! fields take http(s) only (and mailto where it makes sense), stored as the parsed address in
//! its normal form.

use std::{cell::Cell, collections::HashSet, fmt, sync::OnceLock};

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::http::error::{ApiError, FieldError};

/// NFC-normalises and drops control characters other than `\t` and `\n`.
pub fn plain(s: &str) -> String {
    s.nfc().filter(|c| !c.is_control() || *c == '\t' || *c == '\n').collect()
}

/// The HTML tags a rich-text field may keep; only `a` keeps attributes (`href`, `title`, and
/// the `rel` the cleaner adds). Everything else is removed, its text kept.
pub const RICH_TEXT_TAGS: &[&str] = &[
    "a",
    "b",
    "blockquote",
    "br",
    "code",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "i",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "strong",
    "sub",
    "sup",
    "u",
    "ul",
];

fn sanitizer() -> &'static ammonia::Builder<'static> {
    static B: OnceLock<ammonia::Builder<'static>> = OnceLock::new();
    B.get_or_init(|| {
        let tags: HashSet<&str> = RICH_TEXT_TAGS.iter().copied().collect();
        // `empty()` clears the tags only: ammonia's default generic and per-tag attributes
        // (lang, title, cite, …) and relative URLs are cleared here too.
        let mut b = ammonia::Builder::empty();
        b.tags(tags)
            .generic_attributes(HashSet::new())
            .tag_attributes(std::collections::HashMap::new())
            .url_relative(ammonia::UrlRelative::Deny)
            .add_tag_attributes("a", ["href", "title"])
            .url_schemes(["http", "https", "mailto"].into_iter().collect())
            .link_rel(Some("noopener noreferrer nofollow"));
        b
    })
}

/// Cleans a rich-text (HTML) field: formatting and links survive; scripts, event handlers,
/// `style` and `javascript:`/`data:` URLs do not.
pub fn rich(s: &str) -> String {
    sanitizer().clean(&plain(s)).to_string()
}

/// For PATCH bodies: tells "absent" (`None`) from "set to null" (`Some(None)`).
/// Use with `#[serde(default, deserialize_with = "crate::input::nullable")]`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(d).map(Some)
}

/// Values one item of a bulk body may hold: scalars, arrays, objects and object keys, counted
/// together. The largest real item (a case's `PATCH /cases/bulk` item: `id`, `version` and
/// twelve fields) is one flat object of some thirty.
pub const MAX_ITEM_VALUES: usize = 64;

/// A JSON array of at most `max` items (`noun` names them in the error), for a
/// `#[serde(deserialize_with = …)]` function that names the limit. The items are counted as
/// they are read and the one past `max` fails the whole body there and then, with
/// "at most {max} {noun} per request": a 32 MiB body of `{}`s (millions of them) never
/// becomes millions of maps before a handler could count them.
///
/// Each item is kept as a `Value`, to be parsed on its own so that a bad one is reported by
/// its index, but may hold at most [`MAX_ITEM_VALUES`] values. Bounding the count alone
/// would not bound the memory: the same millions of `{"":0}` nested in one item
/// (`{"items":[[{"":0},…]]}`) would still cost a B-tree node of some 600 bytes each, about
/// 3 GB. With both bounds an item costs at most about 15 KB (21 one-entry objects), so a
/// body's values take at most `max` × 15 KB (some 150 MB for 10,000 items, 15 MB for
/// 1,000), plus their strings, which are no longer than the body.
pub fn bounded_items<'de, D: Deserializer<'de>>(d: D, max: usize, noun: &'static str) -> Result<Vec<Value>, D::Error> {
    d.deserialize_seq(Items { max, noun })
}

/// A body that is one item or an array of them, as read by [`one_or_many`].
#[derive(Debug)]
pub enum OneOrMany {
    /// Anything but an array, as sent: whether it is an item is the caller's to say.
    One(Value),
    /// An array, of at most the limit given.
    Many(Vec<Value>),
}

/// One item or an array of at most `max`, read as [`bounded_items`] reads one; a single
/// object is held to [`MAX_ITEM_VALUES`] too. Within those bounds it takes any JSON.
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D, max: usize, noun: &'static str) -> Result<OneOrMany, D::Error> {
    d.deserialize_any(OneOrManyVisitor(Items { max, noun }))
}

/// Marks a serde error that is a refusal of one field (a count past its limit), so that the
/// body's rejection becomes our usual `VALIDATION_FAILED` naming the field
/// ([`field_error_of`]) rather than a parse error.
const FIELD_MARK: char = '\u{E000}';

fn limit_error(field: &str, message: &str) -> String {
    format!("{FIELD_MARK}{field}{FIELD_MARK}{message}{FIELD_MARK}")
}

/// The field and message of a serde error made by [`limit_error`], if `text` holds one.
pub fn field_error_of(text: &str) -> Option<(&str, &str)> {
    let (_, rest) = text.split_once(FIELD_MARK)?;
    let (field, rest) = rest.split_once(FIELD_MARK)?;
    let (message, _) = rest.split_once(FIELD_MARK)?;
    Some((field, message))
}

/// Reads an array of items, counting them.
#[derive(Clone, Copy)]
struct Items {
    max: usize,
    noun: &'static str,
}

impl Items {
    fn read<'de, A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut items = Vec::new();
        while let Some(Item(v)) = seq.next_element::<Item>()? {
            if items.len() == self.max {
                return Err(de::Error::custom(limit_error(
                    self.noun,
                    &format!("at most {} {} per request", self.max, self.noun),
                )));
            }
            items.push(v);
        }
        Ok(items)
    }
}

impl<'de> Visitor<'de> for Items {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of at most {} {}", self.max, self.noun)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<Value>, A::Error> {
        self.read(seq)
    }
}

struct OneOrManyVisitor(Items);

impl<'de> Visitor<'de> for OneOrManyVisitor {
    type Value = OneOrMany;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "one item or an array of at most {} {}", self.0.max, self.0.noun)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<OneOrMany, A::Error> {
        self.0.read(seq).map(OneOrMany::Many)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneOrMany, A::Error> {
        let left = Cell::new(MAX_ITEM_VALUES);
        Budget(&left).visit_map(map).map(OneOrMany::One)
    }

    // A scalar is one value: kept, for the caller to refuse in its own words.
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<OneOrMany, E> {
        Ok(OneOrMany::One(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<OneOrMany, E> {
        Ok(OneOrMany::One(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<OneOrMany, E> {
        Ok(OneOrMany::One(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<OneOrMany, E> {
        Ok(OneOrMany::One(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
        Ok(OneOrMany::One(Value::String(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<OneOrMany, E> {
        Ok(OneOrMany::One(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<OneOrMany, E> {
        Ok(OneOrMany::One(Value::Null))
    }
}

/// One item: any JSON value of at most [`MAX_ITEM_VALUES`] values.
struct Item(Value);

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let left = Cell::new(MAX_ITEM_VALUES);
        d.deserialize_any(Budget(&left)).map(Item)
    }
}

/// Builds a `Value` as serde_json's own visitor does, each value (and object key) spending
/// one of the item's budget before it is kept, so an item fails as soon as it has too many.
#[derive(Clone, Copy)]
struct Budget<'a>(&'a Cell<usize>);

impl Budget<'_> {
    fn spend<E: de::Error>(self) -> Result<(), E> {
        let left = self.0.get();
        if left == 0 {
            return Err(E::custom(format!("an item may hold at most {MAX_ITEM_VALUES} values")));
        }
        self.0.set(left - 1);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Budget<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend::<E>()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend::<E>()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend::<E>()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend::<E>()?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend::<E>()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.spend::<E>()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.spend::<E>()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.spend::<E>()?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend::<A::Error>()?;
        let mut values = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            values.push(v);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend::<A::Error>()?;
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.spend::<A::Error>()?;
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Collects field errors so one response names every invalid field.
#[derive(Debug, Default)]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    /// Records an error on `field`.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError { field: field.to_owned(), message: message.into() });
    }

    /// A required plain-text field: not blank, at most `max` characters.
    pub fn text(&mut self, field: &str, value: &str, max: usize) -> String {
        let v = plain(value);
        if v.trim().is_empty() {
            self.error(field, "must not be empty");
        } else if v.chars().count() > max {
            self.error(field, format!("must be at most {max} characters"));
        }
        v
    }

    /// An optional plain-text field; an empty string is stored as absent.
    pub fn opt_text(&mut self, field: &str, value: Option<&str>, max: usize) -> Option<String> {
        let v = plain(value?);
        if v.trim().is_empty() {
            return None;
        }
        if v.chars().count() > max {
            self.error(field, format!("must be at most {max} characters"));
        }
        Some(v)
    }

    /// An optional rich-text field, cleaned by the allowlist.
    pub fn opt_rich(&mut self, field: &str, value: Option<&str>, max: usize) -> Option<String> {
        let v = value?;
        if v.chars().count() > max {
            self.error(field, format!("must be at most {max} characters"));
            return None;
        }
        let cleaned = rich(v);
        (!cleaned.trim().is_empty()).then_some(cleaned)
    }

    /// An optional web address: http or https only. What is kept is the parsed address in
    /// its normal form (WHATWG URL serialisation: scheme and host lower-cased, IDN hosts in
    /// punycode, the default port dropped, spaces and non-ASCII percent-encoded), so the
    /// same address is stored the same way however it was typed.
    pub fn opt_url(&mut self, field: &str, value: Option<&str>) -> Option<String> {
        let v = plain(value?);
        if v.trim().is_empty() {
            return None;
        }
        match url::Url::parse(v.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.as_str().len() <= 2048 => {
                Some(u.into())
            }
            _ => {
                self.error(field, "must be an http:// or https:// address of at most 2048 characters");
                None
            }
        }
    }

    /// An optional e-mail address.
    pub fn opt_email(&mut self, field: &str, value: Option<&str>) -> Option<String> {
        let v = plain(value?);
        if v.trim().is_empty() {
            return None;
        }
        if !looks_like_email(&v) {
            self.error(field, "must be an e-mail address");
        }
        Some(v)
    }

    /// Ends validation: Ok when no field was at fault.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() { Ok(()) } else { Err(ApiError::fields(self.errors)) }
    }
}

/// A deliberately modest check: one `@`, something before it, a dotted domain after it, no
/// spaces, at most 254 characters. Deliverability is the mail server's business.
pub fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    s.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_text_survives_plain_hygiene_byte_for_byte() {
        for s in [
            "Smith & Wesson v. O'Brien; DROP TABLE cases;--",
            "DROP-OFF SCHEDULE",
            "<script>alert(1)</script> is quoted in Exhibit 4",
            "Müller GmbH ./. Société Générale — § 1983",
            "Line one\n\tindented",
        ] {
            assert_eq!(plain(s), s);
        }
    }

    #[test]
    fn control_characters_go_and_text_is_nfc() {
        assert_eq!(plain("a\u{0}b\u{7}c\r\n"), "abc\n");
        assert_eq!(plain("Cafe\u{301}"), "Caf\u{e9}");
    }

    #[test]
    fn rich_text_keeps_formatting_and_drops_scripts() {
        let out = rich(
            r#"<p onclick="x()">Hi <b>there</b> <script>alert(1)</script><a href="javascript:alert(1)">x</a><a href="https://court.gov">y</a><img src=x onerror=alert(1)></p>"#,
        );
        assert!(out.contains("<b>there</b>"));
        assert!(out.contains("https://court.gov"));
        for bad in ["script", "onclick", "javascript:", "onerror", "<img"] {
            assert!(!out.contains(bad), "{bad} survived in {out}");
        }
    }

    #[test]
    fn relative_and_cited_urls_do_not_survive() {
        let out = rich(
            r#"<a href="//evil.example/x">a</a><blockquote cite="javascript:alert(1)">q</blockquote><p lang="en">t</p>"#,
        );
        assert!(!out.contains("evil.example"), "{out}");
        assert!(!out.contains("cite="), "{out}");
        assert!(!out.contains("lang="), "{out}");
        assert!(out.contains("<blockquote>q</blockquote>"), "{out}");
    }

    #[test]
    fn urls_must_be_http() {
        let mut f = Fields::default();
        assert!(f.opt_url("website", Some("https://example.com/a")).is_some());
        assert!(f.opt_url("website", Some("javascript:alert(1)")).is_none());
        assert!(f.opt_url("website", Some("data:text/html,x")).is_none());
        assert!(f.finish().is_err());
    }

    #[test]
    fn urls_are_kept_in_normal_form() {
        let mut f = Fields::default();
        assert_eq!(
            f.opt_url("website", Some(" HTTP://Example.COM:80/a b ")).as_deref(),
            Some("http://example.com/a%20b")
        );
        assert_eq!(
            f.opt_url("website", Some("https://Bücher.example")).as_deref(),
            Some("https://xn--bcher-kva.example/")
        );
        assert_eq!(
            f.opt_url("website", Some("https://court.gov:8443/x?y=1#p")).as_deref(),
            Some("https://court.gov:8443/x?y=1#p")
        );
        assert!(f.finish().is_ok());
    }

    fn items(json: &str, max: usize) -> Result<Vec<Value>, serde_json::Error> {
        bounded_items(&mut serde_json::Deserializer::from_str(json), max, "items")
    }

    fn one_or_many_of(json: &str, max: usize) -> Result<OneOrMany, serde_json::Error> {
        one_or_many(&mut serde_json::Deserializer::from_str(json), max, "entries")
    }

    #[test]
    fn bounded_items_take_the_limit_and_refuse_one_more() {
        assert_eq!(items("[{},{},{}]", 3).unwrap().len(), 3);
        assert_eq!(items("[]", 3).unwrap().len(), 0);
        let e = items("[{},{},{},{}]", 3).unwrap_err();
        assert!(e.to_string().contains("at most 3 items per request"), "{e}");
        assert!(items("{}", 3).is_err(), "an object is not an array of items");
    }

    #[test]
    fn bounded_items_are_kept_as_sent() {
        let json =
            r#"[{"a":1,"b":-2,"c":1.5,"d":"x\"y","e":null,"f":true,"g":[1,{"h":[]}],"a":7},"s",18446744073709551615]"#;
        assert_eq!(Value::Array(items(json, 10).unwrap()), serde_json::from_str::<Value>(json).unwrap());
    }

    #[test]
    fn an_item_holds_at_most_max_item_values() {
        // The array itself is one value.
        let zeros = |n: usize| format!("[[{}]]", vec!["0"; n].join(","));
        assert!(items(&zeros(MAX_ITEM_VALUES - 1), 1).is_ok());
        let e = items(&zeros(MAX_ITEM_VALUES), 1).unwrap_err();
        assert!(e.to_string().contains(&format!("at most {MAX_ITEM_VALUES} values")), "{e}");
        // Keys count too: an object and its n keys and n values.
        let fields =
            |n: usize| format!("[{{{}}}]", (0..n).map(|i| format!("\"k{i}\":0")).collect::<Vec<_>>().join(","));
        assert!(items(&fields((MAX_ITEM_VALUES - 1) / 2), 1).is_ok());
        assert!(items(&fields(MAX_ITEM_VALUES / 2), 1).is_err());
        // The budget is each item's own.
        let many = format!("[{}]", vec![zeros(MAX_ITEM_VALUES - 2); 5].join(","));
        assert_eq!(items(&many, 5).unwrap().len(), 5);
    }

    #[test]
    fn one_or_many_tells_an_item_from_a_bounded_array() {
        assert!(matches!(one_or_many_of(r#"{"a":[1]}"#, 2).unwrap(), OneOrMany::One(Value::Object(_))));
        assert!(matches!(one_or_many_of("42", 2).unwrap(), OneOrMany::One(Value::Number(_))));
        assert!(matches!(one_or_many_of("null", 2).unwrap(), OneOrMany::One(Value::Null)));
        assert!(matches!(one_or_many_of("[{},{}]", 2).unwrap(), OneOrMany::Many(v) if v.len() == 2));
        let e = one_or_many_of("[{},{},{}]", 2).unwrap_err();
        assert!(e.to_string().contains("at most 2 entries per request"), "{e}");
        let big = format!("{{{}}}", (0..MAX_ITEM_VALUES).map(|i| format!("\"k{i}\":0")).collect::<Vec<_>>().join(","));
        assert!(one_or_many_of(&big, 2).is_err(), "a single item is held to the budget too");
    }
}
