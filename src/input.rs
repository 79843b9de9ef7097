//! Input hygiene and field validation (BLUEPRINT §12).
//!
//! Plain text is stored as sent, after Unicode NFC and removal of control characters other
//! than tab and newline: "Smith & Wesson v. O'Brien; DROP TABLE cases;--" comes back byte for
//! byte. SQL injection is impossible by construction (every value is a bound parameter), so
//! nothing is HTML-encoded or deleted. Rich-text fields go through an HTML allowlist. URL
//! fields take http(s) only (and mailto where it makes sense), stored as the parsed address in
//! its normal form.

use std::{collections::HashSet, sync::OnceLock};

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
}
